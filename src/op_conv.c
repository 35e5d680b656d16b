/*
 * op_conv.c: the weighted ops, conv2d (dense, grouped, depthwise) and
 * linear: their model-file attributes and data (float weights, and the
 * levels and scales of a quantized model), float forward (fnet_conv2d,
 * fnet_linear), integer set-up and forward over the ISA's GEMM kernels, or
 * its depthwise kernel for groups = Cin, and their C and ONNX exports.
 * Level packing and in-place patches are qnet_update_levels/qnet_set_level
 * (qnet.c); what the search does with the levels is not here.
 */
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "ccq/fnet.h"
#include "ccq/op.h"
#include "ccq/quant.h"

enum { ROW_TILE = QNET_ROW_TILE };

/* ---- file ------------------------------------------------------------------ */

/* A learned node's codebook [Cout][2^bits]: strictly increasing int8 values within +-127, and every
 * level one of its channel's. */
static ccq_status load_codebook(const op_io *io, ccq_err *err)
{
    model_node *nd = io->nd;
    ccq_status st;
    if (nd->bits > MODEL_CODEBOOK_MAX_BITS)
        return OP_FAIL(io, err, CCQ_ERR_FORMAT, "a codebook needs 2 to %d bits, not %d", MODEL_CODEBOOK_MAX_BITS,
                       nd->bits);
    const int n = model_ncodes(nd);
    hsize_t d[2] = {(hsize_t)nd->shape.c, (hsize_t)n};
    nd->codebook = ccq_malloc((size_t)nd->shape.c * (size_t)n);
    if ((st = h5io_dset_read(io->f, io->obj, "codebook", H5T_NATIVE_INT8, 2, d, -1, nd->codebook, err))) return st;
    for (int o = 0; o < nd->shape.c; o++) {
        const int8_t *cb = nd->codebook + (int64_t)o * n;
        for (int c = 0; c < n; c++) {
            if (cb[c] < -127)
                return OP_FAIL(io, err, CCQ_ERR_FORMAT, "codebook[%d][%d] = -128 is outside +-127", o, c);
            if (c > 0 && cb[c] <= cb[c - 1])
                return OP_FAIL(io, err, CCQ_ERR_FORMAT, "codebook[%d] is not strictly increasing at entry %d", o, c);
        }
    }
    const int64_t per = nd->n_weight / nd->shape.c;
    for (int64_t i = 0; i < nd->n_weight; i++)
        if (model_code_of(nd, (int)(i / per), nd->levels[i]) < 0)
            return OP_FAIL(io, err, CCQ_ERR_FORMAT, "level %d at element %lld is not in channel %lld's codebook",
                           nd->levels[i], (long long)i, (long long)(i / per));
    return CCQ_OK;
}

/* Quantized models: bits, levels (shape of weight), wscale [Cout], and for learned levels the codebook. */
static ccq_status load_levels(const op_io *io, const model *m, int rank, const hsize_t *d, ccq_err *err)
{
    model_node *nd = io->nd;
    ccq_status st;
    if (!m->quantized) return CCQ_OK;
    if ((st = op_read_ints(io, "bits", &nd->bits, 1, 2, 8, err))) return st;
    nd->levels = ccq_malloc((size_t)nd->n_weight);
    if ((st = h5io_dset_read(io->f, io->obj, "levels", H5T_NATIVE_INT8, rank, d, -1, nd->levels, err))) return st;
    int has_sparse;
    if ((st = h5io_has_attr(io->f, io->obj, "sparse", &has_sparse, err))) return st;
    if (has_sparse && (st = op_read_ints(io, "sparse", &nd->sparse, 1, 0, 1, err))) return st;
    if (h5io_exists(io->f, io->obj, "codebook")) {
        if (nd->sparse) return OP_FAIL(io, err, CCQ_ERR_FORMAT, "%s", "sparse = 1 with a codebook (uniform levels only)");
        if ((st = load_codebook(io, err))) return st;
    } else {
        const int qmax = model_qmax(nd->bits);
        for (int64_t i = 0; i < nd->n_weight; i++)
            if (nd->levels[i] < -qmax || nd->levels[i] > qmax)
                return OP_FAIL(io, err, CCQ_ERR_FORMAT, "level %d at element %lld is outside +-%d for %d bits",
                               nd->levels[i], (long long)i, qmax, nd->bits);
    }
    hsize_t sd[1] = {(hsize_t)nd->shape.c};
    if ((st = op_read_floats(io, "wscale", 1, sd, &nd->wscale, err))) return st;
    for (int o = 0; o < nd->shape.c; o++)
        if (!(nd->wscale[o] > 0.0f))
            return OP_FAIL(io, err, CCQ_ERR_FORMAT, "wscale[%d] = %g must be positive", o, (double)nd->wscale[o]);
    return CCQ_OK;
}

static ccq_status load_bias(const op_io *io, hsize_t cout, ccq_err *err)
{
    if (!h5io_exists(io->f, io->obj, "bias")) return CCQ_OK;
    hsize_t bd[1] = {cout};
    return op_read_floats(io, "bias", 1, bd, &io->nd->bias, err);
}

