/*
 * frefit.h: the data-aware refit of CP-factorized layers (`ccq factorize --refit N`).
 *
 * factorize.h fits each layer's factors to its weights alone: the error it
 * minimises is the weights', whatever the inputs the layer sees. Where that
 * error is large (low ranks) the network breaks although each layer's fit is
 * the best the weights allow. The refit measures the error where it counts,
 * on the layer's outputs for real images, and repairs what it can in closed
 * form: for each factorized layer in node order, the last factor (the 1x1
 * conv R -> Cout, or the second thin linear layer) and the bias are solved by
 * least squares so that the chain's pre-activation output, fed by the
 * factorized network's own activations (every earlier layer already refitted;
 * every factor on its grid, as the integer network will run it), matches the
 * original layer's pre-activation output in the original network (the
 * "asymmetric" reconstruction of Zhang et al. 2016, which also absorbs the
 * errors of the layers before). The solution is put on the factor's grid by
 * GPTQ with the centred input covariance as its Hessian (gptq_layer), each
 * row's scale chosen among the GPTQ scale search's fractions, and the bias
 * solved again for the levels. Per output channel, the old levels and bias
 * are kept where they reconstruct better, so no channel's output error on
 * the refit's images grows.
 *
 * Float at set-up (double sums in image order; OpenBLAS and LAPACK with one
 * thread), single process: the result depends on the images and the model
 * only. The other factors (the 1x1 Cin -> R and the depthwise convs) keep
 * their levels.
 */
#ifndef CCQ_FREFIT_H
#define CCQ_FREFIT_H

#include "ccq/common.h"
#include "ccq/data.h"
#include "ccq/factorize.h"
#include "ccq/model.h"

typedef struct {
    int images;    /* the first N images of the split given (fewer if it holds fewer) */
    double ridge;  /* added to the input Gram's diagonal, times its mean (default 1e-4) */
    int wbits;     /* the factors' width */
} frefit_config;

void frefit_config_default(frefit_config *c);

/* One refitted layer: relative output error sqrt(SSE / sum y^2) over the
 * refit's images and positions, before and after, and the channels whose
 * refitted levels were kept (the others keep their old levels and bias). */
typedef struct {
    double err_before, err_after;
    int channels, refitted;
} frefit_layer;

/* Refits the last factor of every layer of plan: orig is the folded float
 * model factorize_model started from, fz its output (its last factors'
 * weights and biases are replaced by the refit's, on their grid), plan its
 * plan (the last factors' levels and scales replaced). rep [plan->n_layers]
 * may be NULL. Errors: images that do not fit (CCQ_ERR_MISMATCH); on error
 * fz and plan are unchanged. */
ccq_status frefit_run(const model *orig, model *fz, factorize_plan *plan, const data_split *calib,
                      const frefit_config *c, frefit_layer *rep, ccq_err *err);

#endif
