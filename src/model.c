/*
 * model.c: load and validate a ccq model file (see model.h and README.md).
 * Every shape is recomputed from the ops and compared with the stored one;
 * every weight is checked finite. Failures name the file, the node and the
 * problem. Nothing here runs or quantizes the network.
 */
#include "ccq/model.h"

#include <math.h>
#include <stdio.h>
#include <string.h>

#include "ccq/h5io.h"

static const char *const k_op_names[MODEL_OP_COUNT] = {
    [MODEL_OP_CONV2D] = "conv2d",   [MODEL_OP_BATCHNORM] = "batchnorm",
    [MODEL_OP_RELU] = "relu",       [MODEL_OP_MAXPOOL] = "maxpool",
    [MODEL_OP_AVGPOOL] = "avgpool", [MODEL_OP_GLOBALAVGPOOL] = "globalavgpool",
    [MODEL_OP_LINEAR] = "linear",   [MODEL_OP_FLATTEN] = "flatten",
    [MODEL_OP_ADD] = "add",
};

const char *model_op_name(model_op op) { return op < MODEL_OP_COUNT ? k_op_names[op] : "?"; }

int64_t model_numel(model_shape s) { return (int64_t)s.c * s.h * s.w; }

model_shape model_in_shape(const model *m, int node, int j)
{
    int src = m->nodes[node].in[j];
    return src < 0 ? m->input : m->nodes[src].shape;
}

int model_window_out(int in, int k, int stride, int pad0, int pad1, int dil, int ceil_mode)
{
    int64_t eff = (int64_t)dil * (k - 1) + 1;
    int64_t num = (int64_t)in + pad0 + pad1 - eff;
    if (num < 0) return 0;
    int64_t o = (ceil_mode ? (num + stride - 1) / stride : num / stride) + 1;
    if (ceil_mode && (o - 1) * stride >= (int64_t)in + pad0) o--;
    return (int)o;
}

void model_window(int o, int stride, int k, int pad0, int pad1, int in, int *lo, int *hi, int *padded)
{
    const int start = o * stride - pad0, end = start + k;
    const int pend = end < in + pad1 ? end : in + pad1;
    *padded = pend - start;
    *lo = start < 0 ? 0 : start;
    *hi = end > in ? in : end;
}

static void shape_str(char *buf, size_t n, model_shape s)
{
    if (s.rank == 1)
        snprintf(buf, n, "[%d]", s.c);
    else
        snprintf(buf, n, "[%d,%d,%d]", s.c, s.h, s.w);
}

/* Context for error messages: "PATH: /nodes/0003 (conv1): ..." */
typedef struct {
    const h5io_file *f;
    char obj[64];
    const model_node *nd;
} node_ctx;

#define NODE_FAIL(ctx, err, st, fmt, ...)                                                         \
    ccq_fail(err, st, "%s: %s (%s %s): " fmt, (ctx)->f->path, (ctx)->obj, model_op_name((ctx)->nd->op), \
             (ctx)->nd->name, __VA_ARGS__)

static ccq_status check_finite(const node_ctx *c, const char *what, const float *v, int64_t n, ccq_err *err)
{
    for (int64_t i = 0; i < n; i++)
        if (!isfinite(v[i]))
            return NODE_FAIL(c, err, CCQ_ERR_FORMAT, "%s has a non-finite value (%g) at element %lld", what,
                             (double)v[i], (long long)i);
    return CCQ_OK;
}

/* Reads a float dataset of the given shape into a fresh buffer, checked finite. */
static ccq_status read_floats(const node_ctx *c, const char *name, int rank, const hsize_t *dims, float **out,
                              ccq_err *err)
{
    int64_t n = 1;
    for (int i = 0; i < rank; i++) n *= (int64_t)dims[i];
    if (n > MODEL_MAX_WEIGHTS)
        return NODE_FAIL(c, err, CCQ_ERR_LIMIT, "%s has %lld elements, more than the %lld ccq accepts", name,
                         (long long)n, (long long)MODEL_MAX_WEIGHTS);
    float *buf = ccq_malloc(sizeof(float) * (size_t)n);
    ccq_status st = h5io_dset_read(c->f, c->obj, name, H5T_NATIVE_FLOAT, rank, dims, -1, buf, err);
    if (!st) st = check_finite(c, name, buf, n, err);
    if (st) {
        ccq_free(buf);
        return st;
    }
    *out = buf;
    return CCQ_OK;
}

