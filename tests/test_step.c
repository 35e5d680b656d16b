/*
 * test_step.c: the acceptance test of a generation (step_paired_gain) on
 * hand-checked cases: differences {-3, -3, -2, -2} have mean -2.5 and
 * variance 1/3, so the gain is 2.5 / sqrt(1/12) = sqrt(75) standard errors:
 * accepted for z^2 just below 75, refused at exactly 75 (strictly greater)
 * and above; never a loss or no change; exact at the largest sums the
 * search can produce (int128 arithmetic).
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

int main(void)
{
    const struct CMUnitTest tests[] = {cmocka_unit_test(test_paired)};
    return cmocka_run_group_tests(tests, NULL, NULL);
}
