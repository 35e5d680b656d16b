/*
 * step.c: one generation of the search (see step.h). Everything that
 * decides a result is integer and keyed by (seed, generation, individual).
 */
#include "ccq/step.h"

#include <math.h>
#include <stdlib.h>
#include <string.h>

#include "ccq/fit.h"
#include "ccq/group.h"
#include "ccq/prune.h"
#include "ccq/rng.h"

/* Purposes of the keyed random streams (third key word); KEY_DATA (2) is the driver's. */
enum { KEY_INDIVIDUAL = 1, KEY_GROUP = 3 };

static uint32_t frac_q16(const cfg_search *cfg) { return (uint32_t)llround(cfg->group_fraction * 65536.0); }
static int max_sub(const cfg_search *cfg, int64_t n_w) { return (int)(cfg->group_size < n_w ? cfg->group_size : n_w); }

int step_max_sub(const cfg_search *cfg, const genome *g)
{
    int G = max_sub(cfg, g->n_w);
    if (cfg->group == CFG_GROUP_LAYER_CONFIDENCE)
        for (int u = 0; u < g->n_units; u++) {
            const int gl = group_layer_size(G, g->unit_start[u + 1] - g->unit_start[u], frac_q16(cfg));
            if (gl > G) G = gl;
        }
    return G;
}

void step_init(step_state *s, const cfg_search *cfg, const dist_ctx *d, genome *g, eda_state *eda, feval *ev,
               const int32_t *pool, int pool_n)
{
    memset(s, 0, sizeof *s);
    s->cfg = cfg, s->d = d, s->g = g, s->eda = eda, s->ev = ev, s->pool = pool, s->pool_n = pool_n;
    const int G = step_max_sub(cfg, g), lambda = (int)cfg->lambda;
    s->sub = ccq_malloc(sizeof(int64_t) * (size_t)(G > 0 ? G : 1));
    s->ind = ccq_malloc((size_t)(G > 0 ? G : 1));
    s->elite = ccq_malloc((size_t)(G > 0 ? G : 1) * (size_t)cfg->mu);
    s->items = ccq_malloc(sizeof(int) * ((size_t)lambda + 1));
    s->out = ccq_malloc(sizeof(int64_t) * (3 * ((size_t)lambda + 1) + 1));
    s->order = ccq_malloc(sizeof(int64_t) * 3 * (size_t)lambda);
    s->fit = ccq_malloc(sizeof(int64_t) * 4 * (size_t)lambda);
    s->psd = s->fit + lambda, s->psd2 = s->fit + 2 * lambda, s->pn = s->fit + 3 * lambda;
    s->stage = ccq_malloc(sizeof(int) * (size_t)lambda);
    s->all = ccq_malloc((size_t)(G > 0 ? G : 1) * (size_t)lambda);
    s->combo = ccq_malloc((size_t)(G > 0 ? G : 1));
    /* sparse layers: their budgets are the start's counts (the genome holds the start here: a
     * checkpoint's context is loaded after) */
    s->nz_budget = ccq_malloc(sizeof(int64_t) * (size_t)(g->n_layers ? g->n_layers : 1));
    s->nz_ctx = ccq_calloc((size_t)(g->n_layers ? g->n_layers : 1), sizeof(int64_t));
    for (int l = 0; l < g->n_layers; l++) {
        const model_node *nd = &g->m->nodes[g->layer_node[l]];
        s->nz_budget[l] = -1;
        if (!nd->sparse || nd->codebook) continue;
        s->nz_budget[l] = nd->n_weight - prune_zeros(nd);
        s->any_sparse = 1;
    }
    if (s->any_sparse) {
        s->mag = ccq_malloc(sizeof(int32_t) * (size_t)g->n_w);
        genome_float_pos(g, s->mag);
        for (int64_t w = 0; w < g->n_w; w++) s->mag[w] = s->mag[w] < 0 ? -s->mag[w] : s->mag[w];
        s->scratch = ccq_malloc(2 * sizeof(int64_t) * (size_t)(G > 0 ? G : 1));
        s->ctx_sub = ccq_malloc((size_t)(G > 0 ? G : 1));
    }
}

