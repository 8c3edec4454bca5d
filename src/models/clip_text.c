/*
 * clip_text.c - CLIP's text transformer: token and position embeddings,
 * pre-norm layers of causal self-attention and a quick-GELU MLP, and the
 * final layer norm whose output SD 1.x conditions on.
 */
#include "models/clip_text.h"

#include <stdio.h>
#include <string.h>

#include "core/error.h"

#define CLIP_NORM_EPS 1e-5f

kiln_status clip_text_config_read(const model_build *b, clip_text_config *out)
{
    clip_text_config c;
    memset(&c, 0, sizeof c);
    int64_t s[8];
    if (mb_shape(b, "embeddings.token_embedding", "weight", s) != 2)
        return err_set(KILN_ERR_FORMAT, "text encoder: missing tensor '%sembeddings.token_embedding.weight'", b->prefix);
    c.vocab = (int)s[0];
    c.width = (int)s[1];
    if (mb_shape(b, "embeddings.position_embedding", "weight", s) != 2)
        return err_set(KILN_ERR_FORMAT, "text encoder: missing tensor '%sembeddings.position_embedding.weight'",
                       b->prefix);
    c.positions = (int)s[0];
    char module[96];
    for (;; c.layers++) {
        snprintf(module, sizeof module, "encoder.layers.%d.self_attn.q_proj", c.layers);
        if (!mb_has(b, module, "weight"))
            break;
    }
    if (c.layers == 0)
        return err_set(KILN_ERR_FORMAT, "text encoder: no layers under '%sencoder.layers'", b->prefix);
    if (mb_shape(b, "encoder.layers.0.mlp.fc1", "weight", s) != 2)
        return err_set(KILN_ERR_FORMAT, "text encoder: missing tensor '%sencoder.layers.0.mlp.fc1.weight'", b->prefix);
    c.mlp_width = (int)s[0];
    c.heads = mb_meta_int(b, "kiln.clip.num_heads", c.width / 64 > 0 ? c.width / 64 : 1);
    const char *act = wstore_metadata(b->ws, "kiln.clip.hidden_act");
    c.exact_gelu = act && strcmp(act, "gelu") == 0;
    if (c.width % c.heads != 0)
        return err_set(KILN_ERR_FORMAT, "text encoder: width %d does not divide into %d heads", c.width, c.heads);
    *out = c;
    return KILN_OK;
}

graph_id clip_text_layer(model_build *b, graph_id x, const char *m, const clip_text_config *c)
{
    const int64_t width = c->width, mlp_width = c->mlp_width;
    const int heads = c->heads;
    char name[128];
    snprintf(name, sizeof name, "%s.layer_norm1", m);
    graph_id h = mb_layer_norm(b, x, name, width, CLIP_NORM_EPS);
    snprintf(name, sizeof name, "%s.self_attn.q_proj", m);
    graph_id q = mb_linear(b, h, name, width, width, 1);
    snprintf(name, sizeof name, "%s.self_attn.k_proj", m);
    graph_id k = mb_linear(b, h, name, width, width, 1);
    snprintf(name, sizeof name, "%s.self_attn.v_proj", m);
    graph_id v = mb_linear(b, h, name, width, width, 1);
    snprintf(name, sizeof name, "%s.self_attn", m);
    h = graph_attention(b->g, name, q, k, v, heads, 1);
    snprintf(name, sizeof name, "%s.self_attn.out_proj", m);
    h = mb_linear(b, h, name, width, width, 1);
    x = graph_add(b->g, name, x, h);

    snprintf(name, sizeof name, "%s.layer_norm2", m);
    h = mb_layer_norm(b, x, name, width, CLIP_NORM_EPS);
    snprintf(name, sizeof name, "%s.mlp.fc1", m);
    h = mb_linear(b, h, name, mlp_width, width, 1);
    h = c->exact_gelu ? graph_gelu(b->g, name, h) : graph_quick_gelu(b->g, name, h);
    snprintf(name, sizeof name, "%s.mlp.fc2", m);
    h = mb_linear(b, h, name, width, mlp_width, 1);
    return graph_add(b->g, name, x, h);
}

graph_id clip_text_build(model_build *b, const clip_text_config *c, graph_id ids)
{
    int64_t tok_shape[2] = {c->vocab, c->width}, pos_shape[2] = {c->positions, c->width};
    graph_id table = mb_param(b, "embeddings.token_embedding", "weight", WEIGHT_PLAIN, 2, tok_shape);
    graph_id positions = mb_param(b, "embeddings.position_embedding", "weight", WEIGHT_PLAIN, 2, pos_shape);
    graph_id x = mb_trace(b, "embeddings", graph_embed_tokens(b->g, "embeddings", ids, table, positions));
    char m[64], traced[64];
    for (int l = 0; l < c->layers; l++) {
        snprintf(m, sizeof m, "encoder.layers.%d", l);
        snprintf(traced, sizeof traced, "layers.%d", l);
        x = mb_trace(b, traced, clip_text_layer(b, x, m, c));
    }
    return mb_layer_norm(b, x, "final_layer_norm", c->width, CLIP_NORM_EPS);
}
