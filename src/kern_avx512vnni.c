/*
 * kern_avx512vnni.c: u8 x s8 GEMM with vpdpbusd (AVX-512 VNNI), compiled
 * alone with -mavx512f -mavx512bw -mavx512vl -mavx512vnni and reached only
 * through the dispatch table when the CPU has them.
 *
 * Packing: B in blocks of 16 output channels, [N/16][Kp/4][16][4]: one
 * 64-byte vector holds 4 consecutive k of 16 channels, which is what
 * vpdpbusd consumes against 4 activation bytes broadcast to every lane.
 * vpdpbusd sums the four u8*s8 products into int32 without intermediate
 * saturation, so it is exact for 8-bit weights. The tile is MR rows x 32
 * channels (2 x 16 accumulators per row); requantization is vectorised to
 * give bit for bit what kern_requant gives.
 */
#include <immintrin.h>
#include <string.h>

#include "ccq/kern.h"

enum { NB = 16, MR = 8 };

static size_t vnni_packed_size(int N, int K) { return (size_t)((N + NB - 1) / NB) * NB * (size_t)K; }

static void vnni_pack(const int8_t *levels, int N, int K, int8_t *out)
{
    memset(out, 0, vnni_packed_size(N, K));
    for (int n = 0; n < N; n++) {
        int8_t *blk = out + (size_t)(n / NB) * NB * K;
        for (int k = 0; k < K; k++) blk[((size_t)(k / 4) * NB + n % NB) * 4 + k % 4] = levels[(size_t)n * K + k];
    }
}

/* v = sign(acc) * min((|acc| * mult + 2^(shift-1)) >> shift, 2^31 - 1) on 16 lanes. */
static inline __m512i requant16(__m512i acc, __m512i mult, __m512i shift)
{
    const __m512i one = _mm512_set1_epi64(1), lim = _mm512_set1_epi64(INT32_MAX);
    const __m512i lo32 = _mm512_set1_epi64(0xffffffff);
    const __mmask16 neg = _mm512_cmplt_epi32_mask(acc, _mm512_setzero_si512());
    const __m512i a = _mm512_abs_epi32(acc);
    const __m512i se = _mm512_and_si512(shift, lo32), so = _mm512_srli_epi64(shift, 32);
    __m512i pe = _mm512_mul_epu32(a, mult);
    __m512i po = _mm512_mul_epu32(_mm512_srli_epi64(a, 32), _mm512_srli_epi64(mult, 32));
    pe = _mm512_add_epi64(pe, _mm512_sllv_epi64(one, _mm512_sub_epi64(se, one)));
    po = _mm512_add_epi64(po, _mm512_sllv_epi64(one, _mm512_sub_epi64(so, one)));
    pe = _mm512_min_epu64(_mm512_srlv_epi64(pe, se), lim);
    po = _mm512_min_epu64(_mm512_srlv_epi64(po, so), lim);
    const __m512i q = _mm512_or_si512(pe, _mm512_slli_epi64(po, 32));
    return _mm512_mask_sub_epi32(q, neg, _mm512_setzero_si512(), q);
}

static inline void store_u8(uint8_t *c, __m512i v, __m512i zp, __m512i lo, __m512i hi, __mmask16 m)
{
    /* clamp before adding zp: v may be near INT32_MAX, zp + v would wrap */
    v = _mm512_min_epi32(_mm512_max_epi32(v, _mm512_sub_epi32(lo, zp)), _mm512_sub_epi32(hi, zp));
    v = _mm512_add_epi32(v, zp);
    _mm_mask_storeu_epi8(c, m, _mm512_cvtepi32_epi8(v));
}

static inline __m512i bcast4(const uint8_t *p)
{
    int32_t v;
    memcpy(&v, p, 4);
    return _mm512_set1_epi32(v);
}

