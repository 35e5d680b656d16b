/*
 * cmd.h: the `ccq` subcommands and the small argument helpers they share.
 * Each cmd_* takes argv after the subcommand name, prints its own results
 * on stdout and returns a ccq_status with err filled on failure; main()
 * alone prints the error line and exits with the status as exit code.
 */
#ifndef CCQ_CMD_H
#define CCQ_CMD_H

#include "ccq/common.h"

ccq_status cmd_eval(int argc, char **argv, ccq_err *err);
ccq_status cmd_inspect(int argc, char **argv, ccq_err *err);

/* Parses a decimal integer in [min, max]; CCQ_ERR_USAGE naming the flag otherwise. */
ccq_status cmd_parse_int(const char *cmd, const char *flag, const char *s, long long min, long long max,
                         long long *out, ccq_err *err);

/* Writes `path` atomically: the caller writes to tmp (from cmd_tmp_path),
 * then cmd_commit renames it into place; cmd_discard removes it. */
void cmd_tmp_path(char *tmp, size_t n, const char *path);
ccq_status cmd_commit(const char *tmp, const char *path, ccq_err *err);
void cmd_discard(const char *tmp);

#endif
