/*
 * test_kern.c: every SIMD kernel against the scalar reference, exactly, over
 * a generated grid of shapes (M, N, K around every block and tile edge),
 * convolution-shaped indirect A (overlapping rows, strided segments), and
 * value regimes: random, saturating
 * (255 activations with +-127 weights, the vpmaddubsw trap), all-negative
 * accumulators, and requantization multipliers/shifts across their range.
 * The depthwise kernel likewise: channel counts around every vector width,
 * 1 to 25 taps (strides, dilations, a single output pixel), 1..8-bit levels
 * with their extremes (-128 included), saturating requantization and clamps,
 * nothing written past C; its in-place patch equals a fresh pack.
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

/* A: M rows of nseg segments of seg_len bytes; rows `step` bytes apart (overlapping when
 * step < K, as in a convolution's sliding windows), segments `stride` apart. */
static void run_case(const kern_isa *ref, const kern_isa *isa, int M, int N, int nseg, int seg_len, int step,
                     int stride, regime rg, int bits, rng_pcg32 *r)
{
    const int K = nseg * seg_len;
    const int qmax = (1 << (bits - 1)) - 1;
    const size_t abytes = (size_t)(M - 1) * step + (size_t)(nseg - 1) * stride + seg_len;
    uint8_t *A = test_malloc(abytes);
    const uint8_t **rows = test_malloc(sizeof(uint8_t *) * (size_t)M);
    int8_t *lev = test_malloc((size_t)N * K);
    int32_t *bias = test_malloc(sizeof(int32_t) * N), *mult = test_malloc(sizeof(int32_t) * N),
            *shift = test_malloc(sizeof(int32_t) * N);
    for (size_t i = 0; i < abytes; i++) A[i] = rg == V_SATURATE ? 255 : (uint8_t)rng_next(r);
    for (int m = 0; m < M; m++) rows[m] = A + (size_t)m * step;
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
    const kern_a a = {M, rows, nseg, seg_len, stride};
    int8_t *pr = test_malloc(ref->packed_size(N, K)), *pi = test_malloc(isa->packed_size(N, K));
    ref->pack(lev, N, K, pr);
    isa->pack(lev, N, K, pi);
    const size_t ldc = (size_t)N + 3; /* a row stride wider than N: the kernels must not write past N */
    uint8_t *c_ref = test_malloc((size_t)M * ldc), *c_isa = test_malloc((size_t)M * ldc);
    int32_t *i_ref = test_malloc(sizeof(int32_t) * (size_t)M * ldc),
            *i_isa = test_malloc(sizeof(int32_t) * (size_t)M * ldc);
    for (int pass = 0; pass < 2; pass++) {
        const kern_rq *q = pass ? &rq2 : &rq;
        memset(c_ref, 0xAB, (size_t)M * ldc);
        memset(c_isa, 0xAB, (size_t)M * ldc);
        ref->gemm_u8(&a, N, pr, q, c_ref, ldc);
        isa->gemm_u8(&a, N, pi, q, c_isa, ldc);
        if (memcmp(c_ref, c_isa, (size_t)M * ldc) != 0) {
            for (size_t i = 0; i < (size_t)M * ldc; i++)
                if (c_ref[i] != c_isa[i]) {
                    print_error("%s u8: M=%d N=%d nseg=%d seg=%d bits=%d regime=%d pass=%d: C[%zu][%zu] %d != ref %d "
                                "(seed %llu)\n",
                                isa->name, M, N, nseg, seg_len, bits, rg, pass, i / ldc, i % ldc, c_isa[i], c_ref[i],
                                (unsigned long long)k_seed);
                    break;
                }
            fail();
        }
    }
    memset(i_ref, 0xAB, sizeof(int32_t) * (size_t)M * ldc);
    memset(i_isa, 0xAB, sizeof(int32_t) * (size_t)M * ldc);
    ref->gemm_i32(&a, N, pr, &rq, i_ref, ldc);
    isa->gemm_i32(&a, N, pi, &rq, i_isa, ldc);
    if (memcmp(i_ref, i_isa, sizeof(int32_t) * (size_t)M * ldc) != 0) {
        print_error("%s i32: M=%d N=%d nseg=%d seg=%d bits=%d regime=%d differs (seed %llu)\n", isa->name, M, N, nseg,
                    seg_len, bits, rg, (unsigned long long)k_seed);
        fail();
    }
    test_free(A), test_free(rows), test_free(lev), test_free(bias), test_free(mult), test_free(shift);
    test_free(pr), test_free(pi), test_free(c_ref), test_free(c_isa), test_free(i_ref), test_free(i_isa);
}

