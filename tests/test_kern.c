/*
 * test_kern.c: every SIMD kernel against the scalar reference, exactly, over
 * a generated grid of shapes (M, N, K around every block and tile edge,
 * K not a multiple of the group) and value regimes: random, saturating
 * (255 activations with +-127 weights, the vpmaddubsw trap), all-negative
 * accumulators, and requantization multipliers/shifts across their range.
 * A path the CPU lacks is reported as skipped (exit 77), never as passed.
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <cmocka.h>

#include "ccq/kern.h"
#include "ccq/rng.h"

static const char *g_isa;
static const uint64_t k_seed = 20261122;

typedef enum { V_RANDOM, V_SATURATE, V_NEGATIVE, V_SMALLW } regime;

static void run_case(const kern_isa *ref, const kern_isa *isa, int M, int N, int K, regime rg, int bits,
                     rng_pcg32 *r)
{
    const int Kp = (K + 3) / 4 * 4;
    const int qmax = (1 << (bits - 1)) - 1;
    uint8_t *A = test_malloc((size_t)M * Kp);
    int8_t *lev = test_malloc((size_t)N * K);
    int32_t *bias = test_malloc(sizeof(int32_t) * N), *mult = test_malloc(sizeof(int32_t) * N),
            *shift = test_malloc(sizeof(int32_t) * N);
    for (int i = 0; i < M * Kp; i++)
        A[i] = rg == V_SATURATE ? 255 : (uint8_t)rng_next(r);
    for (int i = 0; i < N * K; i++) {
        int v = (int)rng_bounded(r, (uint32_t)(2 * qmax + 1)) - qmax;
        if (rg == V_SATURATE) v = (i & 1) ? qmax : -qmax;
        if (rg == V_SATURATE && (i % 7 == 0)) v = qmax;
        if (rg == V_NEGATIVE) v = -(int)rng_bounded(r, (uint32_t)qmax + 1);
        if (rg == V_SMALLW) v = (int)rng_bounded(r, 3) - 1;
        lev[i] = (int8_t)v;
    }
    for (int n = 0; n < N; n++) {
        bias[n] = (int32_t)(rng_next(r) % 200001) - 100000;
        /* multipliers in [2^30, 2^31), shifts from 1 to 62 (most realistic in 20..45) */
        mult[n] = (int32_t)((1u << 30) + (rng_next(r) & 0x3fffffffu));
        shift[n] = n % 5 == 0 ? 1 + (int32_t)rng_bounded(r, 62) : 20 + (int32_t)rng_bounded(r, 26);
    }
    const kern_rq rq = {bias, mult, shift, (int32_t)rng_bounded(r, 256), 0, 255};
    kern_rq rq2 = rq;
    rq2.lo = rq.zp; /* fused relu clamp */
    int8_t *pr = test_malloc(ref->packed_size(N, Kp)), *pi = test_malloc(isa->packed_size(N, Kp));
    ref->pack(lev, N, K, Kp, pr);
    isa->pack(lev, N, K, Kp, pi);
    const size_t ldc = (size_t)N + 3; /* a row stride wider than N: the kernels must not write past N */
    uint8_t *c_ref = test_malloc((size_t)M * ldc), *c_isa = test_malloc((size_t)M * ldc);
    int32_t *i_ref = test_malloc(sizeof(int32_t) * (size_t)M * ldc),
            *i_isa = test_malloc(sizeof(int32_t) * (size_t)M * ldc);
    for (int pass = 0; pass < 2; pass++) {
        const kern_rq *q = pass ? &rq2 : &rq;
        memset(c_ref, 0xAB, (size_t)M * ldc);
        memset(c_isa, 0xAB, (size_t)M * ldc);
        ref->gemm_u8(M, N, Kp, A, (size_t)Kp, pr, q, c_ref, ldc);
        isa->gemm_u8(M, N, Kp, A, (size_t)Kp, pi, q, c_isa, ldc);
        if (memcmp(c_ref, c_isa, (size_t)M * ldc) != 0) {
            for (size_t i = 0; i < (size_t)M * ldc; i++)
                if (c_ref[i] != c_isa[i]) {
                    print_error("%s u8: M=%d N=%d K=%d bits=%d regime=%d pass=%d: C[%zu][%zu] %d != ref %d "
                                "(seed %llu)\n",
                                isa->name, M, N, K, bits, rg, pass, i / ldc, i % ldc, c_isa[i], c_ref[i],
                                (unsigned long long)k_seed);
                    break;
                }
            fail();
        }
    }
    memset(i_ref, 0xAB, sizeof(int32_t) * (size_t)M * ldc);
    memset(i_isa, 0xAB, sizeof(int32_t) * (size_t)M * ldc);
    ref->gemm_i32(M, N, Kp, A, (size_t)Kp, pr, &rq, i_ref, ldc);
    isa->gemm_i32(M, N, Kp, A, (size_t)Kp, pi, &rq, i_isa, ldc);
    if (memcmp(i_ref, i_isa, sizeof(int32_t) * (size_t)M * ldc) != 0) {
        print_error("%s i32: M=%d N=%d K=%d bits=%d regime=%d differs (seed %llu)\n", isa->name, M, N, K, bits, rg,
                    (unsigned long long)k_seed);
        fail();
    }
    test_free(A), test_free(lev), test_free(bias), test_free(mult), test_free(shift), test_free(pr), test_free(pi);
    test_free(c_ref), test_free(c_isa), test_free(i_ref), test_free(i_isa);
}