static ccq_status read_int_attrs(const node_ctx *c, const char *name, int *out, int n, int min, int max,
                                 ccq_err *err)
{
    int64_t v[8];
    ccq_status st = h5io_attr_ints_n(c->f, c->obj, name, v, n, err);
    if (st) return st;
    for (int i = 0; i < n; i++) {
        if (v[i] < min || v[i] > max)
            return NODE_FAIL(c, err, CCQ_ERR_FORMAT, "attribute %s = %lld is outside [%d, %d]", name,
                             (long long)v[i], min, max);
        out[i] = (int)v[i];
    }
    return CCQ_OK;
}

static ccq_status load_window(const node_ctx *c, model_node *nd, model_shape in, int conv, ccq_err *err)
{
    ccq_status st;
    if ((st = read_int_attrs(c, "kernel", nd->kernel, 2, 1, MODEL_MAX_DIM, err))) return st;
    if ((st = read_int_attrs(c, "stride", nd->stride, 2, 1, MODEL_MAX_DIM, err))) return st;
    if ((st = read_int_attrs(c, "pad", nd->pad, 4, 0, MODEL_MAX_DIM, err))) return st;
    if (conv) {
        if ((st = read_int_attrs(c, "dilation", nd->dilation, 2, 1, MODEL_MAX_DIM, err))) return st;
        nd->ceil_mode = 0;
    } else {
        nd->dilation[0] = nd->dilation[1] = 1;
        if ((st = read_int_attrs(c, "ceil_mode", &nd->ceil_mode, 1, 0, 1, err))) return st;
        for (int a = 0; a < 2; a++)
            if (nd->pad[a] >= nd->kernel[a] || nd->pad[a + 2] >= nd->kernel[a])
                return NODE_FAIL(c, err, CCQ_ERR_FORMAT, "%s", "padding must be smaller than the kernel");
    }
    if (in.rank != 3) return NODE_FAIL(c, err, CCQ_ERR_FORMAT, "%s", "needs a [C,H,W] input");
    int oh = model_window_out(in.h, nd->kernel[0], nd->stride[0], nd->pad[0], nd->pad[2], nd->dilation[0],
                              nd->ceil_mode);
    int ow = model_window_out(in.w, nd->kernel[1], nd->stride[1], nd->pad[1], nd->pad[3], nd->dilation[1],
                              nd->ceil_mode);
    if (oh < 1 || ow < 1)
        return NODE_FAIL(c, err, CCQ_ERR_FORMAT, "window does not fit the %dx%d input", in.h, in.w);
    nd->shape = (model_shape){3, in.c, oh, ow};
    return CCQ_OK;
}

int model_qmax(int bits) { return (1 << (bits - 1)) - 1; }

static int reads_through(model_op op)
{
    return op == MODEL_OP_MAXPOOL || op == MODEL_OP_AVGPOOL || op == MODEL_OP_GLOBALAVGPOOL ||
           op == MODEL_OP_RELU || op == MODEL_OP_FLATTEN;
}

/* Optional attributes: the fused relu flag, and the quantization of a
 * quantized model (output tensor scale and zero point, weight levels). */
