/*
 * cc.c: the search driver (see cc.h). Everything that decides a result is
 * integer and keyed by (seed, generation, individual); ranks differ only in
 * which evaluations they compute. Timing goes to the progress line and to a
 * separate timing file, never into the log, which is part of the
 * reproducibility contract.
 */
#define _GNU_SOURCE /* open_memstream */
#include "ccq/cc.h"

#include <math.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "ccq/ckpt.h"
#include "ccq/data.h"
#include "ccq/eda.h"
#include "ccq/fit.h"
#include "ccq/fnet.h"
#include "ccq/group.h"
#include "ccq/model.h"
#include "ccq/qnet.h"
#include "ccq/quant.h"

/* Purposes of the keyed random streams (third key word). */
enum { KEY_INDIVIDUAL = 1, KEY_DATA = 2, KEY_GROUP = 3 };

static volatile sig_atomic_t g_stop;
static void on_signal(int sig) { (void)sig, g_stop = 1; }

typedef struct {
    cfg_search cfg;
    const dist_ctx *d;
    model fm, m; /* float model (teacher) and the quantized context */
    qnet q;
    eda_state eda;
    fit_ctx fit;
    data_split train;
    int n_layers;
    int *layer_node;      /* [n_layers] model node of each searchable layer */
    int64_t *layer_start; /* [n_layers + 1] first global weight index of each layer */
    int64_t n_w;
    int32_t *perm; /* permutation of the train split: [0, val) validation, the rest the fitness pool */
    int n_val, n_fit;
    uint8_t *batch_img;
    int32_t *batch_lab, *batch_idx;
    int32_t *logits;
    int32_t *teacher; /* distill: [n_train][classes] Q16 probabilities, computed when first needed */
    uint8_t *teacher_done;
    /* search counters (checkpointed) */
    int64_t gen, evals, accepted, best_val, layer_cursor;
    int8_t *best_levels;
    uint64_t model_hash, data_hash;
    /* scratch */
    int64_t *sub;     /* subcomponent weight indices */
    int8_t *ind;      /* one individual's levels */
    int8_t *elite;    /* mu individuals' levels */
    int8_t *saved;    /* context levels of the subcomponent */
    uint8_t *touched; /* [n_layers] */
    FILE *log, *timing;
    int64_t val_correct; /* the context's correct validation predictions at the last validation */
    int64_t last_val; /* the context's validation fitness at the last validation (logged in that generation) */
    double t_forward; /* seconds in qnet_forward on this rank (timing side file only) */
} cc_state;

/* ---- weights <-> layers --------------------------------------------------- */

static int layer_of(const cc_state *s, int64_t w)
{
    int lo = 0, hi = s->n_layers - 1;
    while (lo < hi) {
        const int mid = (lo + hi + 1) / 2;
        if (s->layer_start[mid] <= w) lo = mid;
        else hi = mid - 1;
    }
    return lo;
}

static int8_t *level_ptr(cc_state *s, int64_t w)
{
    const int l = layer_of(s, w);
    return &s->m.nodes[s->layer_node[l]].levels[w - s->layer_start[l]];
}

static void get_levels(cc_state *s, const int64_t *idx, int m, int8_t *out)
{
    for (int t = 0; t < m; t++) out[t] = *level_ptr(s, idx[t]);
}

/* Writes levels into the context and repacks the layers they touch. */
static void set_levels(cc_state *s, const int64_t *idx, int m, const int8_t *v)
{
    memset(s->touched, 0, (size_t)s->n_layers);
    for (int t = 0; t < m; t++) {
        const int l = layer_of(s, idx[t]);
        s->m.nodes[s->layer_node[l]].levels[idx[t] - s->layer_start[l]] = v[t];
        s->touched[l] = 1;
    }
    for (int l = 0; l < s->n_layers; l++)
        if (s->touched[l]) qnet_update_levels(&s->q, s->layer_node[l]);
}

static void all_levels(cc_state *s, int8_t *out)
{
    for (int l = 0; l < s->n_layers; l++)
        memcpy(out + s->layer_start[l], s->m.nodes[s->layer_node[l]].levels,
               (size_t)(s->layer_start[l + 1] - s->layer_start[l]));
}

