/*
 * test_lq.c: learned levels (lq_): the alternating fit on Gaussian weights
 * against uniform grids, the int8 codebook and its tie repair, nearest-value
 * ties, a node's codebooks (all-zero and constant channels included),
 * determinism, quant_model's refusal of learned levels outside 2..4 bits,
 * and GPTQ over a codebook (gptq_layer_codebook).
 *
 * Hand case of the fit: w = {-3, -1, 1, 3, -3, 1} at 2 bits is exactly the
 * range start's grid (v = (1, 2), levels -3, -1, 1, 3): error 0, and the
 * codebook at scale 3 / LQ_CODE_MAX is -LQ_CODE_MAX, -LQ_CODE_MAX / 3
 * rounded, its mirror, LQ_CODE_MAX.
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

#include "ccq/gptq.h"
#include "ccq/lq.h"
#include "ccq/quant.h"
#include "ccq/rng.h"

static const uint64_t k_seed = 11;

static double uniform01(rng_pcg32 *r) { return ((double)rng_next(r) + 0.5) / 4294967296.0; }

/* Standard normal (Box-Muller). */
static double gauss(rng_pcg32 *r)
{
    const double u = uniform01(r), v = uniform01(r);
    return sqrt(-2.0 * log(u)) * cos(6.283185307179586 * v);
}

/* Smallest squared error of nearest rounding to a * grid[] over a fine sweep of a. */
static double best_grid_error(const float *w, int n, const double *grid, int ng, double sigma)
{
    double best = INFINITY;
    for (int t = 1; t <= 2000; t++) {
        const double a = sigma * 4.0 * t / 2000.0;
        double e = 0;
        for (int i = 0; i < n; i++) {
            double d = INFINITY;
            for (int g = 0; g < ng; g++) d = fmin(d, fabs(w[i] - a * grid[g]));
            e += d * d;
        }
        best = fmin(best, e);
    }
    return best;
}

/* On Gaussian weights: the error never increases along the fit, the levels
 * ascend, and the fit beats the best-scaled symmetric uniform grid of the
 * same width (ternary at 2 bits) and the best-scaled 2^bits-level grid. */
static void test_fit_gaussian(void **state)
{
    (void)state;
    enum { N = 1500 };
    static float w[N];
    rng_pcg32 r;
    for (int bits = 2; bits <= MODEL_CODEBOOK_MAX_BITS; bits++) {
        for (int trial = 0; trial < 3; trial++) {
            rng_init_keyed(&r, k_seed, (uint64_t)bits, (uint64_t)trial, 0);
            const double sigma = 0.05 * (trial + 1);
            for (int i = 0; i < N; i++) w[i] = (float)(sigma * gauss(&r));
            double lv[1 << MODEL_CODEBOOK_MAX_BITS];
            lq_fit_info info;
            const double err = lq_fit(w, N, bits, lv, &info);
            const int nl = 1 << bits;
            for (int c = 1; c < nl; c++) assert_true(lv[c] >= lv[c - 1]);
            assert_true(info.steps >= 1 && info.steps <= LQ_MAX_ITERS);
            assert_true(err == info.err);
            for (int t = 1; t <= info.steps; t++) {
                if (info.trace[t] > info.trace[t - 1] * (1 + 1e-12))
                    fprintf(stderr, "seed %llu bits %d trial %d: error rose at step %d: %.17g -> %.17g\n",
                            (unsigned long long)k_seed, bits, trial, t, info.trace[t - 1], info.trace[t]);
                assert_true(info.trace[t] <= info.trace[t - 1] * (1 + 1e-12));
                assert_true(err <= info.trace[t]);
            }
            double sym[255], odd[16];
            const int qmax = model_qmax(bits);
            for (int q = -qmax; q <= qmax; q++) sym[q + qmax] = q;
            for (int c = 0; c < nl; c++) odd[c] = 2 * c - (nl - 1);
            const double e_sym = best_grid_error(w, N, sym, 2 * qmax + 1, sigma);
            const double e_odd = best_grid_error(w, N, odd, nl, sigma);
            if (!(err <= e_sym && err <= e_odd * (1 + 1e-9)))
                fprintf(stderr, "seed %llu bits %d trial %d: LQ %g, uniform %d levels %g, %d levels %g\n",
                        (unsigned long long)k_seed, bits, trial, err, 2 * qmax + 1, e_sym, nl, e_odd);
            assert_true(err <= e_sym);
            assert_true(err <= e_odd * (1 + 1e-9));
            /* at 2 bits four levels against three: strictly better than ternary */
            if (bits == 2) assert_true(err < 0.9 * e_sym);
        }
    }
}

