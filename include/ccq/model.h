/*
 * model.h: a float network graph as stored in a ccq model file (HDF5).
 *
 * The graph is a list of nodes in topological order; each node reads the
 * outputs of earlier nodes (or the network input, index -1) and produces one
 * tensor of a fixed per-image shape: [C,H,W] (rank 3) or [F] (rank 1).
 * model_load reads the file, recomputes every shape from the ops and refuses
 * anything inconsistent, non-finite or over the engine's size limits, so
 * code downstream may trust a loaded model. It does not run the network
 * (fnet_ does, in float) nor quantize it.
 *
 * File layout: README.md, "Model file".
 */
#ifndef CCQ_MODEL_H
#define CCQ_MODEL_H

#include <stdint.h>

#include "ccq/common.h"

#define MODEL_FORMAT "ccq-model"
#define MODEL_VERSION 1
#define MODEL_MAX_NODES 4096
#define MODEL_MAX_DIM 65536
#define MODEL_MAX_NUMEL (INT64_C(1) << 26)  /* elements of one activation, per image */
#define MODEL_MAX_WEIGHTS (INT64_C(1) << 28) /* elements of one weight tensor */
#define MODEL_MAX_CHANNELS_IN 64             /* input image channels */

#define MODEL_MAX_IN 64                      /* inputs of one node (concat) */

/* The ops of the graph. What each one is (arity, attributes, shape rule,
 * float and integer forward, folding and calibration rule) is one entry of
 * the op table: op.h. */
typedef enum {
    MODEL_OP_CONV2D,
    MODEL_OP_BATCHNORM,
    MODEL_OP_RELU,
    MODEL_OP_MAXPOOL,
    MODEL_OP_AVGPOOL,
    MODEL_OP_GLOBALAVGPOOL,
    MODEL_OP_LINEAR,
    MODEL_OP_FLATTEN,
    MODEL_OP_ADD,
    MODEL_OP_PAD,
    MODEL_OP_SLICE,
    MODEL_OP_CONCAT,
    MODEL_OP_CLIP,
    MODEL_OP_ACT,
    MODEL_OP_MUL,
    MODEL_OP_COUNT
} model_op;

/* Pointwise functions of the act op (a 256-entry table in a quantized model). */
typedef enum {
    MODEL_ACT_SIGMOID,
    MODEL_ACT_HARDSIGMOID, /* max(0, min(1, alpha x + beta)) */
    MODEL_ACT_HARDSWISH,   /* x * max(0, min(1, x / 6 + 1 / 2)) */
    MODEL_ACT_TANH,
    MODEL_ACT_LEAKYRELU,   /* x >= 0 ? x : alpha x */
    MODEL_ACT_ELU,         /* x > 0 ? x : alpha (exp(x) - 1) */
    MODEL_ACT_GELU,        /* x / 2 (1 + erf(x / sqrt 2)) */
    MODEL_ACT_GELU_TANH,   /* x / 2 (1 + tanh(sqrt(2 / pi) (x + 0.044715 x^3))) */
    MODEL_ACT_COUNT
} model_act;

/* Per-image tensor shape. Rank 1 tensors have h = w = 1. */
typedef struct {
    int rank; /* 1 or 3 */
    int c, h, w;
} model_shape;

typedef struct {
    model_op op;
    char name[128];
    int n_in;
    int in[MODEL_MAX_IN]; /* producer node indices; -1 = network input */
    model_shape shape; /* output shape */

    /* conv2d and pools */
    int kernel[2];   /* kh, kw */
    int stride[2];   /* sh, sw */
    int pad[4];      /* top, left, bottom, right */
    int dilation[2]; /* conv2d only; 1 for pools */
    int ceil_mode;   /* pools */
    int count_include_pad; /* avgpool */
    int groups;      /* conv2d: weight [Cout][Cin / groups][kh][kw]; 1 = dense */

    /* pad: zeros before [0..rank) and after [rank..2 rank) each axis (C, H, W or F) */
    int pads[6];
    /* slice: output element i of axis a reads input element start[a] + i * step[a] */
    int start[3], step[3];
    /* concat: 0 = C (or F), 1 = H, 2 = W */
    int axis;
    /* clip op: [min, max]; on a conv2d, linear, batchnorm or add with has_clip = 1: a fused clip */
    int has_clip;
    float clip[2];
    /* act: the function and its parameters; table[256] (quantized): output level per input level */
    model_act fn;
    float act_alpha, act_beta;
    uint8_t *table;

    /* conv2d: weight [Cout][Cin][kh][kw]; linear: weight [out][in]. bias may be NULL. */
    float *weight;
    float *bias;
    int64_t n_weight;

    /* batchnorm: y = (x - mean) / sqrt(var + eps) * gamma + beta, per channel */
    float *gamma, *beta, *mean, *var;
    float eps;

    /* Fused ReLU on the output (ops that fuse, op.h): attr relu = 1. */
    int relu;

    /* Quantization (model.quantized): the output tensor is uint8 with
     * real = act_scale * (q - act_zp); the logits node is int32 with act_zp 0.
     * conv2d/linear weights are levels[i] * wscale[cout] with
     * |levels| <= 2^(bits-1) - 1; `weight` then holds the float weights the
     * levels were derived from (BatchNorm already folded in). */
    float act_scale;
    int act_zp;
    int bits;
    int8_t *levels; /* same shape as weight */
    float *wscale;  /* [Cout] */
    /* Learned levels (after LQ-Nets), bits 2..MODEL_CODEBOOK_MAX_BITS: output
     * channel o's weights take the 2^bits int8 values codebook[o * 2^bits ..],
     * strictly increasing, within +-127; levels[] then holds those values
     * (what the engine multiplies) and a weight's code is its value's index
     * there. NULL: the symmetric uniform grid |levels| <= 2^(bits-1) - 1. */
    int8_t *codebook; /* [Cout][2^bits] or NULL */
    /* Sparse storage (uniform grid only; set by weight pruning, prune.h): deployed as a bitmap of
     * the non-zero levels, those levels' codes and a row index, when that is smaller than the
     * dense packing (model_node_sparse_bytes); the engine and the levels are unchanged. */
    int sparse;
    /* Activation pruning (quantized; a node with OP_CALIBRATED other than the
     * logits): an output level q with |q - act_zp| < act_thresh becomes
     * act_zp (real zero), after the op's clamp. 0 = none; at most 255. */
    int act_thresh;
} model_node;

