/*
 * cmd_eval.c: `ccq eval` (accuracy and speed of the float reference or of
 * the integer engine on one split) and `ccq quantize` (write a quantized
 * model file), with the quantization flags they share.
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "ccq/alloc.h"
#include "ccq/cmd.h"
#include "ccq/data.h"
#include "ccq/fit.h"
#include "ccq/fnet.h"
#include "ccq/gptq.h"
#include "ccq/h5io.h"
#include "ccq/model.h"
#include "ccq/outpath.h"
#include "ccq/prune.h"
#include "ccq/qnet.h"
#include "ccq/quant.h"

typedef struct {
    const char *model;
    const char *data;
    const char *split;
    const char *save_logits;
    const char *out;
    long long limit, mb;
    int is_float, json, wbits_given, init_given, levels_given, act_zeros, prune_given;
    const char *budget;  /* quantize --budget: BYTES or wB */
    alloc_config ac;     /* its widths, images, generations, seed */
    int alloc_given;     /* any of --widths --alloc-images --alloc-gens --seed */
    quant_config qc;
    gptq_start_kind init; /* the levels a float model starts from (--init) */
} eval_args;

static const char k_quant_help[] =
    "  --wbits B             quantize a float model to B-bit weights (2..8), 8-bit activations\n"
    "  --abits 8             activation bits (8 is the only value)\n"
    "  --first-last-8        keep the first and the last layer at 8-bit weights\n"
    "  --calib N             calibration images, the first N of the train split, for the activation\n"
    "                        ranges and GPTQ's Hessians (default 1024)\n"
    "  --act-rule R          activation range: percentile (default) or minmax\n"
    "  --percentile P        for --act-rule percentile: P in [90, 100) (default 99.99)\n"
    "  --wscale R            weight scale per channel: maxabs (default) or mse\n"
    "  --levels L            weight levels: uniform (default) or learned (a fitted codebook of 2^B\n"
    "                        values per output channel, after LQ-Nets; --wbits 2..4, not for the\n"
    "                        8-bit layers of --first-last-8)\n"
    "  --init I              levels: rtn (round-to-nearest, default), gptq (GPTQ at those scales),\n"
    "                        gptq_scale (GPTQ choosing each channel's scale among 0.25..1.00 of it),\n"
    "                        auto (the one of the three with the best train-split accuracy), or\n"
    "                        gptq_asym (gptq_scale with asymmetric targets: each layer reconstructs the\n"
    "                        float model's own output from the quantized layers' inputs, its bias solved\n"
    "                        again; the file's float biases become those)\n";

static void eval_usage(FILE *out)
{
    fprintf(out, "usage: ccq eval MODEL.h5 --data DATA.h5 (--float | --wbits B | a quantized MODEL.h5) [options]\n"
                 "  --data DATA.h5        ccq data file (required)\n"
                 "  --float               the float reference forward pass\n"
                 "%s"
                 "  --split test|train    split to evaluate (default test)\n"
                 "  --limit N             first N images only (default all)\n"
                 "  --mb N                integer engine micro-batch, images (default 8)\n"
                 "  --json                print one JSON object instead of text\n"
                 "  --act-zeros           integer runs: per node with its own output scale, its activation\n"
                 "                        threshold and the fraction of its output levels at the zero point\n"
                 "  --save-logits OUT.h5  write /logits (float32 [N, classes]); integer runs add\n"
                 "                        /logits_int (int32) and its attribute scale\n"
                 "environment: CCQ_ISA=scalar|avx2|avx512vnni forces a kernel path\n",
            k_quant_help);
}

