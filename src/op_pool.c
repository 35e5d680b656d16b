/*
 * op_pool.c: maxpool, avgpool and globalavgpool: attributes, float forward
 * (fnet.c's kernels) and integer forward. Pools keep their input's scale
 * (no calibration of their own): max pool moves levels, average pools
 * divide integer sums with rounding half away from zero.
 */
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

const op_traits op_maxpool = {
    .name = "maxpool", .min_in = 1, .max_in = 1, .load = pool_load, .save = pool_save,
    .ffwd = maxpool_ffwd, .qinit = pool_qinit, .qfwd = pool_qfwd,
};

const op_traits op_avgpool = {
    .name = "avgpool", .min_in = 1, .max_in = 1, .load = pool_load, .save = pool_save,
    .ffwd = avgpool_ffwd, .qinit = pool_qinit, .qfwd = pool_qfwd,
};

const op_traits op_globalavgpool = {
    .name = "globalavgpool", .min_in = 1, .max_in = 1, .load = gap_load, .save = no_save,
    .ffwd = gap_ffwd, .qfwd = gap_qfwd,
};
