/*
 * cfg.c: table-driven configuration (see cfg.h). The table is the single
 * source of keys, types, bounds and defaults; parsing, overrides and the
 * echo all walk it.
 */
#include "ccq/cfg.h"

#include <errno.h>
#include <stdbool.h>
#include <stdio.h>
#include <sys/stat.h>
#include <ini.h>
#include <stddef.h>
#include <stdlib.h>
#include <string.h>

typedef enum { T_INT, T_U64, T_DOUBLE, T_PATH, T_BOOL, T_ENUM, T_SECONDS, T_BUDGET, T_WIDTHS } cfg_type;

typedef struct {
    const char *section, *key;
    cfg_type type;
    double min, max;
    const char *def;
    size_t off;
    const char *const *names; /* T_ENUM: value names, index = stored value */
} cfg_entry;

static const char *const k_group[] = {"confidence", "layer", "random", "layer_confidence", NULL};
static const char *const k_turns[] = {"weights", "sqrt", "equal", NULL};
static const char *const k_prior[] = {"flat", "float", NULL};
static const char *const k_fitness[] = {"xent", "accuracy", "distill", NULL};
static const char *const k_act[] = {"percentile", "minmax", NULL};
static const char *const k_wscale[] = {"maxabs", "mse", NULL};
static const char *const k_init[] = {"rtn", "gptq", "gptq_scale", "auto", "gptq_asym", NULL}; /* gptq_start_kind */
static const char *const k_levels[] = {"uniform", "learned", NULL};

#define F(field) offsetof(cfg_search, field)
static const cfg_entry k_table[] = {
    {"model", "model", T_PATH, 0, 0, "results/models/lenet.h5", F(model), NULL},
    {"model", "data", T_PATH, 0, 0, "build/data/fashion-mnist.h5", F(data), NULL},
    {"quant", "wbits", T_INT, 2, 8, "4", F(wbits), NULL},
    {"quant", "first_last_8", T_BOOL, 0, 1, "false", F(first_last_8), NULL},
    {"quant", "calib_images", T_INT, 1, 1e6, "1024", F(calib_images), NULL},
    {"quant", "act_rule", T_ENUM, 0, 0, "percentile", F(act_rule), k_act},
    {"quant", "percentile", T_DOUBLE, 90, 99.99999, "99.99", F(percentile), NULL},
    {"quant", "wscale", T_ENUM, 0, 0, "maxabs", F(wscale), k_wscale},
    {"quant", "init", T_ENUM, 0, 0, "rtn", F(init), k_init},
    {"quant", "levels", T_ENUM, 0, 0, "uniform", F(levels), k_levels},
    {"quant", "budget", T_BUDGET, 1, 1e15, "off", F(size_budget), NULL},
    {"quant", "widths", T_WIDTHS, 2, 8, "2,3,4,8", F(widths), NULL},
    {"search", "seed", T_U64, 0, 0, "1", F(seed), NULL},
    {"search", "radius", T_INT, 1, 3, "1", F(radius), NULL},
    {"search", "lambda", T_INT, 2, 4096, "32", F(lambda), NULL},
    {"search", "mu", T_INT, 1, 4096, "4", F(mu), NULL},
    {"search", "alpha", T_DOUBLE, 0, 1, "0.3", F(alpha), NULL},
    {"search", "p_center", T_DOUBLE, 0.01, 1, "0.8", F(p_center), NULL},
    {"search", "p_min", T_DOUBLE, 0, 0.1, "0.005", F(p_min), NULL},
    {"search", "prior", T_ENUM, 0, 0, "flat", F(prior), k_prior},
    {"search", "codebook", T_BOOL, 0, 1, "false", F(codebook), NULL},
    {"search", "group", T_ENUM, 0, 0, "confidence", F(group), k_group},
    {"search", "layer_turns", T_ENUM, 0, 0, "weights", F(layer_turns), k_turns},
    {"search", "group_size", T_INT, 1, 1e6, "256", F(group_size), NULL},
    {"search", "group_fraction", T_DOUBLE, 0, 1, "0", F(group_fraction), NULL},
    {"search", "freeze", T_DOUBLE, 0.5, 1, "0.98", F(freeze), NULL},
    {"search", "fitness", T_ENUM, 0, 0, "xent", F(fitness), k_fitness},
    {"search", "batch", T_INT, 1, 1e6, "1024", F(batch), NULL},
    {"search", "combine", T_BOOL, 0, 1, "false", F(combine), NULL},
    {"search", "confirm_batch", T_INT, 0, 1e6, "0", F(confirm_batch), NULL},
    {"search", "accept_z", T_DOUBLE, 0, 10, "0", F(accept_z), NULL},
    {"search", "race_z", T_DOUBLE, 0, 10, "0", F(race_z), NULL},
    {"search", "race_stages", T_INT, 2, 64, "4", F(race_stages), NULL},
    {"search", "val_images", T_INT, 0, 1e6, "5000", F(val_images), NULL},
    {"run", "output", T_PATH, 0, 0, "build/search/model.h5", F(output), NULL},
    {"run", "log", T_PATH, 0, 0, "build/search/log.jsonl", F(log), NULL},
    {"run", "checkpoint", T_PATH, 0, 0, "build/search/checkpoint.h5", F(checkpoint), NULL},
    {"run", "budget", T_INT, 1, 1e12, "10000", F(budget), NULL},
    {"run", "checkpoint_every", T_INT, 1, 1e9, "50", F(checkpoint_every), NULL},
    {"run", "micro_batch", T_INT, 1, 4096, "8", F(micro_batch), NULL},
    {"run", "incremental", T_BOOL, 0, 1, "true", F(incremental), NULL},
    {"run", "cache_mb", T_INT, 1, 1e6, "256", F(cache_mb), NULL},
    {"run", "snapshots", T_BOOL, 0, 1, "false", F(snapshots), NULL},
    {"run", "stall_timeout", T_SECONDS, 1, 1e7, "auto", F(stall_timeout), NULL},
};
#undef F

