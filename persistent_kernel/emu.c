/* SPDX-License-Identifier: Apache-2.0 */
/* persistent_kernel/emu.c: the CPU emulation of the persistent kernel loop (see emu.h). */
#include <errno.h>
#include <math.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "emu.h"

#define EMU_LOST_CANCELS 64 /* cancels that arrived before their request was taken */

enum { ST_STEPS, ST_STEP_TOKENS, ST_TOK_OUT, ST_NOTICES, ST_PREEMPT, ST_REQ_IN, ST_HELD,
       ST_DRAINED, ST_EXITED, ST_WAITING, ST_RUNNING, ST_KV_USED, ST_KV_FREE, ST_N };

struct emu {
	struct pk_backend b; /* first: container_of by cast */
	struct pk_emu_compute c;
	int idle_spins, idle_sleep_us;
	int vocab;
	struct sched *s;       /* a few MiB, see sched.h */
	struct sched_plan plan;
	struct mdl_cpu_seq seqs[SCHED_MAX_REQS];
	float *logits;         /* (max_seqs + prompt_lp_rows, vocab) fp32: a step's rows, seq by seq */
	uint64_t lost[EMU_LOST_CANCELS];
	int n_lost, lost_next;
	int draining, shutting, exited_loop;
	pthread_t thread;
	int started, joined;
	_Atomic int stop_req; /* written by stop(), read by the loop: relaxed, a hint polled each
			       * iteration; the join gives the ordering for everything else */
	/* Counters: written by the loop thread only (relaxed), read by stats() from another. */
	_Atomic uint64_t st[ST_N];
};


static void st_add(struct emu *e, int i, uint64_t v)
{
	atomic_fetch_add_explicit(&e->st[i], v, memory_order_relaxed);
}

static void st_set(struct emu *e, int i, uint64_t v)
{
	atomic_store_explicit(&e->st[i], v, memory_order_relaxed);
}

static uint64_t now_ns(void)
{
	struct timespec ts;

	clock_gettime(CLOCK_MONOTONIC, &ts);
	return (uint64_t)ts.tv_sec * 1000000000ull + (uint64_t)ts.tv_nsec;
}

/* log_softmax of one logits row, for what a record carries: returns the log-sum-exp; the n best
 * (id, log p) go to ids/lps, best first, ties to the lower id. One pass keeps a sorted array of
 * the n best so far (insertion: O(n) only when a logit beats the n-th, n <= RING_MAX_TOP = 20,
 * so about V compares); a second pass sums exp. Rejected: a heap (n is tiny, and the output
 * must be sorted anyway). *n_out gets min(n, V). */
static double row_logprobs(const float *x, int V, int n, int32_t *ids, float *lps, int *n_out)
{
	float mx = -INFINITY;
	double sum = 0.0, lse;
	int i, j, m = 0;

	if (n > V)
		n = V;
	for (i = 0; i < V; i++) {
		float v = x[i];

		if (v > mx)
			mx = v;
		if (n == 0 || (m == n && !(v > lps[n - 1])))
			continue; /* not better than the n-th: equal values keep the lower id */
		j = m < n ? m++ : n - 1;
		for (; j > 0 && v > lps[j - 1]; j--) {
			lps[j] = lps[j - 1];
			ids[j] = ids[j - 1];
		}
		lps[j] = v;
		ids[j] = i;
	}
	for (i = 0; i < V; i++)
		sum += exp((double)x[i] - mx);
	lse = mx + log(sum);
	for (j = 0; j < m; j++)
		lps[j] = (float)((double)lps[j] - lse);
	*n_out = m;
	return lse;
}

static int lost_take(struct emu *e, uint64_t id)
{
	int i;

	for (i = 0; i < e->n_lost; i++)
		if (e->lost[i] == id) {
			e->lost[i] = e->lost[--e->n_lost];
			return 1;
		}
	return 0;
}

static void lost_add(struct emu *e, uint64_t id)
{
	if (e->n_lost < EMU_LOST_CANCELS) {
		e->lost[e->n_lost++] = id;
		return;
	}
	e->lost[e->lost_next] = id; /* bounded: the oldest unmatched cancel is forgotten */
	e->lost_next = (e->lost_next + 1) % EMU_LOST_CANCELS;
}

