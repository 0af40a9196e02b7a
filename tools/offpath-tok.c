/* SPDX-License-Identifier: Apache-2.0 */
/*
 * tools/offpath-tok.c: command-line front end of tokenizer/: encode, decode, export to
 * tokenizer.json, and a single-core speed benchmark.
 */
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "tok.h"

static void usage(FILE *f)
{
	fputs("usage: offpath-tok COMMAND --tokenizer FILE [options]\n"
	      "\n"
	      "FILE is a Hugging Face tokenizer.json, a tiktoken .tiktoken rank file, or the tiktoken\n"
	      "npm package's encoder JSON (encoders/cl100k_base.json ...).\n"
	      "\n"
	      "commands:\n"
	      "  encode [--special]   text on stdin -> space-separated ids on stdout (one line);\n"
	      "                       --special recognises special tokens (<|endoftext|>) in the text\n"
	      "  decode               ids on stdin (whitespace separated) -> text on stdout\n"
	      "  export [--pattern NAME] [--add TEXT=ID]...\n"
	      "                       write a Hugging Face tokenizer.json on stdout; NAME is llama3,\n"
	      "                       cl100k, o200k, gpt2 or qwen2; --add appends a special token\n"
	      "  bench --input FILE [--seconds S] [--chunk BYTES]\n"
	      "                       encode FILE repeatedly on one core, in chunks (default 4096\n"
	      "                       bytes, split at line ends), and print MB per CPU second\n"
	      "  --help               this text\n",
	      f);
}

static char *read_all(FILE *f, size_t *n)
{
	size_t cap = 1 << 16, len = 0;
	char *b = malloc(cap);
	while (b) {
		if (len == cap) {
			char *nb = realloc(b, cap * 2);
			if (!nb) {
				free(b);
				return NULL;
			}
			b = nb;
			cap *= 2;
		}
		size_t r = fread(b + len, 1, cap - len, f);
		len += r;
		if (r == 0)
			break;
	}
	*n = len;
	return b;
}

static double clock_s(clockid_t c)
{
	struct timespec ts;
	clock_gettime(c, &ts);
	return (double)ts.tv_sec + 1e-9 * (double)ts.tv_nsec;
}

static double now(void)
{
	return clock_s(CLOCK_MONOTONIC);
}

/* CPU time of this thread: MB/s per core stays meaningful on a busy machine */
static double cpu_now(void)
{
	return clock_s(CLOCK_THREAD_CPUTIME_ID);
}

static int cmd_encode(struct tok *t, unsigned flags)
{
	size_t n;
	char *text = read_all(stdin, &n);
	struct tok_enc *e = NULL;
	int32_t *ids = NULL;
	int rc = 1;
	if (!text || tok_enc_create(&e, t))
		goto out;
	size_t cap = n + 16;
	ids = malloc(cap * sizeof(*ids));
	if (!ids)
		goto out;
	ssize_t m = tok_encode(e, text, n, ids, cap, flags);
	if (m < 0) {
		fprintf(stderr, "offpath-tok: encode: %s\n", strerror((int)-m));
		goto out;
	}
	for (ssize_t i = 0; i < m; i++)
		printf(i ? " %d" : "%d", ids[i]);
	putchar('\n');
	rc = 0;
out:
	free(ids);
	free(text);
	tok_enc_destroy(e);
	return rc;
}

static int cmd_decode(struct tok *t)
{
	size_t n = 0, cap = 1024;
	int32_t *ids = malloc(cap * sizeof(*ids));
	long v;
	while (ids && scanf("%ld", &v) == 1) {
		if (n == cap) {
			int32_t *ni = realloc(ids, 2 * cap * sizeof(*ids));
			if (!ni)
				break;
			ids = ni;
			cap *= 2;
		}
		ids[n++] = (int32_t)v;
	}
	if (!ids)
		return 1;
	ssize_t m = tok_decode(t, ids, n, NULL, 0);
	char *out = m >= 0 ? malloc((size_t)m + 1) : NULL;
	if (m < 0 || !out) {
		fprintf(stderr, "offpath-tok: decode: %s\n", m < 0 ? "id outside the vocabulary"
								  : "out of memory");
		free(ids);
		return 1;
	}
	tok_decode(t, ids, n, out, (size_t)m);
	fwrite(out, 1, (size_t)m, stdout);
	free(out);
	free(ids);
	return 0;
}

