/*
 * test_fnet.c: each layer of the float reference forward pass on small
 * hand-computed cases, plus the convolution against a direct (non-im2col)
 * loop on awkward shapes, where the two must agree bit for bit because both
 * sum the same products in the same order.
 */
#include <math.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <string.h>

#include <cmocka.h>

#include "ccq/fnet.h"
#include "ccq/rng.h"

#define ASSERT_FLOATS(got, want, n, tol)                                                       \
    do {                                                                                      \
        for (int i_ = 0; i_ < (n); i_++) {                                                    \
            if (fabsf((got)[i_] - (want)[i_]) > (tol)) {                                      \
                print_error("element %d: got %.7g, want %.7g\n", i_, (double)(got)[i_], (double)(want)[i_]); \
                fail();                                                                       \
            }                                                                                 \
        }                                                                                     \
    } while (0)

static const float k_x33[9] = {1, 2, 3, 4, 5, 6, 7, 8, 9};
static const model_shape k_s133 = {3, 1, 3, 3};

static model_node conv_node(int cout, int kh, int kw, int sh, int sw, const int pad[4], int dh, int dw,
                            model_shape in, float *w, float *b)
{
    model_node nd;
    memset(&nd, 0, sizeof nd);
    nd.op = MODEL_OP_CONV2D;
    nd.kernel[0] = kh, nd.kernel[1] = kw, nd.stride[0] = sh, nd.stride[1] = sw;
    memcpy(nd.pad, pad, sizeof nd.pad);
    nd.dilation[0] = dh, nd.dilation[1] = dw;
    nd.weight = w, nd.bias = b;
    int oh = model_window_out(in.h, kh, sh, pad[0], pad[2], dh, 0);
    int ow = model_window_out(in.w, kw, sw, pad[1], pad[3], dw, 0);
    nd.shape = (model_shape){3, cout, oh, ow};
    return nd;
}

static model_node pool_node(model_op op, int k, int s, int pad, int ceil_mode, int cip, model_shape in)
{
    model_node nd;
    memset(&nd, 0, sizeof nd);
    nd.op = op;
    nd.kernel[0] = nd.kernel[1] = k;
    nd.stride[0] = nd.stride[1] = s;
    nd.pad[0] = nd.pad[1] = nd.pad[2] = nd.pad[3] = pad;
    nd.dilation[0] = nd.dilation[1] = 1;
    nd.ceil_mode = ceil_mode;
    nd.count_include_pad = cip;
    int o = model_window_out(in.h, k, s, pad, pad, 1, ceil_mode);
    nd.shape = (model_shape){3, in.c, o, o};
    return nd;
}

static void test_normalise(void **state)
{
    (void)state;
    model m;
    memset(&m, 0, sizeof m);
    m.input = (model_shape){3, 1, 1, 3};
    m.mean[0] = 0.5f;
    m.std[0] = 0.25f;
    const uint8_t img[3] = {0, 255, 51};
    float x[3];
    const float want[3] = {-2.0f, 2.0f, -1.2f};
    fnet_normalise(&m, img, x);
    ASSERT_FLOATS(x, want, 3, 1e-6f);
}

static void test_conv_hand(void **state)
{
    (void)state;
    float w[4] = {1, 2, 3, 4}, b[1] = {0.5f}, y[4], col[64];
    const int p0[4] = {0, 0, 0, 0}, p1[4] = {1, 1, 1, 1};

    model_node nd = conv_node(1, 2, 2, 1, 1, p0, 1, 1, k_s133, w, b);
    assert_int_equal(nd.shape.h, 2);
    fnet_conv2d(&nd, k_s133, k_x33, y, col);
    const float want_valid[4] = {37.5f, 47.5f, 67.5f, 77.5f};
    ASSERT_FLOATS(y, want_valid, 4, 0.0f);

    nd = conv_node(1, 2, 2, 2, 2, p1, 1, 1, k_s133, w, b); /* pad 1, stride 2 */
    assert_int_equal(nd.shape.h, 2);
    fnet_conv2d(&nd, k_s133, k_x33, y, col);
    const float want_pad[4] = {4.5f, 18.5f, 36.5f, 77.5f};
    ASSERT_FLOATS(y, want_pad, 4, 0.0f);

    nd = conv_node(1, 2, 2, 1, 1, p0, 2, 2, k_s133, w, b); /* dilation 2: the four corners */
    assert_int_equal(nd.shape.h, 1);
    fnet_conv2d(&nd, k_s133, k_x33, y, col);
    assert_true(y[0] == 64.5f);

    nd = conv_node(1, 2, 2, 1, 1, p0, 1, 1, k_s133, w, NULL); /* no bias */
    fnet_conv2d(&nd, k_s133, k_x33, y, col);
    const float want_nob[4] = {37, 47, 67, 77};
    ASSERT_FLOATS(y, want_nob, 4, 0.0f);

    /* 1x1 stride-1 conv (no im2col path): 2 outputs over 1 channel */
    float w1[2] = {2, -1};
    nd = conv_node(2, 1, 1, 1, 1, p0, 1, 1, k_s133, w1, NULL);
    float y2[18];
    fnet_conv2d(&nd, k_s133, k_x33, y2, col);
    for (int i = 0; i < 9; i++) {
        assert_true(y2[i] == 2 * k_x33[i]);
        assert_true(y2[9 + i] == -k_x33[i]);
    }
}

