/*
 * cmd_bench.c: `ccq bench`: throughput of the integer forward pass on a
 * fixed batch of test images, per ISA, with an optional per-layer profile
 * and the machine's int8 multiply-accumulate ceiling for the same ISA.
 * It measures; it asserts nothing (benchmarks are never tests).
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "ccq/cmd.h"
#include "ccq/data.h"
#include "ccq/qnet.h"
#include "ccq/quant.h"

/* Per conv/linear layer: one generation (the context and L individuals) evaluated from that layer
 * on (the prefix once, then L + 1 forward passes from the cut) against L + 1 whole forward passes
 * (t_full: the best whole pass of the batch). Best of a few repetitions each. */
static void bench_cuts(qnet *q, const model *m, const data_split *d, int L, double t_full, int json)
{
    qnet_cache c;
    qnet_cache_init(&c, q, d->n);
    int32_t *lg = ccq_malloc(sizeof(int32_t) * (size_t)d->n * m->classes);
    const double full = (double)(L + 1) * t_full;
    if (json) printf("{\"cuts\": [");
    else printf("generation of %d individuals + context on %d images: whole network %.3f s (%.1f evaluations/s)\n", L,
                d->n, full, (L + 1) / full);
    int first = 1;
    for (int i = 0; i < m->n_nodes; i++) {
        if (!m->nodes[i].levels) continue;
        double best = 1e30;
        for (int rep = 0; rep < 3; rep++) {
            const double t0 = ccq_seconds();
            qnet_cache_fill(q, &c, i, d->images, d->n);
            for (int k = 0; k <= L; k++) qnet_forward_cached(q, &c, 0, d->n, lg);
            const double dt = ccq_seconds() - t0;
            if (dt < best) best = dt;
        }
        const size_t per = qnet_cache_bytes_per_image(q, i);
        if (json)
            printf("%s{\"node\": %d, \"name\": \"%s\", \"weights\": %lld, \"seconds\": %.4f, \"seconds_full\": %.4f, "
                   "\"speedup\": %.3f, \"cache_bytes_per_image\": %zu}",
                   first ? "" : ", ", i, m->nodes[i].name, (long long)m->nodes[i].n_weight, best, full, full / best, per);
        else
            printf("  %3d %-24.24s %7lld weights: %.3f s, %.1f evaluations/s, %.2fx, cache %zu B/image\n", i,
                   m->nodes[i].name, (long long)m->nodes[i].n_weight, best, (L + 1) / best, full / best, per);
        first = 0;
    }
    if (json) printf("], \"individuals\": %d, \"images\": %d, \"cache_bytes\": %zu}\n", L, d->n, c.bytes);
    ccq_free(lg);
    qnet_cache_free(&c);
}

