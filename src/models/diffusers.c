#include "models/diffusers.h"

#include <jansson.h>
#include <stdio.h>
#include <string.h>
#include <unistd.h>

#include "core/error.h"
#include "models/weight_store.h"

static int starts_with(const char *s, const char *prefix, const char **rest)
{
    size_t n = strlen(prefix);
    if (strncmp(s, prefix, n) != 0)
        return 0;
    *rest = s + n;
    return 1;
}

/* How many of head.0.tail, head.1.tail, ... are present. */
static int count_present(const kiln_weights *w, const char *head, const char *tail)
{
    char name[160];
    int n = 0;
    for (;; n++) {
        snprintf(name, sizeof name, "%s.%d.%s", head, n, tail);
        if (!kiln_weights_find(w, name))
            return n;
    }
}

typedef struct rename_rule {
    const char *from, *to;
} rename_rule;

/* Applies the first rule whose `from` the rest starts with. */
static int rename_part(const char *rest, const rename_rule *rules, size_t n_rules, char *buf, size_t size)
{
    const char *tail;
    for (size_t i = 0; i < n_rules; i++)
        if (starts_with(rest, rules[i].from, &tail)) {
            snprintf(buf, size, "%s%s", rules[i].to, tail);
            return 1;
        }
    snprintf(buf, size, "%s", rest);
    return 1;
}

/* ResBlock parts: LDM names on the left, diffusers' on the right. */
static const rename_rule unet_resnet_rules[] = {
    {"in_layers.0.", "norm1."},   {"in_layers.2.", "conv1."},        {"emb_layers.1.", "time_emb_proj."},
    {"out_layers.0.", "norm2."},  {"out_layers.3.", "conv2."},       {"skip_connection.", "conv_shortcut."},
};

int diffusers_unet_name(const kiln_weights *w, const char *canonical, char *buf, size_t size)
{
    diffusers_layout layout = {.unet_blocks_per_level = count_present(w, "down_blocks.0.resnets", "conv1.weight")};
    return diffusers_unet_name_in(&layout, canonical, buf, size);
}

int diffusers_unet_name_in(const diffusers_layout *layout, const char *canonical, char *buf, size_t size)
{
    const char *rest;
    if (!starts_with(canonical, "model.diffusion_model.", &rest))
        return 0;
    static const rename_rule top[] = {
        {"time_embed.0.", "time_embedding.linear_1."},
        {"time_embed.2.", "time_embedding.linear_2."},
        {"input_blocks.0.0.", "conv_in."},
        {"out.0.", "conv_norm_out."},
        {"out.2.", "conv_out."},
    };
    const char *tail;
    for (size_t i = 0; i < sizeof top / sizeof top[0]; i++)
        if (starts_with(rest, top[i].from, &tail)) {
            snprintf(buf, size, "%s%s", top[i].to, tail);
            return 1;
        }

    int per_level = layout->unet_blocks_per_level;
    if (per_level < 1)
        return 0;
    char part[160];
    int index, layer, chars = 0;
    if (sscanf(rest, "input_blocks.%d.%d.%n", &index, &layer, &chars) == 2 && chars > 0 && index >= 1) {
        int level = (index - 1) / (per_level + 1), within = (index - 1) % (per_level + 1);
        const char *inner = rest + chars;
        if (within == per_level) { /* input_blocks.N.0.op */
            if (!starts_with(inner, "op.", &tail))
                return 0;
            snprintf(buf, size, "down_blocks.%d.downsamplers.0.conv.%s", level, tail);
        } else if (layer == 0) {
            rename_part(inner, unet_resnet_rules, sizeof unet_resnet_rules / sizeof unet_resnet_rules[0], part,
                        sizeof part);
            snprintf(buf, size, "down_blocks.%d.resnets.%d.%s", level, within, part);
        } else {
            snprintf(buf, size, "down_blocks.%d.attentions.%d.%s", level, within, inner);
        }
        return 1;
    }
    if (sscanf(rest, "middle_block.%d.%n", &layer, &chars) == 1 && chars > 0) {
        const char *inner = rest + chars;
        if (layer == 1) {
            snprintf(buf, size, "mid_block.attentions.0.%s", inner);
        } else {
            rename_part(inner, unet_resnet_rules, sizeof unet_resnet_rules / sizeof unet_resnet_rules[0], part,
                        sizeof part);
            snprintf(buf, size, "mid_block.resnets.%d.%s", layer / 2, part);
        }
        return 1;
    }
    if (sscanf(rest, "output_blocks.%d.%d.%n", &index, &layer, &chars) == 2 && chars > 0) {
        int level = index / (per_level + 1), within = index % (per_level + 1);
        const char *inner = rest + chars;
        if (layer == 0) {
            rename_part(inner, unet_resnet_rules, sizeof unet_resnet_rules / sizeof unet_resnet_rules[0], part,
                        sizeof part);
            snprintf(buf, size, "up_blocks.%d.resnets.%d.%s", level, within, part);
        } else if (starts_with(inner, "conv.", &tail)) { /* the upsampler: .1.conv or .2.conv */
            snprintf(buf, size, "up_blocks.%d.upsamplers.0.conv.%s", level, tail);
        } else {
            snprintf(buf, size, "up_blocks.%d.attentions.%d.%s", level, within, inner);
        }
        return 1;
    }
    return 0;
}

