/*
 * qnet.c: integer-only forward pass (see qnet.h). Set-up (qnet_init)
 * derives integer parameters from the model's float scales once; the
 * forward pass uses only integer arithmetic and the selected kernels.
 */
#include "ccq/qnet.h"

#include <math.h>
#include <string.h>

#include "ccq/quant.h"

enum { QNET_ROW_TILE = 128 }; /* im2col rows per kernel call: A tile stays in L1/L2 */

struct qnet_node {
    model_op op;
    int n_in, in[2];
    int oc, oh, ow, ic, ih, iw;
    int relu;
    int32_t zp_in, zp_out, lo, hi;
    /* conv2d / linear */
    int kh, kw, sh, sw, dh, dw, pt, pl;
    int K;           /* kh * kw * ic */
    int Kpack;       /* levels per channel as packed (zero where padded) */
    int seg;         /* indirect conv: bytes per kernel row, kw * ic rounded up to kr */
    int indirect;    /* read in place: conv with dw = 1 (from the padded image), linear with K % kr == 0 */
    int is_logits;
    int ph, pw;      /* padded input height, width */
    int8_t *lev;     /* [oc][Kpack], K in (ky, kx, ci) order, zero tail */
    int8_t *packed;  /* ISA-packed lev */
    int32_t *bias_q; /* round(bias / (s_in * s_w)) */
    int32_t *bias;   /* bias_q - zp_in * sum(lev): what the kernel adds */
    int32_t *mult, *shift;
    /* add (kern_add semantics) */
    kern_add add;
    /* batchnorm: out = zp + rshift((q - zp_in) * cm[c] + cb[c], csh) */
    int32_t *cm, csh;
    int64_t *cb;
    /* pools */
    int pb, pr, ceil_mode, cip;
};

static int64_t rshift_round(int64_t v, int s)
{
    const int64_t r = (int64_t)1 << (s - 1);
    return v >= 0 ? (v + r) >> s : -((-v + r) >> s);
}

static uint8_t clamp_u8(int64_t v, int32_t lo, int32_t hi) { return (uint8_t)(v < lo ? lo : v > hi ? hi : v); }

static float in_scale(const model *m, int src) { return src < 0 ? m->in_scale : m->nodes[src].act_scale; }
static int in_zp(const model *m, int src) { return src < 0 ? m->in_zp : m->nodes[src].act_zp; }

/* A shift s such that round(ratio * 2^s) < 2^30 for every ratio <= max_ratio, at most 40. */
static ccq_status ratio_shift(double max_ratio, int32_t *shift)
{
    int e = 0;
    if (!(max_ratio > 0) || !isfinite(max_ratio) || max_ratio >= 536870912.0) return CCQ_ERR_LIMIT;
    frexp(max_ratio, &e);
    int s = 30 - e;
    *shift = s > 40 ? 40 : s;
    return *shift >= 1 ? CCQ_OK : CCQ_ERR_LIMIT;
}

static void compute_bias(qnet_node *t)
{
    for (int o = 0; o < t->oc; o++) {
        int64_t s = 0;
        for (int k = 0; k < t->Kpack; k++) s += t->lev[(size_t)o * t->Kpack + k];
        t->bias[o] = (int32_t)(t->bias_q[o] - (int64_t)t->zp_in * s);
    }
}

void qnet_update_levels(qnet *q, int node)
{
    qnet_node *t = &q->nodes[node];
    const model_node *nd = &q->m->nodes[node];
    CCQ_ASSERT(nd->op == MODEL_OP_CONV2D || nd->op == MODEL_OP_LINEAR);
    memset(t->lev, 0, (size_t)t->oc * t->Kpack);
    if (nd->op == MODEL_OP_CONV2D) {
        /* [oc][ic][kh][kw] -> [oc][kh][kw][ic] for NHWC rows */
        /* indirect rows: each kernel row is a segment of t->seg bytes, zero beyond kw * ic */
        const size_t rowlen = t->indirect ? (size_t)t->seg : (size_t)t->kw * t->ic;
        for (int o = 0; o < t->oc; o++)
            for (int c = 0; c < t->ic; c++)
                for (int y = 0; y < t->kh; y++)
                    for (int x = 0; x < t->kw; x++)
                        t->lev[(size_t)o * t->Kpack + y * rowlen + (size_t)x * t->ic + c] =
                            nd->levels[(((size_t)o * t->ic + c) * t->kh + y) * t->kw + x];
    } else {
        for (int o = 0; o < t->oc; o++) memcpy(t->lev + (size_t)o * t->Kpack, nd->levels + (size_t)o * t->K, (size_t)t->K);
    }
    compute_bias(t);
    q->isa->pack(t->lev, t->oc, t->Kpack, t->packed);
}

