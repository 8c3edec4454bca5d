#include "core/log.h"

#include <pthread.h>
#include <stdarg.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

static const char *const level_names[LOG_LEVEL_COUNT] = {"debug", "info", "warn", "error", "off"};

/* -1 until first use, when KILN_LOG is read. */
static atomic_int current_level = -1;

static log_level level_from_env(void)
{
    const char *value = getenv("KILN_LOG");
    if (value)
        for (int i = 0; i < LOG_LEVEL_COUNT; i++)
            if (strcmp(value, level_names[i]) == 0)
                return (log_level)i;
    return LOG_LEVEL_WARN;
}

void log_set_level(log_level level)
{
    atomic_store(&current_level, (int)level);
}

log_level log_get_level(void)
{
    int level = atomic_load(&current_level);
    if (level < 0) {
        level = (int)level_from_env();
        atomic_store(&current_level, level);
    }
    return (log_level)level;
}

int log_enabled(log_level level)
{
    return level >= log_get_level() && level < LOG_LEVEL_OFF;
}

void log_msg(log_level level, const char *fmt, ...)
{
    if (!log_enabled(level))
        return;
    /* Format the whole line first so concurrent threads do not interleave. */
    char line[1200];
    int n = snprintf(line, sizeof line, "kiln: %s: ", level_names[level]);
    va_list args;
    va_start(args, fmt);
    vsnprintf(line + n, sizeof line - (size_t)n - 1, fmt, args);
    va_end(args);
    size_t len = strlen(line);
    line[len] = '\n';
    fwrite(line, 1, len + 1, stderr);
}
