/*
 * gptq.c: GPTQ levels for a quantized model and the search's start (see
 * gptq.h). The arithmetic follows scripts/gptq.py step for step (its test
 * oracle): the same dead-column rule, column order, damping, Cholesky
 * factors, block updates, rounding and scale grid, in double; what differs
 * is the summation order inside BLAS and the float32 forward pass (fnet's)
 * that feeds the Hessians, so a few levels near a rounding boundary may
 * differ (tests/test_gptq_oracle.py measures how many).
 *
 * The forward pass that feeds the Hessians runs once over the model: for
 * every calibration image the tensors crossing the cut before the layer last
 * solved (the frontier) are kept, and the next layer's inputs take only the
 * nodes in between, with that layer's new weights (node_forward: fnet's
 * per-node step through the op table, checked against fnet_forward bit for
 * bit on each layer's first image; a forward from a cut in fnet should
 * replace it). Without room for the frontier (CCQ_GPTQ_CACHE_MB, default
 * 2 GiB) each layer reruns its prefix through fnet_forward on the model cut
 * before it: slower, the same values. The images are cut into chunks fixed
 * by the layer alone and the chunks spread over worker threads
 * (CCQ_GPTQ_THREADS, default the online CPUs); each chunk's X^T X is one
 * dsyrk and the partial sums are added in chunk order, so the Hessians, and
 * everything after, are the same for any thread count.
 *
 * Grouped convolution (depthwise included): each group is its own GPTQ
 * problem, its output channels' rows against the Hessian of its own input
 * channels (gptq.py does the same).
 *
 * Not here: the command line (cmd_eval.c), MPI (cc.c computes the start on
 * rank 0 and broadcasts it).
 */
#include "ccq/gptq.h"

#include <cblas.h>
#include <lapacke.h>
#include <math.h>
#include <pthread.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "ccq/fnet.h"
#include "ccq/lq.h"
#include "ccq/op.h"
#include "ccq/prune.h"
#include "ccq/qnet.h"

/* Columns of the Hessian's row buffer per dsyrk call: the images of one chunk. */
enum { HESS_COLS = 8192 };

void gptq_config_default(gptq_config *c)
{
    c->calib_images = 1024;
    c->act_order = 1;
    c->damp = 0.01;
    c->block = 128;
    c->scale_search = 0;
    c->float_inputs = 0;
    c->sparsity_pm = 0;
    c->prune_bits = 0;
    c->threads = 0;
}

double gptq_factor(int i)
{
    CCQ_ASSERT(i >= 0 && i < GPTQ_N_FACTORS);
    return (double)(25 + 5 * i) / 100.0;
}

/* OpenBLAS with one thread inside GPTQ: the sums BLAS forms then do not
 * depend on the core count (gptq.h). Returns the count to restore. */
static int blas_single_enter(void)
{
    const int t = openblas_get_num_threads();
    openblas_set_num_threads(1);
    return t;
}

static void blas_single_leave(int t) { openblas_set_num_threads(t); }

/* Threads of the Hessians' forward passes: c->threads, else CCQ_GPTQ_THREADS,
 * else the online CPUs (at most 64). The results do not depend on it. */
static int gptq_threads(const gptq_config *c)
{
    long t = c->threads;
    if (t <= 0) {
        const char *e = getenv("CCQ_GPTQ_THREADS");
        t = e && *e ? strtol(e, NULL, 10) : sysconf(_SC_NPROCESSORS_ONLN);
    }
    return t < 1 ? 1 : t > 64 ? 64 : (int)t;
}

/* ---- one GPTQ problem ------------------------------------------------------ */

/* What gptq() derives from H alone, shared by every scale of the search. */
typedef struct {
    int K;
    int *perm;     /* [K] column order: perm[j] = original column of position j */
    uint8_t *dead; /* [K] original order: H's diagonal was 0 (the input is always 0) */
    double *U;     /* [K][K] upper Cholesky factor of the damped inverse Hessian, permuted order */
} prep;

static void prep_free(prep *p)
{
    ccq_free(p->perm), ccq_free(p->dead), ccq_free(p->U);
    memset(p, 0, sizeof *p);
}

/* Sorts idx[0..n) by decreasing key, ties by index (a stable merge sort:
 * torch's argsort is not stable, but tied columns are interchangeable up to
 * rounding). tmp holds n ints. */
static void sort_desc(int *idx, int *tmp, int n, const double *key)
{
    if (n < 2) return;
    const int h = n / 2;
    sort_desc(idx, tmp, h, key);
    sort_desc(idx + h, tmp, n - h, key);
    int i = 0, j = h, k = 0;
    while (i < h && j < n) tmp[k++] = key[idx[j]] > key[idx[i]] ? idx[j++] : idx[i++];
    while (i < h) tmp[k++] = idx[i++];
    while (j < n) tmp[k++] = idx[j++];
    memcpy(idx, tmp, sizeof(int) * (size_t)n);
}

static ccq_status prep_init(prep *p, const double *H, int K, const gptq_config *c, ccq_err *err)
{
    memset(p, 0, sizeof *p);
    p->K = K;
    p->perm = ccq_malloc(sizeof(int) * (size_t)K);
    p->dead = ccq_malloc((size_t)K);
    p->U = ccq_malloc(sizeof(double) * (size_t)K * (size_t)K);
    double *diag = ccq_malloc(sizeof(double) * (size_t)K);
    for (int k = 0; k < K; k++) {
        p->dead[k] = H[(size_t)k * K + k] == 0.0;
        diag[k] = p->dead[k] ? 1.0 : H[(size_t)k * K + k];
        p->perm[k] = k;
    }
    if (c->act_order) {
        int *tmp = ccq_malloc(sizeof(int) * (size_t)K);
        sort_desc(p->perm, tmp, K, diag);
        ccq_free(tmp);
    }
    double mean = 0;
    for (int k = 0; k < K; k++) mean += diag[k];
    mean /= K;
    double *A = p->U;
    for (int i = 0; i < K; i++) {
        const int pi = p->perm[i];
        for (int j = 0; j < K; j++) {
            const int pj = p->perm[j];
            A[(size_t)i * K + j] = pi == pj ? diag[pi] : H[(size_t)pi * K + pj];
        }
        A[(size_t)i * K + i] += c->damp * mean;
    }
    ccq_free(diag);
    /* U with U^T U = H^-1: cholesky(cholesky_inverse(cholesky(H)), upper) as in gptq.py */
    lapack_int info = LAPACKE_dpotrf(LAPACK_ROW_MAJOR, 'L', K, A, K);
    if (info == 0) info = LAPACKE_dpotri(LAPACK_ROW_MAJOR, 'L', K, A, K);
    if (info == 0) {
        for (int i = 0; i < K; i++)
            for (int j = i + 1; j < K; j++) A[(size_t)i * K + j] = A[(size_t)j * K + i];
        info = LAPACKE_dpotrf(LAPACK_ROW_MAJOR, 'U', K, A, K);
    }
    if (info != 0) {
        prep_free(p);
        return ccq_fail(err, CCQ_ERR_LIMIT, "the damped Hessian is not positive definite (LAPACK info %d)", (int)info);
    }
    for (int i = 1; i < K; i++)
        for (int j = 0; j < i; j++) A[(size_t)i * K + j] = 0.0;
    return CCQ_OK;
}

