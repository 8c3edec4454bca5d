/*
 * mapped_file.h - a whole file in memory, read-only.
 *
 * Memory-mapped where the file allows (so weights are shared between
 * processes and cost nothing to "load"); read into an allocation where it
 * does not (pipes, special files). Not thread-safe to open/close; the bytes
 * may be read from any thread.
 */
#ifndef KILN_CORE_MAPPED_FILE_H
#define KILN_CORE_MAPPED_FILE_H

#include <stddef.h>
#include <stdint.h>

#include "kiln.h"

typedef struct mapped_file {
    const unsigned char *data;
    uint64_t size;
    int is_mapped; /* 1: mmap, 0: malloc'd copy */
    int fd;        /* mapped: the file, kept open to see it change (mapped_file_check); else -1 */
    int64_t mtime_ns; /* mapped: its modification time when opened */
} mapped_file;

/* Errors: KILN_ERR_IO (names the path and the system's reason),
 * KILN_ERR_NOMEM. On failure *f is zeroed. */
kiln_status mapped_file_open(mapped_file *f, const char *path);
void mapped_file_close(mapped_file *f);

/* A mapped file's pages are read from the file itself whenever they are not
 * resident: a file truncated while mapped makes a read past its new end
 * fault (SIGBUS), and one rewritten in place changes the bytes under the
 * reader. Checks, through the descriptor kept open (so a file renamed over
 * the path does not count: the mapping keeps the old one), that the file
 * still has the size and modification time it had when opened. Errors:
 * KILN_ERR_IO naming path and what changed. A read copy always passes. */
kiln_status mapped_file_check(const mapped_file *f, const char *path);

/* Drops the resident pages of a mapped file (no-op for a read copy). */
void mapped_file_drop_pages(const mapped_file *f);

/* The same for the whole pages inside [p, p + bytes), when p lies in the
 * mapping; returns 1 if it did. */
int mapped_file_drop_range(const mapped_file *f, const void *p, size_t bytes);

#endif
