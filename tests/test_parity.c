/*
 * Parity with the PyTorch reference (tools/sd_reference.py): every block of
 * the UNet, the VAE and the CLIP text encoder, then the whole models, on
 * small random-weight models of the real architecture.
 *
 * Tolerance: the goldens are float64 results rounded to float32, and kiln
 * computes in float32, so errors are float32 rounding accumulated over the
 * network. Stated per comparison as max |kiln - golden| / max |golden|.
 */
#include <stdlib.h>
#include <string.h>

#include "models/clip_text.h"
#include "models/unet.h"
#include "models/vae.h"
#include "parity_support.h"
#include "test_support.h"

/* A block is one layer deep: float32 rounding alone. */
#define BLOCK_TOL 2e-5
/* Whole models: tens of layers. */
#define MODEL_TOL 1e-4

typedef graph_id (*block_builder)(golden *gd, graph_id x, graph_id extra);

/* Builds a block test: x and an optional second input (emb or context),
 * the block, compare golden.output. */
static void run_block(const char *file, const char *extra_name, block_builder build)
{
    golden gd;
    if (golden_open(&gd, file, "") != 0)
        return;
    float *x_data = NULL, *extra_data = NULL;
    graph_id x = golden_input(&gd, "golden.input.x", &x_data);
    graph_id extra = extra_name ? golden_input(&gd, extra_name, &extra_data) : GRAPH_NONE;
    golden_trace_all(&gd);
    graph_id out = build(&gd, x, extra);
    graph_mark_output(gd.g, out);
    graph_exec *exec = NULL;
    kiln_status st = graph_exec_create(gd.g, NULL, &exec);
    CHECK(st == KILN_OK, "%s: building the graph: %s", file, kiln_last_error());
    if (st == KILN_OK) {
        graph_exec_bind(exec, x, x_data);
        if (extra != GRAPH_NONE)
            graph_exec_bind(exec, extra, extra_data);
        if (golden_run(&gd, &exec, BLOCK_TOL) == KILN_OK)
            golden_compare(&gd, "golden.output", graph_exec_output(exec, out), BLOCK_TOL);
    }
    graph_exec_destroy(exec);
    free(x_data);
    free(extra_data);
    golden_close(&gd);
}

static graph_id build_resblock(golden *gd, graph_id x, graph_id emb)
{
    graph_id emb_silu = graph_silu(gd->g, "emb_layers.0", emb);
    return unet_res_block(&gd->b, x, emb_silu, "block", 64, 32, 128);
}

static graph_id build_spatial_transformer(golden *gd, graph_id x, graph_id context)
{
    return unet_spatial_transformer(&gd->b, x, context, "block", 32, 8, 1, 40);
}

static graph_id build_spatial_transformer_linear(golden *gd, graph_id x, graph_id context)
{
    return unet_spatial_transformer(&gd->b, x, context, "block", 32, 2, 1, 40);
}

static graph_id build_attention_self(golden *gd, graph_id x, graph_id unused)
{
    return unet_cross_attention(&gd->b, x, x, "block", 32, 32, 8);
}

static graph_id build_attention_cross(golden *gd, graph_id x, graph_id context)
{
    return unet_cross_attention(&gd->b, x, context, "block", 32, 40, 8);
}

static graph_id build_geglu(golden *gd, graph_id x, graph_id unused)
{
    return unet_feed_forward(&gd->b, x, "block", 32);
}

static graph_id build_downsample(golden *gd, graph_id x, graph_id unused)
{
    return unet_downsample(&gd->b, x, "block.op", 32);
}

static graph_id build_upsample(golden *gd, graph_id x, graph_id unused)
{
    return unet_upsample(&gd->b, x, "block.conv", 32);
}

static graph_id build_vae_resnet(golden *gd, graph_id x, graph_id unused)
{
    return vae_resnet_block(&gd->b, x, "block", 64, 32);
}

static graph_id build_vae_attn(golden *gd, graph_id x, graph_id unused)
{
    return vae_attn_block(&gd->b, x, "block", 32);
}

static graph_id build_vae_downsample(golden *gd, graph_id x, graph_id unused)
{
    return vae_downsample(&gd->b, x, "block.conv", 32);
}

static graph_id build_clip_layer(golden *gd, graph_id x, graph_id unused)
{
    clip_text_config c = {.width = 32, .mlp_width = 128, .heads = 2};
    return clip_text_layer(&gd->b, x, "block", &c);
}

static void test_block_resblock(void)
{
    run_block("block_resblock.safetensors", "golden.input.emb", build_resblock);
}

