/*
 * log.h - levelled logging to stderr.
 *
 * The level comes from KILN_LOG (debug, info, warn, error, off; default warn)
 * or log_set_level(). Lines look like "kiln: warn: prompt cut to 77 tokens".
 * Thread-safe: each line is written with one call.
 */
#ifndef KILN_CORE_LOG_H
#define KILN_CORE_LOG_H

#include "core/error.h"

typedef enum log_level {
    LOG_LEVEL_DEBUG,
    LOG_LEVEL_INFO,
    LOG_LEVEL_WARN,
    LOG_LEVEL_ERROR,
    LOG_LEVEL_OFF,
    LOG_LEVEL_COUNT
} log_level;

void log_set_level(log_level level);
log_level log_get_level(void);
int log_enabled(log_level level);
void log_msg(log_level level, const char *fmt, ...) KILN_PRINTF(2, 3);

#define LOG_DEBUG(...) log_msg(LOG_LEVEL_DEBUG, __VA_ARGS__)
#define LOG_INFO(...) log_msg(LOG_LEVEL_INFO, __VA_ARGS__)
#define LOG_WARN(...) log_msg(LOG_LEVEL_WARN, __VA_ARGS__)
#define LOG_ERROR(...) log_msg(LOG_LEVEL_ERROR, __VA_ARGS__)

#endif