static ccq_status conv_load(const op_io *io, model *m, int i, ccq_err *err)
{
    model_node *nd = io->nd;
    const model_shape in = model_in_shape(m, i, 0);
    hsize_t d[H5IO_MAX_RANK];
    int rank = 0;
    ccq_status st;
    if ((st = op_load_window(io, in, 1, err))) return st;
    nd->groups = 1;
    if (H5Aexists_by_name(io->f->id, io->obj, "groups", H5P_DEFAULT) > 0 &&
        (st = op_read_ints(io, "groups", &nd->groups, 1, 1, MODEL_MAX_DIM, err)))
        return st;
    if ((st = h5io_dset_dims(io->f, io->obj, "weight", &rank, d, err))) return st;
    if (rank != 4 || d[0] < 1 || d[0] > MODEL_MAX_DIM)
        return OP_FAIL(io, err, CCQ_ERR_FORMAT, "%s", "weight must be [Cout,Cin/groups,kh,kw]");
    if (in.c % nd->groups || (int)d[0] % nd->groups)
        return OP_FAIL(io, err, CCQ_ERR_FORMAT, "groups = %d does not divide Cin = %d and Cout = %d", nd->groups,
                       in.c, (int)d[0]);
    d[1] = (hsize_t)(in.c / nd->groups);
    d[2] = (hsize_t)nd->kernel[0];
    d[3] = (hsize_t)nd->kernel[1];
    nd->shape.c = (int)d[0];
    if ((st = op_read_floats(io, "weight", 4, d, &nd->weight, err))) return st;
    nd->n_weight = (int64_t)d[0] * d[1] * d[2] * d[3];
    if ((st = load_bias(io, d[0], err))) return st;
    return load_levels(io, m, 4, d, err);
}

static ccq_status linear_load(const op_io *io, model *m, int i, ccq_err *err)
{
    model_node *nd = io->nd;
    const model_shape in = model_in_shape(m, i, 0);
    hsize_t d[H5IO_MAX_RANK];
    int rank = 0;
    ccq_status st;
    nd->groups = 1;
    if (in.rank != 1) return OP_FAIL(io, err, CCQ_ERR_FORMAT, "%s", "needs a flat [F] input (add a flatten)");
    if ((st = h5io_dset_dims(io->f, io->obj, "weight", &rank, d, err))) return st;
    if (rank != 2 || d[0] < 1 || d[0] > MODEL_MAX_DIM)
        return OP_FAIL(io, err, CCQ_ERR_FORMAT, "%s", "weight must be [out,in]");
    d[1] = (hsize_t)in.c;
    if ((st = op_read_floats(io, "weight", 2, d, &nd->weight, err))) return st;
    nd->n_weight = (int64_t)d[0] * d[1];
    nd->shape = (model_shape){1, (int)d[0], 1, 1};
    if ((st = load_bias(io, d[0], err))) return st;
    return load_levels(io, m, 2, d, err);
}

static ccq_status weighted_save(const op_io *io, const model *m, int i, ccq_err *err)
{
    const model_node *nd = io->nd;
    ccq_status st;
    const int conv = nd->op == MODEL_OP_CONV2D;
    if (conv) {
        if ((st = op_save_window(io, 1, err))) return st;
        if (nd->groups > 1 && (st = h5io_write_attr_ints(io->f, io->obj, "groups", &nd->groups, 1, 1, err)))
            return st;
    }
    const model_shape in = model_in_shape(m, i, 0);
    const int rank = conv ? 4 : 2;
    hsize_t d[4] = {(hsize_t)nd->shape.c, (hsize_t)(in.c / (conv ? nd->groups : 1)), 0, 0};
    if (conv) d[0] = (hsize_t)nd->shape.c, d[2] = (hsize_t)nd->kernel[0], d[3] = (hsize_t)nd->kernel[1];
    if (!conv) d[1] = (hsize_t)model_numel(in);
    hsize_t c1[1] = {(hsize_t)nd->shape.c};
    if ((st = h5io_write_dset(io->f, io->obj, "weight", H5T_IEEE_F32LE, H5T_NATIVE_FLOAT, rank, d, nd->weight, err)))
        return st;
    if (nd->bias && (st = h5io_write_dset(io->f, io->obj, "bias", H5T_IEEE_F32LE, H5T_NATIVE_FLOAT, 1, c1, nd->bias, err)))
        return st;
    if (!m->quantized) return CCQ_OK;
    if ((st = h5io_write_attr_ints(io->f, io->obj, "bits", &nd->bits, 1, 1, err))) return st;
    if (nd->sparse && (st = h5io_write_attr_ints(io->f, io->obj, "sparse", &nd->sparse, 1, 1, err))) return st;
    if ((st = h5io_write_dset(io->f, io->obj, "levels", H5T_STD_I8LE, H5T_NATIVE_INT8, rank, d, nd->levels, err)))
        return st;
    hsize_t cd[2] = {(hsize_t)nd->shape.c, nd->codebook ? (hsize_t)model_ncodes(nd) : 0};
    if (nd->codebook &&
        (st = h5io_write_dset(io->f, io->obj, "codebook", H5T_STD_I8LE, H5T_NATIVE_INT8, 2, cd, nd->codebook, err)))
        return st;
    return h5io_write_dset(io->f, io->obj, "wscale", H5T_IEEE_F32LE, H5T_NATIVE_FLOAT, 1, c1, nd->wscale, err);
}

/* ---- float ----------------------------------------------------------------- */

static void conv_ffwd(const model *m, int i, const float *const *x, float *y, float *scratch)
{
    fnet_conv2d(&m->nodes[i], model_in_shape(m, i, 0), x[0], y, scratch);
}

static int64_t conv_fscratch(const model *m, int i) { return fnet_col_size(&m->nodes[i], model_in_shape(m, i, 0)); }

static void linear_ffwd(const model *m, int i, const float *const *x, float *y, float *scratch)
{
    (void)scratch;
    fnet_linear(&m->nodes[i], model_in_shape(m, i, 0), x[0], y);
}

/* ---- integer set-up ------------------------------------------------------------ */

/* CCQ_DEPTHWISE=gemm runs depthwise convs as grouped GEMMs (one per channel) instead of the
 * depthwise kernel: the tests' way to check that both give the same integers. */
