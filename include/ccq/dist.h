/*
 * dist.h: the only module that talks to MPI. Ranks hold replicated state
 * and exchange small integer arrays (fitness sums, stop flags), never
 * weights in the search loop; the one exception is the start of a search
 * computed in float on rank 0 (GPTQ), broadcast once at set-up. Every MPI call is checked; a failure aborts all ranks with the
 * MPI error string (a communication failure is not an input error).
 */
#ifndef CCQ_DIST_H
#define CCQ_DIST_H

#include <stddef.h>
#include <stdint.h>

typedef struct {
    int rank, size;
} dist_ctx;

/* MPI_Init (once per process) and rank/size of MPI_COMM_WORLD. */
void dist_init(dist_ctx *d, int *argc, char ***argv);
void dist_finalize(void);

/* Element-wise sum of v[0..n) over all ranks, in place on every rank.
 * Integer addition, so the result does not depend on the rank count or the
 * reduction order. */
void dist_allreduce_sum(const dist_ctx *d, int64_t *v, int n);

/* 1 on every rank if any rank passed a nonzero flag. */
int dist_any(const dist_ctx *d, int flag);

/* Broadcast of a small status from rank 0 (e.g. whether a file write worked). */
int dist_bcast_int(const dist_ctx *d, int value);

/* Broadcast of n bytes from rank 0 into buf on every rank. */
void dist_bcast_bytes(const dist_ctx *d, void *buf, size_t n);

/* A barrier at which ranks wait without spinning (polling every millisecond):
 * for ranks waiting while rank 0 alone computes something long (the GPTQ
 * start), so that they leave it the cores. */
void dist_barrier_idle(const dist_ctx *d);

/* Payload bytes this rank has handed to MPI so far (each collective's own contribution: a sum's
 * vector, a broadcast's buffer, the watchdog's announcements): what the search sends, whatever
 * algorithm the MPI library runs underneath. */
uint64_t dist_bytes(void);

/* The stall watchdog (run.stall_timeout): from dist_watch_start on, every collective above is
 * announced to rank 0 (and rank 0's to every rank) with an 8-byte message and waited for within
 * bound_s seconds; past it the rank prints one line naming the generation, the ranks whose
 * announcement never came and the last good checkpoint, and the process exits with
 * CCQ_ERR_STALL (mpirun then ends the job). No-op with one rank or bound_s <= 0.
 * dist_watch_set updates the bound (if > 0) and what the message names; dist_watch_stop drains
 * the announcements (every rank must call it, as a collective) and turns the watchdog off. */
void dist_watch_start(const dist_ctx *d, double bound_s);
void dist_watch_set(double bound_s, int64_t gen, int64_t ckpt_gen);
void dist_watch_stop(void);

#endif
