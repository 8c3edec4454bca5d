/*
 * The full SD 1.5 architecture (random weights, 1,066,235,307 parameters,
 * written by tools/random_model.c into a temporary folder, never
 * committed) loads in both layouts and makes a 256x256 image. Slow: it
 * writes 2 x 2.1 GB and runs the real network sizes.
 */
#include <stdlib.h>
#include <string.h>

#include "random_model.h"
#include "test_support.h"

static void generate_from(const char *path)
{
    kiln_engine *engine = NULL;
    kiln_model *model = NULL;
    kiln_result *res = NULL;
    CHECK(kiln_engine_create(NULL, &engine) == KILN_OK, "engine: %s", kiln_last_error());
    kiln_status st = kiln_model_load(engine, path, NULL, &model);
    CHECK(st == KILN_OK, "loading %s: %s", path, kiln_last_error());
    if (st == KILN_OK) {
        kiln_model_info info;
        kiln_model_get_info(model, &info);
        CHECK(info.unet_channels == 320 && info.text_width == 768 && info.text_layers == 12 && info.vocab_size == 49408,
              "%s: read as unet %d, text %d x %d, vocab %d", path, info.unet_channels, info.text_width, info.text_layers,
              info.vocab_size);
        kiln_request r;
        kiln_request_defaults(&r);
        r.prompt = "a photograph of an astronaut riding a horse";
        r.width = r.height = 256;
        r.steps = 1;
        r.seed = 42;
        r.sampler = "euler";
        st = kiln_generate(model, &r, &res);
        CHECK(st == KILN_OK && res && res->count == 1 && res->images[0].width == 256,
              "%s: generating 256x256: %s", path, kiln_last_error());
        if (res)
            printf("    %s: 256x256 in %.2fs (UNet eval %.2fs, decode %.2fs)\n", path, res->timings.total_s,
                   res->timings.unet_s, res->timings.decode_s);
    }
    kiln_result_destroy(res);
    kiln_model_destroy(model);
    kiln_engine_destroy(engine);
}

static void test_sd15_both_layouts(void)
{
    random_model_spec spec;
    CHECK(random_model_preset("sd15", &spec) == 0, "preset sd15");
    char *tokenizer = test_shared_path("clip-tokenizer");
    for (int diffusers = 0; diffusers < 2; diffusers++) {
        random_model_options o = {.dtype = KILN_DTYPE_F16, .seed = 3, .diffusers = diffusers, .tokenizer_from = tokenizer};
        char path[512];
        snprintf(path, sizeof path, "%s/%s", test_tmp_dir(), diffusers ? "sd15-diffusers" : "sd15.safetensors");
        kiln_status st = random_model_write(&spec, &o, path);
        CHECK(st == KILN_OK, "writing %s: %s", path, kiln_last_error());
        if (st == KILN_OK)
            generate_from(path);
        char command[600];
        snprintf(command, sizeof command, "rm -rf '%s'", path); /* free the disk before the next one */
        if (system(command) != 0)
            fprintf(stderr, "warning: could not remove %s\n", path);
    }
    free(tokenizer);
}

TEST_MAIN(TEST(test_sd15_both_layouts))
