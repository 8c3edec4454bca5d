#include "tiny_model.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "random_model.h"
#include "test_support.h"

static char *model_path;

const char *tiny_model(void)
{
    if (model_path)
        return model_path;
    random_model_spec spec;
    random_model_preset("tiny", &spec);
    char *tokenizer = test_shared_path("clip-tokenizer");
    random_model_options o = {.dtype = KILN_DTYPE_F32, .seed = 7, .tokenizer_from = tokenizer};
    char path[512];
    snprintf(path, sizeof path, "%s/tiny.safetensors", test_tmp_dir());
    kiln_status st = random_model_write(&spec, &o, path);
    free(tokenizer);
    CHECK(st == KILN_OK, "writing the tiny model: %s", kiln_last_error());
    if (st == KILN_OK)
        model_path = strdup(path);
    return model_path;
}

void tiny_model_free(void)
{
    free(model_path);
    model_path = NULL;
}

int model_session_open(model_session *s, const char *path, int threads, const char *precision)
{
    memset(s, 0, sizeof *s);
    if (!path)
        return -1;
    kiln_engine_options eo;
    kiln_engine_options_defaults(&eo);
    eo.threads = threads;
    kiln_model_options mo;
    kiln_model_options_defaults(&mo);
    mo.precision = precision;
    if (kiln_engine_create(&eo, &s->engine) != KILN_OK || kiln_model_load(s->engine, path, &mo, &s->model) != KILN_OK) {
        CHECK(0, "opening %s (%s): %s", path, precision ? precision : "f32", kiln_last_error());
        kiln_engine_destroy(s->engine);
        s->engine = NULL;
        return -1;
    }
    return 0;
}

void model_session_close(model_session *s)
{
    kiln_model_destroy(s->model);
    kiln_engine_destroy(s->engine);
}
