/*
 * kern_avx512vnni.c: u8 x s8 GEMM with vpdpbusd (AVX-512 VNNI), compiled
 * alone with -mavx512f -mavx512bw -mavx512vl -mavx512vnni and reached only
 * through the dispatch table when the CPU has them.
 *
 * Packing: B in blocks of 16 output channels, [N/16][Kp/4][16][4]: one
 * 64-byte vector holds 4 consecutive k of 16 channels, which is what
 * vpdpbusd consumes against 4 activation bytes broadcast to every lane.
 * vpdpbusd sums the four u8*s8 products into int32 without intermediate
 * saturation, so it is exact for 8-bit weights. Tiles of 6 rows x 64,
 * 12 x 32 and 12 x 16 channels keep 24 accumulators in flight (see below);
 * a block of 16 channels over rows 16 bytes apart (a stride-1 convolution
 * over 16 input channels) takes the pixel-quad tile instead, which reads the
 * same packing with 4 rows x 4 channels per vector. Requantization is
 * vectorised to give bit for bit what kern_requant gives.
 *
 * Depthwise (kern_dw): 64 channels per block, taps in fours. Four taps'
 * 64 channel bytes are interleaved in-lane (vpunpck{l,h}bw, then
 * {l,h}wd) into four vectors whose dwords hold the 4 taps of one channel;
 * vpdpbusd against the levels in the same order sums them exactly. Packed W:
 * [C/64][ceil(T/4)][4][64] int8: accumulator a, 128-bit lane L, dword d is
 * channel 16 L + 4 a + d, its 4 bytes taps 4g..4g+3. The pack and clamp at
 * the end (as in the pixel-quad tile) restore channel order in-lane. When
 * only 1..16 channels are left they go through 128-bit vectors (lane 0 of
 * the same layout): the 4 accumulators, one per 512-bit lane, are the 16
 * channels in order, requantized as one vector (a 64-channel block
 * requantizes 4 vectors whatever the number of live channels).
 */
#include <immintrin.h>
#include <string.h>

#include "ccq/kern.h"

enum { NB = 16 };

static size_t vnni_packed_size(int N, int K) { return (size_t)((N + NB - 1) / NB) * NB * (size_t)K; }

static void vnni_pack(const int8_t *levels, int N, int K, int8_t *out)
{
    memset(out, 0, vnni_packed_size(N, K));
    for (int n = 0; n < N; n++) {
        int8_t *blk = out + (size_t)(n / NB) * NB * K;
        for (int k = 0; k < K; k++) blk[((size_t)(k / 4) * NB + n % NB) * 4 + k % 4] = levels[(size_t)n * K + k];
    }
}

static ptrdiff_t vnni_packed_offset(const int8_t *packed, int N, int K, int n, int k, int8_t v)
{
    (void)packed, (void)N, (void)v;
    return (ptrdiff_t)(n / NB) * NB * K + ((ptrdiff_t)(k / 4) * NB + n % NB) * 4 + k % 4;
}

/* Per-channel requantization constants of 16 lanes, hoisted out of a tile:
 * the multiplier, shift and rounding term 2^(shift-1) of the even and odd
 * dwords, each in the 64-bit lanes that vpmuludq and vpsrlvq read. */
typedef struct {
    __m512i mult_e, mult_o, shift_e, shift_o, round_e, round_o;
} rq_consts;

static inline rq_consts rq_consts_of(__m512i mult, __m512i shift)
{
    const __m512i one = _mm512_set1_epi64(1);
    rq_consts k;
    k.mult_e = mult;
    k.mult_o = _mm512_srli_epi64(mult, 32);
    k.shift_e = _mm512_and_si512(shift, _mm512_set1_epi64(0xffffffff));
    k.shift_o = _mm512_srli_epi64(shift, 32);
    k.round_e = _mm512_sllv_epi64(one, _mm512_sub_epi64(k.shift_e, one));
    k.round_o = _mm512_sllv_epi64(one, _mm512_sub_epi64(k.shift_o, one));
    return k;
}

