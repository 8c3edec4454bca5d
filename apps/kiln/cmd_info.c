/*
 * cmd_info.c - `kiln info FILE [--json] [--summary]`: what a weight file holds.
 */
#include <errno.h>
#include <jansson.h>
#include <stdio.h>
#include <string.h>

#include "cli.h"
#include "kiln.h"
#include "models/sd_model.h"

typedef struct dtype_totals {
    uint64_t tensors[KILN_DTYPE_COUNT];
    uint64_t bytes[KILN_DTYPE_COUNT];
    uint64_t parameters;
} dtype_totals;

static uint64_t element_count(const kiln_tensor_desc *t)
{
    return t->nbytes / kiln_dtype_size(t->dtype);
}

static void add_up(const kiln_weights *w, dtype_totals *totals)
{
    memset(totals, 0, sizeof *totals);
    for (size_t i = 0; i < kiln_weights_count(w); i++) {
        const kiln_tensor_desc *t = kiln_weights_tensor(w, i);
        totals->tensors[t->dtype]++;
        totals->bytes[t->dtype] += t->nbytes;
        totals->parameters += element_count(t);
    }
}

/* 1234567 -> "1,234,567" */
static const char *grouped(uint64_t n, char *buf, size_t size)
{
    char digits[32];
    int len = snprintf(digits, sizeof digits, "%llu", (unsigned long long)n);
    size_t out = 0;
    for (int i = 0; i < len && out + 2 < size; i++) {
        if (i > 0 && (len - i) % 3 == 0)
            buf[out++] = ',';
        buf[out++] = digits[i];
    }
    buf[out] = '\0';
    return buf;
}

static void format_shape(const kiln_tensor_desc *t, char *buf, size_t size)
{
    size_t used = (size_t)snprintf(buf, size, "[");
    for (int d = 0; d < t->ndim && used < size; d++)
        used += (size_t)snprintf(buf + used, size - used, d ? ", %lld" : "%lld", (long long)t->shape[d]);
    if (used < size)
        snprintf(buf + used, size - used, "]");
}

/* What the tensors say about the architecture: each SD component found,
 * with the sizes kiln reads from the shapes. */
typedef struct architecture {
    int has_unet, has_vae, has_text;
    unet_config unet;
    vae_config vae;
    clip_text_config text;
} architecture;

static void detect_architecture(const char *path, architecture *a)
{
    memset(a, 0, sizeof *a);
    weight_store *ws;
    kiln_weights *w;
    if (wstore_create(&ws) != KILN_OK)
        return;
    if (kiln_weights_open(path, &w) != KILN_OK || wstore_add_file(ws, w, NULL) != KILN_OK) {
        wstore_destroy(ws);
        return;
    }
    model_build b = {.ws = ws, .prefix = SD_UNET_PREFIX};
    a->has_unet = unet_config_read(&b, &a->unet) == KILN_OK;
    b.prefix = SD_VAE_PREFIX;
    a->has_vae = vae_config_read(&b, &a->vae) == KILN_OK;
    b.prefix = SD_CLIP_PREFIX;
    a->has_text = clip_text_config_read(&b, &a->text) == KILN_OK;
    wstore_destroy(ws);
}

static void print_architecture(const architecture *a)
{
    if (!a->has_unet && !a->has_vae && !a->has_text)
        return;
    printf("architecture\n");
    if (a->has_unet) {
        const unet_config *u = &a->unet;
        printf("  unet      SD %s: %d channels, mult", u->linear_proj ? "2.x" : "1.x", u->model_channels);
        for (int l = 0; l < u->levels; l++)
            printf("%s%d", l ? "," : " ", u->channel_mult[l]);
        printf(", %d blocks/level, attention at levels", u->num_res_blocks);
        for (int l = 0; l < u->levels; l++)
            if (u->attention[l])
                printf(" %d", l);
        printf(", context %d, ", u->context_dim);
        if (u->num_heads)
            printf("%d heads\n", u->num_heads);
        else
            printf("%d-channel heads\n", u->head_dim);
    }
    if (a->has_vae)
        printf("  vae       %d channels, %d levels (factor %d), %d blocks/level, %d latent channels%s%s\n",
               a->vae.channels, a->vae.levels, vae_factor(&a->vae), a->vae.num_res_blocks, a->vae.z_channels,
               a->vae.has_encoder ? ", encoder" : "", a->vae.has_decoder ? ", decoder" : "");
    if (a->has_text)
        printf("  text      CLIP: width %d, %d layers, %d heads, %d tokens, %d positions\n", a->text.width,
               a->text.layers, a->text.heads, a->text.vocab, a->text.positions);
}

