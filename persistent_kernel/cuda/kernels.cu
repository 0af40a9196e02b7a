/* SPDX-License-Identifier: Apache-2.0 */
/*
 * persistent_kernel/cuda/kernels.cu: the forward step's kernels (contract in step_pvt.h).
 * Storage type T is __nv_bfloat16 or float; all math is fp32.
 */
#include <errno.h>
#include <limits.h>
#include <math.h>
#include <stdint.h>
#include <stdlib.h>

#include <type_traits>

#include <cublas_v2.h>
#include <cuda_bf16.h>
#include <cuda_runtime.h>

extern "C" {
#include "sample.h"
}
#include "dev.cuh"
#include "step_pvt.h"

namespace {

using namespace pk_dev;

/* PK_STEP_PDL=0 turns programmatic dependent launch off (A/B; default on). */
bool pdl_on(void)
{
	static int on = -1;
	if (on < 0) {
		const char *e = getenv("PK_STEP_PDL");
		on = !(e && e[0] == '0');
	}
	return on;
}

/* Launch one of the step's chained kernels, with programmatic stream serialization when pdl
 * (and PK_STEP_PDL is not 0): it may then be launched as soon as every block of the previous
 * kernel has called pdl_trigger (its blocks become resident as the previous grid drains and run
 * their prologue), and it must pdl_wait before touching what earlier kernels wrote (dev.cuh).
 * Only the fused path chains kernels this way: there every kernel of a step is one of these,
 * each waits before it reads, and the step begins and ends with ordinary launches (k_embed,
 * k_done), so nothing starts early across a step boundary. Beside cuBLAS (the unfused path)
 * the launches stay ordinary and no kernel triggers: with the attribute on
 * qkv_post/attention/merge there, prefill steps gave wrong logits in 3 of the GPU suite's 14
 * checks (H100, 2026-11-22; not isolated further).
 * Inside stream capture the attribute records a programmatic graph edge; device-launched graphs
 * accept them (tests/gpu: test_pk_devlaunch). */
template <typename... P, typename... A>
void launch(bool pdl, void (*k)(P...), dim3 grid, dim3 block, size_t smem, cudaStream_t st,
	    A... args)
{
	cudaLaunchAttribute at[1];
	at[0].id = cudaLaunchAttributeProgrammaticStreamSerialization;
	at[0].val.programmaticStreamSerializationAllowed = 1;
	cudaLaunchConfig_t c = {};
	c.gridDim = grid;
	c.blockDim = block;
	c.dynamicSmemBytes = smem;
	c.stream = st;
	c.attrs = at;
	c.numAttrs = pdl && pdl_on() ? 1 : 0;
	cudaLaunchKernelEx(&c, k, args...);
}

#ifdef PK_TRACE
#define PK_TRACE_CAP (1 << 20)
__device__ struct pk_trace_rec tr_buf[PK_TRACE_CAP];
__device__ unsigned tr_n;
/* One record by thread 0 of the block (pk_trace_rec). */
__device__ void trace(int kind, int phase, int variant = 0)
{
	if (threadIdx.x | threadIdx.y | threadIdx.z)
		return;
	unsigned long long t;
	unsigned sm;
	asm volatile("mov.u64 %0, %%globaltimer;" : "=l"(t));
	asm("mov.u32 %0, %%smid;" : "=r"(sm));
	unsigned i = atomicAdd(&tr_n, 1u);
	if (i >= PK_TRACE_CAP)
		return;
	struct pk_trace_rec r = {};
	r.t_ns = t;
	r.kind = (unsigned short)kind;
	r.phase = (unsigned short)phase;
	r.sm = (unsigned short)sm;
	r.variant = (unsigned short)variant;
	r.block = blockIdx.x + gridDim.x * (blockIdx.y + gridDim.y * blockIdx.z);
	r.grid = gridDim.x * gridDim.y * gridDim.z;
	tr_buf[i] = r;
}
#else
__device__ __forceinline__ void trace(int, int, int = 0) {}
#endif

/* Sum over the block (blockDim.x a multiple of 32, <= 1024); every thread gets the result. */
__device__ float block_sum(float v, float *red)
{
	int lane = threadIdx.x & 31, w = threadIdx.x >> 5, nw = blockDim.x >> 5;
	v = warp_sum(v);
	__syncthreads();
	if (lane == 0)
		red[w] = v;
	__syncthreads();
	float t = lane < nw ? red[lane] : 0.0f;
	return warp_sum(t);
}

/* ---------------------------------------------------------------- embedding */

template <typename T>
__global__ void k_embed(const T *__restrict__ emb, int hidden, const int32_t *__restrict__ tok_id,
			const int32_t *__restrict__ n_rows, float *__restrict__ h, float *__restrict__ ss,
			int ss_ld)
{
	__shared__ float red[32];
	int r = blockIdx.x;
	float *dst = h + (size_t)r * hidden;
	float acc = 0.0f;
	if (r >= *n_rows) {
		for (int i = threadIdx.x; i < hidden; i += blockDim.x)
			dst[i] = 0.0f;
	} else {
		const T *src = emb + (size_t)tok_id[r] * hidden;
		for (int i = threadIdx.x; i < hidden; i += blockDim.x) {
			float v = to_f(src[i]);
			dst[i] = v;
			acc += v * v;
		}
	}
	if (ss) {
		acc = block_sum(acc, red);
		if (threadIdx.x == 0)
			ss[(size_t)r * ss_ld] = acc;
	}
}

/* ---------------------------------------------------------------- rmsnorm + residual */

template <typename T>
__global__ void k_rmsnorm(float *__restrict__ h, const float *__restrict__ delta,
			  const T *__restrict__ w, int hidden, float eps,
			  const int32_t *__restrict__ gather, const int32_t *__restrict__ n_rows,
			  T *__restrict__ out)
{
	__shared__ float red[32];
	int r = blockIdx.x;
	T *o = out + (size_t)r * hidden;
	if (r >= *n_rows) {
		for (int i = threadIdx.x; i < hidden; i += blockDim.x)
			o[i] = from_f<T>(0.0f);
		return;
	}
	int src = gather ? gather[r] : r;
	float *hr = h + (size_t)src * hidden;
	const float *dr = delta ? delta + (size_t)src * hidden : nullptr;
	float ss = 0.0f;
	for (int i = threadIdx.x; i < hidden; i += blockDim.x) {
		float v = hr[i] + (dr ? dr[i] : 0.0f);
		if (!gather && dr)
			hr[i] = v;
		ss += v * v;
	}
	ss = block_sum(ss, red);
	float rs = rsqrtf(ss / (float)hidden + eps);
	for (int i = threadIdx.x; i < hidden; i += blockDim.x) {
		/* re-read: this thread wrote hr[i] itself above (same i), or gather mode adds again */
		float v = gather && dr ? hr[i] + dr[i] : hr[i];
		o[i] = from_f<T>(v * rs * to_f(w[i]));
	}
}

/* ---------------------------------------------------------------- GEMV (few rows) */

/* One warp per R output columns (8 warps per block, no block-level sync): each lane streams
 * 16-byte slices of the R weight rows (unrolled so 8 loads are in flight), multiplies them with
 * the M activation rows (L1-resident), and the warp reduces with shuffles. Bytes-bound: every
 * weight byte is read exactly once. */
template <typename T, int M, int R>
__global__ void __launch_bounds__(256) k_gemv(const T *__restrict__ W, int N, int K,
					      const T *__restrict__ x, int ldx, float *__restrict__ y,
					      int ldy)
{
	constexpr int V = vec16<T>::n;
	int lane = threadIdx.x & 31;
	int n0 = (blockIdx.x * 8 + (threadIdx.x >> 5)) * R;
	if (n0 >= N)
		return;
	float acc[R][M];
#pragma unroll
	for (int r = 0; r < R; r++)
#pragma unroll
		for (int m = 0; m < M; m++)
			acc[r][m] = 0.0f;
	const T *wrow[R];
#pragma unroll
	for (int r = 0; r < R; r++)
		wrow[r] = W + (size_t)min(n0 + r, N - 1) * K;
#pragma unroll 8
	for (int k = lane * V; k < K; k += 32 * V) {
		float wf[R][V];
#pragma unroll
		for (int r = 0; r < R; r++)
			vec16<T>::unpack(ld_stream(wrow[r] + k), wf[r]);
#pragma unroll
		for (int m = 0; m < M; m++) {
			float xf[V];
			vec16<T>::unpack(*reinterpret_cast<const uint4 *>(x + (size_t)m * ldx + k), xf);
#pragma unroll
			for (int r = 0; r < R; r++)
#pragma unroll
				for (int i = 0; i < V; i++)
					acc[r][m] = fmaf(wf[r][i], xf[i], acc[r][m]);
		}
	}
#pragma unroll
	for (int r = 0; r < R; r++)
#pragma unroll
		for (int m = 0; m < M; m++) {
			float v = warp_sum(acc[r][m]);
			if (lane == r * M + m && n0 + r < N)
				y[(size_t)m * ldy + n0 + r] = v;
		}
}

template <typename T, int M, int R>
void gemv_launch(const void *W, int N, int K, const void *x, int ldx, float *y, int ldy,
		 cudaStream_t st)
{
	int warps = (N + R - 1) / R;
	k_gemv<T, M, R><<<(warps + 7) / 8, 256, 0, st>>>(static_cast<const T *>(W), N, K,
							  static_cast<const T *>(x), ldx, y, ldy);
}

template <typename T>
int gemv_dispatch(const void *W, int N, int K, const void *x, int ldx, int M, float *y, int ldy,
		  cudaStream_t st)
{
	switch (M) {
	case 1: gemv_launch<T, 1, 1>(W, N, K, x, ldx, y, ldy, st); break;
	case 2: gemv_launch<T, 2, 1>(W, N, K, x, ldx, y, ldy, st); break;
	case 3:
	case 4: gemv_launch<T, 4, 2>(W, N, K, x, ldx, y, ldy, st); break;
	case 5:
	case 6:
	case 7:
	case 8: gemv_launch<T, 8, 2>(W, N, K, x, ldx, y, ldy, st); break;
	default: return -EINVAL;
	}
	return 0;
}

/* ---------------------------------------------------------------- tensor-core skinny GEMM */

/* D += A B, m16n8k16, bf16 in, fp32 accumulate. Not volatile: pure, schedulable. */
__device__ __forceinline__ void mma_bf16(float *c, uint32_t a0, uint32_t a1, uint32_t a2,
					 uint32_t a3, uint32_t b0, uint32_t b1)
{
	asm("mma.sync.aligned.m16n8k16.row.col.f32.bf16.bf16.f32 {%0,%1,%2,%3}, {%4,%5,%6,%7}, "
	    "{%8,%9}, {%0,%1,%2,%3};"
	    : "+f"(c[0]), "+f"(c[1]), "+f"(c[2]), "+f"(c[3])
	    : "r"(a0), "r"(a1), "r"(a2), "r"(a3), "r"(b0), "r"(b1));
}

__device__ __forceinline__ uint32_t pack2(float a, float b)
{
	__nv_bfloat162 v = __floats2bfloat162_rn(a, b); /* a in the low half */
	return *reinterpret_cast<uint32_t *>(&v);
}

/* Warps of a k_skinny block (one block a 16 output rows), each taking every SKINNY_WARPS-th
 * 32-element step of K. 16 rather than 8: twice the loads in flight a block (the compiler keeps
 * a warp's unrolled loop to one or two steps of loads: 44-90 registers), which the small
 * models' 96-128-block projections need; H100, batch 8: Llama-3.2-1B -10%, Qwen2.5-1.5B
 * -11 to -12%, Llama-3.1-8B -4 to -6% a step (docs/gpu-step.md, session 12). */
#define SKINNY_WARPS 16

/* Fragment layout trick: the dot product does not care about the order of k, so lane (g, t)
 * loads the 8 consecutive k [kb + 8t, kb + 8t + 8) of W rows g and g+8 and of x row g with one
 * 16-byte load each, and feeds elements 0..3 to one mma and 4..7 to the next; A and B agree on
 * which k each fragment slot holds, so the sum is the same. */
template <int NT, int IN, int OUT>
__global__ void __launch_bounds__(SKINNY_WARPS * 32) k_skinny(struct pk_skinny a)
{
	constexpr int NW = SKINNY_WARPS;
	constexpr int TILES = OUT == PK_OUT_SWIGLU ? 2 : 1;
	__shared__ float red[NW][TILES][NT][32][4];
	__shared__ float rs_s[16];
	__shared__ float sq[16][17];
	int lane = threadIdx.x & 31, w = threadIdx.x >> 5, g = lane >> 2, t = lane & 3;
	int n0 = blockIdx.x * 16, N = a.N, K = a.K;
	int nrows = a.M;
	const bf16 *W = static_cast<const bf16 *>(a.W);
	const bf16 *wr[TILES][2];
#pragma unroll
	for (int tl = 0; tl < TILES; tl++) {
		wr[tl][0] = W + ((size_t)tl * N + min(n0 + g, N - 1)) * K;
		wr[tl][1] = W + ((size_t)tl * N + min(n0 + g + 8, N - 1)) * K;
	}
	int nsteps = K / 32;
	/* this warp's first step of weights is requested before the wait (no kernel writes them) */
	uint4 wfirst[TILES][2];
#pragma unroll
	for (int tl = 0; tl < TILES; tl++)
#pragma unroll
		for (int i = 0; i < 2; i++)
			wfirst[tl][i] = w < nsteps ? ld_stream(wr[tl][i] + w * 32 + t * 8)
						   : make_uint4(0, 0, 0, 0);
	pdl_trigger();
	pdl_wait();
	if (IN == PK_IN_NORM && a.n_rows)
		nrows = min(nrows, *a.n_rows);
	if (IN == PK_IN_NORM) {
		for (int m = w; m < NT * 8; m += NW) {
			float s = 0.0f;
			if (m < nrows) {
				/* RU loads a lane in flight together, summed in order (a rolled
				 * loop issued them one L2 round trip apart) */
				constexpr int RU = 16;
				const float *ss =
					a.ss + (size_t)(a.gather ? a.gather[m] : m) * a.ss_ld;
				float v[RU];
#pragma unroll
				for (int u = 0; u < RU; u++)
					v[u] = lane + 32 * u < a.n_parts ? ss[lane + 32 * u] : 0.0f;
#pragma unroll
				for (int u = 0; u < RU; u++)
					s += v[u];
				for (int p = lane + 32 * RU; p < a.n_parts; p += 32)
					s += ss[p];
			}
			s = warp_sum(s);
			if (lane == 0)
				rs_s[m] = rsqrtf(s / (float)K + a.eps);
		}
		__syncthreads();
	}
	const bf16 *xr[NT];
	const float *hr[NT];
	float rsv[NT];
	bool live[NT];
#pragma unroll
	for (int nt = 0; nt < NT; nt++) {
		int m = nt * 8 + g;
		live[nt] = m < nrows;
		xr[nt] = nullptr;
		hr[nt] = nullptr;
		rsv[nt] = 0.0f;
		if (IN == PK_IN_X)
			xr[nt] = static_cast<const bf16 *>(a.x) + (size_t)min(m, a.M - 1) * a.ldx;
		else if (live[nt]) {
			int src = a.gather ? a.gather[m] : m;
			hr[nt] = a.h + (size_t)src * a.ldh;
			rsv[nt] = rs_s[m];
		}
	}
	const bf16 *nw = static_cast<const bf16 *>(a.nw);
	float c[TILES][NT][4];
#pragma unroll
	for (int tl = 0; tl < TILES; tl++)
#pragma unroll
		for (int nt = 0; nt < NT; nt++)
#pragma unroll
			for (int e = 0; e < 4; e++)
				c[tl][nt][e] = 0.0f;
	auto step = [&](int s, const uint4(&wa)[TILES][2]) {
		int k = s * 32 + t * 8;
#pragma unroll
		for (int nt = 0; nt < NT; nt++) {
			uint4 xv = make_uint4(0, 0, 0, 0);
			if (IN == PK_IN_X) {
				if (live[nt])
					xv = *reinterpret_cast<const uint4 *>(xr[nt] + k);
			} else if (live[nt]) {
				float4 h0 = *reinterpret_cast<const float4 *>(hr[nt] + k);
				float4 h1 = *reinterpret_cast<const float4 *>(hr[nt] + k + 4);
				float wf[8];
				vec16<bf16>::unpack(__ldg(reinterpret_cast<const uint4 *>(nw + k)), wf);
				float r = rsv[nt];
				xv.x = pack2(h0.x * r * wf[0], h0.y * r * wf[1]);
				xv.y = pack2(h0.z * r * wf[2], h0.w * r * wf[3]);
				xv.z = pack2(h1.x * r * wf[4], h1.y * r * wf[5]);
				xv.w = pack2(h1.z * r * wf[6], h1.w * r * wf[7]);
			}
#pragma unroll
			for (int tl = 0; tl < TILES; tl++) {
				mma_bf16(c[tl][nt], wa[tl][0].x, wa[tl][1].x, wa[tl][0].y, wa[tl][1].y,
					 xv.x, xv.y);
				mma_bf16(c[tl][nt], wa[tl][0].z, wa[tl][1].z, wa[tl][0].w, wa[tl][1].w,
					 xv.z, xv.w);
			}
		}
	};
	if (w < nsteps)
		step(w, wfirst);
#pragma unroll 8
	for (int s = w + NW; s < nsteps; s += NW) {
		uint4 wa[TILES][2];
#pragma unroll
		for (int tl = 0; tl < TILES; tl++) {
			wa[tl][0] = ld_stream(wr[tl][0] + s * 32 + t * 8);
			wa[tl][1] = ld_stream(wr[tl][1] + s * 32 + t * 8);
		}
		step(s, wa);
	}
#pragma unroll
	for (int tl = 0; tl < TILES; tl++)
#pragma unroll
		for (int nt = 0; nt < NT; nt++)
#pragma unroll
			for (int e = 0; e < 4; e++)
				red[w][tl][nt][lane][e] = c[tl][nt][e];
	if (OUT == PK_OUT_ACC)
		for (int i = threadIdx.x; i < 16 * 17; i += blockDim.x)
			sq[i / 17][i % 17] = 0.0f;
	__syncthreads();
	for (int i = threadIdx.x; i < NT * 128; i += blockDim.x) {
		int nt = i >> 7, ln = (i >> 2) & 31, e = i & 3;
		int rl = (ln >> 2) + (e >= 2 ? 8 : 0), row = n0 + rl;
		int m = nt * 8 + (ln & 3) * 2 + (e & 1);
		float v[TILES];
#pragma unroll
		for (int tl = 0; tl < TILES; tl++) {
			float acc = 0.0f;
#pragma unroll
			for (int ww = 0; ww < NW; ww++)
				acc += red[ww][tl][nt][ln][e];
			v[tl] = acc;
		}
		if (row >= N || m >= a.M)
			continue;
		if (OUT == PK_OUT_Y) {
			a.y[(size_t)m * a.ldy + row] = v[0];
		} else if (OUT == PK_OUT_ACC) {
			float nv = a.y[(size_t)m * a.ldy + row] + v[0];
			a.y[(size_t)m * a.ldy + row] = nv;
			sq[m][rl] = nv * nv;
		} else {
			float gg = v[0], u = v[TILES - 1];
			static_cast<bf16 *>(a.act)[(size_t)m * a.ldact + row] =
				__float2bfloat16_rn(gg / (1.0f + __expf(-gg)) * u);
		}
	}
	if (OUT == PK_OUT_ACC) {
		__syncthreads();
		if (threadIdx.x < a.M && threadIdx.x < 16) {
			float sum = 0.0f;
			for (int rl = 0; rl < 16; rl++)
				sum += sq[threadIdx.x][rl];
			a.ss_out[(size_t)threadIdx.x * a.ss_ld + blockIdx.x] = sum;
		}
	}
}

template <int NT, int IN>
static void skinny_out(const struct pk_skinny *a, int out, unsigned grid, cudaStream_t st)
{
	constexpr unsigned B = SKINNY_WARPS * 32;
	if (out == PK_OUT_Y)
		launch(true, k_skinny<NT, IN, PK_OUT_Y>, grid, B, 0, st, *a);
	else if (out == PK_OUT_ACC)
		launch(true, k_skinny<NT, IN, PK_OUT_ACC>, grid, B, 0, st, *a);
	else
		launch(true, k_skinny<NT, IN, PK_OUT_SWIGLU>, grid, B, 0, st, *a);
}

/* Multiprocessors of the current device (read once: a process drives one GPU). */
static int sm_count(void)
{
	static int sms;
	if (!sms) {
		int dev = 0, n = 0;
		cudaGetDevice(&dev);
		cudaDeviceGetAttribute(&n, cudaDevAttrMultiProcessorCount, dev);
		sms = n > 0 ? n : 1;
	}
	return sms;
}

typedef const uint4 *u4p; /* k_gemv1's norm-weight loads: their comment says why */

/* k_gemv1 blocks resident per SM (256 threads each, so <= 128 registers a thread: measured
 * against 3 and 4, the deeper register budget wins on every bench shape) */
#define GEMV1_BLOCKS_PER_SM 2

/* One token (M = 1): y = W x streamed at the weights' bandwidth, with the same fused
 * prologue/epilogue as k_skinny and no tensor cores (a 1-row MMA wastes 15/16 of each load
 * slot's work and measured slower). The grid is at most what the GPU holds at once
 * (gemv1_grid: no second wave, whose start would cost another DRAM round trip); warp gw of the
 * GW in the grid takes rows gw, gw + GW, ... (with SwiGLU the pair gate n, up N + n) and walks
 * the 256-element column slices of its rows as one flat sequence, PF slices a row-stream in
 * flight in a ring of registers, so that the next row's weights are on their way while a row
 * is reduced. The first PF loads are issued before anything else; x (for PK_IN_NORM the
 * RMSNorm of h, rounded to bf16 like the unfused path) is staged in shared memory meanwhile.
 * ACC partials: one per block, its warps' sums of squares added in a fixed order. */
template <int IN, int OUT>
__global__ void __launch_bounds__(256, GEMV1_BLOCKS_PER_SM) k_gemv1(struct pk_skinny a)
{
	constexpr int R = OUT == PK_OUT_SWIGLU ? 2 : 1;
	constexpr int PF = 8 / R;
	extern __shared__ __align__(16) unsigned char gemv1_smem[];
	bf16 *xs = reinterpret_cast<bf16 *>(gemv1_smem); /* K elements */
	__shared__ float sqw[8];
	int lane = threadIdx.x & 31, wid = threadIdx.x >> 5;
	int N = a.N, K = a.K, KI = (K + 255) / 256;
	int GW = gridDim.x * 8, gw = blockIdx.x * 8 + wid;
	int total = gw < N ? ((N - 1 - gw) / GW + 1) * KI : 0; /* slices this warp walks */
	const bf16 *W = static_cast<const bf16 *>(a.W);
	trace(PK_TR_GEMV1, PK_TR_ENTRY, IN * 4 + OUT);

	/* the load cursor: row lrow, this lane's element lk of it at lp (+ N rows for up) */
	uint4 buf[PF][R];
	int lrow = gw, lk = lane * 8;
	size_t upoff = (size_t)N * K;
	const bf16 *lp = W + (size_t)min(lrow, N - 1) * K + lk;
	auto issue = [&](uint4(&b)[R]) {
#pragma unroll
		for (int r = 0; r < R; r++)
			b[r] = lrow < N && lk < K ? ld_stream(lp + r * upoff) : make_uint4(0, 0, 0, 0);
		lk += 256;
		lp += 256;
		if (lk - lane * 8 >= K) { /* next row */
			lrow += GW;
			lk = lane * 8;
			lp += (long long)(GW - 1) * K - (KI * 256 - K);
		}
	};
#pragma unroll
	for (int j = 0; j < PF; j++)
		issue(buf[j]);
	/* nor are the norm weights, the row count and the gather index (the batch descriptor is
	 * uploaded before the step) */
	constexpr int XI = 2; /* x slices a thread normalizes from registers (more: K > 4096) */
	int k0 = threadIdx.x * 8, live = 1, src = 0;
	uint4 nwv[XI];
	const bf16 *nw = static_cast<const bf16 *>(a.nw);
	if (IN == PK_IN_NORM) {
		live = a.n_rows ? *a.n_rows > 0 : 1;
		src = a.gather ? a.gather[0] : 0;
		/* One conditional expression on purpose: the same loads with the address in a
		 * variable of its own (20c93eb, a line-length edit) compiled to 8 fewer instructions
		 * in the norm GEMVs and a batch-1 step 16% slower (H100, Qwen2.5-1.5B 1.367 -> 1.589
		 * ms); check the step time after any edit here, however cosmetic. */
#pragma unroll
		for (int i = 0; i < XI; i++)
			nwv[i] = k0 + i * 2048 < K ? __ldg(reinterpret_cast<u4p>(nw + k0 + i * 2048))
						   : make_uint4(0, 0, 0, 0);
	}
	/* The trigger comes after the loads, not at entry: with it at entry, ptxas (CUDA 13.0)
	 * scheduled griddepcontrol.wait right after it and every weight load below the wait (seen
	 * in the SASS: ACQBULK ahead of the LDGs), so no load was in flight before the previous
	 * kernel ended. Loads, trigger, wait is the order k_skinny has, which the SASS keeps. */
	pdl_trigger();
	pdl_wait(); /* the weights above are no kernel's output; everything below may be */
	trace(PK_TR_GEMV1, PK_TR_WAITED, IN * 4 + OUT);

	/* stage x. For the norm, the partial sums of squares and this thread's h slices are
	 * requested together (one L2 round trip; a loop that added the partials one load at a time
	 * took 2-4 us on the critical path). */
	if (IN == PK_IN_NORM) {
		const float *hr = a.h + (size_t)src * a.ldh;
		const float *ss = a.ss + (size_t)src * a.ss_ld;
		float4 hv[XI][2];
#pragma unroll
		for (int i = 0; i < XI; i++) {
			int k = k0 + i * 2048;
			hv[i][0] = k < K ? *reinterpret_cast<const float4 *>(hr + k)
					 : make_float4(0, 0, 0, 0);
			hv[i][1] = k < K ? *reinterpret_cast<const float4 *>(hr + k + 4)
					 : make_float4(0, 0, 0, 0);
		}
		/* two partials a thread, then warps, then the 8 warp sums: a fixed order */
		int t = threadIdx.x;
		float s0 = t < a.n_parts ? ss[t] : 0.0f;
		float s1 = t + 256 < a.n_parts ? ss[t + 256] : 0.0f;
		for (int p = t + 512; p < a.n_parts; p += 256)
			s0 += ss[p];
		float sw = warp_sum(s0 + s1);
		if (lane == 0)
			sqw[wid] = sw;
		__syncthreads();
		float sum = 0.0f;
#pragma unroll
		for (int i = 0; i < 8; i++)
			sum += sqw[i];
		float rs = live ? rsqrtf(sum / (float)K + a.eps) : 0.0f;
		auto put = [&](int k, float4 h0, float4 h1, uint4 nwu) {
			float nf[8], h[8] = {h0.x, h0.y, h0.z, h0.w, h1.x, h1.y, h1.z, h1.w};
			vec16<bf16>::unpack(nwu, nf);
			uint4 o;
			o.x = pack2(h[0] * rs * nf[0], h[1] * rs * nf[1]);
			o.y = pack2(h[2] * rs * nf[2], h[3] * rs * nf[3]);
			o.z = pack2(h[4] * rs * nf[4], h[5] * rs * nf[5]);
			o.w = pack2(h[6] * rs * nf[6], h[7] * rs * nf[7]);
			/* no live row (a padding launch): x is exactly 0 whatever h holds */
			*reinterpret_cast<uint4 *>(xs + k) = live ? o : make_uint4(0, 0, 0, 0);
		};
#pragma unroll
		for (int i = 0; i < XI; i++)
			if (k0 + i * 2048 < K)
				put(k0 + i * 2048, hv[i][0], hv[i][1], nwv[i]);
		for (int k = k0 + XI * 2048; k < K; k += 2048)
			put(k, *reinterpret_cast<const float4 *>(hr + k),
			    *reinterpret_cast<const float4 *>(hr + k + 4),
			    __ldg(reinterpret_cast<const uint4 *>(nw + k)));
	} else {
		const bf16 *x = static_cast<const bf16 *>(a.x);
		for (int k = k0; k < K; k += 256 * 8)
			*reinterpret_cast<uint4 *>(xs + k) = *reinterpret_cast<const uint4 *>(x + k);
	}
	__syncthreads();
	trace(PK_TR_GEMV1, PK_TR_STAGED, IN * 4 + OUT);

	/* consume: row crow, slice cit */
	int crow = gw, cit = 0;
	float acc[R], sq = 0.0f;
	float yold = OUT == PK_OUT_ACC && total ? a.y[crow] : 0.0f;
#pragma unroll
	for (int r = 0; r < R; r++)
		acc[r] = 0.0f;
	for (int t = 0; t < total; t += PF) {
#pragma unroll
		for (int j = 0; j < PF; j++) {
			if (t + j >= total) /* warp-uniform */
				break;
			int k = cit * 256 + lane * 8;
			if (k < K) {
				float xf[8];
				vec16<bf16>::unpack(*reinterpret_cast<const uint4 *>(xs + k), xf);
#pragma unroll
				for (int r = 0; r < R; r++) {
					float wf[8];
					vec16<bf16>::unpack(buf[j][r], wf);
#pragma unroll
					for (int e = 0; e < 8; e++)
						acc[r] = fmaf(wf[e], xf[e], acc[r]);
				}
			}
			issue(buf[j]);
			if (++cit < KI)
				continue;
			/* row crow complete */
#pragma unroll
			for (int r = 0; r < R; r++)
				acc[r] = warp_sum(acc[r]);
			if (OUT == PK_OUT_Y) {
				if (lane == 0)
					a.y[crow] = acc[0];
			} else if (OUT == PK_OUT_SWIGLU) {
				if (lane == 0)
					static_cast<bf16 *>(a.act)[crow] = __float2bfloat16_rn(
						acc[0] / (1.0f + __expf(-acc[0])) * acc[R - 1]);
			} else {
				float nv = yold + acc[0];
				if (lane == 0)
					a.y[crow] = nv;
				sq += nv * nv;
				if (crow + GW < N)
					yold = a.y[crow + GW];
			}
			cit = 0;
			crow += GW;
#pragma unroll
			for (int r = 0; r < R; r++)
				acc[r] = 0.0f;
		}
	}
	if (OUT == PK_OUT_ACC) {
		if (lane == 0)
			sqw[wid] = sq;
		__syncthreads();
		if (threadIdx.x == 0) {
			float sum = 0.0f;
			for (int i = 0; i < 8; i++)
				sum += sqw[i];
			a.ss_out[blockIdx.x] = sum;
		}
	}
	trace(PK_TR_GEMV1, PK_TR_EXIT, IN * 4 + OUT);
}

/* Blocks of k_gemv1 for N rows: at most what the GPU holds at once, and no more than needed
 * to give every warp the same number of rows (so that no warp walks a row more than most:
 * 6,144 rows over 4,224 warps would leave 1,920 of them a second row). */
static unsigned gemv1_grid(int N)
{
	int cap = GEMV1_BLOCKS_PER_SM * sm_count();
	int rows_per_warp = (N + 8 * cap - 1) / (8 * cap);
	return (unsigned)((N + 8 * rows_per_warp - 1) / (8 * rows_per_warp));
}

template <int IN, int OUT>
static void gemv1_launch(const struct pk_skinny *a, cudaStream_t st)
{
	size_t smem = (size_t)a->K * sizeof(bf16);
	if (smem > 48 * 1024)
		cudaFuncSetAttribute(k_gemv1<IN, OUT>, cudaFuncAttributeMaxDynamicSharedMemorySize,
				     (int)smem);
	launch(true, k_gemv1<IN, OUT>, gemv1_grid(a->N), 256, smem, st, *a);
}

template <int IN>
static void gemv1_out(const struct pk_skinny *a, int out, cudaStream_t st)
{
	if (out == PK_OUT_Y)
		gemv1_launch<IN, PK_OUT_Y>(a, st);
	else if (out == PK_OUT_ACC)
		gemv1_launch<IN, PK_OUT_ACC>(a, st);
	else
		gemv1_launch<IN, PK_OUT_SWIGLU>(a, st);
}

int launch_err(void);

/* ---------------------------------------------------------------- QKV epilogue */

/* grid (bucket, n_heads + 2 n_kv), block head_dim/2: thread i owns the pair (i, i + hd/2). */
template <typename T>
__global__ void k_qkv_post(struct pk_dims d, const float *__restrict__ qkv, const T *__restrict__ bias,
			   const T *__restrict__ qn, const T *__restrict__ kn,
			   const float *__restrict__ inv_freq, const int32_t *__restrict__ n_tokens,
			   const int32_t *__restrict__ tok_pos, const int32_t *__restrict__ tok_seq,
			   const int32_t *__restrict__ page_table, T *__restrict__ pool, int layer,
			   float *__restrict__ q, int pdl)
{
	__shared__ float red[32];
	int r = blockIdx.x, hh = blockIdx.y, i = threadIdx.x, half = d.head_dim / 2;
	if (pdl)
		pdl_trigger();
	trace(PK_TR_QKV_POST, PK_TR_ENTRY);
	/* Everything but the projection itself is known before the wait: the descriptor (uploaded
	 * before the step), the weights, the rotation and, for k and v, the row in the pool. */
	if (r >= *n_tokens)
		return;
	int is_q = hh < d.n_heads, is_k = !is_q && hh < d.n_heads + d.n_kv;
	float b0 = 0.0f, b1 = 0.0f, w0 = 1.0f, w1 = 1.0f, s = 0.0f, c = 1.0f;
	if (bias) {
		b0 = to_f(bias[hh * d.head_dim + i]);
		b1 = to_f(bias[hh * d.head_dim + i + half]);
	}
	const T *nw = is_q ? qn : kn;
	bool norm = (is_q || is_k) && qn;
	if (norm) {
		w0 = to_f(nw[i]);
		w1 = to_f(nw[i + half]);
	}
	int pos = tok_pos[r];
	if (is_q || is_k)
		sincosf((float)pos * inv_freq[i], &s, &c);
	size_t off = 0;
	if (!is_q) {
		int kvh = is_k ? hh - d.n_heads : hh - d.n_heads - d.n_kv;
		int page = page_table[(size_t)tok_seq[r] * d.max_pages + pos / d.page_tokens];
		size_t per_head = (size_t)d.page_tokens * d.head_dim;
		size_t blk = ((size_t)page * d.n_layers + layer) * 2 + (is_k ? 0 : 1); /* K or V */
		off = (blk * d.n_kv + kvh) * per_head + (size_t)(pos % d.page_tokens) * d.head_dim;
	}
	pdl_wait();
	trace(PK_TR_QKV_POST, PK_TR_WAITED);
	int ncol = (d.n_heads + 2 * d.n_kv) * d.head_dim;
	const float *src = qkv + (size_t)r * ncol + (size_t)hh * d.head_dim;
	float x0 = src[i] + b0, x1 = src[i + half] + b1;
	if (norm) {
		float ss = block_sum(x0 * x0 + x1 * x1, red);
		float rs = rsqrtf(ss / (float)d.head_dim + d.eps);
		x0 = x0 * rs * w0;
		x1 = x1 * rs * w1;
	}
	if (is_q || is_k) {
		float y0 = x0 * c - x1 * s, y1 = x1 * c + x0 * s;
		x0 = y0;
		x1 = y1;
	}
	if (is_q) {
		float *dst = q + (size_t)r * d.n_heads * d.head_dim + (size_t)hh * d.head_dim;
		dst[i] = x0;
		dst[i + half] = x1;
	} else {
		pool[off + i] = from_f<T>(x0);
		pool[off + i + half] = from_f<T>(x1);
	}
	trace(PK_TR_QKV_POST, PK_TR_EXIT);
}

/* ---------------------------------------------------------------- attention */

/* DV consecutive elements of T at p (DV*sizeof(T) bytes, naturally aligned) as fp32. */
template <typename T, int DV>
__device__ __forceinline__ void load_dv(const T *p, float *f)
{
	constexpr int bytes = DV * (int)sizeof(T);
	if constexpr (bytes == 4) {
		float2 t = __bfloat1622float2(*reinterpret_cast<const __nv_bfloat162 *>(p));
		f[0] = t.x;
		f[1] = t.y;
	} else if constexpr (bytes == 8 && sizeof(T) == 2) {
		uint2 u = *reinterpret_cast<const uint2 *>(p);
		const __nv_bfloat162 *h = reinterpret_cast<const __nv_bfloat162 *>(&u);
		float2 a = __bfloat1622float2(h[0]), b = __bfloat1622float2(h[1]);
		f[0] = a.x;
		f[1] = a.y;
		f[2] = b.x;
		f[3] = b.y;
	} else if constexpr (bytes == 8) {
		float2 t = *reinterpret_cast<const float2 *>(p);
		f[0] = t.x;
		f[1] = t.y;
	} else {
#pragma unroll
		for (int c = 0; c < bytes / 16; c++)
			vec16<T>::unpack(*reinterpret_cast<const uint4 *>(p + c * vec16<T>::n),
					 f + c * vec16<T>::n);
	}
}

/* NU 16-byte loads of T (8 * NU bf16 or 4 * NU float) as fp32. */
template <typename T, int NU>
__device__ __forceinline__ void unpack_row(const uint4 (&u)[NU], float *f)
{
#pragma unroll
	for (int i = 0; i < NU; i++)
		vec16<T>::unpack(u[i], f + i * vec16<T>::n);
}

/* Positions per split for a query at context length ctx. The large-batch instantiation (CH 256)
 * always uses CH. The small-batch one scales the chunk with the context, `unit` positions per
 * 256 (clamped to [16, CH]); unit is 16 while the batch has few (token, KV head) pairs, so a
 * decode token spreads over about 16 blocks per KV head up to a context of 16 * CH (enough
 * blocks in flight to hide the memory latency) and takes CH-position chunks beyond, so that the
 * merge stays short. Batches with more pairs already fill the GPU: unit grows with them.
 * pk_attn_max_splits bounds the split count for unit >= 16. */
template <int CH>
__device__ __forceinline__ int attn_chunk(int ctx, int unit)
{
	if (CH != PK_ATTN_CHUNK)
		return CH;
	int c = (ctx + 255) / 256 * unit;
	return c < 16 ? 16 : (c > CH ? CH : c);
}

/* Split sp of query token r: its context length ctx, sequence seq, and positions [start, start
 * + n) of nsplit chunks (attn_chunk); false when r is past the batch or sp past the context.
 * Reads only the batch descriptor (uploaded before the step: safe before pdl_wait). */
template <int CH>
__device__ __forceinline__ bool attn_span(const int32_t *__restrict__ n_tokens,
					  const int32_t *__restrict__ tok_pos,
					  const int32_t *__restrict__ tok_seq, int r, int sp, int unit,
					  int &nt, int &ctx, int &seq, int &start, int &n, int &nsplit)
{
	nt = *n_tokens;
	if (r >= nt)
		return false;
	ctx = tok_pos[r] + 1;
	seq = tok_seq[r];
	int ch = attn_chunk<CH>(ctx, unit);
	start = sp * ch;
	if (start >= ctx)
		return false;
	n = min(ch, ctx - start);
	nsplit = (ctx + ch - 1) / ch;
	return true;
}

/* grid (bucket, n_kv * slices, splits), block 128 (4 warps). Block (r, y, s) takes query token
 * r, the G query heads of slice y % slices of KV head g = y / slices (G = group size / slices
 * <= GM: attention_launch picks one head, two, or the whole group: GM 4, 6 or 8), and
 * context positions [s*ch, min((s+1)*ch, pos+1)), ch =
 * attn_chunk<CH>(pos+1, unit): 16..64 for small batches (short chains of dependent memory round
 * trips: small-batch decode is latency-bound), 256 for large ones (fewer partials to merge).
 * Lanes form groups of LPR lanes; a group takes one position per iteration and each lane EPL
 * consecutive elements of its K or V row (one 16-byte load for bf16), with its slice of q for
 * all G heads in registers (no shared-memory operand in the inner loop).
 * Phase 1: scores (group-reduced with shuffles) and the row's pool offset. A lane's first PV
 * rows (small batches: all of a chunk of <= 32 positions at head dim 128) are loaded, K and V,
 * into registers before anything else, so no DRAM round trip follows the softmax for them; with
 * programmatic dependent launch (pdl) the rows an earlier step wrote are requested before
 * pdl_wait, i.e. while k_qkv_post still runs, and only this step's rows after it.
 * Phase 2: one warp per head: max and sum of exp. Phase 3: p * V; groups, then warps, are
 * summed. A context of one chunk writes the normalized output directly; longer ones write
 * partials for k_attn_merge. */
template <typename T, int HD, int CH, int GM>
__global__ void __launch_bounds__(128) k_attention(struct pk_dims d, const float *__restrict__ q,
						   const T *__restrict__ pool, int layer,
						   const int32_t *__restrict__ n_tokens,
						   const int32_t *__restrict__ tok_pos,
						   const int32_t *__restrict__ tok_seq,
						   const int32_t *__restrict__ page_table, int unit,
						   int max_splits, float *__restrict__ ws_o,
						   float *__restrict__ ws_ml, T *__restrict__ out,
						   int pdl)
{
	constexpr int V = vec16<T>::n;
	constexpr int LPR = HD / V < 32 ? HD / V : 32; /* lanes per row */
	constexpr int EPL = HD / LPR;                  /* elements per lane */
	constexpr int PPI = 32 / LPR;                  /* positions per warp iteration */
	constexpr int P1 = GM * CH, P3 = 4 * GM * HD;
	constexpr int NI = CH / (4 * PPI); /* iterations over a whole chunk */
	constexpr int PV = CH == PK_ATTN_CHUNK ? (NI < 4 ? NI : 4) : 0; /* rows held in registers */
	constexpr int NU = EPL * (int)sizeof(T) / 16; /* 16-byte loads per lane and row */
	static_assert(NU * 16 == EPL * (int)sizeof(T), "a lane's row slice is whole 16-byte loads");
	__shared__ __align__(16) float sm[P1 > P3 ? P1 : P3];
	__shared__ int fresh_s;
	__shared__ long long roff[CH];
	__shared__ int pg[CH + 1];
	__shared__ float mh[GM], lh[GM];
	float(*sc)[CH] = reinterpret_cast<float(*)[CH]>(sm);
	int r = blockIdx.x, sp = blockIdx.z;
	int nhs = gridDim.y / d.n_kv;                  /* blocks per KV head (head slices) */
	int g = blockIdx.y / nhs;                      /* the KV head */
	int G = d.n_heads / d.n_kv / nhs;              /* query heads of this block, <= GM */
	int h0 = g * G * nhs + (blockIdx.y % nhs) * G; /* the first of them */
	trace(PK_TR_ATTN, PK_TR_ENTRY);
	/* Before pdl_wait only the batch descriptor and KV rows an earlier step wrote are read. */
	int nt, ctx, seq, start, n, nsplit;
	if (!attn_span<CH>(n_tokens, tok_pos, tok_seq, r, sp, unit, nt, ctx, seq, start, n, nsplit))
		return;
	int lane = threadIdx.x & 31, wid = threadIdx.x >> 5, grp = lane / LPR, sub = lane % LPR;
	/* the chunk's page ids (the K loads wait on them) and, where rows are prefetched, the first
	 * position of this sequence that this step writes (this token's, or an earlier token's of
	 * the same prefill chunk): rows below it are an earlier step's and may be read before
	 * pdl_wait, the others only after it */
	const int32_t *pt = page_table + (size_t)seq * d.max_pages;
	int pg0 = start / d.page_tokens, npg = (start + n - 1) / d.page_tokens - pg0 + 1;
	for (int i = threadIdx.x; i < npg; i += blockDim.x)
		pg[i] = pt[pg0 + i];
	if (PV > 0 && wid == 0) { /* PV > 0: a bucket < 16, so nt <= 32 */
		int f = lane < nt && tok_seq[lane] == seq ? tok_pos[lane] : INT_MAX;
#pragma unroll
		for (int o = 16; o > 0; o >>= 1)
			f = min(f, __shfl_xor_sync(0xffffffffu, f, o));
		if (lane == 0)
			fresh_s = f;
	}
	size_t per_head = (size_t)d.page_tokens * HD;
	size_t kv_stride = (size_t)d.n_kv * per_head; /* K block to V block of one page+layer */
	size_t page_stride = (size_t)d.n_layers * 2 * kv_stride;
	const T *base = pool + (size_t)layer * 2 * kv_stride + (size_t)g * per_head + sub * EPL;
	const T *vbase = base + kv_stride;
	__syncthreads(); /* pg, fresh_s */
	auto row_off = [&](int j) {
		int p = start + j;
		return (long long)pg[p / d.page_tokens - pg0] * (long long)page_stride +
		       (long long)(p % d.page_tokens) * HD;
	};

	/* The first PV iterations' K and V rows (all of a chunk of <= 32 positions at head dim
	 * 128) go to registers: those of earlier steps before pdl_wait, the rest after; phase 3
	 * then waits on no DRAM round trip for them. */
	uint4 kpre[PV > 0 ? PV : 1][NU] = {}, vpre[PV > 0 ? PV : 1][NU] = {};
	auto fetch = [&](int it, bool before_wait) {
		int j = wid * PPI + it * 4 * PPI + grp;
		if (j >= n || (start + j < fresh_s) != before_wait)
			return;
		long long off = row_off(j);
		if (sub == 0)
			roff[j] = off;
#pragma unroll
		for (int u = 0; u < NU; u++) {
			kpre[it][u] = *reinterpret_cast<const uint4 *>(base + off + u * V);
			vpre[it][u] = *reinterpret_cast<const uint4 *>(vbase + off + u * V);
		}
	};
#pragma unroll
	for (int it = 0; it < PV; it++)
		fetch(it, true);
	if (pdl) /* after the loads: k_gemv1 says why */
		pdl_trigger();
	pdl_wait();
	trace(PK_TR_ATTN, PK_TR_WAITED);

#pragma unroll
	for (int it = 0; it < PV; it++)
		fetch(it, false);

	/* q: 16-byte loads (EPL is a multiple of 4, rows 16-byte aligned) */
	float scale = rsqrtf((float)HD);
	const float *qr = q + (size_t)r * d.n_heads * HD + (size_t)h0 * HD + sub * EPL;
	float qf[GM][EPL];
#pragma unroll
	for (int h = 0; h < GM; h++)
#pragma unroll
		for (int e = 0; e < EPL; e += 4) {
			float4 v = h < G ? *reinterpret_cast<const float4 *>(qr + h * HD + e)
					 : make_float4(0.0f, 0.0f, 0.0f, 0.0f);
			qf[h][e] = v.x * scale;
			qf[h][e + 1] = v.y * scale;
			qf[h][e + 2] = v.z * scale;
			qf[h][e + 3] = v.w * scale;
		}

	/* phase 1: scores (row j of this lane's group, its K slice in kf) */
	auto score_row = [&](int j, const float *kf) {
		float acc[GM];
#pragma unroll
		for (int h = 0; h < GM; h++) {
			acc[h] = 0.0f;
#pragma unroll
			for (int e = 0; e < EPL; e++)
				acc[h] = fmaf(qf[h][e], kf[e], acc[h]);
		}
#pragma unroll
		for (int o = 1; o < LPR; o <<= 1)
#pragma unroll
			for (int h = 0; h < GM; h++)
				if (h < G)
					acc[h] += __shfl_xor_sync(0xffffffffu, acc[h], o);
		if (j < n && sub == 0)
#pragma unroll
			for (int h = 0; h < GM; h++)
				if (h < G)
					sc[h][j] = acc[h];
	};
#pragma unroll
	for (int it = 0; it < PV; it++) {
		float kf[EPL];
		unpack_row<T, NU>(kpre[it], kf);
		score_row(wid * PPI + it * 4 * PPI + grp, kf);
	}
	trace(PK_TR_ATTN, PK_TR_MARK1);
#pragma unroll 4
	for (int j0 = wid * PPI + PV * 4 * PPI; j0 < n; j0 += 4 * PPI) {
		int j = j0 + grp;
		float kf[EPL];
		if (j < n) {
			long long off = row_off(j);
			if (sub == 0)
				roff[j] = off;
			load_dv<T, EPL>(base + off, kf);
		} else {
#pragma unroll
			for (int e = 0; e < EPL; e++)
				kf[e] = 0.0f;
		}
		score_row(j, kf);
	}
	__syncthreads();
	trace(PK_TR_ATTN, PK_TR_STAGED);

	/* phase 2: softmax statistics per head */
	for (int h = wid; h < G; h += blockDim.x >> 5) {
		float m = -INFINITY;
		for (int j = lane; j < n; j += 32)
			m = fmaxf(m, sc[h][j]);
		m = warp_max(m);
		float l = 0.0f;
		for (int j = lane; j < n; j += 32) {
			float e = __expf(sc[h][j] - m);
			sc[h][j] = e;
			l += e;
		}
		l = warp_sum(l);
		if (lane == 0) {
			mh[h] = m;
			lh[h] = l;
		}
	}
	__syncthreads();
	trace(PK_TR_ATTN, PK_TR_MARK2);

	/* phase 3: p * V */
	float o[GM][EPL];
#pragma unroll
	for (int h = 0; h < GM; h++)
#pragma unroll
		for (int e = 0; e < EPL; e++)
			o[h][e] = 0.0f;
	auto pv_row = [&](int j, const float *v) {
#pragma unroll
		for (int h = 0; h < GM; h++) {
			if (h < G) {
				float pj = sc[h][j];
#pragma unroll
				for (int e = 0; e < EPL; e++)
					o[h][e] = fmaf(pj, v[e], o[h][e]);
			}
		}
	};
#pragma unroll
	for (int it = 0; it < PV; it++) {
		int j = wid * PPI + it * 4 * PPI + grp;
		if (j < n) {
			float v[EPL];
			unpack_row<T, NU>(vpre[it], v);
			pv_row(j, v);
		}
	}
#pragma unroll 4
	for (int j = wid * PPI + PV * 4 * PPI + grp; j < n; j += 4 * PPI) {
		float v[EPL];
		load_dv<T, EPL>(vbase + roff[j], v);
		pv_row(j, v);
	}
#pragma unroll
	for (int off = LPR; off < 32; off <<= 1)
#pragma unroll
		for (int h = 0; h < GM; h++)
			if (h < G)
#pragma unroll
				for (int e = 0; e < EPL; e++)
					o[h][e] += __shfl_xor_sync(0xffffffffu, o[h][e], off);
	__syncthreads(); /* sc is dead: reuse sm for the cross-warp sum */
	float *red = sm; /* (4 warps, GM, HD) */
	if (grp == 0)
#pragma unroll
		for (int h = 0; h < GM; h++)
			if (h < G)
#pragma unroll
				for (int e = 0; e < EPL; e++)
					red[((size_t)wid * GM + h) * HD + sub * EPL + e] = o[h][e];
	__syncthreads();
	for (int i = threadIdx.x; i < G * HD; i += blockDim.x) {
		int h = i / HD, dd = i % HD, qh = h0 + h;
		float acc = red[(0 * GM + h) * HD + dd] + red[(1 * GM + h) * HD + dd] +
			    red[(2 * GM + h) * HD + dd] + red[(3 * GM + h) * HD + dd];
		if (nsplit == 1) {
			out[(size_t)r * d.n_heads * HD + (size_t)qh * HD + dd] = from_f<T>(acc / lh[h]);
		} else {
			size_t slot = ((size_t)r * d.n_heads + qh) * max_splits + sp;
			ws_o[slot * HD + dd] = acc;
			if (dd == 0) {
				ws_ml[slot * 2] = mh[h];
				ws_ml[slot * 2 + 1] = lh[h];
			}
		}
	}
	trace(PK_TR_ATTN, PK_TR_EXIT);
}

/* Attention on tensor cores (bf16, head dim 64 or 128, GQA groups of up to 8 query heads): grid
 * (bucket, n_kv, splits), block 128 (4 warps). Block (r, g, s) takes query token r, all G query
 * heads of KV head g and chunk s of its context (attn_chunk, as k_attention, so k_attn_merge
 * reads the same partials: CH = PK_ATTN_CHUNK for buckets < 16, 256 beyond); warp w the
 * chunk's positions [w CH / 4, (w + 1) CH / 4) in tiles of 16 (one for small batches; several:
 * an online softmax, each tile's rows requested when its turn comes). Per tile: scores S =
 * Q K^T by mma m16n8k16 (heads as rows, G of 16 used; 2 column tiles of 8 positions), the
 * softmax of its 16 positions, then O^T = V^T P^T (head dims as rows, the 8
 * heads as columns, the 16 positions as k): the P fragment the scores leave in registers is
 * already that product's B operand, so nothing goes through shared memory until the 4 warps
 * combine. The K/V rows a block reads once serve all G heads (k_attention's one-head blocks
 * read them G times through L2), and a warp's chain is 3 HD / 16 mma a tile of 16 positions
 * rather than G x HD FMAs a position.
 * Operands come straight from global memory in 16-byte loads; the order of the head dims is
 * free in both products (a sum's order does not matter), so it is chosen to make every load
 * contiguous: in S, lane (gid, tq) holds dims [32 s + 8 tq, + 8) of K row gid of each tile and
 * of q (its step-pair s: elements 0-3 feed one mma, 4-7 the next, as in k_skinny); in O^T, m
 * index i of tile mt is dim (i % 8) HD / 8 + 2 mt + i / 8, so lane (gid, tq) holds dims
 * [gid HD / 8, + HD / 8) of its 4 V rows (positions 2 tq, 2 tq + 1, 8 + 2 tq, 9 + 2 tq of the
 * warp's 16), and its outputs are heads 2 tq, 2 tq + 1 at those dims. q is rounded to bf16
 * after the 1/sqrt(HD) scale and P to bf16 for the second product (as FlashAttention does);
 * statistics and accumulation are fp32. Rows past the context are loaded as zeros and their
 * scores set to -inf. With pdl, rows an earlier step wrote are requested before pdl_wait. */
template <int HD, int CH>
__global__ void __launch_bounds__(128, CH == 256 ? 3 : 4)
	k_attn_gqa(struct pk_dims d, const float *__restrict__ q, const bf16 *__restrict__ pool,
		   int layer, const int32_t *__restrict__ n_tokens,
		   const int32_t *__restrict__ tok_pos, const int32_t *__restrict__ tok_seq,
		   const int32_t *__restrict__ page_table, int unit, int max_splits,
		   float *__restrict__ ws_o, float *__restrict__ ws_ml, bf16 *__restrict__ out,
		   int pdl)
{
	constexpr int KS = HD / 32; /* 16-byte K loads a row (and q step pairs) */
	constexpr int VU = HD / 64; /* 16-byte V loads a row */
	constexpr int MT = HD / 16; /* O^T tiles (16 dims each) */
	constexpr int PW = CH / 4;  /* positions a warp */
	constexpr int NT = PW / 16; /* 16-position tiles a warp */
	static_assert((CH == PK_ATTN_CHUNK && NT == 1) || CH == 256, "small or large batches");
	static_assert(MT % 4 == 0, "whole tiles a thread in the combine");
	__shared__ long long roff[CH]; /* each position's K row in the pool (V: kv_stride on) */
	__shared__ int fresh_s;
	__shared__ float ms[4][8], ls[4][8];
	__shared__ float4 red[4][MT][32]; /* (warp, tile, lane): a lane's 4 accumulators */
	int r = blockIdx.x, g = blockIdx.y, sp = blockIdx.z;
	int G = d.n_heads / d.n_kv, h0 = g * G;
	trace(PK_TR_ATTN, PK_TR_ENTRY);
	/* Before pdl_wait only the batch descriptor and KV rows an earlier step wrote are read. */
	int nt, ctx, seq, start, n, nsplit;
	if (!attn_span<CH>(n_tokens, tok_pos, tok_seq, r, sp, unit, nt, ctx, seq, start, n, nsplit))
		return;
	int lane = threadIdx.x & 31, wid = threadIdx.x >> 5, gid = lane >> 2, tq = lane & 3;
	size_t per_head = (size_t)d.page_tokens * HD;
	size_t kv_stride = (size_t)d.n_kv * per_head; /* K block to V block of one page+layer */
	size_t page_stride = (size_t)d.n_layers * 2 * kv_stride;
	/* each position's row offset (page table, then address: off the critical path), and the
	 * first position of this sequence this step writes (this token's, or an earlier token's of
	 * the same prefill chunk): rows below it are an earlier step's and may be read before
	 * pdl_wait, the others only after it */
	auto set_roff = [&](int j) {
		int p = start + j;
		int page = page_table[(size_t)seq * d.max_pages + p / d.page_tokens];
		roff[j] = (long long)page * (long long)page_stride + (long long)(p % d.page_tokens) * HD;
	};
	if constexpr (CH <= 128) {
		if (threadIdx.x < n)
			set_roff(threadIdx.x);
	} else {
		for (int j = threadIdx.x; j < n; j += blockDim.x)
			set_roff(j);
	}
	if (wid == 3) {
		int f = INT_MAX;
		if constexpr (CH == PK_ATTN_CHUNK) { /* a bucket < 16: nt <= 32 */
			f = lane < nt && tok_seq[lane] == seq ? tok_pos[lane] : INT_MAX;
		} else {
			for (int t = lane; t < nt; t += 32)
				if (tok_seq[t] == seq)
					f = min(f, tok_pos[t]);
		}
		f = min(f, __shfl_xor_sync(0xffffffffu, f, 16));
		f = min(f, __shfl_xor_sync(0xffffffffu, f, 8));
		f = min(f, __shfl_xor_sync(0xffffffffu, f, 4));
		f = min(f, __shfl_xor_sync(0xffffffffu, f, 2));
		f = min(f, __shfl_xor_sync(0xffffffffu, f, 1));
		if (lane == 0)
			fresh_s = f;
	}
	const bf16 *kb = pool + (size_t)layer * 2 * kv_stride + (size_t)g * per_head;
	const bf16 *vb = kb + kv_stride;
	__syncthreads(); /* roff, fresh_s */
	int base = wid * PW;
	uint4 kr[2][KS], vr[4][VU];
#pragma unroll
	for (int t = 0; t < 2; t++)
#pragma unroll
		for (int s = 0; s < KS; s++)
			kr[t][s] = make_uint4(0, 0, 0, 0);
#pragma unroll
	for (int i = 0; i < 4; i++)
#pragma unroll
		for (int u = 0; u < VU; u++)
			vr[i][u] = make_uint4(0, 0, 0, 0);
	/* this lane's rows: K of positions base + gid, base + 8 + gid; V of base + 2 tq (+1, +8,
	 * +9). live: bit per row inside the chunk; late: those this step writes */
	unsigned live = 0, late = 0;
#pragma unroll
	for (int i = 0; i < 6; i++) {
		int j = base + (i < 2 ? 8 * i + gid : ((i - 2) >> 1) * 8 + 2 * tq + (i & 1));
		live |= (unsigned)(j < n) << i;
		late |= (unsigned)(j < n && start + j >= fresh_s) << i;
	}
	auto fetch = [&](unsigned rows, int b0) { /* the rows of the tile at b0 */
#pragma unroll
		for (int t = 0; t < 2; t++)
			if (rows >> t & 1) {
				const bf16 *p = kb + roff[b0 + 8 * t + gid] + 8 * tq;
#pragma unroll
				for (int s = 0; s < KS; s++)
					kr[t][s] = *reinterpret_cast<const uint4 *>(p + 32 * s);
			}
#pragma unroll
		for (int i = 0; i < 4; i++)
			if (rows >> (2 + i) & 1) {
				int j = b0 + (i >> 1) * 8 + 2 * tq + (i & 1);
				const bf16 *p = vb + roff[j] + gid * (HD / 8);
#pragma unroll
				for (int u = 0; u < VU; u++)
					vr[i][u] = *reinterpret_cast<const uint4 *>(p + 8 * u);
			}
	};
	fetch(live & ~late, base);
	if (pdl) /* after the loads: k_gemv1 says why */
		pdl_trigger();
	pdl_wait();
	trace(PK_TR_ATTN, PK_TR_WAITED);
	if (late)
		fetch(late, base);

	/* q of head gid (rows 8..15 of the A operand stay 0), scaled, as bf16 pairs */
	uint32_t qa[KS][4];
	{
		float sc = rsqrtf((float)HD);
		const float *qr = q + ((size_t)r * d.n_heads + h0 + gid) * HD + 8 * tq;
#pragma unroll
		for (int s = 0; s < KS; s++) {
			float4 x = make_float4(0, 0, 0, 0), y = x;
			if (gid < G) {
				x = *reinterpret_cast<const float4 *>(qr + 32 * s);
				y = *reinterpret_cast<const float4 *>(qr + 32 * s + 4);
			}
			qa[s][0] = pack2(x.x * sc, x.y * sc);
			qa[s][1] = pack2(x.z * sc, x.w * sc);
			qa[s][2] = pack2(y.x * sc, y.y * sc);
			qa[s][3] = pack2(y.z * sc, y.w * sc);
		}
	}
	float o[MT][4], m = -INFINITY, l = 0.0f;
#pragma unroll
	for (int mt = 0; mt < MT; mt++)
		o[mt][0] = o[mt][1] = o[mt][2] = o[mt][3] = 0.0f;
	/* the warp's tiles of 16 positions (one for small batches); more than one: an online
	 * softmax, the next tile's rows requested when its turn comes (large batches have other
	 * warps to hide the round trip) */
#pragma unroll 1
	for (int ti = 0; ti < NT; ti++) {
		int b0 = base + 16 * ti;
		if (b0 >= n) /* warp-uniform */
			break;
		if (ti > 0) {
			unsigned rows = 0;
#pragma unroll
			for (int i = 0; i < 6; i++) {
				int j = b0 + (i < 2 ? 8 * i + gid
						    : ((i - 2) >> 1) * 8 + 2 * tq + (i & 1));
				rows |= (unsigned)(j < n) << i;
			}
#pragma unroll
			for (int i = 0; i < 4; i++) /* rows past the context: P is 0, V must be too */
#pragma unroll
				for (int u = 0; u < VU; u++)
					vr[i][u] = make_uint4(0, 0, 0, 0);
			fetch(rows, b0);
		}
		float sc[2][4];
#pragma unroll
		for (int t = 0; t < 2; t++) {
			sc[t][0] = sc[t][1] = sc[t][2] = sc[t][3] = 0.0f;
#pragma unroll
			for (int s = 0; s < KS; s++) {
				mma_bf16(sc[t], qa[s][0], 0u, qa[s][1], 0u, kr[t][s].x, kr[t][s].y);
				mma_bf16(sc[t], qa[s][2], 0u, qa[s][3], 0u, kr[t][s].z, kr[t][s].w);
			}
		}
		/* row gid's columns 2 tq, 2 tq + 1 of each tile: positions b0 + 8 t + 2 tq + e */
#pragma unroll
		for (int t = 0; t < 2; t++)
#pragma unroll
			for (int e = 0; e < 2; e++)
				if (b0 + 8 * t + 2 * tq + e >= n)
					sc[t][e] = -INFINITY;
		float mx = fmaxf(fmaxf(sc[0][0], sc[0][1]), fmaxf(sc[1][0], sc[1][1]));
		mx = fmaxf(mx, __shfl_xor_sync(0xffffffffu, mx, 1));
		mx = fmaxf(mx, __shfl_xor_sync(0xffffffffu, mx, 2)); /* finite: b0 is live */
		float mn = NT > 1 ? fmaxf(m, mx) : mx;
		float p[2][2];
#pragma unroll
		for (int t = 0; t < 2; t++)
#pragma unroll
			for (int e = 0; e < 2; e++)
				p[t][e] = __expf(sc[t][e] - mn);
		float ps = p[0][0] + p[0][1] + p[1][0] + p[1][1];
		ps += __shfl_xor_sync(0xffffffffu, ps, 1);
		ps += __shfl_xor_sync(0xffffffffu, ps, 2);
		if constexpr (NT > 1) { /* rescale: row gid's factor to the lanes holding heads */
			float a = __expf(m - mn); /* 0 on the first tile (m = -inf) */
			l = l * a + ps;
			float a0 = __shfl_sync(0xffffffffu, a, 8 * tq);
			float a1 = __shfl_sync(0xffffffffu, a, 8 * tq + 4);
#pragma unroll
			for (int mt = 0; mt < MT; mt++) {
				o[mt][0] *= a0;
				o[mt][1] *= a1;
				o[mt][2] *= a0;
				o[mt][3] *= a1;
			}
		} else {
			l = ps;
		}
		m = mn;
		uint32_t b0f = pack2(p[0][0], p[0][1]), b1f = pack2(p[1][0], p[1][1]);
		auto vw = [&](int i, int mt) { /* 32-bit word mt (dims 2 mt, 2 mt + 1) of V row i */
			const uint32_t *w = reinterpret_cast<const uint32_t *>(&vr[i][mt >> 2]);
			return w[mt & 3];
		};
#pragma unroll
		for (int mt = 0; mt < MT; mt++)
			mma_bf16(o[mt], __byte_perm(vw(0, mt), vw(1, mt), 0x5410),
				 __byte_perm(vw(0, mt), vw(1, mt), 0x7632),
				 __byte_perm(vw(2, mt), vw(3, mt), 0x5410),
				 __byte_perm(vw(2, mt), vw(3, mt), 0x7632), b0f, b1f);
	}
	trace(PK_TR_ATTN, PK_TR_STAGED);

	/* Combine the 4 warps (a dead one left m = -inf, l = 0, o = 0) with one barrier: each warp
	 * leaves its statistics and accumulators as they are; thread (w, lane) then takes lane's
	 * fragment slots of tiles w, w + 4, ...: heads 2 tq, 2 tq + 1 at dims gid HD / 8 + 2 mt
	 * (+1), each warp's share weighted by exp(m_w - max). */
	if (tq == 0) {
		ms[wid][gid] = m;
		ls[wid][gid] = l;
	}
#pragma unroll
	for (int mt = 0; mt < MT; mt++)
		red[wid][mt][lane] = make_float4(o[mt][0], o[mt][1], o[mt][2], o[mt][3]);
	__syncthreads();
	float f[2][4], lsum[2];
#pragma unroll
	for (int e = 0; e < 2; e++) {
		int h = 2 * tq + e;
		float mx = fmaxf(fmaxf(ms[0][h], ms[1][h]), fmaxf(ms[2][h], ms[3][h]));
		lsum[e] = 0.0f;
#pragma unroll
		for (int w = 0; w < 4; w++) {
			f[e][w] = __expf(ms[w][h] - mx);
			lsum[e] = fmaf(ls[w][h], f[e][w], lsum[e]);
		}
		if (nsplit > 1 && wid == 0 && gid == 0 && h < G) {
			size_t slot = ((size_t)r * d.n_heads + h0 + h) * max_splits + sp;
			ws_ml[slot * 2] = mx;
			ws_ml[slot * 2 + 1] = lsum[e];
		}
	}
#pragma unroll
	for (int mt = wid; mt < MT; mt += 4) {
		float a[4] = {0.0f, 0.0f, 0.0f, 0.0f};
#pragma unroll
		for (int w = 0; w < 4; w++) {
			float4 v = red[w][mt][lane];
			a[0] = fmaf(v.x, f[0][w], a[0]);
			a[1] = fmaf(v.y, f[1][w], a[1]);
			a[2] = fmaf(v.z, f[0][w], a[2]);
			a[3] = fmaf(v.w, f[1][w], a[3]);
		}
		int dd = gid * (HD / 8) + 2 * mt; /* a[e], a[2 + e]: head 2 tq + e, dims dd, +1 */
#pragma unroll
		for (int e = 0; e < 2; e++) {
			int h = 2 * tq + e;
			if (h >= G)
				continue;
			size_t row = (size_t)r * d.n_heads + h0 + h;
			if (nsplit == 1)
				*reinterpret_cast<uint32_t *>(out + row * HD + dd) =
					pack2(a[e] / lsum[e], a[2 + e] / lsum[e]);
			else
				*reinterpret_cast<float2 *>(ws_o + (row * max_splits + sp) * HD +
							    dd) = make_float2(a[e], a[2 + e]);
		}
	}
	trace(PK_TR_ATTN, PK_TR_EXIT);
}

/* k_attn_merge after the wait: column dd of query head slot0's nsplit partials. The first PB
 * partials are requested together with this thread's split statistics: one L2 round trip for
 * up to PB splits (before, the statistics, their weights and the partials were three dependent
 * round trips); later ones a tile of HD splits at a time, many loads in flight. */
template <typename T, int HD, int PB>
__device__ __forceinline__ void merge_col(const struct pk_dims &d, int r, int qh, int nsplit,
					  size_t slot0, const float *__restrict__ ws_o,
					  const float *__restrict__ ws_ml, T *__restrict__ out,
					  float *wsh, float *red)
{
	int dd = threadIdx.x, lane = dd & 31, wid = dd >> 5;
	float pv[PB];
#pragma unroll
	for (int i = 0; i < PB; i++)
		pv[i] = i < nsplit ? ws_o[(slot0 + i) * HD + dd] : 0.0f;
	float ms = dd < nsplit ? ws_ml[(slot0 + dd) * 2] : -INFINITY;
	float ls = dd < nsplit ? ws_ml[(slot0 + dd) * 2 + 1] : 0.0f;
	float m = ms;
	for (int s = dd + HD; s < nsplit; s += HD)
		m = fmaxf(m, ws_ml[(slot0 + s) * 2]);
	m = warp_max(m);
	if (lane == 0)
		red[wid] = m;
	__syncthreads();
	m = red[0];
#pragma unroll
	for (int w = 1; w < HD / 32; w++)
		m = fmaxf(m, red[w]);
	float l = 0.0f, acc = 0.0f;
	for (int s0 = 0; s0 < nsplit; s0 += HD) {
		int s = s0 + dd, cnt = min(HD, nsplit - s0);
		__syncthreads(); /* red (first tile) or wsh (later tiles) have been read */
		float f = 0.0f;
		if (s0 == 0) { /* this thread's split: statistics already here */
			f = dd < nsplit ? __expf(ms - m) : 0.0f;
			l += ls * f;
		} else if (s < nsplit) {
			f = __expf(ws_ml[(slot0 + s) * 2] - m);
			l += ws_ml[(slot0 + s) * 2 + 1] * f;
		}
		wsh[dd] = f;
		__syncthreads();
		int i0 = 0;
		if (s0 == 0) {
#pragma unroll
			for (int i = 0; i < PB; i++)
				acc = fmaf(wsh[i], pv[i], acc); /* both 0 past nsplit */
			i0 = PB;
		}
		const float *po = ws_o + (slot0 + s0) * HD + dd;
#pragma unroll 16
		for (int i = i0; i < cnt; i++)
			acc = fmaf(wsh[i], po[(size_t)i * HD], acc);
	}
	l = warp_sum(l);
	__syncthreads();
	if (lane == 0)
		red[wid] = l;
	__syncthreads();
	l = 0.0f;
#pragma unroll
	for (int w = 0; w < HD / 32; w++)
		l += red[w];
	out[(size_t)r * d.n_heads * HD + (size_t)qh * HD + dd] = from_f<T>(acc / l);
}

/* grid (bucket, n_heads), block HD (64..256: 2..8 warps), one thread a column (merge_col). The
 * split weights exp(m_s - max) are computed a tile of HD splits at a time, one split a thread.
 * Up to 16 splits (context <= 512 at batch 1) the first round trip takes 16 partials, beyond
 * it 64: H100, batch 1, ctx 4096 (64 splits), 64 against 16: Qwen2.5-1.5B -2.2%, Llama-3.2-1B
 * -1.5%; at ctx 512 the 64 predicated loads cost +0.6%, hence two sizes. */
template <typename T, int HD, int CH>
__global__ void __launch_bounds__(HD) k_attn_merge(struct pk_dims d,
						   const int32_t *__restrict__ n_tokens,
						   const int32_t *__restrict__ tok_pos, int unit,
						   int max_splits, const float *__restrict__ ws_o,
						   const float *__restrict__ ws_ml,
						   T *__restrict__ out, int pdl)
{
	__shared__ float wsh[HD];
	__shared__ float red[HD / 32];
	int r = blockIdx.x, qh = blockIdx.y;
	if (pdl)
		pdl_trigger();
	trace(PK_TR_MERGE, PK_TR_ENTRY);
	/* the split count comes from the batch descriptor (uploaded before the step) */
	if (r >= *n_tokens)
		return;
	int ctx = tok_pos[r] + 1;
	int ch = attn_chunk<CH>(ctx, unit);
	int nsplit = (ctx + ch - 1) / ch;
	if (nsplit == 1)
		return;
	size_t slot0 = ((size_t)r * d.n_heads + qh) * max_splits;
	pdl_wait();
	trace(PK_TR_MERGE, PK_TR_WAITED);
	if (nsplit <= 16)
		merge_col<T, HD, 16>(d, r, qh, nsplit, slot0, ws_o, ws_ml, out, wsh, red);
	else
		merge_col<T, HD, 64>(d, r, qh, nsplit, slot0, ws_o, ws_ml, out, wsh, red);
	trace(PK_TR_MERGE, PK_TR_EXIT);
}

/* attn_chunk's unit for a bucket: 16 positions per 256 of context while the batch has at most 16
 * (token, KV head) pairs, more beyond (the batch then fills the GPU by itself). H100, batch 1,
 * k_attn_gqa: 8 (more, smaller chunks) was 0.5-1% slower at context 512 and the same at 4096. */
static int attn_unit(int bucket, int n_kv)
{
	int pairs = bucket * n_kv;
	return 16 * (pairs > 16 ? pairs / 16 : 1);
}

template <typename T, int HD, int CH>
void merge_launch(const struct pk_dims *d, const struct pk_step_batch *b, int bucket, int splits,
		  int unit, int max_splits, float *ws_o, float *ws_ml, void *out, int pdl,
		  cudaStream_t st)
{
	if (splits > 1)
		launch(pdl, k_attn_merge<T, HD, CH>, dim3(bucket, d->n_heads), HD, 0, st, *d,
		       b->n_tokens, b->tok_pos, unit, max_splits, ws_o, ws_ml,
		       static_cast<T *>(out), pdl);
}

template <typename T, int HD, int CH, int GM>
void attention_launch_ch(const struct pk_dims *d, const float *q, const void *pool, int layer,
			 const struct pk_step_batch *b, int bucket, int max_splits, float *ws_o,
			 float *ws_ml, void *out, int pdl, cudaStream_t st)
{
	/* max_splits (pk_attn_max_splits) bounds attn_chunk's split count and is the ws row
	 * stride; CH 256 needs at most a quarter of it */
	int splits = CH == PK_ATTN_CHUNK ? max_splits : (max_splits * PK_ATTN_CHUNK + CH - 1) / CH;
	int unit = attn_unit(bucket, d->n_kv);
	int G = d->n_heads / d->n_kv, slices = G > GM ? G / GM : 1; /* blocks a KV head */
	dim3 g1(bucket, d->n_kv * slices, splits);
	launch(pdl, k_attention<T, HD, CH, GM>, g1, 128, 0, st, *d, q, static_cast<const T *>(pool),
	       layer, b->n_tokens, b->tok_pos, b->tok_seq, b->page_table, unit, max_splits, ws_o,
	       ws_ml, static_cast<T *>(out), pdl);
	merge_launch<T, HD, CH>(d, b, bucket, splits, unit, max_splits, ws_o, ws_ml, out, pdl, st);
}

/* k_attn_gqa (bf16, head dim 64 or 128), then the merge: CH = PK_ATTN_CHUNK for buckets < 16,
 * 256 beyond (as attention_groups). */
template <int HD, int CH>
void attention_gqa(const struct pk_dims *d, const float *q, const void *pool, int layer,
		   const struct pk_step_batch *b, int bucket, int max_splits, float *ws_o,
		   float *ws_ml, void *out, int pdl, cudaStream_t st)
{
	int splits = CH == PK_ATTN_CHUNK ? max_splits : (max_splits * PK_ATTN_CHUNK + CH - 1) / CH;
	int unit = attn_unit(bucket, d->n_kv);
	dim3 g1(bucket, d->n_kv, splits);
	launch(pdl, k_attn_gqa<HD, CH>, g1, 128, 0, st, *d, q, static_cast<const bf16 *>(pool),
	       layer, b->n_tokens, b->tok_pos, b->tok_seq, b->page_table, unit, max_splits, ws_o,
	       ws_ml, static_cast<bf16 *>(out), pdl);
	merge_launch<bf16, HD, CH>(d, b, bucket, splits, unit, max_splits, ws_o, ws_ml, out, pdl,
				   st);
}

/* Whole GQA groups a block: GM = 4 for groups of up to 4 heads (Llama's), 6 for up to 6
 * (Qwen2.5-1.5B's), else PK_ATTN_GMAX. The kernel's per-head loops are unrolled GM times and
 * predicated past G, and a predicated-off instruction still issues: with GM = 8, half of a
 * Llama block's chain did nothing. H100, 2026-11-22, against GM = 8: Llama-3.1-8B batch 8 ctx
 * 4096 10.04 -> 9.09 ms, batch 64 35.0 -> 22.9; Llama-3.2-1B batch 64 ctx 4096 8.56 -> 5.70;
 * Qwen2.5-1.5B (GM 6) batch 8 ctx 4096 2.98 -> 2.82, batch 64 9.15 -> 8.70. */
template <typename T, int HD, int CH>
static void attention_groups(const struct pk_dims *d, const float *q, const void *pool, int layer,
			     const struct pk_step_batch *b, int bucket, int max_splits,
			     float *ws_o, float *ws_ml, void *out, int pdl, cudaStream_t st)
{
	if (d->n_heads / d->n_kv <= 4)
		attention_launch_ch<T, HD, CH, 4>(d, q, pool, layer, b, bucket, max_splits, ws_o,
						  ws_ml, out, pdl, st);
	else if (d->n_heads / d->n_kv <= 6)
		attention_launch_ch<T, HD, CH, 6>(d, q, pool, layer, b, bucket, max_splits, ws_o,
						  ws_ml, out, pdl, st);
	else
		attention_launch_ch<T, HD, CH, PK_ATTN_GMAX>(d, q, pool, layer, b, bucket,
							     max_splits, ws_o, ws_ml, out, pdl, st);
}

/* bf16 with head dim 64 or 128: k_attn_gqa (tensor cores, one block a KV head and chunk).
 * H100, 2026-11-22, against the FMA blocks below, step time: batch 1, context 512 / 4096:
 * Llama-3.2-1B -3% / -4%, Qwen2.5-1.5B -2% / -7%, Llama-3.1-8B -1% / -6%; batch 8 -2% to -17%
 * (attention 4.3 -> 3.0 us a layer at Qwen2.5-1.5B's shape, context 512, traced); batch 16 -10%
 * to -32%; batch 64 (chunks of 256) -4% to -42%. PK_ATTN_MMA=0 turns it off (A/B).
 * Otherwise (f32, head dim 256): buckets >= 16 whole GQA groups in chunks of 256; smaller ones
 * blocks of GS = 1 or 2 query heads (GM = GS) rather than whole GQA groups, the fewest heads a
 * block for which the grid stays within PK_ATTN_SLICE_WAVES blocks a SM at the longest context. A
 * small-batch attention block is a dependent chain of instructions, not bytes (ncu: ~600
 * instructions a warp at ~10 cycles each, one warp a scheduler), so fewer heads a block is a
 * shorter chain and more blocks run it at once; past a few blocks a SM they queue. H100, batch 1,
 * step time against whole groups (2026-11-22): Qwen2.5-1.5B (2 KV heads) one head a block -10% /
 * -13% at context 512 / 4096 (attention 8.7 -> 4.0 us a layer at 512); Llama-3.2-1B (8 KV heads)
 * two heads -2% / -1% (one head: -3% / +3%, 2,048 blocks at 4096); Llama-3.1-8B two heads -1.5% /
 * +1% (whole groups with GM 4: +1% / -3%). Batch 8 keeps whole groups (one head: +1 to +10%). */
#define PK_ATTN_SLICE_WAVES 8
template <typename T, int HD>
void attention_launch(const struct pk_dims *d, const float *q, const void *pool, int layer,
		      const struct pk_step_batch *b, int bucket, int max_splits, float *ws_o,
		      float *ws_ml, void *out, int pdl, cudaStream_t st)
{
	int G = d->n_heads / d->n_kv;
	long most = (long)PK_ATTN_SLICE_WAVES * sm_count(), heads = (long)bucket * d->n_heads;
	if constexpr (std::is_same<T, bf16>::value && (HD == 64 || HD == 128)) {
		static int mma = -1;
		if (mma < 0)
			mma = !(getenv("PK_ATTN_MMA") && getenv("PK_ATTN_MMA")[0] == '0');
		if (mma && bucket < 16)
			return attention_gqa<HD, PK_ATTN_CHUNK>(d, q, pool, layer, b, bucket,
								max_splits, ws_o, ws_ml, out, pdl,
								st);
		if (mma)
			return attention_gqa<HD, 256>(d, q, pool, layer, b, bucket, max_splits,
						      ws_o, ws_ml, out, pdl, st);
	}
	if (bucket >= 16)
		attention_groups<T, HD, 256>(d, q, pool, layer, b, bucket, max_splits, ws_o, ws_ml,
					     out, pdl, st);
	else if (heads * max_splits <= most)
		attention_launch_ch<T, HD, PK_ATTN_CHUNK, 1>(d, q, pool, layer, b, bucket,
							     max_splits, ws_o, ws_ml, out, pdl, st);
	else if (G % 2 == 0 && heads / 2 * max_splits <= most)
		attention_launch_ch<T, HD, PK_ATTN_CHUNK, 2>(d, q, pool, layer, b, bucket,
							     max_splits, ws_o, ws_ml, out, pdl, st);
	else
		attention_groups<T, HD, PK_ATTN_CHUNK>(d, q, pool, layer, b, bucket, max_splits,
						       ws_o, ws_ml, out, pdl, st);
}

/* ---------------------------------------------------------------- SwiGLU */

template <typename T>
__global__ void k_swiglu(const float *__restrict__ gu, int inter, size_t total, T *__restrict__ out)
{
	size_t i = (size_t)blockIdx.x * blockDim.x + threadIdx.x;
	if (i >= total)
		return;
	size_t r = i / inter, c = i % inter;
	float g = gu[r * 2 * inter + c], u = gu[r * 2 * inter + inter + c];
	out[i] = from_f<T>(g / (1.0f + __expf(-g)) * u);
}

/* ---------------------------------------------------------------- sampling */

/* Largest v across the warp, ties to the lowest idx; every lane ends with the answer. */
__device__ __forceinline__ void warp_argmax(float &v, int &idx)
{
#pragma unroll
	for (int o = 16; o > 0; o >>= 1) {
		float v2 = __shfl_xor_sync(0xffffffffu, v, o);
		int i2 = __shfl_xor_sync(0xffffffffu, idx, o);
		if (v2 > v || (v2 == v && i2 < idx)) {
			v = v2;
			idx = i2;
		}
	}
}

/*
 * Sampling: the token of model/sample.h exactly.
 * The order (z descending, id ascending) is a 64-bit key per token: orderable bits of z above,
 * ~id below, so "the first m in order" = "the m largest keys".
 * Pass 1 over the logits (k_samp_pass1: up to SAMP_P1_MAX blocks a sequence, one slice of the
 * vocabulary each): the greedy token, the log-sum-exp for the logprob and, at a temperature,
 * z = l / T (stored) and zmax, as one partial per block. k_sample (one block of SAMP_THREADS a
 * sequence) combines the partials; the rest runs there. Pass 2: integer weights w (sample.h
 * step 4), each token's bin floor((zmax - z) * SAMP_BINS / SAMP_SPAN) (a value that never
 * decreases along the order) stored beside w, and per-bin counts and exact weight sums. Each of
 * top-k, top-p and the draw is then "the first token in order at which a running count or sum
 * satisfies a condition" (samp_find): a scan over the bins finds the bin holding it, that bin's
 * tokens are gathered and sorted in shared memory (a bin too full for it is narrowed first, 8
 * bits at a time just below the key prefix its tokens share). Exact integer sums do not depend
 * on the order they are added in, so atomics are fine. Cost: two passes over the vocabulary and
 * one gather pass per condition, plus two per narrowing (nearly flat logits, long runs of ties).
 * Greedy decoding is pass 1 and the combination alone. The old key-space bisection (up to 3 x 64
 * passes) cost
 * 4-8 ms a step at 152k entries; this costs 0.25-0.4 ms (docs/gpu-step.md).
 */
constexpr int SAMP_THREADS = 1024;
constexpr int SAMP_BINS = 2048;
constexpr float SAMP_SPAN = 29.0f; /* weights are 0 beyond zmax - z > 28.5: the last bin */
constexpr int SAMP_CAP = 2048;     /* tokens of one bin sorted in shared memory */
constexpr uint64_t SAMP_WMASK = (1ull << 48) - 1;
constexpr int SAMP_P1_THREADS = 256, SAMP_P1_SU = 8; /* pass 1: loads in flight per thread */
constexpr int SAMP_P1_MAX = 128;                       /* pass-1 blocks (partials) a sequence */
static_assert(SAMP_P1_MAX <= SAMP_THREADS, "k_sample reads one partial a thread");

/* One pass-1 block's result over its slice: greedy (bv, bi: lowest id among the largest
 * non-NaN logits), log-sum-exp state (ts = sum of exp(l - tm) over non-NaN l, tm = their max),
 * and at a temperature the largest z (zb, zi). Empty or all-NaN slices: -inf, 0x7fffffff. */
struct samp_part {
	float bv, tm, ts, zb;
	int bi, zi, pad[2];
};

enum { SAMP_COUNT, SAMP_SUM_GE, SAMP_SUM_GT }; /* top-k, top-p, the draw */

struct samp_smem {
	uint64_t etab[MDL_EXP_TAB];
	unsigned long long bsum[SAMP_BINS];
	unsigned bcnt[SAMP_BINS];
	unsigned long long key[SAMP_CAP], wt[SAMP_CAP];
	unsigned long long dsum[256];
	unsigned dcnt[256];
	unsigned long long red64[SAMP_THREADS / 32]; /* warp totals; [0..1] also pass values */
	float redf[32];
	int redi[32];
	unsigned long long kmin, kmax; /* of the last gather's tokens */
	int n, hit;
};

/* The top nbits bits set (0 <= nbits <= 64). */
__device__ __forceinline__ unsigned long long himask(int nbits)
{
	return nbits ? ~0ull << (64 - nbits) : 0;
}

/* A thread's histogram updates (count, exact weight sum per bin), added to shared memory once
 * per run of equal bins: nearly flat logits put most tokens in one bin, and one atomic per
 * token on one address would serialise the block. */
struct samp_run {
	unsigned *cnt;
	unsigned long long *sum;
	int bin = -1;
	unsigned c = 0;
	unsigned long long s = 0;
	__device__ samp_run(unsigned *cn, unsigned long long *su) : cnt(cn), sum(su) {}
	__device__ void flush()
	{
		if (c) {
			atomicAdd(&cnt[bin], c);
			if (s)
				atomicAdd(&sum[bin], s);
		}
		c = 0;
		s = 0;
	}
	__device__ void add(int b, unsigned long long w)
	{
		if (b != bin) {
			flush();
			bin = b;
		}
		c++;
		s += w;
	}
};

__device__ __forceinline__ float samp_z(float l, float temp)
{
	float z = __fdiv_rn(l, temp); /* step 2: one IEEE division */
	if (z != z)
		z = -INFINITY;
	if (z == 0.0f)
		z = 0.0f; /* -0 and +0 tie, broken by id */
	return z;
}

__device__ __forceinline__ unsigned long long samp_key(float z, int id)
{
	unsigned u = __float_as_uint(z);
	u = (u & 0x80000000u) ? ~u : (u | 0x80000000u);
	return ((unsigned long long)u << 32) | (unsigned)(0xffffffffu - (unsigned)id);
}

__device__ __forceinline__ bool samp_cond(int mode, unsigned long long v, double thr,
					  unsigned long long target)
{
	return mode == SAMP_SUM_GE ? (double)v >= thr : v > target; /* COUNT: target = k - 1 */
}

/* Largest (v, lowest idx) over the block; every thread gets it. */
__device__ void block_argmax(float &v, int &idx, samp_smem &sm)
{
	int lane = threadIdx.x & 31, w = threadIdx.x >> 5;
	warp_argmax(v, idx);
	__syncthreads();
	if (lane == 0) {
		sm.redf[w] = v;
		sm.redi[w] = idx;
	}
	__syncthreads();
	v = lane < SAMP_THREADS / 32 ? sm.redf[lane] : -INFINITY;
	idx = lane < SAMP_THREADS / 32 ? sm.redi[lane] : 0x7fffffff;
	warp_argmax(v, idx);
}

/* Inclusive prefix sum over the block of one value per thread (in thread order). */
__device__ unsigned long long block_scan(unsigned long long v, samp_smem &sm)
{
	int lane = threadIdx.x & 31, w = threadIdx.x >> 5;
#pragma unroll
	for (int o = 1; o < 32; o <<= 1) {
		unsigned long long t = __shfl_up_sync(0xffffffffu, v, o);
		if (lane >= o)
			v += t;
	}
	__syncthreads();
	if (lane == 31)
		sm.red64[w] = v;
	__syncthreads();
	unsigned long long base = 0;
	for (int i = 0; i < w; i++)
		base += sm.red64[i];
	return v + base;
}

/* Sum over the block of one value per thread; every thread gets it. */
__device__ unsigned long long block_total(unsigned long long v, samp_smem &sm)
{
	block_scan(v, sm); /* leaves the 32 warp totals in red64 */
	unsigned long long t = 0;
	for (int i = 0; i < SAMP_THREADS / 32; i++)
		t += sm.red64[i];
	__syncthreads();
	return t;
}

/* The first index i in [0, n) at which pred(i) holds, pred monotone (false...true); n if none.
 * Every thread gets it. */
template <typename F>
__device__ int block_first(int n, F pred, samp_smem &sm)
{
	__syncthreads();
	if (threadIdx.x == 0)
		sm.hit = n;
	__syncthreads();
	for (int i = threadIdx.x; i < n; i += SAMP_THREADS)
		if (pred(i) && (i == 0 || !pred(i - 1)))
			atomicMin(&sm.hit, i);
	__syncthreads();
	return sm.hit;
}

/* Sort key[0..n) (and wt alongside) by key, largest first; n <= SAMP_CAP. */
__device__ void samp_sort(int n, samp_smem &sm)
{
	int np = 2;
	while (np < n)
		np <<= 1;
	for (int i = n + threadIdx.x; i < np; i += SAMP_THREADS) {
		sm.key[i] = 0; /* below every real key: sorts last */
		sm.wt[i] = 0;
	}
	__syncthreads();
	for (int k = 2; k <= np; k <<= 1)
		for (int j = k >> 1; j > 0; j >>= 1) {
			for (int i = threadIdx.x; i < np; i += SAMP_THREADS) {
				int p = i ^ j;
				if (p > i) {
					bool desc = (i & k) == 0;
					unsigned long long a = sm.key[i], b = sm.key[p];
					if (desc ? a < b : a > b) {
						sm.key[i] = b;
						sm.key[p] = a;
						unsigned long long t = sm.wt[i];
						sm.wt[i] = sm.wt[p];
						sm.wt[p] = t;
					}
				}
			}
			__syncthreads();
		}
}

/* The tokens with bin b, key >= klo and key's top `bits` bits equal to pre's, into key/wt in
 * order; returns how many there are (only the first SAMP_CAP are kept), their smallest and
 * largest key in kmin, kmax. */
__device__ int samp_gather(const float *l, const unsigned long long *w, int vocab, float temp,
			   int b, unsigned long long klo, unsigned long long pre, int bits,
			   samp_smem &sm)
{
	__syncthreads();
	if (threadIdx.x == 0) {
		sm.n = 0;
		sm.kmin = ~0ull;
		sm.kmax = 0;
	}
	__syncthreads();
	unsigned long long kmn = ~0ull, kmx = 0;
	int lane = threadIdx.x & 31, vr = (vocab + SAMP_THREADS - 1) / SAMP_THREADS * SAMP_THREADS;
	for (int i = threadIdx.x; i < vr; i += SAMP_THREADS) { /* the same trip count per warp */
		unsigned long long e = i < vocab ? w[i] : 0, k = 0;
		bool take = i < vocab && (int)(e >> 48) == b;
		if (take) {
			k = samp_key(samp_z(l[i], temp), i);
			take = k >= klo && !((k ^ pre) & himask(bits));
		}
		if (take) {
			kmn = k < kmn ? k : kmn;
			kmx = k > kmx ? k : kmx;
		}
		/* one shared-memory atomic per warp: a flat bin sends every token here */
		unsigned m = __ballot_sync(0xffffffffu, take);
		int base = 0;
		if (lane == 0 && m)
			base = atomicAdd(&sm.n, __popc(m));
		base = __shfl_sync(0xffffffffu, base, 0);
		int slot = base + __popc(m & ((1u << lane) - 1));
		if (take && slot < SAMP_CAP) {
			sm.key[slot] = k;
			sm.wt[slot] = e & SAMP_WMASK;
		}
	}
#pragma unroll
	for (int o = 16; o > 0; o >>= 1) {
		unsigned long long a = __shfl_xor_sync(0xffffffffu, kmn, o);
		unsigned long long c = __shfl_xor_sync(0xffffffffu, kmx, o);
		kmn = a < kmn ? a : kmn;
		kmx = c > kmx ? c : kmx;
	}
	if (lane == 0) {
		atomicMin(&sm.kmin, kmn);
		atomicMax(&sm.kmax, kmx);
	}
	__syncthreads();
	int n = sm.n;
	if (n <= SAMP_CAP)
		samp_sort(n, sm);
	return n;
}

/*
 * The first token in order, among those with key >= klo (a prefix of the order that holds the
 * answer), at which the running count (SAMP_COUNT: reaches target + 1) or weight sum
 * (SAMP_SUM_GE: >= thr; SAMP_SUM_GT: > target) satisfies the condition. blo: the bin of klo's
 * token (SAMP_BINS when klo = 0). Returns its key; *cum = the weight sum up to and including it.
 */
__device__ unsigned long long samp_find(const float *l, const unsigned long long *w, int vocab,
					float temp, int mode, double thr,
					unsigned long long target, unsigned long long klo, int blo,
					unsigned long long *cum, samp_smem &sm)
{
	/* the bin: running totals over whole bins before blo (every token of them has key > klo);
	 * if none satisfies, the answer lies in blo (the condition holds by the prefix's end) */
	constexpr int PER = SAMP_BINS / SAMP_THREADS;
	unsigned long long c[PER], s[PER], tc = 0, ts = 0;
	int b0 = threadIdx.x * PER;
#pragma unroll
	for (int j = 0; j < PER; j++) {
		tc += sm.bcnt[b0 + j];
		ts += sm.bsum[b0 + j];
		c[j] = tc; /* inclusive within this thread's bins, for now */
		s[j] = ts;
	}
	unsigned long long ec = block_scan(tc, sm) - tc, es = block_scan(ts, sm) - ts;
	if (threadIdx.x == 0)
		sm.hit = blo < SAMP_BINS ? blo : SAMP_BINS - 1;
	__syncthreads();
#pragma unroll
	for (int j = 0; j < PER; j++) {
		c[j] += ec; /* inclusive over all bins up to b0 + j */
		s[j] += es;
		bool ok = mode == SAMP_COUNT ? c[j] > target : samp_cond(mode, s[j], thr, target);
		if (ok && b0 + j < blo)
			atomicMin(&sm.hit, b0 + j);
	}
	__syncthreads();
	int b = sm.hit;
	if (b >= b0 && b < b0 + PER) { /* the owner: totals before bin b */
		int j = b - b0;
		sm.red64[0] = j ? c[j - 1] : ec;
		sm.red64[1] = j ? s[j - 1] : es;
	}
	__syncthreads();
	unsigned long long cb = sm.red64[0], sb = sm.red64[1];
	__syncthreads();

	/* inside bin b: narrow by 8-bit digits of the key while too many tokens to sort */
	unsigned long long pre = 0;
	int bits = 0;
	unsigned long long klo_b = b == blo ? klo : 0;
	int n = samp_gather(l, w, vocab, temp, b, klo_b, pre, bits, sm);
	while (n > SAMP_CAP) {
		/* the next 8 bits below the prefix the remaining tokens share */
		bits = __clzll(sm.kmin ^ sm.kmax); /* > 0 tokens differ: keys are unique */
		pre = sm.kmax;
		int sh = 64 - bits - 8 > 0 ? 64 - bits - 8 : 0;
		for (int i = threadIdx.x; i < 256; i += SAMP_THREADS) {
			sm.dcnt[i] = 0;
			sm.dsum[i] = 0;
		}
		__syncthreads();
		samp_run run(sm.dcnt, sm.dsum);
		for (int i = threadIdx.x; i < vocab; i += SAMP_THREADS) {
			unsigned long long e = w[i];
			if ((int)(e >> 48) != b)
				continue;
			unsigned long long k = samp_key(samp_z(l[i], temp), i);
			if (k < klo_b || ((k ^ pre) & himask(bits)))
				continue;
			run.add((int)(k >> sh) & 255, e & SAMP_WMASK);
		}
		run.flush();
		__syncthreads();
		/* digits from 255 down (larger keys first): the first where the condition holds */
		int d = 0;
		unsigned long long ac = cb, as = sb;
		for (int dg = 255; dg >= 0; dg--) { /* 256 steps, every thread the same: no sync */
			unsigned long long nc = ac + sm.dcnt[dg], ns = as + sm.dsum[dg];
			bool ok = mode == SAMP_COUNT ? nc > target
						     : samp_cond(mode, ns, thr, target);
			if (ok || dg == 0) {
				d = dg;
				break;
			}
			ac = nc;
			as = ns;
		}
		cb = ac;
		sb = as;
		pre = (pre & himask(64 - sh - 8)) | ((unsigned long long)d << sh);
		bits = 64 - sh;
		n = samp_gather(l, w, vocab, temp, b, klo_b, pre, bits, sm);
	}
	/* key[0..n) sorted, wt alongside: running sums from sb */
	unsigned long long v0 = threadIdx.x * 2 < n ? sm.wt[threadIdx.x * 2] : 0;
	unsigned long long v1 = threadIdx.x * 2 + 1 < n ? sm.wt[threadIdx.x * 2 + 1] : 0;
	unsigned long long inc = block_scan(v0 + v1, sm);
	__syncthreads();
	if (threadIdx.x * 2 < SAMP_CAP) {
		sm.wt[threadIdx.x * 2] = sb + inc - v1; /* running sum at each token, inclusive */
		sm.wt[threadIdx.x * 2 + 1] = sb + inc;
	}
	__syncthreads();
	int pos;
	if (mode == SAMP_COUNT)
		pos = (int)(target - cb);
	else
		pos = block_first(
			n, [&](int i) { return samp_cond(mode, sm.wt[i], thr, target); }, sm);
	if (pos >= n)
		pos = n - 1; /* only if sums lie: the condition holds at the prefix's end */
	unsigned long long k = sm.key[pos];
	*cum = sm.wt[pos];
	__syncthreads();
	return k;
}

/* grid (n_parts, ny), SAMP_P1_THREADS: block (p, y) runs pass 1 over slice p of the logits of
 * sequences y, y + ny, ... (SAMP_P1_SU loads in flight a thread) and writes their partial p.
 * pdl: launched with programmatic dependent launch (the fused path; kernels.cu launch()). */
__global__ void __launch_bounds__(SAMP_P1_THREADS)
	k_samp_pass1(const int32_t *__restrict__ n_seqs, const int32_t *__restrict__ seq_row,
		     const struct pk_sampling *__restrict__ samp, const float *__restrict__ logits,
		     int vocab, unsigned long long *__restrict__ wbuf,
		     samp_part *__restrict__ parts, int pdl)
{
	__shared__ float rf[4][SAMP_P1_THREADS / 32];
	__shared__ int ri[2][SAMP_P1_THREADS / 32];
	int lane = threadIdx.x & 31, wi = threadIdx.x >> 5;
	if (pdl)
		pdl_trigger();
	pdl_wait(); /* the logits are the previous kernel's */
	for (int s = blockIdx.y; s < *n_seqs; s += gridDim.y) {
		if (seq_row[s] < 0)
			continue;
		const float *l = logits + (size_t)seq_row[s] * vocab;
		unsigned long long *w = wbuf + (size_t)s * vocab;
		float temp = samp[s].temperature > 0.0f ? samp[s].temperature : 0.0f;
		int per = (vocab + gridDim.x - 1) / gridDim.x;
		int lo = blockIdx.x * per, hi = min(vocab, lo + per);
		float bv = -INFINITY, tm = -INFINITY, ts = 0.0f, zb = -INFINITY;
		int bi = 0x7fffffff, zi = 0x7fffffff;
		constexpr int SU = SAMP_P1_SU;
		for (int i0 = lo + threadIdx.x; i0 < hi; i0 += SU * SAMP_P1_THREADS) {
			float v[SU];
	#pragma unroll
			for (int u = 0; u < SU; u++) {
				int i = i0 + u * SAMP_P1_THREADS;
				v[u] = i < hi ? l[i] : -INFINITY;
			}
			float cm = tm;
	#pragma unroll
			for (int u = 0; u < SU; u++) {
				int i = i0 + u * SAMP_P1_THREADS;
				if (v[u] > bv) { /* ids rise with u: the first of equals stays */
					bv = v[u];
					bi = i;
				}
				cm = v[u] > cm ? v[u] : cm; /* NaN never wins */
				if (temp > 0.0f && i < hi) {
					float z = samp_z(v[u], temp);
					w[i] = __float_as_uint(z);
					if (z > zb) {
						zb = z;
						zi = i;
					}
				}
			}
			if (cm > -INFINITY) {
				ts *= tm == -INFINITY ? 0.0f : __expf(tm - cm);
	#pragma unroll
				for (int u = 0; u < SU; u++)
					ts += v[u] == v[u] ? __expf(v[u] - cm) : 0.0f;
				tm = cm;
			}
		}
		/* the block's greedy and z maxima (ties: lowest id); ts scaled to the block max */
		warp_argmax(bv, bi);
		warp_argmax(zb, zi);
		float wm = warp_max(tm);
		bool none = tm == -INFINITY || wm == -INFINITY;
		float wts = warp_sum(none ? 0.0f : ts * __expf(tm - wm));
		if (lane == 0) {
			rf[0][wi] = bv, ri[0][wi] = bi;
			rf[1][wi] = zb, ri[1][wi] = zi;
			rf[2][wi] = wm, rf[3][wi] = wts;
		}
		__syncthreads();
		if (wi == 0) {
			constexpr int NW = SAMP_P1_THREADS / 32;
			bool in = lane < NW;
			bv = in ? rf[0][lane] : -INFINITY, bi = in ? ri[0][lane] : 0x7fffffff;
			zb = in ? rf[1][lane] : -INFINITY, zi = in ? ri[1][lane] : 0x7fffffff;
			tm = in ? rf[2][lane] : -INFINITY, ts = in ? rf[3][lane] : 0.0f;
			warp_argmax(bv, bi);
			warp_argmax(zb, zi);
			float bm = warp_max(tm);
			bool none = tm == -INFINITY || bm == -INFINITY;
			ts = warp_sum(none ? 0.0f : ts * __expf(tm - bm));
			if (lane == 0) {
				samp_part p;
				p.bv = bv, p.bi = bi, p.tm = bm, p.ts = ts, p.zb = zb, p.zi = zi;
				p.pad[0] = p.pad[1] = 0;
				parts[(size_t)s * SAMP_P1_MAX + blockIdx.x] = p;
			}
		}
		__syncthreads(); /* rf, ri are reused by the next sequence */
	}
}

__global__ void __launch_bounds__(SAMP_THREADS)
	k_sample(const int32_t *__restrict__ n_seqs, const int32_t *__restrict__ seq_row,
		 const struct pk_sampling *__restrict__ samp, const float *__restrict__ logits,
		 int vocab, unsigned long long *__restrict__ wbuf,
		 const samp_part *__restrict__ parts, int n_parts, int32_t *__restrict__ out_token,
		 float *__restrict__ out_logprob)
{
	extern __shared__ __align__(16) unsigned char smem_raw[];
	samp_smem &sm = *reinterpret_cast<samp_smem *>(smem_raw);
	int s = blockIdx.x;
	if (s >= *n_seqs || seq_row[s] < 0)
		return;
	const float *l = logits + (size_t)seq_row[s] * vocab;
	unsigned long long *w = wbuf + (size_t)s * vocab;
	struct pk_sampling sp = samp[s];
	float temp = sp.temperature > 0.0f ? sp.temperature : 0.0f;
	if (temp > 0.0f) { /* shared memory only: before the wait */
		for (int i = threadIdx.x; i < MDL_EXP_TAB; i += SAMP_THREADS)
			sm.etab[i] = mdl_exp_table_at(i);
		for (int i = threadIdx.x; i < SAMP_BINS; i += SAMP_THREADS) {
			sm.bsum[i] = 0;
			sm.bcnt[i] = 0;
		}
	}
	pdl_wait(); /* the partials and w are k_samp_pass1's */

	/* pass 1's partials (k_samp_pass1), one a thread */
	float bv = -INFINITY, tm = -INFINITY, ts = 0.0f, zb = -INFINITY;
	int bi = 0x7fffffff, zi = 0x7fffffff;
	if (threadIdx.x < n_parts) {
		const samp_part &p = parts[(size_t)s * SAMP_P1_MAX + threadIdx.x];
		bv = p.bv;
		bi = p.bi;
		tm = p.tm;
		ts = p.ts;
		zb = p.zb;
		zi = p.zi;
	}
	float mx = bv;
	block_argmax(mx, bi, sm);
	int tok = bi == 0x7fffffff ? 0 : bi;
	__syncthreads();
	float se = ts * (tm == -INFINITY || mx == -INFINITY ? 0.0f : __expf(tm - mx));
	{
		int lane = threadIdx.x & 31, wi = threadIdx.x >> 5;
		se = warp_sum(se);
		if (lane == 0)
			sm.redf[wi] = se;
		__syncthreads();
		se = warp_sum(lane < SAMP_THREADS / 32 ? sm.redf[lane] : 0.0f);
		__syncthreads();
	}
	float lse = mx + logf(se);
	float zmax = zb;
	block_argmax(zmax, zi, sm);

	if (temp > 0.0f && zmax > -INFINITY) {
		__syncthreads(); /* etab, bins (filled above) */
		/* pass 2: step 4's weights, bins, per-bin count and exact sum */
		const float bscale = (float)SAMP_BINS / SAMP_SPAN;
		samp_run run(sm.bcnt, sm.bsum);
		for (int i = threadIdx.x; i < vocab; i += SAMP_THREADS) {
			float z = __uint_as_float((unsigned)w[i]);
			float x = z == zmax ? 0.0f : z - zmax;
			uint64_t wt = mdl_exp_weight(sm.etab, x);
			float bf = -x * bscale; /* x = -inf: +inf, the last bin */
			int bn = bf < (float)(SAMP_BINS - 1) ? (int)bf : SAMP_BINS - 1;
			w[i] = ((unsigned long long)bn << 48) | wt;
			run.add(bn, wt);
		}
		run.flush();
		__syncthreads();
		unsigned long long klo = 0, cum, S = 0, nlive = 0;
		int blo = SAMP_BINS;
		static_assert(SAMP_BINS == 2 * SAMP_THREADS, "two bins a thread");
		int t2 = 2 * threadIdx.x;
		S = block_total(sm.bsum[t2] + sm.bsum[t2 + 1], sm);
		unsigned c2 = t2 + 1 < SAMP_BINS - 1 ? sm.bcnt[t2] + sm.bcnt[t2 + 1] : sm.bcnt[t2];
		nlive = block_total(c2, sm); /* tokens outside the last bin */
		/* step 5: the top_k largest keys. Every token of the last bin weighs 0 (zmax - z >
		 * 28.98: 2^40 e^x < 0.3): when the k-th falls there, C's weights are all the
		 * weights, and the tokens it leaves out weigh 0 too: no boundary needed. */
		if (sp.top_k > 0 && (unsigned long long)sp.top_k < nlive) {
			klo = samp_find(l, w, vocab, temp, SAMP_COUNT, 0.0,
					(unsigned long long)sp.top_k - 1, 0, SAMP_BINS, &S, sm);
			blo = (int)(w[0xffffffffu - (unsigned)(klo & 0xffffffffu)] >> 48);
		}
		unsigned long long SP = S;
		/* step 6: shortest prefix with (double)cum >= top_p * S */
		if (sp.top_p > 0.0f && sp.top_p < 1.0f) {
			klo = samp_find(l, w, vocab, temp, SAMP_SUM_GE, (double)sp.top_p * (double)S,
					0, klo, blo, &SP, sm);
			blo = (int)(w[0xffffffffu - (unsigned)(klo & 0xffffffffu)] >> 48);
		}
		/* steps 7, 8: first of P whose running sum exceeds target */
		unsigned long long target = mdl_scale24(SP, mdl_random24(sp.seed, sp.counter));
		unsigned long long k = samp_find(l, w, vocab, temp, SAMP_SUM_GT, 0.0, target, klo, blo,
						 &cum, sm);
		tok = (int)(0xffffffffu - (unsigned)(k & 0xffffffffu));
	}
	if (threadIdx.x == 0) {
		out_token[s] = tok;
		out_logprob[s] = l[tok] - lse;
	}
}

/* ---------------------------------------------------------------- misc */

__global__ void k_done(unsigned long long *done)
{
	/* R-done: release, gpu scope; pairs with the poller's acquire of *done */
	__threadfence();
	atomicAdd(done, 1ull);
}

/* Requests the first n bytes of each of `rows` rows (stride bytes apart) into L2 and reads
 * nothing back; a thread takes whole rows. On Hopper each row head is one
 * cp.async.bulk.prefetch.L2 (the TMA unit fetches it; the block stays resident until its
 * requests have landed, which is why this runs on a side branch of the step's graph and never
 * on its critical path), elsewhere a prefetch.global.L2 per 128-byte line. A hint: nothing waits
 * on it, and a row evicted before its use is only read from DRAM again. */
__global__ void __launch_bounds__(32) k_l2_prefetch(const char *p, size_t rows, size_t stride,
						    unsigned n)
{
	size_t nt = (size_t)gridDim.x * blockDim.x;
	for (size_t j = (size_t)blockIdx.x * blockDim.x + threadIdx.x; j < rows; j += nt) {
#if defined(__CUDA_ARCH__) && __CUDA_ARCH__ >= 900
		/* n: a multiple of 16 (pk_k_l2_prefetch rounds it), the row 16-byte aligned */
		asm volatile("cp.async.bulk.prefetch.L2.global [%0], %1;" ::"l"(p + j * stride),
			     "r"(n)
			     : "memory");
#else
		for (unsigned b = 0; b < n; b += 128)
			asm volatile("prefetch.global.L2 [%0];" ::"l"(p + j * stride + b));
#endif
	}
}

template <typename T>
__global__ void k_fill(T *p, size_t n, uint64_t seed, float scale, float value)
{
	for (size_t i = (size_t)blockIdx.x * blockDim.x + threadIdx.x; i < n;
	     i += (size_t)gridDim.x * blockDim.x) {
		float v = value;
		if (scale != 0.0f)
			v = (mdl_uniform(seed, i) * 2.0f - 1.0f) * scale;
		p[i] = from_f<T>(v);
	}
}

int launch_err(void)
{
	/* (declared above for the skinny launcher) */
	return cudaPeekAtLastError() == cudaSuccess ? 0 : -EIO;
}

} /* namespace */

