/*
 * qnet.c: integer-only forward pass (see qnet.h). Set-up (qnet_init)
 * derives integer parameters from the model's float scales once; the
 * forward pass uses only integer arithmetic and the selected kernels.
 */
#include "ccq/qnet.h"

#include <math.h>
#include <string.h>

#include "ccq/op.h"
#include "ccq/quant.h"

/* The level of channel o at position k of its packed row (depthwise: tap k of [K][oc]). */
static inline int8_t *lev_at(qnet_node *t, int o, int k)
{
    return t->dwm ? &t->lev[(size_t)k * t->oc + o] : &t->lev[(size_t)o * t->Kpack + k];
}

static void compute_bias(qnet_node *t)
{
    for (int o = 0; o < t->oc; o++) {
        int64_t s = 0;
        for (int k = 0; k < t->Kpack; k++) s += *lev_at(t, o, k);
        t->bias[o] = (int32_t)(t->bias_q[o] - (int64_t)t->zp_in * s);
    }
}

/* Packs group g's channels of t->lev into its block of t->packed. */
static void pack_group(const qnet *q, qnet_node *t, int g)
{
    q->isa->pack(t->lev + (size_t)g * t->cog * t->Kpack, t->cog, t->Kpack, t->packed + (size_t)g * t->gpacked);
}

void qnet_update_levels(qnet *q, int node)
{
    qnet_node *t = &q->nodes[node];
    const model_node *nd = &q->m->nodes[node];
    CCQ_ASSERT(op_get(nd->op)->flags & OP_WEIGHTED);
    memset(t->lev, 0, (size_t)t->oc * t->Kpack);
    if (t->dwm) {
        /* depthwise: [oc][1][kh][kw] -> [kh * kw][oc], one dw_pack */
        for (int o = 0; o < t->oc; o++)
            for (int k = 0; k < t->K; k++) *lev_at(t, o, k) = nd->levels[(size_t)o * t->K + k];
        compute_bias(t);
        q->isa->dw_pack(t->lev, t->K, t->oc, t->packed);
        return;
    }
    if (nd->op == MODEL_OP_CONV2D) {
        /* [oc][cig][kh][kw] -> [oc][kh][kw][cig] for NHWC rows */
        /* indirect rows: each kernel row is a segment of t->seg bytes, zero beyond kw * ic */
        const size_t rowlen = t->indirect ? (size_t)t->seg : (size_t)t->kw * t->cig;
        for (int o = 0; o < t->oc; o++)
            for (int c = 0; c < t->cig; c++)
                for (int y = 0; y < t->kh; y++)
                    for (int x = 0; x < t->kw; x++)
                        t->lev[(size_t)o * t->Kpack + y * rowlen + (size_t)x * t->cig + c] =
                            nd->levels[(((size_t)o * t->cig + c) * t->kh + y) * t->kw + x];
    } else {
        for (int o = 0; o < t->oc; o++) memcpy(t->lev + (size_t)o * t->Kpack, nd->levels + (size_t)o * t->K, (size_t)t->K);
    }
    compute_bias(t);
    for (int g = 0; g < t->groups; g++) pack_group(q, t, g);
}

void qnet_set_level(qnet *q, int node, int64_t w, int8_t v)
{
    qnet_node *t = &q->nodes[node];
    CCQ_ASSERT(op_get(t->op)->flags & OP_WEIGHTED);
    const int64_t per = (int64_t)t->K; /* levels per output channel in the model's order */
    CCQ_ASSERT(w >= 0 && w < per * t->oc);
    const int o = (int)(w / per);
    int k = (int)(w % per); /* model order: [cig][kh][kw] for conv */
    if (t->dwm) { /* depthwise: tap k of [K][oc]; every layout holds every value */
        int8_t *l = lev_at(t, o, k);
        if (*l == v) return;
        t->bias[o] -= t->zp_in * (int32_t)(v - *l);
        *l = v;
        t->packed[q->isa->dw_packed_offset(t->K, t->oc, k, o)] = v;
        return;
    }
    if (t->op == MODEL_OP_CONV2D) {
        const int c = k / (t->kh * t->kw), y = k / t->kw % t->kh, x = k % t->kw;
        const int rowlen = t->indirect ? t->seg : t->kw * t->cig;
        k = y * rowlen + x * t->cig + c;
    }
    int8_t *l = &t->lev[(size_t)o * t->Kpack + k];
    if (*l == v) return;
    t->bias[o] -= t->zp_in * (int32_t)(v - *l); /* bias = bias_q - zp_in * sum(levels of o) */
    *l = v;
    const int g = o / t->cog;
    int8_t *pg = t->packed + (size_t)g * t->gpacked;
    const ptrdiff_t off = q->isa->packed_offset(pg, t->cog, t->Kpack, o - g * t->cog, k, v);
    if (off >= 0) pg[off] = v;
    else pack_group(q, t, g);
}

