/*
 * qnet.h: the integer-only forward pass of a quantized model.
 *
 * Built from a quantized model (quant_model, or a quantized model file):
 * conv/linear levels are packed for the selected kernel ISA, requantization
 * multipliers derived from the scales, and every buffer planned once for a
 * micro-batch of `mb` images; qnet_forward then runs any number of images
 * without allocating and without floating point, producing int32 logits
 * (real logit = logits_scale * value). Results are identical for every ISA,
 * micro-batch size and image order (integer arithmetic, per-image
 * independence).
 *
 * Activations are uint8 NHWC inside; the input is the raw uint8 image in the
 * data file's [C][H][W] order. Semantics of each op: README.md, "Integer
 * engine". It does not quantize (quant_) and knows nothing of the search.
 */
#ifndef CCQ_QNET_H
#define CCQ_QNET_H

#include <stdint.h>

#include "ccq/common.h"
#include "ccq/kern.h"
#include "ccq/model.h"

typedef struct qnet_node qnet_node;

typedef struct {
    const model *m;
    const kern_isa *isa;
    int mb;        /* images per micro-batch */
    qnet_node *nodes;
    uint8_t *slab; /* every activation buffer and scratch area */
    uint8_t *input;
    uint8_t **act; /* act[i]: node i's output, mb * numel bytes, NHWC */
    uint8_t *col;  /* im2col rows */
    size_t col_bytes;
    uint8_t *pad;  /* one padded input image */
    const uint8_t **rows; /* row pointers handed to the kernels */
    int32_t *logits; /* mb * classes */
    float logits_scale;
    double *node_seconds; /* profiling: if set (n_nodes entries), forward adds each node's time */
} qnet;

/* m must be quantized and outlive the qnet. isa NULL = kern_select(). */
ccq_status qnet_init(qnet *q, const model *m, const kern_isa *isa, int mb, ccq_err *err);
void qnet_free(qnet *q);

/* Re-packs conv/linear node `node` from m->nodes[node].levels (after the
 * search changed them). O(weights of that node). */
void qnet_update_levels(qnet *q, int node);

/* Runs n images ([n][C][H][W] uint8), writing n * classes int32 logits. */
void qnet_forward(qnet *q, const uint8_t *images, int n, int32_t *logits);

#endif
