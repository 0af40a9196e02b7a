/* SPDX-License-Identifier: Apache-2.0 */
/*
 * tests/tokenizer/tok_conform.c: compares tok_encode() with golden ids that a reference encoder
 * (tests/tokenizer/corpus.js) produced for the same corpus, document by document.
 *
 *   tok_conform TOKENIZER CORPUS GOLDEN [--export PATTERN TMPFILE]
 *
 * With --export, TOKENIZER is first written as tokenizer.json (tok_export_hf with PATTERN and the
 * Llama 3 special tokens appended) to TMPFILE, and the file loaded back is what gets compared.
 * Exit 0 all equal, 1 a mismatch or error.
 */
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "files.h"
#include "tok.h"

static void show(const struct tok *t, const int32_t *ids, size_t n, size_t at)
{
	size_t lo = at > 4 ? at - 4 : 0, hi = at + 5 < n ? at + 5 : n;
	for (size_t i = lo; i < hi; i++) {
		size_t l;
		const char *p = tok_piece(t, ids[i], &l);
		fprintf(stderr, "%s%d:'", i == at ? " >>" : " ", ids[i]);
		for (size_t k = 0; p && k < l; k++) {
			unsigned char c = (unsigned char)p[k];
			if (c < 0x20 || c == 0x7f)
				fprintf(stderr, "\\x%02x", c);
			else
				fputc(c, stderr);
		}
		fputc('\'', stderr);
	}
	fputc('\n', stderr);
}

int main(int argc, char **argv)
{
	if (argc != 4 && argc != 7) {
		fprintf(stderr, "usage: tok_conform TOKENIZER CORPUS GOLDEN [--export PAT TMP]\n");
		return 1;
	}
	char err[TOK_ERR_LEN];
	struct tok *t;
	const char *tpath = argv[1];
	if (tok_load(&t, tpath, err, sizeof(err))) {
		fprintf(stderr, "tok_conform: %s\n", err);
		return 1;
	}
	if (argc == 7) {
		static const struct tok_added llama3[] = {
			{"<|begin_of_text|>", 128000},	 {"<|end_of_text|>", 128001},
			{"<|reserved_special_token_0|>", 128002},
			{"<|reserved_special_token_1|>", 128003},
			{"<|finetune_right_pad_id|>", 128004},
			{"<|start_header_id|>", 128006}, {"<|end_header_id|>", 128007},
			{"<|eom_id|>", 128008},		 {"<|eot_id|>", 128009},
			{"<|python_tag|>", 128010},
		};
		FILE *f = fopen(argv[6], "w");
		int rc = f ? tok_export_hf(t, f, argv[5], llama3, 10) : -1;
		if (f)
			fclose(f);
		tok_destroy(t);
		if (rc) {
			fprintf(stderr, "tok_conform: export failed (%d)\n", rc);
			return 1;
		}
		tpath = argv[6];
		if (tok_load(&t, tpath, err, sizeof(err))) {
			fprintf(stderr, "tok_conform: reload: %s\n", err);
			return 1;
		}
		if (tok_special_id(t, "<|eot_id|>") != 128009) {
			fprintf(stderr, "tok_conform: exported specials missing\n");
			return 1;
		}
	}
	size_t nc, ng;
	char *corpus = test_slurp(argv[2], &nc), *gold = test_slurp(argv[3], &ng);
	if (!corpus || !gold) {
		fprintf(stderr, "tok_conform: cannot read corpus or golden file\n");
		return 1;
	}
	struct tok_enc *e;
	if (tok_enc_create(&e, t))
		return 1;
	size_t cap = 1 << 16;
	int32_t *ids = malloc(cap * sizeof(*ids));
	size_t oc = 0, og = 0, docs = 0, bad = 0, bytes = 0;
	struct timespec t0, t1;
	double enc_s = 0;
	while (oc + 4 <= nc && og + 4 <= ng) {
		uint32_t dl, gn;
		memcpy(&dl, corpus + oc, 4);
		memcpy(&gn, gold + og, 4);
		const char *doc = corpus + oc + 4;
		const int32_t *g = (const int32_t *)(gold + og + 4);
		oc += 4 + dl;
		og += 4 + 4 * (size_t)gn;
		clock_gettime(CLOCK_MONOTONIC, &t0);
		ssize_t n = tok_encode(e, doc, dl, ids, cap, 0);
		clock_gettime(CLOCK_MONOTONIC, &t1);
		enc_s += (double)(t1.tv_sec - t0.tv_sec) + 1e-9 * (double)(t1.tv_nsec - t0.tv_nsec);
		bytes += dl;
		if (n < 0 || (size_t)n > cap) {
			fprintf(stderr, "doc %zu: encode failed (%zd)\n", docs, n);
			return 1;
		}
		size_t k = 0;
		while (k < (size_t)n && k < gn && ids[k] == g[k])
			k++;
		if (k < (size_t)n || k < gn) {
			if (bad < 5) {
				fprintf(stderr, "doc %zu (%u bytes): ids differ at %zu (ours %zd, ref %u)\n",
					docs, dl, k, n, gn);
				fprintf(stderr, "  ours:");
				show(t, ids, (size_t)n, k);
				fprintf(stderr, "  ref: ");
				show(t, g, gn, k);
			}
			bad++;
		}
		docs++;
	}
	printf("%s: %zu documents, %zu bytes, %zu mismatched; encode %.1f MB/s\n", argv[3], docs,
	       bytes, bad, (double)bytes / enc_s / 1e6);
	free(ids);
	free(corpus);
	free(gold);
	tok_enc_destroy(e);
	tok_destroy(t);
	return bad || docs == 0 ? 1 : 0;
}
