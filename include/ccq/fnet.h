/*
 * fnet.h: the float reference forward pass over a model graph.
 *
 * This is the yardstick the integer engine is checked against and the source
 * of float statistics for calibration; it is plain portable C (no ISA
 * kernels), one image at a time, float32 with sums in a fixed order. It is
 * not the search's forward pass (that is integer-only).
 *
 * Layouts: activations are [C][H][W] per image (rank 1: [F]); conv weights
 * [Cout][Cin][kh][kw]; linear weights [out][in].
 */
#ifndef CCQ_FNET_H
#define CCQ_FNET_H

#include <stdint.h>

#include "ccq/common.h"
#include "ccq/model.h"

typedef struct {
    const model *m;
    float *slab;  /* one allocation holding every buffer below */
    float *input; /* normalised input image */
    float **out;  /* out[i]: node i's output, model_numel(shape) floats */
    float *col;   /* im2col scratch, large enough for every conv */
} fnet;

/* Plans all buffers for one image; the forward pass then never allocates. */
void fnet_init(fnet *net, const model *m);
void fnet_free(fnet *net);

/* Runs one image (raw uint8, [C][H][W]); returns the logits (classes floats,
 * owned by net, valid until the next call). */
const float *fnet_forward(fnet *net, const uint8_t *image);

/* Runs nodes 0 .. end-1 only (node order is topological): their outputs are
 * then in net->out. end = 0 only normalises the image into net->input. */
void fnet_forward_until(fnet *net, const uint8_t *image, int end);

/* Index of the largest logit; ties go to the lowest index (as torch.argmax). */
int fnet_argmax(const float *logits, int n);

/* Layer functions, exposed for unit tests. `in` is the input shape. */
void fnet_normalise(const model *m, const uint8_t *image, float *x);
void fnet_conv2d(const model_node *nd, model_shape in, const float *x, float *y, float *col);
void fnet_batchnorm(const model_node *nd, const float *x, float *y);
void fnet_relu(const float *x, float *y, int64_t n);
void fnet_maxpool(const model_node *nd, model_shape in, const float *x, float *y);
void fnet_avgpool(const model_node *nd, model_shape in, const float *x, float *y);
void fnet_globalavgpool(model_shape in, const float *x, float *y);
void fnet_linear(const model_node *nd, model_shape in, const float *x, float *y);
void fnet_add(const float *a, const float *b, float *y, int64_t n);

/* im2col scratch floats a conv node needs (0 for a 1x1/stride-1/no-pad conv). */
int64_t fnet_col_size(const model_node *nd, model_shape in);

#endif
