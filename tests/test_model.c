/*
 * test_model.c: the HDF5 readers (model_load, data_load) on the fixtures made
 * by tests/make_fixtures.py: a good tiny model is read field by field and its
 * forward pass matches PyTorch's layers; every broken variant is refused with
 * its own status and a message naming the file and the problem.
 *
 * usage: test_model FIXTURE_DIR
 */
#include <math.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <string.h>

#include <cmocka.h>

#include "ccq/data.h"
#include "ccq/fnet.h"
#include "ccq/h5io.h"
#include "ccq/model.h"

static const char *g_dir;

static const char *fx(const char *name)
{
    static char buf[4][1024];
    static int k;
    k = (k + 1) % 4;
    snprintf(buf[k], sizeof buf[k], "%s/%s", g_dir, name);
    return buf[k];
}

static void check_tiny(const model *m)
{
    assert_string_equal(m->name, "tiny");
    assert_int_equal(m->n_nodes, 6);
    assert_int_equal(m->input.c, 1);
    assert_int_equal(m->input.h, 4);
    assert_true(m->mean[0] == 0.5f && m->std[0] == 0.25f);
    assert_int_equal(m->classes, 3);
    assert_int_equal(m->output, 5);
    const model_node *c = &m->nodes[0];
    assert_int_equal(c->op, MODEL_OP_CONV2D);
    assert_int_equal(c->in[0], -1);
    assert_int_equal(c->shape.c, 2);
    assert_int_equal(c->kernel[0], 3);
    assert_int_equal(c->pad[3], 1);
    assert_true(fabsf(c->weight[17] - 0.9f) < 1e-6f);
    assert_true(c->bias[1] == -0.25f);
    assert_int_equal(m->nodes[1].op, MODEL_OP_BATCHNORM);
    assert_true(fabsf(m->nodes[1].eps - 1e-5f) < 1e-12f);
    assert_int_equal(m->nodes[3].shape.h, 2);
    assert_int_equal(m->nodes[4].shape.rank, 1);
    assert_int_equal(m->nodes[4].shape.c, 8);
    /* conv 18+2, bn 4*2, linear 24+3 */
    assert_int_equal(model_params(m), 55);
    /* conv 18 weights x 16 positions, linear 24 */
    assert_int_equal(model_macs(m), 288 + 24);
}

static void test_tiny_loads(void **state)
{
    (void)state;
    model m;
    ccq_err err = {{0}};
    assert_int_equal(model_load(&m, fx("tiny.h5"), &err), CCQ_OK);
    check_tiny(&m);
    model_free(&m);
    /* variable-length strings (what h5py writes for str) read the same */
    assert_int_equal(model_load(&m, fx("tiny_vlen.h5"), &err), CCQ_OK);
    check_tiny(&m);
    model_free(&m);
}

/* The op table's newer ops: fields as written by make_fixtures.py, and a
 * model_save / model_load round trip that keeps every one of them. */
static void check_ops(const model *m)
{
    assert_int_equal(m->n_nodes, 13);
    assert_int_equal(m->nodes[1].groups, 2);
    assert_int_equal(m->nodes[6].groups, 2);
    assert_int_equal(m->nodes[6].shape.h, 2);
    assert_int_equal(m->nodes[6].n_weight, 4 * 1 * 3 * 3);
    assert_true(m->nodes[2].clip[0] == -1.0f && m->nodes[2].clip[1] == 2.0f);
    assert_int_equal(m->nodes[3].fn, MODEL_ACT_SIGMOID);
    assert_int_equal(m->nodes[4].step[2], 2);
    assert_int_equal(m->nodes[5].pads[0], 1);
    assert_int_equal(m->nodes[5].pads[3], 1);
    assert_int_equal(m->nodes[5].shape.c, 4);
    assert_int_equal(m->nodes[8].axis, 0);
    assert_int_equal(m->nodes[8].shape.c, 8);
    assert_int_equal(m->nodes[10].n_in, 2);
    assert_int_equal(m->nodes[10].in[1], 9);
    /* macs: c1 18x16, dw 18x16, gc 36x4, fc 96 */
    assert_int_equal(model_macs(m), 288 + 288 + 144 + 96);
}

