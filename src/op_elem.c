/*
 * op_elem.c: ops that combine tensors element by element: add (residual
 * connections), mul (squeeze-and-excitation gates, with a [C,1,1] second
 * input broadcast over H and W) and concat (along C, H or W). Each
 * requantizes onto its own calibrated output scale in integer arithmetic
 * (README, "Integer engine").
 */
#include <math.h>
#include <stdio.h>
#include <string.h>

#include "ccq/fnet.h"
#include "ccq/op.h"
#include "ccq/quant.h"

static int same_shape(model_shape a, model_shape b)
{
    return a.rank == b.rank && a.c == b.c && a.h == b.h && a.w == b.w;
}

static void shape_str(char *buf, size_t n, model_shape s)
{
    if (s.rank == 1)
        snprintf(buf, n, "[%d]", s.c);
    else
        snprintf(buf, n, "[%d,%d,%d]", s.c, s.h, s.w);
}

static ccq_status no_save(const op_io *io, const model *m, int i, ccq_err *err)
{
    (void)io, (void)m, (void)i, (void)err;
    return CCQ_OK;
}

/* ---- add ---------------------------------------------------------------------- */

static ccq_status add_load(const op_io *io, model *m, int i, ccq_err *err)
{
    const model_shape a = model_in_shape(m, i, 0), b = model_in_shape(m, i, 1);
    if (!same_shape(a, b)) {
        char sa[64], sb[64];
        shape_str(sa, sizeof sa, a);
        shape_str(sb, sizeof sb, b);
        return OP_FAIL(io, err, CCQ_ERR_FORMAT, "adds tensors of different shapes %s and %s", sa, sb);
    }
    io->nd->shape = a;
    return CCQ_OK;
}

static void add_ffwd(const model *m, int i, const float *const *x, float *y, float *scratch)
{
    (void)scratch;
    fnet_add(x[0], x[1], y, model_numel(m->nodes[i].shape));
}

static ccq_status add_qinit(qnet *q, int i, ccq_err *err)
{
    const model *m = q->m;
    const model_node *nd = &m->nodes[i];
    qnet_node *t = &q->nodes[i];
    /* int32 arithmetic (kern_add): multipliers below 2^21, shift at most 30 */
    const double ra = op_in_scale(m, nd->in[0]) / nd->act_scale, rb = op_in_scale(m, nd->in[1]) / nd->act_scale;
    int32_t sh = 0;
    if (op_ratio_shift(fmax(ra, rb), &sh) || sh - 9 < 1)
        return ccq_fail(err, CCQ_ERR_LIMIT, "%s: node %d (%s): input/output scales too far apart", m->path, i,
                        nd->name);
    sh -= 9; /* op_ratio_shift leaves multipliers below 2^30 */
    if (sh > 30) sh = 30;
    t->add = (kern_add){.za = op_in_zp(m, nd->in[0]), .am = (int32_t)llround(ldexp(ra, sh)),
                        .zb = op_in_zp(m, nd->in[1]), .bm = (int32_t)llround(ldexp(rb, sh)),
                        .shift = sh, .zo = nd->act_zp, .lo = t->lo, .hi = t->hi};
    return CCQ_OK;
}

static void add_qfwd(qnet *q, int i, const uint8_t *const *x, uint8_t *y, int n)
{
    const qnet_node *t = &q->nodes[i];
    q->isa->add_u8((size_t)n * t->oc * t->oh * t->ow, x[0], x[1], &t->add, y);
}

/* ---- C export ------------------------------------------------------------------- */

/* `static const cq_addp NAME = {...};` of a kern_add. */
static void emit_addp(cexport_ctx *x, const kern_add *p, int last)
{
    cexport_data(x, "{%d, %d, %d, %d, %d, %d, %d, %d}%s", p->za, p->am, p->zb, p->bm, p->shift, p->zo, p->lo, p->hi,
                 last ? "" : ", ");
}

static const char k_add_code[] =
    "/* add: cq_add_one on every element of two equal-shape tensors. */\n"
    "static void cq_add(const uint8_t *a, const uint8_t *b, uint8_t *y, long n, const cq_addp *p)\n"
    "{\n"
    "    long k;\n"
    "    for (k = 0; k < n; k++) y[k] = cq_add_one(a[k], b[k], p);\n"
    "}\n"
    "\n";

