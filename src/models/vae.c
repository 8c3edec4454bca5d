/*
 * vae.c - LDM's Encoder / Decoder (diffusionmodules/model.py) with
 * AutoencoderKL's quant_conv and post_quant_conv: ResnetBlocks, a
 * single-head attention block in the middle, asymmetric-padding stride-2
 * downsampling and nearest upsampling.
 */
#include "models/vae.h"

#include <stdio.h>
#include <string.h>

#include "core/error.h"

#define VAE_GROUPS 32
#define VAE_NORM_EPS 1e-6f

kiln_status vae_config_read(const model_build *b, vae_config *out)
{
    vae_config c;
    memset(&c, 0, sizeof c);
    int64_t s[8];
    c.has_encoder = mb_shape(b, "encoder.conv_in", "weight", s) == 4;
    if (c.has_encoder) {
        c.channels = (int)s[0];
        c.image_channels = (int)s[1];
    }
    c.has_decoder = mb_shape(b, "decoder.conv_out", "weight", s) == 4;
    if (c.has_decoder) {
        c.channels = (int)s[1];
        c.image_channels = (int)s[0];
    }
    if (!c.has_encoder && !c.has_decoder)
        return err_set(KILN_ERR_FORMAT, "vae: neither '%sencoder.conv_in.weight' nor '%sdecoder.conv_out.weight' found",
                       b->prefix, b->prefix);
    const char *side = c.has_decoder ? "decoder.up" : "encoder.down";
    char module[96];
    for (int level = 0;; level++) {
        snprintf(module, sizeof module, "%s.%d.block.0.conv1", side, level);
        if (mb_shape(b, module, "weight", s) != 4)
            break;
        if (level == VAE_MAX_LEVELS)
            return err_set(KILN_ERR_FORMAT, "vae: more than %d levels", VAE_MAX_LEVELS);
        c.channel_mult[level] = (int)(s[0] / c.channels);
        c.levels = level + 1;
    }
    /* the decoder has one residual block more per level than the encoder */
    int blocks = 0;
    for (;; blocks++) {
        if (c.has_encoder)
            snprintf(module, sizeof module, "encoder.down.0.block.%d.conv1", blocks);
        else
            snprintf(module, sizeof module, "decoder.up.0.block.%d.conv1", blocks);
        if (!mb_has(b, module, "weight"))
            break;
    }
    c.num_res_blocks = c.has_encoder ? blocks : blocks - 1;
    if (c.levels == 0 || c.num_res_blocks == 0)
        return err_set(KILN_ERR_FORMAT, "vae: no residual blocks found under '%s%s'", b->prefix, side);
    if (mb_shape(b, c.has_decoder ? "post_quant_conv" : "quant_conv", "weight", s) != 4)
        return err_set(KILN_ERR_FORMAT, "vae: missing tensor '%s%s.weight'", b->prefix,
                       c.has_decoder ? "post_quant_conv" : "quant_conv");
    c.z_channels = c.has_decoder ? (int)s[0] : (int)s[0] / 2;
    *out = c;
    return KILN_OK;
}

int vae_factor(const vae_config *c)
{
    return 1 << (c->levels - 1);
}

graph_id vae_resnet_block(model_build *b, graph_id x, const char *m, int64_t in_ch, int64_t out_ch)
{
    char name[128];
    snprintf(name, sizeof name, "%s.norm1", m);
    graph_id h = mb_group_norm(b, x, name, in_ch, VAE_GROUPS, VAE_NORM_EPS, 1);
    snprintf(name, sizeof name, "%s.conv1", m);
    h = mb_conv(b, h, name, out_ch, in_ch, 3, 1, 1);
    snprintf(name, sizeof name, "%s.norm2", m);
    h = mb_group_norm(b, h, name, out_ch, VAE_GROUPS, VAE_NORM_EPS, 1);
    snprintf(name, sizeof name, "%s.conv2", m);
    h = mb_conv(b, h, name, out_ch, out_ch, 3, 1, 1);
    graph_id skip = x;
    if (in_ch != out_ch) {
        snprintf(name, sizeof name, "%s.nin_shortcut", m);
        skip = mb_conv1x1(b, x, name, out_ch, in_ch);
    }
    snprintf(name, sizeof name, "%s.residual", m);
    return graph_add(b->g, name, skip, h);
}

