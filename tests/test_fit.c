/*
 * test_fit.c: the fixed-point fitness against float arithmetic. The tables
 * against libm, exp and log primitives over their ranges, cross-entropy of
 * random int32 logits at random scales within 1e-4 nats of the float value,
 * hand-checked cases, accuracy ties, distillation, and one pinned value
 * (the fitness is part of the reproducibility contract: it must not drift).
 */
#include <math.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>

#include <cmocka.h>

#include "ccq/fit.h"
#include "ccq/rng.h"
#include "fit_tables.h"

static const uint64_t k_seed = 77;

static void test_tables(void **state)
{
    (void)state;
    for (int n = 0; n < 23; n++) assert_true(llabs(k_exp_int[n] - llround(exp(-n) * 1073741824.0)) <= 1);
    for (int i = 0; i < 256; i++) {
        assert_true(llabs(k_exp_hi[i] - llround(exp(-i / 256.0) * 1073741824.0)) <= 1);
        assert_true(llabs(k_exp_lo[i] - llround(exp(-i / 65536.0) * 1073741824.0)) <= 1);
    }
    for (int i = 0; i <= 256; i++) assert_true(llabs(k_log1p[i] - llround(log1p(i / 256.0) * 1073741824.0)) <= 1);
}

static void test_primitives(void **state)
{
    (void)state;
    for (int64_t d = -23 * 65536; d <= 0; d += 97) {
        const double want = exp((double)d / 65536.0) * 1073741824.0;
        if (fabs((double)fit_exp_q30(d) - want) > 4.0 + want * 1e-8) {
            print_error("exp(%lld/65536): %lld vs %.1f\n", (long long)d, (long long)fit_exp_q30(d), want);
            fail();
        }
    }
    assert_int_equal(fit_exp_q30(0), 1 << 30);
    assert_int_equal(fit_exp_q30(5), 1 << 30);
    rng_pcg32 r;
    rng_init(&r, k_seed, 1);
    for (int i = 0; i < 100000; i++) {
        const uint64_t s = ((uint64_t)1 << 30) + (((uint64_t)rng_next(&r) << 20) ^ rng_next(&r)) % ((uint64_t)1 << 47);
        const double want = log((double)s / 1073741824.0);
        if (fabs((double)fit_log_q16(s) / 65536.0 - want) > 1.5e-5) {
            print_error("log(%llu / 2^30): %.7f vs %.7f\n", (unsigned long long)s, fit_log_q16(s) / 65536.0, want);
            fail();
        }
    }
}

static double float_xent(const int32_t *l, int c, int label, double scale)
{
    double mx = -INFINITY, s = 0;
    for (int k = 0; k < c; k++) mx = fmax(mx, l[k] * scale);
    for (int k = 0; k < c; k++) s += exp(l[k] * scale - mx);
    return log(s) + mx - l[label] * scale;
}

static void test_xent_vs_float(void **state)
{
    (void)state;
    rng_pcg32 r;
    rng_init(&r, k_seed, 2);
    int32_t l[100];
    double worst = 0;
    for (int t = 0; t < 20000; t++) {
        const int c = 2 + (int)rng_bounded(&r, 99);
        const double scale = pow(10.0, -4.0 + 3.0 * rng_bounded(&r, 1000) / 1000.0); /* 1e-4 .. 1e-1 */
        const uint32_t range = 1u + rng_bounded(&r, (uint32_t)(60.0 / scale) + 1); /* logits within +-60 nats */
        for (int k = 0; k < c; k++) l[k] = (int32_t)rng_bounded(&r, 2 * range + 1) - (int32_t)range;
        const int label = (int)rng_bounded(&r, (uint32_t)c);
        fit_ctx f;
        ccq_err err;
        assert_int_equal(fit_init(&f, c, scale, &err), CCQ_OK);
        const double got = fit_xent_one(&f, l, label) / 65536.0, want = float_xent(l, c, label, scale);
        const double d = fabs(got - want);
        if (d > worst) worst = d;
        if (d > 1e-4) {
            print_error("case %d: classes %d scale %g: %.7f vs float %.7f (seed %llu)\n", t, c, scale, got, want,
                        (unsigned long long)k_seed);
            fail();
        }
    }
    printf("worst |fixed - float| cross-entropy: %.2e nats\n", worst);
}

