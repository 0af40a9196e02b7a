/* SPDX-License-Identifier: Apache-2.0 */
/*
 * tests/gpu/test_pk_kernels.cu: every kernel of the forward step against a CPU reference in
 * double on fresh random inputs (seeded from the clock unless PK_TEST_SEED is set; the seed is
 * printed). Tolerances (||gpu - ref|| / ||ref||), written down here and in docs/gpu-step.md:
 *   GEMV/GEMM: 2e-5 (same rounded inputs both sides; only the fp32 summation order differs)
 *   RMSNorm+residual: 1e-5 f32, 5e-3 bf16 (output rounded to bf16)
 *   QKV epilogue (bias, q/k norm, RoPE, paged append): 1e-4 f32, 5e-3 bf16
 *   paged attention (decode, prefill chunk, split-K): 1e-4 f32, 1e-2 bf16
 *   SwiGLU: 1e-5 f32, 5e-3 bf16
 *   sampling: the same token as model/sample.c's mdl_sample for every case (exact), logprob 1e-3
 * Exit 0 pass, 1 fail, 77 no GPU.
 */
#include <errno.h>
#include <time.h>

#include <cublas_v2.h>

#include "gpu_test.h"
#include "step_pvt.h"

extern "C" {
#include "sample.h"
}

static int failures;

static void report(const char *what, double err, double tol)
{
	int ok = err <= tol;
	printf("  %-52s rel %.3e  tol %.0e  %s\n", what, err, tol, ok ? "ok" : "FAIL");
	if (!ok)
		failures++;
}

static void test_gemm(uint64_t *rng, int bf16, int N, int K, int M, int force_cublas, void *cublas)
{
	float *W = (float *)malloc(sizeof(float) * N * K), *x = (float *)malloc(sizeof(float) * M * K);
	double *ref = (double *)malloc(sizeof(double) * M * N);
	float *y = (float *)malloc(sizeof(float) * M * N);
	for (size_t i = 0; i < (size_t)N * K; i++)
		W[i] = gt_round(bf16, gt_uni(rng));
	for (size_t i = 0; i < (size_t)M * K; i++)
		x[i] = gt_round(bf16, gt_uni(rng));
	for (int m = 0; m < M; m++)
		for (int n = 0; n < N; n++) {
			double a = 0;
			for (int k = 0; k < K; k++)
				a += (double)x[(size_t)m * K + k] * W[(size_t)n * K + k];
			ref[(size_t)m * N + n] = a;
		}
	void *dW = gt_upload(bf16, W, (size_t)N * K), *dx = gt_upload(bf16, x, (size_t)M * K);
	float *dy;
	CK(cudaMalloc(&dy, sizeof(float) * M * N));
	CK(cudaMemset(dy, 0xff, sizeof(float) * M * N)); /* poison: NaN */
	CKR(pk_k_gemm(cublas, bf16 ? PK_STEP_BF16 : PK_STEP_F32, dW, N, K, dx, K, M, dy, N,
		      force_cublas, 0));
	CK(cudaDeviceSynchronize());
	CK(cudaMemcpy(y, dy, sizeof(float) * M * N, cudaMemcpyDeviceToHost));
	char what[96];
	snprintf(what, sizeof(what), "gemm %s N=%d K=%d M=%d %s", bf16 ? "bf16" : "f32", N, K, M,
		 force_cublas || M > PK_GEMV_MAX_ROWS ? "cublas" : "gemv");
	report(what, gt_rel(y, ref, (size_t)M * N), 2e-5);
	cudaFree(dW);
	cudaFree(dx);
	cudaFree(dy);
	free(W);
	free(x);
	free(ref);
	free(y);
}