/* v = sign(acc) * min((|acc| * mult + 2^(shift-1)) >> shift, 2^31 - 1) on 16 lanes. */
static inline __m512i requant16(__m512i acc, const rq_consts *k)
{
    const __m512i lim = _mm512_set1_epi64(INT32_MAX);
    const __mmask16 neg = _mm512_cmplt_epi32_mask(acc, _mm512_setzero_si512());
    const __m512i a = _mm512_abs_epi32(acc);
    __m512i pe = _mm512_add_epi64(_mm512_mul_epu32(a, k->mult_e), k->round_e);
    __m512i po = _mm512_add_epi64(_mm512_mul_epu32(_mm512_srli_epi64(a, 32), k->mult_o), k->round_o);
    pe = _mm512_min_epu64(_mm512_srlv_epi64(pe, k->shift_e), lim);
    po = _mm512_min_epu64(_mm512_srlv_epi64(po, k->shift_o), lim);
    /* odd dwords take the low dword of po's 64-bit lanes */
    const __m512i q = _mm512_mask_shuffle_epi32(pe, 0xaaaa, po, _MM_PERM_CDAB);
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

/* Tiles are written out with one named accumulator per (row, 16-channel
 * block): an array of 24 zmm accumulators is too large for the compiler's
 * scalar replacement and would live on the stack. 24 accumulators keep
 * enough vpdpbusd chains in flight to cover its latency (the ceiling
 * measurement needs about 20). Shapes: 12 rows x 32 channels, 6 rows x 64,
 * 12 rows x 16. A tile with fewer valid rows repeats its last row pointer
 * and stores only the valid rows. */

#define R12(X) X(0) X(1) X(2) X(3) X(4) X(5) X(6) X(7) X(8) X(9) X(10) X(11)
#define R6(X) X(0) X(1) X(2) X(3) X(4) X(5)

typedef struct {
    __m512i bias;
    rq_consts k;
    __mmask16 mask;
    int c0;
} blk;

static inline blk load_blk(const kern_rq *rq, int c0, int N)
{
    blk b;
    const int left = N - c0;
    b.c0 = c0;
    b.mask = left >= NB ? (__mmask16)0xffff : (__mmask16)((1u << left) - 1);
    b.bias = _mm512_maskz_loadu_epi32(b.mask, rq->bias + c0);
    b.k = rq_consts_of(_mm512_maskz_loadu_epi32(b.mask, rq->mult + c0),
                       _mm512_mask_loadu_epi32(_mm512_set1_epi32(1), b.mask, rq->shift + c0));
    return b;
}

static inline void finish(__m512i acc, const blk *b, int row, const kern_rq *rq, void *C, size_t ldc, int i32)
{
    const __m512i v = requant16(acc, &b->k);
    if (i32)
        _mm512_mask_storeu_epi32((int32_t *)C + (size_t)row * ldc + b->c0, b->mask, v);
    else
        store_u8((uint8_t *)C + (size_t)row * ldc + b->c0, v, _mm512_set1_epi32(rq->zp), _mm512_set1_epi32(rq->lo),
                 _mm512_set1_epi32(rq->hi), b->mask);
}

/* Row pointers of one segment; rows past mr repeat the last valid one. */
#define ROWPTR(r) const uint8_t *a##r = A->rows[m0 + ((r) < mr ? (r) : mr - 1)] + s * A->seg_stride;

/* 12 rows x 2 blocks (32 channels). */
static void tile_12x2(const kern_a *A, int m0, int mr, int n0, int N, const int8_t *B, const kern_rq *rq, void *C,
                      size_t ldc, int i32)
{
    const int K = A->nseg * A->seg_len;
    const blk b0 = load_blk(rq, n0, N), b1 = load_blk(rq, n0 + NB, N);
#define DECL(r) __m512i c##r##_0 = b0.bias, c##r##_1 = b1.bias;
    R12(DECL)
#undef DECL
    const int8_t *w = B + (size_t)(n0 / NB) * NB * K, *w2 = w + (size_t)NB * K;
    for (int s = 0; s < A->nseg; s++) {
        R12(ROWPTR)
        for (int k = 0; k < A->seg_len; k += 4) {
            const __m512i w0 = _mm512_loadu_si512(w), w1 = _mm512_loadu_si512(w2);
            w += 4 * NB, w2 += 4 * NB;
#define STEP(r)                                                                                                  \
    {                                                                                                            \
        const __m512i av = bcast4(a##r + k);                                                                     \
        c##r##_0 = _mm512_dpbusd_epi32(c##r##_0, av, w0);                                                        \
        c##r##_1 = _mm512_dpbusd_epi32(c##r##_1, av, w1);                                                        \
    }
            R12(STEP)
#undef STEP
        }
    }
#define FIN(r)                                                                                                   \
    if ((r) < mr) {                                                                                              \
        finish(c##r##_0, &b0, m0 + (r), rq, C, ldc, i32);                                                        \
        finish(c##r##_1, &b1, m0 + (r), rq, C, ldc, i32);                                                        \
    }
    R12(FIN)
#undef FIN
}

/* 6 rows x 4 blocks (64 channels). */
static void tile_6x4(const kern_a *A, int m0, int mr, int n0, int N, const int8_t *B, const kern_rq *rq, void *C,
                     size_t ldc, int i32)
{
    const int K = A->nseg * A->seg_len;
    const blk b0 = load_blk(rq, n0, N), b1 = load_blk(rq, n0 + NB, N), b2 = load_blk(rq, n0 + 2 * NB, N),
              b3 = load_blk(rq, n0 + 3 * NB, N);
#define DECL(r) __m512i c##r##_0 = b0.bias, c##r##_1 = b1.bias, c##r##_2 = b2.bias, c##r##_3 = b3.bias;
    R6(DECL)
#undef DECL
    const int8_t *w = B + (size_t)(n0 / NB) * NB * K;
    const size_t bs = (size_t)NB * K;
    for (int s = 0; s < A->nseg; s++) {
        R6(ROWPTR)
        for (int k = 0; k < A->seg_len; k += 4) {
            const __m512i w0 = _mm512_loadu_si512(w), w1 = _mm512_loadu_si512(w + bs),
                          w2 = _mm512_loadu_si512(w + 2 * bs), w3 = _mm512_loadu_si512(w + 3 * bs);
            w += 4 * NB;
#define STEP(r)                                                                                                  \
    {                                                                                                            \
        const __m512i av = bcast4(a##r + k);                                                                     \
        c##r##_0 = _mm512_dpbusd_epi32(c##r##_0, av, w0);                                                        \
        c##r##_1 = _mm512_dpbusd_epi32(c##r##_1, av, w1);                                                        \
        c##r##_2 = _mm512_dpbusd_epi32(c##r##_2, av, w2);                                                        \
        c##r##_3 = _mm512_dpbusd_epi32(c##r##_3, av, w3);                                                        \
    }
            R6(STEP)
#undef STEP
        }
    }
#define FIN(r)                                                                                                   \
    if ((r) < mr) {                                                                                              \
        finish(c##r##_0, &b0, m0 + (r), rq, C, ldc, i32);                                                        \
        finish(c##r##_1, &b1, m0 + (r), rq, C, ldc, i32);                                                        \
        finish(c##r##_2, &b2, m0 + (r), rq, C, ldc, i32);                                                        \
        finish(c##r##_3, &b3, m0 + (r), rq, C, ldc, i32);                                                        \
    }
    R6(FIN)
#undef FIN
}

/* 12 rows x 1 block (16 channels, or the last 1..16 channels). With one
 * block, 12 accumulators would leave vpdpbusd latency-bound, so even and odd
 * k-groups go to two accumulator sets (24 chains) summed at the end. */
static void tile_12x1(const kern_a *A, int m0, int mr, int n0, int N, const int8_t *B, const kern_rq *rq, void *C,
                      size_t ldc, int i32)
{
    const int K = A->nseg * A->seg_len;
    const blk b0 = load_blk(rq, n0, N);
#define DECL(r) __m512i c##r = b0.bias, e##r = _mm512_setzero_si512();
    R12(DECL)
#undef DECL
    const int8_t *w = B + (size_t)(n0 / NB) * NB * K;
    for (int s = 0; s < A->nseg; s++) {
        R12(ROWPTR)
        int k = 0;
        for (; k + 8 <= A->seg_len; k += 8) {
            const __m512i w0 = _mm512_loadu_si512(w), w1 = _mm512_loadu_si512(w + 4 * NB);
            w += 8 * NB;
#define STEP(r)                                                                                                  \
    c##r = _mm512_dpbusd_epi32(c##r, bcast4(a##r + k), w0);                                                      \
    e##r = _mm512_dpbusd_epi32(e##r, bcast4(a##r + k + 4), w1);
            R12(STEP)
#undef STEP
        }
        if (k < A->seg_len) {
            const __m512i w0 = _mm512_loadu_si512(w);
            w += 4 * NB;
#define STEP(r) c##r = _mm512_dpbusd_epi32(c##r, bcast4(a##r + k), w0);
            R12(STEP)
#undef STEP
        }
    }
#define FIN(r)                                                                                                   \
    if ((r) < mr) finish(_mm512_add_epi32(c##r, e##r), &b0, m0 + (r), rq, C, ldc, i32);
    R12(FIN)
#undef FIN
}

/* 16 channels as pixel quads: the tile for a block of exactly 16 output
 * channels when A is a stride-16 window (a 3x3 convolution over 16 input
 * channels, stride 1), where tile_12x1 spends one broadcast per vpdpbusd.
 *
 * Layout: a quad is 4 rows m..m+3 with rows[m + i] == rows[m] + 16 i, so one
 * 64-byte load at rows[m] + s * seg_stride + k holds bytes k..k+15 of the
 * segment s of the 4 rows, row i in 128-bit lane i. An in-lane dword shuffle
 * selects k-group j (4 bytes) in every dword of its lane; the 16 weight bytes
 * of k-group j for channels 4c..4c+3 (bytes 16c..16c+15 of the packed
 * 64-byte k-group vector) broadcast to every lane; vpdpbusd then accumulates
 * row i, channel 4c + d in lane i, dword d of accumulator c. One shuffle
 * feeds four vpdpbusd (channel groups c = 0..3) and each weight vector is
 * shared by the 6 quads of the tile: 24 rows, 24 accumulators. In-lane packs
 * (32 -> 16 -> 8 bits) of the 4 accumulators of a quad give, in lane i, the
 * 16 output bytes of row i in channel order. */
#define QN(X) X(0) X(1) X(2) X(3) X(4) X(5)
enum { QUADS = 6 };

/* 16 bytes at p in every 128-bit lane. */
static inline __m512i bcast16(const void *p) { return _mm512_broadcast_i32x4(_mm_loadu_si128((const __m128i *)p)); }

static inline int quad_ok(const kern_a *A, int m)
{
    const uint8_t *r = A->rows[m];
    return A->rows[m + 1] == r + 16 && A->rows[m + 2] == r + 32 && A->rows[m + 3] == r + 48;
}

/* Requantizes, clamps and stores the 4 accumulators of one quad (rows
 * m..m+3, 16 channels). The clamp is done on int16 after the packs:
 * packs_epi32 saturates v to int16 and adds_epi16 saturates zp + v, and
 * since lo, hi lie in [0, 255] and zp >= 0, clamp(sat16(zp + sat16(v)))
 * equals clamp(zp + v) for every int32 v. */
static inline void finish_quad(__m512i c0, __m512i c1, __m512i c2, __m512i c3, const rq_consts *k,
                               const kern_rq *rq, uint8_t *C, size_t ldc)
{
    const __m512i zp = _mm512_set1_epi16((int16_t)rq->zp);
    const __m512i lo = _mm512_set1_epi16((int16_t)rq->lo), hi = _mm512_set1_epi16((int16_t)rq->hi);
#define RQ(i) requant16(c##i, &k[i])
#define CLAMP(v) _mm512_min_epi16(_mm512_max_epi16(_mm512_adds_epi16(v, zp), lo), hi)
    const __m512i v01 = CLAMP(_mm512_packs_epi32(RQ(0), RQ(1))), v23 = CLAMP(_mm512_packs_epi32(RQ(2), RQ(3)));
#undef CLAMP
#undef RQ
    const __m512i v = _mm512_packus_epi16(v01, v23);
    if (ldc == NB) {
        _mm512_storeu_si512(C, v);
    } else {
        _mm_storeu_si128((__m128i *)C, _mm512_castsi512_si128(v));
        _mm_storeu_si128((__m128i *)(C + ldc), _mm512_extracti32x4_epi32(v, 1));
        _mm_storeu_si128((__m128i *)(C + 2 * ldc), _mm512_extracti32x4_epi32(v, 2));
        _mm_storeu_si128((__m128i *)(C + 3 * ldc), _mm512_extracti32x4_epi32(v, 3));
    }
}

/* nq (1..QUADS) quads from row m0, 16 channels from n0 (N - n0 >= 16), u8
 * output. Assumes seg_len % 16 == 0 and quad_ok for each quad. Quads past nq
 * repeat the last valid one and are not stored. */
static void tile_quads(const kern_a *A, int m0, int nq, int n0, const int8_t *B, const rq_consts *kc,
                       const kern_rq *rq, uint8_t *C, size_t ldc)
{
    const int K = A->nseg * A->seg_len;
#define DECL(q) __m512i c##q##_0, c##q##_1, c##q##_2, c##q##_3;
    QN(DECL)
#undef DECL
    {
        const __m512i b0 = bcast16(rq->bias + n0), b1 = bcast16(rq->bias + n0 + 4),
                      b2 = bcast16(rq->bias + n0 + 8), b3 = bcast16(rq->bias + n0 + 12);
#define INIT(q) c##q##_0 = b0, c##q##_1 = b1, c##q##_2 = b2, c##q##_3 = b3;
        QN(INIT)
#undef INIT
    }
    const int8_t *w = B + (size_t)(n0 / NB) * NB * K;
    for (int s = 0; s < A->nseg; s++) {
#define QPTR(q) const uint8_t *a##q = A->rows[m0 + 4 * ((q) < nq ? (q) : nq - 1)] + s * A->seg_stride;
        QN(QPTR)
#undef QPTR
        for (int k = 0; k < A->seg_len; k += 16, w += 16 * NB) {
#define STEP(q, j)                                                                                               \
    {                                                                                                            \
        const __m512i x = _mm512_shuffle_epi32(_mm512_loadu_si512(a##q + k), (_MM_PERM_ENUM)((j) * 0x55));      \
        c##q##_0 = _mm512_dpbusd_epi32(c##q##_0, x, w0);                                                         \
        c##q##_1 = _mm512_dpbusd_epi32(c##q##_1, x, w1);                                                         \
        c##q##_2 = _mm512_dpbusd_epi32(c##q##_2, x, w2);                                                         \
        c##q##_3 = _mm512_dpbusd_epi32(c##q##_3, x, w3);                                                         \
    }
#define STEP0(q) STEP(q, 0)
#define STEP1(q) STEP(q, 1)
#define STEP2(q) STEP(q, 2)
#define STEP3(q) STEP(q, 3)
#define KGROUP(j)                                                                                                \
    {                                                                                                            \
        const __m512i w0 = bcast16(w + (j) * 4 * NB), w1 = bcast16(w + (j) * 4 * NB + 16),                       \
                      w2 = bcast16(w + (j) * 4 * NB + 32), w3 = bcast16(w + (j) * 4 * NB + 48);                  \
        QN(STEP##j)                                                                                              \
    }
            KGROUP(0) KGROUP(1) KGROUP(2) KGROUP(3)
#undef KGROUP
#undef STEP0
#undef STEP1
#undef STEP2
#undef STEP3
#undef STEP
        }
    }
#define FIN(q)                                                                                                   \
    if ((q) < nq)                                                                                                \
        finish_quad(c##q##_0, c##q##_1, c##q##_2, c##q##_3, kc, rq, C + (size_t)(m0 + 4 * (q)) * ldc + n0, ldc);
    QN(FIN)
#undef FIN
}

/* The last 16-channel block (or the last 1..15 channels): quads where the rows
 * allow, tile_12x1 elsewhere (up to the next break in the row steps, so that
 * quads realign to the start of each run of stride-16 rows). */
static void block_16(const kern_a *A, int n0, int N, const int8_t *B, const kern_rq *rq, void *C, size_t ldc, int i32)
{
    const int quads = !i32 && N - n0 >= NB && A->seg_len % 16 == 0;
    rq_consts kc[4];
    if (quads)
        for (int c = 0; c < 4; c++)
            kc[c] = rq_consts_of(bcast16(rq->mult + n0 + 4 * c), bcast16(rq->shift + n0 + 4 * c));
    int m = 0;
    while (m < A->M) {
        int mr = A->M - m < 12 ? A->M - m : 12;
        if (quads) {
            int nq = 0;
            while (nq < QUADS && m + 4 * nq + 4 <= A->M && quad_ok(A, m + 4 * nq)) nq++;
            if (nq) {
                tile_quads(A, m, nq, n0, B, kc, rq, (uint8_t *)C, ldc);
                m += 4 * nq;
                continue;
            }
            mr = 1;
            while (mr < 3 && m + mr < A->M && A->rows[m + mr] == A->rows[m + mr - 1] + 16) mr++;
        }
        tile_12x1(A, m, mr, n0, N, B, rq, C, ldc, i32);
        m += mr;
    }
}

static void gemm(const kern_a *A, int N, const int8_t *B, const kern_rq *rq, void *C, size_t ldc, int i32)
{
    int n0 = 0;
    for (; n0 + 4 * NB <= N; n0 += 4 * NB)
        for (int m = 0; m < A->M; m += 6) tile_6x4(A, m, A->M - m < 6 ? A->M - m : 6, n0, N, B, rq, C, ldc, i32);
    for (; n0 + 2 * NB <= N; n0 += 2 * NB)
        for (int m = 0; m < A->M; m += 12) tile_12x2(A, m, A->M - m < 12 ? A->M - m : 12, n0, N, B, rq, C, ldc, i32);
    for (; n0 < N; n0 += NB) block_16(A, n0, N, B, rq, C, ldc, i32);
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
    /* 24 independent vpdpbusd chains, in inline asm so that the instruction
     * stream is exactly that (no register copies or spills from the compiler):
     * enough chains to cover the instruction's latency; fewer would measure
     * latency, not throughput. */
    __m512i a = _mm512_set1_epi32(0x01020304), b = _mm512_set1_epi32(0x01fffe03);
#define DECL(r) __m512i c##r = _mm512_set1_epi32(r), d##r = _mm512_set1_epi32(r + 12);
    R12(DECL)
#undef DECL
    const long iters = 1 << 18;
    long rounds = 0;
    const double t0 = ccq_seconds();
    double t;
    do {
        for (long it = 0; it < iters; it++) {
#define STEP(r)                                                                                                  \
    __asm__("vpdpbusd %[y], %[x], %[c]" : [c] "+v"(c##r) : [x] "v"(a), [y] "v"(b));                             \
    __asm__("vpdpbusd %[y], %[x], %[c]" : [c] "+v"(d##r) : [x] "v"(a), [y] "v"(b));
            R12(STEP)
#undef STEP
        }
        rounds++;
        t = ccq_seconds() - t0;
    } while (t < seconds);
    __m512i s = _mm512_setzero_si512();
#define SUM(r) s = _mm512_add_epi32(s, _mm512_add_epi32(c##r, d##r));
    R12(SUM)
#undef SUM
    int32_t sink[16];
    _mm512_storeu_si512(sink, s);
    __asm__ volatile("" ::"r"(sink[0]));
    return (double)rounds * iters * 24 * 64 / t;
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

/* The kern_mul of n <= 16 values (a tail of n < 16 through masked loads and stores). The product
 * |v| * mult (< 2^47) is formed in 64-bit lanes, even and odd halves apart; a quotient above 1023
 * is clamped to 1023, which cannot change the clamped u8 result (zo + q with zo <= 255). */
static inline void vnni_mul16(const uint8_t *a, const uint8_t *b, int n, const kern_mul *p, uint8_t *out)
{
    const __mmask16 m = n >= 16 ? (__mmask16)0xFFFF : (__mmask16)((1u << n) - 1);
    const __m512i va = _mm512_sub_epi32(_mm512_cvtepu8_epi32(_mm_maskz_loadu_epi8(m, a)), _mm512_set1_epi32(p->za));
    const __m512i vb = _mm512_sub_epi32(_mm512_cvtepu8_epi32(_mm_maskz_loadu_epi8(m, b)), _mm512_set1_epi32(p->zb));
    const __m512i v = _mm512_mullo_epi32(va, vb);
    const __mmask16 neg = _mm512_cmplt_epi32_mask(v, _mm512_setzero_si512());
    const __m512i av = _mm512_abs_epi32(v), mult = _mm512_set1_epi64(p->mult);
    const __m512i r = _mm512_set1_epi64((int64_t)1 << (p->shift - 1)), cap = _mm512_set1_epi64(1023);
    const __m128i sh = _mm_cvtsi32_si128(p->shift);
    const __m512i qe = _mm512_min_epu64(_mm512_srl_epi64(_mm512_add_epi64(_mm512_mul_epu32(av, mult), r), sh), cap);
    const __m512i qo = _mm512_min_epu64(
        _mm512_srl_epi64(_mm512_add_epi64(_mm512_mul_epu32(_mm512_srli_epi64(av, 32), mult), r), sh), cap);
    __m512i q = _mm512_mask_blend_epi32((__mmask16)0xAAAA, qe, _mm512_slli_epi64(qo, 32));
    q = _mm512_mask_sub_epi32(q, neg, _mm512_setzero_si512(), q);
    q = _mm512_add_epi32(q, _mm512_set1_epi32(p->zo));
    q = _mm512_min_epi32(_mm512_max_epi32(q, _mm512_set1_epi32(p->lo)), _mm512_set1_epi32(p->hi));
    _mm_mask_storeu_epi8(out, m, _mm512_cvtepi32_epi8(q));
}

static void vnni_mul_u8(size_t P, int C, const uint8_t *a, const uint8_t *b, int bcast, const kern_mul *p,
                        uint8_t *out)
{
    if (!bcast) {
        const size_t n = P * (size_t)C;
        for (size_t i = 0; i < n; i += 16) vnni_mul16(a + i, b + i, n - i < 16 ? (int)(n - i) : 16, p, out + i);
        return;
    }
    for (size_t px = 0; px < P; px++)
        for (int c = 0; c < C; c += 16)
            vnni_mul16(a + px * C + c, b + c, C - c < 16 ? C - c : 16, p, out + px * C + c);
}

/* ---- depthwise ------------------------------------------------------------ */

enum { DWB = 64 }; /* channels per block */

static size_t vnni_dw_packed_size(int T, int C) { return (size_t)((C + DWB - 1) / DWB) * (size_t)((T + 3) / 4) * 256; }

static ptrdiff_t vnni_dw_packed_offset(int T, int C, int t, int c)
{
    (void)C;
    const int i = c % DWB, lane = i >> 4, j = i & 15;
    return ((ptrdiff_t)(c / DWB) * ((T + 3) / 4) + t / 4) * 256 + (j >> 2) * 64 + lane * 16 + (j & 3) * 4 + (t & 3);
}

static void vnni_dw_pack(const int8_t *levels, int T, int C, int8_t *out)
{
    memset(out, 0, vnni_dw_packed_size(T, C));
    for (int t = 0; t < T; t++)
        for (int c = 0; c < C; c++) out[vnni_dw_packed_offset(T, C, t, c)] = levels[(size_t)t * C + c];
}

/* 64 per-channel values (fill past `left`) as the 4 accumulators hold them: out[a] lane L dword d = 16 L + 4 a + d. */
static inline void dw_order(const int32_t *v, int left, int32_t fill, __m512i out[4])
{
    int32_t b[4][16];
    for (int a = 0; a < 4; a++)
        for (int l = 0; l < 4; l++)
            for (int d = 0; d < 4; d++) {
                const int c = 16 * l + 4 * a + d;
                b[a][4 * l + d] = c < left ? v[c] : fill;
            }
    for (int a = 0; a < 4; a++) out[a] = _mm512_loadu_si512(b[a]);
}

/* Channels c .. c + left - 1 (left <= 16), the first of the block whose packed levels start at wb. */
static void dw_sub16(const kern_dw *a, const int8_t *wb, int c, int left, const kern_rq *rq, uint8_t *y, size_t ldy)
{
    const int T = a->T;
    const __mmask16 m = left >= 16 ? (__mmask16)0xffff : (__mmask16)((1u << left) - 1);
    blk b = load_blk(rq, c, c + left);
    const __m512i zp = _mm512_set1_epi32(rq->zp), lo = _mm512_set1_epi32(rq->lo), hi = _mm512_set1_epi32(rq->hi);
    for (int p = 0; p < a->P; p++) {
        const uint8_t *x = a->px[p] + c;
        const int8_t *w = wb;
        __m128i c0_ = _mm_setzero_si128(), c1_ = c0_, c2_ = c0_, c3_ = c0_;
        for (int t = 0; t < T; t += 4, w += 256) {
            const __m128i z = _mm_setzero_si128();
            const __m128i x0 = _mm_maskz_loadu_epi8(m, x + a->off[t]);
            const __m128i x1 = t + 1 < T ? _mm_maskz_loadu_epi8(m, x + a->off[t + 1]) : z;
            const __m128i x2 = t + 2 < T ? _mm_maskz_loadu_epi8(m, x + a->off[t + 2]) : z;
            const __m128i x3 = t + 3 < T ? _mm_maskz_loadu_epi8(m, x + a->off[t + 3]) : z;
            const __m128i l01 = _mm_unpacklo_epi8(x0, x1), h01 = _mm_unpackhi_epi8(x0, x1);
            const __m128i l23 = _mm_unpacklo_epi8(x2, x3), h23 = _mm_unpackhi_epi8(x2, x3);
            c0_ = _mm_dpbusd_epi32(c0_, _mm_unpacklo_epi16(l01, l23), _mm_loadu_si128((const __m128i *)w));
            c1_ = _mm_dpbusd_epi32(c1_, _mm_unpackhi_epi16(l01, l23), _mm_loadu_si128((const __m128i *)(w + 64)));
            c2_ = _mm_dpbusd_epi32(c2_, _mm_unpacklo_epi16(h01, h23), _mm_loadu_si128((const __m128i *)(w + 128)));
            c3_ = _mm_dpbusd_epi32(c3_, _mm_unpackhi_epi16(h01, h23), _mm_loadu_si128((const __m128i *)(w + 192)));
        }
        /* accumulator a holds channels 4a..4a+3: lane a of the 512-bit vector, channel order */
        __m512i acc = _mm512_castsi128_si512(c0_);
        acc = _mm512_inserti32x4(acc, c1_, 1);
        acc = _mm512_inserti32x4(acc, c2_, 2);
        acc = _mm512_inserti32x4(acc, c3_, 3);
        acc = _mm512_add_epi32(acc, b.bias);
        store_u8(y + (size_t)p * ldy + c, requant16(acc, &b.k), zp, lo, hi, b.mask);
    }
}

static void vnni_dw_u8(const kern_dw *a, const int8_t *W, const kern_rq *rq, uint8_t *y, size_t ldy)
{
    const int T = a->T, T4 = (T + 3) / 4;
    const __m512i zp = _mm512_set1_epi16((int16_t)rq->zp);
    const __m512i lo = _mm512_set1_epi16((int16_t)rq->lo), hi = _mm512_set1_epi16((int16_t)rq->hi);
    for (int c0 = 0; c0 < a->C; c0 += DWB) {
        const int left = a->C - c0;
        if (left <= 16) { /* the last 1..16 channels (two 16-channel passes cost more than a masked block) */
            dw_sub16(a, W + (size_t)(c0 / DWB) * T4 * 256, c0, left, rq, y, ldy);
            break;
        }
        const __mmask64 m = left >= DWB ? ~(__mmask64)0 : ((__mmask64)1 << left) - 1;
        __m512i bias[4], mult[4], shift[4];
        dw_order(rq->bias + c0, left, 0, bias);
        dw_order(rq->mult + c0, left, 0, mult);
        dw_order(rq->shift + c0, left, 1, shift);
        rq_consts k[4];
        for (int i = 0; i < 4; i++) k[i] = rq_consts_of(mult[i], shift[i]);
        const int8_t *wb = W + (size_t)(c0 / DWB) * T4 * 256;
        for (int p = 0; p < a->P; p++) {
            const uint8_t *x = a->px[p] + c0;
            const int8_t *w = wb;
            __m512i c0_ = bias[0], c1_ = bias[1], c2_ = bias[2], c3_ = bias[3];
            for (int t = 0; t < T; t += 4, w += 256) {
                /* taps past T: zero activations (their levels are zero too) */
                const __m512i z = _mm512_setzero_si512();
                const __m512i x0 = _mm512_maskz_loadu_epi8(m, x + a->off[t]);
                const __m512i x1 = t + 1 < T ? _mm512_maskz_loadu_epi8(m, x + a->off[t + 1]) : z;
                const __m512i x2 = t + 2 < T ? _mm512_maskz_loadu_epi8(m, x + a->off[t + 2]) : z;
                const __m512i x3 = t + 3 < T ? _mm512_maskz_loadu_epi8(m, x + a->off[t + 3]) : z;
                const __m512i l01 = _mm512_unpacklo_epi8(x0, x1), h01 = _mm512_unpackhi_epi8(x0, x1);
                const __m512i l23 = _mm512_unpacklo_epi8(x2, x3), h23 = _mm512_unpackhi_epi8(x2, x3);
                c0_ = _mm512_dpbusd_epi32(c0_, _mm512_unpacklo_epi16(l01, l23), _mm512_loadu_si512(w));
                c1_ = _mm512_dpbusd_epi32(c1_, _mm512_unpackhi_epi16(l01, l23), _mm512_loadu_si512(w + 64));
                c2_ = _mm512_dpbusd_epi32(c2_, _mm512_unpacklo_epi16(h01, h23), _mm512_loadu_si512(w + 128));
                c3_ = _mm512_dpbusd_epi32(c3_, _mm512_unpackhi_epi16(h01, h23), _mm512_loadu_si512(w + 192));
            }
            /* In-lane packs: lane L of packs(r0, r1) holds channels 16 L + 0..7, of packs(r2, r3) 16 L + 8..15,
             * and packus of the two lane L's 16 channels in order. The clamp on int16 equals the int32 one
             * (finish_quad). */
#define CLAMP(v) _mm512_min_epi16(_mm512_max_epi16(_mm512_adds_epi16(v, zp), lo), hi)
            const __m512i v01 = CLAMP(_mm512_packs_epi32(requant16(c0_, &k[0]), requant16(c1_, &k[1])));
            const __m512i v23 = CLAMP(_mm512_packs_epi32(requant16(c2_, &k[2]), requant16(c3_, &k[3])));
#undef CLAMP
            _mm512_mask_storeu_epi8(y + (size_t)p * ldy + c0, m, _mm512_packus_epi16(v01, v23));
        }
    }
}

const kern_isa kern_isa_avx512vnni = {
    .name = "avx512vnni",
    .kr = 4,
    .packed_size = vnni_packed_size,
    .pack = vnni_pack,
    .packed_offset = vnni_packed_offset,
    .gemm_u8 = vnni_gemm_u8,
    .gemm_i32 = vnni_gemm_i32,
    .peak_macs = vnni_peak_macs,
    .add_u8 = vnni_add_u8,
    .mul_u8 = vnni_mul_u8,
    .dw_packed_size = vnni_dw_packed_size,
    .dw_pack = vnni_dw_pack,
    .dw_packed_offset = vnni_dw_packed_offset,
    .dw_u8 = vnni_dw_u8,
};
