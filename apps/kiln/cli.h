/*
 * cli.h - the subcommands of the kiln command line tool.
 *
 * Each takes the arguments after its name and returns the process exit
 * status: 0 done, 1 failed (the message is on stderr), 2 bad usage.
 */
#ifndef KILN_APPS_CLI_H
#define KILN_APPS_CLI_H

#include <jansson.h>
#include <stdio.h>

#include "kiln.h"

enum { CLI_OK = 0, CLI_FAILED = 1, CLI_USAGE = 2 };

int cmd_info(int argc, char **argv);
int cmd_generate(int argc, char **argv);
int cmd_bench(int argc, char **argv);
int cmd_serve(int argc, char **argv); /* apps/serve */
int cmd_tune(int argc, char **argv);

/* The model to use when none is given: $KILN_MODEL, else the one this
 * build ships (KILN_DEFAULT_MODEL), else NULL. */
const char *cli_default_model(void);

/* Prints "kiln: <what>: <kiln_last_error()>" to stderr; returns CLI_FAILED. */
int cli_fail(const char *what);

/* ---- optimization switches (cli_opt.c) ---- */

/* When arg is an optimization flag (--attention, --attention-tile,
 * --layout, --fusion, --memory, --precision, --fast-math, --threads,
 * --vae-tiling, --vae-tile): applies value to o and returns 1, or prints why
 * not ("kiln <cmd>: ...") and returns -1. 0 for any other arg. */
int cli_optimization_flag(const char *cmd, const char *arg, const char *value, kiln_optimizations *o);
void cli_optimization_usage(FILE *out);

/* The report per switch, as JSON (a new array) or lines on out: all of
 * them, or only those that could not run as asked. */
json_t *cli_report_json(const kiln_opt_report *rep);
void cli_report_print(FILE *out, const kiln_opt_report *rep, int all);

/* ---- debug mode (cli_debug.c) ---- */

/* Debug mode's report as JSON (a new object; infinities as the string
 * "inf", what was not measured as null) or as "debug: " lines on out. */
json_t *cli_debug_json(const kiln_debug_report *d);
void cli_debug_print(FILE *out, const kiln_debug_report *d);
/* ---- --tuned (cli_tuned.c) ---- */

/* Looks up what `kiln tune` stored for model at width x height (0: the
 * model's native size) on this CPU, without measuring: prints on msg the
 * line saying which settings are used ("kiln <cmd>: using tuned settings
 * from ...") or why none are (no entry, another CPU, the model changed, a
 * corrupt cache) and that the defaults are. 1 and *out on a match, else 0. */
int cli_tuned_lookup(const char *cmd, const char *model, const char *tokenizer, int width, int height,
                     kiln_tuning *out, FILE *msg);

/* Applies t to the switches of o not in given (a mask of 1 << kiln_opt:
 * the flags given on the command line, which win) and to *batch_size when
 * it is 0 (batch_size may be NULL). */
void cli_tuned_apply(const kiln_tuning *t, kiln_optimizations *o, unsigned given, int *batch_size);

/* 1 << the switch an optimization flag ("--attention-tile") sets, else 0. */
unsigned cli_optimization_bit(const char *arg);

#endif
