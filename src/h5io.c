/*
 * h5io.c: checked HDF5 attribute and dataset access for ccq files.
 * Every call into HDF5 is checked; on failure the function releases what it
 * opened (one `fail:`-style cleanup per function) and reports the file and
 * object. It does not interpret content.
 */
#include "ccq/h5io.h"

#include <errno.h>
#include <fcntl.h>
#include <signal.h>
#include <stdio.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

/* "obj/name" for messages, without a doubled slash at the root. */
static const char *objname(char *buf, size_t n, const char *obj, const char *name)
{
    if (!name || !*name)
        snprintf(buf, n, "%s", obj);
    else if (strcmp(obj, "/") == 0)
        snprintf(buf, n, "/%s", name);
    else
        snprintf(buf, n, "%s/%s", obj, name);
    return buf;
}

static void dims_str(char *buf, size_t n, int rank, const hsize_t *d)
{
    size_t off = 0;
    off += (size_t)snprintf(buf + off, n - off, "[");
    for (int i = 0; i < rank && off < n; i++)
        off += (size_t)snprintf(buf + off, n - off, "%s%llu", i ? "," : "", (unsigned long long)d[i]);
    if (off < n) snprintf(buf + off, n - off, "]");
}

ccq_status h5io_file_open(h5io_file *f, const char *path, ccq_err *err)
{
    struct stat st;
    f->id = H5I_INVALID_HID;
    snprintf(f->path, sizeof f->path, "%s", path);
    H5Eset_auto2(H5E_DEFAULT, NULL, NULL);
    if (stat(path, &st) != 0)
        return ccq_fail(err, CCQ_ERR_IO, "%s: %s", path, errno == ENOENT ? "no such file" : strerror(errno));
    if (S_ISDIR(st.st_mode)) return ccq_fail(err, CCQ_ERR_IO, "%s: is a directory, not a file", path);
    if (!S_ISREG(st.st_mode)) return ccq_fail(err, CCQ_ERR_IO, "%s: not a regular file (a FIFO or device)", path);
    FILE *fp = fopen(path, "rb");
    if (!fp) return ccq_fail(err, CCQ_ERR_IO, "%s: cannot read: %s", path, strerror(errno));
    fclose(fp);
    htri_t is = H5Fis_hdf5(path);
    if (is <= 0) return ccq_fail(err, CCQ_ERR_FORMAT, "%s: not an HDF5 file", path);
    f->id = H5Fopen(path, H5F_ACC_RDONLY, H5P_DEFAULT);
    if (f->id < 0)
        return ccq_fail(err, CCQ_ERR_FORMAT, "%s: cannot open HDF5 file (truncated or damaged)", path);
    return CCQ_OK;
}

ccq_status h5io_file_create(h5io_file *f, const char *path, ccq_err *err)
{
    H5Eset_auto2(H5E_DEFAULT, NULL, NULL);
    snprintf(f->path, sizeof f->path, "%s", path);
    f->id = H5Fcreate(path, H5F_ACC_TRUNC, H5P_DEFAULT, H5P_DEFAULT);
    if (f->id < 0) return ccq_fail(err, CCQ_ERR_IO, "%s: cannot create HDF5 file", path);
    return CCQ_OK;
}

ccq_status h5io_file_close(h5io_file *f, ccq_err *err)
{
    ccq_status st = CCQ_OK;
    if (f->id >= 0) {
        if (H5Fflush(f->id, H5F_SCOPE_GLOBAL) < 0 || H5Fclose(f->id) < 0)
            st = ccq_fail(err, CCQ_ERR_IO, "%s: error while closing HDF5 file", f->path);
    }
    f->id = H5I_INVALID_HID;
    return st;
}

int h5io_exists(const h5io_file *f, const char *obj, const char *name)
{
    char full[512];
    objname(full, sizeof full, obj, name);
    /* H5Lexists fails on a missing intermediate group: walk the path. */
    char part[512];
    size_t n = strlen(full);
    for (size_t i = 1; i <= n; i++) {
        if (full[i] == '/' || full[i] == '\0') {
            memcpy(part, full, i);
            part[i] = '\0';
            if (H5Lexists(f->id, part, H5P_DEFAULT) <= 0) return 0;
        }
    }
    return 1;
}

