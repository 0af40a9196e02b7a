/* SPDX-License-Identifier: Apache-2.0 */
/*
 * tests/persistent_kernel/fake_model.h: a deterministic stand-in for the forward step, for testing
 * the scheduler and the emulation loop without a model. Its "KV cache" stores the token id written
 * at each (page, offset); the logits at position p are a hash of every token at positions 0..p
 * read back *through the page table* (fm_logits_at(): the same hash without pages). So a wrong page table, a page shared by
 * two live sequences, or a position that was never written changes (or fails) the output, while a
 * correct schedule gives exactly the tokens of fm_reference(), which runs one request alone with
 * no paging at all.
 *
 * Ownership: fm_init() allocates the fake pool, fm_fini() frees it. Threading: one thread.
 */
#ifndef OFFPATH_TESTS_PK_FAKE_MODEL_H
#define OFFPATH_TESTS_PK_FAKE_MODEL_H

#include <errno.h>
#include <math.h>
#include <stdint.h>
#include <stdlib.h>

#include "cpu.h"
#include "sample.h"

struct fake_model {
	int vocab;
	int page_tokens;
	int n_pages;
	int32_t *kv; /* (n_pages, page_tokens) token ids, -1 = never written */
	int n_bad;   /* reads of unwritten positions, writes outside the pool */
};

static inline int fm_init(struct fake_model *fm, int vocab, int page_tokens, int n_pages)
{
	int i;

	fm->vocab = vocab;
	fm->page_tokens = page_tokens;
	fm->n_pages = n_pages;
	fm->n_bad = 0;
	fm->kv = malloc(sizeof(int32_t) * (size_t)page_tokens * (size_t)n_pages);
	if (!fm->kv)
		return -ENOMEM;
	for (i = 0; i < page_tokens * n_pages; i++)
		fm->kv[i] = -1;
	return 0;
}

static inline void fm_fini(struct fake_model *fm)
{
	free(fm->kv);
}

static inline uint64_t fm_hash(uint64_t h, int32_t tok)
{
	return mdl_mix64(h ^ ((uint64_t)(uint32_t)tok * 0x9e3779b97f4a7c15ull));
}

static inline void fm_logits(const struct fake_model *fm, uint64_t h, float *out)
{
	int v;

	for (v = 0; v < fm->vocab; v++)
		out[v] = (float)(mdl_mix64(h ^ (uint64_t)v) >> 40) * (4.0f / 16777216.0f) - 2.0f;
}

/* The logits at position n-1 of the sequence toks[0 .. n): the reference, no paging. */
static inline void fm_logits_at(const struct fake_model *fm, const int32_t *toks, int n, float *out)
{
	uint64_t h = 0;
	int i;

	for (i = 0; i < n; i++)
		h = fm_hash(h, toks[i]);
	fm_logits(fm, h, out);
}

/* The step: write every seq's tokens into its pages, then compute the logits rows of its last
 * n_logits positions. */
static inline int fm_step(struct fake_model *fm, const struct mdl_cpu_seq *seqs, int n)
{
	int i, p;

	for (i = 0; i < n; i++)
		for (p = 0; p < seqs[i].n_tokens; p++) {
			int pos = seqs[i].pos0 + p;
			int32_t pg = seqs[i].pages[pos / fm->page_tokens];

			if (pg < 0 || pg >= fm->n_pages) {
				fm->n_bad++;
				return -EINVAL;
			}
			fm->kv[pg * fm->page_tokens + pos % fm->page_tokens] = seqs[i].tokens[p];
		}
	for (i = 0; i < n; i++) {
		uint64_t h = 0;
		int last = seqs[i].pos0 + seqs[i].n_tokens;
		int first = last - seqs[i].n_logits; /* position of row 0 */

		if (!seqs[i].n_logits)
			continue;
		for (p = 0; p < last; p++) {
			int32_t t = fm->kv[seqs[i].pages[p / fm->page_tokens] * fm->page_tokens +
					   p % fm->page_tokens];

			if (t < 0)
				fm->n_bad++;
			h = fm_hash(h, t);
			if (p >= first)
				fm_logits(fm, h, seqs[i].logits + (size_t)(p - first) * fm->vocab);
		}
	}
	return 0;
}

/* Greedy (ties to the lowest id), or inverse-CDF on softmax(logits / T) with u = mdl_uniform(seed,
 * counter): a pure function of (logits, params, counter), like mdl_sample. */
static inline int32_t fm_sample(int vocab, const float *x, const struct mdl_sampling *sp,
				uint64_t counter, float *logprob)
{
	double mx = -INFINITY, sum = 0.0, acc = 0.0, u;
	int v, best = 0;

	for (v = 0; v < vocab; v++)
		if (x[v] > x[best])
			best = v;
	if (sp->temperature > 0.0f) {
		for (v = 0; v < vocab; v++)
			if (x[v] / sp->temperature > mx)
				mx = x[v] / sp->temperature;
		for (v = 0; v < vocab; v++)
			sum += exp(x[v] / sp->temperature - mx);
		u = mdl_uniform(sp->seed, counter) * sum;
		for (v = 0; v < vocab - 1; v++) {
			acc += exp(x[v] / sp->temperature - mx);
			if (acc > u)
				break;
		}
		best = v;
	}
	if (logprob) {
		double m2 = -INFINITY, s2 = 0.0;

		for (v = 0; v < vocab; v++)
			if (x[v] > m2)
				m2 = x[v];
		for (v = 0; v < vocab; v++)
			s2 += exp((double)x[v] - m2);
		*logprob = (float)((double)x[best] - m2 - log(s2));
	}
	return best;
}

/* One request alone, no paging: the tokens a correct scheduler must produce. Stops like the
 * scheduler: eos/stop ids (STOP), max_tokens or max_ctx (LENGTH). Returns the count generated;
 * *finish gets the reason (1 stop, 2 length). */
static inline int fm_reference(const struct fake_model *fm, const int32_t *prompt, int n_prompt,
			       const struct mdl_sampling *sp, int max_tokens, int max_ctx,
			       const int32_t *stops, int n_stops, int32_t *out, int *finish)
{
	uint64_t h = 0;
	float *lg = malloc(sizeof(float) * (size_t)fm->vocab);
	int i, n = 0, len = n_prompt;

	for (i = 0; i < n_prompt; i++)
		h = fm_hash(h, prompt[i]);
	*finish = 0;
	while (!*finish) {
		int32_t t;

		fm_logits(fm, h, lg);
		t = fm_sample(fm->vocab, lg, sp, (uint64_t)n, NULL);
		out[n++] = t;
		len++;
		h = fm_hash(h, t);
		for (i = 0; i < n_stops; i++)
			if (stops[i] == t)
				*finish = 1;
		if (!*finish && (n >= max_tokens || len >= max_ctx))
			*finish = 2;
	}
	free(lg);
	return n;
}

#endif
