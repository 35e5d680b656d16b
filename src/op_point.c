/*
 * op_point.c: ops of one input computed element by element: relu, clip,
 * act (sigmoid, hard-sigmoid, hard-swish, tanh, leaky ReLU, ELU, GELU: one
 * 256-entry table on the uint8 level in the integer engine, exact by
 * construction) and batchnorm (standalone, when it could not be folded).
 * A ReLU or Clip that follows a conv2d, linear, batchnorm or add is fused
 * into it by quant_fold and becomes its output clamp (op_out_clamp).
 */
#include <math.h>
#include <stdio.h>
#include <string.h>

#include "ccq/fnet.h"
#include "ccq/op.h"

static ccq_status same_load(const op_io *io, model *m, int i, ccq_err *err)
{
    (void)err;
    io->nd->shape = model_in_shape(m, i, 0);
    return CCQ_OK;
}

static ccq_status no_save(const op_io *io, const model *m, int i, ccq_err *err)
{
    (void)io, (void)m, (void)i, (void)err;
    return CCQ_OK;
}

/* ---- relu --------------------------------------------------------------------- */

static void relu_ffwd(const model *m, int i, const float *const *x, float *y, float *scratch)
{
    (void)scratch;
    fnet_relu(x[0], y, model_numel(m->nodes[i].shape));
}

static void relu_qfwd(qnet *q, int i, const uint8_t *const *xs, uint8_t *y, int n)
{
    const qnet_node *t = &q->nodes[i];
    const uint8_t *x = xs[0];
    const int64_t ny = (int64_t)n * t->oc * t->oh * t->ow;
    for (int64_t k = 0; k < ny; k++) y[k] = x[k] > t->zp_in ? x[k] : (uint8_t)t->zp_in;
}

static const char k_relu_code[] =
    "/* relu: levels below the zero point (real zero) become it. */\n"
    "static void cq_relu(const uint8_t *x, uint8_t *y, long n, int zp)\n"
    "{\n"
    "    long k;\n"
    "    for (k = 0; k < n; k++) y[k] = x[k] > zp ? x[k] : (uint8_t)zp;\n"
    "}\n"
    "\n";

static ccq_status relu_cexport(cexport_ctx *x, const qnet *q, int i, ccq_err *err)
{
    (void)err;
    const qnet_node *t = &q->nodes[i];
    cexport_code(x, MODEL_OP_RELU, k_relu_code);
    cexport_call(x, "cq_relu(%s, %s, %ldL, %d);", cexport_in(x, i, 0), cexport_out(x, i), (long)t->oc * t->oh * t->ow,
                 t->zp_in);
    return CCQ_OK;
}

/* ---- ONNX export ------------------------------------------------------------------ */

/* Relu, Clip (absent bounds left out) and BatchNormalization on the dequantized input, quantized at
 * the node's scale; act as Cast(uint8 -> int32) and Gather on the model's uint8 table: the
 * engine's own map from input to output level, exactly. The Gather's doc_string names the
 * function and the output's quantization ("ccq:act FN ALPHA BETA SCALE ZP") for onnx2ccq: an act
 * read only by another act has no DequantizeLinear to say it. */
