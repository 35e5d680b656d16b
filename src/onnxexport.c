/*
 * onnxexport.c: a quantized model as an ONNX QDQ file (see onnxexport.h):
 * the frame (ModelProto, graph inputs and outputs, the input's
 * quantization, per-tensor QuantizeLinear/DequantizeLinear, fused
 * ReLU/Clip, node naming, the ccq metadata the way back needs) and the
 * writer (a temporary file renamed into place). What each op's ONNX nodes
 * are lives with the op (op_traits.onnx in src/op_<family>.c), which reads
 * the integer state of a qnet built here with the scalar kernels where it
 * needs one (bias_q), so no constant is derived twice.
 *
 * The protobuf encoding is pb_'s; the field numbers below are onnx.proto's
 * (ONNX 1.12, IR version 7). It does not run or check the file
 * (tests/test_onnxexport.py does, with onnx.checker and ONNX Runtime) and
 * knows nothing of the command line.
 */
#include "ccq/onnxexport.h"

#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "ccq/op.h"
#include "ccq/pb.h"
#include "ccq/qnet.h"
#include "ccq/version.h"

/* onnx.proto field numbers */
enum {
    MODEL_IR_VERSION = 1, MODEL_PRODUCER_NAME = 2, MODEL_PRODUCER_VERSION = 3, MODEL_DOC = 6, MODEL_GRAPH = 7,
    MODEL_OPSET = 8, MODEL_METADATA = 14,
    OPSET_DOMAIN = 1, OPSET_VERSION = 2,
    ENTRY_KEY = 1, ENTRY_VALUE = 2,
    GRAPH_NODE = 1, GRAPH_NAME = 2, GRAPH_INIT = 5, GRAPH_DOC = 10, GRAPH_INPUT = 11, GRAPH_OUTPUT = 12,
    NODE_INPUT = 1, NODE_OUTPUT = 2, NODE_NAME = 3, NODE_OP = 4, NODE_ATTR = 5, NODE_DOC = 6,
    ATTR_NAME = 1, ATTR_F = 2, ATTR_I = 3, ATTR_INTS = 8, ATTR_TYPE = 20,
    TENSOR_DIMS = 1, TENSOR_TYPE = 2, TENSOR_NAME = 8, TENSOR_RAW = 9, TENSOR_DOC = 12,
    VI_NAME = 1, VI_TYPE = 2,
    TYPE_TENSOR = 1, TT_ELEM = 1, TT_SHAPE = 2, SHAPE_DIM = 1, DIM_VALUE = 1, DIM_PARAM = 2,
};

enum { IR_VERSION = 7, OPSET = 13 };

struct onnxexport_ctx {
    const model *m;
    onnxexport_input input;
    pb_buf nodes, inits; /* GraphProto fields 1 and 5, in emission order */
    int n_onnx, helper;
    /* per tensor j (-1: the input) at index j + 1: its uint8 name, its dequantized name ("" until
     * a float consumer asked), whether its scale and zero point initializers exist */
    char (*qname)[ONNXEXPORT_NAME_MAX], (*dname)[ONNXEXPORT_NAME_MAX];
    uint8_t *sz_done;
    char (*nname)[160]; /* ONNX name of node i's main op */
};

const model *onnxexport_model(const onnxexport_ctx *x) { return x->m; }

const char *onnxexport_node_name(const onnxexport_ctx *x, int i) { return x->nname[i]; }

/* ---- initializers and nodes --------------------------------------------------- */

static size_t dtype_bytes(onnxexport_dtype dt)
{
    switch (dt) {
    case ONNXEXPORT_FLOAT: case ONNXEXPORT_INT32: return 4;
    case ONNXEXPORT_UINT8: case ONNXEXPORT_INT8: return 1;
    case ONNXEXPORT_INT64: return 8;
    }
    CCQ_ASSERT(0);
    return 0;
}

