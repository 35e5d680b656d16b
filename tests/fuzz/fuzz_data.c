/*
 * fuzz_data.c: libFuzzer harness for the data loader (data_load): the whole
 * train split, and the first images of the test split (as eval --limit).
 */
#include "ccq/data.h"
#include "fuzz_common.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    const char *path = fuzz_write("data", data, size);
    data_split d;
    ccq_err err;
    data_load(&d, path, "train", -1, &err);
    data_free(&d);
    fuzz_check_h5("data");
    data_load(&d, path, "test", 3, &err);
    data_free(&d);
    fuzz_check_h5("data");
    return 0;
}