static const rename_rule vae_resnet_rules[] = {{"nin_shortcut.", "conv_shortcut."}};

/* The mid-block attention: current diffusers names, then the pre-0.14 ones
 * when w lacks the current ones. */
static void vae_attention_name(const kiln_weights *w, const char *side, const char *inner, char *buf, size_t size)
{
    static const rename_rule current[] = {
        {"norm.", "group_norm."}, {"q.", "to_q."}, {"k.", "to_k."}, {"v.", "to_v."}, {"proj_out.", "to_out.0."}};
    static const rename_rule legacy[] = {
        {"norm.", "group_norm."}, {"q.", "query."}, {"k.", "key."}, {"v.", "value."}, {"proj_out.", "proj_attn."}};
    char part[128];
    rename_part(inner, current, sizeof current / sizeof current[0], part, sizeof part);
    snprintf(buf, size, "%s.mid_block.attentions.0.%s", side, part);
    if (!w || kiln_weights_find(w, buf))
        return;
    rename_part(inner, legacy, sizeof legacy / sizeof legacy[0], part, sizeof part);
    snprintf(buf, size, "%s.mid_block.attentions.0.%s", side, part);
}

int diffusers_vae_name(const kiln_weights *w, const char *canonical, char *buf, size_t size)
{
    diffusers_layout layout = {.vae_levels = count_present(w, "decoder.up_blocks", "resnets.0.conv1.weight")};
    return diffusers_vae_name_in(&layout, w, canonical, buf, size);
}

int diffusers_vae_name_in(const diffusers_layout *layout, const kiln_weights *w, const char *canonical, char *buf,
                          size_t size)
{
    const char *rest, *tail;
    if (!starts_with(canonical, "first_stage_model.", &rest))
        return 0;
    char side[16], part[160];
    int level, block, chars = 0;
    if (sscanf(rest, "%7[a-z].down.%d.block.%d.%n", side, &level, &block, &chars) == 3 && chars > 0) {
        rename_part(rest + chars, vae_resnet_rules, 1, part, sizeof part);
        snprintf(buf, size, "%s.down_blocks.%d.resnets.%d.%s", side, level, block, part);
        return 1;
    }
    if (sscanf(rest, "%7[a-z].down.%d.downsample.%n", side, &level, &chars) == 2 && chars > 0) {
        snprintf(buf, size, "%s.down_blocks.%d.downsamplers.0.%s", side, level, rest + chars);
        return 1;
    }
    /* the decoder's levels run the other way in diffusers */
    int levels = layout->vae_levels;
    if (sscanf(rest, "%7[a-z].up.%d.block.%d.%n", side, &level, &block, &chars) == 3 && chars > 0) {
        rename_part(rest + chars, vae_resnet_rules, 1, part, sizeof part);
        snprintf(buf, size, "%s.up_blocks.%d.resnets.%d.%s", side, levels - 1 - level, block, part);
        return 1;
    }
    if (sscanf(rest, "%7[a-z].up.%d.upsample.%n", side, &level, &chars) == 2 && chars > 0) {
        snprintf(buf, size, "%s.up_blocks.%d.upsamplers.0.%s", side, levels - 1 - level, rest + chars);
        return 1;
    }
    if (sscanf(rest, "%7[a-z].mid.block_%d.%n", side, &block, &chars) == 2 && chars > 0) {
        rename_part(rest + chars, vae_resnet_rules, 1, part, sizeof part);
        snprintf(buf, size, "%s.mid_block.resnets.%d.%s", side, block - 1, part);
        return 1;
    }
    if (sscanf(rest, "%7[a-z].mid.attn_1.%n", side, &chars) == 1 && chars > 0) {
        vae_attention_name(w, side, rest + chars, buf, size);
        return 1;
    }
    if (sscanf(rest, "%7[a-z].norm_out.%n", side, &chars) == 1 && chars > 0) {
        snprintf(buf, size, "%s.conv_norm_out.%s", side, rest + chars);
        return 1;
    }
    (void)tail;
    snprintf(buf, size, "%s", rest); /* conv_in, conv_out, quant_conv, post_quant_conv */
    return 1;
}

