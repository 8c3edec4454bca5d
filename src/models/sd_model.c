#include "models/sd_model.h"

#include <errno.h>
#include <libgen.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>

#include "core/error.h"
#include "core/log.h"
#include "models/diffusers.h"

model_build sd_model_builder(const sd_model *m, graph *g, const char *prefix)
{
    return (model_build){.g = g, .ws = m->ws, .prefix = prefix};
}

static int is_dir(const char *path)
{
    struct stat st;
    return stat(path, &st) == 0 && S_ISDIR(st.st_mode);
}

static int is_file(const char *path)
{
    struct stat st;
    return stat(path, &st) == 0 && S_ISREG(st.st_mode);
}

static kiln_status add_file(sd_model *m, const char *path, weight_name_map map)
{
    kiln_weights *w;
    kiln_status st = kiln_weights_open(path, &w);
    if (st != KILN_OK)
        return st;
    return wstore_add_file(m->ws, w, map);
}

static kiln_status open_folder(sd_model *m, const char *dir)
{
    static const struct {
        const char *file;
        weight_name_map map;
    } parts[] = {
        {"unet/diffusion_pytorch_model.safetensors", diffusers_unet_name},
        {"vae/diffusion_pytorch_model.safetensors", diffusers_vae_name},
        {"text_encoder/model.safetensors", diffusers_text_encoder_name},
    };
    char path[4096];
    for (size_t i = 0; i < sizeof parts / sizeof parts[0]; i++) {
        snprintf(path, sizeof path, "%s/%s", dir, parts[i].file);
        if (!is_file(path))
            return err_set(KILN_ERR_IO, "%s: diffusers folder lacks %s", dir, parts[i].file);
        kiln_status st = add_file(m, path, parts[i].map);
        if (st != KILN_OK)
            return st;
    }
    return diffusers_read_configs(dir, m->ws);
}

static kiln_status find_tokenizer(sd_model *m, const char *tokenizer_dir)
{
    char dir[4096];
    if (tokenizer_dir) {
        snprintf(dir, sizeof dir, "%s", tokenizer_dir);
    } else if (m->is_folder) {
        snprintf(dir, sizeof dir, "%s/tokenizer", m->path);
    } else {
        char copy[4096];
        snprintf(copy, sizeof copy, "%s", m->path);
        snprintf(dir, sizeof dir, "%s/tokenizer", dirname(copy));
    }
    if (!is_dir(dir))
        return err_set(KILN_ERR_IO,
                       "%s: no tokenizer found at %s (a single-file checkpoint carries none: give --tokenizer DIR "
                       "with vocab.json and merges.txt)",
                       m->path, dir);
    return tok_create_from_dir(dir, &m->tokenizer);
}

/* The file name without ".safetensors", or the folder's name when the file
 * says nothing ("model.safetensors" in a folder named after the model, as
 * kiln's shipped one is). */
static void display_name(const char *path, char *out, size_t size)
{
    const char *base = strrchr(path, '/');
    base = base && base[1] ? base + 1 : path;
    size_t len = strlen(base);
    const char *ext = ".safetensors";
    if (len > strlen(ext) && strcmp(base + len - strlen(ext), ext) == 0)
        len -= strlen(ext);
    if (len == 5 && strncmp(base, "model", 5) == 0 && base > path + 1) {
        const char *end = base - 1; /* the '/' before the file */
        const char *dir = end;
        while (dir > path && dir[-1] != '/')
            dir--;
        if (end > dir) {
            snprintf(out, size, "%.*s", (int)(end - dir), dir);
            return;
        }
    }
    snprintf(out, size, "%.*s", (int)len, base);
}

static void read_settings(sd_model *m)
{
    model_build b = {.ws = m->ws};
    m->native_resolution = mb_meta_int(&b, "kiln.resolution", 512);
    m->default_steps = mb_meta_int(&b, "kiln.default.steps", 20);
    const char *v;
    m->default_cfg = 7.5f;
    if ((v = wstore_metadata(m->ws, "kiln.default.cfg_scale")) && atof(v) > 0)
        m->default_cfg = (float)atof(v);
    m->latent_scale = 0.18215f;
    if ((v = wstore_metadata(m->ws, "kiln.vae.scale_factor")) && atof(v) > 0)
        m->latent_scale = (float)atof(v);
    snprintf(m->default_sampler, sizeof m->default_sampler, "%s",
             (v = wstore_metadata(m->ws, "kiln.default.sampler")) ? v : "euler_a");
    v = wstore_metadata(m->ws, "kiln.unet.prediction_type");
    m->v_prediction = v && (strcmp(v, "v_prediction") == 0 || strcmp(v, "v") == 0);
    v = wstore_metadata(m->ws, "kiln.scheduler.rescale_betas_zero_snr");
    m->zero_terminal_snr = v && (strcmp(v, "true") == 0 || strcmp(v, "1") == 0);

    display_name(m->path, m->name, sizeof m->name);
}

kiln_status sd_model_load(const char *path, const char *tokenizer_dir, sd_model **out)
{
    sd_model *m = calloc(1, sizeof *m);
    if (!m)
        return err_set(KILN_ERR_NOMEM, "cannot allocate a model");
    kiln_status st = KILN_ERR_NOMEM;
    m->path = strdup(path);
    if (!m->path || wstore_create(&m->ws) != KILN_OK) {
        err_set(st, "cannot allocate a model");
        goto fail;
    }
    m->is_folder = is_dir(path);
    st = m->is_folder ? open_folder(m, path) : add_file(m, path, NULL);
    if (st != KILN_OK)
        goto fail;

    model_build b = {.ws = m->ws, .prefix = SD_UNET_PREFIX};
    if ((st = unet_config_read(&b, &m->unet)) != KILN_OK)
        goto fail_named;
    b.prefix = SD_VAE_PREFIX;
    if ((st = vae_config_read(&b, &m->vae)) != KILN_OK)
        goto fail_named;
    if (!m->vae.has_decoder) {
        st = err_set(KILN_ERR_FORMAT, "vae has no decoder");
        goto fail_named;
    }
    b.prefix = SD_CLIP_PREFIX;
    if ((st = clip_text_config_read(&b, &m->clip)) != KILN_OK)
        goto fail_named;
    if (m->clip.width != m->unet.context_dim) {
        st = err_set(KILN_ERR_SHAPE, "text encoder width %d differs from the unet's context width %d", m->clip.width,
                     m->unet.context_dim);
        goto fail_named;
    }
    if ((st = find_tokenizer(m, tokenizer_dir)) != KILN_OK)
        goto fail;
    read_settings(m);
    LOG_INFO("model %s: unet %d channels x%d levels, vae %d channels, text %d wide x%d layers, %dpx native",
             m->name, m->unet.model_channels, m->unet.levels, m->vae.channels, m->clip.width, m->clip.layers,
             m->native_resolution);
    *out = m;
    return KILN_OK;

fail_named:
    err_wrap(st, "%s: ", path);
fail:
    sd_model_destroy(m);
    return st;
}

void sd_model_release_file_range(void *model, const void *data, size_t bytes)
{
    sd_model *m = model;
    wstore_drop_range(m->ws, data, bytes);
}

void sd_model_destroy(sd_model *m)
{
    if (!m)
        return;
    tok_destroy(m->tokenizer);
    wstore_destroy(m->ws);
    free(m->path);
    free(m);
}
