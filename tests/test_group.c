/*
 * test_group.c: the subcomponent choices on small hand-checked cases:
 * layer round robin (never crossing a layer, wrapping), random (distinct,
 * in range, a function of the stream only), confidence (least confident
 * first, ties by index, frozen weights skipped, 0 when all are frozen).
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <string.h>

#include <cmocka.h>

#include "ccq/group.h"

static void expect_seq(const int64_t *got, int m, const int64_t *want, int n)
{
    assert_int_equal(m, n);
    for (int t = 0; t < n; t++) assert_int_equal(got[t], want[t]);
}

static void test_layer(void **state)
{
    (void)state;
    const int64_t start[4] = {0, 3, 10, 12}; /* layers of 3, 7 and 2 weights */
    int64_t cur = 0, out[8];
    int m = group_layer(start, 3, 4, &cur, out);
    expect_seq(out, m, (const int64_t[]){0, 1, 2}, 3); /* stops at the layer's end */
    m = group_layer(start, 3, 4, &cur, out);
    expect_seq(out, m, (const int64_t[]){3, 4, 5, 6}, 4);
    m = group_layer(start, 3, 4, &cur, out);
    expect_seq(out, m, (const int64_t[]){7, 8, 9}, 3);
    m = group_layer(start, 3, 4, &cur, out);
    expect_seq(out, m, (const int64_t[]){10, 11}, 2);
    assert_int_equal(cur, 0); /* wrapped */
    m = group_layer(start, 3, 4, &cur, out);
    expect_seq(out, m, (const int64_t[]){0, 1, 2}, 3);
    cur = 5;
    m = group_layer(start, 3, 8, &cur, out);
    expect_seq(out, m, (const int64_t[]){5, 6, 7, 8, 9}, 5);
    assert_int_equal(cur, 10);
}

static void test_random(void **state)
{
    (void)state;
    int64_t a[16], b[16];
    rng_pcg32 r1, r2;
    rng_init_keyed(&r1, 7, 3, 0, 3);
    rng_init_keyed(&r2, 7, 3, 0, 3);
    int m1 = group_random(100, 16, &r1, a), m2 = group_random(100, 16, &r2, b);
    assert_int_equal(m1, 16);
    assert_int_equal(m2, 16);
    assert_memory_equal(a, b, sizeof a); /* a function of the stream */
    for (int t = 0; t < 16; t++) {
        assert_true(a[t] >= 0 && a[t] < 100);
        for (int u = 0; u < t; u++) assert_true(a[u] != a[t]);
    }
    rng_init_keyed(&r2, 7, 4, 0, 3); /* another generation, another subcomponent */
    group_random(100, 16, &r2, b);
    assert_memory_not_equal(a, b, sizeof a);
    /* G >= n: every weight once */
    int64_t all[5];
    int seen[5] = {0};
    rng_init_keyed(&r1, 1, 1, 0, 3);
    assert_int_equal(group_random(5, 9, &r1, all), 5);
    for (int t = 0; t < 5; t++) seen[all[t]]++;
    for (int w = 0; w < 5; w++) assert_int_equal(seen[w], 1);
}

static void test_confidence(void **state)
{
    (void)state;
    /* 6 weights at 4 bits, radius 1, 0.8 on the centre: weight 5 sits at the
     * grid's edge (level 7), so its confidence is 52429 against 52430. */
    const int8_t base[6] = {0, 1, 2, 3, -3, 7}, qmax[6] = {7, 7, 7, 7, 7, 7};
    eda_state e;
    ccq_err err;
    assert_int_equal(eda_init(&e, 6, 1, base, qmax, 52429, 0, &err), CCQ_OK);
    int64_t out[6];
    int m = group_confidence(&e, EDA_ONE, 3, out);
    expect_seq(out, m, (const int64_t[]){5, 0, 1}, 3); /* the edge weight first, then ties by index */
    /* sharpen weights 0 and 2 onto their centre, flatten weight 4 away from it */
    const int64_t idx[3] = {0, 2, 4};
    const int8_t elite[2 * 3] = {0, 2, -2, 0, 2, -4};
    eda_update(&e, idx, 3, elite, 2, 32768); /* alpha 0.5 */
    /* confidences: w0, w2 = 0.5 * 0.8 + 0.5 = 0.9; w4: 0.5 * 0.8 = 0.4 on -3, 0.5 * 0.1 + 0.25 on -2 and -4 */
    assert_true(eda_confidence(&e, 4) < eda_confidence(&e, 5));
    assert_true(eda_confidence(&e, 0) > eda_confidence(&e, 1));
    m = group_confidence(&e, EDA_ONE, 6, out);
    expect_seq(out, m, (const int64_t[]){4, 5, 1, 3, 0, 2}, 6);
    /* freezing at 0.85: weights 0 and 2 (0.9) are never chosen */
    m = group_confidence(&e, 55706, 6, out);
    expect_seq(out, m, (const int64_t[]){4, 5, 1, 3}, 4);
    /* everything frozen */
    assert_int_equal(group_confidence(&e, 1, 6, out), 0);
    eda_free(&e);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_layer),
        cmocka_unit_test(test_random),
        cmocka_unit_test(test_confidence),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
