/*
 * test_cfg.c: the configuration table: defaults, a file over the defaults,
 * the echo read back to the same values, every kind of bad input with its
 * file:line: section.key message, and --set overrides.
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include <cmocka.h>

#include "ccq/cfg.h"

static char g_path[64];

/* A fresh temporary file (mkstemp fills in the template's last six characters). */
static FILE *open_temp(void)
{
    snprintf(g_path, sizeof g_path, "/tmp/ccq_test_cfg_%s", "XXXXXX");
    int fd = mkstemp(g_path);
    assert_true(fd >= 0);
    return fdopen(fd, "w");
}

static void write_file(const char *text)
{
    FILE *f = open_temp();
    fputs(text, f);
    fclose(f);
}

static void expect_error(const char *text, ccq_status want, const char *needle)
{
    cfg_search c;
    ccq_err err = {{0}};
    cfg_defaults(&c);
    write_file(text);
    ccq_status st = cfg_load(&c, g_path, &err);
    unlink(g_path);
    if (st != want || !strstr(err.msg, needle) || !strstr(err.msg, g_path)) {
        print_error("status %d (want %d): '%s' (want '%s')\n", st, want, err.msg, needle);
        fail();
    }
}

static void test_defaults_and_file(void **state)
{
    (void)state;
    cfg_search c;
    ccq_err err;
    cfg_defaults(&c);
    assert_int_equal(c.wbits, 4);
    assert_int_equal(c.lambda, 32);
    assert_int_equal(c.group, CFG_GROUP_CONFIDENCE);
    assert_true(c.alpha == 0.3);
    write_file("; comment\n[quant]\nwbits = 2\nfirst_last_8 = true\n[search]\nseed = 18446744073709551615\n"
               "group = layer\nalpha = 0.125\n[run]\noutput = /tmp/x model.h5\n");
    assert_int_equal(cfg_load(&c, g_path, &err), CCQ_OK);
    unlink(g_path);
    assert_int_equal(c.wbits, 2);
    assert_int_equal(c.first_last_8, 1);
    assert_true(c.seed == UINT64_MAX);
    assert_int_equal(c.group, CFG_GROUP_LAYER);
    assert_true(c.alpha == 0.125);
    assert_string_equal(c.output, "/tmp/x model.h5");
    assert_int_equal(c.lambda, 32); /* untouched keys keep their defaults */
}

static void test_echo_roundtrip(void **state)
{
    (void)state;
    cfg_search a, b;
    ccq_err err;
    cfg_defaults(&a);
    assert_int_equal(cfg_set(&a, "search.alpha=0.1", &err), CCQ_OK);
    assert_int_equal(cfg_set(&a, "search.group=random", &err), CCQ_OK);
    FILE *f = open_temp();
    cfg_write(&a, f);
    fclose(f);
    cfg_defaults(&b);
    assert_int_equal(cfg_load(&b, g_path, &err), CCQ_OK);
    unlink(g_path);
    assert_memory_equal(&a, &b, sizeof a);
}

static void test_errors(void **state)
{
    (void)state;
    expect_error("[search]\nlambda = 8\nlamda = 3\n", CCQ_ERR_USAGE, ":3: search.lamda: unknown key");
    expect_error("[serch]\nlambda = 8\n", CCQ_ERR_USAGE, ":2: serch.lambda: unknown key");
    expect_error("[quant]\nwbits = 9\n", CCQ_ERR_USAGE, ":2: quant.wbits: 9 is outside [2, 8]");
    expect_error("[quant]\nwbits = four\n", CCQ_ERR_USAGE, ":2: quant.wbits: expected an integer");
    expect_error("[search]\nalpha = 1.5\n", CCQ_ERR_USAGE, ":2: search.alpha: 1.5 is outside [0, 1]");
    expect_error("[search]\ngroup = greedy\n", CCQ_ERR_USAGE, "'greedy' is not one of confidence, layer, random");
    expect_error("[search]\nseed = -1\n", CCQ_ERR_USAGE, "search.seed: expected a non-negative integer");
    expect_error("[quant]\nfirst_last_8 = yes\n", CCQ_ERR_USAGE, "expected true or false");
    expect_error("[search]\nmu = 2\nmu = 3\n", CCQ_ERR_USAGE, ":3: search.mu: set twice");
    expect_error("[search]\nthis line has no equals sign\n", CCQ_ERR_USAGE, ":2: not a valid INI line");
    cfg_search c;
    ccq_err err;
    cfg_defaults(&c);
    assert_int_equal(cfg_load(&c, "/nonexistent/ccq.ini", &err), CCQ_ERR_IO);
    assert_non_null(strstr(err.msg, "/nonexistent/ccq.ini: no such file"));
}

