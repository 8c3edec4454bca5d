/*
 * cli_debug.c - debug mode's report (kiln_debug_report) as JSON and as
 * lines, shared by `kiln generate --debug` and `kiln serve`.
 *
 * JSON has no infinity: an infinite PSNR (identical images) or latent
 * error is written as the string "inf", and a non-finite value found in a
 * node as "nan", "inf" or "-inf". Numbers not measured are null.
 */
#include <math.h>
#include <stdio.h>
#include <string.h>

#include "cli.h"

static json_t *number_or_inf(double v)
{
    if (isnan(v))
        return json_string("nan");
    if (isinf(v))
        return json_string(v > 0 ? "inf" : "-inf");
    return json_real(v);
}

json_t *cli_debug_json(const kiln_debug_report *d)
{
    json_t *o = json_object();
    const kiln_nonfinite *nf = &d->nonfinite;
    if (nf->found) {
        json_t *shape = json_array();
        for (int i = 0; i < nf->ndim && i < 4; i++)
            json_array_append_new(shape, json_integer((json_int_t)nf->shape[i]));
        json_t *n = json_pack("{s:s, s:s, s:s, s:o, s:i, s:i, s:I, s:I}", "node", nf->node, "op", nf->op, "graph",
                              nf->graph, "shape", shape, "step", nf->step, "image", nf->image, "count",
                              (json_int_t)nf->count, "first_index", (json_int_t)nf->first_index);
        json_object_set_new(n, "first_value", number_or_inf(nf->first_value));
        json_object_set_new(o, "nonfinite", n);
    } else {
        json_object_set_new(o, "nonfinite", json_null());
    }
    json_object_set_new(o, "check_s", json_real(d->check_s));
    json_object_set_new(o, "validated", json_boolean(d->validated));
    json_object_set_new(o, "reference", json_string(d->reference));
    if (d->validated) {
        json_t *psnr = json_array();
        for (int i = 0; i < d->images && i < KILN_MAX_IMAGES; i++)
            json_array_append_new(psnr, number_or_inf(d->psnr_db[i]));
        json_object_set_new(o, "psnr_db", psnr);
        json_object_set_new(o, "psnr_min_db", number_or_inf(d->psnr_min_db));
        json_object_set_new(o, "psnr_mean_db", number_or_inf(d->psnr_mean_db));
        json_object_set_new(o, "latent_max_error", number_or_inf(d->latent_max_error));
        json_object_set_new(o, "latent_max_abs", number_or_inf(d->latent_max_abs));
    } else {
        json_object_set_new(o, "psnr_db", json_null());
        json_object_set_new(o, "psnr_min_db", json_null());
        json_object_set_new(o, "psnr_mean_db", json_null());
        json_object_set_new(o, "latent_max_error", json_null());
        json_object_set_new(o, "latent_max_abs", json_null());
    }
    json_object_set_new(o, "reference_s", json_real(d->reference_s));
    return o;
}

static void format_db(char *buf, size_t size, double v)
{
    if (isinf(v))
        snprintf(buf, size, "inf (identical)");
    else
        snprintf(buf, size, "%.2f dB", v);
}

void cli_debug_print(FILE *out, const kiln_debug_report *d)
{
    const kiln_nonfinite *nf = &d->nonfinite;
    if (nf->found) {
        char shape[96] = "";
        size_t len = 0;
        for (int i = 0; i < nf->ndim && i < 4 && len < sizeof shape; i++)
            len += (size_t)snprintf(shape + len, sizeof shape - len, "%s%lld", i ? ", " : "", (long long)nf->shape[i]);
        fprintf(out, "debug: first NaN/Inf: node '%s' (%s, [%s]) in the %s", nf->node, nf->op, shape, nf->graph);
        if (nf->step >= 0)
            fprintf(out, ", step %d", nf->step);
        if (nf->image >= 0)
            fprintf(out, ", image %d", nf->image);
        fprintf(out, ": %lld non-finite value%s, the first %s at index %lld\n", (long long)nf->count,
                nf->count == 1 ? "" : "s", isnan(nf->first_value) ? "NaN" : nf->first_value > 0 ? "+Inf" : "-Inf",
                (long long)nf->first_index);
    } else {
        fprintf(out, "debug: first NaN/Inf: none (every node's output finite)\n");
    }
    fprintf(out, "debug: the NaN/Inf check took %.3fs of the run\n", d->check_s);
    if (!d->validated) {
        fprintf(out, "debug: validation %s\n", d->reference);
        return;
    }
    char min[32], mean[32];
    format_db(min, sizeof min, d->psnr_min_db);
    format_db(mean, sizeof mean, d->psnr_mean_db);
    fprintf(out, "debug: against the %s (%.2fs):\n", d->reference, d->reference_s);
    fprintf(out, "debug:   PSNR min %s, mean %s over %d image%s; max latent error %.3g (latents up to %.3g)\n", min,
            mean, d->images, d->images == 1 ? "" : "s", d->latent_max_error, d->latent_max_abs);
}
