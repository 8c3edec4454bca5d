/* What the fuzz targets share: failure reports and input copies. */
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "fuzz.h"

const char *fuzz_input_name;

void fuzz_fail(const char *file, int line, const char *fmt, ...)
{
    fprintf(stderr, "fuzz check failed (%s:%d)%s%s: ", file, line, fuzz_input_name ? " on " : "",
            fuzz_input_name ? fuzz_input_name : "");
    va_list args;
    va_start(args, fmt);
    vfprintf(stderr, fmt, args);
    va_end(args);
    fputc('\n', stderr);
    abort();
}

char *fuzz_text(const uint8_t *data, size_t size)
{
    char *text = malloc(size + 1);
    FUZZ_CHECK(text != NULL, "out of memory copying %zu bytes", size);
    if (size)
        memcpy(text, data, size);
    text[size] = '\0';
    return text;
}