/* ---------------------------------------------------------------- launchers */

int pk_k_embed(enum pk_step_dtype dt, const void *emb, int hidden, const int32_t *tok_id,
	       const int32_t *n_rows, int bucket, float *h, float *ss, int ss_ld, cudaStream_t st)
{
	if (dt == PK_STEP_BF16)
		k_embed<bf16><<<bucket, 256, 0, st>>>(static_cast<const bf16 *>(emb), hidden, tok_id,
						       n_rows, h, ss, ss_ld);
	else
		k_embed<float><<<bucket, 256, 0, st>>>(static_cast<const float *>(emb), hidden,
							tok_id, n_rows, h, ss, ss_ld);
	return launch_err();
}

int pk_k_rmsnorm(enum pk_step_dtype dt, float *h, const float *delta, const void *w, int hidden,
		 float eps, const int32_t *gather, const int32_t *n_rows, int bucket, void *out,
		 cudaStream_t st)
{
	int th = hidden >= 4096 ? 1024 : hidden >= 1024 ? 512 : 256;
	if (dt == PK_STEP_BF16)
		k_rmsnorm<bf16><<<bucket, th, 0, st>>>(h, delta, static_cast<const bf16 *>(w), hidden,
							eps, gather, n_rows,
							static_cast<bf16 *>(out));
	else
		k_rmsnorm<float><<<bucket, th, 0, st>>>(h, delta, static_cast<const float *>(w),
							 hidden, eps, gather, n_rows,
							 static_cast<float *>(out));
	return launch_err();
}

