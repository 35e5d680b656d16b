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

#endif