static double round_away(double v)
{
    const double a = floor(fabs(v) + 0.5);
    return v < 0 ? -a : a;
}

/* Scratch of solve(): Wt [K][rows] (the weights being updated, permuted,
 * one column per row so a column is contiguous) and E [block][rows]. */
typedef struct {
    double *Wt, *E;
} solve_buf;

/* The levels the rows of one problem may take: the uniform grid [-wmax, wmax]
 * (cb NULL), or row r's learned codebook cb + r * ncodes, whose nearest value
 * (lq_nearest) replaces round-to-nearest; wmax is then the node's largest
 * |codebook value|, model_node_wmax (the accumulator bound). */
typedef struct {
    const int8_t *cb;
    int ncodes;
    int wmax;
    const uint8_t *mask; /* [rows][K], original column order: 1 = pruned, level 0 (NULL: none) */
} level_set;

/* gptq.py's gptq() for the per-row scales s: levels into q [rows][K], original column order. */
static void solve(const prep *p, const double *W, int rows, const double *s, const level_set *ls, int block,
                  solve_buf *b, int8_t *q)
{
    const int K = p->K;
    const double *U = p->U;
    double *Wt = b->Wt, *E = b->E;
    for (int j = 0; j < K; j++) {
        const int pj = p->perm[j];
        for (int r = 0; r < rows; r++) Wt[(size_t)j * rows + r] = p->dead[pj] ? 0.0 : W[(size_t)r * K + pj];
    }
    for (int i1 = 0; i1 < K; i1 += block) {
        const int i2 = i1 + block < K ? i1 + block : K;
        for (int j = i1; j < i2; j++) {
            const double *w = Wt + (size_t)j * rows;
            const double d = U[(size_t)j * K + j];
            double *e = E + (size_t)(j - i1) * rows;
            const int pj = p->perm[j];
            for (int r = 0; r < rows; r++) {
                double v;
                if (ls->mask && ls->mask[(size_t)r * K + pj]) {
                    v = 0.0;
                } else if (ls->cb) {
                    const int8_t *cb = ls->cb + (size_t)r * ls->ncodes;
                    v = cb[lq_nearest(cb, ls->ncodes, w[r] / s[r])];
                } else {
                    v = round_away(w[r] / s[r]);
                    if (v > ls->wmax) v = ls->wmax;
                    if (v < -ls->wmax) v = -ls->wmax;
                }
                q[(size_t)r * K + pj] = (int8_t)v;
                e[r] = (w[r] - v * s[r]) / d;
            }
            for (int jj = j; jj < i2; jj++) {
                const double h = U[(size_t)j * K + jj];
                double *wj = Wt + (size_t)jj * rows;
                for (int r = 0; r < rows; r++) wj[r] -= e[r] * h;
            }
        }
        /* W[:, i2:] -= E @ Hinv[i1:i2, i2:], transposed */
        if (i2 < K)
            cblas_dgemm(CblasRowMajor, CblasTrans, CblasNoTrans, K - i2, rows, i2 - i1, -1.0, U + (size_t)i1 * K + i2, K,
                        E, rows, 1.0, Wt + (size_t)i2 * rows, rows);
    }
}

static void solve_buf_init(solve_buf *b, int rows, int K, int block)
{
    b->Wt = ccq_malloc(sizeof(double) * (size_t)K * (size_t)rows);
    b->E = ccq_malloc(sizeof(double) * (size_t)(block < K ? block : K) * (size_t)rows);
}

static void solve_buf_free(solve_buf *b) { ccq_free(b->Wt), ccq_free(b->E); }

void gptq_row_error(const double *W, const double *H, int rows, int K, const double *s, const int8_t *q, double *e)
{
    double *D = ccq_malloc(sizeof(double) * (size_t)rows * (size_t)K);
    double *DH = ccq_malloc(sizeof(double) * (size_t)rows * (size_t)K);
    for (int r = 0; r < rows; r++)
        for (int k = 0; k < K; k++) D[(size_t)r * K + k] = W[(size_t)r * K + k] - (double)q[(size_t)r * K + k] * s[r];
    const int t = blas_single_enter();
    cblas_dgemm(CblasRowMajor, CblasNoTrans, CblasNoTrans, rows, K, K, 1.0, D, K, H, K, 0.0, DH, K);
    blas_single_leave(t);
    for (int r = 0; r < rows; r++) {
        double acc = 0;
        for (int k = 0; k < K; k++) acc += DH[(size_t)r * K + k] * D[(size_t)r * K + k];
        e[r] = acc;
    }
    ccq_free(D), ccq_free(DH);
}

static ccq_status layer_levels(const double *W, const double *H, int rows, int K, const double *s,
                               const level_set *ls, const gptq_config *c, int8_t *q, ccq_err *err)
{
    prep p;
    const int t = blas_single_enter();
    ccq_status st = prep_init(&p, H, K, c, err);
    if (!st) {
        solve_buf b;
        solve_buf_init(&b, rows, K, c->block);
        solve(&p, W, rows, s, ls, c->block, &b, q);
        solve_buf_free(&b);
        prep_free(&p);
    }
    blas_single_leave(t);
    return st;
}

ccq_status gptq_layer(const double *W, const double *H, int rows, int K, const double *s, int qmax,
                      const gptq_config *c, int8_t *q, ccq_err *err)
{
    const level_set ls = {NULL, 0, qmax, NULL};
    return layer_levels(W, H, rows, K, s, &ls, c, q, err);
}

ccq_status gptq_layer_codebook(const double *W, const double *H, int rows, int K, const double *s,
                               const int8_t *cb, int ncodes, const gptq_config *c, int8_t *q, ccq_err *err)
{
    const level_set ls = {cb, ncodes, 0, NULL}; /* wmax: only the scale search reads it */
    return layer_levels(W, H, rows, K, s, &ls, c, q, err);
}

