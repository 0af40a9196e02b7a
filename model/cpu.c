/* SPDX-License-Identifier: Apache-2.0 */
/*
 * model/cpu.c: the reference forward pass (Llama / Qwen2 / Qwen3) in fp32 over a paged KV cache.
 *
 * Shape of one step: the tokens of every sequence in the batch are laid out back to back
 * (sequence 0's tokens, then sequence 1's, ...) as T rows; every projection is one GEMM over
 * those T rows, split by output feature across a small persistent thread pool. Attention is per
 * (token, head) pair, reading K/V from the pages named by the sequence's page table.
 *
 * Numerics follow Hugging Face transformers' eager modules in float32: RMSNorm as
 * w * (x * rsqrt(mean(x^2) + eps)), RoPE "rotate_half" on pairs (i, i + head_dim/2) with angles
 * pos * inv_freq rounded to fp32, softmax(q.k / sqrt(head_dim)) with the causal mask,
 * silu(gate) * up. Only the summation order of dot products differs (8-wide partial sums).
 */
#include <errno.h>
#include <math.h>
#include <pthread.h>
#include <stdbool.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "cpu.h"

#define unlikely(x) __builtin_expect(!!(x), 0)

/* 8 floats, loaded from any 4-byte aligned address. */
typedef float v8f __attribute__((vector_size(32), aligned(4)));

#if defined(__x86_64__) && defined(__GNUC__) && !defined(__clang__)
#define CPU_DISPATCH __attribute__((target_clones("arch=x86-64-v3", "default")))
#else
#define CPU_DISPATCH
#endif

#define GEMM_MBLOCK  32 /* tokens per pass over a weight block: X block stays in L2 */
#define MAX_JOBS_MIN 3

/* ---------------------------------------------------------------------------------------------
 * Thread pool: n-1 workers plus the calling thread. pool_run() hands every thread the same
 * function with its index; it returns when all have finished. Created at create, joined at
 * destroy; one mutex and two condition variables, no allocation per run.
 */
typedef void (*pool_fn)(void *arg, int tid, int nth);

struct pool {
	pthread_mutex_t mu;
	pthread_cond_t go;   /* workers wait here for a new generation */
	pthread_cond_t done; /* the caller waits here for pending == 0 */
	uint64_t gen;        /* bumped under mu by pool_run(); workers compare with what they saw */
	int pending;         /* workers still running the current generation; under mu */
	bool stop;           /* set under mu by pool_fini() */
	pool_fn fn;
	void *arg;
	int nth;
	pthread_t *th;
	int n_started;
};

struct worker_arg {
	struct pool *p;
	int tid;
};

static void *pool_main(void *a)
{
	struct worker_arg *wa = a;
	struct pool *p = wa->p;
	int tid = wa->tid;
	uint64_t seen = 0;

	for (;;) {
		pthread_mutex_lock(&p->mu);
		while (p->gen == seen && !p->stop)
			pthread_cond_wait(&p->go, &p->mu);
		if (p->stop) {
			pthread_mutex_unlock(&p->mu);
			return NULL;
		}
		seen = p->gen;
		pool_fn fn = p->fn;
		void *arg = p->arg;
		pthread_mutex_unlock(&p->mu);

		fn(arg, tid, p->nth);

		pthread_mutex_lock(&p->mu);
		if (--p->pending == 0)
			pthread_cond_signal(&p->done);
		pthread_mutex_unlock(&p->mu);
	}
}

static void pool_run(struct pool *p, pool_fn fn, void *arg)
{
	if (p->nth == 1) {
		fn(arg, 0, 1);
		return;
	}
	pthread_mutex_lock(&p->mu);
	p->fn = fn;
	p->arg = arg;
	p->pending = p->nth - 1;
	p->gen++;
	pthread_cond_broadcast(&p->go);
	pthread_mutex_unlock(&p->mu);

	fn(arg, 0, p->nth);

	pthread_mutex_lock(&p->mu);
	while (p->pending > 0)
		pthread_cond_wait(&p->done, &p->mu);
	pthread_mutex_unlock(&p->mu);
}

