/*
 * executor.h - running a graph: a static memory plan, then replay.
 *
 * graph_exec_create plans once where every activation lives: the lifetime
 * of each node's output (from the node to its last reader; outputs to the
 * end) is packed into one arena, so a run allocates nothing and the peak is
 * known before the first step. A run walks the nodes in order and splits
 * each across the thread pool.
 */
#ifndef KILN_GRAPH_EXECUTOR_H
#define KILN_GRAPH_EXECUTOR_H

#include "core/threadpool.h"
#include "graph/graph.h"
#include "graph/weight_cache.h"

typedef struct graph_exec graph_exec;

/* Plans and allocates the arena, and prepares every weight for the kernel
 * level in use (kernels_get() now; the executor keeps that level) through
 * cache, which must outlive the executor; cache NULL gives the executor a
 * cache of its own. The graph must stay alive and unchanged while the
 * executor exists. Errors: the graph's own error, KILN_ERR_NOMEM (naming
 * the size), the cache's errors. */
kiln_status graph_exec_create(const graph *g, weight_cache *cache, graph_exec **out);
void graph_exec_destroy(graph_exec *e);

/* The bytes graph_exec_create would allocate for the graph's activations,
 * computed without allocating them (or preparing any weight): what
 * budgets and batch sizes are planned with. */
kiln_status graph_plan_bytes(const graph *g, size_t *bytes);

/* Bytes of the activation arena: the plan's peak. */
size_t graph_exec_arena_bytes(const graph_exec *e);

/* Points an input node at caller memory (f32, its shape), read during runs.
 * Errors: KILN_ERR_INVALID when id is not an input. */
kiln_status graph_exec_bind(graph_exec *e, graph_id input, const float *data);

/* Runs every node. Errors: KILN_ERR_INVALID when an input is unbound. */
kiln_status graph_exec_run(graph_exec *e, tpool *pool);

/* Time and work per op kind, added up over the runs it was attached to. */
typedef struct graph_profile {
    double seconds[GRAPH_OP_COUNT];
    double flops[GRAPH_OP_COUNT];
    int64_t nodes[GRAPH_OP_COUNT];
    int runs;
} graph_profile;

/* Attaches a profile the following runs add to (NULL detaches). Timing
 * each node costs a clock read per node. */
void graph_exec_set_profile(graph_exec *e, graph_profile *p);

/* The data of an output node (graph_mark_output) after a run; lives until
 * the next run or destroy. NULL for other nodes. */
const float *graph_exec_output(const graph_exec *e, graph_id id);

#endif
