/*
 * actprune.c: activation thresholds under an accuracy bound (actprune.h).
 */
#include "ccq/actprune.h"

#include <stdlib.h>
#include <string.h>

#include "ccq/fit.h"
#include "ccq/qnet.h"

const int ACTPRUNE_LADDER[ACTPRUNE_STEPS] = {0, 1, 2, 3, 4, 6, 8, 12, 16, 24, 32, 48, 64, 96, 128, 192, 255};

enum { KEY_ACTPRUNE_IMAGES = 6 }; /* purpose of the sample's stream (step.c 1-3, alloc.c 4-5) */
enum { CHUNK = 512, MB = 32 };

void actprune_config_default(actprune_config *c)
{
    memset(c, 0, sizeof *c);
    c->images = 4096;
    c->max_drop_bp = 30;
    c->rounds = 0; /* the ascent spends the bound on the sample for few zeros: results/actprune.md */
    c->seed = 1;
}

void actprune_report_free(actprune_report *r)
{
    ccq_free(r->layer);
    memset(r, 0, sizeof *r);
}

typedef struct {
    qnet q;
    fit_ctx f;
    const data_split *s; /* the sample */
    size_t image_bytes;
    int32_t *logits;     /* CHUNK * classes */
    int64_t *zeros;      /* [n_nodes], q.node_zeros */
    int L;
    actprune_layer *layer;
} ctx;

typedef struct {
    int64_t correct, fit, zeros;
} score;

/* The joint model with ladder steps st[l]: its score on the whole sample; each layer's zeros into z[l]. */
static score eval_joint(ctx *x, const int *st, int64_t *z)
{
    for (int l = 0; l < x->L; l++) qnet_set_thresh(&x->q, x->layer[l].node, ACTPRUNE_LADDER[st[l]]);
    memset(x->zeros, 0, sizeof(int64_t) * (size_t)x->q.m->n_nodes);
    score r = {0, 0, 0};
    for (int o = 0; o < x->s->n; o += CHUNK) {
        const int n = x->s->n - o < CHUNK ? x->s->n - o : CHUNK;
        qnet_forward(&x->q, x->s->images + (size_t)o * x->image_bytes, n, x->logits);
        r.fit += fit_xent(&x->f, x->logits, n, x->s->labels + o);
        r.correct += fit_correct(&x->f, x->logits, n, x->s->labels + o);
    }
    for (int l = 0; l < x->L; l++) {
        z[l] = x->zeros[x->layer[l].node];
        r.zeros += z[l];
    }
    return r;
}

/* Whether s keeps the bound: at least bound->correct correct predictions, at most bound->fit. */
static int within(const score *s, const score *bound) { return s->correct >= bound->correct && s->fit <= bound->fit; }

/* Step 1: every layer alone at every ladder value, from a prefix cache. */
static void sensitivity(ctx *x)
{
    qnet_cache c;
    qnet_cache_init(&c, &x->q, CHUNK);
    for (int l = 0; l < x->L; l++) {
        actprune_layer *ly = &x->layer[l];
        for (int o = 0; o < x->s->n; o += CHUNK) {
            const int n = x->s->n - o < CHUNK ? x->s->n - o : CHUNK;
            qnet_cache_fill(&x->q, &c, ly->node, x->s->images + (size_t)o * x->image_bytes, n);
            for (int k = 0; k < ACTPRUNE_STEPS; k++) {
                qnet_set_thresh(&x->q, ly->node, ACTPRUNE_LADDER[k]);
                x->zeros[ly->node] = 0;
                qnet_forward_cached(&x->q, &c, 0, n, x->logits);
                ly->alone_fit[k] += fit_xent(&x->f, x->logits, n, x->s->labels + o);
                ly->alone_correct[k] += fit_correct(&x->f, x->logits, n, x->s->labels + o);
                ly->alone_zeros[k] += x->zeros[ly->node];
            }
            qnet_set_thresh(&x->q, ly->node, 0);
        }
    }
    qnet_cache_free(&c);
}

static int cmp_i64(const void *a, const void *b)
{
    const int64_t u = *(const int64_t *)a, v = *(const int64_t *)b;
    return (u > v) - (u < v);
}