static void test_grid(void **state)
{
    (void)state;
    const kern_isa *ref = kern_isa_by_name("scalar"), *isa = kern_isa_by_name(g_isa);
    static const int Ms[] = {1, 3, 4, 5, 8, 9, 17};
    static const int Ns[] = {1, 7, 8, 9, 15, 16, 17, 31, 32, 33, 48, 64, 100};
    static const int Ks[] = {1, 3, 4, 5, 9, 16, 25, 27, 64, 144, 577};
    rng_pcg32 r;
    rng_init(&r, k_seed, 1);
    for (size_t a = 0; a < sizeof Ms / sizeof *Ms; a++)
        for (size_t b = 0; b < sizeof Ns / sizeof *Ns; b++)
            for (size_t c = 0; c < sizeof Ks / sizeof *Ks; c++) {
                const int bits = 2 + (int)((a + b + c) % 7);
                run_case(ref, isa, Ms[a], Ns[b], Ks[c], V_RANDOM, bits, &r);
            }
}

static void test_traps(void **state)
{
    (void)state;
    const kern_isa *ref = kern_isa_by_name("scalar"), *isa = kern_isa_by_name(g_isa);
    rng_pcg32 r;
    rng_init(&r, k_seed, 2);
    for (int bits = 2; bits <= 8; bits++) {
        /* 255 x +-127: pair sums of 64770 overflow int16 (vpmaddubsw); K large for big accumulators */
        run_case(ref, isa, 9, 33, 577, V_SATURATE, bits, &r);
        run_case(ref, isa, 5, 17, 4000, V_SATURATE, bits, &r);
        run_case(ref, isa, 6, 20, 301, V_NEGATIVE, bits, &r);
        run_case(ref, isa, 4, 9, 50, V_SMALLW, bits, &r);
    }
}

static void test_requant_reference(void **state)
{
    (void)state;
    /* hand-checked values of the reference rounding: half away from zero, saturating */
    assert_int_equal(kern_requant(3, 1 << 30, 31), 2);   /* 1.5 -> 2 */
    assert_int_equal(kern_requant(-3, 1 << 30, 31), -2); /* -1.5 -> -2 */
    assert_int_equal(kern_requant(5, 1 << 30, 32), 1);   /* 1.25 -> 1 */
    assert_int_equal(kern_requant(-5, 1 << 30, 32), -1);
    assert_int_equal(kern_requant(INT32_MAX, INT32_MAX, 1), INT32_MAX); /* saturates */
    assert_int_equal(kern_requant(-INT32_MAX, INT32_MAX, 1), -INT32_MAX);
    assert_int_equal(kern_requant_u8(1000, 1 << 30, 31, 10, 0, 255), 255);
    assert_int_equal(kern_requant_u8(-1000, 1 << 30, 31, 10, 10, 255), 10);
    assert_int_equal(kern_requant_u8(-7, 1 << 30, 31, 10, 0, 255), 6); /* 10 + round(-3.5) = 6 */
}

int main(int argc, char **argv)
{
    if (argc != 2) {
        fprintf(stderr, "usage: test_kern ISA\n");
        return 2;
    }
    g_isa = argv[1];
    if (!kern_isa_by_name(g_isa)) {
        fprintf(stderr, "test_kern: unknown ISA %s\n", g_isa);
        return 2;
    }
    if (!kern_isa_supported(g_isa)) {
        printf("test_kern: this CPU lacks %s: skipped\n", g_isa);
        return 77;
    }
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_requant_reference),
        cmocka_unit_test(test_grid),
        cmocka_unit_test(test_traps),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
