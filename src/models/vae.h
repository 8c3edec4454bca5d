/*
 * vae.h - the SD autoencoder (LDM's AutoencoderKL) as graphs: the encoder
 * to latent moments and the decoder back to pixels.
 *
 * Sizes come from the shapes under prefix ("first_stage_model."): base
 * channels, channel multipliers, residual blocks per level, latent channels.
 * The 0.18215 latent scale is the pipeline's business, not the VAE's.
 */
#ifndef KILN_MODELS_VAE_H
#define KILN_MODELS_VAE_H

#include "models/build.h"

#define VAE_MAX_LEVELS 8

typedef struct vae_config {
    int channels;                       /* ch */
    int levels, num_res_blocks;
    int channel_mult[VAE_MAX_LEVELS];
    int image_channels, z_channels;     /* 3, 4 */
    int has_encoder, has_decoder;
} vae_config;

kiln_status vae_config_read(const model_build *b, vae_config *out);

/* Traces: encoder.conv_in, encoder.down.I.block.J, encoder.down.I.downsample,
 * encoder.mid.block_1|attn_1|block_2, encoder.conv_out; post_quant_conv,
 * decoder.conv_in, decoder.mid.*, decoder.up.I.block.J, decoder.up.I.upsample. */

/* image [b, h, w, 3] NHWC in [-1, 1] -> moments [b, h/f, w/f, 2 z] (mean, then log-variance) */
graph_id vae_build_encoder(model_build *b, const vae_config *c, graph_id image);

/* latent [b, h, w, z] (unscaled) -> image [b, h*f, w*f, 3] */
graph_id vae_build_decoder(model_build *b, const vae_config *c, graph_id latent);

/* The blocks, for tests: ResnetBlock, the mid-block AttnBlock, and the
 * encoder's Downsample (pad right/bottom by one, 3x3 stride 2). */
graph_id vae_resnet_block(model_build *b, graph_id x, const char *module, int64_t in_ch, int64_t out_ch);
graph_id vae_attn_block(model_build *b, graph_id x, const char *module, int64_t ch);
graph_id vae_downsample(model_build *b, graph_id x, const char *module, int64_t ch);

/* The spatial factor between image and latent: 2^(levels-1). */
int vae_factor(const vae_config *c);

#endif
