/*
 * alloc.h: per-layer weight widths under a size budget in bytes, chosen by
 * the integer fitness (issue 13, item 3).
 *
 * The caller quantizes the float model once per candidate width (2, 3, 4, 8
 * bits, with any start: RTN, GPTQ, learned levels); a mixed model takes each
 * conv/linear node whole (levels, scales, codebook, and for the logits node
 * its act_scale) from the candidate of the width it is given. Nodes whose
 * width is the same in every candidate (e.g. --first-last-8) are pinned. The
 * objective is the integer network's cross-entropy (fit.h, Q16 nats summed)
 * on a fixed sample of training images, plus a penalty for exceeding the
 * budget (model_deployed_bytes): an allocation over the budget ranks after
 * every allocation within it, and among themselves by the bytes in excess
 * (an infinite penalty: the result always fits).
 *
 * Three steps, all deterministic (PCG streams keyed by purpose and the
 * seed; no threads, no MPI):
 *   1. sensitivity: the fitness with every free layer at the widest width,
 *      then with one layer at a time at each narrower width;
 *   2. the exact minimum of the summed sensitivities within the budget (a
 *      multiple-choice knapsack, dynamic programming over bytes above every
 *      layer's narrowest width; when that room exceeds 2^16 bytes, costs are
 *      rounded up to units of room / 2^16, so the DP's answer always fits and
 *      the narrowest allocation is always one it can return);
 *   3. an EDA over the widths (eda.h: one categorical variable per free
 *      layer, its width index within +-1 of the DP's), sampling whole
 *      allocations, ranking them by the penalized fitness and moving the
 *      distributions toward the best; the best allocation within the budget
 *      evaluated in any step is the result (ties to the earlier). The widest
 *      uniform allocation within the budget is evaluated first, so the
 *      result is never worse on the fitness images than the uniform model
 *      of that size.
 * Allocations already evaluated are not evaluated again (same values).
 */
#ifndef CCQ_ALLOC_H
#define CCQ_ALLOC_H
#include <stdint.h>
#include "ccq/common.h"
#include "ccq/data.h"
#include "ccq/model.h"
#include "ccq/quant.h"

#define ALLOC_MAX_WIDTHS 7 /* 2..8 bits */

typedef struct {
    int n_widths;
    int widths[ALLOC_MAX_WIDTHS]; /* strictly increasing, each in 2..8 */
    int64_t budget;               /* bytes, as model_deployed_bytes */
    int images;                   /* fitness images sampled from the train split (default 2048) */
    int generations;              /* EDA generations of step 3 (default 24; 0 = the DP's answer) */
    int lambda, mu;               /* allocations per generation, and the best of them the EDA learns from (16, 4) */
    uint64_t seed;
} alloc_config;
void alloc_config_default(alloc_config *c);

typedef struct {
    int layers;            /* free layers (the others pinned) */
    int n_images;
    int64_t evals;         /* forward passes over the fitness images (distinct allocations) */
    int64_t bytes;         /* the result's model_deployed_bytes */
    int64_t bytes_min;     /* every free layer at the narrowest width */
    int64_t bytes_max;     /* every free layer at the widest width */
    int64_t fit_max;       /* fitness, Q16 nats summed over the images: every free layer widest */
    int64_t fit_uniform;   /* of the widest uniform allocation within the budget */
    int uniform_width;     /* its width */
    int64_t fit_dp;        /* of step 2's allocation */
    int64_t fit;           /* of the result */
    int64_t layer_bytes[ALLOC_MAX_WIDTHS]; /* the result's free-layer weight bytes at each width */
    int layer_count[ALLOC_MAX_WIDTHS];     /* the result's free layers at each width */
    double seconds;
} alloc_report;

/* The size of the model when every free layer (width differing among the
 * candidates) takes width index k: what `--budget wB` means. */
int64_t alloc_uniform_bytes(const model *cand, int n_cand, int k);

/* The mixed model whose conv/linear node i is the node of the candidate
 * with bits[i] bits (pinned nodes: equal in every candidate), into *out (a
 * new model). CCQ_ERR_MISMATCH if no candidate has node i at bits[i]. How a
 * search rebuilds its budget start on every rank from the widths alone. */
ccq_status alloc_assemble(const model *cand, int n_cand, const int8_t *bits, model *out, ccq_err *err);

/* The quantizer settings of the candidate at `bits` bits: base with that
 * width, and uniform levels above MODEL_CODEBOOK_MAX_BITS (learned levels
 * only up to it). The one rule every maker of candidates follows. */
quant_config alloc_candidate_config(const quant_config *base, int bits);

/* cand[k] (k < c->n_widths) is the float model quantized at c->widths[k]
 * (same graph). Writes the mixed model chosen into *out (a new model;
 * model_free it). Errors: candidates that do not share one graph or whose
 * widths are not c->widths (CCQ_ERR_USAGE), a budget below bytes_min
 * (CCQ_ERR_USAGE, naming both), fewer train images than c->images (all are
 * used then: not an error), images that do not fit (CCQ_ERR_MISMATCH). */
ccq_status alloc_widths(const model *cand, const alloc_config *c, const data_split *train, model *out,
                        alloc_report *rep, ccq_err *err);
#endif
