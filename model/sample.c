/* SPDX-License-Identifier: Apache-2.0 */
/*
 * model/sample.c: the sampler described step by step in sample.h. Scratch (scaled logits,
 * integer weights, a selection heap) is sized for one vocabulary at create; mdl_sample()
 * allocates nothing.
 */
#include <errno.h>
#include <math.h>
#include <stdbool.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "sample.h"

/* Buckets of the whole-vocabulary selection: zmax - z in [0, BUCKET_SPAN) (every token of
 * nonzero weight: exp(-28.5) < 2^-41) split evenly. */
#define N_BUCKETS 4096
#define BUCKET_SPAN 29.0f

struct mdl_sampler {
	int V;
	float *z;      /* (V) logits / temperature, NaN -> -inf */
	uint64_t *w;   /* (V) integer weights, valid for the tokens step 4 needed */
	int32_t *ord;  /* (V) candidate ids, permuted by selection */
	uint16_t *bk;  /* (V) bucket of each token of nonzero weight */
	uint64_t bsum[N_BUCKETS];
	uint64_t tab[MDL_EXP_TAB]; /* mdl_exp_table_at() */
};

int mdl_sampler_create(struct mdl_sampler **out, int vocab_size)
{
	*out = NULL;
	if (vocab_size <= 0 || vocab_size > (1 << 23))
		return -EINVAL;
	struct mdl_sampler *s = calloc(1, sizeof(*s));
	if (!s)
		return -ENOMEM;
	s->V = vocab_size;
	s->z = malloc((size_t)vocab_size * sizeof(*s->z));
	s->w = malloc((size_t)vocab_size * sizeof(*s->w));
	s->ord = malloc((size_t)vocab_size * sizeof(*s->ord));
	s->bk = malloc((size_t)vocab_size * sizeof(*s->bk));
	if (!s->z || !s->w || !s->ord || !s->bk) {
		mdl_sampler_destroy(s);
		return -ENOMEM;
	}
	for (int i = 0; i < MDL_EXP_TAB; i++)
		s->tab[i] = mdl_exp_table_at(i);
	*out = s;
	return 0;
}

void mdl_sampler_destroy(struct mdl_sampler *s)
{
	if (!s)
		return;
	free(s->z);
	free(s->w);
	free(s->ord);
	free(s->bk);
	free(s);
}

/* a comes after b in the order of sample.h step 3 */
static inline bool after(const float *z, int32_t a, int32_t b)
{
	return z[a] < z[b] || (z[a] == z[b] && a > b);
}

static void sift_down(const float *z, int32_t *h, int n, int i)
{
	for (;;) {
		int l = 2 * i + 1, r = l + 1, m = i;
		if (l < n && after(z, h[l], h[m]))
			m = l;
		if (r < n && after(z, h[r], h[m]))
			m = r;
		if (m == i)
			return;
		int32_t t = h[i];
		h[i] = h[m];
		h[m] = t;
		i = m;
	}
}

/* ord[0..m) = the first m tokens in order, sorted. A heap whose root is the latest-in-order
 * kept token: O(V log m) to select, O(m log m) to sort. */
static void select_first(struct mdl_sampler *s, int m)
{
	const float *z = s->z;
	int32_t *h = s->ord;
	for (int i = 0; i < m; i++)
		h[i] = i;
	for (int i = m / 2 - 1; i >= 0; i--)
		sift_down(z, h, m, i);
	for (int32_t i = m; i < s->V; i++) {
		if (after(z, h[0], i)) {
			h[0] = i;
			sift_down(z, h, m, 0);
		}
	}
	/* heapsort: repeatedly move the latest to the end -> ord ascends in order */
	for (int n = m - 1; n > 0; n--) {
		int32_t t = h[0];
		h[0] = h[n];
		h[n] = t;
		sift_down(z, h, n, 0);
	}
}

static int32_t greedy(const float *logits, int V)
{
	int32_t best = 0;
	float bv = -INFINITY;
	bool any = false;
	for (int32_t i = 0; i < V; i++) {
		float v = logits[i];
		if (v != v)
			continue;
		if (!any || v > bv) {
			bv = v;
			best = i;
			any = true;
		}
	}
	return best;
}

