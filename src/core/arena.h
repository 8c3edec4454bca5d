/*
 * arena.h - one 64-byte-aligned block that activations are carved from.
 *
 * The executor sizes an arena once from the memory plan and hands out
 * regions by offset; a bump allocator covers the simpler cases. Nothing is
 * freed individually: reset to a mark, or deinit. Not thread-safe: one
 * owner allocates, any thread may use the memory handed out.
 */
#ifndef KILN_CORE_ARENA_H
#define KILN_CORE_ARENA_H

#include <stddef.h>

#include "kiln.h"

#define ARENA_ALIGN 64

typedef struct arena {
    unsigned char *base; /* ARENA_ALIGN-aligned, owned */
    size_t size;         /* capacity in bytes */
    size_t used;         /* bump position */
    size_t high_water;   /* largest `used` seen since init */
} arena;

/* Allocates size bytes (rounded up to ARENA_ALIGN). Errors: KILN_ERR_NOMEM,
 * with the size in the message. The arena is left empty on failure. */
kiln_status arena_init(arena *a, size_t size);
void arena_deinit(arena *a);

/* bytes from the arena, ARENA_ALIGN-aligned, or NULL when it does not fit
 * (the arena is unchanged then). */
void *arena_alloc(arena *a, size_t bytes);

/* The memory at a planned offset (offset + bytes <= size is the caller's
 * invariant, asserted in debug builds). */
void *arena_at(const arena *a, size_t offset);

size_t arena_mark(const arena *a);
void arena_reset_to(arena *a, size_t mark);

/* Hands the whole pages inside [p, p + bytes) back to the OS (madvise
 * MADV_DONTNEED): they stop counting in the resident set and read as zeros
 * when next touched. Only for memory whose contents are dead. */
void memory_release_pages(void *p, size_t bytes);

/* The same for the arena's block: its contents are lost, its size and
 * offsets stay. */
void arena_release_pages(arena *a);

/* Faults in the pages of [p, p + bytes) ahead of use (madvise
 * MADV_POPULATE_WRITE; a write per page on kernels without it), keeping
 * their contents. A first touch costs several times more inside a kernel,
 * and more again when two threads fault the same page. */
void memory_populate_pages(void *p, size_t bytes);

/* n rounded up to a multiple of ARENA_ALIGN, or 0 if that overflows. */
size_t arena_round_up(size_t n);

#endif