/* 1 if argv[*i] was a quantization flag (value consumed), 0 if not; sets *st on a bad value. */
static int parse_quant_flag(const char *cmd, int argc, char **argv, int *i, eval_args *a, ccq_status *st,
                            ccq_err *err)
{
    quant_config *qc = &a->qc;
    const char *s = argv[*i];
    long long v;
    *st = CCQ_OK;
    if (strcmp(s, "--first-last-8") == 0) {
        qc->first_last_8 = 1;
        return 1;
    }
    static const char *const with_value[] = {"--wbits", "--abits", "--calib", "--act-rule", "--percentile", "--wscale",
                                             "--levels", "--init"};
    int known = 0;
    for (size_t k = 0; k < CCQ_ARRAY_LEN(with_value); k++) known |= strcmp(s, with_value[k]) == 0;
    if (!known) return 0;
    if (*i + 1 >= argc) {
        *st = ccq_fail(err, CCQ_ERR_USAGE, "%s: %s needs a value", cmd, s);
        return 1;
    }
    const char *val = argv[++*i];
    if (strcmp(s, "--wbits") == 0) {
        if (!(*st = cmd_parse_int(cmd, s, val, 2, 8, &v, err))) qc->wbits = (int)v, a->wbits_given = 1;
    } else if (strcmp(s, "--abits") == 0) {
        if (!(*st = cmd_parse_int(cmd, s, val, 8, 8, &v, err))) (void)v;
    } else if (strcmp(s, "--calib") == 0) {
        if (!(*st = cmd_parse_int(cmd, s, val, 1, 1000000, &v, err))) qc->calib_images = (int)v;
    } else if (strcmp(s, "--act-rule") == 0) {
        if (strcmp(val, "percentile") == 0)
            qc->act_rule = QUANT_ACT_PERCENTILE;
        else if (strcmp(val, "minmax") == 0)
            qc->act_rule = QUANT_ACT_MINMAX;
        else
            *st = ccq_fail(err, CCQ_ERR_USAGE, "%s: --act-rule must be percentile or minmax, got '%s'", cmd, val);
    } else if (strcmp(s, "--percentile") == 0) {
        char *end = NULL;
        double p = strtod(val, &end);
        if (!*val || *end || !(p >= 90.0 && p < 100.0))
            *st = ccq_fail(err, CCQ_ERR_USAGE, "%s: --percentile needs a number in [90, 100), got '%s'", cmd, val);
        else
            qc->percentile = p;
    } else if (strcmp(s, "--wscale") == 0) {
        if (strcmp(val, "maxabs") == 0)
            qc->w_rule = QUANT_W_MAXABS;
        else if (strcmp(val, "mse") == 0)
            qc->w_rule = QUANT_W_MSE;
        else
            *st = ccq_fail(err, CCQ_ERR_USAGE, "%s: --wscale must be maxabs or mse, got '%s'", cmd, val);
    } else if (strcmp(s, "--levels") == 0) {
        a->levels_given = 1;
        if (strcmp(val, "uniform") == 0)
            qc->level_rule = QUANT_LEVELS_UNIFORM;
        else if (strcmp(val, "learned") == 0)
            qc->level_rule = QUANT_LEVELS_LEARNED;
        else
            *st = ccq_fail(err, CCQ_ERR_USAGE, "%s: --levels must be uniform or learned, got '%s'", cmd, val);
    } else if (strcmp(s, "--init") == 0) {
        a->init = gptq_start_parse(val);
        a->init_given = 1;
        if (a->init == GPTQ_START_COUNT)
            *st = ccq_fail(err, CCQ_ERR_USAGE, "%s: --init must be rtn, gptq, gptq_scale, gptq_asym or auto, got '%s'", cmd, val);
    }
    return 1;
}

/* --widths W,W,..: increasing, each 2..8, at least two. */
static ccq_status parse_widths(const char *v, alloc_config *ac, ccq_err *err)
{
    int n = 0;
    const char *p = v;
    while (*p) {
        char *end = NULL;
        const long w = strtol(p, &end, 10);
        if (end == p || w < 2 || w > 8 || (n && w <= ac->widths[n - 1]) || n == ALLOC_MAX_WIDTHS ||
            (*end && *end != ',') || (*end == ',' && !end[1]))
            return ccq_fail(err, CCQ_ERR_USAGE,
                            "quantize: --widths needs increasing widths in 2..8 separated by commas, got '%s'", v);
        ac->widths[n++] = (int)w;
        p = *end ? end + 1 : end;
    }
    if (n < 2)
        return ccq_fail(err, CCQ_ERR_USAGE, "quantize: --widths needs at least two widths, got '%s'", v);
    ac->n_widths = n;
    return CCQ_OK;
}

