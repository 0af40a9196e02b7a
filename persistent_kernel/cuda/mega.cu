/* SPDX-License-Identifier: Apache-2.0 */
/*
 * persistent_kernel/cuda/mega.cu: the decode megakernel (contract and design in mega.h).
 *
 * Work units, in ticket order: EMBED; per layer QKV, ATTN, O, GU, DOWN; then LM. A GEMV unit is
 * a contiguous range of weight rows, streamed as chunks of `cr` whole rows (one ring slot each;
 * gate/up chunks hold cr/2 gate rows then the same cr/2 up rows). In a chunk, warp w takes row
 * w / ks and every ks-th 16-byte column vector of it (ks = 16 / cr), so all 16 warps read the
 * slot whatever K is; the ks partials of a row are summed in a fixed order (deterministic).
 *
 * Cross-block signals (all counters in a.sync, u32, global memory, gpu scope):
 *   writer: its outputs (plain stores), then the consumer barrier, then thread 0 does
 *           __threadfence() and a release add (red.release.gpu);
 *   waiter: thread 0 spins with ld.acquire.gpu, then the consumer barrier; every read of data
 *           another block wrote in this launch goes through ld.global.cg (L2), never L1.
 *   last arriver (per head, per split group): atom.acq_rel.gpu add; the thread that sees the
 *           group complete has acquired every other member's release and does the group's work.
 * The producer publishes a slot's metadata with plain shared stores before the mbarrier arrive
 * (release, CTA scope); consumers read it after the phase completes (acquire, CTA scope). The
 * slot's `empty` barrier completes when all 16 consumer warps have arrived, each after its own
 * last use of the slot and its metadata.
 * Consumers that wrote a slot as scratch run fence.proxy.async before giving it back, so the
 * next TMA write into it is ordered after their generic writes.
 */
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <cuda_bf16.h>
#include <cuda_runtime.h>

#include "dev.cuh"
#include "mega.h"

