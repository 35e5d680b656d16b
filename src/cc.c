/*
 * cc.c: the search driver (see cc.h): set-up, the loop, validation,
 * checkpoints and resume. One generation is step_run (step.c); the search
 * variables are genome_, the fitness passes feval_, the log cclog_. Ranks
 * differ only in which passes they compute.
 */
#define _GNU_SOURCE /* open_memstream */
#include "ccq/cc.h"

#include <math.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "ccq/alloc.h"
#include "ccq/cclog.h"
#include "ccq/ckpt.h"
#include "ccq/data.h"
#include "ccq/eda.h"
#include "ccq/feval.h"
#include "ccq/fit.h"
#include "ccq/genome.h"
#include "ccq/gptq.h"
#include "ccq/model.h"
#include "ccq/qnet.h"
#include "ccq/quant.h"
#include "ccq/step.h"

/* Purpose of the data permutation's stream (third key word; step.c uses 1 and 3). */
enum { KEY_DATA = 2 };

static volatile sig_atomic_t g_stop;
static void on_signal(int sig) { (void)sig, g_stop = 1; }

typedef struct {
    cfg_search cfg;
    const dist_ctx *d;
    model fm, m; /* float model (teacher) and the quantized context */
    qnet q;
    genome g;
    eda_state eda;
    fit_ctx fit;
    feval ev;
    step_state st;
    data_split train;
    int32_t *perm; /* permutation of the train split: [0, val) validation, the rest the fitness pool */
    int n_val, n_fit;
    int64_t best_val;
    int8_t *best_levels;
    uint64_t model_hash, data_hash;
    char start[16];      /* how the start was made (ckpt_data.start) */
    cclog log;
    int64_t val_correct; /* the context's correct validation predictions at the last validation */
    int64_t last_val;    /* the context's validation fitness at the last validation */
    int64_t val_sumsq;   /* and the sum of the squares of its per-image values */
    int64_t n_start_cb;  /* the start's codebooks (ckpt_data.start_codebook) */
    int8_t *start_cb;
} cc_state;

static double fitness_report(const cc_state *s, int64_t f, int n)
{
    return s->cfg.fitness == CFG_FIT_ACCURACY ? (double)f / n : (double)f / FIT_ONE / n;
}

/* Validation fitness of the context: chunks of `batch` images split over
 * ranks; also counts its correct predictions into s->val_correct. */
static int64_t validate(cc_state *s)
{
    const int chunk = (int)s->cfg.batch, chunks = (s->n_val + chunk - 1) / chunk;
    int64_t v[3] = {0, 0, 0}; /* fitness, correct, sum of squares */
    for (int c = s->d->rank; c < chunks; c += s->d->size) {
        const int n = s->n_val - c * chunk < chunk ? s->n_val - c * chunk : chunk;
        feval_gather(&s->ev, s->perm, s->n_val, (int64_t)c * chunk, n);
        v[0] += feval_context(&s->ev, 0, n, &v[1], &v[2]);
    }
    dist_allreduce_sum(s->d, v, 3);
    s->val_correct = v[1];
    s->val_sumsq = v[2];
    return v[0];
}

/* run.snapshots: the model kept so far (best on validation), as OUTPUT with .gGEN before .h5. */
static ccq_status write_snapshot(cc_state *s, ccq_err *err)
{
    ccq_status st = CCQ_OK;
    if (s->d->rank == 0) {
        char path[CFG_PATH_MAX + 32];
        const char *o = s->cfg.output;
        const size_t n = strlen(o);
        const int stem = n > 3 && !strcmp(o + n - 3, ".h5") ? (int)n - 3 : (int)n;
        snprintf(path, sizeof path, "%.*s.g%06lld.h5", stem, o, (long long)s->st.gen);
        model snap;
        model_copy(&snap, &s->m);
        genome_write_model(&s->g, s->best_levels, &snap);
        st = model_save(&snap, path, err);
        model_free(&snap);
    }
    return (ccq_status)dist_bcast_int(s->d, (int)st);
}

static ccq_status check_validation(cc_state *s, ccq_err *err)
{
    if (s->n_val == 0) return CCQ_OK;
    const int64_t v = validate(s);
    s->last_val = v;
    if (v < s->best_val) {
        s->best_val = v;
        genome_save_all(&s->g, s->best_levels);
        if (s->cfg.snapshots) return write_snapshot(s, err);
    }
    return CCQ_OK;
}

/* ---- checkpoints ------------------------------------------------------------ */

static char *search_config_text(const cfg_search *c)
{
    char *buf = NULL;
    size_t len = 0;
    FILE *f = open_memstream(&buf, &len);
    CCQ_ASSERT(f != NULL);
    cfg_write_search(c, f);
    fclose(f);
    return buf;
}

/* The start's scales as the checkpoint keeps them: every conv/linear node's
 * wscale in node order, every node's act_scale (fresh arrays). */
