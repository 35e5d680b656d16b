/*
 * cmd_eval.c: `ccq eval MODEL.h5 --data DATA.h5 --float ...`: accuracy and
 * speed of the float reference forward pass on one split, optionally saving
 * the logits. Integer evaluation is not part of this subcommand yet.
 */
#include <stdio.h>
#include <string.h>

#include "ccq/cmd.h"
#include "ccq/data.h"
#include "ccq/fnet.h"
#include "ccq/h5io.h"
#include "ccq/model.h"

typedef struct {
    const char *model;
    const char *data;
    const char *split;
    const char *save_logits;
    long long limit;
    int is_float;
    int json;
} eval_args;

static void eval_usage(FILE *out)
{
    fprintf(out, "usage: ccq eval MODEL.h5 --data DATA.h5 --float [options]\n"
                 "  --data DATA.h5        ccq data file (required)\n"
                 "  --float               evaluate the float reference forward pass (required)\n"
                 "  --split test|train    split to evaluate (default test)\n"
                 "  --limit N             first N images only (default all)\n"
                 "  --json                print one JSON object instead of text\n"
                 "  --save-logits OUT.h5  write the logits [N, classes] as float32 dataset /logits\n");
}

static ccq_status parse(int argc, char **argv, eval_args *a, int *help, ccq_err *err)
{
    memset(a, 0, sizeof *a);
    a->split = "test";
    a->limit = -1;
    for (int i = 0; i < argc; i++) {
        const char *s = argv[i];
        const int has_val = i + 1 < argc;
        if (strcmp(s, "--help") == 0 || strcmp(s, "-h") == 0) {
            *help = 1;
            return CCQ_OK;
        } else if (strcmp(s, "--float") == 0) {
            a->is_float = 1;
        } else if (strcmp(s, "--json") == 0) {
            a->json = 1;
        } else if (strcmp(s, "--data") == 0 || strcmp(s, "--split") == 0 || strcmp(s, "--limit") == 0 ||
                   strcmp(s, "--save-logits") == 0) {
            if (!has_val) return ccq_fail(err, CCQ_ERR_USAGE, "eval: %s needs a value", s);
            const char *v = argv[++i];
            if (strcmp(s, "--data") == 0) a->data = v;
            else if (strcmp(s, "--split") == 0) a->split = v;
            else if (strcmp(s, "--save-logits") == 0) a->save_logits = v;
            else {
                ccq_status st = cmd_parse_int("eval", s, v, 1, INT32_MAX, &a->limit, err);
                if (st) return st;
            }
        } else if (s[0] == '-' && s[1] != '\0') {
            return ccq_fail(err, CCQ_ERR_USAGE, "eval: unknown flag '%s' (see ccq eval --help)", s);
        } else if (!a->model) {
            a->model = s;
        } else {
            return ccq_fail(err, CCQ_ERR_USAGE, "eval: unexpected argument '%s'", s);
        }
    }
    if (!a->model) return ccq_fail(err, CCQ_ERR_USAGE, "eval: missing MODEL.h5 (see ccq eval --help)");
    if (!a->data) return ccq_fail(err, CCQ_ERR_USAGE, "eval: missing --data DATA.h5");
    if (!a->is_float)
        return ccq_fail(err, CCQ_ERR_USAGE, "eval: missing --float (the float reference is the only evaluator so far)");
    if (strcmp(a->split, "test") != 0 && strcmp(a->split, "train") != 0)
        return ccq_fail(err, CCQ_ERR_USAGE, "eval: --split must be test or train, got '%s'", a->split);
    return CCQ_OK;
}

static ccq_status save_logits(const char *path, const float *logits, int n, int classes, ccq_err *err)
{
    h5io_file f;
    hsize_t dims[2] = {(hsize_t)n, (hsize_t)classes};
    ccq_status st = h5io_atomic_create(&f, path, err);
    if (st) return st;
    if ((st = h5io_write_dset(&f, "/", "logits", H5T_IEEE_F32LE, H5T_NATIVE_FLOAT, 2, dims, logits, err))) {
        h5io_atomic_abort(&f);
        return st;
    }
    return h5io_atomic_commit(&f, path, err);
}

ccq_status cmd_eval(int argc, char **argv, ccq_err *err)
{
    eval_args a;
    int help = 0;
    model m;
    data_split d;
    fnet net;
    ccq_status st = parse(argc, argv, &a, &help, err);
    if (st) return st;
    if (help) {
        eval_usage(stdout);
        return CCQ_OK;
    }
    if ((st = model_load(&m, a.model, err))) return st;
    if ((st = data_load(&d, a.data, a.split, a.limit, err))) {
        model_free(&m);
        return st;
    }
    if ((st = data_check_fits(&d, &m, err))) goto done;

    fnet_init(&net, &m);
    const int64_t per = (int64_t)d.c * d.h * d.w;
    float *all = a.save_logits ? ccq_malloc(sizeof(float) * (size_t)d.n * (size_t)m.classes) : NULL;
    int correct = 0;
    double t0 = ccq_seconds();
    for (int i = 0; i < d.n; i++) {
        const float *lg = fnet_forward(&net, d.images + per * i);
        correct += fnet_argmax(lg, m.classes) == d.labels[i];
        if (all) memcpy(all + (int64_t)i * m.classes, lg, sizeof(float) * (size_t)m.classes);
    }
    double secs = ccq_seconds() - t0;
    fnet_free(&net);
    if (all) {
        st = save_logits(a.save_logits, all, d.n, m.classes, err);
        ccq_free(all);
        if (st) goto done;
    }
    const double acc = 100.0 * correct / d.n, ips = secs > 0 ? d.n / secs : 0.0;
    if (a.json) {
        printf("{\"model\": \"%s\", \"mode\": \"float\", \"split\": \"%s\", \"images\": %d, \"correct\": %d, "
               "\"accuracy\": %.4f, \"seconds\": %.4f, \"images_per_s\": %.1f}\n",
               m.name, a.split, d.n, correct, acc, secs, ips);
    } else {
        printf("model    %s (%s), float32 reference\n", m.name, a.model);
        printf("data     %s [%s], %d images\n", a.data, a.split, d.n);
        printf("accuracy %.2f%% (%d/%d)\n", acc, correct, d.n);
        printf("speed    %.0f images/s (%.2f s, 1 thread)\n", ips, secs);
    }
done:
    data_free(&d);
    model_free(&m);
    return st;
}
