/*
 * test_gptq.c: one GPTQ problem (gptq_layer, gptq_row_error) on hand-checked
 * cases, and the start's names. The whole-model GPTQ is checked against
 * scripts/gptq.py in test_gptq_oracle.py.
 *
 * Hand case: W = [0.6, 0.65], H = [[2, 1], [1, 2]], scale 1, levels in
 * [-1, 1], no damping, natural order. H^-1 = [[2, -1], [-1, 2]] / 3 has the
 * upper Cholesky factor U = [[sqrt(2/3), -1/sqrt(6)], [0, sqrt(1/2)]]. Column
 * 0 rounds to 1, its error (0.6 - 1) / U00 moves column 1 by -0.4 U01 / U00
 * = -0.2, so column 1 sees 0.45 and rounds to 0: levels [1, 0] where
 * round-to-nearest gives [1, 1]. Errors d H d^T: RTN d = [-0.4, -0.35],
 * 0.845; GPTQ d = [-0.4, 0.65], 0.645.
 */
#include <math.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <string.h>

#include <cmocka.h>

#include "ccq/gptq.h"
#include "ccq/rng.h"

static gptq_config plain(void)
{
    gptq_config c;
    gptq_config_default(&c);
    c.act_order = 0;
    c.damp = 0.0;
    return c;
}

static void test_hand(void **state)
{
    (void)state;
    const double W[2] = {0.6, 0.65}, H[4] = {2, 1, 1, 2}, s[1] = {1.0};
    gptq_config c = plain();
    int8_t q[2];
    ccq_err err;
    assert_int_equal(gptq_layer(W, H, 1, 2, s, 1, &c, q, &err), CCQ_OK);
    assert_int_equal(q[0], 1);
    assert_int_equal(q[1], 0);
    double e;
    gptq_row_error(W, H, 1, 2, s, q, &e);
    assert_true(fabs(e - 0.645) < 1e-12);
    const int8_t rtn[2] = {1, 1};
    gptq_row_error(W, H, 1, 2, s, rtn, &e);
    assert_true(fabs(e - 0.845) < 1e-12);
    /* equal diagonals: act-order keeps the natural order (ties by index) */
    c.act_order = 1;
    assert_int_equal(gptq_layer(W, H, 1, 2, s, 1, &c, q, &err), CCQ_OK);
    assert_int_equal(q[0], 1);
    assert_int_equal(q[1], 0);
    /* act-order with column 1 the larger diagonal (H = [[2, 1], [1, 3]]): it goes first, 0.65 -> 1;
     * the permuted [[3, 1], [1, 2]] has H^-1 = [[2, -1], [-1, 3]] / 5, so U01 / U00 = -1/2 and column 0
     * sees 0.6 - 0.35 / 2 = 0.425 -> 0 */
    const double H2[4] = {2, 1, 1, 3};
    assert_int_equal(gptq_layer(W, H2, 1, 2, s, 1, &c, q, &err), CCQ_OK);
    assert_int_equal(q[1], 1);
    assert_int_equal(q[0], 0);
}

/* A diagonal Hessian feeds no error forward: GPTQ is round-to-nearest,
 * half away from zero, clipped to the grid, at each row's scale. */
static void test_diagonal_is_rtn(void **state)
{
    (void)state;
    const int rows = 3, K = 5;
    const double W[15] = {0.5, -0.5, 1.49, -7.0, 0.0, 0.25, 0.26, -0.24, 3.0, -0.75, 2.5, -2.5, 0.1, 0.9, -0.9};
    const double s[3] = {1.0, 0.5, 2.0};
    const int8_t want[15] = {1, -1, 1, -3, 0, 1, 1, 0, 3, -2, 1, -1, 0, 0, 0};
    double H[25] = {0};
    for (int k = 0; k < K; k++) H[k * K + k] = 1.0 + k;
    gptq_config c;
    gptq_config_default(&c);
    int8_t q[15];
    ccq_err err;
    assert_int_equal(gptq_layer(W, H, rows, K, s, 3, &c, q, &err), CCQ_OK);
    for (int i = 0; i < rows * K; i++) assert_int_equal(q[i], want[i]);
}

/* A column whose input is always zero (a zero diagonal) gets level 0, and
 * the others do not see it. */
