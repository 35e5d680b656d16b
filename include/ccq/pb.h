/*
 * pb.h: a protocol buffers wire-format encoder, just enough to write ONNX
 * (onnxexport_): varints, 32-bit floats and length-delimited fields
 * (strings, bytes, nested messages) appended to a growable buffer.
 *
 * A nested message is built in a buffer of its own and appended with
 * pb_msg, which writes its length first: the wire format needs no schema,
 * and fields may come in any order. Repeated scalars are written one field
 * each (the unpacked form every parser accepts); bulk data goes as bytes
 * (ONNX's raw_data).
 *
 * It does not decode, and knows nothing of ONNX's message types.
 */
#ifndef CCQ_PB_H
#define CCQ_PB_H

#include <stddef.h>
#include <stdint.h>

typedef struct {
    uint8_t *p;
    size_t n, cap;
} pb_buf;

/* Releases the bytes; the buffer is empty and reusable afterwards. */
void pb_free(pb_buf *b);

/* Field `field` as a varint (wire type 0). Negative int64 values take ten bytes (two's complement). */
void pb_varint(pb_buf *b, int field, uint64_t v);
static inline void pb_int(pb_buf *b, int field, int64_t v) { pb_varint(b, field, (uint64_t)v); }
/* Field `field` as a little-endian float (wire type 5). */
void pb_float(pb_buf *b, int field, float v);
/* Field `field` as length-delimited bytes (wire type 2); pb_str: a NUL-terminated string. */
void pb_bytes(pb_buf *b, int field, const void *p, size_t n);
void pb_str(pb_buf *b, int field, const char *s);
/* Field `field` holding the message m (its bytes; m is unchanged). */
void pb_msg(pb_buf *b, int field, const pb_buf *m);
/* Appends already-encoded fields (a message's body built elsewhere: concatenated fields are
 * valid wire format). */
void pb_append(pb_buf *b, const pb_buf *fields);

#endif
