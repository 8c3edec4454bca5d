/*
 * tuning.c - the tuning cache: what `kiln tune` measured best, per CPU
 * model, kernel level, model hash and resolution, in one JSON file that
 * survives restarts (kiln.h: kiln_tuning_*).
 *
 * The file:
 *   {"format": "kiln-tuning", "version": 1,
 *    "entries": [{"cpu": ..., "isa": ..., "model_hash": ..., "model_path": ...,
 *                 "resolution": "64x64", "width": 64, "height": 64,
 *                 "batch_size": 2, "optimizations": {"attention": "tiled", ...},
 *                 "images_per_s": 3.1, "measured_at": "2026-11-24T10:00:00Z",
 *                 "measured_at_unix": ..., "kiln_version": "0.1.0"}]}
 * Written to a temporary file in the same folder and renamed over the old
 * one, so a reader never sees half a file.
 */
#include "perf/tuning.h"

#include <errno.h>
#include <fcntl.h>
#include <jansson.h>
#include <limits.h>
#include <openssl/evp.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#include "core/cache_dir.h"
#include "core/cpu.h"
#include "core/error.h"
#include "perf/optimizations.h"

#define TUNING_FORMAT "kiln-tuning"
#define TUNING_VERSION 1
#define SAMPLE_BLOCKS 64
#define SAMPLE_BYTES 4096
#define MAX_HEADER_BYTES ((uint64_t)100 << 20) /* as the safetensors reader allows */

kiln_status kiln_tuning_cache_path(char *buf, size_t size)
{
    return cache_dir_path("tuning.json", buf, size);
}

/* ---- the model hash ---- */

static int read_at(int fd, void *buf, size_t n, uint64_t offset)
{
    char *p = buf;
    while (n) {
        ssize_t got = pread(fd, p, n, (off_t)offset);
        if (got < 0 && errno == EINTR)
            continue;
        if (got <= 0)
            return -1;
        p += got, n -= (size_t)got, offset += (uint64_t)got;
    }
    return 0;
}

/* Adds one safetensors file to the digest: its size, its header, and the
 * sampled blocks of its data (kiln.h says which). */
static kiln_status hash_file(EVP_MD_CTX *ctx, const char *path)
{
    kiln_status st = KILN_OK;
    unsigned char *buf = NULL;
    int fd = open(path, O_RDONLY | O_CLOEXEC);
    struct stat sb;
    if (fd < 0 || fstat(fd, &sb) != 0) {
        st = err_set(KILN_ERR_IO, "%s: cannot open for the model hash: %s", path, strerror(errno));
        goto fail;
    }
    uint64_t size = (uint64_t)sb.st_size;
    unsigned char len8[8];
    if (size < 8 || read_at(fd, len8, 8, 0) != 0) {
        st = err_set(KILN_ERR_FORMAT, "%s: too short for a safetensors file (%llu bytes)", path,
                     (unsigned long long)size);
        goto fail;
    }
    uint64_t hlen = 0;
    for (int i = 7; i >= 0; i--)
        hlen = hlen << 8 | len8[i];
    if (hlen > MAX_HEADER_BYTES || hlen > size - 8) {
        st = err_set(KILN_ERR_FORMAT, "%s: byte 0: header length %llu does not fit the file of %llu bytes", path,
                     (unsigned long long)hlen, (unsigned long long)size);
        goto fail;
    }
    uint64_t data = 8 + hlen, data_len = size - data;
    size_t buf_size = hlen + 8 > SAMPLE_BLOCKS * SAMPLE_BYTES ? hlen + 8 : SAMPLE_BLOCKS * SAMPLE_BYTES;
    buf = malloc(buf_size);
    if (!buf) {
        st = err_set(KILN_ERR_NOMEM, "%s: cannot allocate %zu bytes for the model hash", path, buf_size);
        goto fail;
    }
    unsigned char size8[8];
    for (int i = 0; i < 8; i++)
        size8[i] = (unsigned char)(size >> (8 * i));
    EVP_DigestUpdate(ctx, size8, 8);
    if (read_at(fd, buf, (size_t)data, 0) != 0) {
        st = err_set(KILN_ERR_IO, "%s: cannot read the header: %s", path, strerror(errno));
        goto fail;
    }
    EVP_DigestUpdate(ctx, buf, (size_t)data);
    if (data_len <= (uint64_t)SAMPLE_BLOCKS * SAMPLE_BYTES) {
        /* small: all of it */
        if (data_len && read_at(fd, buf, (size_t)data_len, data) != 0) {
            st = err_set(KILN_ERR_IO, "%s: cannot read the data: %s", path, strerror(errno));
            goto fail;
        }
        EVP_DigestUpdate(ctx, buf, (size_t)data_len);
    } else {
        /* block i at data + i * (data_len - block) / (SAMPLE_BLOCKS - 1): the
         * first and the last block included */
        for (uint64_t i = 0; i < SAMPLE_BLOCKS; i++) {
            uint64_t at = data + i * (data_len - SAMPLE_BYTES) / (SAMPLE_BLOCKS - 1);
            if (read_at(fd, buf, SAMPLE_BYTES, at) != 0) {
                st = err_set(KILN_ERR_IO, "%s: cannot read byte %llu for the model hash", path,
                             (unsigned long long)at);
                goto fail;
            }
            EVP_DigestUpdate(ctx, buf, SAMPLE_BYTES);
        }
    }
fail:
    free(buf);
    if (fd >= 0)
        close(fd);
    return st;
}