/* AttnBlock: one head over all h*w positions, q/k/v/proj_out as 1x1 convs. */
graph_id vae_attn_block(model_build *b, graph_id x, const char *m, int64_t ch)
{
    const graph_node *xn = graph_node_at(b->g, x);
    if (!xn)
        return GRAPH_NONE;
    int64_t h = xn->out.shape[1], w = xn->out.shape[2];
    char name[128];
    snprintf(name, sizeof name, "%s.norm", m);
    graph_id t = mb_to_tokens(b, mb_group_norm(b, x, name, ch, VAE_GROUPS, VAE_NORM_EPS, 0));
    snprintf(name, sizeof name, "%s.q", m);
    graph_id q = mb_conv1x1(b, t, name, ch, ch);
    snprintf(name, sizeof name, "%s.k", m);
    graph_id k = mb_conv1x1(b, t, name, ch, ch);
    snprintf(name, sizeof name, "%s.v", m);
    graph_id v = mb_conv1x1(b, t, name, ch, ch);
    graph_id o = graph_attention(b->g, m, q, k, v, 1, 0);
    snprintf(name, sizeof name, "%s.proj_out", m);
    o = mb_to_image(b, mb_conv1x1(b, o, name, ch, ch), h, w);
    snprintf(name, sizeof name, "%s.residual", m);
    return graph_add(b->g, name, x, o);
}

graph_id vae_downsample(model_build *b, graph_id x, const char *m, int64_t ch)
{
    /* pad right and bottom by one, then a 3x3 stride-2 conv without padding */
    int64_t w_shape[4] = {ch, ch, 3, 3};
    graph_id w = mb_param(b, m, "weight", WEIGHT_CONV, 4, w_shape);
    graph_id bias = mb_param(b, m, "bias", WEIGHT_PLAIN, 1, &ch);
    return graph_conv2d(b->g, m, x, w, bias, 2, 0, 0, 1, 1);
}

static graph_id mid_block(model_build *b, graph_id h, const char *side, int64_t ch)
{
    char m[64];
    snprintf(m, sizeof m, "%s.mid.block_1", side);
    h = mb_trace(b, m, vae_resnet_block(b, h, m, ch, ch));
    snprintf(m, sizeof m, "%s.mid.attn_1", side);
    h = mb_trace(b, m, vae_attn_block(b, h, m, ch));
    snprintf(m, sizeof m, "%s.mid.block_2", side);
    return mb_trace(b, m, vae_resnet_block(b, h, m, ch, ch));
}

graph_id vae_build_encoder(model_build *b, const vae_config *c, graph_id image)
{
    int64_t ch = c->channels;
    graph_id h = mb_trace(b, "encoder.conv_in", mb_conv(b, image, "encoder.conv_in", ch, c->image_channels, 3, 1, 1));
    char m[96];
    for (int level = 0; level < c->levels; level++) {
        int64_t out_ch = (int64_t)c->channels * c->channel_mult[level];
        for (int r = 0; r < c->num_res_blocks; r++) {
            snprintf(m, sizeof m, "encoder.down.%d.block.%d", level, r);
            h = mb_trace(b, m, vae_resnet_block(b, h, m, ch, out_ch));
            ch = out_ch;
        }
        if (level != c->levels - 1) {
            snprintf(m, sizeof m, "encoder.down.%d.downsample.conv", level);
            h = vae_downsample(b, h, m, ch);
            snprintf(m, sizeof m, "encoder.down.%d.downsample", level);
            mb_trace(b, m, h);
        }
    }
    h = mid_block(b, h, "encoder", ch);
    h = mb_group_norm(b, h, "encoder.norm_out", ch, VAE_GROUPS, VAE_NORM_EPS, 1);
    h = mb_trace(b, "encoder.conv_out", mb_conv(b, h, "encoder.conv_out", 2 * c->z_channels, ch, 3, 1, 1));
    return mb_conv1x1(b, h, "quant_conv", 2 * c->z_channels, 2 * c->z_channels);
}

graph_id vae_build_decoder(model_build *b, const vae_config *c, graph_id latent)
{
    graph_id h = mb_trace(b, "post_quant_conv", mb_conv1x1(b, latent, "post_quant_conv", c->z_channels, c->z_channels));
    int64_t ch = (int64_t)c->channels * c->channel_mult[c->levels - 1];
    h = mb_trace(b, "decoder.conv_in", mb_conv(b, h, "decoder.conv_in", ch, c->z_channels, 3, 1, 1));
    h = mid_block(b, h, "decoder", ch);
    char m[96];
    for (int level = c->levels - 1; level >= 0; level--) {
        int64_t out_ch = (int64_t)c->channels * c->channel_mult[level];
        for (int r = 0; r <= c->num_res_blocks; r++) {
            snprintf(m, sizeof m, "decoder.up.%d.block.%d", level, r);
            h = mb_trace(b, m, vae_resnet_block(b, h, m, ch, out_ch));
            ch = out_ch;
        }
        if (level != 0) {
            snprintf(m, sizeof m, "decoder.up.%d.upsample.conv", level);
            h = graph_upsample_nearest(b->g, m, h);
            h = mb_conv(b, h, m, ch, ch, 3, 1, 1);
            snprintf(m, sizeof m, "decoder.up.%d.upsample", level);
            mb_trace(b, m, h);
        }
    }
    h = mb_group_norm(b, h, "decoder.norm_out", ch, VAE_GROUPS, VAE_NORM_EPS, 1);
    return mb_conv(b, h, "decoder.conv_out", c->image_channels, ch, 3, 1, 1);
}
