/*
 * quant.c: BatchNorm folding, ReLU fusion, activation calibration, weight
 * scales and round-to-nearest levels (see quant.h); learned levels are
 * lq.c's, chosen per layer here. Float arithmetic is allowed here (and in
 * lq.c and gptq.c): this runs once, before any integer work.
 */
#include "ccq/quant.h"

#include <float.h>
#include <math.h>
#include <stdio.h>
#include <string.h>

#include "ccq/fnet.h"
#include "ccq/lq.h"
#include "ccq/op.h"

void quant_config_default(quant_config *c)
{
    c->wbits = 8;
    c->first_last_8 = 0;
    c->calib_images = 1024;
    c->act_rule = QUANT_ACT_PERCENTILE;
    c->percentile = 99.99;
    c->w_rule = QUANT_W_MAXABS;
    c->level_rule = QUANT_LEVELS_UNIFORM;
    c->sparsity_pm = 0;
    c->prune_after = 0;
}

ccq_status quant_multiplier(double M, int32_t *m0, int *shift)
{
    if (!(M > 0.0) || !isfinite(M) || M >= 1073741824.0) return CCQ_ERR_LIMIT;
    int e = 0;
    double f = frexp(M, &e); /* M = f * 2^e, f in [0.5, 1) */
    int64_t q = llround(ldexp(f, 31));
    if (q == (INT64_C(1) << 31)) q >>= 1, e++;
    int sh = 31 - e;
    if (sh > 62) {
        *m0 = 0;
        *shift = 1;
        return CCQ_OK;
    }
    if (sh < 1) return CCQ_ERR_LIMIT;
    *m0 = (int32_t)q;
    *shift = sh;
    return CCQ_OK;
}

int quant_acc_fits(double bias_levels, int64_t K, int qmax)
{
    return fabs(bias_levels) + 2.0 * 255.0 * (double)K * qmax < 2147483647.0;
}

/* ---- folding and fusion ------------------------------------------------ */

static int is_affine_layer(model_op op) { return (op_get(op)->flags & OP_WEIGHTED) != 0; }
static int fuses(model_op op) { return (op_get(op)->flags & OP_FUSES) != 0; }

ccq_status quant_fold(const model *src, model *dst, ccq_err *err)
{
    const int n = src->n_nodes;
    int *uses = ccq_calloc((size_t)n, sizeof(int)), *map = ccq_malloc(sizeof(int) * (size_t)n);
    for (int i = 0; i < n; i++)
        for (int j = 0; j < src->nodes[i].n_in; j++)
            if (src->nodes[i].in[j] >= 0) uses[src->nodes[i].in[j]]++;
    uses[src->output]++; /* the logits are used by the caller */

    model tmp;
    model_copy(&tmp, src);
    *dst = tmp;
    dst->nodes = ccq_calloc((size_t)n, sizeof(model_node));
    int k = 0;
    for (int i = 0; i < n; i++) {
        model_node *s = &tmp.nodes[i];
        const int p = s->in[0];
        const model_node *prod = p >= 0 ? &dst->nodes[map[p]] : NULL;
        if (s->op == MODEL_OP_BATCHNORM && prod && is_affine_layer(prod->op) && uses[p] == 1 && !prod->relu &&
            !prod->has_clip) {
            model_node *t = &dst->nodes[map[p]];
            const int cout = t->shape.c;
            const int64_t per = t->n_weight / cout;
            if (!t->bias) t->bias = ccq_calloc((size_t)cout, sizeof(float));
            for (int o = 0; o < cout; o++) {
                const double a = (double)s->gamma[o] / sqrt((double)s->var[o] + (double)s->eps);
                for (int64_t q = 0; q < per; q++) t->weight[o * per + q] = (float)(t->weight[o * per + q] * a);
                t->bias[o] = (float)(((double)t->bias[o] - s->mean[o]) * a + s->beta[o]);
            }
            map[i] = map[p];
            ccq_free(s->gamma), ccq_free(s->beta), ccq_free(s->mean), ccq_free(s->var);
            continue;
        }
        /* a ReLU or Clip that alone reads an op that fuses becomes that op's output clamp */
        const int fusable = prod && uses[p] == 1 && !prod->relu && !prod->has_clip && fuses(prod->op) &&
                            p != src->output;
        if (s->op == MODEL_OP_RELU && fusable) {
            dst->nodes[map[p]].relu = 1;
            map[i] = map[p];
            continue;
        }
        if (s->op == MODEL_OP_CLIP && fusable) {
            model_node *t = &dst->nodes[map[p]];
            t->has_clip = 1;
            t->clip[0] = s->clip[0], t->clip[1] = s->clip[1];
            map[i] = map[p];
            continue;
        }
        model_node *d = &dst->nodes[k];
        *d = *s;
        for (int j = 0; j < s->n_in; j++) d->in[j] = s->in[j] < 0 ? -1 : map[s->in[j]];
        map[i] = k++;
    }
    dst->n_nodes = k;
    dst->output = map[src->output];
    ccq_free(tmp.nodes);
    ccq_free(uses);
    ccq_free(map);
    (void)err;
    return CCQ_OK;
}