static void test_block_spatial_transformer(void)
{
    run_block("block_spatial_transformer.safetensors", "golden.input.context", build_spatial_transformer);
}

static void test_block_spatial_transformer_linear(void)
{
    run_block("block_spatial_transformer_linear.safetensors", "golden.input.context",
              build_spatial_transformer_linear);
}

static void test_block_attention(void)
{
    run_block("block_attention_self.safetensors", NULL, build_attention_self);
    run_block("block_attention_cross.safetensors", "golden.input.context", build_attention_cross);
}

static void test_block_geglu(void)
{
    run_block("block_geglu.safetensors", NULL, build_geglu);
}

static void test_block_down_up(void)
{
    run_block("block_downsample.safetensors", NULL, build_downsample);
    run_block("block_upsample.safetensors", NULL, build_upsample);
}

static void test_block_vae(void)
{
    run_block("block_vae_resnet.safetensors", NULL, build_vae_resnet);
    run_block("block_vae_attn.safetensors", NULL, build_vae_attn);
    run_block("block_vae_downsample.safetensors", NULL, build_vae_downsample);
}

static void test_block_clip_layer(void)
{
    run_block("block_clip_layer.safetensors", NULL, build_clip_layer);
}

static void test_timestep_embedding(void)
{
    golden gd;
    if (golden_open(&gd, "block_timestep_embedding.safetensors", "") != 0)
        return;
    float *t_data = NULL;
    graph_id t = golden_input(&gd, "golden.input.timesteps", &t_data);
    graph_id e32 = graph_timestep_embed(gd.g, "dim32", t, 32, 10000.0f);
    graph_id e320 = graph_timestep_embed(gd.g, "dim320", t, 320, 10000.0f);
    graph_mark_output(gd.g, e32);
    graph_mark_output(gd.g, e320);
    graph_exec *exec = NULL;
    CHECK(graph_exec_create(gd.g, NULL, &exec) == KILN_OK, "graph: %s", kiln_last_error());
    if (exec) {
        graph_exec_bind(exec, t, t_data);
        if (golden_run(&gd, &exec, BLOCK_TOL) == KILN_OK) {
            /* sin/cos of arguments up to 999 in float32, as PyTorch computes
             * them: the argument's rounding (~6e-5 absolute) shows */
            golden_compare(&gd, "golden.output", graph_exec_output(exec, e32), 2e-4);
            golden_compare(&gd, "golden.output.dim320", graph_exec_output(exec, e320), 2e-4);
        }
    }
    graph_exec_destroy(exec);
    free(t_data);
    golden_close(&gd);
}

/* ---- whole models ---- */

static void run_unet(const char *file, const char *case_prefix, int traces)
{
    golden gd;
    if (golden_open(&gd, file, "model.diffusion_model.") != 0)
        return;
    unet_config c;
    kiln_status st = unet_config_read(&gd.b, &c);
    CHECK(st == KILN_OK, "%s: %s", file, kiln_last_error());
    if (st != KILN_OK) {
        golden_close(&gd);
        return;
    }
    char name[128];
    float *x_data = NULL, *t_data = NULL, *ctx_data = NULL;
    snprintf(name, sizeof name, "%s.input.x", case_prefix);
    graph_id x = golden_input(&gd, name, &x_data);
    snprintf(name, sizeof name, "%s.input.timesteps", case_prefix);
    graph_id t = golden_input(&gd, name, &t_data);
    snprintf(name, sizeof name, "%s.input.context", case_prefix);
    graph_id ctx = golden_input(&gd, name, &ctx_data);
    if (traces)
        golden_trace_all(&gd);
    graph_id out = unet_build(&gd.b, &c, x, t, ctx);
    graph_mark_output(gd.g, out);
    graph_exec *exec = NULL;
    st = graph_exec_create(gd.g, NULL, &exec);
    CHECK(st == KILN_OK, "%s: building the unet: %s", file, kiln_last_error());
    if (st == KILN_OK) {
        graph_exec_bind(exec, x, x_data);
        graph_exec_bind(exec, t, t_data);
        graph_exec_bind(exec, ctx, ctx_data);
        if (golden_run(&gd, &exec, MODEL_TOL) == KILN_OK) {
            snprintf(name, sizeof name, "%s.output", case_prefix);
            golden_compare(&gd, name, graph_exec_output(exec, out), MODEL_TOL);
        }
    }
    graph_exec_destroy(exec);
    free(x_data);
    free(t_data);
    free(ctx_data);
    golden_close(&gd);
}

