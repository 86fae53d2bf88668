/* e^x for float32, 16 lanes at a time: the fused training step's softmax (fused_step.pyx; the
 * numba backend's mirror is simd.py's exp_shifted).
 *
 * exp_shifted_float(z, c, mx, out): out[j] = e^(z[j] - mx) for j < c, with x = z[j] - mx <= 0
 * (the softmax's logits minus their maximum; only that domain is served). Algorithm: Cody and
 * Waite's range reduction, n = round(x log2 e), r = x - n ln 2 with ln 2 split in two so that
 * n ln2_hi is exact, then e^x = 2^n p(r) with the degree-7 polynomial of Cephes' expf (S. L.
 * Moshier, Cephes Math Library; |r| <= ln2 / 2), 2^n written into the exponent bits. Against
 * float64 e^x it is within 2 units in the last place for x >= -87.33 (tests/backends/test_exp.py);
 * below, where e^x < 2^-126, it gives 0 (libm's expf gives subnormals down to -103.97); NaN gives
 * NaN. A loop of libm exp calls took 70-90 ns a 10-class row of the epoch's softmax.
 */
#ifndef FASTNN_EXP_VECTOR_H
#define FASTNN_EXP_VECTOR_H
#include <stddef.h>
#include <stdint.h>
#include <string.h>

typedef float fastnn_v16e __attribute__((vector_size(64)));
typedef int32_t fastnn_v16ei __attribute__((vector_size(64)));

static inline fastnn_v16e fastnn_exp16(fastnn_v16e x) {
    const fastnn_v16e zero = {0};
    const fastnn_v16ei under = x < zero - 87.33654f;            /* -1 where e^x < 2^-126 (NaN: 0) */
    fastnn_v16ei xb, ub;
    memcpy(&xb, &x, sizeof xb);
    const fastnn_v16e low = zero - 87.33654f;
    memcpy(&ub, &low, sizeof ub);
    xb = (xb & ~under) | (ub & under);                           /* x clamped up to -87.33654 */
    fastnn_v16e xc;
    memcpy(&xc, &xb, sizeof xc);
    const fastnn_v16e n = (xc * 1.44269504088896341f + 12582912.0f) - 12582912.0f;  /* round(x log2 e) */
    fastnn_v16e r = xc - n * 0.693359375f;                       /* ln 2 = 0.693359375 - 2.12194440e-4 */
    r = r + n * 2.12194440e-4f;
    fastnn_v16e p = zero + 1.9875691500e-4f;
    p = p * r + 1.3981999507e-3f;
    p = p * r + 8.3334519073e-3f;
    p = p * r + 4.1665795894e-2f;
    p = p * r + 1.6666665459e-1f;
    p = p * r + 5.0000001201e-1f;
    p = p * (r * r) + r + 1.0f;
    const fastnn_v16ei is_nan = n != n;
    fastnn_v16ei nb;
    memcpy(&nb, &n, sizeof nb);
    fastnn_v16e n_ok;
    nb &= ~is_nan;                                               /* NaN lanes: n = 0 (p carries the NaN) */
    memcpy(&n_ok, &nb, sizeof n_ok);
    const fastnn_v16ei bits = (__builtin_convertvector(n_ok, fastnn_v16ei) + 127) << 23;   /* 2^n */
    fastnn_v16e scale;
    memcpy(&scale, &bits, sizeof scale);
    fastnn_v16e y = p * scale;
    fastnn_v16ei yb;
    memcpy(&yb, &y, sizeof yb);
    yb &= ~under;                                                /* below -87.33654: 0 */
    memcpy(&y, &yb, sizeof y);
    return y;
}

static inline void exp_shifted_float(const float *z, ptrdiff_t c, float mx, float *out) {
    for (ptrdiff_t j0 = 0; j0 < c; j0 += 16) {
        const ptrdiff_t w = c - j0 < 16 ? c - j0 : 16;
        float buf[16] __attribute__((aligned(64)));
        for (ptrdiff_t j = 0; j < 16; j++) buf[j] = j < w ? z[j0 + j] - mx : 0.0f;
        fastnn_v16e v;
        memcpy(&v, buf, sizeof v);
        v = fastnn_exp16(v);
        memcpy(buf, &v, sizeof v);
        for (ptrdiff_t j = 0; j < w; j++) out[j0 + j] = buf[j];
    }
}

#endif
