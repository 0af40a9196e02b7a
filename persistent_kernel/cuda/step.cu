/* SPDX-License-Identifier: Apache-2.0 */
/*
 * persistent_kernel/cuda/step.cu: weight upload, buffers fixed at boot, and the step recorded as
 * a sequence of kernel launches (contract in step.h).
 */
#include <errno.h>
#include <math.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include <cublas_v2.h>
#include <cuda_runtime.h>

extern "C" {
#include "mdl.h"
}
#include "step.h"
#include "step_pvt.h"

struct pk_step {
	struct mdl_config cfg;
	struct pk_step_opts o;
	struct pk_dims d;
	size_t esz; /* storage element size */
	/* weights */
	void *embed, *final_norm, *lm_head;
	struct pk_layer_w *lw;
	float *inv_freq; /* head_dim/2 */
	size_t weight_bytes;
	/* KV pool */
	void *kv;
	int n_pages;
	size_t page_bytes;
	/* batch descriptor */
	struct pk_step_batch b;
	void *b_arena;
	/* scratch, sized for max_tokens rows */
	float *h, *delta, *qkv, *q, *gu, *ws_o, *ws_ml;
	void *samp_w; /* pk_k_sample_scratch: sampling weights and pass-1 partials */
	float *ss;        /* (max_tokens, ss_ld) partial sums of squares of h (fused path) */
	int ss_ld;
	int fused_ok;     /* shapes allow the tensor-core skinny path */
	int getenv_unfused; /* PK_STEP_UNFUSED=1: always the unfused path (A/B checks) */
	void *xn, *attn, *act, *xl;
	int max_splits;
	/* the batch-1 graph's side branch: L2 prefetch of each layer's gate/up row heads while
	 * its attention runs (fork_l2_prefetch) */
	size_t l2pf_bytes; /* per layer; 0: no side branch */
	cudaStream_t pf_st;
	cudaEvent_t pf_fork, pf_join;
	cublasHandle_t cublas;
	void *cublas_ws;
	/* upload staging */
	void *stage;
	size_t stage_bytes;
	size_t uploaded;
};

#define STAGE_BYTES (64u << 20)
#define CUBLAS_WS_BYTES (32u << 20)

/* snprintf into err (when err and errlen are non-zero): the "<what>: <problem>" of a failed
 * create. */
static void pk_set_err(char *err, size_t errlen, const char *fmt, ...)
	__attribute__((format(printf, 3, 4)));
static void pk_set_err(char *err, size_t errlen, const char *fmt, ...)
{
	va_list ap;
	if (!err || !errlen)
		return;
	va_start(ap, fmt);
	vsnprintf(err, errlen, fmt, ap);
	va_end(ap);
}

static int cu_fail(cudaError_t e, const char *what, char *err, size_t errlen)
{
	pk_set_err(err, errlen, "%s: %s", what, cudaGetErrorString(e));
	return e == cudaErrorMemoryAllocation ? -ENOMEM : -EIO;
}

static int dev_alloc(void **p, size_t n, char *err, size_t errlen, const char *what)
{
	cudaError_t e = cudaMalloc(p, n ? n : 16);
	if (e != cudaSuccess) {
		*p = NULL;
		return cu_fail(e, what, err, errlen);
	}
	return 0;
}

static void progress(struct pk_step *s, size_t add)
{
	size_t prev = s->uploaded;
	s->uploaded += add;
	if (!s->o.progress || !isatty(2) || !s->weight_bytes)
		return;
	int p0 = (int)(prev * 50 / s->weight_bytes), p1 = (int)(s->uploaded * 50 / s->weight_bytes);
	if (p0 == p1 && s->uploaded != s->weight_bytes)
		return;
	char bar[51];
	for (int i = 0; i < 50; i++)
		bar[i] = i < p1 ? '#' : '.';
	bar[50] = 0;
	fprintf(stderr, "\rweights -> GPU [%s] %zu/%zu MiB", bar, s->uploaded >> 20,
		s->weight_bytes >> 20);
	if (s->uploaded >= s->weight_bytes)
		fputc('\n', stderr);
}

/* Convert n elements of t starting at element off to the storage dtype into dst (host). */
static void convert(const struct pk_step *s, const struct mdl_tensor *t, size_t off, size_t n,
		    void *dst)
{
	enum mdl_dtype want = s->o.dtype == PK_STEP_BF16 ? MDL_BF16 : MDL_F32;
	if (t->dtype == want) {
		memcpy(dst, (const char *)t->data + off * s->esz, n * s->esz);
		return;
	}
	for (size_t i = 0; i < n; i++) {
		float v = mdl_tensor_get(t, off + i);
		if (want == MDL_BF16)
			((uint16_t *)dst)[i] = mdl_f32_to_bf16(v);
		else
			((float *)dst)[i] = v;
	}
}

/* Upload tensor t into device memory at dst (storage dtype), through the pinned stage. */
static int upload(struct pk_step *s, const struct mdl_tensor *t, void *dst, char *err,
		  size_t errlen)
{
	size_t n = mdl_tensor_numel(t), chunk = s->stage_bytes / s->esz;
	for (size_t off = 0; off < n; off += chunk) {
		size_t m = n - off < chunk ? n - off : chunk;
		convert(s, t, off, m, s->stage);
		cudaError_t e = cudaMemcpy((char *)dst + off * s->esz, s->stage, m * s->esz,
					   cudaMemcpyHostToDevice);
		if (e != cudaSuccess)
			return cu_fail(e, "weight upload", err, errlen);
		progress(s, m * s->esz);
	}
	return 0;
}

