/* Safetensors loading: the example file's every figure, the edge-case valid
 * files, and the malformed corpus (tests/data/malformed, written with its
 * expected messages by tools/make_safetensors_corpus.py). */
#include <dirent.h>
#include <fcntl.h>
#include <pthread.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "kiln.h"
#include "test_support.h"

/* ---- helpers ------------------------------------------------------------- */

static char *read_whole(const char *path, size_t *size)
{
    FILE *f = fopen(path, "rb");
    if (!f)
        return NULL;
    size_t capacity = 4096, used = 0;
    char *buf = malloc(capacity + 1);
    for (size_t n; buf && (n = fread(buf + used, 1, capacity - used, f)) > 0;) {
        used += n;
        if (used == capacity) {
            char *grown = realloc(buf, 2 * capacity + 1);
            if (!grown) {
                free(buf);
                buf = NULL;
                break;
            }
            buf = grown;
            capacity *= 2;
        }
    }
    fclose(f);
    if (buf) {
        buf[used] = '\0';
        *size = used;
    }
    return buf;
}

static int write_whole(const char *path, const void *data, size_t size)
{
    FILE *f = fopen(path, "wb");
    if (!f)
        return -1;
    size_t n = fwrite(data, 1, size, f);
    return fclose(f) == 0 && n == size ? 0 : -1;
}

static char *tmp_path(const char *name)
{
    size_t n = strlen(test_tmp_dir()) + strlen(name) + 2;
    char *path = malloc(n);
    if (path)
        snprintf(path, n, "%s/%s", test_tmp_dir(), name);
    return path;
}

static void check_shape(const kiln_tensor_desc *t, int ndim, const int64_t *shape)
{
    CHECK(t->ndim == ndim, "'%s': expected %d dims, got %d", t->name, ndim, t->ndim);
    for (int d = 0; d < ndim && d < t->ndim; d++)
        CHECK(t->shape[d] == shape[d], "'%s' dim %d: expected %lld, got %lld", t->name, d, (long long)shape[d],
              (long long)t->shape[d]);
}

/* Reads tensor `name` as f32 and compares with want[] exactly (every value
 * below is exact in its dtype). */
static void check_values(const kiln_weights *w, const char *name, const float *want, size_t count)
{
    const kiln_tensor_desc *t = kiln_weights_find(w, name);
    CHECK(t != NULL, "tensor '%s' not found", name);
    if (!t)
        return;
    float *got = malloc((count ? count : 1) * sizeof *got);
    if (!got)
        return;
    kiln_status st = kiln_weights_read_f32(w, t, got, count);
    CHECK(st == KILN_OK, "read '%s': expected ok, got %d (%s)", name, st, kiln_last_error());
    int bad = 0;
    for (size_t i = 0; st == KILN_OK && i < count && bad < 5; i++)
        if (got[i] != want[i]) {
            CHECK(0, "'%s'[%zu]: expected %g, got %g", name, i, (double)want[i], (double)got[i]);
            bad++;
        }
    free(got);
}

static int contains(const char *haystack, const char *needle)
{
    return strstr(haystack, needle) != NULL;
}

/* ---- the example file --------------------------------------------------- */

/* Figures of tests/data/example.safetensors as tools/make_safetensors_corpus.py
 * writes it: a 352-byte header (padded to 8), then 968 bytes of data. */
#define EXAMPLE_SIZE 1328
#define EXAMPLE_DATA_START 360

static const struct {
    const char *name;
    kiln_dtype dtype;
    int ndim;
    int64_t shape[4];
    uint64_t begin, end; /* data_offsets */
} example_tensors[] = {
    {"conv_in.weight", KILN_DTYPE_F32, 4, {8, 3, 3, 3}, 0, 864},
    {"conv_in.bias", KILN_DTYPE_F32, 1, {8}, 864, 896},
    {"proj.weight", KILN_DTYPE_F16, 2, {4, 8}, 896, 960},
    {"proj.bias", KILN_DTYPE_BF16, 1, {4}, 960, 968},
};
#define EXAMPLE_COUNT (sizeof example_tensors / sizeof example_tensors[0])