static int cmd_bench(struct tok *t, const char *input, double seconds, size_t chunk)
{
	FILE *f = fopen(input, "rb");
	if (!f) {
		fprintf(stderr, "offpath-tok: %s: %s\n", input, strerror(errno));
		return 1;
	}
	size_t n;
	char *text = read_all(f, &n);
	fclose(f);
	struct tok_enc *e;
	if (!text || tok_enc_create(&e, t))
		return 1;
	size_t cap = 2 * chunk + 1024;
	int32_t *ids = malloc(cap * sizeof(*ids));
	double t0 = cpu_now(), w0 = now(), el = 0;
	size_t bytes = 0, ntok = 0;
	do {
		size_t i = 0;
		while (i < n) {
			size_t j = i + chunk < n ? i + chunk : n;
			while (j < n && j < i + 2 * chunk && text[j - 1] != '\n')
				j++;
			ssize_t m = tok_encode(e, text + i, j - i, ids, cap, 0);
			if (m < 0)
				return 1;
			ntok += (size_t)m;
			i = j;
		}
		bytes += n;
		el = cpu_now() - t0;
	} while (el < seconds && now() - w0 < 10 * seconds);
	printf("%.2f MB/s  (per CPU second; %zu bytes x %.0f passes, %.3f s CPU, %.3f s wall, "
	       "%.2f bytes/token)\n",
	       (double)bytes / el / 1e6, n, (double)bytes / (double)n, el, now() - w0,
	       (double)bytes / (double)ntok);
	free(ids);
	free(text);
	tok_enc_destroy(e);
	return 0;
}

int main(int argc, char **argv)
{
	const char *path = NULL, *input = NULL, *pattern = NULL, *cmd = NULL;
	unsigned flags = 0;
	double seconds = 2;
	size_t chunk = 4096;
	struct tok_added add[64];
	int n_add = 0;
	for (int i = 1; i < argc; i++) {
		const char *a = argv[i];
		if (!strcmp(a, "--help") || !strcmp(a, "-h")) {
			usage(stdout);
			return 0;
		} else if (!strcmp(a, "--tokenizer") && i + 1 < argc) {
			path = argv[++i];
		} else if (!strcmp(a, "--special")) {
			flags |= TOK_SPECIAL;
		} else if (!strcmp(a, "--input") && i + 1 < argc) {
			input = argv[++i];
		} else if (!strcmp(a, "--seconds") && i + 1 < argc) {
			seconds = atof(argv[++i]);
		} else if (!strcmp(a, "--chunk") && i + 1 < argc) {
			chunk = (size_t)atol(argv[++i]);
		} else if (!strcmp(a, "--pattern") && i + 1 < argc) {
			pattern = argv[++i];
		} else if (!strcmp(a, "--add") && i + 1 < argc && n_add < 64) {
			char *s = argv[++i], *eq = strrchr(s, '=');
			if (!eq) {
				fprintf(stderr, "offpath-tok: --add wants TEXT=ID\n");
				return 2;
			}
			*eq = 0;
			add[n_add++] = (struct tok_added){s, atoi(eq + 1)};
		} else if (!cmd && a[0] != '-') {
			cmd = a;
		} else {
			fprintf(stderr, "offpath-tok: unknown argument %s (see --help)\n", a);
			return 2;
		}
	}
	if (!cmd || !path || chunk == 0) {
		usage(stderr);
		return 2;
	}
	char err[TOK_ERR_LEN];
	struct tok *t;
	double t0 = now();
	int rc = tok_load(&t, path, err, sizeof(err));
	if (rc) {
		fprintf(stderr, "offpath-tok: %s\n", err);
		return 1;
	}
	double tload = now() - t0;
	if (!strcmp(cmd, "encode")) {
		rc = cmd_encode(t, flags);
	} else if (!strcmp(cmd, "decode")) {
		rc = cmd_decode(t);
	} else if (!strcmp(cmd, "export")) {
		rc = tok_export_hf(t, stdout, pattern, add, n_add);
		if (rc)
			fprintf(stderr, "offpath-tok: export: %s\n", strerror(-rc));
		rc = rc ? 1 : 0;
	} else if (!strcmp(cmd, "bench")) {
		if (!input) {
			fprintf(stderr, "offpath-tok: bench needs --input FILE\n");
			rc = 2;
		} else {
			fprintf(stderr, "load: %.3f s\n", tload);
			rc = cmd_bench(t, input, seconds, chunk);
		}
	} else {
		fprintf(stderr, "offpath-tok: unknown command %s (see --help)\n", cmd);
		rc = 2;
	}
	tok_destroy(t);
	return rc;
}
