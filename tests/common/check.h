/* SPDX-License-Identifier: Apache-2.0 */
/*
 * tests/common/check.h: the failure counter and CHECK() macro that the C tests share.
 *
 *   CHECK(cond);                       on failure: "FAIL file:line: cond"
 *   CHECK(cond, "fmt", args...);       on failure: "FAIL file:line: cond: <message>"
 *   return check_exit();               0 when nothing failed, else "N failures" on stderr and 1
 *
 * A failed CHECK does not stop the test; check_failures() says how many have failed so far.
 * The message format must be a string literal (it is checked like printf's).
 * Ownership: nothing is allocated; the counter is file-static, one per test program (include this
 * header from the one .c file that holds main()).
 * Threading: CHECK() may be called from any thread (the counter is atomic, relaxed: only its final
 * value matters, read after the threads are joined).
 */
#ifndef OFFPATH_TESTS_CHECK_H
#define OFFPATH_TESTS_CHECK_H

#include <stdarg.h>
#include <stdatomic.h>
#include <stdio.h>

static atomic_int check_failed_;

/* The prefix ": " is always there, so that a CHECK without a message still has a non-empty
 * format; the message itself starts after it. */
#define CHECK(cond, ...)                                                                           \
	do {                                                                                       \
		if (!(cond))                                                                       \
			check_fail_(__FILE__, __LINE__, #cond, ": " __VA_ARGS__);                  \
	} while (0)

static inline void check_fail_(const char *file, int line, const char *cond, const char *fmt, ...)
    __attribute__((format(printf, 4, 5)));

static inline void check_fail_(const char *file, int line, const char *cond, const char *fmt, ...)
{
	va_list ap;

	atomic_fetch_add_explicit(&check_failed_, 1, memory_order_relaxed);
	fprintf(stderr, "FAIL %s:%d: %s", file, line, cond);
	if (fmt[2]) { /* a message after the ": " prefix */
		va_start(ap, fmt);
		vfprintf(stderr, fmt, ap);
		va_end(ap);
	}
	fputc('\n', stderr);
}

/* How many CHECKs have failed so far. */
static inline int check_failures(void)
{
	return atomic_load_explicit(&check_failed_, memory_order_relaxed);
}

/* The test's exit code: 0 when every CHECK held, else 1 after "N failures" on stderr. */
static inline int check_exit(void)
{
	int n = check_failures();

	if (n == 0)
		return 0;
	fprintf(stderr, "%d failures\n", n);
	return 1;
}

#endif