/* ---- calibration ------------------------------------------------------- */

enum { HIST_BINS = 4096 };

typedef struct {
    double min, max;
    int64_t n;
    int64_t *bins;
} act_stats;

static int calibrated_op(model_op op) { return (op_get(op)->flags & OP_CALIBRATED) != 0; }

/* Value below which `frac` of the samples lie (bin upper edge; linear within the bin is not needed at 4096 bins). */
static double hist_quantile(const act_stats *a, double frac)
{
    const double target = frac * (double)a->n, w = (a->max - a->min) / HIST_BINS;
    int64_t cum = 0;
    for (int b = 0; b < HIST_BINS; b++) {
        cum += a->bins[b];
        if ((double)cum >= target) return a->min + w * (b + 1);
    }
    return a->max;
}

static ccq_status calibrate(model *m, const data_split *calib, int n_img, const quant_config *cfg, ccq_err *err)
{
    act_stats *st = ccq_calloc((size_t)m->n_nodes, sizeof(act_stats));
    fnet net;
    ccq_status rc = CCQ_OK;
    const int64_t per = (int64_t)calib->c * calib->h * calib->w;
    for (int i = 0; i < m->n_nodes; i++) st[i].min = DBL_MAX, st[i].max = -DBL_MAX;
    fnet_init(&net, m);
    const int passes = cfg->act_rule == QUANT_ACT_PERCENTILE ? 2 : 1;
    for (int pass = 0; pass < passes && !rc; pass++) {
        if (pass == 1)
            for (int i = 0; i < m->n_nodes; i++)
                if (calibrated_op(m->nodes[i].op)) st[i].bins = ccq_calloc(HIST_BINS, sizeof(int64_t));
        for (int img = 0; img < n_img && !rc; img++) {
            fnet_forward(&net, calib->images + per * img);
            for (int i = 0; i < m->n_nodes && !rc; i++) {
                if (!calibrated_op(m->nodes[i].op)) continue;
                const float *y = net.out[i];
                const int64_t ny = model_numel(m->nodes[i].shape);
                act_stats *a = &st[i];
                if (pass == 0) {
                    for (int64_t q = 0; q < ny; q++) {
                        if (!isfinite(y[q])) {
                            rc = ccq_fail(err, CCQ_ERR_FORMAT,
                                          "%s: node %d (%s): non-finite activation on calibration image %d: the "
                                          "model cannot be calibrated",
                                          m->path, i, m->nodes[i].name, img);
                            break;
                        }
                        if (y[q] < a->min) a->min = y[q];
                        if (y[q] > a->max) a->max = y[q];
                    }
                    a->n += ny;
                } else if (a->max > a->min) {
                    const double sc = HIST_BINS / (a->max - a->min);
                    for (int64_t q = 0; q < ny; q++) {
                        int b = (int)((y[q] - a->min) * sc);
                        a->bins[b < 0 ? 0 : b >= HIST_BINS ? HIST_BINS - 1 : b]++;
                    }
                }
            }
        }
    }
    fnet_free(&net);
    for (int i = 0; i < m->n_nodes && !rc; i++) {
        model_node *nd = &m->nodes[i];
        if (!calibrated_op(nd->op)) {
            const int s = nd->in[0];
            nd->act_scale = s < 0 ? m->in_scale : m->nodes[s].act_scale;
            nd->act_zp = s < 0 ? m->in_zp : m->nodes[s].act_zp;
            continue;
        }
        double lo = st[i].min, hi = st[i].max;
        if (cfg->act_rule == QUANT_ACT_PERCENTILE && hi > lo) {
            const double tail = (100.0 - cfg->percentile) / 100.0;
            lo = hist_quantile(&st[i], tail) - (st[i].max - st[i].min) / HIST_BINS; /* lower bin edge */
            if (lo < st[i].min) lo = st[i].min;
            hi = hist_quantile(&st[i], 1.0 - tail);
        }
        if (lo > 0) lo = 0;
        if (hi < 0) hi = 0;
        if (nd->relu) lo = 0;
        if (hi - lo < 1e-12) hi = lo + 1.0; /* a constant tensor: any scale represents it */
        const double scale = (hi - lo) / 255.0;
        long zp = lround(-lo / scale);
        nd->act_scale = (float)scale;
        nd->act_zp = (int)(zp < 0 ? 0 : zp > 255 ? 255 : zp);
    }
    for (int i = 0; i < m->n_nodes; i++) ccq_free(st[i].bins);
    ccq_free(st);
    return rc;
}

