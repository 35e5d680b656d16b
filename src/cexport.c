/*
 * cexport.c: a quantized model as C99 source (see cexport.h): the
 * generator's frame (file layout, shared runtime helpers, the activation
 * arena's liveness plan, footprint accounting) and the writer (temporary
 * files renamed into place). What each op's generated code and constants
 * are lives with the op (op_traits.cexport in src/op_<family>.c), which
 * reads the integer state of a qnet built here with the scalar kernels, so
 * the export never derives a multiplier, shift or bias of its own.
 *
 * It does not compile or run the generated code (tests/test_cexport.py does)
 * and knows nothing of the command line.
 */
#include "ccq/cexport.h"

#include <ctype.h>
#include <errno.h>
#include <fcntl.h>
#include <inttypes.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "ccq/op.h"
#include "ccq/qnet.h"
#include "ccq/version.h"

/* ---- text buffers ------------------------------------------------------------ */

typedef struct {
    char *p;
    size_t n, cap;
} sbuf;

static void sb_vprintf(sbuf *b, const char *fmt, va_list ap)
{
    va_list ap2;
    va_copy(ap2, ap);
    const int need = vsnprintf(NULL, 0, fmt, ap2);
    va_end(ap2);
    CCQ_ASSERT(need >= 0);
    if (b->n + (size_t)need + 1 > b->cap) {
        size_t cap = b->cap ? b->cap : 4096;
        while (b->n + (size_t)need + 1 > cap) cap *= 2;
        b->p = ccq_realloc(b->p, cap);
        b->cap = cap;
    }
    vsnprintf(b->p + b->n, (size_t)need + 1, fmt, ap);
    b->n += (size_t)need;
}

static void sb_printf(sbuf *b, const char *fmt, ...) __attribute__((format(printf, 2, 3)));
static void sb_printf(sbuf *b, const char *fmt, ...)
{
    va_list ap;
    va_start(ap, fmt);
    sb_vprintf(b, fmt, ap);
    va_end(ap);
}

static void sb_puts(sbuf *b, const char *s) { sb_printf(b, "%s", s); }

/* ---- the context the ops emit into ------------------------------------------- */

struct cexport_ctx {
    const model *m;
    const qnet *q;
    sbuf code, data, body;
    int rt[CEXPORT_RT_COUNT];
    int op_done[MODEL_OP_COUNT];
    char (*expr)[48]; /* [n_nodes + 1]: tensor j's C expression at expr[j + 1] */
    size_t wbuf;
    cexport_footprint fp;
};

