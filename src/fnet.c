/*
 * fnet.c: float reference forward pass (see fnet.h). Convolution is im2col
 * followed by a register-blocked GEMM that compilers vectorise; every output
 * is a sum over its inputs in ascending order, so results do not depend on
 * the ISA the compiler picks (fp contraction is off in the build).
 */
#include "ccq/fnet.h"
#include "ccq/op.h"

#include <float.h>
#include <math.h>
#include <string.h>

void fnet_normalise(const model *m, const uint8_t *image, float *x)
{
    int64_t hw = (int64_t)m->input.h * m->input.w;
    for (int c = 0; c < m->input.c; c++) {
        const float mean = m->mean[c], sd = m->std[c];
        for (int64_t i = 0; i < hw; i++) x[c * hw + i] = ((float)image[c * hw + i] / 255.0f - mean) / sd;
    }
}

static int conv_is_pointwise(const model_node *nd)
{
    return nd->kernel[0] == 1 && nd->kernel[1] == 1 && nd->stride[0] == 1 && nd->stride[1] == 1 &&
           nd->pad[0] == 0 && nd->pad[1] == 0 && nd->pad[2] == 0 && nd->pad[3] == 0;
}

int64_t fnet_col_size(const model_node *nd, model_shape in)
{
    if (nd->op != MODEL_OP_CONV2D || conv_is_pointwise(nd)) return 0;
    return (int64_t)in.c * nd->kernel[0] * nd->kernel[1] * nd->shape.h * nd->shape.w;
}

/* col[k][p], k = (ci, ky, kx), p = (oy, ox); zero where the tap is in the padding. */
static void im2col(const model_node *nd, model_shape in, const float *x, float *col)
{
    const int kh = nd->kernel[0], kw = nd->kernel[1], oh = nd->shape.h, ow = nd->shape.w;
    const int sh = nd->stride[0], sw = nd->stride[1], dh = nd->dilation[0], dw = nd->dilation[1];
    const int pt = nd->pad[0], pl = nd->pad[1];
    for (int ci = 0; ci < in.c; ci++) {
        const float *xc = x + (int64_t)ci * in.h * in.w;
        for (int ky = 0; ky < kh; ky++) {
            for (int kx = 0; kx < kw; kx++) {
                float *dst = col + (((int64_t)ci * kh + ky) * kw + kx) * oh * ow;
                for (int oy = 0; oy < oh; oy++) {
                    const int iy = oy * sh - pt + ky * dh;
                    float *row = dst + (int64_t)oy * ow;
                    if (iy < 0 || iy >= in.h) {
                        memset(row, 0, sizeof(float) * (size_t)ow);
                        continue;
                    }
                    const float *xr = xc + (int64_t)iy * in.w;
                    for (int ox = 0; ox < ow; ox++) {
                        const int ix = ox * sw - pl + kx * dw;
                        row[ox] = (ix >= 0 && ix < in.w) ? xr[ix] : 0.0f;
                    }
                }
            }
        }
    }
}

enum { GEMM_MR = 4, GEMM_NR = 64 };

/* y[m][p] = bias[m] + sum_k a[m][k] * b[k][p], k ascending.
 * a: [M][K], b: [K][P], y: [M][P]. */
static void gemm_bias(const float *a, const float *b, const float *bias, float *y, int M, int K, int64_t P)
{
    for (int m0 = 0; m0 < M; m0 += GEMM_MR) {
        const int mr = M - m0 < GEMM_MR ? M - m0 : GEMM_MR;
        for (int64_t p0 = 0; p0 < P; p0 += GEMM_NR) {
            const int np = P - p0 < GEMM_NR ? (int)(P - p0) : GEMM_NR;
            float acc[GEMM_MR][GEMM_NR];
            memset(acc, 0, sizeof acc);
            for (int k = 0; k < K; k++) {
                const float *bk = b + (int64_t)k * P + p0;
                for (int r = 0; r < mr; r++) {
                    const float av = a[(int64_t)(m0 + r) * K + k];
                    for (int j = 0; j < np; j++) acc[r][j] += av * bk[j];
                }
            }
            for (int r = 0; r < mr; r++) {
                const float bv = bias ? bias[m0 + r] : 0.0f;
                float *yr = y + (int64_t)(m0 + r) * P + p0;
                for (int j = 0; j < np; j++) yr[j] = acc[r][j] + bv;
            }
        }
    }
}

void fnet_conv2d(const model_node *nd, model_shape in, const float *x, float *y, float *col)
{
    const int G = nd->groups > 0 ? nd->groups : 1;
    const int cig = in.c / G, cog = nd->shape.c / G;
    const int K = cig * nd->kernel[0] * nd->kernel[1];
    const int64_t P = (int64_t)nd->shape.h * nd->shape.w;
    const float *b = x;
    if (!conv_is_pointwise(nd)) {
        im2col(nd, in, x, col);
        b = col;
    }
    /* group g: output channels [g cog, (g + 1) cog) over the rows of its cig input channels
     * (im2col's rows are (ci, ky, kx), so a group's K rows are contiguous) */
    for (int g = 0; g < G; g++)
        gemm_bias(nd->weight + (int64_t)g * cog * K, b + (int64_t)g * K * P, nd->bias ? nd->bias + g * cog : NULL,
                  y + (int64_t)g * cog * P, cog, K, P);
}

void fnet_batchnorm(const model_node *nd, const float *x, float *y)
{
    const int64_t hw = (int64_t)nd->shape.h * nd->shape.w;
    for (int c = 0; c < nd->shape.c; c++) {
        const float scale = nd->gamma[c] / sqrtf(nd->var[c] + nd->eps);
        const float shift = nd->beta[c] - nd->mean[c] * scale;
        for (int64_t i = 0; i < hw; i++) y[c * hw + i] = x[c * hw + i] * scale + shift;
    }
}

