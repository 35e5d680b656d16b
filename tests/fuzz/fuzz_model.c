/*
 * fuzz_model.c: libFuzzer harness for the model loader (model_load), float
 * and quantized model files alike (the file's own attributes say which).
 */
#include "ccq/model.h"
#include "fuzz_common.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    const char *path = fuzz_write("model", data, size);
    model m;
    ccq_err err;
    if (model_load(&m, path, &err) == CCQ_OK) {
        /* what every command does next with a loaded model */
        int64_t params = 0;
        for (int i = 0; i < m.n_nodes; i++) params += model_node_params(&m, i);
        (void)params;
    }
    model_free(&m);
    fuzz_check_h5("model");
    return 0;
}
