/*
 * h5io.h: checked reading and writing of the HDF5 pieces ccq files are made
 * of (string/int/float attributes, whole datasets of a known shape).
 *
 * Every HDF5 call is checked (HDF5 returns negative on failure) and every
 * failure becomes a ccq_status with a message naming the file and the object
 * ("FILE: /nodes/0003/weight: ..."). HDF5's own error stack printing is
 * switched off by h5io_file_open, so a damaged file yields our one line, not
 * a page of HDF5 traces. It knows nothing of what the objects mean (model_,
 * data_ do); it never uses MPI-IO (files are read and written whole by one
 * process).
 */
#ifndef CCQ_H5IO_H
#define CCQ_H5IO_H

#include <hdf5.h>
#include <stdint.h>

#include "ccq/common.h"

#define H5IO_MAX_RANK 8

typedef struct {
    hid_t id;
    char path[1100];
} h5io_file;

/* Opens an existing file read-only. Missing/unreadable -> CCQ_ERR_IO;
 * not HDF5, truncated or damaged -> CCQ_ERR_FORMAT. */
ccq_status h5io_file_open(h5io_file *f, const char *path, ccq_err *err);

/* Creates (truncating) a file for writing; CCQ_ERR_IO on failure. */
ccq_status h5io_file_create(h5io_file *f, const char *path, ccq_err *err);
ccq_status h5io_file_close(h5io_file *f, ccq_err *err);

/* 1 if the link `name` exists under `loc` (a group path like "/nodes/0003"). */
int h5io_exists(const h5io_file *f, const char *obj, const char *name);

/* Reads string attribute `name` of object `obj` (fixed or variable length)
 * into buf (NUL-terminated, at most n-1 characters; longer is an error). */
ccq_status h5io_attr_str(const h5io_file *f, const char *obj, const char *name, char *buf, size_t n,
                         ccq_err *err);

/* Reads an integer attribute of 1..max elements into out, converting any
 * integer type; *count receives the element count. A scalar counts as 1. */
ccq_status h5io_attr_ints(const h5io_file *f, const char *obj, const char *name, int64_t *out, int max,
                          int *count, ccq_err *err);
/* Same, requiring exactly `count` elements. */
ccq_status h5io_attr_ints_n(const h5io_file *f, const char *obj, const char *name, int64_t *out, int count,
                            ccq_err *err);
ccq_status h5io_attr_floats_n(const h5io_file *f, const char *obj, const char *name, float *out, int count,
                              ccq_err *err);

/* Shape of dataset obj/name: *rank and dims[0..rank), once its storage is
 * found to hold what the shape needs (CCQ_ERR_FORMAT for data in external
 * files or a virtual layout, stored bytes beyond the file, fewer bytes than
 * the elements need without compression, a compression ratio above 1024):
 * a loader may allocate for dims without trusting the header alone. */
ccq_status h5io_dset_dims(const h5io_file *f, const char *obj, const char *name, int *rank, hsize_t *dims,
                          ccq_err *err);
/* The shape alone, storage unchecked: for a size limit that must come first
 * (then h5io_dset_dims before allocating). */
ccq_status h5io_dset_shape(const h5io_file *f, const char *obj, const char *name, int *rank, hsize_t *dims,
                           ccq_err *err);

/* Reads dataset obj/name, which must have exactly the given shape, converting
 * to mem_type (H5T_NATIVE_FLOAT, H5T_NATIVE_UINT8, ...). With `rows` >= 0 reads
 * only the first `rows` entries of dimension 0 (dims[0] is then the file's
 * full count, checked to be >= rows). */
ccq_status h5io_dset_read(const h5io_file *f, const char *obj, const char *name, hid_t mem_type, int rank,
                          const hsize_t *dims, int64_t rows, void *buf, ccq_err *err);

/* Writing (for ccq-written files): attributes and whole datasets. */
ccq_status h5io_write_attr_str(const h5io_file *f, const char *obj, const char *name, const char *value,
                               ccq_err *err);
ccq_status h5io_write_attr_ints(const h5io_file *f, const char *obj, const char *name, const int32_t *v,
                                int count, int scalar, ccq_err *err);
ccq_status h5io_write_attr_floats(const h5io_file *f, const char *obj, const char *name, const float *v,
                                  int count, int scalar, ccq_err *err);
ccq_status h5io_write_attr_i64(const h5io_file *f, const char *obj, const char *name, int64_t v, ccq_err *err);
ccq_status h5io_write_group(const h5io_file *f, const char *obj, ccq_err *err);
ccq_status h5io_write_dset(const h5io_file *f, const char *obj, const char *name, hid_t file_type,
                           hid_t mem_type, int rank, const hsize_t *dims, const void *buf, ccq_err *err);

/* Atomic replacement of `path`: create writes to "path.tmp.PID"; commit
 * closes, fsyncs and renames it over path; abort closes and removes it.
 * A crash at any point leaves either the old file or the new one. */
ccq_status h5io_atomic_create(h5io_file *f, const char *path, ccq_err *err);
ccq_status h5io_atomic_commit(h5io_file *f, const char *path, ccq_err *err);
void h5io_atomic_abort(h5io_file *f);

/* Whether obj carries the attribute name: an HDF5 failure to tell (a damaged attribute table) is
 * CCQ_ERR_FORMAT naming the file, never taken for "absent". */
ccq_status h5io_has_attr(const h5io_file *f, const char *obj, const char *name, int *has, ccq_err *err);

#endif
