/*
 * unet.c - LDM's UNetModel (openaimodel.py) as SD 1.x/2.x configure it:
 * ResBlocks with the time embedding, SpatialTransformers with self- and
 * cross-attention and a GEGLU feed-forward, stride-2 downsampling, nearest
 * upsampling, and skip connections concatenated on the way up.
 */
#include "models/unet.h"

#include <stdio.h>
#include <string.h>

#include "core/error.h"

#define UNET_GROUPS 32
#define UNET_NORM_EPS 1e-5f        /* GroupNorm32 */
#define TRANSFORMER_NORM_EPS 1e-6f /* SpatialTransformer's GroupNorm */
#define LAYER_NORM_EPS 1e-5f

static kiln_status missing(const model_build *b, const char *module, const char *part)
{
    char name[256];
    mb_name(b, module, part, name, sizeof name);
    return err_set(KILN_ERR_FORMAT, "unet: missing tensor '%s'", name);
}

kiln_status unet_config_read(const model_build *b, unet_config *out)
{
    unet_config c;
    memset(&c, 0, sizeof c);
    int64_t s[8];
    if (mb_shape(b, "input_blocks.0.0", "weight", s) != 4)
        return missing(b, "input_blocks.0.0", "weight");
    c.model_channels = (int)s[0];
    c.in_channels = (int)s[1];
    if (mb_shape(b, "out.2", "weight", s) != 4)
        return missing(b, "out.2", "weight");
    c.out_channels = (int)s[0];
    if (mb_shape(b, "time_embed.0", "weight", s) != 2)
        return missing(b, "time_embed.0", "weight");
    c.time_embed_dim = (int)s[0];

    /* walk input_blocks 1..: resblocks, then a downsample closing each level
     * but the last */
    int level = 0, blocks_in_level = 0;
    char module[64];
    for (int i = 1;; i++) {
        snprintf(module, sizeof module, "input_blocks.%d.0.op", i);
        if (mb_has(b, module, "weight")) {
            if (level == 0)
                c.num_res_blocks = blocks_in_level;
            else if (blocks_in_level != c.num_res_blocks)
                return err_set(KILN_ERR_FORMAT, "unet: level %d has %d residual blocks, level 0 has %d", level,
                               blocks_in_level, c.num_res_blocks);
            level++;
            blocks_in_level = 0;
            if (level >= UNET_MAX_LEVELS)
                return err_set(KILN_ERR_FORMAT, "unet: more than %d levels", UNET_MAX_LEVELS);
            continue;
        }
        snprintf(module, sizeof module, "input_blocks.%d.0.in_layers.2", i);
        if (mb_shape(b, module, "weight", s) != 4)
            break;
        c.channel_mult[level] = (int)(s[0] / c.model_channels);
        snprintf(module, sizeof module, "input_blocks.%d.1.proj_in", i);
        c.attention[level] = mb_has(b, module, "weight");
        if (c.attention[level] && !c.transformer_depth) {
            int64_t p[8];
            c.linear_proj = mb_shape(b, module, "weight", p) == 2;
            for (int d = 0;; d++) {
                char block[96];
                snprintf(block, sizeof block, "input_blocks.%d.1.transformer_blocks.%d.attn1.to_q", i, d);
                if (!mb_has(b, block, "weight"))
                    break;
                c.transformer_depth = d + 1;
            }
            snprintf(module, sizeof module, "input_blocks.%d.1.transformer_blocks.0.attn2.to_k", i);
            if (mb_shape(b, module, "weight", p) != 2)
                return missing(b, module, "weight");
            c.context_dim = (int)p[1];
        }
        blocks_in_level++;
    }
    if (level == 0)
        c.num_res_blocks = blocks_in_level;
    c.levels = level + 1;
    if (c.num_res_blocks < 1 || blocks_in_level != c.num_res_blocks)
        return err_set(KILN_ERR_FORMAT, "unet: the last level has %d residual blocks, level 0 has %d",
                       blocks_in_level, c.num_res_blocks);
    if (c.levels * (c.num_res_blocks + 1) + 1 > 64)
        return err_set(KILN_ERR_FORMAT, "unet: %d levels of %d residual blocks are more than kiln builds", c.levels,
                       c.num_res_blocks);
    if (c.model_channels % UNET_GROUPS != 0)
        return err_set(KILN_ERR_FORMAT, "unet: %d model channels do not divide into %d groups", c.model_channels,
                       UNET_GROUPS);

    c.head_dim = mb_meta_int(b, "kiln.unet.num_head_channels", 0);
    c.num_heads = c.head_dim ? 0 : mb_meta_int(b, "kiln.unet.num_heads", 0);
    if (!c.num_heads && !c.head_dim) {
        if (c.linear_proj)
            c.head_dim = 64;
        else
            c.num_heads = 8;
    }
    *out = c;
    return KILN_OK;
}

