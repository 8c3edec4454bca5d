#include "random_model.h"

#include <errno.h>
#include <jansson.h>
#include <libgen.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>

#include "core/error.h"
#include "core/half.h"
#include "models/diffusers.h"
#include "models/sd_model.h"

int random_model_preset(const char *name, random_model_spec *out)
{
    memset(out, 0, sizeof *out);
    out->name = name;
    if (strcmp(name, "sd15") == 0) {
        out->unet = (unet_config){.in_channels = 4, .out_channels = 4, .model_channels = 320, .time_embed_dim = 1280,
                                  .levels = 4, .num_res_blocks = 2, .channel_mult = {1, 2, 4, 4},
                                  .attention = {1, 1, 1, 0}, .transformer_depth = 1, .context_dim = 768,
                                  .num_heads = 8};
        out->vae = (vae_config){.channels = 128, .levels = 4, .num_res_blocks = 2, .channel_mult = {1, 2, 4, 4},
                                .image_channels = 3, .z_channels = 4, .has_encoder = 1, .has_decoder = 1};
        out->clip = (clip_text_config){.width = 768, .layers = 12, .heads = 12, .vocab = 49408, .positions = 77,
                                       .mlp_width = 3072};
        out->resolution = 512;
        return 0;
    }
    if (strcmp(name, "tiny") == 0) {
        out->unet = (unet_config){.in_channels = 4, .out_channels = 4, .model_channels = 32, .time_embed_dim = 128,
                                  .levels = 2, .num_res_blocks = 1, .channel_mult = {1, 2}, .attention = {1, 1},
                                  .transformer_depth = 1, .context_dim = 32, .num_heads = 2};
        out->vae = (vae_config){.channels = 32, .levels = 4, .num_res_blocks = 1, .channel_mult = {1, 1, 1, 1},
                                .image_channels = 3, .z_channels = 4, .has_encoder = 1, .has_decoder = 1};
        out->clip = (clip_text_config){.width = 32, .layers = 2, .heads = 2, .vocab = 1000, .positions = 77,
                                       .mlp_width = 128};
        out->resolution = 64;
        return 0;
    }
    return -1;
}

/* Builds every graph of the model against a recorder: the tensor list. */
static kiln_status record_tensors(const random_model_spec *spec, weight_store **out)
{
    weight_store *ws;
    graph *g;
    kiln_status st = wstore_create_recorder(&ws);
    if (st != KILN_OK)
        return st;
    if ((st = graph_create(&g)) != KILN_OK) {
        wstore_destroy(ws);
        return st;
    }
    int64_t x_shape[4] = {1, 8, 8, spec->unet.in_channels}, t_shape[1] = {1};
    int64_t ctx_shape[3] = {1, spec->clip.positions, spec->unet.context_dim};
    int64_t ids_shape[2] = {1, spec->clip.positions};
    int64_t img_shape[4] = {1, 64, 64, spec->vae.image_channels}, z_shape[4] = {1, 8, 8, spec->vae.z_channels};

    model_build b = {.g = g, .ws = ws, .prefix = SD_UNET_PREFIX};
    unet_build(&b, &spec->unet, graph_input(g, "x", TENSOR_LAYOUT_NHWC, 4, x_shape),
               graph_input(g, "t", TENSOR_LAYOUT_PLAIN, 1, t_shape),
               graph_input(g, "context", TENSOR_LAYOUT_PLAIN, 3, ctx_shape));
    b.prefix = SD_VAE_PREFIX;
    vae_build_encoder(&b, &spec->vae, graph_input(g, "image", TENSOR_LAYOUT_NHWC, 4, img_shape));
    vae_build_decoder(&b, &spec->vae, graph_input(g, "z", TENSOR_LAYOUT_NHWC, 4, z_shape));
    b.prefix = SD_CLIP_PREFIX;
    clip_text_build(&b, &spec->clip, graph_input(g, "ids", TENSOR_LAYOUT_PLAIN, 2, ids_shape));
    st = graph_status(g);
    graph_destroy(g);
    if (st != KILN_OK) {
        wstore_destroy(ws);
        return st;
    }
    *out = ws;
    return KILN_OK;
}

/* ---- values ---- */

typedef struct value_rng {
    uint64_t state;
} value_rng;

static double uniform01(value_rng *r)
{
    r->state ^= r->state >> 12;
    r->state ^= r->state << 25;
    r->state ^= r->state >> 27;
    return (double)((r->state * 0x2545F4914F6CDD1Dull) >> 11) * (1.0 / 9007199254740992.0);
}

