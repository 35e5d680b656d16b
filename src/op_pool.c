/*
 * op_pool.c: maxpool, avgpool and globalavgpool: attributes, float forward
 * (fnet.c's kernels) and integer forward. Pools keep their input's scale
 * (no calibration of their own): max pool moves levels, average pools
 * divide integer sums with rounding half away from zero. Their C and ONNX
 * exports.
 */
#include <stdio.h>
#include <string.h>

#include "ccq/fnet.h"
#include "ccq/op.h"

static ccq_status pool_load(const op_io *io, model *m, int i, ccq_err *err)
{
    ccq_status st;
    if ((st = op_load_window(io, model_in_shape(m, i, 0), 0, err))) return st;
    if (io->nd->op == MODEL_OP_AVGPOOL)
        return op_read_ints(io, "count_include_pad", &io->nd->count_include_pad, 1, 0, 1, err);
    return CCQ_OK;
}

static ccq_status pool_save(const op_io *io, const model *m, int i, ccq_err *err)
{
    (void)m, (void)i;
    ccq_status st = op_save_window(io, 0, err);
    if (!st && io->nd->op == MODEL_OP_AVGPOOL)
        st = h5io_write_attr_ints(io->f, io->obj, "count_include_pad", &io->nd->count_include_pad, 1, 1, err);
    return st;
}

static ccq_status gap_load(const op_io *io, model *m, int i, ccq_err *err)
{
    const model_shape in = model_in_shape(m, i, 0);
    if (in.rank != 3) return OP_FAIL(io, err, CCQ_ERR_FORMAT, "%s", "needs a [C,H,W] input");
    io->nd->shape = (model_shape){3, in.c, 1, 1};
    return CCQ_OK;
}

static ccq_status no_save(const op_io *io, const model *m, int i, ccq_err *err)
{
    (void)io, (void)m, (void)i, (void)err;
    return CCQ_OK;
}

static void maxpool_ffwd(const model *m, int i, const float *const *x, float *y, float *scratch)
{
    (void)scratch;
    fnet_maxpool(&m->nodes[i], model_in_shape(m, i, 0), x[0], y);
}

static void avgpool_ffwd(const model *m, int i, const float *const *x, float *y, float *scratch)
{
    (void)scratch;
    fnet_avgpool(&m->nodes[i], model_in_shape(m, i, 0), x[0], y);
}

static void gap_ffwd(const model *m, int i, const float *const *x, float *y, float *scratch)
{
    (void)scratch;
    fnet_globalavgpool(model_in_shape(m, i, 0), x[0], y);
}

static ccq_status pool_qinit(qnet *q, int i, ccq_err *err)
{
    (void)err;
    const model_node *nd = &q->m->nodes[i];
    qnet_node *t = &q->nodes[i];
    t->kh = nd->kernel[0], t->kw = nd->kernel[1], t->sh = nd->stride[0], t->sw = nd->stride[1];
    t->pt = nd->pad[0], t->pl = nd->pad[1], t->pb = nd->pad[2], t->pr = nd->pad[3];
    t->ceil_mode = nd->ceil_mode, t->cip = nd->count_include_pad;
    return CCQ_OK;
}

/* o[c] = max(o[c], v[c]): a loop compilers vectorise (pmaxub is baseline SSE2). */
static void max_into(uint8_t *restrict o, const uint8_t *restrict v, int C)
{
    for (int c = 0; c < C; c++) o[c] = v[c] > o[c] ? v[c] : o[c];
}

/* round half away from zero of s / cnt */
static int64_t div_round(int64_t s, int64_t cnt)
{
    return s >= 0 ? (2 * s + cnt) / (2 * cnt) : -((-2 * s + cnt) / (2 * cnt));
}

static void pool_qfwd(qnet *q, int i, const uint8_t *const *xs, uint8_t *y, int n)
{
    const qnet_node *t = &q->nodes[i];
    const int C = t->ic;
    for (int img = 0; img < n; img++) {
        const uint8_t *xi = xs[0] + (size_t)img * t->ih * t->iw * C;
        uint8_t *yi = y + (size_t)img * t->oh * t->ow * C;
        for (int oy = 0; oy < t->oh; oy++) {
            int y0, y1, ph;
            model_window(oy, t->sh, t->kh, t->pt, t->pb, t->ih, &y0, &y1, &ph);
            for (int ox = 0; ox < t->ow; ox++) {
                int x0, x1, pw;
                model_window(ox, t->sw, t->kw, t->pl, t->pr, t->iw, &x0, &x1, &pw);
                uint8_t *out = yi + ((size_t)oy * t->ow + ox) * C;
                if (t->op == MODEL_OP_MAXPOOL) {
                    /* every window has a real element (pad < kernel): start from it */
                    memcpy(out, xi + ((size_t)y0 * t->iw + x0) * C, (size_t)C);
                    for (int iy = y0; iy < y1; iy++)
                        for (int ix = x0; ix < x1; ix++) max_into(out, xi + ((size_t)iy * t->iw + ix) * C, C);
                } else {
                    const int64_t cnt = t->cip ? (int64_t)ph * pw : (int64_t)(y1 - y0) * (x1 - x0);
                    for (int c = 0; c < C; c++) {
                        int64_t s = 0;
                        for (int iy = y0; iy < y1; iy++)
                            for (int ix = x0; ix < x1; ix++) s += xi[((size_t)iy * t->iw + ix) * C + c] - t->zp_in;
                        out[c] = op_clamp_u8(t->zp_out + div_round(s, cnt), 0, 255);
                    }
                }
            }
        }
    }
}