static void pool_fini(struct pool *p)
{
	if (p->th) {
		pthread_mutex_lock(&p->mu);
		p->stop = true;
		pthread_cond_broadcast(&p->go);
		pthread_mutex_unlock(&p->mu);
		for (int i = 0; i < p->n_started; i++)
			pthread_join(p->th[i], NULL);
	}
	free(p->th);
	p->th = NULL;
	pthread_cond_destroy(&p->done);
	pthread_cond_destroy(&p->go);
	pthread_mutex_destroy(&p->mu);
}

static int pool_init(struct pool *p, int nth, struct worker_arg *args)
{
	memset(p, 0, sizeof(*p));
	pthread_mutex_init(&p->mu, NULL);
	pthread_cond_init(&p->go, NULL);
	pthread_cond_init(&p->done, NULL);
	p->nth = nth;
	if (nth == 1)
		return 0;
	p->th = calloc((size_t)nth - 1, sizeof(*p->th));
	if (!p->th)
		return -ENOMEM;
	for (int i = 1; i < nth; i++) {
		args[i].p = p;
		args[i].tid = i;
		int rc = pthread_create(&p->th[i - 1], NULL, pool_main, &args[i]);
		if (rc)
			return -rc;
		p->n_started++;
	}
	return 0;
}

/* ---------------------------------------------------------------------------------------------
 * GEMM: Y[m, n] (+)= X[m, k] . W[n, k]^T (+ b[n]). Both operands are row-major along k, so every
 * output is a dot product of two contiguous rows. Blocked as 4 weight rows x 2 tokens with 8-wide
 * accumulators (14 registers with AVX2), tokens in blocks of GEMM_MBLOCK so a weight block is
 * read from memory once per token block.
 */
struct gemm {
	const float *x; /* (m, ldx) */
	const float *w; /* (n, k) */
	const float *b; /* (n) or NULL */
	float *y;       /* (m, ldy) */
	int m, n, k, ldx, ldy;
	bool accumulate; /* y += instead of y = */
};

static inline float hsum8(const v8f *p)
{
	v8f v = *p;
	return ((v[0] + v[4]) + (v[1] + v[5])) + ((v[2] + v[6]) + (v[3] + v[7]));
}

/* Outputs for weight rows j..j+nj-1 (nj <= 4) and tokens i..i+ni-1 (ni <= 2). */
CPU_DISPATCH
static void gemm_tile(const struct gemm *g, int i, int ni, int j, int nj)
{
	const int k = g->k;
	const int k8 = k & ~7;
	const float *xr[2], *wr[4];
	for (int a = 0; a < 2; a++)
		xr[a] = g->x + (size_t)(i + (a < ni ? a : 0)) * g->ldx;
	for (int c = 0; c < 4; c++)
		wr[c] = g->w + (size_t)(j + (c < nj ? c : 0)) * k;

	v8f acc[2][4];
	memset(acc, 0, sizeof(acc));
	for (int t = 0; t < k8; t += 8) {
		v8f x0 = *(const v8f *)(xr[0] + t);
		v8f x1 = *(const v8f *)(xr[1] + t);
		for (int c = 0; c < 4; c++) {
			v8f w = *(const v8f *)(wr[c] + t);
			acc[0][c] += x0 * w;
			acc[1][c] += x1 * w;
		}
	}
	for (int a = 0; a < ni; a++) {
		float *yr = g->y + (size_t)(i + a) * g->ldy;
		for (int c = 0; c < nj; c++) {
			float s = hsum8(&acc[a][c]);
			for (int t = k8; t < k; t++)
				s += xr[a][t] * wr[c][t];
			if (g->b)
				s += g->b[j + c];
			yr[j + c] = g->accumulate ? yr[j + c] + s : s;
		}
	}
}

static void gemm_range(const struct gemm *g, int n0, int n1)
{
	for (int i0 = 0; i0 < g->m; i0 += GEMM_MBLOCK) {
		int i1 = i0 + GEMM_MBLOCK < g->m ? i0 + GEMM_MBLOCK : g->m;
		for (int j = n0; j < n1; j += 4) {
			int nj = n1 - j < 4 ? n1 - j : 4;
			for (int i = i0; i < i1; i += 2)
				gemm_tile(g, i, i1 - i < 2 ? i1 - i : 2, j, nj);
		}
	}
}