void qnet_set_level(qnet *q, int node, int64_t w, int8_t v)
{
    qnet_node *t = &q->nodes[node];
    CCQ_ASSERT(t->op == MODEL_OP_CONV2D || t->op == MODEL_OP_LINEAR);
    const int64_t per = (int64_t)t->K; /* levels per output channel in the model's order */
    CCQ_ASSERT(w >= 0 && w < per * t->oc);
    const int o = (int)(w / per);
    int k = (int)(w % per); /* model order: [ic][kh][kw] for conv */
    if (t->op == MODEL_OP_CONV2D) {
        const int c = k / (t->kh * t->kw), y = k / t->kw % t->kh, x = k % t->kw;
        const int rowlen = t->indirect ? t->seg : t->kw * t->ic;
        k = y * rowlen + x * t->ic + c;
    }
    int8_t *l = &t->lev[(size_t)o * t->Kpack + k];
    if (*l == v) return;
    t->bias[o] -= t->zp_in * (int32_t)(v - *l); /* bias = bias_q - zp_in * sum(levels of o) */
    *l = v;
    const ptrdiff_t off = q->isa->packed_offset(t->packed, t->oc, t->Kpack, o, k, v);
    if (off >= 0) t->packed[off] = v;
    else q->isa->pack(t->lev, t->oc, t->Kpack, t->packed);
}