static void start_scales(const model *m, int64_t *n_w, float **w, int64_t *n_a, float **a)
{
    int64_t n = 0;
    for (int i = 0; i < m->n_nodes; i++)
        if (m->nodes[i].wscale) n += m->nodes[i].shape.c;
    *w = ccq_malloc(sizeof(float) * (size_t)(n + 1));
    *a = ccq_malloc(sizeof(float) * (size_t)m->n_nodes);
    *n_w = 0, *n_a = m->n_nodes;
    for (int i = 0; i < m->n_nodes; i++) {
        const model_node *nd = &m->nodes[i];
        (*a)[i] = nd->act_scale;
        if (nd->wscale) memcpy(*w + *n_w, nd->wscale, sizeof(float) * (size_t)nd->shape.c), *n_w += nd->shape.c;
    }
}

/* Every conv/linear node's float bias in node order, 0 where a node has none (ckpt_data.start_bias). */
static float *start_biases(const model *m)
{
    int64_t n = 0;
    for (int i = 0; i < m->n_nodes; i++)
        if (m->nodes[i].wscale) n += m->nodes[i].shape.c;
    float *b = ccq_calloc((size_t)n + 1, sizeof(float));
    n = 0;
    for (int i = 0; i < m->n_nodes; i++) {
        const model_node *nd = &m->nodes[i];
        if (!nd->wscale) continue;
        if (nd->bias) memcpy(b + n, nd->bias, sizeof(float) * (size_t)nd->shape.c);
        n += nd->shape.c;
    }
    return b;
}

/* Every learned node's codebook in node order (a fresh array; NULL and 0 when there is none):
 * taken from the start, before the search may move codebook entries. */
static void start_codebooks(const model *m, int64_t *n, int8_t **cb)
{
    *n = 0, *cb = NULL;
    for (int i = 0; i < m->n_nodes; i++)
        if (m->nodes[i].codebook) *n += (int64_t)m->nodes[i].shape.c * model_ncodes(&m->nodes[i]);
    if (!*n) return;
    *cb = ccq_malloc((size_t)*n);
    int64_t k = 0;
    for (int i = 0; i < m->n_nodes; i++) {
        const model_node *nd = &m->nodes[i];
        if (!nd->codebook) continue;
        const int64_t e = (int64_t)nd->shape.c * model_ncodes(nd);
        memcpy(*cb + k, nd->codebook, (size_t)e);
        k += e;
    }
}

static ccq_status write_checkpoint(cc_state *s, int complete, ccq_err *err)
{
    ccq_status st = CCQ_OK;
    int64_t log_bytes = 0;
    if (s->d->rank == 0) st = cclog_sync(&s->log, &log_bytes, err); /* a failed log write stops here, not later */
    if (s->d->rank == 0 && !st) {
        ckpt_data c;
        memset(&c, 0, sizeof c);
        c.config = search_config_text(&s->cfg);
        c.model_hash = s->model_hash, c.data_hash = s->data_hash;
        c.gen = s->st.gen, c.evals = s->st.evals, c.accepted = s->st.accepted, c.best_val = s->best_val;
        c.log_bytes = log_bytes;
        c.complete = complete;
        c.layer_cursor = s->st.cursor;
        c.n = s->g.n_w, c.width = s->eda.width;
        c.levels = ccq_malloc((size_t)s->g.n_w);
        genome_save_all(&s->g, c.levels);
        c.best_levels = s->best_levels, c.eda_base = s->eda.base, c.eda_p = s->eda.p;
        snprintf(c.start, sizeof c.start, "%s", s->start);
        start_scales(&s->m, &c.n_wscale, &c.start_wscale, &c.n_act, &c.start_act_scale);
        c.n_codebook = s->n_start_cb, c.start_codebook = s->start_cb;
        c.start_bias = start_biases(&s->m);
        if (strcmp(s->start, "budget") == 0) { /* widths are not searched: the context's are the start's */
            c.start_bits = ccq_malloc((size_t)s->m.n_nodes);
            for (int i = 0; i < s->m.n_nodes; i++) c.start_bits[i] = (int8_t)(s->m.nodes[i].levels ? s->m.nodes[i].bits : 0);
        }
        st = ckpt_write(&c, s->cfg.checkpoint, err);
        if (st) { /* say what survives */
            char why[sizeof err->msg];
            snprintf(why, sizeof why, "%s", err->msg);
            st = ccq_fail(err, st, "%.200s: checkpoint not written (%.400s); the previous one, if any, is unchanged",
                          s->cfg.checkpoint, why);
        }
        free(c.config);
        ccq_free(c.levels);
        ccq_free(c.start_wscale);
        ccq_free(c.start_act_scale);
        ccq_free(c.start_bias);
        ccq_free(c.start_bits);
    }
    /* every rank learns whether it worked (and the message is rank 0's) */
    return (ccq_status)dist_bcast_int(s->d, (int)st);
}

