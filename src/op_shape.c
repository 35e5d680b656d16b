/*
 * op_shape.c: ops that move levels without arithmetic: flatten (to the float
 * model's C,H,W order), pad (zeros on any axis, channels included: option-A
 * ResNet shortcuts) and slice (any start and step per axis, negative steps
 * included). Their outputs keep the input's scale and zero point; pad writes
 * the zero point, which is real zero.
 */
#include <stdio.h>
#include <string.h>

#include "ccq/op.h"

static ccq_status no_save(const op_io *io, const model *m, int i, ccq_err *err)
{
    (void)io, (void)m, (void)i, (void)err;
    return CCQ_OK;
}

/* ---- flatten ------------------------------------------------------------------ */

static ccq_status flatten_load(const op_io *io, model *m, int i, ccq_err *err)
{
    const model_shape in = model_in_shape(m, i, 0);
    if (model_numel(in) > MODEL_MAX_DIM * 64)
        return OP_FAIL(io, err, CCQ_ERR_LIMIT, "%lld features is more than ccq accepts", (long long)model_numel(in));
    io->nd->shape = (model_shape){1, (int)model_numel(in), 1, 1};
    return CCQ_OK;
}

static void flatten_ffwd(const model *m, int i, const float *const *x, float *y, float *scratch)
{
    (void)scratch;
    memcpy(y, x[0], sizeof(float) * (size_t)model_numel(m->nodes[i].shape));
}

static void flatten_qfwd(qnet *q, int i, const uint8_t *const *x, uint8_t *y, int n)
{
    /* NHWC -> the float model's [C][H][W] order */
    const qnet_node *t = &q->nodes[i];
    const int hw = t->ih * t->iw, c_ = t->ic;
    for (int img = 0; img < n; img++) {
        const uint8_t *xi = x[0] + (size_t)img * hw * c_;
        uint8_t *yi = y + (size_t)img * hw * c_;
        for (int p = 0; p < hw; p++)
            for (int c = 0; c < c_; c++) yi[(size_t)c * hw + p] = xi[(size_t)p * c_ + c];
    }
}

static const char k_flatten_code[] =
    "/* flatten: NHWC -> the float model's [C][H][W] order. */\n"
    "static void cq_flatten(const uint8_t *x, uint8_t *y, long hw, int C)\n"
    "{\n"
    "    long p;\n"
    "    int c;\n"
    "    for (p = 0; p < hw; p++)\n"
    "        for (c = 0; c < C; c++) y[c * hw + p] = x[p * C + c];\n"
    "}\n"
    "\n";

static ccq_status flatten_cexport(cexport_ctx *x, const qnet *q, int i, ccq_err *err)
{
    (void)err;
    const qnet_node *t = &q->nodes[i];
    cexport_code(x, MODEL_OP_FLATTEN, k_flatten_code);
    cexport_call(x, "cq_flatten(%s, %s, %ldL, %d);", cexport_in(x, i, 0), cexport_out(x, i), (long)t->ih * t->iw, t->ic);
    return CCQ_OK;
}

/* ---- ONNX export ------------------------------------------------------------------ */

/* Flatten (axis 1), Pad (constant zeros: real zero, which the engine writes as the zero point) and
 * Slice on the dequantized input, quantized again at the same scale: the levels move unchanged.
 * Shapes gain the batch axis in front; a slice's end past index 0 backwards is INT64_MIN, as ONNX
 * asks. */