static ccq_status parse(const char *cmd, int argc, char **argv, eval_args *a, int *help, ccq_err *err)
{
    memset(a, 0, sizeof *a);
    a->split = "test";
    a->limit = -1;
    a->mb = 8;
    quant_config_default(&a->qc);
    alloc_config_default(&a->ac);
    for (int i = 0; i < argc; i++) {
        const char *s = argv[i];
        ccq_status st;
        if (strcmp(s, "--help") == 0 || strcmp(s, "-h") == 0) {
            *help = 1;
            return CCQ_OK;
        }
        if (parse_quant_flag(cmd, argc, argv, &i, a, &st, err)) {
            if (st) return st;
        } else if (strcmp(cmd, "quantize") == 0 &&
                   (strcmp(s, "--budget") == 0 || strcmp(s, "--widths") == 0 || strcmp(s, "--alloc-images") == 0 ||
                    strcmp(s, "--alloc-gens") == 0 || strcmp(s, "--seed") == 0)) {
            if (i + 1 >= argc) return ccq_fail(err, CCQ_ERR_USAGE, "%s: %s needs a value", cmd, s);
            const char *v = argv[++i];
            long long n;
            if (strcmp(s, "--budget") == 0) {
                a->budget = v;
                continue;
            }
            a->alloc_given = 1;
            if (strcmp(s, "--widths") == 0) {
                if ((st = parse_widths(v, &a->ac, err))) return st;
            } else if (strcmp(s, "--alloc-images") == 0) {
                if ((st = cmd_parse_int(cmd, s, v, 1, 1000000, &n, err))) return st;
                a->ac.images = (int)n;
            } else if (strcmp(s, "--alloc-gens") == 0) {
                if ((st = cmd_parse_int(cmd, s, v, 0, 100000, &n, err))) return st;
                a->ac.generations = (int)n;
            } else {
                if ((st = cmd_parse_int(cmd, s, v, 0, INT32_MAX, &n, err))) return st;
                a->ac.seed = (uint64_t)n;
            }
        } else if (strcmp(cmd, "quantize") == 0 && (strcmp(s, "--sparsity") == 0 || strcmp(s, "--prune") == 0)) {
            if (i + 1 >= argc) return ccq_fail(err, CCQ_ERR_USAGE, "%s: %s needs a value", cmd, s);
            const char *v = argv[++i];
            if (strcmp(s, "--prune") == 0) {
                if (strcmp(v, "before") && strcmp(v, "after"))
                    return ccq_fail(err, CCQ_ERR_USAGE, "%s: --prune must be before or after, got '%s'", cmd, v);
                a->qc.prune_after = strcmp(v, "after") == 0;
                a->prune_given = 1;
                continue;
            }
            /* a fraction in [0, 1) with at most three decimals, as per mille */
            int pm = 0, nd = 0;
            const char *p = v;
            if (p[0] == '0' && p[1] == '.') {
                for (p += 2; *p >= '0' && *p <= '9' && nd < 3; p++, nd++) pm = pm * 10 + (*p - '0');
                for (int k = nd; k < 3; k++) pm *= 10;
            } else if (p[0] == '0') {
                p++, nd = 1;
            }
            if (!nd || *p)
                return ccq_fail(err, CCQ_ERR_USAGE, "%s: --sparsity needs a fraction in [0, 1) with at most three "
                                "decimals, got '%s'", cmd, v);
            a->qc.sparsity_pm = pm;
        } else if (strcmp(s, "--float") == 0) {
            a->is_float = 1;
        } else if (strcmp(s, "--json") == 0) {
            a->json = 1;
        } else if (strcmp(cmd, "eval") == 0 && strcmp(s, "--act-zeros") == 0) {
            a->act_zeros = 1;
        } else if (strcmp(s, "--data") == 0 || strcmp(s, "--split") == 0 || strcmp(s, "--limit") == 0 ||
                   strcmp(s, "--save-logits") == 0 || strcmp(s, "--mb") == 0 || strcmp(s, "-o") == 0) {
            if (i + 1 >= argc) return ccq_fail(err, CCQ_ERR_USAGE, "%s: %s needs a value", cmd, s);
            const char *v = argv[++i];
            if (strcmp(s, "--data") == 0) a->data = v;
            else if (strcmp(s, "--split") == 0) a->split = v;
            else if (strcmp(s, "--save-logits") == 0) a->save_logits = v;
            else if (strcmp(s, "-o") == 0) a->out = v;
            else if (strcmp(s, "--mb") == 0) {
                if ((st = cmd_parse_int(cmd, s, v, 1, 4096, &a->mb, err))) return st;
            } else if ((st = cmd_parse_int(cmd, s, v, 1, INT32_MAX, &a->limit, err))) {
                return st;
            }
        } else if (s[0] == '-' && s[1] != '\0') {
            return ccq_fail(err, CCQ_ERR_USAGE, "%s: unknown flag '%s' (see ccq %s --help)", cmd, s, cmd);
        } else if (!a->model) {
            a->model = s;
        } else {
            return ccq_fail(err, CCQ_ERR_USAGE, "%s: unexpected argument '%s'", cmd, s);
        }
    }
    if (!a->model) return ccq_fail(err, CCQ_ERR_USAGE, "%s: missing MODEL.h5 (see ccq %s --help)", cmd, cmd);
    if (!a->data) return ccq_fail(err, CCQ_ERR_USAGE, "%s: missing --data DATA.h5", cmd);
    if (strcmp(a->split, "test") != 0 && strcmp(a->split, "train") != 0)
        return ccq_fail(err, CCQ_ERR_USAGE, "%s: --split must be test or train, got '%s'", cmd, a->split);
    if (a->is_float && a->wbits_given)
        return ccq_fail(err, CCQ_ERR_USAGE, "%s: --float and --wbits exclude each other", cmd);
    if (a->is_float && a->act_zeros)
        return ccq_fail(err, CCQ_ERR_USAGE, "%s: --act-zeros counts the integer engine's levels: not with --float", cmd);
    if (a->budget && a->wbits_given)
        return ccq_fail(err, CCQ_ERR_USAGE, "%s: --budget and --wbits exclude each other (--widths lists the widths "
                        "the budget may give each layer)", cmd);
    if (a->prune_given && !a->qc.sparsity_pm)
        return ccq_fail(err, CCQ_ERR_USAGE, "%s: --prune needs --sparsity above 0", cmd);
    if (a->qc.sparsity_pm && a->budget)
        return ccq_fail(err, CCQ_ERR_USAGE, "%s: --sparsity and --budget exclude each other", cmd);
    if (a->qc.sparsity_pm && a->qc.level_rule == QUANT_LEVELS_LEARNED)
        return ccq_fail(err, CCQ_ERR_USAGE, "%s: --sparsity needs uniform levels (a learned codebook need not hold "
                        "zero)", cmd);
    if (a->alloc_given && !a->budget)
        return ccq_fail(err, CCQ_ERR_USAGE, "%s: --widths, --alloc-images, --alloc-gens and --seed need --budget", cmd);
    if (a->init_given && !a->wbits_given && !a->budget)
        return ccq_fail(err, CCQ_ERR_USAGE, "%s: --init applies when quantizing: it needs --wbits", cmd);
    if (a->levels_given && !a->wbits_given && !a->budget)
        return ccq_fail(err, CCQ_ERR_USAGE, "%s: --levels applies when quantizing: it needs --wbits", cmd);
    return CCQ_OK;
}

