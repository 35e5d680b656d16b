/*
 * factorize.c: the CP rewrite of a float model's conv2d and linear layers
 * and the factor levels it hands to the quantized model (see factorize.h).
 * The fits are cpd.c's; this file chooses layers and ranks, lays the factors
 * out as weights and builds the node chains. It does not quantize (quant.c)
 * nor parse flags (cmd_factorize.c).
 */
#include "ccq/factorize.h"

#include <math.h>
#include <stdio.h>
#include <string.h>

#include "ccq/cpd.h"
#include "ccq/op.h"
#include "ccq/quant.h"

void factorize_config_default(factorize_config *c)
{
    memset(c, 0, sizeof(*c));
    c->method = FACTORIZE_ADMM;
    c->ratio_pm = 500;
    c->wbits = 4;
    c->als_iters = 500;
    c->admm_sweeps = 60;
    c->admm_inner = 10;
    c->seed = 1;
    c->ridge = 0.01;
}

void factorize_plan_free(factorize_plan *p)
{
    for (int l = 0; l < p->n_layers; l++)
        for (int k = 0; k < p->layers[l].n_factors; k++) {
            ccq_free(p->layers[l].levels[k]);
            ccq_free(p->layers[l].scale[k]);
        }
    ccq_free(p->layers);
    memset(p, 0, sizeof(*p));
}

static int is_weighted(const model_node *nd) { return (op_get(nd->op)->flags & OP_WEIGHTED) != 0; }

/* Marks the chosen nodes of src: pick[i] = -1 (the configured rank) or the rank given with the name
 * (NAME=R); errors for names that cannot be factorized and bad ranks. */
static ccq_status choose(const model *src, const factorize_config *c, int *pick, ccq_err *err)
{
    int first = -1;
    for (int i = 0; i < src->n_nodes && first < 0; i++)
        if (is_weighted(&src->nodes[i])) first = i;
    if (c->layers) {
        for (const char *p = c->layers; *p;) {
            const char *e = strchr(p, ',');
            size_t len = e ? (size_t)(e - p) : strlen(p);
            int rank = -1;
            const char *eq = memchr(p, '=', len);
            if (eq) {
                long r = 0;
                const char *q = eq + 1;
                for (; q < p + len && *q >= '0' && *q <= '9' && r <= 1 << 20; q++) r = r * 10 + (*q - '0');
                if (q == eq + 1 || q != p + len || r < 1 || r > 1 << 20)
                    return ccq_fail(err, CCQ_ERR_USAGE, "factorize: --layers '%.*s': the rank after '=' must be "
                                    "1 to %d", (int)len, p, 1 << 20);
                rank = (int)r;
                len = (size_t)(eq - p);
            }
            int found = -1;
            for (int i = 0; i < src->n_nodes; i++)
                if (strlen(src->nodes[i].name) == len && !strncmp(src->nodes[i].name, p, len)) found = i;
            if (found < 0)
                return ccq_fail(err, CCQ_ERR_USAGE, "%s: no node '%.*s' to factorize (after BatchNorm folding)",
                                src->path, (int)len, p);
            const model_node *nd = &src->nodes[found];
            if (nd->op != MODEL_OP_CONV2D && nd->op != MODEL_OP_LINEAR)
                return ccq_fail(err, CCQ_ERR_USAGE, "%s: node '%s' is not a conv2d or linear layer", src->path,
                                nd->name);
            if (nd->op == MODEL_OP_CONV2D && nd->groups != 1)
                return ccq_fail(err, CCQ_ERR_USAGE, "%s: node '%s' is a grouped convolution: not factorized",
                                src->path, nd->name);
            if (found == src->output)
                return ccq_fail(err, CCQ_ERR_USAGE, "%s: node '%s' computes the logits: not factorized", src->path,
                                nd->name);
            pick[found] = rank;
            if (!e) break;
            p = e + 1;
        }
    } else {
        for (int i = 0; i < src->n_nodes; i++) {
            const model_node *nd = &src->nodes[i];
            if (i == first || i == src->output) continue;
            if (nd->op == MODEL_OP_LINEAR || (nd->op == MODEL_OP_CONV2D && nd->groups == 1)) pick[i] = -1;
        }
    }
    int n = 0;
    for (int i = 0; i < src->n_nodes; i++) n += pick[i] != 0;
    if (!n) return ccq_fail(err, CCQ_ERR_USAGE, "%s: no layer to factorize", src->path);
    return CCQ_OK;
}