/* The scale search (gptq.py's gptq_scales): GPTQ at every fraction of s0; per
 * row the levels and scale with the smallest layer-output error, the first
 * (smallest fraction) on ties. A fraction at which the row's int32
 * accumulators could overflow (bias_lv[r] / f levels of bias, quant_acc_fits
 * with ls->wmax) is not a candidate; gptq.py has no such rule, and the
 * model's own scale (f = 1) always fits. With a codebook the fraction scales
 * the row's real levels (codebook x scale), the codebook itself fixed. s
 * receives the chosen scales. */
static void solve_scales(const prep *p, const double *W, const double *H, int rows, const double *s0,
                         const level_set *ls, int block, const double *bias_lv, solve_buf *b, int8_t *q, double *s)
{
    const int K = p->K;
    int8_t *qf = ccq_malloc((size_t)rows * (size_t)K);
    double *sf = ccq_malloc(sizeof(double) * (size_t)rows), *ef = ccq_malloc(sizeof(double) * (size_t)rows);
    double *best = ccq_malloc(sizeof(double) * (size_t)rows);
    for (int r = 0; r < rows; r++) best[r] = INFINITY, s[r] = s0[r];
    for (int i = 0; i < GPTQ_N_FACTORS; i++) {
        const double f = gptq_factor(i);
        for (int r = 0; r < rows; r++) sf[r] = s0[r] * f;
        solve(p, W, rows, sf, ls, block, b, qf);
        gptq_row_error(W, H, rows, K, sf, qf, ef);
        for (int r = 0; r < rows; r++) {
            if (f < 1.0 && bias_lv && !quant_acc_fits(bias_lv[r] / f, K, ls->wmax)) continue;
            if (!(ef[r] < best[r]) && best[r] != INFINITY) continue;
            best[r] = ef[r];
            s[r] = sf[r];
            memcpy(q + (size_t)r * K, qf + (size_t)r * K, (size_t)K);
        }
    }
    ccq_free(qf), ccq_free(sf), ccq_free(ef), ccq_free(best);
}

/* ---- Hessians ------------------------------------------------------------------ */

static int is_layer(model_op op) { return op == MODEL_OP_CONV2D || op == MODEL_OP_LINEAR; }

/* Groups of a conv2d/linear node: each is its own GPTQ problem, the rows
 * of its output channels against the Hessian of its input channels. */
static int group_count(const model_node *nd) { return nd->op == MODEL_OP_CONV2D && nd->groups > 1 ? nd->groups : 1; }

/* Writes the GEMM rows of one image's input x of conv/linear node nd for input
 * channels [c0, c0 + cig) into A (row k = (ci, ky, kx) as in the weight, one
 * column per output pixel, from column col; row stride lda), as gptq.py's rows(). */
static void image_rows(const model_node *nd, model_shape in, int c0, int cig, const float *x, double *A, int64_t lda,
                       int64_t col)
{
    if (nd->op == MODEL_OP_LINEAR) {
        for (int k = 0; k < cig; k++) A[(int64_t)k * lda + col] = x[c0 + k];
        return;
    }
    const int kh = nd->kernel[0], kw = nd->kernel[1], oh = nd->shape.h, ow = nd->shape.w;
    const int sh = nd->stride[0], sw = nd->stride[1], dh = nd->dilation[0], dw = nd->dilation[1];
    const int pt = nd->pad[0], pl = nd->pad[1];
    for (int ci = 0; ci < cig; ci++) {
        const float *xc = x + (int64_t)(c0 + ci) * in.h * in.w;
        for (int ky = 0; ky < kh; ky++)
            for (int kx = 0; kx < kw; kx++) {
                double *row = A + (((int64_t)ci * kh + ky) * kw + kx) * lda + col;
                /* output columns whose tap is inside the image: ix = ox sw - pl + kx dw in [0, in.w) */
                const int ix0 = kx * dw - pl;
                int lo = ix0 >= 0 ? 0 : (-ix0 + sw - 1) / sw;
                int hi = ix0 >= in.w ? 0 : (in.w - 1 - ix0) / sw + 1;
                if (hi > ow) hi = ow;
                if (lo > hi) lo = hi;
                for (int oy = 0; oy < oh; oy++) {
                    const int iy = oy * sh - pt + ky * dh;
                    double *r = row + (int64_t)oy * ow;
                    if (iy < 0 || iy >= in.h) {
                        for (int ox = 0; ox < ow; ox++) r[ox] = 0.0;
                        continue;
                    }
                    const float *xr = xc + (int64_t)iy * in.w + ix0;
                    for (int ox = 0; ox < lo; ox++) r[ox] = 0.0;
                    for (int ox = lo; ox < hi; ox++) r[ox] = xr[(int64_t)ox * sw];
                    for (int ox = hi; ox < ow; ox++) r[ox] = 0.0;
                }
            }
    }
}

/* ---- the forward pass feeding the Hessians ----------------------------------------- */

/* Tensors crossing the cut before node c: those made before c (j = -1: the
 * network input) that some node >= c reads. They are all a forward pass from
 * c on needs; the input of node c is one of them. */
typedef struct {
    int n, *t;         /* tensor indices, increasing */
    int64_t *off;      /* [n + 1] float offsets within one image's record */
} cut_set;

static void cut_set_init(cut_set *cs, const model *m, int c)
{
    uint8_t *cross = ccq_calloc((size_t)m->n_nodes + 1, 1);
    for (int k = c; k < m->n_nodes; k++)
        for (int j = 0; j < m->nodes[k].n_in; j++)
            if (m->nodes[k].in[j] < c) cross[m->nodes[k].in[j] + 1] = 1;
    cs->n = 0;
    cs->t = ccq_malloc(sizeof(int) * ((size_t)m->n_nodes + 1));
    cs->off = ccq_malloc(sizeof(int64_t) * ((size_t)m->n_nodes + 2));
    cs->off[0] = 0;
    for (int j = -1; j < c && j < m->n_nodes; j++)
        if (cross[j + 1]) {
            cs->t[cs->n] = j;
            cs->off[cs->n + 1] = cs->off[cs->n] + model_numel(j < 0 ? m->input : m->nodes[j].shape);
            cs->n++;
        }
    ccq_free(cross);
}

static void cut_set_free(cut_set *cs) { ccq_free(cs->t), ccq_free(cs->off); }

static float *tensor_of(fnet *net, int j) { return j < 0 ? net->input : net->out[j]; }