static void load_all_levels(cc_state *s, const int8_t *v)
{
    for (int l = 0; l < s->n_layers; l++) {
        memcpy(s->m.nodes[s->layer_node[l]].levels, v + s->layer_start[l],
               (size_t)(s->layer_start[l + 1] - s->layer_start[l]));
        qnet_update_levels(&s->q, s->layer_node[l]);
    }
}

/* ---- data and fitness ------------------------------------------------------ */

/* Gathers n images of the train split, positions pos .. pos+n-1 (mod pool size) of a pool. */
static void gather(cc_state *s, const int32_t *pool, int pool_n, int64_t pos, int n)
{
    const size_t per = (size_t)s->train.c * s->train.h * s->train.w;
    for (int j = 0; j < n; j++) {
        const int32_t i = pool[(pos + j) % pool_n];
        memcpy(s->batch_img + (size_t)j * per, s->train.images + (size_t)i * per, per);
        s->batch_lab[j] = s->train.labels[i];
        s->batch_idx[j] = i;
    }
}

static void ensure_teacher(cc_state *s, int n)
{
    fnet net;
    int need = 0;
    for (int j = 0; j < n; j++) need |= !s->teacher_done[s->batch_idx[j]];
    if (!need) return;
    fnet_init(&net, &s->fm);
    const size_t per = (size_t)s->train.c * s->train.h * s->train.w;
    for (int j = 0; j < n; j++) {
        const int32_t i = s->batch_idx[j];
        if (s->teacher_done[i]) continue;
        const float *lg = fnet_forward(&net, s->batch_img + (size_t)j * per);
        fit_teacher_probs(&s->fit, lg, s->teacher + (size_t)i * s->m.classes);
        s->teacher_done[i] = 1;
    }
    fnet_free(&net);
}

/* Fitness of the context (as it currently is) on the gathered images
 * [off, off + n): lower is better. A sum of per-image integers, so the
 * fitness of a batch is the exact sum of the fitness of its parts. Adds the
 * correct predictions to *correct if given. */
static int64_t fitness(cc_state *s, int off, int n, int64_t *correct)
{
    const size_t per = (size_t)s->train.c * s->train.h * s->train.w;
    const int32_t *lab = s->batch_lab + off, *idx = s->batch_idx + off;
    const double t = ccq_seconds();
    qnet_forward(&s->q, s->batch_img + (size_t)off * per, n, s->logits);
    s->t_forward += ccq_seconds() - t;
    if (correct) *correct += fit_correct(&s->fit, s->logits, n, lab);
    switch (s->cfg.fitness) {
    case CFG_FIT_ACCURACY:
        return (int64_t)n - fit_correct(&s->fit, s->logits, n, lab);
    case CFG_FIT_DISTILL: {
        int64_t f = 0;
        for (int j = 0; j < n; j++)
            f += fit_distill_one(&s->fit, s->logits + (size_t)j * s->m.classes,
                                 s->teacher + (size_t)idx[j] * s->m.classes);
        return f;
    }
    default:
        return fit_xent(&s->fit, s->logits, n, lab);
    }
}

static double fitness_report(const cc_state *s, int64_t f, int n)
{
    /* nats per image for xent/distill, error rate for accuracy */
    return s->cfg.fitness == CFG_FIT_ACCURACY ? (double)f / n : (double)f / FIT_ONE / n;
}

/* Validation fitness of the context: chunks of `batch` images split over
 * ranks; also counts its correct predictions into s->val_correct. */
static int64_t validate(cc_state *s)
{
    const int chunk = (int)s->cfg.batch, chunks = (s->n_val + chunk - 1) / chunk;
    int64_t v[2] = {0, 0}; /* fitness, correct */
    for (int c = s->d->rank; c < chunks; c += s->d->size) {
        const int n = s->n_val - c * chunk < chunk ? s->n_val - c * chunk : chunk;
        gather(s, s->perm, s->n_val, (int64_t)c * chunk, n);
        if (s->cfg.fitness == CFG_FIT_DISTILL) ensure_teacher(s, n);
        v[0] += fitness(s, 0, n, &v[1]);
    }
    dist_allreduce_sum(s->d, v, 2);
    s->val_correct = v[1];
    return v[0];
}

