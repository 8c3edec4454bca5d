/*
 * cli_tuned.c - --tuned for the commands that run a model: the settings
 * `kiln tune` stored for this CPU, model and size, looked up without
 * measuring anything.
 */
#include <stdio.h>
#include <string.h>

#include "cli.h"
#include "perf/tuning.h"

/* The model's native resolution, from a load on a one-thread engine (the
 * file is mapped, nothing is computed); 0 when it cannot be loaded. */
static int native_size(const char *model, const char *tokenizer)
{
    kiln_engine_options eo;
    kiln_engine_options_defaults(&eo);
    eo.threads = 1;
    kiln_engine *e = NULL;
    kiln_model *m = NULL;
    int size = 0;
    kiln_model_options mo;
    kiln_model_options_defaults(&mo);
    mo.tokenizer_dir = tokenizer;
    if (kiln_engine_create(&eo, &e) == KILN_OK && kiln_model_load(e, model, &mo, &m) == KILN_OK) {
        kiln_model_info info;
        kiln_model_get_info(m, &info);
        size = info.native_resolution;
    }
    kiln_model_destroy(m);
    kiln_engine_destroy(e);
    return size;
}

int cli_tuned_lookup(const char *cmd, const char *model, const char *tokenizer, int width, int height,
                     kiln_tuning *out, FILE *msg)
{
    if (!width || !height) {
        int native = native_size(model, tokenizer);
        if (!native) {
            fprintf(msg, "kiln %s: --tuned: %s; using the defaults\n", cmd, kiln_last_error());
            return 0;
        }
        width = width ? width : native;
        height = height ? height : native;
    }
    char path[4096];
    if (kiln_tuning_cache_path(path, sizeof path) != KILN_OK) {
        fprintf(msg, "kiln %s: --tuned: %s; using the defaults\n", cmd, kiln_last_error());
        return 0;
    }
    kiln_tuning key, entry;
    kiln_tuning_match match;
    if (kiln_tuning_key(model, width, height, &key) != KILN_OK) {
        fprintf(msg, "kiln %s: --tuned: %s; using the defaults\n", cmd, kiln_last_error());
        return 0;
    }
    if (kiln_tuning_lookup(path, &key, &entry, &match) != KILN_OK) {
        fprintf(msg, "kiln %s: warning: %s; using the defaults (kiln tune rewrites it)\n", cmd, kiln_last_error());
        return 0;
    }
    char line[2048];
    tuning_explain(match, &key, &entry, path, line, sizeof line);
    fprintf(msg, "kiln %s: %s\n", cmd, line);
    if (match != KILN_TUNING_FOUND)
        return 0;
    *out = entry;
    return 1;
}

unsigned cli_optimization_bit(const char *arg)
{
    if (strncmp(arg, "--", 2) != 0)
        return 0;
    for (int k = 0; k < KILN_OPT_COUNT; k++) {
        const char *name = kiln_opt_name((kiln_opt)k), *p = arg + 2;
        size_t i = 0;
        while (name[i] && p[i] && (p[i] == name[i] || (p[i] == '-' && name[i] == '_')))
            i++;
        if (!name[i] && !p[i])
            return 1u << k;
    }
    return 0;
}

void cli_tuned_apply(const kiln_tuning *t, kiln_optimizations *o, unsigned given, int *batch_size)
{
    for (int k = 0; k < KILN_OPT_COUNT; k++) {
        if (given & (1u << k)) /* given on the command line: it wins */
            continue;
        char tuned[32];
        kiln_optimizations_get(&t->optimizations, (kiln_opt)k, tuned, sizeof tuned);
        kiln_optimizations_set(o, kiln_opt_name((kiln_opt)k), tuned);
    }
    if (batch_size && *batch_size == 0)
        *batch_size = t->batch_size;
}