/* Direct convolution: the same products summed in the same order as im2col + GEMM. */
static void conv_direct(const model_node *nd, model_shape in, const float *x, float *y)
{
    for (int co = 0; co < nd->shape.c; co++)
        for (int oy = 0; oy < nd->shape.h; oy++)
            for (int ox = 0; ox < nd->shape.w; ox++) {
                float acc = 0.0f;
                for (int ci = 0; ci < in.c; ci++)
                    for (int ky = 0; ky < nd->kernel[0]; ky++)
                        for (int kx = 0; kx < nd->kernel[1]; kx++) {
                            int iy = oy * nd->stride[0] - nd->pad[0] + ky * nd->dilation[0];
                            int ix = ox * nd->stride[1] - nd->pad[1] + kx * nd->dilation[1];
                            float v = (iy >= 0 && iy < in.h && ix >= 0 && ix < in.w)
                                          ? x[((int64_t)ci * in.h + iy) * in.w + ix]
                                          : 0.0f;
                            acc += nd->weight[(((int64_t)co * in.c + ci) * nd->kernel[0] + ky) * nd->kernel[1] + kx] * v;
                        }
                y[((int64_t)co * nd->shape.h + oy) * nd->shape.w + ox] = acc + (nd->bias ? nd->bias[co] : 0.0f);
            }
}

static float uniform(rng_pcg32 *r) { return (float)(rng_next(r) >> 8) / 16777216.0f * 2.0f - 1.0f; }

static void test_conv_vs_direct(void **state)
{
    (void)state;
    /* cout not a multiple of the 4-row block, P not a multiple of the 64 tile, asymmetric everything */
    static const struct {
        int cin, cout, h, w, kh, kw, sh, sw, pad[4], dh, dw;
    } cases[] = {
        {3, 5, 7, 6, 3, 2, 2, 1, {1, 0, 2, 1}, 1, 2},
        {1, 1, 1, 1, 1, 1, 1, 1, {0, 0, 0, 0}, 1, 1},
        {2, 9, 11, 13, 5, 5, 1, 1, {2, 2, 2, 2}, 1, 1},
        {4, 7, 9, 9, 3, 3, 3, 2, {0, 1, 1, 0}, 2, 1},
        {6, 4, 10, 10, 1, 1, 2, 2, {0, 0, 0, 0}, 1, 1},
        {16, 17, 14, 14, 3, 3, 1, 1, {1, 1, 1, 1}, 1, 1},
    };
    rng_pcg32 r;
    rng_init(&r, 2024, 1);
    for (size_t t = 0; t < sizeof cases / sizeof cases[0]; t++) {
        model_shape in = {3, cases[t].cin, cases[t].h, cases[t].w};
        int64_t nw = (int64_t)cases[t].cout * cases[t].cin * cases[t].kh * cases[t].kw;
        float *w = test_malloc(sizeof(float) * (size_t)nw), *b = test_malloc(sizeof(float) * (size_t)cases[t].cout);
        float *x = test_malloc(sizeof(float) * (size_t)model_numel(in));
        for (int64_t i = 0; i < nw; i++) w[i] = uniform(&r);
        for (int i = 0; i < cases[t].cout; i++) b[i] = uniform(&r);
        for (int64_t i = 0; i < model_numel(in); i++) x[i] = uniform(&r);
        model_node nd = conv_node(cases[t].cout, cases[t].kh, cases[t].kw, cases[t].sh, cases[t].sw, cases[t].pad,
                                  cases[t].dh, cases[t].dw, in, w, b);
        int64_t ny = model_numel(nd.shape), nc = fnet_col_size(&nd, in);
        float *y = test_malloc(sizeof(float) * (size_t)ny), *want = test_malloc(sizeof(float) * (size_t)ny);
        float *col = test_malloc(sizeof(float) * (size_t)(nc ? nc : 1));
        fnet_conv2d(&nd, in, x, y, col);
        conv_direct(&nd, in, x, want);
        for (int64_t i = 0; i < ny; i++) {
            if (y[i] != want[i]) {
                print_error("case %zu element %lld: %.9g != %.9g\n", t, (long long)i, (double)y[i], (double)want[i]);
                fail();
            }
        }
        test_free(w), test_free(b), test_free(x), test_free(y), test_free(want), test_free(col);
    }
}