static void test_fit_hand(void **state)
{
    (void)state;
    const float w[6] = {-3, -1, 1, 3, -3, 1};
    double lv[4];
    lq_fit_info info;
    assert_true(lq_fit(w, 6, 2, lv, &info) == 0.0);
    assert_true(lv[0] == -3 && lv[1] == -1 && lv[2] == 1 && lv[3] == 3);
    int8_t cb[4];
    float s;
    lq_round_codebook(lv, 4, cb, &s);
    assert_true(s == (float)(3.0 / LQ_CODE_MAX));
    const int third = (int)lround(LQ_CODE_MAX / 3.0);
    assert_int_equal(cb[0], -LQ_CODE_MAX);
    assert_int_equal(cb[1], -third);
    assert_int_equal(cb[2], third);
    assert_int_equal(cb[3], LQ_CODE_MAX);
}

/* Rounding to int8 and the repair of ties, upwards then (past the top) downwards. */
static void test_round_codebook(void **state)
{
    (void)state;
    const int M = LQ_CODE_MAX;
    int8_t cb[4];
    float s;
    const double zero[4] = {0, 0, 0, 0};
    lq_round_codebook(zero, 4, cb, &s);
    assert_true(s == 1.0f);
    for (int c = 0; c < 4; c++) assert_int_equal(cb[c], c);
    const double mid[4] = {-1, -1e-9, 1e-9, 1};
    lq_round_codebook(mid, 4, cb, &s);
    assert_int_equal(cb[0], -M);
    assert_int_equal(cb[1], 0);
    assert_int_equal(cb[2], 1);
    assert_int_equal(cb[3], M);
    const double top[4] = {-1, 0.999, 0.9995, 1};
    lq_round_codebook(top, 4, cb, &s);
    assert_int_equal(cb[0], -M);
    assert_int_equal(cb[1], M - 2);
    assert_int_equal(cb[2], M - 1);
    assert_int_equal(cb[3], M);
}

static void test_nearest(void **state)
{
    (void)state;
    const int8_t cb[4] = {-3, -1, 1, 3};
    assert_int_equal(lq_nearest(cb, 4, 0.0), 1);   /* halfway: the lower */
    assert_int_equal(lq_nearest(cb, 4, 2.0), 2);
    assert_int_equal(lq_nearest(cb, 4, -2.0), 0);
    assert_int_equal(lq_nearest(cb, 4, 1e-9), 2);
    assert_int_equal(lq_nearest(cb, 4, -50.0), 0);
    assert_int_equal(lq_nearest(cb, 4, 50.0), 3);
    assert_int_equal(lq_nearest(cb, 4, 1.0), 2);
    assert_int_equal(lq_nearest(cb, 1, 7.0), 0);
}

enum { COUT = 5, PER = 40 };

/* A linear node [COUT][PER]: Gaussian rows 0 and 3, row 1 all zero, row 2
 * the constant 0.7, row 4 the constant -0.2. */
static void make_node(model_node *nd, int bits)
{
    memset(nd, 0, sizeof *nd);
    nd->op = MODEL_OP_LINEAR;
    nd->shape.rank = 1, nd->shape.c = COUT, nd->shape.h = nd->shape.w = 1;
    nd->n_weight = COUT * PER;
    nd->bits = bits;
    nd->weight = ccq_malloc(sizeof(float) * COUT * PER);
    nd->levels = ccq_malloc(COUT * PER);
    nd->wscale = ccq_malloc(sizeof(float) * COUT);
    rng_pcg32 r;
    rng_init_keyed(&r, k_seed, 100, (uint64_t)bits, 0);
    for (int k = 0; k < PER; k++) {
        nd->weight[0 * PER + k] = (float)(0.1 * gauss(&r));
        nd->weight[1 * PER + k] = 0.0f;
        nd->weight[2 * PER + k] = 0.7f;
        nd->weight[3 * PER + k] = (float)(2.0 * gauss(&r));
        nd->weight[4 * PER + k] = -0.2f;
    }
}

static void free_node(model_node *nd) { ccq_free(nd->weight), ccq_free(nd->levels), ccq_free(nd->wscale), ccq_free(nd->codebook); }

static void test_node(void **state)
{
    (void)state;
    for (int bits = 2; bits <= MODEL_CODEBOOK_MAX_BITS; bits++) {
        model_node nd;
        make_node(&nd, bits);
        lq_quantize_node(&nd);
        const int n = model_ncodes(&nd);
        assert_non_null(nd.codebook);
        assert_int_equal(model_node_wmax(&nd), LQ_CODE_MAX);
        for (int o = 0; o < COUT; o++) {
            const int8_t *cb = nd.codebook + o * n;
            for (int c = 0; c < n; c++) {
                assert_true(cb[c] >= -127 && cb[c] <= 127);
                if (c > 0) assert_true(cb[c] > cb[c - 1]);
            }
            const double s = nd.wscale[o];
            assert_true(isfinite(s) && s > 0);
            for (int k = 0; k < PER; k++) {
                const int v = nd.levels[o * PER + k];
                assert_true(model_code_of(&nd, o, v) >= 0);
                /* the nearest value: none strictly closer */
                const double x = nd.weight[o * PER + k] / s;
                for (int c = 0; c < n; c++) assert_true(fabs(x - v) <= fabs(x - cb[c]));
            }
        }
        /* all-zero channel: exact zeros; constant channels: their outer level, exact to float rounding */
        for (int k = 0; k < PER; k++) {
            assert_int_equal(nd.levels[1 * PER + k], 0);
            assert_true(fabs(nd.wscale[2] * nd.levels[2 * PER + k] - 0.7) < 1e-6);
            assert_true(fabs(nd.wscale[4] * nd.levels[4 * PER + k] + 0.2) < 1e-6);
        }
        free_node(&nd);
    }
}

