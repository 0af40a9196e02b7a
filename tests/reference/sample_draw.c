/* SPDX-License-Identifier: Apache-2.0 */
/*
 * tests/reference/sample_draw.c: draws N tokens with mdl_sample() from one row of logits
 * (vocab fp32 LE in LOGITS), counters 0..N-1, and writes the tokens (int32 LE) and their
 * logprobs (fp32 LE) for ref_sample.py to test against torch. It checks determinism itself:
 * a second sampler replays the first counters in reverse order and must draw the same tokens.
 *
 * usage: sample_draw LOGITS TEMPERATURE TOP_K TOP_P SEED N OUT_TOKENS OUT_LOGPROBS
 * Exit 0 done, 1 failure.
 */
#include <errno.h>
#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "sample.h"

static int write_all(const char *path, const void *p, size_t sz, size_t n)
{
	FILE *f = fopen(path, "wb");
	if (!f || fwrite(p, sz, n, f) != n) {
		perror(path);
		if (f)
			fclose(f);
		return -1;
	}
	return fclose(f) ? -1 : 0;
}

int main(int argc, char **argv)
{
	if (argc != 9) {
		fprintf(stderr,
		        "usage: %s LOGITS TEMPERATURE TOP_K TOP_P SEED N OUT_TOKENS OUT_LOGPROBS\n",
		        argv[0]);
		return 1;
	}
	FILE *f = fopen(argv[1], "rb");
	if (!f) {
		perror(argv[1]);
		return 1;
	}
	fseek(f, 0, SEEK_END);
	long V = ftell(f) / 4;
	fseek(f, 0, SEEK_SET);
	float *logits = malloc((size_t)(V > 0 ? V : 1) * sizeof(float));
	if (!logits || V <= 0 || fread(logits, 4, (size_t)V, f) != (size_t)V) {
		fprintf(stderr, "%s: cannot read logits\n", argv[1]);
		return 1;
	}
	fclose(f);

	struct mdl_sampling p = {.temperature = strtof(argv[2], NULL),
	                         .top_k = atoi(argv[3]),
	                         .top_p = strtof(argv[4], NULL),
	                         .seed = strtoull(argv[5], NULL, 0)};
	long n = atol(argv[6]);
	int32_t *tok = malloc((size_t)(n > 0 ? n : 1) * sizeof(int32_t));
	float *lp = malloc((size_t)(n > 0 ? n : 1) * sizeof(float));
	struct mdl_sampler *s1 = NULL, *s2 = NULL;
	if (!tok || !lp || mdl_sampler_create(&s1, (int)V) || mdl_sampler_create(&s2, (int)V)) {
		fprintf(stderr, "out of memory\n");
		return 1;
	}
	for (long i = 0; i < n; i++)
		tok[i] = mdl_sample(s1, logits, &p, (uint64_t)i, &lp[i]);
	int ret = 0;
	for (long i = (n < 3000 ? n : 3000) - 1; i >= 0; i--) { /* a prefix is enough */
		int32_t t = mdl_sample(s2, logits, &p, (uint64_t)i, NULL);
		if (t != tok[i]) {
			fprintf(stderr, "not deterministic: counter %ld gave %d then %d\n", i,
			        tok[i], t);
			ret = 1;
			break;
		}
	}
	if (!ret && (write_all(argv[7], tok, sizeof(int32_t), (size_t)n) ||
	             write_all(argv[8], lp, sizeof(float), (size_t)n)))
		ret = 1;
	mdl_sampler_destroy(s1);
	mdl_sampler_destroy(s2);
	free(tok);
	free(lp);
	free(logits);
	return ret;
}