void onnxexport_const(onnxexport_ctx *x, const char *name, onnxexport_dtype dt, const int64_t *dims, int rank,
                      const void *data, const char *doc)
{
    pb_buf t = {0};
    int64_t n = 1;
    for (int k = 0; k < rank; k++) {
        CCQ_ASSERT(dims[k] >= 1);
        pb_int(&t, TENSOR_DIMS, dims[k]);
        n *= dims[k];
    }
    pb_int(&t, TENSOR_TYPE, dt);
    pb_str(&t, TENSOR_NAME, name);
    /* raw_data is little-endian whatever the host */
    const size_t eb = dtype_bytes(dt), bytes = (size_t)n * eb;
    uint8_t *raw = ccq_malloc(bytes ? bytes : 1);
    const uint8_t *src = data;
    for (int64_t k = 0; k < n; k++) {
        uint64_t v = 0;
        if (eb == 1) v = src[k];
        else if (eb == 4) { uint32_t u; memcpy(&u, src + 4 * k, 4); v = u; }
        else memcpy(&v, src + 8 * k, 8);
        for (size_t b = 0; b < eb; b++) raw[(size_t)k * eb + b] = (uint8_t)(v >> (8 * b));
    }
    pb_bytes(&t, TENSOR_RAW, raw, bytes);
    if (doc) pb_str(&t, TENSOR_DOC, doc);
    pb_msg(&x->inits, GRAPH_INIT, &t);
    ccq_free(raw);
    pb_free(&t);
}

static void const_scalar_f(onnxexport_ctx *x, const char *name, float v) { onnxexport_const(x, name, ONNXEXPORT_FLOAT, NULL, 0, &v, NULL); }
static void const_scalar_i32(onnxexport_ctx *x, const char *name, int32_t v) { onnxexport_const(x, name, ONNXEXPORT_INT32, NULL, 0, &v, NULL); }

void onnxexport_node(onnxexport_ctx *x, const char *op_type, const char *name, const char *const *in, int n_in,
                     const char *out, const onnxexport_attr *attrs, int n_attrs, const char *doc)
{
    pb_buf n = {0};
    char hname[64];
    for (int k = 0; k < n_in; k++) pb_str(&n, NODE_INPUT, in[k]);
    pb_str(&n, NODE_OUTPUT, out);
    if (!name) {
        snprintf(hname, sizeof hname, "h%d_%s", x->helper++, op_type);
        name = hname;
    }
    pb_str(&n, NODE_NAME, name);
    pb_str(&n, NODE_OP, op_type);
    for (int k = 0; k < n_attrs; k++) {
        const onnxexport_attr *a = &attrs[k];
        pb_buf ab = {0};
        pb_str(&ab, ATTR_NAME, a->name);
        if (a->kind == ONNXEXPORT_A_FLOAT) pb_float(&ab, ATTR_F, a->f);
        else if (a->kind == ONNXEXPORT_A_INT) pb_int(&ab, ATTR_I, a->i);
        else
            for (int j = 0; j < a->n; j++) pb_int(&ab, ATTR_INTS, a->ints[j]);
        pb_int(&ab, ATTR_TYPE, a->kind);
        pb_msg(&n, NODE_ATTR, &ab);
        pb_free(&ab);
    }
    if (doc) pb_str(&n, NODE_DOC, doc);
    pb_msg(&x->nodes, GRAPH_NODE, &n);
    pb_free(&n);
    x->n_onnx++;
}

/* ---- tensors: quantization of each ----------------------------------------------- */

static float t_scale(const onnxexport_ctx *x, int j) { return j < 0 ? x->m->in_scale : x->m->nodes[j].act_scale; }
static int t_zp(const onnxexport_ctx *x, int j) { return j < 0 ? x->m->in_zp : x->m->nodes[j].act_zp; }

static void t_name(char *buf, size_t n, int j, const char *suffix)
{
    if (j < 0) snprintf(buf, n, "input_%s", suffix);
    else snprintf(buf, n, "n%d_%s", j, suffix);
}

/* Tensor j's scale and zero point initializers (float32 and uint8 scalars: the model's own). */
static void scale_zp(onnxexport_ctx *x, int j, char *s, char *z)
{
    t_name(s, ONNXEXPORT_NAME_MAX, j, "scale");
    t_name(z, ONNXEXPORT_NAME_MAX, j, "zp");
    if (x->sz_done[j + 1]) return;
    x->sz_done[j + 1] = 1;
    const_scalar_f(x, s, t_scale(x, j));
    const uint8_t zp = (uint8_t)t_zp(x, j);
    onnxexport_const(x, z, ONNXEXPORT_UINT8, NULL, 0, &zp, NULL);
}