static kiln_weights *open_data(const char *name)
{
    char *path = test_data_path(name);
    kiln_weights *w = NULL;
    kiln_status st = kiln_weights_open(path, &w);
    CHECK(st == KILN_OK, "open %s: expected ok, got %d (%s)", path, st, kiln_last_error());
    free(path);
    return st == KILN_OK ? w : NULL;
}

static void test_example_figures(void)
{
    char *path = test_data_path("example.safetensors");
    kiln_weights *w = NULL;
    kiln_status st = kiln_weights_open(path, &w);
    CHECK(st == KILN_OK, "open: expected ok, got %d (%s)", st, kiln_last_error());
    if (st != KILN_OK) {
        free(path);
        return;
    }
    CHECK(strcmp(kiln_weights_path(w), path) == 0, "path: expected %s, got %s", path, kiln_weights_path(w));
    CHECK_EQ_INT(kiln_weights_file_size(w), EXAMPLE_SIZE);
    CHECK_EQ_INT(kiln_weights_count(w), EXAMPLE_COUNT);

    size_t file_size = 0;
    char *bytes = read_whole(path, &file_size);
    CHECK(bytes && file_size == EXAMPLE_SIZE, "reading %s by hand: got %zu bytes", path, file_size);

    for (size_t i = 0; i < EXAMPLE_COUNT && i < kiln_weights_count(w); i++) {
        const kiln_tensor_desc *t = kiln_weights_tensor(w, i);
        CHECK(t != NULL, "tensor %zu is NULL", i);
        if (!t)
            continue;
        CHECK(strcmp(t->name, example_tensors[i].name) == 0, "tensor %zu: expected '%s', got '%s'", i,
              example_tensors[i].name, t->name);
        CHECK(t->dtype == example_tensors[i].dtype, "'%s': expected %s, got %s", t->name,
              kiln_dtype_name(example_tensors[i].dtype), kiln_dtype_name(t->dtype));
        check_shape(t, example_tensors[i].ndim, example_tensors[i].shape);
        CHECK_EQ_INT(t->offset, EXAMPLE_DATA_START + example_tensors[i].begin);
        CHECK_EQ_INT(t->nbytes, example_tensors[i].end - example_tensors[i].begin);
        CHECK(kiln_weights_find(w, t->name) == t, "find('%s') must give tensor %zu", t->name, i);
        const void *data = kiln_weights_data(w, t);
        CHECK(data != NULL && bytes && memcmp(data, bytes + t->offset, t->nbytes) == 0,
              "'%s': data pointer must show the file's bytes at %llu", t->name, (unsigned long long)t->offset);
    }
    CHECK(kiln_weights_tensor(w, EXAMPLE_COUNT) == NULL, "tensor(count) must be NULL");
    CHECK(kiln_weights_tensor(w, SIZE_MAX) == NULL, "tensor(SIZE_MAX) must be NULL");

    static const char *const absent[] = {"", "conv_in", "conv_in.weight ", "proj.bias2", "PROJ.BIAS", "__metadata__",
                                         "format", "a", "zzz"};
    for (size_t i = 0; i < sizeof absent / sizeof absent[0]; i++)
        CHECK(kiln_weights_find(w, absent[i]) == NULL, "find('%s') must be NULL", absent[i]);

    free(bytes);
    kiln_weights_destroy(w);
    free(path);
}