/* A checkpoint belongs to this search: same configuration (but [run]), model and data files. */
static ccq_status check_identity(const cc_state *s, const ckpt_data *c, const char *path, ccq_err *err)
{
    ccq_status st = CCQ_OK;
    char *mine = search_config_text(&s->cfg), *theirs = NULL;
    /* compared as this ccq writes them, so keys added since the checkpoint was made read as their defaults */
    cfg_search tc;
    ccq_err why;
    cfg_defaults(&tc);
    if (cfg_load_text(&tc, c->config, path, &why) == CCQ_OK) theirs = search_config_text(&tc);
    if (!theirs || strcmp(mine, theirs) != 0)
        st = ccq_fail(err, CCQ_ERR_MISMATCH,
                      "%s: checkpoint was made with a different configuration (only [run] keys may change)", path);
    else if (c->model_hash != s->model_hash)
        st = ccq_fail(err, CCQ_ERR_MISMATCH, "%s: checkpoint was made from a different model file than %s", path,
                      s->cfg.model);
    else if (c->data_hash != s->data_hash)
        st = ccq_fail(err, CCQ_ERR_MISMATCH, "%s: checkpoint was made with a different data file than %s", path,
                      s->cfg.data);
    free(mine), free(theirs);
    return st;
}

static ccq_status resume_from(cc_state *s, const ckpt_data *c, const char *path, ccq_err *err)
{
    ccq_status st = CCQ_OK;
    if (c->n != s->g.n_w || c->width != s->eda.width)
        st = ccq_fail(err, CCQ_ERR_MISMATCH, "%s: checkpoint has %lld weights x %d candidates, the model %lld x %d", path,
                      (long long)c->n, c->width, (long long)s->g.n_w, s->eda.width);
    if (!st) st = ckpt_check_fit(c, s->eda.lo, s->eda.hi, path, err); /* each weight's value within its own layer's */
    if (!st) {
        genome_load_all(&s->g, c->levels);
        memcpy(s->best_levels, c->best_levels, (size_t)s->g.n_w);
        memcpy(s->eda.base, c->eda_base, (size_t)s->g.n_w);
        memcpy(s->eda.p, c->eda_p, sizeof(uint32_t) * (size_t)s->g.n_w * s->eda.width);
        s->st.gen = c->gen, s->st.evals = c->evals, s->st.accepted = c->accepted, s->best_val = c->best_val;
        s->st.cursor = c->layer_cursor;
        if (s->d->rank == 0) st = cclog_open(&s->log, s->cfg.log, c->log_bytes, err);
    }
    return (ccq_status)dist_bcast_int(s->d, (int)st);
}

/* ---- setup -------------------------------------------------------------------- */

/* Puts the checkpoint's start into m (quantized with the same [quant] keys,
 * so only what a GPTQ start changes can differ: levels, weight scales, the
 * logits' scale, and with learned levels the codebooks). */
static ccq_status apply_start(model *m, const ckpt_data *c, int codebooks, const char *path, ccq_err *err)
{
    int64_t n_w = 0, n_lv = 0, n_cb = 0;
    for (int i = 0; i < m->n_nodes; i++)
        if (m->nodes[i].levels) {
            n_w += m->nodes[i].shape.c, n_lv += m->nodes[i].n_weight;
            if (m->nodes[i].codebook) n_cb += (int64_t)m->nodes[i].shape.c * model_ncodes(&m->nodes[i]);
        }
    if (c->n_wscale != n_w || c->n_act != m->n_nodes || c->n != n_lv + (codebooks ? n_cb : 0) ||
        c->n_codebook != n_cb)
        return ccq_fail(err, CCQ_ERR_MISMATCH, "%s: the checkpoint's start does not fit the quantized model", path);
    /* each codebook strictly increasing within +-127 (model_load's rule) */
    for (int i = 0, cb = 0; i < m->n_nodes; i++) {
        const model_node *nd = &m->nodes[i];
        if (!nd->codebook) continue;
        const int n = model_ncodes(nd);
        for (int64_t e = 0; e < (int64_t)nd->shape.c * n; e++, cb++)
            if (c->start_codebook[cb] < -127 || (e % n && c->start_codebook[cb] <= c->start_codebook[cb - 1]))
                return ccq_fail(err, CCQ_ERR_FORMAT, "%s: malformed checkpoint (start codebook entry %d)", path, cb);
    }
    for (int64_t k = 0; k < c->n_wscale; k++)
        if (!(c->start_wscale[k] > 0 && isfinite(c->start_wscale[k])))
            return ccq_fail(err, CCQ_ERR_FORMAT, "%s: malformed checkpoint (start weight scale %lld)", path, (long long)k);
    for (int64_t k = 0; k < c->n_act; k++)
        if (!(c->start_act_scale[k] > 0 && isfinite(c->start_act_scale[k])))
            return ccq_fail(err, CCQ_ERR_FORMAT, "%s: malformed checkpoint (start activation scale %lld)", path,
                            (long long)k);
    int64_t w = 0, lv = 0, cb = 0;
    for (int i = 0; i < m->n_nodes; i++) {
        model_node *nd = &m->nodes[i];
        nd->act_scale = c->start_act_scale[i];
        if (!nd->levels) continue;
        memcpy(nd->wscale, c->start_wscale + w, sizeof(float) * (size_t)nd->shape.c);
        if (c->start_bias) { /* a node without a bias gets one only where the start's is not zero */
            int any = nd->bias != NULL;
            for (int o = 0; o < nd->shape.c && !any; o++) any = c->start_bias[w + o] != 0.0f;
            if (any && !nd->bias) nd->bias = ccq_calloc((size_t)nd->shape.c, sizeof(float));
            if (any) memcpy(nd->bias, c->start_bias + w, sizeof(float) * (size_t)nd->shape.c);
        }
        if (nd->codebook) {
            const int n = model_ncodes(nd);
            const int64_t per = nd->n_weight / nd->shape.c;
            memcpy(nd->codebook, c->start_codebook + cb, (size_t)nd->shape.c * (size_t)n);
            cb += (int64_t)nd->shape.c * n;
            for (int64_t k = 0; k < nd->n_weight; k++) {
                const int code = c->eda_base[lv + k];
                if (code < 0 || code >= n)
                    return ccq_fail(err, CCQ_ERR_FORMAT, "%s: malformed checkpoint (start code %d of weight %lld)", path,
                                    code, (long long)(lv + k));
                nd->levels[k] = nd->codebook[(k / per) * n + code];
            }
            if (codebooks) lv += (int64_t)nd->shape.c * n; /* the entries' own variables: the same values */
        } else {
            memcpy(nd->levels, c->eda_base + lv, (size_t)nd->n_weight);
        }
        w += nd->shape.c, lv += nd->n_weight;
    }
    return CCQ_OK;
}

