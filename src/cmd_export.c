/*
 * cmd_export.c: `ccq export MODEL.h5 --format c OUT_DIR [--name NAME]`: a
 * quantized model file as C99 source (cexport_), with its flash and RAM
 * footprint on stdout; `ccq export MODEL.h5 --format onnx OUT.onnx
 * [--input uint8|float]`: the same model as an ONNX QDQ file
 * (onnxexport_). The output paths are checked before the model is read,
 * and nothing is written unless the whole export succeeded.
 */
#include <errno.h>
#include <libgen.h>
#include <stdio.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "ccq/cexport.h"
#include "ccq/cmd.h"
#include "ccq/model.h"
#include "ccq/onnxexport.h"
#include "ccq/outpath.h"

static void export_usage(FILE *out)
{
    fprintf(out, "usage: ccq export MODEL.h5 --format c OUT_DIR [--name NAME]\n"
                 "       ccq export MODEL.h5 --format onnx OUT.onnx [--input uint8|float]\n"
                 "  MODEL.h5     a quantized model file (ccq quantize, ccq search)\n"
                 "  --format c   C99 source: OUT_DIR/NAME.c and OUT_DIR/NAME.h with\n"
                 "               void NAME_run(const uint8_t *image, int32_t *logits), bit-identical to ccq eval\n"
                 "  OUT_DIR      created if missing (its parent must exist); files of the same name are replaced\n"
                 "  --name NAME  C identifier prefixing the generated names (default: MODEL's file name,\n"
                 "               made an identifier); compile with -DNAME_FAST (upper case) for the faster\n"
                 "               path with unpacked levels\n"
                 "  --format onnx  ONNX opset 13 in QDQ form: int8 levels and float32 scales per output channel,\n"
                 "               uint8 activations, int32 biases, act tables as Gather; an existing OUT.onnx is replaced\n"
                 "  --input uint8  (default) the graph input is the raw uint8 image [N, C, H, W]\n"
                 "  --input float  the graph input is the normalised float image (pixel/255 - mean) / std\n");
}

