/*
 * weight_cache.h - weights prepared for the kernels, once per model.
 *
 * Graph weights point at the file's tensors (F32, F16 or BF16, PyTorch's
 * layout). Before a graph runs, its executor asks the cache for the form
 * each kernel reads: matrix and convolution weights packed for the kernel
 * level in use, everything else (biases, norms, embeddings) as f32. The
 * cache keys on the source data and the form, so every graph built from a
 * model (each resolution, each batch size) shares one prepared copy.
 * Not thread-safe: one owner (the model) at a time.
 */
#ifndef KILN_GRAPH_WEIGHT_CACHE_H
#define KILN_GRAPH_WEIGHT_CACHE_H

#include "core/tensor.h"
#include "core/threadpool.h"
#include "kernels/kernels.h"

typedef struct weight_cache weight_cache;

/* pack_dtype: how matrix weights are kept, F32, F16 or BF16 (half the
 * memory; the kernels widen them to f32 as they load). Errors: KILN_ERR_NOMEM,
 * KILN_ERR_INVALID for another dtype. */
kiln_status weight_cache_create(kiln_dtype pack_dtype, weight_cache **out);
void weight_cache_destroy(weight_cache *c);

/* w as a GEMM operand of n outputs, k inputs per tap and taps taps, packed
 * with panel width nr in the cache's dtype. The result lives as long as
 * the cache.
 * Errors: KILN_ERR_NOMEM (naming the bytes), KILN_ERR_UNSUPPORTED (dtype). */
kiln_status weight_cache_packed(weight_cache *c, const tensor *w, int64_t n, int64_t k, int64_t taps, int nr,
                                const packed_weights **out);

/* w as f32, in a copy the cache owns even when w is f32 already: a graph
 * then never reads the weight file's mapping once prepared, so a file cut
 * short on disk cannot fault (SIGBUS) a running generation. The planner
 * counts these bytes (tally_weights); the file's pages are released. */
kiln_status weight_cache_f32(weight_cache *c, const tensor *w, const float **out);

/* w in its own dtype (F32, F16 or BF16), in a copy the cache owns, for
 * readers that widen only the rows they use (a text encoder's token
 * table: 49,408 rows of which a prompt reads 77) and would otherwise hold
 * the whole table as f32, twice an f16 file's bytes. Like
 * weight_cache_f32, it decouples the graph from the file's mapping. */
kiln_status weight_cache_copy(weight_cache *c, const tensor *w, const void **out);

/* Called with each source tensor's bytes once a packed copy of it exists,
 * so an owner can let the file's pages go (NULL: nothing is called). */
typedef void (*weight_release_fn)(void *ctx, const void *data, size_t bytes);
void weight_cache_set_release(weight_cache *c, weight_release_fn fn, void *ctx);

/* Packs weights on pool's threads from now on (NULL: on the caller's). */
void weight_cache_set_pool(weight_cache *c, tpool *pool);

/* Bytes the cache holds. */
size_t weight_cache_bytes(const weight_cache *c);

#endif