/* Rank 0's start (levels, weight and activation scales) onto every rank. */
static void bcast_start(const dist_ctx *d, model *m)
{
    for (int i = 0; i < m->n_nodes; i++) {
        model_node *nd = &m->nodes[i];
        dist_bcast_bytes(d, &nd->act_scale, sizeof nd->act_scale);
        if (!nd->levels) continue;
        dist_bcast_bytes(d, nd->levels, (size_t)nd->n_weight);
        dist_bcast_bytes(d, nd->wscale, sizeof(float) * (size_t)nd->shape.c);
        /* the biases (gptq_asym solves them again; it may give a node without one a bias) */
        int has = nd->bias != NULL;
        dist_bcast_bytes(d, &has, sizeof has);
        if (has && !nd->bias) nd->bias = ccq_calloc((size_t)nd->shape.c, sizeof(float));
        if (has) dist_bcast_bytes(d, nd->bias, sizeof(float) * (size_t)nd->shape.c);
        if (nd->codebook) dist_bcast_bytes(d, nd->codebook, (size_t)nd->shape.c * (size_t)model_ncodes(nd));
    }
}

/* quant.budget: the structure of every candidate width (round-to-nearest, computed by every rank:
 * deterministic) into rtn[0..K), widths w[0..K). */
static ccq_status budget_candidates(cc_state *s, const cfg_search *cfg, const quant_config *qc0, model *rtn, int *w,
                                   int *K, ccq_err *err)
{
    *K = 0;
    for (int b = 2; b <= 8; b++)
        if (cfg->widths >> b & 1) w[(*K)++] = b;
    int ok = cfg->size_budget > 0;
    for (int k = 0; k < *K; k++) ok |= w[k] == -cfg->size_budget;
    if (!ok)
        return ccq_fail(err, CCQ_ERR_USAGE, "%s: quant.budget = w%lld needs %lld among quant.widths", cfg->model,
                        (long long)-cfg->size_budget, (long long)-cfg->size_budget);
    if (cfg->levels == CFG_LEVELS_LEARNED && w[0] > MODEL_CODEBOOK_MAX_BITS)
        return ccq_fail(err, CCQ_ERR_USAGE, "%s: quant.levels = learned needs a width of at most %d bits in quant.widths",
                        cfg->model, MODEL_CODEBOOK_MAX_BITS);
    for (int k = 0; k < *K; k++) {
        quant_config qc = alloc_candidate_config(qc0, w[k]);
        ccq_status st = quant_model(&s->fm, &s->train, &qc, &rtn[k], err);
        if (st) {
            while (k > 0) model_free(&rtn[--k]);
            return st;
        }
    }
    return CCQ_OK;
}

/* quant.budget: a width per layer within the budget (alloc.h) from candidates made with quant.init,
 * on rank 0 alone (the others wait), then the widths and the start broadcast and the others' model
 * assembled from their round-to-nearest candidates; on resume, assembled from the checkpoint's
 * widths and given its start, nothing recomputed but round-to-nearest. */
