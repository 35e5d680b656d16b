/*
 * kern.h: integer GEMM kernels, one implementation per ISA behind a table.
 *
 * The one operation every conv and linear layer reduces to:
 *
 *   acc[m][n] = bias[n] + sum_{k < K} A[m][k] * B[n][k]       (u8 x s8 -> s32)
 *   C[m][n]   = requant(acc[m][n], mult[n], shift[n])          (see below)
 *
 * A is given indirectly (kern_a): row m is nseg segments of seg_len bytes,
 * segment s at rows[m] + s * seg_stride. A convolution over a padded NHWC
 * image is then a GEMM with no im2col copy: one row per output pixel,
 * one segment per kernel row (kw * Cin contiguous bytes). A plain matrix is
 * nseg = 1. K = nseg * seg_len and seg_len is a multiple of kr. B holds the
 * levels of N output channels, K per channel in the same order, packed by
 * the ISA's `pack`. Requantization (gemmlowp-style, exact):
 *
 *   v = sign(acc) * min(((|acc| * mult + 2^(shift-1)) >> shift), 2^31 - 1)
 *   u8 output:  C = clamp(zp + v, lo, hi)          int32 output: C = v
 *
 * i.e. round half away from zero of acc * mult * 2^-shift, saturating.
 * Every ISA's kernel gives bit-identical C for all inputs it accepts; the
 * scalar kernel is the reference. Callers guarantee |acc| < 2^31 - 1
 * (checked when a model is quantized) and shift in [1, 62].
 *
 * Depthwise convolution (channel multiplier 1: each output channel reads its
 * own input channel only) is a second operation, vectorised over channels
 * rather than a GEMM with N = 1 per channel (kern_dw below):
 *
 *   acc[p][c] = bias[c] + sum_{t < T} x(p, t)[c] * W[t][c]      (u8 x s8 -> s32)
 *   y[p][c]   = clamp(zp + requant(acc[p][c], mult[c], shift[c]), lo, hi)
 *
 * with the same requantization and the same guarantees as the GEMM.
 *
 * Selection: kern_select() returns the best ISA the CPU supports, or the one
 * named by the environment variable CCQ_ISA (scalar | avx2 | avx512vnni).
 */
#ifndef CCQ_KERN_H
#define CCQ_KERN_H

#include <stddef.h>
#include <stdint.h>

#include "ccq/common.h"

typedef struct {
    const int32_t *bias;  /* [N] */
    const int32_t *mult;  /* [N], in [0, 2^31) */
    const int32_t *shift; /* [N], in [1, 62] */
    int32_t zp, lo, hi;   /* u8 output: zero point and clamp bounds within [0, 255] */
} kern_rq;

/* Residual addition of two uint8 tensors onto a third scale, in int32:
 *   v = (a - za) * am + (b - zb) * bm    (am, bm < 2^21 and shift <= 30, so that
 *                                          |v| + 2^(shift-1) < 2^31: no overflow)
 *   out = clamp(zo + sign(v) * ((|v| + 2^(shift-1)) >> shift), lo, hi) */
typedef struct {
    int32_t za, am, zb, bm, shift, zo, lo, hi;
} kern_add;

static inline uint8_t kern_add_one(uint8_t a, uint8_t b, const kern_add *p)
{
    const int32_t v = (a - p->za) * p->am + (b - p->zb) * p->bm;
    const int32_t r = (int32_t)1 << (p->shift - 1);
    const int32_t q = v >= 0 ? (v + r) >> p->shift : -((-v + r) >> p->shift);
    const int32_t o = p->zo + q;
    return (uint8_t)(o < p->lo ? p->lo : o > p->hi ? p->hi : o);
}

/* Elementwise product of two uint8 tensors onto a third scale (squeeze-and-excitation gates):
 *   out = clamp(zo + kern_requant((a - za) * (b - zb), mult, shift), lo, hi)
 * |(a - za) * (b - zb)| <= 255 * 255, mult in [0, 2^31), shift in [1, 62]. */
typedef struct {
    int32_t za, zb, zo, lo, hi, mult, shift;
} kern_mul;

/* The A operand: M rows, each nseg segments of seg_len bytes. */
typedef struct {
    int M;
    const uint8_t *const *rows; /* M row start pointers */
    int nseg, seg_len;
    ptrdiff_t seg_stride;       /* bytes from one segment of a row to the next */
} kern_a;

/* The input of a depthwise convolution: P output pixels, T taps each. Tap t
 * of pixel p is the C contiguous channel bytes at px[p] + off[t] (an NHWC
 * pixel of the zero-point-padded image: px[p] is the window's corner, off[t]
 * the tap's distance from it, dilation included). A kernel may read up to 15
 * bytes past the C channels of a tap (the engine's buffers have 64 bytes of
 * slack); those bytes meet zero weights and no output. */
