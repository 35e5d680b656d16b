/*
 * ckpt.h: search checkpoints. A checkpoint holds everything needed to
 * continue a search exactly: the configuration snapshot, checksums of the
 * model and data files, the counters, the context levels, the best-by-
 * validation levels, the EDA distributions, the log's byte length, and the
 * start: its levels (the EDA's base levels) with its weight and activation
 * scales, so that a resume never recomputes a start (GPTQ's is float
 * arithmetic, once, on rank 0).
 * Random numbers need no state: every stream is keyed by (seed,
 * generation, individual). Rank 0 writes it atomically (h5io_atomic_*).
 */
#ifndef CCQ_CKPT_H
#define CCQ_CKPT_H

#include <stdint.h>

#include "ccq/common.h"

#define CKPT_FORMAT "ccq-checkpoint"
#define CKPT_VERSION 6 /* 2: the start's kind and scales (start, start_wscale, start_act_scale); 3: complete;
                          * 4: start_codebook; 5: start_bits; 6: start_bias. Versions 2 to 5 are read
                          * (complete = 0 for 2; no codebooks before 4; no widths before 5; no biases
                          * before 6: the start's are the float model's). */

typedef struct {
    char *config;         /* the search-defining part of the configuration, INI text */
    uint64_t model_hash, data_hash;
    int64_t gen, evals, accepted, best_val, log_bytes, layer_cursor;
    int complete;         /* 1: written after the search's last generation (budget spent or every weight
                           * frozen), before the output was saved; 0: a periodic or stop checkpoint */
    int64_t n;            /* searchable weights */
    int width;            /* EDA candidates per weight */
    int8_t *levels;       /* [n] context: each weight's value (its level, or its code: genome.h) */
    int8_t *best_levels;  /* [n] */
    int8_t *eda_base;     /* [n] the start's values (the centre of every distribution) */
    uint32_t *eda_p;      /* [n * width] */
    char start[16];       /* how the start was made: rtn, gptq, gptq_scale, budget (quant.budget: a width per
                           * layer, start_bits), or file (a quantized model file) */
    int64_t n_wscale;     /* output channels of every conv/linear node, in node order */
    float *start_wscale;  /* [n_wscale] the start's weight scales */
    int64_t n_act;        /* nodes of the quantized model */
    float *start_act_scale; /* [n_act] the start's output scales (the logits' follows a scale search) */
    int64_t n_codebook;   /* entries of every learned node's codebook, in node order; 0: none */
    int8_t *start_codebook; /* [n_codebook] the start's codebooks */
    int8_t *start_bits;   /* [n_act] each node's weight width (0: no weights), or NULL: written with a budget start */
    float *start_bias;    /* [n_wscale] the start's float biases (0 where a node has none; gptq_asym solves them
                           * again), or NULL (before version 6) */
} ckpt_data;

ccq_status ckpt_write(const ckpt_data *c, const char *path, ccq_err *err);
/* Reads a checkpoint; on failure *c is empty (safe to free). Refused with
 * CCQ_ERR_FORMAT (one line, "PATH: malformed checkpoint (...)"): negative
 * counters, more than 2^40 evaluations, fewer than generation * (lambda + 1)
 * evaluations, more accepted changes than generations, a layer cursor not
 * below the weight count, a configuration snapshot that does not
 * parse, eda_width not 2 * search.radius + 1, levels outside the snapshot's
 * widest bit width, an EDA row not summing to EDA_ONE or with mass on a level
 * outside that width, start scales not finite and positive, arrays larger
 * than the file could hold. Not checked here (needs the model or the log):
 * per-layer bit widths and codebook sizes (ckpt_check_fit, cc.c), the log
 * position against the log's length. */
ccq_status ckpt_read(ckpt_data *c, const char *path, ccq_err *err);
/* The checkpoint's values and EDA rows against the model's per-weight
 * ranges (lo[n], hi[n]: eda_state's): CCQ_ERR_FORMAT if any value or any
 * candidate with nonzero probability lies outside. For resume, after the
 * sizes were found equal. */
ccq_status ckpt_check_fit(const ckpt_data *c, const int8_t *lo, const int8_t *hi, const char *path, ccq_err *err);
void ckpt_free(ckpt_data *c);

/* FNV-1a 64 of a file's bytes (identifies the model and data a search used). */
ccq_status ckpt_file_hash(const char *path, uint64_t *hash, ccq_err *err);

#endif
