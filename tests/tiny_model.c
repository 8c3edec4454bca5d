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