static const cfg_entry *find(const char *section, const char *key)
{
    for (size_t i = 0; i < CCQ_ARRAY_LEN(k_table); i++)
        if (strcmp(k_table[i].section, section) == 0 && strcmp(k_table[i].key, key) == 0) return &k_table[i];
    return NULL;
}

/* Parses value into the field; NULL on success, else the reason. */
static const char *assign(cfg_search *c, const cfg_entry *e, const char *value)
{
    char *p = (char *)c + e->off, *end = NULL;
    static char reason[160];
    errno = 0;
    switch (e->type) {
    case T_PATH:
        if (!*value) return "empty path";
        if (strlen(value) >= CFG_PATH_MAX) return "path too long";
        strcpy(p, value);
        return NULL;
    case T_BOOL:
        if (!strcmp(value, "true") || !strcmp(value, "1")) *(int64_t *)p = 1;
        else if (!strcmp(value, "false") || !strcmp(value, "0")) *(int64_t *)p = 0;
        else return "expected true or false";
        return NULL;
    case T_ENUM:
        for (int i = 0; e->names[i]; i++)
            if (!strcmp(value, e->names[i])) {
                *(int64_t *)p = i;
                return NULL;
            }
        snprintf(reason, sizeof reason, "'%s' is not one of", value);
        for (int i = 0; e->names[i]; i++)
            snprintf(reason + strlen(reason), sizeof reason - strlen(reason), "%s %s", i ? "," : "", e->names[i]);
        return reason;
    case T_U64: {
        if (*value == '-') return "expected a non-negative integer";
        unsigned long long v = strtoull(value, &end, 10);
        if (!*value || *end || errno) return "expected a non-negative integer";
        *(uint64_t *)p = v;
        return NULL;
    }
    case T_INT: {
        long long v = strtoll(value, &end, 10);
        if (!*value || *end || errno) return "expected an integer";
        if ((double)v < e->min || (double)v > e->max) {
            snprintf(reason, sizeof reason, "%lld is outside [%.15g, %.15g]", v, e->min, e->max);
            return reason;
        }
        *(int64_t *)p = v;
        return NULL;
    }
    case T_BUDGET: /* off (0), bytes within [min, max], or wB (stored as -B) */
        if (!strcmp(value, "off") || !strcmp(value, "0")) {
            *(int64_t *)p = 0;
            return NULL;
        }
        if (value[0] == 'w') {
            long b = strtol(value + 1, &end, 10);
            if (end == value + 1 || *end || b < 2 || b > 8) return "expected off, a number of bytes or w2..w8";
            *(int64_t *)p = -b;
            return NULL;
        } else {
            long long v = strtoll(value, &end, 10);
            if (!*value || *end || errno || (double)v < e->min || (double)v > e->max)
                return "expected off, a number of bytes or w2..w8";
            *(int64_t *)p = v;
            return NULL;
        }
    case T_WIDTHS: { /* increasing widths within [min, max], comma-separated, at least two: a bit set */
        int64_t set = 0, last = 0, n = 0;
        for (const char *q = value;;) {
            long b = strtol(q, &end, 10);
            if (end == q || b < e->min || b > e->max || b <= last || (*end && *end != ',') || (*end == ',' && !end[1]))
                return "expected increasing widths in 2..8 separated by commas, e.g. 2,3,4,8";
            set |= INT64_C(1) << b, last = b, n++;
            if (!*end) break;
            q = end + 1;
        }
        if (n < 2) return "expected at least two widths";
        *(int64_t *)p = set;
        return NULL;
    }
    case T_SECONDS: /* auto (stored as -1), off or 0 (0), or seconds within [min, max] */
        if (!strcmp(value, "auto")) {
            *(double *)p = -1;
            return NULL;
        }
        if (!strcmp(value, "off") || !strcmp(value, "0")) {
            *(double *)p = 0;
            return NULL;
        }
        /* fall through - a number of seconds */
    case T_DOUBLE: {
        double v = strtod(value, &end);
        if (!*value || *end || errno || v != v) return e->type == T_SECONDS ? "expected auto, off or seconds" : "expected a number";
        if (v < e->min || v > e->max) {
            snprintf(reason, sizeof reason, "%g is outside [%g, %g]", v, e->min, e->max);
            return reason;
        }
        *(double *)p = v;
        return NULL;
    }
    }
    return "unknown type";
}