/* Node i of m on one image, in net's buffers: what fnet_forward does for that
 * node (the op's float forward, then a fused ReLU and Clip), so that a pass
 * can start at a cut. This loop body must stay fnet_forward's: every layer
 * checks its first image against fnet_forward bit for bit (hess_chunk). It
 * belongs in fnet (a forward from a cut) and should move there. */
static void node_forward(const model *m, fnet *net, int i)
{
    const model_node *nd = &m->nodes[i];
    const float *x[MODEL_MAX_IN];
    for (int j = 0; j < nd->n_in; j++) x[j] = tensor_of(net, nd->in[j]);
    float *y = net->out[i];
    op_get(nd->op)->ffwd(m, i, x, y, net->col);
    if (nd->relu) fnet_relu(y, y, model_numel(nd->shape));
    if (nd->has_clip && nd->op != MODEL_OP_CLIP) op_clip_float(y, model_numel(nd->shape), nd->clip[0], nd->clip[1]);
}

/* The forward state kept between layers: for every calibration image, the
 * tensors crossing the cut before the layer last solved (the frontier), so
 * that the next layer's inputs take only the nodes in between (one forward
 * pass over the whole model instead of a prefix per layer). Without room for
 * it (frontier_bytes), each layer reruns its prefix through fnet_forward;
 * the values are the same either way. */
typedef struct {
    int on;            /* frontier kept */
    int cut;           /* it holds cut_set(cut) for every image (cut 0: nothing, the images are the input) */
    cut_set cs;
    float *slab[2];    /* [0]: the frontier at `cut`, [1]: the next one being written */
    int64_t cap;       /* floats per image either slab holds */
} fwd_state;

/* Room for the frontier: CCQ_GPTQ_CACHE_MB (0 forces the prefix passes), default 2048 MiB for both slabs. */
static void fwd_init(fwd_state *f, const model *m, int n)
{
    memset(f, 0, sizeof *f);
    int64_t worst = 0;
    for (int c = 0; c < m->n_nodes; c++) {
        cut_set cs;
        cut_set_init(&cs, m, c);
        if (cs.off[cs.n] > worst) worst = cs.off[cs.n];
        cut_set_free(&cs);
    }
    const char *e = getenv("CCQ_GPTQ_CACHE_MB");
    const double mb = e && *e ? strtod(e, NULL) : 2048.0;
    f->on = 2.0 * (double)worst * n * sizeof(float) <= mb * 1048576.0;
    if (!f->on) return;
    f->cap = worst;
    f->slab[0] = ccq_malloc(sizeof(float) * (size_t)(worst * n + 1));
    f->slab[1] = ccq_malloc(sizeof(float) * (size_t)(worst * n + 1));
    cut_set_init(&f->cs, m, 0);
}

static void fwd_free(fwd_state *f)
{
    if (!f->on) return;
    ccq_free(f->slab[0]), ccq_free(f->slab[1]);
    cut_set_free(&f->cs);
}

/* The Hessians of one layer, computed by worker threads over chunks of
 * images. The chunks are fixed by the layer alone (HESS_COLS columns), each
 * chunk's X^T X is its own dsyrk (beta 0) and the partial sums are added to H
 * in chunk order, so H is the same for any number of threads. */
typedef struct {
    const model *m;            /* the whole model (frontier passes) */
    const model *cut;          /* the model up to node L's input (prefix passes) */
    int L;
    const model_node *nd;      /* node L */
    model_shape in;
    int groups, cig, K, per_chunk, n_chunks, n;
    int64_t P, lda;
    const data_split *calib;
    const fwd_state *f;        /* on: advance its frontier from f->cut to L */
    const cut_set *next;       /* the tensors crossing the cut before L */
    const float *ref;          /* node L's input on image 0 by fnet_forward (frontier passes' check) */
    /* asymmetric targets (gptq_config.asym): the original model's own inputs to node L, a second
     * stream beside the first (NULL: none) */
    const model *m2, *cut2;
    const fwd_state *f2;
    const cut_set *next2;
} hess_job;

typedef struct {
    const hess_job *job;
    int chunk;                 /* the chunk to compute in this round, -1 for none */
    fnet net, net2;
    double **A, **part;        /* [groups]: rows [K][lda], partial sum [K][K] (upper triangle) */
    double **B, **cross, **sa, **sb; /* asym [groups]: the second stream's rows, A B^T [K][K], row sums of A, B */
    pthread_t tid;
    int started;               /* tid is a running thread to join */
} hess_worker;

/* Node L's input for image i in net (a net of m, or of the model cut before L without a frontier):
 * from the frontier f (loading it, running the nodes since, storing the new one) or by a prefix
 * pass. */
static const float *stream_input(const hess_job *j, const model *m, const fwd_state *f, const cut_set *next, fnet *net,
                                 int i)
{
    const int64_t per = (int64_t)j->calib->c * j->calib->h * j->calib->w;
    if (!f->on) {
        fnet_forward(net, j->calib->images + per * i);
        return tensor_of(net, j->nd->in[0]);
    }
    if (f->cut == 0) {
        fnet_normalise(m, j->calib->images + per * i, net->input);
    } else {
        const float *rec = f->slab[0] + f->cap * i;
        for (int k = 0; k < f->cs.n; k++)
            memcpy(tensor_of(net, f->cs.t[k]), rec + f->cs.off[k], sizeof(float) * (size_t)(f->cs.off[k + 1] - f->cs.off[k]));
    }
    for (int k = f->cut; k < j->L; k++) node_forward(m, net, k);
    float *rec = f->slab[1] + f->cap * i;
    for (int k = 0; k < next->n; k++)
        memcpy(rec + next->off[k], tensor_of(net, next->t[k]), sizeof(float) * (size_t)(next->off[k + 1] - next->off[k]));
    return tensor_of(net, j->nd->in[0]);
}