/* This thread's share [*n0, *n1) of n outputs, in multiples of 4. */
static void split_range(int n, int tid, int nth, int *n0, int *n1)
{
	int per = ((n + nth - 1) / nth + 3) & ~3;
	int a = per * tid, b = a + per;
	*n0 = a < n ? a : n;
	*n1 = b < n ? b : n;
}

/* ---------------------------------------------------------------------------------------------
 * The model.
 */
struct cpu_layer {
	const float *attn_norm, *wq, *wk, *wv, *wo, *bq, *bk, *bv, *q_norm, *k_norm;
	const float *mlp_norm, *w_gate, *w_up, *w_down;
};

struct mdl_cpu {
	struct mdl_config cfg;
	struct mdl_cpu_opts o;
	const struct mdl *m; /* borrowed: embeddings are read through it */
	struct cpu_layer *layers;
	const float *final_norm;
	const float *lm_head; /* (vocab, hidden) */
	float *inv_freq;      /* (head_dim/2) after rope scaling */

	void **owned; /* every buffer converted at create */
	int n_owned, cap_owned;

	float *kv;      /* (n_pages, n_layers, 2, n_kv_heads, page_tokens, head_dim) */
	size_t page_sz; /* floats per page */
	int max_ctx;    /* longest context a step can attend over */

	/* step scratch, T = max_tokens rows */
	float *x, *xn;     /* (T, hidden) residual stream, normed input */
	float *q, *att;    /* (T, n_heads*head_dim) */
	float *k, *v;      /* (T, n_kv_heads*head_dim) */
	float *gate, *up;  /* (T, intermediate) */
	float *rope;       /* (T, head_dim/2, 2) cos, sin */
	float *scores;     /* (n_threads, max_ctx) */
	int32_t *tok_pos;  /* (T) */
	int32_t *tok_seq;  /* (T) */
	struct gemm *jobs; /* max(3, max_seqs) */

	/* the current step, read by workers */
	const struct mdl_cpu_seq *seqs;
	int n_tok;
	int layer;
	int n_jobs;
	bool swiglu;

	struct pool pool;
	struct worker_arg *wargs;
};

static int own(struct mdl_cpu *c, void *p)
{
	if (c->n_owned == c->cap_owned) {
		int cap = c->cap_owned ? 2 * c->cap_owned : 64;
		void **n = realloc(c->owned, (size_t)cap * sizeof(*n));
		if (!n)
			return -ENOMEM;
		c->owned = n;
		c->cap_owned = cap;
	}
	c->owned[c->n_owned++] = p;
	return 0;
}

/* Row conversion of n elements of t starting at element off into dst. */
static void convert(float *dst, const struct mdl_tensor *t, size_t off, size_t n)
{
	switch (t->dtype) {
	case MDL_F32:
		memcpy(dst, (const float *)t->data + off, n * 4);
		break;
	case MDL_BF16: {
		const uint16_t *s = (const uint16_t *)t->data + off;
		for (size_t i = 0; i < n; i++) {
			uint32_t u = (uint32_t)s[i] << 16;
			memcpy(&dst[i], &u, 4);
		}
		break;
	}
	case MDL_F16: {
		const uint16_t *s = (const uint16_t *)t->data + off;
		for (size_t i = 0; i < n; i++)
			dst[i] = mdl_f16_to_f32(s[i]);
		break;
	}
	}
}

/* t as fp32: borrowed when it already is fp32 and 4-byte aligned, else converted into a new
 * buffer. -EINVAL when absent, of the wrong size or of an unknown dtype. */
static int load_w(struct mdl_cpu *c, const struct mdl_tensor *t, size_t numel, const float **out)
{
	if (!t->data || mdl_dtype_size(t->dtype) == 0 || mdl_tensor_numel(t) != numel ||
	    t->nbytes < numel * mdl_dtype_size(t->dtype))
		return -EINVAL;
	if (t->dtype == MDL_F32 && ((uintptr_t)t->data & 3) == 0) {
		*out = t->data;
		return 0;
	}
	float *buf = malloc(numel * sizeof(float));
	if (!buf)
		return -ENOMEM;
	if (own(c, buf)) {
		free(buf);
		return -ENOMEM;
	}
	convert(buf, t, 0, numel);
	*out = buf;
	return 0;
}

