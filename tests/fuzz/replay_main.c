/*
 * replay_main.c: replays fuzz inputs through the harnesses without
 * libFuzzer, so that the normal build (any compiler) runs the seed corpora
 * and every crash ever found as an ordinary test (ctest fuzz_replay).
 *
 * fuzz_replay ROOT...: for each ROOT and each harness H, every regular file
 * in ROOT/H/ goes through H's entry point. A crash, a sanitizer report or an
 * abort ends the process, which is the failure; a missing ROOT/H/ is fine
 * (a harness may have no regressions yet), a ROOT that is not a directory is
 * an error. It does not judge what the loader answered: refusing is the
 * expected outcome for most inputs.
 */
#include <dirent.h>
#include <errno.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>

int fuzz_one_cfg(const uint8_t *data, size_t size);
int fuzz_one_model(const uint8_t *data, size_t size);
int fuzz_one_data(const uint8_t *data, size_t size);
int fuzz_one_ckpt(const uint8_t *data, size_t size);

static const struct {
    const char *name;
    int (*one)(const uint8_t *, size_t);
} k_harness[] = {
    {"cfg", fuzz_one_cfg},
    {"model", fuzz_one_model},
    {"data", fuzz_one_data},
    {"ckpt", fuzz_one_ckpt},
};

static int by_name(const void *a, const void *b) { return strcmp(*(char *const *)a, *(char *const *)b); }

/* Runs every file of dir through one; returns the count, -1 on a read error. */
static int replay_dir(const char *dir, int (*one)(const uint8_t *, size_t))
{
    DIR *d = opendir(dir);
    if (!d) return errno == ENOENT ? 0 : -1;
    char **names = NULL;
    size_t n = 0;
    for (struct dirent *e; (e = readdir(d));) {
        if (e->d_name[0] == '.') continue;
        names = realloc(names, sizeof *names * (n + 1));
        names[n++] = strdup(e->d_name);
    }
    closedir(d);
    qsort(names, n, sizeof *names, by_name); /* a fixed order: a failure replays the same way */
    int count = 0;
    for (size_t i = 0; i < n; i++) {
        char path[8192];
        struct stat st;
        snprintf(path, sizeof path, "%s/%s", dir, names[i]);
        if (stat(path, &st) != 0 || !S_ISREG(st.st_mode)) continue;
        FILE *f = fopen(path, "rb");
        /* exactly the file's size: a read past the input is caught by ASan */
        uint8_t *buf = malloc(st.st_size ? (size_t)st.st_size : 1);
        if (!f || !buf || fread(buf, 1, (size_t)st.st_size, f) != (size_t)st.st_size) {
            fprintf(stderr, "fuzz_replay: %s: cannot read\n", path);
            exit(1);
        }
        fclose(f);
        one(buf, (size_t)st.st_size);
        free(buf);
        count++;
    }
    for (size_t i = 0; i < n; i++) free(names[i]);
    free(names);
    return count;
}

int main(int argc, char **argv)
{
    if (argc < 2) {
        fprintf(stderr, "usage: fuzz_replay ROOT... (each with subfolders cfg, model, data, ckpt)\n");
        return 2;
    }
    for (int a = 1; a < argc; a++) {
        struct stat st;
        if (stat(argv[a], &st) != 0 || !S_ISDIR(st.st_mode)) {
            fprintf(stderr, "fuzz_replay: %s: not a directory\n", argv[a]);
            return 2;
        }
        for (size_t h = 0; h < sizeof k_harness / sizeof k_harness[0]; h++) {
            char dir[4096];
            snprintf(dir, sizeof dir, "%s/%s", argv[a], k_harness[h].name);
            const int n = replay_dir(dir, k_harness[h].one);
            if (n < 0) {
                fprintf(stderr, "fuzz_replay: %s: cannot list\n", dir);
                return 1;
            }
            printf("fuzz_replay: %s: %d inputs, no crash\n", dir, n);
        }
    }
    return 0;
}