namespace {

using namespace pk_dev;

enum { MK_EMBED, MK_QKV, MK_ATTN, MK_O, MK_GU, MK_DOWN, MK_LM };

#define MK_WARPS 16                /* consumer warps */
#define MK_CONS (MK_WARPS * 32)    /* consumer threads */
#define MK_THREADS (MK_CONS + 32)  /* + one producer warp */
#define MK_SLOT 32768              /* default bytes per ring slot (env PK_MEGA_SLOT_KB) */
#define MK_MAX_SLOTS 8
#define MK_SMAX 32                 /* most attention splits per (token, kv head) */
#define MK_ACH 64                  /* attention positions per inner chunk */
/* profile sink of thread 0 (ss in scope), or nullptr when not profiling */
#define PC (a.prof ? ss.prof : nullptr)
#define MK_OF 1024                 /* most G * head_dim an attention unit reduces in a slot */

/* global counters, then per layer: rows done per qkv head [nh + 2 nkv], heads ready per kv group
 * [nkv], split arrivals per (token, kv head) [mmax * nkv], then the four stage counters */
enum { MK_G_TICKET, MK_G_EXIT, MK_G_EMBED, MK_G_N };
enum { MK_C_ATTN, MK_C_O, MK_C_GU, MK_C_DOWN, MK_C_N };

struct mk_unit {
	int16_t op, layer;
	int32_t a, b;  /* GEMV: rows [a, b); ATTN: a = token * n_kv + kv head, b = split */
	const bf16 *w; /* GEMV: the stage's weight matrix (row 0); gate/up: the gate rows */
};

struct mk_meta {
	int t, j, op, layer, a, b;
};

struct mk_args {
	struct pk_dims d;
	const mk_unit *units;
	int n_units;
	const struct pk_layer_w *lw; /* device array */
	const bf16 *embed, *final_norm, *lm_head;
	const float *inv_freq;
	bf16 *pool;
	const int32_t *n_tokens, *tok_id, *tok_pos, *tok_seq, *page_table, *n_logits, *logit_tok;
	float *logits;
	float *h, *qkv, *q, *ws_o, *ws_ml;
	bf16 *attn, *act;
	unsigned *sync;
	int n_sync, lstride, mmax;
	int S;       /* attention splits per (token, kv head) */
	int n_slots, slot; /* ring slots and bytes per slot */
	int cr_h, cr_q, cr_i; /* chunk rows for K = hidden, n_heads * head_dim, inter */
	int n_o, n_gu, n_down; /* units per stage: wait targets */
	unsigned long long *prof; /* PK_MEGA_PROFILE: cycle sums per MK_P_* over blocks, or NULL */
};

/* profile buckets (thread 0 of each block, clock64 cycles, summed over blocks and launches) */
enum { MK_P_FULL, MK_P_DEP, MK_P_STAGE, MK_P_ATTN, MK_P_EPI, MK_P_PEMPTY, MK_P_PUNIT, MK_P_TOTAL,
       MK_P_N };

struct mk_smem {
	unsigned long long full[MK_MAX_SLOTS], empty[MK_MAX_SLOTS];
	mk_meta meta[MK_MAX_SLOTS];
	float red[2][MK_WARPS * PK_MEGA_MAX_M];
	float xr[MK_WARPS * PK_MEGA_MAX_M];
	float rs[PK_MEGA_MAX_M];
	float sc[PK_ATTN_GMAX][MK_ACH];
	float qs[MK_OF]; /* an attention unit's query heads, scaled */
	float mh[PK_ATTN_GMAX], lh[PK_ATTN_GMAX], al[PK_ATTN_GMAX];
	int pg[MK_ACH + 1];
	int flag[4];
	unsigned long long prof[MK_P_N];
};

/* ---------------------------------------------------------------- primitives */

__device__ __forceinline__ unsigned smem_u32(const void *p)
{
	return (unsigned)__cvta_generic_to_shared(p);
}

__device__ __forceinline__ void mbar_init(unsigned long long *b, unsigned count)
{
	asm volatile("mbarrier.init.shared::cta.b64 [%0], %1;" ::"r"(smem_u32(b)), "r"(count)
		     : "memory");
}

__device__ __forceinline__ void mbar_wait(unsigned long long *b, unsigned parity)
{
	asm volatile("{\n\t.reg .pred P1;\n"
		     "MK_WAIT:\n\t"
		     "mbarrier.try_wait.parity.shared::cta.b64 P1, [%0], %1;\n\t"
		     "@P1 bra MK_DONE;\n\t"
		     "bra MK_WAIT;\n"
		     "MK_DONE:\n}" ::"r"(smem_u32(b)),
		     "r"(parity)
		     : "memory");
}

__device__ __forceinline__ void mbar_arrive(unsigned long long *b)
{
	asm volatile("mbarrier.arrive.shared::cta.b64 _, [%0];" ::"r"(smem_u32(b)) : "memory");
}

__device__ __forceinline__ void mbar_expect_tx(unsigned long long *b, unsigned bytes)
{
	asm volatile("mbarrier.arrive.expect_tx.shared::cta.b64 _, [%0], %1;" ::"r"(smem_u32(b)),
		     "r"(bytes)
		     : "memory");
}

/* TMA bulk copy global -> shared, completing `bytes` on the mbarrier. */
__device__ __forceinline__ void bulk_g2s(void *dst, const void *src, unsigned bytes,
					 unsigned long long *b)
{
	asm volatile("cp.async.bulk.shared::cluster.global.mbarrier::complete_tx::bytes [%0], [%1], "
		     "%2, [%3];" ::"r"(smem_u32(dst)),
		     "l"(src), "r"(bytes), "r"(smem_u32(b))
		     : "memory");
}

__device__ __forceinline__ void fence_proxy_async(void)
{
	asm volatile("fence.proxy.async.shared::cta;" ::: "memory");
}

/* Barrier of the 16 consumer warps only (the producer warp never joins it). */
__device__ __forceinline__ void cons_sync(void)
{
	asm volatile("bar.sync 1, %0;" ::"n"(MK_CONS) : "memory");
}

/* Thread 0 waits until *p >= target (acquire), then every consumer is released. */
__device__ __forceinline__ void wait_ge(const unsigned *p, unsigned target,
				       unsigned long long *pc = nullptr)
{
	if (threadIdx.x == 0) {
		long long t0 = clock64();
		while (ld_acquire(p) < target)
			;
		if (pc)
			pc[MK_P_DEP] += clock64() - t0;
	}
	cons_sync();
}

/* After a consumer barrier: thread 0 publishes everything the consumers wrote (the barrier
 * orders their writes before its release, which is cumulative: no extra fence). */
__device__ __forceinline__ void signal(unsigned *p)
{
	if (threadIdx.x == 0)
		add_release(p, 1);
}

__device__ __forceinline__ unsigned *layer_ctr(const mk_args &a, int l)
{
	return a.sync + MK_G_N + (size_t)l * a.lstride;
}
__device__ __forceinline__ unsigned *grp_ctr(const mk_args &a, int l)
{
	return layer_ctr(a, l) + a.d.n_heads + 2 * a.d.n_kv;
}
__device__ __forceinline__ unsigned *split_ctr(const mk_args &a, int l)
{
	return grp_ctr(a, l) + a.d.n_kv;
}
__device__ __forceinline__ unsigned *stage_ctr(const mk_args &a, int l, int c)
{
	return split_ctr(a, l) + a.mmax * a.d.n_kv + c;
}

/* ---------------------------------------------------------------- GEMV shapes */

/* A GEMV stage's K and output rows per chunk (gate/up: act rows, i.e. half the chunk's rows). */
__device__ __forceinline__ void gemv_dims(const mk_args &a, int op, int *K, int *crr)
{
	const struct pk_dims &d = a.d;
	switch (op) {
	case MK_O: *K = d.n_heads * d.head_dim, *crr = a.cr_q; break;
	case MK_GU: *K = d.hidden, *crr = a.cr_h / 2; break;
	case MK_DOWN: *K = d.inter, *crr = a.cr_i; break;
	default: *K = d.hidden, *crr = a.cr_h; /* QKV, LM */
	}
}

/* ---------------------------------------------------------------- producer */

__device__ void producer(const mk_args &a, mk_smem &ss, unsigned char *slots)
{
	int slot = 0;
	unsigned ph = 0;
	int t = (int)atomicAdd(&a.sync[MK_G_TICKET], 1u);
	for (;;) {
		mk_unit u = {-1, 0, 0, 0, nullptr};
		int tn = 0;
		long long t0 = clock64();
		if (t < a.n_units) {
			u = a.units[t];
			if (a.prof) {
				asm volatile("" ::"r"(u.a)); /* the clock below waits for the load */
				ss.prof[MK_P_PUNIT] += clock64() - t0;
			}
			/* claim the next unit now: its round trip overlaps this one's copies */
			tn = (int)atomicAdd(&a.sync[MK_G_TICKET], 1u);
		}
		int K = 0, crr = 1;
		if (u.w)
			gemv_dims(a, u.op, &K, &crr);
		int nch = u.w ? (u.b - u.a + crr - 1) / crr : 1;
		for (int j = 0; j < nch; j++) {
			long long tw = clock64();
			mbar_wait(&ss.empty[slot], ph ^ 1);
			if (a.prof)
				ss.prof[MK_P_PEMPTY] += clock64() - tw;
			mk_meta &mt = ss.meta[slot];
			mt.t = t < a.n_units ? t : -1, mt.j = j, mt.op = u.op, mt.layer = u.layer;
			mt.a = u.a, mt.b = u.b;
			if (u.w) {
				int r0 = u.a + j * crr, nr = min(crr, u.b - r0);
				unsigned bytes = (unsigned)nr * K * 2;
				unsigned char *dst = slots + (size_t)slot * a.slot;
				bool gu = u.op == MK_GU;
				mbar_expect_tx(&ss.full[slot], gu ? 2 * bytes : bytes);
				bulk_g2s(dst, u.w + (size_t)r0 * K, bytes, &ss.full[slot]);
				if (gu) /* the up rows: I rows after the gate rows */
					bulk_g2s(dst + (size_t)crr * K * 2,
						 u.w + ((size_t)a.d.inter + r0) * K, bytes, &ss.full[slot]);
			} else {
				mbar_arrive(&ss.full[slot]);
			}
			if (++slot == a.n_slots) {
				slot = 0;
				ph ^= 1;
			}
		}
		if (t >= a.n_units)
			return;
		t = tn;
	}
}

/* ---------------------------------------------------------------- consumer pieces */

template <int M> __device__ void embed_unit(const mk_args &a, int ntok)
{
	int H = a.d.hidden, nv = H / 8;
	for (int i = threadIdx.x; i < M * nv; i += MK_CONS) {
		int m = i / nv, v = i % nv;
		float f[8] = {0, 0, 0, 0, 0, 0, 0, 0};
		if (m < ntok) {
			const bf16 *row = a.embed + (size_t)__ldg(a.tok_id + m) * H;
			vec16<bf16>::unpack(__ldg(reinterpret_cast<const uint4 *>(row) + v), f);
		}
		float4 *dst = reinterpret_cast<float4 *>(a.h + (size_t)m * H + v * 8);
		dst[0] = make_float4(f[0], f[1], f[2], f[3]);
		dst[1] = make_float4(f[4], f[5], f[6], f[7]);
	}
	cons_sync();
	signal(&a.sync[MK_G_EMBED]);
}

/* The unit's input rows, bf16 (M, K) in xs: RMSNorm of h (QKV, GU, LM: LM gathers the logit
 * tokens' rows) or a copy of attn / act (O, DOWN). Rows of absent tokens are zero. */
template <int M>
__device__ void stage_x(const mk_args &a, mk_smem &ss, int op, int l, int K, bf16 *xs, int ntok)
{
	int tid = threadIdx.x;
	if (op == MK_O || op == MK_DOWN) {
		const uint4 *src = reinterpret_cast<const uint4 *>(op == MK_O ? a.attn : a.act);
		int nv = K / 8;
		for (int i = tid; i < M * nv; i += MK_CONS)
			reinterpret_cast<uint4 *>(xs)[i] =
				i / nv < ntok ? __ldcg(src + i) : make_uint4(0, 0, 0, 0);
		cons_sync();
		return;
	}
	const bf16 *nw = op == MK_QKV ? static_cast<const bf16 *>(a.lw[l].attn_norm)
			 : op == MK_GU ? static_cast<const bf16 *>(a.lw[l].mlp_norm)
				       : a.final_norm;
	int nrow = op == MK_LM ? min(__ldg(a.n_logits), M) : ntok;
	const float *hr[M];
	float part[M];
#pragma unroll
	for (int m = 0; m < M; m++) {
		int src = op == MK_LM && m < nrow ? __ldg(a.logit_tok + m) : m;
		hr[m] = a.h + (size_t)src * K;
		part[m] = 0.0f;
	}
	for (int k = tid * 4; k < K; k += MK_CONS * 4)
#pragma unroll
		for (int m = 0; m < M; m++)
			if (m < nrow) {
				float4 v = __ldcg(reinterpret_cast<const float4 *>(hr[m] + k));
				part[m] += v.x * v.x + v.y * v.y + v.z * v.z + v.w * v.w;
			}
	int w = tid >> 5, lane = tid & 31;
#pragma unroll
	for (int m = 0; m < M; m++) {
		part[m] = warp_sum(part[m]);
		if (lane == 0)
			ss.xr[w * M + m] = part[m];
	}
	cons_sync();
	if (tid < M) {
		float s = 0.0f;
		for (int i = 0; i < MK_WARPS; i++)
			s += ss.xr[i * M + tid];
		ss.rs[tid] = rsqrtf(s / (float)K + a.d.eps);
	}
	cons_sync();
	for (int k = tid * 4; k < K; k += MK_CONS * 4) {
		float2 n01 = __bfloat1622float2(*reinterpret_cast<const __nv_bfloat162 *>(nw + k));
		float2 n23 = __bfloat1622float2(*reinterpret_cast<const __nv_bfloat162 *>(nw + k + 2));
#pragma unroll
		for (int m = 0; m < M; m++) {
			__nv_bfloat162 lo = __floats2bfloat162_rn(0.0f, 0.0f), hi = lo;
			if (m < nrow) {
				float4 v = __ldcg(reinterpret_cast<const float4 *>(hr[m] + k));
				float rs = ss.rs[m];
				/* as k_gemv1: bf16(h * rs * w) */
				lo = __floats2bfloat162_rn(v.x * rs * n01.x, v.y * rs * n01.y);
				hi = __floats2bfloat162_rn(v.z * rs * n23.x, v.w * rs * n23.y);
			}
			__nv_bfloat162 *dst = reinterpret_cast<__nv_bfloat162 *>(xs + (size_t)m * K + k);
			dst[0] = lo;
			dst[1] = hi;
		}
	}
	cons_sync();
}

/* Per-head epilogue of the QKV projection for every token: bias, q/k RMSNorm, RoPE; q heads
 * to a.q (fp32), k and v heads appended to the paged pool. Run by the unit that completed the
 * head's rows; threads (token, pair i / i + hd/2). */
template <int M, int HD>
__device__ void post_head(const mk_args &a, mk_smem &ss, int l, int hh, int ntok)
{
	const struct pk_dims &d = a.d;
	constexpr int HALF = HD / 2;
	int tid = threadIdx.x, m = tid / HALF, i = tid % HALF;
	int ncol = (d.n_heads + 2 * d.n_kv) * HD;
	bool on = m < M && m < ntok;
	const struct pk_layer_w &w = a.lw[l];
	float x0 = 0.0f, x1 = 0.0f;
	if (on) {
		const float *src = a.qkv + (size_t)m * ncol + (size_t)hh * HD;
		x0 = __ldcg(src + i);
		x1 = __ldcg(src + i + HALF);
		if (w.bqkv) {
			const bf16 *bb = static_cast<const bf16 *>(w.bqkv) + (size_t)hh * HD;
			x0 += __bfloat162float(bb[i]);
			x1 += __bfloat162float(bb[i + HALF]);
		}
	}
	bool is_q = hh < d.n_heads, is_k = !is_q && hh < d.n_heads + d.n_kv;
	if ((is_q || is_k) && w.qn) {
		float s = warp_sum(x0 * x0 + x1 * x1);
		if ((tid & 31) == 0)
			ss.xr[tid >> 5] = s;
		cons_sync();
		constexpr int WPT = HALF / 32; /* warps per token */
		float tot = 0.0f;
		for (int k = 0; k < WPT; k++)
			tot += ss.xr[min(m, M - 1) * WPT + k];
		float rs = rsqrtf(tot / (float)HD + d.eps);
		const bf16 *nw = static_cast<const bf16 *>(is_q ? w.qn : w.kn);
		x0 = x0 * rs * __bfloat162float(nw[i]);
		x1 = x1 * rs * __bfloat162float(nw[i + HALF]);
		cons_sync(); /* xr is reused */
	}
	if (!on)
		return;
	int pos = __ldg(a.tok_pos + m);
	if (is_q || is_k) {
		float s, c;
		sincosf((float)pos * a.inv_freq[i], &s, &c);
		float y0 = x0 * c - x1 * s, y1 = x1 * c + x0 * s;
		x0 = y0;
		x1 = y1;
	}
	if (is_q) {
		float *dst = a.q + (size_t)m * d.n_heads * HD + (size_t)hh * HD;
		dst[i] = x0;
		dst[i + HALF] = x1;
		return;
	}
	int kvh = is_k ? hh - d.n_heads : hh - d.n_heads - d.n_kv;
	int page = __ldg(a.page_table + (size_t)__ldg(a.tok_seq + m) * d.max_pages +
			 pos / d.page_tokens);
	size_t per_head = (size_t)d.page_tokens * HD;
	size_t off = (((size_t)page * d.n_layers + l) * 2 + (is_k ? 0 : 1)) * d.n_kv * per_head +
		     (size_t)kvh * per_head + (size_t)(pos % d.page_tokens) * HD;
	a.pool[off + i] = __float2bfloat16_rn(x0);
	a.pool[off + i + HALF] = __float2bfloat16_rn(x1);
}

/* One chunk of a GEMV unit (waits for the unit's input and stages it at the unit's first
 * chunk; signals the unit done after its last). */
template <int M, int HD>
__device__ void gemv_chunk(const mk_args &a, mk_smem &ss, const mk_meta &mt,
			   const unsigned char *sp, bf16 *xs, int *xkey, int par, int ntok)
{
	const struct pk_dims &d = a.d;
	int tid = threadIdx.x, w = tid >> 5, lane = tid & 31, op = mt.op, l = mt.layer;
	int K, crr;
	gemv_dims(a, op, &K, &crr);
	int cr = op == MK_GU ? 2 * crr : crr;
	if (mt.j == 0) {
		switch (op) {
		case MK_QKV:
			if (l == 0)
				wait_ge(&a.sync[MK_G_EMBED], 1, PC);
			else
				wait_ge(stage_ctr(a, l - 1, MK_C_DOWN), a.n_down, PC);
			break;
		case MK_O: wait_ge(stage_ctr(a, l, MK_C_ATTN), M * d.n_kv, PC); break;
		case MK_GU: wait_ge(stage_ctr(a, l, MK_C_O), a.n_o, PC); break;
		case MK_DOWN: wait_ge(stage_ctr(a, l, MK_C_GU), a.n_gu, PC); break;
		default: /* LM */
			if (d.n_layers)
				wait_ge(stage_ctr(a, d.n_layers - 1, MK_C_DOWN), a.n_down, PC);
			else
				wait_ge(&a.sync[MK_G_EMBED], 1, PC);
		}
		int key = op * 65536 + l;
		if (key != *xkey) {
			long long t0 = clock64();
			stage_x<M>(a, ss, op, l, K, xs, ntok);
			*xkey = key;
			if (a.prof && tid == 0)
				ss.prof[MK_P_STAGE] += clock64() - t0;
		}
	}
	int r0 = mt.a + mt.j * crr, nr = min(crr, mt.b - r0);
	int ks = MK_WARPS / cr, ri = w / ks, kk = w % ks;
	float acc[M];
#pragma unroll
	for (int m = 0; m < M; m++)
		acc[m] = 0.0f;
	if ((op == MK_GU ? ri % crr : ri) < nr) {
		const uint4 *wr = reinterpret_cast<const uint4 *>(sp + (size_t)ri * K * 2);
		const uint4 *xr = reinterpret_cast<const uint4 *>(xs);
		int nv = K / 8;
#pragma unroll 4
		for (int v = kk * 32 + lane; v < nv; v += ks * 32) {
			float wf[8];
			vec16<bf16>::unpack(wr[v], wf);
#pragma unroll
			for (int m = 0; m < M; m++) {
				float xf[8];
				vec16<bf16>::unpack(xr[m * nv + v], xf);
#pragma unroll
				for (int i = 0; i < 8; i++)
					acc[m] = fmaf(wf[i], xf[i], acc[m]);
			}
		}
	}
#pragma unroll
	for (int m = 0; m < M; m++) {
		acc[m] = warp_sum(acc[m]);
		if (lane == 0)
			ss.red[par][w * M + m] = acc[m];
	}
	cons_sync(); /* the slot is consumed; red[par] is complete */
	long long te = clock64();
	int outr = op == MK_GU ? crr : cr;
	if (tid < outr * M) {
		int i = tid / M, m = tid % M;
		if (i < nr) {
			float v = 0.0f;
			for (int k = 0; k < ks; k++)
				v += ss.red[par][(i * ks + k) * M + m];
			int n = r0 + i;
			switch (op) {
			case MK_QKV:
				a.qkv[(size_t)m * (d.n_heads + 2 * d.n_kv) * HD + n] = v;
				break;
			case MK_O:
			case MK_DOWN:
				/* the only addend of this element in this stage: a fire-and-forget
				 * L2 add is exact and keeps the round trip off the chunk */
				atomicAdd(a.h + (size_t)m * d.hidden + n, v);
				break;
			case MK_GU: {
				float u = 0.0f;
				for (int k = 0; k < ks; k++)
					u += ss.red[par][((crr + i) * ks + k) * M + m];
				a.act[(size_t)m * d.inter + n] =
					__float2bfloat16_rn(v / (1.0f + __expf(-v)) * u);
				break;
			}
			default: /* LM */
				if (m < __ldg(a.n_logits))
					a.logits[(size_t)m * d.vocab + n] = v;
			}
		}
	}
	if (r0 + nr < mt.b) {
		if (a.prof && tid == 0)
			ss.prof[MK_P_EPI] += clock64() - te;
		return;
	}
	/* the unit's last chunk: publish it */
	cons_sync();
	if (op == MK_QKV) {
		/* rows [a, b) span at most two heads (plan: unit rows <= head_dim) */
		if (tid == 0) {
			int n = 0;
			for (int hh = mt.a / HD; hh * HD < mt.b; hh++) {
				int ov = min(mt.b, (hh + 1) * HD) - max(mt.a, hh * HD);
				unsigned *c = layer_ctr(a, l) + hh;
				if (add_acq_rel(c, (unsigned)ov) + (unsigned)ov == (unsigned)HD)
					ss.flag[1 + n++] = hh;
			}
			ss.flag[0] = n;
		}
		cons_sync();
		int n = ss.flag[0];
		for (int k = 0; k < n; k++)
			post_head<M, HD>(a, ss, l, ss.flag[1 + k], ntok);
		cons_sync();
		if (tid == 0) {
			int G = d.n_heads / d.n_kv;
			for (int k = 0; k < n; k++) {
				int hh = ss.flag[1 + k];
				int gi = hh < d.n_heads ? hh / G
					 : hh < d.n_heads + d.n_kv ? hh - d.n_heads
								    : hh - d.n_heads - d.n_kv;
				add_release(grp_ctr(a, l) + gi, 1);
			}
		}
		cons_sync(); /* flag is reused */
	} else if (op == MK_O) {
		signal(stage_ctr(a, l, MK_C_O));
	} else if (op == MK_GU) {
		signal(stage_ctr(a, l, MK_C_GU));
	} else if (op == MK_DOWN) {
		signal(stage_ctr(a, l, MK_C_DOWN));
	}
	if (a.prof && tid == 0)
		ss.prof[MK_P_EPI] += clock64() - te;
}

/* HD/32 consecutive bf16 at p (4..16 bytes, aligned) as fp32, through L2. */
template <int E> __device__ __forceinline__ void ld_kv(const bf16 *p, float *f)
{
	if constexpr (E == 2) {
		unsigned u = __ldcg(reinterpret_cast<const unsigned *>(p));
		float2 t = __bfloat1622float2(*reinterpret_cast<const __nv_bfloat162 *>(&u));
		f[0] = t.x, f[1] = t.y;
	} else if constexpr (E == 4) {
		uint2 u = __ldcg(reinterpret_cast<const uint2 *>(p));
		const __nv_bfloat162 *h2 = reinterpret_cast<const __nv_bfloat162 *>(&u);
		float2 t0 = __bfloat1622float2(h2[0]), t1 = __bfloat1622float2(h2[1]);
		f[0] = t0.x, f[1] = t0.y, f[2] = t1.x, f[3] = t1.y;
	} else {
		vec16<bf16>::unpack(__ldcg(reinterpret_cast<const uint4 *>(p)), f);
	}
}

/* Attention of token r's query heads of KV head g over split s of its context: positions in
 * MK_ACH chunks with a running max/sum (one warp per position, lanes over head_dim); the 16
 * warps' outputs are summed in a fixed order through the unit's slot. One split: the output
 * directly; several: partials, merged by the split that finishes last. */
template <int M, int HD>
__device__ void attn_unit(const mk_args &a, mk_smem &ss, const mk_meta &mt, float *scr, int ntok)
{
	const struct pk_dims &d = a.d;
	constexpr int E = HD / 32;
	constexpr int GM = PK_ATTN_GMAX < MK_OF / HD ? PK_ATTN_GMAX : MK_OF / HD;
	int tid = threadIdx.x, w = tid >> 5, lane = tid & 31;
	int l = mt.layer, r = mt.a / d.n_kv, g = mt.a % d.n_kv, s = mt.b;
	int G = d.n_heads / d.n_kv, QD = d.n_heads * HD;
	unsigned *c_attn = stage_ctr(a, l, MK_C_ATTN);
	if (r >= ntok) {
		if (s == 0 && tid == 0)
			add_release(c_attn, 1); /* nothing to publish */
		return;
	}
	int ctx = __ldg(a.tok_pos + r) + 1;
	int per = (ctx + a.S - 1) / a.S;
	int chunk = max(MK_ACH, (per + MK_ACH - 1) / MK_ACH * MK_ACH);
	int nsplit = (ctx + chunk - 1) / chunk;
	if (s >= nsplit)
		return;
	wait_ge(grp_ctr(a, l) + g, (unsigned)G + 2, PC);
	int p0 = s * chunk, p1 = min(ctx, p0 + chunk);

	float o[GM][E];
	const float *qr = a.q + (size_t)r * QD + (size_t)g * G * HD;
	float scale = rsqrtf((float)HD);
	for (int i = tid; i < G * HD; i += MK_CONS)
		ss.qs[i] = __ldcg(qr + i) * scale;
#pragma unroll
	for (int h = 0; h < GM; h++)
#pragma unroll
		for (int e = 0; e < E; e++)
			o[h][e] = 0.0f;
	if (tid < G) {
		ss.mh[tid] = -INFINITY;
		ss.lh[tid] = 0.0f;
	}
	const int32_t *pt = a.page_table + (size_t)__ldg(a.tok_seq + r) * d.max_pages;
	size_t per_head = (size_t)d.page_tokens * HD, kv_stride = (size_t)d.n_kv * per_head;
	long long page_stride = (long long)d.n_layers * 2 * kv_stride;
	const bf16 *kb = a.pool + (size_t)l * 2 * kv_stride + (size_t)g * per_head + lane * E;
	const bf16 *vb = kb + kv_stride;

	for (int c0 = p0; c0 < p1; c0 += MK_ACH) {
		int n = min(MK_ACH, p1 - c0);
		int pg0 = c0 / d.page_tokens, npg = (c0 + n - 1) / d.page_tokens - pg0 + 1;
		if (tid < npg)
			ss.pg[tid] = __ldg(pt + pg0 + tid);
		cons_sync();
		constexpr int PW = MK_ACH / MK_WARPS; /* positions per warp per chunk */
		long long off[PW];
		float kv[PW][E];
#pragma unroll
		for (int it = 0; it < PW; it++) { /* all loads first: one round trip, not PW */
			int j = w + it * MK_WARPS, p = c0 + j;
			off[it] = (long long)ss.pg[(j < n ? p : c0) / d.page_tokens - pg0] * page_stride +
				  (long long)((j < n ? p : c0) % d.page_tokens) * HD;
			if (j < n)
				ld_kv<E>(kb + off[it], kv[it]);
		}
#pragma unroll
		for (int it = 0; it < PW; it++) {
			int j = w + it * MK_WARPS;
			if (j >= n)
				break;
#pragma unroll
			for (int h = 0; h < GM; h++) {
				if (h < G) {
					const float *qh = ss.qs + h * HD + lane * E;
					float acc = 0.0f;
#pragma unroll
					for (int e = 0; e < E; e++)
						acc = fmaf(qh[e], kv[it][e], acc);
					acc = warp_sum(acc);
					if (lane == 0)
						ss.sc[h][j] = acc;
				}
			}
		}
#pragma unroll
		for (int it = 0; it < PW; it++) /* V rows now: their latency overlaps the softmax */
			if (w + it * MK_WARPS < n)
				ld_kv<E>(vb + off[it], kv[it]);
		cons_sync();
		if (w < G) {
			float mx = -INFINITY;
			for (int j = lane; j < n; j += 32)
				mx = fmaxf(mx, ss.sc[w][j]);
			mx = warp_max(mx);
			float mold = ss.mh[w], mnew = fmaxf(mold, mx), sum = 0.0f;
			for (int j = lane; j < n; j += 32) {
				float e = __expf(ss.sc[w][j] - mnew);
				ss.sc[w][j] = e;
				sum += e;
			}
			sum = warp_sum(sum);
			__syncwarp();
			if (lane == 0) {
				float al = __expf(mold - mnew);
				ss.al[w] = al;
				ss.lh[w] = ss.lh[w] * al + sum;
				ss.mh[w] = mnew;
			}
		}
		cons_sync();
#pragma unroll
		for (int h = 0; h < GM; h++)
			if (h < G) {
				float al = ss.al[h];
#pragma unroll
				for (int e = 0; e < E; e++)
					o[h][e] *= al;
			}
#pragma unroll
		for (int it = 0; it < PW; it++) {
			int j = w + it * MK_WARPS;
			if (j >= n)
				break;
#pragma unroll
			for (int h = 0; h < GM; h++)
				if (h < G) {
					float pj = ss.sc[h][j];
#pragma unroll
					for (int e = 0; e < E; e++)
						o[h][e] = fmaf(pj, kv[it][e], o[h][e]);
				}
		}
		cons_sync(); /* sc, pg, al are rewritten by the next chunk */
	}
	/* 16 warps -> 8 (pairwise, in the slot) -> one fixed-order sum of 8 */
	if (w >= MK_WARPS / 2)
#pragma unroll
		for (int h = 0; h < GM; h++)
			if (h < G)
#pragma unroll
				for (int e = 0; e < E; e++)
					scr[((w - MK_WARPS / 2) * GM + h) * HD + lane * E + e] = o[h][e];
	cons_sync();
	if (w < MK_WARPS / 2)
#pragma unroll
		for (int h = 0; h < GM; h++)
			if (h < G)
#pragma unroll
				for (int e = 0; e < E; e++) {
					float *p = &scr[(w * GM + h) * HD + lane * E + e];
					*p = o[h][e] + *p;
				}
	cons_sync();
	for (int i = tid; i < G * HD; i += MK_CONS) {
		int h = i / HD, dd = i % HD, qh = g * G + h;
		float acc = 0.0f;
		for (int k = 0; k < MK_WARPS / 2; k++)
			acc += scr[(k * GM + h) * HD + dd];
		if (nsplit == 1) {
			a.attn[(size_t)r * QD + (size_t)qh * HD + dd] = __float2bfloat16_rn(acc / ss.lh[h]);
		} else {
			size_t sl = ((size_t)r * d.n_heads + qh) * MK_SMAX + s;
			a.ws_o[sl * HD + dd] = acc;
			if (dd == 0) {
				a.ws_ml[sl * 2] = ss.mh[h];
				a.ws_ml[sl * 2 + 1] = ss.lh[h];
			}
		}
	}
	fence_proxy_async(); /* scr (the slot) goes back to the TMA after this unit */
	cons_sync();
	if (nsplit == 1) {
		signal(c_attn);
		return;
	}
	if (tid == 0) {
		unsigned old = add_acq_rel(split_ctr(a, l) + r * d.n_kv + g, 1);
		ss.flag[0] = old + 1 == (unsigned)nsplit;
	}
	cons_sync();
	if (!ss.flag[0])
		return;
	/* the last split of (r, g): merge all of them */
	float(*ml)[2 * MK_SMAX] = reinterpret_cast<float(*)[2 * MK_SMAX]>(&ss.sc[0][0]);
	for (int i = tid; i < G * nsplit; i += MK_CONS) {
		int h = i / nsplit, sp = i % nsplit;
		size_t sl = ((size_t)r * d.n_heads + g * G + h) * MK_SMAX + sp;
		ml[h][2 * sp] = __ldcg(a.ws_ml + sl * 2);
		ml[h][2 * sp + 1] = __ldcg(a.ws_ml + sl * 2 + 1);
	}
	cons_sync();
	for (int i = tid; i < G * HD; i += MK_CONS) {
		int h = i / HD, dd = i % HD, qh = g * G + h;
		float mx = -INFINITY;
		for (int sp = 0; sp < nsplit; sp++)
			mx = fmaxf(mx, ml[h][2 * sp]);
		float lsum = 0.0f, acc = 0.0f;
		size_t sl0 = ((size_t)r * d.n_heads + qh) * MK_SMAX;
		for (int sp = 0; sp < nsplit; sp++) {
			float f = __expf(ml[h][2 * sp] - mx);
			lsum += ml[h][2 * sp + 1] * f;
			acc += __ldcg(a.ws_o + (sl0 + sp) * HD + dd) * f;
		}
		a.attn[(size_t)r * QD + (size_t)qh * HD + dd] = __float2bfloat16_rn(acc / lsum);
	}
	cons_sync();
	signal(c_attn);
}

template <int M, int HD>
__device__ void consumer(const mk_args &a, mk_smem &ss, unsigned char *slots, bf16 *xs)
{
	int slot = 0, xkey = -1, par = 0;
	unsigned ph = 0;
	int ntok = __ldg(a.n_tokens);
	for (;;) {
		long long t0 = clock64();
		mbar_wait(&ss.full[slot], ph);
		if (a.prof && threadIdx.x == 0)
			ss.prof[MK_P_FULL] += clock64() - t0;
		mk_meta mt = ss.meta[slot];
		if (mt.t < 0)
			return;
		unsigned char *sp = slots + (size_t)slot * a.slot;
		if (mt.op == MK_EMBED) {
			embed_unit<M>(a, ntok);
		} else if (mt.op == MK_ATTN) {
			long long ta = clock64();
			attn_unit<M, HD>(a, ss, mt, reinterpret_cast<float *>(sp), ntok);
			if (a.prof && threadIdx.x == 0)
				ss.prof[MK_P_ATTN] += clock64() - ta;
		} else {
			gemv_chunk<M, HD>(a, ss, mt, sp, xs, &xkey, par, ntok);
			par ^= 1;
		}
		/* each warp gives the slot back once all its lanes are done with it (and with its
		 * metadata): a unit that returns without a consumer barrier (an empty attention
		 * split) must not let the producer refill the slot under a warp still waking from
		 * the full-barrier wait */
		__syncwarp();
		if ((threadIdx.x & 31) == 0)
			mbar_arrive(&ss.empty[slot]);
		if (++slot == a.n_slots) {
			slot = 0;
			ph ^= 1;
		}
	}
}

template <int M, int HD>
__global__ void __launch_bounds__(MK_THREADS, 1) k_mega(const __grid_constant__ mk_args a)
{
	extern __shared__ __align__(128) unsigned char dyn[];
	__shared__ mk_smem ss;
	__shared__ int last;
	int tid = threadIdx.x;
	unsigned char *slots = dyn;
	bf16 *xs = reinterpret_cast<bf16 *>(dyn + (size_t)a.n_slots * a.slot);
	long long t_start = clock64();
	if (tid < MK_P_N)
		ss.prof[tid] = 0;
	if (tid == 0) {
		for (int i = 0; i < a.n_slots; i++) {
			mbar_init(&ss.full[i], 1);
			mbar_init(&ss.empty[i], MK_WARPS); /* every consumer warp gives it back */
		}
		asm volatile("fence.mbarrier_init.release.cluster;" ::: "memory");
		fence_proxy_async();
	}
	__syncthreads();
	if (tid >= MK_CONS) {
		if (tid == MK_CONS)
			producer(a, ss, slots);
	} else {
		consumer<M, HD>(a, ss, slots, xs);
	}
	__syncthreads();
	if (a.prof && tid == 0) {
		ss.prof[MK_P_TOTAL] = clock64() - t_start;
		for (int i = 0; i < MK_P_N; i++)
			atomicAdd(a.prof + i, ss.prof[i]);
		if (blockIdx.x == 0)
			atomicAdd(a.prof + MK_P_N, 1ull); /* launches */
	}
	if (tid == 0) {
		__threadfence();
		last = atomicAdd(&a.sync[MK_G_EXIT], 1u) == gridDim.x - 1;
		if (last)
			__threadfence(); /* every other block is gone: acquire their counter writes */
	}
	__syncthreads();
	if (last) {
		/* nothing reads the counters any more: zero them for the next launch (kernel end
		 * orders these stores before it) */
		for (int i = tid; i < a.n_sync; i++)
			a.sync[i] = 0;
	}
}

} /* namespace */

