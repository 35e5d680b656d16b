/*
 * common.h: what every ccq module shares: the status codes library code
 * returns, the error message out-parameter, the allocation wrappers and the
 * invariant check that aborts.
 *
 * Two tiers of failure (STYLE.md): anything caused by input (a file, a flag,
 * a config) returns a ccq_status and fills a ccq_err with one human line;
 * only main() prints it and turns it into the exit code. A broken internal
 * invariant is a bug and aborts through CCQ_ASSERT with file, line and rank.
 * This header does not know about MPI; the rank printed by ccq_abort is set
 * by whoever initialises MPI (ccq_set_rank).
 */
#ifndef CCQ_COMMON_H
#define CCQ_COMMON_H

#include <stddef.h>
#include <stdint.h>

/* Status codes double as process exit codes (documented in README.md). */
typedef enum {
    CCQ_OK = 0,
    CCQ_ERR_USAGE = 2,    /* unknown subcommand or flag, bad flag value */
    CCQ_ERR_IO = 3,       /* a file is missing, unreadable or unwritable */
    CCQ_ERR_FORMAT = 4,   /* a file is not what it claims: not HDF5, truncated, bad layout or values */
    CCQ_ERR_MISMATCH = 5, /* files are each valid but do not fit together (data vs model) */
    CCQ_ERR_LIMIT = 6,    /* a size the engine refuses (too large, out of memory) */
    CCQ_STOPPED = 7,      /* not an error: ccq search stopped on request after writing its checkpoint */
    CCQ_ERR_STALL = 8,    /* ccq search: a rank did not answer within run.stall_timeout (the job is ended) */
} ccq_status;

/* One human-readable line, without trailing newline, naming the file and the problem. */
typedef struct {
    char msg[768];
} ccq_err;

/* Formats msg into err (if err is not NULL) and returns st, so callers write
 * `return ccq_fail(err, CCQ_ERR_FORMAT, "%s: ...", path);`. */
ccq_status ccq_fail(ccq_err *err, ccq_status st, const char *fmt, ...)
    __attribute__((format(printf, 3, 4)));

/* Allocation wrappers: abort with a message on failure (the sizes ccq asks
 * for are bounded by model validation, so failure is exhaustion, not input). */
void *ccq_malloc(size_t n);
void *ccq_calloc(size_t count, size_t size);
void *ccq_realloc(void *p, size_t n);
void ccq_free(void *p);

/* Aborts the process: prints "ccq: rank R: FILE:LINE: MSG" on stderr. */
_Noreturn void ccq_abort(const char *file, int line, const char *fmt, ...)
    __attribute__((format(printf, 3, 4)));
void ccq_set_rank(int rank);

#define CCQ_ASSERT(cond)                                                       \
    do {                                                                       \
        if (!(cond)) ccq_abort(__FILE__, __LINE__, "assertion failed: %s", #cond); \
    } while (0)

#define CCQ_ARRAY_LEN(a) (sizeof(a) / sizeof((a)[0]))

/* Wall-clock seconds from a monotonic clock: for reports only, never for
 * anything that decides a result. */
double ccq_seconds(void);

#endif
