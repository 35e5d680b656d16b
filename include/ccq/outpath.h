/*
 * outpath.h: the paths a command will write, checked before any compute
 * (contract 4): an output must not be an input or another output (compared
 * as files: hard links, symbolic links and "a/../b" spellings included), must
 * not be a directory, a FIFO or another non-regular file, and its directory
 * must exist (or be creatable, when asked) and be writable.
 * Every problem is one line naming the path and which role it plays:
 * aliasing is CCQ_ERR_USAGE (the command line or config names the same file
 * twice), the rest CCQ_ERR_IO.
 */
#ifndef CCQ_OUTPATH_H
#define CCQ_OUTPATH_H

#include "ccq/common.h"

/* One path and its role as the user names it ("run.log", "-o", "model.model"). */
typedef struct {
    const char *role;
    const char *path; /* NULL or "" entries are skipped */
} outpath_item;

/* Checks outputs against inputs and each other, then (make_dirs) creates the
 * missing parent directories; nothing is created if any check fails before. */
ccq_status outpath_check(const outpath_item *inputs, int n_in, const outpath_item *outputs, int n_out, int make_dirs,
                         ccq_err *err);

/* 1 if a and b name the same file (existing or not). */
int outpath_same(const char *a, const char *b);

#endif
