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
#include "ccq/op.h"

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

int model_qmax(int bits) { return (1 << (bits - 1)) - 1; }

int model_node_wmax(const model_node *nd)
{
    if (!nd->codebook) return model_qmax(nd->bits);
    const int n = model_ncodes(nd);
    int mx = 0;
    for (int64_t k = 0; k < (int64_t)nd->shape.c * n; k++) {
        const int a = nd->codebook[k] < 0 ? -nd->codebook[k] : nd->codebook[k];
        if (a > mx) mx = a;
    }
    return mx;
}

int model_sparse_code_bits(int bits) { return bits == 2 ? 1 : bits; }

int64_t model_node_sparse_bytes(const model_node *nd)
{
    int64_t nnz = 0;
    for (int64_t w = 0; w < nd->n_weight; w++) nnz += nd->levels[w] != 0;
    return (nd->n_weight + 7) / 8 + (nnz * model_sparse_code_bits(nd->bits) + 7) / 8 + 4 * (int64_t)nd->shape.c;
}

int model_node_deployed_sparse(const model_node *nd)
{
    return nd->levels && nd->sparse && !nd->codebook && model_node_sparse_bytes(nd) < (nd->n_weight * nd->bits + 7) / 8;
}

int64_t model_node_weight_bytes(const model_node *nd)
{
    if (!nd->levels) return 0;
    const int64_t packed = (nd->n_weight * nd->bits + 7) / 8;
    if (nd->sparse && !nd->codebook) {
        const int64_t sparse = model_node_sparse_bytes(nd);
        if (sparse < packed) return sparse;
    }
    return packed + (nd->codebook ? (int64_t)nd->shape.c * model_ncodes(nd) : 0);
}

int64_t model_deployed_bytes(const model *m)
{
    int64_t total = 0;
    for (int i = 0; i < m->n_nodes; i++) {
        const model_node *nd = &m->nodes[i];
        total += 8;
        if (nd->levels) total += model_node_weight_bytes(nd) + 8 * (int64_t)nd->shape.c;
    }
    return total;
}

int model_node_prunable(const model *m, int i)
{
    return m->quantized && i != m->output && (op_get(m->nodes[i].op)->flags & OP_CALIBRATED);
}

int model_code_of(const model_node *nd, int o, int v)
{
    const int n = model_ncodes(nd);
    const int8_t *cb = nd->codebook + (int64_t)o * n;
    for (int c = 0; c < n; c++)
        if (cb[c] == v) return c;
    return -1;
}

/* Optional attributes of every op: the fused relu flag and clip, and the
 * quantization of a quantized model (the output tensor's scale and zero point). */
