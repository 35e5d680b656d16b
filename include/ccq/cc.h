/*
 * cc.h: the search driver: cooperative coevolution of per-weight EDAs over
 * the levels of a quantized network, replicated on every MPI rank.
 *
 * The driver: set-up (model, start levels, EDA, data split into validation
 * and fitness pool), the loop of generations (step_run: one generation;
 * genome_: the search variables; feval_: the fitness passes; cclog_: the
 * log), validation of the context at every checkpoint, atomic checkpoints
 * and exact resume, and SIGTERM handling. The start of a float model is
 * computed once (a GPTQ start on rank 0, broadcast) and kept in the
 * checkpoint. A validation split held out of the training images picks the
 * model that is kept; the test split is never read before the end, where
 * (if the data file has one) the test accuracy of the start and of the model
 * kept is reported. Same configuration and seed: bit-identical model, log
 * and checkpoints for any number of ranks and any stop/resume points.
 */
#ifndef CCQ_CC_H
#define CCQ_CC_H

#include "ccq/cfg.h"
#include "ccq/common.h"
#include "ccq/dist.h"

/* Runs (or, with resume != NULL, continues) the search described by cfg.
 * resume_auto (`--resume auto` found run.checkpoint): a checkpoint of a
 * complete search whose output exists ends at once with CCQ_OK, writing
 * nothing. Returns CCQ_OK when the budget is spent, CCQ_STOPPED when asked
 * to stop (after writing the checkpoint), else the error. */
ccq_status cc_run(const cfg_search *cfg, const char *resume, int resume_auto, const dist_ctx *d, ccq_err *err);

#endif
