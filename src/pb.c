/*
 * pb.c: the protocol buffers wire-format encoder (see pb.h). Wire types: 0
 * varint, 2 length-delimited, 5 fixed 32-bit; a field's key is
 * (field << 3) | type as a varint. Floats are written little-endian
 * whatever the host order.
 */
#include "ccq/pb.h"

#include <string.h>

#include "ccq/common.h"

void pb_free(pb_buf *b)
{
    ccq_free(b->p);
    memset(b, 0, sizeof *b);
}

static void put(pb_buf *b, const void *p, size_t n)
{
    if (b->n + n > b->cap) {
        size_t cap = b->cap ? b->cap : 256;
        while (b->n + n > cap) cap *= 2;
        b->p = ccq_realloc(b->p, cap);
        b->cap = cap;
    }
    if (n) memcpy(b->p + b->n, p, n);
    b->n += n;
}

static void raw_varint(pb_buf *b, uint64_t v)
{
    uint8_t t[10];
    int k = 0;
    do {
        t[k] = (uint8_t)(v & 0x7f);
        v >>= 7;
        if (v) t[k] |= 0x80;
        k++;
    } while (v);
    put(b, t, (size_t)k);
}

static void key(pb_buf *b, int field, int type)
{
    CCQ_ASSERT(field >= 1 && field < (1 << 29));
    raw_varint(b, (uint64_t)field << 3 | (uint64_t)type);
}

static void raw_float(pb_buf *b, float v)
{
    uint32_t u;
    memcpy(&u, &v, 4);
    const uint8_t t[4] = {(uint8_t)u, (uint8_t)(u >> 8), (uint8_t)(u >> 16), (uint8_t)(u >> 24)};
    put(b, t, 4);
}

void pb_varint(pb_buf *b, int field, uint64_t v)
{
    key(b, field, 0);
    raw_varint(b, v);
}

void pb_float(pb_buf *b, int field, float v)
{
    key(b, field, 5);
    raw_float(b, v);
}

void pb_bytes(pb_buf *b, int field, const void *p, size_t n)
{
    key(b, field, 2);
    raw_varint(b, n);
    put(b, p, n);
}

void pb_str(pb_buf *b, int field, const char *s) { pb_bytes(b, field, s, strlen(s)); }

void pb_msg(pb_buf *b, int field, const pb_buf *m) { pb_bytes(b, field, m->p, m->n); }

void pb_append(pb_buf *b, const pb_buf *fields) { put(b, fields->p, fields->n); }
