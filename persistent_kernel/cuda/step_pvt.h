/* SPDX-License-Identifier: Apache-2.0 */
/*
 * persistent_kernel/cuda/step_pvt.h: the forward step's kernels, one launcher each, shared by
 * step.cu and the per-kernel tests (tests/gpu/test_pk_kernels.cu). CUDA C++ only.
 *
 * Conventions: `dt` is the storage dtype of weights, KV and the bf16/f32 activations that feed
 *   GEMMs ("T" below); fp32 buffers are named so. Row counts the kernels read from device memory
 *   (n_rows) make rows at or past *n_rows no-ops, so a launch sized for a bucket serves any batch
 *   that fits it. Every launcher only enqueues work on st (capture-safe) and returns 0 or
 *   -EINVAL for a shape it does not support.
 * Ownership: launchers allocate nothing; callers own every buffer.
 * Threading: host thread that owns the stream.
 */
#ifndef OFFPATH_PK_CUDA_STEP_PVT_H
#define OFFPATH_PK_CUDA_STEP_PVT_H

#include <stddef.h>
#include <stdint.h>

#include <cuda_runtime_api.h>

#include "step.h"

/* Attention splits the context into chunks (split-K); partials merge in a second kernel. For
 * small batches the chunk grows with the context, 16 positions per 256 up to this many (64: a
 * short chain of dependent memory round trips per block; measured: 256 left small-batch decode
 * latency-bound, a fixed 32 won at context 512 but lost at 4096 to the longer merge). */
#define PK_ATTN_CHUNK 64
/* Split count the attention workspace must hold per (token, head) for contexts up to max_ctx:
 * at most 16 while the chunk still grows (context <= 16 * PK_ATTN_CHUNK), then one per
 * PK_ATTN_CHUNK positions. */
static inline int pk_attn_max_splits(int max_ctx)
{
	int n = (max_ctx + PK_ATTN_CHUNK - 1) / PK_ATTN_CHUNK;
	return n > 16 ? n : 16;
}
/* Most query heads per KV head (GQA group) the attention kernel keeps in registers. */
#define PK_ATTN_GMAX 8
/* GEMMs with at most this many rows use pk's own GEMV (bytes-bound); more go to cuBLAS. */
#define PK_GEMV_MAX_ROWS 8

struct pk_dims {
	int hidden, n_heads, n_kv, head_dim, inter, vocab;
	int page_tokens, max_pages; /* max_pages: page-table row length per sequence */
	int n_layers;
	float eps;
	int attn_bias, qk_norm;
};

/* One layer's weights on the GPU (storage dtype): QKV rows are q then k then v heads; gate/up rows
 * are the I gate rows then the I up rows. bqkv / qn / kn are NULL when the model has none. */
struct pk_layer_w {
	void *attn_norm, *wqkv, *bqkv, *qn, *kn, *wo, *mlp_norm, *wgu, *wdown;
};

/* h[r] = emb[tok_id[r]] (fp32) for r < *n_rows; rows up to bucket past it are zeroed. When ss
 * is given, ss[r * ss_ld] = sum of h[r]^2 (one partial, for a PK_IN_NORM consumer). */
int pk_k_embed(enum pk_step_dtype dt, const void *emb, int hidden, const int32_t *tok_id,
	       const int32_t *n_rows, int bucket, float *h, float *ss, int ss_ld, cudaStream_t st);

/* RMSNorm with the residual add fused: for each row r < *n_rows (gather: row src = gather[r],
 * else src = r): v = h[src] + (delta ? delta[src] : 0); when gather == NULL, h[src] = v;
 * out[r] = T(v * rsqrt(mean(v^2) + eps) * w). Rows past *n_rows up to bucket get zeros. */
int pk_k_rmsnorm(enum pk_step_dtype dt, float *h, const float *delta, const void *w, int hidden,
		 float eps, const int32_t *gather, const int32_t *n_rows, int bucket, void *out,
		 cudaStream_t st);