static void test_dead_column(void **state)
{
    (void)state;
    const double W[3] = {0.6, 5.0, 0.65};
    const double H[9] = {2, 0, 1, 0, 0, 0, 1, 0, 2};
    const double s[1] = {1.0};
    gptq_config c = plain();
    int8_t q[3];
    ccq_err err;
    assert_int_equal(gptq_layer(W, H, 1, 3, s, 1, &c, q, &err), CCQ_OK);
    assert_int_equal(q[0], 1);
    assert_int_equal(q[1], 0);
    assert_int_equal(q[2], 0);
}

/* A Hessian that is not positive definite (and no damping) is an error, not a crash. */
static void test_not_pd(void **state)
{
    (void)state;
    const double W[2] = {0.6, 0.65}, H[4] = {1, 2, 2, 1}, s[1] = {1.0};
    gptq_config c = plain();
    int8_t q[2];
    ccq_err err;
    assert_int_equal(gptq_layer(W, H, 1, 2, s, 1, &c, q, &err), CCQ_ERR_LIMIT);
    assert_non_null(strstr(err.msg, "positive definite"));
}

/* Random layers (H = X^T X of correlated inputs): GPTQ's layer error is
 * below round-to-nearest's, every level on the grid. */
static void test_random_beats_rtn(void **state)
{
    (void)state;
    const uint64_t seed = 7;
    enum { ROWS = 8, K = 24, N = 200 };
    rng_pcg32 r;
    rng_init_keyed(&r, seed, 0, 0, 0);
    static double X[N * K], H[K * K], W[ROWS * K];
    double s[ROWS];
    for (int t = 0; t < 10; t++) {
        for (int i = 0; i < N; i++) {
            const double common = (double)rng_next(&r) / 4294967296.0 - 0.5;
            for (int k = 0; k < K; k++) X[i * K + k] = common + 0.3 * ((double)rng_next(&r) / 4294967296.0 - 0.5);
        }
        for (int a = 0; a < K; a++)
            for (int b = 0; b < K; b++) {
                double v = 0;
                for (int i = 0; i < N; i++) v += X[i * K + a] * X[i * K + b];
                H[a * K + b] = v;
            }
        for (int o = 0; o < ROWS; o++) {
            double mx = 0;
            for (int k = 0; k < K; k++) {
                W[o * K + k] = (double)rng_next(&r) / 4294967296.0 - 0.5;
                if (fabs(W[o * K + k]) > mx) mx = fabs(W[o * K + k]);
            }
            s[o] = mx / 1.0; /* 2-bit grid {-1, 0, 1} */
        }
        gptq_config c;
        gptq_config_default(&c);
        int8_t q[ROWS * K], rtn[ROWS * K];
        ccq_err err;
        assert_int_equal(gptq_layer(W, H, ROWS, K, s, 1, &c, q, &err), CCQ_OK);
        for (int i = 0; i < ROWS * K; i++) {
            const double v = W[i] / s[i / K];
            rtn[i] = (int8_t)(v >= 0.5 ? 1 : v <= -0.5 ? -1 : 0);
            assert_true(q[i] >= -1 && q[i] <= 1);
        }
        double eg[ROWS], er[ROWS], tg = 0, tr = 0;
        gptq_row_error(W, H, ROWS, K, s, q, eg);
        gptq_row_error(W, H, ROWS, K, s, rtn, er);
        for (int o = 0; o < ROWS; o++) tg += eg[o], tr += er[o];
        if (!(tg < tr)) fprintf(stderr, "seed %llu problem %d: GPTQ %g, RTN %g\n", (unsigned long long)seed, t, tg, tr);
        assert_true(tg < tr);
    }
}

static void test_names(void **state)
{
    (void)state;
    for (int k = 0; k < GPTQ_START_COUNT; k++)
        assert_int_equal(gptq_start_parse(gptq_start_name((gptq_start_kind)k)), k);
    assert_int_equal(gptq_start_parse("GPTQ"), GPTQ_START_COUNT);
    assert_int_equal(gptq_start_parse(""), GPTQ_START_COUNT);
    assert_true(gptq_factor(0) == 0.25);
    assert_true(gptq_factor(1) == 0.3);
    assert_true(gptq_factor(11) == 0.8);
    assert_true(gptq_factor(GPTQ_N_FACTORS - 1) == 1.0);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_hand),       cmocka_unit_test(test_diagonal_is_rtn), cmocka_unit_test(test_dead_column),
        cmocka_unit_test(test_not_pd),     cmocka_unit_test(test_random_beats_rtn), cmocka_unit_test(test_names),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