static void test_unet_small(void)
{
    run_unet("unet_small.safetensors", "golden", 1);
    run_unet("unet_small.safetensors", "golden.nonsquare", 0);
}

static void test_unet_small_2head(void)
{
    run_unet("unet_small_2head.safetensors", "golden", 1);
}

static void run_vae(const char *case_prefix, int traces)
{
    golden gd;
    if (golden_open(&gd, "vae_small.safetensors", "first_stage_model.") != 0)
        return;
    vae_config c;
    kiln_status st = vae_config_read(&gd.b, &c);
    CHECK(st == KILN_OK, "vae config: %s", kiln_last_error());
    CHECK(c.has_encoder && c.has_decoder && c.levels == 2 && c.num_res_blocks == 1 && c.z_channels == 4,
          "vae config: encoder %d decoder %d levels %d blocks %d z %d", c.has_encoder, c.has_decoder, c.levels,
          c.num_res_blocks, c.z_channels);
    char name[128];
    float *img_data = NULL, *z_data = NULL;
    snprintf(name, sizeof name, "%s.input.image", case_prefix);
    graph_id img = golden_input(&gd, name, &img_data);
    snprintf(name, sizeof name, "%s.input.z", case_prefix);
    graph_id z = golden_input(&gd, name, &z_data);
    if (traces)
        golden_trace_all(&gd);
    graph_id moments = vae_build_encoder(&gd.b, &c, img);
    graph_id decoded = vae_build_decoder(&gd.b, &c, z);
    graph_mark_output(gd.g, moments);
    graph_mark_output(gd.g, decoded);
    graph_exec *exec = NULL;
    st = graph_exec_create(gd.g, NULL, &exec);
    CHECK(st == KILN_OK, "building the vae: %s", kiln_last_error());
    if (st == KILN_OK) {
        graph_exec_bind(exec, img, img_data);
        graph_exec_bind(exec, z, z_data);
        if (golden_run(&gd, &exec, MODEL_TOL) == KILN_OK) {
            snprintf(name, sizeof name, "%s.output.moments", case_prefix);
            golden_compare(&gd, name, graph_exec_output(exec, moments), MODEL_TOL);
            snprintf(name, sizeof name, "%s.output.image", case_prefix);
            golden_compare(&gd, name, graph_exec_output(exec, decoded), MODEL_TOL);
        }
    }
    graph_exec_destroy(exec);
    free(img_data);
    free(z_data);
    golden_close(&gd);
}

static void test_vae_small(void)
{
    run_vae("golden", 1);
    run_vae("golden.nonsquare", 0);
}

static void test_clip_small(void)
{
    golden gd;
    if (golden_open(&gd, "clip_small.safetensors", "cond_stage_model.transformer.text_model.") != 0)
        return;
    clip_text_config c;
    kiln_status st = clip_text_config_read(&gd.b, &c);
    CHECK(st == KILN_OK, "clip config: %s", kiln_last_error());
    CHECK(c.width == 64 && c.layers == 2 && c.heads == 2 && c.vocab == 1000 && c.positions == 77,
          "clip config: width %d layers %d heads %d vocab %d positions %d", c.width, c.layers, c.heads, c.vocab,
          c.positions);
    float *ids_data = NULL;
    graph_id ids = golden_input(&gd, "golden.input.input_ids", &ids_data);
    golden_trace_all(&gd);
    graph_id out = clip_text_build(&gd.b, &c, ids);
    graph_mark_output(gd.g, out);
    graph_exec *exec = NULL;
    st = graph_exec_create(gd.g, NULL, &exec);
    CHECK(st == KILN_OK, "building clip: %s", kiln_last_error());
    if (st == KILN_OK) {
        graph_exec_bind(exec, ids, ids_data);
        if (golden_run(&gd, &exec, MODEL_TOL) == KILN_OK)
            golden_compare(&gd, "golden.output", graph_exec_output(exec, out), MODEL_TOL);
    }
    graph_exec_destroy(exec);
    free(ids_data);
    golden_close(&gd);
}

TEST_MAIN(TEST(test_block_resblock), TEST(test_block_spatial_transformer), TEST(test_block_spatial_transformer_linear),
          TEST(test_block_attention), TEST(test_block_geglu), TEST(test_block_down_up), TEST(test_block_vae),
          TEST(test_block_clip_layer), TEST(test_timestep_embedding), TEST(test_unet_small),
          TEST(test_unet_small_2head), TEST(test_vae_small), TEST(test_clip_small))
