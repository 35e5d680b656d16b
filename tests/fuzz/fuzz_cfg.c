/*
 * fuzz_cfg.c: libFuzzer harness for the INI configuration parser (cfg_load),
 * followed by the echo of what it accepted (cfg_write).
 */
#include "ccq/cfg.h"
#include "fuzz_common.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    const char *path = fuzz_write("cfg", data, size);
    cfg_search c;
    ccq_err err;
    cfg_defaults(&c);
    if (cfg_load(&c, path, &err) == CCQ_OK) {
        FILE *out = fopen("/dev/null", "w");
        if (out) {
            cfg_write(&c, out);
            fclose(out);
        }
    }
    return 0;
}
