/*
 * kern.h: integer GEMM kernels, one implementation per ISA behind a table.
 *
 * The one operation every conv and linear layer reduces to:
 *
 *   acc[m][n] = bias[n] + sum_{k < Kp} A[m][k] * B[n][k]      (u8 x s8 -> s32)
 *   C[m][n]   = requant(acc[m][n], mult[n], shift[n])          (see below)
 *
 * A: M rows of Kp bytes (uint8 activations, row stride lda); B: the levels
 * of N output channels, K per channel, zero-padded to Kp (a multiple of
 * kr), packed by the ISA's `pack`. Requantization (gemmlowp-style, exact):
 *
 *   v = sign(acc) * min(((|acc| * mult + 2^(shift-1)) >> shift), 2^31 - 1)
 *   u8 output:  C = clamp(zp + v, lo, hi)          int32 output: C = v
 *
 * i.e. round half away from zero of acc * mult * 2^-shift, saturating.
 * Every ISA's kernel gives bit-identical C for all inputs it accepts; the
 * scalar kernel is the reference. Callers guarantee |acc| < 2^31 - 1
 * (checked when a model is quantized) and shift in [1, 62].
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

typedef struct {
    const char *name;
    int kr; /* Kp must be a multiple of kr */
    /* Bytes of packed B for N channels of Kp levels. */
    size_t (*packed_size)(int N, int Kp);
    /* levels: [N][K] row-major int8; out: packed_size bytes. Padding is zero. */
    void (*pack)(const int8_t *levels, int N, int K, int Kp, int8_t *out);
    void (*gemm_u8)(int M, int N, int Kp, const uint8_t *A, size_t lda, const int8_t *B, const kern_rq *rq,
                    uint8_t *C, size_t ldc);
    void (*gemm_i32)(int M, int N, int Kp, const uint8_t *A, size_t lda, const int8_t *B, const kern_rq *rq,
                     int32_t *C, size_t ldc);
    /* Multiply-accumulates per second of this ISA's core u8 x s8 instruction
     * sequence on one core, measured over about `seconds` (registers only,
     * independent accumulators): the ceiling a kernel can approach. */
    double (*peak_macs)(double seconds);
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

/* Per-ISA tables (defined in kern_<isa>.c). */
extern const kern_isa kern_isa_scalar;
extern const kern_isa kern_isa_avx2;
extern const kern_isa kern_isa_avx512vnni;

#endif
