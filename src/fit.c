/*
 * fit.c: fixed-point cross-entropy, accuracy and distillation fitness (see
 * fit.h). Tables come from scripts/gen_fit_tables.py; no floating point
 * except in fit_init (the scale, once) and fit_teacher_probs (one rounding
 * per teacher logit, an exact IEEE operation, no libm).
 */
#include "ccq/fit.h"

#include <math.h>

#include "ccq/kern.h"
#include "ccq/quant.h"
#include "fit_tables.h"

ccq_status fit_init(fit_ctx *f, int classes, double logits_scale, ccq_err *err)
{
    int sh = 0;
    f->classes = classes;
    if (classes < 2 || quant_multiplier(logits_scale * (double)FIT_ONE, &f->mult, &sh))
        return ccq_fail(err, CCQ_ERR_LIMIT, "fitness: logits scale %g cannot be converted to fixed point",
                        logits_scale);
    f->shift = sh;
    return CCQ_OK;
}

int64_t fit_exp_q30(int64_t d)
{
    if (d >= 0) return INT64_C(1) << 30;
    const uint64_t u = (uint64_t)(-d);
    const uint64_t n = u >> 16;
    if (n > 22) return 0;
    const unsigned hi = (unsigned)(u >> 8) & 0xff, lo = (unsigned)u & 0xff;
    int64_t r = k_exp_int[n];
    r = (r * k_exp_hi[hi] + (INT64_C(1) << 29)) >> 30;
    r = (r * k_exp_lo[lo] + (INT64_C(1) << 29)) >> 30;
    return r;
}

int64_t fit_log_q16(uint64_t s)
{
    CCQ_ASSERT(s >= (UINT64_C(1) << 30));
    const int e = 63 - __builtin_clzll(s); /* s in [2^e, 2^(e+1)), e >= 30 */
    const uint64_t m = e >= 30 ? s >> (e - 30) : s << (30 - e); /* [2^30, 2^31) */
    const uint64_t x = m - (UINT64_C(1) << 30);                 /* (mantissa - 1) in Q30 */
    const unsigned i = (unsigned)(x >> 22);
    const int64_t rem = (int64_t)(x & ((UINT64_C(1) << 22) - 1));
    const int64_t ln_m = k_log1p[i] + (((k_log1p[i + 1] - k_log1p[i]) * rem + (INT64_C(1) << 21)) >> 22);
    const int64_t q30 = (int64_t)(e - 30) * k_ln2 + ln_m;
    return (q30 + (INT64_C(1) << 13)) >> 14;
}

static int64_t to_q16(const fit_ctx *f, int32_t q) { return kern_requant(q, f->mult, f->shift); }

/* z[k] in Q16 and the log-sum-exp of z (Q16); returns log-sum-exp minus max, and the max. */
static int64_t lse(const fit_ctx *f, const int32_t *logits, int64_t *zmax_out)
{
    int64_t zmax = to_q16(f, logits[0]);
    for (int k = 1; k < f->classes; k++) {
        const int64_t z = to_q16(f, logits[k]);
        if (z > zmax) zmax = z;
    }
    uint64_t s = 0;
    for (int k = 0; k < f->classes; k++) s += (uint64_t)fit_exp_q30(to_q16(f, logits[k]) - zmax);
    *zmax_out = zmax;
    return fit_log_q16(s);
}

int64_t fit_xent_one(const fit_ctx *f, const int32_t *logits, int label)
{
    int64_t zmax;
    const int64_t l = lse(f, logits, &zmax);
    return l + zmax - to_q16(f, logits[label]);
}

int64_t fit_xent(const fit_ctx *f, const int32_t *logits, int n, const int32_t *labels)
{
    int64_t s = 0;
    for (int i = 0; i < n; i++) s += fit_xent_one(f, logits + (int64_t)i * f->classes, labels[i]);
    return s;
}

int fit_correct(const fit_ctx *f, const int32_t *logits, int n, const int32_t *labels)
{
    int c = 0;
    for (int i = 0; i < n; i++) {
        const int32_t *l = logits + (int64_t)i * f->classes;
        int best = 0;
        for (int k = 1; k < f->classes; k++)
            if (l[k] > l[best]) best = k;
        c += best == labels[i];
    }
    return c;
}

void fit_teacher_probs(const fit_ctx *f, const float *teacher_logits, int32_t *out)
{
    int64_t zmax = INT64_MIN;
    for (int k = 0; k < f->classes; k++) {
        const int64_t z = llround((double)teacher_logits[k] * (double)FIT_ONE);
        if (z > zmax) zmax = z;
    }
    uint64_t s = 0;
    for (int k = 0; k < f->classes; k++) s += (uint64_t)fit_exp_q30(llround((double)teacher_logits[k] * FIT_ONE) - zmax);
    for (int k = 0; k < f->classes; k++) {
        const uint64_t e = (uint64_t)fit_exp_q30(llround((double)teacher_logits[k] * FIT_ONE) - zmax);
        out[k] = (int32_t)(((e << FIT_FRAC) + s / 2) / s);
    }
}

int64_t fit_distill_one(const fit_ctx *f, const int32_t *logits, const int32_t *teacher)
{
    int64_t zmax;
    const int64_t l = lse(f, logits, &zmax);
    int64_t acc = 0;
    for (int k = 0; k < f->classes; k++) acc += (int64_t)teacher[k] * (l + zmax - to_q16(f, logits[k]));
    return (acc + (FIT_ONE / 2)) >> FIT_FRAC;
}