static ccq_status point_onnx(onnxexport_ctx *x, const qnet *q, int i, ccq_err *err)
{
    (void)err;
    const model_node *nd = &q->m->nodes[i];
    char out[ONNXEXPORT_NAME_MAX], a[ONNXEXPORT_NAME_MAX] = "", b[ONNXEXPORT_NAME_MAX] = "";
    char c[ONNXEXPORT_NAME_MAX], d[ONNXEXPORT_NAME_MAX];
    if (nd->op == MODEL_OP_ACT) {
        char doc[96];
        const int64_t n = 256;
        ONNXEXPORT_NAME(a, i, "table"), ONNXEXPORT_NAME(b, i, "index"), ONNXEXPORT_NAME(out, i, "q");
        onnxexport_const(x, a, ONNXEXPORT_UINT8, &n, 1, nd->table, NULL);
        const onnxexport_attr to = ONNXEXPORT_AINT("to", ONNXEXPORT_INT32);
        const char *ci[1] = {onnxexport_in_q(x, i, 0)};
        onnxexport_node(x, "Cast", NULL, ci, 1, b, &to, 1, NULL);
        snprintf(doc, sizeof doc, "ccq:act %s %.9g %.9g %.9g %d", model_act_name(nd->fn), (double)nd->act_alpha,
                 (double)nd->act_beta, (double)nd->act_scale, nd->act_zp);
        const char *gi[2] = {a, b};
        onnxexport_node(x, "Gather", onnxexport_node_name(x, i), gi, 2, out, NULL, 0, doc);
        onnxexport_result_q(x, i, out);
        return CCQ_OK;
    }
    snprintf(out, sizeof out, "%s", onnxexport_out(x, i));
    const char *ins[5] = {onnxexport_in(x, i, 0), a, b, c, d};
    if (nd->op == MODEL_OP_RELU) {
        onnxexport_node(x, "Relu", onnxexport_node_name(x, i), ins, 1, out, NULL, 0, NULL);
    } else if (nd->op == MODEL_OP_CLIP) {
        if (nd->clip[0] > -3.0e38f) ONNXEXPORT_NAME(a, i, "min"), onnxexport_const(x, a, ONNXEXPORT_FLOAT, NULL, 0, &nd->clip[0], NULL);
        if (nd->clip[1] < 3.0e38f) ONNXEXPORT_NAME(b, i, "max"), onnxexport_const(x, b, ONNXEXPORT_FLOAT, NULL, 0, &nd->clip[1], NULL);
        onnxexport_node(x, "Clip", onnxexport_node_name(x, i), ins, b[0] ? 3 : a[0] ? 2 : 1, out, NULL, 0, NULL);
    } else {
        const int64_t n = nd->shape.c;
        const float *v[4] = {nd->gamma, nd->beta, nd->mean, nd->var};
        char *nm[4] = {a, b, c, d};
        static const char *const sfx[4] = {"gamma", "beta", "mean", "var"};
        for (int k = 0; k < 4; k++) {
            snprintf(nm[k], ONNXEXPORT_NAME_MAX, "n%d_%s", i, sfx[k]);
            onnxexport_const(x, nm[k], ONNXEXPORT_FLOAT, &n, 1, v[k], NULL);
        }
        const onnxexport_attr eps = ONNXEXPORT_AFLOAT("epsilon", nd->eps);
        onnxexport_node(x, "BatchNormalization", onnxexport_node_name(x, i), ins, 5, out, &eps, 1, NULL);
    }
    onnxexport_result(x, i, out);
    return CCQ_OK;
}

const op_traits op_relu = {
    .name = "relu", .min_in = 1, .max_in = 1, .load = same_load, .save = no_save,
    .ffwd = relu_ffwd, .qfwd = relu_qfwd, .cexport = relu_cexport, .onnx = point_onnx,
};

/* ---- clip --------------------------------------------------------------------- */

static ccq_status clip_load(const op_io *io, model *m, int i, ccq_err *err)
{
    model_node *nd = io->nd;
    ccq_status st;
    if ((st = op_read_attr_floats(io, "min", &nd->clip[0], 1, err))) return st;
    if ((st = op_read_attr_floats(io, "max", &nd->clip[1], 1, err))) return st;
    if (!(nd->clip[0] <= nd->clip[1]))
        return OP_FAIL(io, err, CCQ_ERR_FORMAT, "min = %g is above max = %g", (double)nd->clip[0], (double)nd->clip[1]);
    nd->has_clip = 1;
    return same_load(io, m, i, err);
}

static ccq_status clip_save(const op_io *io, const model *m, int i, ccq_err *err)
{
    (void)m, (void)i;
    ccq_status st = h5io_write_attr_floats(io->f, io->obj, "min", &io->nd->clip[0], 1, 1, err);
    return st ? st : h5io_write_attr_floats(io->f, io->obj, "max", &io->nd->clip[1], 1, 1, err);
}

