/* SPDX-License-Identifier: Apache-2.0 */
/*
 * model/cpu.h: the reference forward pass on the CPU, fp32 math. It is the correctness oracle for
 * the GPU step and the compute of the CPU backend (the CPU emulation of the persistent kernel).
 * One call runs one step over a batch of sequences, each contributing a prefill chunk or one
 * decode token, against a paged KV cache owned by the struct mdl_cpu.
 *
 * KV layout: n_pages pages of page_tokens positions each; one page holds, for every layer,
 *   K and V as (layer, kv_head, page_tokens, head_dim) fp32. Exactly: a page is
 *   (n_layers, 2 [0 = K after q/k-norm and RoPE, 1 = V], n_kv_heads, page_tokens, head_dim) fp32,
 *   pages back to back in one pool. A sequence's page table maps its
 *   logical page i (positions [i*page_tokens, (i+1)*page_tokens)) to a physical page. Who owns
 *   which page is the caller's business (the scheduler's KV allocator); this module only reads
 *   and writes the pages it is handed.
 *
 * Ownership: mdl_cpu_create() allocates weights converted to fp32 (or borrows them when already
 *   fp32), the KV pool and all scratch for up to max_tokens tokens per step; mdl_cpu_destroy()
 *   frees. mdl_cpu_step() allocates nothing.
 * Threading: one struct mdl_cpu is driven by one thread at a time. It may use n_threads worker
 *   threads internally, created at create time.
 */
#ifndef OFFPATH_MODEL_CPU_H
#define OFFPATH_MODEL_CPU_H

#include <stdint.h>
#include "mdl.h"

struct mdl_cpu;

struct mdl_cpu_opts {
	int n_pages;     /* KV pool size in pages */
	int page_tokens; /* positions per page, e.g. 16 */
	int max_tokens;  /* most tokens one step may carry, summed over its sequences */
	int max_seqs;    /* most sequences one step may carry */
	int n_threads;   /* worker threads for the matmuls; 0 = one per online core */
};

/* One sequence's share of a step: n_tokens tokens at positions pos0 .. pos0+n_tokens-1. Positions
 * below pos0 must already be in the cache (written by earlier steps through the same pages). */
struct mdl_cpu_seq {
	const int32_t *tokens;
	int n_tokens;
	int pos0;
	const int32_t *pages; /* page table: at least (pos0+n_tokens+page_tokens-1)/page_tokens pages */
	float *logits;        /* NULL, or n_logits x vocab_size for the last n_logits tokens */
	int n_logits;         /* 0 .. n_tokens */
};

int mdl_cpu_create(struct mdl_cpu **out, const struct mdl *m, const struct mdl_cpu_opts *o);
void mdl_cpu_destroy(struct mdl_cpu *c);

/* Run one step: every sequence's tokens are embedded, go through all layers together (their K/V
 * written to the cache at their positions), and the last n_logits tokens of each sequence get
 * logits. Sequences in one step must not share a page they write. Returns 0, or -EINVAL when the batch breaks the limits given at create (too many
 * tokens or sequences, a token id outside the vocabulary, a page id outside the pool, a position at
 * or past max_pos); nothing is written to the cache in that case. */
int mdl_cpu_step(struct mdl_cpu *c, const struct mdl_cpu_seq *seqs, int n_seqs);

/* Physical page `page` of the KV pool (layout above), for tests and the CPU-vs-GPU comparison;
 * NULL when page is outside the pool. Valid until mdl_cpu_destroy(). */
float *mdl_cpu_kv_page(struct mdl_cpu *c, int page);

#endif