static ccq_status add_cexport(cexport_ctx *x, const qnet *q, int i, ccq_err *err)
{
    (void)err;
    const qnet_node *t = &q->nodes[i];
    cexport_need(x, CEXPORT_RT_ADDP);
    cexport_code(x, MODEL_OP_ADD, k_add_code);
    cexport_data(x, "static const cq_addp n%d = ", i);
    emit_addp(x, &t->add, 1);
    cexport_data(x, ";\n\n");
    cexport_call(x, "cq_add(%s, %s, %s, %ldL, &n%d);", cexport_in(x, i, 0), cexport_in(x, i, 1), cexport_out(x, i),
                 (long)t->oc * t->oh * t->ow, i);
    return CCQ_OK;
}

/* ---- ONNX export ------------------------------------------------------------------ */

/* Add, Mul (a [C, 1, 1] operand broadcasts over H and W as in ONNX) and Concat (ccq's axis + 1:
 * ONNX tensors carry the batch axis) on the dequantized inputs, quantized at the node's scale. */
static ccq_status elem_onnx(onnxexport_ctx *x, const qnet *q, int i, ccq_err *err)
{
    (void)err;
    const model_node *nd = &q->m->nodes[i];
    const char *ins[MODEL_MAX_IN];
    for (int j = 0; j < nd->n_in; j++) ins[j] = onnxexport_in(x, i, j);
    char out[ONNXEXPORT_NAME_MAX];
    snprintf(out, sizeof out, "%s", onnxexport_out(x, i));
    const onnxexport_attr axis = ONNXEXPORT_AINT("axis", nd->axis + 1);
    const char *type = nd->op == MODEL_OP_ADD ? "Add" : nd->op == MODEL_OP_MUL ? "Mul" : "Concat";
    onnxexport_node(x, type, onnxexport_node_name(x, i), ins, nd->n_in, out, &axis, nd->op == MODEL_OP_CONCAT, NULL);
    onnxexport_result(x, i, out);
    return CCQ_OK;
}

const op_traits op_add = {
    .name = "add", .min_in = 2, .max_in = 2, .flags = OP_FUSES | OP_CALIBRATED,
    .load = add_load, .save = no_save, .ffwd = add_ffwd, .qinit = add_qinit, .qfwd = add_qfwd, .cexport = add_cexport,
    .onnx = elem_onnx,
};

/* ---- mul ---------------------------------------------------------------------- */

/* 1 if the second input is [C,1,1] against a [C,H,W] first (broadcast over H, W). */
static int mul_broadcast(const model *m, int i)
{
    const model_shape a = model_in_shape(m, i, 0), b = model_in_shape(m, i, 1);
    return !same_shape(a, b);
}

static ccq_status mul_load(const op_io *io, model *m, int i, ccq_err *err)
{
    const model_shape a = model_in_shape(m, i, 0), b = model_in_shape(m, i, 1);
    const int bcast = a.rank == 3 && b.rank == 3 && b.c == a.c && b.h == 1 && b.w == 1;
    if (!same_shape(a, b) && !bcast) {
        char sa[64], sb[64];
        shape_str(sa, sizeof sa, a);
        shape_str(sb, sizeof sb, b);
        return OP_FAIL(io, err, CCQ_ERR_FORMAT,
                       "multiplies %s by %s: the second input must have the first's shape or be [C,1,1]", sa, sb);
    }
    io->nd->shape = a;
    return CCQ_OK;
}

static void mul_ffwd(const model *m, int i, const float *const *x, float *y, float *scratch)
{
    (void)scratch;
    const model_shape s = m->nodes[i].shape;
    const int64_t n = model_numel(s);
    if (!mul_broadcast(m, i)) {
        for (int64_t k = 0; k < n; k++) y[k] = x[0][k] * x[1][k];
        return;
    }
    const int64_t hw = (int64_t)s.h * s.w;
    for (int c = 0; c < s.c; c++)
        for (int64_t k = 0; k < hw; k++) y[c * hw + k] = x[0][c * hw + k] * x[1][c];
}