static json_t *architecture_json(const architecture *a)
{
    json_t *root = json_object();
    if (a->has_unet) {
        json_t *mult = json_array(), *attention = json_array();
        for (int l = 0; l < a->unet.levels; l++) {
            json_array_append_new(mult, json_integer(a->unet.channel_mult[l]));
            json_array_append_new(attention, json_boolean(a->unet.attention[l]));
        }
        json_object_set_new(root, "unet",
                            json_pack("{s:i, s:o, s:i, s:o, s:i, s:i, s:i, s:i, s:b}", "model_channels",
                                      a->unet.model_channels, "channel_mult", mult, "num_res_blocks",
                                      a->unet.num_res_blocks, "attention", attention, "transformer_depth",
                                      a->unet.transformer_depth, "context_dim", a->unet.context_dim, "num_heads",
                                      a->unet.num_heads, "head_dim", a->unet.head_dim, "linear_proj",
                                      a->unet.linear_proj));
    }
    if (a->has_vae)
        json_object_set_new(root, "vae",
                            json_pack("{s:i, s:i, s:i, s:i, s:i}", "channels", a->vae.channels, "levels", a->vae.levels,
                                      "factor", vae_factor(&a->vae), "num_res_blocks", a->vae.num_res_blocks,
                                      "z_channels", a->vae.z_channels));
    if (a->has_text)
        json_object_set_new(root, "text_encoder",
                            json_pack("{s:i, s:i, s:i, s:i, s:i}", "width", a->text.width, "layers", a->text.layers,
                                      "heads", a->text.heads, "vocab", a->text.vocab, "positions", a->text.positions));
    return root;
}

static void print_text(const kiln_weights *w, int list_tensors, const architecture *arch)
{
    dtype_totals totals;
    add_up(w, &totals);
    char a[32], b[32];
    uint64_t size = kiln_weights_file_size(w);
    uint64_t data = 0;
    for (int d = 0; d < KILN_DTYPE_COUNT; d++)
        data += totals.bytes[d];

    printf("file        %s\n", kiln_weights_path(w));
    printf("size        %s bytes (header %s bytes)\n", grouped(size, a, sizeof a), grouped(size - data - 8, b, sizeof b));
    printf("tensors     %zu\n", kiln_weights_count(w));
    printf("parameters  %s\n", grouped(totals.parameters, a, sizeof a));
    for (int d = 0; d < KILN_DTYPE_COUNT; d++)
        if (totals.tensors[d])
            printf("  %-8s  %llu tensor%s, %s bytes\n", kiln_dtype_name((kiln_dtype)d),
                   (unsigned long long)totals.tensors[d], totals.tensors[d] == 1 ? "" : "s",
                   grouped(totals.bytes[d], a, sizeof a));
    size_t nmeta = kiln_weights_metadata_count(w);
    fputs(nmeta ? "metadata\n" : "metadata    (none)\n", stdout);
    for (size_t i = 0; i < nmeta; i++) {
        const char *key, *value;
        kiln_weights_metadata(w, i, &key, &value);
        printf("  %s = %s\n", key, value);
    }
    print_architecture(arch);
    if (!list_tensors)
        return;

    size_t name_width = 4;
    for (size_t i = 0; i < kiln_weights_count(w); i++) {
        size_t len = strlen(kiln_weights_tensor(w, i)->name);
        if (len > name_width)
            name_width = len;
    }
    printf("\n%-*s  %-7s  %s\n", (int)name_width, "NAME", "DTYPE", "SHAPE");
    for (size_t i = 0; i < kiln_weights_count(w); i++) {
        const kiln_tensor_desc *t = kiln_weights_tensor(w, i);
        char shape[160];
        format_shape(t, shape, sizeof shape);
        printf("%-*s  %-7s  %s\n", (int)name_width, t->name, kiln_dtype_name(t->dtype), shape);
    }
}

