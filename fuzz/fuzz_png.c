/*
 * fuzz_png.c - png_decode_rgb, the reader of img2img's init images, on any
 * bytes.
 *
 * A decode must fail with a message naming the source and leave the
 * out-parameters alone, or give width * height * 3 bytes (every one read
 * here, so ASan checks the allocation) within the pixel limit. A small
 * decoded image is encoded again and decoded back: the pixels must survive.
 *
 * Nearly every mutation breaks a chunk's CRC, and libpng stops at the
 * first bad one; so an input that fails is tried again with its CRCs
 * recomputed, which lets mutations reach libpng's chunk parsing.
 *
 * The limit here is 512 x 512 pixels rather than KILN_MAX_INIT_PIXELS: the
 * check is the same code, and a fuzzer spends its time on 50 MB images
 * otherwise. libpng and zlib are Debian's, not instrumented: the fuzzer
 * steers by kiln's code and ASan catches misuse of what kiln allocates.
 */
#include <stdlib.h>
#include <string.h>

#include "fuzz.h"
#include "pipeline/image_io.h"

#define FUZZ_PNG_MAX_PIXELS (512 * 512)
#define FUZZ_PNG_ROUND_TRIP_PIXELS 4096

static volatile unsigned pixel_sum; /* keeps the reads of every byte */

static uint32_t crc32_png(const uint8_t *p, size_t n)
{
    static uint32_t table[256];
    if (!table[1])
        for (uint32_t i = 0; i < 256; i++) {
            uint32_t c = i;
            for (int k = 0; k < 8; k++)
                c = c & 1 ? 0xEDB88320u ^ (c >> 1) : c >> 1;
            table[i] = c;
        }
    uint32_t c = 0xFFFFFFFFu;
    for (size_t i = 0; i < n; i++)
        c = table[(c ^ p[i]) & 0xFF] ^ (c >> 8);
    return c ^ 0xFFFFFFFFu;
}

/* A copy of the PNG with each whole chunk's CRC recomputed, or NULL when
 * none changed. */
static uint8_t *fix_crcs(const uint8_t *data, size_t size)
{
    uint8_t *copy = NULL;
    for (size_t pos = 8; size - pos >= 12;) {
        uint32_t len = (uint32_t)data[pos] << 24 | (uint32_t)data[pos + 1] << 16 | (uint32_t)data[pos + 2] << 8 |
                       data[pos + 3];
        if (len > size - pos - 12)
            break;
        uint32_t crc = crc32_png(data + pos + 4, 4 + (size_t)len);
        uint8_t want[4] = {(uint8_t)(crc >> 24), (uint8_t)(crc >> 16), (uint8_t)(crc >> 8), (uint8_t)crc};
        size_t at = pos + 8 + len;
        if (memcmp(data + at, want, 4) != 0) {
            if (!copy) {
                copy = malloc(size);
                FUZZ_CHECK(copy != NULL, "out of memory");
                memcpy(copy, data, size);
            }
            memcpy(copy + at, want, 4);
        }
        pos += 12 + (size_t)len;
    }
    return copy;
}

/* Decodes and checks; returns 0 when the input decoded. */
static int decode_one(const uint8_t *data, size_t size)
{
    uint8_t sentinel = 0, *rgb = &sentinel;
    int width = -1, height = -1;
    kiln_status st = png_decode_rgb(data, size, "input.png", FUZZ_PNG_MAX_PIXELS, &rgb, &width, &height);
    if (st != KILN_OK) {
        const char *msg = kiln_last_error();
        FUZZ_CHECK(st == KILN_ERR_FORMAT || st == KILN_ERR_INVALID, "status %d (%s)", st, msg);
        FUZZ_CHECK(strncmp(msg, "input.png: ", 11) == 0, "message '%s' does not name the source", msg);
        FUZZ_CHECK(rgb == &sentinel && width == -1 && height == -1, "out-parameters written on failure");
        return -1;
    }
    FUZZ_CHECK(width >= 1 && height >= 1 && (int64_t)width * height <= FUZZ_PNG_MAX_PIXELS,
               "decoded %dx%d, limit %d pixels", width, height, FUZZ_PNG_MAX_PIXELS);
    size_t n = (size_t)width * (size_t)height * 3;
    unsigned sum = 0;
    for (size_t i = 0; i < n; i++)
        sum += rgb[i];
    pixel_sum = sum;

    if ((size_t)width * (size_t)height <= FUZZ_PNG_ROUND_TRIP_PIXELS) {
        uint8_t *png = NULL, *back = NULL;
        size_t png_size = 0;
        int w2 = 0, h2 = 0;
        st = png_encode_rgb(rgb, width, height, NULL, 0, &png, &png_size);
        FUZZ_CHECK(st == KILN_OK, "encoding %dx%d: %s", width, height, kiln_last_error());
        st = png_decode_rgb(png, png_size, "round trip", FUZZ_PNG_MAX_PIXELS, &back, &w2, &h2);
        FUZZ_CHECK(st == KILN_OK, "decoding what was encoded: %s", kiln_last_error());
        FUZZ_CHECK(w2 == width && h2 == height && memcmp(back, rgb, n) == 0,
                   "round trip of %dx%d gives %dx%d, pixels %s", width, height, w2, h2,
                   w2 == width && h2 == height ? "differ" : "not compared");
        free(back);
        free(png);
    }
    free(rgb);
    return 0;
}

int fuzz_png(const uint8_t *data, size_t size)
{
    if (decode_one(data, size) != 0 && size >= 8) {
        uint8_t *fixed = fix_crcs(data, size);
        if (fixed)
            decode_one(fixed, size);
        free(fixed);
    }
    return 0;
}

#ifndef KILN_FUZZ_REPLAY
int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    return fuzz_png(data, size);
}
#endif