static void test_example_metadata(void)
{
    kiln_weights *w = open_data("example.safetensors");
    if (!w)
        return;
    CHECK_EQ_INT(kiln_weights_metadata_count(w), 2);
    static const char *const keys[] = {"format", "kiln.purpose"};
    static const char *const values[] = {"pt", "example for kiln info"};
    for (size_t i = 0; i < 2 && i < kiln_weights_metadata_count(w); i++) {
        const char *key = NULL, *value = NULL;
        kiln_weights_metadata(w, i, &key, &value);
        CHECK(key && strcmp(key, keys[i]) == 0, "metadata %zu key: expected '%s', got '%s'", i, keys[i],
              key ? key : "(null)");
        CHECK(value && strcmp(value, values[i]) == 0, "metadata %zu value: expected '%s', got '%s'", i, values[i],
              value ? value : "(null)");
        const char *got = kiln_weights_metadata_get(w, keys[i]);
        CHECK(got && strcmp(got, values[i]) == 0, "metadata_get('%s'): expected '%s', got '%s'", keys[i], values[i],
              got ? got : "(null)");
    }
    const char *key = "x", *value = "x";
    kiln_weights_metadata(w, 2, &key, &value);
    CHECK(key == NULL && value == NULL, "metadata past the end must give NULL, NULL");
    CHECK(kiln_weights_metadata_get(w, "missing") == NULL, "metadata_get of an absent key must be NULL");
    CHECK(kiln_weights_metadata_get(w, "") == NULL, "metadata_get(\"\") must be NULL");
    CHECK(kiln_weights_metadata_get(w, "conv_in.weight") == NULL, "a tensor name is not a metadata key");
    kiln_weights_destroy(w);
}

static void test_example_values(void)
{
    kiln_weights *w = open_data("example.safetensors");
    if (!w)
        return;
    /* the formulas of tools/make_safetensors_corpus.py example_tensors() */
    float conv[216], bias[8], proj[32];
    for (int i = 0; i < 216; i++)
        conv[i] = (float)((i % 7) - 3) * 0.25f;
    for (int i = 0; i < 8; i++)
        bias[i] = 0.5f * (float)i;
    for (int i = 0; i < 32; i++)
        proj[i] = (float)(i - 16) / 8.0f;
    static const float proj_bias[4] = {1.0f, -2.0f, 0.5f, 3.0f};
    check_values(w, "conv_in.weight", conv, 216);
    check_values(w, "conv_in.bias", bias, 8);
    check_values(w, "proj.weight", proj, 32);
    check_values(w, "proj.bias", proj_bias, 4);

    /* F32 data is stored as is: the mapped bytes are the floats */
    const kiln_tensor_desc *t = kiln_weights_find(w, "conv_in.weight");
    CHECK(t && memcmp(kiln_weights_data(w, t), conv, sizeof conv) == 0, "conv_in.weight bytes differ");
    kiln_weights_destroy(w);
}

static void test_read_wrong_count(void)
{
    kiln_weights *w = open_data("example.safetensors");
    if (!w)
        return;
    float dst[300];
    static const char *const names[] = {"conv_in.weight", "proj.weight", "proj.bias"};
    static const size_t right[] = {216, 32, 4};
    for (size_t n = 0; n < 3; n++) {
        const kiln_tensor_desc *t = kiln_weights_find(w, names[n]);
        if (!t)
            continue;
        const size_t wrong[] = {0, right[n] - 1, right[n] + 1, right[n] * 2,
                                /* count * 4 wraps around to the right byte count */
                                SIZE_MAX / 4 + 1 + right[n], SIZE_MAX};
        for (size_t k = 0; k < sizeof wrong / sizeof wrong[0]; k++) {
            for (size_t i = 0; i < 300; i++)
                dst[i] = -7.0f;
            kiln_status st = kiln_weights_read_f32(w, t, dst, wrong[k]);
            CHECK(st == KILN_ERR_SHAPE, "read '%s' with count %zu: expected %d, got %d", names[n], wrong[k],
                  KILN_ERR_SHAPE, st);
            const char *msg = kiln_last_error();
            CHECK(contains(msg, "example.safetensors") && contains(msg, names[n]),
                  "message must name the file and tensor '%s': got '%s'", names[n], msg);
            int touched = 0;
            for (size_t i = 0; i < 300; i++)
                touched |= dst[i] != -7.0f;
            CHECK(!touched, "read '%s' with count %zu wrote into dst on failure", names[n], wrong[k]);
        }
        char want[64];
        snprintf(want, sizeof want, "has %zu elements, caller expected %zu", right[n], right[n] + 1);
        kiln_weights_read_f32(w, t, dst, right[n] + 1);
        CHECK(contains(kiln_last_error(), want), "message must say '%s': got '%s'", want, kiln_last_error());
    }
    kiln_weights_destroy(w);
}

/* ---- the other valid files ---------------------------------------------- */

