/*
 * winograd.h - the sizes around the Winograd F(m x m, 3x3) convolutions of
 * the kernel tables (kernel_table.winograd_*[]; the algorithm is in
 * winograd_driver.h), for tiles of m = 4 and m = 2 output pixels a side.
 *
 * Each m x m block of output pixels is a tile; a convolution of batch b
 * and output h x w has b * ceil(h / m) * ceil(w / m) of them, numbered
 * image-major, then row by row. A tile reads (m + 2) x (m + 2) inputs and
 * has as many points: 36 for F(4x4), 16 for F(2x2).
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

/* The output tile side of a variant (kernel_table's winograd_*[v]). */
static inline int winograd_side(winograd_variant v)
{
    return v == WINOGRAD_F2 ? 2 : 4;
}

static inline int64_t winograd_points(winograd_variant v)
{
    int64_t a = winograd_side(v) + 2;
    return a * a;
}

static inline int winograd_fits(const conv2d_geom *g)
{
    return g->kernel == 3 && g->stride == 1 && g->in_c <= WINOGRAD_MAX_CHANNELS;
}

static inline int64_t winograd_tiles(const conv2d_geom *g, winograd_variant v)
{
    int m = winograd_side(v);
    return g->batch * ((g->out_h + m - 1) / m) * ((g->out_w + m - 1) / m);
}

/* The transformed weights of a convolution are made and used a group of
 * output channels at a time, at most this many bytes of them (F(4x4): all
 * the channels at once up to 640 x 640; 1920 inputs: 224 channels a
 * group). */
#define WINOGRAD_MAX_WEIGHT_BYTES ((size_t)64 << 20)

/* Floats of one point's weights for `channels` output channels of k
 * inputs: a linear layer's weight packed with nr lanes. */
static inline int64_t winograd_point_elements(int nr, int64_t channels, int64_t k)
{
    return (int64_t)kernels_packed_elements(nr, channels, k, 1);
}

/* Floats of the transformed weights of `channels` output channels: every
 * point's. */
static inline size_t winograd_weight_floats(winograd_variant v, int nr, int64_t channels, int64_t k)
{
    return (size_t)(winograd_points(v) * winograd_point_elements(nr, channels, k));
}

/* Output channels per group: every one when their transformed weights fit
 * WINOGRAD_MAX_WEIGHT_BYTES, else the most whole panels of nr that do
 * (one panel at least). */
static inline int64_t winograd_group_channels(const conv2d_geom *g, winograd_variant v, int nr)
{
    int64_t lanes = nr > 0 ? nr : 1, points = winograd_points(v);
    if (winograd_weight_floats(v, nr, g->out_c, g->in_c) * sizeof(float) <= WINOGRAD_MAX_WEIGHT_BYTES)
        return g->out_c;
    size_t panel_bytes = (size_t)points * sizeof(float) * (size_t)(g->in_c * lanes);
    int64_t panels = (int64_t)(WINOGRAD_MAX_WEIGHT_BYTES / panel_bytes);
    return (panels > 0 ? panels : 1) * lanes;
}

static inline int64_t winograd_align(int64_t floats)
{
    return (floats + 15) / 16 * 16;
}

/* Bytes of scratch one call over `tiles` tiles and `channels` output
 * channels needs: the transformed inputs and the products, a tile's points
 * each (each part 64-byte aligned). */
static inline size_t winograd_scratch_bytes(const conv2d_geom *g, winograd_variant v, int64_t tiles, int64_t channels)
{
    int64_t points = winograd_points(v);
    int64_t floats = winograd_align(points * tiles * g->in_c) + winograd_align(points * tiles * channels);
    return (size_t)floats * sizeof(float);
}

/* Tiles per call of winograd_conv_f32 when `threads` share a convolution:
 * up to 96, which lets the matrix kernel reuse each block of weights over
 * many rows, but no more than an even share per thread, and no more than
 * 16 MB of scratch. */
static inline int64_t winograd_block_tiles(const conv2d_geom *g, winograd_variant v, int threads)
{
    int64_t tiles = winograd_tiles(g, v), share = (tiles + threads - 1) / threads;
    int64_t block = share < 96 ? share : 96;
    while (block > 12 && winograd_scratch_bytes(g, v, block, g->out_c) > ((size_t)16 << 20))
        block -= 12;
    return block > 0 ? block : 1;
}

#endif