/* HF ROPE_INIT_FUNCTIONS: default, linear, llama3 (_compute_llama3_parameters). inv_freq is the
 * fp32 value transformers computes; the scaled values are derived from it in fp32 like torch. */
static int rope_init(struct mdl_cpu *c)
{
	const struct mdl_config *cf = &c->cfg;
	const struct mdl_rope *r = &cf->rope;
	int half = cf->head_dim / 2;
	c->inv_freq = malloc((size_t)half * sizeof(float));
	if (!c->inv_freq)
		return -ENOMEM;
	if (r->theta <= 0)
		return -EINVAL;
	for (int i = 0; i < half; i++) {
		float e = (float)(2 * i) / (float)cf->head_dim;
		c->inv_freq[i] = 1.0f / (float)pow(r->theta, (double)e);
	}
	switch (r->type) {
	case MDL_ROPE_DEFAULT:
		break;
	case MDL_ROPE_LINEAR:
		if (!(r->factor > 0))
			return -EINVAL;
		for (int i = 0; i < half; i++)
			c->inv_freq[i] /= r->factor;
		break;
	case MDL_ROPE_LLAMA3: {
		if (!(r->factor > 0) || r->original_max_pos <= 0 ||
		    !(r->high_freq_factor > r->low_freq_factor))
			return -EINVAL;
		float old = (float)r->original_max_pos;
		float low_wl = old / r->low_freq_factor;
		float high_wl = old / r->high_freq_factor;
		for (int i = 0; i < half; i++) {
			float f = c->inv_freq[i];
			float wl = 2.0f * (float)M_PI / f;
			float fl = wl > low_wl ? f / r->factor : f;
			if (!(wl < high_wl) && !(wl > low_wl)) {
				float s = (old / wl - r->low_freq_factor) /
				          (r->high_freq_factor - r->low_freq_factor);
				fl = (1.0f - s) * fl / r->factor + s * fl;
			}
			c->inv_freq[i] = fl;
		}
		break;
	}
	default:
		return -EINVAL;
	}
	return 0;
}

static int check_cfg(const struct mdl_config *cf)
{
	if (cf->vocab_size <= 0 || cf->hidden <= 0 || cf->intermediate <= 0 || cf->n_layers <= 0 ||
	    cf->n_heads <= 0 || cf->n_kv_heads <= 0 || cf->n_heads % cf->n_kv_heads ||
	    cf->head_dim <= 0 || cf->head_dim % 2 || cf->max_pos <= 0 || !(cf->rms_eps >= 0))
		return -EINVAL;
	return 0;
}

static int load_layer(struct mdl_cpu *c, const struct mdl_layer *L, struct cpu_layer *o)
{
	const struct mdl_config *cf = &c->cfg;
	size_t h = (size_t)cf->hidden, f = (size_t)cf->intermediate, hd = (size_t)cf->head_dim;
	size_t qd = (size_t)cf->n_heads * hd, kvd = (size_t)cf->n_kv_heads * hd;
	int rc = 0;

	rc = rc ? rc : load_w(c, &L->attn_norm, h, &o->attn_norm);
	rc = rc ? rc : load_w(c, &L->wq, qd * h, &o->wq);
	rc = rc ? rc : load_w(c, &L->wk, kvd * h, &o->wk);
	rc = rc ? rc : load_w(c, &L->wv, kvd * h, &o->wv);
	rc = rc ? rc : load_w(c, &L->wo, h * qd, &o->wo);
	if (cf->attn_bias) {
		rc = rc ? rc : load_w(c, &L->bq, qd, &o->bq);
		rc = rc ? rc : load_w(c, &L->bk, kvd, &o->bk);
		rc = rc ? rc : load_w(c, &L->bv, kvd, &o->bv);
	}
	if (cf->qk_norm) {
		rc = rc ? rc : load_w(c, &L->q_norm, hd, &o->q_norm);
		rc = rc ? rc : load_w(c, &L->k_norm, hd, &o->k_norm);
	}
	rc = rc ? rc : load_w(c, &L->mlp_norm, h, &o->mlp_norm);
	rc = rc ? rc : load_w(c, &L->w_gate, f * h, &o->w_gate);
	rc = rc ? rc : load_w(c, &L->w_up, f * h, &o->w_up);
	rc = rc ? rc : load_w(c, &L->w_down, h * f, &o->w_down);
	return rc;
}

