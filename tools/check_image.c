/*
 * check_image.c - says what a picture of the shapes data set shows:
 *
 *   check_image FILE.png [--expect "a small red circle on a blue background, top left"] [--json]
 *
 * Prints the verdict (shape, colour, background, position, size, the
 * confidences and the measurements behind them), as text or as one JSON
 * object. Exit status: 0 when the picture matches the expectation (always,
 * without --expect), 1 when it does not, 2 on bad arguments or a file that
 * cannot be read.
 */
#include <jansson.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "image_checker.h"

static void usage(void)
{
    fprintf(stderr, "usage: check_image FILE.png [--expect CAPTION] [--json]\n");
}

static json_t *verdict_json(const char *path, const image_verdict *v, const image_expectation *e, int have_expect,
                            int matches, unsigned mismatched)
{
    json_t *o = json_object();
    json_object_set_new(o, "file", json_string(path));
    json_object_set_new(o, "found", json_boolean(v->found));
    json_t *conf = json_object();
    for (int a = 0; a < IMAGE_ATTR_COUNT; a++) {
        json_object_set_new(o, image_attr_name((image_attr)a), json_string(image_verdict_value(v, (image_attr)a)));
        json_object_set_new(conf, image_attr_name((image_attr)a), json_real(v->attr_confidence[a]));
    }
    json_object_set_new(o, "confidence", json_real(v->confidence));
    json_object_set_new(o, "attribute_confidence", conf);

    json_t *m = json_object();
    json_object_set_new(m, "area", json_integer(v->area));
    json_object_set_new(m, "bbox", json_pack("[iiii]", v->bbox_x0, v->bbox_y0, v->bbox_x1, v->bbox_y1));
    json_object_set_new(m, "centroid", json_pack("[ff]", v->centroid_x, v->centroid_y));
    json_object_set_new(m, "fill_ratio", json_real(v->fill_ratio));
    json_object_set_new(m, "aspect", json_real(v->aspect));
    json_object_set_new(m, "corner_fill", json_real(v->corner_fill));
    json_object_set_new(m, "top_bottom_width", json_real(v->top_bottom_width));
    json_t *scores = json_object();
    static const char *const shapes[IMAGE_SHAPE_COUNT] = {"circle", "square", "triangle", "cross"};
    for (int s = 0; s < IMAGE_SHAPE_COUNT; s++)
        json_object_set_new(scores, shapes[s], json_real(v->shape_scores[s]));
    json_object_set_new(m, "shape_scores", scores);
    json_object_set_new(m, "fit", json_pack("{s:f,s:f,s:f}", "x", v->fit_x, "y", v->fit_y, "size", v->fit_size));
    json_object_set_new(m, "colour_rgb", json_pack("[fff]", v->colour_rgb[0], v->colour_rgb[1], v->colour_rgb[2]));
    json_object_set_new(m, "background_rgb",
                        json_pack("[fff]", v->background_rgb[0], v->background_rgb[1], v->background_rgb[2]));
    json_object_set_new(m, "contrast", json_real(v->contrast));
    json_object_set_new(m, "noise", json_real(v->noise));
    json_object_set_new(m, "edge_softness", json_real(v->edge_softness));
    json_object_set_new(m, "edge_blur", json_real(v->edge_blur));
    json_object_set_new(o, "measured", m);

    if (have_expect) {
        json_t *x = json_object();
        json_t *bad = json_array();
        for (int a = 0; a < IMAGE_ATTR_COUNT; a++) {
            json_object_set_new(x, image_attr_name((image_attr)a), json_string(image_expectation_value(e, (image_attr)a)));
            if (mismatched & (1u << a))
                json_array_append_new(bad, json_string(image_attr_name((image_attr)a)));
        }
        json_object_set_new(o, "expected", x);
        json_object_set_new(o, "matches", json_boolean(matches));
        json_object_set_new(o, "mismatched", bad);
    }
    return o;
}

