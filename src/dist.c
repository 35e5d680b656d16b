/*
 * dist.c: checked MPI wrappers (see dist.h).
 */
#include "ccq/dist.h"

#include <limits.h>
#include <mpi.h>
#include <sched.h>
#include <stdio.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

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

/* ---- the stall watchdog ---------------------------------------------------------
 * While on, every collective first announces itself to the ranks that name the missing: each
 * rank sends the collective's sequence number to rank 0, rank 0 to every rank (8-byte messages,
 * one per collective and peer, non-blocking; a send still in flight is not repeated). The
 * collective itself runs non-blocking and is polled; the announcements that arrive meanwhile
 * record how far each peer got. Past the bound, the rank names the peers whose announcement of
 * this collective never came, and the process ends with CCQ_ERR_STALL. */
#define TAG_ARRIVE 7301
#define SEQ_END UINT64_MAX

static struct {
    int on, rank, n_peer;
    double bound;
    int64_t gen, ckpt_gen;
    uint64_t seq;
    int *peer;
    uint64_t *seen, *rbuf, *sbuf;
    MPI_Request *rreq, *sreq;
} W;

static uint64_t g_bytes; /* payload bytes this rank handed to MPI (dist_bytes) */

uint64_t dist_bytes(void) { return g_bytes; }

/* Takes every announcement that has arrived; re-posts the receive unless it was the last. */
static void watch_poll(void)
{
    for (int p = 0; p < W.n_peer; p++) {
        while (W.rreq[p] != MPI_REQUEST_NULL) {
            int done = 0;
            MPI_CHECK(MPI_Test(&W.rreq[p], &done, MPI_STATUS_IGNORE));
            if (!done) break;
            W.seen[p] = W.rbuf[p];
            if (W.rbuf[p] != SEQ_END)
                MPI_CHECK(MPI_Irecv(&W.rbuf[p], 1, MPI_UINT64_T, W.peer[p], TAG_ARRIVE, MPI_COMM_WORLD, &W.rreq[p]));
        }
    }
}

static void watch_send(uint64_t v, int wait_free)
{
    for (int p = 0; p < W.n_peer; p++) {
        if (W.sreq[p] != MPI_REQUEST_NULL) {
            int done = 0;
            if (wait_free) {
                MPI_CHECK(MPI_Wait(&W.sreq[p], MPI_STATUS_IGNORE));
                done = 1;
            } else {
                MPI_CHECK(MPI_Test(&W.sreq[p], &done, MPI_STATUS_IGNORE));
            }
            if (!done) continue; /* the peer has not taken the last one: it learns the newer number later */
        }
        W.sbuf[p] = v;
        g_bytes += sizeof v;
        MPI_CHECK(MPI_Isend(&W.sbuf[p], 1, MPI_UINT64_T, W.peer[p], TAG_ARRIVE, MPI_COMM_WORLD, &W.sreq[p]));
    }
}

static void watch_fire(void)
{
    char names[200] = "";
    int n = 0;
    watch_poll();
    for (int p = 0; p < W.n_peer; p++)
        if (W.seen[p] < W.seq && strlen(names) < sizeof names - 16)
            snprintf(names + strlen(names), sizeof names - strlen(names), "%s%d", n++ ? ", " : "", W.peer[p]);
    char ck[80];
    if (W.ckpt_gen > 0) snprintf(ck, sizeof ck, "the checkpoint of generation %lld is good", (long long)W.ckpt_gen);
    else snprintf(ck, sizeof ck, "no checkpoint was written yet");
    fflush(stdout);
    if (n)
        fprintf(stderr, "ccq: search stalled in generation %lld: no answer from rank%s %s within %.0f s "
                "(run.stall_timeout); %s\n", (long long)W.gen, n > 1 ? "s" : "", names, W.bound, ck);
    else if (W.rank != 0) { /* rank 0 knows who is missing and says it; let its line out first */
        const struct timespec wait = {3, 0};
        nanosleep(&wait, NULL);
        fprintf(stderr, "ccq: rank %d: search stalled in generation %lld (run.stall_timeout %.0f s; rank 0 names "
                "the ranks); %s\n", W.rank, (long long)W.gen, W.bound, ck);
    } else
        fprintf(stderr, "ccq: search stalled in generation %lld: every rank answered but the exchange did not end "
                "within %.0f s (run.stall_timeout); %s\n", (long long)W.gen, W.bound, ck);
    fflush(stderr);
    _exit(CCQ_ERR_STALL);
}

/* Waits for a collective's request, within the bound. */
static void watch_wait(MPI_Request *req)
{
    const double t0 = ccq_seconds();
    for (long spins = 0;; spins++) {
        int done = 0;
        MPI_CHECK(MPI_Test(req, &done, MPI_STATUS_IGNORE));
        if (done) return;
        watch_poll();
        if (ccq_seconds() - t0 > W.bound) watch_fire();
        if (spins > 1000) { /* a long wait (a slower rank): leave the core to it */
            const struct timespec t = {0, 100000};
            nanosleep(&t, NULL);
        } else {
            sched_yield();
        }
    }
}

static void watch_enter(void)
{
    W.seq++;
    watch_send(W.seq, 0);
}

