/*
 * op.h: the operator table. Everything ccq knows about one op of the graph
 * is one entry here (ggml's type_traits, XNNPACK's operator configs): its
 * name in the model file, its arity, its folding and calibration rule
 * (flags), how its attributes and data are read and written and its output
 * shape derived, its float forward (the reference, fnet_), its integer
 * set-up and forward (qnet_), its C export (cexport_) and its ONNX export
 * (onnxexport_). Adding an op
 * means one entry, its functions in one src/op_<family>.c file, its tests
 * and its README lines.
 *
 * This header is the contract between the graph modules (model_, fnet_,
 * quant_, qnet_, cexport_) and the op implementations; nothing outside
 * them needs it. It holds the per-node integer state (qnet_node) because the integer
 * set-up and forward of an op live with the op, and so do its C and ONNX
 * exports (cexport_, onnxexport_).
 *
 * Families: op_conv.c (conv2d, linear), op_pool.c (maxpool, avgpool,
 * globalavgpool), op_elem.c (add, mul, concat), op_shape.c (flatten, pad,
 * slice), op_point.c (relu, clip, act, batchnorm).
 */
#ifndef CCQ_OP_H
#define CCQ_OP_H

#include <stdint.h>

#include "ccq/cexport.h"
#include "ccq/common.h"
#include "ccq/h5io.h"
#include "ccq/kern.h"
#include "ccq/model.h"
#include "ccq/onnxexport.h"
#include "ccq/qnet.h"

enum {
    /* conv2d, linear: weights with levels and per-channel scales, searched;
     * a BatchNorm that is its only consumer folds into it */
    OP_WEIGHTED = 1u << 0,
    /* may carry a fused ReLU or Clip on its output (the requantization's clamp) */
    OP_FUSES = 1u << 1,
    /* its output gets its own scale from calibration; without this flag the
     * output keeps input 0's scale and zero point (the op moves or selects levels) */
    OP_CALIBRATED = 1u << 2,
};

/* Where a node lives in a model file being read or written. */
typedef struct {
    const h5io_file *f;
    char obj[64]; /* "/nodes/NNNN" */
    model_node *nd;
} op_io;

typedef struct {
    const char *name; /* in the model file's `op` attribute */
    int min_in, max_in;
    unsigned flags;
    /* Reads node i's op-specific attributes and datasets (the levels and
     * tables of a quantized model included) and sets nd->shape from its
     * input shapes (model_in_shape). n_in and in[] are already read and valid. */
    ccq_status (*load)(const op_io *io, model *m, int i, ccq_err *err);
    /* Writes what load reads. */
    ccq_status (*save)(const op_io *io, const model *m, int i, ccq_err *err);
    /* Float forward of one image ([C][H][W] per tensor): x[j] is input j. */
    void (*ffwd)(const model *m, int i, const float *const *x, float *y, float *scratch);
    /* Floats of scratch ffwd needs (NULL: none). */
    int64_t (*fscratch)(const model *m, int i);
    /* At quantization, after calibration (float, once): op data derived from
     * the scales, such as act's table. NULL: nothing. */
    ccq_status (*qprep)(model *m, int i, ccq_err *err);
    /* Integer set-up of q->nodes[i] (common fields are set). NULL: nothing. */
    ccq_status (*qinit)(qnet *q, int i, ccq_err *err);
    /* Integer forward of n images (NHWC uint8 per tensor): x[j] is input j.
     * The logits node writes q->logits instead of y. */
    void (*qfwd)(qnet *q, int i, const uint8_t *const *x, uint8_t *y, int n);
    /* C export of node i (cexport.h's emission API): the op's runtime code, its constants taken
     * from q->nodes[i] (a qnet built with the scalar kernels) and its call, with exactly qfwd's
     * integers. NULL: the op cannot be exported. */
    ccq_status (*cexport)(cexport_ctx *x, const qnet *q, int i, ccq_err *err);
    /* ONNX export of node i (onnxexport.h's emission API): its QDQ-form nodes, reading
     * onnxexport_in and ending in onnxexport_result, with the model's levels, scales and tables
     * unchanged and integer constants (bias_q) from q->nodes[i]. An attribute ONNX cannot express
     * with the engine's meaning is an error naming the node (CCQ_ERR_USAGE). NULL: the op cannot be
     * exported. */
    ccq_status (*onnx)(onnxexport_ctx *x, const qnet *q, int i, ccq_err *err);
} op_traits;

const op_traits *op_get(model_op op);
/* The op named s, or MODEL_OP_COUNT. */
model_op op_by_name(const char *s);

