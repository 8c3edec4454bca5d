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

/* How an executor runs its graph: the optimizations kiln can switch off,
 * each a real alternative path (what kiln_optimizations maps onto). */
typedef struct graph_exec_options {
    /* 0: the fused tiled attention kernel (online softmax, memory O(tile));
     * 1: the plain path: per head, the whole score matrix q k^T with the
     * matrix kernels, a softmax over its rows, then P v with the matrix
     * kernels again (memory q_len x kv_len floats) */
    int plain_attention;
    int attention_tile; /* the tiled kernel's query tile (attention_geom.tile_q); 0: its default */
    /* 0: every activation at its offset in one arena planned at create;
     * 1: each node's output malloc'd just before it runs and freed after its
     * last reader (outputs are kept until the next run) */
    int alloc_as_you_go;
    int fast_math; /* 1: polynomial exp and erf; 0: libm's (kernels_for_math) */
    /* 1: group norm + SiLU as two passes over memory, residual adds and
     * nearest x2 upsamplings as their own passes; 0: SiLU inside the norm's
     * last pass, an add whose operand is a convolution read by nothing else
     * inside that conv, an upsampling read only by a convolution folded
     * into its input indexing */
    int unfused;
    /* 1: after each node runs, count the NaN and Inf values of its output;
     * the first node of a run that made one is recorded (graph_exec_nonfinite)
     * and the run goes on unchanged (later nodes are not checked: they only
     * carry the first one's values on). Views have no output of their own;
     * a residual add fused into its convolution is checked as that
     * convolution. 0: no check, no cost */
    int check_finite;
    /* 1: every convolution by the direct kernel (conv2d_f32); 0: 3x3
     * stride-1 convolutions with enough tiles by Winograd F(4x4, 3x3) */
    int direct_conv;
    /* 1: the model's graphs are rewritten to hold their images channels
     * first (graph/layout.h) before an executor is made for them; the
     * executor itself runs whatever layout each node's output says */
    int nchw;
} graph_exec_options;

/* The fastest: tiled attention at its default tile, the static plan, fast
 * math, fused ops. */
void graph_exec_options_defaults(graph_exec_options *o);

/* Plans and allocates the arena, and prepares every weight for the kernel
 * level in use (kernels_get() now; the executor keeps that level) through
 * cache, which must outlive the executor; cache NULL gives the executor a
 * cache of its own. The graph must stay alive and unchanged while the
 * executor exists. Errors: the graph's own error, KILN_ERR_NOMEM (naming
 * the size), the cache's errors. */
kiln_status graph_exec_create(const graph *g, weight_cache *cache, graph_exec **out);
/* The same with options (NULL: the defaults). With alloc_as_you_go no
 * arena is made: activations are allocated during runs. */
kiln_status graph_exec_create_with(const graph *g, weight_cache *cache, const graph_exec_options *o,
                                   graph_exec **out);
void graph_exec_destroy(graph_exec *e);

/* The options the executor was made with. */
const graph_exec_options *graph_exec_get_options(const graph_exec *e);

/* Residual adds folded into the convolution before them (0 when unfused):
 * the conv kernel adds the other operand as it stores each tile, so the
 * add's pass over memory and its buffer are gone. */
size_t graph_exec_fused_adds(const graph_exec *e);

/* Nearest upsamplings folded into the convolution after them (0 when
 * unfused): the convolution reads the half-resolution input, so the
 * upsampled tensor is never stored. */
size_t graph_exec_folded_upsamples(const graph_exec *e);

/* Convolutions that run by Winograd F(4x4, 3x3) under the executor's
 * options (3x3 stride 1, enough tiles, bounded transformed weights); the
 * others run the direct kernel. */
size_t graph_exec_winograd_convs(const graph_exec *e);

/* The bytes graph_exec_create would allocate for the graph's activations
 * (with the default options: fused), computed without allocating them (or
 * preparing any weight): what budgets and batch sizes are planned with. */
kiln_status graph_plan_bytes(const graph *g, size_t *bytes);

/* Bytes of the activation arena: the plan's peak (0 when allocating as it
 * goes). */
size_t graph_exec_arena_bytes(const graph_exec *e);

/* The most activation bytes held at once in any run so far: the arena's
 * size under the static plan; under alloc_as_you_go the largest sum of the
 * live allocations (what malloc was asked for, not its overhead). */
size_t graph_exec_peak_bytes(const graph_exec *e);

