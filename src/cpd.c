/*
 * cpd.c: CP-ALS and ADMM-on-the-grid fits of a 2- to 4-mode tensor (see
 * cpd.h). Double precision; the MTTKRPs and Gram matrices through BLAS
 * (dgemm), the R x R solves through LAPACK (Cholesky), one BLAS thread.
 * It does not choose ranks or layers and knows nothing of models.
 */
#include "ccq/cpd.h"

#include <cblas.h>
#include <lapacke.h>
#include <math.h>
#include <stdlib.h>
#include <string.h>

#include "ccq/rng.h"

/* rng_init_keyed purpose of the ALS start (one stream per mode). */
enum { CPD_KEY_ALS_START = 11 };

static void copy_into(cpd_factors *dst, const cpd_factors *src);

void cpd_factors_init(cpd_factors *f, int n_modes, const int *dims, int rank)
{
    CCQ_ASSERT(n_modes >= 2 && n_modes <= CPD_MAX_MODES && rank >= 1);
    memset(f, 0, sizeof(*f));
    f->n_modes = n_modes;
    f->rank = rank;
    for (int m = 0; m < n_modes; m++) {
        CCQ_ASSERT(dims[m] >= 1);
        f->dims[m] = dims[m];
        f->f[m] = ccq_calloc((size_t)dims[m] * (size_t)rank, sizeof(double));
    }
}

void cpd_factors_free(cpd_factors *f)
{
    for (int m = 0; m < CPD_MAX_MODES; m++) ccq_free(f->f[m]), ccq_free(f->scale[m]);
    memset(f, 0, sizeof(*f));
}

void cpd_factors_copy(cpd_factors *dst, const cpd_factors *src)
{
    cpd_factors_init(dst, src->n_modes, src->dims, src->rank);
    copy_into(dst, src);
}

int64_t cpd_numel(const cpd_factors *f)
{
    int64_t n = 1;
    for (int m = 0; m < f->n_modes; m++) n *= f->dims[m];
    return n;
}

/* ---- the building blocks ---------------------------------------------------------------- */

/* Columns of mode m's unfolding: the product of the other dims. */
static int64_t other_size(const cpd_factors *f, int m) { return cpd_numel(f) / f->dims[m]; }

/* Mode m's unfolding u[i_m][p] of t; p enumerates the other modes' indices row-major (their order kept). */
static void unfold(const double *t, const cpd_factors *f, int m, double *u)
{
    const int n = f->n_modes;
    const int64_t numel = cpd_numel(f), P = other_size(f, m);
    int idx[CPD_MAX_MODES] = {0};
    for (int64_t e = 0; e < numel; e++) {
        int64_t p = 0;
        for (int k = 0; k < n; k++)
            if (k != m) p = p * f->dims[k] + idx[k];
        u[(int64_t)idx[m] * P + p] = t[e];
        for (int k = n - 1; k >= 0; k--) { /* row-major increment */
            if (++idx[k] < f->dims[k]) break;
            idx[k] = 0;
        }
    }
}

/* The Khatri-Rao product of every mode but m: kr[p][r] = prod_{k != m} f_k[i_k][r], p as in unfold. */
static void khatri_rao(const cpd_factors *f, int m, double *kr)
{
    const int n = f->n_modes, R = f->rank;
    const int64_t P = other_size(f, m);
    int idx[CPD_MAX_MODES] = {0};
    for (int64_t p = 0; p < P; p++) {
        double *row = kr + p * R;
        for (int r = 0; r < R; r++) row[r] = 1.0;
        for (int k = 0; k < n; k++)
            if (k != m) {
                const double *fk = f->f[k] + (int64_t)idx[k] * R;
                for (int r = 0; r < R; r++) row[r] *= fk[r];
            }
        for (int k = n - 1; k >= 0; k--) {
            if (k == m) continue;
            if (++idx[k] < f->dims[k]) break;
            idx[k] = 0;
        }
    }
}

/* mttkrp[i][r] = sum_p u_m[i][p] kr[p][r] (kr scratch of other_size x R). */
static void mttkrp(const double *u, const cpd_factors *f, int m, double *kr, double *out)
{
    const int R = f->rank;
    const int64_t P = other_size(f, m);
    khatri_rao(f, m, kr);
    cblas_dgemm(CblasRowMajor, CblasNoTrans, CblasNoTrans, f->dims[m], R, (int)P, 1.0, u, (int)P, kr, R, 0.0,
                out, R);
}