static float log_softmax_at(const float *logits, int V, int32_t tok)
{
	float mx = -INFINITY;
	for (int i = 0; i < V; i++)
		if (logits[i] > mx)
			mx = logits[i];
	/* fp32 terms (each within 1 ulp), summed in double: reported, not used for the choice */
	double sum = 0;
	for (int i = 0; i < V; i++)
		sum += expf(logits[i] - mx);
	return (float)((double)logits[tok] - (double)mx - log(sum));
}

/* Weighted selection (sample.h steps 6 and 8) without sorting: among the ids a[0..n), find the
 * first one in order at which the running sum of weights satisfies the condition (mode 0:
 * (double)cum >= thr; mode 1: cum > target), by quickselect-style partitioning around a pivot,
 * recursing into the side that holds the answer: expected O(n). Invariant: the condition is
 * false at acc, the sum of every id before a[lo..hi) in order (base: of those before a[0..n)).
 * On return a[0..pos) are exactly the ids before the answer a[pos] (in some arrangement);
 * *cum_out = running sum at a[pos]. */
static inline bool wcond(int mode, uint64_t cum, double thr, uint64_t target)
{
	return mode == 0 ? (double)cum >= thr : cum > target;
}

static int wselect(const float *z, const uint64_t *w, int32_t *a, int n, int mode, double thr,
                   uint64_t target, uint64_t base, uint64_t *cum_out)
{
	int lo = 0, hi = n;
	uint64_t acc = base; /* the sum of every token before a[0..n) in order */
	while (hi - lo > 16) {
		/* median of three as the pivot, moved to a[hi-1] */
		int mid = lo + (hi - lo) / 2;
		int32_t x = a[lo], y = a[mid], v = a[hi - 1];
		int32_t piv = after(z, y, x) ? (after(z, v, y) ? y : (after(z, v, x) ? v : x))
		                             : (after(z, v, x) ? x : (after(z, v, y) ? v : y));
		int pi = piv == x ? lo : (piv == y ? mid : hi - 1);
		a[pi] = a[hi - 1];
		a[hi - 1] = piv;
		int i = lo;
		uint64_t before = 0;
		for (int j = lo; j < hi - 1; j++) {
			if (after(z, piv, a[j])) { /* a[j] comes before the pivot */
				int32_t t = a[i];
				a[i] = a[j];
				a[j] = t;
				before += w[a[i]];
				i++;
			}
		}
		a[hi - 1] = a[i];
		a[i] = piv;
		if (i > lo && wcond(mode, acc + before, thr, target)) {
			hi = i;
		} else if (wcond(mode, acc + before + w[piv], thr, target)) {
			*cum_out = acc + before + w[piv];
			return i;
		} else {
			acc += before + w[piv];
			lo = i + 1;
		}
	}
	for (int i = lo + 1; i < hi; i++) { /* insertion sort of the last few, then walk */
		int32_t t = a[i];
		int j = i;
		for (; j > lo && after(z, a[j - 1], t); j--)
			a[j] = a[j - 1];
		a[j] = t;
	}
	for (int i = lo; i < hi; i++) {
		acc += w[a[i]];
		if (wcond(mode, acc, thr, target) || i == hi - 1) { /* the last: only if sums lie */
			*cum_out = acc;
			return i;
		}
	}
	*cum_out = acc; /* empty range: cannot happen, the condition holds at the full sum */
	return hi - 1 > 0 ? hi - 1 : 0;
}

/* ord[0..n) sorted in order: the first position whose running sum satisfies the condition. */
static int walk(const uint64_t *w, const int32_t *ord, int n, int mode, double thr,
                uint64_t target, uint64_t *cum_out)
{
	uint64_t cum = 0;
	for (int i = 0; i < n; i++) {
		cum += w[ord[i]];
		if (wcond(mode, cum, thr, target) || i == n - 1) {
			*cum_out = cum;
			return i;
		}
	}
	*cum_out = 0;
	return 0;
}

/* The whole vocabulary (weights in w, bk and bsum filled): the first token in order whose
 * running sum satisfies the condition. The bucket key floor((zmax - z) * N / SPAN) never
 * decreases along the order, so summing whole buckets finds the one holding the answer; only
 * its tokens are ordered (wselect). Expected O(V) with one pass over the vocabulary. */