static ccq_status budget_start(cc_state *s, const cfg_search *cfg, const quant_config *qc0, const ckpt_data *resume,
                               const char *path, ccq_err *err)
{
    model rtn[ALLOC_MAX_WIDTHS];
    int w[ALLOC_MAX_WIDTHS], K = 0;
    ccq_status st = budget_candidates(s, cfg, qc0, rtn, w, &K, err);
    if (st) return st;
    snprintf(s->start, sizeof s->start, "budget");
    int8_t *bits = ccq_calloc((size_t)rtn[0].n_nodes, 1);
    if (resume) {
        if (!resume->start_bits || strcmp(resume->start, "budget") != 0 || resume->n_act != rtn[0].n_nodes)
            st = ccq_fail(err, CCQ_ERR_MISMATCH, "%s: the checkpoint's start is not a quant.budget start of this model",
                          path);
        else if ((st = alloc_assemble(rtn, K, resume->start_bits, &s->m, err))) {
            char why[sizeof err->msg];
            snprintf(why, sizeof why, "%s", err->msg);
            st = ccq_fail(err, CCQ_ERR_MISMATCH, "%s: the checkpoint's widths do not fit quant.widths (%.300s)", path,
                          why);
        } else {
            st = apply_start(&s->m, resume, (int)cfg->codebook, path, err);
        }
        if (!st && s->d->rank == 0) printf("search: start: budget, from the checkpoint %s\n", path);
    } else {
        alloc_report r;
        memset(&r, 0, sizeof r);
        int64_t budget = cfg->size_budget;
        if (s->d->rank == 0) {
            if (s->d->size > 1) printf("search: start: a width per layer on rank 0 (the other ranks wait)\n");
            fflush(stdout);
            model cand[ALLOC_MAX_WIDTHS];
            int made = 0;
            for (int k = 0; k < K && !st; k++) {
                quant_config qc = alloc_candidate_config(qc0, w[k]);
                gptq_start_info info;
                if ((st = gptq_start(&s->fm, &s->train, &qc, (gptq_start_kind)cfg->init, &cand[k], &info, err))) break;
                made++;
                printf("search: start: w%d candidate %s, %lld bytes (%.1f s)\n", w[k], gptq_start_name(info.chosen),
                       (long long)model_deployed_bytes(&cand[k]), info.seconds);
                fflush(stdout);
            }
            if (!st) {
                alloc_config ac;
                alloc_config_default(&ac);
                ac.n_widths = K;
                memcpy(ac.widths, w, sizeof(int) * (size_t)K);
                ac.seed = cfg->seed;
                for (int k = 0; k < K; k++)
                    if (w[k] == -cfg->size_budget) budget = alloc_uniform_bytes(cand, K, k);
                ac.budget = budget;
                st = alloc_widths(cand, &ac, &s->train, &s->m, &r, err);
            }
            for (int k = 0; k < made; k++) model_free(&cand[k]);
            if (!st) {
                for (int i = 0; i < s->m.n_nodes; i++) bits[i] = (int8_t)(s->m.nodes[i].levels ? s->m.nodes[i].bits : 0);
                printf("search: start: budget %lld bytes: %lld bytes,", (long long)budget, (long long)r.bytes);
                for (int k = 0; k < K; k++)
                    if (r.layer_count[k]) printf(" %d layers at w%d", r.layer_count[k], w[k]);
                printf("; train cross-entropy per image %.5f (widest uniform within the budget %.5f), %lld "
                       "evaluations, %.1f s\n",
                       (double)r.fit / FIT_ONE / r.n_images, (double)r.fit_uniform / FIT_ONE / r.n_images,
                       (long long)r.evals, r.seconds);
                fflush(stdout);
            }
        }
        dist_barrier_idle(s->d);
        st = (ccq_status)dist_bcast_int(s->d, (int)st);
        if (!st) {
            dist_bcast_bytes(s->d, bits, (size_t)rtn[0].n_nodes);
            if (s->d->rank != 0) st = alloc_assemble(rtn, K, bits, &s->m, err);
            st = (ccq_status)dist_bcast_int(s->d, (int)st);
            if (!st) bcast_start(s->d, &s->m);
        }
    }
    ccq_free(bits);
    for (int k = 0; k < K; k++) model_free(&rtn[k]);
    return st;
}

/* The start from the float model, as configured in [quant]. Round-to-nearest
 * is computed by every rank (deterministic); a GPTQ start (quant.init gptq,
 * gptq_scale, auto) by rank 0 alone, the others waiting idle, and broadcast;
 * on resume the checkpoint's start is used and nothing is recomputed but the
 * round-to-nearest model it is put into. */
static ccq_status quantize_start(cc_state *s, const cfg_search *cfg, const ckpt_data *resume, const char *path,
                                 ccq_err *err)
{
    quant_config qc;
    quant_config_default(&qc);
    qc.wbits = (int)cfg->wbits, qc.first_last_8 = (int)cfg->first_last_8, qc.calib_images = (int)cfg->calib_images;
    qc.act_rule = cfg->act_rule == CFG_ACT_MINMAX ? QUANT_ACT_MINMAX : QUANT_ACT_PERCENTILE;
    qc.percentile = cfg->percentile;
    qc.w_rule = cfg->wscale == CFG_WSCALE_MSE ? QUANT_W_MSE : QUANT_W_MAXABS;
    qc.level_rule = cfg->levels == CFG_LEVELS_LEARNED ? QUANT_LEVELS_LEARNED : QUANT_LEVELS_UNIFORM;
    const gptq_start_kind kind = (gptq_start_kind)cfg->init;
    ccq_status st;
    if (cfg->size_budget) return budget_start(s, cfg, &qc, resume, path, err);
    if (resume || kind == GPTQ_START_RTN) {
        if ((st = quant_model(&s->fm, &s->train, &qc, &s->m, err))) return st;
        if (!resume) {
            snprintf(s->start, sizeof s->start, "rtn");
            return CCQ_OK;
        }
        snprintf(s->start, sizeof s->start, "%s", resume->start);
        if ((st = apply_start(&s->m, resume, (int)cfg->codebook, path, err))) return st;
        if (s->d->rank == 0) printf("search: start: %s, from the checkpoint %s\n", s->start, path);
        return CCQ_OK;
    }
    gptq_start_info info;
    if (s->d->rank == 0) {
        if (s->d->size > 1) {
            printf("search: start: %s on rank 0 (the other ranks wait)\n", gptq_start_name(kind));
            fflush(stdout);
        }
        st = gptq_start(&s->fm, &s->train, &qc, kind, &s->m, &info, err);
    } else {
        st = quant_model(&s->fm, &s->train, &qc, &s->m, err); /* the structure the start is broadcast into */
    }
    dist_barrier_idle(s->d);
    if ((st = (ccq_status)dist_bcast_int(s->d, (int)st))) return st;
    bcast_start(s->d, &s->m);
    int chosen = s->d->rank == 0 ? (int)info.chosen : 0;
    dist_bcast_bytes(s->d, &chosen, sizeof chosen);
    snprintf(s->start, sizeof s->start, "%s", gptq_start_name((gptq_start_kind)chosen));
    if (s->d->rank == 0) {
        if (kind == GPTQ_START_AUTO)
            printf("search: start: auto: train-split accuracy (%d images) rtn %.2f%%, gptq %.2f%%, gptq_scale %.2f%%\n",
                   info.n_train, 100.0 * info.correct[0] / info.n_train, 100.0 * info.correct[1] / info.n_train,
                   100.0 * info.correct[2] / info.n_train);
        printf("search: start: %s, computed in %.2f s (%lld of %lld levels differ from round-to-nearest)\n", s->start,
               info.seconds, (long long)info.report.changed, (long long)info.report.weights);
        fflush(stdout);
    }
    return CCQ_OK;
}

