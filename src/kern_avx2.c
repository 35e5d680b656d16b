/*
 * kern_avx2.c: u8 x s8 GEMM for AVX2, compiled alone with -mavx2.
 *
 * vpmaddubsw multiplies u8 by s8 and adds adjacent pairs into int16 WITH
 * saturation: 2 * 255 * 127 = 64770 does not fit, so it is exact only while
 * |level| <= 63 (2 * 255 * 63 = 32130). pack() therefore looks at the
 * levels and picks one of two layouts, recorded in a 32-byte header:
 *   mode 0 (|level| <= 63, i.e. up to 7-bit weights): blocks of 8 channels
 *     [N/8][Kp/4][8][4]; vpmaddubsw then vpmaddwd by ones -> int32 (exact);
 *   mode 1 (8-bit weights): blocks of 8 channels [N/8][Kp/2][8][2]; the
 *     levels are sign-extended to int16 and vpmaddwd multiplies them with
 *     zero-extended activation pairs (exact, half the throughput).
 * The tile is MR rows x 16 channels. Requantization matches kern_requant.
 *
 * Depthwise (kern_dw): 16 channels per block, taps in pairs. The two taps'
 * activations are zero-extended to int16 and interleaved per channel
 * (vpunpcklwd/hwd, in-lane), the levels sign-extended to int16 in the same
 * order, and vpmaddwd sums the pair into one int32 per channel: exact for
 * any int8 level (2 * 255 * 128 < 2^31), no vpmaddubsw saturation. Packed W:
 * [C/16][ceil(T/2)][32] int8, byte order of the two accumulators: a0 holds
 * channels 0-3 (lane 0) and 8-11 (lane 1), a1 channels 4-7 and 12-15; in-lane
 * packs at the end restore channel order.
 */
#include <immintrin.h>
#include <stdlib.h>
#include <string.h>

#include "ccq/kern.h"

enum { NB = 8, MR = 4, HDR = 32 };

static size_t avx2_packed_size(int N, int K) { return HDR + (size_t)((N + NB - 1) / NB) * NB * (size_t)K; }

static void avx2_pack(const int8_t *levels, int N, int K, int8_t *out)
{
    int wide = 0;
    for (size_t i = 0; i < (size_t)N * K; i++)
        if (abs(levels[i]) > 63) wide = 1;
    memset(out, 0, avx2_packed_size(N, K));
    memcpy(out, &wide, sizeof wide);
    int8_t *body = out + HDR;
    const int g = wide ? 2 : 4; /* k per group */
    for (int n = 0; n < N; n++) {
        int8_t *blk = body + (size_t)(n / NB) * NB * K;
        for (int k = 0; k < K; k++) blk[((size_t)(k / g) * NB + n % NB) * g + k % g] = levels[(size_t)n * K + k];
    }
}

static ptrdiff_t avx2_packed_offset(const int8_t *packed, int N, int K, int n, int k, int8_t v)
{
    (void)N;
    int wide;
    memcpy(&wide, packed, sizeof wide);
    if (!wide && abs(v) > 63) return -1; /* the 7-bit layout would saturate: repack in the 16-bit one */
    const int g = wide ? 2 : 4;
    return HDR + (ptrdiff_t)(n / NB) * NB * K + ((ptrdiff_t)(k / g) * NB + n % NB) * g + k % g;
}

static inline __m256i requant8(__m256i acc, __m256i mult, __m256i shift)
{
    const __m256i one = _mm256_set1_epi64x(1), lim = _mm256_set1_epi64x(INT32_MAX);
    const __m256i lo32 = _mm256_set1_epi64x(0xffffffff);
    const __m256i neg = _mm256_cmpgt_epi32(_mm256_setzero_si256(), acc);
    const __m256i a = _mm256_abs_epi32(acc);
    const __m256i se = _mm256_and_si256(shift, lo32), so = _mm256_srli_epi64(shift, 32);
    __m256i pe = _mm256_mul_epu32(a, mult);
    __m256i po = _mm256_mul_epu32(_mm256_srli_epi64(a, 32), _mm256_srli_epi64(mult, 32));
    pe = _mm256_add_epi64(pe, _mm256_sllv_epi64(one, _mm256_sub_epi64(se, one)));
    po = _mm256_add_epi64(po, _mm256_sllv_epi64(one, _mm256_sub_epi64(so, one)));
    pe = _mm256_srlv_epi64(pe, se);
    po = _mm256_srlv_epi64(po, so);
    pe = _mm256_blendv_epi8(pe, lim, _mm256_cmpgt_epi64(pe, lim));
    po = _mm256_blendv_epi8(po, lim, _mm256_cmpgt_epi64(po, lim));
    const __m256i q = _mm256_or_si256(pe, _mm256_slli_epi64(po, 32));
    return _mm256_sub_epi32(_mm256_xor_si256(q, neg), neg);
}