static const char *dequantized(onnxexport_ctx *x, int j)
{
    CCQ_ASSERT(j >= -1 && j < x->m->n_nodes && x->qname[j + 1][0]);
    if (!x->dname[j + 1][0]) {
        char s[ONNXEXPORT_NAME_MAX], z[ONNXEXPORT_NAME_MAX];
        scale_zp(x, j, s, z);
        t_name(x->dname[j + 1], ONNXEXPORT_NAME_MAX, j, "dq");
        const char *in[3] = {x->qname[j + 1], s, z};
        onnxexport_node(x, "DequantizeLinear", NULL, in, 3, x->dname[j + 1], NULL, 0, NULL);
    }
    return x->dname[j + 1];
}

const char *onnxexport_in(onnxexport_ctx *x, int i, int j)
{
    CCQ_ASSERT(j >= 0 && j < x->m->nodes[i].n_in);
    return dequantized(x, x->m->nodes[i].in[j]);
}

const char *onnxexport_in_q(onnxexport_ctx *x, int i, int j)
{
    CCQ_ASSERT(j >= 0 && j < x->m->nodes[i].n_in);
    const int src = x->m->nodes[i].in[j];
    CCQ_ASSERT(x->qname[src + 1][0]);
    return x->qname[src + 1];
}

const char *onnxexport_out(const onnxexport_ctx *x, int i)
{
    static char buf[ONNXEXPORT_NAME_MAX]; /* single-threaded export: one name in use at a time */
    if (i == x->m->output && x->m->nodes[i].shape.rank == 1) return "logits";
    ONNXEXPORT_NAME(buf, i, "f");
    return buf;
}

/* A clip bound the model file marks as absent (README: +-3.4e38). */
static int no_bound(float v) { return v >= 3.0e38f || v <= -3.0e38f; }

void onnxexport_result(onnxexport_ctx *x, int i, const char *t)
{
    const model_node *nd = &x->m->nodes[i];
    char cur[ONNXEXPORT_NAME_MAX], nxt[ONNXEXPORT_NAME_MAX];
    snprintf(cur, sizeof cur, "%s", t);
    if (i == x->m->output) {
        CCQ_ASSERT(!nd->relu && !nd->has_clip);
        if (strcmp(cur, "logits") != 0) {
            const onnxexport_attr a = ONNXEXPORT_AINT("axis", 1);
            const char *in[1] = {cur};
            onnxexport_node(x, "Flatten", NULL, in, 1, "logits", &a, 1, NULL);
        }
        return;
    }
    if (nd->relu) {
        ONNXEXPORT_NAME(nxt, i, "relu");
        const char *in[1] = {cur};
        onnxexport_node(x, "Relu", NULL, in, 1, nxt, NULL, 0, NULL);
        snprintf(cur, sizeof cur, "%s", nxt);
    }
    if (nd->has_clip && nd->op != MODEL_OP_CLIP) { /* a clip node's bounds are its op */
        char lo[ONNXEXPORT_NAME_MAX] = "", hi[ONNXEXPORT_NAME_MAX] = "";
        if (!no_bound(nd->clip[0])) ONNXEXPORT_NAME(lo, i, "clip_min"), const_scalar_f(x, lo, nd->clip[0]);
        if (!no_bound(nd->clip[1])) ONNXEXPORT_NAME(hi, i, "clip_max"), const_scalar_f(x, hi, nd->clip[1]);
        ONNXEXPORT_NAME(nxt, i, "clip");
        const char *in[3] = {cur, lo, hi};
        onnxexport_node(x, "Clip", NULL, in, hi[0] ? 3 : lo[0] ? 2 : 1, nxt, NULL, 0, NULL);
        snprintf(cur, sizeof cur, "%s", nxt);
    }
    char s[ONNXEXPORT_NAME_MAX], z[ONNXEXPORT_NAME_MAX];
    scale_zp(x, i, s, z);
    ONNXEXPORT_NAME(x->qname[i + 1], i, "q");
    const char *in[3] = {cur, s, z};
    onnxexport_node(x, "QuantizeLinear", NULL, in, 3, x->qname[i + 1], NULL, 0, NULL);
}