/* The same node twice gives the same bytes. */
static void test_deterministic(void **state)
{
    (void)state;
    model_node a, b;
    make_node(&a, 3);
    make_node(&b, 3);
    lq_quantize_node(&a);
    lq_quantize_node(&b);
    assert_memory_equal(a.codebook, b.codebook, COUT * 8);
    assert_memory_equal(a.levels, b.levels, COUT * PER);
    assert_memory_equal(a.wscale, b.wscale, sizeof(float) * COUT);
    free_node(&a);
    free_node(&b);
}

/* Learned levels exist for 2..MODEL_CODEBOOK_MAX_BITS only: refused before anything is read. */
static void test_quant_refuses(void **state)
{
    (void)state;
    quant_config qc;
    quant_config_default(&qc);
    qc.level_rule = QUANT_LEVELS_LEARNED;
    model src, dst;
    memset(&src, 0, sizeof src);
    memset(&dst, 0, sizeof dst);
    ccq_err err;
    const int bad[3] = {1, MODEL_CODEBOOK_MAX_BITS + 1, 8};
    for (int i = 0; i < 3; i++) {
        qc.wbits = bad[i];
        assert_int_equal(quant_model(&src, NULL, &qc, &dst, &err), CCQ_ERR_USAGE);
        assert_non_null(strstr(err.msg, "learned levels need weight bits 2 to"));
    }
}

/* GPTQ over codebooks: every level in its row's codebook; a diagonal Hessian
 * is nearest-value rounding exactly; on correlated inputs the layer-output
 * error is not above nearest-value rounding's. */
static void test_gptq_codebook(void **state)
{
    (void)state;
    enum { ROWS = 6, K = 20, N = 150, NC = 8 };
    static double X[N * K], H[K * K], Hd[K * K], W[ROWS * K];
    static float wf[K];
    double s[ROWS], lv[NC];
    int8_t cb[ROWS * NC], q[ROWS * K], near[ROWS * K];
    rng_pcg32 r;
    for (int t = 0; t < 8; t++) {
        rng_init_keyed(&r, k_seed, 200, (uint64_t)t, 0);
        for (int i = 0; i < N; i++) {
            const double common = gauss(&r);
            for (int k = 0; k < K; k++) X[i * K + k] = common + 0.4 * gauss(&r);
        }
        memset(Hd, 0, sizeof Hd);
        for (int a = 0; a < K; a++)
            for (int b = 0; b < K; b++) {
                double v = 0;
                for (int i = 0; i < N; i++) v += X[i * K + a] * X[i * K + b];
                H[a * K + b] = v;
                if (a == b) Hd[a * K + b] = v;
            }
        for (int o = 0; o < ROWS; o++) {
            for (int k = 0; k < K; k++) W[o * K + k] = wf[k] = (float)(0.3 * gauss(&r));
            lq_fit(wf, K, 3, lv, NULL);
            float sf;
            lq_round_codebook(lv, NC, cb + o * NC, &sf);
            s[o] = sf;
            for (int k = 0; k < K; k++) near[o * K + k] = cb[o * NC + lq_nearest(cb + o * NC, NC, W[o * K + k] / s[o])];
        }
        gptq_config c;
        gptq_config_default(&c);
        ccq_err err;
        assert_int_equal(gptq_layer_codebook(W, Hd, ROWS, K, s, cb, NC, &c, q, &err), CCQ_OK);
        assert_memory_equal(q, near, sizeof q);
        assert_int_equal(gptq_layer_codebook(W, H, ROWS, K, s, cb, NC, &c, q, &err), CCQ_OK);
        for (int o = 0; o < ROWS; o++)
            for (int k = 0; k < K; k++) {
                int found = 0;
                for (int j = 0; j < NC; j++) found |= q[o * K + k] == cb[o * NC + j];
                assert_true(found);
            }
        double eg[ROWS], en[ROWS], tg = 0, tn = 0;
        gptq_row_error(W, H, ROWS, K, s, q, eg);
        gptq_row_error(W, H, ROWS, K, s, near, en);
        for (int o = 0; o < ROWS; o++) tg += eg[o], tn += en[o];
        if (!(tg <= tn)) fprintf(stderr, "seed %llu problem %d: GPTQ %g, nearest %g\n", (unsigned long long)k_seed, t, tg, tn);
        assert_true(tg <= tn);
    }
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_fit_gaussian),  cmocka_unit_test(test_fit_hand),      cmocka_unit_test(test_round_codebook),
        cmocka_unit_test(test_nearest),       cmocka_unit_test(test_node),          cmocka_unit_test(test_deterministic),
        cmocka_unit_test(test_quant_refuses), cmocka_unit_test(test_gptq_codebook),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