static void *hess_chunk(void *arg)
{
    hess_worker *w = arg;
    const hess_job *j = w->job;
    if (w->chunk < 0) return NULL;
    const int i0 = w->chunk * j->per_chunk, nb = j->n - i0 < j->per_chunk ? j->n - i0 : j->per_chunk;
    for (int b = 0; b < nb; b++) {
        const float *x = stream_input(j, j->m, j->f, j->next, &w->net, i0 + b);
        if (i0 + b == 0 && j->ref)
            CCQ_ASSERT(memcmp(x, j->ref, sizeof(float) * (size_t)model_numel(j->in)) == 0); /* node_forward = fnet's */
        for (int g = 0; g < j->groups; g++) image_rows(j->nd, j->in, g * j->cig, j->cig, x, w->A[g], j->lda, b * j->P);
        if (j->m2) {
            const float *x2 = stream_input(j, j->m2, j->f2, j->next2, &w->net2, i0 + b);
            for (int g = 0; g < j->groups; g++)
                image_rows(j->nd, j->in, g * j->cig, j->cig, x2, w->B[g], j->lda, b * j->P);
        }
    }
    const int cols = (int)(j->P * nb);
    for (int g = 0; g < j->groups; g++) {
        cblas_dsyrk(CblasRowMajor, CblasUpper, CblasNoTrans, j->K, cols, 1.0, w->A[g], (int)j->lda, 0.0, w->part[g],
                    j->K);
        if (!j->m2) continue;
        cblas_dgemm(CblasRowMajor, CblasNoTrans, CblasTrans, j->K, j->K, cols, 1.0, w->A[g], (int)j->lda, w->B[g],
                    (int)j->lda, 0.0, w->cross[g], j->K);
        for (int k = 0; k < j->K; k++) {
            double a = 0, b = 0;
            const double *ra = w->A[g] + (int64_t)k * j->lda, *rb = w->B[g] + (int64_t)k * j->lda;
            for (int c = 0; c < cols; c++) a += ra[c], b += rb[c];
            w->sa[g][k] = a, w->sb[g][k] = b;
        }
    }
    return NULL;
}

/* The second stream's sums (asymmetric targets): with Y_g the original model's rows (its own
 * inputs to node L), Cx[g] = X_g^T Y_g [K][K] (X's index first), Sa[g] and Sb[g] [K] the sums of
 * X_g's and Y_g's rows over every column. */
typedef struct {
    const model *m2;
    fwd_state *f2;
    double **Cx, **Sa, **Sb;
} hess_asym;

/* H[g] = X_g^T X_g [K][K] for each group g of layer node L of wm, over images
 * [0, n) of calib, X from the float forward pass of wm as it is (its nodes
 * before L), on `threads` threads; the frontier f (if on) moves to L; with
 * as (not NULL) also its sums, from as->m2's frontier (which moves too). */
static void layer_hessians(const model *wm, int L, const data_split *calib, int n, int groups, int threads,
                           fwd_state *f, double **H, const hess_asym *as)
{
    hess_job j;
    memset(&j, 0, sizeof j);
    const model_node *nd = &wm->nodes[L];
    j.m = wm;
    j.L = L;
    j.nd = nd;
    j.in = model_in_shape(wm, L, 0);
    j.groups = groups;
    j.cig = (nd->op == MODEL_OP_CONV2D ? j.in.c : (int)model_numel(j.in)) / groups;
    j.K = (int)(nd->n_weight / nd->shape.c);
    j.P = nd->op == MODEL_OP_CONV2D ? (int64_t)nd->shape.h * nd->shape.w : 1;
    j.per_chunk = j.P >= HESS_COLS ? 1 : (int)(HESS_COLS / j.P);
    j.lda = j.P * j.per_chunk;
    j.n = n;
    j.n_chunks = (n + j.per_chunk - 1) / j.per_chunk;
    j.calib = calib;
    j.f = f;
    /* the model cut before node L (node 0 itself when L = 0: its input is the image) */
    model cut = *wm;
    cut.n_nodes = L > 0 ? L : 1;
    cut.output = cut.n_nodes - 1;
    j.cut = &cut;
    model cut2;
    cut_set next, next2;
    if (as) {
        cut2 = *as->m2;
        cut2.n_nodes = cut.n_nodes;
        cut2.output = cut.output;
        j.m2 = as->m2;
        j.cut2 = &cut2;
        j.f2 = as->f2;
        if (as->f2->on) {
            cut_set_init(&next2, as->m2, L);
            j.next2 = &next2;
        }
    }
    float *ref = NULL;
    if (f->on) {
        cut_set_init(&next, wm, L);
        j.next = &next;
        fnet chk;
        fnet_init(&chk, &cut);
        fnet_forward(&chk, calib->images);
        const int64_t nx = model_numel(j.in);
        ref = ccq_malloc(sizeof(float) * (size_t)nx);
        memcpy(ref, tensor_of(&chk, nd->in[0]), sizeof(float) * (size_t)nx);
        fnet_free(&chk);
        j.ref = ref;
    }
    const int K = j.K, T = threads < j.n_chunks ? threads : j.n_chunks;
    hess_worker *w = ccq_calloc((size_t)T, sizeof *w);
    for (int t = 0; t < T; t++) {
        w[t].job = &j;
        fnet_init(&w[t].net, f->on ? wm : &cut);
        w[t].A = ccq_malloc(sizeof(double *) * (size_t)groups);
        w[t].part = ccq_malloc(sizeof(double *) * (size_t)groups);
        for (int g = 0; g < groups; g++) {
            w[t].A[g] = ccq_malloc(sizeof(double) * (size_t)K * (size_t)j.lda);
            w[t].part[g] = ccq_malloc(sizeof(double) * (size_t)K * (size_t)K);
        }
        if (as) {
            fnet_init(&w[t].net2, as->f2->on ? as->m2 : &cut2);
            w[t].B = ccq_malloc(sizeof(double *) * (size_t)groups);
            w[t].cross = ccq_malloc(sizeof(double *) * (size_t)groups);
            w[t].sa = ccq_malloc(sizeof(double *) * (size_t)groups);
            w[t].sb = ccq_malloc(sizeof(double *) * (size_t)groups);
            for (int g = 0; g < groups; g++) {
                w[t].B[g] = ccq_malloc(sizeof(double) * (size_t)K * (size_t)j.lda);
                w[t].cross[g] = ccq_malloc(sizeof(double) * (size_t)K * (size_t)K);
                w[t].sa[g] = ccq_malloc(sizeof(double) * (size_t)K);
                w[t].sb[g] = ccq_malloc(sizeof(double) * (size_t)K);
            }
        }
    }
    for (int g = 0; g < groups; g++) memset(H[g], 0, sizeof(double) * (size_t)K * (size_t)K);
    if (as)
        for (int g = 0; g < groups; g++) {
            memset(as->Cx[g], 0, sizeof(double) * (size_t)K * (size_t)K);
            memset(as->Sa[g], 0, sizeof(double) * (size_t)K);
            memset(as->Sb[g], 0, sizeof(double) * (size_t)K);
        }
    for (int c0 = 0; c0 < j.n_chunks; c0 += T) {
        for (int t = 0; t < T; t++) w[t].chunk = c0 + t < j.n_chunks ? c0 + t : -1;
        /* worker 0 runs on this thread; a thread that cannot start leaves its chunk to this one */
        for (int t = 1; t < T; t++) {
            w[t].started = pthread_create(&w[t].tid, NULL, hess_chunk, &w[t]) == 0;
            if (!w[t].started) hess_chunk(&w[t]);
        }
        hess_chunk(&w[0]);
        for (int t = 1; t < T; t++)
            if (w[t].started) pthread_join(w[t].tid, NULL), w[t].started = 0;
        for (int t = 0; t < T && w[t].chunk >= 0; t++)
            for (int g = 0; g < groups; g++) {
                for (int r = 0; r < K; r++)
                    for (int c = r; c < K; c++) H[g][(size_t)r * K + c] += w[t].part[g][(size_t)r * K + c];
                if (!as) continue;
                for (int e = 0; e < K * K; e++) as->Cx[g][e] += w[t].cross[g][e];
                for (int k = 0; k < K; k++) as->Sa[g][k] += w[t].sa[g][k], as->Sb[g][k] += w[t].sb[g][k];
            }
    }
    for (int t = 0; t < T; t++) {
        fnet_free(&w[t].net);
        for (int g = 0; g < groups; g++) ccq_free(w[t].A[g]), ccq_free(w[t].part[g]);
        ccq_free(w[t].A), ccq_free(w[t].part);
        if (!as) continue;
        fnet_free(&w[t].net2);
        for (int g = 0; g < groups; g++) ccq_free(w[t].B[g]), ccq_free(w[t].cross[g]), ccq_free(w[t].sa[g]), ccq_free(w[t].sb[g]);
        ccq_free(w[t].B), ccq_free(w[t].cross), ccq_free(w[t].sa), ccq_free(w[t].sb);
    }
    ccq_free(w);
    ccq_free(ref);
    if (f->on) { /* the new frontier becomes the current one */
        float *tmp = f->slab[0];
        f->slab[0] = f->slab[1], f->slab[1] = tmp;
        cut_set_free(&f->cs);
        f->cs = next;
        f->cut = L;
    }
    if (as && as->f2->on) {
        fwd_state *f2 = as->f2;
        float *tmp = f2->slab[0];
        f2->slab[0] = f2->slab[1], f2->slab[1] = tmp;
        cut_set_free(&f2->cs);
        f2->cs = next2;
        f2->cut = L;
    }
    for (int g = 0; g < groups; g++)
        for (int r = 0; r < K; r++)
            for (int c = 0; c < r; c++) H[g][(size_t)r * K + c] = H[g][(size_t)c * K + r];
}