static ccq_status save_logits(const char *path, const float *logits, const int32_t *ilogits, float scale, int n,
                              int classes, ccq_err *err)
{
    h5io_file f;
    hsize_t dims[2] = {(hsize_t)n, (hsize_t)classes};
    ccq_status st = h5io_atomic_create(&f, path, err);
    if (st) return st;
    if ((st = h5io_write_dset(&f, "/", "logits", H5T_IEEE_F32LE, H5T_NATIVE_FLOAT, 2, dims, logits, err)) ||
        (ilogits &&
         ((st = h5io_write_dset(&f, "/", "logits_int", H5T_STD_I32LE, H5T_NATIVE_INT32, 2, dims, ilogits, err)) ||
          (st = h5io_write_attr_floats(&f, "/logits_int", "scale", &scale, 1, 1, err))))) {
        h5io_atomic_abort(&f);
        return st;
    }
    return h5io_atomic_commit(&f, path, err);
}

/* Quantizes a float model with calibration images from the train split and
 * the start levels of --init (auto reads the whole train split to choose).
 * report: print what the start was on stdout. */
static ccq_status quantize_from(const model *fm, const eval_args *a, model *qm, int report, ccq_err *err)
{
    data_split train;
    const int auto_ = a->init == GPTQ_START_AUTO;
    ccq_status st = data_load(&train, a->data, "train", auto_ ? -1 : a->qc.calib_images, err);
    if (st) return st;
    gptq_start_info info;
    st = gptq_start(fm, &train, &a->qc, a->init, qm, &info, err);
    data_free(&train);
    if (st || !report) return st;
    if (auto_)
        printf("quantize: auto: train-split accuracy (%d images) rtn %.2f%%, gptq %.2f%%, gptq_scale %.2f%%: %s\n",
               info.n_train, 100.0 * info.correct[0] / info.n_train, 100.0 * info.correct[1] / info.n_train,
               100.0 * info.correct[2] / info.n_train, gptq_start_name(info.chosen));
    if (info.chosen != GPTQ_START_RTN)
        printf("quantize: %s: %lld of %lld levels differ from round-to-nearest%s (%.2f s)\n",
               gptq_start_name(info.chosen), (long long)info.report.changed, (long long)info.report.weights,
               info.chosen == GPTQ_START_GPTQ_SCALE  ? ", scales searched"
               : info.chosen == GPTQ_START_GPTQ_ASYM ? ", scales searched, asymmetric targets, biases solved again"
                                                     : "",
               info.report.seconds);
    return CCQ_OK;
}