/* Long lines are read whole (inih's compiled-in 200 would split them, and the tail of a
 * comment would become a setting); lines over the limit, NUL bytes and non-regular files
 * are refused. */
static void test_long_lines(void **state)
{
    (void)state;
    char text[6000], path[460];
    memset(path, 'p', sizeof path - 1);
    path[0] = '/';
    path[sizeof path - 1] = '\0';
    char pad[300];
    memset(pad, 'x', sizeof pad - 1);
    pad[sizeof pad - 1] = '\0';
    snprintf(text, sizeof text, "[search]\n; %s lambda = 3\nmu = 2\n[run]\noutput = %s\n", pad, path);
    cfg_search c;
    ccq_err err;
    cfg_defaults(&c);
    write_file(text);
    assert_int_equal(cfg_load(&c, g_path, &err), CCQ_OK);
    unlink(g_path);
    assert_int_equal(c.lambda, 32); /* the comment's tail is not a setting */
    assert_int_equal(c.mu, 2);
    assert_string_equal(c.output, path);
    char big[6000];
    snprintf(big, sizeof big, "[run]\nlog = a\n;");
    size_t n = strlen(big);
    memset(big + n, 'y', 4100);
    big[n + 4100] = '\0';
    expect_error(big, CCQ_ERR_USAGE, ":3: line longer than 4000 characters");
    FILE *f = open_temp();
    fwrite("[run]\nlog = a\0b\n", 1, 17, f);
    fclose(f);
    cfg_defaults(&c);
    assert_int_equal(cfg_load(&c, g_path, &err), CCQ_ERR_USAGE);
    unlink(g_path);
    assert_non_null(strstr(err.msg, ":2: a NUL byte"));
    assert_int_equal(cfg_load(&c, "/tmp", &err), CCQ_ERR_IO);
    assert_non_null(strstr(err.msg, "/tmp: is a directory"));
    snprintf(g_path, sizeof g_path, "/tmp/ccq_test_cfg_fifo_%ld", (long)getpid());
    unlink(g_path);
    assert_int_equal(mkfifo(g_path, 0600), 0);
    assert_int_equal(cfg_load(&c, g_path, &err), CCQ_ERR_IO); /* refused without opening: no hang */
    unlink(g_path);
    assert_non_null(strstr(err.msg, "not a regular file"));
}

static void test_set(void **state)
{
    (void)state;
    cfg_search c;
    ccq_err err;
    cfg_defaults(&c);
    assert_int_equal(cfg_set(&c, "run.budget=500", &err), CCQ_OK);
    assert_int_equal(c.budget, 500);
    assert_int_equal(cfg_set(&c, "run.budget", &err), CCQ_ERR_USAGE);
    assert_non_null(strstr(err.msg, "expected section.key=value"));
    assert_int_equal(cfg_set(&c, "search.nope=1", &err), CCQ_ERR_USAGE);
    assert_non_null(strstr(err.msg, "unknown key search.nope"));
    assert_int_equal(cfg_set(&c, "search.lambda=1", &err), CCQ_ERR_USAGE);
    assert_non_null(strstr(err.msg, "search.lambda: 1 is outside [2, 4096]"));
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_defaults_and_file),
        cmocka_unit_test(test_echo_roundtrip),
        cmocka_unit_test(test_errors),
        cmocka_unit_test(test_long_lines),
        cmocka_unit_test(test_set),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