int unet_heads(const unet_config *c, int channels)
{
    if (c->num_heads)
        return c->num_heads;
    return channels / c->head_dim > 0 ? channels / c->head_dim : 1;
}

/* ResBlock: in_layers (norm, SiLU, conv), + emb_layers(SiLU, linear),
 * out_layers (norm, SiLU, dropout, conv), + skip (identity or 1x1 conv). */
graph_id unet_res_block(model_build *b, graph_id x, graph_id emb_silu, const char *m, int64_t in_ch,
                        int64_t out_ch, int64_t emb_dim)
{
    char name[128];
    snprintf(name, sizeof name, "%s.in_layers.0", m);
    graph_id h = mb_group_norm(b, x, name, in_ch, UNET_GROUPS, UNET_NORM_EPS, 1);
    snprintf(name, sizeof name, "%s.in_layers.2", m);
    h = mb_conv(b, h, name, out_ch, in_ch, 3, 1, 1);
    snprintf(name, sizeof name, "%s.emb_layers.1", m);
    graph_id emb = mb_linear(b, emb_silu, name, out_ch, emb_dim, 1);
    h = graph_add_channel_bias(b->g, name, h, emb);
    snprintf(name, sizeof name, "%s.out_layers.0", m);
    h = mb_group_norm(b, h, name, out_ch, UNET_GROUPS, UNET_NORM_EPS, 1);
    snprintf(name, sizeof name, "%s.out_layers.3", m);
    h = mb_conv(b, h, name, out_ch, out_ch, 3, 1, 1);
    graph_id skip = x;
    if (in_ch != out_ch) {
        snprintf(name, sizeof name, "%s.skip_connection", m);
        skip = mb_conv1x1(b, x, name, out_ch, in_ch);
    }
    snprintf(name, sizeof name, "%s.residual", m);
    return graph_add(b->g, name, skip, h);
}

/* CrossAttention: to_q/to_k/to_v without bias, to_out.0 with. */
graph_id unet_cross_attention(model_build *b, graph_id x, graph_id context, const char *m, int64_t ch,
                              int64_t ctx_dim, int heads)
{
    char name[160];
    snprintf(name, sizeof name, "%s.to_q", m);
    graph_id q = mb_linear(b, x, name, ch, ch, 0);
    snprintf(name, sizeof name, "%s.to_k", m);
    graph_id k = mb_linear(b, context, name, ch, ctx_dim, 0);
    snprintf(name, sizeof name, "%s.to_v", m);
    graph_id v = mb_linear(b, context, name, ch, ctx_dim, 0);
    graph_id o = graph_attention(b->g, m, q, k, v, heads, 0);
    snprintf(name, sizeof name, "%s.to_out.0", m);
    return mb_linear(b, o, name, ch, ch, 1);
}

graph_id unet_feed_forward(model_build *b, graph_id x, const char *m, int64_t ch)
{
    char name[200];
    snprintf(name, sizeof name, "%s.net.0.proj", m);
    graph_id h = mb_linear(b, x, name, 8 * ch, ch, 1);
    h = graph_geglu(b->g, name, h);
    snprintf(name, sizeof name, "%s.net.2", m);
    return mb_linear(b, h, name, ch, 4 * ch, 1);
}

