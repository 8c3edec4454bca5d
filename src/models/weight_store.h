/*
 * weight_store.h - a model's weights as f32 tensors in the layouts the
 * kernels read, each prepared once and shared by every graph built from it.
 *
 * Tensors are asked for by their canonical name: the name in the original
 * single-file SD checkpoints ("model.diffusion_model.out.2.weight"). A
 * store may hold several files (a diffusers folder has one per component);
 * a name map translates canonical names to a file's own names.
 *
 * Tensors are handed out as the file stores them (F32, F16 or BF16, in
 * PyTorch's layout), in place in the mapped file: the graph's weight cache
 * converts and packs them for the kernels. Only a tensor the file leaves
 * misaligned for its type is copied, into memory the store owns.
 */
#ifndef KILN_MODELS_WEIGHT_STORE_H
#define KILN_MODELS_WEIGHT_STORE_H

#include "core/tensor.h"
#include "kiln.h"

typedef struct weight_store weight_store;

/* Translates a canonical name into the name file w uses; writes it to buf
 * and returns 1, or returns 0 when the file cannot hold that tensor. The map
 * may look at w (say, to count a folder's blocks). */
typedef int (*weight_name_map)(const kiln_weights *w, const char *canonical, char *buf, size_t size);

kiln_status wstore_create(weight_store **out);
/* Takes ownership of w. map may be NULL (the file uses canonical names). */
kiln_status wstore_add_file(weight_store *ws, kiln_weights *w, weight_name_map map);
void wstore_destroy(weight_store *ws);

/* The file's descriptor of a canonical tensor, or NULL when absent. */
const kiln_tensor_desc *wstore_find(const weight_store *ws, const char *canonical);

/* The metadata value for key: one set with wstore_set_metadata, else the
 * first file's that has it, else NULL. */
const char *wstore_metadata(const weight_store *ws, const char *key);

/* Sets (or replaces) a metadata value for this model, for what a layout
 * keeps outside its weight files (a diffusers folder's config.json). Both
 * strings are copied. Errors: KILN_ERR_NOMEM. */
kiln_status wstore_set_metadata(weight_store *ws, const char *key, const char *value);

/* How strictly a tensor's stored shape must match the one asked for. */
typedef enum weight_kind {
    WEIGHT_PLAIN, /* the same element count: a [O, I, 1, 1] 1x1 convolution
                     and an [O, I] linear layer are the same matrix */
    WEIGHT_CONV,  /* exactly the shape asked for: [O, I, kh, kw] */
    WEIGHT_KIND_COUNT
} weight_kind;

/* The tensor `canonical` (F32, F16 or BF16) with the shape asked for (ndim
 * dims), checked against the file as kind says. *out's data lives as long
 * as the store. Errors: KILN_ERR_SHAPE naming the tensor, the shape found
 * and the shape expected; KILN_ERR_FORMAT when missing;
 * KILN_ERR_UNSUPPORTED for non-float dtypes; KILN_ERR_NOMEM. */
kiln_status wstore_get(weight_store *ws, const char *canonical, weight_kind kind, int ndim,
                       const int64_t *shape, tensor *out);

/* A store that holds no file but records what builders ask of it: each
 * wstore_get succeeds with the shape asked for over a placeholder that
 * must never be read.
 * Building a model's graphs against it lists the tensors a checkpoint of
 * that architecture has: how kiln writes random-weight models for tests. */
kiln_status wstore_create_recorder(weight_store **out);

/* The tensors recorded so far, in the order first asked for. index < count;
 * the name lives as long as the store. */
size_t wstore_recorded_count(const weight_store *ws);
void wstore_recorded(const weight_store *ws, size_t index, const char **name, int *ndim, int64_t shape[4]);

/* Drops the mapped files' pages from memory: call once every graph's
 * weights are prepared (copies made); a tensor touched later is read back. */
void wstore_drop_file_pages(weight_store *ws);

/* kiln_weights_check on every file: KILN_ERR_IO naming the first that was
 * truncated or modified since it was opened. */
kiln_status wstore_check_files(const weight_store *ws);

/* Drops the pages of [p, p + bytes) if they belong to one of the files. */
void wstore_drop_range(weight_store *ws, const void *p, size_t bytes);

/* Bytes the store copied (misaligned tensors). */
size_t wstore_copied_bytes(const weight_store *ws);

#endif
