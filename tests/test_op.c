/*
 * test_op.c: the op table's shared integer helpers, exactly, on hand-computed
 * cases: the output clamp of a fused ReLU and Clip (op_out_clamp: bounds
 * rounded half away from zero onto the output grid, exact halves on both
 * sides of the zero point, bounds beyond the grid, an empty range), the
 * rounding right shift (op_rshift_round: halves away from zero, negative
 * values, 64-bit accumulators) and the requantization shift rule
 * (op_ratio_shift: the largest shift keeping round(ratio * 2^s) < 2^30, the
 * cap at 40, the ratios it refuses). These are the places where a float
 * reference (scripts/ccq_sim.py) and the engine only rarely disagree on a
 * whole network, so a network-level test does not catch a change here.
 */
#include <math.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <string.h>

#include <cmocka.h>

#include "ccq/op.h"

static void clamp_of(float scale, int zp, int relu, int has_clip, float cmin, float cmax, int32_t lo_want,
                     int32_t hi_want)
{
    model_node nd;
    memset(&nd, 0, sizeof nd);
    nd.act_scale = scale;
    nd.act_zp = zp;
    nd.relu = relu;
    nd.has_clip = has_clip;
    nd.clip[0] = cmin;
    nd.clip[1] = cmax;
    int32_t lo = -1, hi = -1;
    op_out_clamp(&nd, &lo, &hi);
    if (lo != lo_want || hi != hi_want)
        fail_msg("scale %g zp %d relu %d clip %d [%g, %g]: [%d, %d], expected [%d, %d]", (double)scale, zp, relu,
                 has_clip, (double)cmin, (double)cmax, lo, hi, lo_want, hi_want);
}

static void test_out_clamp_plain(void **state)
{
    (void)state;
    clamp_of(0.1f, 0, 0, 0, 0, 0, 0, 255);
    clamp_of(0.1f, 37, 0, 0, 0, 0, 0, 255);
    clamp_of(0.1f, 37, 1, 0, 0, 0, 37, 255); /* ReLU: the zero point */
}

static void test_out_clamp_clip(void **state)
{
    (void)state;
    /* ReLU6 on an exact grid: 6 / 0.25 = 24 */
    clamp_of(0.25f, 0, 0, 1, 0.0f, 6.0f, 0, 24);
    clamp_of(0.25f, 0, 1, 1, 0.0f, 6.0f, 0, 24);
    /* exact halves round away from zero: -0.375 / 0.25 = -1.5 -> -2, 6.125 / 0.25 = 24.5 -> 25 */
    clamp_of(0.25f, 100, 0, 1, -0.375f, 6.125f, 98, 125);
    /* and below them to the nearest level: 24.4 -> 24, -1.4 -> -1 */
    clamp_of(0.25f, 100, 0, 1, -0.35f, 6.1f, 99, 124);
    /* a fused ReLU keeps the larger lower bound */
    clamp_of(0.25f, 100, 1, 1, -0.375f, 6.125f, 100, 125);
    clamp_of(0.25f, 100, 1, 1, 0.625f, 6.125f, 103, 125); /* 2.5 -> 3 */
    /* both bounds below the zero point: -40 -> 10, -2.4 -> -2 */
    clamp_of(0.25f, 50, 0, 1, -10.0f, -0.6f, 10, 48);
    /* a bound within half a level below the grid's 0 rounds to 0, not -1 */
    clamp_of(0.25f, 0, 0, 1, -0.2f, 1.0f, 0, 4);
    /* bounds beyond the grid and at float's range */
    clamp_of(0.25f, 128, 0, 1, -1e30f, 1e30f, 0, 255);
    clamp_of(0.25f, 128, 0, 1, -3.4e38f, 3.4e38f, 0, 255);
    clamp_of(1e-3f, 128, 0, 1, -1.0f, 1.0f, 0, 255);
    /* an empty range (max below min) collapses to the lower bound */
    clamp_of(1.0f, 0, 0, 1, 5.0f, 1.0f, 5, 5);
    clamp_of(1.0f, 0, 1, 1, -3.0f, -1.0f, 0, 0);
}

static void test_rshift_round(void **state)
{
    (void)state;
    static const struct { int64_t v; int s; int64_t want; } c[] = {
        {5, 1, 3},    {-5, 1, -3},  {4, 1, 2},   {-4, 1, -2}, {3, 2, 1},   {-3, 2, -1},
        {2, 2, 1},    {-2, 2, -1},  {1, 2, 0},   {-1, 2, 0},  {0, 5, 0},   {7, 3, 1},
        {-12, 3, -2}, {-11, 3, -1}, {(INT64_C(1) << 40) + (INT64_C(1) << 9), 10, (INT64_C(1) << 30) + 1},
        {-((INT64_C(1) << 40) + (INT64_C(1) << 9)), 10, -((INT64_C(1) << 30) + 1)},
        {(INT64_C(1) << 40) + (INT64_C(1) << 9) - 1, 10, INT64_C(1) << 30},
    };
    for (size_t k = 0; k < sizeof c / sizeof c[0]; k++)
        if (op_rshift_round(c[k].v, c[k].s) != c[k].want)
            fail_msg("rshift_round(%lld, %d) = %lld, expected %lld", (long long)c[k].v, c[k].s,
                     (long long)op_rshift_round(c[k].v, c[k].s), (long long)c[k].want);
    assert_int_equal(op_clamp_u8(-7, 0, 255), 0);
    assert_int_equal(op_clamp_u8(300, 0, 255), 255);
    assert_int_equal(op_clamp_u8(99, 100, 125), 100);
    assert_int_equal(op_clamp_u8(126, 100, 125), 125);
    assert_int_equal(op_clamp_u8(110, 100, 125), 110);
}

static void test_ratio_shift(void **state)
{
    (void)state;
    static const struct { double r; int32_t want; } ok[] = {
        {1.0, 29}, {0.75, 30}, {0.5, 30}, {0.4999, 31}, {268435456.0, 1}, {3e8, 1}, {1e-20, 40}, {1e-3, 39},
        {0.0078125, 36}, /* 2^-7: e = -6 */
    };
    for (size_t k = 0; k < sizeof ok / sizeof ok[0]; k++) {
        int32_t s = -1;
        assert_int_equal(op_ratio_shift(ok[k].r, &s), CCQ_OK);
        if (s != ok[k].want) fail_msg("ratio_shift(%g) = %d, expected %d", ok[k].r, s, ok[k].want);
        /* the rule's promise: the largest ratio's multiplier fits in 30 bits */
        assert_true(llround(ldexp(ok[k].r, s)) < (1LL << 30));
        if (s < 40) assert_true(llround(ldexp(ok[k].r, s + 1)) >= (1LL << 30));
    }
    static const double bad[] = {0.0, -1.0, 536870912.0, 1e300, NAN, INFINITY};
    for (size_t k = 0; k < sizeof bad / sizeof bad[0]; k++) {
        int32_t s = 0;
        if (op_ratio_shift(bad[k], &s) != CCQ_ERR_LIMIT) fail_msg("ratio_shift(%g) accepted", bad[k]);
    }
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_out_clamp_plain),
        cmocka_unit_test(test_out_clamp_clip),
        cmocka_unit_test(test_rshift_round),
        cmocka_unit_test(test_ratio_shift),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
