/*
 * lq.c: LQ-Nets' alternating fit of a channel's basis, the int8 codebook of
 * its levels, and the learned levels of a conv2d/linear node (see lq.h).
 * Float arithmetic at set-up only; double for every sum and the solve. It
 * does not choose which nodes are learned (quant_model does) nor run GPTQ.
 */
#include "ccq/lq.h"

#include <math.h>
#include <string.h>

enum { LQ_MAX_K = MODEL_CODEBOOK_MAX_BITS, LQ_MAX_CODES = 1 << LQ_MAX_K };

/* Half the squared-error-optimal step of a uniform 2^K-level quantizer of a
 * unit Gaussian (Max 1960: steps 1.596, 0.9957, 0.5860, 0.3352): a start
 * that is already near the fit for bell-shaped weights, where the range
 * start spends its outer levels on a few outliers. Each start wins on about
 * half the channels of ResNet-20 and LeNet; keeping the better one lowers
 * the summed error 0.2% (2 bits) to 4% (4 bits) below either alone. */
static const double k_gauss_half_step[LQ_MAX_K + 1] = {0.0, 0.7980, 0.49785, 0.2930, 0.1676};

/* Sign of basis value k in code c: bit k of c set -> +1. */
static double sign_of(int c, int k) { return (c >> k) & 1 ? 1.0 : -1.0; }

/* One channel's fit state: the basis, its levels ascending and which code (e) each is. */
typedef struct {
    int K, n;
    double v[LQ_MAX_K];
    double lv[LQ_MAX_CODES]; /* ascending */
    int code[LQ_MAX_CODES];  /* lv[j] = sum_k v[k] sign_of(code[j], k) */
} basis;

static void basis_levels(basis *b)
{
    for (int c = 0; c < b->n; c++) {
        double s = 0;
        for (int k = 0; k < b->K; k++) s += b->v[k] * sign_of(c, k);
        b->lv[c] = s;
        b->code[c] = c;
    }
    /* insertion sort by value, ties by code: at most 16 entries */
    for (int i = 1; i < b->n; i++)
        for (int j = i; j > 0 && (b->lv[j] < b->lv[j - 1] || (b->lv[j] == b->lv[j - 1] && b->code[j] < b->code[j - 1]));
             j--) {
            const double t = b->lv[j];
            const int tc = b->code[j];
            b->lv[j] = b->lv[j - 1], b->code[j] = b->code[j - 1];
            b->lv[j - 1] = t, b->code[j - 1] = tc;
        }
}

/* Position in b->lv of the level nearest x (ties to the lower level). */
static int nearest_level(const basis *b, double x)
{
    int lo = 0, hi = b->n - 1;
    while (lo < hi) { /* first level >= x, or the last */
        const int mid = (lo + hi) / 2;
        if (b->lv[mid] < x) lo = mid + 1;
        else hi = mid;
    }
    return lo > 0 && x - b->lv[lo - 1] <= b->lv[lo] - x ? lo - 1 : lo;
}

/* Assigns every weight its nearest level: its code into a[], the per-code
 * count and weight sum into cnt[], sum[]; returns the squared error and
 * whether any code differs from a[]'s before (*changed). */
static double assign(const basis *b, const float *w, int64_t n, uint8_t *a, double *cnt, double *sum, int *changed)
{
    double err = 0;
    *changed = 0;
    for (int c = 0; c < b->n; c++) cnt[c] = 0, sum[c] = 0;
    for (int64_t i = 0; i < n; i++) {
        const int j = nearest_level(b, w[i]);
        const int c = b->code[j];
        const double d = (double)w[i] - b->lv[j];
        err += d * d;
        *changed |= a[i] != c;
        a[i] = (uint8_t)c;
        cnt[c] += 1.0;
        sum[c] += w[i];
    }
    return err;
}

/* The least-squares basis for the assignment (cnt, sum): (E^T E) v = E^T w
 * with E's rows the weights' sign vectors, E^T E = sum_c cnt[c] e_c e_c^T.
 * A proximal term lambda |v - v_old|^2 (lambda 1e-9 of E^T E's mean diagonal)
 * keeps the system positive definite when some sign patterns are unused
 * (few weights, a constant channel): v then stays put along the directions
 * the data does not determine, and the step still cannot raise the error of
 * the assignment (v_old is a candidate of the same objective). */
static void solve_basis(basis *b, const double *cnt, const double *sum, int64_t n_w)
{
    const int K = b->K;
    double A[LQ_MAX_K][LQ_MAX_K], r[LQ_MAX_K];
    const double lambda = 1e-9 * (double)n_w;
    for (int i = 0; i < K; i++) {
        r[i] = lambda * b->v[i];
        for (int j = 0; j < K; j++) A[i][j] = i == j ? lambda : 0.0;
    }
    for (int c = 0; c < b->n; c++) {
        if (cnt[c] == 0) continue;
        for (int i = 0; i < K; i++) {
            r[i] += sum[c] * sign_of(c, i);
            for (int j = 0; j < K; j++) A[i][j] += cnt[c] * sign_of(c, i) * sign_of(c, j);
        }
    }
    /* Cholesky A = L L^T in place (lower), then the two triangular solves */
    for (int j = 0; j < K; j++) {
        double d = A[j][j];
        for (int k = 0; k < j; k++) d -= A[j][k] * A[j][k];
        CCQ_ASSERT(d > 0); /* lambda > 0 makes A positive definite */
        A[j][j] = sqrt(d);
        for (int i = j + 1; i < K; i++) {
            double s = A[i][j];
            for (int k = 0; k < j; k++) s -= A[i][k] * A[j][k];
            A[i][j] = s / A[j][j];
        }
    }
    for (int i = 0; i < K; i++) {
        for (int k = 0; k < i; k++) r[i] -= A[i][k] * r[k];
        r[i] /= A[i][i];
    }
    for (int i = K - 1; i >= 0; i--) {
        for (int k = i + 1; k < K; k++) r[i] -= A[k][i] * r[k];
        r[i] /= A[i][i];
    }
    for (int i = 0; i < K; i++) b->v[i] = r[i];
    basis_levels(b);
}

