/* The fused forward's threads: chunks of a batch claimed by whichever thread is ready, and a
 * caller that never waits for a thread that has not started (fused_forward.pyx).
 * Contract: fastnn_pool_run(width, fn, args, n_chunks) calls fn(args, slot, c) exactly once for
 * every chunk c in [0, n_chunks), slot 0 on the calling thread and slots 1 .. width-1 on worker
 * threads, each slot on one thread at a time; it returns when every call has returned.
 *
 * Why not an OpenMP parallel loop: its region ends at a barrier that waits for every thread of
 * the team, including one that has not started yet. On the 2-core VM of REPORT.md a worker woken
 * after 0.2 s of idleness started 2-8 ms late (a 64-row predict, 14 us of work, took 7.8 ms
 * there), so a 2 ms pass over the test set took 8. Here a worker joins a job only while the
 * job is open, claims chunks with an atomic counter, and the caller, once no chunk is left,
 * closes the job and waits (spinning) only for the workers inside it. A worker that wakes after that finds
 * nothing and sleeps again: the call costs at worst what one thread takes alone.
 *
 * Where the workers run: a job's workers may run on any CPU the caller may, except the one the
 * caller is on (pthread_setaffinity_np when the caller's CPU is not the one the workers were
 * last steered off; Linux only). Left to the scheduler, a worker woken after an idle moment was
 * often placed on the caller's own CPU (a VM's idle vCPU counts as not available), and the two
 * shared it until the load balancer moved one, 1-4 ms later: with a 0.2 s pause before each pass,
 * the test set took 11 ms (median) instead of 6.6 (a 50 us-per-chunk mock job of 120 chunks:
 * 3.1-9.5 ms, steered 3.08-3.31 ms).
 *
 * One job at a time: a caller that finds the pool busy (another Python thread's forward) runs
 * its chunks alone. Workers (width - 1 of them, at most FASTNN_POOL_MAX) start on first use, with
 * every signal blocked (signals go to Python's threads); a fork()ed child starts its own.
 */
#ifndef FASTNN_FORWARD_POOL_H
#define FASTNN_FORWARD_POOL_H
#include <pthread.h>
#include <sched.h>
#include <signal.h>
#include <stddef.h>
#include <time.h>

#define FASTNN_POOL_MAX 255
/* how long a worker keeps looking for the next job before it sleeps (as OpenMP runtimes spin
 * before they block): back-to-back calls then find it awake */
#define FASTNN_POOL_SPIN_NS 300000L

static inline void fastnn_pool_relax(void) {
#if defined(__x86_64__) || defined(__i386__)
    __builtin_ia32_pause();
#endif
}

static inline long long fastnn_pool_now_ns(void) {
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return ts.tv_sec * 1000000000LL + ts.tv_nsec;
}

typedef void (*fastnn_chunk_fn)(void *args, int slot, ptrdiff_t chunk);

typedef struct {
    pthread_mutex_t lock;
    pthread_cond_t wake;          /* workers: a job opened */
    int started;                  /* workers running (slots 1 .. started) */
    int busy;                     /* a caller owns the pool */
    int open;                     /* the current job takes workers */
    int active;                   /* workers inside the current job */
    int width;                    /* the current job's slots */
    int sleeping;                 /* workers blocked on wake (the others spin) */
    unsigned long generation;     /* jobs opened so far */
    int steered_off;              /* the caller's CPU at the last steering (-1: none yet) */
#if defined(__linux__) && defined(CPU_SET)
    cpu_set_t steered_within;     /* the caller's CPUs then */
#endif
    pthread_t threads[FASTNN_POOL_MAX + 1];     /* slots 1 .. started */
    fastnn_chunk_fn fn;
    void *args;
    ptrdiff_t n_chunks;
    ptrdiff_t next;               /* the next chunk to claim (atomic) */
} fastnn_pool_t;

static fastnn_pool_t fastnn_pool = {PTHREAD_MUTEX_INITIALIZER, PTHREAD_COND_INITIALIZER,
                                    0, 0, 0, 0, 0, 0, 0, -1};

static inline ptrdiff_t fastnn_pool_claim(void) {
    return __atomic_fetch_add(&fastnn_pool.next, 1, __ATOMIC_RELAXED);
}

static void *fastnn_pool_worker(void *arg) {
    const int slot = (int)(ptrdiff_t)arg;
    fastnn_pool_t *p = &fastnn_pool;
#if defined(__linux__) && defined(CPU_SET)
    pthread_setname_np(pthread_self(), "fastnn-forward");      /* as top -H and /proc show it */
#endif
    pthread_mutex_lock(&p->lock);
    unsigned long seen = p->generation;
    for (;;) {
        if (!(p->open && p->generation != seen && slot < p->width)) {       /* spin a while, unlocked */
            pthread_mutex_unlock(&p->lock);
            const long long until = fastnn_pool_now_ns() + FASTNN_POOL_SPIN_NS;
            while (__atomic_load_n(&p->generation, __ATOMIC_RELAXED) == seen && fastnn_pool_now_ns() < until)
                for (int k = 0; k < 64; k++) fastnn_pool_relax();
            pthread_mutex_lock(&p->lock);
        }
        while (!(p->open && p->generation != seen && slot < p->width)) {
            p->sleeping++;
            pthread_cond_wait(&p->wake, &p->lock);
            p->sleeping--;
        }
        seen = p->generation;
        __atomic_add_fetch(&p->active, 1, __ATOMIC_RELAXED);
        const fastnn_chunk_fn fn = p->fn;
        void *const args = p->args;
        const ptrdiff_t n = p->n_chunks;
        pthread_mutex_unlock(&p->lock);
        for (ptrdiff_t c = fastnn_pool_claim(); c < n; c = fastnn_pool_claim()) fn(args, slot, c);
        pthread_mutex_lock(&p->lock);
        __atomic_sub_fetch(&p->active, 1, __ATOMIC_RELEASE);          /* the caller spins on it */
    }
    return NULL;
}