static void test_grid(void **state)
{
    (void)state;
    const kern_isa *ref = kern_isa_by_name("scalar"), *isa = kern_isa_by_name(g_isa);
    static const int Ms[] = {1, 3, 4, 5, 8, 9, 17};
    static const int Ns[] = {1, 7, 8, 9, 15, 16, 17, 31, 32, 33, 48, 64, 100};
    static const int Ks[] = {4, 8, 16, 28, 64, 144, 580};
    rng_pcg32 r;
    rng_init(&r, k_seed, 1);
    for (size_t a = 0; a < sizeof Ms / sizeof *Ms; a++)
        for (size_t b = 0; b < sizeof Ns / sizeof *Ns; b++)
            for (size_t c = 0; c < sizeof Ks / sizeof *Ks; c++) {
                const int bits = 2 + (int)((a + b + c) % 7);
                run_case(ref, isa, Ms[a], Ns[b], 1, Ks[c], Ks[c], 0, V_RANDOM, bits, &r);
            }
}

static void test_conv_layouts(void **state)
{
    (void)state;
    /* Convolution-shaped A: kh segments of kw*Cin bytes, rows sliding by stride*Cin, segments a padded row apart. */
    static const struct {
        int kh, kw, cin, stride, pw;
    } cs[] = {{3, 3, 16, 1, 30}, {3, 3, 16, 2, 30}, {3, 3, 32, 1, 16}, {1, 1, 16, 2, 28}, {5, 5, 4, 1, 32},
              {3, 3, 64, 1, 9},  {2, 2, 8, 2, 12},  {7, 1, 4, 1, 10}};
    const kern_isa *ref = kern_isa_by_name("scalar"), *isa = kern_isa_by_name(g_isa);
    rng_pcg32 r;
    rng_init(&r, k_seed, 3);
    for (size_t i = 0; i < sizeof cs / sizeof *cs; i++)
        for (int bits = 2; bits <= 8; bits += 3) {
            const int seg = cs[i].kw * cs[i].cin, ow = cs[i].pw - cs[i].kw + 1;
            run_case(ref, isa, 37, 16 + (int)i * 5, cs[i].kh, seg, cs[i].stride * cs[i].cin, cs[i].pw * cs[i].cin,
                     V_RANDOM, bits, &r);
            run_case(ref, isa, ow, 32, cs[i].kh, seg, cs[i].stride * cs[i].cin, cs[i].pw * cs[i].cin, V_SATURATE, 8,
                     &r);
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
        run_case(ref, isa, 9, 33, 1, 580, 580, 0, V_SATURATE, bits, &r);
        run_case(ref, isa, 5, 17, 4, 1000, 1000, 1000, V_SATURATE, bits, &r);
        run_case(ref, isa, 6, 20, 1, 300, 300, 0, V_NEGATIVE, bits, &r);
        run_case(ref, isa, 4, 9, 2, 24, 24, 24, V_SMALLW, bits, &r);
    }
}

