/*
 * fit.h: integer-only fitness of int32 logits (the search's objective).
 *
 * Cross-entropy in fixed point: logits are converted to nats in Q16 by an
 * integer multiplier (derived once from the logits' scale), log-sum-exp is
 * computed with committed integer tables (src/fit_tables.h) and integer
 * arithmetic only, and the result is nats in Q16 (FIT_ONE = 1 nat). Every
 * rank, compiler and CPU gets the same integers. Against float cross-entropy
 * of the same logits the error is below 1e-4 nats per image
 * (tests/test_fit.c). Also: correct-prediction counts, and distillation
 * (cross-entropy against a teacher's probabilities, themselves computed with
 * the same integer machinery). It knows nothing of the EDA or of MPI.
 */
#ifndef CCQ_FIT_H
#define CCQ_FIT_H

#include <stdint.h>

#include "ccq/common.h"

#define FIT_FRAC 16
#define FIT_ONE (INT64_C(1) << FIT_FRAC)

typedef struct {
    int classes;
    int32_t mult, shift; /* int32 logit -> Q16 nats, as kern_requant */
} fit_ctx;

/* logits_scale: real logit = logits_scale * int32 value (qnet.logits_scale).
 * CCQ_ERR_LIMIT if the scale cannot be represented. */
ccq_status fit_init(fit_ctx *f, int classes, double logits_scale, ccq_err *err);

/* Cross-entropy of one image in Q16 nats (>= 0). */
int64_t fit_xent_one(const fit_ctx *f, const int32_t *logits, int label);
/* Sum over n images (logits [n][classes]). Lower is better. */
int64_t fit_xent(const fit_ctx *f, const int32_t *logits, int n, const int32_t *labels);
/* Images whose largest logit (lowest index on ties) is the label. */
int fit_correct(const fit_ctx *f, const int32_t *logits, int n, const int32_t *labels);

/* Teacher probabilities in Q16 from float teacher logits (rounded once to
 * Q16 nats, the only float step); out[classes]. */
void fit_teacher_probs(const fit_ctx *f, const float *teacher_logits, int32_t *out);
/* Cross-entropy against teacher probabilities, one image, Q16 nats. */
int64_t fit_distill_one(const fit_ctx *f, const int32_t *logits, const int32_t *teacher);

/* exp(d) in Q30 for d <= 0 given in Q16, and ln(s) in Q16 for s >= 2^30 given
 * in Q30: the integer primitives, exposed for tests. */
int64_t fit_exp_q30(int64_t d_q16);
int64_t fit_log_q16(uint64_t s_q30);

#endif