/* ---- the whole model ---------------------------------------------------------------- */

/* Asymmetric targets (gptq_config.asym), one group: from the sums of the
 * quantized model's input rows X (H = X^T X, Sa) and of the original model's
 * Y (Cx = X^T Y, Sb) over `cols` columns, W [rows][K] (the float weights)
 * becomes the least-squares weights of the targets W y + b given the inputs
 * x, the bias free: W' = W Cc^T (Hc + lam I)^-1 with Hc and Cc the centred H
 * and Cx, lam = GPTQ_ASYM_RIDGE x the mean of H's diagonal; H becomes Hc (the
 * Hessian of that problem once the bias is solved last). CCQ_ERR_LIMIT if
 * Hc + lam I is not positive definite. */
static ccq_status asym_target(double *W, double *H, const double *Cx, const double *Sa, const double *Sb, double cols,
                              int rows, int K, ccq_err *err)
{
    double tr = 0;
    for (int k = 0; k < K; k++) tr += H[(size_t)k * K + k];
    const double lam = GPTQ_ASYM_RIDGE * (tr > 0 ? tr / K : 1.0);
    double *A = ccq_malloc(sizeof(double) * (size_t)K * (size_t)K);
    double *X = ccq_malloc(sizeof(double) * (size_t)K * (size_t)rows);
    for (int j = 0; j < K; j++)
        for (int k = 0; k < K; k++) {
            H[(size_t)j * K + k] -= Sa[j] * Sa[k] / cols;
            A[(size_t)j * K + k] = H[(size_t)j * K + k] + (j == k ? lam : 0.0);
        }
    /* X = Cc W^T [K][rows], Cc[j][k] = Cx[j][k] - Sa[j] Sb[k] / cols */
    for (int j = 0; j < K; j++)
        for (int r = 0; r < rows; r++) {
            double acc = 0;
            for (int k = 0; k < K; k++) acc += (Cx[(size_t)j * K + k] - Sa[j] * Sb[k] / cols) * W[(size_t)r * K + k];
            X[(size_t)j * rows + r] = acc;
        }
    ccq_status st = CCQ_OK;
    if (LAPACKE_dposv(LAPACK_ROW_MAJOR, 'U', K, rows, A, K, X, rows) != 0)
        st = ccq_fail(err, CCQ_ERR_LIMIT, "the asymmetric targets' system is not positive definite");
    else
        for (int r = 0; r < rows; r++)
            for (int k = 0; k < K; k++) W[(size_t)r * K + k] = X[(size_t)k * rows + r];
    ccq_free(A), ccq_free(X);
    return st;
}