void onnxexport_result_q(onnxexport_ctx *x, int i, const char *tq)
{
    CCQ_ASSERT(i != x->m->output);
    snprintf(x->qname[i + 1], ONNXEXPORT_NAME_MAX, "%s", tq);
}

/* Activation pruning of node i's uint8 output (model.h act_thresh), in integers:
 * Where(|int32(q) - zp| < t, zp, q); the pruned tensor becomes the node's. */
static void prune_q(onnxexport_ctx *x, int i)
{
    const model_node *nd = &x->m->nodes[i];
    char q[ONNXEXPORT_NAME_MAX], c[ONNXEXPORT_NAME_MAX], d[ONNXEXPORT_NAME_MAX], t[ONNXEXPORT_NAME_MAX],
        mask[ONNXEXPORT_NAME_MAX], z8[ONNXEXPORT_NAME_MAX];
    snprintf(q, sizeof q, "%s", x->qname[i + 1]);
    ONNXEXPORT_NAME(c, i, "prune_i32");
    const onnxexport_attr to = ONNXEXPORT_AINT("to", ONNXEXPORT_INT32);
    const char *in_c[1] = {q};
    onnxexport_node(x, "Cast", NULL, in_c, 1, c, &to, 1, NULL);
    snprintf(d, sizeof d, "%s", c);
    if (nd->act_zp) {
        char z[ONNXEXPORT_NAME_MAX], s[ONNXEXPORT_NAME_MAX];
        ONNXEXPORT_NAME(z, i, "prune_zp");
        const_scalar_i32(x, z, nd->act_zp);
        ONNXEXPORT_NAME(s, i, "prune_sub");
        const char *in_s[2] = {c, z};
        onnxexport_node(x, "Sub", NULL, in_s, 2, s, NULL, 0, NULL);
        ONNXEXPORT_NAME(d, i, "prune_abs");
        const char *in_a[1] = {s};
        onnxexport_node(x, "Abs", NULL, in_a, 1, d, NULL, 0, NULL);
    }
    ONNXEXPORT_NAME(t, i, "prune_t");
    const_scalar_i32(x, t, nd->act_thresh);
    ONNXEXPORT_NAME(mask, i, "prune_mask");
    const char *in_l[2] = {d, t};
    onnxexport_node(x, "Less", NULL, in_l, 2, mask, NULL, 0, NULL);
    const uint8_t zp8 = (uint8_t)nd->act_zp;
    ONNXEXPORT_NAME(z8, i, "prune_zp_u8");
    onnxexport_const(x, z8, ONNXEXPORT_UINT8, NULL, 0, &zp8, NULL);
    ONNXEXPORT_NAME(x->qname[i + 1], i, "pruned");
    const char *in_w[3] = {mask, z8, q};
    onnxexport_node(x, "Where", NULL, in_w, 3, x->qname[i + 1], NULL, 0, NULL);
}

/* ---- the model ------------------------------------------------------------------ */

/* ValueInfoProto of a tensor [N, dims...] of elem type dt, N symbolic. */
static void value_info(pb_buf *g, int field, const char *name, onnxexport_dtype dt, const int *dims, int rank)
{
    pb_buf vi = {0}, ty = {0}, tt = {0}, sh = {0};
    pb_buf d = {0};
    pb_str(&d, DIM_PARAM, "N");
    pb_msg(&sh, SHAPE_DIM, &d);
    for (int k = 0; k < rank; k++) {
        pb_free(&d);
        pb_int(&d, DIM_VALUE, dims[k]);
        pb_msg(&sh, SHAPE_DIM, &d);
    }
    pb_int(&tt, TT_ELEM, dt);
    pb_msg(&tt, TT_SHAPE, &sh);
    pb_msg(&ty, TYPE_TENSOR, &tt);
    pb_str(&vi, VI_NAME, name);
    pb_msg(&vi, VI_TYPE, &ty);
    pb_msg(g, field, &vi);
    pb_free(&vi), pb_free(&ty), pb_free(&tt), pb_free(&sh), pb_free(&d);
}

