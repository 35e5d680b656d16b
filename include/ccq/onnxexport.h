/*
 * onnxexport.h: a quantized model as an ONNX file in QDQ form (opset 13,
 * IR version 7), for runtimes and accelerator toolchains:
 *
 *   - every conv2d/linear weight is DequantizeLinear(levels int8, wscale
 *     float [Cout], zero point 0, axis 0): the b-bit levels in int8
 *     containers, the model file's float32 scales unchanged;
 *   - every bias is DequantizeLinear(bias_q int32, s_in * s_w [Cout], 0):
 *     the qnet's bias_q at the accumulator's scale;
 *   - every activation tensor is uint8: QuantizeLinear at its node's scale
 *     and zero point (float32, unchanged), then DequantizeLinear where a
 *     float consumer reads it;
 *   - act nodes are Cast(uint8 -> int32) + Gather on the model's 256-entry
 *     uint8 table: the integer engine's own map, exactly;
 *   - the input is the raw uint8 image [N, C, H, W] with a
 *     DequantizeLinear at the input quantization, or (ONNXEXPORT_INPUT_FLOAT)
 *     the normalised float image followed by QuantizeLinear;
 *   - the output is the float logits [N, classes].
 *
 * Levels, scales, zero points, biases and act tables are the model's bit
 * for bit; what a runtime does between a DequantizeLinear and the next
 * QuantizeLinear (float arithmetic, or its own fixed-point requantization
 * with round half to even) is not ccq's rounding, so logits agree with
 * `ccq eval` closely but not bit for bit (README, "Deploy").
 *
 * For the way back (scripts/onnx2ccq.py) the file also records what QDQ
 * cannot say: each weight initializer's doc_string is "ccq:bits B", each
 * act Gather's doc_string "ccq:act FN ALPHA BETA SCALE ZP" (the table's
 * output quantization included: an act read only by another act has no
 * DequantizeLinear), and the model's
 * metadata_props hold ccq.name, ccq.mean, ccq.std and ccq.input.
 *
 * This module knows nothing of the command line (cmd_export.c); what each
 * op emits lives with the op (op_traits.onnx, src/op_<family>.c) through
 * the emission API at the end of this header.
 */
#ifndef CCQ_ONNXEXPORT_H
#define CCQ_ONNXEXPORT_H

#include <stddef.h>
#include <stdint.h>

#include "ccq/common.h"
#include "ccq/model.h"

typedef enum { ONNXEXPORT_INPUT_UINT8, ONNXEXPORT_INPUT_FLOAT } onnxexport_input;

typedef struct {
    uint8_t *bytes; /* the serialized ModelProto */
    size_t n;
    int onnx_nodes, live_nodes; /* ONNX nodes written; ccq nodes the logits depend on */
} onnxexport;

/* Builds the ONNX file in memory: every check happens here (a float model, a
 * node whose op or attributes ONNX cannot express exactly, qnet_init's
 * limits), so that onnxexport_write can only fail on I/O. */
ccq_status onnxexport_init(onnxexport *x, const model *m, onnxexport_input input, ccq_err *err);
void onnxexport_free(onnxexport *x);

/* Writes the bytes to a temporary file in path's directory, flushes it to
 * disk and renames it to path: on failure nothing is left and an existing
 * file at path is untouched. */
ccq_status onnxexport_write(const onnxexport *x, const char *path, ccq_err *err);

/* ---- emission API for the ops (op_traits.onnx) ---------------------------------
 * An op's onnx function emits node i as ONNX nodes reading onnxexport_in
 * (the float, dequantized inputs) and ends with onnxexport_result on its
 * float output, which applies a fused ReLU/Clip and quantizes it at the
 * node's scale (or makes it the graph's logits). Names a node's helpers
 * make: ONNXEXPORT_NAME(buf, i, "suffix") gives "n<i>_suffix". */
typedef struct onnxexport_ctx onnxexport_ctx;

enum { ONNXEXPORT_NAME_MAX = 48 };
#define ONNXEXPORT_NAME(buf, i, suffix) snprintf((buf), sizeof(buf), "n%d_%s", (i), (suffix))

/* ONNX TensorProto.DataType codes used here. */
typedef enum {
    ONNXEXPORT_FLOAT = 1,
    ONNXEXPORT_UINT8 = 2,
    ONNXEXPORT_INT8 = 3,
    ONNXEXPORT_INT32 = 6,
    ONNXEXPORT_INT64 = 7,
} onnxexport_dtype;

typedef enum { ONNXEXPORT_A_FLOAT = 1, ONNXEXPORT_A_INT = 2, ONNXEXPORT_A_INTS = 7 } onnxexport_akind;

typedef struct {
    const char *name;
    onnxexport_akind kind;
    int64_t i;
    float f;
    const int64_t *ints;
    int n;
} onnxexport_attr;

#define ONNXEXPORT_AINT(nm, v) ((onnxexport_attr){.name = (nm), .kind = ONNXEXPORT_A_INT, .i = (v)})
#define ONNXEXPORT_AFLOAT(nm, v) ((onnxexport_attr){.name = (nm), .kind = ONNXEXPORT_A_FLOAT, .f = (v)})
#define ONNXEXPORT_AINTS(nm, v, cnt) ((onnxexport_attr){.name = (nm), .kind = ONNXEXPORT_A_INTS, .ints = (v), .n = (cnt)})

/* The model being exported. */
const model *onnxexport_model(const onnxexport_ctx *x);

/* Input j of node i as a float tensor (its DequantizeLinear is emitted on first use). */
const char *onnxexport_in(onnxexport_ctx *x, int i, int j);
/* Input j of node i as its uint8 tensor. */
const char *onnxexport_in_q(onnxexport_ctx *x, int i, int j);

/* An initializer (data: little-endian host values of dtype, numel = product of dims; rank 0 is a
 * scalar). doc: its doc_string, or NULL. */
void onnxexport_const(onnxexport_ctx *x, const char *name, onnxexport_dtype dt, const int64_t *dims, int rank,
                      const void *data, const char *doc);
/* A node: in[] may hold "" for an absent optional input. name NULL: "n<i>_<op_type>" by the ctx's
 * own counter. doc: its doc_string, or NULL. */
void onnxexport_node(onnxexport_ctx *x, const char *op_type, const char *name, const char *const *in, int n_in,
                     const char *out, const onnxexport_attr *attrs, int n_attrs, const char *doc);
/* The ONNX name of ccq node i's main op (its model name, made unique). */
const char *onnxexport_node_name(const onnxexport_ctx *x, int i);
/* The tensor name node i's op should write its float result to: "logits" for the logits node of
 * rank 1, else n<i>_f. */
const char *onnxexport_out(const onnxexport_ctx *x, int i);
/* Node i's float result t: its fused ReLU / Clip, then QuantizeLinear at the node's scale and zero
 * point into its uint8 tensor; the logits node's result becomes the graph output instead. */
void onnxexport_result(onnxexport_ctx *x, int i, const char *t);
/* Node i's uint8 tensor made directly (act's Gather). */
void onnxexport_result_q(onnxexport_ctx *x, int i, const char *tq);

#endif
