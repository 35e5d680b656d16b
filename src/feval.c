/*
 * feval.c: fitness of the context and of its variants (see feval.h).
 */
#include "ccq/feval.h"

#include <string.h>

void feval_init(feval *e, genome *g, const fit_ctx *fit, const data_split *train, const model *teacher_model,
                feval_kind kind, int incremental, int cap, int max_n, int max_sub)
{
    memset(e, 0, sizeof *e);
    e->g = g, e->fit = fit, e->train = train, e->teacher_model = teacher_model;
    e->kind = kind, e->incremental = incremental;
    e->cap = cap < 1 ? 1 : cap > max_n ? max_n : cap;
    e->max_n = max_n;
    if (incremental) qnet_cache_init(&e->cache, g->q, e->cap);
    const size_t per = (size_t)train->c * train->h * train->w;
    e->img = ccq_malloc(per * (size_t)max_n + 64);
    e->lab = ccq_malloc(sizeof(int32_t) * (size_t)max_n);
    e->idx = ccq_malloc(sizeof(int32_t) * (size_t)max_n);
    e->logits = ccq_malloc(sizeof(int32_t) * (size_t)e->cap * fit->classes);
    e->ctx_img = ccq_malloc(sizeof(int64_t) * (size_t)max_n);
    e->ctx_ok = ccq_malloc((size_t)max_n);
    e->ind = ccq_malloc((size_t)(max_sub > 0 ? max_sub : 1));
    e->saved = ccq_malloc((size_t)(max_sub > 0 ? max_sub : 1));
    if (kind == FEVAL_DISTILL) {
        e->teacher = ccq_malloc(sizeof(int32_t) * (size_t)train->n * fit->classes);
        e->teacher_done = ccq_calloc((size_t)train->n, 1);
    }
}

void feval_free(feval *e)
{
    if (e->cache.slab) qnet_cache_free(&e->cache);
    ccq_free(e->img), ccq_free(e->lab), ccq_free(e->idx), ccq_free(e->logits), ccq_free(e->ctx_img), ccq_free(e->ctx_ok);
    ccq_free(e->ind), ccq_free(e->saved), ccq_free(e->teacher), ccq_free(e->teacher_done);
    memset(e, 0, sizeof *e);
}

size_t feval_cache_bytes(const feval *e) { return e->cache.bytes; }

static size_t image_bytes(const feval *e) { return (size_t)e->train->c * e->train->h * e->train->w; }

/* The teacher's probabilities for the gathered images not seen before (float, once per image). */
static void ensure_teacher(feval *e)
{
    int need = 0;
    for (int j = 0; j < e->n; j++) need |= !e->teacher_done[e->idx[j]];
    if (!need) return;
    fnet net;
    fnet_init(&net, e->teacher_model);
    for (int j = 0; j < e->n; j++) {
        const int32_t i = e->idx[j];
        if (e->teacher_done[i]) continue;
        const float *lg = fnet_forward(&net, e->img + (size_t)j * image_bytes(e));
        fit_teacher_probs(e->fit, lg, e->teacher + (size_t)i * e->fit->classes);
        e->teacher_done[i] = 1;
    }
    fnet_free(&net);
}

void feval_gather(feval *e, const int32_t *pool, int pool_n, int64_t pos, int n)
{
    CCQ_ASSERT(n <= e->max_n);
    const size_t per = image_bytes(e);
    for (int j = 0; j < n; j++) {
        const int32_t i = pool[(pos + j) % pool_n];
        memcpy(e->img + (size_t)j * per, e->train->images + (size_t)i * per, per);
        e->lab[j] = e->train->labels[i];
        e->idx[j] = i;
    }
    e->n = n;
    if (e->kind == FEVAL_DISTILL) ensure_teacher(e);
}