void cfg_defaults(cfg_search *c)
{
    memset(c, 0, sizeof *c);
    for (size_t i = 0; i < CCQ_ARRAY_LEN(k_table); i++) {
        const char *why = assign(c, &k_table[i], k_table[i].def);
        CCQ_ASSERT(why == NULL);
    }
}

typedef struct {
    cfg_search *c;
    char why[400];
    unsigned char seen[CCQ_ARRAY_LEN(k_table)];
} load_ctx;

static int handler(void *user, const char *section, const char *key, const char *value)
{
    load_ctx *x = user;
    const cfg_entry *e = find(section, key);
    if (!e) {
        snprintf(x->why, sizeof x->why, "%s.%s: unknown key", section, key);
        return 0;
    }
    const size_t i = (size_t)(e - k_table);
    if (x->seen[i]) {
        snprintf(x->why, sizeof x->why, "%s.%s: set twice", section, key);
        return 0;
    }
    x->seen[i] = 1;
    const char *why = assign(x->c, e, value);
    if (why) {
        snprintf(x->why, sizeof x->why, "%s.%s: %s", section, key, why);
        return 0;
    }
    return 1;
}

/* The longest line a configuration may have: inih's line buffer is made this
 * large (Debian's inih sets it at run time), and longer lines are refused
 * rather than split (a split line's tail would become a setting). */
#define CFG_LINE_MAX 4000
#define CFG_FILE_MAX (1 << 20)

/* Reads the whole file (a regular file of at most CFG_FILE_MAX bytes, no NUL
 * byte) into *text; cfg_load_text checks the line lengths. */
static ccq_status read_text(const char *path, char **text, ccq_err *err)
{
    *text = NULL;
    struct stat st; /* before opening: opening a FIFO would block */
    if (stat(path, &st) != 0)
        return ccq_fail(err, CCQ_ERR_IO, "%s: %s", path, errno == ENOENT ? "no such file" : strerror(errno));
    if (!S_ISREG(st.st_mode))
        return ccq_fail(err, CCQ_ERR_IO, "%s: %s", path,
                        S_ISDIR(st.st_mode) ? "is a directory, not a file" : "not a regular file (a FIFO or device)");
    FILE *f = fopen(path, "rb");
    if (!f) return ccq_fail(err, CCQ_ERR_IO, "%s: %s", path, strerror(errno));
    if (st.st_size > CFG_FILE_MAX) {
        fclose(f);
        return ccq_fail(err, CCQ_ERR_USAGE, "%s: %lld bytes: a configuration is at most %d", path,
                        (long long)st.st_size, CFG_FILE_MAX);
    }
    char *buf = ccq_malloc((size_t)st.st_size + 1);
    const size_t n = fread(buf, 1, (size_t)st.st_size, f);
    const int bad = ferror(f);
    fclose(f);
    if (bad) {
        ccq_free(buf);
        return ccq_fail(err, CCQ_ERR_IO, "%s: cannot read", path);
    }
    buf[n] = '\0';
    /* a NUL byte inside the file: the text would end there, the rest unread */
    if (strlen(buf) != n) {
        int line = 1;
        for (size_t i = 0; buf[i]; i++) line += buf[i] == '\n';
        ccq_free(buf);
        return ccq_fail(err, CCQ_ERR_USAGE, "%s:%d: a NUL byte: not a text file", path, line);
    }
    *text = buf;
    return CCQ_OK;
}

