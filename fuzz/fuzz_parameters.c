/*
 * fuzz_parameters.c - parameters_parse on any text, and parameters_format
 * on what it reads.
 *
 * A text either fails with a message naming the setting, or parses; what
 * parses is written back with parameters_format and read again, and from
 * then on nothing may change: the second reading gives the same prompts,
 * names and numbers, and writing it gives the same text (numbers printed
 * with %g settle after one trip). That checks the quoting of the writer
 * against the reader, and the reader's line and pair splitting against
 * itself, on texts no one wrote by hand.
 *
 * One thing the format cannot carry: a negative prompt with a later line
 * that starts with "Negative prompt:" (A1111 cuts that prefix from every
 * line), so such texts only go through the first reading.
 */
#include <stdlib.h>
#include <string.h>

#include "fuzz.h"
#include "pipeline/parameters.h"

static image_parameters to_image_parameters(const parsed_parameters *p)
{
    image_parameters ip = {
        .prompt = p->prompt,
        .negative_prompt = p->negative_prompt,
        .steps = p->steps,
        .sampler = p->sampler_known ? p->kind : SAMPLER_EULER,
        .karras = p->sampler_known ? p->karras : 0,
        .cfg_scale = p->cfg_scale,
        .seed = p->seed,
        .width = p->width,
        .height = p->height,
        .model_hash = p->model_hash,
        .model_name = p->model_name,
        .denoising_strength = p->denoising_strength,
    };
    return ip;
}

static int same(const char *a, const char *b)
{
    return (!a && !b) || (a && b && strcmp(a, b) == 0);
}

int fuzz_parameters(const uint8_t *data, size_t size)
{
    char *text = fuzz_text(data, size);
    parsed_parameters first;
    memset(&first, 0, sizeof first);
    kiln_status st = parameters_parse(text, &first);
    if (st != KILN_OK) {
        const char *msg = kiln_last_error();
        FUZZ_CHECK(st == KILN_ERR_FORMAT || (st == KILN_ERR_INVALID && size > PARAMETERS_MAX_BYTES),
                   "status %d (%s)", st, msg);
        FUZZ_CHECK(strncmp(msg, "parameters: ", 12) == 0, "message '%s' does not say where", msg);
        free(text);
        return 0;
    }
    FUZZ_CHECK(first.prompt && first.negative_prompt, "a prompt is NULL");
    for (size_t i = 0; i < first.n_extras; i++) {
        FUZZ_CHECK(first.extras[i].key && first.extras[i].value, "extra %zu is NULL", i);
        for (size_t j = 0; j < i && first.n_extras <= 256; j++) /* quadratic: small lists only */
            FUZZ_CHECK(strcmp(first.extras[i].key, first.extras[j].key) != 0, "extra '%s' twice",
                       first.extras[i].key);
    }
    if (strstr(first.negative_prompt, "\nNegative prompt:")) {
        parsed_parameters_free(&first);
        free(text);
        return 0;
    }

    image_parameters ip = to_image_parameters(&first);
    char *written = NULL;
    st = parameters_format(&ip, &written);
    FUZZ_CHECK(st == KILN_OK, "format: %s", kiln_last_error());
    parsed_parameters second;
    st = parameters_parse(written, &second);
    FUZZ_CHECK(st == KILN_OK, "reading back\n%s\n: %s", written, kiln_last_error());
    FUZZ_CHECK(same(second.prompt, first.prompt), "prompt '%s' read back as '%s'", first.prompt, second.prompt);
    FUZZ_CHECK(same(second.negative_prompt, first.negative_prompt), "negative prompt '%s' read back as '%s'",
               first.negative_prompt, second.negative_prompt);
    FUZZ_CHECK(same(second.model_name, first.model_name), "model '%s' read back as '%s'",
               first.model_name ? first.model_name : "(none)", second.model_name ? second.model_name : "(none)");
    FUZZ_CHECK(same(second.model_hash, first.model_hash), "model hash '%s' read back as '%s'",
               first.model_hash ? first.model_hash : "(none)", second.model_hash ? second.model_hash : "(none)");
    FUZZ_CHECK(second.steps == first.steps && second.seed == first.seed && second.width == first.width &&
                   second.height == first.height,
               "numbers changed: steps %d/%d, seed %llu/%llu, size %dx%d/%dx%d", first.steps, second.steps,
               (unsigned long long)first.seed, (unsigned long long)second.seed, first.width, first.height,
               second.width, second.height);

    image_parameters ip2 = to_image_parameters(&second);
    char *rewritten = NULL;
    st = parameters_format(&ip2, &rewritten);
    FUZZ_CHECK(st == KILN_OK, "format: %s", kiln_last_error());
    FUZZ_CHECK(strcmp(written, rewritten) == 0, "written\n%s\nthen\n%s", written, rewritten);

    free(rewritten);
    free(written);
    parsed_parameters_free(&second);
    parsed_parameters_free(&first);
    free(text);
    return 0;
}

#ifndef KILN_FUZZ_REPLAY
int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    return fuzz_parameters(data, size);
}
#endif
