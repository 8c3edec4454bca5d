#include "pipeline/image_io.h"

#include <errno.h>
#include <fcntl.h>
#include <png.h>
#include <setjmp.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "core/error.h"

/* libpng reports errors through longjmp; the message is kept here so the
 * caller can name it. */
typedef struct png_failure {
    jmp_buf jump;
    char message[200];
    /* what must be freed when libpng jumps out. The struct is allocated,
     * not a local: locals changed after setjmp are indeterminate after
     * longjmp. */
    void *owned[2];
    kiln_status status;
} png_failure;

static void on_png_error(png_structp png, png_const_charp message)
{
    png_failure *f = png_get_error_ptr(png);
    snprintf(f->message, sizeof f->message, "%s", message);
    longjmp(f->jump, 1);
}

static void on_png_warning(png_structp png, png_const_charp message)
{
    (void)png;
    (void)message;
}

/* ---- writing ---- */

typedef struct byte_sink {
    uint8_t *data;
    size_t size, capacity;
    int failed;
} byte_sink;

static void sink_write(png_structp png, png_bytep bytes, png_size_t n)
{
    byte_sink *s = png_get_io_ptr(png);
    if (s->failed)
        return;
    if (s->size + n > s->capacity) {
        size_t capacity = s->capacity ? s->capacity : 65536;
        while (capacity < s->size + n)
            capacity *= 2;
        uint8_t *grown = realloc(s->data, capacity);
        if (!grown) {
            s->failed = 1;
            return;
        }
        s->data = grown;
        s->capacity = capacity;
    }
    memcpy(s->data + s->size, bytes, n);
    s->size += n;
}

static void sink_flush(png_structp png)
{
    (void)png;
}

kiln_status png_encode_rgb(const uint8_t *rgb, int width, int height, const png_text_entry *text, size_t n_text,
                           uint8_t **out, size_t *out_size)
{
    if (width < 1 || height < 1)
        return err_set(KILN_ERR_INVALID, "png: image of %dx%d pixels", width, height);
    png_failure *failure = calloc(1, sizeof *failure);
    byte_sink *sink = calloc(1, sizeof *sink);
    png_structp png = failure && sink ? png_create_write_struct(PNG_LIBPNG_VER_STRING, failure, on_png_error,
                                                                on_png_warning)
                                      : NULL;
    png_infop info = png ? png_create_info_struct(png) : NULL;
    kiln_status st = KILN_OK;
    if (!png || !info) {
        st = err_set(KILN_ERR_NOMEM, "png: cannot allocate the encoder");
        goto done;
    }
    if (setjmp(failure->jump)) {
        st = sink->failed ? err_set(KILN_ERR_NOMEM, "png: out of memory while encoding %dx%d", width, height)
                          : err_set(KILN_ERR_FORMAT, "png: encoding failed: %s", failure->message);
        goto done;
    }
    png_set_write_fn(png, sink, sink_write, sink_flush);
    png_set_IHDR(png, info, (png_uint_32)width, (png_uint_32)height, 8, PNG_COLOR_TYPE_RGB, PNG_INTERLACE_NONE,
                 PNG_COMPRESSION_TYPE_DEFAULT, PNG_FILTER_TYPE_DEFAULT);
    if (n_text) {
        png_text *chunks = calloc(n_text, sizeof *chunks);
        failure->owned[0] = chunks;
        if (!chunks)
            png_error(png, "out of memory for text chunks");
        for (size_t i = 0; i < n_text; i++) {
            chunks[i].compression = PNG_ITXT_COMPRESSION_NONE;
            chunks[i].key = (png_charp)text[i].key;
            chunks[i].text = (png_charp)text[i].value;
        }
        png_set_text(png, info, chunks, (int)n_text);
    }
    png_write_info(png, info);
    for (int y = 0; y < height; y++)
        png_write_row(png, (png_const_bytep)(rgb + (size_t)y * (size_t)width * 3));
    png_write_end(png, info);
    if (sink->failed)
        st = err_set(KILN_ERR_NOMEM, "png: out of memory while encoding %dx%d", width, height);
done:
    png_destroy_write_struct(&png, &info);
    if (st == KILN_OK) {
        *out = sink->data;
        *out_size = sink->size;
    } else if (sink) {
        free(sink->data);
    }
    if (failure)
        free(failure->owned[0]);
    free(failure);
    free(sink);
    return st;
}

static kiln_status write_all(int fd, const uint8_t *data, size_t size, const char *path)
{
    while (size > 0) {
        ssize_t n = write(fd, data, size);
        if (n < 0) {
            if (errno == EINTR)
                continue;
            return err_set(KILN_ERR_IO, "%s: cannot write: %s", path, strerror(errno));
        }
        data += n;
        size -= (size_t)n;
    }
    return KILN_OK;
}

