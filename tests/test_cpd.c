/*
 * test_cpd.c: the CP decomposition (cpd_).
 *  - CP-ALS recovers a tensor that is exactly rank R (random factors, 2, 3 and 4 modes) to a
 *    relative error below 1e-6, and gives the same factors twice for one seed;
 *  - cpd_project puts every value on its grid: mode 0 per row, the other modes per column, the
 *    largest |level| of a non-zero group exactly qmax, values = level * scale;
 *  - ADMM on the grid, started from CP-ALS, never ends above CP-ALS rounded to the grid (the
 *    baseline) on random layer-shaped tensors (conv 3x3, conv kx1, linear) at 2, 3, 4 and 8 bits,
 *    and is strictly below it on most of them; its factors are on their grids;
 *  - a zero tensor and rank above every dim do not break the solves.
 */
#include <math.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <cmocka.h>

#include "ccq/cpd.h"
#include "ccq/model.h"
#include "ccq/rng.h"

static double uniform01(rng_pcg32 *r) { return ((double)rng_next(r) + 0.5) / 4294967296.0; }

static double gauss(rng_pcg32 *r)
{
    const double u = uniform01(r), v = uniform01(r);
    return sqrt(-2.0 * log(u)) * cos(6.283185307179586 * v);
}

/* A tensor of exact rank R from Gaussian factors. */
static double *rank_r_tensor(int n, const int *dims, int R, uint64_t seed)
{
    cpd_factors f;
    cpd_factors_init(&f, n, dims, R);
    rng_pcg32 g;
    rng_init(&g, seed, 1);
    for (int m = 0; m < n; m++)
        for (int64_t i = 0; i < (int64_t)dims[m] * R; i++) f.f[m][i] = gauss(&g);
    double *t = malloc(sizeof(double) * (size_t)cpd_numel(&f));
    cpd_reconstruct(&f, t);
    cpd_factors_free(&f);
    return t;
}

static void test_als_exact(void **state)
{
    (void)state;
    const int cases[][5] = {{2, 12, 9, 0, 0}, {3, 10, 8, 3, 0}, {4, 8, 6, 3, 3}};
    for (size_t c = 0; c < sizeof(cases) / sizeof(cases[0]); c++) {
        const int n = cases[c][0], R = 4;
        int dims[4] = {cases[c][1], cases[c][2], cases[c][3], cases[c][4]};
        double *t = rank_r_tensor(n, dims, R, 100 + c);
        cpd_factors f, f2;
        cpd_factors_init(&f, n, dims, R);
        cpd_factors_init(&f2, n, dims, R);
        const double e = cpd_als(t, &f, 2000, 1e-15, 0.0, 7);
        if (!(e < 1e-6)) fprintf(stderr, "case %zu: error %g\n", c, e);
        assert_true(e < 1e-6);
        assert_true(fabs(cpd_rel_error(t, &f) - e) < 1e-12);
        cpd_als(t, &f2, 2000, 1e-15, 0.0, 7);
        for (int m = 0; m < n; m++)
            assert_memory_equal(f.f[m], f2.f[m], sizeof(double) * (size_t)dims[m] * R);
        /* balanced: the columns of modes 1.. have unit norm */
        for (int m = 1; m < n; m++)
            for (int r = 0; r < R; r++) {
                double s = 0;
                for (int i = 0; i < dims[m]; i++) s += f.f[m][i * R + r] * f.f[m][i * R + r];
                assert_true(fabs(s - 1.0) < 1e-9);
            }
        cpd_factors_free(&f);
        cpd_factors_free(&f2);
        free(t);
    }
}

/* Every group of every mode on its grid: values = level * scale, |level| <= qmax; with exact
 * (max-abs) rounding the largest |level| of a non-zero group is qmax. */
