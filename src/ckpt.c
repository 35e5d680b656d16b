/*
 * ckpt.c: checkpoint files (see ckpt.h), HDF5 through h5io, written
 * atomically, refused loudly on a wrong format, version or shape.
 * Reading checks everything the file alone can tell (counters, the
 * configuration snapshot, level bounds, every EDA row, the start's scales);
 * whether it fits a given model is the caller's (ckpt_check_fit, cc.c).
 */
#include "ccq/ckpt.h"

#include <errno.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>

#include "ccq/cfg.h"
#include "ccq/eda.h"
#include "ccq/h5io.h"
#include "ccq/model.h"
#include "ccq/step.h"

ccq_status ckpt_file_hash(const char *path, uint64_t *hash, ccq_err *err)
{
    FILE *f = fopen(path, "rb");
    if (!f) return ccq_fail(err, CCQ_ERR_IO, "%s: %s", path, errno == ENOENT ? "no such file" : strerror(errno));
    uint64_t h = UINT64_C(0xcbf29ce484222325);
    unsigned char buf[65536];
    size_t n;
    while ((n = fread(buf, 1, sizeof buf, f)) > 0)
        for (size_t i = 0; i < n; i++) h = (h ^ buf[i]) * UINT64_C(0x100000001b3);
    const int bad = ferror(f);
    fclose(f);
    if (bad) return ccq_fail(err, CCQ_ERR_IO, "%s: read error", path);
    *hash = h;
    return CCQ_OK;
}

ccq_status ckpt_write(const ckpt_data *c, const char *path, ccq_err *err)
{
    h5io_file f;
    ccq_status st = h5io_atomic_create(&f, path, err);
    if (st) return st;
    const int32_t version = CKPT_VERSION, width = c->width, complete = c->complete ? 1 : 0;
    hsize_t n1[1] = {(hsize_t)c->n}, np[1] = {(hsize_t)c->n * (hsize_t)c->width};
    hsize_t nw[1] = {(hsize_t)c->n_wscale}, na[1] = {(hsize_t)c->n_act}, nc[1] = {(hsize_t)c->n_codebook};
    if ((st = h5io_write_attr_str(&f, "/", "format", CKPT_FORMAT, err)) ||
        (st = h5io_write_attr_ints(&f, "/", "version", &version, 1, 1, err)) ||
        (st = h5io_write_attr_str(&f, "/", "config", c->config, err)) ||
        (st = h5io_write_attr_i64(&f, "/", "model_hash", (int64_t)c->model_hash, err)) ||
        (st = h5io_write_attr_i64(&f, "/", "data_hash", (int64_t)c->data_hash, err)) ||
        (st = h5io_write_attr_i64(&f, "/", "generation", c->gen, err)) ||
        (st = h5io_write_attr_i64(&f, "/", "evaluations", c->evals, err)) ||
        (st = h5io_write_attr_i64(&f, "/", "accepted", c->accepted, err)) ||
        (st = h5io_write_attr_i64(&f, "/", "best_val", c->best_val, err)) ||
        (st = h5io_write_attr_i64(&f, "/", "log_bytes", c->log_bytes, err)) ||
        (st = h5io_write_attr_i64(&f, "/", "layer_cursor", c->layer_cursor, err)) ||
        (st = h5io_write_attr_ints(&f, "/", "eda_width", &width, 1, 1, err)) ||
        (st = h5io_write_attr_ints(&f, "/", "complete", &complete, 1, 1, err)) ||
        (st = h5io_write_dset(&f, "/", "levels", H5T_STD_I8LE, H5T_NATIVE_INT8, 1, n1, c->levels, err)) ||
        (st = h5io_write_dset(&f, "/", "best_levels", H5T_STD_I8LE, H5T_NATIVE_INT8, 1, n1, c->best_levels, err)) ||
        (st = h5io_write_dset(&f, "/", "eda_base", H5T_STD_I8LE, H5T_NATIVE_INT8, 1, n1, c->eda_base, err)) ||
        (st = h5io_write_dset(&f, "/", "eda_p", H5T_STD_U32LE, H5T_NATIVE_UINT32, 1, np, c->eda_p, err)) ||
        (st = h5io_write_attr_str(&f, "/", "start", c->start, err)) ||
        (st = h5io_write_dset(&f, "/", "start_wscale", H5T_IEEE_F32LE, H5T_NATIVE_FLOAT, 1, nw, c->start_wscale, err)) ||
        (st = h5io_write_dset(&f, "/", "start_act_scale", H5T_IEEE_F32LE, H5T_NATIVE_FLOAT, 1, na, c->start_act_scale,
                              err)) ||
        (c->n_codebook > 0 && (st = h5io_write_dset(&f, "/", "start_codebook", H5T_STD_I8LE, H5T_NATIVE_INT8, 1, nc,
                                                    c->start_codebook, err))) ||
        (c->start_bits &&
         (st = h5io_write_dset(&f, "/", "start_bits", H5T_STD_I8LE, H5T_NATIVE_INT8, 1, na, c->start_bits, err))) ||
        (c->start_bias &&
         (st = h5io_write_dset(&f, "/", "start_bias", H5T_IEEE_F32LE, H5T_NATIVE_FLOAT, 1, nw, c->start_bias, err)))) {
        h5io_atomic_abort(&f);
        return st;
    }
    return h5io_atomic_commit(&f, path, err);
}