static ccq_status shape_onnx(onnxexport_ctx *x, const qnet *q, int i, ccq_err *err)
{
    (void)err;
    const model_node *nd = &q->m->nodes[i];
    const model_shape in = model_in_shape(q->m, i, 0);
    const int r = in.rank;
    const int dims_out[3] = {nd->shape.c, nd->shape.h, nd->shape.w};
    char out[ONNXEXPORT_NAME_MAX], a[ONNXEXPORT_NAME_MAX], b[ONNXEXPORT_NAME_MAX], c[ONNXEXPORT_NAME_MAX],
        d[ONNXEXPORT_NAME_MAX];
    snprintf(out, sizeof out, "%s", onnxexport_out(x, i));
    const char *ins[5] = {onnxexport_in(x, i, 0), a, b, c, d};
    if (nd->op == MODEL_OP_FLATTEN) {
        const onnxexport_attr axis = ONNXEXPORT_AINT("axis", 1);
        onnxexport_node(x, "Flatten", onnxexport_node_name(x, i), ins, 1, out, &axis, 1, NULL);
    } else if (nd->op == MODEL_OP_PAD) {
        int64_t pads[8] = {0}; /* ONNX: every axis' begin, then every axis' end, batch first */
        const int64_t n = 2 * (r + 1);
        for (int k = 0; k < r; k++) pads[1 + k] = nd->pads[k], pads[r + 2 + k] = nd->pads[3 + k]; /* ccq: [c, h, w] begin, then end */
        ONNXEXPORT_NAME(a, i, "pads");
        onnxexport_const(x, a, ONNXEXPORT_INT64, &n, 1, pads, NULL);
        onnxexport_node(x, "Pad", onnxexport_node_name(x, i), ins, 2, out, NULL, 0, NULL);
    } else {
        int64_t st[3], en[3], ax[3], sp[3];
        const int64_t n = r;
        for (int k = 0; k < r; k++) {
            st[k] = nd->start[k], sp[k] = nd->step[k], ax[k] = k + 1;
            en[k] = (int64_t)nd->start[k] + (int64_t)dims_out[k] * nd->step[k];
            if (en[k] < 0) en[k] = INT64_MIN;
        }
        ONNXEXPORT_NAME(a, i, "starts"), ONNXEXPORT_NAME(b, i, "ends");
        ONNXEXPORT_NAME(c, i, "axes"), ONNXEXPORT_NAME(d, i, "steps");
        onnxexport_const(x, a, ONNXEXPORT_INT64, &n, 1, st, NULL);
        onnxexport_const(x, b, ONNXEXPORT_INT64, &n, 1, en, NULL);
        onnxexport_const(x, c, ONNXEXPORT_INT64, &n, 1, ax, NULL);
        onnxexport_const(x, d, ONNXEXPORT_INT64, &n, 1, sp, NULL);
        onnxexport_node(x, "Slice", onnxexport_node_name(x, i), ins, 5, out, NULL, 0, NULL);
    }
    onnxexport_result(x, i, out);
    return CCQ_OK;
}

const op_traits op_flatten = {
    .name = "flatten", .min_in = 1, .max_in = 1, .load = flatten_load, .save = no_save,
    .ffwd = flatten_ffwd, .qfwd = flatten_qfwd, .cexport = flatten_cexport, .onnx = shape_onnx,
};

/* ---- pad ---------------------------------------------------------------------- */

static ccq_status pad_load(const op_io *io, model *m, int i, ccq_err *err)
{
    model_node *nd = io->nd;
    const model_shape in = model_in_shape(m, i, 0);
    const int r = in.rank == 3 ? 3 : 1;
    ccq_status st;
    memset(nd->pads, 0, sizeof nd->pads);
    int p[6];
    if ((st = op_read_ints(io, "pads", p, 2 * r, 0, MODEL_MAX_DIM, err))) return st;
    const int d[3] = {in.c, in.h, in.w};
    int o[3] = {in.c, in.h, in.w};
    for (int a = 0; a < r; a++) {
        nd->pads[a] = p[a], nd->pads[3 + a] = p[r + a];
        o[a] = d[a] + p[a] + p[r + a];
        if (o[a] > MODEL_MAX_DIM) return OP_FAIL(io, err, CCQ_ERR_LIMIT, "padded axis %d is longer than ccq accepts", a);
    }
    nd->shape = (model_shape){in.rank, o[0], o[1], o[2]};
    return CCQ_OK;
}

static ccq_status pad_save(const op_io *io, const model *m, int i, ccq_err *err)
{
    (void)m, (void)i;
    const model_node *nd = io->nd;
    const int r = nd->shape.rank == 3 ? 3 : 1;
    int32_t p[6];
    for (int a = 0; a < r; a++) p[a] = nd->pads[a], p[r + a] = nd->pads[3 + a];
    return h5io_write_attr_ints(io->f, io->obj, "pads", p, 2 * r, 0, err);
}

static void pad_ffwd(const model *m, int i, const float *const *x, float *y, float *scratch)
{
    (void)scratch;
    const model_node *nd = &m->nodes[i];
    const model_shape in = model_in_shape(m, i, 0), s = nd->shape;
    memset(y, 0, sizeof(float) * (size_t)model_numel(s));
    for (int c = 0; c < in.c; c++)
        for (int h = 0; h < in.h; h++)
            memcpy(y + ((int64_t)(c + nd->pads[0]) * s.h + h + nd->pads[1]) * s.w + nd->pads[2],
                   x[0] + ((int64_t)c * in.h + h) * in.w, sizeof(float) * (size_t)in.w);
}

