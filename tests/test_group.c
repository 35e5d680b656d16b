/*
 * test_group.c: the subcomponent choices on small hand-checked cases:
 * layer round robin (never crossing a layer, wrapping), random (distinct,
 * in range, a function of the stream only), confidence (least confident
 * first, ties by index, frozen weights skipped, 0 when all are frozen; the
 * bounded selection equal to a full sort on a random state), and
 * layer_confidence (the Weyl turns, hand-checked; a frozen layer's turn
 * passing on).
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
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
    assert_int_equal(eda_init(&e, 6, 1, base, NULL, qmax, 52429, 0, &err), CCQ_OK);
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

static void test_confidence_layer(void **state)
{
    (void)state;
    /* the Weyl step for 6 weights: 0.618 * 6 = 3.7 -> 3 (gcd 3), 4 (gcd 2), 5 */
    assert_int_equal(group_weyl_step(6), 5);
    assert_int_equal(group_weyl_step(1), 1);
    const int8_t base[6] = {0, 1, 2, 3, -3, 7}, qmax[6] = {7, 7, 7, 7, 7, 7};
    const int64_t start[3] = {0, 2, 6}; /* layer 0: weights 0-1; layer 1: weights 2-5 */
    eda_state e;
    ccq_err err;
    assert_int_equal(eda_init(&e, 6, 1, base, NULL, qmax, 52429, 0, &err), CCQ_OK);
    const int64_t idx[3] = {0, 2, 4};
    const int8_t elite[2 * 3] = {0, 2, -2, 0, 2, -4};
    eda_update(&e, idx, 3, elite, 2, 32768); /* as in test_confidence: w0, w2 0.9; w4 0.4; w5 52429; w1, w3 52430 */
    int64_t out[6];
    /* turns: positions 5 * gen mod 6 = 0, 5, 4, 3, 2, 1 -> layers 0, 1, 1, 1, 1, 0 (2 of 6 turns for 2 of 6 weights) */
    static const int layer_of_gen[6] = {0, 1, 1, 1, 1, 0};
    for (int gen = 0; gen < 6; gen++) {
        const int m = group_confidence_layer(&e, start, 2, GROUP_TURNS_WEIGHTS, EDA_ONE, 3, 0, gen, out);
        if (layer_of_gen[gen] == 0)
            expect_seq(out, m, (const int64_t[]){1, 0}, 2);
        else
            expect_seq(out, m, (const int64_t[]){4, 5, 3}, 3);
    }
    /* equal turns: shares 1 and 1, step 1: layers 0, 1, 0, 1 ...; sqrt turns: shares 1 and 2, step 1: 0, 1, 1, 0 ... */
    assert_int_equal(group_turn_share(4, GROUP_TURNS_SQRT), 2);
    assert_int_equal(group_turn_share(8, GROUP_TURNS_SQRT), 2);
    assert_int_equal(group_turn_share(9, GROUP_TURNS_SQRT), 3);
    assert_int_equal(group_turn_share(9, GROUP_TURNS_EQUAL), 1);
    for (int gen = 0; gen < 6; gen++) {
        int m = group_confidence_layer(&e, start, 2, GROUP_TURNS_EQUAL, EDA_ONE, 3, 0, gen, out);
        assert_int_equal(m, gen % 2 == 0 ? 2 : 3);
        m = group_confidence_layer(&e, start, 2, GROUP_TURNS_SQRT, EDA_ONE, 3, 0, gen, out);
        assert_int_equal(m, gen % 3 == 0 ? 2 : 3);
    }
    /* freezing at 0.85 leaves weight 1 alone in layer 0 */
    int m = group_confidence_layer(&e, start, 2, GROUP_TURNS_WEIGHTS, 55706, 3, 0, 0, out);
    expect_seq(out, m, (const int64_t[]){1}, 1);
    /* freezing at 52430 freezes all of layer 0: its turn goes to the next layer */
    m = group_confidence_layer(&e, start, 2, GROUP_TURNS_WEIGHTS, 52430, 3, 0, 0, out);
    expect_seq(out, m, (const int64_t[]){4, 5}, 2);
    assert_int_equal(group_confidence_layer(&e, start, 2, GROUP_TURNS_WEIGHTS, 1, 3, 0, 0, out), 0);
    /* group_fraction: half of a layer, at least G = 1: 2 of layer 1's 4 weights, 1 of layer 0's 2 */
    m = group_confidence_layer(&e, start, 2, GROUP_TURNS_WEIGHTS, EDA_ONE, 1, 32768, 1, out);
    expect_seq(out, m, (const int64_t[]){4, 5}, 2);
    m = group_confidence_layer(&e, start, 2, GROUP_TURNS_WEIGHTS, EDA_ONE, 1, 32768, 0, out);
    expect_seq(out, m, (const int64_t[]){1}, 1);
    assert_int_equal(group_layer_size(256, 36864, 6554), 3687); /* 3686.6 rounded up */
    assert_int_equal(group_layer_size(256, 2304, 6554), 256);   /* 230.5: G is the floor */
    assert_int_equal(group_layer_size(256, 144, 6554), 144);    /* never more than the layer */
    assert_int_equal(group_layer_size(3, 10, 0), 3);
    eda_free(&e);
}