/* ---- subcomponents ---------------------------------------------------------- */

/* Fills s->sub; returns its size (0: every weight frozen). */
static int choose(cc_state *s)
{
    const int G = (int)(s->cfg.group_size < s->n_w ? s->cfg.group_size : s->n_w);
    if (s->cfg.group == CFG_GROUP_LAYER) return group_layer(s->layer_start, s->n_layers, G, &s->layer_cursor, s->sub);
    if (s->cfg.group == CFG_GROUP_RANDOM) {
        rng_pcg32 r;
        rng_init_keyed(&r, s->cfg.seed, (uint64_t)s->gen, 0, KEY_GROUP);
        return group_random(s->n_w, G, &r, s->sub);
    }
    return group_confidence(&s->eda, (uint32_t)llround(s->cfg.freeze * EDA_ONE), G, s->sub);
}

static void individual(const cc_state *s, int k, int m, int8_t *out)
{
    rng_pcg32 r;
    rng_init_keyed(&r, s->cfg.seed, (uint64_t)s->gen, (uint64_t)k + 1, KEY_INDIVIDUAL);
    eda_sample(&s->eda, s->sub, m, &r, out);
}

/* Evaluates items 0..n-1 (item 0: the context; item k: individual k) over
 * the gathered images [0, n_img); all ranks receive every value. `items`
 * maps item -> individual id (-1 for the context). The n_items x n_img
 * image passes are cut into `size` contiguous, equal shares (rank r takes
 * passes [r T / size, (r + 1) T / size) of T, item-major), so the work is
 * balanced for any rank count, also when there are more ranks than items
 * (the batch is then split); partial fitness sums are added over ranks
 * (exact integers, so the values do not depend on the rank count).
 * out[n_items] receives the context's (item 0's) correct predictions. */