/* Roughly normal (the sum of four uniforms, variance matched): cheap, and
 * the values only need to keep activations in range. */
static float about_normal(value_rng *r)
{
    double s = uniform01(r) + uniform01(r) + uniform01(r) + uniform01(r) - 2.0;
    return (float)(s * 1.7320508075688772);
}

static int ends_with(const char *s, const char *suffix)
{
    size_t a = strlen(s), b = strlen(suffix);
    return a >= b && strcmp(s + a - b, suffix) == 0;
}

/* Weights N(0, 1/fan_in); norm scales 1 + small; biases and embeddings small. */
static void fill_values(const char *name, int ndim, const int64_t *shape, uint64_t seed, float *out, size_t n)
{
    value_rng r = {seed * 0x9E3779B97F4A7C15ull + 0x1234567ull};
    for (const char *p = name; *p; p++)
        r.state = (r.state ^ (unsigned char)*p) * 1099511628211ull;
    if (!r.state)
        r.state = 1;
    float scale, offset = 0.0f;
    if (ndim == 1 && ends_with(name, "weight")) {
        scale = 0.05f, offset = 1.0f; /* a norm's scale */
    } else if (ndim == 1) {
        scale = 0.02f;
    } else if (strstr(name, "embedding")) {
        scale = 0.3f;
    } else {
        int64_t fan_in = 1;
        for (int i = 1; i < ndim; i++)
            fan_in *= shape[i];
        scale = (float)(1.0 / sqrt((double)fan_in));
    }
    for (size_t i = 0; i < n; i++)
        out[i] = offset + scale * about_normal(&r);
}

/* ---- writing ---- */

typedef struct pending_tensor {
    const char *canonical;
    char name[256];
    int ndim;
    int64_t shape[4];
} pending_tensor;

static kiln_status write_safetensors(const char *path, pending_tensor *tensors, size_t n, kiln_dtype dtype,
                                     uint64_t seed, json_t *metadata)
{
    size_t elem = kiln_dtype_size(dtype);
    json_t *header = json_object();
    if (metadata)
        json_object_set(header, "__metadata__", metadata);
    uint64_t offset = 0, largest = 0;
    for (size_t i = 0; i < n; i++) {
        json_t *shape = json_array();
        uint64_t count = 1;
        for (int d = 0; d < tensors[i].ndim; d++) {
            json_array_append_new(shape, json_integer(tensors[i].shape[d]));
            count *= (uint64_t)tensors[i].shape[d];
        }
        json_object_set_new(header, tensors[i].name,
                            json_pack("{s:s, s:o, s:[I, I]}", "dtype", kiln_dtype_name(dtype), "shape", shape,
                                      "data_offsets", (json_int_t)offset, (json_int_t)(offset + count * elem)));
        offset += count * elem;
        if (count > largest)
            largest = count;
    }
    char *text = json_dumps(header, JSON_COMPACT);
    json_decref(header);
    FILE *f = fopen(path, "wb");
    float *values = malloc((size_t)largest * sizeof *values);
    void *encoded = malloc((size_t)largest * elem);
    kiln_status st = KILN_OK;
    if (!text || !f || !values || !encoded) {
        st = f ? err_set(KILN_ERR_NOMEM, "%s: out of memory", path)
               : err_set(KILN_ERR_IO, "%s: cannot create: %s", path, strerror(errno));
        goto done;
    }
    size_t len = strlen(text), padded = (len + 7) / 8 * 8;
    uint64_t header_len = padded;
    fwrite(&header_len, 8, 1, f);
    fwrite(text, 1, len, f);
    for (size_t i = len; i < padded; i++)
        fputc(' ', f);
    for (size_t i = 0; i < n; i++) {
        size_t count = 1;
        for (int d = 0; d < tensors[i].ndim; d++)
            count *= (size_t)tensors[i].shape[d];
        fill_values(tensors[i].canonical, tensors[i].ndim, tensors[i].shape, seed, values, count);
        if (dtype == KILN_DTYPE_F16 || dtype == KILN_DTYPE_BF16) {
            uint16_t *h = encoded;
            for (size_t j = 0; j < count; j++)
                h[j] = dtype == KILN_DTYPE_F16 ? half_f32_to_f16(values[j]) : half_f32_to_bf16(values[j]);
            fwrite(h, 2, count, f);
        } else {
            fwrite(values, 4, count, f);
        }
    }
    if (ferror(f) || fclose(f) != 0)
        st = err_set(KILN_ERR_IO, "%s: write failed: %s", path, strerror(errno));
    f = NULL;
done:
    if (f)
        fclose(f);
    free(text);
    free(values);
    free(encoded);
    return st;
}