int pk_k_gemm(void *cublas, enum pk_step_dtype dt, const void *W, int N, int K, const void *x,
	      int ldx, int M, float *y, int ldy, int force_cublas, cudaStream_t st)
{
	if (K % 8 || ldx % 8 || M < 1)
		return -EINVAL;
	if (M <= PK_GEMV_MAX_ROWS && !force_cublas) {
		int rc = dt == PK_STEP_BF16 ? gemv_dispatch<bf16>(W, N, K, x, ldx, M, y, ldy, st)
					    : gemv_dispatch<float>(W, N, K, x, ldx, M, y, ldy, st);
		return rc ? rc : launch_err();
	}
	if (!cublas)
		return -EINVAL;
	cublasHandle_t hdl = static_cast<cublasHandle_t>(cublas);
	const float one = 1.0f, zero = 0.0f;
	cudaDataType_t t = dt == PK_STEP_BF16 ? CUDA_R_16BF : CUDA_R_32F;
	/* row-major y (M, ldy) = x (M, K) W^T  <=>  column-major y^T (N x M) = W^T' ... */
	cublasStatus_t cs = cublasGemmEx(hdl, CUBLAS_OP_T, CUBLAS_OP_N, N, M, K, &one, W, t, K, x, t,
					 ldx, &zero, y, CUDA_R_32F, ldy, CUBLAS_COMPUTE_32F,
					 CUBLAS_GEMM_DEFAULT);
	return cs == CUBLAS_STATUS_SUCCESS ? 0 : -EIO;
}