/* Bytes of kernel scratch held (attention tiles per thread; the plain
 * attention's score matrix and packed operands; an NCHW convolution's
 * block of gathered patches per thread). */
size_t graph_exec_scratch_bytes(const graph_exec *e);

/* Bytes of kernel scratch an executor of g with options o and `threads`
 * threads holds (kernel level k): the largest Winograd transformed weights
 * (unless o->direct_conv), and per thread the largest of the tiled
 * attention's scratch (unless o->plain_attention), the Winograd tile
 * blocks and the channels-first gather (kernels/nchw.h). Not the plain
 * attention's score matrix: the caller counts that. */
size_t graph_kernel_scratch_bytes(const graph *g, const kernel_table *k, const graph_exec_options *o, int threads);

/* Gives the pages of the arena and the kernel scratch back to the OS
 * between runs (memory_release_pages): a model's graphs run one after
 * another, so each holds memory only while it runs and the process peak is
 * the largest graph's, not their sum. Outputs of the last run are lost;
 * the next run touches the pages again. */
void graph_exec_release_pages(graph_exec *e);

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

/* Called after every node that computes something (not inputs or
 * weights) with its id and when it ran, on the thread that called
 * graph_exec_run: the material of a timeline. ctx is the caller's. */
typedef void (*graph_trace_fn)(void *ctx, const graph *g, graph_id id, uint64_t start_ns, uint64_t end_ns);

/* Attaches a trace hook the following runs call (fn NULL detaches). Like
 * the profile it costs a clock read per node. */
void graph_exec_set_trace(graph_exec *e, graph_trace_fn fn, void *ctx);
/* The first node whose output held a NaN or an Inf in the last run (with
 * check_finite; reset as each run starts). */
typedef struct graph_nonfinite {
    int found;           /* 0: every checked output was finite (the rest is unset) */
    graph_id node;
    const char *name;    /* as the graph names it; lives as long as the graph */
    graph_op op;
    int ndim;
    int64_t shape[TENSOR_MAX_DIMS];
    int64_t count;       /* non-finite values in its output */
    int64_t first_index; /* flat index (row-major over shape) of the first */
    float first_value;   /* NaN, +Inf or -Inf */
} graph_nonfinite;

/* Fills *out from the last run (found 0 when check_finite is off). */
void graph_exec_nonfinite(const graph_exec *e, graph_nonfinite *out);

/* Seconds the last run spent checking outputs (check_finite): its cost. */
double graph_exec_check_seconds(const graph_exec *e);

/* ---- group norms across runs ----
 * Run over the tiles of a larger input (models/vae_tiles.c), a graph's
 * group norms would each take their statistics over the tile alone. These
 * let the caller gather them over the whole input first, tile by tile, and
 * then normalize every tile with them. */

typedef enum graph_norm_mode {
    GRAPH_NORM_OWN,     /* each run normalizes with its own statistics (the default) */
    GRAPH_NORM_COLLECT, /* as OWN, and each group norm adds its input's sums over the region */
    GRAPH_NORM_SHARED,  /* each group norm normalizes with the statistics gathered instead */
    GRAPH_NORM_MODE_COUNT
} graph_norm_mode;

/* What a COLLECT run counts: rows [y0, y1) of h and columns [x0, x1) of w,
 * scaled to each group norm's input (at twice the resolution, rows
 * [2 y0, 2 y1) of 2 h). */
typedef struct graph_norm_region {
    int y0, y1, x0, x1, h, w;
} graph_norm_region;

/* The doubles the statistics of g's group norms take: a sum, a sum of
 * squares and a count per (batch, group) of each group norm. */
size_t graph_norm_stats_size(const graph *g);

/* How the following runs' group norms take their statistics. stats holds
 * graph_norm_stats_size doubles, zeroed by the caller before the first
 * COLLECT, and is borrowed until the mode is set back to OWN; region is
 * read for COLLECT (copied). A group norm whose input is not an image
 * [b, h, w, c] counts all of it. Under SHARED the SiLU of a fused group
 * norm runs as its own pass. Errors: KILN_ERR_NOMEM (the first SHARED
 * allocates a scale and shift per channel for the executor's life). */
kiln_status graph_exec_set_norm_stats(graph_exec *e, graph_norm_mode mode, double *stats,
                                      const graph_norm_region *region);

/* The data of an output node (graph_mark_output) after a run; lives until
 * the next run or destroy. NULL for other nodes. */
const float *graph_exec_output(const graph_exec *e, graph_id id);

#endif