static ccq_status load_node_extras(const model *m, const op_io *io, ccq_err *err)
{
    model_node *nd = io->nd;
    const op_traits *ot = op_get(nd->op);
    ccq_status st;
    const h5io_file *f = io->f;
    nd->relu = 0;
    int has_relu, has_clip;
    if ((st = h5io_has_attr(f, io->obj, "relu", &has_relu, err)) ||
        (st = h5io_has_attr(f, io->obj, "clip", &has_clip, err)))
        return st;
    if (has_relu) {
        if ((st = op_read_ints(io, "relu", &nd->relu, 1, 0, 1, err))) return st;
        if (nd->relu && !(ot->flags & OP_FUSES))
            return OP_FAIL(io, err, CCQ_ERR_FORMAT, "%s", "relu = 1 on an op that cannot fuse it");
    }
    if (nd->op != MODEL_OP_CLIP && has_clip) {
        if (!(ot->flags & OP_FUSES))
            return OP_FAIL(io, err, CCQ_ERR_FORMAT, "%s", "a fused clip on an op that cannot fuse it");
        if ((st = op_read_attr_floats(io, "clip", nd->clip, 2, err))) return st;
        if (!(nd->clip[0] <= nd->clip[1]))
            return OP_FAIL(io, err, CCQ_ERR_FORMAT, "clip [%g, %g] is empty", (double)nd->clip[0], (double)nd->clip[1]);
        nd->has_clip = 1;
    }
    int has_thresh;
    if ((st = h5io_has_attr(f, io->obj, "act_thresh", &has_thresh, err))) return st;
    if (has_thresh && !m->quantized)
        return OP_FAIL(io, err, CCQ_ERR_FORMAT, "%s", "act_thresh in a float model (it prunes quantized activations)");
    if (!m->quantized) return CCQ_OK;
    if ((st = h5io_attr_floats_n(f, io->obj, "act_scale", &nd->act_scale, 1, err))) return st;
    if ((st = op_read_ints(io, "act_zp", &nd->act_zp, 1, 0, 255, err))) return st;
    if (!isfinite(nd->act_scale) || !(nd->act_scale > 0.0f))
        return OP_FAIL(io, err, CCQ_ERR_FORMAT, "act_scale = %g must be finite and positive", (double)nd->act_scale);
    if (!(ot->flags & OP_CALIBRATED)) {
        const int src = nd->in[0];
        const float s_in = src < 0 ? m->in_scale : m->nodes[src].act_scale;
        const int z_in = src < 0 ? m->in_zp : m->nodes[src].act_zp;
        if (s_in != nd->act_scale || z_in != nd->act_zp)
            return OP_FAIL(io, err, CCQ_ERR_FORMAT, "%s", "act_scale/act_zp must equal its input's");
    }
    if (has_thresh) {
        if ((st = op_read_ints(io, "act_thresh", &nd->act_thresh, 1, 0, 255, err))) return st;
        if (nd->act_thresh && !(ot->flags & OP_CALIBRATED))
            return OP_FAIL(io, err, CCQ_ERR_FORMAT, "%s",
                           "act_thresh on an op whose output keeps its input's scale (prune the producer)");
    }
    return CCQ_OK;
}

