/*
 * cc.h: the search driver: cooperative coevolution of per-weight EDAs over
 * the levels of a quantized network, replicated on every MPI rank.
 *
 * One generation: choose a subcomponent (grouping: confidence | layer |
 * random), sample lambda individuals for it from the EDA (stream keyed by
 * seed, generation, individual), evaluate them and the context on the
 * generation's fitness batch (ranks split the individuals and exchange only
 * the fitness integers), move the distributions toward the mu best, and
 * accept the best individual into the context only if it also beats the
 * context on a confirmation batch. A validation split held out of the
 * training images picks the model that is kept; the test split is never
 * touched. Same configuration and seed: bit-identical model, log and
 * checkpoints for any number of ranks and any stop/resume points.
 */
#ifndef CCQ_CC_H
#define CCQ_CC_H

#include "ccq/cfg.h"
#include "ccq/common.h"
#include "ccq/dist.h"

/* Exit status of a search stopped by SIGTERM/SIGINT after writing its checkpoint. */
#define CC_STOPPED 7

/* Runs (or, with resume != NULL, continues) the search described by cfg.
 * Returns CCQ_OK when the budget is spent, CC_STOPPED when asked to stop. */
int cc_run(const cfg_search *cfg, const char *resume, const dist_ctx *d, ccq_err *err);

#endif
