/*
 * eda.h: the estimation-of-distribution state of the search: for every
 * searchable weight, a categorical distribution over the values within +-r
 * of its initial value (clipped to the weight's range [lo, hi]: its b-bit
 * grid's levels, or the codes of a learned codebook), in fixed point.
 *
 * Probabilities are integers summing exactly to EDA_ONE (Q16) for each
 * weight, so sampling and the PBIL-style update are integer operations and
 * bit-identical on every rank and compiler. Sampling takes an explicit PCG
 * stream (the caller keys it by generation and individual). It knows
 * nothing of networks, fitness or MPI: weights are indices 0..n-1.
 */
#ifndef CCQ_EDA_H
#define CCQ_EDA_H

#include <stdint.h>

#include "ccq/common.h"
#include "ccq/rng.h"

#define EDA_ONE 65536
#define EDA_MAX_R 3

typedef struct {
    int64_t n;     /* weights */
    int r;         /* radius: candidates are base-r .. base+r */
    int width;     /* 2r + 1 */
    int8_t *base;  /* [n] initial level, the centre */
    int8_t *lo, *hi; /* [n] the weight's range: [-qmax, qmax] of its layer's grid, or [0, 2^bits - 1] (codes) */
    uint32_t *p;   /* [n][width], p[i][j] is the probability of level base[i] - r + j; 0 outside the grid */
    uint32_t p_min; /* floor for in-grid candidates after an update (keeps exploration alive) */
} eda_state;

/* Centre `p_center` (Q16) on the initial level, the rest spread evenly over
 * the other in-grid candidates (the remainder of the integer division goes
 * to the centre). CCQ_ERR_USAGE for r outside 1..EDA_MAX_R or a centre mass
 * outside (0, EDA_ONE]. lo may be NULL: the symmetric range [-hi, hi]. */
ccq_status eda_init(eda_state *e, int64_t n, int r, const int8_t *base, const int8_t *lo, const int8_t *hi,
                    uint32_t p_center, uint32_t p_min, ccq_err *err);
void eda_free(eda_state *e);

/* The float prior: reshapes every row after eda_init from where the weight's
 * float value lies on the grid, pos[i] (Q16 level units, as
 * genome_float_pos). A candidate level l other than the start gets
 *   3 * b * t^2,  t = clamp(1.5 - |pos - l|, 0, 1),  b = (1 - p_center) / others
 * (others: the in-grid candidates besides the start), so a weight lying
 * halfway to l or beyond gets 3b, one on its own level gets 0, and over
 * float values spread evenly within the start's bin the expected off-start
 * mass is about eda_init's 1 - p_center; the off-start total is capped at
 * 1 - p_center / 4 - width * p_min, then every in-grid candidate is floored at p_min and
 * the start takes the rest. Integer arithmetic only. */
void eda_prior_float(eda_state *e, const int32_t *pos, uint32_t p_center);

/* Draws a level for each of the m weights idx[0..m) from one stream. */
void eda_sample(const eda_state *e, const int64_t *idx, int m, rng_pcg32 *rng, int8_t *out);

/* PBIL step for the m weights idx[0..m): p <- (1 - alpha) p + alpha f, where
 * f is the frequency of each level among the mu elite samples
 * elite[k * m + t] (k < mu), alpha in Q16; then the floor p_min for in-grid
 * candidates, and the rounding residue to the most probable candidate, so
 * every row sums to EDA_ONE exactly. */
void eda_update(eda_state *e, const int64_t *idx, int m, const int8_t *elite, int mu, uint32_t alpha);

/* Largest probability of weight i (Q16): its confidence. */
uint32_t eda_confidence(const eda_state *e, int64_t i);

/* The most probable level of weight i (lowest level on ties). */
int8_t eda_mode(const eda_state *e, int64_t i);

#endif