/* --budget: a byte count, or wB (the size with every free layer at B bits, B one of --widths):
 * *bytes, or *width_index >= 0 for the latter. */
static ccq_status parse_budget(const eval_args *a, long long *bytes, int *width_index, ccq_err *err)
{
    const char *v = a->budget;
    *bytes = 0, *width_index = -1;
    if (v[0] == 'w') {
        char *end = NULL;
        const long b = strtol(v + 1, &end, 10);
        for (int k = 0; k < a->ac.n_widths && end != v + 1 && !*end; k++)
            if (a->ac.widths[k] == b) *width_index = k;
        if (*width_index < 0)
            return ccq_fail(err, CCQ_ERR_USAGE, "quantize: --budget %s: wB needs B among --widths", v);
        return CCQ_OK;
    }
    return cmd_parse_int("quantize", "--budget", v, 1, INT64_MAX / 4, bytes, err);
}

/* quantize --budget: the float model quantized at every --widths width (the same start rule for
 * each; learned levels up to 4 bits, uniform above), then alloc_widths' choice of a width per layer. */
static ccq_status quantize_budget(const model *fm, const eval_args *a, model *qm, ccq_err *err)
{
    long long bytes;
    int wi;
    ccq_status st = parse_budget(a, &bytes, &wi, err);
    if (st) return st;
    data_split train;
    if ((st = data_load(&train, a->data, "train", -1, err))) return st;
    alloc_config ac = a->ac;
    model cand[ALLOC_MAX_WIDTHS];
    int made = 0;
    for (int k = 0; k < ac.n_widths && !st; k++) {
        quant_config qc = alloc_candidate_config(&a->qc, ac.widths[k]);
        gptq_start_info info;
        st = gptq_start(fm, &train, &qc, a->init, &cand[k], &info, err);
        if (st) break;
        made++;
        printf("quantize: w%d candidate: start %s, %lld bytes (%.1f s)\n", qc.wbits, gptq_start_name(info.chosen),
               (long long)model_deployed_bytes(&cand[k]), info.seconds);
        fflush(stdout);
    }
    if (!st) {
        ac.budget = wi >= 0 ? alloc_uniform_bytes(cand, ac.n_widths, wi) : (int64_t)bytes;
        alloc_report r;
        st = alloc_widths(cand, &ac, &train, qm, &r, err);
        if (!st) {
            printf("quantize: budget %lld bytes (every layer at w%d: %lld, at w%d: %lld); %d layers allocated on %d "
                   "train images, %lld evaluations, %.1f s\n",
                   (long long)ac.budget, ac.widths[0], (long long)r.bytes_min, ac.widths[ac.n_widths - 1],
                   (long long)r.bytes_max, r.layers, r.n_images, (long long)r.evals, r.seconds);
            printf("quantize: cross-entropy per image: every layer w%d %.5f, every layer w%d (the widest within the "
                   "budget) %.5f, knapsack %.5f, chosen %.5f; %lld bytes:",
                   ac.widths[ac.n_widths - 1], (double)r.fit_max / FIT_ONE / r.n_images, r.uniform_width,
                   (double)r.fit_uniform / FIT_ONE / r.n_images, (double)r.fit_dp / FIT_ONE / r.n_images,
                   (double)r.fit / FIT_ONE / r.n_images, (long long)r.bytes);
            for (int k = 0; k < ac.n_widths; k++)
                if (r.layer_count[k]) printf(" %d at w%d", r.layer_count[k], ac.widths[k]);
            printf("\n");
        }
    }
    for (int k = 0; k < made; k++) model_free(&cand[k]);
    data_free(&train);
    return st;
}