static void test_add(void **state)
{
    (void)state;
    const kern_isa *ref = kern_isa_by_name("scalar"), *isa = kern_isa_by_name(g_isa);
    rng_pcg32 r;
    rng_init(&r, k_seed, 4);
    static const size_t ns[] = {1, 7, 8, 15, 16, 17, 33, 1000, 12544};
    uint8_t *a = test_malloc(12544), *b = test_malloc(12544), *o1 = test_malloc(12545), *o2 = test_malloc(12545);
    for (size_t t = 0; t < sizeof ns / sizeof *ns; t++)
        for (int rep = 0; rep < 6; rep++) {
            for (size_t i = 0; i < ns[t]; i++) a[i] = (uint8_t)rng_next(&r), b[i] = (uint8_t)rng_next(&r);
            if (rep == 5) memset(a, 255, ns[t]), memset(b, 255, ns[t]); /* extremes */
            kern_add p = {.za = (int32_t)rng_bounded(&r, 256), .am = (int32_t)rng_bounded(&r, 1u << 21),
                          .zb = (int32_t)rng_bounded(&r, 256), .bm = (int32_t)rng_bounded(&r, 1u << 21),
                          .shift = 1 + (int32_t)rng_bounded(&r, 30), .zo = (int32_t)rng_bounded(&r, 256), .lo = 0,
                          .hi = 255};
            if (rep == 5) p.za = p.zb = 0, p.am = p.bm = (1 << 21) - 1, p.shift = 30;
            if (rep & 1) p.lo = p.zo; /* fused relu */
            o1[ns[t]] = o2[ns[t]] = 0x5A;
            ref->add_u8(ns[t], a, b, &p, o1);
            isa->add_u8(ns[t], a, b, &p, o2);
            if (memcmp(o1, o2, ns[t] + 1) != 0) {
                print_error("%s add: n=%zu rep=%d differs from scalar (seed %llu)\n", isa->name, ns[t], rep,
                            (unsigned long long)k_seed);
                fail();
            }
        }
    /* hand-checked: (10-2)*3 + (4-4)*5 = 24, >> 2 with rounding = 6, + zo 1 = 7 */
    const kern_add p = {.za = 2, .am = 3, .zb = 4, .bm = 5, .shift = 2, .zo = 1, .lo = 0, .hi = 255};
    assert_int_equal(kern_add_one(10, 4, &p), 7);
    assert_int_equal(kern_add_one(0, 4, &p), 0); /* -6/4 = -1.5 -> -2, + 1 = -1 -> clamped to 0 */
    assert_int_equal(kern_add_one(1, 4, &p), 0); /* -3/4 -> -1, + 1 = 0 */
    test_free(a), test_free(b), test_free(o1), test_free(o2);
}

/* The elementwise product (squeeze-and-excitation gates): every ISA equals the scalar reference byte
 * for byte, same shapes and per-channel broadcast, tails of every length, multipliers and shifts over
 * their whole range (quotients far above 255 included), fused clamps; the scalar one matches
 * kern_requant_u8 by hand-checked values. */
static void test_mul(void **state)
{
    (void)state;
    const kern_isa *ref = kern_isa_by_name("scalar"), *isa = kern_isa_by_name(g_isa);
    rng_pcg32 r;
    rng_init(&r, k_seed, 5);
    static const int Cs[] = {1, 3, 8, 15, 16, 17, 40, 64, 72};
    static const size_t Ps[] = {1, 2, 5, 49, 196};
    const size_t cap = 196 * 72;
    uint8_t *a = test_malloc(cap), *b = test_malloc(cap), *o1 = test_malloc(cap + 1), *o2 = test_malloc(cap + 1);
    for (size_t ci = 0; ci < sizeof Cs / sizeof *Cs; ci++)
        for (size_t pi = 0; pi < sizeof Ps / sizeof *Ps; pi++)
            for (int rep = 0; rep < 8; rep++) {
                const int C = Cs[ci], bcast = rep & 1;
                const size_t P = Ps[pi], n = P * (size_t)C;
                for (size_t i = 0; i < n; i++) a[i] = (uint8_t)rng_next(&r), b[i] = (uint8_t)rng_next(&r);
                if (rep >= 6) memset(a, rep == 6 ? 255 : 0, n), memset(b, 255, n); /* extremes */
                kern_mul p = {.za = (int32_t)rng_bounded(&r, 256), .zb = (int32_t)rng_bounded(&r, 256),
                              .zo = (int32_t)rng_bounded(&r, 256), .lo = 0, .hi = 255,
                              .mult = (int32_t)rng_bounded(&r, 1u << 31), .shift = 1 + (int32_t)rng_bounded(&r, 62)};
                if (rep & 2) p.shift = 28 + (int32_t)rng_bounded(&r, 12); /* the range real gates use */
                if (rep & 4) p.lo = p.zo, p.hi = p.zo + (255 - p.zo) / 2; /* a fused clamp (lo <= hi) */
                o1[n] = o2[n] = 0x5A;
                ref->mul_u8(P, C, a, b, bcast, &p, o1);
                isa->mul_u8(P, C, a, b, bcast, &p, o2);
                if (memcmp(o1, o2, n + 1) != 0) {
                    print_error("%s mul: P=%zu C=%d rep=%d differs from scalar (seed %llu)\n", isa->name, P, C, rep,
                                (unsigned long long)k_seed);
                    fail();
                }
                for (size_t px = 0; px < P; px++) /* the scalar kernel is the documented formula */
                    for (int c = 0; c < C; c++) {
                        const int32_t v = (a[px * C + c] - p.za) * (b[(bcast ? 0 : px * C) + c] - p.zb);
                        assert_int_equal(o1[px * C + c], kern_requant_u8(v, p.mult, p.shift, p.zo, p.lo, p.hi));
                    }
            }
    /* hand-checked: (10 - 2) * (7 - 4) = 24; 24 * 3 = 72, >> 4 with rounding = 4.5 -> 5, + zo 1 = 6 */
    const kern_mul p = {.za = 2, .zb = 4, .zo = 1, .lo = 0, .hi = 255, .mult = 3, .shift = 4};
    assert_int_equal(kern_mul_one(10, 7, &p), 6);
    assert_int_equal(kern_mul_one(0, 7, &p), 0); /* -6 * 3 = -18 -> -1.125 -> -1, + 1 = 0 */
    assert_int_equal(kern_mul_one(0, 0, &p), 3); /* (-2)(-4) = 8 -> 24 / 16 = 1.5 -> 2, + 1 = 3 */
    test_free(a), test_free(b), test_free(o1), test_free(o2);
}

