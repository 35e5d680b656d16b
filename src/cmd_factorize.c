/*
 * cmd_factorize.c: `ccq factorize MODEL.h5 --data DATA.h5 -o OUT.h5
 * [--rank R|full | --ratio F] [--layers A,B] [--wbits B] [--method admm|als]
 * [--float] [--first-last-8] [--calib N] [--seed S] [--sweeps N] [--ridge X] [--refit N]`: CP-factorized layers
 * (factorize.h) in a quantized model (or, with --float, the rewritten float
 * model). Paths are checked before any compute; nothing is written unless
 * every layer was fitted and the model quantized.
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "ccq/cmd.h"
#include "ccq/data.h"
#include "ccq/factorize.h"
#include "ccq/frefit.h"
#include "ccq/model.h"
#include "ccq/outpath.h"
#include "ccq/quant.h"

static void usage(void)
{
    printf("usage: ccq factorize MODEL.h5 --data DATA.h5 -o OUT.h5 [--rank R|full | --ratio F] [--layers A,B,..]\n"
           "                     [--wbits B] [--method admm|als] [--float] [--first-last-8] [--calib N] [--seed S]\n"
           "  CP-factorized layers: each chosen conv2d (Cout x Cin x kh x kw, groups 1) becomes a 1x1 conv\n"
           "  (Cin -> R), a depthwise kh x 1 and a depthwise 1 x kw conv (R channels) and a 1x1 conv (R ->\n"
           "  Cout); a linear layer two thin linear layers. The factors are fitted to the layer's weights\n"
           "  (BatchNorm folded) on their B-bit grids by ADMM, and the model is quantized (8-bit activations\n"
           "  calibrated between the factors; the other layers' weights round-to-nearest at B bits).\n"
           "  --rank R       rank of every chosen layer; full: the exact decomposition (no fit, more weights)\n"
           "  --ratio F      else each layer's rank keeps at most a fraction F (0.001 to 10) of its weights\n"
           "                 (default 0.5)\n"
           "  --layers A,..  node names (after folding; ccq inspect lists them), each optionally NAME=R with\n"
           "                 its own rank (--rank full still decides); default: every conv2d with groups 1\n"
           "                 and every linear layer but the first weighted layer and the logits\n"
           "  --wbits B      the factors' and the other layers' weight bits, 2..8 (default 4)\n"
           "  --method M     admm (default): factors fitted on their grids; als: CP-ALS, then rounded to the\n"
           "                 grids (the baseline)\n"
           "  --float        write the factorized float model instead (ccq quantize, ccq eval --float)\n"
           "  --first-last-8 keep the first and the last layer at 8-bit weights\n"
           "  --calib N      calibration images, the first N of the train split (default 1024)\n"
           "  --seed S       CP-ALS's random start (default 1)\n"
           "  --sweeps N     ADMM sweeps over the modes (default 60)\n"
           "  --ridge X      CP-ALS's Tikhonov term, relative to the Gram matrices' mean diagonal (default\n"
           "                 0.01; 0 to 1): without it CP's rank-1 terms grow and cancel, which no grid follows\n"
           "  --refit N      refit each layer's last factor and bias on its grid to the original layer's\n"
           "                 outputs on the first N calibration images (least squares, then GPTQ; a channel\n"
           "                 keeps its levels where they do better); 0: off (default 256)\n");
}

ccq_status cmd_factorize(int argc, char **argv, ccq_err *err)
{
    const char *mpath = NULL, *data = NULL, *out = NULL;
    factorize_config c;
    factorize_config_default(&c);
    quant_config qc;
    quant_config_default(&qc);
    int as_float = 0, rank_given = 0, ratio_given = 0, refit_given = 0;
    frefit_config rc;
    frefit_config_default(&rc);
    factorize_method method = FACTORIZE_ADMM;
    const char *method_arg = NULL;
    ccq_status st;
    for (int i = 0; i < argc; i++) {
        const char *s = argv[i];
        if (!strcmp(s, "--help") || !strcmp(s, "-h")) {
            usage();
            return CCQ_OK;
        }
        if (s[0] != '-') {
            if (mpath) return ccq_fail(err, CCQ_ERR_USAGE, "factorize: unexpected argument '%s'", s);
            mpath = s;
            continue;
        }
        if (!strcmp(s, "--float")) {
            as_float = 1;
            continue;
        }
        if (!strcmp(s, "--first-last-8")) {
            qc.first_last_8 = 1;
            continue;
        }
        if (strcmp(s, "--data") && strcmp(s, "-o") && strcmp(s, "--rank") && strcmp(s, "--ratio") &&
            strcmp(s, "--layers") && strcmp(s, "--wbits") && strcmp(s, "--method") && strcmp(s, "--calib") &&
            strcmp(s, "--seed") && strcmp(s, "--sweeps") && strcmp(s, "--ridge") && strcmp(s, "--refit"))
            return ccq_fail(err, CCQ_ERR_USAGE, "factorize: unknown option '%s' (see ccq factorize --help)", s);
        if (i + 1 >= argc) return ccq_fail(err, CCQ_ERR_USAGE, "factorize: %s needs a value", s);
        const char *v = argv[++i];
        long long n;
        if (!strcmp(s, "--data"))
            data = v;
        else if (!strcmp(s, "-o"))
            out = v;
        else if (!strcmp(s, "--layers")) {
            if (!*v) return ccq_fail(err, CCQ_ERR_USAGE, "factorize: --layers needs node names");
            c.layers = v;
        } else if (!strcmp(s, "--rank")) {
            rank_given = 1;
            if (!strcmp(v, "full"))
                c.method = FACTORIZE_FULL;
            else {
                if ((st = cmd_parse_int("factorize", "--rank", v, 1, 1 << 20, &n, err))) return st;
                c.rank = (int)n;
            }
        } else if (!strcmp(s, "--ratio")) {
            char *end;
            const double f = strtod(v, &end);
            if (end == v || *end || !(f >= 0.001 && f <= 10.0))
                return ccq_fail(err, CCQ_ERR_USAGE, "factorize: --ratio needs a number in [0.001, 10], got '%s'", v);
            c.ratio_pm = (int)(f * 1000.0 + 0.5);
            ratio_given = 1;
        } else if (!strcmp(s, "--ridge")) {
            char *end;
            const double x = strtod(v, &end);
            if (end == v || *end || !(x >= 0 && x <= 1))
                return ccq_fail(err, CCQ_ERR_USAGE, "factorize: --ridge needs a number in [0, 1], got '%s'", v);
            c.ridge = x;
        } else if (!strcmp(s, "--wbits")) {
            if ((st = cmd_parse_int("factorize", "--wbits", v, 2, 8, &n, err))) return st;
            c.wbits = (int)n;
        } else if (!strcmp(s, "--method")) {
            if (strcmp(v, "admm") && strcmp(v, "als"))
                return ccq_fail(err, CCQ_ERR_USAGE, "factorize: --method is admm or als, got '%s'", v);
            method = !strcmp(v, "als") ? FACTORIZE_ALS : FACTORIZE_ADMM;
            method_arg = v;
        } else if (!strcmp(s, "--calib")) {
            if ((st = cmd_parse_int("factorize", "--calib", v, 1, 1 << 24, &n, err))) return st;
            qc.calib_images = (int)n;
        } else if (!strcmp(s, "--refit")) {
            if ((st = cmd_parse_int("factorize", "--refit", v, 0, 1 << 24, &n, err))) return st;
            rc.images = (int)n;
            refit_given = 1;
        } else if (!strcmp(s, "--seed")) {
            if ((st = cmd_parse_int("factorize", "--seed", v, 0, INT64_MAX, &n, err))) return st;
            c.seed = (uint64_t)n;
        } else {
            if ((st = cmd_parse_int("factorize", "--sweeps", v, 0, 100000, &n, err))) return st;
            c.admm_sweeps = (int)n;
        }
    }
    if (!mpath) return ccq_fail(err, CCQ_ERR_USAGE, "factorize: missing MODEL.h5");
    if (!out) return ccq_fail(err, CCQ_ERR_USAGE, "factorize: missing -o OUT.h5");
    if (!data && !as_float) return ccq_fail(err, CCQ_ERR_USAGE, "factorize: missing --data DATA.h5 (calibration)");
    if (rank_given && ratio_given) return ccq_fail(err, CCQ_ERR_USAGE, "factorize: --rank and --ratio exclude each other");
    if (c.method == FACTORIZE_FULL && method_arg)
        return ccq_fail(err, CCQ_ERR_USAGE, "factorize: --rank full is the exact decomposition: no --method");
    if (c.method != FACTORIZE_FULL) c.method = method;
    if (refit_given && rc.images > 0 && (as_float || c.method == FACTORIZE_FULL))
        return ccq_fail(err, CCQ_ERR_USAGE, "factorize: --refit fits the last factors on their grids: not with %s",
                        as_float ? "--float" : "--rank full (exact)");
    if (as_float || c.method == FACTORIZE_FULL) rc.images = 0;
    qc.wbits = c.wbits;
    rc.wbits = c.wbits;

    const outpath_item in[2] = {{"MODEL.h5", mpath}, {"--data", data}}, o[1] = {{"-o", out}};
    if ((st = outpath_check(in, data ? 2 : 1, o, 1, 0, err))) return st;
    model fm, folded, fz, qm;
    factorize_plan plan;
    data_split calib;
    memset(&calib, 0, sizeof calib);
    if ((st = model_load(&fm, mpath, err))) return st;
    if (fm.quantized) {
        model_free(&fm);
        return ccq_fail(err, CCQ_ERR_USAGE, "factorize: %s is already quantized (factorize starts from a float model)",
                        mpath);
    }
    if (data && (st = data_load(&calib, data, "train", qc.calib_images, err))) {
        model_free(&fm);
        return st;
    }
    if (data && (st = data_check_fits(&calib, &fm, err))) goto done_fm;
    if ((st = quant_fold(&fm, &folded, err))) goto done_fm;
    if ((st = factorize_model(&folded, &c, &fz, &plan, err))) goto done_folded;
    int64_t before = 0, after = 0;
    printf("factorize: %s, %s, w%d grids\n", mpath,
           c.method == FACTORIZE_FULL ? "exact (full rank)" : c.method == FACTORIZE_ALS ? "CP-ALS + RTN" : "ADMM",
           c.wbits);
    printf("%-40s %6s %9s %9s %10s %10s %10s\n", "layer", "rank", "weights", "factors", "err float", "err rtn",
           "err grid");
    for (int l = 0; l < plan.n_layers; l++) {
        const factorize_layer *L = &plan.layers[l];
        printf("%-40s %6d %9lld %9lld %10.6f %10.6f %10.6f\n", L->name, L->rank, (long long)L->weights_before,
               (long long)L->weights_after, L->err_float, L->err_rtn, L->err_grid);
        before += L->weights_before, after += L->weights_after;
    }
    int64_t total_before = 0, total_after = 0;
    for (int i = 0; i < folded.n_nodes; i++) total_before += folded.nodes[i].n_weight;
    for (int i = 0; i < fz.n_nodes; i++) total_after += fz.nodes[i].n_weight;
    printf("factorize: %d layers, their weights %lld -> %lld; the model's %lld -> %lld (%.3f)\n", plan.n_layers,
           (long long)before, (long long)after, (long long)total_before, (long long)total_after,
           (double)total_after / (double)total_before);
    if (rc.images > 0) {
        frefit_layer *rr = ccq_calloc((size_t)plan.n_layers, sizeof(frefit_layer));
        if ((st = frefit_run(&folded, &fz, &plan, &calib, &rc, rr, err))) {
            ccq_free(rr);
            goto done_fz;
        }
        printf("refit: the last factors on %d images (output error relative to the original layer's)\n",
               rc.images < calib.n ? rc.images : calib.n);
        printf("%-40s %10s %10s %10s\n", "layer", "before", "after", "refitted");
        for (int l = 0; l < plan.n_layers; l++)
            printf("%-40s %10.6f %10.6f %6d/%-4d\n", plan.layers[l].name, rr[l].err_before, rr[l].err_after,
                   rr[l].refitted, rr[l].channels);
        ccq_free(rr);
    }
    if (as_float) {
        st = model_save(&fz, out, err);
        if (!st) printf("factorize: wrote %s (float, %d nodes)\n", out, fz.n_nodes);
    } else if (!(st = quant_model(&fz, &calib, &qc, &qm, err))) {
        if (!(st = factorize_apply(&qm, &plan, c.wbits, err))) {
            st = model_save(&qm, out, err);
            if (!st) printf("factorize: wrote %s (w%da8, %d nodes)\n", out, c.wbits, qm.n_nodes);
        }
        model_free(&qm);
    }
done_fz:
    model_free(&fz);
    factorize_plan_free(&plan);
done_folded:
    model_free(&folded);
done_fm:
    model_free(&fm);
    data_free(&calib);
    return st;
}