static ccq_status load_node_extras(const model *m, const node_ctx *c, model_node *nd, model_shape in, ccq_err *err)
{
    ccq_status st;
    const h5io_file *f = c->f;
    nd->relu = 0;
    if (H5Aexists_by_name(f->id, c->obj, "relu", H5P_DEFAULT) > 0) {
        if ((st = read_int_attrs(c, "relu", &nd->relu, 1, 0, 1, err))) return st;
        if (nd->relu && (nd->op != MODEL_OP_CONV2D && nd->op != MODEL_OP_LINEAR && nd->op != MODEL_OP_ADD &&
                         nd->op != MODEL_OP_BATCHNORM))
            return NODE_FAIL(c, err, CCQ_ERR_FORMAT, "%s", "relu = 1 on an op that cannot fuse it");
    }
    if (!m->quantized) return CCQ_OK;
    if ((st = h5io_attr_floats_n(f, c->obj, "act_scale", &nd->act_scale, 1, err))) return st;
    if ((st = read_int_attrs(c, "act_zp", &nd->act_zp, 1, 0, 255, err))) return st;
    if (!isfinite(nd->act_scale) || !(nd->act_scale > 0.0f))
        return NODE_FAIL(c, err, CCQ_ERR_FORMAT, "act_scale = %g must be finite and positive", (double)nd->act_scale);
    if (reads_through(nd->op)) {
        const int src = nd->in[0];
        const float s_in = src < 0 ? m->in_scale : m->nodes[src].act_scale;
        const int z_in = src < 0 ? m->in_zp : m->nodes[src].act_zp;
        if (s_in != nd->act_scale || z_in != nd->act_zp)
            return NODE_FAIL(c, err, CCQ_ERR_FORMAT, "%s", "act_scale/act_zp must equal its input's");
    }
    if (nd->op != MODEL_OP_CONV2D && nd->op != MODEL_OP_LINEAR) return CCQ_OK;
    if ((st = read_int_attrs(c, "bits", &nd->bits, 1, 2, 8, err))) return st;
    hsize_t d[4];
    int rank = nd->op == MODEL_OP_CONV2D ? 4 : 2;
    d[0] = (hsize_t)nd->shape.c;
    if (rank == 4) {
        d[1] = (hsize_t)in.c, d[2] = (hsize_t)nd->kernel[0], d[3] = (hsize_t)nd->kernel[1];
    } else {
        d[1] = (hsize_t)in.c;
    }
    nd->levels = ccq_malloc((size_t)nd->n_weight);
    if ((st = h5io_dset_read(f, c->obj, "levels", H5T_NATIVE_INT8, rank, d, -1, nd->levels, err))) return st;
    const int qmax = model_qmax(nd->bits);
    for (int64_t i = 0; i < nd->n_weight; i++)
        if (nd->levels[i] < -qmax || nd->levels[i] > qmax)
            return NODE_FAIL(c, err, CCQ_ERR_FORMAT, "level %d at element %lld is outside +-%d for %d bits",
                             nd->levels[i], (long long)i, qmax, nd->bits);
    hsize_t sd[1] = {(hsize_t)nd->shape.c};
    if ((st = read_floats(c, "wscale", 1, sd, &nd->wscale, err))) return st;
    for (int o = 0; o < nd->shape.c; o++)
        if (!(nd->wscale[o] > 0.0f))
            return NODE_FAIL(c, err, CCQ_ERR_FORMAT, "wscale[%d] = %g must be positive", o, (double)nd->wscale[o]);
    return CCQ_OK;
}