static void test_batchnorm(void **state)
{
    (void)state;
    float gamma[2] = {2, 1}, beta[2] = {1, 0}, mean[2] = {1, 0}, var[2] = {3, 0.25f};
    model_node nd;
    memset(&nd, 0, sizeof nd);
    nd.op = MODEL_OP_BATCHNORM;
    nd.shape = (model_shape){3, 2, 1, 2};
    nd.gamma = gamma, nd.beta = beta, nd.mean = mean, nd.var = var;
    nd.eps = 1.0f; /* channel 0: scale 2/sqrt(4) = 1, shift 0 */
    const float x[4] = {1, 3, -1, 0.5f};
    float y[4];
    fnet_batchnorm(&nd, x, y);
    /* channel 1: scale 1/sqrt(1.25) */
    const float s1 = 1.0f / sqrtf(1.25f);
    const float want[4] = {1, 3, -s1, 0.5f * s1};
    ASSERT_FLOATS(y, want, 4, 1e-6f);
    nd.eps = 0.0f; /* channel 1: scale 2 */
    fnet_batchnorm(&nd, x, y);
    /* channel 0: scale 2/sqrt(3), shift 1 - scale, so x=1 -> 1 and x=3 -> 1 + 2*scale */
    const float want0[4] = {1, 1 + 4 / sqrtf(3), -2, 1};
    ASSERT_FLOATS(y, want0, 4, 1e-5f);
}

static void test_relu_add_flatten(void **state)
{
    (void)state;
    const float x[4] = {-1, 0, 2.5f, -0.0f}, b[4] = {1, 2, 3, 4};
    float y[4];
    fnet_relu(x, y, 4);
    const float want[4] = {0, 0, 2.5f, 0};
    ASSERT_FLOATS(y, want, 4, 0.0f);
    fnet_add(x, b, y, 4);
    const float want_add[4] = {0, 2, 5.5f, 4};
    ASSERT_FLOATS(y, want_add, 4, 0.0f);
}

static void test_maxpool(void **state)
{
    (void)state;
    float y[4], neg[9];
    for (int i = 0; i < 9; i++) neg[i] = -k_x33[i];
    model_node nd = pool_node(MODEL_OP_MAXPOOL, 2, 2, 0, 0, 0, k_s133);
    assert_int_equal(nd.shape.h, 1);
    fnet_maxpool(&nd, k_s133, k_x33, y);
    assert_true(y[0] == 5);

    nd = pool_node(MODEL_OP_MAXPOOL, 2, 2, 0, 1, 0, k_s133); /* ceil mode: partial windows */
    assert_int_equal(nd.shape.h, 2);
    fnet_maxpool(&nd, k_s133, k_x33, y);
    const float want_ceil[4] = {5, 6, 8, 9};
    ASSERT_FLOATS(y, want_ceil, 4, 0.0f);

    nd = pool_node(MODEL_OP_MAXPOOL, 2, 2, 1, 0, 0, k_s133); /* padding never wins, even over negatives */
    assert_int_equal(nd.shape.h, 2);
    fnet_maxpool(&nd, k_s133, k_x33, y);
    const float want_pad[4] = {1, 3, 7, 9};
    ASSERT_FLOATS(y, want_pad, 4, 0.0f);
    fnet_maxpool(&nd, k_s133, neg, y);
    const float want_neg[4] = {-1, -2, -4, -5};
    ASSERT_FLOATS(y, want_neg, 4, 0.0f);
}