static void metadata(pb_buf *mb, const char *k, const char *v)
{
    pb_buf e = {0};
    pb_str(&e, ENTRY_KEY, k);
    pb_str(&e, ENTRY_VALUE, v);
    pb_msg(mb, MODEL_METADATA, &e);
    pb_free(&e);
}

/* "v0,v1,..." of n floats, %.9g (float32 round trip). */
static void float_list(char *buf, size_t cap, const float *v, int n)
{
    size_t k = 0;
    buf[0] = '\0';
    for (int j = 0; j < n && k + 20 < cap; j++) k += (size_t)snprintf(buf + k, cap - k, "%s%.9g", j ? "," : "", (double)v[j]);
}

ccq_status onnxexport_init(onnxexport *out, const model *m, onnxexport_input input, ccq_err *err)
{
    memset(out, 0, sizeof *out);
    if (!m->quantized) return ccq_fail(err, CCQ_ERR_USAGE, "%s: a float model: quantize it first (ccq quantize)", m->path);
    const int n = m->n_nodes;
    for (int i = 0; i < n; i++) {
        if (!op_get(m->nodes[i].op)->onnx)
            return ccq_fail(err, CCQ_ERR_USAGE, "%s: node %d (%s %s): the ONNX export does not support this op", m->path, i,
                            model_op_name(m->nodes[i].op), m->nodes[i].name);
        for (int j = 0; j < m->nodes[i].n_in; j++)
            if (m->nodes[i].in[j] == m->output)
                return ccq_fail(err, CCQ_ERR_USAGE, "%s: node %d (%s %s): reads the int32 logits, which have no uint8 form",
                                m->path, i, model_op_name(m->nodes[i].op), m->nodes[i].name);
    }
    qnet q;
    ccq_status st = qnet_init(&q, m, &kern_isa_scalar, 1, err);
    if (st) return st;

    onnxexport_ctx x = {.m = m, .input = input};
    x.qname = ccq_calloc((size_t)n + 1, sizeof *x.qname);
    x.dname = ccq_calloc((size_t)n + 1, sizeof *x.dname);
    x.sz_done = ccq_calloc((size_t)n + 1, 1);
    x.nname = ccq_calloc((size_t)n + 1, sizeof *x.nname);
    uint8_t *live = ccq_calloc((size_t)n, 1);
    live[m->output] = 1;
    for (int i = m->output; i >= 0; i--)
        for (int j = 0; live[i] && j < m->nodes[i].n_in; j++)
            if (m->nodes[i].in[j] >= 0) live[m->nodes[i].in[j]] = 1;
    /* main op names: the model's, made unique */
    for (int i = 0; i < n; i++) {
        if (m->nodes[i].name[0]) snprintf(x.nname[i], sizeof x.nname[i], "%s", m->nodes[i].name);
        else snprintf(x.nname[i], sizeof x.nname[i], "node%d", i);
        for (int k = 0; k < i; k++)
            if (strcmp(x.nname[k], x.nname[i]) == 0) {
                char t[160];
                snprintf(t, sizeof t, "%.140s_n%d", x.nname[i], i);
                snprintf(x.nname[i], sizeof x.nname[i], "%s", t);
                break;
            }
    }

    /* the input: raw uint8 image, or the normalised float image quantized at the input's scale */
    const int in_dims[3] = {m->input.c, m->input.h, m->input.w};
    if (input == ONNXEXPORT_INPUT_UINT8) {
        snprintf(x.qname[0], ONNXEXPORT_NAME_MAX, "image");
    } else {
        char s[ONNXEXPORT_NAME_MAX], z[ONNXEXPORT_NAME_MAX];
        scale_zp(&x, -1, s, z);
        snprintf(x.qname[0], ONNXEXPORT_NAME_MAX, "input_q");
        const char *in[3] = {"input", s, z};
        onnxexport_node(&x, "QuantizeLinear", NULL, in, 3, x.qname[0], NULL, 0, NULL);
    }
    for (int i = 0; i < n; i++) {
        if (!live[i]) continue;
        if ((st = op_get(m->nodes[i].op)->onnx(&x, &q, i, err))) goto done;
        if (m->nodes[i].act_thresh) prune_q(&x, i);
        out->live_nodes++;
    }

    /* GraphProto (nodes, initializers, name, doc, input, output), then ModelProto */
    {
        pb_buf body = {0}, mp = {0}, os = {0};
        char doc[512];
        pb_append(&body, &x.nodes);
        pb_append(&body, &x.inits);
        pb_str(&body, GRAPH_NAME, m->name[0] ? m->name : "ccq");
        snprintf(doc, sizeof doc,
                 "ccq quantized model %s in QDQ form: %s input, uint8 activations, per-channel int8 weights, "
                 "int32 biases; act tables as Gather",
                 m->name, input == ONNXEXPORT_INPUT_UINT8 ? "raw uint8 image" : "normalised float");
        pb_str(&body, GRAPH_DOC, doc);
        value_info(&body, GRAPH_INPUT, input == ONNXEXPORT_INPUT_UINT8 ? "image" : "input",
                   input == ONNXEXPORT_INPUT_UINT8 ? ONNXEXPORT_UINT8 : ONNXEXPORT_FLOAT, in_dims, 3);
        const int out_dims[1] = {m->classes};
        value_info(&body, GRAPH_OUTPUT, "logits", ONNXEXPORT_FLOAT, out_dims, 1);
        pb_int(&mp, MODEL_IR_VERSION, IR_VERSION);
        pb_str(&os, OPSET_DOMAIN, "");
        pb_int(&os, OPSET_VERSION, OPSET);
        pb_msg(&mp, MODEL_OPSET, &os);
        pb_str(&mp, MODEL_PRODUCER_NAME, "ccq");
        pb_str(&mp, MODEL_PRODUCER_VERSION, CCQ_VERSION);
        pb_str(&mp, MODEL_DOC, doc);
        pb_msg(&mp, MODEL_GRAPH, &body);
        char v[64 * 20];
        metadata(&mp, "ccq.name", m->name);
        float_list(v, sizeof v, m->mean, m->input.c);
        metadata(&mp, "ccq.mean", v);
        float_list(v, sizeof v, m->std, m->input.c);
        metadata(&mp, "ccq.std", v);
        metadata(&mp, "ccq.input", input == ONNXEXPORT_INPUT_UINT8 ? "uint8" : "float");
        pb_free(&body), pb_free(&os);
        out->bytes = mp.p, out->n = mp.n;
        out->onnx_nodes = x.n_onnx;
    }
done:
    pb_free(&x.nodes), pb_free(&x.inits);
    ccq_free(x.qname), ccq_free(x.dname), ccq_free(x.sz_done), ccq_free(x.nname), ccq_free(live);
    qnet_free(&q);
    if (st) onnxexport_free(out);
    return st;
}

