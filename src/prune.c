/*
 * prune.c: magnitude pruning of quantized layers (prune.h).
 */
#include "ccq/prune.h"

#include <math.h>
#include <stdlib.h>

int64_t prune_count(int64_t n, int pm) { return n * pm / 1000; }

typedef struct {
    double mag;
    int64_t idx;
} entry;

static int by_mag(const void *a, const void *b)
{
    const entry *x = a, *y = b;
    if (x->mag != y->mag) return x->mag < y->mag ? -1 : 1;
    return (x->idx > y->idx) - (x->idx < y->idx);
}

void prune_mask(const model_node *nd, int pm, uint8_t *mask)
{
    const int64_t n = nd->n_weight, k = prune_count(n, pm);
    entry *e = ccq_malloc(sizeof(entry) * (size_t)(n ? n : 1));
    for (int64_t w = 0; w < n; w++) e[w] = (entry){fabs((double)nd->weight[w]), w}, mask[w] = 0;
    qsort(e, (size_t)n, sizeof(entry), by_mag);
    for (int64_t j = 0; j < k; j++) mask[e[j].idx] = 1;
    ccq_free(e);
}

int64_t prune_zeros(const model_node *nd)
{
    int64_t z = 0;
    for (int64_t w = 0; w < nd->n_weight; w++) z += nd->levels[w] == 0;
    return z;
}

void prune_levels(model_node *nd, int pm)
{
    const int64_t n = nd->n_weight, K = n / nd->shape.c;
    int64_t need = prune_count(n, pm) - prune_zeros(nd);
    if (need <= 0) return;
    entry *e = ccq_malloc(sizeof(entry) * (size_t)n);
    int64_t m = 0;
    for (int64_t w = 0; w < n; w++)
        if (nd->levels[w]) e[m++] = (entry){fabs((double)nd->levels[w] * (double)nd->wscale[w / K]), w};
    qsort(e, (size_t)m, sizeof(entry), by_mag);
    for (int64_t j = 0; j < need && j < m; j++) nd->levels[e[j].idx] = 0;
    ccq_free(e);
}
