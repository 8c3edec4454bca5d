/*
 * vae_tiles.h - decoding a latent in overlapping tiles, so that the VAE
 * decoder's activations are sized for one tile instead of the whole image.
 *
 * The latent is covered by a grid of tiles of one size (so one decoder
 * graph and one memory plan serve them all), spread evenly over each axis
 * so that neighbours overlap by at least a quarter tile. Each tile is
 * decoded on its own; where tiles overlap, their pixels are blended with
 * linear ramps (feathering), so no seam shows. The decoder's group norms
 * do not take their statistics over the tile, which would shift each
 * tile's colours with what it holds: one run of the same graph over the
 * whole latent shrunk to a tile gathers them first, and every tile is
 * normalized with those (graph_exec_set_norm_stats).
 *
 * Tiling still changes the result slightly: the decoder's mid-block
 * self-attention attends only within the tile, not over the whole latent;
 * pixels near a tile's edge see zeros past it (the overlap and the ramps
 * keep them out of the blend as far as the overlap reaches); and the
 * statistics are estimated at a lower resolution. That is the accepted
 * trade-off of tiled VAE decoding (diffusers' enable_vae_tiling,
 * AUTOMATIC1111's tiled VAE); debug mode measures it against a whole
 * decode. Small tiles cost the most: below about 32 latent pixels a tile
 * is mostly edge.
 */
#ifndef KILN_MODELS_VAE_TILES_H
#define KILN_MODELS_VAE_TILES_H

#include <stddef.h>

#include "models/model_graphs.h"

/* Tile sides in image pixels. The default, 256, is 32 latent pixels at
 * SD's factor 8: its decoder's arena at 256x256 is a quarter of the one at
 * 512x512 (160 of 640 MB) and stays so at any image size, while a tile is
 * still three times the reach of the 3x3 convolutions at latent resolution
 * (about 11 pixels). */
#define VAE_TILE_DEFAULT 256
#define VAE_TILE_MIN 64
#define VAE_TILE_MULTIPLE 8

/* Tiles per axis at most: 2048 pixels in the smallest tiles (64, a step of
 * 48) need 43. */
#define VAE_TILES_MAX 64

typedef struct vae_tiles {
    int factor;                /* image pixels per latent pixel */
    int lat_h, lat_w;          /* the whole latent */
    int tile_h, tile_w;        /* every tile's latent size: the decoder graph's shape */
    int rows, cols;            /* 1 x 1: the latent is decoded whole */
    int y[VAE_TILES_MAX];      /* latent row of each row of tiles' top edge */
    int x[VAE_TILES_MAX];      /* latent column of each column of tiles' left edge */
} vae_tiles;

/* Lays out tiles of tile_px image pixels a side (0: none, the latent whole)
 * over a lat_h x lat_w latent of a VAE with this factor. An axis no longer
 * than a tile is one tile of its own length; a tile is at least 4 latent
 * pixels. Neighbours overlap by at least a quarter tile (one latent pixel
 * at the least); the first tile starts at 0, the last ends at the edge. */
void vae_tiles_layout(int lat_h, int lat_w, int factor, int tile_px, vae_tiles *out);

/* The number of tiles; 1 when the latent is decoded whole. */
int vae_tiles_count(const vae_tiles *t);

/* The bytes a tiled decode holds beside the decoder's arena: the latent
 * tile it feeds the graph and the blended f32 image it accumulates (0 when
 * decoded whole). */
size_t vae_tiles_buffer_bytes(const vae_tiles *t, int latent_channels, int image_channels);

/* Called after each decoder run, with the executor that ran it (to read
 * its NaN/Inf check); ctx is the caller's. */
typedef void (*vae_tile_fn)(void *ctx, graph_exec *exec);

/* Decodes latent ([lat_h, lat_w, z] NHWC, unscaled) tile by tile with the
 * decoder graph mg (built for [1, tile_h, tile_w, z] with an executor),
 * into image ([lat_h * f, lat_w * f, c] NHWC, the decoder's own values),
 * blending the overlaps: one run for the group norms' statistics (when the
 * graph has group norms), then one per tile. after (may be NULL) is called
 * after every run.
 * Errors: KILN_ERR_SHAPE when mg is not a decoder of the tile's shape,
 * KILN_ERR_NOMEM, the executor's. */
kiln_status vae_tiles_decode(const vae_tiles *t, model_graph *mg, tpool *pool, const float *latent, float *image,
                             vae_tile_fn after, void *ctx);

#endif
