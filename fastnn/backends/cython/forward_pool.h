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
 * One job at a time: a caller that finds the pool busy (another Python thread's forward) runs
 * its chunks alone. Workers (width - 1 of them, at most FASTNN_POOL_MAX) start on first use, with
 * every signal blocked (signals go to Python's threads); a fork()ed child starts its own.
 */
#ifndef FASTNN_FORWARD_POOL_H
#define FASTNN_FORWARD_POOL_H
#include <pthread.h>
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
    fastnn_chunk_fn fn;
    void *args;
    ptrdiff_t n_chunks;
    ptrdiff_t next;               /* the next chunk to claim (atomic) */
} fastnn_pool_t;

static fastnn_pool_t fastnn_pool = {PTHREAD_MUTEX_INITIALIZER, PTHREAD_COND_INITIALIZER,
                                    0, 0, 0, 0, 0, 0, 0, NULL, NULL, 0, 0};

static inline ptrdiff_t fastnn_pool_claim(void) {
    return __atomic_fetch_add(&fastnn_pool.next, 1, __ATOMIC_RELAXED);
}

static void *fastnn_pool_worker(void *arg) {
    const int slot = (int)(ptrdiff_t)arg;
    fastnn_pool_t *p = &fastnn_pool;
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
            p->started++;
        }
        pthread_sigmask(SIG_SETMASK, &old, NULL);
    }
    return p->started + 1 < width ? p->started + 1 : width;
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