static ccq_status init_affine_layer(qnet *q, int i, ccq_err *err)
{
    const model *m = q->m;
    const model_node *nd = &m->nodes[i];
    qnet_node *t = &q->nodes[i];
    const double s_in = in_scale(m, nd->in[0]);
    if (nd->op == MODEL_OP_CONV2D) {
        t->kh = nd->kernel[0], t->kw = nd->kernel[1], t->sh = nd->stride[0], t->sw = nd->stride[1];
        t->dh = nd->dilation[0], t->dw = nd->dilation[1], t->pt = nd->pad[0], t->pl = nd->pad[1];
    } else {
        t->kh = t->kw = t->sh = t->sw = t->dh = t->dw = 1;
        t->ic = (int)model_numel(model_in_shape(m, i, 0)), t->ih = t->iw = 1;
    }
    const int kr = q->isa->kr;
    t->K = t->kh * t->kw * t->ic;
    /* A kernel row of kw * ic bytes is contiguous in the padded NHWC image when dw = 1: read it in
     * place, rounded up to kr bytes (the extra bytes meet zero levels; buffers have slack). */
    t->seg = (t->kw * t->ic + kr - 1) / kr * kr;
    t->indirect = nd->op == MODEL_OP_CONV2D ? t->dw == 1 : t->K % kr == 0;
    t->Kpack = nd->op == MODEL_OP_CONV2D && t->indirect ? t->kh * t->seg : (t->K + kr - 1) / kr * kr;
    t->ph = t->ih + (nd->op == MODEL_OP_CONV2D ? nd->pad[0] + nd->pad[2] : 0);
    t->pw = t->iw + (nd->op == MODEL_OP_CONV2D ? nd->pad[1] + nd->pad[3] : 0);
    t->is_logits = i == m->output;
    t->lev = ccq_malloc((size_t)t->oc * t->Kpack);
    t->packed = ccq_malloc(q->isa->packed_size(t->oc, t->Kpack));
    t->bias_q = ccq_malloc(sizeof(int32_t) * (size_t)t->oc);
    t->bias = ccq_malloc(sizeof(int32_t) * (size_t)t->oc);
    t->mult = ccq_malloc(sizeof(int32_t) * (size_t)t->oc);
    t->shift = ccq_malloc(sizeof(int32_t) * (size_t)t->oc);
    for (int o = 0; o < t->oc; o++) {
        const double sw = nd->wscale[o];
        const double b = nd->bias ? nd->bias[o] / (s_in * sw) : 0.0;
        if (!quant_acc_fits(b, t->K, model_qmax(nd->bits)))
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

static ccq_status init_node(qnet *q, int i, ccq_err *err)
{
    const model *m = q->m;
    const model_node *nd = &m->nodes[i];
    qnet_node *t = &q->nodes[i];
    const model_shape in = model_in_shape(m, i, 0);
    t->op = nd->op;
    t->n_in = nd->n_in;
    t->in[0] = nd->in[0], t->in[1] = nd->n_in > 1 ? nd->in[1] : -1;
    t->oc = nd->shape.c, t->oh = nd->shape.h, t->ow = nd->shape.w;
    t->ic = in.c, t->ih = in.h, t->iw = in.w;
    t->relu = nd->relu;
    t->zp_in = in_zp(m, nd->in[0]);
    t->zp_out = nd->act_zp;
    t->lo = nd->relu ? nd->act_zp : 0;
    t->hi = 255;
    switch (nd->op) {
    case MODEL_OP_CONV2D:
    case MODEL_OP_LINEAR:
        return init_affine_layer(q, i, err);
    case MODEL_OP_ADD: {
        /* int32 arithmetic (kern_add): multipliers below 2^21, shift at most 30 */
        const double ra = in_scale(m, nd->in[0]) / nd->act_scale, rb = in_scale(m, nd->in[1]) / nd->act_scale;
        int32_t sh = 0;
        if (ratio_shift(fmax(ra, rb), &sh) || sh - 9 < 1)
            return ccq_fail(err, CCQ_ERR_LIMIT, "%s: node %d (%s): input/output scales too far apart", m->path, i,
                            nd->name);
        sh -= 9; /* ratio_shift leaves multipliers below 2^30 */
        if (sh > 30) sh = 30;
        t->add = (kern_add){.za = in_zp(m, nd->in[0]), .am = (int32_t)llround(ldexp(ra, sh)),
                            .zb = in_zp(m, nd->in[1]), .bm = (int32_t)llround(ldexp(rb, sh)),
                            .shift = sh, .zo = nd->act_zp, .lo = t->lo, .hi = 255};
        return CCQ_OK;
    }
    case MODEL_OP_BATCHNORM: {
        const double s_in = in_scale(m, nd->in[0]), s_out = nd->act_scale;
        double mx = 1e-30;
        for (int c = 0; c < t->oc; c++)
            mx = fmax(mx, fabs(nd->gamma[c] / sqrt((double)nd->var[c] + nd->eps) * s_in / s_out));
        if (ratio_shift(mx, &t->csh))
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
    case MODEL_OP_MAXPOOL:
    case MODEL_OP_AVGPOOL:
        t->kh = nd->kernel[0], t->kw = nd->kernel[1], t->sh = nd->stride[0], t->sw = nd->stride[1];
        t->pt = nd->pad[0], t->pl = nd->pad[1], t->pb = nd->pad[2], t->pr = nd->pad[3];
        t->ceil_mode = nd->ceil_mode, t->cip = nd->count_include_pad;
        return CCQ_OK;
    default:
        return CCQ_OK;
    }
}

ccq_status qnet_init(qnet *q, const model *m, const kern_isa *isa, int mb, ccq_err *err)
{
    ccq_status st;
    memset(q, 0, sizeof *q);
    if (!m->quantized) return ccq_fail(err, CCQ_ERR_FORMAT, "%s: not a quantized model", m->path);
    if (!isa && (st = kern_select(&isa, err))) return st;
    for (int i = 0; i < m->n_nodes; i++)
        for (int j = 0; j < m->nodes[i].n_in; j++)
            if (m->nodes[i].in[j] == m->output)
                return ccq_fail(err, CCQ_ERR_FORMAT, "%s: the logits node feeds node %d: unsupported", m->path, i);
    q->m = m;
    q->isa = isa;
    q->mb = mb;
    q->nodes = ccq_calloc((size_t)m->n_nodes, sizeof(qnet_node));
    for (int i = 0; i < m->n_nodes; i++)
        if ((st = init_node(q, i, err))) {
            qnet_free(q);
            return st;
        }
    /* One slab: input, every node's output, padded image, im2col tile; 64-byte aligned pieces. */
    size_t total = 0, col = 64, pad = 64, rows = (size_t)mb + QNET_ROW_TILE;
    /* +64: the indirect kernels may read up to kr - 1 bytes past a window (against zero levels) */
    const size_t in_bytes = ((size_t)mb * (size_t)model_numel(m->input) + 64 + 63) & ~(size_t)63;
    total += in_bytes;
    for (int i = 0; i < m->n_nodes; i++) {
        total += ((size_t)mb * (size_t)model_numel(m->nodes[i].shape) + 64 + 63) & ~(size_t)63;
        const qnet_node *t = &q->nodes[i];
        if (t->op == MODEL_OP_CONV2D || t->op == MODEL_OP_LINEAR) {
            size_t c = (size_t)(QNET_ROW_TILE > mb ? QNET_ROW_TILE : mb) * (size_t)t->Kpack;
            if (c > col) col = c;
            const size_t pb = (size_t)t->ph * t->pw * t->ic;
            if (pb > pad) pad = pb;
            if ((size_t)t->oh * t->ow > rows) rows = (size_t)t->oh * t->ow;
        }
    }
    col = (col + 63) & ~(size_t)63;
    pad = (pad + 64 + 63) & ~(size_t)63;
    q->col_bytes = col;
    total += col + pad;
    q->slab = ccq_calloc(total + 64, 1); /* zeroed: slack bytes are read (against zero levels) */
    q->act = ccq_malloc(sizeof(uint8_t *) * (size_t)m->n_nodes);
    uint8_t *p = (uint8_t *)(((uintptr_t)q->slab + 63) & ~(uintptr_t)63);
    q->input = p;
    p += in_bytes;
    for (int i = 0; i < m->n_nodes; i++) {
        q->act[i] = p;
        p += ((size_t)mb * (size_t)model_numel(m->nodes[i].shape) + 64 + 63) & ~(size_t)63;
    }
    q->act_home = ccq_malloc(sizeof(uint8_t *) * (size_t)m->n_nodes);
    memcpy(q->act_home, q->act, sizeof(uint8_t *) * (size_t)m->n_nodes);
    q->col = p;
    q->pad = p + col;
    q->rows = ccq_malloc(sizeof(uint8_t *) * rows);
    q->logits = ccq_malloc(sizeof(int32_t) * (size_t)mb * (size_t)m->classes);
    q->logits_scale = m->nodes[m->output].act_scale;
    return CCQ_OK;
}

void qnet_free(qnet *q)
{
    for (int i = 0; q->nodes && i < q->m->n_nodes; i++) {
        qnet_node *t = &q->nodes[i];
        ccq_free(t->lev), ccq_free(t->packed), ccq_free(t->bias_q), ccq_free(t->bias);
        ccq_free(t->mult), ccq_free(t->shift), ccq_free(t->cm), ccq_free(t->cb);
    }
    ccq_free(q->nodes);
    ccq_free(q->slab);
    ccq_free(q->act);
    ccq_free(q->act_home);
    ccq_free(q->rows);
    ccq_free(q->logits);
    memset(q, 0, sizeof *q);
}

/* ---- forward ------------------------------------------------------------ */

/* Copies one image into the padded buffer (zero point in the border). */
static const uint8_t *pad_image(qnet *q, const qnet_node *t, const uint8_t *x)
{
    if (t->ph == t->ih && t->pw == t->iw) return x;
    const size_t row = (size_t)t->iw * t->ic, prow = (size_t)t->pw * t->ic;
    memset(q->pad, t->zp_in, (size_t)t->ph * prow);
    for (int y = 0; y < t->ih; y++) memcpy(q->pad + (size_t)(y + t->pt) * prow + (size_t)t->pl * t->ic, x + y * row, row);
    return q->pad;
}

static void run_gemm(const qnet *q, const qnet_node *t, const kern_a *a, uint8_t *y, int32_t *logits)
{
    const kern_rq rq = {t->bias, t->mult, t->shift, t->zp_out, t->lo, t->hi};
    if (t->is_logits)
        q->isa->gemm_i32(a, t->oc, t->packed, &rq, logits, (size_t)t->oc);
    else
        q->isa->gemm_u8(a, t->oc, t->packed, &rq, y, (size_t)t->oc);
}

static void run_conv(qnet *q, const qnet_node *t, const uint8_t *x, uint8_t *y, int n)
{
    const int P = t->oh * t->ow;
    const size_t in_img = (size_t)t->ih * t->iw * t->ic, prow = (size_t)t->pw * t->ic;
    const size_t seg = (size_t)t->kw * t->ic;
    for (int img = 0; img < n; img++) {
        const uint8_t *xp = pad_image(q, t, x + img * in_img);
        uint8_t *yi = y + (size_t)img * P * t->oc;
        int32_t *li = q->logits + (size_t)img * P * t->oc;
        if (t->indirect) {
            /* Every output pixel is a row of kh segments read in place. */
            for (int p = 0; p < P; p++)
                q->rows[p] = xp + ((size_t)(p / t->ow) * t->sh * t->pw + (size_t)(p % t->ow) * t->sw) * t->ic;
            const kern_a a = {P, q->rows, t->kh, t->seg, (ptrdiff_t)(t->dh * prow)};
            run_gemm(q, t, &a, yi, li);
            continue;
        }
        /* im2col rows of Kpack bytes (tail zero), ROW_TILE at a time. */
        for (int r0 = 0; r0 < P; r0 += QNET_ROW_TILE) {
            const int nr = P - r0 < QNET_ROW_TILE ? P - r0 : QNET_ROW_TILE;
            for (int r = 0; r < nr; r++) {
                const int p = r0 + r;
                const uint8_t *src = xp + ((size_t)(p / t->ow) * t->sh * t->pw + (size_t)(p % t->ow) * t->sw) * t->ic;
                uint8_t *row = q->col + (size_t)r * t->Kpack;
                for (int ky = 0; ky < t->kh; ky++) {
                    const uint8_t *s = src + (size_t)ky * t->dh * prow;
                    if (t->dw == 1)
                        memcpy(row + ky * seg, s, seg);
                    else
                        for (int kx = 0; kx < t->kw; kx++)
                            memcpy(row + ky * seg + (size_t)kx * t->ic, s + (size_t)kx * t->dw * t->ic, (size_t)t->ic);
                }
                memset(row + t->K, 0, (size_t)(t->Kpack - t->K));
                q->rows[r] = row;
            }
            const kern_a a = {nr, q->rows, 1, t->Kpack, 0};
            run_gemm(q, t, &a, yi + (size_t)r0 * t->oc, li + (size_t)r0 * t->oc);
        }
    }
}

static void run_linear(qnet *q, const qnet_node *t, const uint8_t *x, uint8_t *y, int n)
{
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
    run_gemm(q, t, &a, y, q->logits);
}


/* o[c] = max(o[c], v[c]): a loop compilers vectorise (pmaxub is baseline SSE2). */
static void max_into(uint8_t *restrict o, const uint8_t *restrict v, int C)
{
    for (int c = 0; c < C; c++) o[c] = v[c] > o[c] ? v[c] : o[c];
}

static void run_pool(const qnet_node *t, const uint8_t *x, uint8_t *y, int n)
{
    const int C = t->ic;
    for (int img = 0; img < n; img++) {
        const uint8_t *xi = x + (size_t)img * t->ih * t->iw * C;
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
                        /* round half away from zero of s / cnt */
                        const int64_t qv = s >= 0 ? (2 * s + cnt) / (2 * cnt) : -((-2 * s + cnt) / (2 * cnt));
                        out[c] = clamp_u8(t->zp_out + qv, 0, 255);
                    }
                }
            }
        }
    }
}

