#include "core/cache_dir.h"

#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>

#include "core/error.h"

kiln_status cache_dir_path(const char *name, char *buf, size_t size)
{
    const char *xdg = getenv("XDG_CACHE_HOME"), *home = getenv("HOME");
    int n;
    if (xdg && xdg[0] == '/')
        n = snprintf(buf, size, "%s/kiln/%s", xdg, name);
    else if (home && home[0])
        n = snprintf(buf, size, "%s/.cache/kiln/%s", home, name);
    else
        return err_set(KILN_ERR_INVALID, "no place for kiln's cache (%s): neither XDG_CACHE_HOME nor HOME is set",
                       name);
    if (n < 0 || (size_t)n >= size)
        return err_set(KILN_ERR_INVALID, "the cache path of %s is longer than %zu bytes", name, size);
    return KILN_OK;
}

kiln_status cache_dir_make_parents(const char *path)
{
    char *dir = strdup(path);
    if (!dir)
        return err_set(KILN_ERR_NOMEM, "cannot copy the path %s", path);
    kiln_status st = KILN_OK;
    char *slash = strrchr(dir, '/');
    if (slash && slash != dir) {
        *slash = '\0';
        for (char *p = dir + 1;; p++) {
            if (*p != '/' && *p != '\0')
                continue;
            char c = *p;
            *p = '\0';
            if (mkdir(dir, 0755) != 0 && errno != EEXIST) {
                st = err_set(KILN_ERR_IO, "cannot create %s: %s", dir, strerror(errno));
                break;
            }
            *p = c;
            if (c == '\0')
                break;
        }
    }
    free(dir);
    return st;
}