static ccq_status load_node(model *m, const h5io_file *f, int i, ccq_err *err)
{
    model_node *nd = &m->nodes[i];
    node_ctx c = {.f = f, .nd = nd};
    char op[32];
    int64_t v[8];
    int cnt = 0;
    ccq_status st;
    snprintf(c.obj, sizeof c.obj, "/nodes/%04d", i);
    snprintf(nd->name, sizeof nd->name, "?");
    if ((st = h5io_attr_str(f, c.obj, "op", op, sizeof op, err))) return st;
    nd->op = MODEL_OP_COUNT;
    for (int k = 0; k < MODEL_OP_COUNT; k++)
        if (strcmp(op, k_op_names[k]) == 0) nd->op = (model_op)k;
    if (nd->op == MODEL_OP_COUNT)
        return ccq_fail(err, CCQ_ERR_FORMAT, "%s: %s: unknown op '%s'", f->path, c.obj, op);
    if ((st = h5io_attr_str(f, c.obj, "name", nd->name, sizeof nd->name, err))) return st;
    if ((st = h5io_attr_ints(f, c.obj, "inputs", v, 2, &cnt, err))) return st;
    int n_in = nd->op == MODEL_OP_ADD ? 2 : 1;
    if (cnt != n_in) return NODE_FAIL(&c, err, CCQ_ERR_FORMAT, "has %d inputs, expected %d", cnt, n_in);
    nd->n_in = cnt;
    for (int j = 0; j < cnt; j++) {
        if (v[j] < -1 || v[j] >= i)
            return NODE_FAIL(&c, err, CCQ_ERR_FORMAT,
                             "input %lld is not an earlier node or the network input (-1)", (long long)v[j]);
        nd->in[j] = (int)v[j];
    }
    model_shape in = model_in_shape(m, i, 0);
    hsize_t d[H5IO_MAX_RANK];
    int rank = 0;

    switch (nd->op) {
    case MODEL_OP_CONV2D: {
        if ((st = load_window(&c, nd, in, 1, err))) return st;
        if ((st = h5io_dset_dims(f, c.obj, "weight", &rank, d, err))) return st;
        if (rank != 4 || d[0] < 1 || d[0] > MODEL_MAX_DIM)
            return NODE_FAIL(&c, err, CCQ_ERR_FORMAT, "%s", "weight must be [Cout,Cin,kh,kw]");
        d[1] = (hsize_t)in.c;
        d[2] = (hsize_t)nd->kernel[0];
        d[3] = (hsize_t)nd->kernel[1];
        nd->shape.c = (int)d[0];
        if ((st = read_floats(&c, "weight", 4, d, &nd->weight, err))) return st;
        nd->n_weight = (int64_t)d[0] * d[1] * d[2] * d[3];
        if (h5io_exists(f, c.obj, "bias")) {
            hsize_t bd[1] = {d[0]};
            if ((st = read_floats(&c, "bias", 1, bd, &nd->bias, err))) return st;
        }
        break;
    }
    case MODEL_OP_BATCHNORM: {
        const char *names[4] = {"gamma", "beta", "mean", "var"};
        float **dst[4] = {&nd->gamma, &nd->beta, &nd->mean, &nd->var};
        hsize_t bd[1] = {(hsize_t)in.c};
        if ((st = h5io_attr_floats_n(f, c.obj, "eps", &nd->eps, 1, err))) return st;
        if (!(nd->eps >= 0.0f) || !isfinite(nd->eps))
            return NODE_FAIL(&c, err, CCQ_ERR_FORMAT, "eps = %g must be finite and >= 0", (double)nd->eps);
        for (int k = 0; k < 4; k++)
            if ((st = read_floats(&c, names[k], 1, bd, dst[k], err))) return st;
        for (int k = 0; k < in.c; k++)
            if (!(nd->var[k] + nd->eps > 0.0f))
                return NODE_FAIL(&c, err, CCQ_ERR_FORMAT, "var + eps is not positive at channel %d", k);
        nd->shape = in;
        break;
    }
    case MODEL_OP_RELU:
        nd->shape = in;
        break;
    case MODEL_OP_MAXPOOL:
    case MODEL_OP_AVGPOOL:
        if ((st = load_window(&c, nd, in, 0, err))) return st;
        if (nd->op == MODEL_OP_AVGPOOL &&
            (st = read_int_attrs(&c, "count_include_pad", &nd->count_include_pad, 1, 0, 1, err)))
            return st;
        break;
    case MODEL_OP_GLOBALAVGPOOL:
        if (in.rank != 3) return NODE_FAIL(&c, err, CCQ_ERR_FORMAT, "%s", "needs a [C,H,W] input");
        nd->shape = (model_shape){3, in.c, 1, 1};
        break;
    case MODEL_OP_LINEAR: {
        if (in.rank != 1) return NODE_FAIL(&c, err, CCQ_ERR_FORMAT, "%s", "needs a flat [F] input (add a flatten)");
        if ((st = h5io_dset_dims(f, c.obj, "weight", &rank, d, err))) return st;
        if (rank != 2 || d[0] < 1 || d[0] > MODEL_MAX_DIM)
            return NODE_FAIL(&c, err, CCQ_ERR_FORMAT, "%s", "weight must be [out,in]");
        d[1] = (hsize_t)in.c;
        if ((st = read_floats(&c, "weight", 2, d, &nd->weight, err))) return st;
        nd->n_weight = (int64_t)d[0] * d[1];
        nd->shape = (model_shape){1, (int)d[0], 1, 1};
        if (h5io_exists(f, c.obj, "bias")) {
            hsize_t bd[1] = {d[0]};
            if ((st = read_floats(&c, "bias", 1, bd, &nd->bias, err))) return st;
        }
        break;
    }
    case MODEL_OP_FLATTEN:
        if (model_numel(in) > MODEL_MAX_DIM * 64)
            return NODE_FAIL(&c, err, CCQ_ERR_LIMIT, "%lld features is more than ccq accepts", (long long)model_numel(in));
        nd->shape = (model_shape){1, (int)model_numel(in), 1, 1};
        break;
    case MODEL_OP_ADD: {
        model_shape b = model_in_shape(m, i, 1);
        if (b.rank != in.rank || b.c != in.c || b.h != in.h || b.w != in.w) {
            char sa[64], sb[64];
            shape_str(sa, sizeof sa, in);
            shape_str(sb, sizeof sb, b);
            return NODE_FAIL(&c, err, CCQ_ERR_FORMAT, "adds tensors of different shapes %s and %s", sa, sb);
        }
        nd->shape = in;
        break;
    }
    default:
        CCQ_ASSERT(0);
    }

    if ((st = load_node_extras(m, &c, nd, in, err))) return st;

    if (model_numel(nd->shape) > MODEL_MAX_NUMEL)
        return NODE_FAIL(&c, err, CCQ_ERR_LIMIT, "output of %lld elements per image is more than ccq accepts",
                         (long long)model_numel(nd->shape));
    /* The stored shape must agree with the one the graph gives. */
    if ((st = h5io_attr_ints(f, c.obj, "shape", v, 3, &cnt, err))) return st;
    model_shape s = nd->shape;
    int ok = cnt == s.rank && v[0] == s.c && (s.rank == 1 || (v[1] == s.h && v[2] == s.w));
    if (!ok) {
        char have[96] = "[", want[64];
        for (int k = 0; k < cnt; k++)
            snprintf(have + strlen(have), sizeof have - strlen(have), "%s%lld", k ? "," : "", (long long)v[k]);
        strcat(have, "]");
        shape_str(want, sizeof want, s);
        return NODE_FAIL(&c, err, CCQ_ERR_FORMAT, "stored shape %s but the graph gives %s", have, want);
    }
    return CCQ_OK;
}