static void run_gap(const qnet_node *t, const uint8_t *x, uint8_t *y, int n)
{
    const int C = t->ic;
    const int64_t cnt = (int64_t)t->ih * t->iw;
    for (int img = 0; img < n; img++) {
        const uint8_t *xi = x + (size_t)img * cnt * C;
        for (int c = 0; c < C; c++) {
            int64_t s = 0;
            for (int64_t p = 0; p < cnt; p++) s += xi[p * C + c] - t->zp_in;
            const int64_t qv = s >= 0 ? (2 * s + cnt) / (2 * cnt) : -((-2 * s + cnt) / (2 * cnt));
            y[(size_t)img * C + c] = clamp_u8(t->zp_out + qv, 0, 255);
        }
    }
}

/* [C][H][W] -> [H][W][C] for n images into q->input. */
static void load_input(qnet *q, const uint8_t *images, int n)
{
    const model *m = q->m;
    const int C = m->input.c, HW = m->input.h * m->input.w;
    for (int img = 0; img < n; img++) {
        const uint8_t *src = images + (size_t)img * C * HW;
        uint8_t *dst = q->input + (size_t)img * C * HW;
        if (C == 1)
            memcpy(dst, src, (size_t)HW);
        else
            for (int p = 0; p < HW; p++)
                for (int c = 0; c < C; c++) dst[(size_t)p * C + c] = src[(size_t)c * HW + p];
    }
}

