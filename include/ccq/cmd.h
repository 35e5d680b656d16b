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
ccq_status cmd_quantize(int argc, char **argv, ccq_err *err);
ccq_status cmd_bench(int argc, char **argv, ccq_err *err);
ccq_status cmd_export(int argc, char **argv, ccq_err *err);
ccq_status cmd_prune_act(int argc, char **argv, ccq_err *err);
ccq_status cmd_factorize(int argc, char **argv, ccq_err *err);
/* Returns a status; a negative value means "exit with -value, print nothing" (MPI ranks other than 0). */
ccq_status cmd_search(int argc, char **argv, ccq_err *err);

/* Parses a decimal integer in [min, max]; CCQ_ERR_USAGE naming the flag otherwise. */
ccq_status cmd_parse_int(const char *cmd, const char *flag, const char *s, long long min, long long max,
                         long long *out, ccq_err *err);

#endif
