/*
 * op.c: the operator table (see op.h) and the helpers its entries share:
 * reading and writing attributes with errors that name the file and the
 * node, window geometry, scales of a quantized model. The ops themselves
 * live in src/op_<family>.c; nothing here runs a network.
 */
#include "ccq/op.h"

#include <math.h>
#include <stdio.h>
#include <string.h>

/* Entries, one per family file. */
extern const op_traits op_conv2d, op_linear;
extern const op_traits op_maxpool, op_avgpool, op_globalavgpool;
extern const op_traits op_add, op_mul, op_concat;
extern const op_traits op_flatten, op_pad, op_slice;
extern const op_traits op_relu, op_clip, op_act, op_batchnorm;

static const op_traits *const k_ops[MODEL_OP_COUNT] = {
    [MODEL_OP_CONV2D] = &op_conv2d,
    [MODEL_OP_BATCHNORM] = &op_batchnorm,
    [MODEL_OP_RELU] = &op_relu,
    [MODEL_OP_MAXPOOL] = &op_maxpool,
    [MODEL_OP_AVGPOOL] = &op_avgpool,
    [MODEL_OP_GLOBALAVGPOOL] = &op_globalavgpool,
    [MODEL_OP_LINEAR] = &op_linear,
    [MODEL_OP_FLATTEN] = &op_flatten,
    [MODEL_OP_ADD] = &op_add,
    [MODEL_OP_PAD] = &op_pad,
    [MODEL_OP_SLICE] = &op_slice,
    [MODEL_OP_CONCAT] = &op_concat,
    [MODEL_OP_CLIP] = &op_clip,
    [MODEL_OP_ACT] = &op_act,
    [MODEL_OP_MUL] = &op_mul,
};

const op_traits *op_get(model_op op)
{
    CCQ_ASSERT(op >= 0 && op < MODEL_OP_COUNT && k_ops[op]);
    return k_ops[op];
}

model_op op_by_name(const char *s)
{
    for (int k = 0; k < MODEL_OP_COUNT; k++)
        if (strcmp(s, k_ops[k]->name) == 0) return (model_op)k;
    return MODEL_OP_COUNT;
}

const char *model_op_name(model_op op) { return op >= 0 && op < MODEL_OP_COUNT ? k_ops[op]->name : "?"; }

ccq_status op_read_ints(const op_io *io, const char *name, int *out, int n, int min, int max, ccq_err *err)
{
    int64_t v[8];
    CCQ_ASSERT(n <= 8);
    ccq_status st = h5io_attr_ints_n(io->f, io->obj, name, v, n, err);
    if (st) return st;
    for (int i = 0; i < n; i++) {
        if (v[i] < min || v[i] > max)
            return OP_FAIL(io, err, CCQ_ERR_FORMAT, "attribute %s = %lld is outside [%d, %d]", name, (long long)v[i],
                           min, max);
        out[i] = (int)v[i];
    }
    return CCQ_OK;
}

ccq_status op_read_floats(const op_io *io, const char *name, int rank, const hsize_t *dims, float **out,
                          ccq_err *err)
{
    int64_t n = 1;
    for (int i = 0; i < rank; i++) n *= (int64_t)dims[i];
    if (n > MODEL_MAX_WEIGHTS)
        return OP_FAIL(io, err, CCQ_ERR_LIMIT, "%s has %lld elements, more than the %lld ccq accepts", name,
                       (long long)n, (long long)MODEL_MAX_WEIGHTS);
    float *buf = ccq_malloc(sizeof(float) * (size_t)(n ? n : 1));
    ccq_status st = h5io_dset_read(io->f, io->obj, name, H5T_NATIVE_FLOAT, rank, dims, -1, buf, err);
    for (int64_t i = 0; !st && i < n; i++)
        if (!isfinite(buf[i]))
            st = OP_FAIL(io, err, CCQ_ERR_FORMAT, "%s has a non-finite value (%g) at element %lld", name,
                         (double)buf[i], (long long)i);
    if (st) {
        ccq_free(buf);
        return st;
    }
    *out = buf;
    return CCQ_OK;
}

ccq_status op_read_attr_floats(const op_io *io, const char *name, float *out, int n, ccq_err *err)
{
    ccq_status st = h5io_attr_floats_n(io->f, io->obj, name, out, n, err);
    if (st) return st;
    for (int i = 0; i < n; i++)
        if (!isfinite(out[i]))
            return OP_FAIL(io, err, CCQ_ERR_FORMAT, "attribute %s has a non-finite value", name);
    return CCQ_OK;
}

