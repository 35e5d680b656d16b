/*
 * test_qcache.c: the integer engine's forward from a cut and in-place level
 * patching, on a real model, against the full forward pass, bit for bit.
 *
 * For the model quantized at 2 bits (round to nearest, the search's usual
 * start) and n test images:
 *   - for every cut (start node 0 .. n_nodes - 1): qnet_cache_fill +
 *     qnet_forward_cached give exactly qnet_forward's logits, also for a
 *     window [off, off + k) of the cached images;
 *   - after random level changes in the nodes at or after the cut
 *     (qnet_set_level, values over the whole 8-bit range so that AVX2's
 *     layout change is reached), the cached forward equals the full forward
 *     of a network built afresh from a model holding the same levels;
 *   - the cut of ResNet-style skips: a cut inside a residual block holds the
 *     block's input as well.
 * The ISA is the one CCQ_ISA selects (ctest runs each).
 *
 * usage: test_qcache MODEL.h5 DATA.h5 BITS
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "ccq/data.h"
#include "ccq/kern.h"
#include "ccq/model.h"
#include "ccq/qnet.h"
#include "ccq/quant.h"
#include "ccq/rng.h"

static int g_fail;
#define CHECK(cond, ...)                                                                                          \
    do {                                                                                                          \
        if (!(cond)) {                                                                                            \
            fprintf(stderr, "test_qcache: FAIL: " __VA_ARGS__);                                                   \
            fputc('\n', stderr);                                                                                  \
            g_fail = 1;                                                                                           \
        }                                                                                                         \
    } while (0)

int main(int argc, char **argv)
{
    if (argc != 4) {
        fprintf(stderr, "usage: test_qcache MODEL.h5 DATA.h5 BITS\n");
        return 2;
    }
    ccq_err err;
    model fm, m;
    data_split d;
    const kern_isa *isa;
    if (kern_select(&isa, &err)) {
        printf("test_qcache: %s: skipped\n", err.msg);
        return 77;
    }
    if (model_load(&fm, argv[1], &err) || data_load(&d, argv[2], "test", 16, &err)) {
        fprintf(stderr, "test_qcache: %s\n", err.msg);
        return 1;
    }
    quant_config qc;
    quant_config_default(&qc);
    qc.wbits = atoi(argv[3]);
    qc.calib_images = 16;
    if (quant_model(&fm, &d, &qc, &m, &err)) {
        fprintf(stderr, "test_qcache: %s\n", err.msg);
        return 1;
    }
    const int n = d.n, classes = m.classes, mb = 5; /* micro-batches that do not divide n */
    qnet q;
    if (qnet_init(&q, &m, isa, mb, &err)) {
        fprintf(stderr, "test_qcache: %s\n", err.msg);
        return 1;
    }
    int32_t *ref = malloc(sizeof(int32_t) * (size_t)n * classes), *got = malloc(sizeof(int32_t) * (size_t)n * classes);
    qnet_forward(&q, d.images, n, ref);
    qnet_cache c;
    qnet_cache_init(&c, &q, n);
    int cuts_with_skip = 0;
    for (int s = 0; s < m.n_nodes; s++) {
        qnet_cache_fill(&q, &c, s, d.images, n);
        int held = 0;
        for (int j = -1; j < m.n_nodes; j++) held += c.t[j + 1] != NULL;
        cuts_with_skip += held > 1;
        memset(got, 0x5A, sizeof(int32_t) * (size_t)n * classes);
        qnet_forward_cached(&q, &c, 0, n, got);
        CHECK(!memcmp(got, ref, sizeof(int32_t) * (size_t)n * classes), "%s: cut at node %d: logits differ",
              isa->name, s);
        qnet_forward_cached(&q, &c, 7, 8, got);
        CHECK(!memcmp(got, ref + (size_t)7 * classes, sizeof(int32_t) * 8 * (size_t)classes),
              "%s: cut at node %d, images [7, 15): logits differ", isa->name, s);
        /* the full forward still works after a cached one (buffers restored) */
        qnet_forward(&q, d.images, n, got);
        CHECK(!memcmp(got, ref, sizeof(int32_t) * (size_t)n * classes), "%s: full forward after cut %d differs",
              isa->name, s);
    }
    int resnet = 0;
    for (int i = 0; i < m.n_nodes; i++) resnet |= m.nodes[i].op == MODEL_OP_ADD;
    if (resnet) CHECK(cuts_with_skip > 0, "no cut holds two tensors in a model with skips");

    /* level changes after the cut: patched in place vs a network built from scratch */
    rng_pcg32 r;
    rng_init(&r, 20261202, 1);
    for (int rep = 0; rep < 12; rep++) {
        int layers[64], nl = 0;
        for (int i = 0; i < m.n_nodes && nl < 64; i++)
            if (m.nodes[i].levels) layers[nl++] = i;
        const int first = layers[rng_bounded(&r, (uint32_t)nl)];
        qnet_cache_fill(&q, &c, first, d.images, n);
        for (int t = 0; t < 40; t++) {
            const int node = layers[rng_bounded(&r, (uint32_t)nl)];
            if (node < first) continue;
            model_node *nd = &m.nodes[node];
            const int64_t w = (int64_t)rng_bounded(&r, (uint32_t)nd->n_weight);
            /* 8-bit values now and then (a layer may hold them in the search's 8-bit first/last layers) */
            const int qmax = rep % 3 == 2 ? 127 : model_qmax(nd->bits);
            const int8_t v = (int8_t)((int)rng_bounded(&r, (uint32_t)(2 * qmax + 1)) - qmax);
            nd->levels[w] = v;
            qnet_set_level(&q, node, w, v);
        }
        qnet fresh;
        if (qnet_init(&fresh, &m, isa, 3, &err)) {
            fprintf(stderr, "test_qcache: %s\n", err.msg);
            return 1;
        }
        qnet_forward(&fresh, d.images, n, ref);
        qnet_forward_cached(&q, &c, 0, n, got);
        CHECK(!memcmp(got, ref, sizeof(int32_t) * (size_t)n * classes),
              "%s: rep %d: patched levels after node %d: cached forward differs from a fresh network", isa->name,
              rep, first);
        qnet_forward(&q, d.images, n, got);
        CHECK(!memcmp(got, ref, sizeof(int32_t) * (size_t)n * classes),
              "%s: rep %d: patched levels: full forward differs from a fresh network", isa->name, rep);
        qnet_free(&fresh);
    }
    printf("test_qcache: %s, %s at %s bits: %d cuts, cache %.1f KiB per image at most: %s\n", isa->name, argv[1],
           argv[3], m.n_nodes, (double)c.bytes / n / 1024.0, g_fail ? "FAILED" : "ok");
    qnet_cache_free(&c);
    qnet_free(&q);
    free(ref), free(got);
    model_free(&m), model_free(&fm);
    data_free(&d);
    return g_fail;
}