/* The context's non-zero levels of every sparse layer the subcomponent touches, into nz_ctx, and
 * its values of the subcomponent into ctx_sub (once per generation, before any sample). */
static void sparse_context(step_state *s, int m)
{
    const genome *g = s->g;
    genome_get(g, s->sub, m, s->ctx_sub);
    for (int l = 0; l < g->n_layers; l++) s->nz_ctx[l] = -1;
    for (int t = 0; t < m; t++) {
        const int l = genome_layer_of(g, s->sub[t]);
        if (s->nz_budget[l] < 0 || s->nz_ctx[l] >= 0) continue;
        const model_node *nd = &g->m->nodes[g->layer_node[l]];
        s->nz_ctx[l] = nd->n_weight - prune_zeros(nd);
    }
}

static int by_mag_index(const void *a, const void *b)
{
    const int64_t *x = a, *y = b; /* (magnitude, index) pairs */
    if (x[0] != y[0]) return x[0] < y[0] ? -1 : 1;
    return (x[1] > y[1]) - (x[1] < y[1]);
}

/* A sample out[0..m) of the subcomponent within every sparse layer's budget: per layer over it,
 * the weights the sample makes non-zero where the context has zero go back to zero, smallest
 * float magnitude first (ties to the lower index), until the layer's count fits (always enough
 * when the context fits). A pure function of the sample and the context. */
static void sample_repair(const step_state *s, int m, int8_t *out)
{
    const genome *g = s->g;
    for (int l = 0; l < g->n_layers; l++) {
        if (s->nz_ctx[l] < 0) continue;
        int64_t count = s->nz_ctx[l];
        int nc = 0;
        for (int t = 0; t < m; t++) {
            if (genome_layer_of(g, s->sub[t]) != l) continue;
            count += (out[t] != 0) - (s->ctx_sub[t] != 0);
            if (out[t] != 0 && s->ctx_sub[t] == 0) {
                s->scratch[2 * nc] = s->mag[s->sub[t]], s->scratch[2 * nc + 1] = t;
                nc++;
            }
        }
        if (count <= s->nz_budget[l]) continue;
        qsort(s->scratch, (size_t)nc, 2 * sizeof(int64_t), by_mag_index);
        for (int j = 0; j < nc && count > s->nz_budget[l]; j++, count--) out[s->scratch[2 * j + 1]] = 0;
    }
}

void step_free(step_state *s)
{
    ccq_free(s->sub), ccq_free(s->ind), ccq_free(s->elite), ccq_free(s->items), ccq_free(s->out), ccq_free(s->order);
    ccq_free(s->fit), ccq_free(s->stage);
    ccq_free(s->all), ccq_free(s->combo);
    ccq_free(s->nz_budget), ccq_free(s->nz_ctx), ccq_free(s->mag), ccq_free(s->scratch), ccq_free(s->ctx_sub);
    memset(s, 0, sizeof *s);
}

/* Fills s->sub; returns its size (0: every weight frozen). */
static int choose(step_state *s)
{
    const cfg_search *c = s->cfg;
    const genome *g = s->g;
    const int G = max_sub(c, g->n_w);
    const uint32_t freeze = (uint32_t)llround(c->freeze * EDA_ONE);
    switch (c->group) {
    case CFG_GROUP_LAYER:
        return group_layer(g->unit_start, g->n_units, G, &s->cursor, s->sub);
    case CFG_GROUP_RANDOM: {
        rng_pcg32 r;
        rng_init_keyed(&r, c->seed, (uint64_t)s->gen, 0, KEY_GROUP);
        return group_random(g->n_w, G, &r, s->sub);
    }
    case CFG_GROUP_LAYER_CONFIDENCE:
        return group_confidence_layer(s->eda, g->unit_start, g->n_units, (int)c->layer_turns, freeze, G, frac_q16(c),
                                      s->gen, s->sub);
    default:
        return group_confidence(s->eda, freeze, G, s->sub);
    }
}

