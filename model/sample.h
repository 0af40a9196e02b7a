/* SPDX-License-Identifier: Apache-2.0 */
/*
 * model/sample.h: token sampling from logits: greedy, temperature, top-k, top-p, per-request seed.
 * The random numbers are counter-based (a pure function of the request's seed and the index of the
 * generated token), so the CPU and the GPU draw the same uniform for the same token, and a request
 * gives the same output however it was batched or preempted.
 *
 * The mixing functions are static inline and marked MDL_HD so CUDA code can include this header.
 * Ownership: struct mdl_sampler holds scratch for one vocabulary, allocated at create.
 * Threading: one sampler per thread.
 */
#ifndef OFFPATH_MODEL_SAMPLE_H
#define OFFPATH_MODEL_SAMPLE_H

#include <math.h>
#include <stdint.h>

#if defined(__CUDACC__)
#define MDL_HD __host__ __device__
#else
#define MDL_HD
#endif

struct mdl_sampling {
	float temperature; /* <= 0: greedy (argmax; ties go to the lowest id) */
	int top_k;         /* <= 0: off */
	float top_p;       /* >= 1 or <= 0: off */
	uint64_t seed;
};

/* splitmix64 finalizer. */
static inline MDL_HD uint64_t mdl_mix64(uint64_t x)
{
	x += 0x9e3779b97f4a7c15ull;
	x = (x ^ (x >> 30)) * 0xbf58476d1ce4e5b9ull;
	x = (x ^ (x >> 27)) * 0x94d049bb133111ebull;
	return x ^ (x >> 31);
}

/* The uniform in [0, 1) for generated token number `counter` of a request seeded with `seed`:
 * 24 random bits, exact in fp32 on every device. */
static inline MDL_HD float mdl_uniform(uint64_t seed, uint64_t counter)
{
	uint64_t r = mdl_mix64(seed ^ mdl_mix64(counter));
	return (float)(r >> 40) * (1.0f / 16777216.0f);
}

/*
 * Exact sampling order (mdl_sample; a GPU sampler must follow it step by step to pick the same
 * token). V = vocab_size.
 *  1. temperature <= 0 or NaN: greedy, the lowest id among the largest raw logits (NaN logits
 *     are never picked; all NaN gives 0). Steps 2-8 are skipped.
 *  2. z[i] = logits[i] / temperature, one IEEE fp32 division (no reciprocal); NaN -> -inf.
 *  3. The order: i comes before j iff z[i] > z[j], or z[i] == z[j] and i < j. "First n in order"
 *     below is always this order; zmax is z of the first token. zmax == -inf: the greedy token.
 *  4. Integer weights: w[i] = mdl_exp_weight(tab, z[i] == zmax ? 0 : z[i] - zmax) (fp32
 *     subtraction; tab the MDL_EXP_TAB-entry table of mdl_exp_table_at()),
 *     i.e. round(2^40 * exp(z[i] - zmax)) computed only with exact integer arithmetic, so every
 *     sum below is exact and does not depend on summation order. The first token weighs 2^40;
 *     tokens with exp(.) below ~2^-41 weigh 0 and are never drawn.
 *  5. Candidates C: the first top_k tokens in order when 0 < top_k < V, else all V.
 *     S = sum of w over C (uint64).
 *  6. When 0 < top_p < 1: P = the shortest prefix of C (in order) whose running sum cum
 *     satisfies (double)cum >= (double)top_p * (double)S (top-p is taken on the distribution
 *     already renormalised over the top-k, as Hugging Face and vLLM do). Else P = C.
 *     SP = sum of w over P.
 *  7. r = the 24 random bits of mdl_uniform(seed, counter) (r = u * 2^24, an integer);
 *     target = floor(SP * r / 2^24), exact (mdl_scale24()).
 *  8. The token is the first of P (in order) whose running sum exceeds target.
 * logprob is log_softmax of the raw (not temperature-scaled) logits, computed in double over
 * the whole vocabulary; it is reported, not used for the choice, so it need not be bit-exact.
 * Cost on the CPU: O(V) for steps 2-4; with top_k, O(V log top_k) to select the top_k with a
 * heap, then walks of the sorted top_k for steps 6 and 8; without, one pass summing weights
 * per bucket of zmax - z (a key that never decreases along the order), then only the bucket
 * holding the boundary is ordered (quickselect with weight sums). Any method that respects the
 * order picks the same token. At temperature 1 the logprob's denominator is the exact weight
 * sum (relative error below V * 2^-41) instead of a second pass over the vocabulary.
 */
#define MDL_SAMPLE_WBITS 40 /* the first token's weight is 2^MDL_SAMPLE_WBITS */

/* (a * b) >> 62, exact, for a, b < 2^63. */
static inline MDL_HD uint64_t mdl_mulq62(uint64_t a, uint64_t b)
{
#if defined(__CUDA_ARCH__)
	return (__umul64hi(a, b) << 2) | ((a * b) >> 62);
#else
	unsigned __int128 p = (unsigned __int128)a * b;
	return (uint64_t)(p >> 62);
#endif
}

