/*
 * frefit.c: the data-aware refit of CP-factorized layers' last factors (frefit.h).
 */
#include "ccq/frefit.h"

#include <cblas.h>
#include <lapacke.h>
#include <math.h>
#include <string.h>

#include "ccq/fnet.h"
#include "ccq/gptq.h"
#include "ccq/op.h"

void frefit_config_default(frefit_config *c)
{
    c->images = 256;
    c->ridge = 1e-4;
    c->wbits = 4;
}

static int find_node(const model *m, const char *name)
{
    for (int i = 0; i < m->n_nodes; i++)
        if (!strcmp(m->nodes[i].name, name)) return i;
    return -1;
}

/* Node nd's float weights set to levels x scale (its output channel's). */
static void set_on_grid(model_node *nd, const int8_t *lv, const float *sc)
{
    const int64_t per = nd->n_weight / nd->shape.c;
    for (int64_t e = 0; e < nd->n_weight; e++) nd->weight[e] = (float)lv[e] * sc[e / per];
}

/* Node `at`'s output before its ReLU and clip, into y (net's buffers hold the nodes before it). */
static void pre_activation(fnet *net, const uint8_t *image, int at, float *y)
{
    const model *m = net->m;
    const model_node *nd = &m->nodes[at];
    const float *x[MODEL_MAX_IN];
    fnet_forward_until(net, image, at);
    for (int j = 0; j < nd->n_in; j++) x[j] = nd->in[j] < 0 ? net->input : net->out[nd->in[j]];
    op_get(nd->op)->ffwd(m, at, x, y, net->col);
}

/* Sums of one layer's least-squares problem over the images: z~ = [z; 1] (K + 1 rows), G = sum z~ z~^T,
 * C = sum z~ y^T ([K + 1][Cout]), yy[c] = sum y_c^2. */
typedef struct {
    int K, cout;
    double *G, *C, *yy;
} lsq_sums;

/* Squared error of row c's weights w [K] and bias b over the sums: sum (y_c - w.z - b)^2. */
static double row_sse(const lsq_sums *s, int c, const double *w, double b)
{
    const int K = s->K, K1 = K + 1;
    double lin = 0, quad = 0;
    for (int j = 0; j <= K; j++) {
        const double wj = j < K ? w[j] : b;
        lin += wj * s->C[(int64_t)j * s->cout + c];
        double t = 0;
        for (int k = 0; k <= K; k++) t += s->G[(int64_t)j * K1 + k] * (k < K ? w[k] : b);
        quad += wj * t;
    }
    const double e = s->yy[c] - 2.0 * lin + quad;
    return e > 0 ? e : 0;
}

/* The bias that minimises row c's error for weights w: mean(y_c) - w . mean(z). */
static double row_bias(const lsq_sums *s, int c, const double *w)
{
    const int K = s->K, K1 = K + 1;
    const double n = s->G[(int64_t)K * K1 + K];
    double b = s->C[(int64_t)K * s->cout + c];
    for (int k = 0; k < K; k++) b -= w[k] * s->G[(int64_t)K * K1 + k];
    return b / n;
}

/* The ridge least-squares weights (no ridge on the bias) into w [Cout][K] and b [Cout]. */
static void lsq_solve(const lsq_sums *s, double ridge, double *w, double *b)
{
    const int K = s->K, K1 = K + 1, cout = s->cout;
    double tr = 0;
    for (int k = 0; k < K; k++) tr += s->G[(int64_t)k * K1 + k];
    double lam = ridge * (tr > 0 ? tr / K : 1.0);
    double *a = ccq_malloc(sizeof(double) * (size_t)K1 * (size_t)K1);
    double *x = ccq_malloc(sizeof(double) * (size_t)K1 * (size_t)cout);
    for (;;) {
        memcpy(a, s->G, sizeof(double) * (size_t)K1 * (size_t)K1);
        for (int k = 0; k < K; k++) a[(int64_t)k * K1 + k] += lam;
        memcpy(x, s->C, sizeof(double) * (size_t)K1 * (size_t)cout);
        if (LAPACKE_dposv(LAPACK_ROW_MAJOR, 'U', K1, cout, a, K1, x, cout) == 0) break;
        lam = lam > 0 ? lam * 100 : 1e-12;
        CCQ_ASSERT(lam < 1e300);
    }
    for (int c = 0; c < cout; c++) {
        for (int k = 0; k < K; k++) w[(int64_t)c * K + k] = x[(int64_t)k * cout + c];
        b[c] = x[(int64_t)K * cout + c];
    }
    ccq_free(a);
    ccq_free(x);
}