/* The tensor's modes: Cout, Cin, then kh and kw where above 1. */
static int modes_of(const model_node *nd, int *dims, int *mode_h, int *mode_w)
{
    int n = 0;
    const int64_t cout = nd->shape.c;
    dims[n++] = (int)cout;
    *mode_h = *mode_w = -1;
    if (nd->op == MODEL_OP_LINEAR) {
        dims[n++] = (int)(nd->n_weight / cout);
        return n;
    }
    dims[n++] = (int)(nd->n_weight / (cout * nd->kernel[0] * nd->kernel[1]));
    if (nd->kernel[0] > 1) *mode_h = n, dims[n++] = nd->kernel[0];
    if (nd->kernel[1] > 1) *mode_w = n, dims[n++] = nd->kernel[1];
    return n;
}

/* The exact decomposition: rank = the product of every dim but the larger of modes 0 and 1
 * (`dense`), whose factor holds the tensor's unfolding; every other mode an indicator. */
static void full_rank(const double *t, cpd_factors *f, int dense)
{
    const int n = f->n_modes, R = f->rank;
    int idx[CPD_MAX_MODES] = {0};
    for (int r = 0; r < R; r++) {
        for (int k = 0; k < n; k++)
            if (k != dense) f->f[k][(int64_t)idx[k] * R + r] = 1.0;
        for (int i = 0; i < f->dims[dense]; i++) {
            int64_t e = 0;
            for (int k = 0; k < n; k++) e = e * f->dims[k] + (k == dense ? i : idx[k]);
            f->f[dense][(int64_t)i * R + r] = t[e];
        }
        for (int k = n - 1; k >= 0; k--) {
            if (k == dense) continue;
            if (++idx[k] < f->dims[k]) break;
            idx[k] = 0;
        }
    }
}

static model_node conv_node(const char *base, const char *suffix, int in, model_shape shape, int cin_per_group,
                            int groups, int kh, int kw)
{
    model_node nd;
    memset(&nd, 0, sizeof nd);
    nd.op = MODEL_OP_CONV2D;
    snprintf(nd.name, sizeof nd.name, "%.110s/%s", base, suffix);
    nd.n_in = 1;
    nd.in[0] = in;
    nd.shape = shape;
    nd.kernel[0] = kh, nd.kernel[1] = kw;
    nd.stride[0] = nd.stride[1] = 1;
    nd.dilation[0] = nd.dilation[1] = 1;
    nd.groups = groups;
    nd.n_weight = (int64_t)shape.c * cin_per_group * kh * kw;
    nd.weight = ccq_calloc((size_t)nd.n_weight, sizeof(float));
    return nd;
}

/* Lays factor m out as node weights: mode 0 as [Cout][R]; any other as [R][dims[m]]. */
static void factor_weights(const cpd_factors *f, int m, float *w)
{
    const int R = f->rank, d = f->dims[m];
    for (int i = 0; i < d; i++)
        for (int r = 0; r < R; r++)
            w[m == 0 ? (int64_t)i * R + r : (int64_t)r * d + i] = (float)f->f[m][(int64_t)i * R + r];
}

/* The grid's integers and scales of factor m (on its grid) in the same layout. */
static void factor_levels(const cpd_factors *f, int m, int8_t **lv_out, float **sc_out)
{
    const int R = f->rank, d = f->dims[m];
    int8_t *lv = ccq_malloc((size_t)d * (size_t)R), *out = ccq_malloc((size_t)d * (size_t)R);
    const int nsc = m == 0 ? d : R;
    float *scf = ccq_malloc(sizeof(float) * (size_t)nsc);
    cpd_levels(f, m, lv);
    for (int i = 0; i < d; i++)
        for (int r = 0; r < R; r++)
            out[m == 0 ? (int64_t)i * R + r : (int64_t)r * d + i] = lv[(int64_t)i * R + r];
    for (int k = 0; k < nsc; k++) scf[k] = (float)f->scale[m][k];
    ccq_free(lv);
    *lv_out = out;
    *sc_out = scf;
}

/* Fits node nd's factors into f (rank chosen) and fills the layer's report; for ADMM f ends on its grid,
 * else f holds the float factors and *grid (allocated here) them rounded. */
/* The exact decomposition's rank of node nd: its weights over the larger of Cout and Cin (full_rank). */
static int64_t full_rank_of(const model_node *nd)
{
    int dims[CPD_MAX_MODES], mh, mw;
    modes_of(nd, dims, &mh, &mw);
    return nd->n_weight / (dims[0] >= dims[1] ? dims[0] : dims[1]);
}