static void check_on_grid(const cpd_factors *f, const int *qmax, int maxabs)
{
    const int R = f->rank;
    for (int m = 0; m < f->n_modes; m++) {
        const int d = f->dims[m];
        assert_non_null(f->scale[m]);
        int8_t *lv = malloc((size_t)d * R);
        cpd_levels(f, m, lv);
        const int groups = m == 0 ? d : R, len = m == 0 ? R : d;
        for (int gi = 0; gi < groups; gi++) {
            int mx = 0;
            const double sc = f->scale[m][gi];
            assert_true(sc > 0);
            for (int k = 0; k < len; k++) {
                const int64_t at = m == 0 ? (int64_t)gi * R + k : (int64_t)k * R + gi;
                assert_true(abs(lv[at]) <= qmax[m]);
                if (abs(lv[at]) > mx) mx = abs(lv[at]);
                assert_true(f->f[m][at] == lv[at] * sc);
            }
            if (maxabs) assert_true(mx == qmax[m] || mx == 0);
        }
        free(lv);
    }
}

static void test_project(void **state)
{
    (void)state;
    const int dims[3] = {5, 7, 3}, R = 4, qmax[3] = {1, 3, 7};
    cpd_factors f;
    cpd_factors_init(&f, 3, dims, R);
    rng_pcg32 g;
    rng_init(&g, 5, 2);
    for (int m = 0; m < 3; m++)
        for (int64_t i = 0; i < (int64_t)dims[m] * R; i++) f.f[m][i] = gauss(&g);
    /* one all-zero row of mode 0 and one all-zero column of mode 1 */
    for (int r = 0; r < R; r++) f.f[0][2 * R + r] = 0;
    for (int i = 0; i < dims[1]; i++) f.f[1][i * R + 3] = 0;
    /* mode 0 by hand: row 0 = {0.9, -0.3, 0.2, 0.6} at qmax 1 -> {1, 0, 0, 1} * 0.9 */
    const double row0[4] = {0.9, -0.3, 0.2, 0.6};
    memcpy(f.f[0], row0, sizeof(row0));
    int8_t lv[5 * 4];
    cpd_project(&f, 0, qmax[0], CPD_GRID_MAXABS);
    cpd_levels(&f, 0, lv);
    assert_true(f.scale[0][0] == 0.9 && lv[0] == 1 && lv[1] == 0 && lv[2] == 0 && lv[3] == 1);
    assert_true(f.f[0][3] == 0.9 && f.f[0][1] == 0.0);
    assert_true(f.scale[0][2] == 1.0);
    for (int m = 1; m < 3; m++) cpd_project(&f, m, qmax[m], CPD_GRID_MAXABS);
    check_on_grid(&f, qmax, 1);
    /* projecting values already on the grid changes nothing */
    cpd_factors again;
    cpd_factors_copy(&again, &f);
    for (int m = 0; m < 3; m++) {
        cpd_project(&again, m, qmax[m], CPD_GRID_MAXABS);
        assert_memory_equal(again.f[m], f.f[m], sizeof(double) * (size_t)dims[m] * R);
    }
    cpd_factors_free(&again);
    /* the least-squares scale: {1, 1, 1, 10} at qmax 1: max-abs (scale 10) rounds the 1s to 0, and
     * the least-squares scale of levels {0, 0, 0, 1} is 10 again: unchanged */
    const double row[4] = {1, 1, 1, 10};
    memcpy(f.f[0], row, sizeof(row));
    cpd_project(&f, 0, 1, CPD_GRID_LSQ);
    assert_true(f.scale[0][0] == 10.0 && f.f[0][0] == 0.0 && f.f[0][3] == 10.0);
    /* {4, 4, 4, 10} at qmax 3: max-abs scale 10/3 rounds 4 to 1 (error 3 * (4 - 10/3)^2 = 4/3); the
     * least-squares scale of levels {1, 1, 1, 3} is (12 + 30) / 12 = 3.5 (error 3 * 0.25 + 0.25 = 1),
     * and 3.5 rounds to the same levels: done */
    const double row2[4] = {4, 4, 4, 10};
    memcpy(f.f[0], row2, sizeof(row2));
    cpd_project(&f, 0, 3, CPD_GRID_LSQ);
    assert_true(f.scale[0][0] == 3.5 && f.f[0][0] == 3.5 && f.f[0][3] == 10.5);
    cpd_factors_free(&f);
}

