/*
 * data.c: read one split of a ccq data file, checking its layout and labels.
 */
#include "ccq/data.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "ccq/h5io.h"
#include "ccq/rng.h"

ccq_status data_load(data_split *d, const char *path, const char *split, int64_t limit, ccq_err *err)
{
    h5io_file f;
    char fmt[32], obj[32];
    int64_t v[1];
    hsize_t dims[H5IO_MAX_RANK], ld[1];
    int rank = 0;
    ccq_status st;
    memset(d, 0, sizeof *d);
    snprintf(d->path, sizeof d->path, "%s", path);
    snprintf(d->split, sizeof d->split, "%s", split);
    if ((st = h5io_file_open(&f, path, err))) return st;
    if (H5Aexists_by_name(f.id, "/", "format", H5P_DEFAULT) <= 0) {
        st = ccq_fail(err, CCQ_ERR_FORMAT, "%s: not a ccq data file (no format attribute)", path);
        goto fail;
    }
    if ((st = h5io_attr_str(&f, "/", "format", fmt, sizeof fmt, err))) goto fail;
    if (strcmp(fmt, DATA_FORMAT) != 0) {
        st = ccq_fail(err, CCQ_ERR_FORMAT, "%s: not a ccq data file (format is '%s')", path, fmt);
        goto fail;
    }
    if ((st = h5io_attr_ints_n(&f, "/", "version", v, 1, err))) goto fail;
    if (v[0] != DATA_VERSION) {
        st = ccq_fail(err, CCQ_ERR_FORMAT, "%s: data format version %lld, this ccq reads version %d", path,
                      (long long)v[0], DATA_VERSION);
        goto fail;
    }
    if ((st = h5io_attr_ints_n(&f, "/", "classes", v, 1, err))) goto fail;
    if (v[0] < 2 || v[0] > 65536) {
        st = ccq_fail(err, CCQ_ERR_FORMAT, "%s: classes = %lld is outside [2, 65536]", path, (long long)v[0]);
        goto fail;
    }
    d->classes = (int)v[0];
    snprintf(obj, sizeof obj, "/%s", split);
    if (!h5io_exists(&f, obj, NULL)) {
        st = ccq_fail(err, CCQ_ERR_FORMAT, "%s: no '%s' split", path, split);
        goto fail;
    }
    /* the shape first: an absurd size is a limit (exit 6) before the storage is looked at */
    if ((st = h5io_dset_shape(&f, obj, "images", &rank, dims, err))) goto fail;
    if (rank != 4 || dims[0] < 1 || dims[0] > INT32_MAX || dims[1] < 1 || dims[1] > MODEL_MAX_CHANNELS_IN ||
        dims[2] < 1 || dims[2] > MODEL_MAX_DIM || dims[3] < 1 || dims[3] > MODEL_MAX_DIM) {
        st = ccq_fail(err, CCQ_ERR_FORMAT, "%s: %s/images must be [N,C,H,W] with N >= 1", path, obj);
        goto fail;
    }
    d->n_file = (int)dims[0];
    d->n = limit < 0 || limit > d->n_file ? d->n_file : (int)limit;
    d->c = (int)dims[1];
    d->h = (int)dims[2];
    d->w = (int)dims[3];
    int64_t per = (int64_t)d->c * d->h * d->w;
    /* Sizes come from the file: a damaged or hostile header must not abort the process,
     * and the file must store what it claims before anything is allocated for it. */
    const int too_big = per * d->n > (INT64_C(1) << 36);
    hsize_t stored[H5IO_MAX_RANK];
    int stored_rank = 0;
    if (!too_big && ((st = h5io_dset_dims(&f, obj, "images", &stored_rank, stored, err)) ||
                     (st = h5io_dset_dims(&f, obj, "labels", &stored_rank, stored, err))))
        goto fail;
    d->images = too_big ? NULL : malloc((size_t)(per * d->n));
    d->labels = d->images ? malloc(sizeof(int32_t) * (size_t)d->n) : NULL;
    if (!d->images || !d->labels) {
        st = ccq_fail(err, CCQ_ERR_LIMIT, "%s: %s split of %d images of %lld bytes does not fit in memory", path, split,
                      d->n, (long long)per);
        goto fail;
    }
    if ((st = h5io_dset_read(&f, obj, "images", H5T_NATIVE_UINT8, 4, dims, d->n, d->images, err))) goto fail;
    ld[0] = dims[0];
    if ((st = h5io_dset_read(&f, obj, "labels", H5T_NATIVE_INT32, 1, ld, d->n, d->labels, err))) goto fail;
    for (int i = 0; i < d->n; i++) {
        if (d->labels[i] < 0 || d->labels[i] >= d->classes) {
            st = ccq_fail(err, CCQ_ERR_FORMAT, "%s: %s/labels[%d] = %d is outside [0, %d)", path, obj, i,
                          d->labels[i], d->classes);
            goto fail;
        }
    }
    return h5io_file_close(&f, err);

fail:
    if (f.id >= 0) H5Fclose(f.id);
    data_free(d);
    return st;
}

int data_has_split(const char *path, const char *split)
{
    h5io_file f;
    char obj[32];
    if (h5io_file_open(&f, path, NULL)) return 0;
    snprintf(obj, sizeof obj, "/%s", split);
    const int yes = h5io_exists(&f, obj, NULL);
    h5io_file_close(&f, NULL);
    return yes;
}

void data_free(data_split *d)
{
    ccq_free(d->images);
    ccq_free(d->labels);
    d->images = NULL;
    d->labels = NULL;
    d->n = 0;
}

ccq_status data_check_fits(const data_split *d, const model *m, ccq_err *err)
{
    if (d->c != m->input.c || d->h != m->input.h || d->w != m->input.w)
        return ccq_fail(err, CCQ_ERR_MISMATCH, "%s: images are %dx%dx%d (CxHxW) but model %s expects %dx%dx%d",
                        d->path, d->c, d->h, d->w, m->path, m->input.c, m->input.h, m->input.w);
    if (d->classes > m->classes)
        return ccq_fail(err, CCQ_ERR_MISMATCH, "%s: data has %d classes but model %s has %d outputs", d->path,
                        d->classes, m->path, m->classes);
    return CCQ_OK;
}

void data_sample(const data_split *d, int n, uint64_t seed, uint64_t purpose, data_split *out)
{
    const int N = d->n < n ? d->n : n;
    *out = *d;
    out->n = N;
    int32_t *perm = ccq_malloc(sizeof(int32_t) * (size_t)(d->n ? d->n : 1));
    for (int i = 0; i < d->n; i++) perm[i] = i;
    rng_pcg32 g;
    rng_init_keyed(&g, seed, 0, 0, purpose);
    for (int i = 0; i < N; i++) { /* partial Fisher-Yates: perm[0..N) */
        const int j = i + (int)rng_bounded(&g, (uint32_t)(d->n - i));
        const int32_t t = perm[i];
        perm[i] = perm[j], perm[j] = t;
    }
    const size_t ib = (size_t)d->c * (size_t)d->h * (size_t)d->w;
    out->images = ccq_malloc(ib * (size_t)(N ? N : 1));
    out->labels = ccq_malloc(sizeof(int32_t) * (size_t)(N ? N : 1));
    for (int i = 0; i < N; i++) {
        memcpy(out->images + (size_t)i * ib, d->images + (size_t)perm[i] * ib, ib);
        out->labels[i] = d->labels[perm[i]];
    }
    ccq_free(perm);
}
