/* SPDX-License-Identifier: Apache-2.0 */
/*
 * tests/persistent_kernel/test_emu_cpu.c: the CPU backend with the real forward pass
 * (pk_emu_cpu_create: mdl_cpu_step + mdl_sample) on a small random-weight Llama-shaped model built
 * in memory. Reference: the same model driven directly, one request at a time (whole-prompt
 * prefill, then one decode step per token, contiguous pages, no scheduler). The emulation must give
 * the same tokens while it batches requests, chunks prefills under a small token budget and
 * preempts under a small KV pool. Every third request also wants prompt logprobs (one of them
 * only those: max_tokens 0): each prompt position's record must match log_softmax of the
 * reference's whole-prompt logits at the position before (the real step's multi-row logits).
 */
#include <errno.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "check.h"
#include "emu.h"
#include "pk_test.h"

#define NREQ 12
#define MAXG 24

static uint64_t rng = 2026;

static float frand(void)
{
	rng = mdl_mix64(rng);
	return (float)((double)(rng >> 11) / 9007199254740992.0) * 2.0f - 1.0f;
}

static void tensor(struct mdl_tensor *t, int64_t d0, int64_t d1, float scale, float bias)
{
	size_t n = (size_t)d0 * (size_t)(d1 ? d1 : 1), i;
	float *p = malloc(n * sizeof(float));

	for (i = 0; i < n; i++)
		p[i] = bias + scale * frand();
	t->dtype = MDL_F32;
	t->ndim = d1 ? 2 : 1;
	t->shape[0] = d0;
	t->shape[1] = d1;
	t->data = p;
	t->nbytes = n * sizeof(float);
}

static void model_make(struct mdl *m)
{
	struct mdl_config *c = &m->cfg;
	int l;

	memset(m, 0, sizeof(*m));
	c->arch = MDL_ARCH_LLAMA;
	c->vocab_size = 97;
	c->hidden = 32;
	c->intermediate = 64;
	c->n_layers = 2;
	c->n_heads = 4;
	c->n_kv_heads = 2;
	c->head_dim = 8;
	c->max_pos = 256;
	c->rms_eps = 1e-5f;
	c->rope.type = MDL_ROPE_DEFAULT;
	c->rope.theta = 10000.0;
	c->bos_id = -1;
	c->dtype = MDL_F32;
	tensor(&m->embed, c->vocab_size, c->hidden, 1.0f, 0.0f);
	tensor(&m->final_norm, c->hidden, 0, 0.1f, 1.0f);
	tensor(&m->lm_head, c->vocab_size, c->hidden, 0.5f, 0.0f);
	m->layers = calloc((size_t)c->n_layers, sizeof(*m->layers));
	for (l = 0; l < c->n_layers; l++) {
		struct mdl_layer *L = &m->layers[l];
		int qd = c->n_heads * c->head_dim, kvd = c->n_kv_heads * c->head_dim;

		tensor(&L->attn_norm, c->hidden, 0, 0.1f, 1.0f);
		tensor(&L->wq, qd, c->hidden, 0.3f, 0.0f);
		tensor(&L->wk, kvd, c->hidden, 0.3f, 0.0f);
		tensor(&L->wv, kvd, c->hidden, 0.3f, 0.0f);
		tensor(&L->wo, c->hidden, qd, 0.3f, 0.0f);
		tensor(&L->mlp_norm, c->hidden, 0, 0.1f, 1.0f);
		tensor(&L->w_gate, c->intermediate, c->hidden, 0.3f, 0.0f);
		tensor(&L->w_up, c->intermediate, c->hidden, 0.3f, 0.0f);
		tensor(&L->w_down, c->hidden, c->intermediate, 0.3f, 0.0f);
	}
}

static void model_free(struct mdl *m)
{
	int l;

	free((void *)m->embed.data);
	free((void *)m->final_norm.data);
	free((void *)m->lm_head.data);
	for (l = 0; l < m->cfg.n_layers; l++) {
		struct mdl_layer *L = &m->layers[l];
		const void *ps[] = {L->attn_norm.data, L->wq.data, L->wk.data, L->wv.data, L->wo.data,
				    L->mlp_norm.data, L->w_gate.data, L->w_up.data, L->w_down.data};

		for (size_t i = 0; i < sizeof(ps) / sizeof(ps[0]); i++)
			free((void *)ps[i]);
	}
	free(m->layers);
}

