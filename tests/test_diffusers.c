/*
 * The diffusers folder layout: the name maps against every tensor of the
 * real SD 1.5 (sd15_name_map.tsv, from tools/sd_reference.py), and the small
 * models stored in that layout computing the same outputs as the
 * single-file goldens.
 */
#include <stdlib.h>
#include <string.h>

#include "models/clip_text.h"
#include "models/diffusers.h"
#include "models/unet.h"
#include "models/vae.h"
#include "parity_support.h"
#include "test_support.h"

#define MODEL_TOL 1e-4

typedef struct name_row {
    char canonical[160], component[200], diffusers[200];
} name_row;

/* Writes a safetensors file whose tensors are the given names, all empty
 * (shape [0]), so the maps can probe it like the real file. */
static char *write_names_file(const char *component, name_row *rows, int n)
{
    size_t cap = 1 << 20, len = 0;
    char *json = malloc(cap);
    len += (size_t)snprintf(json + len, cap - len, "{");
    int first = 1;
    for (int i = 0; i < n; i++) {
        if (strcmp(rows[i].component, component) != 0)
            continue;
        len += (size_t)snprintf(json + len, cap - len, "%s\"%s\":{\"dtype\":\"F32\",\"shape\":[0],\"data_offsets\":[0,0]}",
                                first ? "" : ",", rows[i].diffusers);
        first = 0;
    }
    len += (size_t)snprintf(json + len, cap - len, "}");
    char name[64];
    snprintf(name, sizeof name, "%s/%s.safetensors", test_tmp_dir(), component);
    FILE *f = fopen(name, "wb");
    uint64_t header = len;
    fwrite(&header, 8, 1, f);
    fwrite(json, 1, len, f);
    fclose(f);
    free(json);
    return strdup(name);
}

static void test_sd15_name_map(void)
{
    char *path = test_data_path("golden/sd15_name_map.tsv");
    FILE *f = fopen(path, "r");
    CHECK(f != NULL, "cannot open %s", path);
    free(path);
    if (!f)
        return;
    name_row *rows = calloc(2000, sizeof *rows);
    int n = 0;
    char line[512];
    while (fgets(line, sizeof line, f) && n < 2000) {
        if (line[0] == '#')
            continue;
        char target[200];
        if (sscanf(line, "%159s\t%199s", rows[n].canonical, target) != 2)
            continue;
        char *slash = strchr(target, '/');
        if (!slash)
            continue;
        *slash = '\0';
        snprintf(rows[n].component, sizeof rows[n].component, "%s", target);
        snprintf(rows[n].diffusers, sizeof rows[n].diffusers, "%s", slash + 1);
        n++;
    }
    fclose(f);
    CHECK(n > 900, "expected the ~930 SD 1.5 unet and vae tensors, read %d", n);

    char *unet_path = write_names_file("unet", rows, n), *vae_path = write_names_file("vae", rows, n);
    kiln_weights *unet = NULL, *vae = NULL;
    CHECK(kiln_weights_open(unet_path, &unet) == KILN_OK, "unet names: %s", kiln_last_error());
    CHECK(kiln_weights_open(vae_path, &vae) == KILN_OK, "vae names: %s", kiln_last_error());
    int wrong = 0;
    for (int i = 0; unet && vae && i < n; i++) {
        char got[256];
        int is_unet = strcmp(rows[i].component, "unet") == 0;
        int ok = is_unet ? diffusers_unet_name(unet, rows[i].canonical, got, sizeof got)
                         : diffusers_vae_name(vae, rows[i].canonical, got, sizeof got);
        if (!ok || strcmp(got, rows[i].diffusers) != 0) {
            if (wrong++ < 5)
                CHECK(0, "%s: expected '%s', got '%s'", rows[i].canonical, rows[i].diffusers, ok ? got : "(none)");
        }
    }
    CHECK(wrong == 0, "%d of %d names mapped wrongly", wrong, n);
    char other[64];
    CHECK(!diffusers_unet_name(unet, "first_stage_model.decoder.conv_in.weight", other, sizeof other),
          "the unet map must refuse vae names");
    kiln_weights_destroy(unet);
    kiln_weights_destroy(vae);
    free(unet_path);
    free(vae_path);
    free(rows);
}

/* A golden file for inputs and outputs, the diffusers folder for weights. */
static int open_with_diffusers(golden *gd, const char *golden_file, const char *prefix, const char *component,
                               weight_name_map map)
{
    if (golden_open(gd, golden_file, prefix) != 0)
        return -1;
    char name[128];
    snprintf(name, sizeof name, "golden/diffusers_small/%s", component);
    char *path = test_data_path(name);
    kiln_weights *w;
    weight_store *ws;
    int ok = kiln_weights_open(path, &w) == KILN_OK && wstore_create(&ws) == KILN_OK &&
             wstore_add_file(ws, w, map) == KILN_OK;
    CHECK(ok, "%s: %s", path, kiln_last_error());
    free(path);
    if (!ok)
        return -1;
    gd->b.ws = ws; /* weights from the folder; gd->ws keeps the goldens */
    char *dir = test_data_path("golden/diffusers_small");
    kiln_status st = diffusers_read_configs(dir, ws);
    CHECK(st == KILN_OK, "%s: %s", dir, kiln_last_error());
    free(dir);
    return st == KILN_OK ? 0 : -1;
}