static ccq_status init_node(qnet *q, int i, ccq_err *err)
{
    const model *m = q->m;
    const model_node *nd = &m->nodes[i];
    qnet_node *t = &q->nodes[i];
    const model_shape in = model_in_shape(m, i, 0);
    t->op = nd->op;
    t->n_in = nd->n_in;
    memcpy(t->in, nd->in, sizeof(int) * (size_t)nd->n_in);
    t->oc = nd->shape.c, t->oh = nd->shape.h, t->ow = nd->shape.w;
    t->ic = in.c, t->ih = in.h, t->iw = in.w;
    t->relu = nd->relu;
    t->zp_in = op_in_zp(m, nd->in[0]);
    t->zp_out = nd->act_zp;
    op_out_clamp(nd, &t->lo, &t->hi);
    t->thresh = nd->act_thresh;
    const op_traits *ot = op_get(nd->op);
    return ot->qinit ? ot->qinit(q, i, err) : CCQ_OK;
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
        if (op_get(t->op)->flags & OP_WEIGHTED) {
            size_t c = (size_t)(QNET_ROW_TILE > mb ? QNET_ROW_TILE : mb) * (size_t)t->Kpack;
            if (c > col) col = c;
            const size_t pb = (size_t)t->ph * t->pw * (t->dwm ? t->oc : t->ic); /* depthwise: channels repeated */
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
        ccq_free(t->mult), ccq_free(t->shift), ccq_free(t->cm), ccq_free(t->cb), ccq_free(t->cat);
        ccq_free(t->dwoff);
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

/* Activation pruning: levels within thresh of zp become zp (thresh >= 1). */
static void prune_act(uint8_t *y, size_t n, int zp, int thresh)
{
    const int lo = zp - thresh, hi = zp + thresh; /* kept: q <= lo or q >= hi */
    for (size_t k = 0; k < n; k++) {
        const int v = y[k];
        y[k] = (uint8_t)(v > lo && v < hi ? zp : v);
    }
}

static int64_t count_level(const uint8_t *y, size_t n, int v)
{
    int64_t c = 0;
    for (size_t k = 0; k < n; k++) c += y[k] == v;
    return c;
}

/* Node i over the n images of the current micro-batch: reads its inputs from
 * q->act (q->input for -1), writes q->act[i] (or q->logits). */
static void run_node(qnet *q, int i, int n)
{
    const qnet_node *t = &q->nodes[i];
    const uint8_t *x[MODEL_MAX_IN];
    for (int j = 0; j < t->n_in; j++) x[j] = t->in[j] < 0 ? q->input : q->act[t->in[j]];
    const double t0 = q->node_seconds ? ccq_seconds() : 0.0;
    op_get(t->op)->qfwd(q, i, x, q->act[i], n);
    const int logits = i == q->m->output;
    const size_t numel = logits ? 0 : (size_t)n * (size_t)model_numel(q->m->nodes[i].shape);
    if (t->thresh) prune_act(q->act[i], numel, t->zp_out, t->thresh);
    if (q->node_seconds) q->node_seconds[i] += ccq_seconds() - t0;
    if (q->node_zeros && !logits) q->node_zeros[i] += count_level(q->act[i], numel, t->zp_out);
}

void qnet_set_thresh(qnet *q, int node, int thresh)
{
    CCQ_ASSERT(thresh >= 0 && thresh <= 255 && (thresh == 0 || model_node_prunable(q->m, node)));
    q->nodes[node].thresh = thresh;
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
        for (int k = 0; k < q->nodes[i].n_in; k++) {
            const int j = q->nodes[i].in[k];
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

int64_t qnet_count_correct(qnet *q, const uint8_t *images, const int32_t *labels, int n)
{
    const int C = q->m->classes, chunk = 512;
    const size_t per = (size_t)model_numel(q->m->input);
    int32_t *lg = ccq_malloc(sizeof(int32_t) * (size_t)chunk * (size_t)C);
    int64_t ok = 0;
    for (int i0 = 0; i0 < n; i0 += chunk) {
        const int nb = n - i0 < chunk ? n - i0 : chunk;
        qnet_forward(q, images + per * (size_t)i0, nb, lg);
        for (int b = 0; b < nb; b++) {
            const int32_t *v = lg + (size_t)b * C;
            int best = 0;
            for (int k = 1; k < C; k++)
                if (v[k] > v[best]) best = k;
            ok += best == labels[i0 + b];
        }
    }
    ccq_free(lg);
    return ok;
}