/* The 1-D dataset `name` of exactly n entries of esize bytes (memory type mtype) into a new *out;
 * a different shape is CCQ_ERR_FORMAT naming `what` (the checkpoint's path in the message). */
static ccq_status read_vector(const h5io_file *f, const char *name, hid_t mtype, size_t esize, int64_t n,
                              const char *what, const char *path, void **out, ccq_err *err)
{
    hsize_t dims[H5IO_MAX_RANK];
    int rank = 0;
    ccq_status st = h5io_dset_dims(f, "/", name, &rank, dims, err);
    if (st) return st;
    if (rank != 1 || dims[0] != (hsize_t)n)
        return ccq_fail(err, CCQ_ERR_FORMAT, "%s: malformed checkpoint (%s: %s)", path, name, what);
    *out = ccq_malloc(esize * (size_t)(n + 1));
    return h5io_dset_read(f, "/", name, mtype, 1, dims, -1, *out, err);
}

static ccq_status read_i64(const h5io_file *f, const char *name, int64_t *v, ccq_err *err)
{
    return h5io_attr_ints_n(f, "/", name, v, 1, err);
}

/* The start's kinds a checkpoint may name (cc.c's s->start). */
static const char *const k_starts[] = {"rtn", "gptq", "gptq_scale", "gptq_asym", "budget", "file"};

/* The widest range any variable's value may have under the configuration
 * snapshot: the levels of the configured width, or of 8 bits when the first
 * and last layers are kept at 8; with learned levels codes and codebook
 * entries, +-127. */
/* The widest range any value may take before the model is known: a quantized file's widths are its
 * own (start "file"), codes and codebook entries of learned levels lie within +-127, and with a size
 * budget the widest of quant.widths. */
static void config_range(const cfg_search *cfg, const char *start, int *lo, int *hi)
{
    int bits = cfg->first_last_8 ? 8 : (int)cfg->wbits;
    if (cfg->size_budget)
        for (int b = 2; b <= 8; b++)
            if (cfg->widths >> b & 1 && b > bits) bits = b;
    const int q = cfg->levels == CFG_LEVELS_LEARNED || strcmp(start, "file") == 0 ? 127 : model_qmax(bits);
    *lo = -q, *hi = q;
}

/* Every row of the EDA's distribution: candidates summing exactly to
 * EDA_ONE, none outside [lo, hi] with nonzero mass (eda_sample and
 * eda_update assume both: a row of zeros walks before the buffer, mass
 * outside the range trips eda_update's assertion). The range is per weight
 * when the caller knows the model (lo_w, hi_w), else one for all. */