static int argmax_i32(const int32_t *v, int n)
{
    int best = 0;
    for (int i = 1; i < n; i++)
        if (v[i] > v[best]) best = i;
    return best;
}

static void json_str(const char *s)
{
    putchar('"');
    for (; *s; s++) {
        if (*s == '"' || *s == '\\')
            printf("\\%c", *s);
        else if ((unsigned char)*s < 0x20)
            printf("\\u%04x", *s);
        else
            putchar(*s);
    }
    putchar('"');
}

/* --act-zeros: every prunable node's threshold and the fraction of its output levels at the zero
 * point over n images, then the total; as JSON members when json. */
static void print_act_zeros(const model *m, const int64_t *zeros, int n, int json)
{
    int64_t z = 0, all = 0;
    int nodes = 0, pruned = 0;
    if (json) printf(", \"act_nodes\": [");
    for (int i = 0; i < m->n_nodes; i++) {
        if (!model_node_prunable(m, i)) continue;
        const int64_t numel = model_numel(m->nodes[i].shape) * n;
        const double f = numel ? (double)zeros[i] / (double)numel : 0.0;
        if (json) {
            printf("%s{\"node\": %d, \"name\": ", nodes ? ", " : "", i);
            json_str(m->nodes[i].name);
            printf(", \"op\": \"%s\", \"thresh\": %d, \"levels\": %lld, \"zeros\": %lld, \"zero_fraction\": %.6f}",
                   model_op_name(m->nodes[i].op), m->nodes[i].act_thresh, (long long)numel, (long long)zeros[i], f);
        } else {
            printf("act      node %d (%s %s): threshold %d, %.2f%% zeros\n", i, model_op_name(m->nodes[i].op),
                   m->nodes[i].name, m->nodes[i].act_thresh, 100.0 * f);
        }
        z += zeros[i], all += numel, nodes++, pruned += m->nodes[i].act_thresh > 0;
    }
    const double f = all ? (double)z / (double)all : 0.0;
    if (json)
        printf("], \"act_zero_fraction\": %.6f", f);
    else
        printf("act      %.2f%% zeros over the outputs of %d nodes with their own scale (%d with a threshold)\n",
               100.0 * f, nodes, pruned);
}