/* y[m][n] = sum_k x[m][k] * W[n][k] for m < M (fp32 out, fp32 accumulation); W (N, K) row-major
 * in dt, x (M, ldx) in dt. K must be a multiple of 8. cublas: a cublasHandle_t already bound to st
 * with a workspace, used when M > PK_GEMV_MAX_ROWS (or when force_cublas). */
int pk_k_gemm(void *cublas, enum pk_step_dtype dt, const void *W, int N, int K, const void *x,
	      int ldx, int M, float *y, int ldy, int force_cublas, cudaStream_t st);

/* Tensor-core skinny GEMM (bf16 only) for 1..16 rows, with fused prologue and epilogue:
 *   in  PK_IN_X:    x (M, ldx) bf16
 *       PK_IN_NORM: x = bf16(h[src] * rsqrt(sum(ss[src][0..n_parts)) / K + eps) * nw), src =
 *                   gather ? gather[m] : m; rows m >= *n_rows (when given) are zero
 *   out PK_OUT_Y:   y[m][n] = acc (fp32, ldy)
 *       PK_OUT_ACC: y[m][n] += acc (the residual stream), and ss_out[m][blockIdx] = sum of the
 *                   block's 16 updated values squared (deterministic partials for the next norm)
 *       PK_OUT_SWIGLU: W holds gate rows then up rows (2N, K); act[m][n] = bf16(silu(g) * u)
 * K must be a multiple of 32. One block of 16 warps per 16 output rows; warps split K; mma.sync
 * m16n8k16 with fp32 accumulation; every weight byte is read once with 16-byte loads. */
enum pk_skinny_in { PK_IN_X = 0, PK_IN_NORM = 1 };
enum pk_skinny_out { PK_OUT_Y = 0, PK_OUT_ACC = 1, PK_OUT_SWIGLU = 2 };
struct pk_skinny {
	const void *W;
	int N, K, M;
	const void *x;
	int ldx;
	const float *h;
	int ldh;
	const void *nw;
	const float *ss;
	int ss_ld, n_parts;
	const int32_t *gather, *n_rows;
	float eps;
	float *y;
	int ldy;
	float *ss_out;
	void *act;
	int ldact;
};
int pk_k_skinny(const struct pk_skinny *a, int in, int out, cudaStream_t st);
/* How many ss_out partials a PK_OUT_ACC launch with N rows and M tokens writes per token (M = 1
 * runs a streamed GEMV instead of mma: one partial per block, min(N / 8, what the GPU holds at
 * once) blocks, at most ss_ld = hidden / 8; else one per 16 rows). */
int pk_k_skinny_parts(int N, int M);

/* After the fused QKV projection qkv (bucket, (n_heads + 2 n_kv) * head_dim) fp32: add the bias
 * (when given, same layout), per-head RMSNorm of q and k (when qn/kn given), RoPE on q and k
 * (inv_freq: head_dim/2 fp32; HF rotate_half pairing i, i + head_dim/2), write q (fp32, same
 * layout as qkv's q part, row stride n_heads*head_dim) and append k, v to the paged pool at
 * layer `layer`. pdl (here and in pk_k_attention): 1 when the kernels before and after on st
 * are the fused path's own (programmatic dependent launch, kernels.cu launch()); 0 beside
 * cuBLAS. */
int pk_k_qkv_post(enum pk_step_dtype dt, const struct pk_dims *d, const float *qkv,
		  const void *bias, const void *qn, const void *kn, const float *inv_freq,
		  const struct pk_step_batch *b, int bucket, void *kv_pool, int layer, float *q,
		  int pdl, cudaStream_t st);

/* Paged causal attention for every token r < *n_tokens: query heads of q (fp32) against the
 * positions 0 .. tok_pos[r] of its sequence; out (bucket, n_heads*head_dim) in dt. Contexts
 * longer than one chunk are split (max_splits = pk_attn_max_splits(max_ctx)) into ws_o (fp32,
 * bucket*n_heads*max_splits*head_dim) and ws_ml (fp32, bucket*n_heads*max_splits*2) and merged. */