kiln_status kiln_model_hash(const char *path, char out[KILN_MODEL_HASH_HEX])
{
    static const char *const parts[] = {"unet/diffusion_pytorch_model.safetensors",
                                        "vae/diffusion_pytorch_model.safetensors", "text_encoder/model.safetensors"};
    struct stat sb;
    if (!path || stat(path, &sb) != 0)
        return err_set(KILN_ERR_IO, "%s: cannot hash the model: %s", path ? path : "(null)", strerror(errno));
    EVP_MD_CTX *ctx = EVP_MD_CTX_new();
    if (!ctx || EVP_DigestInit_ex(ctx, EVP_sha256(), NULL) != 1) {
        EVP_MD_CTX_free(ctx);
        return err_set(KILN_ERR_NOMEM, "cannot start SHA-256 for the model hash");
    }
    kiln_status st = KILN_OK;
    if (S_ISDIR(sb.st_mode)) {
        for (size_t i = 0; i < sizeof parts / sizeof parts[0] && st == KILN_OK; i++) {
            char file[PATH_MAX];
            if (snprintf(file, sizeof file, "%s/%s", path, parts[i]) >= (int)sizeof file) {
                st = err_set(KILN_ERR_INVALID, "%s: path too long", path);
                break;
            }
            EVP_DigestUpdate(ctx, parts[i], strlen(parts[i]) + 1);
            st = hash_file(ctx, file);
        }
    } else {
        st = hash_file(ctx, path);
    }
    if (st == KILN_OK) {
        unsigned char digest[EVP_MAX_MD_SIZE];
        unsigned int len = 0;
        EVP_DigestFinal_ex(ctx, digest, &len);
        for (unsigned int i = 0; i < len && i < 32; i++)
            snprintf(out + 2 * i, 3, "%02x", digest[i]);
    }
    EVP_MD_CTX_free(ctx);
    return st;
}

kiln_status kiln_tuning_key(const char *model_path, int width, int height, kiln_tuning *key)
{
    kiln_tuning k;
    memset(&k, 0, sizeof k);
    kiln_status st = kiln_model_hash(model_path, k.model_hash);
    if (st != KILN_OK)
        return st;
    const kiln_cpu_info *cpu = cpu_get();
    snprintf(k.cpu, sizeof k.cpu, "%s", cpu->model);
    snprintf(k.isa, sizeof k.isa, "%s", kiln_isa_name(cpu_isa()));
    char abs[PATH_MAX];
    snprintf(k.model_path, sizeof k.model_path, "%.1023s", realpath(model_path, abs) ? abs : model_path);
    k.width = width;
    k.height = height;
    *key = k;
    return KILN_OK;
}

/* ---- the file ---- */

static int same_key(const kiln_tuning *a, const kiln_tuning *b)
{
    return !strcmp(a->cpu, b->cpu) && !strcmp(a->isa, b->isa) && !strcmp(a->model_hash, b->model_hash) &&
           a->width == b->width && a->height == b->height;
}