int pk_k_qkv_post(enum pk_step_dtype dt, const struct pk_dims *d, const float *qkv,
		  const void *bias, const void *qn, const void *kn, const float *inv_freq,
		  const struct pk_step_batch *b, int bucket, void *kv_pool, int layer, float *q,
		  int pdl, cudaStream_t st)
{
	if (d->head_dim % 64 || d->head_dim > 256)
		return -EINVAL;
	dim3 grid(bucket, d->n_heads + 2 * d->n_kv);
	int th = d->head_dim / 2;
	if (dt == PK_STEP_BF16)
		launch(pdl, k_qkv_post<bf16>, grid, th, 0, st, *d, qkv,
		       static_cast<const bf16 *>(bias), static_cast<const bf16 *>(qn),
		       static_cast<const bf16 *>(kn), inv_freq,
		       b->n_tokens, b->tok_pos, b->tok_seq, b->page_table,
		       static_cast<bf16 *>(kv_pool), layer, q, pdl);
	else
		launch(pdl, k_qkv_post<float>, grid, th, 0, st, *d, qkv,
		       static_cast<const float *>(bias), static_cast<const float *>(qn),
		       static_cast<const float *>(kn), inv_freq,
		       b->n_tokens, b->tok_pos, b->tok_seq, b->page_table,
		       static_cast<float *>(kv_pool), layer, q, pdl);
	return launch_err();
}