/* g = Hadamard product over k != m of f_k^T f_k (R x R); tmp scratch R x R. */
static void gram_others(const cpd_factors *f, int m, double *g, double *tmp)
{
    const int R = f->rank;
    for (int64_t i = 0; i < (int64_t)R * R; i++) g[i] = 1.0;
    for (int k = 0; k < f->n_modes; k++) {
        if (k == m) continue;
        cblas_dgemm(CblasRowMajor, CblasTrans, CblasNoTrans, R, R, f->dims[k], 1.0, f->f[k], R, f->f[k], R, 0.0, tmp,
                    R);
        for (int64_t i = 0; i < (int64_t)R * R; i++) g[i] *= tmp[i];
    }
}

/* Cholesky factor (upper, row-major) of g + (rho + ridge) I in a; the ridge grows from 0 until the
 * factorization succeeds (a rank-deficient g, e.g. a zero column). */
static void chol_shifted(const double *g, int R, double rho, double *a)
{
    double tr = 0;
    for (int r = 0; r < R; r++) tr += g[(int64_t)r * R + r];
    double ridge = 0, step = (tr > 0 ? tr / R : 1.0) * 1e-12;
    for (;;) {
        memcpy(a, g, sizeof(double) * (size_t)R * (size_t)R);
        for (int r = 0; r < R; r++) a[(int64_t)r * R + r] += rho + ridge;
        if (LAPACKE_dpotrf(LAPACK_ROW_MAJOR, 'U', R, a, R) == 0) return;
        ridge = ridge == 0 ? step : ridge * 100;
        CCQ_ASSERT(ridge < 1e300);
    }
}

/* x[d][R] = b[d][R] a^-1 for a's Cholesky factor (a symmetric): a x^T = b^T. bt scratch R x d. */
static void solve_rows(const double *a, int R, const double *b, int d, double *x, double *bt)
{
    for (int i = 0; i < d; i++)
        for (int r = 0; r < R; r++) bt[(int64_t)r * d + i] = b[(int64_t)i * R + r];
    const int info = LAPACKE_dpotrs(LAPACK_ROW_MAJOR, 'U', R, d, a, R, bt, d);
    CCQ_ASSERT(info == 0);
    for (int i = 0; i < d; i++)
        for (int r = 0; r < R; r++) x[(int64_t)i * R + r] = bt[(int64_t)r * d + i];
}

void cpd_reconstruct(const cpd_factors *f, double *out)
{
    const int R = f->rank;
    const int64_t P = other_size(f, 0);
    double *kr = ccq_malloc(sizeof(double) * (size_t)P * (size_t)R);
    khatri_rao(f, 0, kr);
    cblas_dgemm(CblasRowMajor, CblasNoTrans, CblasTrans, f->dims[0], (int)P, R, 1.0, f->f[0], R, kr, R, 0.0, out,
                (int)P);
    ccq_free(kr);
}

double cpd_rel_error(const double *t, const cpd_factors *f)
{
    const int64_t n = cpd_numel(f);
    double *rec = ccq_malloc(sizeof(double) * (size_t)n);
    cpd_reconstruct(f, rec);
    double num = 0, den = 0;
    for (int64_t e = 0; e < n; e++) {
        const double d = t[e] - rec[e];
        num += d * d;
        den += t[e] * t[e];
    }
    ccq_free(rec);
    return den > 0 ? sqrt(num / den) : sqrt(num);
}

void cpd_balance(cpd_factors *f)
{
    const int R = f->rank;
    for (int r = 0; r < R; r++) {
        double carry = 1.0;
        for (int m = 1; m < f->n_modes; m++) {
            double s = 0;
            for (int i = 0; i < f->dims[m]; i++) s += f->f[m][(int64_t)i * R + r] * f->f[m][(int64_t)i * R + r];
            s = sqrt(s);
            if (s == 0) continue;
            for (int i = 0; i < f->dims[m]; i++) f->f[m][(int64_t)i * R + r] /= s;
            carry *= s;
        }
        for (int i = 0; i < f->dims[0]; i++) f->f[0][(int64_t)i * R + r] *= carry;
    }
}