/* ---- weights ------------------------------------------------------------ */

static float round_level(float w, float s, int qmax)
{
    float q = roundf(w / s); /* round half away from zero */
    return q > (float)qmax ? (float)qmax : q < (float)-qmax ? (float)-qmax : q;
}

void quant_rtn(model_node *nd)
{
    const int cout = nd->shape.c, qmax = model_qmax(nd->bits);
    const int64_t per = nd->n_weight / cout;
    for (int o = 0; o < cout; o++)
        for (int64_t k = 0; k < per; k++)
            nd->levels[o * per + k] = (int8_t)round_level(nd->weight[o * per + k], nd->wscale[o], qmax);
}

static float channel_scale(const float *w, int64_t n, int qmax, quant_w_rule rule)
{
    double mx = 0;
    for (int64_t k = 0; k < n; k++) mx = fmax(mx, fabs(w[k]));
    if (mx == 0) return 1.0f;
    if (rule == QUANT_W_MAXABS) return (float)(mx / qmax);
    /* Grid over clipping ratios 1.00, 0.99, ..., 0.20: first minimum of the squared error. */
    float best = (float)(mx / qmax);
    double best_err = DBL_MAX;
    for (int r = 100; r >= 20; r--) {
        const float s = (float)(mx * r / 100.0 / qmax);
        double e = 0;
        for (int64_t k = 0; k < n; k++) {
            const double d = w[k] - (double)s * round_level(w[k], s, qmax);
            e += d * d;
        }
        if (e < best_err) best_err = e, best = s;
    }
    return best;
}