static inline __m256i lane_mask(int left)
{
    const __m256i idx = _mm256_setr_epi32(0, 1, 2, 3, 4, 5, 6, 7);
    return _mm256_cmpgt_epi32(_mm256_set1_epi32(left), idx);
}

static inline void store_u8(uint8_t *c, __m256i v, __m256i zp, __m256i lo, __m256i hi, int left)
{
    /* clamp before adding zp: v may be near INT32_MAX, zp + v would wrap */
    v = _mm256_min_epi32(_mm256_max_epi32(v, _mm256_sub_epi32(lo, zp)), _mm256_sub_epi32(hi, zp));
    v = _mm256_add_epi32(v, zp);
    const __m128i p16 = _mm_packs_epi32(_mm256_castsi256_si128(v), _mm256_extracti128_si256(v, 1));
    const __m128i p8 = _mm_packus_epi16(p16, p16);
    if (left >= NB) {
        _mm_storel_epi64((__m128i *)c, p8);
    } else {
        uint8_t tmp[16];
        _mm_storeu_si128((__m128i *)tmp, p8);
        memcpy(c, tmp, (size_t)left);
    }
}

static inline __m256i bcast(const uint8_t *p, int wide)
{
    int32_t v;
    if (wide) {
        v = (int32_t)p[0] | ((int32_t)p[1] << 16); /* two zero-extended int16 */
    } else {
        memcpy(&v, p, 4);
    }
    return _mm256_set1_epi32(v);
}

