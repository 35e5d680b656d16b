/*
 * cmd_prune.c: `ccq prune-act Q.h5 --data DATA.h5 -o OUT.h5 [--max-drop P]
 * [--images N] [--rounds R] [--seed S]`: activation thresholds searched on
 * the integer network (actprune.h), written into a copy of the quantized
 * model. The output path is checked before the model is read, and nothing
 * is written unless the search finished.
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "ccq/actprune.h"
#include "ccq/cmd.h"
#include "ccq/data.h"
#include "ccq/fit.h"
#include "ccq/model.h"
#include "ccq/outpath.h"

static void usage(void)
{
    printf("usage: ccq prune-act Q.h5 --data DATA.h5 -o OUT.h5 [--max-drop P] [--max-xent-rise R] [--images N]\n"
           "                     [--rounds R] [--seed S]\n"
           "  activation pruning: a threshold per node with its own output scale (conv, linear, add, ...);\n"
           "  an output level within the threshold of its zero point becomes the zero point. The\n"
           "  thresholds (0,1,2,3,4,6,8,12,...,255) that zero the most activations while the integer\n"
           "  network loses at most P points of accuracy on a seeded sample of train images, against the\n"
           "  same model without thresholds: each node's sensitivity alone, one tolerance for all\n"
           "  (bisected), optionally a greedy ascent. Thresholds already in Q.h5 are replaced. The bound\n"
           "  holds on the sample; unseen images, which the network fits worse, lose more.\n"
           "  --max-drop P   accuracy points the sample may lose (default 0.3; 0 to 100, two decimals)\n"
           "  --max-xent-rise R  also at most R percent more cross-entropy on the sample (default: no such\n"
           "                 bound); training images a network fits well lose little accuracy where unseen\n"
           "                 ones lose more, while their cross-entropy already rises\n"
           "  --images N     train images sampled (default 4096)\n"
           "  --rounds R     rounds of a greedy ascent after the bisection (default 0: none; it spends the\n"
           "                 bound on the sample for few more zeros and loses more on unseen images)\n"
           "  --seed S       the sample's seed (default 1)\n"
           "  then: ccq eval OUT.h5 --data DATA.h5 --act-zeros (per node: threshold, zeros on the test split)\n");
}

/* "0.3" -> 30 (hundredths), 0..10000; at most two decimals. */
static ccq_status parse_hundredths(const char *flag, const char *s, int *bp, ccq_err *err)
{
    int whole = 0, frac = 0, nf = 0, nd = 0;
    const char *p = s;
    for (; *p >= '0' && *p <= '9' && nd < 4; p++, nd++) whole = whole * 10 + (*p - '0');
    if (*p == '.')
        for (p++; *p >= '0' && *p <= '9' && nf < 2; p++, nf++) frac = frac * 10 + (*p - '0');
    if (nf == 1) frac *= 10;
    if (!nd || *p || whole * 100 + frac > 10000)
        return ccq_fail(err, CCQ_ERR_USAGE, "prune-act: %s needs a number in [0, 100] with at most two decimals, got "
                        "'%s'", flag, s);
    *bp = whole * 100 + frac;
    return CCQ_OK;
}