static ccq_status setup(cc_state *s, const cfg_search *cfg, const dist_ctx *d, const ckpt_data *resume,
                        const char *resume_path, ccq_err *err)
{
    ccq_status st;
    memset(s, 0, sizeof *s);
    s->cfg = *cfg;
    s->d = d;
    if ((st = ckpt_file_hash(cfg->model, &s->model_hash, err)) || (st = ckpt_file_hash(cfg->data, &s->data_hash, err)))
        return st;
    if (resume && (st = check_identity(s, resume, resume_path, err))) return st;
    if ((st = model_load(&s->fm, cfg->model, err))) return st;
    if ((st = data_load(&s->train, cfg->data, "train", -1, err))) return st;
    if ((st = data_check_fits(&s->train, &s->fm, err))) return st;
    if (cfg->val_images + cfg->batch > s->train.n)
        return ccq_fail(err, CCQ_ERR_USAGE, "%s: %d training images cannot hold val_images %lld plus a batch of %lld",
                        cfg->data, s->train.n, (long long)cfg->val_images, (long long)cfg->batch);
    if (s->fm.quantized && cfg->size_budget) {
        return ccq_fail(err, CCQ_ERR_USAGE, "%s: quant.budget needs a float model (this one is quantized: its widths are "
                        "its own)", cfg->model);
    } else if (s->fm.quantized) {
        /* A quantized start (e.g. from scripts/gptq.py): its levels and scales are the start;
         * its folded float weights are the teacher. The [quant] keys do not apply. */
        model_copy(&s->m, &s->fm);
        snprintf(s->start, sizeof s->start, "file");
    } else if ((st = quantize_start(s, cfg, resume, resume_path, err))) {
        return st;
    }
    if (cfg->codebook) {
        int any = 0;
        for (int i = 0; i < s->m.n_nodes; i++) any |= s->m.nodes[i].codebook != NULL;
        if (!any)
            return ccq_fail(err, CCQ_ERR_USAGE, "%s: search.codebook = true, but no layer has learned levels (set "
                            "quant.levels = learned)", cfg->model);
    }
    if ((st = qnet_init(&s->q, &s->m, NULL, (int)cfg->micro_batch, err))) return st;
    if ((st = fit_init(&s->fit, s->m.classes, s->q.logits_scale, err))) return st;
    genome_init(&s->g, &s->m, &s->q, (int)cfg->codebook);
    start_codebooks(&s->m, &s->n_start_cb, &s->start_cb);

    int8_t *base = ccq_malloc((size_t)s->g.n_w), *lo = ccq_malloc((size_t)s->g.n_w), *hi = ccq_malloc((size_t)s->g.n_w);
    genome_save_all(&s->g, base);
    genome_range(&s->g, lo, hi);
    st = eda_init(&s->eda, s->g.n_w, (int)cfg->radius, base, lo, hi, (uint32_t)llround(cfg->p_center * EDA_ONE),
                  (uint32_t)llround(cfg->p_min * EDA_ONE), err);
    if (!st && cfg->prior == CFG_PRIOR_FLOAT) {
        int32_t *pos = ccq_malloc(sizeof(int32_t) * (size_t)s->g.n_w);
        genome_float_pos(&s->g, pos);
        eda_prior_float(&s->eda, pos, (uint32_t)llround(cfg->p_center * EDA_ONE));
        ccq_free(pos);
    }
    s->best_levels = base;
    ccq_free(lo), ccq_free(hi);
    if (st) return st;

    /* the data permutation: validation first, then the fitness pool */
    s->perm = ccq_malloc(sizeof(int32_t) * (size_t)s->train.n);
    for (int i = 0; i < s->train.n; i++) s->perm[i] = i;
    rng_pcg32 r;
    rng_init_keyed(&r, cfg->seed, 0, 0, KEY_DATA);
    for (int i = s->train.n - 1; i > 0; i--) {
        const int j = (int)rng_bounded(&r, (uint32_t)i + 1);
        const int32_t t = s->perm[i];
        s->perm[i] = s->perm[j], s->perm[j] = t;
    }
    s->n_val = (int)cfg->val_images;
    s->n_fit = s->train.n - s->n_val;

    /* the fitness passes: batches up to the larger of batch and confirmation, the cache within cache_mb */
    const int maxb = (int)(cfg->batch > cfg->confirm_batch ? cfg->batch : cfg->confirm_batch);
    size_t worst = 1;
    for (int i = 0; i < s->m.n_nodes; i++) {
        const size_t b = qnet_cache_bytes_per_image(&s->q, i);
        if (b > worst) worst = b;
    }
    const double cap = (double)cfg->cache_mb * 1048576.0 / (double)worst;
    const feval_kind kind = cfg->fitness == CFG_FIT_ACCURACY  ? FEVAL_ACCURACY
                            : cfg->fitness == CFG_FIT_DISTILL ? FEVAL_DISTILL
                                                              : FEVAL_XENT;
    const int G = step_max_sub(cfg, &s->g);
    feval_init(&s->ev, &s->g, &s->fit, &s->train, &s->fm, kind, (int)cfg->incremental,
               cap > maxb ? maxb : (int)cap, maxb, G);
    step_init(&s->st, &s->cfg, d, &s->g, &s->eda, &s->ev, s->perm + s->n_val, s->n_fit);
    return CCQ_OK;
}