static ccq_status depthwise_kernel_enabled(int *on, ccq_err *err)
{
    const char *e = getenv("CCQ_DEPTHWISE");
    *on = 1;
    if (!e || !*e || strcmp(e, "kernel") == 0) return CCQ_OK;
    if (strcmp(e, "gemm") == 0) {
        *on = 0;
        return CCQ_OK;
    }
    return ccq_fail(err, CCQ_ERR_USAGE, "CCQ_DEPTHWISE=%s: unknown (kernel or gemm)", e);
}

/* Depthwise conv (groups = Cin > 1, any channel multiplier; not the logits node, whose int32
 * output the depthwise kernel does not write): levels [K][oc] packed by the ISA's dw_pack, tap
 * offsets into the padded image with oc channels per pixel (see pad_image). */
static void depthwise_qinit(qnet *q, qnet_node *t)
{
    t->dwm = t->cog;
    t->indirect = 0, t->seg = 0;
    t->Kpack = t->K;
    t->gpacked = q->isa->dw_packed_size(t->K, t->oc);
    t->dwoff = ccq_malloc(sizeof(ptrdiff_t) * (size_t)t->K);
    for (int ky = 0; ky < t->kh; ky++)
        for (int kx = 0; kx < t->kw; kx++)
            t->dwoff[ky * t->kw + kx] = ((ptrdiff_t)ky * t->dh * t->pw + (ptrdiff_t)kx * t->dw) * t->oc;
}

static ccq_status weighted_qinit(qnet *q, int i, ccq_err *err)
{
    const model *m = q->m;
    const model_node *nd = &m->nodes[i];
    qnet_node *t = &q->nodes[i];
    const double s_in = op_in_scale(m, nd->in[0]);
    if (nd->op == MODEL_OP_CONV2D) {
        t->kh = nd->kernel[0], t->kw = nd->kernel[1], t->sh = nd->stride[0], t->sw = nd->stride[1];
        t->dh = nd->dilation[0], t->dw = nd->dilation[1], t->pt = nd->pad[0], t->pl = nd->pad[1];
    } else {
        t->kh = t->kw = t->sh = t->sw = t->dh = t->dw = 1;
        t->ic = (int)model_numel(model_in_shape(m, i, 0)), t->ih = t->iw = 1;
    }
    t->groups = nd->groups > 0 ? nd->groups : 1;
    t->cig = t->ic / t->groups, t->cog = t->oc / t->groups;
    const int kr = q->isa->kr;
    t->K = t->kh * t->kw * t->cig;
    /* A kernel row of kw * ic bytes is contiguous in the padded NHWC image when dw = 1: read it in
     * place, rounded up to kr bytes (the extra bytes meet zero levels; buffers have slack). A group's
     * row is not contiguous (the other groups' channels interleave): grouped convs gather rows. */
    t->seg = (t->kw * t->ic + kr - 1) / kr * kr;
    t->indirect = nd->op == MODEL_OP_CONV2D ? t->dw == 1 && t->groups == 1 : t->K % kr == 0;
    t->Kpack = nd->op == MODEL_OP_CONV2D && t->indirect ? t->kh * t->seg : (t->K + kr - 1) / kr * kr;
    t->ph = t->ih + (nd->op == MODEL_OP_CONV2D ? nd->pad[0] + nd->pad[2] : 0);
    t->pw = t->iw + (nd->op == MODEL_OP_CONV2D ? nd->pad[1] + nd->pad[3] : 0);
    t->is_logits = i == m->output;
    t->gpacked = q->isa->packed_size(t->cog, t->Kpack);
    int dwk = 0;
    ccq_status st;
    if (nd->op == MODEL_OP_CONV2D && t->groups > 1 && t->cig == 1 && !t->is_logits) {
        if ((st = depthwise_kernel_enabled(&dwk, err))) return st;
        if (dwk) depthwise_qinit(q, t);
    }
    t->lev = ccq_malloc((size_t)t->oc * t->Kpack);
    t->packed = ccq_malloc(t->dwm ? t->gpacked : t->gpacked * (size_t)t->groups);
    t->bias_q = ccq_malloc(sizeof(int32_t) * (size_t)t->oc);
    t->bias = ccq_malloc(sizeof(int32_t) * (size_t)t->oc);
    t->mult = ccq_malloc(sizeof(int32_t) * (size_t)t->oc);
    t->shift = ccq_malloc(sizeof(int32_t) * (size_t)t->oc);
    for (int o = 0; o < t->oc; o++) {
        const double sw = nd->wscale[o];
        const double b = nd->bias ? nd->bias[o] / (s_in * sw) : 0.0;
        if (!quant_acc_fits(b, t->K, model_node_wmax(nd)))
            return ccq_fail(err, CCQ_ERR_LIMIT,
                            "%s: node %d (%s): channel %d could overflow int32 accumulators (K = %d, %d-bit "
                            "weights, bias %.3g)",
                            m->path, i, nd->name, o, t->K, nd->bits, b);
        t->bias_q[o] = (int32_t)llround(b);
        int sh = 0;
        if (quant_multiplier(s_in * sw / nd->act_scale, &t->mult[o], &sh))
            return ccq_fail(err, CCQ_ERR_LIMIT, "%s: node %d (%s): requantization scale of channel %d out of range",
                            m->path, i, nd->name, o);
        t->shift[o] = sh;
    }
    qnet_update_levels(q, i);
    return CCQ_OK;
}

/* ---- integer forward ------------------------------------------------------------- */

/* dst[c * m + j] = src[c] for c < n, j < m (m = 2, MobileNet's multiplier, written out so that
 * the compiler vectorises it). */
static void repeat_bytes(uint8_t *dst, const uint8_t *src, size_t n, int m)
{
    if (m == 2) {
        for (size_t c = 0; c < n; c++) dst[2 * c] = dst[2 * c + 1] = src[c];
        return;
    }
    for (size_t c = 0; c < n; c++, dst += m)
        for (int j = 0; j < m; j++) dst[j] = src[c];
}