static ccq_status load_node(model *m, const h5io_file *f, int i, ccq_err *err)
{
    model_node *nd = &m->nodes[i];
    op_io io = {.f = f, .nd = nd};
    char op[32];
    int64_t v[MODEL_MAX_IN];
    int cnt = 0;
    ccq_status st;
    snprintf(io.obj, sizeof io.obj, "/nodes/%04d", i);
    snprintf(nd->name, sizeof nd->name, "?");
    if ((st = h5io_attr_str(f, io.obj, "op", op, sizeof op, err))) return st;
    nd->op = op_by_name(op);
    if (nd->op == MODEL_OP_COUNT)
        return ccq_fail(err, CCQ_ERR_FORMAT, "%s: %s: unknown op '%s'", f->path, io.obj, op);
    const op_traits *ot = op_get(nd->op);
    if ((st = h5io_attr_str(f, io.obj, "name", nd->name, sizeof nd->name, err))) return st;
    if ((st = h5io_attr_ints(f, io.obj, "inputs", v, MODEL_MAX_IN, &cnt, err))) return st;
    if (cnt < ot->min_in || cnt > ot->max_in) {
        if (ot->min_in == ot->max_in)
            return OP_FAIL(&io, err, CCQ_ERR_FORMAT, "has %d inputs, expected %d", cnt, ot->min_in);
        return OP_FAIL(&io, err, CCQ_ERR_FORMAT, "has %d inputs, expected %d to %d", cnt, ot->min_in, ot->max_in);
    }
    nd->n_in = cnt;
    for (int j = 0; j < cnt; j++) {
        if (v[j] < -1 || v[j] >= i)
            return OP_FAIL(&io, err, CCQ_ERR_FORMAT, "input %lld is not an earlier node or the network input (-1)",
                           (long long)v[j]);
        nd->in[j] = (int)v[j];
    }
    nd->groups = 1;
    if ((st = ot->load(&io, m, i, err))) return st;
    if ((st = load_node_extras(m, &io, err))) return st;

    if (model_numel(nd->shape) > MODEL_MAX_NUMEL)
        return OP_FAIL(&io, err, CCQ_ERR_LIMIT, "output of %lld elements per image is more than ccq accepts",
                       (long long)model_numel(nd->shape));
    /* The stored shape must agree with the one the graph gives. */
    if ((st = h5io_attr_ints(f, io.obj, "shape", v, 3, &cnt, err))) return st;
    model_shape s = nd->shape;
    int ok = cnt == s.rank && v[0] == s.c && (s.rank == 1 || (v[1] == s.h && v[2] == s.w));
    if (!ok) {
        char have[96] = "[", want[64];
        for (int k = 0; k < cnt; k++)
            snprintf(have + strlen(have), sizeof have - strlen(have), "%s%lld", k ? "," : "", (long long)v[k]);
        strcat(have, "]");
        shape_str(want, sizeof want, s);
        return OP_FAIL(&io, err, CCQ_ERR_FORMAT, "stored shape %s but the graph gives %s", have, want);
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

    int has_q;
    if ((st = h5io_has_attr(&f, "/", "quantized", &has_q, err))) goto fail;
    if (has_q) {
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
    if (m->quantized && (m->nodes[m->output].act_zp != 0 || m->nodes[m->output].relu || m->nodes[m->output].act_thresh)) {
        st = ccq_fail(err, CCQ_ERR_FORMAT, "%s: the logits node must have act_zp 0, no relu and no act_thresh", path);
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
        ccq_free(nd->codebook);
        ccq_free(nd->table);
    }
    ccq_free(m->nodes);
    m->nodes = NULL;
    m->n_nodes = 0;
}

int64_t model_node_params(const model *m, int node)
{
    const model_node *nd = &m->nodes[node];
    if (op_get(nd->op)->flags & OP_WEIGHTED) return nd->n_weight + (nd->bias ? nd->shape.c : 0);
    if (nd->op == MODEL_OP_BATCHNORM) return 4 * (int64_t)nd->shape.c;
    return 0;
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
        d->table = NULL;
        d->codebook = NULL;
        if (s->codebook) {
            const size_t n = (size_t)c * (size_t)model_ncodes(s);
            d->codebook = ccq_malloc(n);
            memcpy(d->codebook, s->codebook, n);
        }
        if (s->table) {
            d->table = ccq_malloc(256);
            memcpy(d->table, s->table, 256);
        }
        if (s->levels) {
            d->levels = ccq_malloc((size_t)s->n_weight);
            memcpy(d->levels, s->levels, (size_t)s->n_weight);
        }
    }
}

static ccq_status save_node(const model *m, const h5io_file *f, int i, ccq_err *err)
{
    const model_node *nd = &m->nodes[i];
    op_io io = {.f = f, .nd = (model_node *)nd};
    ccq_status st;
    int32_t v[MODEL_MAX_IN];
    snprintf(io.obj, sizeof io.obj, "/nodes/%04d", i);
    const char *obj = io.obj;
    if ((st = h5io_write_group(f, obj, err))) return st;
    if ((st = h5io_write_attr_str(f, obj, "op", model_op_name(nd->op), err))) return st;
    if ((st = h5io_write_attr_str(f, obj, "name", nd->name, err))) return st;
    for (int j = 0; j < nd->n_in; j++) v[j] = nd->in[j];
    if ((st = h5io_write_attr_ints(f, obj, "inputs", v, nd->n_in, 0, err))) return st;
    v[0] = nd->shape.c, v[1] = nd->shape.h, v[2] = nd->shape.w;
    if ((st = h5io_write_attr_ints(f, obj, "shape", v, nd->shape.rank, 0, err))) return st;
    if (nd->relu && (st = h5io_write_attr_ints(f, obj, "relu", &nd->relu, 1, 1, err))) return st;
    if (nd->has_clip && nd->op != MODEL_OP_CLIP &&
        (st = h5io_write_attr_floats(f, obj, "clip", nd->clip, 2, 0, err)))
        return st;
    if ((st = op_get(nd->op)->save(&io, m, i, err))) return st;
    if (m->quantized) {
        if ((st = h5io_write_attr_floats(f, obj, "act_scale", &nd->act_scale, 1, 1, err))) return st;
        if ((st = h5io_write_attr_ints(f, obj, "act_zp", &nd->act_zp, 1, 1, err))) return st;
        if (nd->act_thresh && (st = h5io_write_attr_ints(f, obj, "act_thresh", &nd->act_thresh, 1, 1, err))) return st;
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