static void teardown(cc_state *s)
{
    cclog_close(&s->log);
    step_free(&s->st);
    feval_free(&s->ev);
    genome_free(&s->g);
    if (s->q.nodes) qnet_free(&s->q);
    if (s->m.nodes) model_free(&s->m);
    if (s->fm.nodes) model_free(&s->fm);
    data_free(&s->train);
    eda_free(&s->eda);
    ccq_free(s->perm), ccq_free(s->best_levels), ccq_free(s->start_cb);
}

/* ---- the test split, at the very end ------------------------------------------------ */

/* Correct predictions of model m on images [lo, hi) of d (integer network). */
static ccq_status count_correct(const model *m, const data_split *d, int lo, int hi, int mb, int64_t *correct,
                                ccq_err *err)
{
    qnet q;
    ccq_status st = qnet_init(&q, m, NULL, mb, err);
    if (st) return st;
    const int64_t per = (int64_t)d->c * d->h * d->w;
    *correct += qnet_count_correct(&q, d->images + per * lo, d->labels + lo, hi - lo);
    qnet_free(&q);
    return CCQ_OK;
}

/* When the data file has a test split: the test accuracy of the start and of
 * the model kept, printed by rank 0 (each rank counts a contiguous share of
 * the images; integer sums). A report only: nothing in the search reads the
 * test split, and this runs after the output is written. */
static ccq_status report_test(cc_state *s, ccq_err *err)
{
    if (!data_has_split(s->cfg.data, "test")) return CCQ_OK;
    /* every rank reads the same file and builds the same networks: the same status everywhere */
    data_split test;
    ccq_status st = data_load(&test, s->cfg.data, "test", -1, err);
    if (!st) st = data_check_fits(&test, &s->m, err);
    if (st) {
        data_free(&test);
        return st;
    }
    model start;
    model_copy(&start, &s->m);
    genome_write_model(&s->g, s->eda.base, &start);
    const int r = s->d->rank, n = s->d->size, mb = (int)s->cfg.micro_batch;
    const int lo = (int)((int64_t)test.n * r / n), hi = (int)((int64_t)test.n * (r + 1) / n);
    int64_t c[2] = {0, 0};
    st = count_correct(&start, &test, lo, hi, mb, &c[0], err);
    if (!st) st = count_correct(&s->m, &test, lo, hi, mb, &c[1], err);
    model_free(&start);
    if (!st) {
        dist_allreduce_sum(s->d, c, 2);
        if (r == 0) {
            printf("search: test accuracy (%d images of the test split, reported only): start (%s) %.2f%%, "
                   "searched %.2f%%\n", test.n, s->start, 100.0 * c[0] / test.n, 100.0 * c[1] / test.n);
            fflush(stdout);
        }
    }
    data_free(&test);
    return st;
}

/* ---- the loop ------------------------------------------------------------------ */

#define STALL_AUTO_FIRST 600.0 /* s: run.stall_timeout = auto before a generation was timed */
#define STALL_AUTO_MIN 60.0
#define STALL_AUTO_MULT 20.0

/* --resume auto on a checkpoint written after the last generation whose output exists: nothing to
 * do (a raised run.budget continues instead; a missing output is written again from the checkpoint). */