/* Opens attribute name of obj; reports missing object/attribute. */
static hid_t attr_open(const h5io_file *f, const char *obj, const char *name, ccq_err *err, ccq_status *st)
{
    char full[512];
    if (strcmp(obj, "/") != 0 && !h5io_exists(f, obj, NULL)) {
        *st = ccq_fail(err, CCQ_ERR_FORMAT, "%s: missing group %s", f->path, obj);
        return H5I_INVALID_HID;
    }
    htri_t ex = H5Aexists_by_name(f->id, obj, name, H5P_DEFAULT);
    if (ex <= 0) {
        *st = ccq_fail(err, CCQ_ERR_FORMAT, "%s: %s: %s", f->path, objname(full, sizeof full, obj, name),
                       ex < 0 ? "unreadable attribute table (damaged file)" : "missing attribute");
        return H5I_INVALID_HID;
    }
    hid_t a = H5Aopen_by_name(f->id, obj, name, H5P_DEFAULT, H5P_DEFAULT);
    if (a < 0)
        *st = ccq_fail(err, CCQ_ERR_FORMAT, "%s: %s: cannot open attribute", f->path,
                       objname(full, sizeof full, obj, name));
    return a;
}

/* A watchdog around HDF5's read of a variable-length string: on a damaged global heap entry
 * Debian's HDF5 1.10 loops forever or faults inside H5C_protect (tests/fuzz/hdf5/), before ccq
 * sees a byte. Such a read takes microseconds on a sound file; after GUARD_SECONDS, or on a fault
 * inside it, the process says which file and ends with the format error's exit code (4). Only
 * async-signal-safe calls in the handler. */
#define GUARD_SECONDS 10
static char g_guard_msg[1400];
static size_t g_guard_len;

static void guard_fire(int sig)
{
    (void)sig;
    ssize_t w = write(STDERR_FILENO, g_guard_msg, g_guard_len);
    (void)w;
    _exit(CCQ_ERR_FORMAT);
}

typedef struct {
    struct sigaction alrm, segv, bus;
} guard_saved;

static void guard_begin(guard_saved *g, const char *path, const char *full)
{
    g_guard_len = (size_t)snprintf(g_guard_msg, sizeof g_guard_msg,
                                   "ccq: %s: %s: HDF5 failed or hung reading this string (damaged file)\n", path, full);
    if (g_guard_len >= sizeof g_guard_msg) g_guard_len = sizeof g_guard_msg - 1;
    struct sigaction sa;
    memset(&sa, 0, sizeof sa);
    sa.sa_handler = guard_fire;
    sigaction(SIGALRM, &sa, &g->alrm);
    sigaction(SIGSEGV, &sa, &g->segv);
    sigaction(SIGBUS, &sa, &g->bus);
    alarm(GUARD_SECONDS);
}

static void guard_end(const guard_saved *g)
{
    alarm(0);
    sigaction(SIGALRM, &g->alrm, NULL);
    sigaction(SIGSEGV, &g->segv, NULL);
    sigaction(SIGBUS, &g->bus, NULL);
}

ccq_status h5io_has_attr(const h5io_file *f, const char *obj, const char *name, int *has, ccq_err *err)
{
    char full[512];
    const htri_t ex = H5Aexists_by_name(f->id, obj, name, H5P_DEFAULT);
    *has = ex > 0;
    if (ex < 0)
        return ccq_fail(err, CCQ_ERR_FORMAT, "%s: %s: unreadable attribute table (damaged file)", f->path,
                        objname(full, sizeof full, obj, name));
    return CCQ_OK;
}