/* The default name: the model file's base name without its extension, as an identifier. */
static void default_name(const char *mpath, char *name, size_t n)
{
    const char *b = strrchr(mpath, '/');
    b = b ? b + 1 : mpath;
    size_t k = 0;
    if (!((*b >= 'a' && *b <= 'z') || (*b >= 'A' && *b <= 'Z'))) name[k++] = 'm';
    if (strncmp(b, "cq_", 3) == 0 || strncmp(b, "cq.", 3) == 0) name[k++] = 'm';
    for (; *b && *b != '.' && k + 1 < n && k < 48; b++) {
        const char c = *b;
        name[k++] = (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9') ? c : '_';
    }
    name[k] = '\0';
    if (!cexport_name_ok(name)) snprintf(name, n, "model");
}

/* The quantized model to export; a float model is a usage error. */
static ccq_status load_quantized(model *m, const char *mpath, ccq_err *err)
{
    ccq_status st = model_load(m, mpath, err);
    if (st) return st;
    if (!m->quantized) {
        model_free(m);
        return ccq_fail(err, CCQ_ERR_USAGE, "export: %s is a float model: quantize it first (ccq quantize ... -o Q.h5)", mpath);
    }
    return CCQ_OK;
}

/* 1 if a and b are the same file. */
static int same_file(const struct stat *a, const struct stat *b) { return a->st_dev == b->st_dev && a->st_ino == b->st_ino; }

/* Before any work: OUT_DIR is a writable directory or can be made in a writable one, and none of
 * the outputs is the input. */
static ccq_status check_outputs(const char *mpath, const char *dir, const char *name, ccq_err *err)
{
    struct stat sm, sd, so;
    const int have_model = stat(mpath, &sm) == 0;
    if (stat(dir, &sd) == 0) {
        if (have_model && same_file(&sm, &sd))
            return ccq_fail(err, CCQ_ERR_USAGE, "export: OUT_DIR %s is the input model", dir);
        if (!S_ISDIR(sd.st_mode)) return ccq_fail(err, CCQ_ERR_IO, "%s: not a directory", dir);
        if (access(dir, W_OK | X_OK) != 0) return ccq_fail(err, CCQ_ERR_IO, "%s: directory not writable", dir);
        static const char *const ext[2] = {"c", "h"};
        for (int k = 0; k < 2; k++) {
            char p[4200];
            if (snprintf(p, sizeof p, "%s/%s.%s", dir, name, ext[k]) >= (int)sizeof p)
                return ccq_fail(err, CCQ_ERR_IO, "%s: path too long", dir);
            if (stat(p, &so) != 0) continue;
            if (have_model && same_file(&sm, &so))
                return ccq_fail(err, CCQ_ERR_USAGE, "export: %s would overwrite the input model (choose another OUT_DIR or --name)", p);
            if (S_ISDIR(so.st_mode)) return ccq_fail(err, CCQ_ERR_IO, "%s: is a directory", p);
        }
        return CCQ_OK;
    }
    if (errno != ENOENT) return ccq_fail(err, CCQ_ERR_IO, "%s: %s", dir, strerror(errno));
    char parent[4200];
    if (snprintf(parent, sizeof parent, "%s", dir) >= (int)sizeof parent)
        return ccq_fail(err, CCQ_ERR_IO, "%s: path too long", dir);
    const char *pd = dirname(parent);
    if (stat(pd, &sd) != 0 || !S_ISDIR(sd.st_mode) || access(pd, W_OK | X_OK) != 0)
        return ccq_fail(err, CCQ_ERR_IO, "%s: cannot be created (parent directory %s missing or not writable)", dir, pd);
    return CCQ_OK;
}

static void footprint(const cexport *x, const char *dir, const model *m)
{
    const cexport_footprint *f = &x->fp;
    char up[64];
    size_t k = 0;
    for (; x->name[k] && k + 1 < sizeof up; k++) up[k] = (char)(x->name[k] >= 'a' && x->name[k] <= 'z' ? x->name[k] - 32 : x->name[k]);
    up[k] = '\0';
    printf("export: wrote %s/%s.c and %s/%s.h: %s_run(image uint8 [%d][%d][%d], logits int32 [%d]), %d of %d nodes\n", dir,
           x->name, dir, x->name, x->name, m->input.c, m->input.h, m->input.w, m->classes, f->live_nodes, m->n_nodes);
    printf("flash:  %zu bytes of arrays: levels %zu (%lld weights at %d..%d bits; FP32 %lld), constants %zu; code not counted\n",
           f->levels_bytes + f->const_bytes, f->levels_bytes, (long long)f->weights, f->bits_min, f->bits_max,
           (long long)f->weights * 4, f->const_bytes);
    printf("RAM:    %zu bytes: activation arena %zu (%zu without reuse), scratch %zu\n", f->arena_bytes + f->scratch_bytes,
           f->arena_bytes, f->arena_naive, f->scratch_bytes);
    printf("-D%s_FAST: flash %zu bytes of arrays (levels one int8 each, read in place), RAM %zu (no scratch)\n", up,
           f->levels_fast + f->const_bytes, f->arena_bytes);
}

/* --format onnx: OUT.onnx checked first, then the model read, exported in memory and written. */
static ccq_status export_onnx(const char *mpath, const char *path, const char *name_arg, const char *input, ccq_err *err)
{
    if (name_arg) return ccq_fail(err, CCQ_ERR_USAGE, "export: --name is for --format c");
    if (!path) return ccq_fail(err, CCQ_ERR_USAGE, "export: missing OUT.onnx");
    onnxexport_input in = ONNXEXPORT_INPUT_UINT8;
    if (input && strcmp(input, "float") == 0) in = ONNXEXPORT_INPUT_FLOAT;
    else if (input && strcmp(input, "uint8") != 0)
        return ccq_fail(err, CCQ_ERR_USAGE, "export: --input must be uint8 or float, got '%s'", input);
    const outpath_item ins[1] = {{"MODEL.h5", mpath}}, outs[1] = {{"OUT.onnx", path}};
    ccq_status st = outpath_check(ins, 1, outs, 1, 0, err);
    if (st) return st;
    model m;
    if ((st = load_quantized(&m, mpath, err))) return st;
    onnxexport x;
    if (!(st = onnxexport_init(&x, &m, in, err))) {
        if (!(st = onnxexport_write(&x, path, err)))
            printf("export: wrote %s: ONNX opset 13, QDQ form, %d ONNX nodes for %d of %d ccq nodes, %zu bytes; input %s "
                   "[N][%d][%d][%d], output float logits [N][%d]\n",
                   path, x.onnx_nodes, x.live_nodes, m.n_nodes, x.n,
                   in == ONNXEXPORT_INPUT_UINT8 ? "'image' uint8" : "'input' float", m.input.c, m.input.h, m.input.w,
                   m.classes);
        onnxexport_free(&x);
    }
    model_free(&m);
    return st;
}

ccq_status cmd_export(int argc, char **argv, ccq_err *err)
{
    const char *mpath = NULL, *dir = NULL, *format = NULL, *name_arg = NULL, *input = NULL;
    for (int i = 0; i < argc; i++) {
        const char *s = argv[i];
        if (strcmp(s, "--help") == 0 || strcmp(s, "-h") == 0) {
            export_usage(stdout);
            return CCQ_OK;
        }
        if (strcmp(s, "--format") == 0 || strcmp(s, "--name") == 0 || strcmp(s, "--input") == 0) {
            if (i + 1 >= argc) return ccq_fail(err, CCQ_ERR_USAGE, "export: %s needs a value", s);
            if (strcmp(s, "--format") == 0) format = argv[++i];
            else if (strcmp(s, "--name") == 0) name_arg = argv[++i];
            else input = argv[++i];
        } else if (s[0] == '-' && s[1] != '\0') {
            return ccq_fail(err, CCQ_ERR_USAGE, "export: unknown flag '%s' (see ccq export --help)", s);
        } else if (!mpath) {
            mpath = s;
        } else if (!dir) {
            dir = s;
        } else {
            return ccq_fail(err, CCQ_ERR_USAGE, "export: unexpected argument '%s'", s);
        }
    }
    if (!mpath) return ccq_fail(err, CCQ_ERR_USAGE, "export: missing MODEL.h5 (see ccq export --help)");
    if (!format) return ccq_fail(err, CCQ_ERR_USAGE, "export: missing --format (c or onnx)");
    if (strcmp(format, "onnx") == 0) return export_onnx(mpath, dir, name_arg, input, err);
    if (strcmp(format, "c") != 0) return ccq_fail(err, CCQ_ERR_USAGE, "export: --format must be c or onnx, got '%s'", format);
    if (input) return ccq_fail(err, CCQ_ERR_USAGE, "export: --input is for --format onnx");
    if (!dir) return ccq_fail(err, CCQ_ERR_USAGE, "export: missing OUT_DIR");
    char name[64];
    if (name_arg) {
        if (!cexport_name_ok(name_arg))
            return ccq_fail(err, CCQ_ERR_USAGE,
                            "export: --name '%s' is not usable: letters, digits and _, a letter first, at most 48, "
                            "not starting cq_",
                            name_arg);
        snprintf(name, sizeof name, "%s", name_arg);
    } else {
        default_name(mpath, name, sizeof name);
    }
    ccq_status st = check_outputs(mpath, dir, name, err);
    if (st) return st;

    model m;
    if ((st = load_quantized(&m, mpath, err))) return st;
    cexport x;
    if (!(st = cexport_init(&x, &m, name, err))) {
        if (!(st = cexport_write(&x, dir, err))) footprint(&x, dir, &m);
        cexport_free(&x);
    }
    model_free(&m);
    return st;
}