void fnet_relu(const float *x, float *y, int64_t n)
{
    for (int64_t i = 0; i < n; i++) y[i] = x[i] > 0.0f ? x[i] : 0.0f;
}


void fnet_maxpool(const model_node *nd, model_shape in, const float *x, float *y)
{
    const int oh = nd->shape.h, ow = nd->shape.w;
    for (int c = 0; c < in.c; c++) {
        const float *xc = x + (int64_t)c * in.h * in.w;
        for (int oy = 0; oy < oh; oy++) {
            int y0, y1, ph;
            model_window(oy, nd->stride[0], nd->kernel[0], nd->pad[0], nd->pad[2], in.h, &y0, &y1, &ph);
            for (int ox = 0; ox < ow; ox++) {
                int x0, x1, pw;
                model_window(ox, nd->stride[1], nd->kernel[1], nd->pad[1], nd->pad[3], in.w, &x0, &x1, &pw);
                float best = -FLT_MAX;
                for (int iy = y0; iy < y1; iy++)
                    for (int ix = x0; ix < x1; ix++)
                        if (xc[iy * in.w + ix] > best) best = xc[iy * in.w + ix];
                y[((int64_t)c * oh + oy) * ow + ox] = best;
            }
        }
    }
}

void fnet_avgpool(const model_node *nd, model_shape in, const float *x, float *y)
{
    const int oh = nd->shape.h, ow = nd->shape.w;
    for (int c = 0; c < in.c; c++) {
        const float *xc = x + (int64_t)c * in.h * in.w;
        for (int oy = 0; oy < oh; oy++) {
            int y0, y1, ph;
            model_window(oy, nd->stride[0], nd->kernel[0], nd->pad[0], nd->pad[2], in.h, &y0, &y1, &ph);
            for (int ox = 0; ox < ow; ox++) {
                int x0, x1, pw;
                model_window(ox, nd->stride[1], nd->kernel[1], nd->pad[1], nd->pad[3], in.w, &x0, &x1, &pw);
                float s = 0.0f;
                for (int iy = y0; iy < y1; iy++)
                    for (int ix = x0; ix < x1; ix++) s += xc[iy * in.w + ix];
                const int n = nd->count_include_pad ? ph * pw : (y1 - y0) * (x1 - x0);
                y[((int64_t)c * oh + oy) * ow + ox] = s / (float)n;
            }
        }
    }
}

void fnet_globalavgpool(model_shape in, const float *x, float *y)
{
    const int64_t hw = (int64_t)in.h * in.w;
    for (int c = 0; c < in.c; c++) {
        float s = 0.0f;
        for (int64_t i = 0; i < hw; i++) s += x[c * hw + i];
        y[c] = s / (float)hw;
    }
}

void fnet_linear(const model_node *nd, model_shape in, const float *x, float *y)
{
    /* A 1-column GEMM: y[o] = bias[o] + sum_i w[o][i] x[i], i ascending. */
    gemm_bias(nd->weight, x, nd->bias, y, nd->shape.c, in.c, 1);
}

void fnet_add(const float *a, const float *b, float *y, int64_t n)
{
    for (int64_t i = 0; i < n; i++) y[i] = a[i] + b[i];
}

void fnet_init(fnet *net, const model *m)
{
    int64_t total = model_numel(m->input), col = 0;
    for (int i = 0; i < m->n_nodes; i++) {
        total += model_numel(m->nodes[i].shape);
        const op_traits *ot = op_get(m->nodes[i].op);
        const int64_t c = ot->fscratch ? ot->fscratch(m, i) : 0;
        if (c > col) col = c;
    }
    net->m = m;
    net->slab = ccq_malloc(sizeof(float) * (size_t)(total + col));
    net->out = ccq_malloc(sizeof(float *) * (size_t)m->n_nodes);
    float *p = net->slab;
    net->input = p;
    p += model_numel(m->input);
    for (int i = 0; i < m->n_nodes; i++) {
        net->out[i] = p;
        p += model_numel(m->nodes[i].shape);
    }
    net->col = p;
}

void fnet_free(fnet *net)
{
    ccq_free(net->slab);
    ccq_free(net->out);
    net->slab = NULL;
    net->out = NULL;
}

const float *fnet_forward(fnet *net, const uint8_t *image)
{
    fnet_forward_until(net, image, net->m->n_nodes);
    return net->out[net->m->output];
}

void fnet_forward_until(fnet *net, const uint8_t *image, int end)
{
    const model *m = net->m;
    const float *x[MODEL_MAX_IN];
    fnet_normalise(m, image, net->input);
    for (int i = 0; i < end; i++) {
        const model_node *nd = &m->nodes[i];
        for (int j = 0; j < nd->n_in; j++) x[j] = nd->in[j] < 0 ? net->input : net->out[nd->in[j]];
        float *y = net->out[i];
        op_get(nd->op)->ffwd(m, i, x, y, net->col);
        if (nd->relu) fnet_relu(y, y, model_numel(nd->shape));
        if (nd->has_clip && nd->op != MODEL_OP_CLIP) op_clip_float(y, model_numel(nd->shape), nd->clip[0], nd->clip[1]);
    }
}

int fnet_argmax(const float *logits, int n)
{
    int best = 0;
    for (int i = 1; i < n; i++)
        if (logits[i] > logits[best]) best = i;
    return best;
}
