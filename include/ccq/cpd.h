/*
 * cpd.h: the Canonical Polyadic (CP) decomposition of a layer's weight tensor,
 * in float (double), once, at set-up (`ccq factorize`); nothing here runs in
 * the search loop.
 *
 * A tensor T with 2 to 4 modes (a linear layer [out][in]; a conv
 * [Cout][Cin][kh][kw] without its size-1 spatial modes) is approximated by
 * sum_r F0[:, r] o F1[:, r] o ... (rank R). Two fits:
 *  - cpd_als: CP-ALS (each mode in turn solves its exact least-squares
 *    problem: the mode's MTTKRP against the Hadamard product of the other
 *    modes' Gram matrices), from a keyed random start;
 *  - cpd_admm: the factors constrained to their b-bit grids throughout
 *    (Quantization Aware Factorization, Cherniuk et al. 2023): each mode's
 *    least-squares problem is solved by ADMM (AO-ADMM, Huang et al. 2016) with
 *    the projection onto the grid as the constraint step. It starts from a
 *    CP-ALS fit rounded to the grid (the baseline, cpd_project) and returns the
 *    lowest-error on-grid factors of its sweeps, so its error is never above
 *    the baseline's.
 *
 * The grid of a factor is the integer grid the engine will run: mode 0 (the
 * last 1x1 conv or linear, [Cout][R]) has one scale per row (output channel
 * o), every other mode one per column r (the first 1x1's output channel r,
 * the depthwise convs' channel r): scale = max|values| / qmax, levels =
 * values / scale rounded half away from zero (the max-abs RTN of quant.c).
 *
 * BLAS and LAPACK run on one thread here, so the result depends only on the
 * input and the machine's BLAS kernels (as GPTQ's, gptq.h), never on the core count.
 * Not here: which layers, which rank, the graph rewrite (factorize.h).
 */
#ifndef CCQ_CPD_H
#define CCQ_CPD_H

#include <stdint.h>

#include "ccq/common.h"

#define CPD_MAX_MODES 4

typedef struct {
    int n_modes;              /* 2..CPD_MAX_MODES */
    int dims[CPD_MAX_MODES];  /* each >= 1 */
    int rank;                 /* >= 1 */
    double *f[CPD_MAX_MODES]; /* f[m][i * rank + r] */
    /* set by cpd_project: mode m's grid scales, [dims[0]] for mode 0 (per row), [rank] for the
     * others (per column); NULL until then */
    double *scale[CPD_MAX_MODES];
} cpd_factors;

typedef enum {
    CPD_GRID_MAXABS, /* scale = max|values| / qmax: round-to-nearest, nothing clipped */
    CPD_GRID_LSQ,    /* from there, Lloyd steps: the least-squares scale of the rounded levels, which
                      * may clip the largest values (a lower squared error) */
} cpd_grid;

/* Lloyd steps of CPD_GRID_LSQ at most. */
#define CPD_LSQ_STEPS 5

/* Allocates zeroed factors. */
void cpd_factors_init(cpd_factors *f, int n_modes, const int *dims, int rank);
void cpd_factors_free(cpd_factors *f);
void cpd_factors_copy(cpd_factors *dst, const cpd_factors *src);

/* Elements of the tensor: the product of dims. */
int64_t cpd_numel(const cpd_factors *f);

/* The reconstruction sum_r F0[i0][r] F1[i1][r] ... into out[numel] (row-major, mode 0 outermost). */
void cpd_reconstruct(const cpd_factors *f, double *out);

/* ||T - [[F]]|| / ||T|| (Frobenius; ||T - [[F]]|| if T is 0). */
double cpd_rel_error(const double *t, const cpd_factors *f);

/* CP-ALS of t (f's n_modes, dims and rank) from a random start keyed by seed: at most iters sweeps,
 * stopping when a sweep lowers the relative error by less than tol. Each mode's solve adds
 * ridge * trace(G) / R to the diagonal of its R x R Gram matrix G (Tikhonov; 0: plain ALS): it keeps
 * the rank-1 terms from growing large and cancelling each other (CP's degeneracy), which rounding to
 * a grid cannot follow. Ends balanced (cpd_balance). Returns the relative error. */
double cpd_als(const double *t, cpd_factors *f, int iters, double tol, double ridge, uint64_t seed);

/* Rescales the rank-1 terms (the tensor unchanged): every column of modes 1.. to unit 2-norm,
 * the norms moved into mode 0's column (a zero column stays zero). The activations between the
 * factor convs then have like ranges. */
void cpd_balance(cpd_factors *f);

/* Rounds mode m's factor onto its grid (see above) at largest level qmax (1..127), in place; the
 * scales go to f->scale[m]. An all-zero group has scale 1. */
void cpd_project(cpd_factors *f, int m, int qmax, cpd_grid rule);

/* The integers of mode m's factor on its grid (cpd_project done): levels[i * rank + r]. */
void cpd_levels(const cpd_factors *f, int m, int8_t *levels);

typedef struct {
    int sweeps;      /* outer sweeps over the modes */
    int inner;       /* ADMM iterations per mode and sweep */
    cpd_grid grid;   /* the projection inside the iterations (the start is always CPD_GRID_MAXABS) */
    double err_start; /* out: the error of the start (ALS rounded to the grid: the baseline) */
    double err;      /* out: the error returned */
    int best_sweep;  /* out: the sweep it came from (0 = the start) */
} cpd_admm_info;

/* ADMM on the grid from f (usually cpd_als's result), every mode at largest level qmax[m]: f
 * ends on its grids (scales in f->scale) with the lowest error seen, the start rounded to
 * nearest (CPD_GRID_MAXABS) included. Returns that relative error. */
double cpd_admm(const double *t, cpd_factors *f, const int *qmax, cpd_admm_info *info);

#endif