/* HF rotary inv_freq (fp32, as transformers computes it) with default/linear/llama3 scaling. */
static void rope_inv_freq(const struct mdl_config *c, float *out)
{
	int hd = c->head_dim;
	for (int i = 0; i < hd / 2; i++) {
		float expo = (float)(2 * i) / (float)hd;
		float f = 1.0f / (float)pow(c->rope.theta, (double)expo); /* as model/cpu.c, torch */
		if (c->rope.type == MDL_ROPE_LINEAR) {
			f /= c->rope.factor;
		} else if (c->rope.type == MDL_ROPE_LLAMA3) {
			float factor = c->rope.factor, lf = c->rope.low_freq_factor,
			      hf = c->rope.high_freq_factor;
			float old = (float)c->rope.original_max_pos;
			float low_wl = old / lf, high_wl = old / hf;
			float wl = 2.0f * (float)M_PI / f;
			float g = wl > low_wl ? f / factor : f;
			float smooth = (old / wl - lf) / (hf - lf);
			float sm = (1.0f - smooth) * g / factor + smooth * g;
			int medium = !(wl < high_wl) && !(wl > low_wl);
			f = medium ? sm : g;
		}
		out[i] = f;
	}
}

static int alloc_common(struct pk_step *s, const struct mdl_config *cfg,
			const struct pk_step_opts *o, char *err, size_t errlen)
{
	int rc;
	s->cfg = *cfg;
	s->o = *o;
	s->esz = o->dtype == PK_STEP_BF16 ? 2 : 4;
	if (o->page_tokens < 1 || o->max_tokens < 1 || o->max_seqs < 1 || o->max_ctx < 1 ||
	    o->max_logits < o->max_seqs) {
		pk_set_err(err, errlen, "pk_step: bad options (page_tokens, max_tokens, max_seqs, max_ctx "
			"must be >= 1, max_logits >= max_seqs)");
		return -EINVAL;
	}
	if (cfg->head_dim != 64 && cfg->head_dim != 128 && cfg->head_dim != 256) {
		pk_set_err(err, errlen, "pk_step: head_dim %d unsupported (64, 128, 256)", cfg->head_dim);
		return -EINVAL;
	}
	if (cfg->n_heads % cfg->n_kv_heads || cfg->n_heads / cfg->n_kv_heads > PK_ATTN_GMAX ||
	    cfg->hidden % 8 || cfg->intermediate % 8) {
		pk_set_err(err, errlen, "pk_step: unsupported shape (GQA group <= %d, hidden and "
			"intermediate multiples of 8)", PK_ATTN_GMAX);
		return -EINVAL;
	}
	struct pk_dims *d = &s->d;
	d->hidden = cfg->hidden;
	d->n_heads = cfg->n_heads;
	d->n_kv = cfg->n_kv_heads;
	d->head_dim = cfg->head_dim;
	d->inter = cfg->intermediate;
	d->vocab = cfg->vocab_size;
	d->page_tokens = o->page_tokens;
	d->max_pages = (o->max_ctx + o->page_tokens - 1) / o->page_tokens;
	d->n_layers = cfg->n_layers;
	d->eps = cfg->rms_eps;
	d->attn_bias = cfg->attn_bias;
	d->qk_norm = cfg->qk_norm;
	s->max_splits = pk_attn_max_splits(o->max_ctx);
	s->ss_ld = (cfg->hidden + 7) / 8;
	s->getenv_unfused = getenv("PK_STEP_UNFUSED") && atoi(getenv("PK_STEP_UNFUSED"));
	s->fused_ok = o->dtype == PK_STEP_BF16 && cfg->hidden % 32 == 0 &&
		      cfg->intermediate % 32 == 0 && (cfg->n_heads * cfg->head_dim) % 32 == 0;

	{
		/* at most a third of L2 a layer (Llama-3.1-8B's row heads: 14 MiB), or
		 * PK_STEP_L2PF MiB (0: off, for A/B) */
		int dev = 0, l2 = 0;
		const char *e = getenv("PK_STEP_L2PF");
		cudaGetDevice(&dev);
		cudaDeviceGetAttribute(&l2, cudaDevAttrL2CacheSize, dev);
		s->l2pf_bytes = e ? (size_t)atoi(e) << 20 : (size_t)l2 / 3;
		cudaError_t ce = cudaStreamCreateWithFlags(&s->pf_st, cudaStreamNonBlocking);
		if (ce == cudaSuccess)
			ce = cudaEventCreateWithFlags(&s->pf_fork, cudaEventDisableTiming);
		if (ce == cudaSuccess)
			ce = cudaEventCreateWithFlags(&s->pf_join, cudaEventDisableTiming);
		if (ce != cudaSuccess)
			return cu_fail(ce, "prefetch stream", err, errlen);
	}
	if (cublasCreate(&s->cublas) != CUBLAS_STATUS_SUCCESS) {
		pk_set_err(err, errlen, "cublasCreate failed (is libcublas installed and a GPU present?)");
		s->cublas = NULL;
		return -EIO;
	}
	if ((rc = dev_alloc(&s->cublas_ws, CUBLAS_WS_BYTES, err, errlen, "cublas workspace")))
		return rc;
	cublasSetWorkspace(s->cublas, s->cublas_ws, CUBLAS_WS_BYTES);

	/* batch descriptor: one arena, 256-byte aligned pieces */
	size_t T = o->max_tokens, S = o->max_seqs, L = o->max_logits, V = cfg->vocab_size;
	size_t sizes[] = {4, 4, 4, 4 * T, 4 * T, 4 * T, 4 * L, 4 * S, 4 * S * d->max_pages,
			  sizeof(struct pk_sampling) * S, 4 * S, 4 * S, 4 * L * V, 8};
	size_t total = 0;
	for (size_t i = 0; i < sizeof(sizes) / sizeof(sizes[0]); i++)
		total += (sizes[i] + 255) & ~(size_t)255;
	if ((rc = dev_alloc(&s->b_arena, total, err, errlen, "batch descriptor")))
		return rc;
	cudaMemset(s->b_arena, 0, total);
	char *p = (char *)s->b_arena;
	void **slots[] = {(void **)&s->b.n_tokens, (void **)&s->b.n_seqs, (void **)&s->b.n_logits,
			  (void **)&s->b.tok_id, (void **)&s->b.tok_pos, (void **)&s->b.tok_seq,
			  (void **)&s->b.logit_tok, (void **)&s->b.seq_row,
			  (void **)&s->b.page_table, (void **)&s->b.samp,
			  (void **)&s->b.out_token, (void **)&s->b.out_logprob,
			  (void **)&s->b.logits, (void **)&s->b.done};
	for (size_t i = 0; i < sizeof(sizes) / sizeof(sizes[0]); i++) {
		*slots[i] = p;
		p += (sizes[i] + 255) & ~(size_t)255;
	}

	/* scratch */
	size_t H = cfg->hidden, QKV = (size_t)(cfg->n_heads + 2 * cfg->n_kv_heads) * cfg->head_dim;
	size_t QD = (size_t)cfg->n_heads * cfg->head_dim, I = cfg->intermediate;
	size_t AD = QD > H ? QD : H;
	struct {
		void **p;
		size_t n;
		const char *what;
	} sc[] = {
		{(void **)&s->h, 4 * T * H, "scratch h"},
		{(void **)&s->delta, 4 * T * H, "scratch delta"},
		{(void **)&s->qkv, 4 * T * QKV, "scratch qkv"},
		{(void **)&s->q, 4 * T * QD, "scratch q"},
		{(void **)&s->gu, 4 * T * 2 * I, "scratch gate/up"},
		{(void **)&s->ws_o, 4 * T * cfg->n_heads * s->max_splits * cfg->head_dim, "attn ws"},
		{(void **)&s->ws_ml, 4 * T * cfg->n_heads * s->max_splits * 2, "attn ws"},
		{(void **)&s->samp_w, pk_k_sample_scratch((int)V, (int)S), "sampling scratch"},
		{(void **)&s->ss, 4 * T * ((H + 7) / 8), "norm partials"},
		{&s->xn, s->esz * T * H, "scratch xn"},
		{&s->attn, s->esz * T * AD, "scratch attn"},
		{&s->act, s->esz * T * I, "scratch act"},
		{&s->xl, s->esz * L * H, "scratch xl"},
	};
	for (size_t i = 0; i < sizeof(sc) / sizeof(sc[0]); i++)
		if ((rc = dev_alloc(sc[i].p, sc[i].n, err, errlen, sc[i].what)))
			return rc;
	/* padding rows of GEMM inputs must stay finite: zero all once */
	cudaMemset(s->xn, 0, s->esz * T * H);
	cudaMemset(s->attn, 0, s->esz * T * AD);
	cudaMemset(s->act, 0, s->esz * T * I);
	cudaMemset(s->xl, 0, s->esz * L * H);

	float inv[128];
	rope_inv_freq(cfg, inv);
	if ((rc = dev_alloc((void **)&s->inv_freq, sizeof(float) * cfg->head_dim / 2, err, errlen,
			    "rope table")))
		return rc;
	cudaMemcpy(s->inv_freq, inv, sizeof(float) * cfg->head_dim / 2, cudaMemcpyHostToDevice);

	s->lw = (struct pk_layer_w *)calloc(cfg->n_layers, sizeof(*s->lw));
	if (!s->lw) {
		pk_set_err(err, errlen, "out of host memory");
		return -ENOMEM;
	}
	/* weight bytes, for the progress bar and the floor */
	size_t per_layer = 2 * H + QKV * H + (cfg->attn_bias ? QKV : 0) +
			   (cfg->qk_norm ? 2 * cfg->head_dim : 0) + H * QD + 2 * I * H + H * I;
	s->weight_bytes = s->esz * ((size_t)cfg->n_layers * per_layer + V * H + H +
				    (cfg->tie_embeddings ? 0 : V * H));
	return 0;
}

