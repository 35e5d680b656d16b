#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include "ccq/model.h"
#include "ccq/quant.h"
#include "ccq/qnet.h"
#include "ccq/data.h"
#include "ccq/rng.h"
int main(int argc, char **argv) {
    ccq_err err; model f, q; data_split tr;
    int bits = atoi(argv[3]); int target = atoi(argv[4]); int nchg = atoi(argv[5]);
    if (model_load(&f, argv[1], &err)) { printf("load\n"); return 1; }
    if (data_load(&tr, argv[2], "train", 256, &err)) { printf("data\n"); return 1; }
    quant_config c; quant_config_default(&c); c.wbits = bits; c.calib_images = 256;
    if (quant_model(&f, &tr, &c, &q, &err)) { printf("quant %s\n", err.msg); return 1; }
    int N = 64; qnet net; qnet_init(&net, &q, NULL, N, &err);
    int32_t *lg = malloc(sizeof(int32_t) * N * 10);
    qnet_forward(&net, tr.images, N, lg);
    int nn = q.n_nodes;
    uint8_t **ref = calloc(nn, sizeof(*ref)); int64_t *sz = calloc(nn, 8);
    for (int i = 0; i < nn; i++) { sz[i] = (int64_t)N * model_numel(q.nodes[i].shape); ref[i] = malloc(sz[i]); memcpy(ref[i], net.act[i], sz[i]); }
    model_node *nd = &q.nodes[target];
    int64_t nw = nd->n_weight; int wmax = model_node_wmax(nd);
    srand(7);
    for (int k = 0; k < nchg; k++) { int64_t w = rand() % nw; int v = nd->levels[w] + ((rand() & 1) ? 1 : -1); if (v > wmax) v = wmax - 1; if (v < -wmax) v = -wmax + 1; nd->levels[w] = v; qnet_set_level(&net, target, w, v); }
    qnet_forward(&net, tr.images, N, lg);
    for (int i = 0; i < nn; i++) { int64_t d = 0; for (int64_t j = 0; j < sz[i]; j++) d += ref[i][j] != net.act[i][j];
        printf("%2d %-40s %8lld numel %5.1f%% changed\n", i, q.nodes[i].name, (long long)sz[i]/N, 100.0*d/sz[i]); }
    return 0;
}