static int32_t bucket_select(struct mdl_sampler *s, int mode, double thr, uint64_t target,
                             uint64_t *cum_out)
{
	uint64_t acc = 0;
	int b = 0;
	for (; b < N_BUCKETS - 1; b++) {
		if (wcond(mode, acc + s->bsum[b], thr, target))
			break;
		acc += s->bsum[b];
	}
	int n = 0;
	for (int32_t j = 0; j < s->V; j++)
		if (s->w[j] && s->bk[j] == b)
			s->ord[n++] = j;
	return s->ord[wselect(s->z, s->w, s->ord, n, mode, thr, target, acc, cum_out)];
}

int32_t mdl_sample(struct mdl_sampler *s, const float *logits, const struct mdl_sampling *p,
                   uint64_t counter, float *logprob)
{
	if (!s || !logits || !p)
		return -EINVAL;
	const int V = s->V;
	int32_t tok;
	double lse = NAN; /* log sum exp(logits - max), when the draw already has it */
	float zmax = -INFINITY;

	if (!(p->temperature > 0.0f)) {
		tok = greedy(logits, V);
		goto out;
	}

	/* step 2 and zmax */
	for (int32_t i = 0; i < V; i++) {
		float z = logits[i] / p->temperature;
		if (z != z)
			z = -INFINITY;
		s->z[i] = z;
		if (z > zmax)
			zmax = z;
	}
	if (zmax == -INFINITY) {
		tok = greedy(logits, V);
		goto out;
	}

	bool use_k = p->top_k > 0 && p->top_k < V;
	bool use_p = p->top_p > 0.0f && p->top_p < 1.0f;
	uint64_t S = 0, SP, cum, target;
	if (use_k) {
		/* step 5: ord[0..k) = the top_k, sorted in order; steps 4, 6-8 walk it */
		int n = p->top_k;
		select_first(s, n);
		for (int i = 0; i < n; i++) {
			int32_t j = s->ord[i];
			float x = s->z[j] == zmax ? 0.0f : s->z[j] - zmax;
			s->w[j] = mdl_exp_weight(s->tab, x);
			S += s->w[j];
		}
		SP = S;
		if (use_p)
			n = walk(s->w, s->ord, n, 0, (double)p->top_p * (double)S, 0, &SP) + 1;
		target = mdl_scale24(SP, mdl_random24(p->seed, counter));
		tok = s->ord[walk(s->w, s->ord, n, 1, 0.0, target, &cum)];
		goto out;
	}
	/* step 4 over the vocabulary, with the bucket sums of bucket_select() */
	memset(s->bsum, 0, sizeof(s->bsum));
	const float bscale = (float)N_BUCKETS / BUCKET_SPAN;
	for (int32_t j = 0; j < V; j++) {
		float x = s->z[j] == zmax ? 0.0f : s->z[j] - zmax;
		uint64_t w = mdl_exp_weight(s->tab, x);
		s->w[j] = w;
		if (w) {
			int b = (int)(-x * bscale); /* x = z - zmax: -x = zmax - z rounded the same */
			b = b < N_BUCKETS ? b : N_BUCKETS - 1;
			s->bk[j] = (uint16_t)b;
			s->bsum[b] += w;
			S += w;
		}
	}
	/* at temperature 1 the weights are 2^40 exp(logit - max) within 0.51 each: their exact sum
	 * gives log_softmax's denominator to ~V * 2^-41 relative, no second pass needed */
	if (p->temperature == 1.0f)
		lse = log((double)S * 0x1p-40);
	/* step 6: P ends at the first token where (double)cum >= top_p * S; every later token has
	 * a larger running sum, so the draw below, whose target is < SP, never passes it */
	SP = S;
	if (use_p)
		bucket_select(s, 0, (double)p->top_p * (double)S, 0, &SP);
	/* steps 7, 8 */
	target = mdl_scale24(SP, mdl_random24(p->seed, counter));
	tok = bucket_select(s, 1, 0.0, target, &cum);
out:
	if (logprob)
		*logprob = lse == lse ? (float)((double)logits[tok] - (double)zmax - lse)
				      : log_softmax_at(logits, V, tok);
	return tok;
}
