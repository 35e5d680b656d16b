/*
 * alloc.c: per-layer weight widths under a size budget (see alloc.h).
 * Integer arithmetic throughout: the fitness is fit_xent of the integer
 * network, the DP and the penalty are int64 sums.
 */
#include "ccq/alloc.h"

#include <stdio.h>
#include <string.h>

#include "ccq/eda.h"
#include "ccq/fit.h"
#include "ccq/qnet.h"
#include "ccq/rng.h"

enum { KEY_ALLOC_IMAGES = 4, KEY_ALLOC_EDA = 5 }; /* purposes of the keyed streams (step.c uses 1-3) */
enum { DP_MAX_UNITS = 1 << 16, CHUNK = 256 };

void alloc_config_default(alloc_config *c)
{
    memset(c, 0, sizeof *c);
    c->n_widths = 4;
    c->widths[0] = 2, c->widths[1] = 3, c->widths[2] = 4, c->widths[3] = 8;
    c->images = 2048;
    c->generations = 24;
    c->lambda = 16;
    c->mu = 4;
    c->seed = 1;
}

/* Free layers: conv/linear nodes whose width differs between the first and
 * the last candidate. */
static int free_layers(const model *cand, int n_cand, int *node)
{
    int L = 0;
    for (int i = 0; i < cand[0].n_nodes; i++)
        if (cand[0].nodes[i].levels && cand[0].nodes[i].bits != cand[n_cand - 1].nodes[i].bits) node[L++] = i;
    return L;
}

quant_config alloc_candidate_config(const quant_config *base, int bits)
{
    quant_config qc = *base;
    qc.wbits = bits;
    if (bits > MODEL_CODEBOOK_MAX_BITS) qc.level_rule = QUANT_LEVELS_UNIFORM;
    return qc;
}

int64_t alloc_uniform_bytes(const model *cand, int n_cand, int k)
{
    int64_t total = model_deployed_bytes(&cand[0]);
    for (int i = 0; i < cand[0].n_nodes; i++)
        if (cand[0].nodes[i].levels && cand[0].nodes[i].bits != cand[n_cand - 1].nodes[i].bits)
            total += model_node_weight_bytes(&cand[k].nodes[i]) - model_node_weight_bytes(&cand[0].nodes[i]);
    return total;
}

typedef struct {
    const model *cand;
    int n_cand, L;
    const int *node;
    int64_t fixed;      /* bytes of everything but the free layers' weights */
    int64_t *cost;      /* [L][n_cand] weight bytes */
    model mix;          /* cand[0] with node structs swapped in (shallow) */
    const uint8_t *img; /* the fitness images */
    const int32_t *lab;
    int n, image_bytes;
    int32_t *logits;
    /* allocations evaluated: [n_seen][L] width indices and their fitness */
    int8_t *seen;
    int64_t *seen_fit;
    int n_seen, cap_seen;
} ctx;

static int64_t bytes_of(const ctx *x, const int8_t *a)
{
    int64_t b = x->fixed;
    for (int l = 0; l < x->L; l++) b += x->cost[l * x->n_cand + a[l]];
    return b;
}

/* The fitness of allocation a (width index per free layer). */
static ccq_status fitness(ctx *x, const int8_t *a, int64_t *out, ccq_err *err)
{
    for (int s = 0; s < x->n_seen; s++)
        if (memcmp(x->seen + (size_t)s * x->L, a, (size_t)x->L) == 0) {
            *out = x->seen_fit[s];
            return CCQ_OK;
        }
    for (int l = 0; l < x->L; l++) {
        const int i = x->node[l];
        x->mix.nodes[i] = x->cand[a[l]].nodes[i];
    }
    qnet q;
    fit_ctx f;
    ccq_status st = qnet_init(&q, &x->mix, NULL, 8, err);
    if (st) return st;
    if ((st = fit_init(&f, x->mix.classes, q.logits_scale, err))) {
        qnet_free(&q);
        return st;
    }
    int64_t sum = 0;
    for (int o = 0; o < x->n; o += CHUNK) {
        const int k = x->n - o < CHUNK ? x->n - o : CHUNK;
        qnet_forward(&q, x->img + (size_t)o * (size_t)x->image_bytes, k, x->logits);
        sum += fit_xent(&f, x->logits, k, x->lab + o);
    }
    qnet_free(&q);
    if (x->n_seen == x->cap_seen) {
        x->cap_seen = x->cap_seen ? 2 * x->cap_seen : 64;
        x->seen = ccq_realloc(x->seen, (size_t)x->cap_seen * (size_t)x->L);
        x->seen_fit = ccq_realloc(x->seen_fit, sizeof(int64_t) * (size_t)x->cap_seen);
    }
    memcpy(x->seen + (size_t)x->n_seen * x->L, a, (size_t)x->L);
    x->seen_fit[x->n_seen++] = sum;
    *out = sum;
    return CCQ_OK;
}