/* Tensor-core skinny GEMM, every prologue/epilogue mode, vs double on the same bf16 inputs. */
static void test_skinny(uint64_t *rng, int in, int out, int N, int K, int M, int gather)
{
	int tiles = out == PK_OUT_SWIGLU ? 2 : 1, parts = 5;
	size_t wn = (size_t)tiles * N * K;
	float *W = (float *)malloc(4 * wn), *x = (float *)malloc(4 * (size_t)M * K);
	float *h = (float *)malloc(4 * (size_t)M * K), *nw = (float *)malloc(4 * (size_t)K);
	float *ss = (float *)malloc(4 * (size_t)M * parts), *y0 = (float *)malloc(4 * (size_t)M * N);
	int32_t gidx[16], nrows = gather ? M - 1 : M;
	for (size_t i = 0; i < wn; i++)
		W[i] = gt_round(1, gt_uni(rng));
	for (int m = 0; m < M; m++)
		gidx[m] = gather ? (int32_t)(gt_rng_next(rng) % (uint64_t)M) : m;
	for (size_t i = 0; i < (size_t)M * K; i++) {
		x[i] = gt_round(1, gt_uni(rng));
		h[i] = gt_uni(rng) * 4;
	}
	for (int k = 0; k < K; k++)
		nw[k] = gt_round(1, 1 + 0.5f * gt_uni(rng));
	for (int m = 0; m < M; m++) {
		double tot = 0;
		for (int k = 0; k < K; k++)
			tot += (double)h[(size_t)m * K + k] * h[(size_t)m * K + k];
		for (int p = 0; p < parts; p++) /* split the true sum into uneven partials */
			ss[m * parts + p] = (float)(p < parts - 1 ? tot / (p + 2) / 3 : 0);
		double used = 0;
		for (int p = 0; p < parts - 1; p++)
			used += ss[m * parts + p];
		ss[m * parts + parts - 1] = (float)(tot - used);
	}
	for (size_t i = 0; i < (size_t)M * N; i++)
		y0[i] = gt_uni(rng);
	/* the rows the kernel multiplies */
	float *xin = (float *)malloc(4 * (size_t)M * K);
	for (int m = 0; m < M; m++) {
		if (in == PK_IN_X) {
			memcpy(xin + (size_t)m * K, x + (size_t)m * K, 4 * (size_t)K);
			continue;
		}
		int src = gidx[m];
		float sum = 0;
		for (int p = 0; p < parts; p++)
			sum += ss[src * parts + p];
		float rs = 1.0f / sqrtf(sum / (float)K + 1e-5f);
		for (int k = 0; k < K; k++)
			xin[(size_t)m * K + k] = m < nrows ? gt_round(1, h[(size_t)src * K + k] * rs * nw[k]) : 0;
	}
	size_t on = (size_t)M * N;
	double *ref = (double *)malloc(8 * on * tiles);
	for (int tl = 0; tl < tiles; tl++)
		for (int m = 0; m < M; m++)
			for (int n = 0; n < N; n++) {
				double acc = 0;
				for (int k = 0; k < K; k++)
					acc += (double)W[((size_t)tl * N + n) * K + k] * xin[(size_t)m * K + k];
				ref[tl * on + (size_t)m * N + n] = acc;
			}
	double *want = (double *)malloc(8 * on);
	for (size_t i = 0; i < on; i++) {
		if (out == PK_OUT_Y)
			want[i] = ref[i];
		else if (out == PK_OUT_ACC)
			want[i] = (double)y0[i] + ref[i];
		else
			want[i] = ref[i] / (1 + exp(-ref[i])) * ref[on + i];
	}
	void *dW = gt_upload(1, W, wn), *dx = gt_upload(1, x, (size_t)M * K), *dnw = gt_upload(1, nw, K);
	float *dh, *dss, *dy, *dsso;
	int32_t *dg, *dn;
	void *dact;
	CK(cudaMalloc(&dh, 4 * (size_t)M * K));
	CK(cudaMalloc(&dss, 4 * (size_t)M * parts));
	CK(cudaMalloc(&dy, 4 * on));
	CK(cudaMalloc(&dsso, 4 * (size_t)M * ((N + 15) / 16)));
	CK(cudaMalloc(&dg, 64));
	CK(cudaMalloc(&dn, 4));
	CK(cudaMalloc(&dact, 2 * on));
	CK(cudaMemcpy(dh, h, 4 * (size_t)M * K, cudaMemcpyHostToDevice));
	CK(cudaMemcpy(dss, ss, 4 * (size_t)M * parts, cudaMemcpyHostToDevice));
	CK(cudaMemcpy(dg, gidx, 4 * M, cudaMemcpyHostToDevice));
	CK(cudaMemcpy(dn, &nrows, 4, cudaMemcpyHostToDevice));
	if (out == PK_OUT_ACC)
		CK(cudaMemcpy(dy, y0, 4 * on, cudaMemcpyHostToDevice));
	else
		CK(cudaMemset(dy, 0xff, 4 * on));
	CK(cudaMemset(dact, 0xff, 2 * on));
	struct pk_skinny a;
	memset(&a, 0, sizeof(a));
	a.W = dW, a.N = N, a.K = K, a.M = M, a.x = dx, a.ldx = K, a.h = dh, a.ldh = K, a.nw = dnw;
	a.ss = dss, a.ss_ld = parts, a.n_parts = parts, a.gather = gather ? dg : NULL;
	a.n_rows = dn, a.eps = 1e-5f, a.y = dy, a.ldy = N, a.ss_out = dsso;
	a.act = dact, a.ldact = N;
	if (out == PK_OUT_ACC)
		a.ss_ld = pk_k_skinny_parts(N, M) > parts ? pk_k_skinny_parts(N, M) : parts;
	if (out == PK_OUT_ACC && in == PK_IN_NORM) {
		printf("  (skinny NORM+ACC not a used combination, skipped)\n");
		return;
	}
	if (out == PK_OUT_ACC) { /* ss_out rows use ss_ld; re-allocate to fit */
		cudaFree(dsso);
		CK(cudaMalloc(&dsso, 4 * (size_t)M * a.ss_ld));
		a.ss_out = dsso;
	}
	float *got = (float *)malloc(4 * on), *again = (float *)malloc(4 * on);
	/* twice: the second launch must give the same bits (a fixed summation order, nothing left
	 * behind by the first) */
	for (int rep = 0; rep < 2; rep++) {
		float *o = rep ? again : got;
		if (out == PK_OUT_ACC)
			CK(cudaMemcpy(dy, y0, 4 * on, cudaMemcpyHostToDevice));
		CKR(pk_k_skinny(&a, in, out, 0));
		CK(cudaDeviceSynchronize());
		if (out == PK_OUT_SWIGLU)
			gt_download(1, dact, o, on);
		else
			CK(cudaMemcpy(o, dy, 4 * on, cudaMemcpyDeviceToHost));
	}
	if (memcmp(got, again, 4 * on)) {
		printf("  skinny N=%d K=%d M=%d: a second launch gave different bits\n", N, K, M);
		failures++;
	}
	char what[128];
	snprintf(what, sizeof(what), "skinny %s %s->%s N=%d K=%d M=%d%s", M == 1 ? "gemv" : "mma",
		 in == PK_IN_X ? "x" : "norm(h)", out == PK_OUT_Y ? "y" : out == PK_OUT_ACC ? "h+=" : "swiglu",
		 N, K, M, gather ? " gather" : "");
	report(what, gt_rel(got, want, on), out == PK_OUT_SWIGLU ? 5e-3 : in == PK_IN_NORM ? 1e-3 : 2e-5);
	if (out == PK_OUT_ACC) {
		int nb = pk_k_skinny_parts(N, M);
		float *sso = (float *)malloc(4 * (size_t)M * a.ss_ld);
		CK(cudaMemcpy(sso, dsso, 4 * (size_t)M * a.ss_ld, cudaMemcpyDeviceToHost));
		double *sref = (double *)calloc(M, 8);
		float *sgot = (float *)calloc(M, 4);
		for (int m = 0; m < M; m++) {
			for (int n = 0; n < N; n++)
				sref[m] += want[(size_t)m * N + n] * want[(size_t)m * N + n];
			for (int p = 0; p < nb; p++)
				sgot[m] += sso[(size_t)m * a.ss_ld + p];
		}
		report("  sum-of-squares partials of the updated rows", gt_rel(sgot, sref, M), 1e-5);
		free(sso);
		free(sref);
		free(sgot);
	}
	cudaFree(dW);
	cudaFree(dx);
	cudaFree(dnw);
	cudaFree(dh);
	cudaFree(dss);
	cudaFree(dy);
	cudaFree(dsso);
	cudaFree(dg);
	cudaFree(dn);
	cudaFree(dact);
	free(W);
	free(x);
	free(h);
	free(nw);
	free(ss);
	free(y0);
	free(xin);
	free(ref);
	free(want);
	free(got);
	free(again);
}