static ccq_status check_rows(const ckpt_data *c, const int8_t *lo_w, const int8_t *hi_w, int lo_all, int hi_all,
                             const char *path, ccq_err *err)
{
    const int r = c->width / 2;
    for (int64_t i = 0; i < c->n; i++) {
        const int lo = lo_w ? lo_w[i] : lo_all, hi = hi_w ? hi_w[i] : hi_all;
        const int8_t lv[3] = {c->levels[i], c->best_levels[i], c->eda_base[i]};
        static const char *const what[3] = {"level", "best level", "EDA base level"};
        for (int k = 0; k < 3; k++)
            if (lv[k] < lo || lv[k] > hi)
                return ccq_fail(err, CCQ_ERR_FORMAT, "%s: malformed checkpoint (%s %d of weight %lld outside %d..%d)",
                                path, what[k], lv[k], (long long)i, lo, hi);
        const uint32_t *p = c->eda_p + i * c->width;
        uint64_t sum = 0;
        for (int j = 0; j < c->width; j++) {
            const int level = c->eda_base[i] - r + j;
            if (p[j] && (level < lo || level > hi))
                return ccq_fail(err, CCQ_ERR_FORMAT,
                                "%s: malformed checkpoint (EDA row %lld gives level %d, outside %d..%d, probability %u)",
                                path, (long long)i, level, lo, hi, p[j]);
            sum += p[j];
        }
        if (sum != EDA_ONE)
            return ccq_fail(err, CCQ_ERR_FORMAT, "%s: malformed checkpoint (EDA row %lld sums to %llu, not %d)", path,
                            (long long)i, (unsigned long long)sum, EDA_ONE);
    }
    return CCQ_OK;
}

ccq_status ckpt_check_fit(const ckpt_data *c, const int8_t *lo, const int8_t *hi, const char *path, ccq_err *err)
{
    return check_rows(c, lo, hi, 0, 0, path, err);
}

/* Largest evaluation count a checkpoint may hold: run.budget is at most 1e12,
 * and a checkpoint is written at most one generation past it. Also keeps
 * generation * batch (the data position of a generation) far from overflow. */
#define CKPT_MAX_EVALS (INT64_C(1) << 40)

/* Checks the counters against each other and what the configuration
 * snapshot says (src/step.c: a generation evaluates at least lambda + 1
 * candidates and accepts at most one). */
static ccq_status check_counters(const ckpt_data *c, const cfg_search *cfg, const char *path, ccq_err *err)
{
    if (c->gen < 0 || c->evals < 0 || c->accepted < 0)
        return ccq_fail(err, CCQ_ERR_FORMAT,
                        "%s: malformed checkpoint (generation %lld, evaluations %lld, accepted %lld: each must be >= 0)",
                        path, (long long)c->gen, (long long)c->evals, (long long)c->accepted);
    if (c->evals > CKPT_MAX_EVALS)
        return ccq_fail(err, CCQ_ERR_FORMAT, "%s: malformed checkpoint (evaluations %lld: more than any budget allows)",
                        path, (long long)c->evals);
    const int64_t per_gen = step_min_evals(cfg);
    if (c->gen > c->evals || c->gen * per_gen > c->evals)
        return ccq_fail(err, CCQ_ERR_FORMAT,
                        "%s: malformed checkpoint (generation %lld needs at least %lld evaluations, %lld each; "
                        "it has %lld)",
                        path, (long long)c->gen, (long long)(c->gen > c->evals ? c->gen : c->gen * per_gen),
                        (long long)per_gen, (long long)c->evals);
    if (c->accepted > c->gen)
        return ccq_fail(err, CCQ_ERR_FORMAT, "%s: malformed checkpoint (accepted %lld in %lld generations: at most one each)",
                        path, (long long)c->accepted, (long long)c->gen);
    if (c->log_bytes < 0 || c->layer_cursor < 0)
        return ccq_fail(err, CCQ_ERR_FORMAT, "%s: malformed checkpoint (log position %lld, layer cursor %lld: must be >= 0)",
                        path, (long long)c->log_bytes, (long long)c->layer_cursor);
    if (c->width != 2 * cfg->radius + 1)
        return ccq_fail(err, CCQ_ERR_FORMAT, "%s: malformed checkpoint (%d EDA candidates, its search.radius %lld needs %lld)",
                        path, c->width, (long long)cfg->radius, (long long)(2 * cfg->radius + 1));
    return CCQ_OK;
}

