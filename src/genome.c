/*
 * genome.c: the search variables and the context's levels (see genome.h).
 */
#include "ccq/genome.h"

#include <math.h>
#include <string.h>

void genome_init(genome *g, model *m, qnet *q, int codebooks)
{
    memset(g, 0, sizeof *g);
    g->m = m, g->q = q;
    const size_t nn = (size_t)(m->n_nodes > 0 ? m->n_nodes : 1);
    g->layer_node = ccq_malloc(sizeof(int) * nn);
    g->layer_start = ccq_malloc(sizeof(int64_t) * (nn + 1));
    g->layer_cb = ccq_malloc(sizeof(int64_t) * nn);
    g->unit_start = ccq_malloc(sizeof(int64_t) * (2 * nn + 1));
    for (int i = 0; i < m->n_nodes; i++) {
        const model_node *nd = &m->nodes[i];
        if (!nd->levels) continue;
        const int l = g->n_layers++;
        g->layer_node[l] = i;
        g->layer_start[l] = g->n_w;
        g->unit_start[g->n_units++] = g->n_w;
        g->n_w += nd->n_weight;
        g->layer_cb[l] = g->n_w;
        if (codebooks && nd->codebook) {
            g->unit_start[g->n_units++] = g->n_w;
            g->n_w += (int64_t)nd->shape.c * model_ncodes(nd);
        }
    }
    g->layer_start[g->n_layers] = g->n_w;
    g->unit_start[g->n_units] = g->n_w;
}

void genome_free(genome *g)
{
    ccq_free(g->layer_node), ccq_free(g->layer_start), ccq_free(g->layer_cb), ccq_free(g->unit_start);
    memset(g, 0, sizeof *g);
}

int genome_layer_of(const genome *g, int64_t w)
{
    int lo = 0, hi = g->n_layers - 1;
    while (lo < hi) {
        const int mid = (lo + hi + 1) / 2;
        if (g->layer_start[mid] <= w) lo = mid;
        else hi = mid - 1;
    }
    return lo;
}

int genome_first_node(const genome *g, const int64_t *idx, int n)
{
    int64_t lo = g->n_w;
    for (int t = 0; t < n; t++)
        if (idx[t] < lo) lo = idx[t];
    return n > 0 ? g->layer_node[genome_layer_of(g, lo)] : 0;
}

/* The output channel of weight w of a node ([Cout][...] order). */
static int channel_of(const model_node *nd, int64_t w) { return (int)(w / (nd->n_weight / nd->shape.c)); }

/* Weight w's value: its level, or its code in a layer with a codebook. */
static int8_t value_of(const model_node *nd, int64_t w)
{
    if (!nd->codebook) return nd->levels[w];
    const int c = model_code_of(nd, channel_of(nd, w), nd->levels[w]);
    CCQ_ASSERT(c >= 0); /* model_load and the writers keep every level in its codebook */
    return (int8_t)c;
}

/* The level that value v of weight w stands for. */
static int8_t level_of(const model_node *nd, int64_t w, int8_t v)
{
    if (!nd->codebook) return v;
    CCQ_ASSERT(v >= 0 && v < model_ncodes(nd));
    return nd->codebook[(int64_t)channel_of(nd, w) * model_ncodes(nd) + v];
}

/* Codebook entry k ([Cout][2^bits] order) of node `node` of m takes value v: every weight of its
 * channel holding the old value (its code) follows, in the model and, with q, in the engine. */
static void set_entry(model *m, qnet *q, int node, int64_t k, int8_t v)
{
    model_node *nd = &m->nodes[node];
    const int8_t old = nd->codebook[k];
    if (old == v) return;
    nd->codebook[k] = v;
    const int64_t per = nd->n_weight / nd->shape.c, w0 = k / model_ncodes(nd) * per;
    for (int64_t w = w0; w < w0 + per; w++)
        if (nd->levels[w] == old) {
            nd->levels[w] = v;
            if (q) qnet_set_level(q, node, w, v);
        }
}

void genome_get(const genome *g, const int64_t *idx, int n, int8_t *out)
{
    for (int t = 0; t < n; t++) {
        const int l = genome_layer_of(g, idx[t]);
        const model_node *nd = &g->m->nodes[g->layer_node[l]];
        out[t] = idx[t] >= g->layer_cb[l] ? nd->codebook[idx[t] - g->layer_cb[l]]
                                          : value_of(nd, idx[t] - g->layer_start[l]);
    }
}