static inline __attribute__((always_inline)) void tile(int mr, int nb, const kern_a *A, int m0, int n0, int N,
                                                       const int8_t *B, int wide, const kern_rq *rq, void *C,
                                                       size_t ldc, int i32)
{
    const int K = A->nseg * A->seg_len;
    __m256i acc[MR][2], bias[2], mult[2], shift[2], msk[2];
    int left[2];
    for (int j = 0; j < nb; j++) {
        const int c0 = n0 + NB * j;
        left[j] = N - c0;
        msk[j] = lane_mask(left[j]);
        bias[j] = _mm256_maskload_epi32(rq->bias + c0, msk[j]);
        mult[j] = _mm256_maskload_epi32(rq->mult + c0, msk[j]);
        shift[j] = _mm256_blendv_epi8(_mm256_set1_epi32(1), _mm256_maskload_epi32(rq->shift + c0, msk[j]), msk[j]);
    }
#pragma GCC unroll 4
    for (int r = 0; r < MR; r++)
        if (r < mr)
            for (int j = 0; j < 2; j++)
                if (j < nb) acc[r][j] = bias[j];
    const int8_t *b0 = B + HDR + (size_t)(n0 / NB) * NB * K;
    const int8_t *b1 = b0 + (size_t)NB * K;
    const __m256i ones = _mm256_set1_epi16(1);
    for (int s = 0; s < A->nseg; s++) {
        const uint8_t *p[MR];
#pragma GCC unroll 4
        for (int r = 0; r < MR; r++)
            if (r < mr) p[r] = A->rows[m0 + r] + s * A->seg_stride;
        if (!wide) {
            for (int k = 0; k < A->seg_len; k += 4) {
                const __m256i w0 = _mm256_loadu_si256((const __m256i *)b0);
                const __m256i w1 = nb > 1 ? _mm256_loadu_si256((const __m256i *)b1) : w0;
                b0 += 4 * NB, b1 += 4 * NB;
#pragma GCC unroll 4
                for (int r = 0; r < MR; r++) {
                    if (r < mr) {
                        const __m256i a = bcast(p[r] + k, 0);
                        acc[r][0] = _mm256_add_epi32(acc[r][0], _mm256_madd_epi16(_mm256_maddubs_epi16(a, w0), ones));
                        if (nb > 1)
                            acc[r][1] =
                                _mm256_add_epi32(acc[r][1], _mm256_madd_epi16(_mm256_maddubs_epi16(a, w1), ones));
                    }
                }
            }
        } else {
            for (int k = 0; k < A->seg_len; k += 2) {
                const __m256i w0 = _mm256_cvtepi8_epi16(_mm_loadu_si128((const __m128i *)b0));
                const __m256i w1 = nb > 1 ? _mm256_cvtepi8_epi16(_mm_loadu_si128((const __m128i *)b1)) : w0;
                b0 += 2 * NB, b1 += 2 * NB;
#pragma GCC unroll 4
                for (int r = 0; r < MR; r++) {
                    if (r < mr) {
                        const __m256i a = bcast(p[r] + k, 1);
                        acc[r][0] = _mm256_add_epi32(acc[r][0], _mm256_madd_epi16(a, w0));
                        if (nb > 1) acc[r][1] = _mm256_add_epi32(acc[r][1], _mm256_madd_epi16(a, w1));
                    }
                }
            }
        }
    }
    const __m256i zp = _mm256_set1_epi32(rq->zp), lo = _mm256_set1_epi32(rq->lo), hi = _mm256_set1_epi32(rq->hi);
#pragma GCC unroll 4
    for (int r = 0; r < MR; r++) {
        if (r >= mr) continue;
        for (int j = 0; j < nb; j++) {
            const __m256i v = requant8(acc[r][j], mult[j], shift[j]);
            if (i32)
                _mm256_maskstore_epi32((int32_t *)C + (size_t)(m0 + r) * ldc + n0 + NB * j, msk[j], v);
            else
                store_u8((uint8_t *)C + (size_t)(m0 + r) * ldc + n0 + NB * j, v, zp, lo, hi, left[j]);
        }
    }
}

#define TILE_CASE(R)                                                                                            \
    case R:                                                                                                     \
        if (nb == 2)                                                                                            \
            tile(R, 2, A, m, n0, N, B, wide, rq, C, ldc, i32);                                                  \
        else                                                                                                    \
            tile(R, 1, A, m, n0, N, B, wide, rq, C, ldc, i32);                                                  \
        break;

static void gemm(const kern_a *A, int N, const int8_t *B, const kern_rq *rq, void *C, size_t ldc, int i32)
{
    int wide;
    memcpy(&wide, B, sizeof wide);
    for (int n0 = 0; n0 < N; n0 += 2 * NB) {
        const int nb = N - n0 > NB ? 2 : 1;
        for (int m = 0; m < A->M; m += MR) {
            switch (A->M - m >= MR ? MR : A->M - m) {
                TILE_CASE(4)
                TILE_CASE(3)
                TILE_CASE(2)
                TILE_CASE(1)
            }
        }
    }
}

static void avx2_gemm_u8(const kern_a *A, int N, const int8_t *B, const kern_rq *rq, uint8_t *C, size_t ldc)
{
    gemm(A, N, B, rq, C, ldc, 0);
}

static void avx2_gemm_i32(const kern_a *A, int N, const int8_t *B, const kern_rq *rq, int32_t *C, size_t ldc)
{
    gemm(A, N, B, rq, C, ldc, 1);
}

