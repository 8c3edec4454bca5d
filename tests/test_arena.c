/* Arena: alignment, rounding, failure leaving it unchanged, marks, high
 * water, overflow; pages given back and faulted in ahead. Written against
 * arena.h. */
#include <stdint.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <unistd.h>

#include "core/arena.h"
#include "test_support.h"

static int is_aligned(const void *p)
{
    return ((uintptr_t)p % ARENA_ALIGN) == 0;
}

static size_t expected_round_up(size_t n)
{
    size_t rem = n % ARENA_ALIGN;
    return rem == 0 ? n : n + (ARENA_ALIGN - rem);
}

static void test_round_up(void)
{
    CHECK_EQ_INT(ARENA_ALIGN, 64);
    for (size_t n = 0; n < 100000; n++) {
        size_t r = arena_round_up(n);
        if (r != expected_round_up(n)) {
            CHECK(0, "arena_round_up(%zu): expected %zu, got %zu", n, expected_round_up(n), r);
            break;
        }
    }
    /* near the top: the largest multiple of 64 is SIZE_MAX - 63; anything
     * above it cannot be rounded up */
    for (size_t k = 0; k < 300; k++) {
        size_t n = SIZE_MAX - k;
        size_t want = n <= SIZE_MAX - (ARENA_ALIGN - 1) ? expected_round_up(n) : 0;
        size_t r = arena_round_up(n);
        if (r != want) {
            CHECK(0, "arena_round_up(SIZE_MAX - %zu): expected %zu, got %zu", k, want, r);
            break;
        }
    }
    CHECK(arena_round_up(SIZE_MAX) == 0, "arena_round_up(SIZE_MAX): expected 0 (overflow), got %zu",
          arena_round_up(SIZE_MAX));
    CHECK(arena_round_up(SIZE_MAX - 62) == 0, "arena_round_up(SIZE_MAX - 62): expected 0, got %zu",
          arena_round_up(SIZE_MAX - 62));
    CHECK(arena_round_up(SIZE_MAX - 63) == SIZE_MAX - 63, "arena_round_up(SIZE_MAX - 63): expected itself, got %zu",
          arena_round_up(SIZE_MAX - 63));
    CHECK(arena_round_up(SIZE_MAX / 2) == SIZE_MAX / 2 + 1, "arena_round_up(SIZE_MAX / 2): expected %zu, got %zu",
          SIZE_MAX / 2 + 1, arena_round_up(SIZE_MAX / 2));
}

static void test_init_sizes(void)
{
    static const size_t sizes[] = {1, 63, 64, 65, 1000, 4096, 100001};
    for (size_t i = 0; i < sizeof sizes / sizeof sizes[0]; i++) {
        arena a;
        memset(&a, 0xAB, sizeof a);
        CHECK_EQ_INT(arena_init(&a, sizes[i]), KILN_OK);
        CHECK(a.base != NULL && is_aligned(a.base), "arena_init(%zu): expected a 64-aligned base, got %p", sizes[i],
              (void *)a.base);
        CHECK(a.size == expected_round_up(sizes[i]), "arena_init(%zu): expected size %zu, got %zu", sizes[i],
              expected_round_up(sizes[i]), a.size);
        CHECK(a.used == 0 && a.high_water == 0, "arena_init(%zu): expected used 0 and high water 0, got %zu, %zu",
              sizes[i], a.used, a.high_water);
        CHECK_EQ_INT(arena_mark(&a), 0);
        arena_deinit(&a);
        CHECK(a.base == NULL && a.size == 0 && a.used == 0, "arena_deinit: expected an empty arena");
        arena_deinit(&a); /* twice is harmless */
    }

    /* too large to round: fails, says the size, leaves the arena empty */
    arena a;
    memset(&a, 0xAB, sizeof a);
    kiln_status st = arena_init(&a, SIZE_MAX);
    CHECK_EQ_INT(st, KILN_ERR_NOMEM);
    CHECK(a.base == NULL && a.size == 0 && a.used == 0 && a.high_water == 0,
          "failed arena_init: expected an empty arena, got base %p size %zu used %zu", (void *)a.base, a.size, a.used);
    CHECK(strstr(kiln_last_error(), "18446744073709551615") != NULL || SIZE_MAX != 18446744073709551615u,
          "failed arena_init: expected the size in the message, got '%s'", kiln_last_error());
    CHECK(arena_alloc(&a, 1) == NULL, "alloc from a failed arena: expected NULL");
    arena_deinit(&a);
}