/* Layer-like tensors: smooth (low-rank-ish) plus noise, as trained conv weights are. */
static void test_admm_never_worse(void **state)
{
    (void)state;
    struct { int n, dims[4], R; } cases[] = {
        {4, {16, 8, 3, 3}, 6}, {4, {8, 16, 3, 3}, 12}, {3, {12, 10, 5}, 5}, {2, {24, 20}, 6}, {4, {6, 4, 3, 3}, 20},
    };
    const int bits[] = {2, 3, 4, 8};
    int strictly = 0, total = 0;
    for (size_t c = 0; c < sizeof(cases) / sizeof(cases[0]); c++)
        for (size_t b = 0; b < sizeof(bits) / sizeof(bits[0]); b++) {
            const int n = cases[c].n, R = cases[c].R;
            double *t = rank_r_tensor(n, cases[c].dims, R + 2, 300 + c);
            cpd_factors f;
            cpd_factors_init(&f, n, cases[c].dims, R);
            cpd_als(t, &f, 300, 1e-10, 0.0, 3);
            /* the baseline: ALS rounded to the grid */
            int qmax[4];
            for (int m = 0; m < n; m++) qmax[m] = model_qmax(bits[b]);
            cpd_factors base;
            cpd_factors_copy(&base, &f);
            for (int m = 0; m < n; m++) cpd_project(&base, m, qmax[m], CPD_GRID_MAXABS);
            const double e_base = cpd_rel_error(t, &base);
            cpd_admm_info info = {.sweeps = 30, .inner = 10, .grid = b % 2 ? CPD_GRID_LSQ : CPD_GRID_MAXABS};
            const double e = cpd_admm(t, &f, qmax, &info);
            assert_true(fabs(info.err_start - e_base) <= 1e-12 * (1 + e_base));
            assert_true(e <= e_base);
            assert_true(fabs(cpd_rel_error(t, &f) - e) <= 1e-12);
            check_on_grid(&f, qmax, info.grid == CPD_GRID_MAXABS);
            total++;
            if (e < e_base * 0.999) strictly++;
            cpd_factors_free(&base);
            cpd_factors_free(&f);
            free(t);
        }
    fprintf(stderr, "ADMM strictly below CP-ALS + RTN on %d of %d cases\n", strictly, total);
    assert_true(strictly * 4 >= total * 3);
}

static void test_degenerate(void **state)
{
    (void)state;
    const int dims[4] = {3, 2, 3, 1}, R = 9;
    double t[18] = {0};
    cpd_factors f;
    cpd_factors_init(&f, 4, dims, R);
    const double e0 = cpd_als(t, &f, 20, 1e-12, 0.0, 1);
    assert_true(e0 < 1e-6);
    /* rank above every dim, a non-zero tensor */
    for (int i = 0; i < 18; i++) t[i] = (double)(i % 5) - 2.0;
    const double e1 = cpd_als(t, &f, 500, 1e-14, 0.0, 1);
    assert_true(e1 < 1e-6);
    const int qmax[4] = {7, 7, 7, 7};
    cpd_admm_info info = {.sweeps = 5, .inner = 5, .grid = CPD_GRID_LSQ};
    const double e2 = cpd_admm(t, &f, qmax, &info);
    assert_true(isfinite(e2) && e2 <= info.err_start);
    cpd_factors_free(&f);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_als_exact),
        cmocka_unit_test(test_project),
        cmocka_unit_test(test_admm_never_worse),
        cmocka_unit_test(test_degenerate),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
