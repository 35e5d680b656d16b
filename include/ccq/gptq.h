/*
 * gptq.h: GPTQ starting levels for a quantized model (Frantar et al. 2022),
 * the C form of scripts/gptq.py (its test oracle), and the choice of the
 * search's start among round-to-nearest, GPTQ and GPTQ with a scale search.
 *
 * Layer by layer in node order, each conv2d/linear node's levels are chosen
 * column by column (act-order: by decreasing Hessian diagonal, damping 0.01
 * of the mean diagonal, blocks of 128 columns), each column rounded half
 * away from zero at its channel's scale and its rounding error fed back into
 * the columns not yet quantized through the upper Cholesky factor of the
 * inverse Hessian, H = X^T X over the layer's inputs on the calibration
 * images. By default ("sequential") those inputs come from the float forward
 * pass of the folded model in which the layers before already carry their
 * GPTQ weights (levels x scale). With the scale search each output channel's
 * scale is the fraction f in {0.25, 0.30, .., 1.00} of the model's scale
 * whose GPTQ levels give the smallest layer-output error (w - s q) H (w - s q)^T
 * (GPTQ treats rows independently, so per channel is exact); the logits'
 * act_scale then follows (s_in x the largest scale, as quant_model sets it).
 *
 * Learned levels (a node with a codebook, lq.h): each column is rounded to
 * the nearest value of its row's codebook instead of the uniform grid (ties
 * to the lower value, lq_nearest), with the same error feedback; the scale
 * search then scales the row's real levels (codebook fixed, scale f x s0).
 * The accumulator bounds take the node's largest |level| (model_node_wmax).
 *
 * Float arithmetic (double for H and the solve, float32 for the forward
 * pass, which is fnet's), once, at set-up; never in the search loop.
 * Environment (speed and memory only, never the result): CCQ_GPTQ_THREADS,
 * threads of the forward passes (default the online CPUs); CCQ_GPTQ_CACHE_MB,
 * room for the layer inputs kept between layers (default 2048; 0 reruns
 * every layer's prefix instead).
 * Determinism: BLAS and LAPACK (OpenBLAS) run with one thread inside these
 * calls (openblas_set_num_threads(1), restored afterwards), so the result
 * does not depend on the machine's core count; the search computes the
 * start on rank 0 only and broadcasts it (cc.c), so it does not depend on
 * the number of ranks either. It does not know about MPI.
 *
 * Grouped convolution: each group is its own GPTQ problem (its output
 * channels against its input channels' Hessian).
 */
#ifndef CCQ_GPTQ_H
#define CCQ_GPTQ_H

#include <stdint.h>

#include "ccq/common.h"
#include "ccq/data.h"
#include "ccq/model.h"
#include "ccq/quant.h"

#define GPTQ_N_FACTORS 16 /* scale search: f = 0.25 + 0.05 i, i = 0..15 */

typedef struct {
    int calib_images;  /* Hessians from the first N images of the split given (default 1024) */
    int act_order;     /* columns by decreasing Hessian diagonal (default 1) */
    double damp;       /* added to H's diagonal, times its mean (default 0.01) */
    int block;         /* columns per lazy-update block (default 128) */
    int scale_search;  /* choose each channel's scale among the GPTQ_N_FACTORS fractions (default 0) */
    int float_inputs;  /* Hessians from the float model's inputs for every layer (default 0: sequential) */
    int sparsity_pm;   /* pruning before quantization (prune.h): the layers at prune_bits bits (uniform grid)
                        * keep their prune_mask weights at level 0, their error fed back (default 0: none) */
    int prune_bits;
    int threads;       /* threads of the forward passes feeding the Hessians; 0 (default): the environment's
                        * CCQ_GPTQ_THREADS, else the online CPUs. Speed only: the results do not depend on it */
    int asym;          /* asymmetric targets (default 0): each layer's levels reconstruct the ORIGINAL model's
                        * pre-activation output (its float weights on its own float inputs) from the inputs the
                        * quantized layers before produce, and its bias is solved again (see gptq_run) */
} gptq_config;

#define GPTQ_ASYM_RIDGE 1e-4 /* asym: the least-squares ridge, times the mean of the input Gram's diagonal */

void gptq_config_default(gptq_config *c);

