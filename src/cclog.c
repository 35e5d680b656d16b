/*
 * cclog.c: the search's log, timing file and progress line (see cclog.h).
 */
#include "ccq/cclog.h"

#include <errno.h>
#include <stdio.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "ccq/cfg.h"

ccq_status cclog_open(cclog *l, const char *path, int64_t resume_bytes, ccq_err *err)
{
    memset(l, 0, sizeof *l);
    snprintf(l->path, sizeof l->path, "%s", path);
    l->t0 = ccq_seconds();
    l->log = fopen(path, resume_bytes >= 0 ? "r+" : "w");
    if (!l->log)
        return ccq_fail(err, CCQ_ERR_IO, "%s: cannot open the log for %s", path,
                        resume_bytes >= 0 ? "resuming (it must be the log of the checkpointed run)" : "writing");
    struct stat st;
    if (resume_bytes >= 0 && (fstat(fileno(l->log), &st) != 0 || st.st_size < resume_bytes)) {
        const long long have = (long long)st.st_size;
        cclog_close(l);
        return ccq_fail(err, CCQ_ERR_MISMATCH,
                        "%s: the log holds %lld bytes, the checkpoint says %lld: not the log of the checkpointed run",
                        path, have, (long long)resume_bytes);
    }
    if (resume_bytes >= 0 &&
        (ftruncate(fileno(l->log), resume_bytes) != 0 || fseek(l->log, resume_bytes, SEEK_SET) != 0)) {
        cclog_close(l);
        return ccq_fail(err, CCQ_ERR_IO, "%s: cannot rewind the log to the checkpoint", path);
    }
    char tpath[CFG_PATH_MAX + 16];
    snprintf(tpath, sizeof tpath, "%s.time", path);
    l->timing = fopen(tpath, resume_bytes >= 0 ? "a" : "w");
    if (!l->timing) {
        cclog_close(l);
        return ccq_fail(err, CCQ_ERR_IO, "%s: cannot open for writing", tpath);
    }
    return CCQ_OK;
}

void cclog_mark(cclog *l, int64_t evaluations)
{
    l->t0 = ccq_seconds();
    l->evals0 = evaluations;
}

/* Flushes f to the disk; the error of any write since the last call. */
static int sync_file(FILE *f) { return fflush(f) != 0 || ferror(f) || fsync(fileno(f)) != 0 ? -1 : 0; }

ccq_status cclog_sync(cclog *l, int64_t *bytes, ccq_err *err)
{
    *bytes = 0;
    if (!l->log) return CCQ_OK;
    if (sync_file(l->log) != 0)
        return ccq_fail(err, CCQ_ERR_IO, "%s: writing the log failed: %s", l->path, strerror(errno));
    if (sync_file(l->timing) != 0)
        return ccq_fail(err, CCQ_ERR_IO, "%s.time: writing the timing file failed: %s", l->path, strerror(errno));
    const long pos = ftell(l->log);
    if (pos < 0) return ccq_fail(err, CCQ_ERR_IO, "%s: %s", l->path, strerror(errno));
    *bytes = pos;
    return CCQ_OK;
}

void cclog_generation(cclog *l, const cclog_rec *r, int ranks, double forward_s, size_t cache_bytes, uint64_t mpi_bytes)
{
    fprintf(l->log, "{\"gen\": %lld, \"size\": %d, \"context\": %.6f, \"best\": %.6f, \"mean\": %.6f, \"accepted\": %d",
            (long long)r->gen, r->size, r->context, r->best, r->mean, r->accepted);
    fprintf(l->log, ", \"context_acc\": %.6f", r->context_acc);
    if (r->has_race) fprintf(l->log, ", \"raced_out\": %d", r->raced_out);
    if (r->has_confirm)
        fprintf(l->log, ", \"confirm_context\": %.6f, \"confirm_best\": %.6f", r->confirm_context, r->confirm_best);
    if (r->has_combined) fprintf(l->log, ", \"combined\": %.6f, \"combined_won\": %d", r->combined, r->combined_won);
    if (r->has_z) fprintf(l->log, ", \"z\": %.4f", r->z);
    fprintf(l->log, ", \"evaluations\": %lld, \"accepted_total\": %lld", (long long)r->evaluations,
            (long long)r->accepted_total);
    if (r->has_val)
        fprintf(l->log, ", \"val\": %.6f, \"val_se\": %.6f, \"val_acc\": %.6f, \"best_val\": %.6f", r->val, r->val_se,
                r->val_acc, r->best_val);
    fprintf(l->log, "}\n");
    const double el = ccq_seconds() - l->t0;
    const double rate = (double)(r->evaluations - l->evals0) / (el > 0 ? el : 1);
    fprintf(l->timing,
            "{\"gen\": %lld, \"elapsed\": %.3f, \"evaluations_per_s\": %.2f, \"ranks\": %d, "
            "\"forward_s_rank0\": %.3f, \"forward_share_rank0\": %.4f, \"cache_bytes\": %zu, \"mpi_bytes_rank0\": %llu}\n",
            (long long)r->gen, el, rate, ranks, forward_s, el > 0 ? forward_s / el : 0.0, cache_bytes,
            (unsigned long long)mpi_bytes);
    if (el - l->last_print >= 2.0 || r->evaluations >= r->budget) {
        l->last_print = el;
        const double eta = rate > 0 ? (double)(r->budget - r->evaluations) / rate : 0;
        printf("search: gen %lld, %lld/%lld evaluations, context %.4f, accepted %lld, %.1f eval/s, ETA %.0f s\n",
               (long long)r->gen, (long long)r->evaluations, (long long)r->budget, r->context,
               (long long)r->accepted_total, rate, eta > 0 ? eta : 0);
        fflush(stdout);
    }
}

void cclog_close(cclog *l)
{
    if (l->log) fclose(l->log);
    if (l->timing) fclose(l->timing);
    memset(l, 0, sizeof *l);
}