ccq_status cfg_load_text(cfg_search *c, const char *text, const char *name, ccq_err *err)
{
    int line = 1;
    size_t len = 0;
    for (const char *p = text; *p; p++) {
        if (*p == '\n') {
            line++;
            len = 0;
        } else if (++len > CFG_LINE_MAX) {
            return ccq_fail(err, CCQ_ERR_USAGE, "%s:%d: line longer than %d characters", name, line, CFG_LINE_MAX);
        }
    }
    load_ctx x;
    memset(&x, 0, sizeof x);
    x.c = c;
    ini_use_stack = false; /* a heap buffer of ini_max_line bytes, not the 200 compiled in */
    ini_allow_realloc = true;
    ini_max_line = CFG_LINE_MAX + 3;
    line = ini_parse_string(text, handler, &x);
    if (line > 0) {
        if (!x.why[0]) snprintf(x.why, sizeof x.why, "not a valid INI line");
        return ccq_fail(err, CCQ_ERR_USAGE, "%s:%d: %s", name, line, x.why);
    }
    if (line < 0) return ccq_fail(err, CCQ_ERR_LIMIT, "%s: out of memory reading the configuration", name);
    return CCQ_OK;
}

ccq_status cfg_load(cfg_search *c, const char *path, ccq_err *err)
{
    char *text;
    ccq_status st = read_text(path, &text, err);
    if (st) return st;
    st = cfg_load_text(c, text, path, err);
    ccq_free(text);
    return st;
}

ccq_status cfg_set(cfg_search *c, const char *assignment, ccq_err *err)
{
    char buf[CFG_PATH_MAX + 64];
    if (strlen(assignment) >= sizeof buf)
        return ccq_fail(err, CCQ_ERR_USAGE, "--set %.40s...: too long", assignment);
    strcpy(buf, assignment);
    char *eq = strchr(buf, '='), *dot = strchr(buf, '.');
    if (!eq || !dot || dot > eq)
        return ccq_fail(err, CCQ_ERR_USAGE, "--set %s: expected section.key=value", assignment);
    *eq = '\0';
    *dot = '\0';
    const cfg_entry *e = find(buf, dot + 1);
    if (!e) return ccq_fail(err, CCQ_ERR_USAGE, "--set %s: unknown key %s.%s", assignment, buf, dot + 1);
    const char *why = assign(c, e, eq + 1);
    if (why) return ccq_fail(err, CCQ_ERR_USAGE, "--set %s: %s.%s: %s", assignment, buf, dot + 1, why);
    return CCQ_OK;
}

static void write_sections(const cfg_search *c, FILE *out, int with_run)
{
    const char *section = "";
    for (size_t i = 0; i < CCQ_ARRAY_LEN(k_table); i++) {
        const cfg_entry *e = &k_table[i];
        if (!with_run && strcmp(e->section, "run") == 0) continue;
        const char *p = (const char *)c + e->off;
        if (strcmp(section, e->section) != 0) fprintf(out, "%s[%s]\n", i ? "\n" : "", section = e->section);
        fprintf(out, "%s = ", e->key);
        switch (e->type) {
        case T_PATH: fprintf(out, "%s\n", p); break;
        case T_BOOL: fprintf(out, "%s\n", *(const int64_t *)p ? "true" : "false"); break;
        case T_ENUM: fprintf(out, "%s\n", e->names[*(const int64_t *)p]); break;
        case T_U64: fprintf(out, "%llu\n", (unsigned long long)*(const uint64_t *)p); break;
        case T_INT: fprintf(out, "%lld\n", (long long)*(const int64_t *)p); break;
        case T_DOUBLE: fprintf(out, "%.17g\n", *(const double *)p); break;
        case T_BUDGET: {
            const int64_t v = *(const int64_t *)p;
            if (v == 0) fprintf(out, "off\n");
            else if (v < 0) fprintf(out, "w%lld\n", (long long)-v);
            else fprintf(out, "%lld\n", (long long)v);
            break;
        }
        case T_WIDTHS: {
            const int64_t v = *(const int64_t *)p;
            for (int b = 0, first = 1; b < 63; b++)
                if (v >> b & 1) fprintf(out, "%s%d", first ? "" : ",", b), first = 0;
            fprintf(out, "\n");
            break;
        }
        case T_SECONDS: {
            const double v = *(const double *)p;
            if (v < 0) fprintf(out, "auto\n");
            else if (v == 0) fprintf(out, "off\n");
            else fprintf(out, "%.17g\n", v);
            break;
        }
        }
    }
}

void cfg_write(const cfg_search *c, FILE *out) { write_sections(c, out, 1); }
void cfg_write_search(const cfg_search *c, FILE *out) { write_sections(c, out, 0); }