int pk_k_attention(enum pk_step_dtype dt, const struct pk_dims *d, const float *q,
		   const void *kv_pool, int layer, const struct pk_step_batch *b, int bucket,
		   int max_splits, float *ws_o, float *ws_ml, void *out, int pdl, cudaStream_t st)
{
	if (d->n_heads % d->n_kv || d->n_heads / d->n_kv > PK_ATTN_GMAX)
		return -EINVAL;
#define ATTN(T, HD)                                                                            \
	attention_launch<T, HD>(d, q, kv_pool, layer, b, bucket, max_splits, ws_o, ws_ml, out,     \
				pdl, st)
	switch (d->head_dim * 2 + (dt == PK_STEP_BF16)) {
	case 129: ATTN(bf16, 64); break;
	case 257: ATTN(bf16, 128); break;
	case 513: ATTN(bf16, 256); break;
	case 128: ATTN(float, 64); break;
	case 256: ATTN(float, 128); break;
	case 512: ATTN(float, 256); break;
	default: return -EINVAL;
	}
#undef ATTN
	return launch_err();
}

int pk_k_swiglu(enum pk_step_dtype dt, const float *gu, int inter, int bucket, void *out,
		cudaStream_t st)
{
	size_t total = (size_t)inter * bucket;
	unsigned blocks = (unsigned)((total + 255) / 256);
	if (dt == PK_STEP_BF16)
		k_swiglu<bf16><<<blocks, 256, 0, st>>>(gu, inter, total, static_cast<bf16 *>(out));
	else
		k_swiglu<float><<<blocks, 256, 0, st>>>(gu, inter, total, static_cast<float *>(out));
	return launch_err();
}