static void test_diffusers_unet(void)
{
    golden gd;
    if (open_with_diffusers(&gd, "unet_small.safetensors", "model.diffusion_model.",
                            "unet/diffusion_pytorch_model.safetensors", diffusers_unet_name) != 0)
        return;
    unet_config c;
    CHECK(unet_config_read(&gd.b, &c) == KILN_OK, "config: %s", kiln_last_error());
    float *x_data = NULL, *t_data = NULL, *ctx_data = NULL;
    graph_id x = golden_input(&gd, "golden.input.x", &x_data);
    graph_id t = golden_input(&gd, "golden.input.timesteps", &t_data);
    graph_id ctx = golden_input(&gd, "golden.input.context", &ctx_data);
    graph_id out = unet_build(&gd.b, &c, x, t, ctx);
    graph_mark_output(gd.g, out);
    graph_exec *exec = NULL;
    CHECK(graph_exec_create(gd.g, NULL, &exec) == KILN_OK, "unet from the diffusers folder: %s", kiln_last_error());
    if (exec) {
        graph_exec_bind(exec, x, x_data);
        graph_exec_bind(exec, t, t_data);
        graph_exec_bind(exec, ctx, ctx_data);
        if (golden_run(&gd, &exec, MODEL_TOL) == KILN_OK)
            golden_compare(&gd, "golden.output", graph_exec_output(exec, out), MODEL_TOL);
    }
    graph_exec_destroy(exec);
    wstore_destroy(gd.b.ws);
    free(x_data);
    free(t_data);
    free(ctx_data);
    golden_close(&gd);
}

static void test_diffusers_vae(void)
{
    golden gd;
    if (open_with_diffusers(&gd, "vae_small.safetensors", "first_stage_model.",
                            "vae/diffusion_pytorch_model.safetensors", diffusers_vae_name) != 0)
        return;
    vae_config c;
    CHECK(vae_config_read(&gd.b, &c) == KILN_OK, "config: %s", kiln_last_error());
    float *img_data = NULL, *z_data = NULL;
    graph_id img = golden_input(&gd, "golden.input.image", &img_data);
    graph_id z = golden_input(&gd, "golden.input.z", &z_data);
    graph_id moments = vae_build_encoder(&gd.b, &c, img);
    graph_id decoded = vae_build_decoder(&gd.b, &c, z);
    graph_mark_output(gd.g, moments);
    graph_mark_output(gd.g, decoded);
    graph_exec *exec = NULL;
    CHECK(graph_exec_create(gd.g, NULL, &exec) == KILN_OK, "vae from the diffusers folder: %s", kiln_last_error());
    if (exec) {
        graph_exec_bind(exec, img, img_data);
        graph_exec_bind(exec, z, z_data);
        if (golden_run(&gd, &exec, MODEL_TOL) == KILN_OK) {
            golden_compare(&gd, "golden.output.moments", graph_exec_output(exec, moments), MODEL_TOL);
            golden_compare(&gd, "golden.output.image", graph_exec_output(exec, decoded), MODEL_TOL);
        }
    }
    graph_exec_destroy(exec);
    wstore_destroy(gd.b.ws);
    free(img_data);
    free(z_data);
    golden_close(&gd);
}

static void test_diffusers_text_encoder(void)
{
    golden gd;
    if (open_with_diffusers(&gd, "clip_small.safetensors", "cond_stage_model.transformer.text_model.",
                            "text_encoder/model.safetensors", diffusers_text_encoder_name) != 0)
        return;
    clip_text_config c;
    CHECK(clip_text_config_read(&gd.b, &c) == KILN_OK, "config: %s", kiln_last_error());
    float *ids_data = NULL;
    graph_id ids = golden_input(&gd, "golden.input.input_ids", &ids_data);
    graph_id out = clip_text_build(&gd.b, &c, ids);
    graph_mark_output(gd.g, out);
    graph_exec *exec = NULL;
    CHECK(graph_exec_create(gd.g, NULL, &exec) == KILN_OK, "text encoder from the diffusers folder: %s", kiln_last_error());
    if (exec) {
        graph_exec_bind(exec, ids, ids_data);
        if (golden_run(&gd, &exec, MODEL_TOL) == KILN_OK)
            golden_compare(&gd, "golden.output", graph_exec_output(exec, out), MODEL_TOL);
    }
    graph_exec_destroy(exec);
    wstore_destroy(gd.b.ws);
    free(ids_data);
    golden_close(&gd);
}

TEST_MAIN(TEST(test_sd15_name_map), TEST(test_diffusers_unet), TEST(test_diffusers_vae),
          TEST(test_diffusers_text_encoder))