static void test_hand_cases(void **state)
{
    (void)state;
    fit_ctx f;
    ccq_err err;
    assert_int_equal(fit_init(&f, 2, 0.01, &err), CCQ_OK);
    const int32_t eq[2] = {500, 500};
    assert_true(llabs(fit_xent_one(&f, eq, 0) - 45426) <= 1); /* ln 2 = 0.693147 nats */
    const int32_t far[2] = {5000, -5000};                      /* 100 nats apart */
    assert_int_equal(fit_xent_one(&f, far, 0), 0);
    assert_true(llabs(fit_xent_one(&f, far, 1) - 100 * 65536) <= 1);
    /* pinned: the exact integer for fixed logits */
    fit_ctx g;
    assert_int_equal(fit_init(&g, 4, 0.00495633, &err), CCQ_OK);
    const int32_t l4[4] = {1200, -300, 951, 17};
    assert_int_equal(fit_xent_one(&g, l4, 2), 97797); /* float: 1.4922671 nats = 97797.2 */
    /* accuracy: ties go to the lowest index */
    const int32_t two[4] = {3, 3, 1, 7};
    const int32_t labels[2] = {0, 1}, ones[2] = {1, 1};
    assert_int_equal(fit_correct(&f, two, 2, labels), 2);
    assert_int_equal(fit_correct(&f, two, 2, ones), 1); /* the tie {3, 3} is class 0, not 1 */
    assert_int_equal(fit_xent(&f, eq, 1, labels), fit_xent_one(&f, eq, 0));
}

static void test_distill(void **state)
{
    (void)state;
    fit_ctx f;
    ccq_err err;
    assert_int_equal(fit_init(&f, 3, 0.02, &err), CCQ_OK);
    const int32_t l[3] = {100, -40, 70};
    /* a one-hot teacher is plain cross-entropy with that label */
    const int32_t onehot[3] = {0, 0, 65536};
    assert_true(llabs(fit_distill_one(&f, l, onehot) - fit_xent_one(&f, l, 2)) <= 1);
    /* teacher probabilities sum to one and follow the softmax */
    const float tl[3] = {2.0f, 0.0f, 1.0f};
    int32_t p[3];
    fit_teacher_probs(&f, tl, p);
    assert_true(llabs((int64_t)p[0] + p[1] + p[2] - 65536) <= 2);
    const double s = exp(2.0) + 1.0 + exp(1.0);
    assert_true(fabs(p[0] / 65536.0 - exp(2.0) / s) < 2e-5);
    assert_true(fabs(p[1] / 65536.0 - 1.0 / s) < 2e-5);
    /* the student that equals the teacher has the lowest distillation loss among these */
    const int32_t same[3] = {100, 0, 50}, other[3] = {0, 100, 50}; /* scale 0.02: 2.0, 0.0, 1.0 nats */
    assert_true(fit_distill_one(&f, same, p) < fit_distill_one(&f, other, p));
}

static void test_bad_scale(void **state)
{
    (void)state;
    fit_ctx f;
    ccq_err err;
    assert_int_equal(fit_init(&f, 10, 0.0, &err), CCQ_ERR_LIMIT);
    assert_int_equal(fit_init(&f, 1, 0.01, &err), CCQ_ERR_LIMIT);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_tables),     cmocka_unit_test(test_primitives), cmocka_unit_test(test_xent_vs_float),
        cmocka_unit_test(test_hand_cases), cmocka_unit_test(test_distill),    cmocka_unit_test(test_bad_scale),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