static int cmp_pair(const void *a, const void *b)
{
    const int64_t *x = a, *y = b;
    if (x[0] != y[0]) return x[0] < y[0] ? -1 : 1;
    return (x[1] > y[1]) - (x[1] < y[1]);
}

/* The bounded selection of the G least confident equals sorting every weight, on a random state. */
static void test_confidence_selection(void **state)
{
    (void)state;
    enum { N = 3000 };
    int8_t *base = test_malloc(N), *qmax = test_malloc(N);
    rng_pcg32 r;
    rng_init(&r, 20261202, 7);
    for (int i = 0; i < N; i++) base[i] = (int8_t)((int)rng_bounded(&r, 3) - 1), qmax[i] = 1;
    eda_state e;
    ccq_err err;
    assert_int_equal(eda_init(&e, N, 1, base, NULL, qmax, 52429, 0, &err), CCQ_OK);
    int64_t idx[64];
    int8_t elite[4 * 64];
    for (int rep = 0; rep < 200; rep++) { /* random updates make many distinct and many tied confidences */
        for (int t = 0; t < 64; t++) idx[t] = (int64_t)rng_bounded(&r, N);
        for (int t = 0; t < 64; t++) idx[t] = (idx[t] / 64) * 64 + t % 64 < N ? (idx[t] / 64) * 64 + t % 64 : t;
        eda_sample(&e, idx, 64, &r, elite);
        eda_sample(&e, idx, 64, &r, elite + 64);
        eda_update(&e, idx, 64, elite, 2, 16384);
    }
    int64_t *pairs = test_malloc(sizeof(int64_t) * 2 * N), *out = test_malloc(sizeof(int64_t) * N);
    static const uint32_t freezes[] = {EDA_ONE, 60000, 52430};
    static const int Gs[] = {1, 7, 256, N};
    for (size_t f = 0; f < 3; f++)
        for (size_t g = 0; g < 4; g++) {
            int k = 0;
            for (int w = 0; w < N; w++)
                if (eda_confidence(&e, w) < freezes[f]) pairs[2 * k] = eda_confidence(&e, w), pairs[2 * k + 1] = w, k++;
            qsort(pairs, (size_t)k, 2 * sizeof(int64_t), cmp_pair);
            const int m = group_confidence(&e, freezes[f], Gs[g], out);
            assert_int_equal(m, k < Gs[g] ? k : Gs[g]);
            for (int t = 0; t < m; t++) assert_int_equal(out[t], pairs[2 * t + 1]);
        }
    test_free(base), test_free(qmax), test_free(pairs), test_free(out);
    eda_free(&e);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_layer),
        cmocka_unit_test(test_random),
        cmocka_unit_test(test_confidence),
        cmocka_unit_test(test_confidence_layer),
        cmocka_unit_test(test_confidence_selection),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