static int alloc_weights(struct pk_step *s, char *err, size_t errlen)
{
	const struct mdl_config *c = &s->cfg;
	size_t H = c->hidden, QKV = (size_t)(c->n_heads + 2 * c->n_kv_heads) * c->head_dim;
	size_t QD = (size_t)c->n_heads * c->head_dim, I = c->intermediate, V = c->vocab_size;
	int rc;
	if ((rc = dev_alloc(&s->embed, s->esz * V * H, err, errlen, "embedding")) ||
	    (rc = dev_alloc(&s->final_norm, s->esz * H, err, errlen, "final norm")))
		return rc;
	if (c->tie_embeddings)
		s->lm_head = s->embed;
	else if ((rc = dev_alloc(&s->lm_head, s->esz * V * H, err, errlen, "lm_head")))
		return rc;
	for (int l = 0; l < c->n_layers; l++) {
		struct pk_layer_w *w = &s->lw[l];
		if ((rc = dev_alloc(&w->attn_norm, s->esz * H, err, errlen, "weights")) ||
		    (rc = dev_alloc(&w->wqkv, s->esz * QKV * H, err, errlen, "weights")) ||
		    (rc = dev_alloc(&w->wo, s->esz * H * QD, err, errlen, "weights")) ||
		    (rc = dev_alloc(&w->mlp_norm, s->esz * H, err, errlen, "weights")) ||
		    (rc = dev_alloc(&w->wgu, s->esz * 2 * I * H, err, errlen, "weights")) ||
		    (rc = dev_alloc(&w->wdown, s->esz * H * I, err, errlen, "weights")))
			return rc;
		if (c->attn_bias && (rc = dev_alloc(&w->bqkv, s->esz * QKV, err, errlen, "weights")))
			return rc;
		if (c->qk_norm && ((rc = dev_alloc(&w->qn, s->esz * c->head_dim, err, errlen, "weights")) ||
				   (rc = dev_alloc(&w->kn, s->esz * c->head_dim, err, errlen, "weights"))))
			return rc;
	}
	return 0;
}

