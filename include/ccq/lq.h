/*
 * lq.h: learned non-uniform weight levels (after LQ-Nets, Zhang et al. 2018),
 * fitted per output channel in float, once, at set-up (quant_model calls it
 * for QUANT_LEVELS_LEARNED); nothing here runs in the search loop.
 *
 * A channel's 2^K levels (K = bits) are v^T e for the K basis values v and
 * every e in {-1, +1}^K, so the set is symmetric about 0 and has no zero
 * level. The fit alternates two exact minimisations of the squared error
 * sum (w - level)^2: each weight takes its nearest level (v fixed), then v
 * solves the K x K least-squares normal equations (assignment fixed). It
 * starts twice, from uniform grids (lq_fit) and keeps the lower error.
 *
 * The integer engine multiplies int8 levels, so the fitted real levels are
 * then rounded to a strictly increasing int8 codebook at the channel's scale
 * (lq_round_codebook) and each weight takes its nearest codebook value
 * (lq_nearest): model.h's model_node.codebook. Not here: file load/save of
 * the codebook (op_conv.c), GPTQ over a codebook (gptq.c), the search.
 */
#ifndef CCQ_LQ_H
#define CCQ_LQ_H

#include <stdint.h>

#include "ccq/model.h"

/* Alternating steps at most per start (the assignment usually settles well before). */
#define LQ_MAX_ITERS 32

/* Largest |codebook value|: a channel's outermost level maps to +-LQ_CODE_MAX.
 * 63, not 127: AVX2's u8 x s8 kernel keeps its fast layout only while every
 * |level| <= 63 (kern_avx2.c; ResNet-20 at 4 bits ran 1.3-1.4x faster on AVX2
 * than with 127, VNNI unaffected), and the coarser rounding of the levels
 * adds 0.02-0.03% (2 bits), 0.1-0.2% (3) and 0.4-0.9% (4 bits) to the weights'
 * squared error of ResNet-20 and LeNet. */
#define LQ_CODE_MAX 63

typedef struct {
    double err;                     /* sum over the weights of (w - nearest level)^2 */
    int start;                      /* the start kept: 0 the range grid, 1 the RMS grid */
    int steps;                      /* alternating steps it took */
    double trace[LQ_MAX_ITERS + 1]; /* its error at the start and after each step: never increases */
} lq_fit_info;

/* Fits the 2^bits real levels of one channel's n weights w (bits 1..MODEL_CODEBOOK_MAX_BITS,
 * n >= 1) into levels[2^bits], ascending (equal levels possible when two basis values
 * coincide; all zero when every weight is). Starts: v_k = a 2^k, levels a * (odd integers),
 * with a = max|w| / (2^bits - 1) (the grid spans the weights' range) and a = half the
 * step of the squared-error-optimal uniform grid for a Gaussian of the weights' RMS; the lower
 * error is kept, ties to the first. Stops when the assignment no longer changes, the
 * error no longer decreases, or after LQ_MAX_ITERS steps. Returns the error; info may
 * be NULL. Deterministic: the same weights give the same levels on any machine. */
double lq_fit(const float *w, int64_t n, int bits, double *levels, lq_fit_info *info);

/* The int8 codebook cb[n] of the ascending real levels[n] (n <= 2 LQ_CODE_MAX + 1):
 * *scale = max|level| / LQ_CODE_MAX (1 if every level is 0 or that underflows
 * float) and cb[c] = levels[c] / *scale rounded half away from zero, clamped to
 * +-LQ_CODE_MAX, then made strictly increasing: a value not above
 * its predecessor becomes predecessor + 1 (upwards), and if that passes
 * LQ_CODE_MAX the top is set to LQ_CODE_MAX and a value not below its successor
 * becomes successor - 1 (downwards). All-zero levels give 0, 1, .., n - 1. */
void lq_round_codebook(const double *levels, int n, int8_t *cb, float *scale);

/* Index of the codebook value nearest x in the ascending cb[n]; ties (x exactly
 * halfway) go to the lower value. */
int lq_nearest(const int8_t *cb, int n, double x);

/* Learned levels for a conv2d/linear node: nd->weight (BatchNorm folded), nd->bits
 * in 2..MODEL_CODEBOOK_MAX_BITS and nd->levels, nd->wscale allocated. Allocates
 * nd->codebook ([Cout][2^bits]) and per output channel o fits the levels (lq_fit),
 * rounds them (lq_round_codebook: codebook row o and wscale[o]) and sets every
 * level to the codebook value nearest weight / wscale[o] (lq_nearest). */
void lq_quantize_node(model_node *nd);

#endif