static void clip_ffwd(const model *m, int i, const float *const *x, float *y, float *scratch)
{
    (void)scratch;
    const model_node *nd = &m->nodes[i];
    const int64_t n = model_numel(nd->shape);
    memcpy(y, x[0], sizeof(float) * (size_t)n);
    op_clip_float(y, n, nd->clip[0], nd->clip[1]);
}

static void clip_qfwd(qnet *q, int i, const uint8_t *const *xs, uint8_t *y, int n)
{
    /* the clamp [lo, hi] is the clip's bounds on its input's grid (op_out_clamp) */
    const qnet_node *t = &q->nodes[i];
    const int64_t ny = (int64_t)n * t->oc * t->oh * t->ow;
    for (int64_t k = 0; k < ny; k++) y[k] = op_clamp_u8(xs[0][k], t->lo, t->hi);
}

static const char k_clip_code[] =
    "/* clip: the bounds on the input's grid. */\n"
    "static void cq_clip(const uint8_t *x, uint8_t *y, long n, int32_t lo, int32_t hi)\n"
    "{\n"
    "    long k;\n"
    "    for (k = 0; k < n; k++) y[k] = cq_clamp(x[k], lo, hi);\n"
    "}\n"
    "\n";

static ccq_status clip_cexport(cexport_ctx *x, const qnet *q, int i, ccq_err *err)
{
    (void)err;
    const qnet_node *t = &q->nodes[i];
    cexport_need(x, CEXPORT_RT_CLAMP);
    cexport_code(x, MODEL_OP_CLIP, k_clip_code);
    cexport_call(x, "cq_clip(%s, %s, %ldL, %d, %d);", cexport_in(x, i, 0), cexport_out(x, i), (long)t->oc * t->oh * t->ow,
                 t->lo, t->hi);
    return CCQ_OK;
}

const op_traits op_clip = {
    .name = "clip", .min_in = 1, .max_in = 1, .load = clip_load, .save = clip_save,
    .ffwd = clip_ffwd, .qfwd = clip_qfwd, .cexport = clip_cexport, .onnx = point_onnx,
};

/* ---- act ---------------------------------------------------------------------- */

static const char *const k_act_names[MODEL_ACT_COUNT] = {
    [MODEL_ACT_SIGMOID] = "sigmoid",     [MODEL_ACT_HARDSIGMOID] = "hardsigmoid",
    [MODEL_ACT_HARDSWISH] = "hardswish", [MODEL_ACT_TANH] = "tanh",
    [MODEL_ACT_LEAKYRELU] = "leakyrelu", [MODEL_ACT_ELU] = "elu",
    [MODEL_ACT_GELU] = "gelu",           [MODEL_ACT_GELU_TANH] = "gelu_tanh",
};

const char *model_act_name(model_act fn) { return fn >= 0 && fn < MODEL_ACT_COUNT ? k_act_names[fn] : "?"; }

/* The function in double (ONNX's definitions). */
static double act_eval(model_act fn, double a, double b, double x)
{
    switch (fn) {
    case MODEL_ACT_SIGMOID: return 1.0 / (1.0 + exp(-x));
    case MODEL_ACT_HARDSIGMOID: return fmax(0.0, fmin(1.0, a * x + b));
    case MODEL_ACT_HARDSWISH: return x * fmax(0.0, fmin(1.0, x / 6.0 + 0.5));
    case MODEL_ACT_TANH: return tanh(x);
    case MODEL_ACT_LEAKYRELU: return x >= 0 ? x : a * x;
    case MODEL_ACT_ELU: return x > 0 ? x : a * (exp(x) - 1.0);
    case MODEL_ACT_GELU: return 0.5 * x * (1.0 + erf(x / sqrt(2.0)));
    case MODEL_ACT_GELU_TANH: return 0.5 * x * (1.0 + tanh(sqrt(2.0 / 3.14159265358979323846) * (x + 0.044715 * x * x * x)));
    default: CCQ_ASSERT(0);
    }
    return 0;
}