ccq_status model_load(model *m, const char *path, ccq_err *err)
{
    h5io_file f;
    char fmt[32];
    int64_t v[4];
    ccq_status st;
    memset(m, 0, sizeof *m);
    snprintf(m->path, sizeof m->path, "%s", path);
    if ((st = h5io_file_open(&f, path, err))) return st;
    if (!h5io_exists(&f, "/", NULL) || H5Aexists_by_name(f.id, "/", "format", H5P_DEFAULT) <= 0) {
        st = ccq_fail(err, CCQ_ERR_FORMAT, "%s: not a ccq model file (no format attribute)", path);
        goto fail;
    }
    if ((st = h5io_attr_str(&f, "/", "format", fmt, sizeof fmt, err))) goto fail;
    if (strcmp(fmt, MODEL_FORMAT) != 0) {
        st = ccq_fail(err, CCQ_ERR_FORMAT, "%s: not a ccq model file (format is '%s')", path, fmt);
        goto fail;
    }
    if ((st = h5io_attr_ints_n(&f, "/", "version", v, 1, err))) goto fail;
    if (v[0] != MODEL_VERSION) {
        st = ccq_fail(err, CCQ_ERR_FORMAT, "%s: model format version %lld, this ccq reads version %d", path,
                      (long long)v[0], MODEL_VERSION);
        goto fail;
    }
    if ((st = h5io_attr_str(&f, "/", "name", m->name, sizeof m->name, err))) goto fail;

    if ((st = h5io_attr_ints_n(&f, "/input", "shape", v, 3, err))) goto fail;
    for (int k = 0; k < 3; k++) {
        if (v[k] < 1 || v[k] > MODEL_MAX_DIM || (k == 0 && v[k] > MODEL_MAX_CHANNELS_IN)) {
            st = ccq_fail(err, CCQ_ERR_FORMAT, "%s: /input: shape [%lld,%lld,%lld] is out of range", path,
                          (long long)v[0], (long long)v[1], (long long)v[2]);
            goto fail;
        }
    }
    m->input = (model_shape){3, (int)v[0], (int)v[1], (int)v[2]};
    if ((st = h5io_attr_floats_n(&f, "/input", "mean", m->mean, m->input.c, err))) goto fail;
    if ((st = h5io_attr_floats_n(&f, "/input", "std", m->std, m->input.c, err))) goto fail;
    for (int k = 0; k < m->input.c; k++) {
        if (!isfinite(m->mean[k]) || !isfinite(m->std[k]) || !(m->std[k] > 0.0f)) {
            st = ccq_fail(err, CCQ_ERR_FORMAT, "%s: /input: mean/std of channel %d must be finite, std > 0", path, k);
            goto fail;
        }
    }

    if (H5Aexists_by_name(f.id, "/", "quantized", H5P_DEFAULT) > 0) {
        if ((st = h5io_attr_ints_n(&f, "/", "quantized", v, 1, err))) goto fail;
        m->quantized = v[0] != 0;
    }
    if (m->quantized) {
        if ((st = h5io_attr_ints_n(&f, "/", "abits", v, 1, err))) goto fail;
        if (v[0] != 8) {
            st = ccq_fail(err, CCQ_ERR_FORMAT, "%s: abits = %lld, ccq supports 8-bit activations", path, (long long)v[0]);
            goto fail;
        }
        m->abits = 8;
        if ((st = h5io_attr_floats_n(&f, "/input", "act_scale", &m->in_scale, 1, err))) goto fail;
        if ((st = h5io_attr_ints_n(&f, "/input", "act_zp", v, 1, err))) goto fail;
        if (!isfinite(m->in_scale) || !(m->in_scale > 0.0f) || v[0] < 0 || v[0] > 255) {
            st = ccq_fail(err, CCQ_ERR_FORMAT, "%s: /input: act_scale must be positive and act_zp in [0, 255]", path);
            goto fail;
        }
        m->in_zp = (int)v[0];
    }

    if ((st = h5io_attr_ints_n(&f, "/nodes", "count", v, 1, err))) goto fail;
    if (v[0] < 1 || v[0] > MODEL_MAX_NODES) {
        st = ccq_fail(err, CCQ_ERR_FORMAT, "%s: /nodes: count %lld is outside [1, %d]", path, (long long)v[0],
                      MODEL_MAX_NODES);
        goto fail;
    }
    m->n_nodes = (int)v[0];
    m->nodes = ccq_calloc((size_t)m->n_nodes, sizeof(model_node));
    for (int i = 0; i < m->n_nodes; i++)
        if ((st = load_node(m, &f, i, err))) goto fail;

    if ((st = h5io_attr_ints_n(&f, "/", "output", v, 1, err))) goto fail;
    if (v[0] < 0 || v[0] >= m->n_nodes || m->nodes[v[0]].shape.rank != 1) {
        st = ccq_fail(err, CCQ_ERR_FORMAT, "%s: output %lld is not a node with flat [classes] logits", path,
                      (long long)v[0]);
        goto fail;
    }
    m->output = (int)v[0];
    m->classes = m->nodes[m->output].shape.c;
    if (m->quantized && (m->nodes[m->output].op != MODEL_OP_LINEAR && m->nodes[m->output].op != MODEL_OP_CONV2D)) {
        st = ccq_fail(err, CCQ_ERR_FORMAT, "%s: a quantized model must end in a linear or conv2d node", path);
        goto fail;
    }
    if (m->quantized && (m->nodes[m->output].act_zp != 0 || m->nodes[m->output].relu)) {
        st = ccq_fail(err, CCQ_ERR_FORMAT, "%s: the logits node must have act_zp 0 and no relu", path);
        goto fail;
    }
    if (m->classes < 2) {
        st = ccq_fail(err, CCQ_ERR_FORMAT, "%s: the output has %d classes, need at least 2", path, m->classes);
        goto fail;
    }
    return h5io_file_close(&f, err);

fail:
    if (f.id >= 0) H5Fclose(f.id);
    model_free(m);
    return st;
}