static void sample(void *arg, int k, int m, int8_t *out)
{
    const step_state *s = arg;
    if (k == (int)s->cfg->lambda) { /* the combination (search.combine) */
        memcpy(out, s->combo, (size_t)m);
    } else {
        rng_pcg32 r;
        rng_init_keyed(&r, s->cfg->seed, (uint64_t)s->gen, (uint64_t)k + 1, KEY_INDIVIDUAL);
        eda_sample(s->eda, s->sub, m, &r, out);
    }
    if (s->any_sparse) sample_repair(s, m, out);
}

int step_paired_gain(int64_t sd, int64_t sd2, int64_t n, int64_t z2_q16)
{
    if (sd >= 0 || n < 2) return 0;
    /* -mean > z * sqrt(var / n), var = (sd2 - sd^2 / n) / (n - 1), squared and times n^2 (n - 1):
     *   sd^2 (n - 1) 2^16 > z2_q16 (n sd2 - sd^2) */
    const __int128 lhs = (__int128)sd * sd * (n - 1) * 65536;
    const __int128 rhs = (__int128)z2_q16 * ((__int128)n * sd2 - (__int128)sd * sd);
    return lhs > rhs;
}

/* The paired statistic as a number, for the log only: mean gain / standard error. */
static double z_report(int64_t sd, int64_t sd2, int64_t n)
{
    const double var_n = ((double)n * (double)sd2 - (double)sd * (double)sd) / ((double)n * (n - 1));
    return var_n > 0 ? -(double)sd / n / sqrt(var_n / n) : 0.0;
}

int step_combine(const int8_t *all, const int64_t *fit, int lambda, int m, int64_t ctx, int8_t *combo)
{
    int moved = 0;
    for (int t = 0; t < m; t++) {
        const int8_t c = combo[t];
        int8_t best_v = c;
        int64_t best_sum = 0, best_n = 0;
        /* only the levels some individual drew, each once (at its first drawer j) */
        for (int j = 0; j < lambda; j++) {
            const int8_t v = all[(size_t)j * m + t];
            int seen = v == c;
            for (int k = 0; k < j && !seen; k++) seen = all[(size_t)k * m + t] == v;
            if (seen) continue;
            int64_t n = 0, sum = 0;
            for (int k = j; k < lambda; k++)
                if (all[(size_t)k * m + t] == v) n++, sum += fit[k];
            if (n < 2 || !((__int128)sum < (__int128)ctx * n)) continue;
            const __int128 a = (__int128)sum * best_n, b = (__int128)best_sum * n;
            if (best_n == 0 || a < b || (a == b && v < best_v)) best_v = v, best_sum = sum, best_n = n;
        }
        moved += best_v != c;
        combo[t] = best_v;
    }
    return moved;
}

/* search.combine: s->combo from this generation's individuals (fit[k] is individual k's). */
static int combine(step_state *s, int m, int64_t ctx, const int64_t *fit)
{
    const int lambda = (int)s->cfg->lambda;
    for (int k = 0; k < lambda; k++) sample(s, k, m, s->all + (size_t)k * m);
    genome_get(s->g, s->sub, m, s->combo);
    return step_combine(s->all, fit, lambda, m, ctx, s->combo);
}

static double report(const cfg_search *c, int64_t f, int64_t n)
{
    /* nats per image for xent/distill, error rate for accuracy */
    return c->fitness == CFG_FIT_ACCURACY ? (double)f / n : (double)f / FIT_ONE / n;
}

/* Evaluates items[0..n) on gathered images [off, off + len) over all ranks: s->out as feval_items,
 * summed. */
