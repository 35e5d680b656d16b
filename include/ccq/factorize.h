/*
 * factorize.h: CP-factorized layers (`ccq factorize`): a float model's
 * conv2d and linear layers replaced by chains of small layers whose weights
 * are the CP factors of the original (cpd.h), fitted in float once at
 * set-up, either plainly (CP-ALS) or on their integer grids (ADMM).
 *
 * A conv2d [Cout][Cin][kh][kw] (groups 1) of rank R becomes
 *   NAME/cp_in   1x1 conv Cin -> R
 *   NAME/cp_h    depthwise kh x 1 conv (R channels)   only if kh > 1
 *   NAME/cp_w    depthwise 1 x kw conv (R channels)   only if kw > 1
 *   NAME/cp_out  1x1 conv R -> Cout, with the layer's bias, ReLU and clip
 * with each spatial axis's stride, padding and dilation on its depthwise conv
 * (on the other depthwise conv, or on cp_in, when that axis's kernel is 1):
 * zero padding commutes with the bias-free 1x1 conv, so the chain computes
 * the layer exactly when the factors are exact. A linear [out][in] becomes
 * NAME/cp_in (in -> R) and NAME/cp_out (R -> out). The rank-1 terms are
 * balanced (cpd_balance) so the activations between the factors have like
 * ranges.
 *
 * The factor layers' levels are the fit's own (factorize_apply): after the
 * rewritten float model is quantized as usual (quant_model calibrates the
 * activations between the factors), each factor layer takes the integers and
 * scales of its factor's grid, which is the grid the engine runs: 1x1
 * weights per output channel, depthwise weights per channel.
 *
 * Not here: the command line (cmd_factorize.c), the search of the factor
 * levels afterwards (ccq search treats the factor layers as any others).
 */
#ifndef CCQ_FACTORIZE_H
#define CCQ_FACTORIZE_H

#include <stdint.h>

#include "ccq/common.h"
#include "ccq/model.h"

/* Factor layers of one factorized layer at most: cp_in, cp_h, cp_w, cp_out. */
#define FACTORIZE_MAX_FACTORS 4

typedef enum {
    FACTORIZE_ADMM, /* factors fitted on their grids (the default) */
    FACTORIZE_ALS,  /* CP-ALS, then each factor rounded to its grid (the baseline) */
    FACTORIZE_FULL, /* the exact decomposition at full rank (no fit; a check of the rewrite) */
} factorize_method;

typedef struct {
    factorize_method method;
    int rank;          /* > 0: this rank for every chosen layer */
    int ratio_pm;      /* else: per mille of each layer's weights its factors may hold (rank from it) */
    const char *layers; /* comma-separated node names of the folded model, each optionally NAME=R (its
                         * own rank), or NULL: every conv2d with groups 1 and every linear but the
                         * first weighted layer and the logits */
    int wbits;         /* the factors' grids, 2..8 */
    int als_iters;     /* CP-ALS sweeps at most (default 500) */
    int admm_sweeps;   /* ADMM sweeps (default 60) */
    int admm_inner;    /* ADMM iterations per mode and sweep (default 10) */
    uint64_t seed;     /* CP-ALS's random start */
    double ridge;      /* CP-ALS's Tikhonov term (cpd_als; default 0.01, measured best of 0, 0.001, 0.01
                        * and 0.03 for both methods: results/factorize.md) */
} factorize_config;

void factorize_config_default(factorize_config *c);

/* One factorized layer. */
typedef struct {
    char name[128];
    int rank;
    int64_t weights_before, weights_after; /* weight counts (no bias) */
    double err_float;  /* relative Frobenius error of the float fit (CP-ALS; 0 for FULL) */
    double err_grid;   /* of the factors on their grids: ALS rounded, or ADMM's */
    double err_rtn;    /* ADMM: the error of CP-ALS rounded to the grid, its start (else = err_grid) */
    /* the factor nodes' integers, by node name (factorize_apply) */
    int n_factors;
    char fname[FACTORIZE_MAX_FACTORS][144];
    int8_t *levels[FACTORIZE_MAX_FACTORS]; /* [n_weight] of that node, in its weight layout */
    float *scale[FACTORIZE_MAX_FACTORS];   /* [its output channels] */
} factorize_layer;

typedef struct {
    int n_layers;
    factorize_layer *layers;
} factorize_plan;

void factorize_plan_free(factorize_plan *p);

/* Rewrites the folded float model src (quant_fold's output) into dst, a float model with every
 * chosen layer replaced by its factor chain (float weights: the fit's factors, on their grids but
 * for FACTORIZE_ALS), and fills plan. Errors (CCQ_ERR_USAGE): a named layer that does not exist or
 * is not a conv2d/linear, a grouped conv, the logits layer, a rank below 1, no layer chosen, a
 * quantized src. On failure dst and plan are empty. */
ccq_status factorize_model(const model *src, const factorize_config *c, model *dst, factorize_plan *plan,
                           ccq_err *err);

/* Sets the factor nodes of q (quant_model's quantization of factorize_model's dst) to the plan's
 * levels, scales and width; CCQ_ERR_LIMIT if a bias could then overflow the int32 accumulators. */
ccq_status factorize_apply(model *q, const factorize_plan *plan, int wbits, ccq_err *err);

#endif
