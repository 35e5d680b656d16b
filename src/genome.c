/*
 * genome.c: the search variables and the context's levels (see genome.h).
 */
#include "ccq/genome.h"

#include <math.h>
#include <string.h>

void genome_init(genome *g, model *m, qnet *q)
{
    memset(g, 0, sizeof *g);
    g->m = m, g->q = q;
    g->layer_node = ccq_malloc(sizeof(int) * (size_t)(m->n_nodes > 0 ? m->n_nodes : 1));
    g->layer_start = ccq_malloc(sizeof(int64_t) * ((size_t)m->n_nodes + 1));
    for (int i = 0; i < m->n_nodes; i++)
        if (m->nodes[i].levels) {
            g->layer_node[g->n_layers] = i;
            g->layer_start[g->n_layers++] = g->n_w;
            g->n_w += m->nodes[i].n_weight;
        }
    g->layer_start[g->n_layers] = g->n_w;
}

void genome_free(genome *g)
{
    ccq_free(g->layer_node), ccq_free(g->layer_start);
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

void genome_get(const genome *g, const int64_t *idx, int n, int8_t *out)
{
    for (int t = 0; t < n; t++) {
        const int l = genome_layer_of(g, idx[t]);
        out[t] = g->m->nodes[g->layer_node[l]].levels[idx[t] - g->layer_start[l]];
    }
}

void genome_set(genome *g, const int64_t *idx, int n, const int8_t *v)
{
    for (int t = 0; t < n; t++) {
        const int l = genome_layer_of(g, idx[t]), node = g->layer_node[l];
        const int64_t w = idx[t] - g->layer_start[l];
        g->m->nodes[node].levels[w] = v[t];
        qnet_set_level(g->q, node, w, v[t]);
    }
}

void genome_save_all(const genome *g, int8_t *out)
{
    for (int l = 0; l < g->n_layers; l++)
        memcpy(out + g->layer_start[l], g->m->nodes[g->layer_node[l]].levels,
               (size_t)(g->layer_start[l + 1] - g->layer_start[l]));
}

void genome_load_all(genome *g, const int8_t *v)
{
    for (int l = 0; l < g->n_layers; l++) {
        memcpy(g->m->nodes[g->layer_node[l]].levels, v + g->layer_start[l],
               (size_t)(g->layer_start[l + 1] - g->layer_start[l]));
        qnet_update_levels(g->q, g->layer_node[l]);
    }
}

void genome_qmax(const genome *g, int8_t *out)
{
    for (int l = 0; l < g->n_layers; l++)
        memset(out + g->layer_start[l], model_qmax(g->m->nodes[g->layer_node[l]].bits),
               (size_t)(g->layer_start[l + 1] - g->layer_start[l]));
}

void genome_float_pos(const genome *g, int32_t *out)
{
    for (int l = 0; l < g->n_layers; l++) {
        const model_node *nd = &g->m->nodes[g->layer_node[l]];
        const int64_t per = nd->n_weight / nd->shape.c;
        for (int64_t w = 0; w < nd->n_weight; w++) {
            /* one IEEE division and one rounding: the same integer on every rank and host */
            const double v = (double)nd->weight[w] / (double)nd->wscale[w / per];
            const double q = v * GENOME_POS_ONE;
            out[g->layer_start[l] + w] = (int32_t)(q > 1e9 ? 1e9 : q < -1e9 ? -1e9 : llround(q));
        }
    }
}
