#include "core/mapped_file.h"

#include <errno.h>
#include <fcntl.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <unistd.h>

#include "core/error.h"

/* Reads what a descriptor gives until end of file, growing the buffer. */
static kiln_status read_all(int fd, const char *path, mapped_file *f)
{
    size_t capacity = 1 << 16, size = 0;
    unsigned char *buf = malloc(capacity);
    if (!buf)
        return err_set(KILN_ERR_NOMEM, "%s: cannot allocate a read buffer", path);
    for (;;) {
        if (size == capacity) {
            unsigned char *grown = capacity <= SIZE_MAX / 2 ? realloc(buf, capacity * 2) : NULL;
            if (!grown) {
                free(buf);
                return err_set(KILN_ERR_NOMEM, "%s: cannot hold %zu bytes", path, capacity * 2);
            }
            buf = grown;
            capacity *= 2;
        }
        ssize_t n = read(fd, buf + size, capacity - size);
        if (n < 0) {
            if (errno == EINTR)
                continue;
            kiln_status st = err_set(KILN_ERR_IO, "%s: read failed at byte %zu: %s", path, size,
                                     strerror(errno));
            free(buf);
            return st;
        }
        if (n == 0)
            break;
        size += (size_t)n;
    }
    f->data = buf;
    f->size = size;
    f->is_mapped = 0;
    return KILN_OK;
}

static int64_t mtime_ns(const struct stat *info)
{
    return (int64_t)info->st_mtim.tv_sec * 1000000000 + info->st_mtim.tv_nsec;
}

kiln_status mapped_file_open(mapped_file *f, const char *path)
{
    memset(f, 0, sizeof *f);
    f->fd = -1;
    int fd = open(path, O_RDONLY | O_CLOEXEC);
    if (fd < 0)
        return err_set(KILN_ERR_IO, "%s: cannot open: %s", path, strerror(errno));

    kiln_status st = KILN_OK;
    struct stat info;
    if (fstat(fd, &info) != 0) {
        st = err_set(KILN_ERR_IO, "%s: cannot stat: %s", path, strerror(errno));
        goto done;
    }
    if (S_ISDIR(info.st_mode)) {
        st = err_set(KILN_ERR_IO, "%s: is a directory, not a file", path);
        goto done;
    }
    if (S_ISREG(info.st_mode) && info.st_size > 0) {
        void *p = mmap(NULL, (size_t)info.st_size, PROT_READ, MAP_PRIVATE, fd, 0);
        if (p != MAP_FAILED) {
            f->data = p;
            f->size = (uint64_t)info.st_size;
            f->is_mapped = 1;
            f->fd = fd;
            f->mtime_ns = mtime_ns(&info);
            return KILN_OK;
        }
    }
    st = read_all(fd, path, f);
done:
    close(fd);
    if (st != KILN_OK) {
        memset(f, 0, sizeof *f);
        f->fd = -1;
    }
    return st;
}

void mapped_file_close(mapped_file *f)
{
    if (f->is_mapped) {
        munmap((void *)f->data, (size_t)f->size);
        close(f->fd);
    } else {
        free((void *)f->data);
    }
    memset(f, 0, sizeof *f);
    f->fd = -1;
}

kiln_status mapped_file_check(const mapped_file *f, const char *path)
{
    if (!f->is_mapped)
        return KILN_OK;
    struct stat info;
    if (fstat(f->fd, &info) != 0)
        return err_set(KILN_ERR_IO, "%s: cannot stat: %s", path, strerror(errno));
    if ((uint64_t)info.st_size < f->size)
        return err_set(KILN_ERR_IO, "%s: the file was truncated while in use (%llu bytes when loaded, %llu now); "
                       "load it again", path, (unsigned long long)f->size, (unsigned long long)info.st_size);
    if ((uint64_t)info.st_size != f->size || mtime_ns(&info) != f->mtime_ns)
        return err_set(KILN_ERR_IO, "%s: the file was modified while in use (%llu bytes when loaded, %llu now, "
                       "modification time changed); load it again", path, (unsigned long long)f->size,
                       (unsigned long long)info.st_size);
    return KILN_OK;
}

void mapped_file_drop_pages(const mapped_file *f)
{
    /* MADV_DONTNEED on a private read-only file mapping discards the pages;
     * a later access faults them in from the file again */
    if (f->is_mapped && f->size)
        madvise((void *)f->data, (size_t)f->size, MADV_DONTNEED);
}

int mapped_file_drop_range(const mapped_file *f, const void *p, size_t bytes)
{
    const unsigned char *start = p, *end = start + bytes;
    if (!f->is_mapped || start < f->data || end > f->data + f->size)
        return 0;
    uintptr_t page = (uintptr_t)sysconf(_SC_PAGESIZE);
    uintptr_t first = ((uintptr_t)start + page - 1) & ~(page - 1), last = (uintptr_t)end & ~(page - 1);
    if (first < last)
        madvise((void *)first, last - first, MADV_DONTNEED);
    return 1;
}
