/* SPDX-License-Identifier: Apache-2.0 */
/*
 * tests/reference/dump_logits.c: runs mdl_cpu_step over the token ids in TOKENS (int32 LE) and
 * writes the logits of every position, (2, n, vocab) fp32 LE, to OUT, for ref_forward.py to
 * compare with its torch forward. Two sequences carry the same ids through one KV pool in the
 * same steps, with different uneven prefill chunk schedules followed by single-token decode
 * steps, each through its own shuffled page table of 4-token pages, so paging, chunking and
 * batching are all exercised. Before that it checks that invalid batches give -EINVAL.
 *
 * usage: dump_logits MODEL_DIR TOKENS OUT [n_threads]
 * Exit 0 done, 1 failure.
 */
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "cpu.h"
#include "mdl.h"

#define PAGE_TOKENS 4

static const int sched_a[] = {5, 11, 1, 16, 3}; /* then decode steps */
static const int sched_b[] = {13, 2, 9, 1, 7, 30};

static int check_invalid(struct mdl_cpu *c, const struct mdl *m, int32_t *pages, int n_pages)
{
	int32_t tok[2] = {0, 1};
	float lg[1];
	struct mdl_cpu_seq s = {tok, 2, 0, pages, NULL, 0};
	int bad = 0;

	tok[1] = m->cfg.vocab_size; /* token outside the vocabulary */
	bad |= mdl_cpu_step(c, &s, 1) != -EINVAL;
	tok[1] = -1;
	bad |= mdl_cpu_step(c, &s, 1) != -EINVAL;
	tok[1] = 1;
	int32_t save = pages[0];
	pages[0] = n_pages; /* page outside the pool */
	bad |= mdl_cpu_step(c, &s, 1) != -EINVAL;
	pages[0] = save;
	s.pos0 = m->cfg.max_pos - 1; /* runs past max_pos */
	bad |= mdl_cpu_step(c, &s, 1) != -EINVAL;
	s.pos0 = 0;
	s.n_logits = 1; /* logits wanted, no buffer */
	bad |= mdl_cpu_step(c, &s, 1) != -EINVAL;
	s.logits = lg;
	s.n_logits = 3; /* more logits than tokens */
	bad |= mdl_cpu_step(c, &s, 1) != -EINVAL;
	s.n_logits = 0;
	struct mdl_cpu_seq many[3] = {s, s, s}; /* more sequences than max_seqs = 2 */
	bad |= mdl_cpu_step(c, many, 3) != -EINVAL;
	if (bad)
		fprintf(stderr, "an invalid batch was not refused with -EINVAL\n");
	return bad ? -1 : 0;
}

int main(int argc, char **argv)
{
	if (argc < 4) {
		fprintf(stderr, "usage: %s MODEL_DIR TOKENS OUT [n_threads]\n", argv[0]);
		return 1;
	}
	char err[MDL_ERR_LEN];
	struct mdl *m = NULL;
	struct mdl_cpu *c = NULL;
	int32_t *tok = NULL;
	float *logits = NULL;
	int ret = 1;

	int rc = mdl_open(&m, argv[1], err, sizeof(err));
	if (rc) {
		fprintf(stderr, "mdl_open: %s (%s)\n", err, strerror(-rc));
		return 1;
	}
	FILE *f = fopen(argv[2], "rb");
	if (!f) {
		perror(argv[2]);
		goto out;
	}
	fseek(f, 0, SEEK_END);
	long n = ftell(f) / 4;
	fseek(f, 0, SEEK_SET);
	tok = malloc((size_t)(n > 0 ? n : 1) * 4);
	if (!tok || n <= 0 || fread(tok, 4, (size_t)n, f) != (size_t)n) {
		fprintf(stderr, "%s: cannot read token ids\n", argv[2]);
		fclose(f);
		goto out;
	}
	fclose(f);

	const int V = m->cfg.vocab_size;
	const int n_lp =
	    (int)((n + PAGE_TOKENS - 1) / PAGE_TOKENS); /* logical pages per sequence */
	const int n_pages = 2 * n_lp + 5;               /* a few never used */
	struct mdl_cpu_opts o = {.n_pages = n_pages,
	                         .page_tokens = PAGE_TOKENS,
	                         .max_tokens = 64,
	                         .max_seqs = 2,
	                         .n_threads = argc > 4 ? atoi(argv[4]) : 0};
	rc = mdl_cpu_create(&c, m, &o);
	if (rc) {
		fprintf(stderr, "mdl_cpu_create: %s\n", strerror(-rc));
		goto out;
	}

	/* a fixed shuffle of the pool; sequence a takes the first n_lp pages, b the next */
	int32_t *perm = malloc((size_t)n_pages * sizeof(int32_t));
	if (!perm)
		goto out;
	for (int i = 0; i < n_pages; i++)
		perm[i] = i;
	uint32_t x = 12345;
	for (int i = n_pages - 1; i > 0; i--) {
		x = x * 1103515245u + 12345u;
		int j = (int)((x >> 8) % (uint32_t)(i + 1));
		int32_t t = perm[i];
		perm[i] = perm[j];
		perm[j] = t;
	}
	if (check_invalid(c, m, perm, n_pages))
		goto out_perm;

	logits = malloc((size_t)2 * (size_t)n * (size_t)V * sizeof(float));
	if (!logits)
		goto out_perm;
	const int *sched[2] = {sched_a, sched_b};
	const int n_sched[2] = {sizeof(sched_a) / sizeof(int), sizeof(sched_b) / sizeof(int)};
	int pos[2] = {0, 0}, step[2] = {0, 0};
	while (pos[0] < n || pos[1] < n) {
		struct mdl_cpu_seq s[2];
		int ns = 0;
		for (int q = 0; q < 2; q++) {
			if (pos[q] >= n)
				continue;
			int k = step[q] < n_sched[q] ? sched[q][step[q]] : 1;
			if (k > n - pos[q])
				k = (int)(n - pos[q]);
			s[ns++] = (struct mdl_cpu_seq){
			    .tokens = tok + pos[q],
			    .n_tokens = k,
			    .pos0 = pos[q],
			    .pages = perm + q * n_lp,
			    .logits = logits + ((size_t)q * (size_t)n + (size_t)pos[q]) * (size_t)V,
			    .n_logits = k,
			};
			pos[q] += k;
			step[q]++;
		}
		rc = mdl_cpu_step(c, s, ns);
		if (rc) {
			fprintf(stderr, "mdl_cpu_step: %s\n", strerror(-rc));
			goto out_perm;
		}
	}
	f = fopen(argv[3], "wb");
	if (!f || fwrite(logits, sizeof(float), (size_t)2 * (size_t)n * (size_t)V, f) !=
	              (size_t)2 * (size_t)n * (size_t)V) {
		perror(argv[3]);
		if (f)
			fclose(f);
		goto out_perm;
	}
	if (fclose(f)) {
		perror(argv[3]);
		goto out_perm;
	}
	ret = 0;
out_perm:
	free(perm);
out:
	free(logits);
	free(tok);
	mdl_cpu_destroy(c);
	if (m)
		mdl_close(m);
	return ret;
}