void model_free(model *m)
{
    for (int i = 0; m->nodes && i < m->n_nodes; i++) {
        model_node *nd = &m->nodes[i];
        ccq_free(nd->weight);
        ccq_free(nd->bias);
        ccq_free(nd->gamma);
        ccq_free(nd->beta);
        ccq_free(nd->mean);
        ccq_free(nd->var);
        ccq_free(nd->levels);
        ccq_free(nd->wscale);
    }
    ccq_free(m->nodes);
    m->nodes = NULL;
    m->n_nodes = 0;
}

int64_t model_node_params(const model *m, int node)
{
    const model_node *nd = &m->nodes[node];
    switch (nd->op) {
    case MODEL_OP_CONV2D:
    case MODEL_OP_LINEAR:
        return nd->n_weight + (nd->bias ? nd->shape.c : 0);
    case MODEL_OP_BATCHNORM:
        return 4 * (int64_t)nd->shape.c;
    default:
        return 0;
    }
}

int64_t model_node_macs(const model *m, int node)
{
    const model_node *nd = &m->nodes[node];
    if (nd->op == MODEL_OP_CONV2D) return nd->n_weight * nd->shape.h * nd->shape.w;
    if (nd->op == MODEL_OP_LINEAR) return nd->n_weight;
    return 0;
}