static ccq_status act_load(const op_io *io, model *m, int i, ccq_err *err)
{
    model_node *nd = io->nd;
    char s[32];
    ccq_status st;
    if ((st = h5io_attr_str(io->f, io->obj, "fn", s, sizeof s, err))) return st;
    nd->fn = MODEL_ACT_COUNT;
    for (int k = 0; k < MODEL_ACT_COUNT; k++)
        if (strcmp(s, k_act_names[k]) == 0) nd->fn = (model_act)k;
    if (nd->fn == MODEL_ACT_COUNT) return OP_FAIL(io, err, CCQ_ERR_FORMAT, "unknown function fn = '%s'", s);
    /* ONNX's defaults where the file leaves them out */
    nd->act_alpha = nd->fn == MODEL_ACT_HARDSIGMOID ? 0.2f : nd->fn == MODEL_ACT_LEAKYRELU ? 0.01f : 1.0f;
    nd->act_beta = 0.5f;
    if (H5Aexists_by_name(io->f->id, io->obj, "alpha", H5P_DEFAULT) > 0 &&
        (st = op_read_attr_floats(io, "alpha", &nd->act_alpha, 1, err)))
        return st;
    if (H5Aexists_by_name(io->f->id, io->obj, "beta", H5P_DEFAULT) > 0 &&
        (st = op_read_attr_floats(io, "beta", &nd->act_beta, 1, err)))
        return st;
    if ((st = same_load(io, m, i, err))) return st;
    if (!m->quantized) return CCQ_OK;
    hsize_t d[1] = {256};
    nd->table = ccq_malloc(256);
    return h5io_dset_read(io->f, io->obj, "table", H5T_NATIVE_UINT8, 1, d, -1, nd->table, err);
}

static ccq_status act_save(const op_io *io, const model *m, int i, ccq_err *err)
{
    (void)i;
    const model_node *nd = io->nd;
    ccq_status st;
    if ((st = h5io_write_attr_str(io->f, io->obj, "fn", k_act_names[nd->fn], err)) ||
        (st = h5io_write_attr_floats(io->f, io->obj, "alpha", &nd->act_alpha, 1, 1, err)) ||
        (st = h5io_write_attr_floats(io->f, io->obj, "beta", &nd->act_beta, 1, 1, err)))
        return st;
    if (!m->quantized) return CCQ_OK;
    hsize_t d[1] = {256};
    return h5io_write_dset(io->f, io->obj, "table", H5T_STD_U8LE, H5T_NATIVE_UINT8, 1, d, nd->table, err);
}

static void act_ffwd(const model *m, int i, const float *const *x, float *y, float *scratch)
{
    (void)scratch;
    const model_node *nd = &m->nodes[i];
    const int64_t n = model_numel(nd->shape);
    for (int64_t k = 0; k < n; k++) y[k] = (float)act_eval(nd->fn, nd->act_alpha, nd->act_beta, x[0][k]);
}

/* table[q] = clamp(zo + round(f(s_in (q - z_in)) / s_out), 0, 255), once, in double. */
static ccq_status act_qprep(model *m, int i, ccq_err *err)
{
    (void)err;
    model_node *nd = &m->nodes[i];
    const double s_in = op_in_scale(m, nd->in[0]), s_out = nd->act_scale;
    const int z_in = op_in_zp(m, nd->in[0]);
    if (!nd->table) nd->table = ccq_malloc(256);
    for (int q = 0; q < 256; q++) {
        const double v = act_eval(nd->fn, nd->act_alpha, nd->act_beta, s_in * (q - z_in)) / s_out + nd->act_zp;
        nd->table[q] = v <= 0 ? 0 : v >= 255 ? 255 : (uint8_t)llround(v);
    }
    return CCQ_OK;
}

static void act_qfwd(qnet *q, int i, const uint8_t *const *xs, uint8_t *y, int n)
{
    const uint8_t *tab = q->m->nodes[i].table;
    const qnet_node *t = &q->nodes[i];
    const int64_t ny = (int64_t)n * t->oc * t->oh * t->ow;
    for (int64_t k = 0; k < ny; k++) y[k] = tab[xs[0][k]];
}

