/* SPDX-License-Identifier: Apache-2.0 */
/*
 * tests/common/files.h: file helpers of the C tests: test_slurp() reads a whole file (golden ids,
 * templates, written safetensors), test_rm_rf() removes a test's scratch directory.
 * Ownership: the caller frees what test_slurp() returns.
 * Threading: any thread; nothing shared.
 */
#ifndef OFFPATH_TESTS_FILES_H
#define OFFPATH_TESTS_FILES_H

#include <stdio.h>
#include <stdlib.h>

/* The bytes of path with a '\0' after them, or NULL when it cannot be read (errno says why).
 * *len (when len is not NULL) is set to the byte count, without the '\0', on success only. */
static inline char *test_slurp(const char *path, size_t *len)
{
	FILE *f = fopen(path, "rb");
	char *p = NULL;
	long n;

	if (!f)
		return NULL;
	if (fseek(f, 0, SEEK_END) == 0 && (n = ftell(f)) >= 0 && fseek(f, 0, SEEK_SET) == 0) {
		p = malloc((size_t)n + 1);
		if (p && fread(p, 1, (size_t)n, f) != (size_t)n) {
			free(p);
			p = NULL;
		}
		if (p) {
			p[n] = '\0';
			if (len)
				*len = (size_t)n;
		}
	}
	fclose(f);
	return p;
}

/* rm -rf dir (a directory this test made: the name must not hold a single quote); a warning on
 * stderr when that fails. */
static inline void test_rm_rf(const char *dir)
{
	char cmd[8300];

	snprintf(cmd, sizeof(cmd), "rm -rf '%s'", dir);
	if (system(cmd) != 0)
		fprintf(stderr, "warning: could not remove %s\n", dir);
}

#endif
