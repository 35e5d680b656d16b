/*
 * test_eda.c: fixed-point categorical distributions: initialisation at the
 * grid's edges, sampling frequencies, the PBIL update on a hand-checked case,
 * floors and exact sums under repeated updates, determinism, and the float
 * prior on hand-computed rows.
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <string.h>

#include <cmocka.h>

#include "ccq/eda.h"

static uint32_t row_sum(const eda_state *e, int64_t i)
{
    uint32_t s = 0;
    for (int j = 0; j < e->width; j++) s += e->p[i * e->width + j];
    return s;
}

static void test_init_edges(void **state)
{
    (void)state;
    const int8_t base[4] = {0, 7, -7, 1}, qmax[4] = {7, 7, 7, 1};
    eda_state e;
    ccq_err err;
    assert_int_equal(eda_init(&e, 4, 1, base, NULL, qmax, 52429, 0, &err), CCQ_OK); /* 0.8 at the centre */
    for (int i = 0; i < 4; i++) assert_int_equal(row_sum(&e, i), EDA_ONE);
    assert_int_equal(e.p[0 * 3 + 1], 52430); /* 65536 - 2 * 6553 */
    assert_int_equal(e.p[0 * 3 + 0], 6553);
    assert_int_equal(e.p[1 * 3 + 2], 0);     /* level 8 is off the 4-bit grid */
    assert_int_equal(e.p[1 * 3 + 0], 13107); /* the one other candidate takes it all */
    assert_int_equal(e.p[2 * 3 + 0], 0);     /* level -8 */
    assert_int_equal(e.p[3 * 3 + 2], 0);     /* 2-bit: level 2 is off the grid */
    assert_int_equal(eda_confidence(&e, 0), 52430);
    assert_int_equal(eda_mode(&e, 1), 7);
    eda_free(&e);
    assert_int_equal(eda_init(&e, 4, 0, base, NULL, qmax, 52429, 0, &err), CCQ_ERR_USAGE);
    assert_int_equal(eda_init(&e, 4, 1, base, NULL, qmax, 0, 0, &err), CCQ_ERR_USAGE);
    assert_int_equal(eda_init(&e, 4, 1, base, NULL, qmax, 52429, 8000, &err), CCQ_ERR_USAGE);
}

/* The float prior on hand-computed rows: b = (65536 - 52429) / others, t in Q16. */
static void test_prior_float(void **state)
{
    (void)state;
    const int8_t base[4] = {0, 0, 1, 0}, qmax[4] = {1, 1, 1, 1};
    const int32_t pos[4] = {0, 32768, 65536, -131072}; /* on its level, halfway up, on level 1, at -2 */
    eda_state e;
    ccq_err err;
    assert_int_equal(eda_init(&e, 4, 1, base, NULL, qmax, 52429, 328, &err), CCQ_OK);
    eda_prior_float(&e, pos, 52429);
    for (int i = 0; i < 4; i++) assert_int_equal(row_sum(&e, i), EDA_ONE);
    /* t = 1/2 on both sides: 3 * 6553 / 4 = 4914 each */
    assert_int_equal(e.p[0], 4914), assert_int_equal(e.p[2], 4914), assert_int_equal(e.p[1], 55708);
    /* halfway to +1: t = 1 there (3 * 6553), 0 towards -1 (the floor) */
    assert_int_equal(e.p[3 + 2], 19659), assert_int_equal(e.p[3 + 0], 328), assert_int_equal(e.p[3 + 1], 45549);
    /* the edge of the 2-bit grid: one other candidate, b = 13107, t = 1/2 */
    assert_int_equal(e.p[6 + 0], 9830), assert_int_equal(e.p[6 + 2], 0), assert_int_equal(e.p[6 + 1], 55706);
    /* beyond the bin (a GPTQ level two steps from its float weight): -1 at distance 1 */
    assert_int_equal(e.p[9 + 0], 4914), assert_int_equal(e.p[9 + 2], 328);
    eda_free(&e);
    /* the cap: centre 0.1, so b = 29491 and 3b exceeds what the start may give away */
    assert_int_equal(eda_init(&e, 4, 1, base, NULL, qmax, 6554, 328, &err), CCQ_OK);
    eda_prior_float(&e, pos, 6554);
    assert_int_equal(e.p[3 + 2], 65536 - 1638 - 3 * 328), assert_int_equal(e.p[3 + 0], 328);
    assert_int_equal(e.p[3 + 1], 1638 + 2 * 328);
    eda_free(&e);
}