/* Copies the CLIP tokenizer, cut to the first `vocab` ids: CLIP's vocabulary
 * is the 512 byte tokens, then one token per merge in merge order, then
 * start and end, so the first vocab - 2 ids and vocab - 514 merges plus the
 * two specials form a complete smaller tokenizer. */
static kiln_status write_tokenizer(const char *from, const char *dir, int vocab)
{
    char path[4200];
    snprintf(path, sizeof path, "%s/vocab.json", from);
    json_error_t error;
    json_t *clip = json_load_file(path, 0, &error);
    if (!clip)
        return err_set(KILN_ERR_FORMAT, "%s: line %d: %s", path, error.line, error.text);
    json_t *cut = json_object();
    const char *token;
    json_t *id;
    json_object_foreach(clip, token, id) {
        if (json_integer_value(id) < vocab - 2)
            json_object_set(cut, token, id);
    }
    json_object_set_new(cut, "<|startoftext|>", json_integer(vocab - 2));
    json_object_set_new(cut, "<|endoftext|>", json_integer(vocab - 1));
    json_decref(clip);
    snprintf(path, sizeof path, "%s", dir);
    mkdir(path, 0755);
    snprintf(path, sizeof path, "%s/vocab.json", dir);
    int rc = json_dump_file(cut, path, JSON_COMPACT);
    json_decref(cut);
    if (rc != 0)
        return err_set(KILN_ERR_IO, "%s: cannot write", path);

    snprintf(path, sizeof path, "%s/merges.txt", from);
    FILE *in = fopen(path, "r");
    if (!in)
        return err_set(KILN_ERR_IO, "%s: cannot open: %s", path, strerror(errno));
    snprintf(path, sizeof path, "%s/merges.txt", dir);
    FILE *out = fopen(path, "w");
    if (!out) {
        fclose(in);
        return err_set(KILN_ERR_IO, "%s: cannot create: %s", path, strerror(errno));
    }
    char line[512];
    for (int n = 0; n < vocab - 514 + 1 && fgets(line, sizeof line, in); n++)
        fputs(line, out); /* the "#version" line, then vocab - 514 merges */
    fclose(in);
    fclose(out);
    return KILN_OK;
}

static json_t *model_metadata(const random_model_spec *spec)
{
    char heads[16], clip_heads[16], resolution[16];
    snprintf(heads, sizeof heads, "%d", spec->unet.num_heads);
    snprintf(clip_heads, sizeof clip_heads, "%d", spec->clip.heads);
    snprintf(resolution, sizeof resolution, "%d", spec->resolution);
    return json_pack("{s:s, s:s, s:s, s:s, s:s}", "format", "pt", "kiln.unet.num_heads", heads, "kiln.clip.num_heads",
                     clip_heads, "kiln.resolution", resolution, "kiln.note",
                     "random weights (tools/random_model.c): for tests and benchmarks, makes noise");
}

static kiln_status write_json(const char *path, json_t *value)
{
    int rc = json_dump_file(value, path, JSON_INDENT(2));
    json_decref(value);
    return rc == 0 ? KILN_OK : err_set(KILN_ERR_IO, "%s: cannot write", path);
}

