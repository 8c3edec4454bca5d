/*
 * parameters.h - the "parameters" text that AUTOMATIC1111's web UI writes
 * into its PNGs and other SD tools read back:
 *
 *   a red circle on a blue background
 *   Negative prompt: blurry
 *   Steps: 20, Sampler: Euler a, CFG scale: 7.5, Seed: 42, Size: 512x512, Model hash: 6ce0161689, Model: v1-5
 *
 * The prompt and the negative prompt may run over several lines; the last
 * line holds the settings as "Key: value" pairs separated by ", ". A value
 * holding ',', ':' or a line break is written as a JSON string ("..."), as
 * AUTOMATIC1111's infotext_utils.quote() does.
 */
#ifndef KILN_PIPELINE_PARAMETERS_H
#define KILN_PIPELINE_PARAMETERS_H

#include <stdint.h>

#include "kiln.h"
#include "pipeline/samplers.h"

typedef struct image_parameters {
    const char *prompt, *negative_prompt;
    int steps;
    sampler_kind sampler;
    int karras;
    float cfg_scale;
    uint64_t seed;
    int width, height;
    const char *model_hash; /* 10 hex digits, or NULL */
    const char *model_name;
    float denoising_strength; /* img2img only: > 0 */
    const char *rng;          /* NULL: the default (torch-cpu) */
} image_parameters;

/* A malloc'd string. Errors: KILN_ERR_NOMEM. model_name and model_hash are
 * quoted when they hold what would end a value (',', ':', a line break). */
kiln_status parameters_format(const image_parameters *p, char **out);

/* ---- reading ---------------------------------------------------------------- */

/* The longest text parameters_parse reads: far past any real prompt (an
 * A1111 prompt field takes a few KB), and a bound on the work one text costs. */
#define PARAMETERS_MAX_BYTES (1u << 20)

/* Which of the settings of a parsed_parameters the text gave. */
enum {
    PARAMETERS_STEPS = 1u << 0,
    PARAMETERS_SAMPLER = 1u << 1,
    PARAMETERS_CFG_SCALE = 1u << 2,
    PARAMETERS_SEED = 1u << 3,
    PARAMETERS_SIZE = 1u << 4,
    PARAMETERS_MODEL_HASH = 1u << 5,
    PARAMETERS_MODEL = 1u << 6,
    PARAMETERS_DENOISING_STRENGTH = 1u << 7,
};

/* A setting kiln has no field for ("Clip skip: 2", "Version: v1.7.0"),
 * with its value unquoted. */
typedef struct parameters_extra {
    char *key, *value;
} parameters_extra;

/* What parameters_parse read. Every string is owned by the struct and freed
 * by parsed_parameters_free. */
typedef struct parsed_parameters {
    char *prompt;          /* never NULL; "" when the text has none */
    char *negative_prompt; /* never NULL; "" when the text has none */
    unsigned present;      /* PARAMETERS_* bits: the settings below that the text gave */
    int steps;
    char *sampler;         /* as written ("DPM++ 2M Karras"), or NULL */
    int sampler_known;     /* 1 when sampler_parse() knows it: then kind and karras say
                              which (a "Schedule type: Karras" setting, as A1111 1.9
                              writes it, counts) */
    sampler_kind kind;
    int karras;
    float cfg_scale;
    uint64_t seed;
    int width, height;     /* "Size: WxH" */
    char *model_hash;      /* as written (8 or 10 hex digits in practice), or NULL */
    char *model_name;      /* or NULL */
    float denoising_strength;
    parameters_extra *extras; /* the other settings, in the order of the text */
    size_t n_extras;
} parsed_parameters;

/* Reads the "parameters" text of a PNG as AUTOMATIC1111's infotext parser
 * (infotext_utils.parse_generation_parameters) does, so that it reads what
 * parameters_format writes and what A1111 writes:
 *   - the text is stripped; its last line holds the settings when at least
 *     three "Key: value" pairs are found in it, otherwise it is a prompt line;
 *   - each other line is stripped; lines from the first that starts with
 *     "Negative prompt:" on (that prefix cut) are the negative prompt, the
 *     ones before it the prompt; both are joined with "\n";
 *   - settings are found as A1111's pattern
 *       \s*(\w[\w \-/]+):\s*("(?:\\.|[^\\"])+"|[^,]*)(?:,|$)
 *     finds them (text matching no pair is skipped); a value that begins
 *     and ends with '"' is decoded as a JSON string (kept as written if it
 *     is not one); an empty value is dropped; a repeated key keeps its last
 *     value.
 * Whitespace means what Python's isspace() says of ASCII (\t-\r, \x1c-\x1f,
 * space), and bytes >= 0x80 count as word characters (Python's str methods
 * know Unicode's, which a UTF-8 byte reader cannot without a table). Steps, Sampler, CFG
 * scale, Seed, Size, Model hash, Model and Denoising strength fill the
 * fields above (see present); every other key goes to extras.
 *
 * On success *out is the caller's, for parsed_parameters_free. Errors:
 * KILN_ERR_FORMAT (a setting kiln reads has a malformed value: "Size:
 * 12x", "Steps: 2.5"; the message names the setting and quotes the value),
 * KILN_ERR_INVALID (a NULL argument, a text over PARAMETERS_MAX_BYTES),
 * KILN_ERR_NOMEM; *out is untouched on failure. Thread-safe. */
kiln_status parameters_parse(const char *text, parsed_parameters *out);

/* Frees what parameters_parse put in p and zeroes it; a zeroed struct is a
 * no-op. */
void parsed_parameters_free(parsed_parameters *p);

/* The first 10 hex digits of the file's SHA-256 (AUTOMATIC1111's "Model
 * hash") into out[11]. Errors: KILN_ERR_IO naming the file. */
kiln_status parameters_model_hash(const char *path, char out[11]);

/* parameters_model_hash, remembered in kiln's cache folder
 * (core/cache_dir.h: model-hashes.json) by the file's real path, size and
 * modification time, so a checkpoint of gigabytes is read through once,
 * not on every run (SHA-256 of a 2.1 GB file: 2.4 s with OpenSSL here).
 * A cache that cannot be read or written only costs the hashing. */
kiln_status parameters_model_hash_cached(const char *path, char out[11]);

#endif