static const char k_act_code[] =
    "/* act: the model file's 256-entry table. */\n"
    "static void cq_act(const uint8_t *x, uint8_t *y, long n, const uint8_t *table)\n"
    "{\n"
    "    long k;\n"
    "    for (k = 0; k < n; k++) y[k] = table[x[k]];\n"
    "}\n"
    "\n";

static ccq_status act_cexport(cexport_ctx *x, const qnet *q, int i, ccq_err *err)
{
    (void)err;
    const qnet_node *t = &q->nodes[i];
    cexport_code(x, MODEL_OP_ACT, k_act_code);
    cexport_array(x, i, "t", q->m->nodes[i].table, 256, 1, 1, CEXPORT_CONST);
    cexport_call(x, "cq_act(%s, %s, %ldL, n%d_t);", cexport_in(x, i, 0), cexport_out(x, i), (long)t->oc * t->oh * t->ow, i);
    return CCQ_OK;
}

const op_traits op_act = {
    .name = "act", .min_in = 1, .max_in = 1, .flags = OP_CALIBRATED, .load = act_load, .save = act_save,
    .ffwd = act_ffwd, .qprep = act_qprep, .qfwd = act_qfwd, .cexport = act_cexport, .onnx = point_onnx,
};

/* ---- batchnorm ---------------------------------------------------------------- */

static ccq_status bn_load(const op_io *io, model *m, int i, ccq_err *err)
{
    model_node *nd = io->nd;
    const model_shape in = model_in_shape(m, i, 0);
    const char *names[4] = {"gamma", "beta", "mean", "var"};
    float **dst[4] = {&nd->gamma, &nd->beta, &nd->mean, &nd->var};
    hsize_t bd[1] = {(hsize_t)in.c};
    ccq_status st;
    if ((st = h5io_attr_floats_n(io->f, io->obj, "eps", &nd->eps, 1, err))) return st;
    if (!(nd->eps >= 0.0f) || !isfinite(nd->eps))
        return OP_FAIL(io, err, CCQ_ERR_FORMAT, "eps = %g must be finite and >= 0", (double)nd->eps);
    for (int k = 0; k < 4; k++)
        if ((st = op_read_floats(io, names[k], 1, bd, dst[k], err))) return st;
    for (int k = 0; k < in.c; k++)
        if (!(nd->var[k] + nd->eps > 0.0f))
            return OP_FAIL(io, err, CCQ_ERR_FORMAT, "var + eps is not positive at channel %d", k);
    nd->shape = in;
    return CCQ_OK;
}

static ccq_status bn_save(const op_io *io, const model *m, int i, ccq_err *err)
{
    (void)m, (void)i;
    const model_node *nd = io->nd;
    const char *names[4] = {"gamma", "beta", "mean", "var"};
    const float *src[4] = {nd->gamma, nd->beta, nd->mean, nd->var};
    hsize_t c1[1] = {(hsize_t)nd->shape.c};
    ccq_status st;
    if ((st = h5io_write_attr_floats(io->f, io->obj, "eps", &nd->eps, 1, 1, err))) return st;
    for (int k = 0; k < 4; k++)
        if ((st = h5io_write_dset(io->f, io->obj, names[k], H5T_IEEE_F32LE, H5T_NATIVE_FLOAT, 1, c1, src[k], err)))
            return st;
    return CCQ_OK;
}

static void bn_ffwd(const model *m, int i, const float *const *x, float *y, float *scratch)
{
    (void)scratch;
    fnet_batchnorm(&m->nodes[i], x[0], y);
}