static void gap_qfwd(qnet *q, int i, const uint8_t *const *xs, uint8_t *y, int n)
{
    const qnet_node *t = &q->nodes[i];
    const int C = t->ic;
    const int64_t cnt = (int64_t)t->ih * t->iw;
    for (int img = 0; img < n; img++) {
        const uint8_t *xi = xs[0] + (size_t)img * cnt * C;
        for (int c = 0; c < C; c++) {
            int64_t s = 0;
            for (int64_t p = 0; p < cnt; p++) s += xi[p * C + c] - t->zp_in;
            y[(size_t)img * C + c] = op_clamp_u8(t->zp_out + div_round(s, cnt), 0, 255);
        }
    }
}

/* ---- C export ------------------------------------------------------------------- */

static const char k_pool_code[] =
    "/* maxpool (the largest level of the window's real taps) and avgpool (zp + round(sum(q - zp) /\n"
    " * count), half away from zero; count_include_pad counts the window clipped to the padding). */\n"
    "typedef struct {\n"
    "    int ih, iw, c, oh, ow, kh, kw, sh, sw, pt, pl, pb, pr, avg, cip;\n"
    "    int32_t zp_in, zp_out;\n"
    "} cq_pool;\n"
    "\n"
    "static void cq_pool_run(const cq_pool *p, const uint8_t *x, uint8_t *y)\n"
    "{\n"
    "    int oy, ox, ch, iy, ix, y0, y1, ph, x0, x1, pw;\n"
    "    for (oy = 0; oy < p->oh; oy++) {\n"
    "        cq_window(oy, p->sh, p->kh, p->pt, p->pb, p->ih, &y0, &y1, &ph);\n"
    "        for (ox = 0; ox < p->ow; ox++) {\n"
    "            uint8_t *out = y + ((long)oy * p->ow + ox) * p->c;\n"
    "            cq_window(ox, p->sw, p->kw, p->pl, p->pr, p->iw, &x0, &x1, &pw);\n"
    "            for (ch = 0; ch < p->c; ch++) {\n"
    "                if (!p->avg) {\n"
    "                    uint8_t m = x[((long)y0 * p->iw + x0) * p->c + ch];\n"
    "                    for (iy = y0; iy < y1; iy++)\n"
    "                        for (ix = x0; ix < x1; ix++) {\n"
    "                            const uint8_t v = x[((long)iy * p->iw + ix) * p->c + ch];\n"
    "                            if (v > m) m = v;\n"
    "                        }\n"
    "                    out[ch] = m;\n"
    "                } else {\n"
    "                    int64_t s = 0;\n"
    "                    for (iy = y0; iy < y1; iy++)\n"
    "                        for (ix = x0; ix < x1; ix++) s += x[((long)iy * p->iw + ix) * p->c + ch] - p->zp_in;\n"
    "                    const int64_t cnt = p->cip ? (int64_t)ph * pw : (int64_t)(y1 - y0) * (x1 - x0);\n"
    "                    out[ch] = cq_clamp(p->zp_out + cq_div_round(s, cnt), 0, 255);\n"
    "                }\n"
    "            }\n"
    "        }\n"
    "    }\n"
    "}\n"
    "\n";

static const char k_gap_code[] =
    "/* globalavgpool: zp + round(sum(q - zp) / (H W)) per channel, half away from zero. */\n"
    "static void cq_gap(const uint8_t *x, uint8_t *y, long hw, int C, int32_t zp_in, int32_t zp_out)\n"
    "{\n"
    "    long p;\n"
    "    int c;\n"
    "    for (c = 0; c < C; c++) {\n"
    "        int64_t s = 0;\n"
    "        for (p = 0; p < hw; p++) s += x[p * C + c] - zp_in;\n"
    "        y[c] = cq_clamp(zp_out + cq_div_round(s, hw), 0, 255);\n"
    "    }\n"
    "}\n"
    "\n";

static ccq_status pool_cexport(cexport_ctx *x, const qnet *q, int i, ccq_err *err)
{
    (void)err;
    const qnet_node *t = &q->nodes[i];
    cexport_need(x, CEXPORT_RT_CLAMP);
    cexport_need(x, CEXPORT_RT_DIVROUND);
    cexport_need(x, CEXPORT_RT_WINDOW);
    cexport_code(x, MODEL_OP_MAXPOOL, k_pool_code);
    cexport_data(x, "static const cq_pool n%d = {%d, %d, %d, %d, %d, %d, %d, %d, %d, %d, %d, %d, %d, %d, %d, %d, %d};\n\n",
                 i, t->ih, t->iw, t->ic, t->oh, t->ow, t->kh, t->kw, t->sh, t->sw, t->pt, t->pl, t->pb, t->pr,
                 t->op == MODEL_OP_AVGPOOL, t->cip, t->zp_in, t->zp_out);
    cexport_call(x, "cq_pool_run(&n%d, %s, %s);", i, cexport_in(x, i, 0), cexport_out(x, i));
    return CCQ_OK;
}