typedef struct {
    int P;
    const uint8_t *const *px; /* P pixel pointers */
    int T;
    const ptrdiff_t *off;     /* T tap offsets, bytes */
    int C;
} kern_dw;

typedef struct {
    const char *name;
    int kr; /* seg_len must be a multiple of kr */
    /* Bytes of packed B for N channels of K levels. */
    size_t (*packed_size)(int N, int K);
    /* levels: [N][K] row-major int8; out: packed_size bytes. */
    void (*pack)(const int8_t *levels, int N, int K, int8_t *out);
    /* Byte offset of level (n, k) inside `packed` (N channels of K levels, as
     * written by pack), so that one level can be patched in place; -1 when
     * the packed layout cannot hold the value v there (AVX2's 7-bit layout
     * and |v| > 63): the caller then packs the whole matrix again. */
    ptrdiff_t (*packed_offset)(const int8_t *packed, int N, int K, int n, int k, int8_t v);
    void (*gemm_u8)(const kern_a *a, int N, const int8_t *B, const kern_rq *rq, uint8_t *C, size_t ldc);
    void (*gemm_i32)(const kern_a *a, int N, const int8_t *B, const kern_rq *rq, int32_t *C, size_t ldc);
    /* Multiply-accumulates per second of this ISA's core u8 x s8 instruction
     * sequence on one core, measured over about `seconds` (registers only,
     * independent accumulators): the ceiling a kernel can approach. */
    double (*peak_macs)(double seconds);
    /* out[i] = kern_add_one(a[i], b[i], p) for i < n. */
    void (*add_u8)(size_t n, const uint8_t *a, const uint8_t *b, const kern_add *p, uint8_t *out);
    /* out[px * C + c] = the kern_mul of a[px * C + c] and b[px * C + c] (bcast 0) or b[c] (bcast 1:
     * one value per channel, broadcast over the P pixels), for px < P, c < C. */
    void (*mul_u8)(size_t P, int C, const uint8_t *a, const uint8_t *b, int bcast, const kern_mul *p, uint8_t *out);
    /* Depthwise weights: bytes of packed W for T taps of C channels, the
     * packing of levels [T][C] (row-major int8, any value), and the byte
     * offset of level (t, c) in it, so that one level is patched in place
     * (every layout holds every int8 value: no repacking is ever needed). */
    size_t (*dw_packed_size)(int T, int C);
    void (*dw_pack)(const int8_t *levels, int T, int C, int8_t *out);
    ptrdiff_t (*dw_packed_offset)(int T, int C, int t, int c);
    /* y[p * ldy + c] for p < P, c < C (u8 output only: the logits node is
     * never depthwise in the engine). ldy >= C; nothing else of y is written. */
    void (*dw_u8)(const kern_dw *a, const int8_t *W, const kern_rq *rq, uint8_t *y, size_t ldy);
} kern_isa;

/* The ISA table, best first; entries the CPU lacks are still listed. */
const kern_isa *kern_isa_by_name(const char *name);
/* 1 if this CPU (and OS) can run the named ISA. */
int kern_isa_supported(const char *name);
/* CCQ_ISA if set (CCQ_ERR_USAGE if unknown or unsupported), else the best supported. */
ccq_status kern_select(const kern_isa **isa, ccq_err *err);
/* Names of all ISAs, best first, NULL-terminated. */
extern const char *const kern_isa_names[];

/* The requantization of one value: the reference every kernel matches. */
static inline int64_t kern_requant(int32_t acc, int32_t mult, int32_t shift)
{
    const uint64_t a = acc < 0 ? (uint64_t)(-(int64_t)acc) : (uint64_t)acc;
    uint64_t q = (a * (uint64_t)mult + (UINT64_C(1) << (shift - 1))) >> shift;
    if (q > INT32_MAX) q = INT32_MAX;
    return acc < 0 ? -(int64_t)q : (int64_t)q;
}

static inline uint8_t kern_requant_u8(int32_t acc, int32_t mult, int32_t shift, int32_t zp, int32_t lo, int32_t hi)
{
    int64_t v = zp + kern_requant(acc, mult, shift);
    return (uint8_t)(v < lo ? lo : v > hi ? hi : v);
}

static inline uint8_t kern_mul_one(uint8_t a, uint8_t b, const kern_mul *p)
{
    return kern_requant_u8((a - p->za) * (b - p->zb), p->mult, p->shift, p->zo, p->lo, p->hi);
}

/* Per-ISA tables (defined in kern_<isa>.c). */
extern const kern_isa kern_isa_scalar;
extern const kern_isa kern_isa_avx2;
extern const kern_isa kern_isa_avx512vnni;

#endif