kiln_status png_write_rgb(const char *path, const uint8_t *rgb, int width, int height, const png_text_entry *text,
                          size_t n_text, int overwrite)
{
    if (!overwrite && access(path, F_OK) == 0)
        return err_set(KILN_ERR_IO, "%s: already exists (kiln does not overwrite files unless asked)", path);
    uint8_t *png = NULL;
    size_t size = 0;
    kiln_status st = png_encode_rgb(rgb, width, height, text, n_text, &png, &size);
    if (st != KILN_OK)
        return st;

    size_t tmp_len = strlen(path) + 16;
    char *tmp = malloc(tmp_len);
    if (!tmp) {
        free(png);
        return err_set(KILN_ERR_NOMEM, "%s: cannot allocate a file name", path);
    }
    snprintf(tmp, tmp_len, "%s.tmp-XXXXXX", path);
    int fd = mkstemp(tmp);
    if (fd < 0) {
        st = err_set(KILN_ERR_IO, "%s: cannot create a file there: %s", path, strerror(errno));
        goto done;
    }
    st = write_all(fd, png, size, path);
    if (st == KILN_OK && fsync(fd) != 0)
        st = err_set(KILN_ERR_IO, "%s: cannot flush: %s", path, strerror(errno));
    if (fchmod(fd, 0644) != 0 && st == KILN_OK)
        st = err_set(KILN_ERR_IO, "%s: cannot set permissions: %s", path, strerror(errno));
    if (close(fd) != 0 && st == KILN_OK)
        st = err_set(KILN_ERR_IO, "%s: cannot close: %s", path, strerror(errno));
    if (st == KILN_OK) {
        /* link() refuses to replace an existing name: the atomic form of
         * "create unless it exists"; rename() replaces atomically. */
        int rc = overwrite ? rename(tmp, path) : link(tmp, path);
        if (rc != 0)
            st = err_set(KILN_ERR_IO, "%s: %s", path,
                         errno == EEXIST ? "already exists (kiln does not overwrite files unless asked)"
                                         : strerror(errno));
    }
    if (access(tmp, F_OK) == 0)
        unlink(tmp);
done:
    free(tmp);
    free(png);
    return st;
}

/* ---- reading ---- */

typedef struct byte_source {
    const uint8_t *data;
    size_t size, pos;
} byte_source;

static void source_read(png_structp png, png_bytep out, png_size_t n)
{
    byte_source *s = png_get_io_ptr(png);
    if (n > s->size - s->pos)
        png_error(png, "file ends early");
    memcpy(out, s->data + s->pos, n);
    s->pos += n;
}

/* libpng allocates a text or profile chunk's whole length before it reads
 * the chunk (png_set_chunk_malloc_max bounds only what decompresses), so a
 * 61-byte file claiming a 2 GB iTXt chunk cost a 2 GB allocation. With the
 * file in memory, no chunk may claim more bytes than the file has left:
 * checked here, up to IEND (libpng reads nothing after it). */
static kiln_status check_chunk_lengths(const uint8_t *data, size_t size, const char *what)
{
    for (size_t pos = 8; size - pos >= 8;) {
        uint32_t len = (uint32_t)data[pos] << 24 | (uint32_t)data[pos + 1] << 16 | (uint32_t)data[pos + 2] << 8 |
                       data[pos + 3];
        if (len > size - pos - 8) {
            char type[4 * 4 + 1]; /* printable, or \xNN */
            size_t t = 0;
            for (size_t i = 0; i < 4; i++) {
                unsigned char c = data[pos + 4 + i];
                t += (size_t)snprintf(type + t, sizeof type - t, c >= 0x20 && c < 0x7f && c != '\'' ? "%c" : "\\x%02x",
                                      c);
            }
            return err_set(KILN_ERR_FORMAT, "%s: bad PNG: chunk '%s' at byte %zu claims %u bytes, but the file has "
                           "%zu left", what, type, pos, (unsigned)len, size - pos - 8);
        }
        if (memcmp(data + pos + 4, "IEND", 4) == 0 || size - pos - 8 - len < 4)
            break; /* a missing CRC is libpng's to report */
        pos += 12 + (size_t)len;
    }
    return KILN_OK;
}