static void test_alloc_aligned_and_rounded(void)
{
    static const size_t requests[] = {1, 63, 64, 65, 0, 127, 128, 129, 1000, 3, 4096, 7};
    arena a;
    CHECK_EQ_INT(arena_init(&a, 1 << 16), KILN_OK);
    if (!a.base)
        return;
    for (size_t i = 0; i < sizeof requests / sizeof requests[0]; i++) {
        size_t before = arena_mark(&a);
        unsigned char *p = arena_alloc(&a, requests[i]);
        CHECK(p != NULL, "alloc(%zu) in a large arena: expected memory, got NULL", requests[i]);
        if (!p)
            continue;
        CHECK(is_aligned(p), "alloc(%zu): expected a 64-byte aligned pointer, got %p", requests[i], (void *)p);
        CHECK(p == a.base + before, "alloc(%zu): expected the bump position %zu, got offset %td", requests[i], before,
              p - a.base);
        CHECK(arena_mark(&a) - before == expected_round_up(requests[i]),
              "alloc(%zu): expected the arena to advance by %zu, got %zu", requests[i], expected_round_up(requests[i]),
              arena_mark(&a) - before);
        CHECK(arena_at(&a, before) == p, "arena_at(%zu): expected %p, got %p", before, (void *)p,
              arena_at(&a, before));
    }
    arena_deinit(&a);
}

static void test_alloc_that_does_not_fit(void)
{
    arena a;
    CHECK_EQ_INT(arena_init(&a, 1024), KILN_OK);
    if (!a.base)
        return;
    /* larger than the whole arena, and sizes whose rounding overflows */
    static const size_t too_big[] = {1025, 1088, SIZE_MAX, SIZE_MAX - 63, SIZE_MAX - 62, SIZE_MAX / 2};
    for (size_t i = 0; i < sizeof too_big / sizeof too_big[0]; i++) {
        CHECK(arena_alloc(&a, too_big[i]) == NULL, "alloc(%zu) in 1024 bytes: expected NULL", too_big[i]);
        CHECK(a.used == 0 && a.high_water == 0, "failed alloc(%zu): expected the arena unchanged, used %zu hw %zu",
              too_big[i], a.used, a.high_water);
    }

    void *p = arena_alloc(&a, 1000); /* takes 1024: all of it */
    CHECK(p != NULL, "alloc(1000) in 1024 bytes: expected memory");
    CHECK_EQ_INT(arena_mark(&a), 1024);
    CHECK(arena_alloc(&a, 1) == NULL, "alloc(1) in a full arena: expected NULL");
    CHECK_EQ_INT(arena_mark(&a), 1024);
    CHECK_EQ_INT(a.high_water, 1024);

    /* fits exactly, then one byte more does not */
    arena_reset_to(&a, 0);
    CHECK(arena_alloc(&a, 512) != NULL, "alloc(512): expected memory");
    size_t mark = arena_mark(&a);
    CHECK(arena_alloc(&a, 513) == NULL, "alloc(513) with 512 left: expected NULL (rounds to 576)");
    CHECK(arena_mark(&a) == mark && a.high_water == 1024, "failed alloc: expected mark %zu and hw 1024, got %zu, %zu",
          mark, arena_mark(&a), a.high_water);
    CHECK(arena_alloc(&a, SIZE_MAX - 10) == NULL, "alloc(SIZE_MAX - 10) in a half-full arena: expected NULL");
    CHECK_EQ_INT(arena_mark(&a), mark);
    void *rest = arena_alloc(&a, 449); /* rounds to 512: exactly what is left */
    CHECK(rest != NULL, "alloc(449) with 512 left: expected memory");
    CHECK_EQ_INT(arena_mark(&a), 1024);
    arena_deinit(&a);
}

static void test_marks_and_high_water(void)
{
    arena a;
    CHECK_EQ_INT(arena_init(&a, 64 * 1024), KILN_OK);
    if (!a.base)
        return;
    void *x = arena_alloc(&a, 100);
    size_t m1 = arena_mark(&a);
    void *p1 = arena_alloc(&a, 1000);
    void *p2 = arena_alloc(&a, 3000);
    size_t m2 = arena_mark(&a);
    void *p3 = arena_alloc(&a, 5);
    size_t top = arena_mark(&a);
    CHECK_EQ_INT(a.high_water, top);

    arena_reset_to(&a, m2);
    CHECK(arena_alloc(&a, 5) == p3, "after reset to a mark: expected the same pointer again");
    arena_reset_to(&a, m1);
    CHECK_EQ_INT(arena_mark(&a), m1);
    CHECK_EQ_INT(a.high_water, top);
    void *q1 = arena_alloc(&a, 1000);
    void *q2 = arena_alloc(&a, 3000);
    CHECK(q1 == p1 && q2 == p2, "after reset: expected %p, %p again, got %p, %p", p1, p2, q1, q2);
    CHECK_EQ_INT(a.high_water, top); /* same height again: no change */

    arena_reset_to(&a, 0);
    CHECK(arena_alloc(&a, 1) == x, "after reset to 0: expected the first pointer again");
    CHECK_EQ_INT(a.high_water, top);
    void *big = arena_alloc(&a, 20000);
    CHECK(big != NULL, "alloc(20000): expected memory");
    CHECK(a.high_water == arena_mark(&a) && a.high_water > top, "high water: expected %zu (the new maximum), got %zu",
          arena_mark(&a), a.high_water);
    size_t hw = a.high_water;
    arena_reset_to(&a, 0);
    arena_alloc(&a, 64);
    CHECK(a.high_water == hw, "high water after reset and a small alloc: expected %zu, got %zu", hw, a.high_water);
    arena_deinit(&a);
}

