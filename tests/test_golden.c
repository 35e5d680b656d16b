/*
 * test_golden.c: the float reference forward pass against PyTorch on a real
 * model. The golden file (written by scripts/train_reference.py from the
 * PyTorch model that was exported) holds PyTorch's logits for the first
 * 1,000 test images and its predictions on the whole test split.
 *
 * Checks: per image, max |ccq - torch| <= 1e-4 * max |torch logit| over the
 * first 1,000 images; test accuracy equal to PyTorch's within 0.01 points.
 *
 * usage: test_golden MODEL.h5 DATA.h5 GOLDEN.h5
 */
#include <math.h>
#include <stdio.h>
#include <stdlib.h>

#include "ccq/data.h"
#include "ccq/fnet.h"
#include "ccq/h5io.h"
#include "ccq/model.h"

#define N_LOGITS 1000
#define REL_TOL 1e-4
#define ACC_TOL 0.01

int main(int argc, char **argv)
{
    if (argc != 4) {
        fprintf(stderr, "usage: test_golden MODEL.h5 DATA.h5 GOLDEN.h5\n");
        return 2;
    }
    model m;
    data_split d;
    h5io_file g;
    ccq_err err = {{0}};
    ccq_status st;
    if ((st = model_load(&m, argv[1], &err)) || (st = data_load(&d, argv[2], "test", -1, &err)) ||
        (st = data_check_fits(&d, &m, &err)) || (st = h5io_file_open(&g, argv[3], &err))) {
        fprintf(stderr, "test_golden: %s\n", err.msg);
        return 1;
    }
    float *want = malloc(sizeof(float) * N_LOGITS * (size_t)m.classes);
    int32_t *pred = malloc(sizeof(int32_t) * (size_t)d.n);
    float torch_acc = 0;
    hsize_t ld[2] = {N_LOGITS, (hsize_t)m.classes}, pd[1] = {(hsize_t)d.n};
    if ((st = h5io_dset_read(&g, "/", "logits", H5T_NATIVE_FLOAT, 2, ld, -1, want, &err)) ||
        (st = h5io_dset_read(&g, "/", "predictions", H5T_NATIVE_INT32, 1, pd, -1, pred, &err)) ||
        (st = h5io_attr_floats_n(&g, "/", "accuracy", &torch_acc, 1, &err))) {
        fprintf(stderr, "test_golden: %s\n", err.msg);
        return 1;
    }
    h5io_file_close(&g, &err);

    fnet net;
    fnet_init(&net, &m);
    const int64_t per = (int64_t)d.c * d.h * d.w;
    double worst = 0;
    int worst_i = -1, correct = 0, torch_correct = 0, differ = 0;
    for (int i = 0; i < d.n; i++) {
        const float *lg = fnet_forward(&net, d.images + per * i);
        int p = fnet_argmax(lg, m.classes);
        correct += p == d.labels[i];
        torch_correct += pred[i] == d.labels[i];
        differ += p != pred[i];
        if (i < N_LOGITS) {
            double mx = 0, diff = 0;
            for (int k = 0; k < m.classes; k++) {
                const double t = want[(int64_t)i * m.classes + k];
                if (fabs(t) > mx) mx = fabs(t);
                if (fabs(lg[k] - t) > diff) diff = fabs(lg[k] - t);
            }
            const double rel = diff / (mx > 0 ? mx : 1);
            if (rel > worst) worst = rel, worst_i = i;
        }
    }
    fnet_free(&net);
    const double acc = 100.0 * correct / d.n, tacc = 100.0 * torch_correct / d.n;
    printf("%s: ccq %.2f%% (%d/%d), torch %.2f%% (stored %.2f%%), %d predictions differ; "
           "worst logit error %.3g relative (image %d)\n",
           m.name, acc, correct, d.n, tacc, (double)torch_acc, differ, worst, worst_i);
    int fails = 0;
    if (!(worst <= REL_TOL)) {
        printf("FAIL: logit error %.3g > %.0e\n", worst, REL_TOL);
        fails++;
    }
    if (fabs(acc - tacc) > ACC_TOL + 1e-9) {
        printf("FAIL: accuracy differs by %.4f points > %.2f\n", fabs(acc - tacc), ACC_TOL);
        fails++;
    }
    if (fabs(tacc - torch_acc) > 1e-3) {
        printf("FAIL: stored torch accuracy %.4f does not match its predictions %.4f\n", (double)torch_acc, tacc);
        fails++;
    }
    free(want);
    free(pred);
    data_free(&d);
    model_free(&m);
    printf("%d passed, %d failed\n", 3 - fails, fails);
    return fails ? 1 : 0;
}