ccq_status h5io_attr_str(const h5io_file *f, const char *obj, const char *name, char *buf, size_t n,
                         ccq_err *err)
{
    char full[512];
    ccq_status st = CCQ_OK;
    hid_t a = attr_open(f, obj, name, err, &st), t = H5I_INVALID_HID, mt = H5I_INVALID_HID;
    if (a < 0) return st;
    objname(full, sizeof full, obj, name);
    t = H5Aget_type(a);
    if (t < 0 || H5Tget_class(t) != H5T_STRING) {
        st = ccq_fail(err, CCQ_ERR_FORMAT, "%s: %s: expected a string attribute", f->path, full);
        goto done;
    }
    if (H5Tis_variable_str(t) > 0) {
        char *s = NULL;
        mt = H5Tcopy(H5T_C_S1);
        /* HDF5 does not convert between ASCII and UTF-8: read in the file's charset. */
        guard_saved g;
        guard_begin(&g, f->path, full);
        const int bad = mt < 0 || H5Tset_size(mt, H5T_VARIABLE) < 0 || H5Tset_cset(mt, H5Tget_cset(t)) < 0 ||
                        H5Aread(a, mt, &s) < 0 || !s;
        guard_end(&g);
        if (bad) {
            st = ccq_fail(err, CCQ_ERR_FORMAT, "%s: %s: cannot read string", f->path, full);
            goto done;
        }
        if (strlen(s) >= n)
            st = ccq_fail(err, CCQ_ERR_FORMAT, "%s: %s: string longer than %zu characters", f->path, full, n - 1);
        else
            memcpy(buf, s, strlen(s) + 1);
        H5free_memory(s);
    } else {
        size_t sz = H5Tget_size(t);
        if (sz == 0 || sz >= n) {
            st = ccq_fail(err, CCQ_ERR_FORMAT, "%s: %s: string longer than %zu characters", f->path, full, n - 1);
            goto done;
        }
        mt = H5Tcopy(H5T_C_S1);
        memset(buf, 0, n);
        if (mt < 0 || H5Tset_size(mt, sz + 1) < 0 || H5Tset_strpad(mt, H5T_STR_NULLTERM) < 0 ||
            H5Tset_cset(mt, H5Tget_cset(t)) < 0 ||
            H5Aread(a, mt, buf) < 0) {
            st = ccq_fail(err, CCQ_ERR_FORMAT, "%s: %s: cannot read string", f->path, full);
            goto done;
        }
    }
done:
    if (mt >= 0) H5Tclose(mt);
    if (t >= 0) H5Tclose(t);
    H5Aclose(a);
    return st;
}

/* A number type HDF5 would convert without complaint but should not: more
 * than 8 bytes per element (converted slowly, with buffers of that size per
 * element), or bit fields (precision, offset; a float's sign, exponent and
 * mantissa) that do not lie inside the element, which HDF5's conversion
 * routines read out of bounds (a damaged offset crashed H5T__bit_find). */
static ccq_status check_number_type(const h5io_file *f, const char *full, hid_t t, ccq_err *err)
{
    const size_t sz = H5Tget_size(t), bits = 8 * sz;
    if (sz < 1 || sz > 8)
        return ccq_fail(err, CCQ_ERR_FORMAT, "%s: %s: numbers of %zu bytes (expected 1 to 8)", f->path, full, sz);
    const size_t prec = H5Tget_precision(t);
    const int off = H5Tget_offset(t);
    int ok = prec >= 1 && off >= 0 && (size_t)off + prec <= bits;
    if (ok && H5Tget_class(t) == H5T_FLOAT) {
        size_t spos = 0, epos = 0, esize = 0, mpos = 0, msize = 0;
        ok = H5Tget_fields(t, &spos, &epos, &esize, &mpos, &msize) >= 0 && spos < bits && esize >= 1 &&
             msize >= 1 && epos + esize <= bits && mpos + msize <= bits;
    }
    if (!ok) return ccq_fail(err, CCQ_ERR_FORMAT, "%s: %s: damaged number type (bit fields outside the element)", f->path, full);
    return CCQ_OK;
}

static ccq_status attr_numbers(const h5io_file *f, const char *obj, const char *name, H5T_class_t cls,
                               hid_t mem, void *out, int max, int *count, ccq_err *err)
{
    char full[512];
    ccq_status st = CCQ_OK;
    hid_t a = attr_open(f, obj, name, err, &st), t = H5I_INVALID_HID, s = H5I_INVALID_HID;
    if (a < 0) return st;
    objname(full, sizeof full, obj, name);
    t = H5Aget_type(a);
    s = H5Aget_space(a);
    if (t < 0 || s < 0 || H5Tget_class(t) != cls) {
        st = ccq_fail(err, CCQ_ERR_FORMAT, "%s: %s: expected %s values", f->path, full,
                      cls == H5T_INTEGER ? "integer" : "floating-point");
        goto done;
    }
    if ((st = check_number_type(f, full, t, err))) goto done;
    hssize_t np = H5Sget_simple_extent_npoints(s);
    if (np < 1 || np > max) {
        st = ccq_fail(err, CCQ_ERR_FORMAT, "%s: %s: %lld values, expected 1 to %d", f->path, full, (long long)np,
                      max);
        goto done;
    }
    if (H5Aread(a, mem, out) < 0) {
        st = ccq_fail(err, CCQ_ERR_FORMAT, "%s: %s: cannot read values", f->path, full);
        goto done;
    }
    *count = (int)np;
done:
    if (s >= 0) H5Sclose(s);
    if (t >= 0) H5Tclose(t);
    H5Aclose(a);
    return st;
}

