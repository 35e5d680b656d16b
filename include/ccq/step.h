/*
 * step.h: one generation of the search, the loop's whole body:
 *   1. choose a subcomponent (group_: confidence | layer | random |
 *      layer_confidence);
 *   2. sample lambda individuals from the EDA, each from its own stream keyed
 *      by (seed, generation, individual);
 *   3. evaluate them and the context on the generation's fitness batch
 *      (feval_items on this rank's share; the integer sums are added over
 *      ranks, never weights);
 *      a layer marked sparse (a pruned start) keeps at most the start's count
 *      of non-zero levels: a sample that would exceed it in a layer has its
 *      newly non-zero weights of that layer, smallest float magnitude first,
 *      set back to zero (their context value) until it fits, so the search
 *      may move zeros within the layer but not lose them;
 *      with search.race_z > 0 the batch is run in search.race_stages equal
 *      stages, and after each stage but the last an individual whose paired
 *      loss against the context so far exceeds race_z standard errors is
 *      dropped (not run on the rest): the same integer sums over ranks, so
 *      the decision does not depend on the rank count; the dropped rank
 *      below every survivor;
 *   4. move the distributions toward the mu best (ties by individual);
 *   5. accept the best into the context if it passes the acceptance rule:
 *      its fitness below the context's on the batch, then, with a
 *      confirmation batch, also there; with accept_z > 0, a paired test on
 *      the per-image differences (of the confirmation batch if there is one,
 *      else of the selection batch): the mean gain must exceed accept_z
 *      standard errors, decided in exact integer arithmetic, so every rank
 *      decides the same.
 * The driver (cc_) owns the state, the checkpoints, validation and the log.
 */
#ifndef CCQ_STEP_H
#define CCQ_STEP_H

#include <stdint.h>

#include "ccq/cclog.h"
#include "ccq/cfg.h"
#include "ccq/dist.h"
#include "ccq/eda.h"
#include "ccq/feval.h"
#include "ccq/genome.h"

typedef struct {
    const cfg_search *cfg;
    const dist_ctx *d;
    genome *g;
    eda_state *eda;
    feval *ev;
    const int32_t *pool; /* the fitness pool: train image indices */
    int pool_n;
    /* counters (checkpointed by the driver) */
    int64_t gen, evals, accepted, cursor;
    /* scratch */
    int64_t *sub;
    int8_t *elite, *ind;
    int8_t *all, *combo; /* search.combine: every individual's levels [lambda][G], the combination [G] */
    int *items;
    int64_t *out, *order;
    int64_t *fit, *psd, *psd2, *pn; /* [lambda] per individual: fitness, paired sums, images seen */
    int *stage;                     /* [lambda] the race stage an individual was dropped after, -1: none */
    /* sparse layers (model.h sparse, prune.h): at most nz_budget[l] non-zero levels (the start's
     * count; -1: unconstrained), kept by repairing every sample (sample_repair) */
    int64_t *nz_budget, *nz_ctx; /* [n_layers]; nz_ctx: the context's count, this generation */
    int32_t *mag;                /* [n_w] |float position| (genome_float_pos), the repair's order */
    int64_t *scratch;            /* [G][2] */
    int8_t *ctx_sub;             /* [G] the context's values of the subcomponent */
    int any_sparse;
} step_state;

void step_init(step_state *s, const cfg_search *cfg, const dist_ctx *d, genome *g, eda_state *eda, feval *ev,
               const int32_t *pool, int pool_n);
void step_free(step_state *s);

/* search.combine: one more candidate from a generation's lambda individuals. all[k * m + t] is
 * individual k's level of weight t, fit[k] its batch fitness (lower is better), ctx the context's;
 * combo holds the context's levels on entry. Weight t moves to the level v (other than its
 * context level) drawn by at least two individuals whose mean fitness is below ctx, the lowest
 * such mean if several (the lower level on ties): integer comparisons of sums only
 * (sum_a n_b < sum_b n_a). Returns how many weights moved. */
int step_combine(const int8_t *all, const int64_t *fit, int lambda, int m, int64_t ctx, int8_t *combo);

/* The fewest evaluations a generation can count: lambda + 1 without racing; with it, the context's
 * whole batch and every individual dropped after the first stage (what a checkpoint's counters
 * are checked against). */
int64_t step_min_evals(const cfg_search *c);

/* The largest subcomponent a generation can choose (search.group_size, and with layer_confidence
 * the largest layer's share by search.group_fraction): what the scratch buffers hold. */
int step_max_sub(const cfg_search *cfg, const genome *g);

/* Runs one generation and describes it in *rec (validation fields unset).
 * Returns 0 without doing anything when every weight is frozen. */
int step_run(step_state *s, cclog_rec *rec);

/* The paired test: does a summed difference sd (candidate minus context,
 * lower is better) with summed squares sd2 over n images show a gain larger
 * than z standard errors? z2_q16 = round(z^2 * 2^16). Exact integers. */
int step_paired_gain(int64_t sd, int64_t sd2, int64_t n, int64_t z2_q16);

/* search.race_z: 1 if an individual whose per-image fitness differences to the context sum to sd
 * (squares sd2) over n images is worse by more than z standard errors (z2_q16 = z^2 * 2^16):
 * step_paired_gain with the sign turned. */
int step_raced_out(int64_t sd, int64_t sd2, int64_t n, int64_t z2_q16);

#endif