static json_t *to_json(const kiln_weights *w, int list_tensors)
{
    dtype_totals totals;
    add_up(w, &totals);
    json_t *root = json_object();
    json_object_set_new(root, "file", json_string(kiln_weights_path(w)));
    json_object_set_new(root, "size", json_integer((json_int_t)kiln_weights_file_size(w)));
    json_object_set_new(root, "tensor_count", json_integer((json_int_t)kiln_weights_count(w)));
    json_object_set_new(root, "parameters", json_integer((json_int_t)totals.parameters));

    json_t *by_dtype = json_object();
    for (int d = 0; d < KILN_DTYPE_COUNT; d++)
        if (totals.tensors[d])
            json_object_set_new(by_dtype, kiln_dtype_name((kiln_dtype)d),
                                json_pack("{s:I, s:I}", "tensors", (json_int_t)totals.tensors[d], "bytes",
                                          (json_int_t)totals.bytes[d]));
    json_object_set_new(root, "dtypes", by_dtype);

    json_t *meta = json_object();
    for (size_t i = 0; i < kiln_weights_metadata_count(w); i++) {
        const char *key, *value;
        kiln_weights_metadata(w, i, &key, &value);
        json_object_set_new(meta, key, json_string(value));
    }
    json_object_set_new(root, "metadata", meta);

    if (list_tensors) {
        json_t *tensors = json_array();
        for (size_t i = 0; i < kiln_weights_count(w); i++) {
            const kiln_tensor_desc *t = kiln_weights_tensor(w, i);
            json_t *shape = json_array();
            for (int d = 0; d < t->ndim; d++)
                json_array_append_new(shape, json_integer(t->shape[d]));
            json_array_append_new(tensors, json_pack("{s:s, s:s, s:o, s:I, s:I}", "name", t->name, "dtype",
                                                     kiln_dtype_name(t->dtype), "shape", shape, "offset",
                                                     (json_int_t)t->offset, "bytes", (json_int_t)t->nbytes));
        }
        json_object_set_new(root, "tensors", tensors);
    }
    return root;
}

static void info_usage(FILE *out)
{
    fprintf(out, "usage: kiln info FILE [--json] [--summary]\n"
                 "  --json     print the figures as JSON\n"
                 "  --summary  totals and metadata only, no tensor list\n");
}

int cmd_info(int argc, char **argv)
{
    const char *path = NULL;
    int as_json = 0, list_tensors = 1;
    for (int i = 1; i < argc; i++) {
        if (strcmp(argv[i], "--json") == 0)
            as_json = 1;
        else if (strcmp(argv[i], "--summary") == 0)
            list_tensors = 0;
        else if (strcmp(argv[i], "--help") == 0 || strcmp(argv[i], "-h") == 0) {
            info_usage(stdout);
            return CLI_OK;
        } else if (argv[i][0] == '-' && argv[i][1] != '\0') {
            fprintf(stderr, "kiln info: unknown option '%s'\n", argv[i]);
            info_usage(stderr);
            return CLI_USAGE;
        } else if (!path)
            path = argv[i];
        else {
            fprintf(stderr, "kiln info: one file at a time ('%s' and '%s' given)\n", path, argv[i]);
            return CLI_USAGE;
        }
    }
    if (!path) {
        info_usage(stderr);
        return CLI_USAGE;
    }

    kiln_weights *w;
    if (kiln_weights_open(path, &w) != KILN_OK)
        return cli_fail("info");
    architecture arch;
    detect_architecture(path, &arch);
    if (as_json) {
        json_t *root = to_json(w, list_tensors);
        json_object_set_new(root, "architecture", architecture_json(&arch));
        json_dumpf(root, stdout, JSON_INDENT(2));
        putchar('\n');
        json_decref(root);
    } else {
        print_text(w, list_tensors, &arch);
    }
    kiln_weights_destroy(w);
    /* a full disk or a closed pipe must not pass for a listing */
    if (fflush(stdout) != 0 || ferror(stdout)) {
        fprintf(stderr, "kiln: info: %s: cannot write to stdout: %s\n", path, strerror(errno));
        return CLI_FAILED;
    }
    return CLI_OK;
}