static ccq_status mul_qinit(qnet *q, int i, ccq_err *err)
{
    const model *m = q->m;
    const model_node *nd = &m->nodes[i];
    qnet_node *t = &q->nodes[i];
    const double M = (double)op_in_scale(m, nd->in[0]) * op_in_scale(m, nd->in[1]) / nd->act_scale;
    t->mult = ccq_malloc(sizeof(int32_t));
    t->shift = ccq_malloc(sizeof(int32_t));
    int sh = 0;
    if (quant_multiplier(M, &t->mult[0], &sh))
        return ccq_fail(err, CCQ_ERR_LIMIT, "%s: node %d (%s): requantization scale out of range", m->path, i,
                        nd->name);
    t->shift[0] = sh;
    t->add = (kern_add){.za = op_in_zp(m, nd->in[0]), .zb = op_in_zp(m, nd->in[1]), .zo = nd->act_zp,
                        .lo = t->lo, .hi = t->hi};
    t->indirect = mul_broadcast(m, i); /* here: 1 = second input broadcast per channel */
    return CCQ_OK;
}

static void mul_qfwd(qnet *q, int i, const uint8_t *const *x, uint8_t *y, int n)
{
    const qnet_node *t = &q->nodes[i];
    const int C = t->oc;
    const size_t hw = (size_t)t->oh * t->ow;
    const kern_mul p = {.za = t->add.za, .zb = t->add.zb, .zo = t->add.zo, .lo = t->add.lo, .hi = t->add.hi,
                        .mult = t->mult[0], .shift = t->shift[0]};
    if (!t->indirect) { /* same shapes: one run over the whole batch */
        q->isa->mul_u8((size_t)n * hw, C, x[0], x[1], 0, &p, y);
        return;
    }
    for (int img = 0; img < n; img++) /* the gate b: one value per channel of each image */
        q->isa->mul_u8(hw, C, x[0] + (size_t)img * hw * C, x[1] + (size_t)img * C, 1, &p, y + (size_t)img * hw * C);
}

static const char k_mul_code[] =
    "/* mul: zo + requant((a - za) (b - zb)) clamped; bcast: b is one value per channel. */\n"
    "static void cq_mul(const uint8_t *a, const uint8_t *b, uint8_t *y, long hw, int C, int bcast, int32_t za,\n"
    "                   int32_t zb, int32_t zo, int32_t lo, int32_t hi, int32_t mult, int shift)\n"
    "{\n"
    "    long px;\n"
    "    int c;\n"
    "    for (px = 0; px < hw; px++)\n"
    "        for (c = 0; c < C; c++) {\n"
    "            const int32_t v = (a[px * C + c] - za) * (b[(bcast ? 0 : px * C) + c] - zb);\n"
    "            y[px * C + c] = cq_clamp(zo + (int64_t)cq_requant(v, mult, shift), lo, hi);\n"
    "        }\n"
    "}\n"
    "\n";

static ccq_status mul_cexport(cexport_ctx *x, const qnet *q, int i, ccq_err *err)
{
    (void)err;
    const qnet_node *t = &q->nodes[i];
    const kern_add *p = &t->add;
    cexport_need(x, CEXPORT_RT_CLAMP);
    cexport_need(x, CEXPORT_RT_REQUANT);
    cexport_code(x, MODEL_OP_MUL, k_mul_code);
    cexport_call(x, "cq_mul(%s, %s, %s, %ldL, %d, %d, %d, %d, %d, %d, %d, %d, %d);", cexport_in(x, i, 0),
                 cexport_in(x, i, 1), cexport_out(x, i), (long)t->oh * t->ow, t->oc, t->indirect, p->za, p->zb, p->zo,
                 p->lo, p->hi, t->mult[0], t->shift[0]);
    return CCQ_OK;
}

const op_traits op_mul = {
    .name = "mul", .min_in = 2, .max_in = 2, .flags = OP_CALIBRATED,
    .load = mul_load, .save = no_save, .ffwd = mul_ffwd, .qinit = mul_qinit, .qfwd = mul_qfwd, .cexport = mul_cexport,
    .onnx = elem_onnx,
};

/* ---- concat ------------------------------------------------------------------- */