/* Patching levels one at a time through packed_offset gives the bytes a fresh pack gives; a value the
 * layout cannot hold (AVX2's 7-bit layout, |v| > 63) is reported as -1, never written wrongly. */
static void test_patch(void **state)
{
    (void)state;
    const kern_isa *isa = kern_isa_by_name(g_isa);
    rng_pcg32 r;
    rng_init(&r, k_seed, 5);
    static const int NK[][2] = {{1, 4}, {7, 8}, {16, 36}, {17, 580}, {33, 12}, {64, 144}};
    for (size_t c = 0; c < sizeof NK / sizeof *NK; c++)
        for (int bits = 2; bits <= 8; bits += 6) {
            const int N = NK[c][0], K = NK[c][1], qmax = (1 << (bits - 1)) - 1;
            const size_t bytes = isa->packed_size(N, K);
            int8_t *lev = test_malloc((size_t)N * K), *p = test_malloc(bytes), *fresh = test_malloc(bytes);
            for (int i = 0; i < N * K; i++) lev[i] = (int8_t)((int)rng_bounded(&r, (uint32_t)(2 * qmax + 1)) - qmax);
            isa->pack(lev, N, K, p);
            int refused = 0;
            for (int rep = 0; rep < 3 * N * K; rep++) {
                const int n = (int)rng_bounded(&r, (uint32_t)N), k = (int)rng_bounded(&r, (uint32_t)K);
                const int8_t v = (int8_t)((int)rng_bounded(&r, (uint32_t)(2 * qmax + 1)) - qmax);
                const ptrdiff_t off = isa->packed_offset(p, N, K, n, k, v);
                lev[(size_t)n * K + k] = v;
                if (off < 0) {
                    refused = 1;
                    isa->pack(lev, N, K, p);
                } else {
                    assert_true((size_t)off < bytes);
                    p[off] = v;
                }
            }
            isa->pack(lev, N, K, fresh);
            assert_memory_equal(p, fresh, bytes);
            /* only AVX2 refuses, and only 8-bit values in its 7-bit layout */
            if (refused) assert_true(strcmp(isa->name, "avx2") == 0 && bits == 8);
            test_free(lev), test_free(p), test_free(fresh);
        }
}

/* Depthwise: an NHWC image of C channels just large enough for oh x ow windows of kh x kw taps
 * (stride, dilation), levels [T][C] with |level| <= qmax (1-bit: +-1), requantization regimes as
 * run_case's, three clamps (none, fused ReLU, a clip inside [0, 255]). */