static void test_sampling(void **state)
{
    (void)state;
    const int8_t base[1] = {0}, qmax[1] = {3};
    eda_state e;
    ccq_err err;
    assert_int_equal(eda_init(&e, 1, 1, base, NULL, qmax, 32768, 0, &err), CCQ_OK);
    e.p[0] = 13107, e.p[1] = 32768, e.p[2] = 19661; /* 0.2, 0.5, 0.3 */
    rng_pcg32 r;
    rng_init(&r, 5, 9);
    const int64_t idx[1] = {0};
    int cnt[3] = {0};
    for (int k = 0; k < 100000; k++) {
        int8_t v;
        eda_sample(&e, idx, 1, &r, &v);
        assert_true(v >= -1 && v <= 1);
        cnt[v + 1]++;
    }
    /* within 5 standard deviations of 20000, 50000, 30000 */
    assert_in_range(cnt[0], 20000 - 633, 20000 + 633);
    assert_in_range(cnt[1], 50000 - 791, 50000 + 791);
    assert_in_range(cnt[2], 30000 - 725, 30000 + 725);
    /* off-grid candidates are never drawn */
    const int8_t b2[1] = {1}, q2[1] = {1};
    eda_state f;
    assert_int_equal(eda_init(&f, 1, 1, b2, NULL, q2, 40000, 0, &err), CCQ_OK);
    for (int k = 0; k < 10000; k++) {
        int8_t v;
        eda_sample(&f, idx, 1, &r, &v);
        assert_true(v >= 0 && v <= 1);
    }
    eda_free(&e);
    eda_free(&f);
}

static void test_update_hand(void **state)
{
    (void)state;
    const int8_t base[1] = {2}, qmax[1] = {7};
    eda_state e;
    ccq_err err;
    assert_int_equal(eda_init(&e, 1, 1, base, NULL, qmax, 32768, 0, &err), CCQ_OK);
    e.p[0] = 16384, e.p[1] = 32768, e.p[2] = 16384;
    const int64_t idx[1] = {0};
    const int8_t elite[4] = {3, 3, 2, 3}; /* frequencies 0, 1/4, 3/4 */
    eda_update(&e, idx, 1, elite, 4, 16384); /* alpha 1/4 */
    assert_int_equal(e.p[0], 12288);
    assert_int_equal(e.p[1], 28672);
    assert_int_equal(e.p[2], 24576);
    eda_free(&e);
}

static void test_update_converges(void **state)
{
    (void)state;
    int8_t base[50], qmax[50];
    for (int i = 0; i < 50; i++) base[i] = (int8_t)(i % 5 - 2), qmax[i] = 2;
    eda_state e;
    ccq_err err;
    assert_int_equal(eda_init(&e, 50, 1, base, NULL, qmax, 45875, 300, &err), CCQ_OK);
    int64_t idx[50];
    int8_t elite[3 * 50];
    for (int i = 0; i < 50; i++) idx[i] = i;
    for (int it = 0; it < 200; it++) {
        for (int k = 0; k < 3; k++)
            for (int t = 0; t < 50; t++) elite[k * 50 + t] = (int8_t)(base[t] > -2 ? base[t] - 1 : base[t]);
        eda_update(&e, idx, 50, elite, 3, 6554);
        for (int i = 0; i < 50; i++) {
            assert_int_equal(row_sum(&e, i), EDA_ONE);
            for (int j = 0; j < 3; j++) {
                const int level = base[i] - 1 + j;
                if (level >= -2 && level <= 2) assert_true(e.p[i * 3 + j] >= 300);
            }
        }
    }
    for (int i = 0; i < 50; i++) {
        assert_int_equal(eda_mode(&e, i), base[i] > -2 ? base[i] - 1 : base[i]);
        assert_true(eda_confidence(&e, i) >= EDA_ONE - 2 * 300 - 2);
    }
    eda_free(&e);
}

static void test_deterministic(void **state)
{
    (void)state;
    int8_t base[64], qmax[64], a[64], b[64];
    for (int i = 0; i < 64; i++) base[i] = (int8_t)(i % 3 - 1), qmax[i] = 1;
    int64_t idx[64];
    for (int i = 0; i < 64; i++) idx[i] = 63 - i;
    eda_state e;
    ccq_err err;
    assert_int_equal(eda_init(&e, 64, 1, base, NULL, qmax, 40000, 0, &err), CCQ_OK);
    rng_pcg32 r1, r2;
    rng_init_keyed(&r1, 42, 7, 3, 0);
    rng_init_keyed(&r2, 42, 7, 3, 0);
    eda_sample(&e, idx, 64, &r1, a);
    eda_sample(&e, idx, 64, &r2, b);
    assert_memory_equal(a, b, 64);
    eda_free(&e);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_init_edges),       cmocka_unit_test(test_sampling),
        cmocka_unit_test(test_update_hand),      cmocka_unit_test(test_update_converges),
        cmocka_unit_test(test_deterministic),    cmocka_unit_test(test_prior_float),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