static ccq_status concat_load(const op_io *io, model *m, int i, ccq_err *err)
{
    model_node *nd = io->nd;
    ccq_status st;
    const model_shape a = model_in_shape(m, i, 0);
    if ((st = op_read_ints(io, "axis", &nd->axis, 1, 0, a.rank == 3 ? 2 : 0, err))) return st;
    int dims[3] = {a.c, a.h, a.w};
    for (int j = 1; j < nd->n_in; j++) {
        const model_shape b = model_in_shape(m, i, j);
        const int bd[3] = {b.c, b.h, b.w};
        int ok = b.rank == a.rank;
        for (int k = 0; k < 3 && ok; k++) ok = k == nd->axis || bd[k] == dims[k];
        if (!ok) {
            char sa[64], sb[64];
            shape_str(sa, sizeof sa, a);
            shape_str(sb, sizeof sb, b);
            return OP_FAIL(io, err, CCQ_ERR_FORMAT, "input %d %s does not fit input 0 %s along axis %d", j, sb, sa,
                           nd->axis);
        }
        if ((int64_t)dims[nd->axis] + bd[nd->axis] > MODEL_MAX_DIM)
            return OP_FAIL(io, err, CCQ_ERR_LIMIT, "%s", "the concatenated axis is longer than ccq accepts");
        dims[nd->axis] += bd[nd->axis];
    }
    nd->shape = (model_shape){a.rank, dims[0], dims[1], dims[2]};
    return CCQ_OK;
}

static ccq_status concat_save(const op_io *io, const model *m, int i, ccq_err *err)
{
    (void)m, (void)i;
    return h5io_write_attr_ints(io->f, io->obj, "axis", &io->nd->axis, 1, 1, err);
}

/* Input j (or the output, j = -1) per image as [outer][inner]: the output
 * row `o` is the inputs' rows `o` side by side. nhwc: the integer layout. */
static void cat_geom(const model *m, int i, int j, int nhwc, int64_t *outer, int64_t *inner)
{
    const model_node *nd = &m->nodes[i];
    const model_shape s = j < 0 ? nd->shape : model_in_shape(m, i, j);
    if (s.rank == 1) {
        *outer = 1, *inner = s.c;
        return;
    }
    const int64_t C = s.c, H = s.h, W = s.w;
    switch (nd->axis) {
    case 0: *outer = nhwc ? H * W : 1, *inner = nhwc ? C : C * H * W; break;
    case 1: *outer = nhwc ? 1 : C, *inner = nhwc ? H * W * C : H * W; break;
    default: *outer = nhwc ? H : C * H, *inner = nhwc ? W * C : W; break;
    }
}

static void concat_ffwd(const model *m, int i, const float *const *x, float *y, float *scratch)
{
    (void)scratch;
    int64_t outer, oin, off = 0;
    cat_geom(m, i, -1, 0, &outer, &oin);
    for (int j = 0; j < m->nodes[i].n_in; j++) {
        int64_t o2, in;
        cat_geom(m, i, j, 0, &o2, &in);
        for (int64_t o = 0; o < outer; o++) memcpy(y + o * oin + off, x[j] + o * in, sizeof(float) * (size_t)in);
        off += in;
    }
}

static ccq_status concat_qinit(qnet *q, int i, ccq_err *err)
{
    const model *m = q->m;
    const model_node *nd = &m->nodes[i];
    qnet_node *t = &q->nodes[i];
    double mx = 0;
    for (int j = 0; j < nd->n_in; j++) mx = fmax(mx, op_in_scale(m, nd->in[j]) / nd->act_scale);
    int32_t sh = 0;
    if (op_ratio_shift(mx, &sh) || sh - 9 < 1)
        return ccq_fail(err, CCQ_ERR_LIMIT, "%s: node %d (%s): input/output scales too far apart", m->path, i,
                        nd->name);
    sh -= 9;
    if (sh > 30) sh = 30;
    t->cat = ccq_malloc(sizeof(kern_add) * (size_t)nd->n_in);
    for (int j = 0; j < nd->n_in; j++)
        t->cat[j] = (kern_add){.za = op_in_zp(m, nd->in[j]),
                               .am = (int32_t)llround(ldexp(op_in_scale(m, nd->in[j]) / nd->act_scale, sh)),
                               .shift = sh, .zo = nd->act_zp, .lo = 0, .hi = 255};
    return CCQ_OK;
}