kiln_status png_decode_rgb(const uint8_t *data, size_t size, const char *what, int64_t max_pixels, uint8_t **rgb,
                           int *width, int *height)
{
    if (size < 8 || png_sig_cmp((png_const_bytep)data, 0, 8) != 0)
        return err_set(KILN_ERR_FORMAT, "%s: not a PNG file (bad signature)", what);
    kiln_status checked = check_chunk_lengths(data, size, what);
    if (checked != KILN_OK)
        return checked;
    png_failure *failure = calloc(1, sizeof *failure);
    byte_source *src = calloc(1, sizeof *src);
    png_structp png = failure && src ? png_create_read_struct(PNG_LIBPNG_VER_STRING, failure, on_png_error,
                                                              on_png_warning)
                                     : NULL;
    png_infop info = png ? png_create_info_struct(png) : NULL;
    kiln_status st = KILN_OK;
    if (!png || !info) {
        st = err_set(KILN_ERR_NOMEM, "%s: cannot allocate the PNG decoder", what);
        goto done;
    }
    if (setjmp(failure->jump)) {
        st = failure->status != KILN_OK ? failure->status
                                        : err_set(KILN_ERR_FORMAT, "%s: bad PNG: %s", what, failure->message);
        goto done;
    }
    src->data = data;
    src->size = size;
    png_set_read_fn(png, src, source_read);
    png_set_user_limits(png, 1u << 16, 1u << 16);
    png_set_chunk_malloc_max(png, 8u << 20);
    png_read_info(png, info);
    png_uint_32 w = png_get_image_width(png, info), h = png_get_image_height(png, info);
    if ((int64_t)w * (int64_t)h > max_pixels) {
        failure->status = err_set(KILN_ERR_INVALID, "%s: image is %ux%u pixels, more than the limit of %lld", what,
                                  (unsigned)w, (unsigned)h, (long long)max_pixels);
        longjmp(failure->jump, 1);
    }
    /* everything to 8-bit RGB, transparency composited over black */
    png_set_expand(png);
    png_set_strip_16(png);
    png_set_gray_to_rgb(png);
    if (png_get_valid(png, info, PNG_INFO_tRNS) || (png_get_color_type(png, info) & PNG_COLOR_MASK_ALPHA))
        png_set_background_fixed(png, &(png_color_16){0}, PNG_BACKGROUND_GAMMA_SCREEN, 0, PNG_FP_1);
    png_set_interlace_handling(png);
    png_read_update_info(png, info);
    if (png_get_rowbytes(png, info) != (size_t)w * 3)
        png_error(png, "unexpected pixel layout after conversion");
    uint8_t *pixels = malloc((size_t)w * h * 3);
    png_bytep *rows = malloc(h * sizeof *rows);
    failure->owned[0] = pixels;
    failure->owned[1] = rows;
    if (!pixels || !rows) {
        failure->status = err_set(KILN_ERR_NOMEM, "%s: cannot allocate %ux%u pixels", what, (unsigned)w, (unsigned)h);
        longjmp(failure->jump, 1);
    }
    for (png_uint_32 y = 0; y < h; y++)
        rows[y] = pixels + (size_t)y * w * 3;
    png_read_image(png, rows);
    png_read_end(png, NULL);
    *rgb = pixels;
    *width = (int)w;
    *height = (int)h;
    failure->owned[0] = NULL;
done:
    png_destroy_read_struct(&png, &info, NULL);
    if (failure) {
        free(failure->owned[0]);
        free(failure->owned[1]);
    }
    free(failure);
    free(src);
    return st;
}

kiln_status png_read_rgb(const char *path, int64_t max_pixels, uint8_t **rgb, int *width, int *height)
{
    FILE *f = fopen(path, "rb");
    if (!f)
        return err_set(KILN_ERR_IO, "%s: cannot open: %s", path, strerror(errno));
    uint8_t *data = NULL;
    size_t size = 0, capacity = 0;
    kiln_status st = KILN_OK;
    for (;;) {
        if (size == capacity) {
            capacity = capacity ? capacity * 2 : 1 << 16;
            if (capacity > (256u << 20)) {
                st = err_set(KILN_ERR_INVALID, "%s: file is over 256 MiB", path);
                break;
            }
            uint8_t *grown = realloc(data, capacity);
            if (!grown) {
                st = err_set(KILN_ERR_NOMEM, "%s: cannot allocate %zu bytes", path, capacity);
                break;
            }
            data = grown;
        }
        size_t n = fread(data + size, 1, capacity - size, f);
        size += n;
        if (n == 0) {
            if (ferror(f))
                st = err_set(KILN_ERR_IO, "%s: read failed: %s", path, strerror(errno));
            break;
        }
    }
    fclose(f);
    if (st == KILN_OK)
        st = png_decode_rgb(data, size, path, max_pixels, rgb, width, height);
    free(data);
    return st;
}