typedef struct {
    char name[128];
    char path[512];
    model_shape input; /* rank 3: C, H, W of the raw uint8 image */
    float mean[MODEL_MAX_CHANNELS_IN], std[MODEL_MAX_CHANNELS_IN]; /* pixel/255 units */
    int n_nodes;
    model_node *nodes;
    int output;  /* index of the logits node (rank 1) */
    int classes; /* = nodes[output].shape.c */

    /* Quantized models: the network input is the raw uint8 pixel with
     * real = in_scale * (pixel - in_zp), from the normalisation. */
    int quantized;
    int abits; /* 8 */
    float in_scale;
    int in_zp;
} model;

/* Loads and validates a model file. On failure *m is left empty (safe to free). */
ccq_status model_load(model *m, const char *path, ccq_err *err);
void model_free(model *m);

/* Writes m to path atomically (temporary file, flush, fsync, rename): on
 * failure an existing file at path is untouched. Float and quantized models. */
ccq_status model_save(const model *m, const char *path, ccq_err *err);

/* Deep copy (every array duplicated). */
void model_copy(model *dst, const model *src);

/* Largest level magnitude for a weight width: 2^(bits-1) - 1. */
int model_qmax(int bits);

#define MODEL_CODEBOOK_MAX_BITS 4
/* Codes per channel of a node with a codebook: 2^bits. */
static inline int model_ncodes(const model_node *nd) { return 1 << nd->bits; }
/* Largest |level| a conv/linear node can hold: its codebook's largest
 * magnitude, or model_qmax(bits) (what bounds its int32 accumulators). */
int model_node_wmax(const model_node *nd);
/* Bytes of a conv/linear node's weights as deployed: its levels (codes, with
 * a codebook) packed at `bits` bits, ceil(n_weight * bits / 8), plus its
 * codebook (2^bits bytes per output channel), or model_node_sparse_bytes if
 * model_node_deployed_sparse; 0 for other nodes. */
int64_t model_node_weight_bytes(const model_node *nd);
/* Sparse storage of a uniform conv/linear node: a bitmap of its n levels (ceil(n / 8) bytes), the
 * non-zero levels' codes at model_sparse_code_bits(bits) bits each (ceil(nnz * cb / 8) bytes), and
 * a uint32 per output channel (the index of its row's first code). */
int64_t model_node_sparse_bytes(const model_node *nd);
/* Bits of a non-zero level's code: 1 at 2 bits (+-1), else bits (2^bits - 2 values). */
int model_sparse_code_bits(int bits);
/* 1 if nd is deployed sparse: nd->sparse and model_node_sparse_bytes below the dense packing. */
int model_node_deployed_sparse(const model_node *nd);
/* Bytes of a quantized model as deployed (what a size budget counts and
 * scripts/plot_pareto.py reports): every node's activation scale and zero
 * point (8 bytes), and per conv/linear node model_node_weight_bytes plus a
 * float32 scale and an int32 bias per output channel. */
int64_t model_deployed_bytes(const model *m);
/* Whether node i may carry an act_thresh: a quantized model's node with its
 * own output scale (OP_CALIBRATED), not the logits. */
int model_node_prunable(const model *m, int i);
/* The code of value v in channel o's codebook, or -1 if it is not there. */
int model_code_of(const model_node *nd, int o, int v);

/* Shape of a node's input j (the network input for index -1). */
model_shape model_in_shape(const model *m, int node, int j);
int64_t model_numel(model_shape s);

const char *model_op_name(model_op op);
const char *model_act_name(model_act fn);
/* Parameter count of one node (weights, biases, BN statistics). */
int64_t model_node_params(const model *m, int node);
/* Multiply-accumulates per image of one node (conv and linear; 0 elsewhere). */
int64_t model_node_macs(const model *m, int node);
int64_t model_params(const model *m);
int64_t model_macs(const model *m);

/* Output size of a conv/pool window along one axis (ONNX rules, ceil_mode
 * drops a last window that would start in the right padding). */
int model_window_out(int in, int k, int stride, int pad0, int pad1, int dil, int ceil_mode);

/* Pool window o along one axis: real input taps [*lo, *hi) and the window's
 * extent clipped to the padded input (*padded: the count_include_pad divisor;
 * PyTorch and ONNX clip a ceil-mode window to the end padding). */
void model_window(int o, int stride, int k, int pad0, int pad1, int in, int *lo, int *hi, int *padded);

#endif
