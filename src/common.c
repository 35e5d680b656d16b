/*
 * common.c: status formatting, allocation wrappers, abort, timing.
 * It deliberately keeps no state but the MPI rank used in abort messages.
 */
#include "ccq/common.h"

#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <time.h>
#include <unistd.h>

static int g_rank = -1;

void ccq_set_rank(int rank) { g_rank = rank; }

ccq_status ccq_fail(ccq_err *err, ccq_status st, const char *fmt, ...)
{
    if (err) {
        va_list ap;
        va_start(ap, fmt);
        vsnprintf(err->msg, sizeof err->msg, fmt, ap);
        va_end(ap);
    }
    return st;
}

_Noreturn void ccq_abort(const char *file, int line, const char *fmt, ...)
{
    va_list ap;
    fflush(stdout);
    if (g_rank >= 0)
        fprintf(stderr, "ccq: rank %d: %s:%d: ", g_rank, file, line);
    else
        fprintf(stderr, "ccq: %s:%d: ", file, line);
    va_start(ap, fmt);
    vfprintf(stderr, fmt, ap);
    va_end(ap);
    fputc('\n', stderr);
    abort();
}

/* Out of memory is not a bug: one line and the documented exit code 6 (CCQ_ERR_LIMIT), not an
 * abort with a core dump. Under MPI the launcher then ends the other ranks. */
static _Noreturn void out_of_memory(size_t count, size_t size)
{
    fflush(stdout);
    char who[32] = "";
    if (g_rank >= 0) snprintf(who, sizeof who, "rank %d: ", g_rank);
    if (count == 1)
        fprintf(stderr, "ccq: %sout of memory allocating %zu bytes\n", who, size);
    else
        fprintf(stderr, "ccq: %sout of memory allocating %zu x %zu bytes\n", who, count, size);
    _exit(CCQ_ERR_LIMIT); /* not exit(): library destructors (OpenBLAS's thread shutdown) can hang when memory is short */
}

void *ccq_malloc(size_t n)
{
    void *p = malloc(n ? n : 1);
    if (!p) out_of_memory(1, n);
    return p;
}

void *ccq_calloc(size_t count, size_t size)
{
    void *p = calloc(count ? count : 1, size ? size : 1);
    if (!p) out_of_memory(count, size);
    return p;
}

void *ccq_realloc(void *p, size_t n)
{
    void *q = realloc(p, n ? n : 1);
    if (!q) out_of_memory(1, n);
    return q;
}

void ccq_free(void *p) { free(p); }

double ccq_seconds(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + 1e-9 * (double)ts.tv_nsec;
}