static void *zalloc(size_t n, int *rc)
{
	void *p = calloc(n ? n : 1, 1);
	if (!p)
		*rc = -ENOMEM;
	return p;
}

void mdl_cpu_destroy(struct mdl_cpu *c)
{
	if (!c)
		return;
	if (c->wargs)
		pool_fini(&c->pool);
	for (int i = 0; i < c->n_owned; i++)
		free(c->owned[i]);
	free(c->owned);
	free(c->layers);
	free(c->inv_freq);
	free(c->kv);
	free(c->x);
	free(c->xn);
	free(c->q);
	free(c->att);
	free(c->k);
	free(c->v);
	free(c->gate);
	free(c->up);
	free(c->rope);
	free(c->scores);
	free(c->tok_pos);
	free(c->tok_seq);
	free(c->jobs);
	free(c->wargs);
	free(c);
}

int mdl_cpu_create(struct mdl_cpu **out, const struct mdl *m, const struct mdl_cpu_opts *o)
{
	*out = NULL;
	if (!m || !o || o->n_pages <= 0 || o->page_tokens <= 0 || o->max_tokens <= 0 ||
	    o->max_seqs <= 0 || o->n_threads < 0)
		return -EINVAL;
	int rc = check_cfg(&m->cfg);
	if (rc)
		return rc;

	struct mdl_cpu *c = calloc(1, sizeof(*c));
	if (!c)
		return -ENOMEM;
	c->cfg = m->cfg;
	c->o = *o;
	c->m = m;
	const struct mdl_config *cf = &c->cfg;
	if (c->o.n_threads == 0) {
		long n = sysconf(_SC_NPROCESSORS_ONLN);
		c->o.n_threads = n > 0 ? (int)(n < 256 ? n : 256) : 1;
	}

	size_t h = (size_t)cf->hidden, hd = (size_t)cf->head_dim, V = (size_t)cf->vocab_size;
	size_t T = (size_t)o->max_tokens;
	size_t qd = (size_t)cf->n_heads * hd, kvd = (size_t)cf->n_kv_heads * hd;

	/* embeddings are read row by row through m; only their size is checked here */
	if (!m->embed.data || mdl_dtype_size(m->embed.dtype) == 0 ||
	    mdl_tensor_numel(&m->embed) != V * h ||
	    m->embed.nbytes < V * h * mdl_dtype_size(m->embed.dtype)) {
		rc = -EINVAL;
		goto out;
	}
	c->layers = zalloc((size_t)cf->n_layers * sizeof(*c->layers), &rc);
	if (rc)
		goto out;
	for (int l = 0; l < cf->n_layers && !rc; l++)
		rc = load_layer(c, &m->layers[l], &c->layers[l]);
	rc = rc ? rc : load_w(c, &m->final_norm, h, &c->final_norm);
	if (rc)
		goto out;
	rc = load_w(c, cf->tie_embeddings ? &m->embed : &m->lm_head, V * h, &c->lm_head);
	rc = rc ? rc : rope_init(c);
	if (rc)
		goto out;

	c->max_ctx = cf->max_pos;
	if ((int64_t)o->n_pages * o->page_tokens < c->max_ctx)
		c->max_ctx = o->n_pages * o->page_tokens;
	c->page_sz = (size_t)cf->n_layers * 2 * kvd * (size_t)o->page_tokens;

	int nth = c->o.n_threads;
	size_t njobs = (size_t)(o->max_seqs > MAX_JOBS_MIN ? o->max_seqs : MAX_JOBS_MIN);
	c->kv = zalloc((size_t)o->n_pages * c->page_sz * sizeof(float), &rc);
	c->x = zalloc(T * h * sizeof(float), &rc);
	c->xn = zalloc(T * h * sizeof(float), &rc);
	c->q = zalloc(T * qd * sizeof(float), &rc);
	c->att = zalloc(T * qd * sizeof(float), &rc);
	c->k = zalloc(T * kvd * sizeof(float), &rc);
	c->v = zalloc(T * kvd * sizeof(float), &rc);
	c->gate = zalloc(T * (size_t)cf->intermediate * sizeof(float), &rc);
	c->up = zalloc(T * (size_t)cf->intermediate * sizeof(float), &rc);
	c->rope = zalloc(T * hd * sizeof(float), &rc);
	c->scores = zalloc((size_t)nth * (size_t)c->max_ctx * sizeof(float), &rc);
	c->tok_pos = zalloc(T * sizeof(int32_t), &rc);
	c->tok_seq = zalloc(T * sizeof(int32_t), &rc);
	c->jobs = zalloc(njobs * sizeof(struct gemm), &rc);
	c->wargs = zalloc((size_t)nth * sizeof(struct worker_arg), &rc);
	if (rc)
		goto out;
	rc = pool_init(&c->pool, nth, c->wargs);
out:
	if (rc) {
		mdl_cpu_destroy(c);
		return rc;
	}
	*out = c;
	return 0;
}