/* Fill the arena with random-sized allocations, write every byte handed out
 * (ASan sees any byte outside the block), and check nothing overlaps. */
static void test_write_everything(void)
{
    arena a;
    CHECK_EQ_INT(arena_init(&a, 300000 + 17), KILN_OK);
    if (!a.base)
        return;
    test_rng rng = test_rng_seed(7);
    enum { MAX_REGIONS = 4096 };
    static unsigned char *ptr[MAX_REGIONS];
    static size_t len[MAX_REGIONS];
    int count = 0;
    for (int round = 0; round < 3; round++) {
        arena_reset_to(&a, 0);
        count = 0;
        while (count < MAX_REGIONS) {
            size_t want = (size_t)(test_rng_next(&rng) % (round == 2 ? 64 : 5000));
            unsigned char *p = arena_alloc(&a, want);
            if (!p) {
                size_t left = a.size - arena_mark(&a);
                CHECK(expected_round_up(want) > left, "alloc(%zu) with %zu left: expected memory, got NULL", want,
                      left);
                break;
            }
            CHECK(is_aligned(p) && p >= a.base && p + want <= a.base + a.size,
                  "alloc(%zu): expected an aligned region inside the arena, got offset %td", want, p - a.base);
            memset(p, (count * 37 + 1) & 0xFF, want);
            ptr[count] = p;
            len[count] = want;
            count++;
        }
        for (int i = 0; i < count; i++) {
            unsigned char want = (unsigned char)((i * 37 + 1) & 0xFF);
            for (size_t k = 0; k < len[i]; k++)
                if (ptr[i][k] != want) {
                    CHECK(0, "region %d byte %zu: expected %u, got %u (regions overlap)", i, k, want, ptr[i][k]);
                    k = len[i];
                    i = count;
                }
            if (i + 1 < count)
                CHECK(ptr[i] + len[i] <= ptr[i + 1], "regions %d and %d overlap", i, i + 1);
        }
    }
    /* the tail of the arena is writable too */
    memset(a.base, 0, a.size);
    arena_deinit(&a);
}

/* Pages of [first, first + count) of p that mincore reports resident. */
static size_t resident_pages(unsigned char *p, size_t page, size_t first, size_t count)
{
    unsigned char in[64];
    if (count > sizeof in || mincore(p + first * page, count * page, in) != 0)
        return SIZE_MAX;
    size_t n = 0;
    for (size_t i = 0; i < count; i++)
        n += in[i] & 1;
    return n;
}

/* Populating makes every page of the range resident (the partial ones at
 * its ends too) and changes no byte; releasing gives back only the whole
 * pages inside its range, which then read as zeros. */
static void test_populate_and_release_pages(void)
{
    enum { PAGES = 32 };
    size_t page = (size_t)sysconf(_SC_PAGESIZE), bytes = PAGES * page;
    unsigned char *p = mmap(NULL, bytes, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
    CHECK(p != MAP_FAILED, "mmap of %zu bytes failed", bytes);
    if (p == MAP_FAILED)
        return;
    p[1 * page + 5] = 11;  /* in the first, partial page of the range */
    p[20 * page + 7] = 22; /* inside */
    CHECK_EQ_INT((int)resident_pages(p, page, 2, 18), 0);
    memory_populate_pages(p + page + 100, 29 * page);
    CHECK(resident_pages(p, page, 1, 30) == 30, "pages 1-30 after populating: %zu of 30 resident",
          resident_pages(p, page, 1, 30));
    CHECK(resident_pages(p, page, 31, 1) == 0, "page 31, past the range, resident after populating");
    CHECK(p[1 * page + 5] == 11 && p[20 * page + 7] == 22, "populating changed bytes: %u %u (expected 11 22)",
          p[1 * page + 5], p[20 * page + 7]);
    for (size_t i = page; i < 31 * page; i++)
        if (i != page + 5 && i != 20 * page + 7 && p[i] != 0) {
            CHECK(0, "byte %zu is %u after populating, expected 0", i, p[i]);
            break;
        }
    /* the range's first and last pages are partial: they stay */
    memory_release_pages(p + page + 100, 29 * page);
    CHECK(p[1 * page + 5] == 11, "a partial page was released: byte %zu is %u, expected 11", page + 5,
          p[1 * page + 5]);
    CHECK(resident_pages(p, page, 2, 28) == 0, "whole pages 2-29 after releasing: %zu still resident",
          resident_pages(p, page, 2, 28));
    CHECK(p[20 * page + 7] == 0, "a released page reads %u, expected 0", p[20 * page + 7]);
    munmap(p, bytes);
}

TEST_MAIN(TEST(test_round_up), TEST(test_init_sizes), TEST(test_alloc_aligned_and_rounded),
          TEST(test_alloc_that_does_not_fit), TEST(test_marks_and_high_water), TEST(test_write_everything),
          TEST(test_populate_and_release_pages))