static void poll_control(struct emu *e)
{
	struct ring_ctl_rec c;

	while (ring_ctl_sc_pop(e->b.rings.ctl, &c)) {
		switch (c.op) {
		case RING_CTL_CANCEL:
			if (sched_cancel(e->s, c.id) == -ENOENT)
				lost_add(e, c.id);
			break;
		case RING_CTL_DRAIN:
			e->draining = 1;
			break;
		case RING_CTL_SHUTDOWN:
			e->shutting = 1;
			break;
		default:
			break; /* unknown ops are ignored: a newer host talking to an older loop */
		}
	}
}

static void poll_requests(struct emu *e)
{
	const struct ring_req_rec *r;

	while (!e->draining && !e->shutting && (r = ring_req_sc_peek(e->b.rings.req))) {
		uint64_t id = r->id;
		int slot = sched_submit(e->s, r, ring_req_prompt(e->b.rings.req, r));

		if (slot == -EAGAIN)
			break; /* every entry busy: leave it in the ring (backpressure) */
		ring_req_sc_pop(e->b.rings.req);
		st_add(e, ST_REQ_IN, 1);
		if (e->n_lost && lost_take(e, id))
			sched_cancel(e->s, id);
	}
}

/* Emit pending notices while the token ring has room; returns the credit left. */
static int flush_notices(struct emu *e, int credit)
{
	struct ring_tok_rec o;

	while (credit > 0 && sched_next_notice(e->s, &o)) {
		o.t_ns = now_ns();
		ring_tok_sp_push(e->b.rings.tok, &o); /* credit counted the free slots */
		credit--;
		st_add(e, ST_NOTICES, 1);
	}
	return credit;
}

/* The RING_TOK_PROMPT records of seq q (plan index i), before sched_advance(). */
static void push_prompt_lp(struct emu *e, const struct sched_seq *q, int i)
{
	const struct sched_req *r = &e->s->reqs[q->slot];
	int k;

	for (k = 0; k < q->n_prompt_lp; k++) {
		struct ring_tok_rec o;
		int row = sched_prompt_lp_rec(e->s, q, k, &o);
		const float *lg = e->seqs[i].logits + (size_t)row * e->vocab;
		int n_top;
		double lse = row_logprobs(lg, e->vocab, r->n_top, o.top_ids, o.top_lps, &n_top);

		o.logprob = (float)((double)lg[o.token] - lse);
		o.n_top = (uint8_t)n_top;
		o.t_ns = now_ns();
		ring_tok_sp_push(e->b.rings.tok, &o); /* n_emits + n_prompt_lp <= credit */
	}
}

static int run_step(struct emu *e)
{
	struct sched_plan *pl = &e->plan;
	int i, k = 0, rc;

	for (i = 0; i < pl->n_seqs; i++) {
		const struct sched_seq *q = &pl->seqs[i];
		struct mdl_cpu_seq *m = &e->seqs[i];

		m->tokens = q->tokens;
		m->n_tokens = q->n_tokens;
		m->pos0 = q->pos0;
		m->pages = q->pages;
		m->logits = q->n_logits ? e->logits + (size_t)k * e->vocab : NULL;
		m->n_logits = q->n_logits;
		k += q->n_logits; /* <= max_seqs + prompt_lp_rows: the buffer's rows */
	}
	rc = e->c.step(e->c.ctx, e->seqs, pl->n_seqs);
	st_add(e, ST_STEPS, 1);
	st_add(e, ST_STEP_TOKENS, (uint64_t)pl->n_tokens);
	if (rc < 0) {
		for (i = 0; i < pl->n_seqs; i++)
			sched_fail(e->s, pl->seqs[i].slot, rc);
		return rc;
	}
	for (i = 0; i < pl->n_seqs; i++) {
		const struct sched_seq *q = &pl->seqs[i];
		const struct sched_req *r = &e->s->reqs[q->slot];
		struct ring_tok_rec o;
		struct mdl_sampling sp;
		const float *lg = e->seqs[i].logits; /* the last row samples */
		float lp = 0.0f;
		int32_t tok = 0;
		int n_top = 0;
		int32_t ids[RING_MAX_TOP];
		float lps[RING_MAX_TOP];

		if (q->n_prompt_lp > 0)
			push_prompt_lp(e, q, i);
		if (q->emits) {
			lg += (size_t)(q->n_logits - 1) * e->vocab;
			sp.temperature = r->temperature;
			sp.top_k = r->top_k;
			sp.top_p = r->top_p;
			sp.seed = r->seed;
			tok = e->c.sample(e->c.ctx, lg, &sp, (uint64_t)r->n_gen, &lp);
			if (tok < 0 || tok >= e->vocab) {
				sched_fail(e->s, q->slot, -EINVAL);
				continue;
			}
			if (r->n_top > 0)
				row_logprobs(lg, e->vocab, r->n_top, ids, lps, &n_top);
		}
		if (!sched_advance(e->s, q, tok, &o)) /* r may be freed from here on */
			continue;
		o.logprob = lp;
		o.n_top = (uint8_t)n_top;
		for (k = 0; k < n_top; k++) {
			o.top_ids[k] = ids[k];
			o.top_lps[k] = lps[k];
		}
		o.t_ns = now_ns();
		ring_tok_sp_push(e->b.rings.tok, &o); /* plan.n_emits <= credit: never full here */
		st_add(e, ST_TOK_OUT, 1);
	}
	return pl->n_seqs;
}

