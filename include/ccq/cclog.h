/*
 * cclog.h: what a search writes while it runs, on rank 0 only: the JSONL
 * log (one record per generation; part of the reproducibility contract, so
 * nothing in it depends on time or on the rank count), the timing side file
 * LOG.time (wall-clock, evaluations per second, forward-pass share, cache
 * memory) and the progress line on stdout. Resuming, the log is cut back to
 * the length recorded in the checkpoint and continues from there.
 */
#ifndef CCQ_CCLOG_H
#define CCQ_CCLOG_H

#include <stdint.h>
#include <stdio.h>

#include "ccq/common.h"

typedef struct {
    FILE *log, *timing;
    char path[1024]; /* the log's, for messages */
    double t0, last_print;
    int64_t evals0;
} cclog;

/* One generation's record. Fitness values as reported: nats per image
 * (cross-entropy, distillation) or error rate (accuracy). */
typedef struct {
    int64_t gen, evaluations, accepted_total, budget;
    int size, accepted;
    double context, best, mean, context_acc;
    int has_race;
    int raced_out; /* search.race_z: individuals dropped before the batch's end */
    int has_confirm;
    double confirm_context, confirm_best;
    int has_combined;
    double combined; /* search.combine: the combination's batch fitness (the candidate if it beat the best) */
    int combined_won;
    int has_z;
    double z; /* the paired test's statistic of the candidate: its mean gain in standard errors */
    int has_val;
    double val, val_acc, best_val, val_se; /* val_se: standard error of val (over the validation images) */
} cclog_rec;

/* Opens LOG and LOG.time for writing, or (resume_bytes >= 0) cuts LOG back
 * to resume_bytes and appends (a log shorter than resume_bytes is not the
 * checkpointed run's: refused). CCQ_ERR_IO naming the file on failure. */
ccq_status cclog_open(cclog *l, const char *path, int64_t resume_bytes, ccq_err *err);
/* Starts the clock of the rates: `evaluations` done before this (re)start. */
void cclog_mark(cclog *l, int64_t evaluations);
/* Flushes the log and its timing file to disk (fsync) and gives the log's
 * length, for the checkpoint: a write that failed since the last sync (a full
 * disk) is reported here, naming the file, before a checkpoint can point past it. */
ccq_status cclog_sync(cclog *l, int64_t *bytes, ccq_err *err);
/* The record, its timing line and (every 2 s or at the end) the progress line.
 * ranks, forward_s, cache_bytes and mpi_bytes (rank 0's payload bytes handed to MPI since the
 * process started, dist_bytes) go to the timing file only. */
void cclog_generation(cclog *l, const cclog_rec *r, int ranks, double forward_s, size_t cache_bytes,
                      uint64_t mpi_bytes);
void cclog_close(cclog *l);

#endif