int64_t model_params(const model *m)
{
    int64_t s = 0;
    for (int i = 0; i < m->n_nodes; i++) s += model_node_params(m, i);
    return s;
}

int64_t model_macs(const model *m)
{
    int64_t s = 0;
    for (int i = 0; i < m->n_nodes; i++) s += model_node_macs(m, i);
    return s;
}

static float *dup_floats(const float *p, int64_t n)
{
    if (!p) return NULL;
    float *q = ccq_malloc(sizeof(float) * (size_t)n);
    memcpy(q, p, sizeof(float) * (size_t)n);
    return q;
}

void model_copy(model *dst, const model *src)
{
    *dst = *src;
    dst->nodes = ccq_malloc(sizeof(model_node) * (size_t)src->n_nodes);
    for (int i = 0; i < src->n_nodes; i++) {
        const model_node *s = &src->nodes[i];
        model_node *d = &dst->nodes[i];
        *d = *s;
        const int64_t c = s->shape.c;
        d->weight = dup_floats(s->weight, s->n_weight);
        d->bias = dup_floats(s->bias, c);
        d->gamma = dup_floats(s->gamma, c);
        d->beta = dup_floats(s->beta, c);
        d->mean = dup_floats(s->mean, c);
        d->var = dup_floats(s->var, c);
        d->wscale = dup_floats(s->wscale, c);
        d->levels = NULL;
        if (s->levels) {
            d->levels = ccq_malloc((size_t)s->n_weight);
            memcpy(d->levels, s->levels, (size_t)s->n_weight);
        }
    }
}

static ccq_status save_node(const model *m, const h5io_file *f, int i, ccq_err *err)
{
    const model_node *nd = &m->nodes[i];
    char obj[64];
    ccq_status st;
    int32_t v[4];
    snprintf(obj, sizeof obj, "/nodes/%04d", i);
    if ((st = h5io_write_group(f, obj, err))) return st;
    if ((st = h5io_write_attr_str(f, obj, "op", model_op_name(nd->op), err))) return st;
    if ((st = h5io_write_attr_str(f, obj, "name", nd->name, err))) return st;
    for (int j = 0; j < nd->n_in; j++) v[j] = nd->in[j];
    if ((st = h5io_write_attr_ints(f, obj, "inputs", v, nd->n_in, 0, err))) return st;
    v[0] = nd->shape.c, v[1] = nd->shape.h, v[2] = nd->shape.w;
    if ((st = h5io_write_attr_ints(f, obj, "shape", v, nd->shape.rank, 0, err))) return st;
    if (nd->relu && (st = h5io_write_attr_ints(f, obj, "relu", &nd->relu, 1, 1, err))) return st;
    const int windowed = nd->op == MODEL_OP_CONV2D || nd->op == MODEL_OP_MAXPOOL || nd->op == MODEL_OP_AVGPOOL;
    if (windowed) {
        if ((st = h5io_write_attr_ints(f, obj, "kernel", nd->kernel, 2, 0, err))) return st;
        if ((st = h5io_write_attr_ints(f, obj, "stride", nd->stride, 2, 0, err))) return st;
        if ((st = h5io_write_attr_ints(f, obj, "pad", nd->pad, 4, 0, err))) return st;
    }
    if (nd->op == MODEL_OP_CONV2D && (st = h5io_write_attr_ints(f, obj, "dilation", nd->dilation, 2, 0, err)))
        return st;
    if ((nd->op == MODEL_OP_MAXPOOL || nd->op == MODEL_OP_AVGPOOL) &&
        (st = h5io_write_attr_ints(f, obj, "ceil_mode", &nd->ceil_mode, 1, 1, err)))
        return st;
    if (nd->op == MODEL_OP_AVGPOOL &&
        (st = h5io_write_attr_ints(f, obj, "count_include_pad", &nd->count_include_pad, 1, 1, err)))
        return st;
    hsize_t d[4] = {(hsize_t)nd->shape.c, 0, 0, 0};
    hsize_t c1[1] = {(hsize_t)nd->shape.c};
    if (nd->op == MODEL_OP_CONV2D || nd->op == MODEL_OP_LINEAR) {
        const model_shape in = model_in_shape(m, i, 0);
        int rank = nd->op == MODEL_OP_CONV2D ? 4 : 2;
        d[1] = (hsize_t)in.c;
        if (rank == 4) d[2] = (hsize_t)nd->kernel[0], d[3] = (hsize_t)nd->kernel[1];
        if ((st = h5io_write_dset(f, obj, "weight", H5T_IEEE_F32LE, H5T_NATIVE_FLOAT, rank, d, nd->weight, err)))
            return st;
        if (nd->bias &&
            (st = h5io_write_dset(f, obj, "bias", H5T_IEEE_F32LE, H5T_NATIVE_FLOAT, 1, c1, nd->bias, err)))
            return st;
        if (m->quantized) {
            if ((st = h5io_write_attr_ints(f, obj, "bits", &nd->bits, 1, 1, err))) return st;
            if ((st = h5io_write_dset(f, obj, "levels", H5T_STD_I8LE, H5T_NATIVE_INT8, rank, d, nd->levels, err)))
                return st;
            if ((st = h5io_write_dset(f, obj, "wscale", H5T_IEEE_F32LE, H5T_NATIVE_FLOAT, 1, c1, nd->wscale, err)))
                return st;
        }
    }
    if (nd->op == MODEL_OP_BATCHNORM) {
        const char *names[4] = {"gamma", "beta", "mean", "var"};
        const float *src[4] = {nd->gamma, nd->beta, nd->mean, nd->var};
        if ((st = h5io_write_attr_floats(f, obj, "eps", &nd->eps, 1, 1, err))) return st;
        for (int k = 0; k < 4; k++)
            if ((st = h5io_write_dset(f, obj, names[k], H5T_IEEE_F32LE, H5T_NATIVE_FLOAT, 1, c1, src[k], err)))
                return st;
    }
    if (m->quantized) {
        if ((st = h5io_write_attr_floats(f, obj, "act_scale", &nd->act_scale, 1, 1, err))) return st;
        if ((st = h5io_write_attr_ints(f, obj, "act_zp", &nd->act_zp, 1, 1, err))) return st;
    }
    return CCQ_OK;
}