/* Node nd's rank: the exact one, the one given with its name (rank > 0), --rank, or the ratio's
 * (at least 1, at most the exact rank). 0 if a given rank is above the exact rank. */
static int layer_rank(const model_node *nd, const factorize_config *c, int rank)
{
    const int64_t full = full_rank_of(nd);
    if (c->method == FACTORIZE_FULL) return (int)full;
    if (rank > 0 || c->rank > 0) {
        const int r = rank > 0 ? rank : c->rank;
        return r > full ? 0 : r;
    }
    int dims[CPD_MAX_MODES], mh, mw;
    const int n = modes_of(nd, dims, &mh, &mw);
    int64_t sum = 0;
    for (int k = 0; k < n; k++) sum += dims[k];
    const int64_t r = (int64_t)c->ratio_pm * nd->n_weight / (1000 * sum);
    return r < 1 ? 1 : r > full ? (int)full : (int)r;
}

static void fit_layer(const model_node *nd, const factorize_config *c, int R, cpd_factors *f, cpd_factors *grid,
                      factorize_layer *L)
{
    int dims[CPD_MAX_MODES], mh, mw;
    const int n = modes_of(nd, dims, &mh, &mw);
    int64_t sum = 0;
    for (int k = 0; k < n; k++) sum += dims[k];
    const int dense = dims[0] >= dims[1] ? 0 : 1;
    double *t = ccq_malloc(sizeof(double) * (size_t)nd->n_weight);
    for (int64_t e = 0; e < nd->n_weight; e++) t[e] = nd->weight[e];
    cpd_factors_init(f, n, dims, R);
    const int qmax = model_qmax(c->wbits);
    int qm[CPD_MAX_MODES];
    for (int k = 0; k < n; k++) qm[k] = qmax;
    snprintf(L->name, sizeof L->name, "%s", nd->name);
    L->rank = R;
    L->weights_before = nd->n_weight;
    L->weights_after = (int64_t)R * sum;
    if (c->method == FACTORIZE_FULL) {
        full_rank(t, f, dense);
        cpd_balance(f);
        L->err_float = cpd_rel_error(t, f);
    } else
        L->err_float = cpd_als(t, f, c->als_iters, 1e-9, c->ridge, c->seed);
    if (c->method == FACTORIZE_ADMM) {
        cpd_admm_info info = {.sweeps = c->admm_sweeps, .inner = c->admm_inner, .grid = CPD_GRID_LSQ};
        L->err_grid = cpd_admm(t, f, qm, &info);
        L->err_rtn = info.err_start;
    } else {
        /* the float factors stay (the float model); *grid gets them rounded to nearest */
        cpd_factors_copy(grid, f);
        for (int k = 0; k < n; k++) cpd_project(grid, k, qmax, CPD_GRID_MAXABS);
        L->err_grid = L->err_rtn = cpd_rel_error(t, grid);
    }
    ccq_free(t);
}

static model_node linear_node(const char *base, const char *suffix, model_shape shape, int n_in)
{
    model_node nd;
    memset(&nd, 0, sizeof nd);
    nd.op = MODEL_OP_LINEAR;
    snprintf(nd.name, sizeof nd.name, "%.110s/%s", base, suffix);
    nd.n_in = 1;
    nd.shape = shape;
    nd.n_weight = (int64_t)shape.c * n_in;
    nd.weight = ccq_calloc((size_t)nd.n_weight, sizeof(float));
    return nd;
}

/* The factor layers of node nd into chain[] (inputs not yet wired), each with the CP mode its
 * weights hold; returns how many. Conv: cp_in (mode 1), cp_h (the kh mode), cp_w (the kw mode),
 * cp_out (mode 0), each axis's stride, padding and dilation on the stage that convolves along it
 * (a 1-wide axis's on the other spatial stage, or on cp_in for a 1x1 layer); linear: cp_in, cp_out. */
