/*
 * fuzz_safetensors.c - kiln_weights_open on any bytes.
 *
 * kiln_weights_open takes a path, so the input goes into an in-memory file
 * (memfd, made once and rewritten for each input) opened through
 * /proc/self/fd: the parser runs exactly as on a file on disk, mmap and
 * all, with no change to it. Whatever the bytes, opening must either fail
 * with a one-line message or give descriptors that are safe to use: every
 * tensor inside the file, the data section covered exactly, names that
 * find their tensor, and data that converts into a buffer of exactly the
 * tensor's size (ASan watches that buffer).
 */
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <unistd.h>

#include "fuzz.h"
#include "kiln.h"

static int scratch_fd = -1;
static char scratch_path[64];

static void write_scratch(const uint8_t *data, size_t size)
{
    if (scratch_fd < 0) {
        scratch_fd = memfd_create("kiln-fuzz-safetensors", MFD_CLOEXEC);
        FUZZ_CHECK(scratch_fd >= 0, "memfd_create failed");
        snprintf(scratch_path, sizeof scratch_path, "/proc/self/fd/%d", scratch_fd);
    }
    FUZZ_CHECK(ftruncate(scratch_fd, 0) == 0, "cannot empty the scratch file");
    for (size_t done = 0; done < size;) {
        ssize_t n = pwrite(scratch_fd, data + done, size - done, (off_t)done);
        FUZZ_CHECK(n > 0, "cannot write the scratch file");
        done += (size_t)n;
    }
}

static int is_one_line(const char *s)
{
    for (; *s; s++)
        if ((unsigned char)*s < 0x20 || *s == 0x7f)
            return 0;
    return 1;
}

static void check_tensor_data(const kiln_weights *w, const kiln_tensor_desc *t)
{
    size_t count = (size_t)(t->nbytes / kiln_dtype_size(t->dtype));
    if (t->dtype != KILN_DTYPE_F32 && t->dtype != KILN_DTYPE_F16 && t->dtype != KILN_DTYPE_BF16) {
        FUZZ_CHECK(kiln_weights_read_f32(w, t, NULL, count) == KILN_ERR_UNSUPPORTED,
                   "tensor '%s' of dtype %s: not refused as unsupported", t->name, kiln_dtype_name(t->dtype));
        return;
    }
    float *dst = count ? malloc(count * sizeof *dst) : NULL;
    FUZZ_CHECK(count == 0 || dst != NULL, "out of memory for %zu floats", count);
    kiln_status st = kiln_weights_read_f32(w, t, dst, count);
    FUZZ_CHECK(st == KILN_OK, "reading tensor '%s' (%zu elements): %s", t->name, count, kiln_last_error());
    /* the wrong count is refused before anything is written */
    FUZZ_CHECK(kiln_weights_read_f32(w, t, dst, count + 1) == KILN_ERR_SHAPE,
               "tensor '%s': a count of %zu + 1 was not refused", t->name, count);
    free(dst);
}

int fuzz_safetensors(const uint8_t *data, size_t size)
{
    write_scratch(data, size);
    kiln_weights *w = NULL;
    kiln_status st = kiln_weights_open(scratch_path, &w);
    if (st != KILN_OK) {
        const char *msg = kiln_last_error();
        FUZZ_CHECK(st == KILN_ERR_FORMAT, "status %d (%s): bytes are a format error, nothing else", st, msg);
        FUZZ_CHECK(strncmp(msg, scratch_path, strlen(scratch_path)) == 0, "message '%s' does not name the file",
                   msg);
        FUZZ_CHECK(is_one_line(msg), "message '%s' has a control character", msg);
        FUZZ_CHECK(w == NULL, "out-parameter written on failure");
        return 0;
    }

    FUZZ_CHECK(kiln_weights_file_size(w) == size, "file size %llu, input %zu bytes",
               (unsigned long long)kiln_weights_file_size(w), size);
    size_t count = kiln_weights_count(w);
    uint64_t expected = 0; /* where the next tensor's data must start */
    for (size_t i = 0; i < count; i++) {
        const kiln_tensor_desc *t = kiln_weights_tensor(w, i);
        FUZZ_CHECK(t && t->name, "tensor %zu of %zu missing", i, count);
        FUZZ_CHECK(t->ndim >= 0 && t->ndim <= KILN_MAX_FILE_DIMS, "tensor '%s': %d dims", t->name, t->ndim);
        uint64_t numel = 1;
        int overflow = 0;
        for (int d = 0; d < t->ndim; d++) {
            FUZZ_CHECK(t->shape[d] >= 0, "tensor '%s': dim %d is %lld", t->name, d, (long long)t->shape[d]);
            if (t->shape[d] == 0)
                numel = 0;
            else if (numel > UINT64_MAX / (uint64_t)t->shape[d])
                overflow = 1;
            else
                numel *= (uint64_t)t->shape[d];
        }
        FUZZ_CHECK(numel == 0 || !overflow, "tensor '%s': element count overflows", t->name);
        FUZZ_CHECK(numel * kiln_dtype_size(t->dtype) == t->nbytes, "tensor '%s': %llu elements of %s in %llu bytes",
                   t->name, (unsigned long long)numel, kiln_dtype_name(t->dtype), (unsigned long long)t->nbytes);
        FUZZ_CHECK(t->offset >= 10 && t->offset <= size && t->nbytes <= size - t->offset,
                   "tensor '%s': bytes [%llu, +%llu) outside a file of %zu", t->name,
                   (unsigned long long)t->offset, (unsigned long long)t->nbytes, size);
        if (i == 0)
            expected = t->offset;
        FUZZ_CHECK(t->offset == expected, "tensor '%s' starts at %llu, the previous ends at %llu", t->name,
                   (unsigned long long)t->offset, (unsigned long long)expected);
        expected = t->offset + t->nbytes;
        FUZZ_CHECK(kiln_weights_find(w, t->name) == t, "find('%s') gives another tensor", t->name);
        FUZZ_CHECK(kiln_weights_data(w, t) != NULL, "tensor '%s': no data pointer", t->name);
        check_tensor_data(w, t);
    }
    FUZZ_CHECK(count == 0 || expected == size, "the data ends at %llu of %zu bytes", (unsigned long long)expected,
               size);
    FUZZ_CHECK(kiln_weights_tensor(w, count) == NULL, "tensor index %zu past the end is not NULL", count);

    size_t n_meta = kiln_weights_metadata_count(w);
    for (size_t i = 0; i < n_meta; i++) {
        const char *key, *value;
        kiln_weights_metadata(w, i, &key, &value);
        FUZZ_CHECK(key && value, "metadata %zu is NULL", i);
        FUZZ_CHECK(kiln_weights_metadata_get(w, key) == value, "metadata '%s' found with another value", key);
    }
    kiln_weights_destroy(w);
    return 0;
}

#ifndef KILN_FUZZ_REPLAY
int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    return fuzz_safetensors(data, size);
}
#endif