/* The shared helpers, in dependency order (each only calls earlier ones). */
static const char *const k_rt[CEXPORT_RT_COUNT] = {
    [CEXPORT_RT_CLAMP] =
        "/* v as a level clamped to [lo, hi] (a sub-range of 0..255). */\n"
        "static uint8_t cq_clamp(int64_t v, int32_t lo, int32_t hi)\n"
        "{\n"
        "    return (uint8_t)(v < lo ? lo : v > hi ? hi : v);\n"
        "}\n\n",
    [CEXPORT_RT_REQUANT] =
        "/* acc * mult * 2^-shift rounded half away from zero, saturated to int32 (mult < 2^31,\n"
        " * shift 1..62): ccq's requantization, exact in 64-bit unsigned arithmetic. */\n"
        "static int32_t cq_requant(int32_t acc, int32_t mult, int shift)\n"
        "{\n"
        "    const uint32_t a = acc < 0 ? (uint32_t)0 - (uint32_t)acc : (uint32_t)acc;\n"
        "    uint64_t q = ((uint64_t)a * (uint64_t)(uint32_t)mult + ((uint64_t)1 << (shift - 1))) >> shift;\n"
        "    if (q > 2147483647u) q = 2147483647u;\n"
        "    return acc < 0 ? -(int32_t)q : (int32_t)q;\n"
        "}\n\n",
    [CEXPORT_RT_RSHIFT] =
        "/* v / 2^s rounded half away from zero, s >= 1. */\n"
        "static int64_t cq_rshift(int64_t v, int s)\n"
        "{\n"
        "    const int64_t r = (int64_t)1 << (s - 1);\n"
        "    return v >= 0 ? (v + r) >> s : -((-v + r) >> s);\n"
        "}\n\n",
    [CEXPORT_RT_DIVROUND] =
        "/* s / cnt rounded half away from zero (cnt > 0). */\n"
        "static int64_t cq_div_round(int64_t s, int64_t cnt)\n"
        "{\n"
        "    return s >= 0 ? (2 * s + cnt) / (2 * cnt) : -((-2 * s + cnt) / (2 * cnt));\n"
        "}\n\n",
    [CEXPORT_RT_WINDOW] =
        "/* Pool window o along one axis: real input taps [*lo, *hi) and the window's extent clipped\n"
        " * to the padded input (the count_include_pad divisor). */\n"
        "static void cq_window(int o, int stride, int k, int pad0, int pad1, int in, int *lo, int *hi, int *padded)\n"
        "{\n"
        "    const int start = o * stride - pad0, end = start + k;\n"
        "    const int pend = end < in + pad1 ? end : in + pad1;\n"
        "    *padded = pend - start;\n"
        "    *lo = start < 0 ? 0 : start;\n"
        "    *hi = end > in ? in : end;\n"
        "}\n\n",
    [CEXPORT_RT_ADDP] =
        "/* One operand pair onto an output scale in int32: v = (a - za) am + (b - zb) bm (am, bm < 2^21),\n"
        " * out = clamp(zo + v / 2^shift rounded half away from zero, lo, hi). add and concat. */\n"
        "typedef struct {\n"
        "    int32_t za, am, zb, bm, shift, zo, lo, hi;\n"
        "} cq_addp;\n\n"
        "static uint8_t cq_add_one(uint8_t a, uint8_t b, const cq_addp *p)\n"
        "{\n"
        "    const int32_t v = (a - p->za) * p->am + (b - p->zb) * p->bm;\n"
        "    const int32_t r = (int32_t)1 << (p->shift - 1);\n"
        "    const int32_t q = v >= 0 ? (v + r) >> p->shift : -((-v + r) >> p->shift);\n"
        "    const int32_t o = p->zo + q;\n"
        "    return (uint8_t)(o < p->lo ? p->lo : o > p->hi ? p->hi : o);\n"
        "}\n\n",
    [CEXPORT_RT_PRUNE] =
        "/* Activation pruning: levels within t of the zero point zp become zp. */\n"
        "static void cq_prune(uint8_t *y, long n, int zp, int t)\n"
        "{\n"
        "    long k;\n"
        "    for (k = 0; k < n; k++)\n"
        "        if (y[k] > zp - t && y[k] < zp + t) y[k] = (uint8_t)zp;\n"
        "}\n\n",
    [CEXPORT_RT_UNPACK_SPARSE] =
        "#ifndef CQ_FAST\n"
        "/* n levels of a sparse layer from bit `bit` of the bitmap nz: 0 where the bit is clear, else the\n"
        " * next code of w from code index `code` (1 bit at 2 bits: 0 is -1, 1 is +1; else `bits` bits:\n"
        " * level + qmax below zero, level + qmax - 1 above). */\n"
        "static void cq_unpack_sparse(const uint8_t *nz, const uint8_t *w, uint32_t bit, uint32_t code, int n, int bits,\n"
        "                             int8_t *out)\n"
        "{\n"
        "    const int qmax = (1 << (bits - 1)) - 1, cw = bits == 2 ? 1 : bits;\n"
        "    int k, b;\n"
        "    for (k = 0; k < n; k++, bit++) {\n"
        "        if (nz[bit >> 3] >> (bit & 7) & 1) {\n"
        "            uint32_t pos = code++ * (uint32_t)cw;\n"
        "            int v = 0;\n"
        "            for (b = 0; b < cw; b++, pos++) v |= (w[pos >> 3] >> (pos & 7) & 1) << b;\n"
        "            out[k] = (int8_t)(bits == 2 ? 2 * v - 1 : v < qmax ? v - qmax : v - qmax + 1);\n"
        "        } else {\n"
        "            out[k] = 0;\n"
        "        }\n"
        "    }\n"
        "}\n"
        "\n"
        "#endif\n\n",
};

