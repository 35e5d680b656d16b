/*
 * cexport.h: a quantized model as self-contained C99 source: NAME.c and
 * NAME.h with one function
 *
 *   void NAME_run(const uint8_t *image, int32_t *logits);
 *
 * taking the raw uint8 image in the data file's [C][H][W] order and writing
 * the int32 logits ccq's integer engine computes, bit for bit (README,
 * "Integer engine" and "Deploy"). Only the C standard library is used; no
 * allocation: every activation lives in one static arena whose size is
 * planned at export (tensors whose last reader has run are reused).
 *
 * What the code holds: each conv2d/linear layer's levels packed at the
 * layer's own width (b bits per level, level + 2^(b-1) - 1, LSB first), the
 * integer constants qnet_init derives (biases with the zero-point term,
 * multipliers, shifts, add/concat/batchnorm/mul parameters: read from a qnet
 * built with the scalar kernels, never derived twice), act tables, and one
 * call per node. Compiled with -DNAME_FAST (NAME upper-cased) the levels are
 * stored one int8 each and read in place instead of being unpacked channel by
 * channel on every image: more flash, less RAM, a little faster, the same
 * integers.
 *
 * The generated code is not reentrant (one static arena). This module knows
 * nothing of the command line (cmd_export.c); what each op emits lives with
 * the op (op_traits.cexport, src/op_<family>.c) through the emission API at
 * the end of this header.
 */
#ifndef CCQ_CEXPORT_H
#define CCQ_CEXPORT_H

#include <stddef.h>
#include <stdint.h>

#include "ccq/common.h"
#include "ccq/model.h"

/* Bytes the exported code needs, on any target (the arrays are exact; the
 * descriptors and the code itself are not counted here: see results/export.md
 * for measured object sizes). */
typedef struct {
    int64_t weights;         /* conv2d/linear levels */
    size_t levels_bytes;     /* levels packed at their widths */
    size_t levels_fast;      /* NAME_FAST: one byte per level */
    size_t const_bytes;      /* biases, multipliers, shifts, other op constants, act tables */
    size_t arena_bytes;      /* activation arena after the liveness plan */
    size_t arena_naive;      /* every tensor in its own buffer (what the plan saves) */
    size_t scratch_bytes;    /* default build: one channel's unpacked levels (NAME_FAST: none) */
    int bits_min, bits_max;  /* layer widths */
    int live_nodes;          /* nodes the logits depend on (the others are not emitted) */
} cexport_footprint;

typedef struct {
    char name[64];
    char *c_src, *h_src; /* NUL-terminated texts */
    size_t c_len, h_len;
    cexport_footprint fp;
} cexport;

/* 1 if name is a C identifier of at most 48 characters that the export may
 * prefix its names with. */
int cexport_name_ok(const char *name);

/* Generates the two texts in memory: every check happens here (a float model,
 * a node whose op cannot be exported, qnet_init's limits), so that
 * cexport_write can only fail on I/O. m must be a quantized model. */
ccq_status cexport_init(cexport *x, const model *m, const char *name, ccq_err *err);
void cexport_free(cexport *x);

/* Writes DIR/NAME.c and DIR/NAME.h (DIR is created if missing; its parent must
 * exist): both go to temporary files first, are flushed to disk, then renamed
 * into place; on failure nothing new is left in DIR (nor DIR if it was made). */
ccq_status cexport_write(const cexport *x, const char *dir, ccq_err *err);

/* ---- emission API for the ops (op_traits.cexport) ----------------------------
 * An op's cexport function emits, for node i: its runtime code (once per op:
 * cexport_code), its constants (cexport_array, cexport_data) and its call in
 * NAME_run (cexport_call), where cexport_in/cexport_out name its tensors as C
 * expressions of type const uint8_t * / uint8_t *. Generated identifiers: the
 * runtime's start with cq_, node i's data with n<i>_. */
typedef struct cexport_ctx cexport_ctx;

/* Shared runtime helpers an op's code calls; emitted once each, before any op's code. */
typedef enum {
    CEXPORT_RT_CLAMP,    /* uint8_t cq_clamp(int64_t v, int32_t lo, int32_t hi) */
    CEXPORT_RT_REQUANT,  /* int32_t cq_requant(int32_t acc, int32_t mult, int shift): kern_requant */
    CEXPORT_RT_RSHIFT,   /* int64_t cq_rshift(int64_t v, int s): op_rshift_round */
    CEXPORT_RT_DIVROUND, /* int64_t cq_div_round(int64_t s, int64_t cnt): half away from zero */
    CEXPORT_RT_WINDOW,   /* void cq_window(...): model_window */
    CEXPORT_RT_ADDP,     /* typedef cq_addp (kern_add), uint8_t cq_add_one(a, b, p): kern_add_one */
    CEXPORT_RT_PRUNE,    /* void cq_prune(y, n, zp, t): activation pruning (model.h act_thresh) */
    CEXPORT_RT_UNPACK_SPARSE, /* void cq_unpack_sparse(...): a row of a sparse layer (conv's; not with CQ_FAST) */
    CEXPORT_RT_COUNT
} cexport_rt;

/* What an array holds, for the footprint. */
typedef enum { CEXPORT_CONST, CEXPORT_LEVELS, CEXPORT_LEVELS_FAST } cexport_kind;

void cexport_need(cexport_ctx *x, cexport_rt r);
/* The op's runtime code (functions and types it calls), emitted once however many nodes use it. */
void cexport_code(cexport_ctx *x, model_op op, const char *text);
/* `static const TYPE n<i>_<suffix>[n] = {...};` with TYPE int8_t, uint8_t, int32_t or int64_t by
 * elem_bytes (1 signed, 1 unsigned, 4 or 8; 1-byte unsigned when is_unsigned). Returns nothing: the
 * name is n<i>_<suffix>. */
void cexport_array(cexport_ctx *x, int i, const char *suffix, const void *v, int64_t n, int elem_bytes,
                   int is_unsigned, cexport_kind kind);
/* Free text in the data section (descriptors), and in NAME_run's body (one statement). */
void cexport_data(cexport_ctx *x, const char *fmt, ...) __attribute__((format(printf, 2, 3)));
void cexport_call(cexport_ctx *x, const char *fmt, ...) __attribute__((format(printf, 2, 3)));
/* C expressions for node i's input j and its output (the logits node: "logits", int32_t *). */
const char *cexport_in(const cexport_ctx *x, int i, int j);
const char *cexport_out(const cexport_ctx *x, int i);
/* The op's code uses cq_wbuf (int8, default build only) of at least wbuf bytes. */
void cexport_scratch(cexport_ctx *x, size_t wbuf);

#endif