int pk_k_attention(enum pk_step_dtype dt, const struct pk_dims *d, const float *q,
		   const void *kv_pool, int layer, const struct pk_step_batch *b, int bucket,
		   int max_splits, float *ws_o, float *ws_ml, void *out, int pdl, cudaStream_t st);

/* out[r][i] = T(silu(gu[r][i]) * gu[r][inter + i]) for r < bucket (gate then up, fp32). */
int pk_k_swiglu(enum pk_step_dtype dt, const float *gu, int inter, int bucket, void *out,
		cudaStream_t st);

/* For every sequence slot s < *n_seqs with seq_row[s] >= 0: sample from logits[seq_row[s]]
 * (vocab fp32) with samp[s], following model/sample.h's exact order (same token as mdl_sample);
 * write out_token[s] and out_logprob[s]. scratch: pk_k_sample_scratch(vocab, max_seqs) bytes,
 * 8-byte aligned (token weights and pass-1 partials). Two kernels: pass 1 over many blocks,
 * then one block a sequence. pdl: as for pk_k_qkv_post (the kernel before is the fused path's
 * LM head). */
size_t pk_k_sample_scratch(int vocab, int max_seqs);
int pk_k_sample(const struct pk_step_batch *b, int vocab, int max_seqs, void *scratch, int pdl,
		cudaStream_t st);

/* Kernel timeline (builds with -Dpk_trace=true define PK_TRACE; otherwise pk_trace_read
 * returns -ENOTSUP and the kernels record nothing). Thread 0 of every block of the fused
 * path's kernels appends a record at entry, after its pdl_wait, when its input is staged and
 * at exit (blocks that return early record less); the attention also after the scores of its
 * preloaded rows (MARK1) and after the softmax (MARK2). Records are appended in arrival order
 * into a fixed device buffer; what does not fit is counted and dropped. */
enum pk_trace_kind { PK_TR_GEMV1 = 1, PK_TR_QKV_POST, PK_TR_ATTN, PK_TR_MERGE };
enum pk_trace_phase {
	PK_TR_ENTRY,
	PK_TR_WAITED,
	PK_TR_STAGED,
	PK_TR_EXIT,
	PK_TR_MARK1,
	PK_TR_MARK2
};
struct pk_trace_rec {
	unsigned long long t_ns; /* %globaltimer */
	unsigned short kind, phase;
	unsigned short sm, variant; /* variant: the template's IN * 4 + OUT for PK_TR_GEMV1 */
	unsigned block, grid;       /* linear block index and block count */
	unsigned pad[2];
};
/* Forget what was recorded (stream-ordered on st). */
int pk_trace_reset(cudaStream_t st);
/* Copy up to max records (after synchronizing the device); *dropped = records that did not
 * fit. Returns the count, or -ENOTSUP without PK_TRACE. */
int pk_trace_read(struct pk_trace_rec *out, int max, unsigned *dropped);

/* The first n bytes (rounded down to 16) of each of `rows` rows, stride bytes apart, requested
 * into L2 on st, nothing read back: the one-token step's side branch (step.cu's
 * fork_l2_prefetch). -EINVAL: p or stride not 16-byte aligned, or n over 64 KiB. */
int pk_k_l2_prefetch(const void *p, size_t rows, size_t stride, size_t n, cudaStream_t st);

/* *done += 1 after everything before it on st (release, gpu scope). */
int pk_k_done(unsigned long long *done, cudaStream_t st);

/* Fill n elements of p (dt) with uniform values in [-scale, scale) from hash(seed, i), or with
 * `value` when scale == 0. */
int pk_k_fill(enum pk_step_dtype dt, void *p, size_t n, uint64_t seed, float scale, float value,
	      cudaStream_t st);

#endif