static void test_rmsnorm(uint64_t *rng, int bf16, int hidden, int rows, int bucket, int gather)
{
	size_t n = (size_t)bucket * hidden;
	float *h = (float *)malloc(4 * n), *dl = (float *)malloc(4 * n), *w = (float *)malloc(4 * hidden);
	float *out = (float *)malloc(4 * n), *hout = (float *)malloc(4 * n);
	double *ref = (double *)calloc(n, 8), *href = (double *)calloc(n, 8);
	int32_t g[64];
	for (size_t i = 0; i < n; i++) {
		h[i] = gt_uni(rng) * 3;
		dl[i] = gt_uni(rng);
	}
	for (int i = 0; i < hidden; i++)
		w[i] = gt_round(bf16, 1 + 0.5f * gt_uni(rng));
	for (int r = 0; r < rows; r++)
		g[r] = gather ? (int)(gt_rng_next(rng) % rows) : r;
	float eps = 1e-6f;
	for (int r = 0; r < bucket; r++) {
		if (r >= rows)
			continue;
		int src = g[r];
		double ss = 0;
		for (int i = 0; i < hidden; i++) {
			double v = (double)h[(size_t)src * hidden + i] + dl[(size_t)src * hidden + i];
			ss += v * v;
		}
		double rs = 1.0 / sqrt(ss / hidden + eps);
		for (int i = 0; i < hidden; i++) {
			double v = (double)h[(size_t)src * hidden + i] + dl[(size_t)src * hidden + i];
			ref[(size_t)r * hidden + i] = v * rs * w[i];
		}
	}
	for (size_t i = 0; i < n; i++)
		href[i] = (size_t)i < (size_t)rows * hidden && !gather ? (double)h[i] + dl[i] : h[i];
	float *dh, *dd;
	int32_t *dg, *dn;
	CK(cudaMalloc(&dh, 4 * n));
	CK(cudaMalloc(&dd, 4 * n));
	CK(cudaMalloc(&dg, 4 * 64));
	CK(cudaMalloc(&dn, 4));
	CK(cudaMemcpy(dh, h, 4 * n, cudaMemcpyHostToDevice));
	CK(cudaMemcpy(dd, dl, 4 * n, cudaMemcpyHostToDevice));
	CK(cudaMemcpy(dg, g, 4 * rows, cudaMemcpyHostToDevice));
	CK(cudaMemcpy(dn, &rows, 4, cudaMemcpyHostToDevice));
	void *dw = gt_upload(bf16, w, hidden);
	void *dout;
	CK(cudaMalloc(&dout, (bf16 ? 2 : 4) * n));
	CK(cudaMemset(dout, 0xff, (bf16 ? 2 : 4) * n));
	CKR(pk_k_rmsnorm(bf16 ? PK_STEP_BF16 : PK_STEP_F32, dh, dd, dw, hidden, eps,
			 gather ? dg : NULL, dn, bucket, dout, 0));
	CK(cudaDeviceSynchronize());
	gt_download(bf16, dout, out, n);
	CK(cudaMemcpy(hout, dh, 4 * n, cudaMemcpyDeviceToHost));
	char what[96];
	snprintf(what, sizeof(what), "rmsnorm+residual %s hidden=%d rows=%d/%d%s", bf16 ? "bf16" : "f32",
		 hidden, rows, bucket, gather ? " gather" : "");
	report(what, gt_rel(out, ref, n), bf16 ? 5e-3 : 1e-5);
	snprintf(what, sizeof(what), "  residual stream h += delta%s", gather ? " (untouched)" : "");
	report(what, gt_rel(hout, href, n), 1e-6);
	cudaFree(dh);
	cudaFree(dd);
	cudaFree(dg);
	cudaFree(dn);
	cudaFree(dw);
	cudaFree(dout);
	free(h);
	free(dl);
	free(w);
	free(out);
	free(hout);
	free(ref);
	free(href);
}

/* One mixed batch: seq0 decodes at pos p0, seq1 prefills a chunk at p1.., seq2 decodes at p2
 * (one: only seq0, in a bucket of 1). Buckets < 16 run k_attn_gqa for bf16 at head dim 64 and
 * 128; f32 and head dim 256 the blocks of one or two query heads (or whole groups when the grid
 * would grow too large). The pool is random (earlier positions), pages
 * scrambled. Checks q, the appended K/V, and the attention output against double references. */
