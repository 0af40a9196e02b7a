/* SPDX-License-Identifier: Apache-2.0 */
/*
 * tests/gpu/gpu_test.h: helpers shared by the GPU tests: CUDA checks, a seeded RNG, dtype
 * rounding, relative-error norms, the skip rule (exit 77 when no GPU is present), opening a model
 * with its step, and the closing PASS/FAIL line.
 * Ownership: static inline helpers; gt_open_step() hands the caller a model and a step to close
 * (pk_step_destroy, mdl_close). Threading: test main thread only.
 */
#ifndef OFFPATH_TESTS_GPU_TEST_H
#define OFFPATH_TESTS_GPU_TEST_H

#include <math.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <cuda_runtime.h>

extern "C" {
#include "mdl.h"
}
#include "step.h"

#define CK(x)                                                                                  \
	do {                                                                                   \
		cudaError_t e_ = (x);                                                          \
		if (e_ != cudaSuccess) {                                                       \
			fprintf(stderr, "%s:%d: %s: %s\n", __FILE__, __LINE__, #x,             \
				cudaGetErrorString(e_));                                       \
			exit(1);                                                               \
		}                                                                              \
	} while (0)

#define CKR(x)                                                                                 \
	do {                                                                                   \
		int r_ = (x);                                                                  \
		if (r_) {                                                                      \
			fprintf(stderr, "%s:%d: %s returned %d\n", __FILE__, __LINE__, #x, r_);   \
			exit(1);                                                               \
		}                                                                              \
	} while (0)

/* The tests' step options: 16-token pages, a KV pool of 5% of the free GPU memory, max_tokens
 * tokens and as many logit rows per step, max_seqs sequences, contexts up to max_ctx; the rest
 * 0. */
static inline void gt_step_opts(struct pk_step_opts *o, int f32, int max_tokens, int max_seqs,
				int max_ctx)
{
	memset(o, 0, sizeof(*o));
	o->dtype = f32 ? PK_STEP_F32 : PK_STEP_BF16;
	o->page_tokens = 16;
	o->gpu_mem_fraction = 0.05;
	o->max_tokens = max_tokens;
	o->max_seqs = max_seqs;
	o->max_logits = max_tokens;
	o->max_ctx = max_ctx;
}

/* mdl_open(dir) into *m, then pk_step_create(o) into *s; on failure "prog: <error>" on stderr
 * and -1 */
static inline int gt_open_step(const char *prog, const char *dir, const struct pk_step_opts *o,
			       struct mdl **m, struct pk_step **s)
{
	char err[MDL_ERR_LEN];

	if (mdl_open(m, dir, err, sizeof(err)) || pk_step_create(s, *m, o, err, sizeof(err))) {
		fprintf(stderr, "%s: %s\n", prog, err);
		return -1;
	}
	return 0;
}

/* "prog: PASS|FAIL (N failure[s])" and the exit code: 0 when failures is 0, else 1 */
static inline int gt_result(const char *prog, int failures)
{
	printf("%s: %s (%d failure%s)\n", prog, failures ? "FAIL" : "PASS", failures,
	       failures == 1 ? "" : "s");
	return failures ? 1 : 0;
}

/* exit 77 (skip) with a clear message when no CUDA device can be used */
static inline void gt_require_gpu(const char *prog)
{
	int n = 0;
	cudaError_t e = cudaGetDeviceCount(&n);
	if (e != cudaSuccess || n < 1) {
		printf("%s: SKIP: no CUDA GPU here (%s); the gpu suite runs on the GPU machine "
		       "through tests/gpu/run.sh\n",
		       prog, e != cudaSuccess ? cudaGetErrorString(e) : "0 devices");
		exit(77);
	}
}

static inline uint64_t gt_rng_next(uint64_t *s)
{
	uint64_t x = (*s += 0x9e3779b97f4a7c15ull);
	x = (x ^ (x >> 30)) * 0xbf58476d1ce4e5b9ull;
	x = (x ^ (x >> 27)) * 0x94d049bb133111ebull;
	return x ^ (x >> 31);
}

/* uniform in [-1, 1) */
static inline float gt_uni(uint64_t *s)
{
	return (float)(gt_rng_next(s) >> 40) * (2.0f / 16777216.0f) - 1.0f;
}

/* round to the storage dtype (bf16: RNE) and back */
static inline float gt_round(int bf16, float v)
{
	return bf16 ? mdl_bf16_to_f32(mdl_f32_to_bf16(v)) : v;
}

/* host floats -> device buffer in the storage dtype */
static inline void *gt_upload(int bf16, const float *h, size_t n)
{
	void *d = NULL;
	size_t es = bf16 ? 2 : 4;
	CK(cudaMalloc(&d, n * es + 16));
	if (bf16) {
		uint16_t *t = (uint16_t *)malloc(n * 2 + 2);
		for (size_t i = 0; i < n; i++)
			t[i] = mdl_f32_to_bf16(h[i]);
		CK(cudaMemcpy(d, t, n * 2, cudaMemcpyHostToDevice));
		free(t);
	} else {
		CK(cudaMemcpy(d, h, n * 4, cudaMemcpyHostToDevice));
	}
	return d;
}

static inline void gt_download(int bf16, const void *d, float *h, size_t n)
{
	if (bf16) {
		uint16_t *t = (uint16_t *)malloc(n * 2 + 2);
		CK(cudaMemcpy(t, d, n * 2, cudaMemcpyDeviceToHost));
		for (size_t i = 0; i < n; i++)
			h[i] = mdl_bf16_to_f32(t[i]);
		free(t);
	} else {
		CK(cudaMemcpy(h, d, n * 4, cudaMemcpyDeviceToHost));
	}
}

/* ||a - b|| / ||b||; NaN in a gives +inf */
static inline double gt_rel(const float *a, const double *b, size_t n)
{
	double num = 0, den = 0;
	for (size_t i = 0; i < n; i++) {
		if (a[i] != a[i])
			return INFINITY;
		double d = a[i] - b[i];
		num += d * d;
		den += b[i] * b[i];
	}
	return den > 0 ? sqrt(num / den) : sqrt(num);
}

static inline double gt_relf(const float *a, const float *b, size_t n)
{
	double num = 0, den = 0;
	for (size_t i = 0; i < n; i++) {
		if (a[i] != a[i] || b[i] != b[i])
			return INFINITY;
		double d = (double)a[i] - b[i];
		num += d * d;
		den += (double)b[i] * b[i];
	}
	return den > 0 ? sqrt(num / den) : sqrt(num);
}

#endif