/* Layer L's refit: its last factor is node `at` of g (the grid model) and of fz, the original node `o` of
 * orig. */
static void refit_layer(fnet *gn, fnet *on, model *g, model *fz, int at, int o, factorize_layer *L,
                        const data_split *calib, int n_img, const frefit_config *c, frefit_layer *rep)
{
    model_node *nd = &g->nodes[at];
    const int zin = nd->in[0], cout = nd->shape.c;
    const int K = (int)(nd->n_weight / cout), K1 = K + 1;
    const int64_t P = model_numel(nd->shape) / cout;
    CCQ_ASSERT(zin >= 0 && model_numel(g->nodes[zin].shape) == (int64_t)K * P);
    CCQ_ASSERT(model_numel(on->m->nodes[o].shape) == (int64_t)cout * P);
    lsq_sums s = {.K = K, .cout = cout};
    s.G = ccq_calloc((size_t)K1 * (size_t)K1, sizeof(double));
    s.C = ccq_calloc((size_t)K1 * (size_t)cout, sizeof(double));
    s.yy = ccq_calloc((size_t)cout, sizeof(double));
    double *zd = ccq_malloc(sizeof(double) * (size_t)K1 * (size_t)P);
    double *yd = ccq_malloc(sizeof(double) * (size_t)cout * (size_t)P);
    float *y = ccq_malloc(sizeof(float) * (size_t)cout * (size_t)P);
    const int64_t isz = (int64_t)calib->c * calib->h * calib->w;
    for (int i = 0; i < n_img; i++) {
        const uint8_t *img = calib->images + (int64_t)i * isz;
        fnet_forward_until(gn, img, at);
        pre_activation(on, img, o, y);
        const float *z = gn->out[zin];
        for (int64_t e = 0; e < (int64_t)K * P; e++) zd[e] = z[e];
        for (int64_t p = 0; p < P; p++) zd[(int64_t)K * P + p] = 1.0;
        for (int64_t e = 0; e < (int64_t)cout * P; e++) yd[e] = y[e];
        for (int ch = 0; ch < cout; ch++) {
            double t = 0;
            for (int64_t p = 0; p < P; p++) t += yd[(int64_t)ch * P + p] * yd[(int64_t)ch * P + p];
            s.yy[ch] += t;
        }
        cblas_dgemm(CblasRowMajor, CblasNoTrans, CblasTrans, K1, K1, (int)P, 1.0, zd, (int)P, zd, (int)P, 1.0, s.G,
                    K1);
        cblas_dgemm(CblasRowMajor, CblasNoTrans, CblasTrans, K1, cout, (int)P, 1.0, zd, (int)P, yd, (int)P, 1.0,
                    s.C, cout);
    }
    ccq_free(zd);
    ccq_free(yd);
    ccq_free(y);

    /* the least-squares weights, then on the grid by GPTQ with the centred input covariance */
    double *ws = ccq_malloc(sizeof(double) * (size_t)cout * (size_t)K), *bs = ccq_malloc(sizeof(double) * cout);
    lsq_solve(&s, c->ridge, ws, bs);
    const double n = s.G[(int64_t)K * K1 + K];
    double *H = ccq_malloc(sizeof(double) * (size_t)K * (size_t)K);
    for (int j = 0; j < K; j++)
        for (int k = 0; k < K; k++)
            H[(int64_t)j * K + k] = s.G[(int64_t)j * K1 + k] - s.G[(int64_t)K * K1 + j] * s.G[(int64_t)K * K1 + k] / n;
    const int qmax = model_qmax(c->wbits), last = L->n_factors - 1;
    int8_t *q = ccq_malloc((size_t)cout * (size_t)K);
    double *sc = ccq_malloc(sizeof(double) * cout), *best = ccq_malloc(sizeof(double) * cout);
    double *w = ccq_malloc(sizeof(double) * K);
    int8_t *lv = L->levels[last];
    float *lsc = L->scale[last];
    /* the old levels and bias: the candidate every row starts from */
    double sse_old = 0, yy = 0;
    for (int ch = 0; ch < cout; ch++) {
        for (int k = 0; k < K; k++) w[k] = (double)lv[(int64_t)ch * K + k] * lsc[ch];
        best[ch] = row_sse(&s, ch, w, nd->bias ? nd->bias[ch] : 0.0);
        sse_old += best[ch];
        yy += s.yy[ch];
    }
    gptq_config gc;
    gptq_config_default(&gc);
    int refitted = 0;
    int *won = ccq_calloc((size_t)cout, sizeof(int));
    for (int f = 0; f < GPTQ_N_FACTORS; f++) {
        for (int ch = 0; ch < cout; ch++) {
            double mx = 0;
            for (int k = 0; k < K; k++) mx = fmax(mx, fabs(ws[(int64_t)ch * K + k]));
            sc[ch] = mx > 0 ? gptq_factor(f) * mx / qmax : (double)lsc[ch];
        }
        ccq_err e2;
        if (gptq_layer(ws, H, cout, K, sc, qmax, &gc, q, &e2)) continue; /* not positive definite: no candidate */
        for (int ch = 0; ch < cout; ch++) {
            const float scf = (float)sc[ch];
            if (!(scf > 0) || !isfinite(scf)) continue;
            for (int k = 0; k < K; k++) w[k] = (double)q[(int64_t)ch * K + k] * scf;
            const double b = row_bias(&s, ch, w), e = row_sse(&s, ch, w, b);
            if (e < best[ch]) {
                best[ch] = e;
                won[ch] = 1;
                memcpy(lv + (int64_t)ch * K, q + (int64_t)ch * K, (size_t)K);
                lsc[ch] = scf;
                bs[ch] = b;
            }
        }
    }
    if (!nd->bias) {
        nd->bias = ccq_calloc((size_t)cout, sizeof(float));
        fz->nodes[at].bias = ccq_calloc((size_t)cout, sizeof(float));
    }
    double sse_new = 0;
    for (int ch = 0; ch < cout; ch++) {
        sse_new += best[ch];
        if (won[ch]) {
            refitted++;
            nd->bias[ch] = fz->nodes[at].bias[ch] = (float)bs[ch];
        }
    }
    set_on_grid(nd, lv, lsc);
    set_on_grid(&fz->nodes[at], lv, lsc);
    rep->err_before = yy > 0 ? sqrt(sse_old / yy) : 0;
    rep->err_after = yy > 0 ? sqrt(sse_new / yy) : 0;
    rep->channels = cout;
    rep->refitted = refitted;
    ccq_free(won);
    ccq_free(ws);
    ccq_free(bs);
    ccq_free(H);
    ccq_free(q);
    ccq_free(sc);
    ccq_free(best);
    ccq_free(w);
    ccq_free(s.G);
    ccq_free(s.C);
    ccq_free(s.yy);
}