static void test_attention(uint64_t *rng, int bf16, int hd, int n_heads, int n_kv, int qk_norm,
			   int bias, int p0, int p1, int chunk, int p2, int one)
{
	struct pk_dims d;
	memset(&d, 0, sizeof(d));
	d.hidden = 64;
	d.n_heads = n_heads;
	d.n_kv = n_kv;
	d.head_dim = hd;
	d.page_tokens = 16;
	d.n_layers = 2;
	d.eps = 1e-6f;
	int layer = 1, max_ctx = 2048;
	d.max_pages = max_ctx / d.page_tokens;
	int n_seqs = 3, T = one ? 1 : 2 + chunk, G = n_heads / n_kv, half = hd / 2;
	int n_pages = n_seqs * d.max_pages + 7;
	int32_t pos[64], seq[64];
	pos[0] = p0;
	seq[0] = 0;
	for (int i = 0; i < chunk; i++) {
		pos[1 + i] = p1 + i;
		seq[1 + i] = 1;
	}
	pos[1 + chunk] = p2;
	seq[1 + chunk] = 2;
	/* page table: a random permutation of the pool */
	int32_t *perm = (int32_t *)malloc(4 * n_pages);
	for (int i = 0; i < n_pages; i++)
		perm[i] = i;
	for (int i = n_pages - 1; i > 0; i--) {
		int j = (int)(gt_rng_next(rng) % (uint64_t)(i + 1));
		int32_t t = perm[i];
		perm[i] = perm[j];
		perm[j] = t;
	}
	int32_t *pt = perm; /* seq s uses perm[s*max_pages ...] */
	size_t per_head = (size_t)d.page_tokens * hd, kv_stride = (size_t)n_kv * per_head;
	size_t page_stride = (size_t)d.n_layers * 2 * kv_stride, pool_n = page_stride * n_pages;
	float *pool = (float *)malloc(4 * pool_n);
	for (size_t i = 0; i < pool_n; i++)
		pool[i] = gt_round(bf16, gt_uni(rng));
	int ncol = (n_heads + 2 * n_kv) * hd;
	float *qkv = (float *)malloc(4 * (size_t)T * ncol), *b = (float *)malloc(4 * ncol);
	float *qn = (float *)malloc(4 * hd), *kn = (float *)malloc(4 * hd), inv[128];
	for (size_t i = 0; i < (size_t)T * ncol; i++)
		qkv[i] = gt_uni(rng) * 2;
	for (int i = 0; i < ncol; i++)
		b[i] = gt_round(bf16, gt_uni(rng) * 0.5f);
	for (int i = 0; i < hd; i++) {
		qn[i] = gt_round(bf16, 1 + 0.3f * gt_uni(rng));
		kn[i] = gt_round(bf16, 1 + 0.3f * gt_uni(rng));
	}
	for (int i = 0; i < half; i++)
		inv[i] = 1.0f / (float)pow(10000.0, (double)((float)(2 * i) / (float)hd));

	/* CPU reference: epilogue */
	double *qref = (double *)malloc(8 * (size_t)T * n_heads * hd);
	float *pool_ref = (float *)malloc(4 * pool_n);
	memcpy(pool_ref, pool, 4 * pool_n);
	for (int r = 0; r < T; r++)
		for (int hh = 0; hh < n_heads + 2 * n_kv; hh++) {
			double x[256];
			for (int i = 0; i < hd; i++)
				x[i] = (double)qkv[(size_t)r * ncol + hh * hd + i] + (bias ? b[hh * hd + i] : 0);
			int is_q = hh < n_heads, is_k = !is_q && hh < n_heads + n_kv;
			if ((is_q || is_k) && qk_norm) {
				double ss = 0;
				for (int i = 0; i < hd; i++)
					ss += x[i] * x[i];
				double rs = 1.0 / sqrt(ss / hd + d.eps);
				for (int i = 0; i < hd; i++)
					x[i] *= rs * (is_q ? qn[i] : kn[i]);
			}
			if (is_q || is_k)
				for (int i = 0; i < half; i++) {
					double ang = (double)((float)pos[r] * inv[i]);
					double c = cos(ang), s = sin(ang), a = x[i], bb = x[i + half];
					x[i] = a * c - bb * s;
					x[i + half] = bb * c + a * s;
				}
			if (is_q) {
				for (int i = 0; i < hd; i++)
					qref[(size_t)r * n_heads * hd + hh * hd + i] = x[i];
				continue;
			}
			int kvh = is_k ? hh - n_heads : hh - n_heads - n_kv;
			int page = pt[seq[r] * d.max_pages + pos[r] / d.page_tokens];
			size_t off = (size_t)page * page_stride + (size_t)(layer * 2 + (is_k ? 0 : 1)) * kv_stride +
				     kvh * per_head + (size_t)(pos[r] % d.page_tokens) * hd;
			for (int i = 0; i < hd; i++)
				pool_ref[off + i] = gt_round(bf16, (float)x[i]);
		}
	/* CPU reference: attention over pool_ref */
	size_t on = (size_t)T * n_heads * hd;
	double *oref = (double *)calloc(on, 8);
	double *sc = (double *)malloc(8 * max_ctx);
	for (int r = 0; r < T; r++)
		for (int qh = 0; qh < n_heads; qh++) {
			int g = qh / G, ctx = pos[r] + 1;
			const double *qv = qref + (size_t)r * n_heads * hd + qh * hd;
			double mx = -INFINITY;
			for (int p = 0; p < ctx; p++) {
				int page = pt[seq[r] * d.max_pages + p / d.page_tokens];
				const float *k = pool_ref + (size_t)page * page_stride + (size_t)layer * 2 * kv_stride +
						 g * per_head + (size_t)(p % d.page_tokens) * hd;
				double a = 0;
				for (int i = 0; i < hd; i++)
					a += qv[i] * k[i];
				sc[p] = a / sqrt((double)hd);
				mx = fmax(mx, sc[p]);
			}
			double l = 0;
			for (int p = 0; p < ctx; p++) {
				sc[p] = exp(sc[p] - mx);
				l += sc[p];
			}
			for (int p = 0; p < ctx; p++) {
				int page = pt[seq[r] * d.max_pages + p / d.page_tokens];
				const float *v = pool_ref + (size_t)page * page_stride +
						 (size_t)(layer * 2 + 1) * kv_stride + g * per_head +
						 (size_t)(p % d.page_tokens) * hd;
				for (int i = 0; i < hd; i++)
					oref[(size_t)r * n_heads * hd + qh * hd + i] += sc[p] / l * v[i];
			}
		}

	/* GPU */
	struct pk_step_batch bt;
	memset(&bt, 0, sizeof(bt));
	int bucket = one ? 1 : T + 3; /* padding rows must be no-ops */
	CK(cudaMalloc(&bt.n_tokens, 4));
	CK(cudaMalloc(&bt.tok_pos, 4 * 64));
	CK(cudaMalloc(&bt.tok_seq, 4 * 64));
	CK(cudaMalloc(&bt.page_table, 4 * (size_t)n_pages));
	CK(cudaMemcpy(bt.n_tokens, &T, 4, cudaMemcpyHostToDevice));
	CK(cudaMemcpy(bt.tok_pos, pos, 4 * T, cudaMemcpyHostToDevice));
	CK(cudaMemcpy(bt.tok_seq, seq, 4 * T, cudaMemcpyHostToDevice));
	CK(cudaMemcpy(bt.page_table, pt, 4 * (size_t)n_pages, cudaMemcpyHostToDevice));
	void *dpool = gt_upload(bf16, pool, pool_n);
	float *dqkv, *dq, *dinv, *ws_o, *ws_ml;
	int max_splits = pk_attn_max_splits(max_ctx);
	CK(cudaMalloc(&dqkv, 4 * (size_t)bucket * ncol));
	CK(cudaMemcpy(dqkv, qkv, 4 * (size_t)T * ncol, cudaMemcpyHostToDevice));
	CK(cudaMalloc(&dq, 4 * (size_t)bucket * n_heads * hd));
	CK(cudaMemset(dq, 0xff, 4 * (size_t)bucket * n_heads * hd));
	CK(cudaMalloc(&dinv, 4 * half));
	CK(cudaMemcpy(dinv, inv, 4 * half, cudaMemcpyHostToDevice));
	CK(cudaMalloc(&ws_o, 4 * (size_t)bucket * n_heads * max_splits * hd));
	CK(cudaMalloc(&ws_ml, 4 * (size_t)bucket * n_heads * max_splits * 2));
	void *db = gt_upload(bf16, b, ncol), *dqn = gt_upload(bf16, qn, hd), *dkn = gt_upload(bf16, kn, hd);
	void *dout;
	size_t es = bf16 ? 2 : 4;
	CK(cudaMalloc(&dout, es * bucket * n_heads * hd));
	CK(cudaMemset(dout, 0xff, es * bucket * n_heads * hd));
	d.attn_bias = bias;
	d.qk_norm = qk_norm;
	enum pk_step_dtype dt = bf16 ? PK_STEP_BF16 : PK_STEP_F32;
	CKR(pk_k_qkv_post(dt, &d, dqkv, bias ? db : NULL, qk_norm ? dqn : NULL, qk_norm ? dkn : NULL,
			  dinv, &bt, bucket, dpool, layer, dq, 1, 0));
	CKR(pk_k_attention(dt, &d, dq, dpool, layer, &bt, bucket, max_splits, ws_o, ws_ml, dout, 1,
			   0));
	CK(cudaDeviceSynchronize());
	float *q = (float *)malloc(4 * on), *o = (float *)malloc(4 * on), *pg = (float *)malloc(4 * pool_n);
	CK(cudaMemcpy(q, dq, 4 * on, cudaMemcpyDeviceToHost));
	gt_download(bf16, dout, o, on);
	gt_download(bf16, dpool, pg, pool_n);
	double *pref = (double *)malloc(8 * pool_n);
	for (size_t i = 0; i < pool_n; i++)
		pref[i] = pool_ref[i];
	char what[128];
	snprintf(what, sizeof(what), "qkv epilogue %s hd=%d G=%d%s%s: q", bf16 ? "bf16" : "f32", hd,
		 G, qk_norm ? " qknorm" : "", bias ? " bias" : "");
	report(what, gt_rel(q, qref, on), bf16 ? 5e-3 : 1e-4);
	snprintf(what, sizeof(what), "  paged KV append (whole pool, pages scrambled)");
	report(what, gt_rel(pg, pref, pool_n), bf16 ? 5e-3 : 1e-4);
	if (one)
		snprintf(what, sizeof(what),
			 "paged attention %s hd=%d %d/%d heads, one token ctx %d",
			 bf16 ? "bf16" : "f32", hd, n_heads, n_kv, p0 + 1);
	else
		snprintf(what, sizeof(what), "paged attention %s hd=%d ctx %d/%d..%d/%d",
			 bf16 ? "bf16" : "f32", hd, p0 + 1, p1 + 1, p1 + chunk, p2 + 1);
	report(what, gt_rel(o, oref, on), bf16 ? 1e-2 : 1e-4);
	cudaFree(bt.n_tokens);
	cudaFree(bt.tok_pos);
	cudaFree(bt.tok_seq);
	cudaFree(bt.page_table);
	cudaFree(dpool);
	cudaFree(dqkv);
	cudaFree(dq);
	cudaFree(dinv);
	cudaFree(ws_o);
	cudaFree(ws_ml);
	cudaFree(db);
	cudaFree(dqn);
	cudaFree(dkn);
	cudaFree(dout);
	free(perm);
	free(pool);
	free(pool_ref);
	free(qkv);
	free(b);
	free(qn);
	free(kn);
	free(qref);
	free(oref);
	free(sc);
	free(q);
	free(o);
	free(pg);
	free(pref);
}

