/*
 * cmd_inspect.c: `ccq inspect FILE.h5`: summarise a ccq model file (layers,
 * shapes, parameters, MACs) or data file (splits, shapes, label counts).
 * It reads through the same validating loaders as every other command, so
 * a file inspect accepts is a file the engine accepts.
 */
#include <stdio.h>
#include <string.h>

#include "ccq/cmd.h"
#include "ccq/data.h"
#include "ccq/h5io.h"
#include "ccq/model.h"
#include "ccq/prune.h"

static void shape_str(char *buf, size_t n, model_shape s)
{
    if (s.rank == 1)
        snprintf(buf, n, "%d", s.c);
    else
        snprintf(buf, n, "%dx%dx%d", s.c, s.h, s.w);
}

static void inspect_model(const model *m)
{
    char sh[64], ins[64], attrs[96];
    printf("ccq model  %s (%s), format version %d\n", m->name, m->path, MODEL_VERSION);
    shape_str(sh, sizeof sh, m->input);
    printf("input      %s uint8, normalised (x/255 - mean) / std per channel:", sh);
    for (int c = 0; c < m->input.c; c++) printf(" mean %.4g std %.4g", (double)m->mean[c], (double)m->std[c]);
    if (m->quantized)
        printf("\nquantized  8-bit activations; input scale %.6g zero point %d; logits int32 at scale %.6g",
               (double)m->in_scale, m->in_zp, (double)m->nodes[m->output].act_scale);
    printf("\n%-5s %-13s %-24s %-9s %-11s %-28s %10s %12s%s\n", "node", "op", "name", "inputs", "output", "attrs",
           "params", "MACs", m->quantized ? "  act scale/zp" : "");
    for (int i = 0; i < m->n_nodes; i++) {
        const model_node *nd = &m->nodes[i];
        shape_str(sh, sizeof sh, nd->shape);
        ins[0] = '\0';
        for (int j = 0; j < nd->n_in; j++)
            snprintf(ins + strlen(ins), sizeof ins - strlen(ins), "%s%d", j ? "," : "", nd->in[j]);
        attrs[0] = '\0';
        if (nd->op == MODEL_OP_CONV2D || nd->op == MODEL_OP_MAXPOOL || nd->op == MODEL_OP_AVGPOOL)
            snprintf(attrs, sizeof attrs, "k%dx%d s%d,%d p%d,%d,%d,%d%s", nd->kernel[0], nd->kernel[1], nd->stride[0],
                     nd->stride[1], nd->pad[0], nd->pad[1], nd->pad[2], nd->pad[3],
                     nd->dilation[0] > 1 || nd->dilation[1] > 1 ? " dil" : nd->ceil_mode ? " ceil" : "");
        {
            char e[64] = "";
            const int r = nd->shape.rank == 3 ? 3 : 1;
            if (nd->op == MODEL_OP_CONV2D && nd->groups > 1) snprintf(e, sizeof e, " g%d", nd->groups);
            if (nd->op == MODEL_OP_ACT) snprintf(e, sizeof e, "%s", model_act_name(nd->fn));
            if (nd->op == MODEL_OP_CONCAT) snprintf(e, sizeof e, "axis %d", nd->axis);
            if (nd->op == MODEL_OP_PAD)
                snprintf(e, sizeof e, "pads %d,%d,%d,%d,%d,%d", nd->pads[0], nd->pads[1], nd->pads[2], nd->pads[3],
                         nd->pads[4], nd->pads[5]);
            if (nd->op == MODEL_OP_SLICE)
                snprintf(e, sizeof e, "start %d,%d,%d step %d,%d,%d", nd->start[0], nd->start[1], nd->start[2],
                         nd->step[0], nd->step[1], nd->step[2]);
            if (r == 1 && (nd->op == MODEL_OP_PAD || nd->op == MODEL_OP_SLICE))
                snprintf(e, sizeof e, nd->op == MODEL_OP_PAD ? "pads %d,%d" : "start %d step %d",
                         nd->op == MODEL_OP_PAD ? nd->pads[0] : nd->start[0],
                         nd->op == MODEL_OP_PAD ? nd->pads[3] : nd->step[0]);
            if (nd->has_clip) snprintf(e + strlen(e), sizeof e - strlen(e), "%s[%g,%g]", nd->op == MODEL_OP_CLIP ? "" : " +clip",
                                       (double)nd->clip[0], (double)nd->clip[1]);
            strncat(attrs, e, sizeof attrs - strlen(attrs) - 1);
        }
        if (nd->relu) strncat(attrs, " +relu", sizeof attrs - strlen(attrs) - 1);
        if (m->quantized && nd->bits) {
            char b[16];
            snprintf(b, sizeof b, " w%d%s", nd->bits, nd->codebook ? " learned" : "");
            strncat(attrs, b, sizeof attrs - strlen(attrs) - 1);
        }
        printf("%-5d %-13s %-24.24s %-9s %-11s %-28s %10lld %12lld", i, model_op_name(nd->op), nd->name, ins, sh,
               attrs, (long long)model_node_params(m, i), (long long)model_node_macs(m, i));
        if (m->quantized) printf("  %.4g/%d", (double)nd->act_scale, nd->act_zp);
        printf("\n");
    }
    printf("total      %d nodes, %lld parameters, %lld MACs per image, %d classes (output node %d)\n", m->n_nodes,
           (long long)model_params(m), (long long)model_macs(m), m->classes, m->output);
    if (m->quantized) {
        int64_t wb = 0;
        for (int i = 0; i < m->n_nodes; i++) wb += model_node_weight_bytes(&m->nodes[i]);
        printf("deployed   %lld bytes (%lld of weight levels and codebooks; scales, biases and activation "
               "parameters the rest)\n", (long long)model_deployed_bytes(m), (long long)wb);
        int64_t nw = 0, nz = 0;
        int nt = 0;
        for (int i = 0; i < m->n_nodes; i++) {
            if (m->nodes[i].levels) nw += m->nodes[i].n_weight, nz += prune_zeros(&m->nodes[i]);
            nt += m->nodes[i].act_thresh > 0;
        }
        printf("sparsity   %lld of %lld weight levels zero (%.2f%%); %d nodes with an activation threshold\n",
               (long long)nz, (long long)nw, nw ? 100.0 * (double)nz / (double)nw : 0.0, nt);
    }
}