struct req {
	struct ring_req_rec rec;
	int32_t prompt[64];
	int n_prompt;
	int32_t ref[MAXG];
	int n_ref;
	int32_t got[MAXG];
	int n_got, finish;
	float plp_ref[64], top0_ref[64]; /* log p(prompt[i]) and the best log p at position i-1 */
	int n_plp, plp_bad;
};

/* One request alone: prefill all, then decode, pages 0, 1, 2, ... */
static int reference(const struct mdl *m, struct req *r)
{
	struct mdl_cpu_opts co = {64, 4, 64, 1, 1};
	struct mdl_cpu *cpu;
	struct mdl_sampler *smp;
	struct mdl_sampling sp = {r->rec.temperature, r->rec.top_k, r->rec.top_p, r->rec.seed};
	int32_t pages[64], seq[128];
	float *lg = malloc(sizeof(float) * (size_t)m->cfg.vocab_size);
	int i, n = r->n_prompt, rc;

	for (i = 0; i < 64; i++)
		pages[i] = i;
	rc = mdl_cpu_create(&cpu, m, &co);
	if (rc)
		return rc;
	rc = mdl_sampler_create(&smp, m->cfg.vocab_size);
	if (rc)
		return rc;
	memcpy(seq, r->prompt, sizeof(int32_t) * (size_t)n);
	if (r->rec.flags & RING_REQ_PROMPT_LOGPROBS) { /* every prompt row's logits, one step */
		int V = m->cfg.vocab_size;
		float *all = malloc(sizeof(float) * (size_t)V * (size_t)n);
		struct mdl_cpu_seq s = {seq, n, 0, pages, all, n};

		rc = all ? mdl_cpu_step(cpu, &s, 1) : -ENOMEM;
		for (i = 1; !rc && i < n; i++) {
			const float *x = all + (size_t)(i - 1) * V;
			double mx = -INFINITY, sum = 0.0;

			for (int v = 0; v < V; v++)
				mx = x[v] > mx ? x[v] : mx;
			for (int v = 0; v < V; v++)
				sum += exp((double)x[v] - mx);
			r->plp_ref[i] = (float)((double)x[seq[i]] - mx - log(sum));
			r->top0_ref[i] = (float)(-log(sum));
		}
		free(all);
		if (rc)
			return rc;
	}
	for (r->n_ref = 0; r->n_ref < r->rec.max_tokens;) {
		struct mdl_cpu_seq s = {seq + (r->n_ref ? n - 1 : 0), r->n_ref ? 1 : n,
					r->n_ref ? n - 1 : 0, pages, lg, 1};

		rc = mdl_cpu_step(cpu, &s, 1);
		if (rc)
			break;
		seq[n] = mdl_sample(smp, lg, &sp, (uint64_t)r->n_ref, NULL);
		r->ref[r->n_ref++] = seq[n++];
	}
	mdl_sampler_destroy(smp);
	mdl_cpu_destroy(cpu);
	free(lg);
	return rc;
}