ccq_status gptq_run(model *m, const data_split *calib, const gptq_config *c, gptq_report *rep, ccq_err *err)
{
    ccq_status st;
    gptq_report r;
    memset(&r, 0, sizeof r);
    const double t0 = ccq_seconds();
    if (!m->quantized) return ccq_fail(err, CCQ_ERR_USAGE, "%s: GPTQ needs a quantized model", m->path);
    if (c->asym && c->float_inputs)
        return ccq_fail(err, CCQ_ERR_USAGE, "%s: asymmetric targets need the quantized layers' inputs, not the float "
                        "model's", m->path);
    if ((st = data_check_fits(calib, m, err))) return st;
    const int n = c->calib_images < calib->n ? c->calib_images : calib->n;
    if (n < 1) return ccq_fail(err, CCQ_ERR_MISMATCH, "%s: no calibration images for GPTQ", calib->path);

    /* work: the model whose float forward feeds the Hessians (its weights become
     * levels x scale layer by layer); results go to m only at the end */
    model work;
    model_copy(&work, m);
    const int blas_threads = blas_single_enter();
    const int threads = gptq_threads(c);
    fwd_state fwd, fwd2;
    fwd_init(&fwd, &work, n);
    /* asymmetric targets: m itself is the original model (its float weights and biases stay until the end) */
    if (c->asym) fwd_init(&fwd2, m, n);
    for (int L = 0; L < work.n_nodes && !st; L++) {
        model_node *nd = &work.nodes[L];
        if (!is_layer(nd->op)) continue;
        const int groups = group_count(nd), rows = nd->shape.c / groups;
        const int K = (int)(nd->n_weight / nd->shape.c), wmax = model_node_wmax(nd);
        double **H = ccq_malloc(sizeof(double *) * (size_t)groups);
        for (int g = 0; g < groups; g++) H[g] = ccq_malloc(sizeof(double) * (size_t)K * (size_t)K);
        hess_asym as = {m, &fwd2, NULL, NULL, NULL};
        if (c->asym) {
            as.Cx = ccq_malloc(sizeof(double *) * (size_t)groups);
            as.Sa = ccq_malloc(sizeof(double *) * (size_t)groups);
            as.Sb = ccq_malloc(sizeof(double *) * (size_t)groups);
            for (int g = 0; g < groups; g++) {
                as.Cx[g] = ccq_malloc(sizeof(double) * (size_t)K * (size_t)K);
                as.Sa[g] = ccq_malloc(sizeof(double) * (size_t)K);
                as.Sb[g] = ccq_malloc(sizeof(double) * (size_t)K);
            }
        }
        layer_hessians(&work, L, calib, n, groups, threads, &fwd, H, c->asym ? &as : NULL);
        const double cols = (double)n * (nd->op == MODEL_OP_CONV2D ? (double)nd->shape.h * nd->shape.w : 1.0);
        double *bnew = c->asym ? ccq_malloc(sizeof(double) * (size_t)nd->shape.c) : NULL;
        double *W = ccq_malloc(sizeof(double) * (size_t)rows * (size_t)K);
        double *s0 = ccq_malloc(sizeof(double) * (size_t)rows), *s = ccq_malloc(sizeof(double) * (size_t)rows);
        double *bias_lv = ccq_malloc(sizeof(double) * (size_t)rows);
        int8_t *q = ccq_malloc((size_t)rows * (size_t)K);
        /* pruned before quantization (prune.h): from this layer's own float weights, not yet replaced */
        uint8_t *mask = NULL;
        if (c->sparsity_pm && nd->bits == c->prune_bits && !nd->codebook) {
            mask = ccq_malloc((size_t)nd->n_weight);
            prune_mask(nd, c->sparsity_pm, mask);
        }
        const int src = nd->in[0];
        const double s_in = src < 0 ? work.in_scale : work.nodes[src].act_scale;
        double s_max = 0; /* the largest scale chosen, in double (gptq.py: sc.max()) */
        for (int g = 0; g < groups && !st; g++) {
            const int o0 = g * rows;
            for (int o = 0; o < rows; o++) {
                for (int k = 0; k < K; k++) W[(size_t)o * K + k] = nd->weight[(int64_t)(o0 + o) * K + k];
                s0[o] = nd->wscale[o0 + o];
                bias_lv[o] = nd->bias ? fabs(nd->bias[o0 + o]) / (s_in * s0[o]) : 0.0;
            }
            ccq_err why;
            if (c->asym && (st = asym_target(W, H[g], as.Cx[g], as.Sa[g], as.Sb[g], cols, rows, K, &why))) {
                st = ccq_fail(err, st, "%s: node %d (%s): %s", m->path, L, nd->name, why.msg);
                break;
            }
            prep p;
            if ((st = prep_init(&p, H[g], K, c, &why))) {
                st = ccq_fail(err, st, "%s: node %d (%s): %s", m->path, L, nd->name, why.msg);
                break;
            }
            solve_buf b;
            solve_buf_init(&b, rows, K, c->block);
            const level_set ls = {nd->codebook ? nd->codebook + (size_t)o0 * model_ncodes(nd) : NULL,
                                  nd->codebook ? model_ncodes(nd) : 0, wmax, mask ? mask + (size_t)o0 * K : NULL};
            if (c->scale_search) {
                solve_scales(&p, W, H[g], rows, s0, &ls, c->block, c->asym ? NULL : bias_lv, &b, q, s);
            } else {
                memcpy(s, s0, sizeof(double) * (size_t)rows);
                solve(&p, W, rows, s, &ls, c->block, &b, q);
            }
            solve_buf_free(&b);
            prep_free(&p);
            if (c->asym) {
                /* the bias that matches the targets' mean for these levels: mean(y) - (q s) . mean(x) */
                for (int o = 0; o < rows && !st; o++) {
                    const int oc = o0 + o;
                    double y = nd->bias ? nd->bias[oc] : 0.0, x = 0;
                    for (int k = 0; k < K; k++) {
                        y += (double)m->nodes[L].weight[(int64_t)oc * K + k] * as.Sb[g][k] / cols;
                        x += (double)q[(size_t)o * K + k] * s[o] * as.Sa[g][k] / cols;
                    }
                    bnew[oc] = y - x;
                    if (!quant_acc_fits(fabs(bnew[oc]) / (s_in * s[o]), K, wmax))
                        st = ccq_fail(err, CCQ_ERR_LIMIT, "%s: node %d (%s): output channel %d: the refitted bias could "
                                      "overflow int32 accumulators", m->path, L, nd->name, oc);
                }
                if (st) break;
            }
            for (int o = 0; o < rows; o++) {
                const int oc = o0 + o;
                if ((float)s[o] != nd->wscale[oc]) r.rescaled++;
                if (s[o] > s_max) s_max = s[o];
                nd->wscale[oc] = (float)s[o];
                for (int k = 0; k < K; k++) {
                    const int64_t w = (int64_t)oc * K + k;
                    r.changed += nd->levels[w] != q[(size_t)o * K + k];
                    nd->levels[w] = q[(size_t)o * K + k];
                    /* later layers see this layer's quantized weights (gptq.py: lev * wscale) */
                    if (!c->float_inputs) nd->weight[w] = (float)((double)q[(size_t)o * K + k] * s[o]);
                }
            }
        }
        if (!st && c->asym) {
            /* later layers' inputs see the new bias */
            if (!nd->bias) nd->bias = ccq_calloc((size_t)nd->shape.c, sizeof(float));
            for (int o = 0; o < nd->shape.c; o++) nd->bias[o] = (float)bnew[o];
        }
        ccq_free(bnew);
        if (c->asym) {
            for (int g = 0; g < groups; g++) ccq_free(as.Cx[g]), ccq_free(as.Sa[g]), ccq_free(as.Sb[g]);
            ccq_free(as.Cx), ccq_free(as.Sa), ccq_free(as.Sb);
        }
        if (!st && c->scale_search && L == work.output) {
            /* the logits' scale: the largest input x weight scale, as quant_model sets it */
            nd->act_scale = (float)(s_in * s_max);
        }
        r.layers++;
        r.weights += nd->n_weight;
        for (int g = 0; g < groups; g++) ccq_free(H[g]);
        ccq_free(H), ccq_free(W), ccq_free(s0), ccq_free(s), ccq_free(bias_lv), ccq_free(q), ccq_free(mask);
    }
    fwd_free(&fwd);
    if (c->asym) fwd_free(&fwd2);
    blas_single_leave(blas_threads);
    if (!st) {
        for (int i = 0; i < m->n_nodes; i++) {
            model_node *dst = &m->nodes[i];
            if (!is_layer(dst->op)) continue;
            memcpy(dst->levels, work.nodes[i].levels, (size_t)dst->n_weight);
            memcpy(dst->wscale, work.nodes[i].wscale, sizeof(float) * (size_t)dst->shape.c);
            if (c->asym) {
                if (!dst->bias) dst->bias = ccq_calloc((size_t)dst->shape.c, sizeof(float));
                memcpy(dst->bias, work.nodes[i].bias, sizeof(float) * (size_t)dst->shape.c);
            }
        }
        m->nodes[m->output].act_scale = work.nodes[work.output].act_scale;
        r.seconds = ccq_seconds() - t0;
        if (rep) *rep = r;
    }
    model_free(&work);
    return st;
}