ccq_status actprune_search(model *m, const actprune_config *c, const data_split *train, actprune_report *r,
                           ccq_err *err)
{
    memset(r, 0, sizeof *r);
    const double t0 = ccq_seconds();
    ccq_status st;
    if (!m->quantized) return ccq_fail(err, CCQ_ERR_USAGE, "%s: a float model: quantize it first (ccq quantize)", m->path);
    if ((st = data_check_fits(train, m, err))) return st;
    /* the candidates: prunable nodes the logits depend on */
    uint8_t *live = ccq_calloc((size_t)m->n_nodes, 1);
    live[m->output] = 1;
    for (int i = m->output; i >= 0; i--)
        for (int j = 0; live[i] && j < m->nodes[i].n_in; j++)
            if (m->nodes[i].in[j] >= 0) live[m->nodes[i].in[j]] = 1;
    ctx x;
    memset(&x, 0, sizeof x);
    x.layer = ccq_calloc((size_t)m->n_nodes, sizeof(actprune_layer));
    for (int i = 0; i < m->n_nodes; i++) {
        m->nodes[i].act_thresh = 0;
        if (live[i] && model_node_prunable(m, i)) {
            x.layer[x.L].node = i;
            x.layer[x.L].numel = model_numel(m->nodes[i].shape);
            x.L++;
        }
    }
    ccq_free(live);
    if (!x.L) {
        ccq_free(x.layer);
        return ccq_fail(err, CCQ_ERR_USAGE, "%s: no node can carry an activation threshold", m->path);
    }
    if ((st = qnet_init(&x.q, m, NULL, MB, err))) {
        ccq_free(x.layer);
        return st;
    }
    if ((st = fit_init(&x.f, m->classes, x.q.logits_scale, err))) {
        qnet_free(&x.q);
        ccq_free(x.layer);
        return st;
    }
    data_split sample;
    data_sample(train, c->images, c->seed, KEY_ACTPRUNE_IMAGES, &sample);
    x.s = &sample;
    x.image_bytes = (size_t)train->c * (size_t)train->h * (size_t)train->w;
    x.logits = ccq_malloc(sizeof(int32_t) * CHUNK * (size_t)m->classes);
    x.zeros = ccq_calloc((size_t)m->n_nodes, sizeof(int64_t));
    x.q.node_zeros = x.zeros;
    const int L = x.L;
    int *stp = ccq_calloc((size_t)L, sizeof(int)), *cand = ccq_calloc((size_t)L, sizeof(int));
    int64_t *z = ccq_calloc((size_t)L, sizeof(int64_t)), *zbest = ccq_calloc((size_t)L, sizeof(int64_t));

    /* the bound: the model without thresholds */
    const score s0 = eval_joint(&x, stp, z);
    for (int l = 0; l < L; l++) x.layer[l].zeros0 = x.layer[l].zeros = z[l];
    memcpy(zbest, z, sizeof(int64_t) * (size_t)L);
    r->max_drop = (int64_t)c->max_drop_bp * sample.n / 10000;
    const int64_t floor_correct = s0.correct - r->max_drop;
    const score bound = {s0.correct - r->max_drop, c->max_xent_bp ? s0.fit + s0.fit * c->max_xent_bp / 10000 : INT64_MAX, 0};

    /* step 1 */
    sensitivity(&x);
    /* the prefix cache is exact: every node's threshold 0, run from its cut, is the whole network */
    for (int l = 0; l < L; l++)
        CCQ_ASSERT(x.layer[l].alone_fit[0] == s0.fit && x.layer[l].alone_correct[0] == s0.correct &&
                   x.layer[l].alone_zeros[0] == x.layer[l].zeros0);
    int64_t *need = ccq_malloc(sizeof(int64_t) * (size_t)L * ACTPRUNE_STEPS);
    int64_t *tau = ccq_malloc(sizeof(int64_t) * (size_t)L * ACTPRUNE_STEPS);
    int nt = 0;
    for (int l = 0; l < L; l++) {
        actprune_layer *ly = &x.layer[l];
        ly->alone_step = 0;
        int ok = 1;
        int64_t run = INT64_MIN;
        need[l * ACTPRUNE_STEPS] = INT64_MIN;
        for (int k = 1; k < ACTPRUNE_STEPS; k++) {
            ok &= ly->alone_correct[k] >= floor_correct;
            if (ok) ly->alone_step = k;
            const int64_t inc = ly->alone_fit[k] - s0.fit;
            run = inc > run ? inc : run;
            need[l * ACTPRUNE_STEPS + k] = run;
            tau[nt++] = run;
        }
    }
    qsort(tau, (size_t)nt, sizeof(int64_t), cmp_i64);
    int nu = 0;
    for (int k = 0; k < nt; k++)
        if (!nu || tau[k] != tau[nu - 1]) tau[nu++] = tau[k];

    /* step 2: bisection over tau; lo = -1 is the model without thresholds (within the bound) */
    score best = s0;
    int lo = -1, hi = nu;
    while (hi - lo > 1) {
        const int mid = lo + (hi - lo) / 2;
        for (int l = 0; l < L; l++) {
            int k = 0;
            while (k + 1 < ACTPRUNE_STEPS && need[l * ACTPRUNE_STEPS + k + 1] <= tau[mid]) k++;
            cand[l] = k;
        }
        const score s = eval_joint(&x, cand, z);
        r->evals++;
        if (within(&s, &bound)) {
            lo = mid;
            best = s;
            memcpy(stp, cand, sizeof(int) * (size_t)L);
            memcpy(zbest, z, sizeof(int64_t) * (size_t)L);
        } else {
            hi = mid;
        }
    }
    r->correct2 = best.correct, r->fit2 = best.fit, r->zeros2 = best.zeros;

    /* step 3: greedy ascent, one ladder value at a time */
    for (int round = 0; round < c->rounds; round++) {
        int changed = 0;
        for (int l = 0; l < L; l++) {
            if (stp[l] + 1 >= ACTPRUNE_STEPS) continue;
            memcpy(cand, stp, sizeof(int) * (size_t)L);
            cand[l]++;
            const score s = eval_joint(&x, cand, z);
            r->evals++;
            if (within(&s, &bound) && s.zeros > best.zeros) {
                best = s;
                stp[l]++;
                memcpy(zbest, z, sizeof(int64_t) * (size_t)L);
                changed = 1;
            }
        }
        if (!changed) break;
    }

    for (int l = 0; l < L; l++) {
        x.layer[l].step = stp[l];
        x.layer[l].zeros = zbest[l];
        m->nodes[x.layer[l].node].act_thresh = ACTPRUNE_LADDER[stp[l]];
        r->numel += x.layer[l].numel;
    }
    r->n_layers = L;
    r->layer = x.layer;
    r->n_images = sample.n;
    r->correct0 = s0.correct, r->fit0 = s0.fit, r->zeros0 = s0.zeros;
    r->correct = best.correct, r->fit = best.fit, r->zeros = best.zeros;
    ccq_free(need), ccq_free(tau), ccq_free(stp), ccq_free(cand), ccq_free(z), ccq_free(zbest);
    ccq_free(x.logits), ccq_free(x.zeros);
    qnet_free(&x.q);
    data_free(&sample);
    r->seconds = ccq_seconds() - t0;
    return CCQ_OK;
}