static int already_complete(const cc_state *s, const ckpt_data *c, const char *path)
{
    int done = 0;
    if (s->d->rank == 0) {
        done = c->complete && c->evals >= s->cfg.budget && access(s->cfg.output, F_OK) == 0;
        if (done)
            printf("search: %s holds a complete search (%lld generations, %lld evaluations) and %s exists; "
                   "nothing to do\n", path, (long long)c->gen, (long long)c->evals, s->cfg.output);
        fflush(stdout);
    }
    return dist_bcast_int(s->d, done);
}

ccq_status cc_run(const cfg_search *cfg, const char *resume, int resume_auto, const dist_ctx *d, ccq_err *err)
{
    /* From the start: a stop requested during set-up ends after the first generation, with a checkpoint. */
    struct sigaction sa;
    memset(&sa, 0, sizeof sa);
    sa.sa_handler = on_signal;
    sigaction(SIGTERM, &sa, NULL);
    sigaction(SIGINT, &sa, NULL);
    sigaction(SIGUSR1, &sa, NULL); /* what mpirun forwards to every rank (it answers SIGTERM by killing the job) */
    cc_state s;
    ckpt_data ck;
    memset(&s, 0, sizeof s);
    memset(&ck, 0, sizeof ck);
    ccq_status st = resume ? ckpt_read(&ck, resume, err) : CCQ_OK;
    if (!st) st = setup(&s, cfg, d, resume ? &ck : NULL, resume, err);
    if (st) goto done;
    if (resume) {
        if (resume_auto && already_complete(&s, &ck, resume)) goto done;
        if ((st = resume_from(&s, &ck, resume, err))) goto done;
    } else {
        if ((st = (ccq_status)dist_bcast_int(d, d->rank == 0 ? (int)cclog_open(&s.log, cfg->log, -1, err) : 0)))
            goto done;
        s.best_val = INT64_MAX;
        if ((st = check_validation(&s, err))) goto done;
    }
    cclog_mark(&s.log, s.st.evals);
    s.ev.t_forward = 0;
    int stopped = 0;
    /* the stall watchdog: a fixed bound, or (auto) STALL_AUTO_MULT times the slowest generation so
     * far (checkpoints and validations included), at least STALL_AUTO_MIN s, STALL_AUTO_FIRST s
     * until a generation has been timed */
    int64_t ckpt_gen = resume ? ck.gen : 0;
    double slowest = 0;
    dist_watch_start(d, cfg->stall_timeout < 0 ? STALL_AUTO_FIRST : cfg->stall_timeout);
    while (s.st.evals < cfg->budget) {
        cclog_rec rec;
        const double t_gen = ccq_seconds();
        dist_watch_set(cfg->stall_timeout < 0 && slowest > 0 ? fmax(STALL_AUTO_MIN, STALL_AUTO_MULT * slowest) : 0,
                       s.st.gen + 1, ckpt_gen);
        if (!step_run(&s.st, &rec)) break; /* every weight frozen */
        if (s.st.gen % cfg->checkpoint_every == 0) {
            if ((st = check_validation(&s, err))) goto done;
            if (s.n_val) {
                rec.has_val = 1;
                rec.val = fitness_report(&s, s.last_val, s.n_val);
                rec.val_acc = (double)s.val_correct / s.n_val;
                rec.best_val = fitness_report(&s, s.best_val, s.n_val);
                /* standard error of the validation mean (reports only) */
                const double mean = (double)s.last_val / s.n_val;
                const double var = s.n_val > 1 ? ((double)s.val_sumsq - mean * (double)s.last_val) / (s.n_val - 1) : 0.0;
                rec.val_se = fitness_report(&s, 1, 1) * sqrt(var > 0 ? var / s.n_val : 0.0);
            }
        }
        if (d->rank == 0) cclog_generation(&s.log, &rec, d->size, s.ev.t_forward, feval_cache_bytes(&s.ev), dist_bytes());
        if (s.st.gen % cfg->checkpoint_every == 0) {
            if ((st = write_checkpoint(&s, 0, err))) goto done;
            ckpt_gen = s.st.gen;
        }
        if (dist_any(d, g_stop)) {
            stopped = 1;
            break;
        }
        slowest = fmax(slowest, ccq_seconds() - t_gen);
    }
    if (!stopped && (st = check_validation(&s, err))) goto done;
    if ((st = write_checkpoint(&s, !stopped, err))) goto done;
    if (stopped) {
        if (d->rank == 0)
            fprintf(stderr, "ccq: search stopped on request at generation %lld; checkpoint %s written\n",
                    (long long)s.st.gen, cfg->checkpoint);
        st = CCQ_STOPPED;
        goto done;
    }
    /* the model kept: best on validation (the context itself without a validation split) */
    if (s.n_val) genome_load_all(&s.g, s.best_levels);
    if (d->rank == 0) {
        st = model_save(&s.m, cfg->output, err);
        if (!st)
            printf("search: done after %lld generations, %lld evaluations, %lld accepted; wrote %s\n",
                   (long long)s.st.gen, (long long)s.st.evals, (long long)s.st.accepted, cfg->output);
    }
    st = (ccq_status)dist_bcast_int(d, (int)st);
    if (!st) st = report_test(&s, err);
done:
    dist_watch_stop(); /* every rank comes here together (errors in the loop are broadcast) */
    ckpt_free(&ck);
    teardown(&s);
    return st;
}
