/*
 * parity_support.h - comparing kiln's graphs with the PyTorch goldens that
 * tools/sd_reference.py writes to tests/data/golden/.
 *
 * A golden file holds a model's (or a block's) weights under their real
 * names and golden.* tensors: inputs, outputs and traces, NCHW as PyTorch
 * has them, computed in float64 and rounded to float32.
 */
#ifndef KILN_TEST_PARITY_SUPPORT_H
#define KILN_TEST_PARITY_SUPPORT_H

#include "core/threadpool.h"
#include "graph/executor.h"
#include "models/build.h"

typedef struct golden_trace {
    char module[96];
    graph_id id;
} golden_trace;

typedef struct golden {
    char *path;
    weight_store *ws;
    graph *g;
    model_build b;
    golden_trace traces[256];
    int n_traces;
} golden;

/* Opens tests/data/golden/<file> and starts an empty graph whose builder
 * reads weights under prefix. Returns 0, or records a failure and returns -1. */
int golden_open(golden *gd, const char *file, const char *prefix);
/* For diffusers folders: the weights from <dir>/<component file> with the
 * diffusers name map, the golden tensors from tests/data/golden/<golden_file>. */
void golden_close(golden *gd);

/* The golden tensor as f32 (malloc'd), its dims in shape and ndim;
 * NULL (and a recorded failure) when missing. */
float *golden_read(golden *gd, const char *name, int64_t *shape, int *ndim);
int golden_has(golden *gd, const char *name);

/* An NHWC graph input for an NCHW golden tensor: the converted data is
 * returned in *data (malloc'd) for binding. 3-d and smaller tensors are
 * taken as they are. */
graph_id golden_input(golden *gd, const char *name, float **data);

/* Layout conversion of a 4-d tensor. */
float *nchw_to_nhwc(const float *x, const int64_t *nchw);
float *nhwc_to_nchw(const float *x, const int64_t *nchw);

/* Records every traced module as an output to compare later. */
void golden_trace_all(golden *gd);

/* Compares got (kiln's layout: NHWC when the golden is 4-d) with the golden
 * tensor name: max|got - want| / max|want| must be <= tol. Prints the
 * measured error either way; returns it. */
double golden_compare(golden *gd, const char *name, const float *got, double tol);

/* Runs the graph (inputs already bound) on a pool of 2 threads; compares
 * every trace that has a golden.trace.<module> tensor with tol. */
kiln_status golden_run(golden *gd, graph_exec **exec, double trace_tol);

#endif
