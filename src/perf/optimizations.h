/*
 * optimizations.h - kiln_optimizations resolved against this machine, the
 * model and the engine: what will run, a report per switch (asked, active,
 * why they differ), and the executor options that make it so.
 */
#ifndef KILN_PERF_OPTIMIZATIONS_H
#define KILN_PERF_OPTIMIZATIONS_H

#include "graph/executor.h"
#include "kiln.h"

/* KILN_OK, or KILN_ERR_INVALID naming the first switch out of range. */
kiln_status opt_validate(const kiln_optimizations *o);

/* Resolves asked (valid) for a model whose weights are model_precision and
 * an engine of engine_threads threads, at the kernel level in use:
 * active, report[KILN_OPT_COUNT] (may be NULL) and exec (may be NULL). */
void opt_resolve(const kiln_optimizations *asked, kiln_precision model_precision, int engine_threads,
                 kiln_optimizations *active, kiln_opt_report *report, graph_exec_options *exec);

/* The packing dtype of a precision, and the precision of a name ("f32",
 * "f16", "bf16"; 0 or -1). */
kiln_dtype opt_precision_dtype(kiln_precision p);
int opt_precision_parse(const char *name, kiln_precision *out);

#endif