/* ---------------------------------------------------------------------------------------------
 * The step.
 */
static void rmsnorm(float *y, const float *x, const float *w, int n, float eps)
{
	float ss = 0;
	for (int i = 0; i < n; i++)
		ss += x[i] * x[i];
	float r = 1.0f / sqrtf(ss / (float)n + eps);
	for (int i = 0; i < n; i++)
		y[i] = w[i] * (x[i] * r);
}

/* rotate_half: (a, b) = (x[i], x[i+half]) -> (a cos - b sin, b cos + a sin). */
static void rope_apply(float *x, const float *cs, int half)
{
	for (int i = 0; i < half; i++) {
		float a = x[i], b = x[i + half];
		float co = cs[2 * i], si = cs[2 * i + 1];
		x[i] = a * co - b * si;
		x[i + half] = b * co + a * si;
	}
}

static void job_gemms(void *arg, int tid, int nth)
{
	struct mdl_cpu *c = arg;
	for (int j = 0; j < c->n_jobs; j++) {
		const struct gemm *g = &c->jobs[j];
		int n0, n1;
		split_range(g->n, tid, nth, &n0, &n1);
		gemm_range(g, n0, n1);
	}
	if (c->swiglu) { /* jobs 0 and 1 are gate and up over the same n: finish this slice */
		const struct gemm *g = &c->jobs[0];
		int n0, n1;
		split_range(g->n, tid, nth, &n0, &n1);
		for (int i = 0; i < g->m; i++) {
			float *gr = g->y + (size_t)i * g->ldy;
			const float *ur = c->jobs[1].y + (size_t)i * g->ldy;
			for (int j = n0; j < n1; j++)
				gr[j] = gr[j] / (1.0f + expf(-gr[j])) * ur[j];
		}
	}
}

static void run_gemms(struct mdl_cpu *c, int n_jobs, bool swiglu)
{
	c->n_jobs = n_jobs;
	c->swiglu = swiglu;
	pool_run(&c->pool, job_gemms, c);
}

static inline float *kv_at(struct mdl_cpu *c, int page, int layer, int which, int kvh, int slot)
{
	const struct mdl_config *cf = &c->cfg;
	size_t pt = (size_t)c->o.page_tokens, hd = (size_t)cf->head_dim;
	return c->kv + (size_t)page * c->page_sz +
	       ((((size_t)layer * 2 + (size_t)which) * (size_t)cf->n_kv_heads + (size_t)kvh) * pt +
	        (size_t)slot) *
	           hd;
}