ccq_status cmd_eval(int argc, char **argv, ccq_err *err)
{
    eval_args a;
    int help = 0;
    model fm, qm, *m = &fm;
    data_split d;
    int have_q = 0;
    ccq_status st = parse("eval", argc, argv, &a, &help, err);
    if (st) return st;
    if (help) {
        eval_usage(stdout);
        return CCQ_OK;
    }
    if (a.save_logits) {
        const outpath_item in[2] = {{"MODEL.h5", a.model}, {"--data", a.data}}, out[1] = {{"--save-logits", a.save_logits}};
        if ((st = outpath_check(in, 2, out, 1, 0, err))) return st;
    }
    if ((st = model_load(&fm, a.model, err))) return st;
    const int integer = !a.is_float && (a.wbits_given || fm.quantized);
    if (!a.is_float && !integer) {
        model_free(&fm);
        return ccq_fail(err, CCQ_ERR_USAGE, "eval: %s is a float model: give --float or --wbits B", a.model);
    }
    if (fm.quantized && a.wbits_given) {
        model_free(&fm);
        return ccq_fail(err, CCQ_ERR_USAGE, "eval: %s is already quantized: drop --wbits", a.model);
    }
    if ((st = data_load(&d, a.data, a.split, a.limit, err))) {
        model_free(&fm);
        return st;
    }
    if ((st = data_check_fits(&d, &fm, err))) goto done;
    if (integer && !fm.quantized) {
        if ((st = quantize_from(&fm, &a, &qm, 0, err))) goto done;
        have_q = 1;
        m = &qm;
    }

    const int64_t per = (int64_t)d.c * d.h * d.w;
    float *all = a.save_logits ? ccq_malloc(sizeof(float) * (size_t)d.n * (size_t)m->classes) : NULL;
    int32_t *ilog = NULL;
    const char *isa_name = "float32 reference";
    float lscale = 0;
    int correct = 0;
    int64_t *zeros = NULL; /* --act-zeros */
    double t0 = 0, secs = 0;
    if (!integer) {
        fnet net;
        fnet_init(&net, m);
        t0 = ccq_seconds();
        for (int i = 0; i < d.n; i++) {
            const float *lg = fnet_forward(&net, d.images + per * i);
            correct += fnet_argmax(lg, m->classes) == d.labels[i];
            if (all) memcpy(all + (int64_t)i * m->classes, lg, sizeof(float) * (size_t)m->classes);
        }
        secs = ccq_seconds() - t0;
        fnet_free(&net);
    } else {
        qnet q;
        if ((st = qnet_init(&q, m, NULL, (int)a.mb, err))) {
            ccq_free(all);
            goto done;
        }
        isa_name = q.isa->name;
        lscale = q.logits_scale;
        ilog = ccq_malloc(sizeof(int32_t) * (size_t)d.n * (size_t)m->classes);
        if (a.act_zeros) zeros = q.node_zeros = ccq_calloc((size_t)m->n_nodes, sizeof(int64_t));
        t0 = ccq_seconds();
        qnet_forward(&q, d.images, d.n, ilog);
        secs = ccq_seconds() - t0;
        for (int i = 0; i < d.n; i++) correct += argmax_i32(ilog + (int64_t)i * m->classes, m->classes) == d.labels[i];
        if (all)
            for (int64_t k = 0; k < (int64_t)d.n * m->classes; k++) all[k] = (float)((double)ilog[k] * lscale);
        qnet_free(&q);
    }
    if (all) {
        st = save_logits(a.save_logits, all, ilog, lscale, d.n, m->classes, err);
        ccq_free(all);
        if (st) {
            ccq_free(ilog), ccq_free(zeros);
            goto done;
        }
    }
    ccq_free(ilog);
    /* The weight-bit description: "8" or "2 (first/last 8)" style, from the model's layers. */
    int wmin = 8, wmax = 2;
    for (int i = 0; integer && i < m->n_nodes; i++)
        if (m->nodes[i].op == MODEL_OP_CONV2D || m->nodes[i].op == MODEL_OP_LINEAR) {
            if (m->nodes[i].bits < wmin) wmin = m->nodes[i].bits;
            if (m->nodes[i].bits > wmax) wmax = m->nodes[i].bits;
        }
    const double acc = 100.0 * correct / d.n, ips = secs > 0 ? d.n / secs : 0.0;
    if (a.json) {
        printf("{\"model\": ");
        json_str(m->name);
        printf(", \"mode\": \"%s\", \"split\": \"%s\", \"images\": %d, \"correct\": %d, \"accuracy\": %.4f, "
               "\"seconds\": %.4f, \"images_per_s\": %.1f",
               integer ? "integer" : "float", a.split, d.n, correct, acc, secs, ips);
        if (integer) printf(", \"isa\": \"%s\", \"wbits_min\": %d, \"wbits_max\": %d, \"abits\": 8", isa_name, wmin, wmax);
        if (zeros) print_act_zeros(m, zeros, d.n, 1);
        printf("}\n");
    } else {
        printf("model    %s (%s), ", m->name, a.model);
        if (integer)
        {
            char widths[32] = "";
            for (int b = 2; b <= 8; b++)
                for (int i = 0; i < m->n_nodes; i++)
                    if (m->nodes[i].levels && m->nodes[i].bits == b) {
                        snprintf(widths + strlen(widths), sizeof widths - strlen(widths), "%s%d", *widths ? "/" : "", b);
                        break;
                    }
            printf("integer w%sa8%s, %s kernels\n", widths, wmax != wmin ? " (mixed widths)" : "", isa_name);
        }
        else
            printf("float32 reference\n");
        printf("data     %s [%s], %d images\n", a.data, a.split, d.n);
        printf("accuracy %.2f%% (%d/%d)\n", acc, correct, d.n);
        printf("speed    %.0f images/s (%.2f s, 1 thread)\n", ips, secs);
        if (zeros) print_act_zeros(m, zeros, d.n, 0);
    }
    ccq_free(zeros);
done:
    data_free(&d);
    if (have_q) model_free(&qm);
    model_free(&fm);
    return st;
}

