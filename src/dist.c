/*
 * dist.c: checked MPI wrappers (see dist.h).
 */
#include "ccq/dist.h"

#include <limits.h>
#include <mpi.h>
#include <time.h>

#include "ccq/common.h"

#define MPI_CHECK(call)                                                                                          \
    do {                                                                                                         \
        int rc_ = (call);                                                                                        \
        if (rc_ != MPI_SUCCESS) {                                                                                \
            char msg_[MPI_MAX_ERROR_STRING];                                                                     \
            int len_ = 0;                                                                                        \
            MPI_Error_string(rc_, msg_, &len_);                                                                  \
            ccq_abort(__FILE__, __LINE__, "MPI: %s: %s", #call, msg_);                                           \
        }                                                                                                        \
    } while (0)

void dist_init(dist_ctx *d, int *argc, char ***argv)
{
    int inited = 0;
    MPI_CHECK(MPI_Initialized(&inited));
    if (!inited) MPI_CHECK(MPI_Init(argc, argv));
    MPI_CHECK(MPI_Comm_set_errhandler(MPI_COMM_WORLD, MPI_ERRORS_RETURN));
    MPI_CHECK(MPI_Comm_rank(MPI_COMM_WORLD, &d->rank));
    MPI_CHECK(MPI_Comm_size(MPI_COMM_WORLD, &d->size));
    ccq_set_rank(d->rank);
}

void dist_finalize(void)
{
    int inited = 0, done = 0;
    MPI_Initialized(&inited);
    MPI_Finalized(&done);
    if (inited && !done) MPI_Finalize();
}

void dist_allreduce_sum(const dist_ctx *d, int64_t *v, int n)
{
    if (d->size == 1 || n == 0) return;
    MPI_CHECK(MPI_Allreduce(MPI_IN_PLACE, v, n, MPI_INT64_T, MPI_SUM, MPI_COMM_WORLD));
}

int dist_any(const dist_ctx *d, int flag)
{
    int in = flag != 0, out = 0;
    (void)d;
    MPI_CHECK(MPI_Allreduce(&in, &out, 1, MPI_INT, MPI_MAX, MPI_COMM_WORLD));
    return out;
}

int dist_bcast_int(const dist_ctx *d, int value)
{
    (void)d;
    MPI_CHECK(MPI_Bcast(&value, 1, MPI_INT, 0, MPI_COMM_WORLD));
    return value;
}

void dist_bcast_bytes(const dist_ctx *d, void *buf, size_t n)
{
    if (d->size == 1) return;
    for (size_t off = 0; off < n;) { /* MPI counts are int */
        const int c = n - off > (size_t)INT_MAX ? INT_MAX : (int)(n - off);
        MPI_CHECK(MPI_Bcast((char *)buf + off, c, MPI_BYTE, 0, MPI_COMM_WORLD));
        off += (size_t)c;
    }
}

void dist_barrier_idle(const dist_ctx *d)
{
    if (d->size == 1) return;
    MPI_Request req;
    int done = 0;
    MPI_CHECK(MPI_Ibarrier(MPI_COMM_WORLD, &req));
    for (;;) {
        MPI_CHECK(MPI_Test(&req, &done, MPI_STATUS_IGNORE));
        if (done) break;
        const struct timespec ms = {0, 1000000};
        nanosleep(&ms, NULL);
    }
}