static void run_dw_case(const kern_isa *ref, const kern_isa *isa, int C, int kh, int kw, int stride, int dil, int oh,
                        int ow, regime rg, int bits, rng_pcg32 *r)
{
    const int T = kh * kw, P = oh * ow;
    const int H = (oh - 1) * stride + (kh - 1) * dil + 1, W = (ow - 1) * stride + (kw - 1) * dil + 1;
    const int qmax = bits == 1 ? 1 : (1 << (bits - 1)) - 1;
    const size_t img = (size_t)H * W * C;
    uint8_t *x = test_malloc(img + 64); /* the 64 bytes of slack the engine's buffers have */
    const uint8_t **px = test_malloc(sizeof(uint8_t *) * (size_t)P);
    ptrdiff_t *off = test_malloc(sizeof(ptrdiff_t) * (size_t)T);
    int8_t *lev = test_malloc((size_t)T * C);
    int32_t *bias = test_malloc(sizeof(int32_t) * C), *mult = test_malloc(sizeof(int32_t) * C),
            *shift = test_malloc(sizeof(int32_t) * C);
    for (size_t i = 0; i < img + 64; i++) x[i] = rg == V_SATURATE ? 255 : (uint8_t)rng_next(r);
    for (int p = 0; p < P; p++) px[p] = x + ((size_t)(p / ow) * stride * W + (size_t)(p % ow) * stride) * C;
    for (int t = 0; t < T; t++) off[t] = ((ptrdiff_t)(t / kw) * dil * W + (ptrdiff_t)(t % kw) * dil) * C;
    for (int i = 0; i < T * C; i++) {
        int v = (int)rng_bounded(r, (uint32_t)(2 * qmax + 1)) - qmax;
        if (rg == V_SATURATE) v = i % 3 == 0 ? qmax : -qmax;
        if (rg == V_SATURATE && bits == 8 && i % 5 == 0) v = -128; /* outside the engine's range: int8 extreme */
        if (rg == V_NEGATIVE) v = -(int)rng_bounded(r, (uint32_t)qmax + 1);
        if (rg == V_SMALLW) v = (int)rng_bounded(r, 3) - 1;
        lev[i] = (int8_t)v;
    }
    for (int c = 0; c < C; c++) {
        bias[c] = (int32_t)(rng_next(r) % 200001) - 100000;
        mult[c] = (int32_t)((1u << 30) + (rng_next(r) & 0x3fffffffu));
        shift[c] = c % 5 == 0 ? 1 + (int32_t)rng_bounded(r, 62) : 10 + (int32_t)rng_bounded(r, 20);
    }
    const kern_dw a = {P, px, T, off, C};
    int8_t *wr = test_malloc(ref->dw_packed_size(T, C)), *wi = test_malloc(isa->dw_packed_size(T, C));
    ref->dw_pack(lev, T, C, wr);
    isa->dw_pack(lev, T, C, wi);
    const size_t ldy = (size_t)C + 3; /* the kernels must not write past C */
    uint8_t *y_ref = test_malloc((size_t)P * ldy), *y_isa = test_malloc((size_t)P * ldy);
    const int32_t zp = (int32_t)rng_bounded(r, 256);
    const kern_rq rqs[3] = {{bias, mult, shift, zp, 0, 255}, {bias, mult, shift, zp, zp, 255},
                            {bias, mult, shift, zp, zp / 3, zp + (255 - zp) / 2}};
    for (int pass = 0; pass < 3; pass++) {
        memset(y_ref, 0xAB, (size_t)P * ldy);
        memset(y_isa, 0xAB, (size_t)P * ldy);
        ref->dw_u8(&a, wr, &rqs[pass], y_ref, ldy);
        isa->dw_u8(&a, wi, &rqs[pass], y_isa, ldy);
        if (memcmp(y_ref, y_isa, (size_t)P * ldy) != 0) {
            for (size_t i = 0; i < (size_t)P * ldy; i++)
                if (y_ref[i] != y_isa[i]) {
                    print_error("%s dw: C=%d %dx%d stride %d dil %d out %dx%d bits=%d regime=%d pass=%d: y[%zu][%zu] "
                                "%d != ref %d (seed %llu)\n",
                                isa->name, C, kh, kw, stride, dil, oh, ow, bits, rg, pass, i / ldy, i % ldy, y_isa[i],
                                y_ref[i], (unsigned long long)k_seed);
                    break;
                }
            fail();
        }
    }
    test_free(x), test_free(px), test_free(off), test_free(lev), test_free(bias), test_free(mult), test_free(shift);
    test_free(wr), test_free(wi), test_free(y_ref), test_free(y_isa);
}

static void test_dw_reference(void **state)
{
    (void)state;
    /* hand-checked: 2 channels, 2 taps; acc = bias + x0 w0 + x1 w1 */
    const kern_isa *ref = kern_isa_by_name("scalar");
    const uint8_t img[4 + 64] = {10, 20, 30, 40};
    const uint8_t *px[1] = {img};
    const ptrdiff_t off[2] = {0, 2};
    const int8_t lev[4] = {1, -2, 3, 4}; /* [T][C] */
    const int32_t bias[2] = {5, -120}, mult[2] = {1 << 30, 1 << 30}, shift[2] = {31, 31};
    const kern_dw a = {1, px, 2, off, 2};
    const kern_rq rq = {bias, mult, shift, 3, 0, 255};
    int8_t w[4];
    uint8_t y[2];
    ref->dw_pack(lev, 2, 2, w);
    ref->dw_u8(&a, w, &rq, y, 2);
    assert_int_equal(y[0], 3 + 53); /* (5 + 10 + 90) / 2 = 52.5 -> 53 */
    assert_int_equal(y[1], 3 + 0);  /* -120 - 40 + 160 = 0 */
}

