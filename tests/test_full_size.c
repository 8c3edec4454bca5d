/*
 * The full SD 1.5 architecture (random weights, 1,066,235,307 parameters,
 * written by tools/random_model.c into a temporary folder, never
 * committed) loads in both layouts and makes a 256x256 image. Slow: it
 * writes 2 x 2.1 GB and runs the real network sizes.
 */
#include <spawn.h>
#include <stdlib.h>
#include <string.h>
#include <sys/resource.h>
#include <sys/wait.h>

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

extern char **environ;

/* Runs `kiln generate` on the model with a memory budget in a fresh
 * process; returns its exit status and its peak RSS in bytes. */
static int run_budgeted(const char *model, const char *budget, long long *peak_rss)
{
    char out_dir[512];
    snprintf(out_dir, sizeof out_dir, "%s/budgeted", test_tmp_dir());
    char *argv[] = {KILN_CLI, "generate", "-m", (char *)model, "-p", "a red circle", "-W", "256", "-H", "256",
                    "--steps", "1", "--num-images", "2", "--precision", "f16", "--max-memory", (char *)budget,
                    "-o", out_dir, "-q", NULL};
    pid_t pid;
    if (posix_spawn(&pid, KILN_CLI, NULL, NULL, argv, environ) != 0)
        return -1;
    int status = 0;
    struct rusage ru;
    if (wait4(pid, &status, 0, &ru) != pid)
        return -1;
    *peak_rss = (long long)ru.ru_maxrss * 1024;
    return WIFEXITED(status) ? WEXITSTATUS(status) : -1;
}

/* The budget holds: a run given 2350 MB plans a batch that fits and stays
 * under it (peak RSS, measured by the OS); one given 1 GB is refused before
 * loading weights. */
static void check_budget(const char *model)
{
    long long peak = 0;
    int rc = run_budgeted(model, "2350M", &peak);
    printf("    f16, budget 2350 MB: exit %d, peak RSS %.0f MB\n", rc, (double)peak / 1048576.0);
    CHECK(rc == 0, "a budgeted run failed (exit %d)", rc);
    CHECK(peak > 0 && peak <= 2350ll * 1048576, "peak RSS %.0f MB over the 2350 MB budget", (double)peak / 1048576.0);
    rc = run_budgeted(model, "1G", &peak);
    printf("    f16, budget 1 GB: exit %d (refused), peak RSS %.0f MB\n", rc, (double)peak / 1048576.0);
    CHECK(rc == 1, "a run that cannot fit 1 GB must be refused (exit 1), got %d", rc);
    CHECK(peak < 600ll * 1048576, "the refusal must come before the weights are prepared: peak RSS %.0f MB",
          (double)peak / 1048576.0);
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
        if (st == KILN_OK && !diffusers)
            check_budget(path);
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