static void pad_qfwd(qnet *q, int i, const uint8_t *const *x, uint8_t *y, int n)
{
    const model_node *nd = &q->m->nodes[i];
    const qnet_node *t = &q->nodes[i];
    const size_t in_img = (size_t)t->ih * t->iw * t->ic, out_img = (size_t)t->oh * t->ow * t->oc;
    for (int img = 0; img < n; img++) {
        const uint8_t *xi = x[0] + img * in_img;
        uint8_t *yi = y + img * out_img;
        memset(yi, t->zp_in, out_img);
        for (int h = 0; h < t->ih; h++)
            for (int w = 0; w < t->iw; w++)
                memcpy(yi + (((size_t)(h + nd->pads[1]) * t->ow + w + nd->pads[2]) * t->oc + nd->pads[0]),
                       xi + ((size_t)h * t->iw + w) * t->ic, (size_t)t->ic);
    }
}

static const char k_pad_code[] =
    "/* pad: the input's zero point around it, pc/ph/pw before channels, rows and columns. */\n"
    "static void cq_pad(const uint8_t *x, uint8_t *y, int ih, int iw, int ic, int oh, int ow, int oc, int pc, int ph,\n"
    "                   int pw, int zp)\n"
    "{\n"
    "    int h, w;\n"
    "    memset(y, zp, (size_t)oh * (size_t)ow * (size_t)oc);\n"
    "    for (h = 0; h < ih; h++)\n"
    "        for (w = 0; w < iw; w++)\n"
    "            memcpy(y + ((long)(h + ph) * ow + w + pw) * oc + pc, x + ((long)h * iw + w) * ic, (size_t)ic);\n"
    "}\n"
    "\n";

static ccq_status pad_cexport(cexport_ctx *x, const qnet *q, int i, ccq_err *err)
{
    (void)err;
    const model_node *nd = &q->m->nodes[i];
    const qnet_node *t = &q->nodes[i];
    cexport_code(x, MODEL_OP_PAD, k_pad_code);
    cexport_call(x, "cq_pad(%s, %s, %d, %d, %d, %d, %d, %d, %d, %d, %d, %d);", cexport_in(x, i, 0), cexport_out(x, i),
                 t->ih, t->iw, t->ic, t->oh, t->ow, t->oc, nd->pads[0], nd->pads[1], nd->pads[2], t->zp_in);
    return CCQ_OK;
}

const op_traits op_pad = {
    .name = "pad", .min_in = 1, .max_in = 1, .load = pad_load, .save = pad_save,
    .ffwd = pad_ffwd, .qfwd = pad_qfwd, .cexport = pad_cexport, .onnx = shape_onnx,
};

/* ---- slice -------------------------------------------------------------------- */

static ccq_status slice_load(const op_io *io, model *m, int i, ccq_err *err)
{
    model_node *nd = io->nd;
    const model_shape in = model_in_shape(m, i, 0);
    const int r = in.rank == 3 ? 3 : 1;
    int64_t v[3];
    int cnt = 0;
    ccq_status st;
    /* the extent of each axis is the stored output shape */
    if ((st = h5io_attr_ints(io->f, io->obj, "shape", v, 3, &cnt, err))) return st;
    if (cnt != r) return OP_FAIL(io, err, CCQ_ERR_FORMAT, "stored shape has rank %d, the input has rank %d", cnt, r);
    if ((st = op_read_ints(io, "start", nd->start, r, 0, MODEL_MAX_DIM, err))) return st;
    if ((st = op_read_ints(io, "step", nd->step, r, -MODEL_MAX_DIM, MODEL_MAX_DIM, err))) return st;
    const int d[3] = {in.c, in.h, in.w};
    int o[3] = {1, 1, 1};
    for (int a = 0; a < r; a++) {
        if (v[a] < 1 || v[a] > MODEL_MAX_DIM)
            return OP_FAIL(io, err, CCQ_ERR_FORMAT, "axis %d has %lld elements", a, (long long)v[a]);
        if (nd->step[a] == 0) return OP_FAIL(io, err, CCQ_ERR_FORMAT, "step of axis %d is 0", a);
        const int64_t last = nd->start[a] + (v[a] - 1) * (int64_t)nd->step[a];
        if (nd->start[a] >= d[a] || last < 0 || last >= d[a])
            return OP_FAIL(io, err, CCQ_ERR_FORMAT, "axis %d reads elements %d to %lld of %d", a, nd->start[a],
                           (long long)last, d[a]);
        o[a] = (int)v[a];
    }
    for (int a = r; a < 3; a++) nd->start[a] = 0, nd->step[a] = 1;
    nd->shape = (model_shape){in.rank, o[0], r == 3 ? o[1] : 1, r == 3 ? o[2] : 1};
    return CCQ_OK;
}