ccq_status op_load_window(const op_io *io, model_shape in, int conv, ccq_err *err)
{
    model_node *nd = io->nd;
    ccq_status st;
    if ((st = op_read_ints(io, "kernel", nd->kernel, 2, 1, MODEL_MAX_DIM, err))) return st;
    if ((st = op_read_ints(io, "stride", nd->stride, 2, 1, MODEL_MAX_DIM, err))) return st;
    if ((st = op_read_ints(io, "pad", nd->pad, 4, 0, MODEL_MAX_DIM, err))) return st;
    if (conv) {
        if ((st = op_read_ints(io, "dilation", nd->dilation, 2, 1, MODEL_MAX_DIM, err))) return st;
        nd->ceil_mode = 0;
    } else {
        nd->dilation[0] = nd->dilation[1] = 1;
        if ((st = op_read_ints(io, "ceil_mode", &nd->ceil_mode, 1, 0, 1, err))) return st;
        for (int a = 0; a < 2; a++)
            if (nd->pad[a] >= nd->kernel[a] || nd->pad[a + 2] >= nd->kernel[a])
                return OP_FAIL(io, err, CCQ_ERR_FORMAT, "%s", "padding must be smaller than the kernel");
    }
    if (in.rank != 3) return OP_FAIL(io, err, CCQ_ERR_FORMAT, "%s", "needs a [C,H,W] input");
    int oh = model_window_out(in.h, nd->kernel[0], nd->stride[0], nd->pad[0], nd->pad[2], nd->dilation[0],
                              nd->ceil_mode);
    int ow = model_window_out(in.w, nd->kernel[1], nd->stride[1], nd->pad[1], nd->pad[3], nd->dilation[1],
                              nd->ceil_mode);
    if (oh < 1 || ow < 1)
        return OP_FAIL(io, err, CCQ_ERR_FORMAT, "window does not fit the %dx%d input", in.h, in.w);
    nd->shape = (model_shape){3, in.c, oh, ow};
    return CCQ_OK;
}

ccq_status op_save_window(const op_io *io, int conv, ccq_err *err)
{
    const model_node *nd = io->nd;
    ccq_status st;
    if ((st = h5io_write_attr_ints(io->f, io->obj, "kernel", nd->kernel, 2, 0, err))) return st;
    if ((st = h5io_write_attr_ints(io->f, io->obj, "stride", nd->stride, 2, 0, err))) return st;
    if ((st = h5io_write_attr_ints(io->f, io->obj, "pad", nd->pad, 4, 0, err))) return st;
    if (conv) return h5io_write_attr_ints(io->f, io->obj, "dilation", nd->dilation, 2, 0, err);
    return h5io_write_attr_ints(io->f, io->obj, "ceil_mode", &nd->ceil_mode, 1, 1, err);
}

float op_in_scale(const model *m, int src) { return src < 0 ? m->in_scale : m->nodes[src].act_scale; }
int op_in_zp(const model *m, int src) { return src < 0 ? m->in_zp : m->nodes[src].act_zp; }

ccq_status op_ratio_shift(double max_ratio, int32_t *shift)
{
    int e = 0;
    if (!(max_ratio > 0) || !isfinite(max_ratio) || max_ratio >= 536870912.0) return CCQ_ERR_LIMIT;
    frexp(max_ratio, &e);
    int s = 30 - e;
    *shift = s > 40 ? 40 : s;
    return *shift >= 1 ? CCQ_OK : CCQ_ERR_LIMIT;
}

/* zp + round(v / scale), half away from zero, clamped to [0, 255] (v may be +-3.4e38). */
static int32_t level_of(double v, double scale, int zp)
{
    double q = zp + v / scale;
    if (q < -1.0) return 0;
    if (q > 256.0) return 255;
    int64_t r = llround(v / scale) + zp;
    return (int32_t)(r < 0 ? 0 : r > 255 ? 255 : r);
}

void op_out_clamp(const model_node *nd, int32_t *lo, int32_t *hi)
{
    *lo = nd->relu ? nd->act_zp : 0;
    *hi = 255;
    if (nd->has_clip) {
        const int32_t a = level_of(nd->clip[0], nd->act_scale, nd->act_zp);
        const int32_t b = level_of(nd->clip[1], nd->act_scale, nd->act_zp);
        if (a > *lo) *lo = a;
        if (b < *hi) *hi = b;
        if (*hi < *lo) *hi = *lo;
    }
}

void op_clip_float(float *y, int64_t n, float lo, float hi)
{
    for (int64_t k = 0; k < n; k++) y[k] = y[k] < lo ? lo : y[k] > hi ? hi : y[k];
}