/* ---- the search's start ------------------------------------------------------------ */

static const char *const k_start_names[GPTQ_START_COUNT] = {"rtn", "gptq", "gptq_scale", "auto", "gptq_asym"};

const char *gptq_start_name(gptq_start_kind k)
{
    CCQ_ASSERT(k >= 0 && k < GPTQ_START_COUNT);
    return k_start_names[k];
}

gptq_start_kind gptq_start_parse(const char *s)
{
    for (int k = 0; k < GPTQ_START_COUNT; k++)
        if (strcmp(s, k_start_names[k]) == 0) return (gptq_start_kind)k;
    return GPTQ_START_COUNT;
}

/* Correct predictions of the integer network of m over every image of d
 * (argmax of the int32 logits, ties to the lowest class). */
static ccq_status count_correct(const model *m, const data_split *d, int64_t *correct, ccq_err *err)
{
    qnet q;
    ccq_status st = qnet_init(&q, m, NULL, 8, err);
    if (st) return st;
    const int64_t ok = qnet_count_correct(&q, d->images, d->labels, d->n);
    qnet_free(&q);
    *correct = ok;
    return CCQ_OK;
}

ccq_status gptq_start(const model *fm, const data_split *train, const quant_config *qc, gptq_start_kind kind,
                      model *out, gptq_start_info *info, ccq_err *err)
{
    CCQ_ASSERT(kind >= 0 && kind < GPTQ_START_COUNT);
    gptq_start_info in;
    memset(&in, 0, sizeof in);
    const double t0 = ccq_seconds();
    model cand[3];
    memset(cand, 0, sizeof cand);
    gptq_report reps[3];
    memset(reps, 0, sizeof reps);
    if (qc->sparsity_pm && qc->level_rule == QUANT_LEVELS_LEARNED)
        return ccq_fail(err, CCQ_ERR_USAGE, "%s: weight pruning needs uniform levels (a learned codebook need not hold "
                        "zero)", fm->path);
    ccq_status st = quant_model(fm, train, qc, &cand[0], err);
    if (st) return st;
    gptq_config gc;
    gptq_config_default(&gc);
    gc.calib_images = qc->calib_images;
    /* pruning (prune.h): the layers at qc->wbits on the uniform grid; before: masked in the RTN
     * levels and in GPTQ's, after: applied to each candidate below */
    const int prune = qc->sparsity_pm > 0;
    if (prune && !qc->prune_after) {
        gc.sparsity_pm = qc->sparsity_pm, gc.prune_bits = qc->wbits;
        for (int i = 0; i < cand[0].n_nodes; i++) {
            model_node *nd = &cand[0].nodes[i];
            if (!nd->levels || nd->codebook || nd->bits != qc->wbits) continue;
            uint8_t *mask = ccq_malloc((size_t)nd->n_weight);
            prune_mask(nd, qc->sparsity_pm, mask);
            for (int64_t w = 0; w < nd->n_weight; w++)
                if (mask[w]) nd->levels[w] = 0;
            ccq_free(mask);
        }
    }
    /* gptq_asym: the gptq_scale candidate's slot, with asymmetric targets */
    const int asym = kind == GPTQ_START_GPTQ_ASYM;
    for (int k = GPTQ_START_GPTQ; k <= GPTQ_START_GPTQ_SCALE && !st; k++) {
        if ((int)kind != k && kind != GPTQ_START_AUTO && !(asym && k == GPTQ_START_GPTQ_SCALE)) continue;
        model_copy(&cand[k], &cand[0]);
        gc.scale_search = k == GPTQ_START_GPTQ_SCALE;
        gc.asym = asym;
        st = gptq_run(&cand[k], train, &gc, &reps[k], err);
    }
    for (int k = 0; k < 3 && !st && prune; k++)
        for (int i = 0; cand[k].nodes && i < cand[k].n_nodes; i++) {
            model_node *nd = &cand[k].nodes[i];
            if (!nd->levels || nd->codebook || nd->bits != qc->wbits) continue;
            if (qc->prune_after) prune_levels(nd, qc->sparsity_pm);
            nd->sparse = 1; /* deployed sparse where that is smaller */
        }
    int chosen = kind == GPTQ_START_AUTO ? GPTQ_START_RTN : asym ? GPTQ_START_GPTQ_SCALE : (int)kind;
    if (!st && kind == GPTQ_START_AUTO) {
        in.n_train = train->n;
        for (int k = 0; k < 3 && !st; k++) st = count_correct(&cand[k], train, &in.correct[k], err);
        for (int k = 1; k < 3; k++)
            if (in.correct[k] > in.correct[chosen]) chosen = k;
    }
    for (int k = 0; k < 3; k++) {
        if (!st && k == chosen)
            *out = cand[k];
        else if (cand[k].nodes)
            model_free(&cand[k]);
    }
    if (st) return st;
    in.chosen = asym ? GPTQ_START_GPTQ_ASYM : (gptq_start_kind)chosen;
    in.report = reps[chosen];
    in.seconds = ccq_seconds() - t0;
    if (info) *info = in;
    return CCQ_OK;
}
