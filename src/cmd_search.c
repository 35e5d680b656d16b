/*
 * cmd_search.c: `ccq search CONFIG.ini [--set section.key=value]... [--resume CKPT.h5|auto]`,
 * the MPI entry point: every rank parses the same configuration, rank 0
 * echoes it and reports; errors are printed once, by rank 0.
 */
#include <dirent.h>
#include <stdio.h>
#include <string.h>
#include <unistd.h>

#include "ccq/cc.h"
#include "ccq/cfg.h"
#include "ccq/cmd.h"
#include "ccq/dist.h"
#include "ccq/outpath.h"

/* Every path the search writes, checked on rank 0 before any compute: none is an input
 * (config, model, data, the checkpoint resumed from unless it is run.checkpoint itself) or
 * another output; directories are made. */
static ccq_status check_paths(const cfg_search *c, const char *config, const char *resume, ccq_err *err)
{
    char log_time[CFG_PATH_MAX + 8];
    snprintf(log_time, sizeof log_time, "%s.time", c->log);
    const outpath_item in[4] = {
        {"the config", config},
        {"model.model", c->model},
        {"model.data", c->data},
        {"--resume", resume && !outpath_same(resume, c->checkpoint) ? resume : NULL},
    };
    const outpath_item out[4] = {
        {"run.output", c->output},
        {"run.log", c->log},
        {"run.log's timing file", log_time},
        {"run.checkpoint", c->checkpoint},
    };
    return outpath_check(in, 4, out, 4, 1, err);
}

/* Removes PATH.tmp.PID files (PID digits only) that a killed atomic write left next to path:
 * a SIGKILL inside a checkpoint write leaves one of the checkpoint's size each time. */
static void remove_stale_temps(const char *path)
{
    char dir[CFG_PATH_MAX], prefix[CFG_PATH_MAX + 8];
    snprintf(dir, sizeof dir, "%s", path);
    char *slash = strrchr(dir, '/');
    const char *base = slash ? slash + 1 : dir;
    snprintf(prefix, sizeof prefix, "%s.tmp.", base);
    if (slash == dir) dir[1] = '\0';
    else if (slash) *slash = '\0';
    else snprintf(dir, sizeof dir, ".");
    DIR *dh = opendir(dir);
    if (!dh) return;
    const size_t np = strlen(prefix);
    for (struct dirent *e; (e = readdir(dh));) {
        const char *tail = e->d_name + np;
        if (strncmp(e->d_name, prefix, np) != 0 || !*tail || strspn(tail, "0123456789") != strlen(tail)) continue;
        char full[2 * CFG_PATH_MAX + 300];
        snprintf(full, sizeof full, "%s/%s", dir, e->d_name);
        if (unlink(full) == 0) printf("search: removed %s (a temporary file left by a killed write)\n", full);
    }
    closedir(dh);
}

static ccq_status parse(int argc, char **argv, cfg_search *c, const char **config, const char **resume, int *help,
                        ccq_err *err)
{
    const char *path = NULL;
    ccq_status st;
    cfg_defaults(c);
    *resume = NULL;
    /* the file first, then --set in command-line order */
    for (int i = 0; i < argc; i++) {
        if (!strcmp(argv[i], "--help") || !strcmp(argv[i], "-h")) {
            *help = 1;
            return CCQ_OK;
        }
        if (!strcmp(argv[i], "--set") || !strcmp(argv[i], "--resume")) {
            if (i + 1 >= argc) return ccq_fail(err, CCQ_ERR_USAGE, "search: %s needs a value", argv[i]);
            if (!strcmp(argv[i], "--resume")) *resume = argv[i + 1];
            i++;
        } else if (argv[i][0] == '-') {
            return ccq_fail(err, CCQ_ERR_USAGE, "search: unknown flag '%s' (see ccq search --help)", argv[i]);
        } else if (!path) {
            path = argv[i];
        } else {
            return ccq_fail(err, CCQ_ERR_USAGE, "search: unexpected argument '%s'", argv[i]);
        }
    }
    if (!path) return ccq_fail(err, CCQ_ERR_USAGE, "search: missing CONFIG.ini (see ccq search --help)");
    *config = path;
    if ((st = cfg_load(c, path, err))) return st;
    for (int i = 0; i < argc; i++)
        if (!strcmp(argv[i], "--set") && (st = cfg_set(c, argv[i + 1], err))) return st;
    return CCQ_OK;
}

/* The end of a search on every rank. An error known to all ranks is printed by rank 0 before a
 * barrier (all ranks, also on success), so that no rank exits (and makes mpirun end the job) before rank 0's line is out:
 * under load, mpirun killed rank 0 between another rank's exit and rank 0's message. Every rank
 * then exits with the same code; main() prints nothing more (negative status). */
static ccq_status finish(const dist_ctx *d, ccq_status st, const ccq_err *err)
{
    if (st != CCQ_OK && st != CCQ_STOPPED && d->rank == 0) {
        fflush(stdout);
        fprintf(stderr, "ccq: %s\n", err->msg);
        fflush(stderr);
    }
    dist_barrier_idle(d); /* every rank, whatever its status: none can be left waiting */
    dist_finalize();
    if (st == CCQ_OK || (st == CCQ_STOPPED && d->rank == 0)) return st;
    return (ccq_status)-(int)st;
}

ccq_status cmd_search(int argc, char **argv, ccq_err *err)
{
    cfg_search c;
    const char *resume, *config = NULL;
    int help = 0;
    dist_ctx d;
    dist_init(&d, NULL, NULL);
    ccq_status st = parse(argc, argv, &c, &config, &resume, &help, err);
    if (!st && help) {
        if (d.rank == 0)
            printf("usage: [mpirun -np N] ccq search CONFIG.ini [--set section.key=value]... [--resume CKPT.h5|auto]\n"
                   "  every key, its default and its meaning: README.md, \"Configuration\"\n"
                   "  --resume auto: continue from run.checkpoint if it exists (exit 5 if it belongs to another\n"
                   "    search), else start afresh; a complete search whose output exists is left as it is\n"
                   "  exit 7: stopped by SIGTERM/SIGINT after writing the checkpoint (continue with --resume)\n");
        dist_finalize();
        return CCQ_OK;
    }
    int resume_auto = 0;
    if (!st && resume && !strcmp(resume, "auto")) { /* run.checkpoint if it exists, as rank 0 sees it */
        resume_auto = 1;
        int have = d.rank == 0 ? access(c.checkpoint, F_OK) == 0 : 0;
        resume = dist_bcast_int(&d, have) ? c.checkpoint : NULL;
        if (d.rank == 0)
            printf(resume ? "search: --resume auto: continuing from %s\n" : "search: --resume auto: no %s; starting\n",
                   c.checkpoint);
    }
    if (!st) { /* found on rank 0 (it alone writes), the outcome reaches every rank */
        st = d.rank == 0 ? check_paths(&c, config, resume, err) : CCQ_OK;
        if (!st && d.rank == 0) {
            remove_stale_temps(c.checkpoint);
            remove_stale_temps(c.output);
        }
        st = (ccq_status)dist_bcast_int(&d, (int)st);
    }
    if (st) return finish(&d, st, err); /* usage and file errors reach every rank; rank 0 prints them */
    if (d.rank == 0) {
        printf("search: %d rank%s, %s; effective configuration:\n", d.size, d.size > 1 ? "s" : "",
               resume ? "resuming" : "starting");
        cfg_write(&c, stdout);
        fflush(stdout);
    }
    return finish(&d, cc_run(&c, resume, resume_auto, &d, err), err);
}