int diffusers_text_encoder_name(const kiln_weights *w, const char *canonical, char *buf, size_t size)
{
    (void)w;
    const char *rest;
    if (!starts_with(canonical, "cond_stage_model.transformer.", &rest))
        return 0;
    snprintf(buf, size, "%s", rest);
    return 1;
}

/* ---- config.json ---- */

static json_t *load_config(const char *dir, const char *file, kiln_status *st)
{
    char path[4096];
    snprintf(path, sizeof path, "%s/%s", dir, file);
    *st = KILN_OK;
    if (access(path, F_OK) != 0)
        return NULL;
    json_error_t error;
    json_t *root = json_load_file(path, JSON_REJECT_DUPLICATES, &error);
    if (!root || !json_is_object(root)) {
        *st = err_set(KILN_ERR_FORMAT, "%s: line %d: %s", path, error.line,
                      root ? "not a JSON object" : error.text);
        json_decref(root);
        return NULL;
    }
    return root;
}

static kiln_status set_int(weight_store *ws, const char *key, json_int_t value)
{
    char text[32];
    snprintf(text, sizeof text, "%lld", (long long)value);
    return wstore_set_metadata(ws, key, text);
}

kiln_status diffusers_read_configs(const char *dir, weight_store *ws)
{
    kiln_status st;
    json_t *text = load_config(dir, "text_encoder/config.json", &st);
    if (st != KILN_OK)
        return st;
    if (text) {
        json_t *heads = json_object_get(text, "num_attention_heads");
        json_t *act = json_object_get(text, "hidden_act");
        if (json_is_integer(heads))
            st = set_int(ws, "kiln.clip.num_heads", json_integer_value(heads));
        if (st == KILN_OK && json_is_string(act))
            st = wstore_set_metadata(ws, "kiln.clip.hidden_act", json_string_value(act));
        json_decref(text);
        if (st != KILN_OK)
            return st;
    }

    json_t *unet = load_config(dir, "unet/config.json", &st);
    if (st != KILN_OK)
        return st;
    if (unet) {
        /* "attention_head_dim" is, despite its name, the number of heads (a
         * diffusers misnomer kept for compatibility); SD 2.x gives a list
         * per level of 64-channel heads */
        json_t *heads = json_object_get(unet, "attention_head_dim");
        json_t *channels = json_object_get(unet, "block_out_channels");
        json_t *sample = json_object_get(unet, "sample_size");
        if (json_is_integer(heads)) {
            st = set_int(ws, "kiln.unet.num_heads", json_integer_value(heads));
        } else if (json_is_array(heads) && json_is_array(channels) && json_array_size(heads) > 0 &&
                   json_is_integer(json_array_get(heads, 0)) && json_integer_value(json_array_get(heads, 0)) > 0 &&
                   json_is_integer(json_array_get(channels, 0))) {
            st = set_int(ws, "kiln.unet.num_head_channels",
                         json_integer_value(json_array_get(channels, 0)) / json_integer_value(json_array_get(heads, 0)));
        }
        if (st == KILN_OK && json_is_integer(sample))
            st = set_int(ws, "kiln.resolution", json_integer_value(sample) * 8);
        json_decref(unet);
        if (st != KILN_OK)
            return st;
    }

    json_t *scheduler = load_config(dir, "scheduler/scheduler_config.json", &st);
    if (st != KILN_OK)
        return st;
    if (scheduler) {
        json_t *prediction = json_object_get(scheduler, "prediction_type");
        if (json_is_string(prediction))
            st = wstore_set_metadata(ws, "kiln.unet.prediction_type", json_string_value(prediction));
        json_t *zero_snr = json_object_get(scheduler, "rescale_betas_zero_snr");
        if (st == KILN_OK && json_is_true(zero_snr))
            st = wstore_set_metadata(ws, "kiln.scheduler.rescale_betas_zero_snr", "true");
        json_decref(scheduler);
        if (st != KILN_OK)
            return st;
    }

    json_t *vae = load_config(dir, "vae/config.json", &st);
    if (st != KILN_OK)
        return st;
    if (vae) {
        json_t *scale = json_object_get(vae, "scaling_factor");
        if (json_is_number(scale)) {
            char number[32];
            snprintf(number, sizeof number, "%.9g", json_number_value(scale));
            st = wstore_set_metadata(ws, "kiln.vae.scale_factor", number);
        }
        json_decref(vae);
    }
    return st;
}