static void test_avgpool(void **state)
{
    (void)state;
    float y[4];
    model_node nd = pool_node(MODEL_OP_AVGPOOL, 2, 1, 0, 0, 0, k_s133);
    fnet_avgpool(&nd, k_s133, k_x33, y);
    const float want[4] = {3, 4, 6, 7};
    ASSERT_FLOATS(y, want, 4, 0.0f);

    nd = pool_node(MODEL_OP_AVGPOOL, 2, 2, 1, 0, 1, k_s133); /* padding counted */
    fnet_avgpool(&nd, k_s133, k_x33, y);
    const float want_cip[4] = {0.25f, 1.25f, 2.75f, 7};
    ASSERT_FLOATS(y, want_cip, 4, 0.0f);

    nd = pool_node(MODEL_OP_AVGPOOL, 2, 2, 1, 0, 0, k_s133); /* padding not counted */
    fnet_avgpool(&nd, k_s133, k_x33, y);
    const float want_nocip[4] = {1, 2.5f, 5.5f, 7};
    ASSERT_FLOATS(y, want_nocip, 4, 0.0f);

    for (int cip = 0; cip < 2; cip++) { /* ceil mode: the divisor is clipped to the input either way */
        nd = pool_node(MODEL_OP_AVGPOOL, 2, 2, 0, 1, cip, k_s133);
        assert_int_equal(nd.shape.h, 2);
        fnet_avgpool(&nd, k_s133, k_x33, y);
        const float want_ceil[4] = {3, 4.5f, 7.5f, 9};
        ASSERT_FLOATS(y, want_ceil, 4, 0.0f);
    }
}

static void test_globalavgpool_linear(void **state)
{
    (void)state;
    const float x[8] = {1, 2, 3, 4, 0, 0, 0, 1};
    float y[2];
    fnet_globalavgpool((model_shape){3, 2, 2, 2}, x, y);
    const float want[2] = {2.5f, 0.25f};
    ASSERT_FLOATS(y, want, 2, 0.0f);

    float w[6] = {1, 2, 3, 4, 5, 6}, b[2] = {0.5f, -1};
    model_node nd;
    memset(&nd, 0, sizeof nd);
    nd.op = MODEL_OP_LINEAR;
    nd.weight = w, nd.bias = b;
    nd.shape = (model_shape){1, 2, 1, 1};
    const float xi[3] = {1, 0, -1};
    fnet_linear(&nd, (model_shape){1, 3, 1, 1}, xi, y);
    const float want_lin[2] = {-1.5f, -3};
    ASSERT_FLOATS(y, want_lin, 2, 0.0f);
}

static void test_window_out(void **state)
{
    (void)state;
    assert_int_equal(model_window_out(28, 5, 1, 2, 2, 1, 0), 28);
    assert_int_equal(model_window_out(28, 3, 2, 1, 1, 1, 0), 14);
    assert_int_equal(model_window_out(7, 2, 2, 0, 0, 1, 0), 3);
    assert_int_equal(model_window_out(7, 2, 2, 0, 0, 1, 1), 4);
    /* ceil mode never starts a window in the end padding */
    assert_int_equal(model_window_out(5, 2, 2, 1, 1, 1, 1), 3);
    assert_int_equal(model_window_out(2, 3, 1, 0, 0, 1, 0), 0);
}

static void test_argmax_ties(void **state)
{
    (void)state;
    const float a[4] = {1, 3, 3, 2};
    assert_int_equal(fnet_argmax(a, 4), 1);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_normalise),     cmocka_unit_test(test_conv_hand),
        cmocka_unit_test(test_conv_vs_direct), cmocka_unit_test(test_batchnorm),
        cmocka_unit_test(test_relu_add_flatten), cmocka_unit_test(test_maxpool),
        cmocka_unit_test(test_avgpool),       cmocka_unit_test(test_globalavgpool_linear),
        cmocka_unit_test(test_window_out),    cmocka_unit_test(test_argmax_ties),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