ccq_status h5io_attr_ints(const h5io_file *f, const char *obj, const char *name, int64_t *out, int max,
                          int *count, ccq_err *err)
{
    return attr_numbers(f, obj, name, H5T_INTEGER, H5T_NATIVE_INT64, out, max, count, err);
}

ccq_status h5io_attr_ints_n(const h5io_file *f, const char *obj, const char *name, int64_t *out, int count,
                            ccq_err *err)
{
    int64_t tmp[64];
    int got = 0;
    char full[512];
    CCQ_ASSERT(count <= 64);
    ccq_status st = h5io_attr_ints(f, obj, name, tmp, 64, &got, err);
    if (st) return st;
    if (got != count)
        return ccq_fail(err, CCQ_ERR_FORMAT, "%s: %s: %d values, expected %d", f->path,
                        objname(full, sizeof full, obj, name), got, count);
    memcpy(out, tmp, sizeof(int64_t) * (size_t)count);
    return CCQ_OK;
}

ccq_status h5io_attr_floats_n(const h5io_file *f, const char *obj, const char *name, float *out, int count,
                              ccq_err *err)
{
    float tmp[4096];
    int got = 0;
    char full[512];
    CCQ_ASSERT(count <= 4096);
    ccq_status st = attr_numbers(f, obj, name, H5T_FLOAT, H5T_NATIVE_FLOAT, tmp, 4096, &got, err);
    if (st) return st;
    if (got != count)
        return ccq_fail(err, CCQ_ERR_FORMAT, "%s: %s: %d values, expected %d", f->path,
                        objname(full, sizeof full, obj, name), got, count);
    memcpy(out, tmp, sizeof(float) * (size_t)count);
    return CCQ_OK;
}

static hid_t dset_open(const h5io_file *f, const char *obj, const char *name, ccq_err *err, ccq_status *st)
{
    char full[512];
    objname(full, sizeof full, obj, name);
    if (!h5io_exists(f, obj, name)) {
        *st = ccq_fail(err, CCQ_ERR_FORMAT, "%s: %s: missing dataset", f->path, full);
        return H5I_INVALID_HID;
    }
    hid_t d = H5Dopen2(f->id, full, H5P_DEFAULT);
    if (d < 0) *st = ccq_fail(err, CCQ_ERR_FORMAT, "%s: %s: not a readable dataset", f->path, full);
    return d;
}

/* Where a dataset's bytes are and whether there are enough of them, so that
 * a damaged or hostile header cannot make a loader allocate (and HDF5 fill)
 * more than the file could hold: no external files or virtual layouts (their
 * data would come from other paths); stored bytes within the file; without
 * filters, at least what the elements need (fewer: truncated or never
 * written, read back as fill values); with filters (compression), at most
 * 1024 times the stored bytes (gzip's limit is about 1032). */
