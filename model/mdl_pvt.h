/* SPDX-License-Identifier: Apache-2.0 */
/*
 * model/mdl_pvt.h: internals shared by model/'s file readers and writer (config.c, safetensors.c,
 * mdl.c, st_writer.c); not an interface.
 * Ownership: nothing here allocates; err buffers belong to the caller.
 * Threading: no shared state; any thread.
 */
#ifndef OFFPATH_MODEL_MDL_PVT_H
#define OFFPATH_MODEL_MDL_PVT_H

#include <stdarg.h>
#include <stddef.h>
#include <stdio.h>

/* err <- "<file>: <vprintf of fmt, ap>", truncated to errlen and always NUL-terminated; nothing
 * when err is NULL or errlen is 0. This is the "<file>: <problem>" form that mdl.h,
 * safetensors.h and st_writer.h promise. */
static inline void mdl_verr(char *err, size_t errlen, const char *file, const char *fmt, va_list ap)
    __attribute__((format(printf, 4, 0)));

static inline void mdl_verr(char *err, size_t errlen, const char *file, const char *fmt, va_list ap)
{
	if (!err || errlen == 0)
		return;
	int n = snprintf(err, errlen, "%s: ", file);
	if (n < 0 || (size_t)n >= errlen)
		return;
	vsnprintf(err + n, errlen - (size_t)n, fmt, ap);
}

/* mdl_verr() with the arguments in place. */
static inline void mdl_err(char *err, size_t errlen, const char *file, const char *fmt, ...)
    __attribute__((format(printf, 4, 5)));

static inline void mdl_err(char *err, size_t errlen, const char *file, const char *fmt, ...)
{
	va_list ap;
	va_start(ap, fmt);
	mdl_verr(err, errlen, file, fmt, ap);
	va_end(ap);
}

struct json_t;

/* *root <- the parsed JSON of path (duplicate keys rejected), which must be a regular file of at
 * most max_bytes (checked before it is read: model files are untrusted). The caller owns *root
 * (json_decref). Returns 0, or a negative errno with err = "<path>: <problem>". In config.c. */
int mdl_json_load(const char *path, int max_bytes, struct json_t **root, char *err, size_t errlen);

#endif