static void copy_string(json_t *o, const char *name, char *dst, size_t size)
{
    const char *s = json_string_value(json_object_get(o, name));
    snprintf(dst, size, "%s", s ? s : "");
}

/* One entry from JSON; -1 with *why set when a required field is missing. */
static int entry_from_json(json_t *o, kiln_tuning *t, const char **why)
{
    memset(t, 0, sizeof *t);
    if (!json_is_object(o)) {
        *why = "an entry is not an object";
        return -1;
    }
    const char *required[] = {"cpu", "isa", "model_hash"};
    for (size_t i = 0; i < 3; i++)
        if (!json_is_string(json_object_get(o, required[i]))) {
            *why = "an entry lacks cpu, isa or model_hash";
            return -1;
        }
    copy_string(o, "cpu", t->cpu, sizeof t->cpu);
    copy_string(o, "isa", t->isa, sizeof t->isa);
    copy_string(o, "model_hash", t->model_hash, sizeof t->model_hash);
    copy_string(o, "model_path", t->model_path, sizeof t->model_path);
    copy_string(o, "kiln_version", t->kiln_version, sizeof t->kiln_version);
    json_t *w = json_object_get(o, "width"), *h = json_object_get(o, "height"), *b = json_object_get(o, "batch_size");
    if (!json_is_integer(w) || !json_is_integer(h) || !json_is_integer(b)) {
        *why = "an entry lacks width, height or batch_size";
        return -1;
    }
    t->width = (int)json_integer_value(w);
    t->height = (int)json_integer_value(h);
    t->batch_size = (int)json_integer_value(b);
    if (t->batch_size < 1 || t->batch_size > KILN_MAX_IMAGES) {
        *why = "an entry's batch_size is out of range";
        return -1;
    }
    t->images_per_s = json_number_value(json_object_get(o, "images_per_s"));
    t->measured_at = (int64_t)json_integer_value(json_object_get(o, "measured_at_unix"));
    kiln_optimizations_defaults(&t->optimizations);
    json_t *opts = json_object_get(o, "optimizations");
    const char *name;
    json_t *value;
    if (!json_is_object(opts)) {
        *why = "an entry lacks its optimizations";
        return -1;
    }
    json_object_foreach(opts, name, value) {
        if (!json_is_string(value) ||
            kiln_optimizations_set(&t->optimizations, name, json_string_value(value)) != KILN_OK) {
            *why = "an entry has an unknown optimization or value";
            return -1;
        }
    }
    return 0;
}

static json_t *entry_to_json(const kiln_tuning *t)
{
    char when[32] = "", res[32];
    time_t secs = (time_t)t->measured_at;
    struct tm tm;
    if (gmtime_r(&secs, &tm))
        strftime(when, sizeof when, "%Y-%m-%dT%H:%M:%SZ", &tm);
    snprintf(res, sizeof res, "%dx%d", t->width, t->height);
    json_t *opts = json_object();
    for (int k = 0; k < KILN_OPT_COUNT; k++) {
        char v[32];
        kiln_optimizations_get(&t->optimizations, (kiln_opt)k, v, sizeof v);
        json_object_set_new(opts, kiln_opt_name((kiln_opt)k), json_string(v));
    }
    return json_pack("{s:s, s:s, s:s, s:s, s:s, s:i, s:i, s:i, s:o, s:f, s:s, s:I, s:s}", "cpu", t->cpu, "isa", t->isa,
                     "model_hash", t->model_hash, "model_path", t->model_path, "resolution", res, "width", t->width,
                     "height", t->height, "batch_size", t->batch_size, "optimizations", opts, "images_per_s",
                     t->images_per_s, "measured_at", when, "measured_at_unix", (json_int_t)t->measured_at,
                     "kiln_version", t->kiln_version);
}

/* Reads the cache: *root is NULL for a missing file. KILN_ERR_FORMAT naming
 * the file when it is not a valid cache. */
