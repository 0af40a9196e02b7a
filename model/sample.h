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

struct mdl_sampler;

int mdl_sampler_create(struct mdl_sampler **out, int vocab_size);
void mdl_sampler_destroy(struct mdl_sampler *s);

/* Pick the next token from logits (vocab_size fp32). counter: how many tokens this request has
 * generated before this one. *logprob (if not NULL) gets log p(token) under the unmodified
 * distribution (log_softmax of the raw logits), as OpenAI's logprobs report it. */
int32_t mdl_sample(struct mdl_sampler *s, const float *logits, const struct mdl_sampling *p,
		   uint64_t counter, float *logprob);

#endif
