/* SPDX-License-Identifier: Apache-2.0 */
/*
 * tests/model/test_sample.c: model/sample.h's integer weights and mdl_sample's choice.
 *  - mdl_exp_weight(tab, x) against 2^40 expl(x) (libm long double) for 2M random x in
 *    [-29, 0] and the edges (0, NaN, x > 0, below the 2^-41 cut): within 0.6 (0.5 of it is
 *    the rounding to an integer).
 *  - mdl_sample against a transcription of sample.h's steps that sorts the whole vocabulary
 *    (no heap, no buckets, no quickselect): the same token for random logits with ties, NaN and
 *    -inf, temperatures, top-k and top-p, at a 5000-entry and a 151936-entry vocabulary; the
 *    logprob within 1e-5 of log_softmax in long double.
 * Fresh random inputs every run (seed printed; OFFPATH_TEST_SEED replays one). Exit 0 / 1.
 */
#include <inttypes.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "check.h"
#include "rng.h"
#include "sample.h"

static uint64_t tab[MDL_EXP_TAB];

static float rnd_unit(uint64_t *r) /* [0, 1) */
{
	return (float)(test_rng_next(r) >> 40) * (1.0f / 16777216.0f);
}

static void test_weights(uint64_t *r)
{
	CHECK(tab[0] == 1ull << 62, "tab[0] = %#" PRIx64, tab[0]);
	CHECK(mdl_exp_weight(tab, 0.0f) == 1ull << 40);
	CHECK(mdl_exp_weight(tab, 3.0f) == 1ull << 40, "x > 0 weighs as 0");
	CHECK(mdl_exp_weight(tab, NAN) == 0);
	CHECK(mdl_exp_weight(tab, -INFINITY) == 0);
	CHECK(mdl_exp_weight(tab, -29.0f) == 0, "below 2^-41");
	double worst = 0;
	float wx = 0;
	for (int i = 0; i < 2000000; i++) {
		float x = -29.0f * rnd_unit(r);
		if (i < 4096) /* every table boundary region near 0 too */
			x = -(float)i / 4096.0f;
		long double want = ldexpl(expl((long double)x), 40);
		double d = fabs((double)((long double)mdl_exp_weight(tab, x) - want));
		if (d > worst) {
			worst = d;
			wx = x;
		}
	}
	printf("  exp weight: worst |w - 2^40 e^x| = %.3f (x = %.9g) over 2M x\n", worst,
	       (double)wx);
	CHECK(worst <= 0.6, "worst %.3f at x = %.9g", worst, (double)wx);
}

/* ---- the reference: sample.h's steps with a full sort ---- */

static const float *ref_z;
static int cmp_order(const void *a, const void *b)
{
	int32_t i = *(const int32_t *)a, j = *(const int32_t *)b;
	if (ref_z[i] > ref_z[j])
		return -1;
	if (ref_z[i] < ref_z[j])
		return 1;
	return i < j ? -1 : i > j;
}

static int32_t ref_sample(const float *l, int V, const struct mdl_sampling *p, uint64_t counter,
			  float *z, int32_t *ord, uint64_t *w)
{
	if (!(p->temperature > 0.0f)) {
		int32_t best = 0;
		int any = 0;
		for (int i = 0; i < V; i++)
			if (l[i] == l[i] && (!any || l[i] > l[best]))
				best = i, any = 1;
		return best;
	}
	for (int i = 0; i < V; i++) {
		z[i] = l[i] / p->temperature;
		if (z[i] != z[i])
			z[i] = -INFINITY;
		ord[i] = i;
	}
	ref_z = z;
	qsort(ord, (size_t)V, sizeof(*ord), cmp_order);
	float zmax = z[ord[0]];
	if (zmax == -INFINITY)
		return ref_sample(l, V, &(struct mdl_sampling){0}, counter, z, ord, w);
	int n = p->top_k > 0 && p->top_k < V ? p->top_k : V;
	uint64_t S = 0;
	for (int i = 0; i < n; i++) {
		int32_t j = ord[i];
		w[j] = mdl_exp_weight(tab, z[j] == zmax ? 0.0f : z[j] - zmax);
		S += w[j];
	}
	uint64_t SP = S;
	if (p->top_p > 0.0f && p->top_p < 1.0f) {
		double thr = (double)p->top_p * (double)S;
		uint64_t cum = 0;
		for (int i = 0; i < n; i++) {
			cum += w[ord[i]];
			if ((double)cum >= thr) {
				n = i + 1;
				SP = cum;
				break;
			}
		}
	}
	uint64_t target = mdl_scale24(SP, mdl_random24(p->seed, counter)), cum = 0;
	for (int i = 0; i < n; i++) {
		cum += w[ord[i]];
		if (cum > target)
			return ord[i];
	}
	return -1;
}

