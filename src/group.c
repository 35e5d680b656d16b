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

int group_confidence(const eda_state *e, uint32_t freeze, int G, int64_t *out)
{
    int64_t *pairs = ccq_malloc(sizeof(int64_t) * 2 * (size_t)(e->n > 0 ? e->n : 1));
    int64_t k = 0;
    for (int64_t w = 0; w < e->n; w++) {
        const uint32_t c = eda_confidence(e, w);
        if (c >= freeze) continue;
        pairs[2 * k] = c, pairs[2 * k + 1] = w, k++;
    }
    qsort(pairs, (size_t)k, 2 * sizeof(int64_t), cmp_pair);
    const int m = (int)(k < G ? k : G);
    for (int t = 0; t < m; t++) out[t] = pairs[2 * t + 1];
    ccq_free(pairs);
    return m;
}