/* ---------------------------------------------------------------- host side */

struct pk_mega_var {
	int m;
	mk_unit *units; /* device */
	int n_units, S, n_slots;
	size_t smem;
};

struct pk_mega {
	mk_args base;
	int n_blocks;
	struct pk_mega_var var[3]; /* m = 1, 2, 4 */
	int n_var;
	struct pk_layer_w *lw_dev;
	void *scratch;
	unsigned long long *prof; /* PK_MEGA_PROFILE=1 */
};

/* Largest power of two <= 16 rows of K bf16 that fit a slot. */
static int chunk_rows(int K, int slot)
{
	int cr = 16;
	while (cr > 1 && (size_t)cr * K * 2 > (size_t)slot)
		cr /= 2;
	return cr;
}

template <int M, int HD> static cudaError_t mk_set_smem(size_t bytes)
{
	return cudaFuncSetAttribute(k_mega<M, HD>, cudaFuncAttributeMaxDynamicSharedMemorySize,
				    (int)bytes);
}

static cudaError_t mk_attr(int m, int hd, size_t bytes)
{
	switch (m * 1000 + hd) {
	case 1064: return mk_set_smem<1, 64>(bytes);
	case 1128: return mk_set_smem<1, 128>(bytes);
	case 1256: return mk_set_smem<1, 256>(bytes);
	case 2064: return mk_set_smem<2, 64>(bytes);
	case 2128: return mk_set_smem<2, 128>(bytes);
	case 2256: return mk_set_smem<2, 256>(bytes);
	case 4064: return mk_set_smem<4, 64>(bytes);
	case 4128: return mk_set_smem<4, 128>(bytes);
	case 4256: return mk_set_smem<4, 256>(bytes);
	}
	return cudaErrorInvalidValue;
}

