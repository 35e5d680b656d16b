/*
 * outpath.c: output paths checked before any compute (outpath.h).
 */
#define _DEFAULT_SOURCE /* realpath */
#include "ccq/outpath.h"

#include <errno.h>
#include <limits.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#define OP_MAX 4096

/* Splits p into its directory part (dir, "." if none, "/" for the root) and last component (base). */
static void split(const char *p, char *dir, char *base)
{
    char t[OP_MAX];
    snprintf(t, sizeof t, "%s", p);
    size_t n = strlen(t);
    while (n > 1 && t[n - 1] == '/') t[--n] = '\0';
    char *slash = strrchr(t, '/');
    if (!slash) {
        strcpy(dir, ".");
        snprintf(base, OP_MAX, "%s", t);
    } else if (slash == t) {
        strcpy(dir, "/");
        snprintf(base, OP_MAX, "%s", slash + 1);
    } else {
        *slash = '\0';
        snprintf(dir, OP_MAX, "%s", t);
        snprintf(base, OP_MAX, "%s", slash + 1);
    }
}

/* The absolute, symlink-free spelling of p, whether p exists or not: the
 * deepest existing ancestor through realpath(3), the rest lexically.
 * 0 on success, -1 if the path is too long or unresolvable. */
static int canonical(const char *p, char *out, int depth)
{
    if (depth > 256 || !*p || strlen(p) >= OP_MAX) return -1;
    char r[PATH_MAX];
    if (realpath(p, r)) {
        snprintf(out, OP_MAX, "%s", r);
        return 0;
    }
    char dir[OP_MAX], base[OP_MAX];
    split(p, dir, base);
    if (!strcmp(dir, p)) return -1; /* "/" or "." that realpath refused */
    if (canonical(dir, out, depth + 1)) return -1;
    if (!strcmp(base, ".") || !*base) return 0;
    if (!strcmp(base, "..")) {
        char *slash = strrchr(out, '/');
        if (slash && slash != out) *slash = '\0';
        else strcpy(out, "/");
        return 0;
    }
    size_t n = strlen(out);
    if (n + 1 + strlen(base) >= OP_MAX) return -1;
    if (n > 1) out[n++] = '/';
    strcpy(out + n, base);
    return 0;
}

int outpath_same(const char *a, const char *b)
{
    struct stat sa, sb;
    if (stat(a, &sa) == 0 && stat(b, &sb) == 0) return sa.st_dev == sb.st_dev && sa.st_ino == sb.st_ino;
    char ca[OP_MAX], cb[OP_MAX];
    if (canonical(a, ca, 0) || canonical(b, cb, 0)) return !strcmp(a, b);
    return !strcmp(ca, cb);
}

static int used(const outpath_item *it) { return it->path && it->path[0]; }

/* mkdir -p of dir. */
static ccq_status make_dir(const char *dir, const outpath_item *o, ccq_err *err)
{
    char t[OP_MAX];
    snprintf(t, sizeof t, "%s", dir);
    for (char *p = t + 1; *p; p++) {
        if (*p != '/') continue;
        *p = '\0';
        if (mkdir(t, 0777) != 0 && errno != EEXIST)
            return ccq_fail(err, CCQ_ERR_IO, "%s: cannot create directory %s for %s: %s", o->path, t, o->role,
                            strerror(errno));
        *p = '/';
    }
    if (mkdir(t, 0777) != 0 && errno != EEXIST)
        return ccq_fail(err, CCQ_ERR_IO, "%s: cannot create directory %s for %s: %s", o->path, t, o->role,
                        strerror(errno));
    return CCQ_OK;
}

ccq_status outpath_check(const outpath_item *inputs, int n_in, const outpath_item *outputs, int n_out, int make_dirs,
                         ccq_err *err)
{
    struct stat s;
    /* 1. what is there already, and aliasing: no side effect yet */
    for (int i = 0; i < n_out; i++) {
        const outpath_item *o = &outputs[i];
        if (!used(o)) continue;
        if (strlen(o->path) >= OP_MAX - 16) return ccq_fail(err, CCQ_ERR_IO, "%.200s...: %s: path too long", o->path, o->role);
        if (stat(o->path, &s) == 0) {
            if (S_ISDIR(s.st_mode)) return ccq_fail(err, CCQ_ERR_IO, "%s: %s is a directory", o->path, o->role);
            if (!S_ISREG(s.st_mode))
                return ccq_fail(err, CCQ_ERR_IO, "%s: %s is not a regular file (a FIFO or device would block or be lost)",
                                o->path, o->role);
        } else if (errno != ENOENT && errno != ENOTDIR) {
            return ccq_fail(err, CCQ_ERR_IO, "%s: %s: %s", o->path, o->role, strerror(errno));
        }
        for (int j = 0; j < n_in; j++)
            if (used(&inputs[j]) && outpath_same(o->path, inputs[j].path))
                return ccq_fail(err, CCQ_ERR_USAGE, "%s: %s would overwrite %s (%s)", o->path, o->role, inputs[j].role,
                                inputs[j].path);
        for (int j = 0; j < i; j++)
            if (used(&outputs[j]) && outpath_same(o->path, outputs[j].path))
                return ccq_fail(err, CCQ_ERR_USAGE, "%s: %s and %s (%s) are the same file", o->path, o->role,
                                outputs[j].role, outputs[j].path);
    }
    /* 2. each output's directory: made if asked, then a writable directory */
    for (int i = 0; i < n_out; i++) {
        const outpath_item *o = &outputs[i];
        if (!used(o)) continue;
        char dir[OP_MAX], base[OP_MAX];
        split(o->path, dir, base);
        if (stat(dir, &s) != 0) {
            if (!make_dirs || (errno != ENOENT))
                return ccq_fail(err, CCQ_ERR_IO, "%s: directory %s for %s: %s", o->path, dir, o->role, strerror(errno));
            ccq_status st = make_dir(dir, o, err);
            if (st) return st;
            if (stat(dir, &s) != 0)
                return ccq_fail(err, CCQ_ERR_IO, "%s: directory %s for %s: %s", o->path, dir, o->role, strerror(errno));
        }
        if (!S_ISDIR(s.st_mode)) return ccq_fail(err, CCQ_ERR_IO, "%s: %s for %s is not a directory", o->path, dir, o->role);
        if (access(dir, W_OK | X_OK) != 0)
            return ccq_fail(err, CCQ_ERR_IO, "%s: directory %s for %s is not writable", o->path, dir, o->role);
        if (access(o->path, F_OK) == 0 && access(o->path, W_OK) != 0)
            return ccq_fail(err, CCQ_ERR_IO, "%s: %s is not writable", o->path, o->role);
    }
    return CCQ_OK;
}