ccq_status cmd_bench(int argc, char **argv, ccq_err *err)
{
    const char *mpath = NULL, *dpath = NULL;
    long long wbits = 0, batch = 256, mb = 8, ms = 2000, cuts = 0;
    int layers = 0, json = 0, ceiling = 0;
    ccq_status st;
    for (int i = 0; i < argc; i++) {
        const char *s = argv[i];
        if (strcmp(s, "--help") == 0 || strcmp(s, "-h") == 0) {
            printf("usage: ccq bench MODEL.h5 --data DATA.h5 [--wbits B] [--batch N] [--mb N] [--ms T] [--layers]\n"
                   "                 [--ceiling] [--cuts L] [--json]\n"
                   "  times qnet_forward on the first N test images (default 256) for about T ms (default 2000);\n"
                   "  --layers adds per-node time; --ceiling measures the ISA's u8 x s8 MAC ceiling;\n"
                   "  --cuts L times, for a subcomponent in each conv/linear layer, a generation of L individuals\n"
                   "  and the context (L + 1 evaluations of the batch) evaluated incrementally (the prefix once,\n"
                   "  L + 1 forward passes from the layer) against L + 1 whole forward passes.\n"
                   "  CCQ_ISA selects the kernels; CCQ_DEPTHWISE=gemm runs depthwise convs as grouped GEMMs.\n");
            return CCQ_OK;
        }
        if (strcmp(s, "--layers") == 0) {
            layers = 1;
        } else if (strcmp(s, "--json") == 0) {
            json = 1;
        } else if (strcmp(s, "--ceiling") == 0) {
            ceiling = 1;
        } else if (!strcmp(s, "--data") || !strcmp(s, "--wbits") || !strcmp(s, "--batch") || !strcmp(s, "--mb") ||
                   !strcmp(s, "--ms") || !strcmp(s, "--cuts")) {
            if (i + 1 >= argc) return ccq_fail(err, CCQ_ERR_USAGE, "bench: %s needs a value", s);
            const char *v = argv[++i];
            if (!strcmp(s, "--data")) dpath = v;
            else if (!strcmp(s, "--wbits") && (st = cmd_parse_int("bench", s, v, 2, 8, &wbits, err))) return st;
            else if (!strcmp(s, "--batch") && (st = cmd_parse_int("bench", s, v, 1, 100000, &batch, err))) return st;
            else if (!strcmp(s, "--mb") && (st = cmd_parse_int("bench", s, v, 1, 4096, &mb, err))) return st;
            else if (!strcmp(s, "--ms") && (st = cmd_parse_int("bench", s, v, 1, 3600000, &ms, err))) return st;
            else if (!strcmp(s, "--cuts") && (st = cmd_parse_int("bench", s, v, 1, 4096, &cuts, err))) return st;
        } else if (s[0] == '-') {
            return ccq_fail(err, CCQ_ERR_USAGE, "bench: unknown flag '%s'", s);
        } else if (!mpath) {
            mpath = s;
        } else {
            return ccq_fail(err, CCQ_ERR_USAGE, "bench: unexpected argument '%s'", s);
        }
    }
    if (!mpath || !dpath) return ccq_fail(err, CCQ_ERR_USAGE, "bench: needs MODEL.h5 and --data DATA.h5");

    model fm, qm, *m = &fm;
    data_split d, calib;
    int have_q = 0;
    if ((st = model_load(&fm, mpath, err))) return st;
    if ((st = data_load(&d, dpath, "test", batch, err))) {
        model_free(&fm);
        return st;
    }
    if ((st = data_check_fits(&d, &fm, err))) goto done;
    if (!fm.quantized) {
        if (!wbits) {
            st = ccq_fail(err, CCQ_ERR_USAGE, "bench: %s is a float model: give --wbits B", mpath);
            goto done;
        }
        quant_config qc;
        quant_config_default(&qc);
        qc.wbits = (int)wbits;
        if ((st = data_load(&calib, dpath, "train", qc.calib_images, err))) goto done;
        st = quant_model(&fm, &calib, &qc, &qm, err);
        data_free(&calib);
        if (st) goto done;
        have_q = 1;
        m = &qm;
    }
    qnet q;
    if ((st = qnet_init(&q, m, NULL, (int)mb, err))) goto done;
    int32_t *lg = ccq_malloc(sizeof(int32_t) * (size_t)d.n * m->classes);
    qnet_forward(&q, d.images, d.n, lg); /* warm-up */
    double *ns = layers ? ccq_calloc((size_t)m->n_nodes, sizeof(double)) : NULL;
    q.node_seconds = ns;
    long reps = 0;
    const double t0 = ccq_seconds();
    double secs, best = 1e30;
    do {
        const double t1 = ccq_seconds();
        qnet_forward(&q, d.images, d.n, lg);
        const double dt = ccq_seconds() - t1;
        if (dt < best) best = dt;
        reps++;
        secs = ccq_seconds() - t0;
    } while (secs * 1000.0 < (double)ms);
    /* Reported: the best batch (the statistic bench_torch.py uses for PyTorch); the mean is kept too. */
    const double ips = d.n / best, ips_mean = (double)reps * d.n / secs, macs = (double)model_macs(m);
    const double peak = ceiling && q.isa->peak_macs ? q.isa->peak_macs(0.5) : 0.0;
    if (json) {
        printf("{\"model\": \"%s\", \"isa\": \"%s\", \"batch\": %d, \"mb\": %lld, \"images_per_s\": %.1f, "
               "\"images_per_s_mean\": %.1f, \"repetitions\": %ld, \"macs_per_image\": %.0f, \"gmacs\": %.3f, "
               "\"peak_gmacs\": %.3f",
               m->name, q.isa->name, d.n, mb, ips, ips_mean, reps, macs, ips * macs * 1e-9, peak * 1e-9);
        if (ns) {
            printf(", \"layers\": [");
            double tot = 0;
            for (int i = 0; i < m->n_nodes; i++) tot += ns[i];
            for (int i = 0; i < m->n_nodes; i++)
                printf("%s{\"node\": %d, \"op\": \"%s\", \"name\": \"%s\", \"share\": %.5f, \"gmacs\": %.3f}", i ? ", " : "",
                       i, model_op_name(m->nodes[i].op), m->nodes[i].name, ns[i] / tot,
                       ns[i] > 0 ? (double)model_node_macs(m, i) * reps * d.n / ns[i] * 1e-9 : 0.0);
            printf("]");
        }
        printf("}\n");
    } else {
        printf("%s, %s kernels, batch %d (micro-batch %lld): %.0f images/s (best batch; mean %.0f), %.2f GMAC/s",
               m->name, q.isa->name, d.n, mb, ips, ips_mean, ips * macs * 1e-9);
        if (peak > 0) printf(" (%.1f%% of the %.1f GMAC/s ceiling)", 100.0 * ips * macs / peak, peak * 1e-9);
        printf("\n");
        for (int i = 0; ns && i < m->n_nodes; i++)
            printf("  %3d %-13s %-24.24s %6.2f ms/batch %8.2f GMAC/s\n", i, model_op_name(m->nodes[i].op),
                   m->nodes[i].name, 1000.0 * ns[i] / reps,
                   ns[i] > 0 ? (double)model_node_macs(m, i) * reps * d.n / ns[i] * 1e-9 : 0.0);
    }
    if (cuts) bench_cuts(&q, m, &d, (int)cuts, best, json);
    ccq_free(ns);
    ccq_free(lg);
    qnet_free(&q);
done:
    if (have_q) model_free(&qm);
    data_free(&d);
    model_free(&fm);
    return st;
}