/* One grid group: n values at stride `step` from v, onto s * {-qmax..qmax}; returns s. */
static double project_group(double *v, int n, int64_t step, int qmax, cpd_grid rule)
{
    double mx = 0;
    for (int i = 0; i < n; i++) mx = fmax(mx, fabs(v[i * step]));
    if (mx == 0) return 1.0;
    double s = mx / qmax;
    /* CPD_GRID_LSQ: Lloyd steps from the max-abs scale, each the least-squares scale of the levels the
     * previous one rounds to, until it no longer changes */
    for (int it = 0; rule == CPD_GRID_LSQ && it < CPD_LSQ_STEPS; it++) {
        double vq = 0, qq = 0;
        for (int i = 0; i < n; i++) {
            double q = round(v[i * step] / s);
            q = q > qmax ? qmax : q < -qmax ? -qmax : q;
            vq += v[i * step] * q, qq += q * q;
        }
        if (!(qq > 0 && vq > 0) || vq / qq == s) break;
        s = vq / qq;
    }
    for (int i = 0; i < n; i++) {
        double q = round(v[i * step] / s);
        q = q > qmax ? qmax : q < -qmax ? -qmax : q;
        v[i * step] = q * s;
    }
    return s;
}

void cpd_project(cpd_factors *f, int m, int qmax, cpd_grid rule)
{
    CCQ_ASSERT(qmax >= 1 && qmax <= 127);
    const int R = f->rank, d = f->dims[m];
    if (!f->scale[m]) f->scale[m] = ccq_malloc(sizeof(double) * (size_t)(m == 0 ? d : R));
    if (m == 0)
        for (int i = 0; i < d; i++) f->scale[0][i] = project_group(f->f[0] + (int64_t)i * R, R, 1, qmax, rule);
    else
        for (int r = 0; r < R; r++) f->scale[m][r] = project_group(f->f[m] + r, d, R, qmax, rule);
}

void cpd_levels(const cpd_factors *f, int m, int8_t *levels)
{
    CCQ_ASSERT(f->scale[m]);
    const int R = f->rank, d = f->dims[m];
    for (int i = 0; i < d; i++)
        for (int r = 0; r < R; r++) {
            const double s = f->scale[m][m == 0 ? i : r];
            levels[(int64_t)i * R + r] = (int8_t)round(f->f[m][(int64_t)i * R + r] / s);
        }
}

/* dst's values and scales := src's (same shape). */
static void copy_into(cpd_factors *dst, const cpd_factors *src)
{
    for (int m = 0; m < src->n_modes; m++) {
        memcpy(dst->f[m], src->f[m], sizeof(double) * (size_t)src->dims[m] * (size_t)src->rank);
        if (src->scale[m]) {
            const size_t n = (size_t)(m == 0 ? src->dims[0] : src->rank);
            if (!dst->scale[m]) dst->scale[m] = ccq_malloc(sizeof(double) * n);
            memcpy(dst->scale[m], src->scale[m], sizeof(double) * n);
        }
    }
}

/* ---- the fits ------------------------------------------------------------------------------- */

/* What both fits need: every mode's unfolding and the scratch of one mode update. */
typedef struct {
    double *u[CPD_MAX_MODES];
    double *kr, *m, *g, *tmp, *a, *bt, *x;
} work;

static void work_init(work *w, const double *t, const cpd_factors *f)
{
    memset(w, 0, sizeof(*w));
    const int R = f->rank;
    int64_t pmax = 0, dmax = 0;
    for (int k = 0; k < f->n_modes; k++) {
        w->u[k] = ccq_malloc(sizeof(double) * (size_t)cpd_numel(f));
        unfold(t, f, k, w->u[k]);
        if (other_size(f, k) > pmax) pmax = other_size(f, k);
        if (f->dims[k] > dmax) dmax = f->dims[k];
    }
    w->kr = ccq_malloc(sizeof(double) * (size_t)pmax * (size_t)R);
    w->m = ccq_malloc(sizeof(double) * (size_t)dmax * (size_t)R);
    w->x = ccq_malloc(sizeof(double) * (size_t)dmax * (size_t)R);
    w->bt = ccq_malloc(sizeof(double) * (size_t)dmax * (size_t)R);
    w->g = ccq_malloc(sizeof(double) * (size_t)R * (size_t)R);
    w->tmp = ccq_malloc(sizeof(double) * (size_t)R * (size_t)R);
    w->a = ccq_malloc(sizeof(double) * (size_t)R * (size_t)R);
}