/* The alternating fit from the grid v_k = a0 2^k: the best basis seen into *best,
 * its error, the trace and the step count into info. a[n] is scratch. */
static void fit_from(const float *w, int64_t n, int K, double a0, uint8_t *a, basis *best, lq_fit_info *info)
{
    basis b;
    double cnt[LQ_MAX_CODES], sum[LQ_MAX_CODES];
    int changed;
    b.K = K, b.n = 1 << K;
    for (int k = 0; k < K; k++) b.v[k] = a0 * (double)(1 << k);
    basis_levels(&b);
    memset(a, 0, (size_t)n);
    double err = assign(&b, w, n, a, cnt, sum, &changed);
    *best = b;
    info->err = info->trace[0] = err;
    info->steps = 0;
    for (int it = 1; it <= LQ_MAX_ITERS; it++) {
        solve_basis(&b, cnt, sum, n);
        const double e = assign(&b, w, n, a, cnt, sum, &changed);
        info->trace[it] = e;
        info->steps = it;
        if (e < info->err) info->err = e, *best = b;
        /* exact arithmetic never raises e; a tie or a rounding-level rise means it has settled */
        if (!changed || !(e < err)) break;
        err = e;
    }
}

double lq_fit(const float *w, int64_t n, int bits, double *levels, lq_fit_info *info)
{
    CCQ_ASSERT(bits >= 1 && bits <= LQ_MAX_K && n >= 1);
    double mx = 0, ss = 0;
    for (int64_t i = 0; i < n; i++) {
        mx = fmax(mx, fabs((double)w[i]));
        ss += (double)w[i] * w[i];
    }
    const int nl = 1 << bits;
    const double starts[2] = {mx / (double)(nl - 1), sqrt(ss / (double)n) * k_gauss_half_step[bits]};
    uint8_t *a = ccq_malloc((size_t)n);
    lq_fit_info got, keep;
    basis b, kb;
    memset(&keep, 0, sizeof keep);
    memset(&kb, 0, sizeof kb);
    for (int s = 0; s < 2; s++) {
        memset(&got, 0, sizeof got);
        fit_from(w, n, bits, starts[s], a, &b, &got);
        got.start = s;
        if (s == 0 || got.err < keep.err) keep = got, kb = b;
    }
    ccq_free(a);
    memcpy(levels, kb.lv, sizeof(double) * (size_t)nl);
    if (info) *info = keep;
    return keep.err;
}

void lq_round_codebook(const double *levels, int n, int8_t *cb, float *scale)
{
    CCQ_ASSERT(n >= 1 && n <= 2 * LQ_CODE_MAX + 1);
    double mx = 0;
    for (int c = 0; c < n; c++) mx = fmax(mx, fabs(levels[c]));
    /* 1 also when the scale underflows float (denormal weights): every level then rounds to 0 */
    const float s = (float)(mx / LQ_CODE_MAX) > 0 ? (float)(mx / LQ_CODE_MAX) : 1.0f;
    int v[2 * LQ_CODE_MAX + 1];
    for (int c = 0; c < n; c++) {
        const double q = round(levels[c] / (double)s);
        v[c] = q > LQ_CODE_MAX ? LQ_CODE_MAX : q < -LQ_CODE_MAX ? -LQ_CODE_MAX : (int)q;
    }
    for (int c = 1; c < n; c++)
        if (v[c] <= v[c - 1]) v[c] = v[c - 1] + 1;
    if (v[n - 1] > LQ_CODE_MAX) {
        v[n - 1] = LQ_CODE_MAX;
        for (int c = n - 2; c >= 0; c--)
            if (v[c] >= v[c + 1]) v[c] = v[c + 1] - 1;
    }
    for (int c = 0; c < n; c++) cb[c] = (int8_t)v[c];
    *scale = s;
}

int lq_nearest(const int8_t *cb, int n, double x)
{
    int lo = 0, hi = n - 1;
    while (lo < hi) { /* first value >= x, or the last */
        const int mid = (lo + hi) / 2;
        if (cb[mid] < x) lo = mid + 1;
        else hi = mid;
    }
    return lo > 0 && x - cb[lo - 1] <= cb[lo] - x ? lo - 1 : lo;
}

void lq_quantize_node(model_node *nd)
{
    CCQ_ASSERT(nd->op == MODEL_OP_CONV2D || nd->op == MODEL_OP_LINEAR);
    CCQ_ASSERT(nd->bits >= 2 && nd->bits <= MODEL_CODEBOOK_MAX_BITS && nd->levels && nd->wscale && nd->weight);
    const int cout = nd->shape.c, nc = model_ncodes(nd);
    const int64_t per = nd->n_weight / cout;
    double lv[LQ_MAX_CODES];
    ccq_free(nd->codebook);
    nd->codebook = ccq_malloc((size_t)cout * (size_t)nc);
    for (int o = 0; o < cout; o++) {
        const float *w = nd->weight + o * per;
        int8_t *cb = nd->codebook + (int64_t)o * nc;
        lq_fit(w, per, nd->bits, lv, NULL);
        lq_round_codebook(lv, nc, cb, &nd->wscale[o]);
        for (int64_t k = 0; k < per; k++)
            nd->levels[o * per + k] = cb[lq_nearest(cb, nc, (double)w[k] / (double)nd->wscale[o])];
    }
}