static int iterate(struct emu *e)
{
	uint64_t pre = e->s->n_preempt_total;
	int credit, n;

	if (atomic_load_explicit(&e->stop_req, memory_order_relaxed))
		e->shutting = 1;
	poll_requests(e); /* requests before control: a cancel right behind its request matches */
	poll_control(e);
	if (e->shutting)
		sched_cancel_all(e->s);
	credit = flush_notices(e, (int)ring_sp_free(e->b.rings.tok));
	if (e->shutting)
		return e->s->n_done == 0 ? -ESHUTDOWN : 0;
	n = sched_schedule(e->s, credit, &e->plan);
	if (e->s->n_preempt_total != pre)
		st_add(e, ST_PREEMPT, e->s->n_preempt_total - pre);
	if (credit == 0 && !sched_idle(e->s))
		st_add(e, ST_HELD, 1);
	if (n > 0)
		n = run_step(e);
	st_set(e, ST_WAITING, (uint64_t)e->s->n_waiting);
	st_set(e, ST_RUNNING, (uint64_t)e->s->n_running);
	st_set(e, ST_KV_FREE, (uint64_t)kv_free_count(&e->s->kv));
	st_set(e, ST_KV_USED, (uint64_t)(e->s->kv.n_pages - kv_free_count(&e->s->kv)));
	if (e->draining && sched_idle(e->s) && !atomic_load_explicit(&e->st[ST_DRAINED],
								     memory_order_relaxed))
		atomic_store_explicit(&e->st[ST_DRAINED], 1, memory_order_relaxed);
	return n < 0 ? 0 : n; /* a failed step became ERROR notices */
}

int pk_emu_iterate(struct pk_backend *b)
{
	struct emu *e = (struct emu *)b;

	if (e->started)
		return -EBUSY;
	return iterate(e);
}

static void *loop(void *arg)
{
	struct emu *e = arg;
	int idle = 0;
	uint64_t t_stop = 0;

	for (;;) {
		int n = iterate(e);

		if (n == -ESHUTDOWN)
			break;
		if (e->shutting) {
			/* Notices left and the host is not draining the token ring: give it 100 ms,
			 * then exit anyway (the GPU never waits on the host for longer). */
			if (!t_stop)
				t_stop = now_ns();
			else if (now_ns() - t_stop > 100000000ull)
				break;
		}
		if (n > 0) {
			idle = 0;
			continue;
		}
		if (++idle > e->idle_spins) {
			struct timespec ts = {0, (long)e->idle_sleep_us * 1000L};

			nanosleep(&ts, NULL);
		}
	}
	atomic_store_explicit(&e->st[ST_EXITED], 1, memory_order_release);
	return NULL;
}

static int emu_start(struct pk_backend *b)
{
	struct emu *e = (struct emu *)b;
	int rc;

	if (e->started)
		return -EALREADY;
	rc = pthread_create(&e->thread, NULL, loop, e);
	if (rc)
		return -rc;
	pthread_setname_np(e->thread, "pk-emu");
	e->started = 1;
	return 0;
}