/* BasicTransformerBlock: pre-norm self-attention, cross-attention on the
 * context, GEGLU feed-forward, each added back to the stream. */
static graph_id transformer_block(model_build *b, graph_id x, graph_id context, const char *m, int64_t ch,
                                  int heads, int64_t ctx_dim)
{
    char name[160], sub[160];
    snprintf(name, sizeof name, "%s.norm1", m);
    graph_id h = mb_layer_norm(b, x, name, ch, LAYER_NORM_EPS);
    snprintf(sub, sizeof sub, "%s.attn1", m);
    h = unet_cross_attention(b, h, h, sub, ch, ch, heads);
    x = graph_add(b->g, sub, x, h);

    snprintf(name, sizeof name, "%s.norm2", m);
    h = mb_layer_norm(b, x, name, ch, LAYER_NORM_EPS);
    snprintf(sub, sizeof sub, "%s.attn2", m);
    h = unet_cross_attention(b, h, context, sub, ch, ctx_dim, heads);
    x = graph_add(b->g, sub, x, h);

    snprintf(name, sizeof name, "%s.norm3", m);
    h = mb_layer_norm(b, x, name, ch, LAYER_NORM_EPS);
    snprintf(sub, sizeof sub, "%s.ff", m);
    h = unet_feed_forward(b, h, sub, ch);
    return graph_add(b->g, sub, x, h);
}

/* SpatialTransformer: group norm, proj_in, transformer blocks over the
 * h*w tokens, proj_out, plus the input. NHWC makes the "rearrange to
 * tokens" a view, and a 1x1-conv projection the same matrix as a linear one. */
graph_id unet_spatial_transformer(model_build *b, graph_id x, graph_id context, const char *m, int64_t ch,
                                  int heads, int depth, int64_t ctx_dim)
{
    const graph_node *xn = graph_node_at(b->g, x);
    if (!xn)
        return GRAPH_NONE;
    int64_t h = xn->out.shape[1], w = xn->out.shape[2];
    char name[128];
    snprintf(name, sizeof name, "%s.norm", m);
    graph_id t = mb_group_norm(b, x, name, ch, UNET_GROUPS, TRANSFORMER_NORM_EPS, 0);
    t = mb_to_tokens(b, t);
    snprintf(name, sizeof name, "%s.proj_in", m);
    t = mb_conv1x1(b, t, name, ch, ch);
    for (int d = 0; d < depth; d++) {
        snprintf(name, sizeof name, "%s.transformer_blocks.%d", m, d);
        t = transformer_block(b, t, context, name, ch, heads, ctx_dim);
    }
    snprintf(name, sizeof name, "%s.proj_out", m);
    t = mb_conv1x1(b, t, name, ch, ch);
    t = mb_to_image(b, t, h, w);
    snprintf(name, sizeof name, "%s.residual", m);
    return graph_add(b->g, name, x, t);
}

graph_id unet_downsample(model_build *b, graph_id x, const char *m, int64_t ch)
{
    return mb_conv(b, x, m, ch, ch, 3, 2, 1);
}

graph_id unet_upsample(model_build *b, graph_id x, const char *m, int64_t ch)
{
    x = graph_upsample_nearest(b->g, m, x);
    return mb_conv(b, x, m, ch, ch, 3, 1, 1);
}

graph_id unet_upsample_to(model_build *b, graph_id x, const char *m, int64_t ch, int64_t h, int64_t w)
{
    x = graph_upsample_nearest_to(b->g, m, x, h, w);
    return mb_conv(b, x, m, ch, ch, 3, 1, 1);
}