/* The ranking key: the fitness within the budget, else past every such one by the excess. */
static int64_t penalized(const ctx *x, const int8_t *a, int64_t fit, int64_t budget)
{
    const int64_t excess = bytes_of(x, a) - budget;
    return excess > 0 ? INT64_MAX / 2 + excess : fit;
}

/* Step 2: the allocation minimizing sum sens[l][a[l]] with bytes within the budget. Costs are
 * counted above each layer's narrowest width, so the narrowest allocation costs 0 units and is
 * always feasible, whatever the rounding of the others up to whole units. */
static void knapsack(const ctx *x, const int64_t *sens, int64_t budget, int8_t *a)
{
    int64_t room = budget - x->fixed; /* >= the narrowest allocation's weight bytes */
    for (int l = 0; l < x->L; l++) room -= x->cost[l * x->n_cand];
    const int64_t unit = room / DP_MAX_UNITS + 1;
    const int64_t cap = room / unit; /* costs rounded up: anything within cap units fits */
    const int64_t INF = INT64_MAX / 4;
    int64_t *best = ccq_malloc(sizeof(int64_t) * (size_t)(cap + 1)), *next = ccq_malloc(sizeof(int64_t) * (size_t)(cap + 1));
    int8_t *choice = ccq_malloc((size_t)(x->L ? x->L : 1) * (size_t)(cap + 1));
    for (int64_t u = 0; u <= cap; u++) best[u] = 0; /* best[u]: the layers so far within u units */
    for (int l = 0; l < x->L; l++) {
        for (int64_t u = 0; u <= cap; u++) {
            int64_t v = INF;
            int8_t c = 0;
            for (int k = 0; k < x->n_cand; k++) {
                const int64_t w = (x->cost[l * x->n_cand + k] - x->cost[l * x->n_cand] + unit - 1) / unit;
                if (w > u || best[u - w] >= INF) continue;
                const int64_t t = best[u - w] + sens[l * x->n_cand + k];
                if (t < v) v = t, c = (int8_t)k; /* ties to the narrower width */
            }
            next[u] = v, choice[(size_t)l * (size_t)(cap + 1) + (size_t)u] = c;
        }
        int64_t *t = best;
        best = next, next = t;
    }
    int64_t u = cap;
    for (int l = x->L - 1; l >= 0; l--) {
        const int8_t k = choice[(size_t)l * (size_t)(cap + 1) + (size_t)u];
        a[l] = k;
        u -= (x->cost[l * x->n_cand + k] - x->cost[l * x->n_cand] + unit - 1) / unit;
    }
    ccq_free(best), ccq_free(next), ccq_free(choice);
}

static ccq_status check_candidates(const model *cand, const alloc_config *c, ccq_err *err)
{
    if (c->n_widths < 2 || c->n_widths > ALLOC_MAX_WIDTHS)
        return ccq_fail(err, CCQ_ERR_USAGE, "widths: between 2 and %d widths are needed, got %d", ALLOC_MAX_WIDTHS,
                        c->n_widths);
    for (int k = 0; k < c->n_widths; k++) {
        if (c->widths[k] < 2 || c->widths[k] > 8 || (k && c->widths[k] <= c->widths[k - 1]))
            return ccq_fail(err, CCQ_ERR_USAGE, "widths: must be increasing within 2..8");
        if (!cand[k].quantized || cand[k].n_nodes != cand[0].n_nodes || cand[k].output != cand[0].output)
            return ccq_fail(err, CCQ_ERR_USAGE, "widths: the %d-bit candidate is not the same quantized graph",
                            c->widths[k]);
        for (int i = 0; i < cand[0].n_nodes; i++) {
            const model_node *a = &cand[0].nodes[i], *b = &cand[k].nodes[i];
            if (a->op != b->op || (a->levels == NULL) != (b->levels == NULL) || a->n_weight != b->n_weight ||
                a->shape.c != b->shape.c)
                return ccq_fail(err, CCQ_ERR_USAGE, "widths: the %d-bit candidate differs at node %d (%s)",
                                c->widths[k], i, a->name);
            if (b->levels && b->bits != c->widths[k] && b->bits != cand[0].nodes[i].bits)
                return ccq_fail(err, CCQ_ERR_USAGE, "widths: node %d (%s) of the %d-bit candidate has %d bits", i,
                                a->name, c->widths[k], b->bits);
        }
    }
    if (c->images < 1 || c->lambda < 1 || c->mu < 1 || c->mu > c->lambda || c->generations < 0)
        return ccq_fail(err, CCQ_ERR_USAGE, "alloc: bad images/lambda/mu/generations");
    return CCQ_OK;
}