static const char k_input_code[] =
    "/* The image's [C][H][W] bytes as the first NHWC tensor. */\n"
    "static void cq_input(const uint8_t *img, uint8_t *x, int C, long hw)\n"
    "{\n"
    "    long p;\n"
    "    int c;\n"
    "    for (p = 0; p < hw; p++)\n"
    "        for (c = 0; c < C; c++) x[p * C + c] = img[c * hw + p];\n"
    "}\n\n";

void cexport_need(cexport_ctx *x, cexport_rt r)
{
    CCQ_ASSERT(r >= 0 && r < CEXPORT_RT_COUNT);
    x->rt[r] = 1;
}

void cexport_code(cexport_ctx *x, model_op op, const char *text)
{
    if (x->op_done[op]) return;
    x->op_done[op] = 1;
    sb_puts(&x->code, text);
}

void cexport_data(cexport_ctx *x, const char *fmt, ...)
{
    va_list ap;
    va_start(ap, fmt);
    sb_vprintf(&x->data, fmt, ap);
    va_end(ap);
}

void cexport_call(cexport_ctx *x, const char *fmt, ...)
{
    va_list ap;
    sb_puts(&x->body, "    ");
    va_start(ap, fmt);
    sb_vprintf(&x->body, fmt, ap);
    va_end(ap);
    sb_puts(&x->body, "\n");
}

const char *cexport_in(const cexport_ctx *x, int i, int j)
{
    CCQ_ASSERT(j >= 0 && j < x->m->nodes[i].n_in);
    return x->expr[x->m->nodes[i].in[j] + 1];
}

const char *cexport_out(const cexport_ctx *x, int i) { return x->expr[i + 1]; }

void cexport_scratch(cexport_ctx *x, size_t wbuf)
{
    if (wbuf > x->wbuf) x->wbuf = wbuf;
}

void cexport_array(cexport_ctx *x, int i, const char *suffix, const void *v, int64_t n, int elem_bytes,
                   int is_unsigned, cexport_kind kind)
{
    CCQ_ASSERT(n >= 1 && (elem_bytes == 1 || elem_bytes == 4 || elem_bytes == 8));
    const char *type = elem_bytes == 1 ? (is_unsigned ? "uint8_t" : "int8_t") : elem_bytes == 4 ? "int32_t" : "int64_t";
    const int per_line = elem_bytes == 1 ? 24 : elem_bytes == 4 ? 8 : 4;
    sbuf *b = &x->data;
    if (kind == CEXPORT_LEVELS) sb_puts(b, "#ifndef CQ_FAST\n");
    if (kind == CEXPORT_LEVELS_FAST) sb_puts(b, "#ifdef CQ_FAST\n");
    sb_printf(b, "static const %s n%d_%s[%" PRId64 "] = {", type, i, suffix, n);
    for (int64_t k = 0; k < n; k++) {
        if (k % per_line == 0) sb_puts(b, "\n   ");
        if (elem_bytes == 1 && is_unsigned) {
            sb_printf(b, " %u,", ((const uint8_t *)v)[k]);
        } else if (elem_bytes == 1) {
            sb_printf(b, " %d,", ((const int8_t *)v)[k]);
        } else if (elem_bytes == 4) {
            const int32_t e = ((const int32_t *)v)[k];
            if (e == INT32_MIN) sb_puts(b, " (-2147483647 - 1),");
            else sb_printf(b, " %" PRId32 ",", e);
        } else {
            const int64_t e = ((const int64_t *)v)[k];
            if (e == INT64_MIN) sb_puts(b, " (-INT64_C(9223372036854775807) - 1),");
            else if (e < 0) sb_printf(b, " -INT64_C(%" PRId64 "),", -e);
            else sb_printf(b, " INT64_C(%" PRId64 "),", e);
        }
    }
    sb_puts(b, "\n};\n");
    if (kind != CEXPORT_CONST) sb_puts(b, "#endif\n");
    const size_t bytes = (size_t)n * (size_t)elem_bytes;
    if (kind == CEXPORT_LEVELS) x->fp.levels_bytes += bytes;
    else if (kind == CEXPORT_LEVELS_FAST) x->fp.levels_fast += bytes;
    else x->fp.const_bytes += bytes;
}