/* Copies one image into the padded buffer (zero point in the border). A depthwise conv with
 * channel multiplier m = dwm > 1 gets each input channel repeated m times (pixels of oc channels:
 * output channel o reads input channel o / m), so that the kernel's channels are the output's. */
static const uint8_t *pad_image(qnet *q, const qnet_node *t, const uint8_t *x)
{
    const int m = t->dwm > 1 ? t->dwm : 1;
    if (t->ph == t->ih && t->pw == t->iw && m == 1) return x;
    const size_t row = (size_t)t->iw * t->ic, prow = (size_t)t->pw * t->ic * m;
    memset(q->pad, t->zp_in, (size_t)t->ph * prow);
    for (int y = 0; y < t->ih; y++) {
        uint8_t *dst = q->pad + (size_t)(y + t->pt) * prow + (size_t)t->pl * t->ic * m;
        if (m == 1)
            memcpy(dst, x + y * row, row);
        else
            repeat_bytes(dst, x + y * row, row, m);
    }
    return q->pad;
}

/* Depthwise: every output pixel's window corner in the padded image, then one kernel call. */
static void depthwise_qfwd(qnet *q, const qnet_node *t, const uint8_t *x, uint8_t *y, int n)
{
    const int P = t->oh * t->ow;
    const size_t in_img = (size_t)t->ih * t->iw * t->ic;
    const kern_rq rq = {t->bias, t->mult, t->shift, t->zp_out, t->lo, t->hi};
    for (int img = 0; img < n; img++) {
        const uint8_t *xp = pad_image(q, t, x + img * in_img);
        for (int p = 0; p < P; p++)
            q->rows[p] = xp + ((size_t)(p / t->ow) * t->sh * t->pw + (size_t)(p % t->ow) * t->sw) * t->oc;
        const kern_dw a = {P, q->rows, t->K, t->dwoff, t->oc};
        q->isa->dw_u8(&a, t->packed, &rq, y + (size_t)img * P * t->oc, (size_t)t->oc);
    }
}

/* Group g's GEMM: output channels [g cog, (g + 1) cog) of rows a, written at row stride oc. */
static void run_gemm(const qnet *q, const qnet_node *t, int g, const kern_a *a, uint8_t *y, int32_t *logits)
{
    const int c0 = g * t->cog;
    const kern_rq rq = {t->bias + c0, t->mult + c0, t->shift + c0, t->zp_out, t->lo, t->hi};
    const int8_t *B = t->packed + (size_t)g * t->gpacked;
    if (t->is_logits)
        q->isa->gemm_i32(a, t->cog, B, &rq, logits + c0, (size_t)t->oc);
    else
        q->isa->gemm_u8(a, t->cog, B, &rq, y + c0, (size_t)t->oc);
}

static void conv_qfwd(qnet *q, int i, const uint8_t *const *xs, uint8_t *y, int n)
{
    const qnet_node *t = &q->nodes[i];
    const uint8_t *x = xs[0];
    const int P = t->oh * t->ow;
    const size_t in_img = (size_t)t->ih * t->iw * t->ic, prow = (size_t)t->pw * t->ic;
    const size_t cig = (size_t)t->cig, seg = (size_t)t->kw * cig;
    if (t->dwm) {
        depthwise_qfwd(q, t, x, y, n);
        return;
    }
    for (int img = 0; img < n; img++) {
        const uint8_t *xp = pad_image(q, t, x + img * in_img);
        uint8_t *yi = y + (size_t)img * P * t->oc;
        int32_t *li = q->logits + (size_t)img * P * t->oc;
        if (t->indirect) {
            /* Every output pixel is a row of kh segments read in place. */
            for (int p = 0; p < P; p++)
                q->rows[p] = xp + ((size_t)(p / t->ow) * t->sh * t->pw + (size_t)(p % t->ow) * t->sw) * t->ic;
            const kern_a a = {P, q->rows, t->kh, t->seg, (ptrdiff_t)(t->dh * prow)};
            run_gemm(q, t, 0, &a, yi, li);
            continue;
        }
        /* im2col rows of Kpack bytes (tail zero), ROW_TILE at a time, one group at a time. */
        for (int r0 = 0; r0 < P; r0 += ROW_TILE) {
            const int nr = P - r0 < ROW_TILE ? P - r0 : ROW_TILE;
            for (int g = 0; g < t->groups; g++) {
                for (int r = 0; r < nr; r++) {
                    const int p = r0 + r;
                    const uint8_t *src = xp + ((size_t)(p / t->ow) * t->sh * t->pw + (size_t)(p % t->ow) * t->sw) * t->ic +
                                         (size_t)g * cig;
                    uint8_t *row = q->col + (size_t)r * t->Kpack;
                    for (int ky = 0; ky < t->kh; ky++) {
                        const uint8_t *s = src + (size_t)ky * t->dh * prow;
                        if (t->dw == 1 && t->groups == 1)
                            memcpy(row + ky * seg, s, seg);
                        else
                            for (int kx = 0; kx < t->kw; kx++)
                                memcpy(row + ky * seg + (size_t)kx * cig, s + (size_t)kx * t->dw * t->ic, cig);
                    }
                    memset(row + t->K, 0, (size_t)(t->Kpack - t->K));
                    q->rows[r] = row;
                }
                const kern_a a = {nr, q->rows, 1, t->Kpack, 0};
                run_gemm(q, t, g, &a, yi + (size_t)r0 * t->oc, li + (size_t)r0 * t->oc);
            }
        }
    }
}