/* Attention for (token, head) pairs [a, b): softmax(q.K / sqrt(hd)) . V over positions 0..pos. */
static void job_attention(void *arg, int tid, int nth)
{
	struct mdl_cpu *c = arg;
	const struct mdl_config *cf = &c->cfg;
	const int hd = cf->head_dim, nh = cf->n_heads, grp = cf->n_heads / cf->n_kv_heads;
	const int pt = c->o.page_tokens, l = c->layer;
	const float scale = 1.0f / sqrtf((float)hd);
	float *sc = c->scores + (size_t)tid * (size_t)c->max_ctx;
	int items = c->n_tok * nh;
	int per = (items + nth - 1) / nth;
	int a = per * tid, b = a + per < items ? a + per : items;

	for (int it = a; it < b; it++) {
		int t = it / nh, h = it % nh, kvh = h / grp;
		const struct mdl_cpu_seq *s = &c->seqs[c->tok_seq[t]];
		int pos = c->tok_pos[t];
		const float *q = c->q + (size_t)t * nh * hd + (size_t)h * hd;
		float *o = c->att + (size_t)t * nh * hd + (size_t)h * hd;

		float mx = -INFINITY;
		for (int p = 0; p <= pos; p++) {
			const float *kr = kv_at(c, s->pages[p / pt], l, 0, kvh, p % pt);
			float d = 0;
			for (int i = 0; i < hd; i++)
				d += q[i] * kr[i];
			d *= scale;
			sc[p] = d;
			mx = d > mx ? d : mx;
		}
		float sum = 0;
		for (int p = 0; p <= pos; p++) {
			sc[p] = expf(sc[p] - mx);
			sum += sc[p];
		}
		float inv = 1.0f / sum;
		memset(o, 0, (size_t)hd * sizeof(float));
		for (int p = 0; p <= pos; p++) {
			const float *vr = kv_at(c, s->pages[p / pt], l, 1, kvh, p % pt);
			float w = sc[p] * inv;
			for (int i = 0; i < hd; i++)
				o[i] += w * vr[i];
		}
	}
}

static int validate(const struct mdl_cpu *c, const struct mdl_cpu_seq *seqs, int n_seqs)
{
	const struct mdl_config *cf = &c->cfg;
	const int pt = c->o.page_tokens;
	if (n_seqs < 0 || n_seqs > c->o.max_seqs || (n_seqs > 0 && !seqs))
		return -EINVAL;
	int64_t total = 0;
	for (int i = 0; i < n_seqs; i++) {
		const struct mdl_cpu_seq *s = &seqs[i];
		if (s->n_tokens < 0 || s->pos0 < 0 || s->n_logits < 0 || s->n_logits > s->n_tokens)
			return -EINVAL;
		if (s->n_logits > 0 && !s->logits)
			return -EINVAL;
		if (s->n_tokens == 0)
			continue;
		if (!s->tokens || !s->pages)
			return -EINVAL;
		total += s->n_tokens;
		if (total > c->o.max_tokens)
			return -EINVAL;
		int64_t end = (int64_t)s->pos0 + s->n_tokens; /* one past the last position */
		if (end > cf->max_pos || end > c->max_ctx)
			return -EINVAL;
		for (int t = 0; t < s->n_tokens; t++)
			if (s->tokens[t] < 0 || s->tokens[t] >= cf->vocab_size)
				return -EINVAL;
		int n_pg = (int)((end + pt - 1) / pt);
		for (int p = 0; p < n_pg; p++)
			if (s->pages[p] < 0 || s->pages[p] >= c->o.n_pages)
				return -EINVAL;
	}
	return 0;
}