static ccq_status check_stored(const h5io_file *f, const char *full, hid_t d, hid_t s, ccq_err *err)
{
    ccq_status st = CCQ_OK;
    hid_t t = H5Dget_type(d), dcpl = H5Dget_create_plist(d);
    const hssize_t np = H5Sget_simple_extent_npoints(s);
    const size_t tsz = t >= 0 ? H5Tget_size(t) : 0;
    const H5D_layout_t lay = dcpl >= 0 ? H5Pget_layout(dcpl) : H5D_LAYOUT_ERROR;
    const int nfilt = dcpl >= 0 ? H5Pget_nfilters(dcpl) : -1, next = dcpl >= 0 ? H5Pget_external_count(dcpl) : -1;
    hsize_t fsize = 0;
    if (np < 0 || tsz == 0 || lay < 0 || nfilt < 0 || next < 0 || H5Fget_filesize(f->id, &fsize) < 0) {
        st = ccq_fail(err, CCQ_ERR_FORMAT, "%s: %s: unreadable dataset properties", f->path, full);
    } else if (next > 0 || lay == H5D_VIRTUAL) {
        st = ccq_fail(err, CCQ_ERR_FORMAT, "%s: %s: data in other files (external or virtual): refused", f->path, full);
    } else if (np > 0) {
        const hsize_t stored = H5Dget_storage_size(d);
        const uint64_t need = (uint64_t)np > UINT64_MAX / tsz ? UINT64_MAX : (uint64_t)np * tsz;
        if (stored > fsize)
            st = ccq_fail(err, CCQ_ERR_FORMAT, "%s: %s: claims %llu stored bytes in a file of %llu", f->path, full,
                          (unsigned long long)stored, (unsigned long long)fsize);
        else if (nfilt == 0 && stored < need)
            st = ccq_fail(err, CCQ_ERR_FORMAT, "%s: %s: holds %llu of its %llu bytes (truncated or never written)",
                          f->path, full, (unsigned long long)stored, (unsigned long long)need);
        else if (nfilt > 0 && need / 1024 > stored)
            st = ccq_fail(err, CCQ_ERR_FORMAT, "%s: %s: %llu bytes compressed into %llu: refused (a ratio above 1024)",
                          f->path, full, (unsigned long long)need, (unsigned long long)stored);
    }
    if (dcpl >= 0) H5Pclose(dcpl);
    if (t >= 0) H5Tclose(t);
    return st;
}

static ccq_status dset_dims(const h5io_file *f, const char *obj, const char *name, int *rank, hsize_t *dims,
                            int stored, ccq_err *err)
{
    char full[512];
    ccq_status st = CCQ_OK;
    hid_t d = dset_open(f, obj, name, err, &st), s = H5I_INVALID_HID;
    if (d < 0) return st;
    objname(full, sizeof full, obj, name);
    s = H5Dget_space(d);
    int r = s < 0 ? -1 : H5Sget_simple_extent_ndims(s);
    if (r < 0 || r > H5IO_MAX_RANK || H5Sget_simple_extent_dims(s, dims, NULL) < 0) {
        st = ccq_fail(err, CCQ_ERR_FORMAT, "%s: %s: unreadable or unsupported dataspace", f->path, full);
    } else if (!stored || !(st = check_stored(f, full, d, s, err))) {
        *rank = r;
    }
    if (s >= 0) H5Sclose(s);
    H5Dclose(d);
    return st;
}

ccq_status h5io_dset_read(const h5io_file *f, const char *obj, const char *name, hid_t mem_type, int rank,
                          const hsize_t *dims, int64_t rows, void *buf, ccq_err *err)
{
    char full[512], want[128], have[128];
    hsize_t fd[H5IO_MAX_RANK];
    int fr = 0;
    ccq_status st = h5io_dset_dims(f, obj, name, &fr, fd, err);
    if (st) return st;
    objname(full, sizeof full, obj, name);
    int ok = fr == rank;
    for (int i = 0; ok && i < rank; i++) {
        if (i == 0 && rows >= 0)
            ok = fd[0] >= (hsize_t)rows;
        else
            ok = fd[i] == dims[i];
    }
    if (!ok) {
        dims_str(want, sizeof want, rank, dims);
        dims_str(have, sizeof have, fr, fd);
        return ccq_fail(err, CCQ_ERR_FORMAT, "%s: %s: expected shape %s, found %s", f->path, full, want, have);
    }
    hid_t d = dset_open(f, obj, name, err, &st), t = H5I_INVALID_HID, fs = H5I_INVALID_HID, ms = H5I_INVALID_HID;
    if (d < 0) return st;
    t = H5Dget_type(d);
    H5T_class_t want_cls = H5Tget_class(mem_type);
    if (t < 0 || H5Tget_class(t) != want_cls) {
        st = ccq_fail(err, CCQ_ERR_FORMAT, "%s: %s: expected %s data", f->path, full,
                      want_cls == H5T_FLOAT ? "floating-point" : "integer");
        goto done;
    }
    if ((st = check_number_type(f, full, t, err))) goto done;
    herr_t rc;
    if (rows >= 0) {
        hsize_t start[H5IO_MAX_RANK] = {0}, count[H5IO_MAX_RANK];
        for (int i = 0; i < rank; i++) count[i] = i == 0 ? (hsize_t)rows : fd[i];
        fs = H5Dget_space(d);
        ms = H5Screate_simple(rank, count, NULL);
        if (fs < 0 || ms < 0 || H5Sselect_hyperslab(fs, H5S_SELECT_SET, start, NULL, count, NULL) < 0) {
            st = ccq_fail(err, CCQ_ERR_FORMAT, "%s: %s: cannot select rows", f->path, full);
            goto done;
        }
        rc = rows == 0 ? 0 : H5Dread(d, mem_type, ms, fs, H5P_DEFAULT, buf);
    } else {
        rc = H5Dread(d, mem_type, H5S_ALL, H5S_ALL, H5P_DEFAULT, buf);
    }
    if (rc < 0) st = ccq_fail(err, CCQ_ERR_FORMAT, "%s: %s: read failed (truncated or damaged file)", f->path, full);
done:
    if (ms >= 0) H5Sclose(ms);
    if (fs >= 0) H5Sclose(fs);
    if (t >= 0) H5Tclose(t);
    H5Dclose(d);
    return st;
}