static void print_text(const char *path, const image_verdict *v, const image_expectation *e, int have_expect,
                       int matches, unsigned mismatched)
{
    printf("%s\n", path);
    if (v->found)
        printf("  a %s %s %s on a %s background, %s\n", v->size, v->colour, v->shape, v->background, v->position);
    else
        printf("  no foreground; a %s background\n", v->background);
    printf("  confidence %.2f (", v->confidence);
    for (int a = 0; a < IMAGE_ATTR_COUNT; a++)
        printf("%s%s %.2f", a ? ", " : "", image_attr_name((image_attr)a), v->attr_confidence[a]);
    printf(")\n");
    if (v->found) {
        printf("  region %d px, box [%d,%d)x[%d,%d), centroid (%.1f, %.1f), fill %.3f, aspect %.2f\n", v->area,
               v->bbox_x0, v->bbox_x1, v->bbox_y0, v->bbox_y1, v->centroid_x, v->centroid_y, v->fill_ratio, v->aspect);
        printf("  corners %.2f, top/bottom width %.2f; fits circle %.3f square %.3f triangle %.3f cross %.3f\n",
               v->corner_fill, v->top_bottom_width, v->shape_scores[0], v->shape_scores[1], v->shape_scores[2],
               v->shape_scores[3]);
        printf("  fitted at (%.1f, %.1f), %.1f px; colour (%.0f, %.0f, %.0f)", v->fit_x, v->fit_y, v->fit_size,
               v->colour_rgb[0], v->colour_rgb[1], v->colour_rgb[2]);
    } else {
        printf(" ");
    }
    printf(" background (%.0f, %.0f, %.0f), noise %.1f\n", v->background_rgb[0], v->background_rgb[1],
           v->background_rgb[2], v->noise);
    if (v->found)
        printf("  edges: %.3f of the colour 2 px out, as from a blur of %.2f px\n", v->edge_softness, v->edge_blur);
    if (have_expect) {
        printf("  expected:");
        for (int a = 0; a < IMAGE_ATTR_COUNT; a++) {
            const char *want = image_expectation_value(e, (image_attr)a);
            printf(" %s=%s%s", image_attr_name((image_attr)a), want[0] ? want : "any",
                   mismatched & (1u << a) ? " (MISMATCH)" : "");
        }
        printf("\n  %s\n", matches ? "matches" : "does not match");
    }
}

int main(int argc, char **argv)
{
    const char *path = NULL, *caption = NULL;
    int json = 0;
    for (int i = 1; i < argc; i++) {
        if (!strcmp(argv[i], "--expect") && i + 1 < argc)
            caption = argv[++i];
        else if (!strcmp(argv[i], "--json"))
            json = 1;
        else if (argv[i][0] != '-' && !path)
            path = argv[i];
        else {
            usage();
            return 2;
        }
    }
    if (!path) {
        usage();
        return 2;
    }
    image_expectation e;
    memset(&e, 0, sizeof e);
    if (caption && image_parse_caption(caption, &e) < 0) {
        fprintf(stderr, "check_image: the caption '%s' contradicts itself\n", caption);
        return 2;
    }

    uint8_t *rgb = NULL;
    int width = 0, height = 0;
    if (kiln_image_read_png(path, &rgb, &width, &height) != KILN_OK) {
        fprintf(stderr, "check_image: %s\n", kiln_last_error());
        return 2;
    }
    image_verdict v;
    kiln_status st = image_check(rgb, width, height, &v);
    free(rgb);
    if (st != KILN_OK) {
        fprintf(stderr, "check_image: %s: %s\n", path, kiln_last_error());
        return 2;
    }
    unsigned mismatched = 0;
    int matches = image_verdict_matches(&v, &e, &mismatched);
    if (json) {
        json_t *o = verdict_json(path, &v, &e, caption != NULL, matches, mismatched);
        char *text = json_dumps(o, JSON_INDENT(2) | JSON_PRESERVE_ORDER | JSON_REAL_PRECISION(5));
        json_decref(o);
        if (!text) {
            fprintf(stderr, "check_image: out of memory\n");
            return 2;
        }
        printf("%s\n", text);
        free(text);
    } else {
        print_text(path, &v, &e, caption != NULL, matches, mismatched);
    }
    return matches ? 0 : 1;
}
