/*
 * cfg.h: the search configuration: one table drives parsing, defaults,
 * bounds, `--set section.key=value` overrides and the echo of the effective
 * configuration (README.md, "Configuration", lists every key).
 *
 * INI files are read with inih. An unknown section or key, a value of the
 * wrong type or out of bounds, or a repeated key is an error naming
 * "file:line: section.key: reason". Values are stored as given (doubles
 * included); turning them into fixed point is the consumer's job, once.
 */
#ifndef CCQ_CFG_H
#define CCQ_CFG_H

#include <stdint.h>
#include <stdio.h>

#include "ccq/common.h"

#define CFG_PATH_MAX 512

typedef enum { CFG_GROUP_CONFIDENCE, CFG_GROUP_LAYER, CFG_GROUP_RANDOM, CFG_GROUP_LAYER_CONFIDENCE } cfg_group;
typedef enum { CFG_PRIOR_FLAT, CFG_PRIOR_FLOAT } cfg_prior;
typedef enum { CFG_FIT_XENT, CFG_FIT_ACCURACY, CFG_FIT_DISTILL } cfg_fitness;
typedef enum { CFG_ACT_PERCENTILE, CFG_ACT_MINMAX } cfg_act_rule;
typedef enum { CFG_WSCALE_MAXABS, CFG_WSCALE_MSE } cfg_wscale;
/* The levels a float model starts from (gptq.h's gptq_start_kind, same order). */
typedef enum { CFG_INIT_RTN, CFG_INIT_GPTQ, CFG_INIT_GPTQ_SCALE, CFG_INIT_AUTO } cfg_init;
/* The weight grid: symmetric uniform levels, or a learned codebook per output channel (model.h). */
typedef enum { CFG_LEVELS_UNIFORM, CFG_LEVELS_LEARNED } cfg_levels;

typedef struct {
    /* [model] */
    char model[CFG_PATH_MAX], data[CFG_PATH_MAX];
    /* [quant] */
    int64_t wbits, first_last_8, calib_images;
    int64_t act_rule, wscale, init, levels;
    double percentile;
    int64_t size_budget; /* quant.budget: 0 off, > 0 deployed bytes, -B the size with every layer at B bits */
    int64_t widths;      /* quant.widths: bit b set if a layer may take b bits (with a budget) */
    /* [search] */
    uint64_t seed;
    int64_t radius, lambda, mu, group, layer_turns, prior, combine, group_size, fitness, batch, confirm_batch, val_images;
    int64_t codebook; /* learned levels: the codebook entries are search variables too */
    double alpha, p_center, p_min, freeze, accept_z, group_fraction;
    double race_z;       /* racing: drop an individual clearly worse than the context (0: off) */
    int64_t race_stages; /* racing: the fitness batch in this many equal stages */
    /* [run] */
    char output[CFG_PATH_MAX], log[CFG_PATH_MAX], checkpoint[CFG_PATH_MAX];
    int64_t budget, checkpoint_every, micro_batch; /* budget: evaluations; it says where a run stops, not what it does */
    int64_t incremental, cache_mb; /* speed only: the results are the same bit for bit either way */
    int64_t snapshots;
    double stall_timeout; /* seconds a rank waits for the others before ending the job; -1: auto, 0: off */
} cfg_search;

/* Every key at its default. */
void cfg_defaults(cfg_search *c);

/* Reads path over the defaults. CCQ_ERR_IO if unreadable, CCQ_ERR_USAGE for
 * a bad key or value ("path:line: section.key: reason"). */
ccq_status cfg_load(cfg_search *c, const char *path, ccq_err *err);

/* The same from INI text (a configuration snapshot, as a checkpoint keeps);
 * name stands for the file in messages. */
ccq_status cfg_load_text(cfg_search *c, const char *text, const char *name, ccq_err *err);

/* Applies one "section.key=value" override (command line). */
ccq_status cfg_set(cfg_search *c, const char *assignment, ccq_err *err);

/* Writes the effective configuration as an INI file (every key, in table order). */
void cfg_write(const cfg_search *c, FILE *out);
/* The same without the [run] section: what defines a search's results
 * (output paths and checkpoint frequency may change on resume). */
void cfg_write_search(const cfg_search *c, FILE *out);

#endif