/* Append a stage of GEMV units over n_out rows with chunks of crr rows: about two units per
 * block, each at most max_rows rows. */
static int unit_rows(int n_out, int crr, int n_blocks, int max_rows)
{
	int chunks = (n_out + crr - 1) / crr;
	int upc = (chunks + 2 * n_blocks - 1) / (2 * n_blocks);
	if (upc < 1)
		upc = 1;
	if (max_rows && upc * crr > max_rows)
		upc = max_rows / crr;
	return upc * crr;
}

static int stage_units(int n_out, int crr, int n_blocks, int max_rows)
{
	int rows = unit_rows(n_out, crr, n_blocks, max_rows);
	return (n_out + rows - 1) / rows;
}

static void plan_gemv(mk_unit *u, int *n, int op, int l, const void *w, int n_out, int crr,
		      int n_blocks, int max_rows)
{
	int rows = unit_rows(n_out, crr, n_blocks, max_rows);
	for (int r = 0; r < n_out; r += rows) {
		u[*n].op = (int16_t)op, u[*n].layer = (int16_t)l;
		u[*n].a = r, u[*n].b = r + rows < n_out ? r + rows : n_out;
		u[*n].w = static_cast<const bf16 *>(w);
		(*n)++;
	}
}

void pk_mega_destroy(struct pk_mega *g)
{
	if (!g)
		return;
	if (g->prof) {
		unsigned long long p[MK_P_N + 1];
		static const char *name[MK_P_N] = {"consumer waits for weights", "dependency waits",
						   "input staging", "attention units",
						   "GEMV epilogues + signals", "producer waits for a slot",
						   "producer unit-table loads", "total"};
		if (cudaMemcpy(p, g->prof, sizeof(p), cudaMemcpyDeviceToHost) == cudaSuccess && p[MK_P_N]) {
			double per = (double)p[MK_P_N] * g->n_blocks;
			fprintf(stderr, "megakernel profile (%llu launches; kcycles per block per launch):\n",
				p[MK_P_N]);
			for (int i = 0; i < MK_P_N; i++)
				fprintf(stderr, "  %-28s %9.1f  %5.1f%%\n", name[i], p[i] / per / 1e3,
					100.0 * p[i] / p[MK_P_TOTAL]);
		}
		cudaFree(g->prof);
	}
	for (int i = 0; i < g->n_var; i++)
		cudaFree(g->var[i].units);
	cudaFree(g->lw_dev);
	cudaFree(g->scratch);
	free(g);
}