/* 2^f in Q62 for f in [0, 1) given in Q62: a degree-13 Taylor polynomial of 2^f with
 * coefficients round(2^62 ln2^k / k!), Horner in exact integer arithmetic; in [2^62, 2^63). */
static inline MDL_HD uint64_t mdl_exp2_q62(uint64_t f)
{
	uint64_t p = 0x0000000000605865ull; /* k = 13 .. 0 */
	p = 0x00000000070ef594ull + mdl_mulq62(p, f);
	p = 0x000000007a32b1cdull + mdl_mulq62(p, f);
	p = 0x00000007933d4563ull + mdl_mulq62(p, f);
	p = 0x0000006d494f4e58ull + mdl_mulq62(p, f);
	p = 0x0000058b0088e972ull + mdl_mulq62(p, f);
	p = 0x00003ff97f8b1162ull + mdl_mulq62(p, f);
	p = 0x0002861225f0d8f1ull + mdl_mulq62(p, f);
	p = 0x0015d87fe78a6731ull + mdl_mulq62(p, f);
	p = 0x009d955b7dd273b9ull + mdl_mulq62(p, f);
	p = 0x038d611ae09417f1ull + mdl_mulq62(p, f);
	p = 0x0f5fdeffc162c754ull + mdl_mulq62(p, f);
	p = 0x2c5c85fdf473de6bull + mdl_mulq62(p, f);
	return 0x4000000000000000ull + mdl_mulq62(p, f);
}

/* The weight table: tab[i] = mdl_exp2_q62(i / 1024), i < MDL_EXP_TAB. Whoever samples fills it
 * once with mdl_exp_table_at() (the CPU sampler at create, a GPU block in shared memory): the
 * same integers everywhere. */
#define MDL_EXP_TAB 1024
static inline MDL_HD uint64_t mdl_exp_table_at(int i)
{
	return mdl_exp2_q62((uint64_t)i << 52);
}

/* round(2^40 * e^x) for x <= 0 (x > 0 is taken as 0; NaN weighs 0), with exact integer
 * arithmetic after one double multiply and floor: t = x log2(e) = n + f (f in Q62), 2^f =
 * tab[top 10 bits of f] * (a degree-3 Taylor polynomial of 2^r for the remaining r < 2^-10),
 * then the shift by n with rounding. Bit-identical on every IEEE machine (CPU and GPU run this
 * code). Within 0.58 of 2^40 e^x: 0.5 rounding + the degree-13 series near f = 1, 6.8e-14
 * relative (tests/model/test_sample.c measures it against long double). */
static inline MDL_HD uint64_t mdl_exp_weight(const uint64_t *tab, float x)
{
	if (x != x)
		return 0;
	if (x > 0.0f)
		x = 0.0f;
	double t = (double)x * 1.4426950408889634; /* log2(e) */
	if (t < -41.0)
		return 0;
	double n = floor(t);
	uint64_t f = (uint64_t)((t - n) * 4611686018427387904.0); /* Q62, exact scaling */
	uint64_t r = f & ((1ull << 52) - 1);                        /* < 2^-10 in Q62 */
	uint64_t q = 0x038d611ae09417f1ull;                         /* ln2^3 / 3! */
	q = 0x0f5fdeffc162c754ull + mdl_mulq62(q, r);
	q = 0x2c5c85fdf473de6bull + mdl_mulq62(q, r);
	q = 0x4000000000000000ull + mdl_mulq62(q, r);               /* 2^r, in [2^62, 2^62.001) */
	uint64_t p = mdl_mulq62(tab[f >> 52], q);                   /* 2^f, in [2^62, 2^63) */
	int shift = 22 - (int)n;                                    /* 22 .. 63 */
	return (p + (1ull << (shift - 1))) >> shift;
}

/* floor(s * r / 2^24), exact for s < 2^63, r < 2^24. */
static inline MDL_HD uint64_t mdl_scale24(uint64_t s, uint32_t r)
{
	return (s >> 24) * r + (((s & 0xffffffull) * r) >> 24);
}

/* The 24 random bits behind mdl_uniform(seed, counter). */
static inline MDL_HD uint32_t mdl_random24(uint64_t seed, uint64_t counter)
{
	return (uint32_t)(mdl_mix64(seed ^ mdl_mix64(counter)) >> 40);
}

struct mdl_sampler;

/* vocab_size in 1 .. 2^23 (so that 2^40 * V fits the exact sums). -EINVAL / -ENOMEM. */
int mdl_sampler_create(struct mdl_sampler **out, int vocab_size);
void mdl_sampler_destroy(struct mdl_sampler *s);

/* Pick the next token from logits (vocab_size fp32), following the order above. counter: how
 * many tokens this request has generated before this one. *logprob (if not NULL) gets log
 * p(token) under the unmodified distribution (log_softmax of the raw logits), as OpenAI's
 * logprobs report it. Allocates nothing. Returns the token id, or -EINVAL for NULL arguments. */
int32_t mdl_sample(struct mdl_sampler *s, const float *logits, const struct mdl_sampling *p,
		   uint64_t counter, float *logprob);

#endif