static void linear_qfwd(qnet *q, int i, const uint8_t *const *xs, uint8_t *y, int n)
{
    const qnet_node *t = &q->nodes[i];
    const uint8_t *x = xs[0];
    const size_t F = (size_t)t->K;
    for (int img = 0; img < n; img++) {
        if (t->indirect) {
            q->rows[img] = x + img * F;
        } else {
            uint8_t *row = q->col + (size_t)img * t->Kpack;
            memcpy(row, x + img * F, F);
            memset(row + F, 0, (size_t)t->Kpack - F);
            q->rows[img] = row;
        }
    }
    const kern_a a = {n, q->rows, 1, t->Kpack, 0};
    run_gemm(q, t, 0, &a, y, q->logits);
}

/* ---- C export ------------------------------------------------------------------- */

/* The generated code of conv2d and linear (linear: a 1x1 conv of a 1x1 image of F channels):
 * acc = bias[o] + sum of level * input over the window, a tap in the padding reading the input's
 * zero point, exactly as the engine's padded image; bias holds bias_q - zp_in * sum(levels), so
 * the sum is qfwd's. Any partial sum, in any order, is the bias plus some of the K products, so
 * bounded by |bias_q| + 2 * 255 * K * qmax < 2^31 (quant_acc_fits): int32 is exact. */
static const char k_conv_code[] =
    "/* conv2d / linear (a 1x1 conv of a 1x1 image): groups of cig input and cog output channels. */\n"
    "typedef struct {\n"
    "    int ih, iw, ic, oh, ow, oc, kh, kw, sh, sw, dh, dw, pt, pl, cig, cog, bits, logits;\n"
    "    int32_t zp_in, zp_out, lo, hi;\n"
    "    const uint8_t *w;    /* levels [oc][kh][kw][cig], `bits` bits each (cq_unpack) */\n"
    "    const int8_t *w8;    /* CQ_FAST: the same levels, one int8 each */\n"
    "    const int32_t *bias; /* bias_q - zp_in * sum of the channel's levels */\n"
    "    const int32_t *mult;\n"
    "    const uint8_t *shift;\n"
    "    const int8_t *lut;   /* learned levels: [oc][2^bits] values the codes in w index; 0: uniform */\n"
    "    const uint8_t *nz;   /* sparse storage: a bit per level, set where it is not zero (w then holds\n"
    "                          * the non-zero levels' codes only); 0: dense */\n"
    "    const int32_t *ro;   /* sparse storage: index in w of each output channel's first code */\n"
    "} cq_conv;\n"
    "\n"
    "#ifdef CQ_FAST\n"
    "#define CQ_W(packed, unpacked) 0, unpacked\n"
    "#define CQ_S(nz, ro) 0, 0\n"
    "#else\n"
    "#define CQ_W(packed, unpacked) packed, 0\n"
    "#define CQ_S(nz, ro) nz, ro\n"
    "\n"
    "/* n levels from bit `bit` of p: each `bits` bits holding level + 2^(bits-1) - 1, LSB first, or\n"
    " * with a table the code of the level lut[code]. */\n"
    "static void cq_unpack(const uint8_t *p, uint32_t bit, int n, int bits, const int8_t *lut, int8_t *out)\n"
    "{\n"
    "    const uint32_t mask = ((uint32_t)1 << bits) - 1;\n"
    "    const int qmax = (1 << (bits - 1)) - 1;\n"
    "    uint32_t buf;\n"
    "    int have, k;\n"
    "    p += bit >> 3;\n"
    "    buf = (uint32_t)*p++ >> (bit & 7);\n"
    "    have = 8 - (int)(bit & 7);\n"
    "    for (k = 0; k < n; k++) {\n"
    "        if (have < bits) {\n"
    "            buf |= (uint32_t)*p++ << have;\n"
    "            have += 8;\n"
    "        }\n"
    "        out[k] = lut ? lut[buf & mask] : (int8_t)((int)(buf & mask) - qmax);\n"
    "        buf >>= bits;\n"
    "        have -= bits;\n"
    "    }\n"
    "}\n"
    "#endif\n"
    "\n"
    "/* Output channel o of pixel p into y: a clamped level, or for the logits node the int32 logit. */\n"
    "static void cq_conv_out(const cq_conv *c, int32_t acc, int o, long p, void *y)\n"
    "{\n"
    "    const int32_t v = cq_requant(acc, c->mult[o], c->shift[o]);\n"
    "    if (c->logits)\n"
    "        ((int32_t *)y)[p * c->oc + o] = v;\n"
    "    else\n"
    "        ((uint8_t *)y)[p * c->oc + o] = cq_clamp(c->zp_out + (int64_t)v, c->lo, c->hi);\n"
    "}\n"
    "\n"
    "/* sum of x[k] w[k], k < n: straight-line blocks of 16 and 4 (unrolled for scalar targets,\n"
    " * vectorisable as they stand) */\n"
    "static int32_t cq_dot(const uint8_t *x, const int8_t *w, int n)\n"
    "{\n"
    "    int32_t acc = 0;\n"
    "    for (; n >= 16; n -= 16, x += 16, w += 16) {\n"
    "        acc += (int32_t)x[0] * w[0] + (int32_t)x[1] * w[1] + (int32_t)x[2] * w[2] + (int32_t)x[3] * w[3];\n"
    "        acc += (int32_t)x[4] * w[4] + (int32_t)x[5] * w[5] + (int32_t)x[6] * w[6] + (int32_t)x[7] * w[7];\n"
    "        acc += (int32_t)x[8] * w[8] + (int32_t)x[9] * w[9] + (int32_t)x[10] * w[10] + (int32_t)x[11] * w[11];\n"
    "        acc += (int32_t)x[12] * w[12] + (int32_t)x[13] * w[13] + (int32_t)x[14] * w[14] + (int32_t)x[15] * w[15];\n"
    "    }\n"
    "    for (; n >= 4; n -= 4, x += 4, w += 4)\n"
    "        acc += (int32_t)x[0] * w[0] + (int32_t)x[1] * w[1] + (int32_t)x[2] * w[2] + (int32_t)x[3] * w[3];\n"
    "    for (; n > 0; n--) acc += (int32_t)*x++ * *w++;\n"
    "    return acc;\n"
    "}\n"
    "\n"
    "/* One output channel at a time (its levels unpacked into cq_wbuf, or read in place with\n"
    " * CQ_FAST), then every pixel into y (uint8_t, or int32_t for the logits node). A window inside\n"
    " * the image of a dense undilated conv reads each kernel row as kw * ic contiguous bytes;\n"
    " * elsewhere tap by tap, a tap in the padding adding zp_in times its levels. */\n"
    "static void cq_conv_run(const cq_conv *c, const uint8_t *x, void *y)\n"
    "{\n"
    "    const int K = c->kh * c->kw * c->cig, row = c->kw * c->cig;\n"
    "    const int rows = c->cig == c->ic && c->dw == 1;\n"
    "    int o, oy, ox, ky, kx, ci;\n"
    "    for (o = 0; o < c->oc; o++) {\n"
    "        const uint8_t *xg = x + (o / c->cog) * c->cig;\n"
    "#ifdef CQ_FAST\n"
    "        const int8_t *wo = c->w8 + (long)o * K;\n"
    "#else\n"
    "        const int8_t *wo = cq_wbuf;\n"
    "        if (c->nz)\n"
    "            cq_unpack_sparse(c->nz, c->w, (uint32_t)o * (uint32_t)K, (uint32_t)c->ro[o], K, c->bits, cq_wbuf);\n"
    "        else\n"
    "            cq_unpack(c->w, (uint32_t)o * (uint32_t)K * (uint32_t)c->bits, K, c->bits,\n"
    "                      c->lut ? c->lut + ((long)o << c->bits) : 0, cq_wbuf);\n"
    "#endif\n"
    "        for (oy = 0; oy < c->oh; oy++) {\n"
    "            const int iy0 = oy * c->sh - c->pt, yin = iy0 >= 0 && iy0 + (c->kh - 1) * c->dh < c->ih;\n"
    "            for (ox = 0; ox < c->ow; ox++) {\n"
    "                const int ix0 = ox * c->sw - c->pl;\n"
    "                int32_t acc = c->bias[o];\n"
    "                const int8_t *w = wo;\n"
    "                if (rows && yin && ix0 >= 0 && ix0 + c->kw <= c->iw) {\n"
    "                    const uint8_t *xp = xg + ((long)iy0 * c->iw + ix0) * c->ic;\n"
    "                    for (ky = 0; ky < c->kh; ky++, w += row) acc += cq_dot(xp + (long)ky * c->dh * c->iw * c->ic, w, row);\n"
    "                } else {\n"
    "                    for (ky = 0; ky < c->kh; ky++) {\n"
    "                        const int iy = iy0 + ky * c->dh;\n"
    "                        for (kx = 0; kx < c->kw; kx++, w += c->cig) {\n"
    "                            const int ix = ix0 + kx * c->dw;\n"
    "                            if (iy >= 0 && iy < c->ih && ix >= 0 && ix < c->iw)\n"
    "                                acc += cq_dot(xg + ((long)iy * c->iw + ix) * c->ic, w, c->cig);\n"
    "                            else\n"
    "                                for (ci = 0; ci < c->cig; ci++) acc += c->zp_in * w[ci];\n"
    "                        }\n"
    "                    }\n"
    "                }\n"
    "                cq_conv_out(c, acc, o, (long)oy * c->ow + ox, y);\n"
    "            }\n"
    "        }\n"
    "    }\n"
    "}\n"
    "\n";

