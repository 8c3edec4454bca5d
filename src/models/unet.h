/*
 * unet.h - the SD 1.x / 2.x denoising UNet (LDM's UNetModel) as a graph.
 *
 * Sizes come from the weights' shapes: channels, levels, residual blocks per
 * level, where attention sits, transformer depth, context width, 1x1-conv or
 * linear projections. The head count is not in the shapes: it comes from the
 * metadata ("kiln.unet.num_heads", or "kiln.unet.num_head_channels" > 0),
 * else SD's rule: 8 heads for SD 1.x, 64-channel heads for SD 2.x (linear
 * projections).
 */
#ifndef KILN_MODELS_UNET_H
#define KILN_MODELS_UNET_H

#include "models/build.h"

#define UNET_MAX_LEVELS 8

typedef struct unet_config {
    int in_channels, out_channels, model_channels, time_embed_dim;
    int levels, num_res_blocks;
    int channel_mult[UNET_MAX_LEVELS];
    int attention[UNET_MAX_LEVELS]; /* 1: spatial transformers at this level */
    int transformer_depth, context_dim;
    int num_heads, head_dim; /* one of them set; the other 0 */
    int linear_proj;         /* SD 2.x: proj_in/out are linear layers */
} unet_config;

/* Reads the architecture from the weights under b->prefix.
 * Errors: KILN_ERR_FORMAT naming the tensor that is missing or odd. */
kiln_status unet_config_read(const model_build *b, unet_config *out);

/* eps (or v) [batch, h, w, out_channels] from x [batch, h, w, in_channels]
 * (NHWC), timesteps [batch] and context [batch, tokens, context_dim].
 * Traces: timestep_embedding, time_embed, input_blocks.N, middle_block,
 * output_blocks.N. */
graph_id unet_build(model_build *b, const unet_config *c, graph_id x, graph_id timesteps, graph_id context);

/* The heads of a transformer with this many channels. */
int unet_heads(const unet_config *c, int channels);

/* The blocks, for tests and other architectures. module is the block's
 * name below b->prefix ("input_blocks.1.0"). */

/* ResBlock; emb_silu is SiLU(time embedding) [batch, emb_dim]. */
graph_id unet_res_block(model_build *b, graph_id x, graph_id emb_silu, const char *module, int64_t in_ch,
                        int64_t out_ch, int64_t emb_dim);

/* SpatialTransformer over an NHWC image; context [batch, tokens, ctx_dim]. */
graph_id unet_spatial_transformer(model_build *b, graph_id x, graph_id context, const char *module, int64_t ch,
                                  int heads, int depth, int64_t ctx_dim);

/* CrossAttention on tokens x [batch, t, ch]; context = x for self-attention. */
graph_id unet_cross_attention(model_build *b, graph_id x, graph_id context, const char *module, int64_t ch,
                              int64_t ctx_dim, int heads);

/* FeedForward with GEGLU: ch -> 8 ch (two halves) -> 4 ch -> ch. */
graph_id unet_feed_forward(model_build *b, graph_id x, const char *module, int64_t ch);

/* Downsample (3x3 stride 2, padding 1) and Upsample (nearest x2, 3x3). */
graph_id unet_downsample(model_build *b, graph_id x, const char *module, int64_t ch);
graph_id unet_upsample(model_build *b, graph_id x, const char *module, int64_t ch);
/* The same to a given size: the skip connection it will meet (diffusers'
 * upsample_size), for feature maps that were odd on the way down. */
graph_id unet_upsample_to(model_build *b, graph_id x, const char *module, int64_t ch, int64_t h, int64_t w);

#endif