void genome_set(genome *g, const int64_t *idx, int n, const int8_t *v)
{
    for (int t = 0; t < n; t++) {
        const int l = genome_layer_of(g, idx[t]), node = g->layer_node[l];
        if (idx[t] >= g->layer_cb[l]) {
            set_entry(g->m, g->q, node, idx[t] - g->layer_cb[l], v[t]);
            continue;
        }
        const int64_t w = idx[t] - g->layer_start[l];
        const int8_t level = level_of(&g->m->nodes[node], w, v[t]);
        g->m->nodes[node].levels[w] = level;
        qnet_set_level(g->q, node, w, level);
    }
}

void genome_save_all(const genome *g, int8_t *out)
{
    for (int l = 0; l < g->n_layers; l++) {
        const model_node *nd = &g->m->nodes[g->layer_node[l]];
        for (int64_t w = 0; w < nd->n_weight; w++) out[g->layer_start[l] + w] = value_of(nd, w);
        if (g->layer_start[l + 1] > g->layer_cb[l])
            memcpy(out + g->layer_cb[l], nd->codebook, (size_t)(g->layer_start[l + 1] - g->layer_cb[l]));
    }
}

void genome_write_model(const genome *g, const int8_t *v, model *dst)
{
    for (int l = 0; l < g->n_layers; l++) {
        model_node *nd = &dst->nodes[g->layer_node[l]];
        /* the codebook first: the codes below index it */
        if (g->layer_start[l + 1] > g->layer_cb[l])
            memcpy(nd->codebook, v + g->layer_cb[l], (size_t)(g->layer_start[l + 1] - g->layer_cb[l]));
        for (int64_t w = 0; w < nd->n_weight; w++) nd->levels[w] = level_of(nd, w, v[g->layer_start[l] + w]);
    }
}

void genome_load_all(genome *g, const int8_t *v)
{
    genome_write_model(g, v, g->m);
    for (int l = 0; l < g->n_layers; l++) qnet_update_levels(g->q, g->layer_node[l]);
}

void genome_range(const genome *g, int8_t *lo, int8_t *hi)
{
    for (int l = 0; l < g->n_layers; l++) {
        const model_node *nd = &g->m->nodes[g->layer_node[l]];
        const size_t n = (size_t)(g->layer_cb[l] - g->layer_start[l]);
        const int q = model_qmax(nd->bits);
        memset(lo + g->layer_start[l], nd->codebook ? 0 : -q, n);
        memset(hi + g->layer_start[l], nd->codebook ? model_ncodes(nd) - 1 : q, n);
        const int nc = nd->codebook ? model_ncodes(nd) : 0;
        for (int64_t k = 0; k < g->layer_start[l + 1] - g->layer_cb[l]; k++) {
            const int8_t *cb = nd->codebook + k / nc * nc;
            const int c = (int)(k % nc);
            /* entry c - 1 keeps at most the midpoint m, entry c at least m + 1 */
            lo[g->layer_cb[l] + k] = (int8_t)(c > 0 ? (int)floor((cb[c - 1] + cb[c]) / 2.0) + 1 : -127);
            hi[g->layer_cb[l] + k] = (int8_t)(c < nc - 1 ? (int)floor((cb[c] + cb[c + 1]) / 2.0) : 127);
        }
    }
}

/* Where level value v lies among n strictly increasing codebook entries, in code units: c + (v -
 * cb[c]) / (cb[c + 1] - cb[c]) between entries c and c + 1, extended past the ends by the end gaps. */
static double code_pos(const int8_t *cb, int n, double v)
{
    int c = 0;
    while (c < n - 2 && v > cb[c + 1]) c++;
    return c + (v - cb[c]) / (double)(cb[c + 1] - cb[c]);
}

void genome_float_pos(const genome *g, int32_t *out)
{
    for (int l = 0; l < g->n_layers; l++) {
        const model_node *nd = &g->m->nodes[g->layer_node[l]];
        const int64_t per = nd->n_weight / nd->shape.c;
        for (int64_t w = 0; w < nd->n_weight; w++) {
            /* one IEEE division and one rounding: the same integer on every rank and host */
            double v = (double)nd->weight[w] / (double)nd->wscale[w / per];
            if (nd->codebook) v = code_pos(nd->codebook + (w / per) * model_ncodes(nd), model_ncodes(nd), v);
            const double q = v * GENOME_POS_ONE;
            out[g->layer_start[l] + w] = (int32_t)(q > 1e9 ? 1e9 : q < -1e9 ? -1e9 : llround(q));
        }
        for (int64_t k = 0; k < g->layer_start[l + 1] - g->layer_cb[l]; k++)
            out[g->layer_cb[l] + k] = (int32_t)nd->codebook[k] * GENOME_POS_ONE;
    }
}
