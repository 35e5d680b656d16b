/*
 * main.c: `ccq SUBCOMMAND ...` dispatch, and the one place that turns a
 * ccq_status into a message on stderr and an exit code (README.md, "Exit
 * codes"). Subcommands live in cmd_*.c.
 */
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "ccq/cc.h"
#include "ccq/cmd.h"
#include "ccq/version.h"

static void usage(FILE *out)
{
    fprintf(out,
            "usage: ccq SUBCOMMAND [ARGS]\n"
            "\n"
            "subcommands:\n"
            "  eval MODEL.h5 --data DATA.h5 (--float | --wbits B) [options]\n"
            "                          accuracy and speed of the float reference or the integer engine\n"
            "  quantize MODEL.h5 --data DATA.h5 --wbits B [--init rtn|gptq|gptq_scale|auto] -o OUT.h5\n"
            "                          write a quantized model (round-to-nearest or GPTQ levels)\n"
            "  search CONFIG.ini [--set section.key=value]... [--resume CKPT.h5]\n"
            "                          evolve the low-bit levels (run under mpirun for several ranks)\n"
            "  bench MODEL.h5 --data DATA.h5 [--wbits B] [--batch N] [--layers] [--ceiling]\n"
            "                          integer forward-pass throughput (see ccq bench --help)\n"
            "  export MODEL.h5 --format c OUT_DIR [--name NAME]\n"
            "                          a quantized model as self-contained C99 source (see ccq export --help)\n"
            "  export MODEL.h5 --format onnx OUT.onnx [--input uint8|float]\n"
            "                          a quantized model as an ONNX QDQ file (opset 13)\n"
            "  prune-act Q.h5 --data DATA.h5 -o OUT.h5 [--max-drop P]\n"
            "                          activation thresholds searched under an accuracy bound\n"
            "  factorize MODEL.h5 --data DATA.h5 (--rank R | --ratio F) [--wbits B] -o OUT.h5\n"
            "                          CP-factorized layers, factors fitted on their grids (ADMM)\n"
            "  inspect FILE.h5         summarise a ccq model or data file\n"
            "  help                    this text (also: ccq SUBCOMMAND --help)\n"
            "  version                 print the version\n"
            "\n"
            "exit codes: 0 ok, 2 usage, 3 file missing or unreadable, 4 malformed file,\n"
            "            5 files do not fit together, 6 size limit or out of memory,\n"
            "            7 search stopped on request (checkpoint written)\n");
}

int main(int argc, char **argv)
{
    ccq_err err = {{0}};
    ccq_status st;
    if (argc < 2) {
        fprintf(stderr, "ccq: missing subcommand (see ccq help)\n");
        return CCQ_ERR_USAGE;
    }
    const char *sub = argv[1];
    if (strcmp(sub, "help") == 0 || strcmp(sub, "--help") == 0 || strcmp(sub, "-h") == 0) {
        usage(stdout);
        return 0;
    }
    if (strcmp(sub, "version") == 0 || strcmp(sub, "--version") == 0) {
        printf("ccq %s\n", CCQ_VERSION);
        return 0;
    }
    if (strcmp(sub, "eval") == 0)
        st = cmd_eval(argc - 2, argv + 2, &err);
    else if (strcmp(sub, "search") == 0)
        st = cmd_search(argc - 2, argv + 2, &err);
    else if (strcmp(sub, "bench") == 0)
        st = cmd_bench(argc - 2, argv + 2, &err);
    else if (strcmp(sub, "quantize") == 0)
        st = cmd_quantize(argc - 2, argv + 2, &err);
    else if (strcmp(sub, "inspect") == 0)
        st = cmd_inspect(argc - 2, argv + 2, &err);
    else if (strcmp(sub, "export") == 0)
        st = cmd_export(argc - 2, argv + 2, &err);
    else if (strcmp(sub, "prune-act") == 0)
        st = cmd_prune_act(argc - 2, argv + 2, &err);
    else if (strcmp(sub, "factorize") == 0)
        st = cmd_factorize(argc - 2, argv + 2, &err);
    else
        st = ccq_fail(&err, CCQ_ERR_USAGE, "unknown subcommand '%s' (see ccq help)", sub);
    if ((int)st < 0) return -(int)st; /* a non-zero MPI rank: rank 0 reports */
    if (st != CCQ_OK && st != CCQ_STOPPED) {
        fflush(stdout);
        fprintf(stderr, "ccq: %s\n", err.msg);
    }
    return (int)st;
}

ccq_status cmd_parse_int(const char *cmd, const char *flag, const char *s, long long min, long long max,
                         long long *out, ccq_err *err)
{
    char *end = NULL;
    errno = 0;
    long long v = s ? strtoll(s, &end, 10) : 0;
    if (!s || !*s || *end || errno || v < min || v > max)
        return ccq_fail(err, CCQ_ERR_USAGE, "%s: %s needs an integer in [%lld, %lld], got '%s'", cmd, flag, min, max,
                        s ? s : "");
    *out = v;
    return CCQ_OK;
}
