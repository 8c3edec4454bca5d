/*
 * winograd.h - the sizes around the Winograd F(4x4, 3x3) convolution of the
 * kernel tables (kernel_table.winograd_*; the algorithm is in
 * winograd_driver.h).
 *
 * Each 4x4 block of output pixels is a tile; a convolution of batch b and
 * output h x w has b * ceil(h / 4) * ceil(w / 4) of them, numbered
 * image-major, then row by row.
 */
#ifndef KILN_KERNELS_WINOGRAD_H
#define KILN_KERNELS_WINOGRAD_H

#include "kernels/kernels.h"

/* the widest input the transforms read padding for (as the direct kernels) */
#define WINOGRAD_MAX_CHANNELS 4096
/* the widest weight panel a level packs */
#define WINOGRAD_MAX_LANES 32
/* input channels the weight transform widens at once */
#define WINOGRAD_CHUNK 8

static inline int winograd_fits(const conv2d_geom *g)
{
    return g->kernel == 3 && g->stride == 1 && g->in_c <= WINOGRAD_MAX_CHANNELS;
}

static inline int64_t winograd_tiles(const conv2d_geom *g)
{
    return g->batch * ((g->out_h + 3) / 4) * ((g->out_w + 3) / 4);
}

/* Floats of one of the 36 points' weights: a linear layer's packed weight
 * of w->n outputs and w->k inputs. */
static inline int64_t winograd_point_elements(const packed_weights *w)
{
    return (int64_t)kernels_packed_elements(w->nr, w->n, w->k, 1);
}

/* Floats of all the transformed weights. */
static inline int64_t winograd_weight_elements(const packed_weights *w)
{
    return 36 * winograd_point_elements(w);
}

/* Bytes of scratch one call over `tiles` tiles needs: the transformed
 * inputs and the products, 36 points each (each part 64-byte aligned). */
static inline int64_t winograd_align(int64_t floats)
{
    return (floats + 15) / 16 * 16;
}

static inline size_t winograd_scratch_bytes(const conv2d_geom *g, int64_t tiles)
{
    int64_t floats = winograd_align(36 * tiles * g->in_c) + winograd_align(36 * tiles * g->out_c);
    return (size_t)floats * sizeof(float);
}

/* Tiles per call of winograd_conv_f32 when `threads` share a convolution:
 * up to 96, which lets the matrix kernel reuse each block of weights over
 * many rows, but no more than an even share per thread, and no more than
 * 16 MB of scratch. */
static inline int64_t winograd_block_tiles(const conv2d_geom *g, int threads)
{
    int64_t tiles = winograd_tiles(g), share = (tiles + threads - 1) / threads;
    int64_t block = share < 96 ? share : 96;
    while (block > 12 && winograd_scratch_bytes(g, block) > ((size_t)16 << 20))
        block -= 12;
    return block > 0 ? block : 1;
}

#endif