static void test_swiglu(uint64_t *rng, int bf16, int inter, int rows)
{
	size_t n = (size_t)rows * inter;
	float *gu = (float *)malloc(8 * n), *o = (float *)malloc(4 * n);
	double *ref = (double *)malloc(8 * n);
	for (size_t i = 0; i < 2 * n; i++)
		gu[i] = gt_uni(rng) * 6;
	for (int r = 0; r < rows; r++)
		for (int c = 0; c < inter; c++) {
			double g = gu[(size_t)r * 2 * inter + c], u = gu[(size_t)r * 2 * inter + inter + c];
			ref[(size_t)r * inter + c] = g / (1 + exp(-g)) * u;
		}
	float *dgu;
	void *dout;
	CK(cudaMalloc(&dgu, 8 * n));
	CK(cudaMalloc(&dout, 4 * n));
	CK(cudaMemcpy(dgu, gu, 8 * n, cudaMemcpyHostToDevice));
	CKR(pk_k_swiglu(bf16 ? PK_STEP_BF16 : PK_STEP_F32, dgu, inter, rows, dout, 0));
	CK(cudaDeviceSynchronize());
	gt_download(bf16, dout, o, n);
	char what[64];
	snprintf(what, sizeof(what), "swiglu %s inter=%d rows=%d", bf16 ? "bf16" : "f32", inter, rows);
	report(what, gt_rel(o, ref, n), bf16 ? 5e-3 : 1e-5);
	cudaFree(dgu);
	cudaFree(dout);
	free(gu);
	free(o);
	free(ref);
}