static void evaluate(step_state *s, int n, int m, int paired, int off, int len)
{
    feval_items(s->ev, s->items, n, s->sub, m, sample, s, paired, off, len, s->d->rank, s->d->size, s->out);
    dist_allreduce_sum(s->d, s->out, 3 * n + 1);
}

static int64_t race_z2(const cfg_search *c) { return llround(c->race_z * c->race_z * 65536.0); }

/* Stages of a generation's batch: 1 without racing. */
static int race_stages(const cfg_search *c)
{
    return race_z2(c) > 0 ? (int)(c->race_stages < c->batch ? c->race_stages : c->batch) : 1;
}

int64_t step_min_evals(const cfg_search *c)
{
    const int64_t B = c->batch, K = race_stages(c);
    /* the context on the whole batch, every individual dropped after the first stage */
    return (B + c->lambda * (B / K) + B - 1) / B;
}

int step_raced_out(int64_t sd, int64_t sd2, int64_t n, int64_t z2_q16) { return step_paired_gain(-sd, sd2, n, z2_q16); }

static int cmp_rank(const void *a, const void *b)
{
    const int64_t *x = a, *y = b; /* (class, value, individual) */
    for (int i = 0; i < 3; i++)
        if (x[i] != y[i]) return x[i] < y[i] ? -1 : 1;
    return 0;
}

/* The lambda individuals on the generation's batch, in K stages (K = 1: the whole batch at once).
 * After every stage but the last, an individual whose paired loss against the context over the
 * images so far exceeds race_z standard errors is dropped (step_raced_out): it is not evaluated
 * on the later stages. Fills s->fit (the whole batch's fitness; for a dropped individual the
 * context's plus its paired sum scaled to the batch, integer), s->psd / s->psd2 / s->pn (paired
 * sums and their image count), s->order (survivors by fitness, then the dropped, the later
 * dropped first, each group by paired sum; ties by individual), *ctx and *ctx_correct. Returns the
 * image passes spent (the context's included). */
static int64_t run_individuals(step_state *s, int m, int K, int64_t z2r, int64_t *ctx, int64_t *ctx_correct,
                               int *dropped)
{
    const int lambda = (int)s->cfg->lambda, B = (int)s->cfg->batch;
    int64_t passes = 0;
    *ctx = 0, *ctx_correct = 0, *dropped = 0;
    for (int k = 0; k < lambda; k++) s->fit[k] = 0, s->psd[k] = 0, s->psd2[k] = 0, s->pn[k] = 0, s->stage[k] = -1;
    for (int st = 0; st < K; st++) {
        const int off = (int)((int64_t)B * st / K), len = (int)((int64_t)B * (st + 1) / K) - off;
        int n = 0;
        s->items[n++] = -1;
        for (int k = 0; k < lambda; k++)
            if (s->stage[k] < 0) s->items[n++] = k;
        evaluate(s, n, m, 1, off, len);
        passes += (int64_t)n * len;
        *ctx += s->out[0], *ctx_correct += s->out[n];
        for (int it = 1; it < n; it++) {
            const int k = s->items[it];
            s->fit[k] += s->out[it], s->psd[k] += s->out[n + 1 + it], s->psd2[k] += s->out[2 * n + 1 + it];
            s->pn[k] += len;
            if (st + 1 < K && step_raced_out(s->psd[k], s->psd2[k], s->pn[k], z2r)) s->stage[k] = st, (*dropped)++;
        }
    }
    for (int k = 0; k < lambda; k++) {
        int64_t *o = s->order + 3 * (size_t)k;
        if (s->stage[k] < 0) {
            o[0] = 0, o[1] = s->fit[k];
        } else {
            o[0] = K - s->stage[k], o[1] = s->psd[k];
            s->fit[k] = *ctx + s->psd[k] * B / s->pn[k];
        }
        o[2] = k;
    }
    qsort(s->order, (size_t)lambda, 3 * sizeof(int64_t), cmp_rank);
    return passes;
}