size_t pk_k_sample_scratch(int vocab, int max_seqs)
{
	return (size_t)max_seqs * (8 * (size_t)vocab + SAMP_P1_MAX * sizeof(samp_part));
}

int pk_k_sample(const struct pk_step_batch *b, int vocab, int max_seqs, void *scratch, int pdl,
		cudaStream_t st)
{
	if (vocab < 1 || vocab >= 1 << 30)
		return -EINVAL;
	size_t smem = sizeof(samp_smem);
	if (cudaFuncSetAttribute(k_sample, cudaFuncAttributeMaxDynamicSharedMemorySize, (int)smem) !=
	    cudaSuccess)
		return -EIO;
	unsigned long long *w = static_cast<unsigned long long *>(scratch);
	samp_part *parts = reinterpret_cast<samp_part *>(w + (size_t)max_seqs * vocab);
	/* about one round of SAMP_P1_SU loads a thread per block */
	int np = (vocab + SAMP_P1_THREADS * SAMP_P1_SU - 1) / (SAMP_P1_THREADS * SAMP_P1_SU);
	np = np < SAMP_P1_MAX ? np : SAMP_P1_MAX;
	/* a few sequences per block row: a batch of 1 in a 64-slot step launches 4 rows, not 64 */
	int ny = max_seqs < 4 ? max_seqs : 4;
	launch(pdl, k_samp_pass1, dim3(np, ny), SAMP_P1_THREADS, 0, st, b->n_seqs, b->seq_row,
	       b->samp, b->logits, vocab, w, parts, pdl);
	launch(pdl, k_sample, max_seqs, SAMP_THREADS, smem, st, b->n_seqs, b->seq_row, b->samp,
	       b->logits, vocab, w, parts, np, b->out_token, b->out_logprob);
	return launch_err();
}

