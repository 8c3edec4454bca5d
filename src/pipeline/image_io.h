/*
 * image_io.h - PNG files in and out, through libpng.
 *
 * Writing is atomic: the image goes to a temporary file in the same
 * directory, is flushed, and is then linked into place, so a reader never
 * sees half a PNG and an existing file is never replaced unless the caller
 * says so.
 */
#ifndef KILN_PIPELINE_IMAGE_IO_H
#define KILN_PIPELINE_IMAGE_IO_H

#include <stddef.h>
#include <stdint.h>

#include "kiln.h"

typedef struct png_text_entry {
    const char *key;   /* Latin-1 keyword, 1-79 bytes, e.g. "parameters" */
    const char *value; /* UTF-8 (written as an iTXt chunk) */
} png_text_entry;

/* Writes rgb (width * height * 3 bytes, rows top to bottom) to path.
 * overwrite = 0: fails with KILN_ERR_IO if path exists. Errors name the
 * path and the system's reason (missing or read-only directory, full disk);
 * no partial file is left behind. */
kiln_status png_write_rgb(const char *path, const uint8_t *rgb, int width, int height, const png_text_entry *text,
                          size_t n_text, int overwrite);

/* Reads any PNG (gray, palette, alpha, 16-bit: all reduced to 8-bit RGB,
 * alpha composited over black) into a malloc'd buffer the caller frees.
 * Images with more than max_pixels pixels are refused before decoding.
 * Errors: KILN_ERR_IO, KILN_ERR_FORMAT (naming the file and libpng's
 * reason), KILN_ERR_INVALID (too large), KILN_ERR_NOMEM. */
kiln_status png_read_rgb(const char *path, int64_t max_pixels, uint8_t **rgb, int *width, int *height);

/* The same from memory (for images that arrive in a request). what names
 * the source in messages. */
kiln_status png_decode_rgb(const uint8_t *data, size_t size, const char *what, int64_t max_pixels, uint8_t **rgb,
                           int *width, int *height);

/* Encodes to a malloc'd PNG in memory. */
kiln_status png_encode_rgb(const uint8_t *rgb, int width, int height, const png_text_entry *text, size_t n_text,
                           uint8_t **png, size_t *size);

#endif