/* The scale search's fraction i (0 <= i < GPTQ_N_FACTORS) of the model's
 * scale: (25 + 5 i) / 100, the double nearest the decimal, as gptq.py's
 * round(0.25 + 0.05 i, 2). */
double gptq_factor(int i);

typedef struct {
    int layers;       /* conv2d/linear nodes solved */
    int64_t weights;  /* their levels */
    int64_t changed;  /* levels that differ from the model's before the call */
    int64_t rescaled; /* channels whose scale the scale search moved */
    double seconds;   /* wall-clock, for reports */
} gptq_report;

/* Replaces the levels of every conv2d/linear node of the quantized model m
 * by GPTQ's (and with scale_search its wscale and the logits' act_scale),
 * from Hessians over the first c->calib_images images of calib (fewer if
 * calib holds fewer). m's float weights are left as they are (they remain
 * the weights the levels approximate). rep may be NULL.
 * Errors: m not quantized (CCQ_ERR_USAGE), images that do not fit
 * (CCQ_ERR_MISMATCH), a Hessian that is not positive definite even after
 * damping (CCQ_ERR_LIMIT, naming the node). On error m is unchanged. */
ccq_status gptq_run(model *m, const data_split *calib, const gptq_config *c, gptq_report *rep, ccq_err *err);

/* One GPTQ problem, as gptq.py's gptq(): W [rows][K] and H [K][K] row-major
 * (neither modified), per-row scales s [rows], levels in [-qmax, qmax] into
 * q [rows][K]. CCQ_ERR_LIMIT if the damped Hessian is not positive definite.
 * Exposed for tests. */
ccq_status gptq_layer(const double *W, const double *H, int rows, int K, const double *s, int qmax,
                      const gptq_config *c, int8_t *q, ccq_err *err);

/* gptq_layer with learned levels: row r's levels are values of its codebook
 * cb + r * ncodes (ascending int8), rounded to the nearest one (lq_nearest).
 * Exposed for tests. */
ccq_status gptq_layer_codebook(const double *W, const double *H, int rows, int K, const double *s,
                               const int8_t *cb, int ncodes, const gptq_config *c, int8_t *q, ccq_err *err);

/* Per-row layer-output error (w - s q) H (w - s q)^T of levels q at scales
 * s, into e [rows] (gptq.py's row_error). */
void gptq_row_error(const double *W, const double *H, int rows, int K, const double *s, const int8_t *q, double *e);

/* ---- the search's start ------------------------------------------------- */

typedef enum {
    GPTQ_START_RTN,        /* quant_model's round-to-nearest levels */
    GPTQ_START_GPTQ,       /* GPTQ at the model's scales */
    GPTQ_START_GPTQ_SCALE, /* GPTQ with the scale search */
    GPTQ_START_AUTO,       /* the one of the three with the best train-split accuracy */
    GPTQ_START_GPTQ_ASYM,  /* GPTQ with the scale search and asymmetric targets, the biases solved again
                            * (gptq_config.asym; ccq quantize only: a search takes it as a quantized file) */
    GPTQ_START_COUNT
} gptq_start_kind;

/* "rtn", "gptq", "gptq_scale", "auto", "gptq_asym"; gptq_start_parse returns the kind
 * or GPTQ_START_COUNT for anything else. */
const char *gptq_start_name(gptq_start_kind k);
gptq_start_kind gptq_start_parse(const char *s);

typedef struct {
    gptq_start_kind chosen;   /* RTN, GPTQ or GPTQ_SCALE */
    int n_train;              /* auto: train images each candidate was evaluated on (else 0) */
    int64_t correct[3];       /* auto: correct predictions of rtn, gptq, gptq_scale by the integer network */
    gptq_report report;       /* of the GPTQ run chosen (zero for rtn) */
    double seconds;           /* wall-clock of the whole start */
} gptq_start_info;

/* The start of a search from the float model fm: quant_model with qc on the
 * first qc->calib_images images of train, then the levels of `kind` (GPTQ's
 * Hessians from the same calibration images). auto evaluates the three
 * candidates' integer networks on every image of train (which must then be
 * the whole train split; never the test split) and keeps the most accurate,
 * ties to the earlier of rtn, gptq, gptq_scale. *out is a new quantized
 * model (model_free it). info may be NULL. */
ccq_status gptq_start(const model *fm, const data_split *train, const quant_config *qc, gptq_start_kind kind,
                      model *out, gptq_start_info *info, ccq_err *err);

#endif