ccq_status h5io_dset_dims(const h5io_file *f, const char *obj, const char *name, int *rank, hsize_t *dims,
                          ccq_err *err)
{
    return dset_dims(f, obj, name, rank, dims, 1, err);
}

ccq_status h5io_dset_shape(const h5io_file *f, const char *obj, const char *name, int *rank, hsize_t *dims,
                           ccq_err *err)
{
    return dset_dims(f, obj, name, rank, dims, 0, err);
}

/* Object creation properties without modification times, so that the same
 * content always gives the same bytes (the determinism contract covers files). */
static hid_t no_times(hid_t cls)
{
    hid_t p = H5Pcreate(cls);
    if (p >= 0 && H5Pset_obj_track_times(p, 0) < 0) {
        H5Pclose(p);
        return H5I_INVALID_HID;
    }
    return p;
}

ccq_status h5io_write_group(const h5io_file *f, const char *obj, ccq_err *err)
{
    hid_t p = no_times(H5P_GROUP_CREATE);
    hid_t g = p < 0 ? -1 : H5Gcreate2(f->id, obj, H5P_DEFAULT, p, H5P_DEFAULT);
    if (p >= 0) H5Pclose(p);
    if (g < 0) return ccq_fail(err, CCQ_ERR_IO, "%s: %s: cannot create group", f->path, obj);
    H5Gclose(g);
    return CCQ_OK;
}

static ccq_status write_attr(const h5io_file *f, const char *obj, const char *name, hid_t type, hid_t space,
                             const void *v, ccq_err *err)
{
    char full[512];
    hid_t a = H5Acreate_by_name(f->id, obj, name, type, space, H5P_DEFAULT, H5P_DEFAULT, H5P_DEFAULT);
    /* memory type: the native type of the same class and size */
    hid_t mt = H5Tget_native_type(type, H5T_DIR_ASCEND);
    herr_t rc = a < 0 || mt < 0 ? -1 : H5Awrite(a, H5Tget_class(type) == H5T_STRING ? type : mt, v);
    if (mt >= 0) H5Tclose(mt);
    if (a >= 0) H5Aclose(a);
    if (rc < 0)
        return ccq_fail(err, CCQ_ERR_IO, "%s: %s: cannot write attribute", f->path,
                        objname(full, sizeof full, obj, name));
    return CCQ_OK;
}

ccq_status h5io_write_attr_str(const h5io_file *f, const char *obj, const char *name, const char *value,
                               ccq_err *err)
{
    /* Fixed-length, NUL-padded ASCII: what onnx2ccq.py and data2ccq.py write. */
    hid_t t = H5Tcopy(H5T_C_S1), s = H5Screate(H5S_SCALAR);
    size_t len = strlen(value);
    ccq_status st;
    if (t < 0 || s < 0 || H5Tset_size(t, len ? len : 1) < 0 || H5Tset_strpad(t, H5T_STR_NULLPAD) < 0)
        st = ccq_fail(err, CCQ_ERR_IO, "%s: cannot make string type", f->path);
    else
        st = write_attr(f, obj, name, t, s, len ? value : "", err);
    if (s >= 0) H5Sclose(s);
    if (t >= 0) H5Tclose(t);
    return st;
}

ccq_status h5io_write_attr_ints(const h5io_file *f, const char *obj, const char *name, const int32_t *v,
                                int count, int scalar, ccq_err *err)
{
    hsize_t n = (hsize_t)count;
    hid_t s = scalar ? H5Screate(H5S_SCALAR) : H5Screate_simple(1, &n, NULL);
    if (s < 0) return ccq_fail(err, CCQ_ERR_IO, "%s: cannot make dataspace", f->path);
    ccq_status st = write_attr(f, obj, name, H5T_NATIVE_INT32, s, v, err);
    H5Sclose(s);
    return st;
}