int pk_trace_reset(cudaStream_t st)
{
#ifdef PK_TRACE
	void *n;
	if (cudaGetSymbolAddress(&n, tr_n) != cudaSuccess ||
	    cudaMemsetAsync(n, 0, sizeof(unsigned), st) != cudaSuccess)
		return -EIO;
	return 0;
#else
	(void)st;
	return -ENOTSUP;
#endif
}

int pk_trace_read(struct pk_trace_rec *out, int max, unsigned *dropped)
{
#ifdef PK_TRACE
	unsigned n;
	if (cudaDeviceSynchronize() != cudaSuccess ||
	    cudaMemcpyFromSymbol(&n, tr_n, sizeof(n)) != cudaSuccess)
		return -EIO;
	unsigned have = n < PK_TRACE_CAP ? n : PK_TRACE_CAP;
	unsigned take = have < (unsigned)max ? have : (unsigned)max;
	*dropped = n - take;
	if (take && cudaMemcpyFromSymbol(out, tr_buf, take * sizeof(*out)) != cudaSuccess)
		return -EIO;
	return (int)take;
#else
	(void)out, (void)max;
	*dropped = 0;
	return -ENOTSUP;
#endif
}

int pk_k_l2_prefetch(const void *p, size_t rows, size_t stride, size_t n, cudaStream_t st)
{
	n &= ~(size_t)15;
	if (!rows || !n)
		return 0;
	if ((uintptr_t)p % 16 || stride % 16 || n > 65536)
		return -EINVAL;
	size_t blocks = (rows + 31) / 32, cap = (size_t)sm_count();
	k_l2_prefetch<<<(unsigned)(blocks < cap ? blocks : cap), 32, 0, st>>>(
		static_cast<const char *>(p), rows, stride, (unsigned)n);
	return launch_err();
}