static void test_all_dtypes(void)
{
    static const struct {
        const char *name;
        kiln_dtype dtype;
        size_t size;
    } dtypes[] = {
        {"F32", KILN_DTYPE_F32, 4},   {"F16", KILN_DTYPE_F16, 2},         {"BF16", KILN_DTYPE_BF16, 2},
        {"I32", KILN_DTYPE_I32, 4},   {"F64", KILN_DTYPE_F64, 8},         {"I64", KILN_DTYPE_I64, 8},
        {"I16", KILN_DTYPE_I16, 2},   {"I8", KILN_DTYPE_I8, 1},           {"U8", KILN_DTYPE_U8, 1},
        {"U16", KILN_DTYPE_U16, 2},   {"U32", KILN_DTYPE_U32, 4},         {"U64", KILN_DTYPE_U64, 8},
        {"BOOL", KILN_DTYPE_BOOL, 1}, {"F8_E4M3", KILN_DTYPE_F8_E4M3, 1}, {"F8_E5M2", KILN_DTYPE_F8_E5M2, 1},
    };
    _Static_assert(sizeof dtypes / sizeof dtypes[0] == KILN_DTYPE_COUNT, "one row per dtype");
    kiln_weights *w = open_data("all_dtypes.safetensors");
    if (!w)
        return;
    CHECK_EQ_INT(kiln_weights_count(w), KILN_DTYPE_COUNT);
    for (size_t i = 0; i < KILN_DTYPE_COUNT; i++) {
        char name[32];
        snprintf(name, sizeof name, "t.%s", dtypes[i].name);
        const kiln_tensor_desc *t = kiln_weights_find(w, name);
        CHECK(t != NULL, "tensor '%s' not found", name);
        if (!t)
            continue;
        CHECK(t == kiln_weights_tensor(w, i), "'%s' must be tensor %zu in data order", name, i);
        CHECK(t->dtype == dtypes[i].dtype, "'%s': expected dtype %d, got %d", name, dtypes[i].dtype, t->dtype);
        CHECK(strcmp(kiln_dtype_name(t->dtype), dtypes[i].name) == 0, "dtype name: expected %s, got %s",
              dtypes[i].name, kiln_dtype_name(t->dtype));
        CHECK_EQ_INT(t->nbytes, 2 * dtypes[i].size);
        const unsigned char *data = kiln_weights_data(w, t);
        int pattern_ok = 1; /* the generator writes bytes 0, 1, 2, ... */
        for (size_t b = 0; b < t->nbytes; b++)
            pattern_ok &= data[b] == b;
        CHECK(pattern_ok, "'%s': data bytes must be 0, 1, 2, ...", name);

        float dst[2] = {-7.0f, -7.0f};
        kiln_status st = kiln_weights_read_f32(w, t, dst, 2);
        int readable = t->dtype == KILN_DTYPE_F32 || t->dtype == KILN_DTYPE_F16 || t->dtype == KILN_DTYPE_BF16;
        if (readable) {
            CHECK(st == KILN_OK, "read '%s': expected ok, got %d (%s)", name, st, kiln_last_error());
        } else {
            CHECK(st == KILN_ERR_UNSUPPORTED, "read '%s': expected %d, got %d", name, KILN_ERR_UNSUPPORTED, st);
            char want[96];
            snprintf(want, sizeof want, "tensor '%s' is %s; kiln reads F32, F16 and BF16", name, dtypes[i].name);
            CHECK(contains(kiln_last_error(), want) && contains(kiln_last_error(), "all_dtypes.safetensors"),
                  "message must name the file and say '%s': got '%s'", want, kiln_last_error());
            CHECK(dst[0] == -7.0f && dst[1] == -7.0f, "read '%s' wrote into dst on failure", name);
        }
    }
    kiln_weights_destroy(w);
}