/* Node i over the n images of the current micro-batch: reads its inputs from
 * q->act (q->input for -1), writes q->act[i] (or q->logits). */
static void run_node(qnet *q, int i, int n)
{
    const qnet_node *t = &q->nodes[i];
    const uint8_t *x = t->in[0] < 0 ? q->input : q->act[t->in[0]];
    uint8_t *y = q->act[i];
    const int64_t ny = (int64_t)n * t->oc * t->oh * t->ow;
    const double t0 = q->node_seconds ? ccq_seconds() : 0.0;
    switch (t->op) {
    case MODEL_OP_CONV2D:
        run_conv(q, t, x, y, n);
        break;
    case MODEL_OP_LINEAR:
        run_linear(q, t, x, y, n);
        break;
    case MODEL_OP_RELU:
        for (int64_t k = 0; k < ny; k++) y[k] = x[k] > t->zp_in ? x[k] : (uint8_t)t->zp_in;
        break;
    case MODEL_OP_MAXPOOL:
    case MODEL_OP_AVGPOOL:
        run_pool(t, x, y, n);
        break;
    case MODEL_OP_GLOBALAVGPOOL:
        run_gap(t, x, y, n);
        break;
    case MODEL_OP_FLATTEN: {
        /* NHWC -> the float model's [C][H][W] order */
        const int hw = t->ih * t->iw, c_ = t->ic;
        for (int img = 0; img < n; img++) {
            const uint8_t *xi = x + (size_t)img * hw * c_;
            uint8_t *yi = y + (size_t)img * hw * c_;
            for (int p = 0; p < hw; p++)
                for (int c = 0; c < c_; c++) yi[(size_t)c * hw + p] = xi[(size_t)p * c_ + c];
        }
        break;
    }
    case MODEL_OP_ADD: {
        const uint8_t *b = t->in[1] < 0 ? q->input : q->act[t->in[1]];
        q->isa->add_u8((size_t)ny, x, b, &t->add, y);
        break;
    }
    case MODEL_OP_BATCHNORM: {
        const int c_ = t->oc;
        for (int64_t k = 0; k < ny; k++) {
            const int c = (int)(k % c_);
            const int64_t v = (int64_t)(x[k] - t->zp_in) * t->cm[c] + t->cb[c];
            y[k] = clamp_u8(t->zp_out + rshift_round(v, t->csh), t->lo, t->hi);
        }
        break;
    }
    default:
        CCQ_ASSERT(0);
    }
    if (q->node_seconds) q->node_seconds[i] += ccq_seconds() - t0;
}

