#include "core/error.h"

#include <stdarg.h>
#include <stdio.h>
#include <string.h>

/* Long enough for a path, a tensor name and two shapes; longer messages are
 * cut, never overflowed. */
#define ERROR_MESSAGE_MAX 1024

static _Thread_local char last_error[ERROR_MESSAGE_MAX];

static const char *const status_names[KILN_STATUS_COUNT] = {
    "ok",
    "out of memory",
    "i/o error",
    "format error",
    "shape error",
    "unsupported",
    "cancelled",
    "invalid argument",
};

const char *kiln_status_string(kiln_status status)
{
    int index = -(int)status;
    if (index < 0 || index >= KILN_STATUS_COUNT)
        return "unknown status";
    return status_names[index];
}

const char *kiln_last_error(void)
{
    return last_error;
}

kiln_status err_set(kiln_status code, const char *fmt, ...)
{
    va_list args;
    va_start(args, fmt);
    vsnprintf(last_error, sizeof last_error, fmt, args);
    va_end(args);
    return code;
}

kiln_status err_wrap(kiln_status code, const char *fmt, ...)
{
    char previous[ERROR_MESSAGE_MAX];
    memcpy(previous, last_error, sizeof previous);

    va_list args;
    va_start(args, fmt);
    int n = vsnprintf(last_error, sizeof last_error, fmt, args);
    va_end(args);
    if (n >= 0 && (size_t)n < sizeof last_error)
        snprintf(last_error + n, sizeof last_error - (size_t)n, "%s", previous);
    return code;
}

void err_clear(void)
{
    last_error[0] = '\0';
}