static ccq_status inspect_data(const char *path, ccq_err *err)
{
    static const char *const splits[] = {"train", "test"};
    printf("ccq data   %s, format version %d\n", path, DATA_VERSION);
    for (size_t s = 0; s < CCQ_ARRAY_LEN(splits); s++) {
        data_split d;
        ccq_status st = data_load(&d, path, splits[s], -1, err);
        if (st) return st;
        printf("%-6s     %d images %dx%dx%d uint8, %d classes, label counts:", splits[s], d.n, d.c, d.h, d.w,
               d.classes);
        int64_t *cnt = ccq_calloc((size_t)d.classes, sizeof(int64_t));
        for (int i = 0; i < d.n; i++) cnt[d.labels[i]]++;
        for (int k = 0; k < d.classes; k++) printf(" %lld", (long long)cnt[k]);
        printf("\n");
        ccq_free(cnt);
        data_free(&d);
    }
    return CCQ_OK;
}

ccq_status cmd_inspect(int argc, char **argv, ccq_err *err)
{
    const char *path = NULL;
    for (int i = 0; i < argc; i++) {
        if (strcmp(argv[i], "--help") == 0 || strcmp(argv[i], "-h") == 0) {
            printf("usage: ccq inspect FILE.h5   (a ccq model or data file)\n");
            return CCQ_OK;
        }
        if (argv[i][0] == '-' && argv[i][1] != '\0')
            return ccq_fail(err, CCQ_ERR_USAGE, "inspect: unknown flag '%s'", argv[i]);
        if (path) return ccq_fail(err, CCQ_ERR_USAGE, "inspect: unexpected argument '%s'", argv[i]);
        path = argv[i];
    }
    if (!path) return ccq_fail(err, CCQ_ERR_USAGE, "inspect: missing FILE.h5");

    h5io_file f;
    char fmt[32];
    ccq_status st = h5io_file_open(&f, path, err);
    if (st) return st;
    if (H5Aexists_by_name(f.id, "/", "format", H5P_DEFAULT) <= 0) {
        H5Fclose(f.id);
        return ccq_fail(err, CCQ_ERR_FORMAT, "%s: not a ccq file (no format attribute)", path);
    }
    st = h5io_attr_str(&f, "/", "format", fmt, sizeof fmt, err);
    H5Fclose(f.id);
    if (st) return st;
    if (strcmp(fmt, MODEL_FORMAT) == 0) {
        model m;
        if ((st = model_load(&m, path, err))) return st;
        inspect_model(&m);
        model_free(&m);
        return CCQ_OK;
    }
    if (strcmp(fmt, DATA_FORMAT) == 0) return inspect_data(path, err);
    return ccq_fail(err, CCQ_ERR_FORMAT, "%s: unknown ccq file format '%s'", path, fmt);
}