static void test_embed(uint64_t *rng, int bf16, int vocab, int hidden, int rows, int bucket)
{
	float *e = (float *)malloc(4 * (size_t)vocab * hidden), *h = (float *)malloc(4 * (size_t)bucket * hidden);
	double *ref = (double *)calloc((size_t)bucket * hidden, 8);
	int32_t tok[64];
	for (size_t i = 0; i < (size_t)vocab * hidden; i++)
		e[i] = gt_round(bf16, gt_uni(rng));
	for (int r = 0; r < rows; r++) {
		tok[r] = (int32_t)(gt_rng_next(rng) % vocab);
		for (int i = 0; i < hidden; i++)
			ref[(size_t)r * hidden + i] = e[(size_t)tok[r] * hidden + i];
	}
	void *de = gt_upload(bf16, e, (size_t)vocab * hidden);
	int32_t *dt, *dn;
	float *dh;
	CK(cudaMalloc(&dt, 4 * 64));
	CK(cudaMalloc(&dn, 4));
	CK(cudaMalloc(&dh, 4 * (size_t)bucket * hidden));
	CK(cudaMemset(dh, 0xff, 4 * (size_t)bucket * hidden));
	CK(cudaMemcpy(dt, tok, 4 * rows, cudaMemcpyHostToDevice));
	CK(cudaMemcpy(dn, &rows, 4, cudaMemcpyHostToDevice));
	CKR(pk_k_embed(bf16 ? PK_STEP_BF16 : PK_STEP_F32, de, hidden, dt, dn, bucket, dh, NULL, 0, 0));
	CK(cudaDeviceSynchronize());
	CK(cudaMemcpy(h, dh, 4 * (size_t)bucket * hidden, cudaMemcpyDeviceToHost));
	char what[64];
	snprintf(what, sizeof(what), "embedding %s rows=%d/%d", bf16 ? "bf16" : "f32", rows, bucket);
	report(what, gt_rel(h, ref, (size_t)bucket * hidden), 0);
	cudaFree(de);
	cudaFree(dt);
	cudaFree(dn);
	cudaFree(dh);
	free(e);
	free(h);
	free(ref);
}