static void test_misaligned(void)
{
    kiln_weights *w = open_data("misaligned.safetensors");
    if (!w)
        return;
    CHECK_EQ_INT(kiln_weights_count(w), 9);
    const kiln_tensor_desc *a = kiln_weights_find(w, "a.f16");
    CHECK(a && (a->offset & 1) == 1, "a.f16 must start at an odd byte of the file");
    CHECK(a && ((uintptr_t)kiln_weights_data(w, a) & 1) == 1, "a.f16's data must be at an odd address");

    static const char *const order[] = {"a.f16",    "b.bf16",  "b2.empty",      "c.f32", "d.f16_long",
                                        "e.scalar", "f.empty", "f2.empty_huge", "g.last"};
    for (size_t i = 0; i < 9 && i < kiln_weights_count(w); i++) {
        const kiln_tensor_desc *t = kiln_weights_tensor(w, i);
        CHECK(strcmp(t->name, order[i]) == 0, "tensor %zu: expected '%s', got '%s'", i, order[i], t->name);
        CHECK((t->offset & 1) == 1, "'%s' offset %llu: expected odd", t->name, (unsigned long long)t->offset);
    }

    static const float va[5] = {-1.0f, -0.5f, 0.0f, 0.5f, 1.0f};
    static const float vb[3] = {-1.5f, 2.0f, 4.25f};
    static const float vc[3] = {1.0f, -0.125f, 65536.0f};
    static const float ve[1] = {7.0f};
    static const float vg[2] = {0.25f, -8.0f};
    float vd[1500];
    for (int i = 0; i < 1500; i++)
        vd[i] = (float)((i % 64) - 32) / 8.0f;
    check_values(w, "a.f16", va, 5);
    check_values(w, "b.bf16", vb, 3);
    check_values(w, "c.f32", vc, 3);
    check_values(w, "d.f16_long", vd, 1500);
    check_values(w, "e.scalar", ve, 1);
    check_values(w, "g.last", vg, 2);

    const int64_t shape_d[2] = {3, 500}, shape_f[2] = {2, 0}, shape_b2[1] = {0};
    const int64_t shape_f2[3] = {INT64_C(1) << 32, INT64_C(1) << 32, 0};
    const kiln_tensor_desc *t = kiln_weights_find(w, "d.f16_long");
    if (t)
        check_shape(t, 2, shape_d);
    t = kiln_weights_find(w, "e.scalar");
    CHECK(t && t->ndim == 0 && t->nbytes == 4, "e.scalar: expected 0 dims and 4 bytes");

    /* empty tensors read into no buffer at all */
    static const char *const empty[] = {"b2.empty", "f.empty", "f2.empty_huge"};
    static const int empty_ndim[] = {1, 2, 3};
    const int64_t *empty_shape[] = {shape_b2, shape_f, shape_f2};
    for (int i = 0; i < 3; i++) {
        t = kiln_weights_find(w, empty[i]);
        CHECK(t && t->nbytes == 0, "'%s' must be an empty tensor", empty[i]);
        if (!t)
            continue;
        check_shape(t, empty_ndim[i], empty_shape[i]);
        kiln_status st = kiln_weights_read_f32(w, t, NULL, 0);
        CHECK(st == KILN_OK, "read '%s' (0 elements): expected ok, got %d (%s)", empty[i], st, kiln_last_error());
        float one;
        st = kiln_weights_read_f32(w, t, &one, 1);
        CHECK(st == KILN_ERR_SHAPE, "read '%s' with count 1: expected %d, got %d", empty[i], KILN_ERR_SHAPE, st);
    }

    /* metadata comes back in file order, not sorted */
    static const char *const keys[] = {"note", "b", "a"};
    CHECK_EQ_INT(kiln_weights_metadata_count(w), 3);
    for (size_t i = 0; i < 3 && i < kiln_weights_metadata_count(w); i++) {
        const char *key, *value;
        kiln_weights_metadata(w, i, &key, &value);
        CHECK(strcmp(key, keys[i]) == 0, "metadata %zu: expected '%s', got '%s'", i, keys[i], key);
    }
    CHECK(kiln_weights_metadata_get(w, "a") && strcmp(kiln_weights_metadata_get(w, "a"), "1") == 0,
          "metadata a must be '1'");
    kiln_weights_destroy(w);
}