static void test_ops_load_and_round_trip(void **state)
{
    (void)state;
    model m, r;
    ccq_err err = {{0}};
    assert_int_equal(model_load(&m, fx("tiny_ops.h5"), &err), CCQ_OK);
    check_ops(&m);
    const char *out = fx("tiny_ops_saved.h5");
    assert_int_equal(model_save(&m, out, &err), CCQ_OK);
    assert_int_equal(model_load(&r, out, &err), CCQ_OK);
    check_ops(&r);
    for (int i = 0; i < m.n_nodes; i++) {
        const model_node *a = &m.nodes[i], *b = &r.nodes[i];
        assert_int_equal(a->op, b->op);
        assert_memory_equal(a->in, b->in, sizeof(int) * (size_t)a->n_in);
        assert_memory_equal(&a->shape, &b->shape, sizeof a->shape);
        assert_int_equal(a->n_weight, b->n_weight);
        if (a->n_weight) assert_memory_equal(a->weight, b->weight, sizeof(float) * (size_t)a->n_weight);
    }
    model_free(&m);
    model_free(&r);
}

static void test_tiny_forward_matches_torch(void **state)
{
    (void)state;
    model m;
    data_split d;
    fnet net;
    ccq_err err = {{0}};
    h5io_file f;
    float want[4 * 3];
    hsize_t dims[2] = {4, 3};
    assert_int_equal(model_load(&m, fx("tiny.h5"), &err), CCQ_OK);
    assert_int_equal(data_load(&d, fx("tiny_data.h5"), "test", -1, &err), CCQ_OK);
    assert_int_equal(d.n, 4);
    assert_int_equal(data_check_fits(&d, &m, &err), CCQ_OK);
    assert_int_equal(h5io_file_open(&f, fx("tiny_expected.h5"), &err), CCQ_OK);
    assert_int_equal(h5io_dset_read(&f, "/", "logits", H5T_NATIVE_FLOAT, 2, dims, -1, want, &err), CCQ_OK);
    h5io_file_close(&f, &err);
    fnet_init(&net, &m);
    for (int i = 0; i < 4; i++) {
        const float *lg = fnet_forward(&net, d.images + 16 * i);
        for (int k = 0; k < 3; k++) {
            if (fabsf(lg[k] - want[3 * i + k]) > 1e-5f * (1.0f + fabsf(want[3 * i + k]))) {
                print_error("image %d logit %d: %.7g vs torch %.7g\n", i, k, (double)lg[k], (double)want[3 * i + k]);
                fail();
            }
        }
    }
    fnet_free(&net);
    data_free(&d);
    model_free(&m);
}

static void expect_model_error(const char *file, ccq_status want, const char *needle)
{
    model m;
    ccq_err err = {{0}};
    ccq_status st = model_load(&m, fx(file), &err);
    if (st != want || !strstr(err.msg, needle) || !strstr(err.msg, file)) {
        print_error("%s: status %d (want %d), message '%s' (want '%s')\n", file, st, want, err.msg, needle);
        fail();
    }
    assert_null(m.nodes); /* nothing left half-loaded */
}