static int alloc_kv(struct pk_step *s, char *err, size_t errlen)
{
	const struct mdl_config *c = &s->cfg;
	s->page_bytes = s->esz * (size_t)c->n_layers * 2 * c->n_kv_heads * s->o.page_tokens *
			c->head_dim;
	size_t budget = s->o.kv_bytes;
	if (!budget) {
		size_t fr = 0, tot = 0;
		cudaMemGetInfo(&fr, &tot);
		double f = s->o.gpu_mem_fraction > 0 ? s->o.gpu_mem_fraction : 0.9;
		budget = (size_t)((double)fr * f);
	}
	s->n_pages = (int)(budget / s->page_bytes);
	if (s->n_pages < 1) {
		pk_set_err(err, errlen, "KV pool: budget %zu bytes holds no page of %zu bytes (raise "
			"--kv-memory or --gpu-memory-fraction)", budget, s->page_bytes);
		return -ENOMEM;
	}
	return dev_alloc(&s->kv, (size_t)s->n_pages * s->page_bytes, err, errlen,
			 "KV pool (lower --kv-memory)");
}

extern "C" void pk_step_destroy(struct pk_step *s)
{
	if (!s)
		return;
	void *bufs[] = {s->ss, s->samp_w, s->h, s->delta, s->qkv, s->q, s->gu, s->ws_o,
			s->ws_ml, s->xn, s->attn, s->act, s->xl, s->inv_freq, s->kv, s->b_arena,
			s->cublas_ws, s->embed, s->final_norm};
	for (size_t i = 0; i < sizeof(bufs) / sizeof(bufs[0]); i++)
		if (bufs[i])
			cudaFree(bufs[i]);
	if (s->lm_head && s->lm_head != s->embed)
		cudaFree(s->lm_head);
	if (s->lw) {
		for (int l = 0; l < s->cfg.n_layers; l++) {
			struct pk_layer_w *w = &s->lw[l];
			void *lb[] = {w->attn_norm, w->wqkv, w->bqkv, w->qn, w->kn, w->wo,
				      w->mlp_norm, w->wgu, w->wdown};
			for (size_t i = 0; i < sizeof(lb) / sizeof(lb[0]); i++)
				if (lb[i])
					cudaFree(lb[i]);
		}
		free(s->lw);
	}
	if (s->stage)
		cudaFreeHost(s->stage);
	if (s->cublas)
		cublasDestroy(s->cublas);
	if (s->pf_join)
		cudaEventDestroy(s->pf_join);
	if (s->pf_fork)
		cudaEventDestroy(s->pf_fork);
	if (s->pf_st)
		cudaStreamDestroy(s->pf_st);
	free(s);
}

