/*
 * quant.h: turn a float model into a quantized one (float arithmetic, once,
 * at set-up; nothing here runs in the search loop).
 *
 * Steps, in order: fold every BatchNorm that directly follows a conv2d or
 * linear into it; fuse every ReLU that is the only consumer of a conv2d,
 * linear, batchnorm or add into that node; calibrate the 8-bit asymmetric
 * per-tensor activation scales on float activations of calibration images;
 * choose per-output-channel symmetric weight scales; round the weights to
 * the nearest level (RTN), which is where the search starts. With learned
 * levels (QUANT_LEVELS_LEARNED) the wbits-wide layers instead get a fitted
 * per-channel codebook and its nearest values (lq.h); the scales and levels
 * of 8-bit first/last layers stay uniform.
 *
 * The result is a model (model.quantized = 1) that model_save writes and
 * qnet_ runs in integer arithmetic. Integer semantics: README.md,
 * "Integer engine".
 */
#ifndef CCQ_QUANT_H
#define CCQ_QUANT_H

#include "ccq/common.h"
#include "ccq/data.h"
#include "ccq/model.h"

typedef enum {
    QUANT_ACT_MINMAX,     /* range = [min, max] over the calibration images */
    QUANT_ACT_PERCENTILE, /* range = [p-th lowest, p-th highest] percentile */
} quant_act_rule;

typedef enum {
    QUANT_W_MAXABS, /* scale = max|w| / qmax per output channel */
    QUANT_W_MSE,    /* scale minimising the channel's squared rounding error */
} quant_w_rule;

typedef enum {
    QUANT_LEVELS_UNIFORM, /* the symmetric grid |level| <= 2^(bits-1) - 1 */
    QUANT_LEVELS_LEARNED, /* a fitted codebook of 2^bits values per output channel (lq.h); wbits 2..4 */
} quant_level_rule;

typedef struct {
    int wbits;          /* default weight bits, 2..8 */
    int first_last_8;   /* keep the first and last conv/linear at 8 bits */
    int calib_images;   /* calibration images from the start of the split given */
    quant_act_rule act_rule;
    double percentile;  /* for QUANT_ACT_PERCENTILE, e.g. 99.99 */
    quant_w_rule w_rule; /* the scales of uniform layers (learned ones take lq's) */
    quant_level_rule level_rule; /* of the wbits-wide layers (default uniform) */
    int sparsity_pm;    /* weight pruning of the wbits-wide layers, per mille (prune.h; default 0: none):
                         * applied by gptq_start, not quant_model */
    int prune_after;    /* 0: magnitude of the float weights before the levels, 1: of the levels after */
} quant_config;

void quant_config_default(quant_config *c);

/* Folds and fuses src into dst (a new float model computing the same
 * function, with fewer nodes). */
ccq_status quant_fold(const model *src, model *dst, ccq_err *err);

/* Full pipeline: fold, calibrate on `calib`, choose scales, RTN levels (or
 * learned codebooks and their nearest values). Errors: learned levels with
 * wbits outside 2..MODEL_CODEBOOK_MAX_BITS (CCQ_ERR_USAGE), calibration
 * images that do not fit the model or produce non-finite activations,
 * unsupported input normalisation, layers whose int32 accumulators could
 * overflow. */
ccq_status quant_model(const model *src, const data_split *calib, const quant_config *cfg, model *dst,
                       ccq_err *err);

/* Round-to-nearest levels on the uniform grid for one conv/linear node from
 * its float weights and wscale (kept separate: the search starts from it).
 * Learned levels are lq_quantize_node's (lq.h). */
void quant_rtn(model_node *nd);

/* Fixed-point form of a positive real multiplier: M ~= m0 * 2^-shift with
 * m0 in [2^30, 2^31) and shift in [1, 62]. CCQ_ERR_LIMIT if M >= 2^30
 * (scales that far apart mean a broken calibration); a multiplier below
 * 2^-31 becomes m0 = 0 (the output is then the zero point). */
ccq_status quant_multiplier(double M, int32_t *m0, int *shift);

/* 1 if a layer's int32 accumulators cannot overflow, even in partial sums:
 * |bias| + 2 * 255 * K * qmax < 2^31 (the kernels add the zero-point
 * correction up front, so partial sums reach twice the final bound); qmax
 * is the largest |level|, model_node_wmax. */
int quant_acc_fits(double bias_levels, int64_t K, int qmax);

#endif
