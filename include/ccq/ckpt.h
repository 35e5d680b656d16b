/*
 * ckpt.h: search checkpoints. A checkpoint holds everything needed to
 * continue a search exactly: the configuration snapshot, checksums of the
 * model and data files, the counters, the context levels, the best-by-
 * validation levels, the EDA distributions, and the log's byte length.
 * Random numbers need no state: every stream is keyed by (seed,
 * generation, individual). Rank 0 writes it atomically (h5io_atomic_*).
 */
#ifndef CCQ_CKPT_H
#define CCQ_CKPT_H

#include <stdint.h>

#include "ccq/common.h"

#define CKPT_FORMAT "ccq-checkpoint"
#define CKPT_VERSION 1

typedef struct {
    char *config;         /* the search-defining part of the configuration, INI text */
    uint64_t model_hash, data_hash;
    int64_t gen, evals, accepted, best_val, log_bytes, layer_cursor;
    int64_t n;            /* searchable weights */
    int width;            /* EDA candidates per weight */
    int8_t *levels;       /* [n] context */
    int8_t *best_levels;  /* [n] */
    int8_t *eda_base;     /* [n] */
    uint32_t *eda_p;      /* [n * width] */
} ckpt_data;

ccq_status ckpt_write(const ckpt_data *c, const char *path, ccq_err *err);
/* Reads a checkpoint; on failure *c is empty (safe to free). */
ccq_status ckpt_read(ckpt_data *c, const char *path, ccq_err *err);
void ckpt_free(ckpt_data *c);

/* FNV-1a 64 of a file's bytes (identifies the model and data a search used). */
ccq_status ckpt_file_hash(const char *path, uint64_t *hash, ccq_err *err);

#endif
