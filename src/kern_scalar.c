/*
 * kern_scalar.c: the portable reference kernels (see kern.h). B is packed
 * as plain rows [N][K], depthwise weights as plain [T][C]. Never removed:
 * every SIMD kernel is tested against these.
 */
#include <string.h>

#include "ccq/kern.h"

static size_t scalar_packed_size(int N, int K) { return (size_t)N * (size_t)K; }

static void scalar_pack(const int8_t *levels, int N, int K, int8_t *out)
{
    memcpy(out, levels, scalar_packed_size(N, K));
}

static ptrdiff_t scalar_packed_offset(const int8_t *packed, int N, int K, int n, int k, int8_t v)
{
    (void)packed, (void)N, (void)v;
    return (ptrdiff_t)n * K + k;
}

static int32_t dot(const uint8_t *a, const int8_t *b, int n)
{
    int32_t acc = 0;
    for (int k = 0; k < n; k++) acc += (int32_t)a[k] * (int32_t)b[k];
    return acc;
}

static int32_t row_dot(const kern_a *a, int m, const int8_t *b)
{
    int32_t acc = 0;
    for (int s = 0; s < a->nseg; s++) acc += dot(a->rows[m] + s * a->seg_stride, b + (size_t)s * a->seg_len, a->seg_len);
    return acc;
}

static void scalar_gemm_u8(const kern_a *a, int N, const int8_t *B, const kern_rq *rq, uint8_t *C, size_t ldc)
{
    const size_t K = (size_t)a->nseg * a->seg_len;
    for (int m = 0; m < a->M; m++)
        for (int n = 0; n < N; n++) {
            const int32_t acc = rq->bias[n] + row_dot(a, m, B + n * K);
            C[m * ldc + n] = kern_requant_u8(acc, rq->mult[n], rq->shift[n], rq->zp, rq->lo, rq->hi);
        }
}

static void scalar_gemm_i32(const kern_a *a, int N, const int8_t *B, const kern_rq *rq, int32_t *C, size_t ldc)
{
    const size_t K = (size_t)a->nseg * a->seg_len;
    for (int m = 0; m < a->M; m++)
        for (int n = 0; n < N; n++) {
            const int32_t acc = rq->bias[n] + row_dot(a, m, B + n * K);
            C[m * ldc + n] = (int32_t)kern_requant(acc, rq->mult[n], rq->shift[n]);
        }
}


static void scalar_add_u8(size_t n, const uint8_t *a, const uint8_t *b, const kern_add *p, uint8_t *out)
{
    for (size_t i = 0; i < n; i++) out[i] = kern_add_one(a[i], b[i], p);
}

static void scalar_mul_u8(size_t P, int C, const uint8_t *a, const uint8_t *b, int bcast, const kern_mul *p,
                          uint8_t *out)
{
    for (size_t px = 0; px < P; px++)
        for (int c = 0; c < C; c++) out[px * C + c] = kern_mul_one(a[px * C + c], b[(bcast ? 0 : px * C) + c], p);
}

static size_t scalar_dw_packed_size(int T, int C) { return (size_t)T * (size_t)C; }

static void scalar_dw_pack(const int8_t *levels, int T, int C, int8_t *out)
{
    memcpy(out, levels, scalar_dw_packed_size(T, C));
}

static ptrdiff_t scalar_dw_packed_offset(int T, int C, int t, int c)
{
    (void)T;
    return (ptrdiff_t)t * C + c;
}

static void scalar_dw_u8(const kern_dw *a, const int8_t *W, const kern_rq *rq, uint8_t *y, size_t ldy)
{
    for (int p = 0; p < a->P; p++)
        for (int c = 0; c < a->C; c++) {
            int32_t acc = rq->bias[c];
            for (int t = 0; t < a->T; t++) acc += (int32_t)a->px[p][a->off[t] + c] * (int32_t)W[(size_t)t * a->C + c];
            y[(size_t)p * ldy + c] = kern_requant_u8(acc, rq->mult[c], rq->shift[c], rq->zp, rq->lo, rq->hi);
        }
}

const kern_isa kern_isa_scalar = {
    .name = "scalar",
    .kr = 4,
    .packed_size = scalar_packed_size,
    .pack = scalar_pack,
    .packed_offset = scalar_packed_offset,
    .gemm_u8 = scalar_gemm_u8,
    .gemm_i32 = scalar_gemm_i32,
    .peak_macs = NULL, /* no instruction-level ceiling: the compiler chooses the code */
    .add_u8 = scalar_add_u8,
    .mul_u8 = scalar_mul_u8,
    .dw_packed_size = scalar_dw_packed_size,
    .dw_pack = scalar_dw_pack,
    .dw_packed_offset = scalar_dw_packed_offset,
    .dw_u8 = scalar_dw_u8,
};