static void concat_qfwd(qnet *q, int i, const uint8_t *const *x, uint8_t *y, int n)
{
    const model *m = q->m;
    const qnet_node *t = &q->nodes[i];
    int64_t outer, oin;
    cat_geom(m, i, -1, 1, &outer, &oin);
    for (int img = 0; img < n; img++) {
        int64_t off = 0;
        uint8_t *yi = y + (size_t)img * outer * oin;
        for (int j = 0; j < t->n_in; j++) {
            int64_t o2, in;
            cat_geom(m, i, j, 1, &o2, &in);
            const kern_add *p = &t->cat[j];
            const uint8_t *xj = x[j] + (size_t)img * outer * in;
            const int same = p->am == (INT32_C(1) << p->shift) && p->za == p->zo;
            for (int64_t o = 0; o < outer; o++) {
                uint8_t *dst = yi + o * oin + off;
                const uint8_t *src = xj + o * in;
                if (same)
                    memcpy(dst, src, (size_t)in); /* the formula gives the level itself */
                else
                    for (int64_t k = 0; k < in; k++) dst[k] = kern_add_one(src[k], 0, p);
            }
            off += in;
        }
    }
}

static const char k_concat_code[] =
    "/* concat: output row o (of outer rows of oin bytes) is every input's row o side by side, each\n"
    " * input requantized onto the output's scale by cq_add_one with b = 0. */\n"
    "static void cq_concat(const uint8_t *const *xs, int n, const long *inner, long outer, long oin, const cq_addp *p,\n"
    "                      uint8_t *y)\n"
    "{\n"
    "    long off = 0, o, k;\n"
    "    int j;\n"
    "    for (j = 0; j < n; j++) {\n"
    "        for (o = 0; o < outer; o++)\n"
    "            for (k = 0; k < inner[j]; k++) y[o * oin + off + k] = cq_add_one(xs[j][o * inner[j] + k], 0, &p[j]);\n"
    "        off += inner[j];\n"
    "    }\n"
    "}\n"
    "\n";

static ccq_status concat_cexport(cexport_ctx *x, const qnet *q, int i, ccq_err *err)
{
    (void)err;
    const model *m = q->m;
    const qnet_node *t = &q->nodes[i];
    int64_t outer, oin;
    cat_geom(m, i, -1, 1, &outer, &oin);
    cexport_need(x, CEXPORT_RT_ADDP);
    cexport_code(x, MODEL_OP_CONCAT, k_concat_code);
    cexport_data(x, "static const long n%d_in[%d] = {", i, t->n_in);
    for (int j = 0; j < t->n_in; j++) {
        int64_t o2, in;
        cat_geom(m, i, j, 1, &o2, &in);
        cexport_data(x, "%lldL%s", (long long)in, j + 1 < t->n_in ? ", " : "};\n");
    }
    cexport_data(x, "static const cq_addp n%d_p[%d] = {", i, t->n_in);
    for (int j = 0; j < t->n_in; j++) emit_addp(x, &t->cat[j], j + 1 == t->n_in);
    cexport_data(x, "};\n\n");
    cexport_call(x, "{");
    cexport_call(x, "    const uint8_t *const xs[%d] = {", t->n_in);
    for (int j = 0; j < t->n_in; j++) cexport_call(x, "        %s%s", cexport_in(x, i, j), j + 1 < t->n_in ? "," : "};");
    cexport_call(x, "    cq_concat(xs, %d, n%d_in, %lldL, %lldL, n%d_p, %s);", t->n_in, i, (long long)outer,
                 (long long)oin, i, cexport_out(x, i));
    cexport_call(x, "}");
    return CCQ_OK;
}

const op_traits op_concat = {
    .name = "concat", .min_in = 2, .max_in = MODEL_MAX_IN, .flags = OP_CALIBRATED,
    .load = concat_load, .save = concat_save, .ffwd = concat_ffwd, .qinit = concat_qinit, .qfwd = concat_qfwd,
    .cexport = concat_cexport, .onnx = elem_onnx,
};
