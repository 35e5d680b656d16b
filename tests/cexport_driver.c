/*
 * cexport_driver.c: runs a model exported by `ccq export --format c --name net`
 * over a file of raw images and writes its logits, for test_cexport.py.
 *
 *   driver IMAGES LOGITS [N]
 *
 * IMAGES holds images of NET_INPUT_BYTES bytes each ([C][H][W] uint8, the
 * data file's order), back to back; the first N (default all) are run and
 * LOGITS receives NET_CLASSES int32 per image, little-endian whatever the
 * host. C99 and the standard library only, like the code it drives, so it
 * builds for any target the exported code builds for.
 */
#include <stdio.h>
#include <stdlib.h>

#include "net.h"

int main(int argc, char **argv)
{
    static uint8_t image[NET_INPUT_BYTES];
    int32_t logits[NET_CLASSES];
    long n = 0, limit = argc > 3 ? atol(argv[3]) : -1;
    FILE *in, *out;
    if (argc < 3 || argc > 4) {
        fprintf(stderr, "usage: %s IMAGES LOGITS [N]\n", argv[0]);
        return 2;
    }
    in = fopen(argv[1], "rb");
    out = fopen(argv[2], "wb");
    if (!in || !out) {
        fprintf(stderr, "driver: cannot open %s or %s\n", argv[1], argv[2]);
        return 3;
    }
    while ((limit < 0 || n < limit) && fread(image, 1, sizeof image, in) == sizeof image) {
        unsigned char le[4 * NET_CLASSES];
        int k;
        net_run(image, logits);
        for (k = 0; k < NET_CLASSES; k++) {
            const uint32_t v = (uint32_t)logits[k];
            le[4 * k] = (unsigned char)(v & 0xff);
            le[4 * k + 1] = (unsigned char)(v >> 8 & 0xff);
            le[4 * k + 2] = (unsigned char)(v >> 16 & 0xff);
            le[4 * k + 3] = (unsigned char)(v >> 24 & 0xff);
        }
        if (fwrite(le, 1, sizeof le, out) != sizeof le) {
            fprintf(stderr, "driver: cannot write %s\n", argv[2]);
            return 3;
        }
        n++;
    }
    if (fclose(out) != 0) {
        fprintf(stderr, "driver: cannot write %s\n", argv[2]);
        return 3;
    }
    fclose(in);
    fprintf(stderr, "driver: %ld images\n", n);
    return 0;
}