static int plan_chain(const model *src, const model_node *nd, int R, model_node *chain, int *mode)
{
    int dims[CPD_MAX_MODES], mh, mw, ns = 0;
    modes_of(nd, dims, &mh, &mw);
    if (nd->op == MODEL_OP_LINEAR) {
        chain[ns] = linear_node(nd->name, "cp_in", (model_shape){1, R, 1, 1}, dims[1]);
        mode[ns++] = 1;
        chain[ns] = linear_node(nd->name, "cp_out", nd->shape, R);
        mode[ns++] = 0;
        return ns;
    }
    const model_shape ins = nd->in[0] < 0 ? src->input : src->nodes[nd->in[0]].shape;
    /* the stage (0 cp_in, 1 cp_h, 2 cp_w) that carries each axis's geometry */
    const int h_on = mh >= 0 ? 1 : mw >= 0 ? 2 : 0, w_on = mw >= 0 ? 2 : mh >= 0 ? 1 : 0;
    const int kh = nd->kernel[0], kw = nd->kernel[1];
    model_shape s = {3, R, ins.h, ins.w};
    for (int stage = 0; stage < 3; stage++) {
        if ((stage == 1 && mh < 0) || (stage == 2 && mw < 0)) continue;
        const int k0 = stage == 1 ? kh : 1, k1 = stage == 2 ? kw : 1;
        const int d0 = h_on == stage && stage == 1 ? nd->dilation[0] : 1;
        const int d1 = w_on == stage && stage == 2 ? nd->dilation[1] : 1;
        if (h_on == stage) s.h = model_window_out(s.h, k0, nd->stride[0], nd->pad[0], nd->pad[2], d0, 0);
        if (w_on == stage) s.w = model_window_out(s.w, k1, nd->stride[1], nd->pad[1], nd->pad[3], d1, 0);
        static const char *const names[3] = {"cp_in", "cp_h", "cp_w"};
        model_node c = conv_node(nd->name, names[stage], -1, s, stage ? 1 : dims[1], stage ? R : 1, k0, k1);
        if (h_on == stage) c.stride[0] = nd->stride[0], c.pad[0] = nd->pad[0], c.pad[2] = nd->pad[2];
        if (w_on == stage) c.stride[1] = nd->stride[1], c.pad[1] = nd->pad[1], c.pad[3] = nd->pad[3];
        c.dilation[0] = d0, c.dilation[1] = d1;
        mode[ns] = stage == 0 ? 1 : stage == 1 ? mh : mw;
        chain[ns++] = c;
    }
    chain[ns] = conv_node(nd->name, "cp_out", -1, nd->shape, R, 1, 1, 1);
    mode[ns++] = 0;
    return ns;
}

/* Appends node nd's factor chain to out[*n]: weights from f (the fit), levels and scales from g (f
 * itself on the grid, or f rounded); the layer's bias, ReLU and clip on the last factor. */
static void emit_chain(const model *src, const model_node *nd, int in_mapped, const cpd_factors *f,
                       const cpd_factors *g, model_node *out, int *n, factorize_layer *L)
{
    model_node chain[FACTORIZE_MAX_FACTORS];
    int mode[FACTORIZE_MAX_FACTORS];
    const int ns = plan_chain(src, nd, f->rank, chain, mode);
    model_node *last = &chain[ns - 1];
    if (nd->bias) {
        last->bias = ccq_malloc(sizeof(float) * (size_t)nd->shape.c);
        memcpy(last->bias, nd->bias, sizeof(float) * (size_t)nd->shape.c);
    }
    last->relu = nd->relu;
    last->has_clip = nd->has_clip;
    last->clip[0] = nd->clip[0], last->clip[1] = nd->clip[1];
    for (int j = 0; j < ns; j++) {
        chain[j].in[0] = j ? *n - 1 : in_mapped;
        factor_weights(f, mode[j], chain[j].weight);
        snprintf(L->fname[j], sizeof L->fname[j], "%s", chain[j].name);
        factor_levels(g, mode[j], &L->levels[j], &L->scale[j]);
        out[(*n)++] = chain[j];
    }
    L->n_factors = ns;
}