static double avx2_peak_macs(double seconds)
{
    /* vpmaddubsw + vpmaddwd + vpaddd per 32 MACs (the mode-0 inner step), 8
     * independent chains, in inline asm so that the instruction stream is
     * exactly that. */
    __m256i a = _mm256_set1_epi32(0x01020304), b = _mm256_set1_epi32(0x01fffe03), ones = _mm256_set1_epi16(1);
    __m256i c[8], t[8];
    for (int i = 0; i < 8; i++) c[i] = _mm256_set1_epi32(i);
    const long iters = 1 << 18;
    long rounds = 0;
    const double t0 = ccq_seconds();
    double el;
    do {
        for (long it = 0; it < iters; it++) {
#define STEP(i)                                                                                                  \
    __asm__("vpmaddubsw %[y], %[x], %[t]\n\tvpmaddwd %[o], %[t], %[t]\n\tvpaddd %[t], %[c], %[c]"             \
            : [c] "+x"(c[i]), [t] "=&x"(t[i])                                                                    \
            : [x] "x"(a), [y] "x"(b), [o] "x"(ones));
            STEP(0) STEP(1) STEP(2) STEP(3) STEP(4) STEP(5) STEP(6) STEP(7)
#undef STEP
        }
        rounds++;
        el = ccq_seconds() - t0;
    } while (el < seconds);
    __m256i s = c[0];
    for (int i = 1; i < 8; i++) s = _mm256_add_epi32(s, c[i]);
    int32_t sink[8];
    _mm256_storeu_si256((__m256i *)sink, s);
    __asm__ volatile("" ::"r"(sink[0]));
    return (double)rounds * iters * 8 * 32 / el;
}

static void avx2_add_u8(size_t n, const uint8_t *a, const uint8_t *b, const kern_add *p, uint8_t *out)
{
    const __m256i za = _mm256_set1_epi32(p->za), zb = _mm256_set1_epi32(p->zb);
    const __m256i am = _mm256_set1_epi32(p->am), bm = _mm256_set1_epi32(p->bm);
    const __m256i r = _mm256_set1_epi32(1 << (p->shift - 1)), zo = _mm256_set1_epi32(p->zo);
    const __m256i lo = _mm256_set1_epi32(p->lo), hi = _mm256_set1_epi32(p->hi);
    const __m128i sh = _mm_cvtsi32_si128(p->shift);
    size_t i = 0;
    for (; i + 8 <= n; i += 8) {
        const __m256i va = _mm256_sub_epi32(_mm256_cvtepu8_epi32(_mm_loadl_epi64((const __m128i *)(a + i))), za);
        const __m256i vb = _mm256_sub_epi32(_mm256_cvtepu8_epi32(_mm_loadl_epi64((const __m128i *)(b + i))), zb);
        const __m256i v = _mm256_add_epi32(_mm256_mullo_epi32(va, am), _mm256_mullo_epi32(vb, bm));
        const __m256i neg = _mm256_cmpgt_epi32(_mm256_setzero_si256(), v);
        __m256i q = _mm256_srl_epi32(_mm256_add_epi32(_mm256_abs_epi32(v), r), sh);
        q = _mm256_sub_epi32(_mm256_xor_si256(q, neg), neg);
        q = _mm256_min_epi32(_mm256_max_epi32(_mm256_add_epi32(q, zo), lo), hi);
        const __m128i p16 = _mm_packs_epi32(_mm256_castsi256_si128(q), _mm256_extracti128_si256(q, 1));
        _mm_storel_epi64((__m128i *)(out + i), _mm_packus_epi16(p16, p16));
    }
    for (; i < n; i++) out[i] = kern_add_one(a[i], b[i], p);
}

