#include "parity_support.h"

#include <math.h>
#include <stdlib.h>
#include <string.h>

#include "test_support.h"

int golden_open(golden *gd, const char *file, const char *prefix)
{
    memset(gd, 0, sizeof *gd);
    char name[256];
    snprintf(name, sizeof name, "golden/%s", file);
    gd->path = test_data_path(name);
    kiln_weights *w;
    if (kiln_weights_open(gd->path, &w) != KILN_OK) {
        CHECK(0, "cannot open golden file: %s (regenerate with tools/sd_reference.py)", kiln_last_error());
        return -1;
    }
    if (wstore_create(&gd->ws) != KILN_OK || wstore_add_file(gd->ws, w, NULL) != KILN_OK ||
        graph_create(&gd->g) != KILN_OK) {
        CHECK(0, "setting up %s: %s", file, kiln_last_error());
        return -1;
    }
    gd->b = (model_build){.g = gd->g, .ws = gd->ws, .prefix = prefix};
    return 0;
}

void golden_close(golden *gd)
{
    graph_destroy(gd->g);
    wstore_destroy(gd->ws);
    free(gd->path);
    memset(gd, 0, sizeof *gd);
}

int golden_has(golden *gd, const char *name)
{
    return wstore_find(gd->ws, name) != NULL;
}

float *golden_read(golden *gd, const char *name, int64_t *shape, int *ndim)
{
    const kiln_tensor_desc *d = wstore_find(gd->ws, name);
    if (!d) {
        CHECK(0, "%s: golden tensor '%s' missing", gd->path, name);
        return NULL;
    }
    size_t n = 1;
    for (int i = 0; i < d->ndim; i++) {
        n *= (size_t)d->shape[i];
        if (shape)
            shape[i] = d->shape[i];
    }
    if (ndim)
        *ndim = d->ndim;
    float *data = malloc((n ? n : 1) * sizeof *data);
    /* the golden file is the store's only file: read through the public API */
    kiln_weights *w;
    if (!data || kiln_weights_open(gd->path, &w) != KILN_OK) {
        free(data);
        CHECK(0, "reading '%s': %s", name, kiln_last_error());
        return NULL;
    }
    kiln_status st = kiln_weights_read_f32(w, kiln_weights_find(w, name), data, n);
    kiln_weights_destroy(w);
    if (st != KILN_OK) {
        free(data);
        CHECK(0, "reading '%s': %s", name, kiln_last_error());
        return NULL;
    }
    return data;
}

float *nchw_to_nhwc(const float *x, const int64_t *s)
{
    int64_t n = s[0], c = s[1], h = s[2], w = s[3];
    float *y = malloc((size_t)(n * c * h * w) * sizeof *y);
    for (int64_t b = 0; b < n; b++)
        for (int64_t ch = 0; ch < c; ch++)
            for (int64_t i = 0; i < h * w; i++)
                y[(b * h * w + i) * c + ch] = x[(b * c + ch) * h * w + i];
    return y;
}

float *nhwc_to_nchw(const float *x, const int64_t *s)
{
    int64_t n = s[0], c = s[1], h = s[2], w = s[3];
    float *y = malloc((size_t)(n * c * h * w) * sizeof *y);
    for (int64_t b = 0; b < n; b++)
        for (int64_t ch = 0; ch < c; ch++)
            for (int64_t i = 0; i < h * w; i++)
                y[(b * c + ch) * h * w + i] = x[(b * h * w + i) * c + ch];
    return y;
}

graph_id golden_input(golden *gd, const char *name, float **data)
{
    int64_t shape[8];
    int ndim;
    float *x = golden_read(gd, name, shape, &ndim);
    if (!x)
        return GRAPH_NONE;
    if (ndim == 4) {
        *data = nchw_to_nhwc(x, shape);
        free(x);
        int64_t nhwc[4] = {shape[0], shape[2], shape[3], shape[1]};
        return graph_input(gd->g, name, TENSOR_LAYOUT_NHWC, 4, nhwc);
    }
    *data = x;
    return graph_input(gd->g, name, TENSOR_LAYOUT_PLAIN, ndim, shape);
}

static void on_trace(void *ctx, const char *module, graph_id id)
{
    golden *gd = ctx;
    if (gd->n_traces == (int)(sizeof gd->traces / sizeof gd->traces[0]))
        return;
    golden_trace *t = &gd->traces[gd->n_traces++];
    snprintf(t->module, sizeof t->module, "%s", module);
    t->id = id;
    graph_mark_output(gd->g, id);
}

void golden_trace_all(golden *gd)
{
    gd->b.trace = on_trace;
    gd->b.trace_ctx = gd;
}

double golden_compare(golden *gd, const char *name, const float *got, double tol)
{
    int64_t shape[8];
    int ndim;
    float *want = golden_read(gd, name, shape, &ndim);
    if (!want || !got) {
        free(want);
        CHECK(got != NULL, "%s: no output to compare", name);
        return INFINITY;
    }
    size_t n = 1;
    for (int i = 0; i < ndim; i++)
        n *= (size_t)shape[i];
    float *ours = ndim == 4 ? nhwc_to_nchw(got, shape) : (float *)got;
    double max_want = 0, max_err = 0;
    size_t worst = 0;
    for (size_t i = 0; i < n; i++) {
        double a = fabs((double)want[i]);
        if (a > max_want)
            max_want = a;
        double e = fabs((double)ours[i] - (double)want[i]);
        if (!(e <= max_err)) { /* catches NaN too */
            max_err = isnan(e) ? INFINITY : e;
            worst = i;
        }
    }
    double rel = max_want > 0 ? max_err / max_want : max_err;
    printf("    %-48s max rel err %.2e (max |ref| %.3g)\n", name, rel, max_want);
    CHECK(rel <= tol, "%s: max |kiln - golden| / max |golden| = %.3e > %.1e; worst at flat NCHW index %zu: expected %.7g, got %.7g",
          name, rel, tol, worst, (double)want[worst], (double)ours[worst]);
    if (ours != got)
        free(ours);
    free(want);
    return rel;
}

kiln_status golden_run(golden *gd, graph_exec **exec, double trace_tol)
{
    tpool *pool = NULL;
    kiln_status st = tpool_create(2, &pool);
    if (st == KILN_OK)
        st = graph_exec_run(*exec, pool);
    tpool_destroy(pool);
    CHECK(st == KILN_OK, "run failed: %s", kiln_last_error());
    if (st != KILN_OK)
        return st;
    for (int i = 0; i < gd->n_traces; i++) {
        char name[160];
        snprintf(name, sizeof name, "golden.trace.%s", gd->traces[i].module);
        if (golden_has(gd, name))
            golden_compare(gd, name, graph_exec_output(*exec, gd->traces[i].id), trace_tol);
    }
    return KILN_OK;
}