ccq_status factorize_model(const model *src, const factorize_config *c, model *dst, factorize_plan *plan,
                           ccq_err *err)
{
    memset(dst, 0, sizeof(*dst));
    memset(plan, 0, sizeof(*plan));
    if (src->quantized)
        return ccq_fail(err, CCQ_ERR_USAGE, "%s: a quantized model: factorize starts from a float model", src->path);
    if (c->method != FACTORIZE_FULL && c->rank < 1 && c->ratio_pm < 1)
        return ccq_fail(err, CCQ_ERR_USAGE, "factorize: a rank of at least 1 or a positive ratio is needed");
    int *pick = ccq_calloc((size_t)src->n_nodes, sizeof(int));
    ccq_status st = choose(src, c, pick, err);
    if (st) {
        ccq_free(pick);
        return st;
    }
    int n_pick = 0;
    for (int i = 0; i < src->n_nodes; i++) {
        n_pick += pick[i] != 0;
        if (pick[i] && !layer_rank(&src->nodes[i], c, pick[i])) {
            st = ccq_fail(err, CCQ_ERR_USAGE, "%s: layer '%s': rank %d is above its exact decomposition's rank %lld "
                          "(--rank full)", src->path, src->nodes[i].name, pick[i] > 0 ? pick[i] : c->rank,
                          (long long)full_rank_of(&src->nodes[i]));
            ccq_free(pick);
            return st;
        }
    }
    plan->layers = ccq_calloc((size_t)n_pick, sizeof(factorize_layer));
    model cp;
    model_copy(&cp, src);
    *dst = cp;
    dst->nodes = ccq_calloc((size_t)src->n_nodes + 3 * (size_t)n_pick, sizeof(model_node));
    dst->n_nodes = 0;
    int *map = ccq_malloc(sizeof(int) * (size_t)src->n_nodes);
    for (int i = 0; i < src->n_nodes; i++) {
        model_node nd = cp.nodes[i];
        for (int j = 0; j < nd.n_in; j++)
            if (nd.in[j] >= 0) nd.in[j] = map[nd.in[j]];
        if (!pick[i]) {
            dst->nodes[dst->n_nodes++] = nd;
            cp.nodes[i].weight = cp.nodes[i].bias = NULL; /* moved */
            cp.nodes[i].gamma = cp.nodes[i].beta = cp.nodes[i].mean = cp.nodes[i].var = NULL;
            cp.nodes[i].wscale = NULL, cp.nodes[i].levels = NULL, cp.nodes[i].codebook = NULL;
            cp.nodes[i].table = NULL;
        } else {
            factorize_layer *L = &plan->layers[plan->n_layers++];
            cpd_factors f, g = {0};
            fit_layer(&src->nodes[i], c, layer_rank(&src->nodes[i], c, pick[i]), &f, &g, L);
            emit_chain(src, &src->nodes[i], nd.in[0], &f, c->method == FACTORIZE_ADMM ? &f : &g, dst->nodes,
                       &dst->n_nodes, L);
            cpd_factors_free(&f);
            cpd_factors_free(&g);
        }
        map[i] = dst->n_nodes - 1;
    }
    dst->output = map[src->output];
    model_free(&cp);
    ccq_free(map);
    ccq_free(pick);
    /* factorize_apply finds the factor layers by name: a name cut to fit (NAME over 110 characters)
     * must not meet another node's */
    for (int l = 0; l < plan->n_layers; l++)
        for (int k = 0; k < plan->layers[l].n_factors; k++) {
            int same = 0;
            for (int i = 0; i < dst->n_nodes; i++) same += !strcmp(dst->nodes[i].name, plan->layers[l].fname[k]);
            if (same != 1) {
                st = ccq_fail(err, CCQ_ERR_LIMIT, "%s: factor layer name '%s' is not unique (layer names over 110 "
                              "characters are cut)", src->path, plan->layers[l].fname[k]);
                model_free(dst);
                factorize_plan_free(plan);
                return st;
            }
        }
    return CCQ_OK;
}

ccq_status factorize_apply(model *q, const factorize_plan *plan, int wbits, ccq_err *err)
{
    for (int l = 0; l < plan->n_layers; l++) {
        const factorize_layer *L = &plan->layers[l];
        for (int k = 0; k < L->n_factors; k++) {
            int at = -1;
            for (int i = 0; i < q->n_nodes; i++)
                if (!strcmp(q->nodes[i].name, L->fname[k])) at = i;
            CCQ_ASSERT(at >= 0 && q->nodes[at].levels && q->nodes[at].wscale);
            model_node *nd = &q->nodes[at];
            nd->bits = wbits;
            memcpy(nd->levels, L->levels[k], (size_t)nd->n_weight);
            memcpy(nd->wscale, L->scale[k], sizeof(float) * (size_t)nd->shape.c);
            const int s = nd->in[0];
            const double s_in = s < 0 ? q->in_scale : q->nodes[s].act_scale;
            const int64_t per = nd->n_weight / nd->shape.c;
            for (int o = 0; o < nd->shape.c; o++) {
                const double b = nd->bias ? fabs(nd->bias[o]) / (s_in * nd->wscale[o]) : 0.0;
                if (!quant_acc_fits(b, per, model_node_wmax(nd)))
                    return ccq_fail(err, CCQ_ERR_LIMIT,
                                    "%s: node %s: output channel %d could overflow int32 accumulators", q->path,
                                    nd->name, o);
            }
        }
    }
    return CCQ_OK;
}
