/*
 * group.h: the subcomponents of cooperative coevolution: which weights a
 * generation evolves against the shared context. Weights are global indices
 * 0..n_w-1, layer after layer (layer l holds [layer_start[l],
 * layer_start[l+1])). Three modes:
 *   layer       G consecutive weights of one layer at a time, round robin
 *               over the whole network (a subcomponent never crosses a
 *               layer's end);
 *   random      G distinct weights drawn from a caller-keyed PCG stream;
 *   confidence  the G least confident weights (largest probability of their
 *               distribution, ties by index) among those below the freezing
 *               threshold (the founding paper's rule);
 *   layer_confidence
 *               the same inside one layer, the layer whose turn it is: each
 *               layer l has a share S_l of the turns (its weights, the
 *               integer square root of them, or 1: `turns`); generation g
 *               goes to the layer holding position (g * s) mod sum(S), s the
 *               first step at or above 0.618 sum(S) coprime with it (a Weyl
 *               sequence: the shares hold over any stretch of generations
 *               and the turns are interleaved, so a short run visits every
 *               layer), or to the next layer with a weight below the
 *               freezing threshold. A subcomponent inside one layer lets
 *               the fitness start at that layer (incremental evaluation).
 * Every function writes the chosen indices to out[0..m) and returns m (0
 * when every weight is frozen). Pure functions of their arguments, so every
 * rank chooses the same subcomponent.
 */
#ifndef CCQ_GROUP_H
#define CCQ_GROUP_H

#include <stdint.h>

#include "ccq/eda.h"
#include "ccq/rng.h"

/* *cursor: the next weight to visit (advanced, wrapping to 0 after the last). */
int group_layer(const int64_t *layer_start, int n_layers, int G, int64_t *cursor, int64_t *out);

/* G (at most n_w) distinct weights in the order drawn. */
int group_random(int64_t n_w, int G, rng_pcg32 *rng, int64_t *out);

/* freeze: confidence (Q16) at or above which a weight is never chosen. */
int group_confidence(const eda_state *e, uint32_t freeze, int G, int64_t *out);

enum { GROUP_TURNS_WEIGHTS = 0, GROUP_TURNS_SQRT = 1, GROUP_TURNS_EQUAL = 2 };

/* gen: the generation (the turn is a function of it alone); turns: GROUP_TURNS_*. The layer
 * whose turn it is gives group_layer_size(G, its weights, frac_q16) weights. */
int group_confidence_layer(const eda_state *e, const int64_t *layer_start, int n_layers, int turns, uint32_t freeze,
                           int G, uint32_t frac_q16, int64_t gen, int64_t *out);
/* The subcomponent size in a layer of n weights: the larger of G and frac_q16 / 2^16 of the layer
 * (rounded up; frac_q16 = 0: G), at most n. */
int group_layer_size(int G, int64_t n, uint32_t frac_q16);
/* The Weyl step s for a total of n (exposed for tests). */
int64_t group_weyl_step(int64_t n);
/* A layer's share of the turns. */
int64_t group_turn_share(int64_t n_weights, int turns);

#endif