graph_id unet_build(model_build *b, const unet_config *c, graph_id x, graph_id timesteps, graph_id context)
{
    const int64_t mc = c->model_channels, ted = c->time_embed_dim;

    graph_id t = graph_timestep_embed(b->g, "time_embed.sinusoid", timesteps, (int)mc, 10000.0f);
    mb_trace(b, "timestep_embedding", t);
    graph_id emb = mb_linear(b, t, "time_embed.0", ted, mc, 1);
    emb = graph_silu(b->g, "time_embed.1", emb);
    emb = mb_trace(b, "time_embed", mb_linear(b, emb, "time_embed.2", ted, ted, 1));
    /* every ResBlock's emb_layers starts with the same SiLU: compute it once */
    graph_id emb_silu = graph_silu(b->g, "emb_layers.0", emb);

    graph_id skips[64];
    int64_t skip_ch[64];
    int n_skips = 0;
    char m[96];

    graph_id h = mb_conv(b, x, "input_blocks.0.0", mc, c->in_channels, 3, 1, 1);
    skips[n_skips] = mb_trace(b, "input_blocks.0", h), skip_ch[n_skips++] = mc;
    int64_t ch = mc;
    int block = 1;
    for (int level = 0; level < c->levels; level++) {
        int64_t out_ch = mc * c->channel_mult[level];
        int heads = unet_heads(c, (int)out_ch);
        for (int r = 0; r < c->num_res_blocks; r++, block++) {
            snprintf(m, sizeof m, "input_blocks.%d.0", block);
            h = unet_res_block(b, h, emb_silu, m, ch, out_ch, ted);
            ch = out_ch;
            if (c->attention[level]) {
                snprintf(m, sizeof m, "input_blocks.%d.1", block);
                h = unet_spatial_transformer(b, h, context, m, ch, heads, c->transformer_depth, c->context_dim);
            }
            snprintf(m, sizeof m, "input_blocks.%d", block);
            skips[n_skips] = mb_trace(b, m, h), skip_ch[n_skips++] = ch;
        }
        if (level != c->levels - 1) {
            snprintf(m, sizeof m, "input_blocks.%d.0.op", block);
            h = unet_downsample(b, h, m, ch);
            snprintf(m, sizeof m, "input_blocks.%d", block++);
            skips[n_skips] = mb_trace(b, m, h), skip_ch[n_skips++] = ch;
        }
    }

    h = unet_res_block(b, h, emb_silu, "middle_block.0", ch, ch, ted);
    h = unet_spatial_transformer(b, h, context, "middle_block.1", ch, unet_heads(c, (int)ch), c->transformer_depth,
                                 c->context_dim);
    h = mb_trace(b, "middle_block", unet_res_block(b, h, emb_silu, "middle_block.2", ch, ch, ted));

    block = 0;
    for (int level = c->levels - 1; level >= 0; level--) {
        int64_t out_ch = mc * c->channel_mult[level];
        int heads = unet_heads(c, (int)out_ch);
        for (int r = 0; r <= c->num_res_blocks; r++, block++) {
            n_skips--;
            snprintf(m, sizeof m, "output_blocks.%d.skip", block);
            h = graph_concat_channels(b->g, m, h, skips[n_skips]);
            snprintf(m, sizeof m, "output_blocks.%d.0", block);
            h = unet_res_block(b, h, emb_silu, m, ch + skip_ch[n_skips], out_ch, ted);
            ch = out_ch;
            int part = 1;
            if (c->attention[level]) {
                snprintf(m, sizeof m, "output_blocks.%d.1", block);
                h = unet_spatial_transformer(b, h, context, m, ch, heads, c->transformer_depth, c->context_dim);
                part = 2;
            }
            if (level > 0 && r == c->num_res_blocks) {
                /* up to the size of the skip the next block concatenates:
                 * twice this one, except where an odd map was halved */
                const graph_node *next_skip = graph_node_at(b->g, skips[n_skips - 1]);
                snprintf(m, sizeof m, "output_blocks.%d.%d.conv", block, part);
                h = next_skip ? unet_upsample_to(b, h, m, ch, next_skip->out.shape[1], next_skip->out.shape[2])
                              : GRAPH_NONE;
            }
            snprintf(m, sizeof m, "output_blocks.%d", block);
            mb_trace(b, m, h);
        }
    }

    h = mb_group_norm(b, h, "out.0", ch, UNET_GROUPS, UNET_NORM_EPS, 1);
    return mb_conv(b, h, "out.2", c->out_channels, ch, 3, 1, 1);
}
