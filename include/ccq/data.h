/*
 * data.h: one split (train or test) of a ccq data file: raw uint8 images in
 * [N][C][H][W] order and int32 labels. The loader checks shapes and label
 * range; data_check_fits says whether a split can feed a given model. It
 * does not normalise, batch or shuffle (callers index images directly).
 *
 * File layout: README.md, "Data file".
 */
#ifndef CCQ_DATA_H
#define CCQ_DATA_H

#include <stdint.h>

#include "ccq/common.h"
#include "ccq/model.h"

#define DATA_FORMAT "ccq-data"
#define DATA_VERSION 1

typedef struct {
    char path[512];
    char split[16];
    int n;       /* images loaded */
    int n_file;  /* images in the file's split */
    int c, h, w;
    int classes; /* from the file's root attribute */
    uint8_t *images; /* n * c*h*w */
    int32_t *labels; /* n, each in [0, classes) */
} data_split;

/* Loads the first `limit` images of split `split` ("train" or "test");
 * limit < 0 loads all. On failure *d is empty (safe to free). */
ccq_status data_load(data_split *d, const char *path, const char *split, int64_t limit, ccq_err *err);
void data_free(data_split *d);

/* 1 if path is a readable file with a group for split `split` (no checks
 * beyond that: data_load validates), else 0. */
int data_has_split(const char *path, const char *split);

/* CCQ_ERR_MISMATCH unless the images have the model's input shape and the
 * labels fit the model's classes. */
ccq_status data_check_fits(const data_split *d, const model *m, ccq_err *err);

/* A keyed sample without replacement of min(n, d->n) images of d (a partial
 * Fisher-Yates shuffle driven by the PCG stream (seed, purpose)), copied
 * into a new split *out (same path, split, shape and classes; data_free it).
 * The same seed and purpose give the same images on every host. */
void data_sample(const data_split *d, int n, uint64_t seed, uint64_t purpose, data_split *out);

#endif