ccq_status quant_model(const model *src, const data_split *calib, const quant_config *cfg, model *dst,
                       ccq_err *err)
{
    ccq_status st;
    if (cfg->level_rule == QUANT_LEVELS_LEARNED && (cfg->wbits < 2 || cfg->wbits > MODEL_CODEBOOK_MAX_BITS))
        return ccq_fail(err, CCQ_ERR_USAGE, "learned levels need weight bits 2 to %d, got %d",
                        MODEL_CODEBOOK_MAX_BITS, cfg->wbits);
    if (cfg->wbits < 2 || cfg->wbits > 8)
        return ccq_fail(err, CCQ_ERR_USAGE, "weight bits must be 2 to 8, got %d", cfg->wbits);
    for (int c = 1; c < src->input.c; c++)
        if (src->mean[c] != src->mean[0] || src->std[c] != src->std[0])
            return ccq_fail(err, CCQ_ERR_FORMAT,
                            "%s: per-channel input normalisation with differing values is not supported by the "
                            "integer engine yet",
                            src->path);
    if ((st = data_check_fits(calib, src, err))) return st;
    if (calib->n < 1) return ccq_fail(err, CCQ_ERR_MISMATCH, "%s: no calibration images", calib->path);
    if ((st = quant_fold(src, dst, err))) return st;
    dst->quantized = 1;
    dst->abits = 8;
    /* The raw pixel is the first tensor: (p/255 - mean)/std = p/(255 std) - 255 mean/(255 std). */
    dst->in_scale = (float)(1.0 / (255.0 * (double)src->std[0]));
    long zp = lround(255.0 * (double)src->mean[0]);
    dst->in_zp = (int)(zp < 0 ? 0 : zp > 255 ? 255 : zp);

    const int n_img = cfg->calib_images < calib->n ? cfg->calib_images : calib->n;
    if ((st = calibrate(dst, calib, n_img, cfg, err))) goto fail;

    for (int i = 0; i < dst->n_nodes; i++) {
        const op_traits *ot = op_get(dst->nodes[i].op);
        if (ot->qprep && (st = ot->qprep(dst, i, err))) goto fail;
    }

    int first = -1;
    for (int i = 0; i < dst->n_nodes; i++)
        if (is_affine_layer(dst->nodes[i].op) && first < 0) first = i;
    for (int i = 0; i < dst->n_nodes; i++) {
        model_node *nd = &dst->nodes[i];
        if (!is_affine_layer(nd->op)) continue;
        nd->bits = cfg->first_last_8 && (i == first || i == dst->output) ? 8 : cfg->wbits;
        const int cout = nd->shape.c;
        const int64_t per = nd->n_weight / cout;
        nd->wscale = ccq_malloc(sizeof(float) * (size_t)cout);
        nd->levels = ccq_malloc((size_t)nd->n_weight);
        if (cfg->level_rule == QUANT_LEVELS_LEARNED && nd->bits == cfg->wbits) {
            lq_quantize_node(nd);
        } else {
            for (int o = 0; o < cout; o++)
                nd->wscale[o] = channel_scale(nd->weight + o * per, per, model_qmax(nd->bits), cfg->w_rule);
            quant_rtn(nd);
        }
        /* int32 accumulators must not overflow (quant_acc_fits). */
        const int s = nd->in[0], wmax = model_node_wmax(nd);
        const double s_in = s < 0 ? dst->in_scale : dst->nodes[s].act_scale;
        for (int o = 0; o < cout; o++) {
            const double b = nd->bias ? fabs(nd->bias[o]) / (s_in * nd->wscale[o]) : 0.0;
            if (!quant_acc_fits(b, per, wmax)) {
                st = ccq_fail(err, CCQ_ERR_LIMIT,
                              "%s: node %d (%s): output channel %d could overflow int32 accumulators "
                              "(K = %lld, bias %.3g levels)",
                              src->path, i, nd->name, o, (long long)per, b);
                goto fail;
            }
        }
    }
    /* The logits are int32 at one scale for all classes: the largest input x weight scale. */
    model_node *out = &dst->nodes[dst->output];
    if (!is_affine_layer(out->op) || out->relu) {
        st = ccq_fail(err, CCQ_ERR_FORMAT, "%s: the integer engine needs the model to end in a linear or conv2d "
                      "layer without ReLU", src->path);
        goto fail;
    }
    {
        const int s = out->in[0];
        const double s_in = s < 0 ? dst->in_scale : dst->nodes[s].act_scale;
        double mx = 0;
        for (int o = 0; o < out->shape.c; o++) mx = fmax(mx, s_in * out->wscale[o]);
        out->act_scale = (float)mx;
        out->act_zp = 0;
    }
    return CCQ_OK;
fail:
    model_free(dst);
    return st;
}
