/*
 * actprune.h: activation pruning of a quantized model (issue 13, item 2): a
 * threshold per layer below which an activation becomes zero (model.h
 * act_thresh), searched on the integer network under an accuracy bound.
 *
 * Variables: the threshold of every model_node_prunable node the logits
 * depend on, an integer on the ladder ACTPRUNE_LADDER (0 = none).
 * Objective: the most zero activations (output levels equal to the node's
 * zero point, summed over those nodes) on a keyed sample of train images,
 * subject to at most max_drop_bp / 100 points fewer correct predictions on those images
 * than the same model without thresholds (and, with max_xent_bp, at most that much more
 * cross-entropy: a bound that moves with confidence, not only with flipped predictions). Any thresholds the model carries
 * are replaced.
 *
 * Three steps, deterministic and integer (fit.h for the cross-entropy):
 *   1. sensitivity: each node alone at every ladder value: the sample's
 *      cross-entropy (Q16 nats, summed), correct predictions and the node's
 *      zeros; only the nodes from that node on run (qnet_cache holds the
 *      tensors crossing the cut, a chunk of images at a time); at value 0
 *      each must equal the whole forward pass, bit for bit (asserted: the
 *      cache is exact);
 *   2. one tolerance for all: node l takes the largest ladder value v whose
 *      cross-entropy increase alone, and that of every smaller value, is at
 *      most tau; tau is bisected over the measured increases for the
 *      largest whose joint model keeps the bound (the bisection only ever
 *      moves to a point it evaluated within the bound);
 *   3. greedy ascent: in node order, each threshold is raised one ladder
 *      value when the joint model keeps the bound and has more zeros; rounds
 *      until one changes nothing, at most `rounds`.
 * The result keeps the bound on the sample by construction; on other images
 * (the test split) the drop is measured, not promised.
 */
#ifndef CCQ_ACTPRUNE_H
#define CCQ_ACTPRUNE_H

#include <stdint.h>

#include "ccq/common.h"
#include "ccq/data.h"
#include "ccq/model.h"

#define ACTPRUNE_STEPS 17 /* ladder values, 0 included */
extern const int ACTPRUNE_LADDER[ACTPRUNE_STEPS];

typedef struct {
    int images;       /* train images sampled (default 4096) */
    int max_drop_bp;  /* accuracy on them the result may lose, in 1/100 of a point (default 30: 0.3
                       * points); floor(max_drop_bp * images / 10000) correct predictions */
    int max_xent_bp;  /* 0 (default): no such bound; else also at most max_xent_bp / 100 percent more
                       * cross-entropy on the sample than without thresholds */
    int rounds;       /* step 3's rounds (default 0: step 2's answer) */
    uint64_t seed;
} actprune_config;
void actprune_config_default(actprune_config *c);

typedef struct {
    int node;               /* model node index */
    int64_t numel;          /* output levels per image */
    int64_t zeros0;         /* zeros on the sample without any threshold */
    int64_t alone_fit[ACTPRUNE_STEPS], alone_correct[ACTPRUNE_STEPS], alone_zeros[ACTPRUNE_STEPS];
    int alone_step;         /* the largest ladder step alone within the bound (every smaller one too) */
    int step;               /* the result's ladder step */
    int64_t zeros;          /* the result's zeros at this node on the sample */
} actprune_layer;

typedef struct {
    int n_layers;
    actprune_layer *layer;  /* [n_layers], in node order; actprune_report_free */
    int n_images;
    int64_t max_drop;               /* correct predictions the bound lets go */
    int64_t correct0, fit0, zeros0; /* without thresholds */
    int64_t correct2, fit2, zeros2; /* after step 2 */
    int64_t correct, fit, zeros;    /* the result */
    int64_t numel;                  /* activation levels of the candidates per image */
    int64_t evals;                  /* joint evaluations (steps 2 and 3) */
    double seconds;
} actprune_report;
void actprune_report_free(actprune_report *r);

/* Sets m's act_thresh (m quantized) and fills *r. Errors: images that do
 * not fit the model (CCQ_ERR_MISMATCH); a model with no prunable node
 * (CCQ_ERR_USAGE). */
ccq_status actprune_search(model *m, const actprune_config *c, const data_split *train, actprune_report *r,
                           ccq_err *err);

#endif