/* Sets `bits` bits at bit position pos of p to v (p zeroed beforehand), LSB first. */
static void put_bits(uint8_t *p, uint64_t pos, unsigned v, int bits)
{
    for (int b = 0; b < bits; b++, pos++)
        if (v >> b & 1u) p[pos >> 3] |= (uint8_t)(1u << (pos & 7));
}

/* The `bits` bits at bit position pos of p, LSB first. */
static unsigned get_bits(const uint8_t *p, uint64_t pos, int bits)
{
    unsigned v = 0;
    for (int b = 0; b < bits; b++, pos++) v |= (unsigned)(p[pos >> 3] >> (pos & 7) & 1u) << b;
    return v;
}

/* The levels in the generated code's order [oc][kh][kw][cig] (the NHWC order of a kernel row),
 * packed at the layer's width (learned levels: their codes, and the codebook as the table `lut`)
 * and, for NAME_FAST, one byte each; the constants are the qnet's. */
static ccq_status weighted_cexport(cexport_ctx *x, const qnet *q, int i, ccq_err *err)
{
    (void)err;
    const model_node *nd = &q->m->nodes[i];
    const qnet_node *t = &q->nodes[i];
    const int oc = t->oc, cig = t->cig, kh = t->kh, kw = t->kw, bits = nd->bits, qmax = model_qmax(bits);
    const int64_t n = (int64_t)oc * t->K, nbytes = (n * bits + 7) / 8;
    uint8_t *packed = ccq_calloc((size_t)nbytes, 1);
    int8_t *lev = ccq_malloc((size_t)n);
    int64_t k = 0;
    /* model order: [oc][cig][kh][kw] ([oc][F] for linear: kh = kw = 1, cig = F) */
    for (int o = 0; o < oc; o++)
        for (int ky = 0; ky < kh; ky++)
            for (int kx = 0; kx < kw; kx++)
                for (int ci = 0; ci < cig; ci++, k++) {
                    lev[k] = nd->levels[(((int64_t)o * cig + ci) * kh + ky) * kw + kx];
                    const int code = nd->codebook ? model_code_of(nd, o, lev[k]) : lev[k] + qmax;
                    put_bits(packed, (uint64_t)k * (uint64_t)bits, (unsigned)code, bits);
                }
    for (k = 0; k < n; k++) {
        const int code = (int)get_bits(packed, (uint64_t)k * (uint64_t)bits, bits);
        CCQ_ASSERT((nd->codebook ? nd->codebook[(k / t->K) * model_ncodes(nd) + code] : code - qmax) == lev[k]);
    }
    /* sparse storage (model_node_deployed_sparse): the bitmap, the non-zero codes, the row index */
    const int sparse = model_node_deployed_sparse(nd), cw = model_sparse_code_bits(bits);
    uint8_t *nz = NULL, *codes = NULL;
    int32_t *ro = NULL;
    int64_t nnz = 0;
    if (sparse) {
        nz = ccq_calloc((size_t)(n + 7) / 8, 1);
        codes = ccq_calloc((size_t)(n * cw + 7) / 8 + 1, 1);
        ro = ccq_malloc(sizeof(int32_t) * (size_t)oc);
        for (k = 0; k < n; k++) {
            if (k % t->K == 0) ro[k / t->K] = (int32_t)nnz;
            if (!lev[k]) continue;
            put_bits(nz, (uint64_t)k, 1u, 1);
            const int code = bits == 2 ? (lev[k] > 0) : lev[k] < 0 ? lev[k] + qmax : lev[k] + qmax - 1;
            put_bits(codes, (uint64_t)nnz * (uint64_t)cw, (unsigned)code, cw);
            nnz++;
        }
        CCQ_ASSERT((n + 7) / 8 + (nnz * cw + 7) / 8 + 4 * (int64_t)oc == model_node_weight_bytes(nd));
    }
    uint8_t *shift = ccq_malloc((size_t)oc);
    for (int o = 0; o < oc; o++) {
        CCQ_ASSERT(t->shift[o] >= 1 && t->shift[o] <= 62);
        shift[o] = (uint8_t)t->shift[o];
    }
    cexport_need(x, CEXPORT_RT_CLAMP);
    cexport_need(x, CEXPORT_RT_REQUANT);
    cexport_need(x, CEXPORT_RT_UNPACK_SPARSE); /* cq_conv_run's sparse rows */
    cexport_code(x, MODEL_OP_CONV2D, k_conv_code);
    if (sparse) {
        cexport_array(x, i, "w", codes, (nnz * cw + 7) / 8 ? (nnz * cw + 7) / 8 : 1, 1, 1, CEXPORT_LEVELS);
        cexport_array(x, i, "nz", nz, (n + 7) / 8, 1, 1, CEXPORT_LEVELS);
        cexport_array(x, i, "ro", ro, oc, 4, 0, CEXPORT_LEVELS);
    } else {
        cexport_array(x, i, "w", packed, nbytes, 1, 1, CEXPORT_LEVELS);
    }
    cexport_array(x, i, "w8", lev, n, 1, 0, CEXPORT_LEVELS_FAST);
    cexport_array(x, i, "b", t->bias, oc, 4, 0, CEXPORT_CONST);
    cexport_array(x, i, "m", t->mult, oc, 4, 0, CEXPORT_CONST);
    cexport_array(x, i, "s", shift, oc, 1, 1, CEXPORT_CONST);
    char lut[32] = "0";
    if (nd->codebook) {
        cexport_array(x, i, "lut", nd->codebook, (int64_t)oc * model_ncodes(nd), 1, 0, CEXPORT_CONST);
        snprintf(lut, sizeof lut, "n%d_lut", i);
    }
    char sp[64] = "0, 0";
    if (sparse) snprintf(sp, sizeof sp, "CQ_S(n%d_nz, n%d_ro)", i, i);
    cexport_data(x,
                 "static const cq_conv n%d = {%d, %d, %d, %d, %d, %d, %d, %d, %d, %d, %d, %d, %d, %d, %d, %d, %d, %d,\n"
                 "    %d, %d, %d, %d, CQ_W(n%d_w, n%d_w8), n%d_b, n%d_m, n%d_s, %s, %s};\n\n",
                 i, t->ih, t->iw, t->ic, t->oh, t->ow, oc, kh, kw, t->sh, t->sw, t->dh, t->dw, t->pt, t->pl, cig, t->cog,
                 bits, t->is_logits, t->zp_in, t->zp_out, t->lo, t->hi, i, i, i, i, i, lut, sp);
    cexport_scratch(x, (size_t)t->K);
    cexport_call(x, "cq_conv_run(&n%d, %s, %s);", i, cexport_in(x, i, 0), cexport_out(x, i));
    ccq_free(packed), ccq_free(lev), ccq_free(shift), ccq_free(nz), ccq_free(codes), ccq_free(ro);
    return CCQ_OK;
}