static ccq_status slice_save(const op_io *io, const model *m, int i, ccq_err *err)
{
    (void)m, (void)i;
    const int r = io->nd->shape.rank == 3 ? 3 : 1;
    ccq_status st = h5io_write_attr_ints(io->f, io->obj, "start", io->nd->start, r, 0, err);
    return st ? st : h5io_write_attr_ints(io->f, io->obj, "step", io->nd->step, r, 0, err);
}

static void slice_ffwd(const model *m, int i, const float *const *x, float *y, float *scratch)
{
    (void)scratch;
    const model_node *nd = &m->nodes[i];
    const model_shape in = model_in_shape(m, i, 0), s = nd->shape;
    for (int c = 0; c < s.c; c++)
        for (int h = 0; h < s.h; h++)
            for (int w = 0; w < s.w; w++) {
                const int64_t ic = nd->start[0] + (int64_t)c * nd->step[0], ih = nd->start[1] + (int64_t)h * nd->step[1],
                              iw = nd->start[2] + (int64_t)w * nd->step[2];
                y[((int64_t)c * s.h + h) * s.w + w] = x[0][(ic * in.h + ih) * in.w + iw];
            }
}

static void slice_qfwd(qnet *q, int i, const uint8_t *const *x, uint8_t *y, int n)
{
    const model_node *nd = &q->m->nodes[i];
    const qnet_node *t = &q->nodes[i];
    const size_t in_img = (size_t)t->ih * t->iw * t->ic, out_img = (size_t)t->oh * t->ow * t->oc;
    for (int img = 0; img < n; img++) {
        const uint8_t *xi = x[0] + img * in_img;
        uint8_t *yi = y + img * out_img;
        for (int h = 0; h < t->oh; h++)
            for (int w = 0; w < t->ow; w++) {
                const int64_t ih = nd->start[1] + (int64_t)h * nd->step[1], iw = nd->start[2] + (int64_t)w * nd->step[2];
                const uint8_t *src = xi + (ih * t->iw + iw) * t->ic + nd->start[0];
                uint8_t *dst = yi + ((size_t)h * t->ow + w) * t->oc;
                if (nd->step[0] == 1)
                    memcpy(dst, src, (size_t)t->oc);
                else
                    for (int c = 0; c < t->oc; c++) dst[c] = src[(int64_t)c * nd->step[0]];
            }
    }
}

static const char k_slice_code[] =
    "/* slice: output (h, w, c) reads input (s1 + h t1, s2 + w t2, s0 + c t0); steps may be negative. */\n"
    "static void cq_slice(const uint8_t *x, uint8_t *y, int iw, int ic, int oh, int ow, int oc, int s0, int s1, int s2,\n"
    "                     int t0, int t1, int t2)\n"
    "{\n"
    "    int h, w, c;\n"
    "    for (h = 0; h < oh; h++)\n"
    "        for (w = 0; w < ow; w++) {\n"
    "            const long ih = s1 + (long)h * t1, iw_ = s2 + (long)w * t2;\n"
    "            const uint8_t *src = x + (ih * iw + iw_) * ic + s0;\n"
    "            uint8_t *dst = y + ((long)h * ow + w) * oc;\n"
    "            for (c = 0; c < oc; c++) dst[c] = src[(long)c * t0];\n"
    "        }\n"
    "}\n"
    "\n";

static ccq_status slice_cexport(cexport_ctx *x, const qnet *q, int i, ccq_err *err)
{
    (void)err;
    const model_node *nd = &q->m->nodes[i];
    const qnet_node *t = &q->nodes[i];
    cexport_code(x, MODEL_OP_SLICE, k_slice_code);
    cexport_call(x, "cq_slice(%s, %s, %d, %d, %d, %d, %d, %d, %d, %d, %d, %d, %d);", cexport_in(x, i, 0),
                 cexport_out(x, i), t->iw, t->ic, t->oh, t->ow, t->oc, nd->start[0], nd->start[1], nd->start[2],
                 nd->step[0], nd->step[1], nd->step[2]);
    return CCQ_OK;
}

const op_traits op_slice = {
    .name = "slice", .min_in = 1, .max_in = 1, .load = slice_load, .save = slice_save,
    .ffwd = slice_ffwd, .qfwd = slice_qfwd, .cexport = slice_cexport, .onnx = shape_onnx,
};