ccq_status frefit_run(const model *orig, model *fz, factorize_plan *plan, const data_split *calib,
                      const frefit_config *c, frefit_layer *rep, ccq_err *err)
{
    ccq_status st;
    if ((st = data_check_fits(calib, fz, err))) return st;
    const int n_img = c->images < calib->n ? c->images : calib->n;
    if (n_img < 1) return ccq_fail(err, CCQ_ERR_USAGE, "%s: no images to refit on", calib->path);
    /* g: fz with every factor on its grid, as the integer network runs it */
    model g;
    model_copy(&g, fz);
    for (int l = 0; l < plan->n_layers; l++)
        for (int k = 0; k < plan->layers[l].n_factors; k++) {
            const int at = find_node(&g, plan->layers[l].fname[k]);
            CCQ_ASSERT(at >= 0);
            set_on_grid(&g.nodes[at], plan->layers[l].levels[k], plan->layers[l].scale[k]);
        }
    const int nt = openblas_get_num_threads();
    openblas_set_num_threads(1);
    fnet gn, on;
    fnet_init(&gn, &g);
    fnet_init(&on, orig);
    for (int l = 0; l < plan->n_layers; l++) {
        factorize_layer *L = &plan->layers[l];
        const int at = find_node(&g, L->fname[L->n_factors - 1]), o = find_node(orig, L->name);
        CCQ_ASSERT(at >= 0 && o >= 0 && find_node(fz, L->fname[L->n_factors - 1]) == at);
        frefit_layer r;
        refit_layer(&gn, &on, &g, fz, at, o, L, calib, n_img, c, &r);
        if (rep) rep[l] = r;
    }
    fnet_free(&gn);
    fnet_free(&on);
    openblas_set_num_threads(nt);
    model_free(&g);
    return CCQ_OK;
}
