/*
 * eda.c: fixed-point categorical distributions per weight (see eda.h).
 * Every operation is integer arithmetic in a fixed order, so the state
 * evolves identically on every rank.
 */
#include "ccq/eda.h"

#include <stdlib.h>
#include <string.h>

static int in_grid(const eda_state *e, int64_t i, int j)
{
    const int level = e->base[i] - e->r + j;
    return level >= e->lo[i] && level <= e->hi[i];
}

ccq_status eda_init(eda_state *e, int64_t n, int r, const int8_t *base, const int8_t *lo, const int8_t *hi,
                    uint32_t p_center, uint32_t p_min, ccq_err *err)
{
    memset(e, 0, sizeof *e);
    if (r < 1 || r > EDA_MAX_R) return ccq_fail(err, CCQ_ERR_USAGE, "search radius %d is outside 1..%d", r, EDA_MAX_R);
    if (p_center == 0 || p_center > EDA_ONE)
        return ccq_fail(err, CCQ_ERR_USAGE, "initial centre probability must be in (0, 1]");
    /* width^2 * p_min <= 1 keeps the most probable candidate above the floors it pays for */
    if ((uint64_t)p_min * (2 * r + 1) * (2 * r + 1) > EDA_ONE)
        return ccq_fail(err, CCQ_ERR_USAGE, "probability floor too large for %d candidates", 2 * r + 1);
    e->n = n, e->r = r, e->width = 2 * r + 1, e->p_min = p_min;
    e->base = ccq_malloc((size_t)n);
    e->lo = ccq_malloc((size_t)n);
    e->hi = ccq_malloc((size_t)n);
    e->p = ccq_calloc((size_t)n * (size_t)e->width, sizeof(uint32_t));
    memcpy(e->base, base, (size_t)n);
    memcpy(e->hi, hi, (size_t)n);
    for (int64_t i = 0; i < n; i++) e->lo[i] = lo ? lo[i] : (int8_t)-hi[i];
    for (int64_t i = 0; i < n; i++) {
        CCQ_ASSERT(base[i] >= e->lo[i] && base[i] <= e->hi[i]);
        uint32_t *p = e->p + i * e->width;
        int others = 0;
        for (int j = 0; j < e->width; j++) others += j != r && in_grid(e, i, j);
        const uint32_t each = others ? (EDA_ONE - p_center) / (uint32_t)others : 0;
        uint32_t used = 0;
        for (int j = 0; j < e->width; j++)
            if (j != r && in_grid(e, i, j)) p[j] = each, used += each;
        p[r] = EDA_ONE - used;
    }
    return CCQ_OK;
}

void eda_prior_float(eda_state *e, const int32_t *pos, uint32_t p_center)
{
    const int64_t one = 65536; /* Q16 level units, as pos */
    const uint32_t cap = EDA_ONE - p_center / 4 - (uint32_t)e->width * e->p_min; /* > 0: eda_init's bounds */
    for (int64_t i = 0; i < e->n; i++) {
        uint32_t *p = e->p + i * e->width;
        int others = 0;
        for (int j = 0; j < e->width; j++) others += j != e->r && in_grid(e, i, j);
        if (!others) continue;
        const uint64_t b = (EDA_ONE - p_center) / (uint32_t)others;
        uint64_t raw[2 * EDA_MAX_R + 1] = {0}, total = 0;
        for (int j = 0; j < e->width; j++) {
            if (j == e->r || !in_grid(e, i, j)) continue;
            const int64_t level = e->base[i] - e->r + j, d = llabs((int64_t)pos[i] - level * one);
            int64_t t = 3 * one / 2 - d;
            t = t < 0 ? 0 : t > one ? one : t;
            raw[j] = (3 * b * (uint64_t)t * (uint64_t)t) >> 32;
            total += raw[j];
        }
        uint32_t used = 0;
        for (int j = 0; j < e->width; j++) {
            if (j == e->r || !in_grid(e, i, j)) continue;
            uint32_t v = (uint32_t)(total > cap ? raw[j] * cap / total : raw[j]);
            if (v < e->p_min) v = e->p_min;
            p[j] = v, used += v;
        }
        p[e->r] = EDA_ONE - used;
    }
}

void eda_free(eda_state *e)
{
    ccq_free(e->base);
    ccq_free(e->lo);
    ccq_free(e->hi);
    ccq_free(e->p);
    memset(e, 0, sizeof *e);
}

void eda_sample(const eda_state *e, const int64_t *idx, int m, rng_pcg32 *rng, int8_t *out)
{
    for (int t = 0; t < m; t++) {
        const uint32_t *p = e->p + idx[t] * e->width;
        const uint32_t u = rng_bounded(rng, EDA_ONE);
        uint32_t c = 0;
        int j = 0;
        while (j < e->width - 1 && u >= c + p[j]) c += p[j++];
        while (p[j] == 0) j--; /* u fell past the last nonzero candidate only if rows were malformed */
        out[t] = (int8_t)(e->base[idx[t]] - e->r + j);
    }
}

void eda_update(eda_state *e, const int64_t *idx, int m, const int8_t *elite, int mu, uint32_t alpha)
{
    CCQ_ASSERT(mu >= 1 && alpha <= EDA_ONE);
    uint32_t cnt[2 * EDA_MAX_R + 1];
    for (int t = 0; t < m; t++) {
        const int64_t i = idx[t];
        uint32_t *p = e->p + i * e->width;
        memset(cnt, 0, sizeof cnt);
        for (int k = 0; k < mu; k++) {
            const int j = elite[(int64_t)k * m + t] - (e->base[i] - e->r);
            CCQ_ASSERT(j >= 0 && j < e->width && in_grid(e, i, j));
            cnt[j]++;
        }
        uint32_t sum = 0;
        for (int j = 0; j < e->width; j++) {
            if (!in_grid(e, i, j)) continue;
            const uint64_t f = ((uint64_t)cnt[j] * EDA_ONE + (uint64_t)mu / 2) / (uint64_t)mu;
            p[j] = (uint32_t)(((uint64_t)(EDA_ONE - alpha) * p[j] + (uint64_t)alpha * f) >> 16);
            if (p[j] < e->p_min) p[j] = e->p_min;
            sum += p[j];
        }
        /* Residue (either sign) to the most probable candidate, lowest index on ties. */
        int best = -1;
        for (int j = 0; j < e->width; j++)
            if (in_grid(e, i, j) && (best < 0 || p[j] > p[best])) best = j;
        p[best] = p[best] + EDA_ONE - sum;
    }
}

uint32_t eda_confidence(const eda_state *e, int64_t i)
{
    const uint32_t *p = e->p + i * e->width;
    uint32_t mx = 0;
    for (int j = 0; j < e->width; j++)
        if (p[j] > mx) mx = p[j];
    return mx;
}

int8_t eda_mode(const eda_state *e, int64_t i)
{
    const uint32_t *p = e->p + i * e->width;
    int best = 0;
    for (int j = 1; j < e->width; j++)
        if (p[j] > p[best]) best = j;
    return (int8_t)(e->base[i] - e->r + best);
}
