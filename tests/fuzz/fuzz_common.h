/*
 * fuzz_common.h: what the fuzz harnesses share. Every ccq loader takes a
 * path, so a harness writes the input bytes to one temporary file (made once
 * per process, removed at exit) and calls the real loader on it.
 *
 * Each harness also checks that the loader closed every HDF5 object it
 * opened: a handle left open is invisible to LeakSanitizer (HDF5 keeps it in
 * its own tables) but makes the next open of the same path share the stale
 * file, so it is reported as a crash here.
 *
 * Built two ways (tests/fuzz/CMakeLists.txt): with libFuzzer's main under
 * clang (CCQ_FUZZ=ON), and with replay_main.c by any compiler, where
 * LLVMFuzzerTestOneInput is renamed per harness so that one replay binary
 * holds all four.
 */
#ifndef CCQ_FUZZ_COMMON_H
#define CCQ_FUZZ_COMMON_H

#include <hdf5.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

static char fuzz_tmp[512];

static inline void fuzz_cleanup(void)
{
    if (fuzz_tmp[0]) unlink(fuzz_tmp);
}

/* Writes the input to the temporary file and returns its path. */
static inline const char *fuzz_write(const char *harness, const uint8_t *data, size_t size)
{
    if (!fuzz_tmp[0]) {
        const char *dir = getenv("TMPDIR");
        snprintf(fuzz_tmp, sizeof fuzz_tmp, "%s/ccq-fuzz-%s-%ld", dir && *dir ? dir : "/tmp", harness,
                 (long)getpid());
        atexit(fuzz_cleanup);
    }
    FILE *f = fopen(fuzz_tmp, "wb");
    if (!f || (size && fwrite(data, 1, size, f) != size) || fclose(f) != 0) {
        fprintf(stderr, "fuzz: cannot write %s\n", fuzz_tmp);
        abort();
    }
    return fuzz_tmp;
}

/* Aborts if the loader left an HDF5 object open. */
static inline void fuzz_check_h5(const char *harness)
{
    const ssize_t open = H5Fget_obj_count(H5F_OBJ_ALL, H5F_OBJ_ALL);
    if (open != 0) {
        fprintf(stderr, "fuzz_%s: %zd HDF5 objects left open by the loader\n", harness, open);
        abort();
    }
}

#endif