/* Fitness of one image from its logits (lower is better). */
static int64_t image_fitness(const feval *e, const int32_t *logits, int j)
{
    switch (e->kind) {
    case FEVAL_ACCURACY:
        return 1 - fit_correct(e->fit, logits, 1, &e->lab[j]);
    case FEVAL_DISTILL:
        return fit_distill_one(e->fit, logits, e->teacher + (size_t)e->idx[j] * e->fit->classes);
    default:
        return fit_xent_one(e->fit, logits, e->lab[j]);
    }
}

/* Logits of the context as it now is for gathered images [off, off + n), n <= cap: from the cache
 * when it holds them (images [c0, c0 + cache.n)), else through the whole network. */
static void forward(feval *e, int cached, int c0, int off, int n)
{
    const double t = ccq_seconds();
    if (cached)
        qnet_forward_cached(e->g->q, &e->cache, off - c0, n, e->logits);
    else
        qnet_forward(e->g->q, e->img + (size_t)off * image_bytes(e), n, e->logits);
    e->t_forward += ccq_seconds() - t;
}

int64_t feval_context(feval *e, int off, int n, int64_t *correct, int64_t *sumsq)
{
    int64_t f = 0;
    for (int c0 = off; c0 < off + n; c0 += e->cap) {
        const int k = off + n - c0 < e->cap ? off + n - c0 : e->cap;
        forward(e, 0, 0, c0, k);
        for (int j = 0; j < k; j++) {
            const int64_t v = image_fitness(e, e->logits + (size_t)j * e->fit->classes, c0 + j);
            f += v;
            if (sumsq) *sumsq += v * v;
        }
        if (correct) *correct += fit_correct(e->fit, e->logits, k, e->lab + c0);
    }
    return f;
}

void feval_items(feval *e, const int *items, int n_items, const int64_t *sub, int m, feval_sample_fn sample,
                 void *arg, int paired, int off, int n, int rank, int size, int64_t *out)
{
    const int classes = e->fit->classes;
    CCQ_ASSERT(off >= 0 && n >= 0 && off + n <= e->n);
    memset(out, 0, sizeof(int64_t) * (3 * (size_t)n_items + 1));
    /* this rank's images, every item on them: the prefix is computed once over all ranks */
    const int ia = off + (int)((int64_t)n * rank / size), ib = off + (int)((int64_t)n * (rank + 1) / size);
    const int start = genome_first_node(e->g, sub, m);
    genome_get(e->g, sub, m, e->saved);
    for (int c0 = ia; c0 < ib; c0 += e->cap) {
        const int k = ib - c0 < e->cap ? ib - c0 : e->cap;
        if (e->incremental) {
            const double t = ccq_seconds();
            qnet_cache_fill(e->g->q, &e->cache, start, e->img + (size_t)c0 * image_bytes(e), k);
            e->t_forward += ccq_seconds() - t;
        }
        /* the context first: every item is compared with it image by image */
        forward(e, e->incremental, c0, c0, k);
        for (int j = 0; j < k; j++) {
            const int32_t *lg = e->logits + (size_t)j * classes;
            e->ctx_img[c0 + j] = image_fitness(e, lg, c0 + j);
            e->ctx_ok[c0 + j] = (uint8_t)fit_correct(e->fit, lg, 1, &e->lab[c0 + j]);
        }
        for (int it = 0; it < n_items; it++) {
            if (items[it] < 0) {
                for (int j = c0; j < c0 + k; j++) out[it] += e->ctx_img[j], out[n_items] += e->ctx_ok[j];
                continue;
            }
            sample(arg, items[it], m, e->ind);
            genome_set(e->g, sub, m, e->ind);
            forward(e, e->incremental, c0, c0, k);
            int64_t f = 0, sd = 0, sd2 = 0;
            for (int j = 0; j < k; j++) {
                const int64_t v = image_fitness(e, e->logits + (size_t)j * classes, c0 + j);
                const int64_t dd = v - e->ctx_img[c0 + j];
                f += v, sd += dd, sd2 += dd * dd;
            }
            out[it] += f;
            if (paired) out[n_items + 1 + it] += sd, out[2 * n_items + 1 + it] += sd2;
            genome_set(e->g, sub, m, e->saved);
        }
    }
}
