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

#include "sample.h"

struct mdl_sampler {
	int V;
	float *z;     /* (V) logits / temperature, NaN -> -inf */
	uint64_t *w;  /* (V) integer weights, valid for the tokens step 4 needed */
	int32_t *ord; /* (V) candidate ids, permuted by selection */
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
	if (!s->z || !s->w || !s->ord) {
		mdl_sampler_destroy(s);
		return -ENOMEM;
	}
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
	double sum = 0;
	for (int i = 0; i < V; i++)
		sum += exp((double)logits[i] - (double)mx);
	return (float)((double)logits[tok] - (double)mx - log(sum));
}

/* Weighted selection (sample.h steps 6 and 8) without sorting: among the ids a[0..n), find the
 * first one in order at which the running sum of weights satisfies the condition (mode 0:
 * (double)cum >= thr; mode 1: cum > target), by quickselect-style partitioning around a pivot,
 * recursing into the side that holds the answer: expected O(n). Invariant: the condition is
 * false at acc, the sum of every id before a[lo..hi) in order. On return a[0..pos) are exactly
 * the ids before the answer a[pos] (in some arrangement); *cum_out = running sum at a[pos]. */
static inline bool wcond(int mode, uint64_t cum, double thr, uint64_t target)
{
	return mode == 0 ? (double)cum >= thr : cum > target;
}

static int wselect(const float *z, const uint64_t *w, int32_t *a, int n, int mode, double thr,
                   uint64_t target, uint64_t *cum_out)
{
	int lo = 0, hi = n;
	uint64_t acc = 0;
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

int32_t mdl_sample(struct mdl_sampler *s, const float *logits, const struct mdl_sampling *p,
                   uint64_t counter, float *logprob)
{
	if (!s || !logits || !p)
		return -EINVAL;
	const int V = s->V;
	int32_t tok;

	if (!(p->temperature > 0.0f)) {
		tok = greedy(logits, V);
		goto out;
	}

	/* step 2 and zmax */
	float zmax = -INFINITY;
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
	int n = use_k ? p->top_k : V;
	uint64_t S = 0;
	if (use_k) { /* step 5: the top_k only */
		select_first(s, n);
	} else {
		for (int32_t j = 0; j < V; j++)
			s->ord[j] = j;
	}
	for (int i = 0; i < n; i++) { /* step 4 for the candidates */
		int32_t j = s->ord[i];
		float x = s->z[j] == zmax ? 0.0f : s->z[j] - zmax;
		s->w[j] = mdl_exp_weight(x);
		S += s->w[j];
	}

	/* step 6: afterwards ord[0..n) holds exactly P */
	uint64_t SP = S;
	if (p->top_p > 0.0f && p->top_p < 1.0f)
		n = wselect(s->z, s->w, s->ord, n, 0, (double)p->top_p * (double)S, 0, &SP) + 1;

	/* steps 7, 8 */
	uint64_t target = mdl_scale24(SP, mdl_random24(p->seed, counter));
	uint64_t cum;
	tok = s->ord[wselect(s->z, s->w, s->ord, n, 1, 0.0, target, &cum)];
out:
	if (logprob)
		*logprob = log_softmax_at(logits, V, tok);
	return tok;
}