/* The kern_mul of 8 values (as vnni_mul16: 64-bit products, quotients clamped to 1023, exact). */
static inline void avx2_mul8(const uint8_t *a, const uint8_t *b, const kern_mul *p, uint8_t *out)
{
    const __m256i va = _mm256_sub_epi32(_mm256_cvtepu8_epi32(_mm_loadl_epi64((const __m128i *)a)), _mm256_set1_epi32(p->za));
    const __m256i vb = _mm256_sub_epi32(_mm256_cvtepu8_epi32(_mm_loadl_epi64((const __m128i *)b)), _mm256_set1_epi32(p->zb));
    const __m256i v = _mm256_mullo_epi32(va, vb);
    const __m256i neg = _mm256_cmpgt_epi32(_mm256_setzero_si256(), v);
    const __m256i av = _mm256_abs_epi32(v), mult = _mm256_set1_epi64x(p->mult);
    const __m256i r = _mm256_set1_epi64x((int64_t)1 << (p->shift - 1)), cap = _mm256_set1_epi64x(1023);
    const __m128i sh = _mm_cvtsi32_si128(p->shift);
    __m256i qe = _mm256_srl_epi64(_mm256_add_epi64(_mm256_mul_epu32(av, mult), r), sh);
    __m256i qo = _mm256_srl_epi64(_mm256_add_epi64(_mm256_mul_epu32(_mm256_srli_epi64(av, 32), mult), r), sh);
    qe = _mm256_blendv_epi8(qe, cap, _mm256_cmpgt_epi64(qe, cap)); /* below 2^47: signed compare is exact */
    qo = _mm256_blendv_epi8(qo, cap, _mm256_cmpgt_epi64(qo, cap));
    __m256i q = _mm256_blend_epi32(qe, _mm256_slli_epi64(qo, 32), 0xAA);
    q = _mm256_sub_epi32(_mm256_xor_si256(q, neg), neg);
    q = _mm256_add_epi32(q, _mm256_set1_epi32(p->zo));
    q = _mm256_min_epi32(_mm256_max_epi32(q, _mm256_set1_epi32(p->lo)), _mm256_set1_epi32(p->hi));
    const __m128i p16 = _mm_packs_epi32(_mm256_castsi256_si128(q), _mm256_extracti128_si256(q, 1));
    _mm_storel_epi64((__m128i *)out, _mm_packus_epi16(p16, p16));
}

static void avx2_mul_u8(size_t P, int C, const uint8_t *a, const uint8_t *b, int bcast, const kern_mul *p,
                        uint8_t *out)
{
    if (!bcast) {
        const size_t n = P * (size_t)C;
        size_t i = 0;
        for (; i + 8 <= n; i += 8) avx2_mul8(a + i, b + i, p, out + i);
        for (; i < n; i++) out[i] = kern_mul_one(a[i], b[i], p);
        return;
    }
    for (size_t px = 0; px < P; px++) {
        int c = 0;
        for (; c + 8 <= C; c += 8) avx2_mul8(a + px * C + c, b + c, p, out + px * C + c);
        for (; c < C; c++) out[px * C + c] = kern_mul_one(a[px * C + c], b[c], p);
    }
}

/* ---- depthwise ------------------------------------------------------------ */

enum { DWB = 16 }; /* channels per block */

static size_t avx2_dw_packed_size(int T, int C) { return (size_t)((C + DWB - 1) / DWB) * (size_t)((T + 1) / 2) * 32; }

static ptrdiff_t avx2_dw_packed_offset(int T, int C, int t, int c)
{
    (void)C;
    const int i = c % DWB;
    return ((ptrdiff_t)(c / DWB) * ((T + 1) / 2) + t / 2) * 32 + ((i >> 2) & 1) * 16 + (i >> 3) * 8 + (i & 3) * 2 +
           (t & 1);
}

static void avx2_dw_pack(const int8_t *levels, int T, int C, int8_t *out)
{
    memset(out, 0, avx2_dw_packed_size(T, C));
    for (int t = 0; t < T; t++)
        for (int c = 0; c < C; c++) out[avx2_dw_packed_offset(T, C, t, c)] = levels[(size_t)t * C + c];
}

/* 16 per-channel values (fill past `left`) in the accumulators' order: a0 = channels 0-3, 8-11; a1 = 4-7, 12-15. */
static inline void dw_order(const int32_t *v, int left, int32_t fill, __m256i *a0, __m256i *a1)
{
    int32_t b[DWB];
    for (int i = 0; i < DWB; i++) b[i] = i < left ? v[i] : fill;
    const __m256i lo = _mm256_loadu_si256((const __m256i *)b), hi = _mm256_loadu_si256((const __m256i *)(b + 8));
    *a0 = _mm256_permute2x128_si256(lo, hi, 0x20);
    *a1 = _mm256_permute2x128_si256(lo, hi, 0x31);
}

/* 16 activation bytes zero-extended to int16. */
static inline __m256i dw_x(const uint8_t *p) { return _mm256_cvtepu8_epi16(_mm_loadu_si128((const __m128i *)p)); }

