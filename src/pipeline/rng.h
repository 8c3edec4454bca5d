/*
 * rng.h - the noise generators other SD tools use, so a seed means the
 * same picture here as there.
 *
 *   RNG_TORCH_CPU  PyTorch's CPU generator: torch.manual_seed(seed) then
 *                  torch.randn(shape) (diffusers on CPU, ComfyUI)
 *   RNG_PHILOX     PyTorch's CUDA generator (Philox 4x32-10), as
 *                  AUTOMATIC1111's web UI draws by default
 *
 * A stream is one generator; each rng_randn call is one torch.randn call of
 * n values, and consecutive calls continue the stream as torch does.
 */
#ifndef KILN_PIPELINE_RNG_H
#define KILN_PIPELINE_RNG_H

#include <stddef.h>
#include <stdint.h>

#include "kiln.h"

typedef enum rng_kind {
    RNG_TORCH_CPU,
    RNG_PHILOX,
    RNG_KIND_COUNT
} rng_kind;

typedef struct rng_stream {
    rng_kind kind;
    uint64_t seed;
    /* mt19937 */
    uint32_t mt[624];
    int mt_index;
    /* torch's normal_distribution<double> makes values in pairs and keeps
     * the second for the next small draw */
    int has_cached_normal;
    double cached_normal;
    /* philox: the offset in 32-bit draws so far */
    uint64_t philox_offset;
} rng_stream;

/* "torch-cpu" / "cpu", "philox" / "gpu" / "cuda". Returns 0 or -1. */
int rng_parse(const char *name, rng_kind *out);
const char *rng_name(rng_kind kind);

void rng_init(rng_stream *r, rng_kind kind, uint64_t seed);

/* n standard-normal float32 values, as torch.randn(n) would give them. */
void rng_randn(rng_stream *r, float *out, size_t n);

/* The next raw 32-bit value of the mt19937 engine (for tests). */
uint32_t rng_mt_next(rng_stream *r);

#endif