static void fastnn_pool_after_fork(void) {          /* the child has none of the parent's workers */
    fastnn_pool_t *p = &fastnn_pool;
    pthread_mutex_init(&p->lock, NULL);
    pthread_cond_init(&p->wake, NULL);
    p->started = p->busy = p->open = p->active = p->width = p->sleeping = 0;
    p->steered_off = -1;
}

/* workers up to slot width - 1 (the lock held); returns the slots that can run */
static int fastnn_pool_start(int width) {
    fastnn_pool_t *p = &fastnn_pool;
    static int registered = 0;
    if (!registered) {
        pthread_atfork(NULL, NULL, fastnn_pool_after_fork);
        registered = 1;
    }
    if (width > FASTNN_POOL_MAX + 1) width = FASTNN_POOL_MAX + 1;
    if (p->started + 1 < width) {
        sigset_t all, old;
        sigfillset(&all);
        pthread_sigmask(SIG_SETMASK, &all, &old);      /* the workers inherit it */
        while (p->started + 1 < width) {
            pthread_t thread;
            pthread_attr_t attr;
            pthread_attr_init(&attr);
            pthread_attr_setdetachstate(&attr, PTHREAD_CREATE_DETACHED);
            const int failed = pthread_create(&thread, &attr, fastnn_pool_worker, (void *)(ptrdiff_t)(p->started + 1));
            pthread_attr_destroy(&attr);
            if (failed) break;
            p->threads[++p->started] = thread;
            p->steered_off = -1;                       /* it has the caller's mask */
        }
        pthread_sigmask(SIG_SETMASK, &old, NULL);
    }
    return p->started + 1 < width ? p->started + 1 : width;
}

/* the workers onto the CPUs the caller may use, but its own (the lock held): see the top. One
 * affinity read a job (~0.3 us); the workers' masks are set only when the caller's CPU or mask
 * changed since the last job. */
static void fastnn_pool_steer(void) {
#if defined(__linux__) && defined(CPU_SET)
    fastnn_pool_t *p = &fastnn_pool;
    const int cpu = sched_getcpu();
    cpu_set_t allowed;
    if (cpu < 0 || sched_getaffinity(0, sizeof allowed, &allowed) != 0) return;
    if (cpu == p->steered_off && CPU_EQUAL(&allowed, &p->steered_within)) return;
    cpu_set_t workers = allowed;
    if (CPU_ISSET(cpu, &workers) && CPU_COUNT(&workers) > 1) CPU_CLR(cpu, &workers);
    for (int w = 1; w <= p->started; w++) pthread_setaffinity_np(p->threads[w], sizeof workers, &workers);
    p->steered_off = cpu;
    p->steered_within = allowed;
#endif
}

static inline void fastnn_pool_run(int width, fastnn_chunk_fn fn, void *args, ptrdiff_t n_chunks) {
    fastnn_pool_t *p = &fastnn_pool;
    int shared = 0;
    if (width > 1 && n_chunks > 1) {
        pthread_mutex_lock(&p->lock);
        if (!p->busy) {
            width = fastnn_pool_start(width);
            if (width > 1) {
                p->busy = 1;
                p->fn = fn;
                p->args = args;
                p->n_chunks = n_chunks;
                __atomic_store_n(&p->next, 0, __ATOMIC_RELAXED);
                p->width = width;
                p->open = 1;
                fastnn_pool_steer();
                __atomic_store_n(&p->generation, p->generation + 1, __ATOMIC_RELEASE);   /* spinning workers see it */
                shared = 1;
                if (p->sleeping) pthread_cond_broadcast(&p->wake);
            }
        }
        pthread_mutex_unlock(&p->lock);
    }
    if (!shared) {                                      /* alone: every chunk here */
        for (ptrdiff_t c = 0; c < n_chunks; c++) fn(args, 0, c);
        return;
    }
    for (ptrdiff_t c = fastnn_pool_claim(); c < n_chunks; c = fastnn_pool_claim()) fn(args, 0, c);
    pthread_mutex_lock(&p->lock);
    p->open = 0;                                        /* late workers stay out */
    pthread_mutex_unlock(&p->lock);
    /* the workers inside finish a chunk each at most: wait for them spinning (a futex sleep here
     * cost ~17 us a call on the VM, to wake this thread again) */
    while (__atomic_load_n(&p->active, __ATOMIC_ACQUIRE) > 0) fastnn_pool_relax();
    pthread_mutex_lock(&p->lock);
    p->busy = 0;
    pthread_mutex_unlock(&p->lock);
}
#endif