static void avx2_dw_u8(const kern_dw *a, const int8_t *W, const kern_rq *rq, uint8_t *y, size_t ldy)
{
    const int T = a->T, T2 = (T + 1) / 2;
    const __m256i zp = _mm256_set1_epi32(rq->zp);
    const __m256i lo = _mm256_sub_epi32(_mm256_set1_epi32(rq->lo), zp), hi = _mm256_sub_epi32(_mm256_set1_epi32(rq->hi), zp);
    for (int c0 = 0; c0 < a->C; c0 += DWB) {
        const int left = a->C - c0;
        __m256i b0, b1, m0, m1, s0, s1;
        dw_order(rq->bias + c0, left, 0, &b0, &b1);
        dw_order(rq->mult + c0, left, 0, &m0, &m1);
        dw_order(rq->shift + c0, left, 1, &s0, &s1);
        const int8_t *wb = W + (size_t)(c0 / DWB) * T2 * 32;
        for (int p = 0; p < a->P; p++) {
            const uint8_t *x = a->px[p] + c0;
            const int8_t *w = wb;
            __m256i acc0 = b0, acc1 = b1;
            int t = 0;
            for (; t + 2 <= T; t += 2, w += 32) {
                const __m256i x0 = dw_x(x + a->off[t]), x1 = dw_x(x + a->off[t + 1]);
                const __m256i w0 = _mm256_cvtepi8_epi16(_mm_loadu_si128((const __m128i *)w));
                const __m256i w1 = _mm256_cvtepi8_epi16(_mm_loadu_si128((const __m128i *)(w + 16)));
                acc0 = _mm256_add_epi32(acc0, _mm256_madd_epi16(_mm256_unpacklo_epi16(x0, x1), w0));
                acc1 = _mm256_add_epi32(acc1, _mm256_madd_epi16(_mm256_unpackhi_epi16(x0, x1), w1));
            }
            if (t < T) { /* the odd last tap: its pair partner is zero (activation and level) */
                const __m256i x0 = dw_x(x + a->off[t]), x1 = _mm256_setzero_si256();
                const __m256i w0 = _mm256_cvtepi8_epi16(_mm_loadu_si128((const __m128i *)w));
                const __m256i w1 = _mm256_cvtepi8_epi16(_mm_loadu_si128((const __m128i *)(w + 16)));
                acc0 = _mm256_add_epi32(acc0, _mm256_madd_epi16(_mm256_unpacklo_epi16(x0, x1), w0));
                acc1 = _mm256_add_epi32(acc1, _mm256_madd_epi16(_mm256_unpackhi_epi16(x0, x1), w1));
            }
            /* clamp before adding zp (v may be near INT32_MAX); then in [0, 255]: the packs are exact */
            __m256i v0 = requant8(acc0, m0, s0), v1 = requant8(acc1, m1, s1);
            v0 = _mm256_add_epi32(_mm256_min_epi32(_mm256_max_epi32(v0, lo), hi), zp);
            v1 = _mm256_add_epi32(_mm256_min_epi32(_mm256_max_epi32(v1, lo), hi), zp);
            const __m256i p16 = _mm256_packs_epi32(v0, v1); /* channels 0-7 | 8-15 */
            const __m128i p8 = _mm_packus_epi16(_mm256_castsi256_si128(p16), _mm256_extracti128_si256(p16, 1));
            uint8_t *o = y + (size_t)p * ldy + c0;
            if (left >= DWB) {
                _mm_storeu_si128((__m128i *)o, p8);
            } else {
                uint8_t tmp[DWB];
                _mm_storeu_si128((__m128i *)tmp, p8);
                memcpy(o, tmp, (size_t)left);
            }
        }
    }
}

const kern_isa kern_isa_avx2 = {
    .name = "avx2",
    .kr = 4,
    .packed_size = avx2_packed_size,
    .pack = avx2_pack,
    .packed_offset = avx2_packed_offset,
    .gemm_u8 = avx2_gemm_u8,
    .gemm_i32 = avx2_gemm_i32,
    .peak_macs = avx2_peak_macs,
    .add_u8 = avx2_add_u8,
    .mul_u8 = avx2_mul_u8,
    .dw_packed_size = avx2_dw_packed_size,
    .dw_pack = avx2_dw_pack,
    .dw_packed_offset = avx2_dw_packed_offset,
    .dw_u8 = avx2_dw_u8,
};
