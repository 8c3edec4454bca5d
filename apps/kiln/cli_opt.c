/*
 * cli_opt.c - the optimization switches on the command line, shared by
 * `kiln generate` and `kiln bench`: one flag per kiln_optimizations field,
 * and the report of what ran.
 */
#include <string.h>

#include "cli.h"

/* flag -> switch name (kiln_opt_name) */
static const struct {
    const char *flag;
    kiln_opt opt;
} flags[] = {
    {"--attention", KILN_OPT_ATTENTION}, {"--attention-tile", KILN_OPT_ATTENTION_TILE},
    {"--layout", KILN_OPT_LAYOUT},       {"--fusion", KILN_OPT_FUSION},
    {"--winograd", KILN_OPT_WINOGRAD},
    {"--memory", KILN_OPT_MEMORY},       {"--precision", KILN_OPT_PRECISION},
    {"--fast-math", KILN_OPT_FAST_MATH}, {"--threads", KILN_OPT_THREADS},
    {"--vae-tiling", KILN_OPT_VAE_TILING}, {"--vae-tile", KILN_OPT_VAE_TILE},
};
_Static_assert(sizeof flags / sizeof flags[0] == KILN_OPT_COUNT, "a flag per switch");

int cli_optimization_flag(const char *cmd, const char *arg, const char *value, kiln_optimizations *o)
{
    for (size_t i = 0; i < sizeof flags / sizeof flags[0]; i++) {
        if (strcmp(arg, flags[i].flag) != 0)
            continue;
        if (!value) {
            fprintf(stderr, "kiln %s: %s needs a value (%s)\n", cmd, arg, kiln_opt_allowed(flags[i].opt));
            return -1;
        }
        if (kiln_optimizations_set(o, kiln_opt_name(flags[i].opt), value) != KILN_OK) {
            fprintf(stderr, "kiln %s: %s\n", cmd, kiln_last_error());
            return -1;
        }
        return 1;
    }
    return 0;
}

void cli_optimization_usage(FILE *out)
{
    fprintf(out, "optimizations (default: the best configuration for this machine):\n"
                 "      --attention A      tiled (fused, online softmax) or plain (score matrix per head)\n"
                 "      --attention-tile N queries per tile of the tiled kernel (0: the kernel's own)\n"
                 "      --layout L         nhwc (channels last) or nchw (channels first: im2col convolutions, no Winograd)\n"
                 "      --fusion on|off    group norm + SiLU in one pass, or two\n"
                 "      --winograd on|off  3x3 convolutions by Winograd F(4x4, 3x3) or F(2x2, 3x3) where they pay,\n"
                 "                         or all direct\n"
                 "      --memory M         plan (one arena planned per graph) or alloc (malloc per node)\n"
                 "      --precision P      f32, f16 or bf16 weights (sums stay f32; activations too, except\n"
                 "                         bf16 where AVX512_BF16 dot products measure faster: KILN_BF16_DOT)\n"
                 "      --fast-math on|off polynomial exp/erf, or libm's\n"
                 "      --threads N        worker threads (0: all cores)\n"
                 "      --vae-tiling on|off decode the latent in overlapping tiles, blended: the VAE decoder's\n"
                 "                         memory is one tile's (pixels differ slightly from a whole decode)\n"
                 "      --vae-tile N       pixels per tile side, 64 to 2048 in multiples of 8 (0: 256)\n");
}

json_t *cli_report_json(const kiln_opt_report *rep)
{
    json_t *list = json_array();
    for (int i = 0; i < KILN_OPT_COUNT; i++)
        json_array_append_new(list, json_pack("{s:s, s:s, s:s, s:b, s:s}", "optimization", kiln_opt_name((kiln_opt)i),
                                              "asked", rep[i].asked, "active", rep[i].active, "available",
                                              rep[i].available, "note", rep[i].note));
    return list;
}

void cli_report_print(FILE *out, const kiln_opt_report *rep, int all)
{
    for (int i = 0; i < KILN_OPT_COUNT; i++) {
        if (!all && rep[i].available)
            continue;
        if (rep[i].available)
            fprintf(out, "  %-15s %-8s%s%s\n", kiln_opt_name((kiln_opt)i), rep[i].active, rep[i].note[0] ? "  " : "",
                    rep[i].note);
        else
            fprintf(out, "  %-15s %-8s(asked %s: %s)\n", kiln_opt_name((kiln_opt)i), rep[i].active, rep[i].asked,
                    rep[i].note);
    }
}
