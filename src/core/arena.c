#include "core/arena.h"

#include <assert.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <unistd.h>

#include "core/error.h"

size_t arena_round_up(size_t n)
{
    if (n > SIZE_MAX - (ARENA_ALIGN - 1))
        return 0;
    return (n + ARENA_ALIGN - 1) & ~(size_t)(ARENA_ALIGN - 1);
}

kiln_status arena_init(arena *a, size_t size)
{
    memset(a, 0, sizeof *a);
    size_t rounded = arena_round_up(size ? size : 1);
    if (rounded == 0)
        return err_set(KILN_ERR_NOMEM, "arena of %zu bytes is too large", size);
    void *base = NULL;
    if (posix_memalign(&base, ARENA_ALIGN, rounded) != 0)
        return err_set(KILN_ERR_NOMEM, "cannot allocate an arena of %zu bytes", rounded);
    a->base = base;
    a->size = rounded;
    return KILN_OK;
}

void arena_deinit(arena *a)
{
    free(a->base);
    memset(a, 0, sizeof *a);
}

void memory_release_pages(void *p, size_t bytes)
{
    if (!p || bytes == 0)
        return;
    uintptr_t page = (uintptr_t)sysconf(_SC_PAGESIZE);
    uintptr_t start = ((uintptr_t)p + page - 1) & ~(page - 1), end = ((uintptr_t)p + bytes) & ~(page - 1);
    /* a failure leaves the pages resident: nothing to undo */
    if (end > start)
        (void)madvise((void *)start, end - start, MADV_DONTNEED);
}

void arena_release_pages(arena *a)
{
    memory_release_pages(a->base, a->size);
}

void memory_populate_pages(void *p, size_t bytes)
{
    if (!p || bytes == 0)
        return;
    uintptr_t page = (uintptr_t)sysconf(_SC_PAGESIZE);
    uintptr_t start = (uintptr_t)p & ~(page - 1), end = (uintptr_t)p + bytes;
#ifdef MADV_POPULATE_WRITE
    if (madvise((void *)start, end - start, MADV_POPULATE_WRITE) == 0)
        return;
#endif
    /* the same value back: a write fault without a change */
    for (uintptr_t a = start < (uintptr_t)p ? (uintptr_t)p : start; a < end; a = (a & ~(page - 1)) + page) {
        volatile unsigned char *byte = (volatile unsigned char *)a;
        *byte = *byte;
    }
}

void *arena_alloc(arena *a, size_t bytes)
{
    size_t rounded = arena_round_up(bytes);
    if (rounded == 0 && bytes != 0)
        return NULL;
    if (rounded > a->size - a->used)
        return NULL;
    void *p = a->base + a->used;
    a->used += rounded;
    if (a->used > a->high_water)
        a->high_water = a->used;
    return p;
}

void *arena_at(const arena *a, size_t offset)
{
    assert(offset <= a->size);
    return a->base + offset;
}

size_t arena_mark(const arena *a)
{
    return a->used;
}

void arena_reset_to(arena *a, size_t mark)
{
    assert(mark <= a->used);
    a->used = mark;
}