static void test_zero_tensors(void)
{
    kiln_weights *w = open_data("zero_tensors.safetensors");
    if (!w)
        return;
    CHECK_EQ_INT(kiln_weights_count(w), 0);
    CHECK_EQ_INT(kiln_weights_file_size(w), 56);
    CHECK(kiln_weights_tensor(w, 0) == NULL, "tensor(0) of an empty file must be NULL");
    CHECK(kiln_weights_find(w, "x") == NULL, "find in an empty file must be NULL");
    CHECK_EQ_INT(kiln_weights_metadata_count(w), 1);
    const char *note = kiln_weights_metadata_get(w, "note");
    CHECK(note && strcmp(note, "no tensors at all") == 0, "note: got '%s'", note ? note : "(null)");
    kiln_weights_destroy(w);
    kiln_weights_destroy(NULL); /* a no-op */
}

/* A FIFO cannot be mapped: the loader reads it into memory instead. */
typedef struct fifo_writer {
    const char *path;
    const char *bytes;
    size_t size;
} fifo_writer;

static void *write_fifo(void *arg)
{
    const fifo_writer *fw = arg;
    FILE *f = fopen(fw->path, "wb");
    if (f) {
        fwrite(fw->bytes, 1, fw->size, f);
        fclose(f);
    }
    return NULL;
}

static void test_read_from_fifo(void)
{
    char *src = test_data_path("example.safetensors");
    size_t size = 0;
    char *bytes = read_whole(src, &size);
    char *path = tmp_path("example.fifo");
    CHECK(bytes && path && mkfifo(path, 0600) == 0, "cannot make a fifo at %s", path ? path : "(null)");
    if (bytes && path && access(path, F_OK) == 0) {
        fifo_writer fw = {path, bytes, size};
        pthread_t thread;
        if (pthread_create(&thread, NULL, write_fifo, &fw) == 0) {
            kiln_weights *w = NULL;
            kiln_status st = kiln_weights_open(path, &w);
            /* if the loader never opened the fifo, this lets the writer go */
            int fd = open(path, O_RDONLY | O_NONBLOCK);
            pthread_join(thread, NULL);
            if (fd >= 0)
                close(fd);
            CHECK(st == KILN_OK, "open fifo: expected ok, got %d (%s)", st, kiln_last_error());
            if (st == KILN_OK) {
                CHECK_EQ_INT(kiln_weights_file_size(w), EXAMPLE_SIZE);
                CHECK_EQ_INT(kiln_weights_count(w), EXAMPLE_COUNT);
                static const float proj_bias[4] = {1.0f, -2.0f, 0.5f, 3.0f};
                check_values(w, "proj.bias", proj_bias, 4);
                kiln_weights_destroy(w);
            }
        }
    }
    free(path);
    free(bytes);
    free(src);
}

/* ---- files that must not open -------------------------------------------- */

static char sentinel;
#define UNTOUCHED ((kiln_weights *)(void *)&sentinel)

/* Opens path expecting failure with status want and a one-line message that
 * names the path and contains expect; *out must stay as it was. */
static void check_open_fails(const char *path, kiln_status want, const char *expect)
{
    kiln_weights *w = UNTOUCHED;
    kiln_status st = kiln_weights_open(path, &w);
    CHECK(st == want, "%s: expected status %d (%s), got %d (%s)", path, want, kiln_status_string(want), st,
          kiln_last_error());
    if (st == KILN_OK && w != UNTOUCHED)
        kiln_weights_destroy(w);
    else
        CHECK(w == UNTOUCHED, "%s: *out changed on failure", path);
    const char *msg = kiln_last_error();
    CHECK(contains(msg, path), "%s: message must name the file: got '%s'", path, msg);
    CHECK(expect == NULL || contains(msg, expect), "%s: message must contain \"%s\": got '%s'", path,
          expect ? expect : "", msg);
    CHECK(!contains(msg, "\n") && !contains(msg, "\r"), "%s: message must be one line: got '%s'", path, msg);
    size_t len = strlen(msg);
    CHECK(len > 0 && msg[len - 1] != '.', "%s: message must not end with a period: got '%s'", path, msg);
}

static void test_missing_file(void)
{
    char *path = tmp_path("no-such-file.safetensors");
    if (path)
        check_open_fails(path, KILN_ERR_IO, "cannot open");
    free(path);
}

