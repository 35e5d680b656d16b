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

typedef struct qnet_node qnet_node; /* per-node integer state: op.h */

enum { QNET_ROW_TILE = 128 }; /* im2col rows per kernel call: A tile stays in L1/L2 */

typedef struct {
    const model *m;
    const kern_isa *isa;
    int mb;        /* images per micro-batch */
    qnet_node *nodes;
    uint8_t *slab; /* every activation buffer and scratch area */
    uint8_t *input;
    uint8_t **act; /* act[i]: node i's output, mb * numel bytes, NHWC */
    uint8_t **act_home; /* the planned act[] (qnet_forward_cached points act[] into a cache meanwhile) */
    uint8_t *col;  /* im2col rows */
    size_t col_bytes;
    uint8_t *pad;  /* one padded input image */
    const uint8_t **rows; /* row pointers handed to the kernels */
    int32_t *logits; /* mb * classes */
    float logits_scale;
    double *node_seconds; /* profiling: if set (n_nodes entries), forward adds each node's time */
    int64_t *node_zeros;  /* if set (n_nodes entries), forward adds the count of each node's output
                           * levels equal to its zero point (the logits node: nothing) */
} qnet;

/* m must be quantized and outlive the qnet. isa NULL = kern_select(). */
ccq_status qnet_init(qnet *q, const model *m, const kern_isa *isa, int mb, ccq_err *err);
void qnet_free(qnet *q);

/* Re-packs conv/linear node `node` from m->nodes[node].levels (after the
 * search changed them). O(weights of that node). */
void qnet_update_levels(qnet *q, int node);

/* Sets one level of conv/linear node `node` in place: w indexes the node's
 * levels in the model's order ([oc][ic][kh][kw], [oc][in]), v is the new
 * level. O(1) (the packed byte and the channel's bias term are patched)
 * unless the ISA's packed layout cannot hold v, then O(weights of the node).
 * The model's own levels array is the caller's to keep in step. */
void qnet_set_level(qnet *q, int node, int64_t w, int8_t v);

/* Sets node `node`'s activation threshold (model.h act_thresh; 0 = none) for
 * the forward passes that follow; the model's own act_thresh is the caller's
 * to keep in step. The node must be model_node_prunable. */
void qnet_set_thresh(qnet *q, int node, int thresh);

/* Correct predictions on n images with their labels: argmax of the int32
 * logits, ties to the lowest class. */
int64_t qnet_count_correct(qnet *q, const uint8_t *images, const int32_t *labels, int n);

/* Runs n images ([n][C][H][W] uint8), writing n * classes int32 logits. */
void qnet_forward(qnet *q, const uint8_t *images, int n, int32_t *logits);

/* ---- Forward from a cut (incremental evaluation) ----------------------------
 * Nodes run in index order (a topological order), so "start at node s" means:
 * the tensors made by nodes < s that nodes >= s read (skip inputs included;
 * the input image counts as tensor -1) are the cut. qnet_cache_fill runs the
 * nodes before s once and keeps the cut for up to `cap` images;
 * qnet_forward_cached then runs only nodes >= s from it. For the same levels
 * of nodes < s, forward_cached gives exactly the logits qnet_forward gives
 * (integer arithmetic, nothing else is read), which the search relies on to
 * evaluate many variants of nodes >= s against one prefix. */
typedef struct {
    int start, n, cap;  /* cut before node `start`; images held; capacity */
    size_t bytes;       /* memory held (the worst cut of the model for cap images) */
    uint8_t *slab;
    uint8_t **t;        /* [n_nodes + 1]: t[j + 1] = tensor j of the cut ([cap][numel]), NULL if not in it */
    uint8_t *cross;     /* [n_nodes + 1] scratch */
} qnet_cache;

/* Marks in cross[j + 1] the tensors j (-1: input) crossing the cut before
 * `start`; returns their bytes per image. */
size_t qnet_cut(const qnet *q, int start, uint8_t *cross);
size_t qnet_cache_bytes_per_image(const qnet *q, int start);
void qnet_cache_init(qnet_cache *c, const qnet *q, int cap);
void qnet_cache_free(qnet_cache *c);
/* Runs nodes [0, start) over n <= cap images and keeps the cut. */
void qnet_cache_fill(qnet *q, qnet_cache *c, int start, const uint8_t *images, int n);
/* Runs nodes [start, n_nodes) for cached images [off, off + n), writing n * classes logits. */
void qnet_forward_cached(qnet *q, const qnet_cache *c, int off, int n, int32_t *logits);

#endif