/* ---- ONNX export ------------------------------------------------------------------ */

/* DequantizeLinear(levels int8, wscale, 0, axis 0) for the weight (the model's levels and float32
 * scales unchanged; the width in the initializer's doc_string) and DequantizeLinear(bias_q int32,
 * s_in * s_w, 0, axis 0) for the bias (the qnet's bias_q: the accumulator's own integers), then
 * Conv or Gemm (transB) on the dequantized input. */
static ccq_status weighted_onnx(onnxexport_ctx *x, const qnet *q, int i, ccq_err *err)
{
    (void)err;
    const model *m = q->m;
    const model_node *nd = &m->nodes[i];
    const qnet_node *t = &q->nodes[i];
    const int conv = nd->op == MODEL_OP_CONV2D, oc = nd->shape.c;
    const model_shape in = model_in_shape(m, i, 0);
    char lev[ONNXEXPORT_NAME_MAX], wsc[ONNXEXPORT_NAME_MAX], wzp[ONNXEXPORT_NAME_MAX], w[ONNXEXPORT_NAME_MAX];
    char bq[ONNXEXPORT_NAME_MAX], bsc[ONNXEXPORT_NAME_MAX], bzp[ONNXEXPORT_NAME_MAX], b[ONNXEXPORT_NAME_MAX];
    ONNXEXPORT_NAME(lev, i, "levels"), ONNXEXPORT_NAME(wsc, i, "wscale"), ONNXEXPORT_NAME(wzp, i, "wzp");
    ONNXEXPORT_NAME(w, i, "w"), ONNXEXPORT_NAME(bq, i, "bias_q"), ONNXEXPORT_NAME(bsc, i, "bias_scale");
    ONNXEXPORT_NAME(bzp, i, "bias_zp"), ONNXEXPORT_NAME(b, i, "b");
    const int64_t wd[4] = {oc, conv ? in.c / nd->groups : model_numel(in), nd->kernel[0], nd->kernel[1]};
    const int64_t cd[1] = {oc};
    /* learned levels: the codebook rows follow on a second line ("ccq:codebook V V .."), so that
     * onnx2ccq gives back the same file (a channel need not use every value of its row) */
    const size_t ncb = nd->codebook ? (size_t)oc * (size_t)model_ncodes(nd) : 0;
    char *doc = ccq_malloc(32 + 5 * ncb);
    int len = snprintf(doc, 32, "ccq:bits %d%s", nd->bits, ncb ? "\nccq:codebook" : "");
    for (size_t k = 0; k < ncb; k++) len += snprintf(doc + len, 6, " %d", nd->codebook[k]);
    onnxexport_const(x, lev, ONNXEXPORT_INT8, wd, conv ? 4 : 2, nd->levels, doc);
    ccq_free(doc);
    onnxexport_const(x, wsc, ONNXEXPORT_FLOAT, cd, 1, nd->wscale, NULL);
    int8_t *z8 = ccq_calloc((size_t)oc, 1);
    onnxexport_const(x, wzp, ONNXEXPORT_INT8, cd, 1, z8, NULL);
    const onnxexport_attr axis0 = ONNXEXPORT_AINT("axis", 0);
    const char *wi[3] = {lev, wsc, wzp};
    onnxexport_node(x, "DequantizeLinear", NULL, wi, 3, w, &axis0, 1, NULL);
    if (nd->bias) {
        const double s_in = op_in_scale(m, nd->in[0]);
        float *bs = ccq_malloc(sizeof(float) * (size_t)oc);
        int32_t *z32 = ccq_calloc((size_t)oc, sizeof(int32_t));
        for (int o = 0; o < oc; o++) bs[o] = (float)(s_in * nd->wscale[o]);
        onnxexport_const(x, bq, ONNXEXPORT_INT32, cd, 1, t->bias_q, NULL);
        onnxexport_const(x, bsc, ONNXEXPORT_FLOAT, cd, 1, bs, NULL);
        onnxexport_const(x, bzp, ONNXEXPORT_INT32, cd, 1, z32, NULL);
        const char *bi[3] = {bq, bsc, bzp};
        onnxexport_node(x, "DequantizeLinear", NULL, bi, 3, b, &axis0, 1, NULL);
        ccq_free(bs), ccq_free(z32);
    }
    ccq_free(z8);
    const char *ins[3] = {onnxexport_in(x, i, 0), w, b};
    char out[ONNXEXPORT_NAME_MAX];
    snprintf(out, sizeof out, "%s", onnxexport_out(x, i));
    if (conv) {
        const int64_t k[2] = {nd->kernel[0], nd->kernel[1]}, s[2] = {nd->stride[0], nd->stride[1]};
        const int64_t d[2] = {nd->dilation[0], nd->dilation[1]};
        const int64_t p[4] = {nd->pad[0], nd->pad[1], nd->pad[2], nd->pad[3]}; /* ONNX: h, w begin; h, w end */
        const onnxexport_attr a[5] = {ONNXEXPORT_AINTS("kernel_shape", k, 2), ONNXEXPORT_AINTS("strides", s, 2),
                                      ONNXEXPORT_AINTS("pads", p, 4), ONNXEXPORT_AINTS("dilations", d, 2),
                                      ONNXEXPORT_AINT("group", nd->groups)};
        onnxexport_node(x, "Conv", onnxexport_node_name(x, i), ins, nd->bias ? 3 : 2, out, a, 5, NULL);
    } else {
        const onnxexport_attr a = ONNXEXPORT_AINT("transB", 1);
        onnxexport_node(x, "Gemm", onnxexport_node_name(x, i), ins, nd->bias ? 3 : 2, out, &a, 1, NULL);
    }
    onnxexport_result(x, i, out);
    return CCQ_OK;
}

const op_traits op_conv2d = {
    .name = "conv2d", .min_in = 1, .max_in = 1, .flags = OP_WEIGHTED | OP_FUSES | OP_CALIBRATED,
    .load = conv_load, .save = weighted_save, .ffwd = conv_ffwd, .fscratch = conv_fscratch,
    .qinit = weighted_qinit, .qfwd = conv_qfwd, .cexport = weighted_cexport, .onnx = weighted_onnx,
};

const op_traits op_linear = {
    .name = "linear", .min_in = 1, .max_in = 1, .flags = OP_WEIGHTED | OP_FUSES | OP_CALIBRATED,
    .load = linear_load, .save = weighted_save, .ffwd = linear_ffwd,
    .qinit = weighted_qinit, .qfwd = linear_qfwd, .cexport = weighted_cexport, .onnx = weighted_onnx,
};