int main(void)
{
	static struct req reqs[NREQ];
	struct mdl m;
	struct pk_emu_opts o;
	struct pk_backend *b = NULL;
	struct pk_stats st;
	struct ring_tok_rec buf[16];
	int i, done = 0, next = 0, rc;
	long spins = 0;

	model_make(&m);
	for (i = 0; i < NREQ; i++) {
		struct req *r = &reqs[i];

		r->n_prompt = 3 + (int)(mdl_mix64((uint64_t)i) % 40);
		for (int k = 0; k < r->n_prompt; k++)
			r->prompt[k] = (int32_t)(mdl_mix64((uint64_t)i * 100 + (uint64_t)k) % 97);
		r->rec.id = (uint64_t)i + 1;
		r->rec.seed = (uint64_t)i * 31 + 7;
		r->rec.temperature = i % 3 == 0 ? 0.0f : 0.9f;
		r->rec.top_k = i % 4 == 1 ? 20 : 0;
		r->rec.top_p = i % 4 == 2 ? 0.9f : 1.0f;
		r->rec.max_tokens = 8 + i % (MAXG - 8);
		if (i % 3 == 2) {
			r->rec.flags = RING_REQ_PROMPT_LOGPROBS;
			r->rec.n_top = 3;
		}
		if (i == 5)
			r->rec.max_tokens = 0; /* scoring only */
		rc = reference(&m, r);
		if (rc) {
			fprintf(stderr, "reference: %d\n", rc);
			return 1;
		}
	}

	memset(&o, 0, sizeof(o));
	pkt_rings(&o.rings, 8, 512, 16, 8);
	o.sched.n_pages = 24; /* 96 positions for 12 requests of up to ~66: preemption */
	o.sched.page_tokens = 4;
	o.sched.max_ctx = 96;
	o.sched.step_tokens = 16; /* chunked prefill */
	o.sched.max_seqs = 6;
	o.idle_sleep_us = 20;
	rc = pk_emu_cpu_create(&b, &m, &o, 2);
	if (rc == -ENOTSUP) {
		printf("no model/cpu.c in this build: skip\n");
		return 77;
	}
	CHECK(rc == 0);
	if (rc)
		return 1;
	CHECK(pk_backend_start(b) == 0);
	while (done < NREQ && spins++ < 20000000) {
		uint32_t n, k;

		if (next < NREQ && ring_req_sp_push(o.rings.req, &reqs[next].rec, reqs[next].prompt,
						    (uint32_t)reqs[next].n_prompt) == 0)
			next++;
		n = ring_tok_sc_pop_burst(o.rings.tok, buf, 16);
		for (k = 0; k < n; k++) {
			struct req *r = &reqs[buf[k].id - 1];

			CHECK(!(buf[k].flags & RING_TOK_NOTOK));
			if (buf[k].flags & RING_TOK_PROMPT) {
				int p = buf[k].pos;

				r->n_plp++;
				if (p != r->n_plp || p >= r->n_prompt || r->n_got ||
				    buf[k].token != r->prompt[p] || buf[k].n_top != 3 ||
				    fabsf(buf[k].logprob - r->plp_ref[p]) > 1e-3f ||
				    fabsf(buf[k].top_lps[0] - r->top0_ref[p]) > 1e-3f)
					r->plp_bad++;
				if (buf[k].flags & RING_TOK_LAST) {
					r->finish = buf[k].finish;
					done++;
				}
				continue;
			}
			if (r->n_got < MAXG)
				r->got[r->n_got++] = buf[k].token;
			if (buf[k].flags & RING_TOK_LAST) {
				r->finish = buf[k].finish;
				done++;
			}
		}
		if (!n) {
			struct timespec ts = {0, 20000};

			nanosleep(&ts, NULL);
		}
	}
	pk_backend_stats(b, &st);
	CHECK(pk_backend_stop(b) == 0);
	CHECK(done == NREQ);
	for (i = 0; i < NREQ; i++) {
		struct req *r = &reqs[i];

		CHECK(r->finish == RING_FINISH_LENGTH && r->n_got == r->n_ref);
		CHECK(r->plp_bad == 0);
		CHECK(r->n_plp == (r->rec.flags & RING_REQ_PROMPT_LOGPROBS ? r->n_prompt - 1 : 0));
		CHECK(r->n_got == r->n_ref &&
		      memcmp(r->got, r->ref, sizeof(int32_t) * (size_t)r->n_ref) == 0,
		      "request %d: tokens differ from the unbatched reference", i);
	}
	CHECK(st.preemptions > 0);
	CHECK(pk_emu_sched(b)->kv.n_free == o.sched.n_pages);
	printf("emu_cpu: %d requests, %llu steps, %llu step tokens, %llu preemptions\n", NREQ,
	       (unsigned long long)st.steps, (unsigned long long)st.step_tokens,
	       (unsigned long long)st.preemptions);
	pk_backend_destroy(b);
	pkt_rings_free(&o.rings);
	model_free(&m);
	if (check_exit())
		return 1;
	printf("test_emu_cpu: ok\n");
	return 0;
}
