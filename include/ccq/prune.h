/*
 * prune.h: magnitude pruning of the weights of a quantized model's layers
 * (issue 13, item 2: the two orders the joint quantization-and-pruning paper
 * compares, as baselines for the search).
 *
 * A layer pruned at sparsity p (per mille) has at least floor(n p / 1000) of
 * its levels at zero. Before quantization: those of its folded float weights
 * with the smallest |w| are masked (ties to the lower index), their levels
 * zero whatever the rounding; GPTQ (gptq.h, gptq_config.sparsity_pm) keeps
 * them zero and feeds their error back into the columns not yet quantized.
 * After quantization: the non-zero levels with the smallest real magnitude
 * |level x wscale[o]| (ties to the lower index) are set to zero until the
 * layer has that many zeros; nothing is re-fitted. Only layers on the
 * uniform grid (zero is a level there; a learned codebook need not hold it).
 * Float arithmetic, once, at set-up; deterministic.
 */
#ifndef CCQ_PRUNE_H
#define CCQ_PRUNE_H

#include <stdint.h>

#include "ccq/model.h"

#define PRUNE_MAX_PM 999 /* at most 99.9% */

/* Zero levels a layer of n weights must have at sparsity pm: floor(n pm / 1000). */
int64_t prune_count(int64_t n, int pm);
/* mask[w] = 1 for the prune_count smallest |weight[w]| of conv/linear node nd, else 0. */
void prune_mask(const model_node *nd, int pm, uint8_t *mask);
/* Zeroes levels of nd by real magnitude until it has prune_count zeros (already enough: unchanged). */
void prune_levels(model_node *nd, int pm);
/* Levels of nd at zero. */
int64_t prune_zeros(const model_node *nd);

#endif
