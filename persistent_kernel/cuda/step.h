/* SPDX-License-Identifier: Apache-2.0 */
/*
 * persistent_kernel/cuda/step.h: one forward step of the model on the GPU (decode tokens and
 * prefill chunks mixed), ending in sampling, in the shape the persistent scheduler can fire
 * without the CPU: every per-step input is read from a batch descriptor that lives in device
 * memory at addresses fixed at boot, so the step recorded for one batch-size bucket can be
 * captured once as a CUDA graph (also one instantiated with cudaGraphInstantiateFlagDeviceLaunch)
 * and replayed for every later step whose token count fits the bucket.
 *
 * Precision: weights and the KV cache are stored as PK_STEP_BF16 (the default; fp32/fp16 files are
 *   converted at upload) or PK_STEP_F32 (for checking fp32 models tightly); every accumulation,
 *   the residual stream, softmax and the logits are fp32.
 * KV layout: n_pages pages of page_tokens positions; page p holds, for every layer, K then V as
 *   (layer, 2, kv_head, page_tokens, head_dim) in the storage dtype. A sequence's page table maps
 *   logical page i (positions [i*page_tokens, (i+1)*page_tokens)) to a physical page; who owns
 *   which page is the scheduler's business.
 *
 * Ownership: pk_step_create() uploads the weights and allocates the KV pool, the batch descriptor
 *   and all scratch for the largest bucket, and creates a second stream and two events (the
 *   one-token step's prefetch branch); pk_step_destroy() frees everything. Recording and
 *   replaying a step allocate nothing.
 * Threading: create, destroy, pk_step_record() and the host helpers run on one host thread. The
 *   batch descriptor's arrays are written by whoever builds the batch (the persistent scheduler on
 *   the GPU, or the host through pk_step_batch_upload()) while no step is in flight, and read by
 *   the step's kernels. `done` is bumped by the step's last kernel (release, gpu scope, after the
 *   outputs are written); a poller acquires it before reading out_token/out_logprob/logits.
 * Errors: 0 or a negative errno; create fills err ("<what>: <problem>") and logs nothing.
 */
#ifndef OFFPATH_PK_CUDA_STEP_H
#define OFFPATH_PK_CUDA_STEP_H

#include <stddef.h>
#include <stdint.h>

#include <cuda_runtime_api.h>

#include "mdl.h"