static double ref_logprob(const float *l, int V, int32_t tok)
{
	long double mx = -INFINITY, sum = 0;
	for (int i = 0; i < V; i++)
		if (l[i] > mx)
			mx = l[i];
	for (int i = 0; i < V; i++)
		sum += expl((long double)l[i] - mx);
	return (double)((long double)l[tok] - mx - logl(sum));
}

/* Logits of one of four shapes: normal, flat (ties: few distinct values), a spike, and normal
 * with NaN / -inf sprinkled in. */
static void fill_logits(uint64_t *r, float *l, int V, int shape)
{
	for (int i = 0; i < V; i++) {
		float u1 = rnd_unit(r) + 1e-7f, u2 = rnd_unit(r);
		float g = sqrtf(-2.0f * logf(u1)) * cosf(6.2831853f * u2);
		switch (shape) {
		case 0: l[i] = 3.0f * g; break;
		case 1: l[i] = (float)(int)(4.0f * rnd_unit(r)) * 0.5f; break;
		case 2: l[i] = g + (i == V / 3 ? 12.0f : 0.0f); break;
		default:
			l[i] = 2.0f * g;
			if (test_rng_next(r) % 97 == 0)
				l[i] = test_rng_next(r) & 1 ? NAN : -INFINITY;
		}
	}
}

static void test_choice(uint64_t *r, int V, int rounds)
{
	float *l = malloc(sizeof(float) * V), *z = malloc(sizeof(float) * V);
	int32_t *ord = malloc(sizeof(int32_t) * V);
	uint64_t *w = malloc(sizeof(uint64_t) * V);
	struct mdl_sampler *s;
	CHECK(l && z && ord && w && mdl_sampler_create(&s, V) == 0);
	static const float temps[] = {0.0f, 0.35f, 1.0f, 1.7f};
	static const float tps[] = {1.0f, 0.9f, 0.5f, 0.01f};
	int draws = 0, same = 0;
	double lp_worst = 0;
	for (int round = 0; round < rounds; round++) {
		fill_logits(r, l, V, round % 4);
		for (int c = 0; c < 24; c++) {
			struct mdl_sampling p;
			memset(&p, 0, sizeof(p));
			p.temperature = temps[test_rng_next(r) % 4];
			int kk = (int)(test_rng_next(r) % 5);
			p.top_k = kk == 0 ? 0 : kk == 1 ? 1 : kk == 2 ? 5 : kk == 3 ? 40 : V - 1;
			p.top_p = tps[test_rng_next(r) % 4];
			p.seed = test_rng_next(r);
			uint64_t counter = test_rng_next(r) % 1000;
			float lp;
			int32_t got = mdl_sample(s, l, &p, counter, &lp);
			int32_t want = ref_sample(l, V, &p, counter, z, ord, w);
			draws++;
			same += got == want;
			CHECK(got == want, "V %d shape %d T %g k %d p %g seed %" PRIu64 " ctr %" PRIu64
			      ": token %d, reference %d", V, round % 4, (double)p.temperature, p.top_k,
			      (double)p.top_p, p.seed, counter, got, want);
			if (round % 4 != 3) { /* NaN logits make log_softmax NaN */
				double d = fabs((double)lp - ref_logprob(l, V, got));
				lp_worst = d > lp_worst ? d : lp_worst;
			}
		}
	}
	printf("  V %d: %d/%d draws equal to the full-sort reference; logprob worst |d| %.2e\n", V,
	       same, draws, lp_worst);
	CHECK(lp_worst <= 1e-5, "logprob off by %.3g", lp_worst);
	mdl_sampler_destroy(s);
	free(l);
	free(z);
	free(ord);
	free(w);
}

int main(void)
{
	const char *e = getenv("OFFPATH_TEST_SEED");
	uint64_t seed = e ? strtoull(e, NULL, 0) : (uint64_t)time(NULL) * 2654435761u + 1;
	printf("test_sample: seed %" PRIu64 " (OFFPATH_TEST_SEED replays it)\n", seed);
	uint64_t r = seed | 1;
	for (int i = 0; i < MDL_EXP_TAB; i++)
		tab[i] = mdl_exp_table_at(i);
	test_weights(&r);
	test_choice(&r, 5000, 40);
	test_choice(&r, 151936, 4);
	return check_exit();
}
