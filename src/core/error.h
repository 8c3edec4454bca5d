/*
 * error.h - setting the thread's last error message.
 *
 * Every failing path in libkiln returns a kiln_status and leaves a message
 * that names the thing at fault; kiln_last_error() reads it back. Messages are
 * lower case without a final period, e.g.
 *   "model.safetensors: tensor 'conv.weight': data [96, 1024) past the end of the file (800 bytes)".
 */
#ifndef KILN_CORE_ERROR_H
#define KILN_CORE_ERROR_H

#include "kiln.h"

#if defined(__GNUC__)
#define KILN_PRINTF(fmt_index, args_index) __attribute__((format(printf, fmt_index, args_index)))
#else
#define KILN_PRINTF(fmt_index, args_index)
#endif

/* Sets this thread's message and returns code, so a failure reads
 *   return err_set(KILN_ERR_FORMAT, "%s: bad header", path);            */
kiln_status err_set(kiln_status code, const char *fmt, ...) KILN_PRINTF(2, 3);

/* Puts context in front of the current message ("loading unet: " + message)
 * and returns code; for callers that pass a lower layer's failure upwards. */
kiln_status err_wrap(kiln_status code, const char *fmt, ...) KILN_PRINTF(2, 3);

/* Clears this thread's message. */
void err_clear(void);

#endif