static kiln_status write_diffusers(const random_model_spec *spec, const random_model_options *o, const char *dir,
                                   pending_tensor *all, size_t n)
{
    diffusers_layout layout = {.unet_blocks_per_level = spec->unet.num_res_blocks, .vae_levels = spec->vae.levels};
    static const char *const components[3] = {"unet", "vae", "text_encoder"};
    static const char *const files[3] = {"unet/diffusion_pytorch_model.safetensors",
                                         "vae/diffusion_pytorch_model.safetensors", "text_encoder/model.safetensors"};
    static const char *const prefixes[3] = {SD_UNET_PREFIX, SD_VAE_PREFIX, "cond_stage_model.transformer."};
    char path[4096];
    mkdir(dir, 0755);
    kiln_status st = KILN_OK;
    pending_tensor *part = malloc(n * sizeof *part);
    if (!part)
        return err_set(KILN_ERR_NOMEM, "out of memory");
    for (int c = 0; c < 3 && st == KILN_OK; c++) {
        snprintf(path, sizeof path, "%s/%s", dir, components[c]);
        mkdir(path, 0755);
        size_t count = 0;
        for (size_t i = 0; i < n; i++) {
            if (strncmp(all[i].canonical, prefixes[c], strlen(prefixes[c])) != 0)
                continue;
            part[count] = all[i];
            int ok = c == 0   ? diffusers_unet_name_in(&layout, all[i].canonical, part[count].name, sizeof part[count].name)
                     : c == 1 ? diffusers_vae_name_in(&layout, NULL, all[i].canonical, part[count].name,
                                                      sizeof part[count].name)
                              : (snprintf(part[count].name, sizeof part[count].name, "%s",
                                          all[i].canonical + strlen(prefixes[c])),
                                 1);
            if (!ok) {
                st = err_set(KILN_ERR_INVALID, "no diffusers name for '%s'", all[i].canonical);
                break;
            }
            count++;
        }
        snprintf(path, sizeof path, "%s/%s", dir, files[c]);
        if (st == KILN_OK)
            st = write_safetensors(path, part, count, o->dtype, o->seed, NULL);
    }
    free(part);
    if (st != KILN_OK)
        return st;

    json_t *channels = json_array();
    for (int l = 0; l < spec->unet.levels; l++)
        json_array_append_new(channels, json_integer(spec->unet.model_channels * spec->unet.channel_mult[l]));
    snprintf(path, sizeof path, "%s/unet/config.json", dir);
    st = write_json(path, json_pack("{s:s, s:i, s:o, s:i, s:i, s:i, s:i}", "_class_name", "UNet2DConditionModel",
                                    "attention_head_dim", spec->unet.num_heads, "block_out_channels", channels,
                                    "cross_attention_dim", spec->unet.context_dim, "layers_per_block",
                                    spec->unet.num_res_blocks, "sample_size", spec->resolution / 8, "in_channels",
                                    spec->unet.in_channels));
    snprintf(path, sizeof path, "%s/text_encoder/config.json", dir);
    if (st == KILN_OK)
        st = write_json(path, json_pack("{s:i, s:s, s:i, s:i, s:i}", "num_attention_heads", spec->clip.heads,
                                        "hidden_act", "quick_gelu", "hidden_size", spec->clip.width,
                                        "num_hidden_layers", spec->clip.layers, "vocab_size", spec->clip.vocab));
    snprintf(path, sizeof path, "%s/vae/config.json", dir);
    if (st == KILN_OK)
        st = write_json(path, json_pack("{s:s, s:f, s:i}", "_class_name", "AutoencoderKL", "scaling_factor", 0.18215,
                                        "latent_channels", spec->vae.z_channels));
    snprintf(path, sizeof path, "%s/model_index.json", dir);
    if (st == KILN_OK)
        st = write_json(path, json_pack("{s:s}", "_class_name", "StableDiffusionPipeline"));
    return st;
}

kiln_status random_model_write(const random_model_spec *spec, const random_model_options *o, const char *path)
{
    weight_store *ws;
    kiln_status st = record_tensors(spec, &ws);
    if (st != KILN_OK)
        return st;
    size_t n = wstore_recorded_count(ws);
    pending_tensor *tensors = calloc(n, sizeof *tensors);
    if (!tensors) {
        wstore_destroy(ws);
        return err_set(KILN_ERR_NOMEM, "out of memory");
    }
    for (size_t i = 0; i < n; i++) {
        wstore_recorded(ws, i, &tensors[i].canonical, &tensors[i].ndim, tensors[i].shape);
        snprintf(tensors[i].name, sizeof tensors[i].name, "%s", tensors[i].canonical);
    }
    char tokenizer_dir[4080];
    if (o->diffusers) {
        st = write_diffusers(spec, o, path, tensors, n);
        snprintf(tokenizer_dir, sizeof tokenizer_dir, "%s/tokenizer", path);
    } else {
        json_t *metadata = model_metadata(spec);
        st = write_safetensors(path, tensors, n, o->dtype, o->seed, metadata);
        json_decref(metadata);
        char copy[4096];
        snprintf(copy, sizeof copy, "%s", path);
        snprintf(tokenizer_dir, sizeof tokenizer_dir, "%s/tokenizer", dirname(copy));
    }
    if (st == KILN_OK && o->tokenizer_from)
        st = write_tokenizer(o->tokenizer_from, tokenizer_dir, spec->clip.vocab);
    free(tensors);
    wstore_destroy(ws);
    return st;
}