extern "C" int pk_step_create(struct pk_step **out, const struct mdl *m,
			      const struct pk_step_opts *o, char *err, size_t errlen)
{
	struct pk_step *s = (struct pk_step *)calloc(1, sizeof(*s));
	int rc;
	*out = NULL;
	if (!s) {
		pk_set_err(err, errlen, "out of host memory");
		return -ENOMEM;
	}
	if ((rc = alloc_common(s, &m->cfg, o, err, errlen)) || (rc = alloc_weights(s, err, errlen)))
		goto fail;
	{
		cudaError_t e = cudaHostAlloc(&s->stage, STAGE_BYTES, cudaHostAllocDefault);
		if (e != cudaSuccess) {
			s->stage = NULL;
			rc = cu_fail(e, "pinned staging buffer", err, errlen);
			goto fail;
		}
		s->stage_bytes = STAGE_BYTES;
	}
	{
		const struct mdl_config *c = &m->cfg;
		size_t H = c->hidden, qd = (size_t)c->n_heads * c->head_dim;
		size_t kd = (size_t)c->n_kv_heads * c->head_dim, I = c->intermediate;
		if ((rc = upload(s, &m->embed, s->embed, err, errlen)) ||
		    (rc = upload(s, &m->final_norm, s->final_norm, err, errlen)))
			goto fail;
		if (!c->tie_embeddings && (rc = upload(s, &m->lm_head, s->lm_head, err, errlen)))
			goto fail;
		for (int l = 0; l < c->n_layers; l++) {
			const struct mdl_layer *ml = &m->layers[l];
			struct pk_layer_w *w = &s->lw[l];
			char *qkv = (char *)w->wqkv, *gu = (char *)w->wgu;
			if ((rc = upload(s, &ml->attn_norm, w->attn_norm, err, errlen)) ||
			    (rc = upload(s, &ml->wq, qkv, err, errlen)) ||
			    (rc = upload(s, &ml->wk, qkv + s->esz * qd * H, err, errlen)) ||
			    (rc = upload(s, &ml->wv, qkv + s->esz * (qd + kd) * H, err, errlen)) ||
			    (rc = upload(s, &ml->wo, w->wo, err, errlen)) ||
			    (rc = upload(s, &ml->mlp_norm, w->mlp_norm, err, errlen)) ||
			    (rc = upload(s, &ml->w_gate, gu, err, errlen)) ||
			    (rc = upload(s, &ml->w_up, gu + s->esz * I * H, err, errlen)) ||
			    (rc = upload(s, &ml->w_down, w->wdown, err, errlen)))
				goto fail;
			if (c->attn_bias) {
				char *bb = (char *)w->bqkv;
				if ((rc = upload(s, &ml->bq, bb, err, errlen)) ||
				    (rc = upload(s, &ml->bk, bb + s->esz * qd, err, errlen)) ||
				    (rc = upload(s, &ml->bv, bb + s->esz * (qd + kd), err, errlen)))
					goto fail;
			}
			if (c->qk_norm && ((rc = upload(s, &ml->q_norm, w->qn, err, errlen)) ||
					   (rc = upload(s, &ml->k_norm, w->kn, err, errlen))))
				goto fail;
		}
	}
	cudaFreeHost(s->stage);
	s->stage = NULL;
	if ((rc = alloc_kv(s, err, errlen)))
		goto fail;
	*out = s;
	return 0;
fail:
	pk_step_destroy(s);
	return rc;
}

extern "C" int pk_step_create_random(struct pk_step **out, const struct mdl_config *cfg,
				     uint64_t seed, float scale, const struct pk_step_opts *o,
				     char *err, size_t errlen)
{
	struct pk_step *s = (struct pk_step *)calloc(1, sizeof(*s));
	int rc;
	*out = NULL;
	if (!s) {
		pk_set_err(err, errlen, "out of host memory");
		return -ENOMEM;
	}
	if ((rc = alloc_common(s, cfg, o, err, errlen)) || (rc = alloc_weights(s, err, errlen)))
		goto fail;
	{
		size_t H = cfg->hidden, QKV = (size_t)(cfg->n_heads + 2 * cfg->n_kv_heads) * cfg->head_dim;
		size_t QD = (size_t)cfg->n_heads * cfg->head_dim, I = cfg->intermediate;
		size_t V = cfg->vocab_size;
		uint64_t k = seed;
		enum pk_step_dtype dt = o->dtype;
		rc = pk_k_fill(dt, s->embed, V * H, ++k, scale, 0, 0);
		rc = rc ? rc : pk_k_fill(dt, s->final_norm, H, 0, 0, 1.0f, 0);
		if (!cfg->tie_embeddings)
			rc = rc ? rc : pk_k_fill(dt, s->lm_head, V * H, ++k, scale, 0, 0);
		for (int l = 0; l < cfg->n_layers && !rc; l++) {
			struct pk_layer_w *w = &s->lw[l];
			rc = pk_k_fill(dt, w->attn_norm, H, 0, 0, 1.0f, 0);
			rc = rc ? rc : pk_k_fill(dt, w->mlp_norm, H, 0, 0, 1.0f, 0);
			rc = rc ? rc : pk_k_fill(dt, w->wqkv, QKV * H, ++k, scale, 0, 0);
			rc = rc ? rc : pk_k_fill(dt, w->wo, H * QD, ++k, scale, 0, 0);
			rc = rc ? rc : pk_k_fill(dt, w->wgu, 2 * I * H, ++k, scale, 0, 0);
			rc = rc ? rc : pk_k_fill(dt, w->wdown, H * I, ++k, scale, 0, 0);
			if (w->bqkv)
				rc = rc ? rc : pk_k_fill(dt, w->bqkv, QKV, ++k, scale, 0, 0);
			if (w->qn)
				rc = rc ? rc : pk_k_fill(dt, w->qn, cfg->head_dim, 0, 0, 1.0f, 0);
			if (w->kn)
				rc = rc ? rc : pk_k_fill(dt, w->kn, cfg->head_dim, 0, 0, 1.0f, 0);
		}
		if (rc || cudaDeviceSynchronize() != cudaSuccess) {
			pk_set_err(err, errlen, "random weight fill failed");
			rc = -EIO;
			goto fail;
		}
	}
	if ((rc = alloc_kv(s, err, errlen)))
		goto fail;
	/* random KV content too: benchmarks must not read zeros or NaN garbage */
	rc = pk_k_fill(o->dtype, s->kv, (size_t)s->n_pages * s->page_bytes / s->esz, seed ^ 0x5a5a,
		       1.0f, 0, 0);
	if (rc || cudaDeviceSynchronize() != cudaSuccess) {
		pk_set_err(err, errlen, "KV fill failed");
		rc = -EIO;
		goto fail;
	}
	*out = s;
	return 0;
fail:
	pk_step_destroy(s);
	return rc;
}

extern "C" const struct pk_step_batch *pk_step_batch(const struct pk_step *s)
{
	return &s->b;
}