static void test_bad_models(void **state)
{
    (void)state;
    expect_model_error("does_not_exist.h5", CCQ_ERR_IO, "no such file");
    expect_model_error("not_hdf5.h5", CCQ_ERR_FORMAT, "not an HDF5 file");
    expect_model_error("truncated.h5", CCQ_ERR_FORMAT, "truncated or damaged");
    expect_model_error("foreign.h5", CCQ_ERR_FORMAT, "not a ccq model file");
    expect_model_error("tiny_data.h5", CCQ_ERR_FORMAT, "format is 'ccq-data'");
    expect_model_error("bad_nan.h5", CCQ_ERR_FORMAT, "/nodes/0000 (conv2d conv): weight has a non-finite value (nan) at element 17");
    expect_model_error("bad_shape.h5", CCQ_ERR_FORMAT, "stored shape [2,3,3] but the graph gives [2,2,2]");
    expect_model_error("bad_weight_dims.h5", CCQ_ERR_FORMAT, "/nodes/0005/weight: expected shape [3,8], found [3,9]");
    expect_model_error("bad_op.h5", CCQ_ERR_FORMAT, "unknown op 'sigmoid'");
    expect_model_error("bad_inputs.h5", CCQ_ERR_FORMAT, "input 3 is not an earlier node");
    expect_model_error("bad_missing_attr.h5", CCQ_ERR_FORMAT, "/nodes/0000/stride: missing attribute");
    expect_model_error("bad_version.h5", CCQ_ERR_FORMAT, "model format version 2");
    expect_model_error("bad_var.h5", CCQ_ERR_FORMAT, "var + eps is not positive at channel 1");
    /* the op table's ops: one broken variant of tiny_ops.h5 per check */
    expect_model_error("bad_groups.h5", CCQ_ERR_FORMAT, "(conv2d dw): groups = 3 does not divide Cin = 2 and Cout = 2");
    expect_model_error("bad_slice.h5", CCQ_ERR_FORMAT, "(slice sub): axis 2 reads elements 3 to 5 of 4");
    expect_model_error("bad_slice_step.h5", CCQ_ERR_FORMAT, "(slice sub): step of axis 1 is 0");
    expect_model_error("bad_concat.h5", CCQ_ERR_FORMAT, "(concat cat): input 1 [2,2,2] does not fit input 0 [4,2,2] along axis 1");
    expect_model_error("bad_act.h5", CCQ_ERR_FORMAT, "(act sig): unknown function fn = 'swish'");
    expect_model_error("bad_clip.h5", CCQ_ERR_FORMAT, "(clip clip): min = -1 is above max = -2");
    expect_model_error("bad_mul.h5", CCQ_ERR_FORMAT, "(mul gate): multiplies [8,2,2] by [2,2,2]");
    expect_model_error("bad_arity.h5", CCQ_ERR_FORMAT, "(concat cat): has 1 inputs, expected 2 to 64");
    expect_model_error("bad_pad.h5", CCQ_ERR_FORMAT, "(pad chpad): attribute pads = -1 is outside [0, 65536]");
    expect_model_error("bad_fused_clip.h5", CCQ_ERR_FORMAT, "(slice sub): a fused clip on an op that cannot fuse it");
}

static void test_data(void **state)
{
    (void)state;
    data_split d;
    model m;
    ccq_err err = {{0}};
    assert_int_equal(data_load(&d, fx("tiny_data.h5"), "train", 4, &err), CCQ_OK);
    assert_int_equal(d.n, 4);
    assert_int_equal(d.n_file, 6);
    assert_int_equal(d.classes, 3);
    assert_int_equal(d.labels[3], 0);
    data_free(&d);

    assert_int_equal(model_load(&m, fx("tiny.h5"), &err), CCQ_OK);
    assert_int_equal(data_load(&d, fx("data_5x5.h5"), "test", -1, &err), CCQ_OK);
    assert_int_equal(data_check_fits(&d, &m, &err), CCQ_ERR_MISMATCH);
    assert_non_null(strstr(err.msg, "images are 1x5x5 (CxHxW) but model"));
    data_free(&d);
    model_free(&m);

    assert_int_equal(data_load(&d, fx("data_badlabel.h5"), "train", -1, &err), CCQ_ERR_FORMAT);
    assert_non_null(strstr(err.msg, "/train/labels[1] = 3 is outside [0, 3)"));
    assert_int_equal(data_load(&d, fx("tiny_data.h5"), "val", -1, &err), CCQ_ERR_FORMAT);
    assert_non_null(strstr(err.msg, "no 'val' split"));
    assert_int_equal(data_load(&d, fx("tiny.h5"), "test", -1, &err), CCQ_ERR_FORMAT);
    assert_non_null(strstr(err.msg, "not a ccq data file"));
    assert_int_equal(data_load(&d, fx("truncated.h5"), "test", -1, &err), CCQ_ERR_FORMAT);
    assert_null(d.images);
}

int main(int argc, char **argv)
{
    if (argc != 2) {
        fprintf(stderr, "usage: test_model FIXTURE_DIR\n");
        return 2;
    }
    g_dir = argv[1];
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_tiny_loads),
        cmocka_unit_test(test_tiny_forward_matches_torch),
        cmocka_unit_test(test_ops_load_and_round_trip),
        cmocka_unit_test(test_bad_models),
        cmocka_unit_test(test_data),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