/* ---- names --------------------------------------------------------------------- */

int cexport_name_ok(const char *name)
{
    const size_t n = strlen(name);
    if (n < 1 || n > 48 || !(isalpha((unsigned char)name[0]))) return 0;
    for (size_t k = 0; k < n; k++)
        if (!(isalnum((unsigned char)name[k]) || name[k] == '_') || (unsigned char)name[k] > 127) return 0;
    /* the generated file's own identifiers start with cq_ */
    return !(strncmp(name, "cq_", 3) == 0 || strcmp(name, "cq") == 0);
}

static void upper(char *dst, const char *src, size_t n)
{
    size_t k = 0;
    for (; src[k] && k + 1 < n; k++) dst[k] = (char)toupper((unsigned char)src[k]);
    dst[k] = '\0';
}

/* A node name inside a C comment: printable ASCII, no comment terminator. */
static void comment_str(char *dst, const char *src, size_t n)
{
    size_t k = 0;
    for (; src[k] && k + 1 < n; k++) {
        const unsigned char c = (unsigned char)src[k];
        dst[k] = (char)(c >= 32 && c < 127 ? c : '?');
        if (k > 0 && dst[k - 1] == '*' && dst[k] == '/') dst[k] = '|';
    }
    dst[k] = '\0';
}

/* ---- the activation arena: a liveness plan ----------------------------------- */

typedef struct {
    int id;       /* tensor: -1 input, else node */
    int64_t size; /* bytes per image */
    int def, last;
    int64_t off;
} ptensor;

static int by_size_desc(const void *a, const void *b)
{
    const ptensor *x = a, *y = b;
    if (x->size != y->size) return x->size > y->size ? -1 : 1;
    return x->id - y->id;
}

static int by_off(const void *a, const void *b)
{
    const ptensor *const *x = a, *const *y = b;
    return (*x)->off < (*y)->off ? -1 : (*x)->off > (*y)->off;
}

static int lives_overlap(const ptensor *a, const ptensor *b) { return a->def <= b->last && b->def <= a->last; }

/* Greedy placement (largest first, each at the lowest offset clear of every placed tensor
 * alive at the same time): a tensor lives from the node that writes it to its last reader,
 * inclusive, so a node's output never shares bytes with its inputs. Returns the arena size. */
static int64_t plan_arena(ptensor *t, int n)
{
    qsort(t, (size_t)n, sizeof *t, by_size_desc);
    const ptensor **placed = ccq_malloc(sizeof(ptensor *) * (size_t)(n ? n : 1));
    int64_t total = 0;
    for (int k = 0; k < n; k++) {
        int np = 0;
        for (int j = 0; j < k; j++)
            if (lives_overlap(&t[j], &t[k])) placed[np++] = &t[j];
        qsort(placed, (size_t)np, sizeof *placed, by_off);
        int64_t off = 0;
        for (int j = 0; j < np; j++) {
            if (placed[j]->off >= off + t[k].size) break;
            if (placed[j]->off + placed[j]->size > off) off = placed[j]->off + placed[j]->size;
        }
        t[k].off = off;
        if (off + t[k].size > total) total = off + t[k].size;
    }
    for (int a = 0; a < n; a++)
        for (int b = a + 1; b < n; b++)
            if (lives_overlap(&t[a], &t[b]))
                CCQ_ASSERT(t[a].off + t[a].size <= t[b].off || t[b].off + t[b].size <= t[a].off);
    ccq_free(placed);
    return total;
}

/* ---- generation ---------------------------------------------------------------- */

static void footprint_comment(sbuf *b, const cexport_footprint *fp, const char *fast)
{
    sb_printf(b,
              " * Arrays (flash): levels %zu bytes packed at %d..%d bits (%" PRId64 " weights; FP32: %" PRId64
              " bytes), constants %zu bytes.\n"
              " * RAM: activation arena %zu bytes (liveness plan; %zu without reuse), scratch %zu bytes.\n"
              " * -D%s: levels stored one int8 each (%zu bytes of flash) and read in place: no scratch.\n",
              fp->levels_bytes, fp->bits_min, fp->bits_max, fp->weights, fp->weights * 4, fp->const_bytes,
              fp->arena_bytes, fp->arena_naive, fp->scratch_bytes, fast, fp->levels_fast);
}

