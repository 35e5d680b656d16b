/*
 * kern_scalar.c: the portable reference kernels (see kern.h). B is packed
 * as plain rows [N][Kp]. Never removed: every SIMD kernel is tested
 * against these.
 */
#include <string.h>

#include "ccq/kern.h"

static size_t scalar_packed_size(int N, int Kp) { return (size_t)N * (size_t)Kp; }

static void scalar_pack(const int8_t *levels, int N, int K, int Kp, int8_t *out)
{
    memset(out, 0, scalar_packed_size(N, Kp));
    for (int n = 0; n < N; n++) memcpy(out + (size_t)n * Kp, levels + (size_t)n * K, (size_t)K);
}

static int32_t dot(const uint8_t *a, const int8_t *b, int Kp)
{
    int32_t acc = 0;
    for (int k = 0; k < Kp; k++) acc += (int32_t)a[k] * (int32_t)b[k];
    return acc;
}

static void scalar_gemm_u8(int M, int N, int Kp, const uint8_t *A, size_t lda, const int8_t *B, const kern_rq *rq,
                           uint8_t *C, size_t ldc)
{
    for (int m = 0; m < M; m++)
        for (int n = 0; n < N; n++) {
            const int32_t acc = rq->bias[n] + dot(A + m * lda, B + (size_t)n * Kp, Kp);
            C[m * ldc + n] = kern_requant_u8(acc, rq->mult[n], rq->shift[n], rq->zp, rq->lo, rq->hi);
        }
}

static void scalar_gemm_i32(int M, int N, int Kp, const uint8_t *A, size_t lda, const int8_t *B, const kern_rq *rq,
                            int32_t *C, size_t ldc)
{
    for (int m = 0; m < M; m++)
        for (int n = 0; n < N; n++) {
            const int32_t acc = rq->bias[n] + dot(A + m * lda, B + (size_t)n * Kp, Kp);
            C[m * ldc + n] = (int32_t)kern_requant(acc, rq->mult[n], rq->shift[n]);
        }
}

static double scalar_peak_macs(double seconds)
{
    /* The reference kernel's own inner loop on an L1-resident row. */
    uint8_t a[256];
    int8_t b[256];
    for (int i = 0; i < 256; i++) a[i] = (uint8_t)i, b[i] = (int8_t)(i * 7);
    volatile int32_t sink = 0;
    long rounds = 0;
    const double t0 = ccq_seconds();
    double t;
    do {
        for (int it = 0; it < 4096; it++) sink += dot(a, b, 256);
        rounds++;
        t = ccq_seconds() - t0;
    } while (t < seconds);
    return (double)rounds * 4096 * 256 / t;
}

const kern_isa kern_isa_scalar = {
    .name = "scalar",
    .kr = 4,
    .packed_size = scalar_packed_size,
    .pack = scalar_pack,
    .gemm_u8 = scalar_gemm_u8,
    .gemm_i32 = scalar_gemm_i32,
    .peak_macs = scalar_peak_macs,
};
