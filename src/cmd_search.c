/*
 * cmd_search.c: `ccq search CONFIG.ini [--set section.key=value]... [--resume CKPT.h5]`,
 * the MPI entry point: every rank parses the same configuration, rank 0
 * echoes it and reports; errors are printed once, by rank 0.
 */
#include <stdio.h>
#include <string.h>

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
            printf("usage: [mpirun -np N] ccq search CONFIG.ini [--set section.key=value]... [--resume CKPT.h5]\n"
                   "  every key, its default and its meaning: README.md, \"Configuration\"\n"
                   "  exit 7: stopped by SIGTERM/SIGINT after writing the checkpoint (continue with --resume)\n");
        dist_finalize();
        return CCQ_OK;
    }
    if (!st) { /* found on rank 0 (it alone writes), the outcome reaches every rank */
        st = d.rank == 0 ? check_paths(&c, config, resume, err) : CCQ_OK;
        st = (ccq_status)dist_bcast_int(&d, (int)st);
    }
    if (st) { /* usage and file errors reach every rank; rank 0 prints them */
        dist_finalize();
        return d.rank == 0 ? st : (ccq_status)-(int)st;
    }
    if (d.rank == 0) {
        printf("search: %d rank%s, %s; effective configuration:\n", d.size, d.size > 1 ? "s" : "",
               resume ? "resuming" : "starting");
        cfg_write(&c, stdout);
        fflush(stdout);
    }
    const ccq_status rc = cc_run(&c, resume, &d, err);
    dist_finalize();
    if (rc != CCQ_OK && d.rank != 0) return (ccq_status)-(int)rc; /* rank 0 prints the message */
    return rc;
}