static void evaluate(cc_state *s, const int *items, int n_items, int m, int n_img, int64_t *out)
{
    const int64_t T = (int64_t)n_items * n_img, lo = T * s->d->rank / s->d->size,
                  hi = T * (s->d->rank + 1) / s->d->size;
    memset(out, 0, sizeof(int64_t) * ((size_t)n_items + 1));
    get_levels(s, s->sub, m, s->saved);
    for (int it = (int)(lo / n_img); it < n_items && (int64_t)it * n_img < hi; it++) {
        const int64_t a = lo > (int64_t)it * n_img ? lo - (int64_t)it * n_img : 0;
        const int64_t b = hi < (int64_t)(it + 1) * n_img ? hi - (int64_t)it * n_img : n_img;
        if (items[it] >= 0) {
            individual(s, items[it], m, s->ind);
            set_levels(s, s->sub, m, s->ind);
        }
        out[it] = fitness(s, (int)a, (int)(b - a), items[it] < 0 ? &out[n_items] : NULL);
        if (items[it] >= 0) set_levels(s, s->sub, m, s->saved);
    }
    dist_allreduce_sum(s->d, out, n_items + 1);
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

static ccq_status write_checkpoint(cc_state *s, ccq_err *err)
{
    ccq_status st = CCQ_OK;
    if (s->d->rank == 0) {
        ckpt_data c;
        memset(&c, 0, sizeof c);
        if (s->log) fflush(s->log);
        c.config = search_config_text(&s->cfg);
        c.model_hash = s->model_hash, c.data_hash = s->data_hash;
        c.gen = s->gen, c.evals = s->evals, c.accepted = s->accepted, c.best_val = s->best_val;
        c.log_bytes = s->log ? ftell(s->log) : 0;
        c.layer_cursor = s->layer_cursor;
        c.n = s->n_w, c.width = s->eda.width;
        c.levels = ccq_malloc((size_t)s->n_w);
        all_levels(s, c.levels);
        c.best_levels = s->best_levels, c.eda_base = s->eda.base, c.eda_p = s->eda.p;
        st = ckpt_write(&c, s->cfg.checkpoint, err);
        free(c.config);
        ccq_free(c.levels);
    }
    /* every rank learns whether it worked (and the message is rank 0's) */
    return (ccq_status)dist_bcast_int(s->d, (int)st);
}

/* Rank 0's log and timing files; resuming (log_bytes >= 0), the log is cut
 * back to what it held at the checkpoint and continues from there. */
static ccq_status open_logs(cc_state *s, int64_t log_bytes, ccq_err *err)
{
    s->log = fopen(s->cfg.log, log_bytes >= 0 ? "r+" : "w");
    if (!s->log)
        return ccq_fail(err, CCQ_ERR_IO, "%s: cannot open the log for %s", s->cfg.log,
                        log_bytes >= 0 ? "resuming (it must be the log of the checkpointed run)" : "writing");
    if (log_bytes >= 0 && (ftruncate(fileno(s->log), log_bytes) != 0 || fseek(s->log, log_bytes, SEEK_SET) != 0))
        return ccq_fail(err, CCQ_ERR_IO, "%s: cannot rewind the log to the checkpoint", s->cfg.log);
    char tpath[CFG_PATH_MAX + 16];
    snprintf(tpath, sizeof tpath, "%s.time", s->cfg.log);
    s->timing = fopen(tpath, log_bytes >= 0 ? "a" : "w");
    if (!s->timing) return ccq_fail(err, CCQ_ERR_IO, "%s: cannot open for writing", tpath);
    return CCQ_OK;
}

static ccq_status resume_from(cc_state *s, const char *path, ccq_err *err)
{
    ckpt_data c;
    ccq_status st = ckpt_read(&c, path, err);
    if (st) return st;
    char *mine = search_config_text(&s->cfg);
    if (strcmp(mine, c.config) != 0)
        st = ccq_fail(err, CCQ_ERR_MISMATCH,
                      "%s: checkpoint was made with a different configuration (only [run] keys may change)", path);
    else if (c.model_hash != s->model_hash)
        st = ccq_fail(err, CCQ_ERR_MISMATCH, "%s: checkpoint was made from a different model file than %s", path,
                      s->cfg.model);
    else if (c.data_hash != s->data_hash)
        st = ccq_fail(err, CCQ_ERR_MISMATCH, "%s: checkpoint was made with a different data file than %s", path,
                      s->cfg.data);
    else if (c.n != s->n_w || c.width != s->eda.width)
        st = ccq_fail(err, CCQ_ERR_MISMATCH, "%s: checkpoint has %lld weights x %d candidates, the model %lld x %d", path,
                      (long long)c.n, c.width, (long long)s->n_w, s->eda.width);
    free(mine);
    if (!st) {
        load_all_levels(s, c.levels);
        memcpy(s->best_levels, c.best_levels, (size_t)s->n_w);
        memcpy(s->eda.base, c.eda_base, (size_t)s->n_w);
        memcpy(s->eda.p, c.eda_p, sizeof(uint32_t) * (size_t)s->n_w * s->eda.width);
        s->gen = c.gen, s->evals = c.evals, s->accepted = c.accepted, s->best_val = c.best_val;
        s->layer_cursor = c.layer_cursor;
        if (s->d->rank == 0) st = open_logs(s, c.log_bytes, err);
    }
    ckpt_free(&c);
    return (ccq_status)dist_bcast_int(s->d, (int)st);
}

/* ---- setup -------------------------------------------------------------------- */

/* Round-to-nearest start from the float model, as configured in [quant]. */
static ccq_status quantize_start(cc_state *s, const cfg_search *cfg, ccq_err *err)
{
    quant_config qc;
    quant_config_default(&qc);
    qc.wbits = (int)cfg->wbits, qc.first_last_8 = (int)cfg->first_last_8, qc.calib_images = (int)cfg->calib_images;
    qc.act_rule = cfg->act_rule == CFG_ACT_MINMAX ? QUANT_ACT_MINMAX : QUANT_ACT_PERCENTILE;
    qc.percentile = cfg->percentile;
    qc.w_rule = cfg->wscale == CFG_WSCALE_MSE ? QUANT_W_MSE : QUANT_W_MAXABS;
    return quant_model(&s->fm, &s->train, &qc, &s->m, err);
}

static ccq_status setup(cc_state *s, const cfg_search *cfg, const dist_ctx *d, int resuming, ccq_err *err)
{
    ccq_status st;
    memset(s, 0, sizeof *s);
    s->cfg = *cfg;
    s->d = d;
    if ((st = ckpt_file_hash(cfg->model, &s->model_hash, err)) || (st = ckpt_file_hash(cfg->data, &s->data_hash, err)))
        return st;
    if ((st = model_load(&s->fm, cfg->model, err))) return st;
    if ((st = data_load(&s->train, cfg->data, "train", -1, err))) return st;
    if ((st = data_check_fits(&s->train, &s->fm, err))) return st;
    if (cfg->val_images + cfg->batch > s->train.n)
        return ccq_fail(err, CCQ_ERR_USAGE, "%s: %d training images cannot hold val_images %lld plus a batch of %lld",
                        cfg->data, s->train.n, (long long)cfg->val_images, (long long)cfg->batch);
    if (s->fm.quantized) {
        /* A quantized start (e.g. from scripts/gptq.py): its levels and scales are the start;
         * its folded float weights are the teacher. The [quant] keys do not apply. */
        model_copy(&s->m, &s->fm);
    } else if ((st = quantize_start(s, cfg, err))) {
        return st;
    }
    if ((st = qnet_init(&s->q, &s->m, NULL, (int)cfg->micro_batch, err))) return st;
    if ((st = fit_init(&s->fit, s->m.classes, s->q.logits_scale, err))) return st;

    /* searchable weights: every conv/linear level, in node order */
    s->layer_node = ccq_malloc(sizeof(int) * (size_t)s->m.n_nodes);
    s->layer_start = ccq_malloc(sizeof(int64_t) * ((size_t)s->m.n_nodes + 1));
    for (int i = 0; i < s->m.n_nodes; i++)
        if (s->m.nodes[i].levels) {
            s->layer_node[s->n_layers] = i;
            s->layer_start[s->n_layers++] = s->n_w;
            s->n_w += s->m.nodes[i].n_weight;
        }
    s->layer_start[s->n_layers] = s->n_w;
    int8_t *base = ccq_malloc((size_t)s->n_w), *qmax = ccq_malloc((size_t)s->n_w);
    all_levels(s, base);
    for (int l = 0; l < s->n_layers; l++)
        memset(qmax + s->layer_start[l], model_qmax(s->m.nodes[s->layer_node[l]].bits),
               (size_t)(s->layer_start[l + 1] - s->layer_start[l]));
    st = eda_init(&s->eda, s->n_w, (int)cfg->radius, base, qmax, (uint32_t)llround(cfg->p_center * EDA_ONE),
                  (uint32_t)llround(cfg->p_min * EDA_ONE), err);
    s->best_levels = base;
    ccq_free(qmax);
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
    const int maxb = (int)(cfg->batch > cfg->confirm_batch ? cfg->batch : cfg->confirm_batch);
    const size_t per = (size_t)s->train.c * s->train.h * s->train.w;
    s->batch_img = ccq_malloc(per * (size_t)maxb);
    s->batch_lab = ccq_malloc(sizeof(int32_t) * (size_t)maxb);
    s->batch_idx = ccq_malloc(sizeof(int32_t) * (size_t)maxb);
    s->logits = ccq_malloc(sizeof(int32_t) * (size_t)maxb * s->m.classes);
    if (cfg->fitness == CFG_FIT_DISTILL) {
        s->teacher = ccq_malloc(sizeof(int32_t) * (size_t)s->train.n * s->m.classes);
        s->teacher_done = ccq_calloc((size_t)s->train.n, 1);
    }
    const int G = (int)(cfg->group_size < s->n_w ? cfg->group_size : s->n_w);
    s->sub = ccq_malloc(sizeof(int64_t) * (size_t)G);
    s->ind = ccq_malloc((size_t)G);
    s->saved = ccq_malloc((size_t)G);
    s->elite = ccq_malloc((size_t)G * (size_t)cfg->mu);
    s->touched = ccq_malloc((size_t)s->n_layers);
    (void)resuming;
    return CCQ_OK;
}

static void teardown(cc_state *s)
{
    if (s->log) fclose(s->log);
    if (s->timing) fclose(s->timing);
    if (s->q.nodes) qnet_free(&s->q);
    if (s->m.nodes) model_free(&s->m);
    if (s->fm.nodes) model_free(&s->fm);
    data_free(&s->train);
    eda_free(&s->eda);
    ccq_free(s->layer_node), ccq_free(s->layer_start), ccq_free(s->perm), ccq_free(s->batch_img);
    ccq_free(s->batch_lab), ccq_free(s->batch_idx), ccq_free(s->logits), ccq_free(s->teacher);
    ccq_free(s->teacher_done), ccq_free(s->best_levels), ccq_free(s->sub), ccq_free(s->ind), ccq_free(s->saved);
    ccq_free(s->elite), ccq_free(s->touched);
}

/* ---- the loop ------------------------------------------------------------------ */

static int cmp_fit(const void *a, const void *b)
{
    const int64_t *x = a, *y = b; /* (fitness, individual) */
    if (x[0] != y[0]) return x[0] < y[0] ? -1 : 1;
    return x[1] < y[1] ? -1 : x[1] > y[1];
}

static void check_validation(cc_state *s)
{
    if (s->n_val == 0) return;
    const int64_t v = validate(s);
    s->last_val = v;
    if (v < s->best_val) {
        s->best_val = v;
        all_levels(s, s->best_levels);
    }
}

int cc_run(const cfg_search *cfg, const char *resume, const dist_ctx *d, ccq_err *err)
{
    /* From the start: a stop requested during set-up ends after the first generation, with a checkpoint. */
    struct sigaction sa;
    memset(&sa, 0, sizeof sa);
    sa.sa_handler = on_signal;
    sigaction(SIGTERM, &sa, NULL);
    sigaction(SIGINT, &sa, NULL);
    cc_state s;
    ccq_status st = setup(&s, cfg, d, resume != NULL, err);
    if (st) goto done;
    if (resume) {
        if ((st = resume_from(&s, resume, err))) goto done;
    } else {
        if ((st = (ccq_status)dist_bcast_int(d, d->rank == 0 ? (int)open_logs(&s, -1, err) : 0))) goto done;
        s.best_val = INT64_MAX;
        check_validation(&s);
    }

    const int lambda = (int)cfg->lambda, mu = (int)(cfg->mu < cfg->lambda ? cfg->mu : cfg->lambda);
    const uint32_t alpha = (uint32_t)llround(cfg->alpha * EDA_ONE);
    int *items = ccq_malloc(sizeof(int) * ((size_t)lambda + 1));
    int64_t *fit = ccq_malloc(sizeof(int64_t) * ((size_t)lambda + 2)), *order = ccq_malloc(sizeof(int64_t) * 2 * (size_t)lambda);
    const double t0 = ccq_seconds();
    const int64_t evals0 = s.evals;
    s.t_forward = 0;
    double last_print = 0;
    int stopped = 0;
    while (s.evals < cfg->budget) {
        const int m = choose(&s);
        if (m == 0) break; /* every weight frozen */
        const int B = (int)cfg->batch;
        gather(&s, s.perm + s.n_val, s.n_fit, s.gen * (int64_t)B, B);
        if (cfg->fitness == CFG_FIT_DISTILL) ensure_teacher(&s, B);
        items[0] = -1;
        for (int k = 0; k < lambda; k++) items[k + 1] = k;
        evaluate(&s, items, lambda + 1, m, B, fit);
        s.evals += lambda + 1;
        for (int k = 0; k < lambda; k++) order[2 * k] = fit[k + 1], order[2 * k + 1] = k;
        qsort(order, (size_t)lambda, 2 * sizeof(int64_t), cmp_fit);
        for (int e = 0; e < mu; e++) individual(&s, (int)order[2 * e + 1], m, s.elite + (size_t)e * m);
        eda_update(&s.eda, s.sub, m, s.elite, mu, alpha);
        const int best = (int)order[1];
        int64_t cf[3] = {0, 0, 0};
        int accept = order[0] < fit[0];
        if (accept && cfg->confirm_batch > 0) {
            const int C = (int)cfg->confirm_batch;
            gather(&s, s.perm + s.n_val, s.n_fit, s.n_fit / 2 + s.gen * (int64_t)C, C);
            if (cfg->fitness == CFG_FIT_DISTILL) ensure_teacher(&s, C);
            const int pair[2] = {-1, best};
            evaluate(&s, pair, 2, m, C, cf);
            s.evals += 2;
            accept = cf[1] < cf[0];
        }
        if (accept) {
            individual(&s, best, m, s.ind);
            set_levels(&s, s.sub, m, s.ind);
            s.accepted++;
        }
        int64_t sum = 0;
        for (int k = 1; k <= lambda; k++) sum += fit[k];
        s.gen++;
        const int val_now = s.gen % cfg->checkpoint_every == 0;
        if (val_now) check_validation(&s);
        if (d->rank == 0) {
            fprintf(s.log,
                    "{\"gen\": %lld, \"size\": %d, \"context\": %.6f, \"best\": %.6f, \"mean\": %.6f, \"accepted\": %d",
                    (long long)s.gen, m, fitness_report(&s, fit[0], B), fitness_report(&s, order[0], B),
                    fitness_report(&s, sum, B * lambda), accept);
            fprintf(s.log, ", \"context_acc\": %.6f", (double)fit[lambda + 1] / B);
            if (cf[0] || cf[1])
                fprintf(s.log, ", \"confirm_context\": %.6f, \"confirm_best\": %.6f",
                        fitness_report(&s, cf[0], (int)cfg->confirm_batch), fitness_report(&s, cf[1], (int)cfg->confirm_batch));
            fprintf(s.log, ", \"evaluations\": %lld, \"accepted_total\": %lld", (long long)s.evals, (long long)s.accepted);
            if (val_now && s.n_val)
                fprintf(s.log, ", \"val\": %.6f, \"val_acc\": %.6f, \"best_val\": %.6f",
                        fitness_report(&s, s.last_val, s.n_val), (double)s.val_correct / s.n_val,
                        fitness_report(&s, s.best_val, s.n_val));
            fprintf(s.log, "}\n");
            const double el = ccq_seconds() - t0, rate = (double)(s.evals - evals0) / (el > 0 ? el : 1);
            fprintf(s.timing,
                    "{\"gen\": %lld, \"elapsed\": %.3f, \"evaluations_per_s\": %.2f, \"ranks\": %d, "
                    "\"forward_s_rank0\": %.3f, \"forward_share_rank0\": %.4f}\n",
                    (long long)s.gen, el, rate, d->size, s.t_forward, el > 0 ? s.t_forward / el : 0.0);
            if (el - last_print >= 2.0 || s.evals >= cfg->budget) {
                last_print = el;
                const double eta = rate > 0 ? (double)(cfg->budget - s.evals) / rate : 0;
                printf("search: gen %lld, %lld/%lld evaluations, context %.4f, accepted %lld, %.1f eval/s, ETA %.0f s\n",
                       (long long)s.gen, (long long)s.evals, (long long)cfg->budget, fitness_report(&s, fit[0], B),
                       (long long)s.accepted, rate, eta > 0 ? eta : 0);
                fflush(stdout);
            }
        }
        if (val_now && (st = write_checkpoint(&s, err))) break;
        if (dist_any(d, g_stop)) {
            stopped = 1;
            break;
        }
    }
    ccq_free(items), ccq_free(fit), ccq_free(order);
    if (st) goto done;
    if (!stopped) check_validation(&s);
    if ((st = write_checkpoint(&s, err))) goto done;
    if (stopped) {
        if (d->rank == 0)
            fprintf(stderr, "ccq: search stopped on request at generation %lld; checkpoint %s written\n",
                    (long long)s.gen, cfg->checkpoint);
        teardown(&s);
        return CC_STOPPED;
    }
    /* the model kept: best on validation (the context itself without a validation split) */
    if (s.n_val) load_all_levels(&s, s.best_levels);
    if (d->rank == 0) {
        st = model_save(&s.m, cfg->output, err);
        if (!st)
            printf("search: done after %lld generations, %lld evaluations, %lld accepted; wrote %s\n", (long long)s.gen,
                   (long long)s.evals, (long long)s.accepted, cfg->output);
    }
    st = (ccq_status)dist_bcast_int(d, (int)st);
done:
    teardown(&s);
    return (int)st;
}