ccq_status alloc_assemble(const model *cand, int n_cand, const int8_t *bits, model *out, ccq_err *err)
{
    model mix = cand[0];
    mix.nodes = ccq_malloc(sizeof(model_node) * (size_t)cand[0].n_nodes);
    memcpy(mix.nodes, cand[0].nodes, sizeof(model_node) * (size_t)cand[0].n_nodes);
    for (int i = 0; i < cand[0].n_nodes; i++) {
        if (!cand[0].nodes[i].levels) continue;
        int k = 0;
        while (k < n_cand && cand[k].nodes[i].bits != bits[i]) k++;
        if (k == n_cand) {
            ccq_free(mix.nodes);
            return ccq_fail(err, CCQ_ERR_MISMATCH, "node %d (%s): no candidate at %d bits", i, cand[0].nodes[i].name,
                            bits[i]);
        }
        mix.nodes[i] = cand[k].nodes[i];
    }
    model_copy(out, &mix);
    ccq_free(mix.nodes);
    return CCQ_OK;
}

ccq_status alloc_widths(const model *cand, const alloc_config *c, const data_split *train, model *out,
                        alloc_report *rep, ccq_err *err)
{
    const double t0 = ccq_seconds();
    ccq_status st = check_candidates(cand, c, err);
    if (st) return st;
    if ((st = data_check_fits(train, &cand[0], err))) return st;
    alloc_report r;
    memset(&r, 0, sizeof r);
    const int K = c->n_widths;
    ctx x;
    memset(&x, 0, sizeof x);
    x.cand = cand, x.n_cand = K;
    int *node = ccq_malloc(sizeof(int) * (size_t)(cand[0].n_nodes + 1));
    x.L = free_layers(cand, K, node), x.node = node;
    const int L = x.L;
    r.layers = L;
    x.cost = ccq_malloc(sizeof(int64_t) * (size_t)(L ? L : 1) * (size_t)K);
    x.fixed = model_deployed_bytes(&cand[0]);
    for (int l = 0; l < L; l++) {
        x.fixed -= model_node_weight_bytes(&cand[0].nodes[node[l]]);
        for (int k = 0; k < K; k++) x.cost[l * K + k] = model_node_weight_bytes(&cand[k].nodes[node[l]]);
    }
    r.bytes_min = alloc_uniform_bytes(cand, K, 0), r.bytes_max = alloc_uniform_bytes(cand, K, K - 1);
    if (c->budget < r.bytes_min) {
        st = ccq_fail(err, CCQ_ERR_USAGE,
                      "%s: a budget of %lld bytes is below the smallest allocation, %lld bytes (every layer at %d "
                      "bits)",
                      cand[0].path, (long long)c->budget, (long long)r.bytes_min, c->widths[0]);
        ccq_free(node), ccq_free(x.cost);
        return st;
    }

    /* the fitness images: a keyed sample of the train split */
    data_split sample;
    data_sample(train, c->images, c->seed, KEY_ALLOC_IMAGES, &sample);
    const int N = sample.n;
    x.image_bytes = train->c * train->h * train->w;
    uint8_t *img = sample.images;
    int32_t *lab = sample.labels;
    x.img = img, x.lab = lab, x.n = N;
    r.n_images = N;
    x.logits = ccq_malloc(sizeof(int32_t) * (size_t)CHUNK * (size_t)cand[0].classes);
    x.mix = cand[0];
    x.mix.nodes = ccq_malloc(sizeof(model_node) * (size_t)cand[0].n_nodes);
    memcpy(x.mix.nodes, cand[0].nodes, sizeof(model_node) * (size_t)cand[0].n_nodes);

    int8_t *a = ccq_malloc((size_t)(L ? L : 1)), *best = ccq_malloc((size_t)(L ? L : 1));
    int64_t *sens = ccq_calloc((size_t)(L ? L : 1) * (size_t)K, sizeof(int64_t));
    int64_t f;
    /* step 1: every free layer widest, then one layer at a time narrower */
    memset(a, K - 1, (size_t)L);
    if ((st = fitness(&x, a, &r.fit_max, err))) goto done;
    memcpy(best, a, (size_t)L);
    int64_t best_key = penalized(&x, a, r.fit_max, c->budget), best_fit = r.fit_max;
    r.fit_uniform = r.fit_dp = r.fit_max, r.uniform_width = c->widths[K - 1];
    if (r.bytes_max > c->budget) {
        for (int l = 0; l < L && !st; l++)
            for (int k = 0; k < K - 1 && !st; k++) {
                a[l] = (int8_t)k;
                if (!(st = fitness(&x, a, &f, err))) sens[l * K + k] = f - r.fit_max;
                a[l] = (int8_t)(K - 1);
            }
        if (st) goto done;
        /* the widest uniform allocation within the budget (every free layer at one width) */
        for (int k = K - 2; k >= 0; k--) {
            memset(a, k, (size_t)L);
            if (bytes_of(&x, a) > c->budget) continue;
            if ((st = fitness(&x, a, &r.fit_uniform, err))) goto done;
            r.uniform_width = c->widths[k];
            memcpy(best, a, (size_t)L);
            best_key = r.fit_uniform, best_fit = r.fit_uniform;
            break;
        }
        /* step 2 */
        knapsack(&x, sens, c->budget, a);
        if ((st = fitness(&x, a, &r.fit_dp, err))) goto done;
        if (r.fit_dp < best_key) memcpy(best, a, (size_t)L), best_key = r.fit_dp, best_fit = r.fit_dp;
        /* step 3: the EDA around the DP's allocation */
        if (c->generations > 0 && L > 0) {
            eda_state e;
            int8_t *lo = ccq_calloc((size_t)L, 1), *hi = ccq_malloc((size_t)L);
            memset(hi, K - 1, (size_t)L);
            const uint32_t p_center = (uint32_t)(EDA_ONE - EDA_ONE * 3 / (L + 3)); /* about 3 layers move */
            st = eda_init(&e, L, 1, a, lo, hi, p_center, EDA_ONE / 100, err);
            ccq_free(lo), ccq_free(hi);
            if (st) goto done;
            int64_t *idx = ccq_malloc(sizeof(int64_t) * (size_t)L);
            for (int l = 0; l < L; l++) idx[l] = l;
            int8_t *pop = ccq_malloc((size_t)c->lambda * (size_t)L), *elite = ccq_malloc((size_t)c->mu * (size_t)L);
            int64_t *key = ccq_malloc(sizeof(int64_t) * (size_t)c->lambda);
            int *order = ccq_malloc(sizeof(int) * (size_t)c->lambda);
            for (int gen = 0; gen < c->generations && !st; gen++) {
                for (int i = 0; i < c->lambda && !st; i++) {
                    rng_pcg32 rs;
                    rng_init_keyed(&rs, c->seed, (uint64_t)gen, (uint64_t)i, KEY_ALLOC_EDA);
                    int8_t *ai = pop + (size_t)i * L;
                    eda_sample(&e, idx, L, &rs, ai);
                    if ((st = fitness(&x, ai, &f, err))) break;
                    key[i] = penalized(&x, ai, f, c->budget);
                    if (key[i] < best_key) best_key = key[i], best_fit = f, memcpy(best, ai, (size_t)L);
                    /* insertion into the order by (key, index) */
                    int j = i;
                    while (j > 0 && key[order[j - 1]] > key[i]) order[j] = order[j - 1], j--;
                    order[j] = i;
                }
                if (st) break;
                for (int k = 0; k < c->mu; k++) memcpy(elite + (size_t)k * L, pop + (size_t)order[k] * L, (size_t)L);
                eda_update(&e, idx, L, elite, c->mu, EDA_ONE * 3 / 10);
            }
            eda_free(&e);
            ccq_free(idx), ccq_free(pop), ccq_free(elite), ccq_free(key), ccq_free(order);
            if (st) goto done;
        }
    }
    if (best_key >= INT64_MAX / 2) { /* cannot happen: the DP's answer fits */
        st = ccq_fail(err, CCQ_ERR_LIMIT, "alloc: no allocation within %lld bytes", (long long)c->budget);
        goto done;
    }
    for (int l = 0; l < L; l++) {
        x.mix.nodes[node[l]] = cand[best[l]].nodes[node[l]];
        r.layer_count[best[l]]++;
        r.layer_bytes[best[l]] += x.cost[l * K + best[l]];
    }
    model_copy(out, &x.mix);
    r.fit = best_fit;
    r.bytes = model_deployed_bytes(out);
    r.evals = x.n_seen;
    r.seconds = ccq_seconds() - t0;
    if (rep) *rep = r;
done:
    ccq_free(a), ccq_free(best), ccq_free(sens);
    ccq_free(x.mix.nodes), ccq_free(x.logits), ccq_free(img), ccq_free(lab);
    ccq_free(x.seen), ccq_free(x.seen_fit), ccq_free(x.cost), ccq_free(node);
    return st;
}