static ccq_status gap_cexport(cexport_ctx *x, const qnet *q, int i, ccq_err *err)
{
    (void)err;
    const qnet_node *t = &q->nodes[i];
    cexport_need(x, CEXPORT_RT_CLAMP);
    cexport_need(x, CEXPORT_RT_DIVROUND);
    cexport_code(x, MODEL_OP_GLOBALAVGPOOL, k_gap_code);
    cexport_call(x, "cq_gap(%s, %s, %ldL, %d, %d, %d);", cexport_in(x, i, 0), cexport_out(x, i),
                 (long)t->ih * t->iw, t->ic, t->zp_in, t->zp_out);
    return CCQ_OK;
}

/* ---- ONNX export ------------------------------------------------------------------ */

/* MaxPool / AveragePool at ceil_mode 0: a ceil-mode window count becomes explicit end padding
 * ((o - 1) s + k - in - pad_begin, less than k since the last window starts inside the input or
 * the begin padding), which changes nothing a max or a count of real taps sees. An average pool
 * counting padding whose last window would reach past the model's end padding is refused: ONNX
 * would count the extra padding, the engine does not. */
static ccq_status pool_onnx(onnxexport_ctx *x, const qnet *q, int i, ccq_err *err)
{
    const model *m = q->m;
    const model_node *nd = &m->nodes[i];
    const model_shape in = model_in_shape(m, i, 0);
    const int avg = nd->op == MODEL_OP_AVGPOOL;
    const int64_t k[2] = {nd->kernel[0], nd->kernel[1]}, s[2] = {nd->stride[0], nd->stride[1]};
    int64_t p[4] = {nd->pad[0], nd->pad[1], nd->pad[2], nd->pad[3]};
    if (nd->ceil_mode)
        for (int a = 0; a < 2; a++) {
            const int64_t n_in = a ? in.w : in.h, o = a ? nd->shape.w : nd->shape.h;
            int64_t end = (o - 1) * s[a] + k[a] - n_in - p[a];
            if (end < 0) end = 0;
            if (avg && nd->count_include_pad && end > p[a + 2])
                return ccq_fail(err, CCQ_ERR_USAGE,
                                "%s: node %d (%s %s): ceil-mode average pool with count_include_pad whose last "
                                "window reaches past the end padding: ONNX's AveragePool would count that "
                                "padding, ccq does not, so it cannot be exported exactly",
                                m->path, i, model_op_name(nd->op), nd->name);
            p[a + 2] = end;
        }
    const onnxexport_attr at[4] = {ONNXEXPORT_AINTS("kernel_shape", k, 2), ONNXEXPORT_AINTS("strides", s, 2),
                                   ONNXEXPORT_AINTS("pads", p, 4),
                                   ONNXEXPORT_AINT("count_include_pad", nd->count_include_pad)};
    const char *ins[1] = {onnxexport_in(x, i, 0)};
    char out[ONNXEXPORT_NAME_MAX];
    snprintf(out, sizeof out, "%s", onnxexport_out(x, i));
    onnxexport_node(x, avg ? "AveragePool" : "MaxPool", onnxexport_node_name(x, i), ins, 1, out, at, avg ? 4 : 3, NULL);
    onnxexport_result(x, i, out);
    return CCQ_OK;
}

static ccq_status gap_onnx(onnxexport_ctx *x, const qnet *q, int i, ccq_err *err)
{
    (void)q, (void)err;
    const char *ins[1] = {onnxexport_in(x, i, 0)};
    char out[ONNXEXPORT_NAME_MAX];
    snprintf(out, sizeof out, "%s", onnxexport_out(x, i));
    onnxexport_node(x, "GlobalAveragePool", onnxexport_node_name(x, i), ins, 1, out, NULL, 0, NULL);
    onnxexport_result(x, i, out);
    return CCQ_OK;
}

const op_traits op_maxpool = {
    .name = "maxpool", .min_in = 1, .max_in = 1, .load = pool_load, .save = pool_save,
    .ffwd = maxpool_ffwd, .qinit = pool_qinit, .qfwd = pool_qfwd, .cexport = pool_cexport, .onnx = pool_onnx,
};

const op_traits op_avgpool = {
    .name = "avgpool", .min_in = 1, .max_in = 1, .load = pool_load, .save = pool_save,
    .ffwd = avgpool_ffwd, .qinit = pool_qinit, .qfwd = pool_qfwd, .cexport = pool_cexport, .onnx = pool_onnx,
};

const op_traits op_globalavgpool = {
    .name = "globalavgpool", .min_in = 1, .max_in = 1, .load = gap_load, .save = no_save,
    .ffwd = gap_ffwd, .qfwd = gap_qfwd, .cexport = gap_cexport, .onnx = gap_onnx,
};