extern "C" int pk_step_n_pages(const struct pk_step *s)
{
	return s->n_pages;
}

extern "C" int pk_step_max_pages_per_seq(const struct pk_step *s)
{
	return s->d.max_pages;
}

extern "C" int pk_step_vocab(const struct pk_step *s)
{
	return s->d.vocab;
}

extern "C" size_t pk_step_weight_bytes(const struct pk_step *s)
{
	return s->weight_bytes;
}

extern "C" size_t pk_step_kv_bytes_per_token(const struct pk_step *s)
{
	return s->page_bytes / s->o.page_tokens;
}

extern "C" int pk_step_bucket(const struct pk_step *s, int n_tokens)
{
	if (n_tokens < 1 || n_tokens > s->o.max_tokens)
		return -EINVAL;
	int b = 1;
	while (b < n_tokens)
		b <<= 1;
	return b < s->o.max_tokens ? b : s->o.max_tokens;
}

/* The fused path's GEMV arguments (pk_skinny) for each matrix of layer l, M = bucket rows. */
static struct pk_skinny norm_in(const struct pk_step *s, const void *W, int N, const void *nw,
				int M, int n_parts)
{
	struct pk_skinny a;
	memset(&a, 0, sizeof(a));
	a.W = W, a.N = N, a.K = s->d.hidden, a.M = M;
	a.h = s->h, a.ldh = s->d.hidden, a.nw = nw, a.ss = s->ss, a.ss_ld = s->ss_ld;
	a.n_parts = n_parts, a.n_rows = s->b.n_tokens, a.eps = s->d.eps;
	return a;
}

static struct pk_skinny qkv_args(const struct pk_step *s, int l, int M, int n_parts)
{
	const struct pk_dims *d = &s->d;
	int QKV = (d->n_heads + 2 * d->n_kv) * d->head_dim;
	struct pk_skinny a = norm_in(s, s->lw[l].wqkv, QKV, s->lw[l].attn_norm, M, n_parts);
	a.y = s->qkv, a.ldy = QKV;
	return a;
}

static struct pk_skinny gu_args(const struct pk_step *s, int l, int M, int n_parts)
{
	struct pk_skinny a = norm_in(s, s->lw[l].wgu, s->d.inter, s->lw[l].mlp_norm, M, n_parts);
	a.act = s->act, a.ldact = s->d.inter;
	return a;
}

/* the residual add: y = h += W x, and the norm partials of the new h */
static struct pk_skinny acc_args(const struct pk_step *s, const void *W, int K, const void *x,
				 int M)
{
	struct pk_skinny a;
	memset(&a, 0, sizeof(a));
	a.W = W, a.N = s->d.hidden, a.K = K, a.M = M, a.x = x, a.ldx = K;
	a.y = s->h, a.ldy = s->d.hidden, a.ss_out = s->ss, a.ss_ld = s->ss_ld;
	return a;
}

/* The LM head over nl logit rows (fewer than the bucket's rows when only some tokens want
 * logits: gathered through logit_tok); n_parts: partials of the last residual add. */
static struct pk_skinny lm_args(const struct pk_step *s, int nl, int n_parts)
{
	struct pk_skinny a = norm_in(s, s->lm_head, s->d.vocab, s->final_norm, nl, n_parts);
	a.gather = s->b.logit_tok, a.n_rows = s->b.n_logits;
	a.y = s->b.logits, a.ldy = s->d.vocab;
	return a;
}

/* Side branch of the one-token step: once layer l's QKV GEMV is done, request into L2 the head
 * of every gate and up row (one k_gemv1 slice, 256 bf16 = 512 bytes, fewer when the rows would
 * take more than l2pf_bytes). The attention section that follows (k_qkv_post, attention, merge,
 * O GEMV, ~10 us a layer at Qwen2.5-1.5B's shape) reads almost nothing from DRAM: the prefetch
 * puts that idle bandwidth to work. Row heads, not the matrix's first rows: k_gemv1 walks each
 * row slice by slice with a ring of loads in flight, so one L2 hit in every row keeps its DRAM
 * stream going, whereas a block of L2-resident rows first drains the ring and then pays the
 * DRAM ramp again (H100, batch 1, against the first 12.5 MiB of rows: Qwen2.5-1.5B -2%,
 * Llama-3.2-1B -2.5%, Llama-3.1-8B -1.2%; see docs/gpu-step.md). The branch forks from the QKV
 * GEMV (a full edge: it starts when that grid is done, so it does not compete with the QKV
 * weights) and joins the main stream before k_done, so nothing of it crosses the step's end.
 * Not for larger buckets: their attention section is not idle (batch 8 measured slower). */
static int fork_l2_prefetch(struct pk_step *s, int l, cudaStream_t st)
{
	size_t rows = 2 * (size_t)s->d.inter, row = (size_t)s->d.hidden * s->esz;
	size_t n = s->l2pf_bytes / rows;
	n = n < 512 ? n : 512;
	n = n < row ? n : row;
	if (cudaEventRecord(s->pf_fork, st) != cudaSuccess ||
	    cudaStreamWaitEvent(s->pf_st, s->pf_fork, 0) != cudaSuccess)
		return -EIO;
	return pk_k_l2_prefetch(s->lw[l].wgu, rows, row, n, s->pf_st);
}

/* bf16 and bucket <= 16: the residual add lives in the O/down GEMM epilogues (which also leave
 * deterministic sum-of-squares partials), RMSNorm in the QKV/gate-up/LM-head GEMM prologues, and
 * SwiGLU in the gate-up epilogue: 6 kernels a layer (7 when a context needs split-K merging). */