/* GPU sampler vs mdl_sample on the same logits, for a spread of parameters. */
static void test_sample(uint64_t *rng, int vocab)
{
	/* 12, 13: nearly flat logits (a random-weight model's), so one bin of zmax - z holds
	 * most of the vocabulary and the GPU narrows it by digits of the key; 14: all equal (the
	 * order is by id alone) */
	enum { NS = 15 };
	struct pk_sampling sp[NS];
	memset(sp, 0, sizeof(sp));
	float temps[NS] = {0, 0.7f, 1.0f, 0.9f, 1.2f, 1.0f, 1e-3f, 2.0f, 1.0f, 0.5f, 1.0f, 1.5f,
			   1.0f, 0.8f, 1.0f};
	int ks[NS] = {0, 0, 50, 0, 200, 0, 0, 1, 1000, 40, 0, 5, 0, 3000, 777};
	float ps[NS] = {1, 1, 1, 0.9f, 0.8f, 0.5f, 0.95f, 1, 0.99f, 0.3f, 0.999f, 0.7f, 1, 0.95f,
			0.9f};
	float *l = (float *)malloc(sizeof(float) * NS * vocab);
	for (int s = 0; s < NS; s++) {
		sp[s].temperature = temps[s];
		sp[s].top_k = ks[s];
		sp[s].top_p = ps[s];
		sp[s].seed = gt_rng_next(rng);
		sp[s].counter = gt_rng_next(rng) % 1000;
		float scale = s >= 12 ? 0.01f : s % 3 == 0 ? 8.0f : 3.0f;
		for (int i = 0; i < vocab; i++) {
			float v = gt_uni(rng) * scale;
			if (s == 5 || s == 10)
				v = roundf(v * 2) / 2; /* many exact ties */
			if (s == 14)
				v = 0.25f;
			l[(size_t)s * vocab + i] = v;
		}
	}
	struct pk_step_batch b;
	memset(&b, 0, sizeof(b));
	int32_t rows[NS], ns = NS;
	for (int s = 0; s < NS; s++)
		rows[s] = NS - 1 - s; /* row mapping is honoured */
	float *lperm = (float *)malloc(sizeof(float) * NS * vocab);
	for (int s = 0; s < NS; s++)
		memcpy(lperm + (size_t)rows[s] * vocab, l + (size_t)s * vocab, sizeof(float) * vocab);
	CK(cudaMalloc(&b.n_seqs, 4));
	CK(cudaMalloc(&b.seq_row, 4 * NS));
	CK(cudaMalloc(&b.samp, sizeof(sp)));
	CK(cudaMalloc(&b.out_token, 4 * NS));
	CK(cudaMalloc(&b.out_logprob, 4 * NS));
	CK(cudaMalloc(&b.logits, sizeof(float) * NS * vocab));
	void *ws;
	CK(cudaMalloc(&ws, pk_k_sample_scratch(vocab, NS)));
	CK(cudaMemcpy(b.n_seqs, &ns, 4, cudaMemcpyHostToDevice));
	CK(cudaMemcpy(b.seq_row, rows, 4 * NS, cudaMemcpyHostToDevice));
	CK(cudaMemcpy(b.samp, sp, sizeof(sp), cudaMemcpyHostToDevice));
	CK(cudaMemcpy(b.logits, lperm, sizeof(float) * NS * vocab, cudaMemcpyHostToDevice));
	CKR(pk_k_sample(&b, vocab, NS, ws, 1, 0));
	CK(cudaDeviceSynchronize());
	int32_t tok[NS];
	float lp[NS];
	CK(cudaMemcpy(tok, b.out_token, 4 * NS, cudaMemcpyDeviceToHost));
	CK(cudaMemcpy(lp, b.out_logprob, 4 * NS, cudaMemcpyDeviceToHost));
	struct mdl_sampler *sm;
	CKR(mdl_sampler_create(&sm, vocab));
	int same = 0;
	double lperr = 0;
	for (int s = 0; s < NS; s++) {
		struct mdl_sampling p = {sp[s].temperature, sp[s].top_k, sp[s].top_p, sp[s].seed};
		float rlp;
		int32_t t = mdl_sample(sm, l + (size_t)s * vocab, &p, sp[s].counter, &rlp);
		if (t == tok[s])
			same++;
		else
			printf("    case %d (T=%g k=%d p=%g): gpu %d cpu %d\n", s, temps[s], ks[s], ps[s],
			       tok[s], t);
		lperr = fmax(lperr, fabs((double)lp[s] - rlp) / fmax(1.0, fabs(rlp)));
	}
	mdl_sampler_destroy(sm);
	char what[96];
	snprintf(what, sizeof(what), "sampling vs mdl_sample, vocab %d: %d/%d same token", vocab, same, NS);
	report(what, (double)(NS - same), 0);
	report("  logprob (log_softmax of raw logits)", lperr, 1e-3);
	cudaFree(b.n_seqs);
	cudaFree(b.seq_row);
	cudaFree(b.samp);
	cudaFree(b.out_token);
	cudaFree(b.out_logprob);
	cudaFree(b.logits);
	cudaFree(ws);
	free(l);
	free(lperm);
}

/* The L2 prefetch reads nothing back and writes nothing: row heads of any length (rounded down
 * to 16 bytes, 0 = none) run without error and leave the memory as it was; a misaligned row or
 * a head over 64 KiB is refused. */
static void test_l2_prefetch(uint64_t *rng)
{
	size_t n = (3u << 20) + 4096;
	unsigned char *d = NULL, *h0 = (unsigned char *)malloc(n), *h1 = (unsigned char *)malloc(n);
	for (size_t i = 0; i < n; i++)
		h0[i] = (unsigned char)(gt_rng_next(rng) >> 56);
	CK(cudaMalloc(&d, n));
	CK(cudaMemcpy(d, h0, n, cudaMemcpyHostToDevice));
	/* rows, stride, bytes a row */
	size_t cases[][3] = {{0, 512, 512}, {100, 3072, 0}, {100, 3072, 15}, {1000, 3072, 17},
			     {17920 / 16, 2048, 512}, {3, 65536, 65536}, {7, 4096, 4096}};
	int bad = 0;
	for (size_t c = 0; c < sizeof(cases) / sizeof(cases[0]); c++) {
		bad |= pk_k_l2_prefetch(d, cases[c][0], cases[c][1], cases[c][2], 0) != 0;
		bad |= cudaDeviceSynchronize() != cudaSuccess;
	}
	bad |= pk_k_l2_prefetch(d + 8, 4, 512, 512, 0) != -EINVAL;
	bad |= pk_k_l2_prefetch(d, 4, 520, 512, 0) != -EINVAL;
	bad |= pk_k_l2_prefetch(d, 2, 1 << 20, 65552, 0) != -EINVAL;
	CK(cudaMemcpy(h1, d, n, cudaMemcpyDeviceToHost));
	bad |= memcmp(h0, h1, n) != 0;
	printf("  %-52s %s\n", "L2 prefetch: any length, memory unchanged", bad ? "FAIL" : "ok");
	failures += bad;
	cudaFree(d);
	free(h0);
	free(h1);
}