ccq_status cmd_prune_act(int argc, char **argv, ccq_err *err)
{
    const char *mpath = NULL, *data = NULL, *out = NULL;
    actprune_config c;
    actprune_config_default(&c);
    ccq_status st;
    for (int i = 0; i < argc; i++) {
        const char *s = argv[i];
        if (!strcmp(s, "--help") || !strcmp(s, "-h")) {
            usage();
            return CCQ_OK;
        }
        if (s[0] != '-') {
            if (mpath) return ccq_fail(err, CCQ_ERR_USAGE, "prune-act: unexpected argument '%s'", s);
            mpath = s;
            continue;
        }
        if (strcmp(s, "--data") && strcmp(s, "-o") && strcmp(s, "--max-drop") && strcmp(s, "--max-xent-rise") &&
            strcmp(s, "--images") &&
            strcmp(s, "--rounds") && strcmp(s, "--seed"))
            return ccq_fail(err, CCQ_ERR_USAGE, "prune-act: unknown option '%s' (see ccq prune-act --help)", s);
        if (i + 1 >= argc) return ccq_fail(err, CCQ_ERR_USAGE, "prune-act: %s needs a value", s);
        const char *v = argv[++i];
        long long n;
        if (!strcmp(s, "--data")) data = v;
        else if (!strcmp(s, "-o")) out = v;
        else if (!strcmp(s, "--max-drop")) { if ((st = parse_hundredths(s, v, &c.max_drop_bp, err))) return st; }
        else if (!strcmp(s, "--max-xent-rise")) { if ((st = parse_hundredths(s, v, &c.max_xent_bp, err))) return st; }
        else if (!strcmp(s, "--images")) {
            if ((st = cmd_parse_int("prune-act", s, v, 1, 1 << 24, &n, err))) return st;
            c.images = (int)n;
        } else if (!strcmp(s, "--rounds")) {
            if ((st = cmd_parse_int("prune-act", s, v, 0, 1000, &n, err))) return st;
            c.rounds = (int)n;
        } else {
            if ((st = cmd_parse_int("prune-act", s, v, 0, INT64_MAX / 4, &n, err))) return st;
            c.seed = (uint64_t)n;
        }
    }
    if (!mpath) return ccq_fail(err, CCQ_ERR_USAGE, "prune-act: missing Q.h5 (see ccq prune-act --help)");
    if (!data) return ccq_fail(err, CCQ_ERR_USAGE, "prune-act: missing --data DATA.h5");
    if (!out) return ccq_fail(err, CCQ_ERR_USAGE, "prune-act: missing -o OUT.h5");
    const outpath_item in[2] = {{"Q.h5", mpath}, {"--data", data}}, outs[1] = {{"-o", out}};
    if ((st = outpath_check(in, 2, outs, 1, 0, err))) return st;
    model m;
    if ((st = model_load(&m, mpath, err))) return st;
    if (!m.quantized) {
        model_free(&m);
        return ccq_fail(err, CCQ_ERR_USAGE, "prune-act: %s is a float model: quantize it first (ccq quantize)", mpath);
    }
    data_split train;
    if ((st = data_load(&train, data, "train", -1, err))) {
        model_free(&m);
        return st;
    }
    actprune_report r;
    if (!(st = actprune_search(&m, &c, &train, &r, err))) {
        const double n = r.n_images;
        printf("prune-act: %d nodes, %d train images (seed %llu), bound: at most %lld fewer correct (%.2f points)",
               r.n_layers, r.n_images, (unsigned long long)c.seed, (long long)r.max_drop, c.max_drop_bp / 100.0);
        if (c.max_xent_bp) printf(" and %.2f%% more cross-entropy", c.max_xent_bp / 100.0);
        printf(", greedy rounds at most %d\n", c.rounds);
        printf("prune-act: node, output levels per image, zeros without a threshold, the largest threshold alone "
               "within the bound and its zeros, the threshold chosen and its zeros\n");
        for (int l = 0; l < r.n_layers; l++) {
            const actprune_layer *ly = &r.layer[l];
            const double per = (double)ly->numel * n;
            printf("prune-act:   %3d %-10s %-24s %7lld  %6.2f%%  alone %3d %6.2f%%  chosen %3d %6.2f%%\n", ly->node,
                   model_op_name(m.nodes[ly->node].op), m.nodes[ly->node].name, (long long)ly->numel,
                   100.0 * (double)ly->zeros0 / per, ACTPRUNE_LADDER[ly->alone_step],
                   100.0 * (double)ly->alone_zeros[ly->alone_step] / per, ACTPRUNE_LADDER[ly->step],
                   100.0 * (double)ly->zeros / per);
        }
        const double all = (double)r.numel * n;
        printf("prune-act: zeros %.2f%% -> %.2f%% (one tolerance) -> %.2f%%; accuracy %.2f%% -> %.2f%% -> %.2f%%; "
               "cross-entropy per image %.5f -> %.5f -> %.5f; %lld joint evaluations, %.1f s\n",
               100.0 * (double)r.zeros0 / all, 100.0 * (double)r.zeros2 / all, 100.0 * (double)r.zeros / all,
               100.0 * (double)r.correct0 / n, 100.0 * (double)r.correct2 / n, 100.0 * (double)r.correct / n,
               (double)r.fit0 / FIT_ONE / n, (double)r.fit2 / FIT_ONE / n, (double)r.fit / FIT_ONE / n,
               (long long)r.evals, r.seconds);
        actprune_report_free(&r);
        if (!(st = model_save(&m, out, err))) printf("prune-act: wrote %s\n", out);
    }
    data_free(&train);
    model_free(&m);
    return st;
}
