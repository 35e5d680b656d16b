/*
 * test_step.c: the acceptance test of a generation (step_paired_gain) on
 * hand-checked cases: differences {-3, -3, -2, -2} have mean -2.5 and
 * variance 1/3, so the gain is 2.5 / sqrt(1/12) = sqrt(75) standard errors:
 * accepted for z^2 just below 75, refused at exactly 75 (strictly greater)
 * and above; never a loss or no change; exact at the largest sums the
 * search can produce (int128 arithmetic). The combination of a generation's
 * individuals (step_combine) on hand-checked cases. The race's drop rule
 * (step_raced_out) is the same test for a loss: {3, 3, 2, 2} is sqrt(75)
 * standard errors worse.
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>

#include <cmocka.h>

#include "ccq/step.h"

static void test_paired(void **state)
{
    (void)state;
    const int64_t q = 65536;
    assert_true(step_paired_gain(-10, 26, 4, 74 * q));
    assert_true(step_paired_gain(-10, 26, 4, 75 * q - 1));
    assert_false(step_paired_gain(-10, 26, 4, 75 * q));
    assert_false(step_paired_gain(-10, 26, 4, 76 * q));
    assert_true(step_paired_gain(-10, 26, 4, 0));    /* z = 0: any gain */
    assert_false(step_paired_gain(0, 26, 4, 0));     /* no change */
    assert_false(step_paired_gain(10, 26, 4, 0));    /* a loss */
    assert_false(step_paired_gain(-10, 26, 1, 0));   /* one image: no variance */
    /* all differences equal: zero variance, any z passes */
    assert_true(step_paired_gain(-8, 16, 4, 100 * q));
    /* large: 10^6 images, differences of -2^21 or 0 alternately (|sd| ~ 2^40, sd2 ~ 2^61) */
    const int64_t n = 1000000, d = INT64_C(1) << 21;
    const int64_t sd = -(n / 2) * d, sd2 = (n / 2) * d * d;
    /* mean -d/2, variance ~ d^2/4 (n / (n-1)): z = sqrt(n - 1) = 999.9995; z^2 = n - 1 exactly */
    assert_true(step_paired_gain(sd, sd2, n, (n - 1) * q - 1));
    assert_false(step_paired_gain(sd, sd2, n, (n - 1) * q));
}

static void test_raced_out(void **state)
{
    (void)state;
    const int64_t q = 65536;
    assert_true(step_raced_out(10, 26, 4, 75 * q - 1));
    assert_false(step_raced_out(10, 26, 4, 75 * q));
    assert_false(step_raced_out(-10, 26, 4, 0));  /* a gain is never dropped */
    assert_false(step_raced_out(0, 26, 4, 0));    /* nor no change */
    assert_true(step_raced_out(10, 26, 4, 0));    /* z = 0: any loss */
    assert_false(step_raced_out(10, 100, 1, 0));  /* one image: no variance */
}

static void test_combine(void **state)
{
    (void)state;
    /* 4 individuals, 3 weights, context fitness 100, context levels 0 */
    const int8_t all[4 * 3] = {1, 0, -1, /* fit 90 */ 1, 1, 0, /* 95 */ 0, 1, -1, /* 120 */ 0, 0, 1 /* 80 */};
    const int64_t fit[4] = {90, 95, 120, 80};
    int8_t combo[3] = {0, 0, 0};
    /* w0 -> 1 (mean 92.5 < 100, two draws); w1's 1 has mean 107.5; w2's -1 has 105, its 1 one draw */
    assert_int_equal(step_combine(all, fit, 4, 3, 100, combo), 1);
    assert_int_equal(combo[0], 1), assert_int_equal(combo[1], 0), assert_int_equal(combo[2], 0);
    /* context 106: w2's -1 (mean 105) now qualifies, w1's 1 (107.5) still not; at 105 it would not
     * (the mean must be strictly below the context's) */
    combo[0] = combo[1] = combo[2] = 0;
    assert_int_equal(step_combine(all, fit, 4, 3, 106, combo), 2);
    assert_int_equal(combo[0], 1), assert_int_equal(combo[1], 0), assert_int_equal(combo[2], -1);
    combo[0] = combo[1] = combo[2] = 0;
    assert_int_equal(step_combine(all, fit, 4, 3, 105, combo), 1);
    /* one weight, two qualifying levels: the lower mean wins; equal means: the lower level */
    const int8_t one[4] = {-1, -1, 1, 1};
    const int64_t f1[4] = {90, 90, 80, 95}, f2[4] = {90, 90, 85, 95};
    int8_t c = 0;
    assert_int_equal(step_combine(one, f1, 4, 1, 100, &c), 1);
    assert_int_equal(c, 1);
    c = 0;
    assert_int_equal(step_combine(one, f2, 4, 1, 100, &c), 1);
    assert_int_equal(c, -1);
    /* a context level other than 0 is never its own move */
    const int8_t same[2] = {1, 1};
    const int64_t f3[2] = {10, 10};
    c = 1;
    assert_int_equal(step_combine(same, f3, 2, 1, 100, &c), 0);
    assert_int_equal(c, 1);
}

int main(void)
{
    const struct CMUnitTest tests[] = {cmocka_unit_test(test_paired),
        cmocka_unit_test(test_raced_out), cmocka_unit_test(test_combine)};
    return cmocka_run_group_tests(tests, NULL, NULL);
}
