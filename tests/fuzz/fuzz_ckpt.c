/*
 * fuzz_ckpt.c: libFuzzer harness for the checkpoint reader (ckpt_read).
 *
 * A checkpoint ckpt_read accepts must also be safe to search from: its
 * configuration snapshot parses, and every EDA row it returns can be sampled
 * and updated (eda_sample, eda_update: what a resumed search does first),
 * with the one bound the file alone gives for every weight (the snapshot's
 * widest bit width). A row that would walk before its buffer or put a level
 * off the grid aborts here, as it would in the search.
 */
#include <math.h>

#include "ccq/cfg.h"
#include "ccq/ckpt.h"
#include "ccq/eda.h"
#include "ccq/model.h"
#include "ccq/rng.h"
#include "fuzz_common.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

static void search_from(const ckpt_data *c)
{
    cfg_search cfg;
    ccq_err err;
    cfg_defaults(&cfg);
    CCQ_ASSERT(cfg_load_text(&cfg, c->config, "config", &err) == CCQ_OK);
    const int64_t n = c->n < 4096 ? c->n : 4096;
    /* ckpt_read's bound on every value: the widest grid, +-127 with learned levels */
    const int q = cfg.levels == CFG_LEVELS_LEARNED ? 127 : model_qmax(cfg.first_last_8 ? 8 : (int)cfg.wbits);
    int8_t *lo = ccq_malloc((size_t)n), *hi = ccq_malloc((size_t)n);
    memset(lo, -q, (size_t)n);
    memset(hi, q, (size_t)n);
    eda_state e = {.n = n, .r = c->width / 2, .width = c->width, .base = c->eda_base, .lo = lo, .hi = hi, .p = c->eda_p};
    const uint32_t alpha = (uint32_t)lround(fmin(fmax(cfg.alpha, 0.0), 1.0) * EDA_ONE);
    rng_pcg32 rng;
    rng_init(&rng, 1, 2);
    for (int64_t i = 0; i < n; i++) {
        int8_t elite[4];
        for (int k = 0; k < 4; k++) eda_sample(&e, &i, 1, &rng, &elite[k]);
        eda_update(&e, &i, 1, elite, 4, alpha);
    }
    ccq_free(lo), ccq_free(hi);
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    const char *path = fuzz_write("ckpt", data, size);
    ckpt_data c;
    ccq_err err;
    if (ckpt_read(&c, path, &err) == CCQ_OK) search_from(&c);
    ckpt_free(&c);
    fuzz_check_h5("ckpt");
    return 0;
}