static void test_directory(void)
{
    char *path = test_data_path("malformed");
    check_open_fails(path, KILN_ERR_IO, "is a directory");
    free(path);
}

typedef struct expectation {
    char *file, *substring;
    int seen;
} expectation;

/* malformed/EXPECTED.tsv: "file<TAB>substring" per line, '#' comments. */
static size_t load_expectations(const char *dir, expectation **out)
{
    size_t n = strlen(dir) + sizeof "/EXPECTED.tsv";
    char *path = malloc(n), *text = NULL;
    size_t size = 0, count = 0;
    if (path) {
        snprintf(path, n, "%s/EXPECTED.tsv", dir);
        text = read_whole(path, &size);
    }
    CHECK(text != NULL, "cannot read %s", path ? path : "EXPECTED.tsv");
    *out = NULL;
    for (char *line = text, *next; line && *line; line = next) {
        next = strchr(line, '\n');
        if (next)
            *next++ = '\0';
        if (line[0] == '#' || line[0] == '\0')
            continue;
        char *tab = strchr(line, '\t');
        CHECK(tab != NULL, "EXPECTED.tsv line without a tab: '%s'", line);
        if (!tab)
            continue;
        *tab = '\0';
        expectation *grown = realloc(*out, (count + 1) * sizeof **out);
        if (!grown)
            break;
        *out = grown;
        (*out)[count].file = strdup(line);
        (*out)[count].substring = strdup(tab + 1);
        (*out)[count].seen = 0;
        count++;
    }
    free(text);
    free(path);
    return count;
}

static int ends_with(const char *s, const char *suffix)
{
    size_t a = strlen(s), b = strlen(suffix);
    return a >= b && strcmp(s + a - b, suffix) == 0;
}

static void test_malformed_corpus(void)
{
    char *dir = test_data_path("malformed");
    expectation *expected = NULL;
    size_t n_expected = load_expectations(dir, &expected);
    CHECK(n_expected >= 22, "expected at least 22 malformed files, EXPECTED.tsv lists %zu", n_expected);

    DIR *d = opendir(dir);
    CHECK(d != NULL, "cannot list %s", dir);
    size_t tried = 0;
    for (struct dirent *e; d && (e = readdir(d)) != NULL;) {
        if (!ends_with(e->d_name, ".safetensors"))
            continue;
        expectation *x = NULL;
        for (size_t i = 0; i < n_expected; i++)
            if (strcmp(expected[i].file, e->d_name) == 0)
                x = &expected[i];
        CHECK(x != NULL, "malformed/%s has no line in EXPECTED.tsv", e->d_name);
        size_t n = strlen(dir) + strlen(e->d_name) + 2;
        char *path = malloc(n);
        if (!path)
            break;
        snprintf(path, n, "%s/%s", dir, e->d_name);
        struct stat info;
        CHECK(stat(path, &info) == 0 && info.st_size < 2048, "%s must be under 2 KB", path);
        check_open_fails(path, KILN_ERR_FORMAT, x ? x->substring : NULL);
        if (x)
            x->seen = 1;
        tried++;
        free(path);
    }
    if (d)
        closedir(d);
    CHECK(tried == n_expected, "tried %zu files, EXPECTED.tsv lists %zu", tried, n_expected);
    for (size_t i = 0; i < n_expected; i++) {
        CHECK(expected[i].seen, "EXPECTED.tsv names %s, which is not in malformed/", expected[i].file);
        free(expected[i].file);
        free(expected[i].substring);
    }
    free(expected);
    free(dir);
}

/* Whatever a damaged copy of the example holds, opening it must either fail
 * with a format error or give descriptors that stay inside the file and
 * cover its data exactly; the sanitizer build checks that nothing is read
 * out of bounds on the way. */