static void work_free(work *w)
{
    for (int k = 0; k < CPD_MAX_MODES; k++) ccq_free(w->u[k]);
    ccq_free(w->kr), ccq_free(w->m), ccq_free(w->x), ccq_free(w->bt);
    ccq_free(w->g), ccq_free(w->tmp), ccq_free(w->a);
    memset(w, 0, sizeof(*w));
}

double cpd_als(const double *t, cpd_factors *f, int iters, double tol, double ridge, uint64_t seed)
{
    const int R = f->rank, nt = openblas_get_num_threads();
    openblas_set_num_threads(1);
    for (int m = 0; m < f->n_modes; m++) {
        rng_pcg32 g;
        rng_init_keyed(&g, seed, CPD_KEY_ALS_START, (uint64_t)m, 0);
        for (int64_t i = 0; i < (int64_t)f->dims[m] * R; i++) f->f[m][i] = ldexp((double)rng_next(&g), -31) - 1.0;
    }
    cpd_balance(f);
    work w;
    work_init(&w, t, f);
    double err = cpd_rel_error(t, f);
    for (int it = 0; it < iters; it++) {
        for (int m = 0; m < f->n_modes; m++) {
            mttkrp(w.u[m], f, m, w.kr, w.m);
            gram_others(f, m, w.g, w.tmp);
            double tr = 0;
            for (int r = 0; r < R; r++) tr += w.g[(int64_t)r * R + r];
            chol_shifted(w.g, R, ridge * tr / R, w.a);
            solve_rows(w.a, R, w.m, f->dims[m], f->f[m], w.bt);
        }
        cpd_balance(f);
        const double e = cpd_rel_error(t, f);
        const double gain = err - e;
        err = e;
        if (gain < tol && gain > -tol) break;
    }
    work_free(&w);
    openblas_set_num_threads(nt);
    return err;
}

double cpd_admm(const double *t, cpd_factors *f, const int *qmax, cpd_admm_info *info)
{
    const int R = f->rank, n = f->n_modes, nt = openblas_get_num_threads();
    openblas_set_num_threads(1);
    for (int m = 0; m < n; m++) cpd_project(f, m, qmax[m], CPD_GRID_MAXABS);
    cpd_factors best;
    cpd_factors_copy(&best, f);
    double best_err = cpd_rel_error(t, f);
    info->err_start = best_err;
    info->best_sweep = 0;
    work w;
    work_init(&w, t, f);
    double *dual[CPD_MAX_MODES] = {0};
    for (int m = 0; m < n; m++) dual[m] = ccq_calloc((size_t)f->dims[m] * (size_t)R, sizeof(double));
    for (int s = 1; s <= info->sweeps; s++) {
        for (int m = 0; m < n; m++) {
            const int d = f->dims[m];
            const int64_t dr = (int64_t)d * R;
            double *z = f->f[m], *u = dual[m];
            mttkrp(w.u[m], f, m, w.kr, w.m);
            gram_others(f, m, w.g, w.tmp);
            double rho = 0;
            for (int r = 0; r < R; r++) rho += w.g[(int64_t)r * R + r];
            rho = rho > 0 ? rho / R : 1.0;
            chol_shifted(w.g, R, rho, w.a);
            for (int k = 0; k < info->inner; k++) {
                /* the unconstrained step: (mttkrp + rho (z + u)) (G + rho I)^-1 */
                for (int64_t i = 0; i < dr; i++) w.x[i] = w.m[i] + rho * (z[i] + u[i]);
                solve_rows(w.a, R, w.x, d, w.x, w.bt);
                /* the constraint step: z = grid(x - u); the dual: u += z - x */
                for (int64_t i = 0; i < dr; i++) z[i] = w.x[i] - u[i];
                cpd_project(f, m, qmax[m], info->grid);
                for (int64_t i = 0; i < dr; i++) u[i] += z[i] - w.x[i];
            }
        }
        const double e = cpd_rel_error(t, f);
        if (e < best_err) {
            best_err = e;
            info->best_sweep = s;
            copy_into(&best, f);
        }
    }
    copy_into(f, &best);
    for (int m = 0; m < n; m++) ccq_free(dual[m]);
    cpd_factors_free(&best);
    work_free(&w);
    openblas_set_num_threads(nt);
    info->err = best_err;
    return best_err;
}