/* One tile: mr (<= MR) rows starting at row m0 x nb (1 or 2) blocks of 16 channels starting at channel n0. */
static inline __attribute__((always_inline)) void tile(int mr, int nb, const kern_a *A, int m0, int n0, int N,
                                                       const int8_t *B, const kern_rq *rq, void *C, size_t ldc,
                                                       int i32)
{
    const int K = A->nseg * A->seg_len;
    __m512i acc[MR][2];
    __mmask16 mask[2];
    __m512i bias[2], mult[2], shift[2];
    for (int j = 0; j < nb; j++) {
        const int c0 = n0 + NB * j, left = N - c0;
        mask[j] = left >= NB ? (__mmask16)0xffff : (__mmask16)((1u << left) - 1);
        bias[j] = _mm512_maskz_loadu_epi32(mask[j], rq->bias + c0);
        mult[j] = _mm512_maskz_loadu_epi32(mask[j], rq->mult + c0);
        shift[j] = _mm512_mask_loadu_epi32(_mm512_set1_epi32(1), mask[j], rq->shift + c0);
    }
#pragma GCC unroll 8
    for (int r = 0; r < MR; r++)
        if (r < mr)
            for (int j = 0; j < 2; j++)
                if (j < nb) acc[r][j] = bias[j];
    const int8_t *b0 = B + (size_t)(n0 / NB) * NB * K;
    const int8_t *b1 = b0 + (size_t)NB * K;
    for (int s = 0; s < A->nseg; s++) {
        const uint8_t *p[MR];
#pragma GCC unroll 8
        for (int r = 0; r < MR; r++)
            if (r < mr) p[r] = A->rows[m0 + r] + s * A->seg_stride;
        for (int k = 0; k < A->seg_len; k += 4) {
            const __m512i w0 = _mm512_loadu_si512(b0);
            const __m512i w1 = nb > 1 ? _mm512_loadu_si512(b1) : w0;
            b0 += 4 * NB, b1 += 4 * NB;
#pragma GCC unroll 8
            for (int r = 0; r < MR; r++) {
                if (r < mr) {
                    const __m512i a = bcast4(p[r] + k);
                    acc[r][0] = _mm512_dpbusd_epi32(acc[r][0], a, w0);
                    if (nb > 1) acc[r][1] = _mm512_dpbusd_epi32(acc[r][1], a, w1);
                }
            }
        }
    }
    const __m512i zp = _mm512_set1_epi32(rq->zp), lo = _mm512_set1_epi32(rq->lo), hi = _mm512_set1_epi32(rq->hi);
#pragma GCC unroll 8
    for (int r = 0; r < MR; r++) {
        if (r >= mr) continue;
        for (int j = 0; j < nb; j++) {
            const __m512i v = requant16(acc[r][j], mult[j], shift[j]);
            if (i32)
                _mm512_mask_storeu_epi32((int32_t *)C + (size_t)(m0 + r) * ldc + n0 + NB * j, mask[j], v);
            else
                store_u8((uint8_t *)C + (size_t)(m0 + r) * ldc + n0 + NB * j, v, zp, lo, hi, mask[j]);
        }
    }
}

#define TILE_CASE(R)                                                                                            \
    case R:                                                                                                     \
        if (nb == 2)                                                                                            \
            tile(R, 2, A, m, n0, N, B, rq, C, ldc, i32);                                                        \
        else                                                                                                    \
            tile(R, 1, A, m, n0, N, B, rq, C, ldc, i32);                                                        \
        break;

static void gemm(const kern_a *A, int N, const int8_t *B, const kern_rq *rq, void *C, size_t ldc, int i32)
{
    for (int n0 = 0; n0 < N; n0 += 2 * NB) {
        const int nb = N - n0 > NB ? 2 : 1;
        for (int m = 0; m < A->M; m += MR) {
            switch (A->M - m >= MR ? MR : A->M - m) {
                TILE_CASE(8)
                TILE_CASE(7)
                TILE_CASE(6)
                TILE_CASE(5)
                TILE_CASE(4)
                TILE_CASE(3)
                TILE_CASE(2)
                TILE_CASE(1)
            }
        }
    }
}