#ifdef __cplusplus
extern "C" {
#endif

enum pk_step_dtype {
	PK_STEP_BF16 = 0,
	PK_STEP_F32 = 1,
};

/* Per-sequence sampling parameters, as model/sample.h defines them. counter: how many tokens the
 * request has generated before this one (the index of the uniform it draws). */
struct pk_sampling {
	float temperature; /* <= 0: greedy (argmax; ties to the lowest id) */
	int32_t top_k;     /* <= 0: off */
	float top_p;       /* >= 1 or <= 0: off */
	int32_t pad;
	uint64_t seed;
	uint64_t counter;
};

struct pk_step_opts {
	enum pk_step_dtype dtype;
	int page_tokens;        /* positions per KV page (e.g. 16) */
	size_t kv_bytes;        /* KV pool budget in bytes; 0: use gpu_mem_fraction */
	double gpu_mem_fraction; /* when kv_bytes == 0: pool = this fraction of free memory after the
				  * weights and scratch (e.g. 0.9) */
	int max_tokens;         /* most tokens one step carries (the largest bucket) */
	int max_seqs;           /* most sequences one step carries */
	int max_logits;         /* most logit rows one step computes (>= max_seqs) */
	int max_ctx;            /* longest context a sequence may reach (positions) */
	int progress;           /* 1: draw an upload progress bar on stderr when it is a terminal */
};

/* The batch descriptor: device arrays at addresses fixed at create. Token i of the step is token
 * tok_id[i] of sequence slot tok_seq[i] at position tok_pos[i]; positions below it must already be
 * in that sequence's KV pages (earlier steps, or earlier tokens of this step: a prefill chunk's
 * tokens attend causally to each other). */
struct pk_step_batch {
	int32_t *n_tokens;       /* [1] tokens this step, 1 .. bucket */
	int32_t *n_seqs;         /* [1] sequence slots used, 0 .. max_seqs */
	int32_t *n_logits;       /* [1] logit rows, 0 .. min(bucket, max_logits) */
	int32_t *tok_id;         /* [max_tokens] */
	int32_t *tok_pos;        /* [max_tokens] */
	int32_t *tok_seq;        /* [max_tokens] sequence slot */
	int32_t *logit_tok;      /* [max_logits] token index whose logits row i holds */
	int32_t *seq_row;        /* [max_seqs] logit row this sequence samples from; -1: none */
	int32_t *page_table;     /* [max_seqs][max_pages_per_seq] physical page ids */
	struct pk_sampling *samp; /* [max_seqs] */
	int32_t *out_token;      /* [max_seqs] sampled token (written when seq_row >= 0) */
	float *out_logprob;      /* [max_seqs] log p(token) under the raw logits */
	float *logits;           /* [max_logits][vocab] fp32 */
	unsigned long long *done; /* [1] +1 per completed step */
};

/* A host-side image of one batch, for the host-driven path and the tests. */
struct pk_step_host_batch {
	int n_tokens, n_seqs, n_logits;
	const int32_t *tok_id, *tok_pos, *tok_seq; /* n_tokens each */
	const int32_t *logit_tok;                  /* n_logits */
	const int32_t *seq_row;                    /* n_seqs */
	const int32_t *page_table;                 /* n_seqs * max_pages_per_seq */
	const struct pk_sampling *samp;            /* n_seqs */
};

struct pk_step;

/* Upload m's weights (progress bar on a terminal) and allocate the pool and scratch. */
int pk_step_create(struct pk_step **out, const struct mdl *m, const struct pk_step_opts *o,
		   char *err, size_t errlen);
/* Same shapes as cfg, weights drawn on the GPU from a counter-based hash of seed (uniform in
 * +-scale, norms 1): for benchmarks of real shapes without multi-GB files. */
int pk_step_create_random(struct pk_step **out, const struct mdl_config *cfg, uint64_t seed,
			  float scale, const struct pk_step_opts *o, char *err, size_t errlen);
void pk_step_destroy(struct pk_step *s);

const struct pk_step_batch *pk_step_batch(const struct pk_step *s);
int pk_step_n_pages(const struct pk_step *s);
int pk_step_max_pages_per_seq(const struct pk_step *s);
int pk_step_vocab(const struct pk_step *s);
/* Bytes of weights on the GPU, and KV bytes one token occupies (all layers, K and V). */
size_t pk_step_weight_bytes(const struct pk_step *s);
size_t pk_step_kv_bytes_per_token(const struct pk_step *s);

/* The smallest supported bucket >= n_tokens (1, 2, 4, 8, 16, ... up to max_tokens), or -EINVAL. */
int pk_step_bucket(const struct pk_step *s, int n_tokens);

/* Which kernels a step of this bucket runs: "fused" (skinny GEMMs with fused norms, bf16 buckets
 * <= 16) or "unfused" (cuBLAS + separate kernels). Env PK_STEP_UNFUSED=1 forces the unfused
 * path. */
const char *pk_step_path(const struct pk_step *s, int bucket);

/* Enqueue one step for a batch of at most `bucket` tokens on stream st. Launches only (no sync, no
 * allocation, no host reads of the descriptor): safe inside stream capture. A one-token step
 * also forks work onto the step's own second stream (an L2 prefetch beside the attention) and
 * joins it back into st before the step's last kernel, so st's order covers all of it. */
int pk_step_record(struct pk_step *s, int bucket, cudaStream_t st);

/* Capture pk_step_record(bucket) into a graph and instantiate it with flags (0, or
 * cudaGraphInstantiateFlagDeviceLaunch; device-launch graphs are uploaded here). */
int pk_step_graph(struct pk_step *s, int bucket, unsigned long long flags, cudaStream_t st,
		  cudaGraphExec_t *out);

/* Host path: copy a host batch image into the descriptor (async on st), validating it first:
 * counts, token ids, positions, sequence slots, logit rows, and every page id a token's
 * attention reads (positions 0 .. tok_pos of its sequence). -EINVAL, nothing copied, on a bad
 * one. */
int pk_step_batch_upload(struct pk_step *s, const struct pk_step_host_batch *b, cudaStream_t st);

#ifdef __cplusplus
}
#endif

#endif