static ccq_status bn_qinit(qnet *q, int i, ccq_err *err)
{
    const model *m = q->m;
    const model_node *nd = &m->nodes[i];
    qnet_node *t = &q->nodes[i];
    const double s_in = op_in_scale(m, nd->in[0]), s_out = nd->act_scale;
    double mx = 1e-30;
    for (int c = 0; c < t->oc; c++)
        mx = fmax(mx, fabs(nd->gamma[c] / sqrt((double)nd->var[c] + nd->eps) * s_in / s_out));
    if (op_ratio_shift(mx, &t->csh))
        return ccq_fail(err, CCQ_ERR_LIMIT, "%s: node %d (%s): batchnorm scale out of range", m->path, i, nd->name);
    t->cm = ccq_malloc(sizeof(int32_t) * (size_t)t->oc);
    t->cb = ccq_malloc(sizeof(int64_t) * (size_t)t->oc);
    for (int c = 0; c < t->oc; c++) {
        const double a = nd->gamma[c] / sqrt((double)nd->var[c] + nd->eps);
        double b = (nd->beta[c] - nd->mean[c] * a) / s_out; /* in output levels */
        b = b > 16777216.0 ? 16777216.0 : b < -16777216.0 ? -16777216.0 : b; /* saturates anyway */
        t->cm[c] = (int32_t)llround(ldexp(a * s_in / s_out, t->csh));
        t->cb[c] = llround(ldexp(b, t->csh));
    }
    return CCQ_OK;
}

static void bn_qfwd(qnet *q, int i, const uint8_t *const *xs, uint8_t *y, int n)
{
    const qnet_node *t = &q->nodes[i];
    const uint8_t *x = xs[0];
    const int64_t ny = (int64_t)n * t->oc * t->oh * t->ow;
    const int c_ = t->oc;
    for (int64_t k = 0; k < ny; k++) {
        const int c = (int)(k % c_);
        const int64_t v = (int64_t)(x[k] - t->zp_in) * t->cm[c] + t->cb[c];
        y[k] = op_clamp_u8(t->zp_out + op_rshift_round(v, t->csh), t->lo, t->hi);
    }
}

static const char k_bn_code[] =
    "/* standalone batchnorm: zp_out + rshift((q - zp_in) cm[c] + cb[c], csh), clamped; channels last. */\n"
    "static void cq_bn(const uint8_t *x, uint8_t *y, long n, int C, int32_t zp_in, int32_t zp_out, int32_t lo, int32_t hi,\n"
    "                  const int32_t *cm, const int64_t *cb, int csh)\n"
    "{\n"
    "    long k;\n"
    "    for (k = 0; k < n; k++) {\n"
    "        const int c = (int)(k % C);\n"
    "        const int64_t v = (int64_t)(x[k] - zp_in) * cm[c] + cb[c];\n"
    "        y[k] = cq_clamp(zp_out + cq_rshift(v, csh), lo, hi);\n"
    "    }\n"
    "}\n"
    "\n";

static ccq_status bn_cexport(cexport_ctx *x, const qnet *q, int i, ccq_err *err)
{
    (void)err;
    const qnet_node *t = &q->nodes[i];
    cexport_need(x, CEXPORT_RT_CLAMP);
    cexport_need(x, CEXPORT_RT_RSHIFT);
    cexport_code(x, MODEL_OP_BATCHNORM, k_bn_code);
    cexport_array(x, i, "cm", t->cm, t->oc, 4, 0, CEXPORT_CONST);
    cexport_array(x, i, "cb", t->cb, t->oc, 8, 0, CEXPORT_CONST);
    cexport_call(x, "cq_bn(%s, %s, %ldL, %d, %d, %d, %d, %d, n%d_cm, n%d_cb, %d);", cexport_in(x, i, 0), cexport_out(x, i),
                 (long)t->oc * t->oh * t->ow, t->oc, t->zp_in, t->zp_out, t->lo, t->hi, i, i, (int)t->csh);
    return CCQ_OK;
}

const op_traits op_batchnorm = {
    .name = "batchnorm", .min_in = 1, .max_in = 1, .flags = OP_FUSES | OP_CALIBRATED,
    .load = bn_load, .save = bn_save, .ffwd = bn_ffwd, .qinit = bn_qinit, .qfwd = bn_qfwd,
    .cexport = bn_cexport, .onnx = point_onnx,
};