/* Integer state of one node (qnet_init, the op's qinit). */
struct qnet_node {
    model_op op;
    int n_in, in[MODEL_MAX_IN];
    int oc, oh, ow, ic, ih, iw;
    int relu;
    int32_t zp_in, zp_out, lo, hi; /* lo, hi: the output clamp (fused ReLU / Clip) */
    int thresh;      /* activation pruning after the op: |q - zp_out| < thresh -> zp_out (model.h act_thresh) */
    /* conv2d / linear */
    int kh, kw, sh, sw, dh, dw, pt, pl;
    int groups, cig, cog; /* groups; input and output channels per group */
    int K;           /* kh * kw * cig */
    int Kpack;       /* levels per channel as packed (zero where padded) */
    int seg;         /* indirect conv: bytes per kernel row, kw * ic rounded up to kr */
    int indirect;    /* read in place: dense conv with dw = 1 (from the padded image), linear with K % kr == 0 */
    int is_logits;
    int ph, pw;      /* padded input height, width */
    size_t gpacked;  /* packed bytes per group */
    int8_t *lev;     /* [oc][Kpack], K in (ky, kx, ci) order, zero tail; depthwise: [K][oc] */
    int8_t *packed;  /* ISA-packed lev, one block of gpacked bytes per group (depthwise: one dw_pack) */
    /* depthwise path (groups = Cin, kern_dw): the channel multiplier Cout / Cin, 0 = GEMM path; the K
     * tap offsets in the padded image, whose channels are the output's (each input channel repeated
     * dwm times) */
    int dwm;
    ptrdiff_t *dwoff;
    int32_t *bias_q; /* round(bias / (s_in * s_w)) */
    int32_t *bias;   /* bias_q - zp_in * sum(lev): what the kernel adds */
    int32_t *mult, *shift;
    /* add, and concat's inputs (kern_add semantics; concat: one per input, bm = 0) */
    kern_add add;
    kern_add *cat;
    /* batchnorm: out = zp + rshift((q - zp_in) * cm[c] + cb[c], csh); mul: cm[0], csh */
    int32_t *cm, csh;
    int64_t *cb;
    /* pools */
    int pb, pr, ceil_mode, cip;
};

/* ---- helpers for op implementations ---------------------------------------- */

/* "PATH: /nodes/0003 (conv2d conv1): " + the message. */
#define OP_FAIL(io, err, st, fmt, ...)                                                                  \
    ccq_fail(err, st, "%s: %s (%s %s): " fmt, (io)->f->path, (io)->obj, model_op_name((io)->nd->op), \
             (io)->nd->name, __VA_ARGS__)

/* Integer attribute of exactly n values, each in [min, max]. */
ccq_status op_read_ints(const op_io *io, const char *name, int *out, int n, int min, int max, ccq_err *err);
/* Float dataset of the given shape, checked finite, into a fresh buffer. */
ccq_status op_read_floats(const op_io *io, const char *name, int rank, const hsize_t *dims, float **out,
                          ccq_err *err);
/* Float attribute of n finite values. */
ccq_status op_read_attr_floats(const op_io *io, const char *name, float *out, int n, ccq_err *err);
/* kernel, stride, pad (+ dilation for conv, ceil_mode for pools) and the output shape of a window op. */
ccq_status op_load_window(const op_io *io, model_shape in, int conv, ccq_err *err);
ccq_status op_save_window(const op_io *io, int conv, ccq_err *err);

/* Scale and zero point of tensor src (-1: the network input) of a quantized model. */
float op_in_scale(const model *m, int src);
int op_in_zp(const model *m, int src);

/* Round half away from zero of v / 2^s, s >= 1. */
static inline int64_t op_rshift_round(int64_t v, int s)
{
    const int64_t r = (int64_t)1 << (s - 1);
    return v >= 0 ? (v + r) >> s : -((-v + r) >> s);
}

static inline uint8_t op_clamp_u8(int64_t v, int32_t lo, int32_t hi)
{
    return (uint8_t)(v < lo ? lo : v > hi ? hi : v);
}

/* A shift s such that round(ratio * 2^s) < 2^30 for every ratio <= max_ratio, at most 40. */
ccq_status op_ratio_shift(double max_ratio, int32_t *shift);

/* The integer clamp [lo, hi] of an output at (scale, zp) after an optional
 * fused ReLU and Clip [cmin, cmax] (README, "Integer engine"). */
void op_out_clamp(const model_node *nd, int32_t *lo, int32_t *hi);

/* Float forward helpers shared by several ops (fnet.c). */
void op_clip_float(float *y, int64_t n, float lo, float hi);

#endif