int mdl_cpu_step(struct mdl_cpu *c, const struct mdl_cpu_seq *seqs, int n_seqs)
{
	int rc = validate(c, seqs, n_seqs);
	if (unlikely(rc))
		return rc;
	const struct mdl_config *cf = &c->cfg;
	const int H = cf->hidden, hd = cf->head_dim, half = hd / 2, F = cf->intermediate;
	const int nh = cf->n_heads, nkv = cf->n_kv_heads, pt = c->o.page_tokens;
	const int qd = nh * hd, kvd = nkv * hd;

	/* token rows: embeddings, positions, rope angles */
	int T = 0;
	for (int si = 0; si < n_seqs; si++) {
		const struct mdl_cpu_seq *s = &seqs[si];
		for (int t = 0; t < s->n_tokens; t++, T++) {
			int pos = s->pos0 + t;
			c->tok_pos[T] = pos;
			c->tok_seq[T] = si;
			convert(c->x + (size_t)T * H, &c->m->embed,
			        (size_t)s->tokens[t] * (size_t)H, (size_t)H);
			float *cs = c->rope + (size_t)T * hd;
			for (int i = 0; i < half; i++) {
				float ang = (float)pos * c->inv_freq[i]; /* fp32, as torch does */
				cs[2 * i] = (float)cos((double)ang);
				cs[2 * i + 1] = (float)sin((double)ang);
			}
		}
	}
	if (T == 0)
		return 0;
	c->seqs = seqs;
	c->n_tok = T;

	for (int l = 0; l < cf->n_layers; l++) {
		const struct cpu_layer *L = &c->layers[l];
		c->layer = l;
		for (int t = 0; t < T; t++)
			rmsnorm(c->xn + (size_t)t * H, c->x + (size_t)t * H, L->attn_norm, H,
			        cf->rms_eps);
		c->jobs[0] = (struct gemm){c->xn, L->wq, L->bq, c->q, T, qd, H, H, qd, false};
		c->jobs[1] = (struct gemm){c->xn, L->wk, L->bk, c->k, T, kvd, H, H, kvd, false};
		c->jobs[2] = (struct gemm){c->xn, L->wv, L->bv, c->v, T, kvd, H, H, kvd, false};
		run_gemms(c, 3, false);

		for (int t = 0; t < T; t++) {
			const float *cs = c->rope + (size_t)t * hd;
			for (int h = 0; h < nh; h++) {
				float *qh = c->q + (size_t)t * qd + (size_t)h * hd;
				if (cf->qk_norm)
					rmsnorm(qh, qh, L->q_norm, hd, cf->rms_eps);
				rope_apply(qh, cs, half);
			}
			const struct mdl_cpu_seq *s = &seqs[c->tok_seq[t]];
			int pos = c->tok_pos[t];
			for (int h = 0; h < nkv; h++) {
				float *kh = c->k + (size_t)t * kvd + (size_t)h * hd;
				if (cf->qk_norm)
					rmsnorm(kh, kh, L->k_norm, hd, cf->rms_eps);
				rope_apply(kh, cs, half);
				int page = s->pages[pos / pt];
				memcpy(kv_at(c, page, l, 0, h, pos % pt), kh, (size_t)hd * 4);
				memcpy(kv_at(c, page, l, 1, h, pos % pt),
				       c->v + (size_t)t * kvd + (size_t)h * hd, (size_t)hd * 4);
			}
		}
		pool_run(&c->pool, job_attention, c);

		c->jobs[0] = (struct gemm){c->att, L->wo, NULL, c->x, T, H, qd, qd, H, true};
		run_gemms(c, 1, false);

		for (int t = 0; t < T; t++)
			rmsnorm(c->xn + (size_t)t * H, c->x + (size_t)t * H, L->mlp_norm, H,
			        cf->rms_eps);
		c->jobs[0] = (struct gemm){c->xn, L->w_gate, NULL, c->gate, T, F, H, H, F, false};
		c->jobs[1] = (struct gemm){c->xn, L->w_up, NULL, c->up, T, F, H, H, F, false};
		run_gemms(c, 2, true);
		c->jobs[0] = (struct gemm){c->gate, L->w_down, NULL, c->x, T, H, F, F, H, true};
		run_gemms(c, 1, false);
	}

	/* final norm and LM head, only for the rows that want logits */
	int n_jobs = 0, row = 0;
	for (int si = 0; si < n_seqs; si++) {
		const struct mdl_cpu_seq *s = &seqs[si];
		int first = row + s->n_tokens - s->n_logits;
		for (int t = first; t < row + s->n_tokens; t++)
			rmsnorm(c->xn + (size_t)t * H, c->x + (size_t)t * H, c->final_norm, H,
			        cf->rms_eps);
		if (s->n_logits > 0)
			c->jobs[n_jobs++] = (struct gemm){c->xn + (size_t)first * H,
			                                  c->lm_head,
			                                  NULL,
			                                  s->logits,
			                                  s->n_logits,
			                                  cf->vocab_size,
			                                  H,
			                                  H,
			                                  cf->vocab_size,
			                                  false};
		row += s->n_tokens;
	}
	if (n_jobs)
		run_gemms(c, n_jobs, false);
	return 0;
}

float *mdl_cpu_kv_page(struct mdl_cpu *c, int page)
{
	if (!c || page < 0 || page >= c->o.n_pages)
		return NULL;
	return c->kv + (size_t)page * c->page_sz;
}