static kiln_status load(const char *path, json_t **root)
{
    *root = NULL;
    if (access(path, F_OK) != 0 && errno == ENOENT)
        return KILN_OK;
    json_error_t jerr;
    json_t *r = json_load_file(path, JSON_REJECT_DUPLICATES, &jerr);
    if (!r) {
        if (access(path, R_OK) != 0)
            return err_set(KILN_ERR_IO, "tuning cache %s: cannot read: %s", path, strerror(errno));
        return err_set(KILN_ERR_FORMAT, "tuning cache %s is not valid JSON (line %d, column %d: %s)", path,
                       jerr.line, jerr.column, jerr.text);
    }
    const char *format = json_string_value(json_object_get(r, "format"));
    json_t *entries = json_object_get(r, "entries");
    if (!format || strcmp(format, TUNING_FORMAT) != 0 || !json_is_array(entries)) {
        json_decref(r);
        return err_set(KILN_ERR_FORMAT, "tuning cache %s is not a kiln tuning cache (no \"format\": \"%s\" with "
                       "\"entries\")", path, TUNING_FORMAT);
    }
    size_t i;
    json_t *e;
    json_array_foreach(entries, i, e) {
        kiln_tuning t;
        const char *why = "";
        if (entry_from_json(e, &t, &why) != 0) {
            json_decref(r);
            return err_set(KILN_ERR_FORMAT, "tuning cache %s: entry %zu: %s", path, i, why);
        }
    }
    *root = r;
    return KILN_OK;
}

kiln_status kiln_tuning_lookup(const char *cache_path, const kiln_tuning *key, kiln_tuning *out,
                               kiln_tuning_match *match)
{
    char path[PATH_MAX];
    if (!cache_path) {
        kiln_status st = kiln_tuning_cache_path(path, sizeof path);
        if (st != KILN_OK)
            return st;
        cache_path = path;
    }
    json_t *root;
    kiln_status st = load(cache_path, &root);
    if (st != KILN_OK)
        return st;
    kiln_tuning_match best = KILN_TUNING_MISSING;
    kiln_tuning found, stale;
    memset(&stale, 0, sizeof stale);
    if (root) {
        size_t i;
        json_t *e;
        const char *why;
        json_array_foreach(json_object_get(root, "entries"), i, e) {
            if (entry_from_json(e, &found, &why) != 0 || found.width != key->width || found.height != key->height)
                continue;
            if (same_key(&found, key)) {
                best = KILN_TUNING_FOUND;
                break;
            }
            /* the same model (by hash) measured elsewhere, or the same path
             * holding another file on this machine */
            if (!strcmp(found.model_hash, key->model_hash)) {
                if (best == KILN_TUNING_MISSING || best == KILN_TUNING_MODEL_CHANGED)
                    best = KILN_TUNING_CPU_CHANGED, stale = found;
            } else if (key->model_path[0] && !strcmp(found.model_path, key->model_path) && best == KILN_TUNING_MISSING) {
                best = KILN_TUNING_MODEL_CHANGED, stale = found;
            }
        }
        json_decref(root);
    }
    *match = best;
    if (best == KILN_TUNING_FOUND)
        *out = found;
    else if (best != KILN_TUNING_MISSING)
        *out = stale;
    return KILN_OK;
}

