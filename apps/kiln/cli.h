/*
 * cli.h - the subcommands of the kiln command line tool.
 *
 * Each takes the arguments after its name and returns the process exit
 * status: 0 done, 1 failed (the message is on stderr), 2 bad usage.
 */
#ifndef KILN_APPS_CLI_H
#define KILN_APPS_CLI_H

enum { CLI_OK = 0, CLI_FAILED = 1, CLI_USAGE = 2 };

int cmd_info(int argc, char **argv);
int cmd_generate(int argc, char **argv);
int cmd_bench(int argc, char **argv);
int cmd_serve(int argc, char **argv); /* apps/serve */

/* The model to use when none is given: $KILN_MODEL, else the one this
 * build ships (KILN_DEFAULT_MODEL), else NULL. */
const char *cli_default_model(void);

/* Prints "kiln: <what>: <kiln_last_error()>" to stderr; returns CLI_FAILED. */
int cli_fail(const char *what);

#endif