ccq_status ckpt_read(ckpt_data *c, const char *path, ccq_err *err)
{
    h5io_file f;
    char fmt[32];
    int64_t v[1];
    hsize_t dims[H5IO_MAX_RANK];
    int rank = 0;
    ccq_status st;
    struct stat fst;
    cfg_search cfg;
    ccq_err why;
    memset(c, 0, sizeof *c);
    if ((st = h5io_file_open(&f, path, err))) return st;
    if (H5Aexists_by_name(f.id, "/", "format", H5P_DEFAULT) <= 0 ||
        (st = h5io_attr_str(&f, "/", "format", fmt, sizeof fmt, err)) || strcmp(fmt, CKPT_FORMAT) != 0) {
        st = ccq_fail(err, CCQ_ERR_FORMAT, "%s: not a ccq checkpoint", path);
        goto fail;
    }
    if ((st = read_i64(&f, "version", v, err))) goto fail;
    const int64_t version = v[0];
    if (version < 2 || version > CKPT_VERSION) {
        st = ccq_fail(err, CCQ_ERR_FORMAT, "%s: checkpoint version %lld, this ccq reads 2 to %d", path, (long long)v[0],
                      CKPT_VERSION);
        goto fail;
    }
    c->config = ccq_malloc(65536);
    if ((st = h5io_attr_str(&f, "/", "config", c->config, 65536, err))) goto fail;
    cfg_defaults(&cfg);
    if (cfg_load_text(&cfg, c->config, "config", &why)) {
        st = ccq_fail(err, CCQ_ERR_FORMAT, "%s: malformed checkpoint (its configuration: %s)", path, why.msg);
        goto fail;
    }
    int64_t mh, dh;
    if ((st = read_i64(&f, "model_hash", &mh, err)) || (st = read_i64(&f, "data_hash", &dh, err)) ||
        (st = read_i64(&f, "generation", &c->gen, err)) || (st = read_i64(&f, "evaluations", &c->evals, err)) ||
        (st = read_i64(&f, "accepted", &c->accepted, err)) || (st = read_i64(&f, "best_val", &c->best_val, err)) ||
        (st = read_i64(&f, "log_bytes", &c->log_bytes, err)) ||
        (st = read_i64(&f, "layer_cursor", &c->layer_cursor, err)) || (st = read_i64(&f, "eda_width", v, err)))
        goto fail;
    c->model_hash = (uint64_t)mh, c->data_hash = (uint64_t)dh;
    if (v[0] < 3 || v[0] > 2 * EDA_MAX_R + 1 || v[0] % 2 == 0) {
        st = ccq_fail(err, CCQ_ERR_FORMAT, "%s: malformed checkpoint (eda_width %lld: expected 3 to %d, odd)", path,
                      (long long)v[0], 2 * EDA_MAX_R + 1);
        goto fail;
    }
    c->width = (int)v[0];
    if (version >= 3) {
        if ((st = read_i64(&f, "complete", v, err))) goto fail;
        if (v[0] != 0 && v[0] != 1) {
            st = ccq_fail(err, CCQ_ERR_FORMAT, "%s: malformed checkpoint (complete %lld: expected 0 or 1)", path,
                          (long long)v[0]);
            goto fail;
        }
        c->complete = (int)v[0];
    }
    if ((st = check_counters(c, &cfg, path, err))) goto fail;
    if ((st = h5io_dset_dims(&f, "/", "levels", &rank, dims, err))) goto fail;
    /* ckpt_write stores every array uncompressed: together they cannot be
     * larger than the file, which bounds what is allocated below. */
    if (stat(path, &fst) != 0) {
        st = ccq_fail(err, CCQ_ERR_IO, "%s: %s", path, strerror(errno));
        goto fail;
    }
    const uint64_t fsize = (uint64_t)fst.st_size;
    if (rank != 1 || dims[0] < 1 || dims[0] > fsize / (3 + 4 * (uint64_t)c->width)) {
        if (rank != 1)
            st = ccq_fail(err, CCQ_ERR_FORMAT, "%s: malformed checkpoint (levels: not one-dimensional)", path);
        else
            st = ccq_fail(err, CCQ_ERR_FORMAT, "%s: malformed checkpoint (levels: %llu weights in a file of %llu bytes)",
                          path, (unsigned long long)dims[0], (unsigned long long)fsize);
        goto fail;
    }
    c->n = (int64_t)dims[0];
    /* the layer grouping's cursor is a weight index (group.c keeps it below n) */
    if (c->layer_cursor >= c->n) {
        st = ccq_fail(err, CCQ_ERR_FORMAT, "%s: malformed checkpoint (layer cursor %lld: there are %lld weights)", path,
                      (long long)c->layer_cursor, (long long)c->n);
        goto fail;
    }
    hsize_t n1[1] = {dims[0]}, np[1] = {dims[0] * (hsize_t)c->width};
    c->levels = ccq_malloc((size_t)c->n);
    c->best_levels = ccq_malloc((size_t)c->n);
    c->eda_base = ccq_malloc((size_t)c->n);
    c->eda_p = ccq_malloc(sizeof(uint32_t) * (size_t)np[0]);
    if ((st = h5io_dset_read(&f, "/", "levels", H5T_NATIVE_INT8, 1, n1, -1, c->levels, err)) ||
        (st = h5io_dset_read(&f, "/", "best_levels", H5T_NATIVE_INT8, 1, n1, -1, c->best_levels, err)) ||
        (st = h5io_dset_read(&f, "/", "eda_base", H5T_NATIVE_INT8, 1, n1, -1, c->eda_base, err)) ||
        (st = h5io_dset_read(&f, "/", "eda_p", H5T_NATIVE_UINT32, 1, np, -1, c->eda_p, err)))
        goto fail;
    if ((st = h5io_attr_str(&f, "/", "start", c->start, sizeof c->start, err))) goto fail;
    int known = 0;
    for (size_t k = 0; k < CCQ_ARRAY_LEN(k_starts); k++) known |= strcmp(c->start, k_starts[k]) == 0;
    if (!known) {
        st = ccq_fail(err, CCQ_ERR_FORMAT,
                      "%s: malformed checkpoint (start '%s': expected rtn, gptq, gptq_scale, gptq_asym, budget or file)", path,
                      c->start);
        goto fail;
    }
    int lo_all, hi_all;
    config_range(&cfg, c->start, &lo_all, &hi_all);
    if ((st = check_rows(c, NULL, NULL, lo_all, hi_all, path, err))) goto fail;
    hsize_t ws[H5IO_MAX_RANK], as[H5IO_MAX_RANK];
    int wr = 0, ar = 0;
    if ((st = h5io_dset_dims(&f, "/", "start_wscale", &wr, ws, err)) ||
        (st = h5io_dset_dims(&f, "/", "start_act_scale", &ar, as, err)))
        goto fail;
    if (wr != 1 || ar != 1 || ws[0] < 1 || as[0] < 1 || ws[0] > fsize / 4 || as[0] > fsize / 4 ||
        ws[0] + as[0] > fsize / 4) {
        st = ccq_fail(err, CCQ_ERR_FORMAT, "%s: malformed checkpoint (start scales)", path);
        goto fail;
    }
    c->n_wscale = (int64_t)ws[0], c->n_act = (int64_t)as[0];
    c->start_wscale = ccq_malloc(sizeof(float) * (size_t)(c->n_wscale + 1));
    c->start_act_scale = ccq_malloc(sizeof(float) * (size_t)(c->n_act + 1));
    if ((st = h5io_dset_read(&f, "/", "start_wscale", H5T_NATIVE_FLOAT, 1, ws, -1, c->start_wscale, err)) ||
        (st = h5io_dset_read(&f, "/", "start_act_scale", H5T_NATIVE_FLOAT, 1, as, -1, c->start_act_scale, err)))
        goto fail;
    for (int64_t k = 0; k < c->n_wscale + c->n_act; k++) {
        const int w = k < c->n_wscale;
        const float x = w ? c->start_wscale[k] : c->start_act_scale[k - c->n_wscale];
        if (!(x > 0.0f && isfinite(x))) {
            st = ccq_fail(err, CCQ_ERR_FORMAT, "%s: malformed checkpoint (start %s scale %lld is %g: must be finite and > 0)",
                          path, w ? "weight" : "activation", (long long)(w ? k : k - c->n_wscale), (double)x);
            goto fail;
        }
    }
    if (version >= 4 && h5io_exists(&f, "/", "start_codebook")) {
        hsize_t cs[H5IO_MAX_RANK];
        int cr = 0;
        if ((st = h5io_dset_dims(&f, "/", "start_codebook", &cr, cs, err))) goto fail;
        if (cr != 1 || cs[0] < 1 || cs[0] > fsize) {
            st = ccq_fail(err, CCQ_ERR_FORMAT, "%s: malformed checkpoint (start codebook)", path);
            goto fail;
        }
        c->n_codebook = (int64_t)cs[0];
        c->start_codebook = ccq_malloc((size_t)c->n_codebook);
        if ((st = h5io_dset_read(&f, "/", "start_codebook", H5T_NATIVE_INT8, 1, cs, -1, c->start_codebook, err)))
            goto fail;
    }
    if (version >= 6 && h5io_exists(&f, "/", "start_bias")) {
        if ((st = read_vector(&f, "start_bias", H5T_NATIVE_FLOAT, sizeof(float), c->n_wscale,
                              "not one per output channel", path, (void **)&c->start_bias, err)))
            goto fail;
        for (int64_t k = 0; k < c->n_wscale; k++)
            if (!isfinite(c->start_bias[k])) {
                st = ccq_fail(err, CCQ_ERR_FORMAT, "%s: malformed checkpoint (start bias %lld not finite)", path,
                              (long long)k);
                goto fail;
            }
    }
    if (version >= 5 && h5io_exists(&f, "/", "start_bits")) {
        if ((st = read_vector(&f, "start_bits", H5T_NATIVE_INT8, 1, c->n_act, "not one width per node", path,
                              (void **)&c->start_bits, err)))
            goto fail;
        for (int64_t k = 0; k < c->n_act; k++)
            if (c->start_bits[k] != 0 && (c->start_bits[k] < 2 || c->start_bits[k] > 8)) {
                st = ccq_fail(err, CCQ_ERR_FORMAT, "%s: malformed checkpoint (start width %d of node %lld)", path,
                              c->start_bits[k], (long long)k);
                goto fail;
            }
    }
    if ((strcmp(c->start, "budget") == 0) != (c->start_bits != NULL)) {
        st = ccq_fail(err, CCQ_ERR_FORMAT, "%s: malformed checkpoint (start '%s' %s start_bits)", path, c->start,
                      c->start_bits ? "with" : "without");
        goto fail;
    }
    return h5io_file_close(&f, err);
fail:
    if (f.id >= 0) H5Fclose(f.id);
    ckpt_free(c);
    return st;
}

void ckpt_free(ckpt_data *c)
{
    ccq_free(c->config);
    ccq_free(c->levels);
    ccq_free(c->best_levels);
    ccq_free(c->eda_base);
    ccq_free(c->eda_p);
    ccq_free(c->start_wscale);
    ccq_free(c->start_act_scale);
    ccq_free(c->start_codebook);
    ccq_free(c->start_bits);
    ccq_free(c->start_bias);
    memset(c, 0, sizeof *c);
}