static void test_dw_grid(void **state)
{
    (void)state;
    const kern_isa *ref = kern_isa_by_name("scalar"), *isa = kern_isa_by_name(g_isa);
    static const int Cs[] = {1, 3, 8, 15, 16, 17, 24, 31, 32, 33, 48, 63, 64, 65, 80, 100, 129};
    static const int KK[][2] = {{1, 1}, {1, 2}, {1, 3}, {2, 2}, {1, 5}, {3, 3}, {5, 5}};
    static const int OUT[][2] = {{1, 1}, {3, 5}, {7, 7}};
    rng_pcg32 r;
    rng_init(&r, k_seed, 6);
    int n = 0;
    for (size_t c = 0; c < sizeof Cs / sizeof *Cs; c++)
        for (size_t k = 0; k < sizeof KK / sizeof *KK; k++)
            for (size_t o = 0; o < sizeof OUT / sizeof *OUT; o++, n++) {
                const int bits = 1 + n % 8, stride = 1 + n % 2, dil = 1 + (n / 3) % 2;
                run_dw_case(ref, isa, Cs[c], KK[k][0], KK[k][1], stride, dil, OUT[o][0], OUT[o][1], V_RANDOM, bits,
                            &r);
            }
    /* value regimes at MobileNet's shapes (3x3, 5x5) and at T = 1 */
    for (int bits = 1; bits <= 8; bits++)
        for (size_t c = 0; c < sizeof Cs / sizeof *Cs; c += 3)
            for (int rg = V_SATURATE; rg <= V_SMALLW; rg++) {
                run_dw_case(ref, isa, Cs[c], 3, 3, 1 + bits % 2, 1, 4, 5, (regime)rg, bits, &r);
                run_dw_case(ref, isa, Cs[c], 5, 5, 1, 1, 3, 3, (regime)rg, bits, &r);
                run_dw_case(ref, isa, Cs[c], 1, 1, 1, 1, 2, 9, (regime)rg, bits, &r);
            }
}

/* Depthwise levels patched one at a time through dw_packed_offset give the bytes of a fresh pack. */
static void test_dw_patch(void **state)
{
    (void)state;
    const kern_isa *isa = kern_isa_by_name(g_isa);
    rng_pcg32 r;
    rng_init(&r, k_seed, 7);
    static const int TC[][2] = {{1, 1}, {1, 17}, {9, 16}, {9, 33}, {25, 100}, {3, 129}, {7, 64}};
    for (size_t i = 0; i < sizeof TC / sizeof *TC; i++) {
        const int T = TC[i][0], C = TC[i][1];
        const size_t bytes = isa->dw_packed_size(T, C);
        int8_t *lev = test_malloc((size_t)T * C), *p = test_malloc(bytes), *fresh = test_malloc(bytes);
        for (int k = 0; k < T * C; k++) lev[k] = (int8_t)rng_next(&r);
        isa->dw_pack(lev, T, C, p);
        for (int rep = 0; rep < 3 * T * C; rep++) {
            const int t = (int)rng_bounded(&r, (uint32_t)T), c = (int)rng_bounded(&r, (uint32_t)C);
            const int8_t v = (int8_t)rng_next(&r);
            const ptrdiff_t off = isa->dw_packed_offset(T, C, t, c);
            assert_true(off >= 0 && (size_t)off < bytes);
            lev[(size_t)t * C + c] = v;
            p[off] = v;
        }
        isa->dw_pack(lev, T, C, fresh);
        assert_memory_equal(p, fresh, bytes);
        test_free(lev), test_free(p), test_free(fresh);
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
        cmocka_unit_test(test_conv_layouts),
        cmocka_unit_test(test_traps),
        cmocka_unit_test(test_add),
        cmocka_unit_test(test_mul),
        cmocka_unit_test(test_patch),
        cmocka_unit_test(test_dw_reference),
        cmocka_unit_test(test_dw_grid),
        cmocka_unit_test(test_dw_patch),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