static void vnni_gemm_u8(const kern_a *A, int N, const int8_t *B, const kern_rq *rq, uint8_t *C, size_t ldc)
{
    gemm(A, N, B, rq, C, ldc, 0);
}

static void vnni_gemm_i32(const kern_a *A, int N, const int8_t *B, const kern_rq *rq, int32_t *C, size_t ldc)
{
    gemm(A, N, B, rq, C, ldc, 1);
}

static double vnni_peak_macs(double seconds)
{
    /* 12 independent vpdpbusd chains hide the instruction's latency. */
    __m512i acc[12];
    const __m512i a = _mm512_set1_epi32(0x01020304), b = _mm512_set1_epi32(0x01fffe03);
    for (int i = 0; i < 12; i++) acc[i] = _mm512_set1_epi32(i);
    const long iters = 1 << 20;
    long rounds = 0;
    const double t0 = ccq_seconds();
    double t;
    do {
        for (long it = 0; it < iters; it++) {
#pragma GCC unroll 12
            for (int i = 0; i < 12; i++) acc[i] = _mm512_dpbusd_epi32(acc[i], a, b);
            __asm__ volatile("" : "+v"(acc[0]), "+v"(acc[1]), "+v"(acc[2]), "+v"(acc[3]), "+v"(acc[4]), "+v"(acc[5]));
        }
        rounds++;
        t = ccq_seconds() - t0;
    } while (t < seconds);
    int32_t sink[16];
    __m512i s = acc[0];
    for (int i = 1; i < 12; i++) s = _mm512_add_epi32(s, acc[i]);
    _mm512_storeu_si512(sink, s);
    __asm__ volatile("" ::"r"(sink[0]));
    return (double)rounds * iters * 12 * 64 / t;
}

static void vnni_add_u8(size_t n, const uint8_t *a, const uint8_t *b, const kern_add *p, uint8_t *out)
{
    const __m512i za = _mm512_set1_epi32(p->za), zb = _mm512_set1_epi32(p->zb);
    const __m512i am = _mm512_set1_epi32(p->am), bm = _mm512_set1_epi32(p->bm);
    const __m512i r = _mm512_set1_epi32(1 << (p->shift - 1)), zo = _mm512_set1_epi32(p->zo);
    const __m512i lo = _mm512_set1_epi32(p->lo), hi = _mm512_set1_epi32(p->hi);
    const __m128i sh = _mm_cvtsi32_si128(p->shift);
    size_t i = 0;
    for (; i + 16 <= n; i += 16) {
        const __m512i va = _mm512_sub_epi32(_mm512_cvtepu8_epi32(_mm_loadu_si128((const __m128i *)(a + i))), za);
        const __m512i vb = _mm512_sub_epi32(_mm512_cvtepu8_epi32(_mm_loadu_si128((const __m128i *)(b + i))), zb);
        const __m512i v = _mm512_add_epi32(_mm512_mullo_epi32(va, am), _mm512_mullo_epi32(vb, bm));
        const __mmask16 neg = _mm512_cmplt_epi32_mask(v, _mm512_setzero_si512());
        __m512i q = _mm512_srl_epi32(_mm512_add_epi32(_mm512_abs_epi32(v), r), sh);
        q = _mm512_mask_sub_epi32(q, neg, _mm512_setzero_si512(), q);
        q = _mm512_min_epi32(_mm512_max_epi32(_mm512_add_epi32(q, zo), lo), hi);
        _mm_storeu_si128((__m128i *)(out + i), _mm512_cvtepi32_epi8(q));
    }
    for (; i < n; i++) out[i] = kern_add_one(a[i], b[i], p);
}

const kern_isa kern_isa_avx512vnni = {
    .name = "avx512vnni",
    .kr = 4,
    .packed_size = vnni_packed_size,
    .pack = vnni_pack,
    .gemm_u8 = vnni_gemm_u8,
    .gemm_i32 = vnni_gemm_i32,
    .peak_macs = vnni_peak_macs,
    .add_u8 = vnni_add_u8,
};