static int emu_stop(struct pk_backend *b)
{
	struct emu *e = (struct emu *)b;

	if (!e->started || e->joined)
		return 0;
	atomic_store_explicit(&e->stop_req, 1, memory_order_relaxed);
	pthread_join(e->thread, NULL);
	e->joined = 1;
	return 0;
}

static void emu_stats(struct pk_backend *b, struct pk_stats *o)
{
	struct emu *e = (struct emu *)b;
	uint64_t v[ST_N];
	int i;

	for (i = 0; i < ST_N; i++)
		v[i] = atomic_load_explicit(&e->st[i], memory_order_relaxed);
	o->steps = v[ST_STEPS];
	o->step_tokens = v[ST_STEP_TOKENS];
	o->tokens_out = v[ST_TOK_OUT];
	o->notices_out = v[ST_NOTICES];
	o->preemptions = v[ST_PREEMPT];
	o->requests_in = v[ST_REQ_IN];
	o->held_no_credit = v[ST_HELD];
	o->drained = v[ST_DRAINED];
	o->exited = v[ST_EXITED];
	o->waiting = v[ST_WAITING];
	o->running = v[ST_RUNNING];
	o->kv_used = v[ST_KV_USED];
	o->kv_free = v[ST_KV_FREE];
}

static void emu_destroy(struct pk_backend *b)
{
	struct emu *e = (struct emu *)b;

	emu_stop(b);
	if (e->c.fini)
		e->c.fini(e->c.ctx);
	free(e->logits);
	free(e->s);
	free(e);
}

static const struct pk_backend_ops emu_ops = {
	.name = "cpu-emu",
	.start = emu_start,
	.stop = emu_stop,
	.stats = emu_stats,
	.destroy = emu_destroy,
};

int pk_emu_create(struct pk_backend **out, const struct pk_emu_opts *o,
		  const struct pk_emu_compute *c)
{
	struct sched_config cfg = o->sched;
	struct emu *e;
	int rc = -EINVAL;

	*out = NULL;
	if (!c->step || !c->sample || c->vocab_size < 1 || !o->rings.req || !o->rings.tok ||
	    !o->rings.ctl || ring_check(o->rings.req, RING_KIND_REQ) ||
	    ring_check(o->rings.tok, RING_KIND_TOK) || ring_check(o->rings.ctl, RING_KIND_CTL))
		return -EINVAL;
	if (cfg.vocab_size == 0)
		cfg.vocab_size = c->vocab_size;
	if (cfg.vocab_size != c->vocab_size)
		return -EINVAL;
	e = calloc(1, sizeof(*e));
	if (!e)
		return -ENOMEM;
	e->s = malloc(sizeof(*e->s));
	if (!e->s) {
		rc = -ENOMEM;
		goto out;
	}
	rc = sched_init(e->s, &cfg); /* checks max_seqs, fills prompt_lp_rows' default */
	if (rc)
		goto out;
	e->logits = malloc((size_t)(e->s->cfg.max_seqs + e->s->cfg.prompt_lp_rows) *
			   (size_t)cfg.vocab_size * sizeof(float));
	if (!e->logits) {
		rc = -ENOMEM;
		goto out;
	}
	e->b.ops = &emu_ops;
	e->b.rings = o->rings;
	e->c = *c;
	e->vocab = cfg.vocab_size;
	e->idle_spins = o->idle_spins > 0 ? o->idle_spins : 1000;
	e->idle_sleep_us = o->idle_sleep_us > 0 ? o->idle_sleep_us : 50;
	st_set(e, ST_KV_FREE, (uint64_t)cfg.n_pages);
	*out = &e->b;
	return 0;
out:
	free(e->logits);
	free(e->s);
	free(e);
	return rc;
}

const struct sched *pk_emu_sched(struct pk_backend *b)
{
	return ((struct emu *)b)->s;
}

#if !PK_HAVE_CPU_STEP
int pk_emu_cpu_create(struct pk_backend **out, const struct mdl *m, const struct pk_emu_opts *o,
		      int n_threads)
{
	(void)m;
	(void)o;
	(void)n_threads;
	*out = NULL;
	return -ENOTSUP;
}
#endif
