/*
 * tuning.h - the tuning cache (kiln.h: kiln_tuning_*), and the sentence the
 * CLI and the server say about a lookup.
 */
#ifndef KILN_PERF_TUNING_H
#define KILN_PERF_TUNING_H

#include <stddef.h>

#include "kiln.h"

/* What a lookup found, as one line for the user: "using tuned settings
 * from PATH: ...", or why none are used and that the defaults are. key is
 * what was looked up, entry what kiln_tuning_lookup returned (FOUND or a
 * stale entry). */
void tuning_explain(kiln_tuning_match match, const kiln_tuning *key, const kiln_tuning *entry, const char *cache_path,
                    char *buf, size_t size);

#endif