int pk_mega_create(struct pk_mega **out, const struct pk_mega_model *mm, int max_m, char *err,
		   size_t errlen)
{
	const struct pk_dims *d = &mm->d;
	int hd = d->head_dim, H = d->hidden, QD = d->n_heads * hd, I = d->inter;
	int G = d->n_kv ? d->n_heads / d->n_kv : 0;
	int gm = PK_ATTN_GMAX < MK_OF / hd ? PK_ATTN_GMAX : MK_OF / hd;
	*out = NULL;
	if (max_m > PK_MEGA_MAX_M)
		max_m = PK_MEGA_MAX_M;
	if (max_m < 1)
		return -EINVAL;
	if ((hd != 64 && hd != 128 && hd != 256) || G < 1 || G > gm || H % 8 || QD % 8 || I % 8) {
		pk_set_err(err, errlen, "megakernel: head_dim %d with %d query heads per KV head not "
		       "covered (64/128/256, G*head_dim <= %d)", hd, G, MK_OF);
		return -ENOTSUP;
	}
	int slot = getenv("PK_MEGA_SLOT_KB") ? atoi(getenv("PK_MEGA_SLOT_KB")) * 1024 : MK_SLOT;
	if (slot < MK_SLOT)
		slot = MK_SLOT; /* an attention unit's reduction needs 32 KiB */
	if ((size_t)H * 2 * 2 > (size_t)slot || (size_t)I * 2 > (size_t)slot ||
	    (size_t)QD * 2 > (size_t)slot) {
		pk_set_err(err, errlen, "megakernel: rows too long for a %d-byte slot", slot);
		return -ENOTSUP;
	}
	int dev = 0, n_sm = 0, optin = 0;
	if (cudaGetDevice(&dev) != cudaSuccess ||
	    cudaDeviceGetAttribute(&n_sm, cudaDevAttrMultiProcessorCount, dev) != cudaSuccess ||
	    cudaDeviceGetAttribute(&optin, cudaDevAttrMaxSharedMemoryPerBlockOptin, dev) !=
		    cudaSuccess) {
		pk_set_err(err, errlen, "megakernel: no CUDA device");
		return -EIO;
	}
	int major = 0;
	cudaDeviceGetAttribute(&major, cudaDevAttrComputeCapabilityMajor, dev);
	if (major < 9) {
		pk_set_err(err, errlen, "megakernel: needs TMA bulk copies (compute capability 9.0+)");
		return -ENOTSUP;
	}
	struct pk_mega *g = (struct pk_mega *)calloc(1, sizeof(*g));
	if (!g)
		return -ENOMEM;
	g->n_blocks = n_sm;
	mk_args *a = &g->base;
	if (getenv("PK_MEGA_PROFILE") && atoi(getenv("PK_MEGA_PROFILE")) &&
	    cudaMalloc((void **)&g->prof, 8 * (MK_P_N + 1)) == cudaSuccess) {
		cudaMemset(g->prof, 0, 8 * (MK_P_N + 1));
		a->prof = g->prof;
	}
	a->d = *d;
	a->mmax = max_m;
	a->slot = slot;
	a->cr_h = chunk_rows(H, slot); /* gate/up chunks: cr_h / 2 gate rows + as many up rows */
	a->cr_q = chunk_rows(QD, slot);
	a->cr_i = chunk_rows(I, slot);
	int nqkv = (d->n_heads + 2 * d->n_kv) * hd;
	a->n_o = stage_units(H, a->cr_q, n_sm, 0);
	a->n_gu = stage_units(I, a->cr_h / 2, n_sm, 0);
	a->n_down = stage_units(H, a->cr_i, n_sm, 0);
	a->lstride = d->n_heads + 2 * d->n_kv + d->n_kv + max_m * d->n_kv + MK_C_N;
	a->n_sync = MK_G_N + d->n_layers * a->lstride;

	/* scratch: h, qkv, q, ws_o, ws_ml (fp32), attn, act (bf16), counters */
	size_t T = max_m, sz[] = {4 * T * H, 4 * T * nqkv, 4 * T * QD,
				  4 * T * d->n_heads * MK_SMAX * hd, 4 * T * d->n_heads * MK_SMAX * 2,
				  2 * T * QD, 2 * T * I, 4 * (size_t)a->n_sync};
	size_t total = 0;
	for (size_t i = 0; i < sizeof(sz) / sizeof(sz[0]); i++)
		total += (sz[i] + 255) & ~(size_t)255;
	cudaError_t e = cudaMalloc(&g->scratch, total);
	if (e == cudaSuccess)
		e = cudaMemset(g->scratch, 0, total);
	if (e == cudaSuccess)
		e = cudaMalloc((void **)&g->lw_dev, sizeof(struct pk_layer_w) * (d->n_layers ? d->n_layers : 1));
	if (e == cudaSuccess && d->n_layers)
		e = cudaMemcpy(g->lw_dev, mm->lw, sizeof(struct pk_layer_w) * d->n_layers,
			       cudaMemcpyHostToDevice);
	if (e != cudaSuccess) {
		pk_set_err(err, errlen, "megakernel: %s", cudaGetErrorString(e));
		pk_mega_destroy(g);
		return e == cudaErrorMemoryAllocation ? -ENOMEM : -EIO;
	}
	char *p = (char *)g->scratch;
	void **dst[] = {(void **)&a->h, (void **)&a->qkv, (void **)&a->q, (void **)&a->ws_o,
			(void **)&a->ws_ml, (void **)&a->attn, (void **)&a->act, (void **)&a->sync};
	for (size_t i = 0; i < sizeof(sz) / sizeof(sz[0]); i++) {
		*dst[i] = p;
		p += (sz[i] + 255) & ~(size_t)255;
	}
	a->lw = g->lw_dev;
	a->embed = static_cast<const bf16 *>(mm->embed);
	a->final_norm = static_cast<const bf16 *>(mm->final_norm);
	a->lm_head = static_cast<const bf16 *>(mm->lm_head);
	a->inv_freq = mm->inv_freq;
	a->pool = static_cast<bf16 *>(mm->kv);
	a->n_tokens = mm->b->n_tokens, a->tok_id = mm->b->tok_id, a->tok_pos = mm->b->tok_pos;
	a->tok_seq = mm->b->tok_seq, a->page_table = mm->b->page_table;
	a->n_logits = mm->b->n_logits, a->logit_tok = mm->b->logit_tok, a->logits = mm->b->logits;

	int kmax = H > QD ? H : QD;
	kmax = kmax > I ? kmax : I;
	size_t stat = sizeof(mk_smem) + 64;
	for (int m = 1; m <= max_m; m *= 2) {
		struct pk_mega_var *v = &g->var[g->n_var];
		size_t xs = (size_t)m * kmax * 2;
		size_t room = (size_t)optin > stat + xs ? (size_t)optin - stat - xs : 0;
		int slots = (int)(room / slot);
		if (slots > MK_MAX_SLOTS)
			slots = MK_MAX_SLOTS;
		if (slots < 2)
			break; /* larger m cannot fit either */
		v->m = m, v->n_slots = slots, v->smem = (size_t)slots * slot + xs;
		v->S = n_sm / (m * d->n_kv);
		v->S = v->S < 1 ? 1 : v->S > MK_SMAX ? MK_SMAX : v->S;
		int cap = 1 + stage_units(d->vocab, a->cr_h, n_sm, 0) +
			  d->n_layers * (stage_units(nqkv, a->cr_h, n_sm, hd) + m * d->n_kv * v->S +
					 a->n_o + a->n_gu + a->n_down);
		mk_unit *hu = (mk_unit *)calloc(cap, sizeof(*hu));
		if (!hu) {
			pk_mega_destroy(g);
			return -ENOMEM;
		}
		int n = 0;
		hu[n].op = MK_EMBED, n++;
		for (int l = 0; l < d->n_layers; l++) {
			plan_gemv(hu, &n, MK_QKV, l, mm->lw[l].wqkv, nqkv, a->cr_h, n_sm, hd);
			for (int r = 0; r < m; r++)
				for (int kv = 0; kv < d->n_kv; kv++)
					for (int s = 0; s < v->S; s++) {
						hu[n].op = MK_ATTN, hu[n].layer = (int16_t)l;
						hu[n].a = r * d->n_kv + kv, hu[n].b = s;
						n++;
					}
			plan_gemv(hu, &n, MK_O, l, mm->lw[l].wo, H, a->cr_q, n_sm, 0);
			plan_gemv(hu, &n, MK_GU, l, mm->lw[l].wgu, I, a->cr_h / 2, n_sm, 0);
			plan_gemv(hu, &n, MK_DOWN, l, mm->lw[l].wdown, H, a->cr_i, n_sm, 0);
		}
		plan_gemv(hu, &n, MK_LM, 0, mm->lm_head, d->vocab, a->cr_h, n_sm, 0);
		v->n_units = n;
		e = cudaMalloc((void **)&v->units, sizeof(mk_unit) * n);
		if (e == cudaSuccess)
			e = cudaMemcpy(v->units, hu, sizeof(mk_unit) * n, cudaMemcpyHostToDevice);
		free(hu);
		if (e == cudaSuccess)
			e = mk_attr(m, hd, v->smem);
		g->n_var++;
		if (e != cudaSuccess) {
			pk_set_err(err, errlen, "megakernel: %s", cudaGetErrorString(e));
			pk_mega_destroy(g);
			return -EIO;
		}
	}
	if (!g->n_var) {
		pk_set_err(err, errlen, "megakernel: activations of %d positions leave no room for the "
		       "weight ring", kmax);
		pk_mega_destroy(g);
		return -ENOTSUP;
	}
	*out = g;
	return 0;
}