static void check_consistent(const kiln_weights *w, const char *what)
{
    uint64_t expected = 0, size = kiln_weights_file_size(w);
    for (size_t i = 0; i < kiln_weights_count(w); i++) {
        const kiln_tensor_desc *t = kiln_weights_tensor(w, i);
        if (i == 0)
            expected = t->offset;
        CHECK(t->offset == expected, "%s: tensor '%s' at %llu, expected %llu", what, t->name,
              (unsigned long long)t->offset, (unsigned long long)expected);
        uint64_t numel = 1;
        for (int d = 0; d < t->ndim; d++)
            numel *= (uint64_t)t->shape[d];
        CHECK(numel * kiln_dtype_size(t->dtype) == t->nbytes, "%s: '%s' nbytes does not match its shape", what,
              t->name);
        expected = t->offset + t->nbytes;
        if (t->nbytes <= 4096 && (t->dtype == KILN_DTYPE_F32 || t->dtype == KILN_DTYPE_F16 ||
                                  t->dtype == KILN_DTYPE_BF16)) {
            float dst[1024];
            size_t count = (size_t)(t->nbytes / kiln_dtype_size(t->dtype));
            CHECK(kiln_weights_read_f32(w, t, dst, count) == KILN_OK, "%s: '%s' does not read", what, t->name);
        }
    }
    CHECK(kiln_weights_count(w) == 0 || expected == size, "%s: data ends at %llu, file at %llu", what,
          (unsigned long long)expected, (unsigned long long)size);
}

static void damage(unsigned char *bytes, size_t size, const char *path)
{
    /* every truncation, and one byte too many (read_whole leaves a NUL after
     * the last byte) */
    int unexpected = 0;
    for (size_t len = 0; len <= size + 1 && unexpected < 5; len++) {
        if (len == size || write_whole(path, bytes, len) != 0)
            continue;
        kiln_weights *w = UNTOUCHED;
        kiln_status st = kiln_weights_open(path, &w);
        if (st != KILN_ERR_FORMAT || w != UNTOUCHED) {
            CHECK(0, "example cut to %zu bytes: expected a format error, got %d (%s)", len, st, kiln_last_error());
            unexpected++;
            if (st == KILN_OK)
                kiln_weights_destroy(w);
        }
    }

    /* every byte of the length prefix and the header, set to a few values */
    static const unsigned char values[] = {0x00, '"', '-', '9', ']', '}', 0xff};
    size_t opened = 0, failed = 0;
    for (size_t pos = 0; pos < EXAMPLE_DATA_START && unexpected < 5; pos++) {
        for (size_t v = 0; v < sizeof values; v++) {
            if (bytes[pos] == values[v])
                continue;
            unsigned char saved = bytes[pos];
            bytes[pos] = values[v];
            int written = write_whole(path, bytes, size);
            bytes[pos] = saved;
            if (written != 0)
                continue;
            kiln_weights *w = UNTOUCHED;
            kiln_status st = kiln_weights_open(path, &w);
            if (st == KILN_OK) {
                char what[64];
                snprintf(what, sizeof what, "byte %zu set to 0x%02x", pos, values[v]);
                check_consistent(w, what);
                kiln_weights_destroy(w);
                opened++;
            } else {
                failed++;
                if (st != KILN_ERR_FORMAT || w != UNTOUCHED) {
                    CHECK(0, "byte %zu set to 0x%02x: expected ok or a format error, got %d (%s)", pos, values[v],
                          st, kiln_last_error());
                    unexpected++;
                }
            }
        }
    }
    CHECK(opened > 0 && failed > 0, "damaged headers: %zu opened, %zu failed; expected some of each", opened,
          failed);
}

static void test_damaged_copies(void)
{
    char *src = test_data_path("example.safetensors");
    char *path = tmp_path("damaged.safetensors");
    size_t size = 0;
    unsigned char *bytes = (unsigned char *)read_whole(src, &size);
    CHECK(bytes && path && size == EXAMPLE_SIZE, "cannot read %s", src);
    if (bytes && path && size == EXAMPLE_SIZE)
        damage(bytes, size, path);
    free(bytes);
    free(path);
    free(src);
}

TEST_MAIN(TEST(test_example_figures), TEST(test_example_metadata), TEST(test_example_values),
          TEST(test_read_wrong_count), TEST(test_all_dtypes), TEST(test_misaligned), TEST(test_zero_tensors),
          TEST(test_read_from_fifo), TEST(test_missing_file), TEST(test_directory), TEST(test_malformed_corpus),
          TEST(test_damaged_copies))