int pk_k_done(unsigned long long *done, cudaStream_t st)
{
	k_done<<<1, 1, 0, st>>>(done);
	return launch_err();
}

int pk_k_fill(enum pk_step_dtype dt, void *p, size_t n, uint64_t seed, float scale, float value,
	      cudaStream_t st)
{
	if (dt == PK_STEP_BF16)
		k_fill<bf16><<<1024, 256, 0, st>>>(static_cast<bf16 *>(p), n, seed, scale, value);
	else
		k_fill<float><<<1024, 256, 0, st>>>(static_cast<float *>(p), n, seed, scale, value);
	return launch_err();
}

int pk_k_skinny(const struct pk_skinny *a, int in, int out, cudaStream_t st)
{
	if (a->K % 32 || a->M < 1 || a->M > 16 || (in == PK_IN_X && a->ldx % 8) ||
	    (in == PK_IN_NORM && a->ldh % 4))
		return -EINVAL;
	unsigned grid = (unsigned)((a->N + 15) / 16);
	if (a->M == 1) {
		if (in == PK_IN_X)
			gemv1_out<PK_IN_X>(a, out, st);
		else
			gemv1_out<PK_IN_NORM>(a, out, st);
	} else if (a->M <= 8) {
		if (in == PK_IN_X)
			skinny_out<1, PK_IN_X>(a, out, grid, st);
		else
			skinny_out<1, PK_IN_NORM>(a, out, grid, st);
	} else {
		if (in == PK_IN_X)
			skinny_out<2, PK_IN_X>(a, out, grid, st);
		else
			skinny_out<2, PK_IN_NORM>(a, out, grid, st);
	}
	return launch_err();
}

int pk_k_skinny_parts(int N, int M)
{
	return M == 1 ? (int)gemv1_grid(N) : (N + 15) / 16;
}