ccq_status model_save(const model *m, const char *path, ccq_err *err)
{
    h5io_file f;
    ccq_status st = h5io_atomic_create(&f, path, err);
    if (st) return st;
    int32_t v[3] = {MODEL_VERSION, m->output, m->n_nodes};
    int32_t shape[3] = {m->input.c, m->input.h, m->input.w};
    if ((st = h5io_write_attr_str(&f, "/", "format", MODEL_FORMAT, err)) ||
        (st = h5io_write_attr_ints(&f, "/", "version", &v[0], 1, 1, err)) ||
        (st = h5io_write_attr_str(&f, "/", "name", m->name, err)) ||
        (st = h5io_write_attr_ints(&f, "/", "output", &v[1], 1, 1, err)) ||
        (st = h5io_write_group(&f, "/input", err)) ||
        (st = h5io_write_attr_ints(&f, "/input", "shape", shape, 3, 0, err)) ||
        (st = h5io_write_attr_floats(&f, "/input", "mean", m->mean, m->input.c, 0, err)) ||
        (st = h5io_write_attr_floats(&f, "/input", "std", m->std, m->input.c, 0, err)) ||
        (st = h5io_write_group(&f, "/nodes", err)) ||
        (st = h5io_write_attr_ints(&f, "/nodes", "count", &v[2], 1, 1, err)))
        goto fail;
    if (m->quantized) {
        int32_t q[2] = {1, m->abits}, zp = m->in_zp;
        if ((st = h5io_write_attr_ints(&f, "/", "quantized", &q[0], 1, 1, err)) ||
            (st = h5io_write_attr_ints(&f, "/", "abits", &q[1], 1, 1, err)) ||
            (st = h5io_write_attr_floats(&f, "/input", "act_scale", &m->in_scale, 1, 1, err)) ||
            (st = h5io_write_attr_ints(&f, "/input", "act_zp", &zp, 1, 1, err)))
            goto fail;
    }
    for (int i = 0; i < m->n_nodes; i++)
        if ((st = save_node(m, &f, i, err))) goto fail;
    return h5io_atomic_commit(&f, path, err);
fail:
    h5io_atomic_abort(&f);
    return st;
}
