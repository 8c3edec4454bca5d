/*
 * make_random_model.c - writes a random-weight SD checkpoint for tests and
 * benchmarks:
 *
 *   make_random_model [--preset sd15|tiny] [--diffusers] [--f32|--bf16] [--seed N]
 *                     [--tokenizer-from DIR] OUT
 *
 * OUT is a .safetensors file, or a folder with --diffusers. F16 unless
 * --f32. With --tokenizer-from (CLIP's vocab.json + merges.txt, e.g.
 * ../shared/data/clip-tokenizer) the tokenizer is copied beside the model,
 * cut to its vocabulary. The full SD 1.5 preset writes 2.1 GB (F16).
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "random_model.h"

int main(int argc, char **argv)
{
    const char *preset = "tiny", *out = NULL;
    random_model_options o = {.dtype = KILN_DTYPE_F16, .seed = 1};
    for (int i = 1; i < argc; i++) {
        if (!strcmp(argv[i], "--preset") && i + 1 < argc)
            preset = argv[++i];
        else if (!strcmp(argv[i], "--diffusers"))
            o.diffusers = 1;
        else if (!strcmp(argv[i], "--f32"))
            o.dtype = KILN_DTYPE_F32;
        else if (!strcmp(argv[i], "--bf16"))
            o.dtype = KILN_DTYPE_BF16;
        else if (!strcmp(argv[i], "--seed") && i + 1 < argc)
            o.seed = strtoull(argv[++i], NULL, 10);
        else if (!strcmp(argv[i], "--tokenizer-from") && i + 1 < argc)
            o.tokenizer_from = argv[++i];
        else if (argv[i][0] != '-' && !out)
            out = argv[i];
        else {
            fprintf(stderr, "usage: make_random_model [--preset sd15|tiny] [--diffusers] [--f32|--bf16] [--seed N] "
                            "[--tokenizer-from DIR] OUT\n");
            return 2;
        }
    }
    random_model_spec spec;
    if (!out || random_model_preset(preset, &spec) != 0) {
        fprintf(stderr, "make_random_model: give OUT and a preset of sd15 or tiny\n");
        return 2;
    }
    if (random_model_write(&spec, &o, out) != KILN_OK) {
        fprintf(stderr, "make_random_model: %s\n", kiln_last_error());
        return 1;
    }
    return 0;
}
