/*
 * cache_dir.h - where kiln keeps what it learns between runs (the tuning
 * cache, the performance history, model hashes): $XDG_CACHE_HOME/kiln, or
 * ~/.cache/kiln when XDG_CACHE_HOME is unset or relative (the XDG spec
 * calls a relative one invalid).
 */
#ifndef KILN_CORE_CACHE_DIR_H
#define KILN_CORE_CACHE_DIR_H

#include <stddef.h>

#include "kiln.h"

/* The path of the file `name` in kiln's cache folder into buf. Errors:
 * KILN_ERR_INVALID when neither XDG_CACHE_HOME nor HOME is set, or the path
 * does not fit in size bytes. Nothing is created. */
kiln_status cache_dir_path(const char *name, char *buf, size_t size);

/* mkdir -p of the folders above the file at path. Errors: KILN_ERR_IO
 * naming the folder that could not be made, KILN_ERR_NOMEM. */
kiln_status cache_dir_make_parents(const char *path);

#endif