template <int M, int HD> static void mk_launch(const mk_args &a, int blocks, size_t smem,
					       cudaStream_t st)
{
	k_mega<M, HD><<<blocks, MK_THREADS, smem, st>>>(a);
}

int pk_mega_record(struct pk_mega *g, int bucket, cudaStream_t st)
{
	const struct pk_mega_var *v = NULL;
	for (int i = 0; i < g->n_var && !v; i++)
		if (g->var[i].m >= bucket)
			v = &g->var[i];
	if (!v)
		return -EINVAL;
	mk_args a = g->base;
	a.units = v->units, a.n_units = v->n_units, a.S = v->S, a.n_slots = v->n_slots;
	switch (v->m * 1000 + a.d.head_dim) {
	case 1064: mk_launch<1, 64>(a, g->n_blocks, v->smem, st); break;
	case 1128: mk_launch<1, 128>(a, g->n_blocks, v->smem, st); break;
	case 1256: mk_launch<1, 256>(a, g->n_blocks, v->smem, st); break;
	case 2064: mk_launch<2, 64>(a, g->n_blocks, v->smem, st); break;
	case 2128: mk_launch<2, 128>(a, g->n_blocks, v->smem, st); break;
	case 2256: mk_launch<2, 256>(a, g->n_blocks, v->smem, st); break;
	case 4064: mk_launch<4, 64>(a, g->n_blocks, v->smem, st); break;
	case 4128: mk_launch<4, 128>(a, g->n_blocks, v->smem, st); break;
	case 4256: mk_launch<4, 256>(a, g->n_blocks, v->smem, st); break;
	default: return -EINVAL;
	}
	return cudaPeekAtLastError() == cudaSuccess ? 0 : -EIO;
}

int pk_mega_max_m(const struct pk_mega *g)
{
	return g->n_var ? g->var[g->n_var - 1].m : 0;
}