ccq_status cexport_init(cexport *out, const model *m, const char *name, ccq_err *err)
{
    memset(out, 0, sizeof *out);
    if (!m->quantized) return ccq_fail(err, CCQ_ERR_USAGE, "%s: a float model: quantize it first (ccq quantize)", m->path);
    if (!cexport_name_ok(name))
        return ccq_fail(err, CCQ_ERR_USAGE, "'%s' is not a usable C name (letters, digits, _; a letter first; at most 48; not cq_...)",
                        name);
    for (int i = 0; i < m->n_nodes; i++)
        if (!op_get(m->nodes[i].op)->cexport)
            return ccq_fail(err, CCQ_ERR_USAGE, "%s: node %d (%s %s): the C export does not support this op", m->path, i,
                            model_op_name(m->nodes[i].op), m->nodes[i].name);
    qnet q;
    ccq_status st = qnet_init(&q, m, &kern_isa_scalar, 1, err);
    if (st) return st;

    const int n = m->n_nodes;
    cexport_ctx x = {.m = m, .q = &q};
    x.expr = ccq_calloc((size_t)n + 1, sizeof *x.expr);
    /* Live nodes: those the logits depend on. */
    uint8_t *live = ccq_calloc((size_t)n, 1);
    int *last = ccq_malloc(sizeof(int) * ((size_t)n + 1));
    live[m->output] = 1;
    for (int i = m->output; i >= 0; i--)
        for (int j = 0; live[i] && j < m->nodes[i].n_in; j++)
            if (m->nodes[i].in[j] >= 0) live[m->nodes[i].in[j]] = 1;
    for (int k = 0; k <= n; k++) last[k] = -2;
    for (int i = 0; i < n; i++)
        for (int j = 0; live[i] && j < m->nodes[i].n_in; j++) last[m->nodes[i].in[j] + 1] = i;

    /* The arena: every live node's output but the logits, and the input if it needs NHWC. */
    ptensor *pt = ccq_malloc(sizeof(ptensor) * ((size_t)n + 1));
    int np = 0;
    const int C = m->input.c;
    const int64_t hw = (int64_t)m->input.h * m->input.w;
    if (C > 1) pt[np++] = (ptensor){-1, C * hw, -1, last[0], 0};
    for (int i = 0; i < n; i++)
        if (live[i] && i != m->output) pt[np++] = (ptensor){i, model_numel(m->nodes[i].shape), i, last[i + 1], 0};
    for (int k = 0; k < np; k++) x.fp.arena_naive += (size_t)pt[k].size;
    const int64_t arena = plan_arena(pt, np);
    if (arena > INT32_MAX) {
        st = ccq_fail(err, CCQ_ERR_LIMIT, "%s: the activation arena would be %lld bytes, more than the 2^31 - 1 the C export allows",
                      m->path, (long long)arena);
        goto done;
    }
    x.fp.arena_bytes = (size_t)arena;
    snprintf(x.expr[0], sizeof x.expr[0], "image");
    for (int k = 0; k < np; k++) {
        if (pt[k].off) snprintf(x.expr[pt[k].id + 1], sizeof x.expr[0], "cq_arena + %" PRId64, pt[k].off);
        else snprintf(x.expr[pt[k].id + 1], sizeof x.expr[0], "cq_arena");
    }
    snprintf(x.expr[m->output + 1], sizeof x.expr[0], "logits");
    if (C > 1) cexport_call(&x, "cq_input(image, %s, %d, %" PRId64 "L);", x.expr[0], C, hw);

    /* Each live node: its code, constants and call. */
    x.fp.bits_min = 8, x.fp.bits_max = 2;
    for (int i = 0; i < n; i++) {
        if (!live[i]) continue;
        const model_node *nd = &m->nodes[i];
        char cname[136], in_s[64], out_s[64];
        comment_str(cname, nd->name, sizeof cname);
        const model_shape is = model_in_shape(m, i, 0), os = nd->shape;
        snprintf(in_s, sizeof in_s, is.rank == 3 ? "%dx%dx%d" : "%d", is.c, is.h, is.w);
        snprintf(out_s, sizeof out_s, os.rank == 3 ? "%dx%dx%d" : "%d", os.c, os.h, os.w);
        sb_printf(&x.body, "    /* %d %s %s: %s%s -> %s */\n", i, model_op_name(nd->op), cname, in_s,
                  nd->n_in > 1 ? ", ..." : "", out_s);
        if (op_get(nd->op)->flags & OP_WEIGHTED) {
            x.fp.weights += nd->n_weight;
            if (nd->bits < x.fp.bits_min) x.fp.bits_min = nd->bits;
            if (nd->bits > x.fp.bits_max) x.fp.bits_max = nd->bits;
        }
        if ((st = op_get(nd->op)->cexport(&x, &q, i, err))) goto done;
        if (nd->act_thresh) {
            cexport_need(&x, CEXPORT_RT_PRUNE);
            cexport_call(&x, "cq_prune(%s, %" PRId64 "L, %d, %d);", cexport_out(&x, i), model_numel(nd->shape),
                         nd->act_zp, nd->act_thresh);
        }
        x.fp.live_nodes++;
    }
    x.fp.scratch_bytes = x.wbuf;

    /* NAME.h */
    char up[64];
    upper(up, name, sizeof up);
    snprintf(out->name, sizeof out->name, "%s", name);
    out->fp = x.fp;
    sbuf h = {0};
    char mname[136];
    comment_str(mname, m->name, sizeof mname);
    sb_printf(&h,
              "/*\n"
              " * %s.h: the quantized model %s as integer C99 code, generated by ccq %s (ccq export).\n"
              " *\n"
              " * %s_run(image, logits): image is the raw uint8 image, %d x %d x %d in [C][H][W] order (the\n"
              " * ccq data file's); logits receives %d int32 values, real logit = %s_LOGITS_SCALE * value,\n"
              " * identical to `ccq eval --save-logits` (/logits_int) on the same model file.\n"
              " * Not reentrant: activations live in one static arena.\n"
              " */\n"
              "#ifndef %s_H\n#define %s_H\n\n#include <stdint.h>\n\n"
              "#define %s_INPUT_C %d\n#define %s_INPUT_H %d\n#define %s_INPUT_W %d\n#define %s_INPUT_BYTES %" PRId64 "\n"
              "#define %s_CLASSES %d\n#define %s_LOGITS_SCALE %.9g\n"
              "#define %s_ARENA_BYTES %zu\n\n"
              "#ifdef __cplusplus\nextern \"C\" {\n#endif\n\n"
              "void %s_run(const uint8_t *image, int32_t *logits);\n\n"
              "#ifdef __cplusplus\n}\n#endif\n\n#endif\n",
              name, mname, CCQ_VERSION, name, C, m->input.h, m->input.w, m->classes, up, up, up, up, C, up,
              m->input.h, up, m->input.w, up, C * hw, up, m->classes, up, (double)q.logits_scale, up, x.fp.arena_bytes,
              name);

    /* NAME.c */
    sbuf c = {0};
    sb_printf(&c,
              "/*\n"
              " * %s.c: the quantized model %s (%d nodes, %d computed) as integer C99 code, generated by\n"
              " * ccq %s (ccq export): the integer engine's arithmetic on uint8 NHWC activations, int32\n"
              " * accumulators and fixed-point requantization, bit-identical to `ccq eval` (ccq's README,\n"
              " * \"Integer engine\" and \"Deploy\"). C99 and the C standard library only; no allocation.\n"
              " *\n",
              name, mname, n, x.fp.live_nodes, CCQ_VERSION);
    char fastm[80];
    snprintf(fastm, sizeof fastm, "%s_FAST", up);
    footprint_comment(&c, &x.fp, fastm);
    sb_printf(&c, " */\n#include \"%s.h\"\n\n#include <string.h>\n\n#ifdef %s\n#define CQ_FAST 1\n#endif\n\n", name, fastm);
    if (np) sb_printf(&c, "/* Activations: tensors share bytes once their last reader has run. */\nstatic uint8_t cq_arena[%" PRId64 "];\n", arena);
    if (x.wbuf) sb_printf(&c, "#ifndef CQ_FAST\nstatic int8_t cq_wbuf[%zu]; /* one output channel's levels, unpacked */\n#endif\n", x.wbuf);
    sb_puts(&c, "\n/* ---- runtime ---- */\n\n");
    for (int r = 0; r < CEXPORT_RT_COUNT; r++)
        if (x.rt[r]) sb_puts(&c, k_rt[r]);
    if (C > 1) sb_puts(&c, k_input_code);
    if (x.code.n) sb_puts(&c, x.code.p);
    sb_puts(&c, "/* ---- the model ---- */\n\n");
    if (x.data.n) sb_puts(&c, x.data.p);
    sb_printf(&c, "\nvoid %s_run(const uint8_t *image, int32_t *logits)\n{\n%s}\n", name, x.body.p ? x.body.p : "");
    out->c_src = c.p, out->c_len = c.n;
    out->h_src = h.p, out->h_len = h.n;
done:
    ccq_free(x.code.p), ccq_free(x.data.p), ccq_free(x.body.p);
    ccq_free(x.expr), ccq_free(live), ccq_free(last), ccq_free(pt);
    qnet_free(&q);
    return st;
}