int main(void)
{
	gt_require_gpu("test_pk_kernels");
	uint64_t seed = getenv("PK_TEST_SEED") ? strtoull(getenv("PK_TEST_SEED"), NULL, 0)
					       : (uint64_t)time(NULL);
	uint64_t rng = seed;
	printf("test_pk_kernels: seed %llu (PK_TEST_SEED to repeat)\n", (unsigned long long)seed);
	cublasHandle_t hdl = NULL;
	void *ws = NULL;
	CK(cudaMalloc(&ws, 32u << 20));
	if (cublasCreate(&hdl) != CUBLAS_STATUS_SUCCESS) {
		fprintf(stderr, "cublasCreate failed\n");
		return 1;
	}
	cublasSetWorkspace(hdl, ws, 32u << 20);
	for (int bf16 = 0; bf16 < 2; bf16++) {
		test_embed(&rng, bf16, 1000, 256, 5, 8);
		test_gemm(&rng, bf16, 1003, 512, 1, 0, hdl);
		test_gemm(&rng, bf16, 777, 1024, 3, 0, hdl);
		test_gemm(&rng, bf16, 515, 2048, 8, 0, hdl);
		test_gemm(&rng, bf16, 640, 768, 17, 0, hdl);
		test_gemm(&rng, bf16, 640, 768, 4, 1, hdl);
		test_rmsnorm(&rng, bf16, 2048, 5, 8, 0);
		test_rmsnorm(&rng, bf16, 896, 7, 7, 1);
		test_rmsnorm(&rng, bf16, 4096, 3, 4, 0);
		test_swiglu(&rng, bf16, 1000, 3);
		test_attention(&rng, bf16, 64, 8, 2, 0, 0, 700, 300, 5, 3, 0);
		test_attention(&rng, bf16, 128, 12, 2, 0, 1, 255, 250, 9, 256, 0);
		test_attention(&rng, bf16, 128, 16, 2, 1, 0, 1000, 0, 17, 513, 0);
		test_attention(&rng, bf16, 256, 8, 1, 1, 1, 600, 31, 4, 0, 0);
		test_attention(&rng, bf16, 128, 8, 2, 1, 0, 2047, 1100, 3, 1025, 0);
		/* buckets of 16 and more: chunks of 256 (k_attn_gqa: 4 tiles a warp) */
		test_attention(&rng, bf16, 64, 8, 2, 0, 0, 1500, 700, 20, 900, 0);
		test_attention(&rng, bf16, 128, 12, 2, 0, 1, 1300, 400, 16, 77, 0);
		/* one token (max_ctx 2048: 32 splits; on a 132-SM GPU, f32 and head dim 256):
		 * one-head blocks, then two-head blocks (64 heads), then whole groups (56 heads,
		 * groups of 7); bf16 at head dim 64 and 128: k_attn_gqa, groups of 6, 4, 8, 7 */
		test_attention(&rng, bf16, 128, 12, 2, 0, 1, 511, 0, 0, 0, 1);
		test_attention(&rng, bf16, 64, 8, 2, 0, 0, 2047, 0, 0, 0, 1);
		test_attention(&rng, bf16, 256, 8, 1, 1, 0, 40, 0, 0, 0, 1);
		test_attention(&rng, bf16, 64, 64, 8, 0, 0, 1500, 0, 0, 0, 1);
		test_attention(&rng, bf16, 64, 56, 8, 1, 1, 1000, 0, 0, 0, 1);
	}
	test_skinny(&rng, PK_IN_X, PK_OUT_Y, 1000, 512, 1, 0);
	test_skinny(&rng, PK_IN_X, PK_OUT_Y, 333, 2048, 8, 0);
	test_skinny(&rng, PK_IN_X, PK_OUT_Y, 160, 256, 13, 0);
	test_skinny(&rng, PK_IN_NORM, PK_OUT_Y, 515, 1024, 5, 1);
	test_skinny(&rng, PK_IN_NORM, PK_OUT_Y, 300, 384, 16, 0);
	test_skinny(&rng, PK_IN_X, PK_OUT_ACC, 1000, 768, 3, 0);
	test_skinny(&rng, PK_IN_X, PK_OUT_ACC, 1001, 2048, 1, 0);
	test_skinny(&rng, PK_IN_NORM, PK_OUT_Y, 515, 1024, 2, 1);
	test_skinny(&rng, PK_IN_NORM, PK_OUT_Y, 999, 512, 1, 0);
	test_skinny(&rng, PK_IN_X, PK_OUT_ACC, 200, 4096, 16, 0);
	test_skinny(&rng, PK_IN_NORM, PK_OUT_SWIGLU, 700, 1024, 1, 0);
	test_skinny(&rng, PK_IN_NORM, PK_OUT_SWIGLU, 96, 2048, 11, 0);
	/* 2..16 tokens at the bench models' shapes: down projections (K 8960, 14336), an
	 * LM-head-sized N, N not a multiple of the 16-row blocks */
	test_skinny(&rng, PK_IN_X, PK_OUT_ACC, 1536, 8960, 8, 0);
	test_skinny(&rng, PK_IN_X, PK_OUT_ACC, 1003, 14336, 16, 0);
	test_skinny(&rng, PK_IN_X, PK_OUT_Y, 517, 5120, 7, 0);
	test_skinny(&rng, PK_IN_NORM, PK_OUT_SWIGLU, 2240, 1536, 9, 0);
	test_skinny(&rng, PK_IN_NORM, PK_OUT_Y, 20005, 1536, 4, 1);
	test_skinny(&rng, PK_IN_NORM, PK_OUT_Y, 3001, 4096, 16, 1);
	/* M = 1 with more rows than the streamed GEMV's warps (several rows a warp, row ends
	 * mid-ring) and K not a multiple of its 256-element slices */
	test_skinny(&rng, PK_IN_NORM, PK_OUT_Y, 9001, 256, 1, 1);
	test_skinny(&rng, PK_IN_X, PK_OUT_ACC, 4500, 1056, 1, 0);
	test_skinny(&rng, PK_IN_NORM, PK_OUT_SWIGLU, 5000, 800, 1, 0);
	test_skinny(&rng, PK_IN_X, PK_OUT_Y, 12000, 96, 1, 0);
	test_l2_prefetch(&rng);
	test_sample(&rng, 151936);
	test_sample(&rng, 1000);
	cublasDestroy(hdl);
	cudaFree(ws);
	return gt_result("test_pk_kernels", failures);
}