int step_run(step_state *s, cclog_rec *rec)
{
    const cfg_search *c = s->cfg;
    const int lambda = (int)c->lambda, mu = (int)(c->mu < c->lambda ? c->mu : c->lambda), B = (int)c->batch;
    const int64_t z2 = llround(c->accept_z * c->accept_z * 65536.0);
    const int64_t z2r = race_z2(c);
    const int K = race_stages(c);
    const int paired = z2 > 0;
    memset(rec, 0, sizeof *rec);
    const int m = choose(s);
    if (m == 0) return 0;
    if (s->any_sparse) sparse_context(s, m);
    feval_gather(s->ev, s->pool, s->pool_n, s->gen * (int64_t)B, B);
    int64_t ctx, ctx_correct;
    int dropped;
    const int64_t passes = run_individuals(s, m, K, z2r, &ctx, &ctx_correct, &dropped);
    /* evaluations: whole-batch passes, a race's partial ones rounded up */
    s->evals += (passes + B - 1) / B;
    const int64_t *fit = s->fit;
    int64_t sum = 0;
    for (int k = 0; k < lambda; k++) sum += fit[k];
    int best = (int)s->order[2];
    int64_t best_fit = fit[best];
    /* the paired test without a confirmation batch is made on the selection batch */
    int64_t sd = s->psd[best], sd2 = s->psd2[best];
    if (c->combine && combine(s, m, ctx, fit) > 0) {
        /* the combination on the same batch, beside the context (the paired sums need it) */
        s->items[0] = -1, s->items[1] = lambda;
        evaluate(s, 2, m, 1, 0, B);
        s->evals += 2;
        rec->has_combined = 1, rec->combined = report(c, s->out[1], B);
        if (s->out[1] < best_fit) {
            best = lambda, best_fit = s->out[1], rec->combined_won = 1;
            sd = s->out[3 + 1], sd2 = s->out[2 * 2 + 1 + 1];
        }
    }
    if (K > 1) rec->has_race = 1, rec->raced_out = dropped;
    for (int e = 0; e < mu; e++) sample(s, (int)s->order[3 * e + 2], m, s->elite + (size_t)e * m);
    eda_update(s->eda, s->sub, m, s->elite, mu, (uint32_t)llround(c->alpha * EDA_ONE));

    /* a dropped individual's fitness (scaled from a positive paired sum) is above the context's */
    int accept = best_fit < ctx;
    int64_t n_test = B;
    if (accept && c->confirm_batch > 0) {
        const int C = (int)c->confirm_batch;
        feval_gather(s->ev, s->pool, s->pool_n, s->pool_n / 2 + s->gen * (int64_t)C, C);
        s->items[0] = -1, s->items[1] = best;
        evaluate(s, 2, m, paired, 0, C);
        s->evals += 2;
        rec->has_confirm = 1;
        rec->confirm_context = report(c, s->out[0], C), rec->confirm_best = report(c, s->out[1], C);
        accept = s->out[1] < s->out[0];
        sd = s->out[3 + 1], sd2 = s->out[2 * 2 + 1 + 1], n_test = C;
    }
    if (accept && paired) {
        rec->has_z = 1, rec->z = z_report(sd, sd2, n_test);
        accept = step_paired_gain(sd, sd2, n_test, z2);
    }
    if (accept) {
        sample(s, best, m, s->ind);
        genome_set(s->g, s->sub, m, s->ind);
        s->accepted++;
    }
    s->gen++;
    rec->gen = s->gen, rec->size = m, rec->accepted = accept;
    rec->context = report(c, ctx, B), rec->best = report(c, best_fit, B);
    rec->mean = report(c, sum, (int64_t)B * lambda), rec->context_acc = (double)ctx_correct / B;
    rec->evaluations = s->evals, rec->accepted_total = s->accepted, rec->budget = c->budget;
    return 1;
}