static int record_fused(struct pk_step *s, int bucket, int nl, cudaStream_t st)
{
	const struct pk_dims *d = &s->d;
	const struct pk_step_batch *b = &s->b;
	enum pk_step_dtype dt = s->o.dtype;
	int H = d->hidden, QD = d->n_heads * d->head_dim, L = d->n_layers;
	int parts = pk_k_skinny_parts(H, bucket), rc;
	if ((rc = pk_k_embed(dt, s->embed, H, b->tok_id, b->n_tokens, bucket, s->h, s->ss, s->ss_ld,
			     st)))
		return rc;
	struct pk_skinny a;
	int pf = bucket == 1 && s->l2pf_bytes;
	for (int l = 0; l < L && !rc; l++) {
		const struct pk_layer_w *w = &s->lw[l];
		a = qkv_args(s, l, bucket, l ? parts : 1); /* the embedding wrote one partial */
		rc = pk_k_skinny(&a, PK_IN_NORM, PK_OUT_Y, st);
		rc = rc || !pf ? rc : fork_l2_prefetch(s, l, st);
		rc = rc ? rc : pk_k_qkv_post(dt, d, s->qkv, w->bqkv, w->qn, w->kn, s->inv_freq, b,
					     bucket, s->kv, l, s->q, 1, st);
		rc = rc ? rc : pk_k_attention(dt, d, s->q, s->kv, l, b, bucket, s->max_splits,
					      s->ws_o, s->ws_ml, s->attn, 1, st);
		a = acc_args(s, w->wo, QD, s->attn, bucket);
		rc = rc ? rc : pk_k_skinny(&a, PK_IN_X, PK_OUT_ACC, st);
		a = gu_args(s, l, bucket, parts);
		rc = rc ? rc : pk_k_skinny(&a, PK_IN_NORM, PK_OUT_SWIGLU, st);
		a = acc_args(s, w->wdown, d->inter, s->act, bucket);
		rc = rc ? rc : pk_k_skinny(&a, PK_IN_X, PK_OUT_ACC, st);
	}
	if (!rc) {
		a = lm_args(s, nl, L ? parts : 1);
		rc = pk_k_skinny(&a, PK_IN_NORM, PK_OUT_Y, st);
	}
	rc = rc ? rc : pk_k_sample(b, d->vocab, s->o.max_seqs, s->samp_w, 1, st);
	if (!rc && pf && L &&
	    (cudaEventRecord(s->pf_join, s->pf_st) != cudaSuccess ||
	     cudaStreamWaitEvent(st, s->pf_join, 0) != cudaSuccess))
		rc = -EIO;
	rc = rc ? rc : pk_k_done(b->done, st);
	return rc;
}

extern "C" const char *pk_step_path(const struct pk_step *s, int bucket)
{
	if (s->getenv_unfused)
		return "unfused";
	return s->fused_ok && bucket <= 16 ? "fused" : "unfused";
}

extern "C" int pk_step_record(struct pk_step *s, int bucket, cudaStream_t st)
{
	const struct pk_dims *d = &s->d;
	const struct pk_step_batch *b = &s->b;
	enum pk_step_dtype dt = s->o.dtype;
	int H = d->hidden, QD = d->n_heads * d->head_dim;
	int QKV = (d->n_heads + 2 * d->n_kv) * d->head_dim, I = d->inter;
	int nl = bucket < s->o.max_logits ? bucket : s->o.max_logits;
	int rc;
	if (bucket < 1 || bucket > s->o.max_tokens)
		return -EINVAL;
	if (cublasSetStream(s->cublas, st) != CUBLAS_STATUS_SUCCESS)
		return -EIO;
	if (!strcmp(pk_step_path(s, bucket), "fused"))
		return record_fused(s, bucket, nl, st);
	/* splits needed for this bucket's contexts are bounded by max_ctx */
	if ((rc = pk_k_embed(dt, s->embed, H, b->tok_id, b->n_tokens, bucket, s->h, NULL, 0, st)))
		return rc;
	for (int l = 0; l < d->n_layers; l++) {
		const struct pk_layer_w *w = &s->lw[l];
		rc = pk_k_rmsnorm(dt, s->h, l ? s->delta : NULL, w->attn_norm, H, d->eps, NULL,
				  b->n_tokens, bucket, s->xn, st);
		rc = rc ? rc : pk_k_gemm(s->cublas, dt, w->wqkv, QKV, H, s->xn, H, bucket, s->qkv,
					 QKV, 0, st);
		rc = rc ? rc : pk_k_qkv_post(dt, d, s->qkv, w->bqkv, w->qn, w->kn, s->inv_freq, b,
					     bucket, s->kv, l, s->q, 0, st);
		rc = rc ? rc : pk_k_attention(dt, d, s->q, s->kv, l, b, bucket, s->max_splits,
					      s->ws_o, s->ws_ml, s->attn, 0, st);
		rc = rc ? rc : pk_k_gemm(s->cublas, dt, w->wo, H, QD, s->attn, QD, bucket, s->delta,
					 H, 0, st);
		rc = rc ? rc : pk_k_rmsnorm(dt, s->h, s->delta, w->mlp_norm, H, d->eps, NULL,
					    b->n_tokens, bucket, s->xn, st);
		rc = rc ? rc : pk_k_gemm(s->cublas, dt, w->wgu, 2 * I, H, s->xn, H, bucket, s->gu,
					 2 * I, 0, st);
		rc = rc ? rc : pk_k_swiglu(dt, s->gu, I, bucket, s->act, st);
		rc = rc ? rc : pk_k_gemm(s->cublas, dt, w->wdown, H, I, s->act, I, bucket, s->delta,
					 H, 0, st);
		if (rc)
			return rc;
	}
	/* logit rows: gather, add the last layer's delta, final norm */
	rc = pk_k_rmsnorm(dt, s->h, s->delta, s->final_norm, H, d->eps, b->logit_tok, b->n_logits,
			  nl, s->xl, st);
	rc = rc ? rc : pk_k_gemm(s->cublas, dt, s->lm_head, d->vocab, H, s->xl, H, nl, b->logits,
				 d->vocab, 0, st);
	rc = rc ? rc : pk_k_sample(b, d->vocab, s->o.max_seqs, s->samp_w, 0, st);
	rc = rc ? rc : pk_k_done(b->done, st);
	return rc;
}