void cexport_free(cexport *x)
{
    ccq_free(x->c_src), ccq_free(x->h_src);
    memset(x, 0, sizeof *x);
}

/* ---- writing --------------------------------------------------------------------- */

static int write_file(const char *path, const char *text, size_t n)
{
    const int fd = open(path, O_WRONLY | O_CREAT | O_TRUNC, 0666);
    if (fd < 0) return -1;
    size_t done = 0;
    while (done < n) {
        const ssize_t w = write(fd, text + done, n - done);
        if (w < 0 && errno == EINTR) continue;
        if (w <= 0) {
            close(fd);
            return -1;
        }
        done += (size_t)w;
    }
    if (fsync(fd) != 0) {
        close(fd);
        return -1;
    }
    return close(fd);
}

ccq_status cexport_write(const cexport *x, const char *dir, ccq_err *err)
{
    char path[2][4200], tmp[2][4200];
    const char *ext[2] = {"h", "c"};
    const char *text[2] = {x->h_src, x->c_src};
    const size_t len[2] = {x->h_len, x->c_len};
    struct stat sd;
    int made = 0, e = 0, h_existed = 0;
    const char *bad = dir;
    for (int k = 0; k < 2; k++) {
        const int a = snprintf(path[k], sizeof path[k], "%s/%s.%s", dir, x->name, ext[k]);
        const int b = snprintf(tmp[k], sizeof tmp[k], "%s/.%s.%s.tmp.%ld", dir, x->name, ext[k], (long)getpid());
        if (a < 0 || b < 0 || (size_t)b >= sizeof tmp[k])
            return ccq_fail(err, CCQ_ERR_IO, "%s: path too long", dir);
    }
    if (stat(dir, &sd) != 0) {
        if (errno != ENOENT || mkdir(dir, 0777) != 0)
            return ccq_fail(err, CCQ_ERR_IO, "%s: cannot create the directory: %s", dir, strerror(errno));
        made = 1;
    } else if (!S_ISDIR(sd.st_mode)) {
        return ccq_fail(err, CCQ_ERR_IO, "%s: not a directory", dir);
    }
    h_existed = stat(path[0], &sd) == 0;
    /* Both texts complete on disk before either name changes. */
    for (int k = 0; k < 2; k++)
        if (write_file(tmp[k], text[k], len[k]) != 0) {
            e = errno, bad = path[k];
            goto fail;
        }
    if (rename(tmp[0], path[0]) != 0) {
        e = errno, bad = path[0];
        goto fail;
    }
    if (rename(tmp[1], path[1]) != 0) {
        e = errno, bad = path[1];
        if (!h_existed) unlink(path[0]);
        goto fail;
    }
    return CCQ_OK;
fail:
    unlink(tmp[0]), unlink(tmp[1]);
    if (made) rmdir(dir);
    return ccq_fail(err, CCQ_ERR_IO, "%s: cannot write: %s", bad, strerror(e));
}