void qnet_forward(qnet *q, const uint8_t *images, int n_total, int32_t *logits)
{
    const model *m = q->m;
    const size_t per = (size_t)model_numel(m->input);
    for (int base = 0; base < n_total; base += q->mb) {
        const int n = n_total - base < q->mb ? n_total - base : q->mb;
        load_input(q, images + (size_t)base * per, n);
        for (int i = 0; i < m->n_nodes; i++) run_node(q, i, n);
        memcpy(logits + (size_t)base * m->classes, q->logits, sizeof(int32_t) * (size_t)n * m->classes);
    }
}

/* ---- forward from a cut ------------------------------------------------------ */

/* Bytes per image of tensor j (-1: the input). */
static size_t tensor_bytes(const model *m, int j)
{
    return (size_t)model_numel(j < 0 ? m->input : m->nodes[j].shape);
}

size_t qnet_cut(const qnet *q, int start, uint8_t *cross)
{
    const model *m = q->m;
    size_t bytes = 0;
    memset(cross, 0, (size_t)m->n_nodes + 1);
    for (int i = start; i < m->n_nodes; i++)
        for (int k = 0; k < 2; k++) {
            const int j = q->nodes[i].in[k];
            if (k >= q->nodes[i].n_in) continue;
            if (j < start && !cross[j + 1]) cross[j + 1] = 1, bytes += tensor_bytes(m, j);
        }
    return bytes;
}