kiln_status kiln_tuning_store(const char *cache_path, const kiln_tuning *t)
{
    char path[PATH_MAX], tmp[PATH_MAX + 16];
    if (!cache_path) {
        kiln_status st = kiln_tuning_cache_path(path, sizeof path);
        if (st != KILN_OK)
            return st;
        cache_path = path;
    }
    kiln_status st = cache_dir_make_parents(cache_path);
    if (st != KILN_OK)
        return st;
    json_t *root = NULL;
    if (load(cache_path, &root) != KILN_OK || !root) /* a broken cache is replaced */
        root = json_pack("{s:s, s:i, s:[]}", "format", TUNING_FORMAT, "version", TUNING_VERSION, "entries");
    if (!root)
        return err_set(KILN_ERR_NOMEM, "cannot build the tuning cache");
    json_t *entries = json_object_get(root, "entries"), *kept = json_array();
    size_t i;
    json_t *e;
    json_array_foreach(entries, i, e) {
        kiln_tuning old;
        const char *why;
        if (entry_from_json(e, &old, &why) == 0 && same_key(&old, t))
            continue;
        json_array_append(kept, e);
    }
    json_array_append_new(kept, entry_to_json(t));
    json_object_set_new(root, "entries", kept);
    char *text = json_dumps(root, JSON_INDENT(2) | JSON_PRESERVE_ORDER);
    json_decref(root);
    if (!text)
        return err_set(KILN_ERR_NOMEM, "cannot serialize the tuning cache");
    snprintf(tmp, sizeof tmp, "%s.XXXXXX", cache_path);
    int fd = mkstemp(tmp);
    if (fd < 0) {
        free(text);
        return err_set(KILN_ERR_IO, "cannot write the tuning cache next to %s: %s", cache_path, strerror(errno));
    }
    size_t len = strlen(text), done = 0;
    while (done < len) {
        ssize_t n = write(fd, text + done, len - done);
        if (n < 0 && errno == EINTR)
            continue;
        if (n <= 0)
            break;
        done += (size_t)n;
    }
    int ok = done == len && write(fd, "\n", 1) == 1 && fsync(fd) == 0;
    int saved_errno = errno;
    fchmod(fd, 0644);
    close(fd);
    free(text);
    if (!ok || rename(tmp, cache_path) != 0) {
        if (ok)
            saved_errno = errno;
        unlink(tmp);
        return err_set(KILN_ERR_IO, "cannot write the tuning cache %s: %s", cache_path, strerror(saved_errno));
    }
    return KILN_OK;
}

void kiln_tuning_describe(const kiln_tuning *t, char *buf, size_t size)
{
    const kiln_optimizations *o = &t->optimizations;
    char threads[16], tile[16];
    if (o->threads)
        snprintf(threads, sizeof threads, "%d", o->threads);
    else
        snprintf(threads, sizeof threads, "all");
    if (o->attention_tile)
        snprintf(tile, sizeof tile, "%d", o->attention_tile);
    else
        snprintf(tile, sizeof tile, "auto");
    char attention[32];
    if (o->attention == KILN_ATTENTION_TILED)
        snprintf(attention, sizeof attention, "tiled (tile %s)", tile);
    else
        snprintf(attention, sizeof attention, "plain");
    snprintf(buf, size, "batch %d, %s, %s thread%s, attention %s%s, %.3g images/s", t->batch_size,
             kiln_precision_name(o->precision), threads, o->threads == 1 ? "" : "s", attention,
             o->winograd ? "" : ", winograd off", t->images_per_s);
}

void tuning_explain(kiln_tuning_match match, const kiln_tuning *key, const kiln_tuning *entry, const char *cache_path,
                    char *buf, size_t size)
{
    char desc[160];
    switch (match) {
    case KILN_TUNING_FOUND:
        kiln_tuning_describe(entry, desc, sizeof desc);
        char when[32] = "an unknown time";
        time_t secs = (time_t)entry->measured_at;
        struct tm tm;
        if (entry->measured_at && gmtime_r(&secs, &tm))
            strftime(when, sizeof when, "%Y-%m-%d %H:%M UTC", &tm);
        snprintf(buf, size, "using tuned settings from %s: %s (measured %s by kiln %s)", cache_path, desc, when,
                 entry->kiln_version);
        break;
    case KILN_TUNING_CPU_CHANGED:
        if (!strcmp(entry->cpu, key->cpu)) {
            snprintf(buf, size, "tuned settings in %s ignored: they were measured with the %s kernels and this run "
                     "uses %s (KILN_ISA); using the defaults (run kiln tune again)", cache_path, entry->isa, key->isa);
            break;
        }
        snprintf(buf, size, "tuned settings in %s ignored: they were measured on another CPU (%s, kernels %s; this "
                 "is %s, kernels %s); using the defaults (run kiln tune again)", cache_path, entry->cpu, entry->isa,
                 key->cpu, key->isa);
        break;
    case KILN_TUNING_MODEL_CHANGED:
        snprintf(buf, size, "tuned settings in %s ignored: the model %s changed since it was tuned (hash %.12s, now "
                 "%.12s); using the defaults (run kiln tune again)", cache_path, key->model_path, entry->model_hash,
                 key->model_hash);
        break;
    default:
        snprintf(buf, size, "no tuned settings in %s for this CPU, model and %dx%d; using the defaults (run kiln "
                 "tune -W %d -H %d first)", cache_path, key->width, key->height, key->width, key->height);
        break;
    }
}
