/*
 * group.c: subcomponent choice for cooperative coevolution (see group.h).
 */
#include "ccq/group.h"

#include <stdlib.h>

#include "ccq/common.h"

int group_layer(const int64_t *layer_start, int n_layers, int G, int64_t *cursor, int64_t *out)
{
    const int64_t n_w = layer_start[n_layers];
    int64_t pos = *cursor >= 0 && *cursor < n_w ? *cursor : 0;
    int l = 0;
    while (layer_start[l + 1] <= pos) l++;
    int m = 0;
    while (m < G && pos < layer_start[l + 1]) out[m++] = pos++;
    *cursor = pos >= n_w ? 0 : pos;
    return m;
}

int group_random(int64_t n_w, int G, rng_pcg32 *rng, int64_t *out)
{
    const int want = (int64_t)G < n_w ? G : (int)n_w;
    int m = 0;
    while (m < want) {
        const uint64_t hi = rng_next(rng), lo = rng_next(rng);
        const int64_t w = (int64_t)((hi << 32 | lo) % (uint64_t)n_w);
        int dup = 0;
        for (int t = 0; t < m && !dup; t++) dup = out[t] == w;
        if (!dup) out[m++] = w;
    }
    return m;
}

static int cmp_pair(const void *a, const void *b)
{
    const int64_t *x = a, *y = b; /* (confidence, index) */
    if (x[0] != y[0]) return x[0] < y[0] ? -1 : 1;
    return (x[1] > y[1]) - (x[1] < y[1]);
}

/* (confidence, index) pairs ordered as cmp_pair: is a after b? */
static int after(const int64_t *a, const int64_t *b) { return a[0] != b[0] ? a[0] > b[0] : a[1] > b[1]; }

static void sift_down(int64_t *h, int k, int i)
{
    for (;;) {
        int l = 2 * i + 1, big = i;
        if (l < k && after(h + 2 * l, h + 2 * big)) big = l;
        if (l + 1 < k && after(h + 2 * (l + 1), h + 2 * big)) big = l + 1;
        if (big == i) return;
        int64_t t0 = h[2 * i], t1 = h[2 * i + 1];
        h[2 * i] = h[2 * big], h[2 * i + 1] = h[2 * big + 1];
        h[2 * big] = t0, h[2 * big + 1] = t1;
        i = big;
    }
}

/* The G least confident weights of [from, to) below `freeze`, in (confidence, index) order: a
 * max-heap of the G best so far, O(n log G) instead of sorting every weight each generation. */
static int least_confident(const eda_state *e, int64_t from, int64_t to, uint32_t freeze, int G, int64_t *out)
{
    int64_t *h = ccq_malloc(sizeof(int64_t) * 2 * (size_t)(G > 0 ? G : 1));
    int k = 0;
    for (int64_t w = from; w < to && G > 0; w++) {
        const uint32_t c = eda_confidence(e, w);
        if (c >= freeze) continue;
        const int64_t p[2] = {c, w};
        if (k < G) {
            /* sift up */
            int i = k++;
            h[2 * i] = p[0], h[2 * i + 1] = p[1];
            while (i > 0 && after(h + 2 * i, h + 2 * ((i - 1) / 2))) {
                const int u = (i - 1) / 2;
                int64_t t0 = h[2 * i], t1 = h[2 * i + 1];
                h[2 * i] = h[2 * u], h[2 * i + 1] = h[2 * u + 1];
                h[2 * u] = t0, h[2 * u + 1] = t1;
                i = u;
            }
        } else if (after(h, p)) {
            h[0] = p[0], h[1] = p[1];
            sift_down(h, k, 0);
        }
    }
    qsort(h, (size_t)k, 2 * sizeof(int64_t), cmp_pair);
    for (int t = 0; t < k; t++) out[t] = h[2 * t + 1];
    ccq_free(h);
    return k;
}

int group_confidence(const eda_state *e, uint32_t freeze, int G, int64_t *out)
{
    return least_confident(e, 0, e->n, freeze, G, out);
}

int64_t group_weyl_step(int64_t n_w)
{
    int64_t a = (int64_t)((double)n_w * 0.6180339887498949);
    if (a < 1) a = 1;
    for (;; a++) { /* the first coprime step at or after the golden section */
        int64_t x = a, y = n_w;
        while (y) {
            const int64_t t = x % y;
            x = y, y = t;
        }
        if (x == 1) return a;
    }
}

int64_t group_turn_share(int64_t n_weights, int turns)
{
    if (turns == GROUP_TURNS_EQUAL) return 1;
    if (turns == GROUP_TURNS_WEIGHTS) return n_weights;
    int64_t r = 0; /* GROUP_TURNS_SQRT: floor(sqrt(n)), in integers */
    while ((r + 1) * (r + 1) <= n_weights) r++;
    return r;
}

int group_layer_size(int G, int64_t n, uint32_t frac_q16)
{
    const int64_t f = (int64_t)(((uint64_t)n * frac_q16 + 65535) >> 16);
    const int64_t g = f > G ? f : G;
    return (int)(g < n ? g : n);
}

int group_confidence_layer(const eda_state *e, const int64_t *layer_start, int n_layers, int turns, uint32_t freeze,
                           int G, uint32_t frac_q16, int64_t gen, int64_t *out)
{
    int64_t total = 0;
    for (int l = 0; l < n_layers; l++) total += group_turn_share(layer_start[l + 1] - layer_start[l], turns);
    if (total == 0) return 0;
    const int64_t pos = (int64_t)(((unsigned __int128)(uint64_t)gen * (uint64_t)group_weyl_step(total)) % (uint64_t)total);
    int l = 0;
    for (int64_t acc = group_turn_share(layer_start[1] - layer_start[0], turns); acc <= pos;
         acc += group_turn_share(layer_start[l + 1] - layer_start[l], turns))
        l++;
    for (int tried = 0; tried < n_layers; tried++) {
        const int64_t n = layer_start[l + 1] - layer_start[l];
        const int m = least_confident(e, layer_start[l], layer_start[l + 1], freeze, group_layer_size(G, n, frac_q16), out);
        if (m > 0) return m;
        l = l + 1 < n_layers ? l + 1 : 0; /* every weight of this layer is frozen: the next one */
    }
    return 0;
}