/* Slack after each cached tensor: the indirect kernels may read up to kr - 1 bytes past a window. */
enum { CACHE_SLACK = 64 };

void qnet_cache_init(qnet_cache *c, const qnet *q, int cap)
{
    const model *m = q->m;
    memset(c, 0, sizeof *c);
    uint8_t *cross = ccq_malloc((size_t)m->n_nodes + 1);
    size_t worst = 0;
    for (int s = 0; s < m->n_nodes; s++) {
        size_t b = qnet_cut(q, s, cross);
        for (int j = -1; j < m->n_nodes; j++)
            if (cross[j + 1]) b += CACHE_SLACK;
        if (b > worst) worst = b;
    }
    ccq_free(cross);
    c->cap = cap;
    c->start = -1;
    c->bytes = worst * (size_t)cap + CACHE_SLACK;
    c->slab = ccq_calloc(c->bytes, 1);
    c->t = ccq_calloc((size_t)m->n_nodes + 1, sizeof(uint8_t *));
    c->cross = ccq_malloc((size_t)m->n_nodes + 1);
}

void qnet_cache_free(qnet_cache *c)
{
    ccq_free(c->slab), ccq_free(c->t), ccq_free(c->cross);
    memset(c, 0, sizeof *c);
}

size_t qnet_cache_bytes_per_image(const qnet *q, int start)
{
    uint8_t *cross = ccq_malloc((size_t)q->m->n_nodes + 1);
    const size_t b = qnet_cut(q, start, cross);
    ccq_free(cross);
    return b;
}

void qnet_cache_fill(qnet *q, qnet_cache *c, int start, const uint8_t *images, int n_total)
{
    const model *m = q->m;
    CCQ_ASSERT(n_total <= c->cap && start >= 0 && start < m->n_nodes);
    qnet_cut(q, start, c->cross);
    uint8_t *p = c->slab;
    for (int j = -1; j < m->n_nodes; j++) {
        c->t[j + 1] = NULL;
        if (!c->cross[j + 1]) continue;
        c->t[j + 1] = p;
        p += tensor_bytes(m, j) * (size_t)c->cap + CACHE_SLACK;
    }
    CCQ_ASSERT((size_t)(p - c->slab) <= c->bytes);
    c->start = start, c->n = n_total;
    const size_t per = tensor_bytes(m, -1);
    for (int base = 0; base < n_total; base += q->mb) {
        const int n = n_total - base < q->mb ? n_total - base : q->mb;
        load_input(q, images + (size_t)base * per, n);
        for (int i = 0; i < start; i++) run_node(q, i, n);
        for (int j = -1; j < m->n_nodes; j++)
            if (c->t[j + 1]) {
                const size_t b = tensor_bytes(m, j);
                memcpy(c->t[j + 1] + (size_t)base * b, j < 0 ? q->input : q->act[j], b * (size_t)n);
            }
    }
}

void qnet_forward_cached(qnet *q, const qnet_cache *c, int off, int n_total, int32_t *logits)
{
    const model *m = q->m;
    CCQ_ASSERT(c->start >= 0 && off >= 0 && off + n_total <= c->n);
    uint8_t *input = q->input;
    for (int base = 0; base < n_total; base += q->mb) {
        const int n = n_total - base < q->mb ? n_total - base : q->mb;
        /* the tensors crossing the cut are read where the cache holds them */
        for (int j = -1; j < m->n_nodes; j++)
            if (c->t[j + 1]) {
                uint8_t *src = c->t[j + 1] + (size_t)(off + base) * tensor_bytes(m, j);
                if (j < 0) q->input = src;
                else q->act[j] = src;
            }
        for (int i = c->start; i < m->n_nodes; i++) run_node(q, i, n);
        memcpy(logits + (size_t)base * m->classes, q->logits, sizeof(int32_t) * (size_t)n * m->classes);
    }
    /* back to the planned buffers */
    q->input = input;
    memcpy(q->act, q->act_home, sizeof(uint8_t *) * (size_t)m->n_nodes);
}