ccq_status cmd_quantize(int argc, char **argv, ccq_err *err)
{
    eval_args a;
    int help = 0;
    model fm, qm;
    ccq_status st = parse("quantize", argc, argv, &a, &help, err);
    if (st) return st;
    if (help) {
        printf("usage: ccq quantize MODEL.h5 --data DATA.h5 (--wbits B | --budget BYTES|wB) -o OUT.h5 [--init I] "
               "[options]\n"
               "  writes the quantized model (folded float weights, levels, scales) for ccq eval\n%s"
               "  --budget BYTES|wB     a width per layer instead of --wbits: the layers' widths (of --widths) that\n"
               "                        minimise the integer network's cross-entropy on train images within\n"
               "                        BYTES deployed bytes (as ccq inspect counts them; wB: the size with\n"
               "                        every layer at B bits): per-layer sensitivities, an exact knapsack on\n"
               "                        them, then an EDA over the widths around its answer\n"
               "  --widths W,W,..       the widths a layer may take (default 2,3,4,8); with --first-last-8 the\n"
               "                        first and last layer stay at 8 bits\n"
               "  --alloc-images N      train images of the allocation's fitness, a seeded sample (default 2048)\n"
               "  --alloc-gens N        EDA generations of 16 allocations (default 24; 0: the knapsack's answer)\n"
               "  --seed S              the sample's and the EDA's seed (default 1)\n"
               "  --sparsity F          weight pruning: at least a fraction F (0 to 0.999) of each B-bit layer's\n"
               "                        levels zero, by magnitude; uniform levels only\n"
               "  --prune before|after  before (default): the smallest float weights are zeroed before the levels\n"
               "                        are chosen (GPTQ keeps them zero and compensates their error); after:\n"
               "                        the levels with the smallest real magnitude are zeroed after\n"
               "environment (GPTQ's speed and memory only, never its result): CCQ_GPTQ_THREADS=N forward-pass\n"
               "  threads (default all cores), CCQ_GPTQ_CACHE_MB=M room for layer inputs kept between layers\n"
               "  (default 2048; 0 recomputes each layer's prefix)\n",
               k_quant_help);
        return CCQ_OK;
    }
    if (!a.wbits_given && !a.budget) return ccq_fail(err, CCQ_ERR_USAGE, "quantize: missing --wbits B (or --budget)");
    if (!a.out) return ccq_fail(err, CCQ_ERR_USAGE, "quantize: missing -o OUT.h5");
    if (a.budget) {
        long long bytes;
        int wi;
        if ((st = parse_budget(&a, &bytes, &wi, err))) return st;
        if (a.qc.level_rule == QUANT_LEVELS_LEARNED && a.ac.widths[0] > MODEL_CODEBOOK_MAX_BITS)
            return ccq_fail(err, CCQ_ERR_USAGE, "quantize: --levels learned needs a width of at most %d bits in --widths",
                            MODEL_CODEBOOK_MAX_BITS);
    }
    const outpath_item in[2] = {{"MODEL.h5", a.model}, {"--data", a.data}}, out[1] = {{"-o", a.out}};
    if ((st = outpath_check(in, 2, out, 1, 0, err))) return st;
    if ((st = model_load(&fm, a.model, err))) return st;
    if (fm.quantized) {
        model_free(&fm);
        return ccq_fail(err, CCQ_ERR_USAGE, "quantize: %s is already quantized", a.model);
    }
    if (!(st = a.budget ? quantize_budget(&fm, &a, &qm, err) : quantize_from(&fm, &a, &qm, 1, err))) {
        st = model_save(&qm, a.out, err);
        if (!st && a.budget)
            printf("quantize: wrote %s (mixed widths, a8, %d nodes after folding, init %s)\n", a.out, qm.n_nodes,
                   gptq_start_name(a.init));
        else if (!st)
            printf("quantize: wrote %s (w%da8, %d nodes after folding, init %s)\n", a.out, a.qc.wbits, qm.n_nodes,
                   gptq_start_name(a.init));
        if (!st && a.qc.sparsity_pm) {
            int64_t nw = 0, nz = 0;
            for (int i = 0; i < qm.n_nodes; i++)
                if (qm.nodes[i].levels && qm.nodes[i].bits == a.qc.wbits)
                    nw += qm.nodes[i].n_weight, nz += prune_zeros(&qm.nodes[i]);
            printf("quantize: pruned %s: %lld of %lld levels of the w%d layers zero (%.2f%%; at least %.1f%% asked)\n",
                   a.qc.prune_after ? "after" : "before", (long long)nz, (long long)nw, a.qc.wbits,
                   nw ? 100.0 * (double)nz / (double)nw : 0.0, a.qc.sparsity_pm / 10.0);
        }
        model_free(&qm);
    }
    model_free(&fm);
    return st;
}