extern "C" int pk_step_graph(struct pk_step *s, int bucket, unsigned long long flags,
			     cudaStream_t st, cudaGraphExec_t *out)
{
	cudaGraph_t g = NULL;
	int rc;
	*out = NULL;
	if (cudaStreamBeginCapture(st, cudaStreamCaptureModeThreadLocal) != cudaSuccess)
		return -EIO;
	rc = pk_step_record(s, bucket, st);
	if (cudaStreamEndCapture(st, &g) != cudaSuccess || !g)
		return -EIO;
	if (!rc && cudaGraphInstantiateWithFlags(out, g, flags) != cudaSuccess)
		rc = -EIO;
	if (!rc && (flags & cudaGraphInstantiateFlagDeviceLaunch) &&
	    cudaGraphUpload(*out, st) != cudaSuccess)
		rc = -EIO;
	cudaGraphDestroy(g);
	if (rc && *out) {
		cudaGraphExecDestroy(*out);
		*out = NULL;
	}
	return rc;
}

extern "C" int pk_step_batch_upload(struct pk_step *s, const struct pk_step_host_batch *hb,
				    cudaStream_t st)
{
	const struct pk_step_opts *o = &s->o;
	int mp = s->d.max_pages;
	if (hb->n_tokens < 1 || hb->n_tokens > o->max_tokens || hb->n_seqs < 0 ||
	    hb->n_seqs > o->max_seqs || hb->n_logits < 0 || hb->n_logits > o->max_logits)
		return -EINVAL;
	/* every page a token's attention reads (positions 0 .. tok_pos), not only its own: the
	 * kernels index the pool with them. A token of the sequence just checked resumes where
	 * that check ended, so a prefill chunk costs its pages once. */
	int seq_done = -1, pages_done = 0;
	for (int i = 0; i < hb->n_tokens; i++) {
		if (hb->tok_id[i] < 0 || hb->tok_id[i] >= s->d.vocab || hb->tok_pos[i] < 0 ||
		    hb->tok_pos[i] >= o->max_ctx || hb->tok_seq[i] < 0 || hb->tok_seq[i] >= hb->n_seqs)
			return -EINVAL;
		const int32_t *pt = hb->page_table + (size_t)hb->tok_seq[i] * mp;
		int same = hb->tok_seq[i] == seq_done, np = hb->tok_pos[i] / o->page_tokens + 1;
		for (int p = same ? pages_done : 0; p < np; p++)
			if (pt[p] < 0 || pt[p] >= s->n_pages)
				return -EINVAL;
		pages_done = same && pages_done > np ? pages_done : np;
		seq_done = hb->tok_seq[i];
	}
	for (int i = 0; i < hb->n_logits; i++)
		if (hb->logit_tok[i] < 0 || hb->logit_tok[i] >= hb->n_tokens)
			return -EINVAL;
	for (int i = 0; i < hb->n_seqs; i++)
		if (hb->seq_row[i] >= hb->n_logits)
			return -EINVAL;
	const struct pk_step_batch *b = &s->b;
	cudaError_t e = cudaSuccess;
#define CP(dst, src, n)                                                                        \
	do {                                                                                   \
		if (e == cudaSuccess && (n) > 0)                                               \
			e = cudaMemcpyAsync((dst), (src), (n), cudaMemcpyHostToDevice, st);    \
	} while (0)
	CP(b->n_tokens, &hb->n_tokens, 4);
	CP(b->n_seqs, &hb->n_seqs, 4);
	CP(b->n_logits, &hb->n_logits, 4);
	CP(b->tok_id, hb->tok_id, 4 * (size_t)hb->n_tokens);
	CP(b->tok_pos, hb->tok_pos, 4 * (size_t)hb->n_tokens);
	CP(b->tok_seq, hb->tok_seq, 4 * (size_t)hb->n_tokens);
	CP(b->logit_tok, hb->logit_tok, 4 * (size_t)hb->n_logits);
	CP(b->seq_row, hb->seq_row, 4 * (size_t)hb->n_seqs);
	CP(b->page_table, hb->page_table, 4 * (size_t)hb->n_seqs * mp);
	CP(b->samp, hb->samp, sizeof(struct pk_sampling) * (size_t)hb->n_seqs);
#undef CP
	/* the copies read host memory that the caller may reuse: finish them */
	if (e == cudaSuccess)
		e = cudaStreamSynchronize(st);
	return e == cudaSuccess ? 0 : -EIO;
}