ccq_status h5io_write_dset(const h5io_file *f, const char *obj, const char *name, hid_t file_type,
                           hid_t mem_type, int rank, const hsize_t *dims, const void *buf, ccq_err *err)
{
    char full[512];
    objname(full, sizeof full, obj, name);
    errno = 0; /* the system's reason, if HDF5's write fails in a write(2) (a full disk) */
    hid_t s = H5Screate_simple(rank, dims, NULL), p = no_times(H5P_DATASET_CREATE);
    hid_t d = s < 0 || p < 0 ? -1 : H5Dcreate2(f->id, full, file_type, s, H5P_DEFAULT, p, H5P_DEFAULT);
    herr_t rc = d < 0 ? -1 : H5Dwrite(d, mem_type, H5S_ALL, H5S_ALL, H5P_DEFAULT, buf);
    const int e = errno;
    if (p >= 0) H5Pclose(p);
    if (d >= 0) H5Dclose(d);
    if (s >= 0) H5Sclose(s);
    if (rc < 0)
        return ccq_fail(err, CCQ_ERR_IO, "%s: %s: cannot write dataset%s%s", f->path, full, e ? ": " : "",
                        e ? strerror(e) : "");
    return CCQ_OK;
}

ccq_status h5io_write_attr_floats(const h5io_file *f, const char *obj, const char *name, const float *v,
                                  int count, int scalar, ccq_err *err)
{
    hsize_t n = (hsize_t)count;
    hid_t s = scalar ? H5Screate(H5S_SCALAR) : H5Screate_simple(1, &n, NULL);
    if (s < 0) return ccq_fail(err, CCQ_ERR_IO, "%s: cannot make dataspace", f->path);
    hid_t a = H5Acreate_by_name(f->id, obj, name, H5T_IEEE_F32LE, s, H5P_DEFAULT, H5P_DEFAULT, H5P_DEFAULT);
    herr_t rc = a < 0 ? -1 : H5Awrite(a, H5T_NATIVE_FLOAT, v);
    if (a >= 0) H5Aclose(a);
    H5Sclose(s);
    if (rc < 0) return ccq_fail(err, CCQ_ERR_IO, "%s: %s: cannot write attribute %s", f->path, obj, name);
    return CCQ_OK;
}

ccq_status h5io_atomic_create(h5io_file *f, const char *path, ccq_err *err)
{
    char tmp[1100];
    snprintf(tmp, sizeof tmp, "%.1000s.tmp.%ld", path, (long)getpid());
    if (h5io_file_create(f, tmp, err))
        return ccq_fail(err, CCQ_ERR_IO, "%s: cannot create (directory missing or not writable)", path);
    return CCQ_OK;
}

void h5io_atomic_abort(h5io_file *f)
{
    if (f->id >= 0) H5Fclose(f->id);
    f->id = H5I_INVALID_HID;
    unlink(f->path);
}

ccq_status h5io_atomic_commit(h5io_file *f, const char *path, ccq_err *err)
{
    ccq_status st = h5io_file_close(f, err);
    if (st) {
        unlink(f->path);
        return ccq_fail(err, CCQ_ERR_IO, "%s: cannot write", path);
    }
    /* Data on disk before the name points at it. */
    int fd = open(f->path, O_RDONLY);
    if (fd < 0 || fsync(fd) != 0 || rename(f->path, path) != 0) {
        int e = errno;
        if (fd >= 0) close(fd);
        unlink(f->path);
        return ccq_fail(err, CCQ_ERR_IO, "%s: cannot write: %s", path, strerror(e));
    }
    close(fd);
    return CCQ_OK;
}

ccq_status h5io_write_attr_i64(const h5io_file *f, const char *obj, const char *name, int64_t v, ccq_err *err)
{
    hid_t s = H5Screate(H5S_SCALAR);
    if (s < 0) return ccq_fail(err, CCQ_ERR_IO, "%s: cannot make dataspace", f->path);
    ccq_status st = write_attr(f, obj, name, H5T_STD_I64LE, s, &v, err);
    H5Sclose(s);
    return st;
}