void onnxexport_free(onnxexport *x)
{
    ccq_free(x->bytes);
    memset(x, 0, sizeof *x);
}

/* ---- writing -------------------------------------------------------------------- */

ccq_status onnxexport_write(const onnxexport *x, const char *path, ccq_err *err)
{
    char tmp[4200];
    const char *slash = strrchr(path, '/');
    const int dl = slash ? (int)(slash - path + 1) : 0;
    if (snprintf(tmp, sizeof tmp, "%.*s.%s.tmp.%ld", dl, path, slash ? slash + 1 : path, (long)getpid()) >= (int)sizeof tmp)
        return ccq_fail(err, CCQ_ERR_IO, "%s: path too long", path);
    const int fd = open(tmp, O_WRONLY | O_CREAT | O_TRUNC, 0666);
    if (fd < 0) return ccq_fail(err, CCQ_ERR_IO, "%s: cannot write: %s", path, strerror(errno));
    size_t done = 0;
    int e = 0;
    while (done < x->n) {
        const ssize_t w = write(fd, x->bytes + done, x->n - done);
        if (w < 0 && errno == EINTR) continue;
        if (w <= 0) {
            e = w < 0 ? errno : EIO;
            break;
        }
        done += (size_t)w;
    }
    if (!e && fsync(fd) != 0) e = errno;
    if (close(fd) != 0 && !e) e = errno;
    if (!e && rename(tmp, path) != 0) e = errno;
    if (e) {
        unlink(tmp);
        return ccq_fail(err, CCQ_ERR_IO, "%s: cannot write: %s", path, strerror(e));
    }
    return CCQ_OK;
}
