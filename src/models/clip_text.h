/*
 * clip_text.h - the CLIP text transformer of SD 1.x (OpenAI CLIP ViT-L/14,
 * as transformers' CLIPTextModel names it) as a graph.
 *
 * Width, layers, vocabulary and positions come from the shapes under prefix
 * ("cond_stage_model.transformer.text_model."); heads from the metadata key
 * "kiln.clip.num_heads", else width / 64 as in CLIP.
 */
#ifndef KILN_MODELS_CLIP_TEXT_H
#define KILN_MODELS_CLIP_TEXT_H

#include "models/build.h"

typedef struct clip_text_config {
    int width, layers, heads, vocab, positions, mlp_width;
    int exact_gelu; /* "kiln.clip.hidden_act" = "gelu" (OpenCLIP); else quick_gelu (OpenAI CLIP) */
} clip_text_config;

kiln_status clip_text_config_read(const model_build *b, clip_text_config *out);

/* One encoder layer (module "encoder.layers.N") on x [b, t, width]. */
graph_id clip_text_layer(model_build *b, graph_id x, const char *module, const clip_text_config *c);

/* token ids [b, t] (as f32) -> last hidden state after final_layer_norm
 * [b, t, width]. Traces: embeddings, layers.N. */
graph_id clip_text_build(model_build *b, const clip_text_config *c, graph_id ids);

#endif