void dist_watch_start(const dist_ctx *d, double bound_s)
{
    if (d->size == 1 || bound_s <= 0 || W.on) return;
    memset(&W, 0, sizeof W);
    W.on = 1, W.rank = d->rank, W.bound = bound_s;
    W.n_peer = d->rank == 0 ? d->size - 1 : 1;
    W.peer = ccq_malloc(sizeof(int) * (size_t)W.n_peer);
    W.seen = ccq_calloc((size_t)W.n_peer, sizeof(uint64_t));
    W.rbuf = ccq_calloc((size_t)W.n_peer, sizeof(uint64_t));
    W.sbuf = ccq_calloc((size_t)W.n_peer, sizeof(uint64_t));
    W.rreq = ccq_malloc(sizeof(MPI_Request) * (size_t)W.n_peer);
    W.sreq = ccq_malloc(sizeof(MPI_Request) * (size_t)W.n_peer);
    for (int p = 0; p < W.n_peer; p++) {
        W.peer[p] = d->rank == 0 ? p + 1 : 0;
        W.sreq[p] = MPI_REQUEST_NULL;
        MPI_CHECK(MPI_Irecv(&W.rbuf[p], 1, MPI_UINT64_T, W.peer[p], TAG_ARRIVE, MPI_COMM_WORLD, &W.rreq[p]));
    }
}

void dist_watch_set(double bound_s, int64_t gen, int64_t ckpt_gen)
{
    if (bound_s > 0) W.bound = bound_s;
    W.gen = gen, W.ckpt_gen = ckpt_gen;
}

void dist_watch_stop(void)
{
    if (!W.on) return;
    /* every peer gets the end mark after all it was sent; every receive runs until the peer's end
     * mark: nothing is left in flight for MPI_Finalize. Bounded like a collective. */
    watch_send(SEQ_END, 1);
    const double t0 = ccq_seconds();
    for (;;) {
        watch_poll();
        int open = 0;
        for (int p = 0; p < W.n_peer; p++) open |= W.rreq[p] != MPI_REQUEST_NULL;
        if (!open) break;
        W.seq = SEQ_END; /* a peer that never ends is named */
        if (ccq_seconds() - t0 > W.bound) watch_fire();
        const struct timespec t = {0, 100000};
        nanosleep(&t, NULL);
    }
    for (int p = 0; p < W.n_peer; p++)
        if (W.sreq[p] != MPI_REQUEST_NULL) MPI_CHECK(MPI_Wait(&W.sreq[p], MPI_STATUS_IGNORE));
    ccq_free(W.peer), ccq_free(W.seen), ccq_free(W.rbuf), ccq_free(W.sbuf), ccq_free(W.rreq), ccq_free(W.sreq);
    memset(&W, 0, sizeof W);
}

/* ---- collectives ------------------------------------------------------------------ */

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
    g_bytes += sizeof(int64_t) * (uint64_t)n;
    if (W.on) {
        MPI_Request r;
        watch_enter();
        MPI_CHECK(MPI_Iallreduce(MPI_IN_PLACE, v, n, MPI_INT64_T, MPI_SUM, MPI_COMM_WORLD, &r));
        watch_wait(&r);
    } else {
        MPI_CHECK(MPI_Allreduce(MPI_IN_PLACE, v, n, MPI_INT64_T, MPI_SUM, MPI_COMM_WORLD));
    }
}

int dist_any(const dist_ctx *d, int flag)
{
    int in = flag != 0, out = 0;
    (void)d;
    g_bytes += sizeof in;
    if (W.on) {
        MPI_Request r;
        watch_enter();
        MPI_CHECK(MPI_Iallreduce(&in, &out, 1, MPI_INT, MPI_MAX, MPI_COMM_WORLD, &r));
        watch_wait(&r);
    } else {
        MPI_CHECK(MPI_Allreduce(&in, &out, 1, MPI_INT, MPI_MAX, MPI_COMM_WORLD));
    }
    return out;
}

int dist_bcast_int(const dist_ctx *d, int value)
{
    (void)d;
    g_bytes += sizeof value;
    if (W.on) {
        MPI_Request r;
        watch_enter();
        MPI_CHECK(MPI_Ibcast(&value, 1, MPI_INT, 0, MPI_COMM_WORLD, &r));
        watch_wait(&r);
    } else {
        MPI_CHECK(MPI_Bcast(&value, 1, MPI_INT, 0, MPI_COMM_WORLD));
    }
    return value;
}

void dist_bcast_bytes(const dist_ctx *d, void *buf, size_t n)
{
    if (d->size == 1) return;
    for (size_t off = 0; off < n;) { /* MPI counts are int */
        const int c = n - off > (size_t)INT_MAX ? INT_MAX : (int)(n - off);
        g_bytes += (uint64_t)c;
        if (W.on) {
            MPI_Request r;
            watch_enter();
            MPI_CHECK(MPI_Ibcast((char *)buf + off, c, MPI_BYTE, 0, MPI_COMM_WORLD, &r));
            watch_wait(&r);
        } else {
            MPI_CHECK(MPI_Bcast((char *)buf + off, c, MPI_BYTE, 0, MPI_COMM_WORLD));
        }
        off += (size_t)c;
    }
}

void dist_barrier_idle(const dist_ctx *d)
{
    if (d->size == 1) return;
    MPI_Request req;
    int done = 0;
    if (W.on) watch_enter();
    MPI_CHECK(MPI_Ibarrier(MPI_COMM_WORLD, &req));
    if (W.on) {
        watch_wait(&req);
        return;
    }
    for (;;) {
        MPI_CHECK(MPI_Test(&req, &done, MPI_STATUS_IGNORE));
        if (done) break;
        const struct timespec ms = {0, 1000000};
        nanosleep(&ms, NULL);
    }
}
