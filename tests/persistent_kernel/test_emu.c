/* SPDX-License-Identifier: Apache-2.0 */
/*
 * tests/persistent_kernel/test_emu.c: the CPU emulation loop end to end over real rings, with the
 * fake step of fake_model.h on the loop thread and this thread as the host (request producer,
 * control producer, token consumer). Checks: every request's tokens equal fm_reference() (one
 * request alone, no paging) although the loop batches, chunks, preempts and is held by a small
 * token ring the host drains slowly; cancels (also ones that overtake their request); top-N
 * logprobs (up to 20) against the logits recomputed here; prompt logprobs (RING_TOK_PROMPT
 * records: every prompt position once, in order, before the first token, logprob and top-N
 * from fm_logits_at() over the prompt prefix, also for scoring-only requests with max_tokens 0)
 * under a small prompt_lp_rows and preemption; timestamps; drain; shutdown through the control
 * ring; too-long prompts rejected with an ERROR record; no page leaked. Also built with TSan.
 */
#include <errno.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "check.h"
#include "emu.h"
#include "fake_model.h"
#include "pk_test.h"

#define V 64
#ifdef EMU_TEST_TSAN
#define NJ 40
#else
#define NJ 300
#endif
#define MAXTOK 200

struct job {
	uint64_t id;
	int n_prompt;
	int32_t prompt[MAXTOK];
	struct ring_req_rec rec;
	int32_t ref[MAXTOK];
	int n_ref, ref_finish;
	int32_t got[MAXTOK];
	int n_got, finish, err, cancel;
	int n_plp; /* RING_TOK_PROMPT records taken: positions 1 .. n_plp */
};

static struct job jobs[NJ];
static uint64_t rng = 4242;
static struct fake_model FM; /* the loop thread's; the reference uses its own copy (no kv) */

static uint32_t rnd(uint32_t n)
{
	rng = mdl_mix64(rng);
	return (uint32_t)(rng >> 33) % n;
}

static void sleep_us(long us)
{
	struct timespec ts = {us / 1000000, (us % 1000000) * 1000};

	nanosleep(&ts, NULL);
}

static int c_step(void *ctx, const struct mdl_cpu_seq *seqs, int n)
{
	return fm_step(ctx, seqs, n);
}

static int32_t c_sample(void *ctx, const float *logits, const struct mdl_sampling *p,
			uint64_t counter, float *logprob)
{
	(void)ctx;
	return fm_sample(V, logits, p, counter, logprob);
}

static void cfg_default(struct sched_config *c)
{
	memset(c, 0, sizeof(*c));
	c->n_pages = 30;
	c->page_tokens = 4;
	c->max_ctx = 100;
	c->step_tokens = 16;
	c->max_seqs = 6;
	c->max_running = 8;
	c->n_eos = 1;
	c->eos_ids[0] = 3;
}

static void job_make(struct job *j, uint64_t id, int n_prompt, int max_tokens,
		     const struct sched_config *c)
{
	struct mdl_sampling sp;
	int32_t stops[RING_MAX_STOP + 1];
	int i;

	memset(j, 0, sizeof(*j));
	j->id = id;
	j->n_prompt = n_prompt;
	for (i = 0; i < n_prompt; i++)
		j->prompt[i] = (int32_t)rnd(V);
	j->rec.id = id;
	j->rec.seed = mdl_mix64(id);
	j->rec.temperature = rnd(2) ? 0.7f : 0.0f;
	j->rec.top_p = 1.0f;
	j->rec.max_tokens = max_tokens;
	j->rec.n_stop = (uint16_t)rnd(2);
	j->rec.stop_ids[0] = (int32_t)rnd(V);
	j->rec.n_top = (uint16_t)rnd(RING_MAX_TOP + 1);
	if (c->prompt_lp_rows && rnd(3) == 0) { /* only where the test sets prompt_lp_rows */
		j->rec.flags = RING_REQ_PROMPT_LOGPROBS;
		if (rnd(4) == 0)
			j->rec.max_tokens = max_tokens = 0; /* score the prompt only */
	}
	sp.temperature = j->rec.temperature;
	sp.top_k = 0;
	sp.top_p = 1.0f;
	sp.seed = j->rec.seed;
	stops[0] = c->eos_ids[0];
	stops[1] = j->rec.stop_ids[0];
	if (max_tokens == 0)
		j->ref_finish = RING_FINISH_LENGTH;
	else if (n_prompt < c->max_ctx)
		j->n_ref = fm_reference(&FM, j->prompt, n_prompt, &sp, max_tokens, c->max_ctx, stops,
					1 + j->rec.n_stop, j->ref, &j->ref_finish);
}

static struct job *by_id(uint64_t id)
{
	return id >= 1 && id <= NJ ? &jobs[id - 1] : NULL;
}

static uint64_t last_t;
static int n_top20; /* records checked with 20 alternatives */

/* A record's logprob and top-N against log_softmax(lg), recomputed here. */
static void check_lp(const struct ring_tok_rec *o, const struct job *j, const float *lg)
{
	double mx = -INFINITY, s = 0.0;
	int i;

	for (i = 0; i < V; i++)
		mx = lg[i] > mx ? lg[i] : mx;
	for (i = 0; i < V; i++)
		s += exp(lg[i] - mx);
	CHECK(fabs(o->logprob - (lg[o->token] - mx - log(s))) < 1e-4);
	CHECK(o->n_top == j->rec.n_top);
	n_top20 += o->n_top == 20;
	for (i = 0; i < o->n_top; i++) {
		int v, better = 0;

		CHECK(fabs(o->top_lps[i] - (lg[o->top_ids[i]] - mx - log(s))) < 1e-4);
		for (v = 0; v < V; v++) /* exactly i tokens rank above the i-th */
			better += lg[v] > lg[o->top_ids[i]] ||
				  (lg[v] == lg[o->top_ids[i]] && v < o->top_ids[i]);
		CHECK(better == i);
	}
}

/* Check one record against the job and the logits recomputed from the job's history. */
static void take(const struct ring_tok_rec *o)
{
	struct job *j = by_id(o->id);
	float lg[V];
	uint64_t h = 0;
	int i;

	CHECK(j != NULL);
	if (!j)
		return;
	CHECK(j->finish == 0); /* nothing after LAST */
	CHECK(o->t_ns >= last_t && o->t_ns > 0);
	last_t = o->t_ns;
	if (o->flags & RING_TOK_LAST) {
		j->finish = o->finish;
		j->err = o->err;
	}
	if (o->flags & RING_TOK_NOTOK)
		return;
	if (o->flags & RING_TOK_PROMPT) { /* a prompt position's logprob, before any token */
		CHECK(j->rec.flags & RING_REQ_PROMPT_LOGPROBS);
		CHECK(j->n_got == 0 && !(o->flags & RING_TOK_FIRST));
		CHECK(o->pos == 1 + j->n_plp && o->pos < j->n_prompt);
		CHECK(o->pos < j->n_prompt && o->token == j->prompt[o->pos < MAXTOK ? o->pos : 0]);
		CHECK(!!(o->flags & RING_TOK_LAST) ==
		      (j->rec.max_tokens == 0 && o->pos == j->n_prompt - 1));
		CHECK(!(o->flags & RING_TOK_LAST) || o->finish == RING_FINISH_LENGTH);
		fm_logits_at(&FM, j->prompt, o->pos, lg);
		check_lp(o, j, lg);
		j->n_plp++;
		return;
	}
	CHECK(j->rec.max_tokens > 0);
	CHECK(j->n_plp == (j->rec.flags & RING_REQ_PROMPT_LOGPROBS ? j->n_prompt - 1 : 0));
	CHECK(o->pos == j->n_prompt + j->n_got);
	CHECK(!!(o->flags & RING_TOK_FIRST) == (j->n_got == 0));
	/* logprob and top-N from the logits of the history the token was sampled after */
	for (i = 0; i < j->n_prompt; i++)
		h = fm_hash(h, j->prompt[i]);
	for (i = 0; i < j->n_got; i++)
		h = fm_hash(h, j->got[i]);
	fm_logits(&FM, h, lg);
	check_lp(o, j, lg);
	if (j->n_got < MAXTOK)
		j->got[j->n_got++] = o->token;
}

static int drain_tok(struct ring_hdr *tok, int max)
{
	struct ring_tok_rec buf[16];
	int n = 0;
	uint32_t k, got;

	while (n < max && (got = ring_tok_sc_pop_burst(tok, buf, 16)) > 0)
		for (k = 0; k < got; k++, n++)
			take(&buf[k]);
	return n;
}

static int all_done(int n)
{
	int i;

	for (i = 0; i < n; i++)
		if (!jobs[i].finish)
			return 0;
	return 1;
}

/* Fresh rings (the token ring of tok_n slots) into *r and a backend over them with config c. */
static struct pk_backend *make(struct pk_rings *r, uint32_t tok_n, const struct sched_config *c)
{
	struct pk_emu_opts o;
	struct pk_emu_compute cp = {&FM, V, c_step, c_sample, NULL};
	struct pk_backend *b = NULL;

	pkt_rings(r, 16, 1024, tok_n, 8);
	memset(&o, 0, sizeof(o));
	o.rings = *r;
	o.sched = *c;
	o.idle_spins = 100;
	o.idle_sleep_us = 20;
	fm_fini(&FM);
	fm_init(&FM, V, c->page_tokens, c->n_pages);
	CHECK(pk_emu_create(&b, &o, &cp) == 0);
	return b;
}

static void main_workload(void)
{
	struct pk_rings r;
	struct sched_config c;
	struct pk_backend *b;
	struct pk_stats st;
	int next = 0, i, n_cancel = 0, spins = 0, n_plp = 0;

	cfg_default(&c);
	c.prompt_lp_rows = 7; /* long prompts' records take several steps */
	b = make(&r, 8, &c);
	if (!b)
		return;
	for (i = 0; i < NJ; i++) {
		int long_one = rnd(10) == 0;

		job_make(&jobs[i], (uint64_t)i + 1, long_one ? 100 + (int)rnd(20) : 1 + (int)rnd(50),
			 1 + (int)rnd(40), &c);
		jobs[i].cancel = rnd(8) == 0;
	}
	jobs[0].rec.n_top = RING_MAX_TOP; /* the most OpenAI allows */
	jobs[0].cancel = 0;
	CHECK(pk_backend_start(b) == 0);
	CHECK(pk_backend_start(b) == -EALREADY);
	while (!all_done(NJ) && spins < 2000000) {
		spins++;
		if (next < NJ) {
			struct job *j = &jobs[next];
			int rc = ring_req_sp_push(r.req, &j->rec, j->prompt, (uint32_t)j->n_prompt);

			if (rc == 0) {
				next++;
				if (j->cancel && ring_ctl_sp_push(r.ctl, RING_CTL_CANCEL, j->id) == 0)
					n_cancel++;
				else
					j->cancel = 0;
			} else {
				CHECK(rc == -EAGAIN);
			}
		}
		if (drain_tok(r.tok, 1 + (int)rnd(8)) == 0 || rnd(20) == 0)
			sleep_us(rnd(300)); /* a slow host: the token ring fills, the loop holds */
	}
	CHECK(all_done(NJ));
	pk_backend_stats(b, &st);
	CHECK(pk_backend_stop(b) == 0);
	CHECK(pk_backend_stop(b) == 0);
	pk_backend_stats(b, &st);
	CHECK(st.exited == 1);
	for (i = 0; i < NJ; i++) {
		struct job *j = &jobs[i];

		if (j->n_prompt > c.max_ctx || (j->n_prompt == c.max_ctx && j->rec.max_tokens > 0)) {
			CHECK(j->finish == RING_FINISH_ERROR && j->err == -E2BIG && j->n_got == 0);
			continue;
		}
		CHECK(j->n_plp <= (j->rec.flags & RING_REQ_PROMPT_LOGPROBS ? j->n_prompt - 1 : 0));
		if (j->finish != RING_FINISH_CANCELLED)
			CHECK(j->n_plp ==
			      (j->rec.flags & RING_REQ_PROMPT_LOGPROBS ? j->n_prompt - 1 : 0));
		n_plp += j->rec.flags & RING_REQ_PROMPT_LOGPROBS ? 1 : 0;
		/* tokens are the reference's, or a prefix of it when cancelled */
		CHECK(j->n_got <= j->n_ref);
		CHECK(memcmp(j->got, j->ref, sizeof(int32_t) * (size_t)(j->n_got < j->n_ref ? j->n_got
											   : j->n_ref)) == 0);
		if (j->finish == RING_FINISH_CANCELLED)
			CHECK(j->cancel);
		else
			CHECK(j->n_got == j->n_ref && j->finish == j->ref_finish);
	}
	CHECK(pk_emu_sched(b)->kv.n_free == c.n_pages && sched_idle(pk_emu_sched(b)));
	CHECK(st.preemptions > 0);
	CHECK(st.held_no_credit > 0);
	CHECK(st.requests_in == NJ);
	CHECK(st.waiting == 0 && st.running == 0 && st.kv_used == 0 &&
	      st.kv_free == (uint64_t)c.n_pages);
	CHECK(FM.n_bad == 0);
	CHECK(n_plp > 0 && n_top20 > 0);
	printf("emu: %d requests (%d cancels sent, %d prompt logprobs), %llu steps, %llu step tokens, "
	       "%llu tokens out, %llu notices, %llu preemptions, %llu held-for-credit iterations\n",
	       NJ, n_cancel, n_plp, (unsigned long long)st.steps, (unsigned long long)st.step_tokens,
	       (unsigned long long)st.tokens_out, (unsigned long long)st.notices_out,
	       (unsigned long long)st.preemptions, (unsigned long long)st.held_no_credit);
	pk_backend_destroy(b);
	pkt_rings_free(&r);
}

/* Drain: requests already in are finished; a request pushed after the drain stays in the ring.
 * Shutdown through the control ring: everything left is cancelled and the loop exits by itself. */
static void drain_and_shutdown(void)
{
	struct pk_rings r;
	struct sched_config c;
	struct pk_backend *b;
	struct pk_stats st;
	int i, spins;

	cfg_default(&c);
	c.n_eos = 0;
	b = make(&r, 64, &c);
	if (!b)
		return;
	for (i = 0; i < 6; i++) {
		job_make(&jobs[i], (uint64_t)i + 1, 10, i < 4 ? 20 : 60, &c);
		jobs[i].rec.n_stop = 0;
	}
	for (i = 0; i < 4; i++)
		CHECK(ring_req_sp_push(r.req, &jobs[i].rec, jobs[i].prompt, 10) == 0);
	/* nothing consumed yet: the loop is not started, so the drain lands behind the four */
	CHECK(ring_ctl_sp_push(r.ctl, RING_CTL_DRAIN, 0) == 0);
	CHECK(pk_emu_iterate(b) >= 0); /* one iteration on this thread: takes the four, drains */
	CHECK(ring_req_sp_push(r.req, &jobs[4].rec, jobs[4].prompt, 10) == 0);
	CHECK(pk_backend_start(b) == 0);
	CHECK(pk_emu_iterate(b) == -EBUSY);
	for (spins = 0; spins < 200000; spins++) {
		drain_tok(r.tok, 64);
		pk_backend_stats(b, &st);
		if (st.drained)
			break;
		sleep_us(50);
	}
	CHECK(st.drained == 1);
	drain_tok(r.tok, 64);
	for (i = 0; i < 4; i++)
		CHECK(jobs[i].finish == RING_FINISH_LENGTH && jobs[i].n_got == 20);
	CHECK(jobs[4].finish == 0 && ring_sc_count(r.req) == 1); /* left in the ring */
	CHECK(ring_ctl_sp_push(r.ctl, RING_CTL_SHUTDOWN, 0) == 0);
	for (spins = 0; spins < 200000; spins++) {
		pk_backend_stats(b, &st);
		if (st.exited)
			break;
		sleep_us(50);
	}
	CHECK(st.exited == 1);
	pk_backend_destroy(b);

	/* Shutdown with requests running: each gets a CANCELLED record. */
	pkt_rings_free(&r);
	memset(jobs, 0, sizeof(jobs));
	last_t = 0;
	b = make(&r, 64, &c);
	if (!b)
		return;
	for (i = 0; i < 4; i++) {
		job_make(&jobs[i], (uint64_t)i + 1, 10, 90, &c);
		jobs[i].rec.n_stop = 0;
		CHECK(ring_req_sp_push(r.req, &jobs[i].rec, jobs[i].prompt, 10) == 0);
	}
	CHECK(pk_backend_start(b) == 0);
	while (jobs[3].n_got < 2)
		drain_tok(r.tok, 64);
	CHECK(ring_ctl_sp_push(r.ctl, RING_CTL_SHUTDOWN, 0) == 0);
	for (spins = 0; spins < 200000 && !all_done(4); spins++) {
		drain_tok(r.tok, 64);
		sleep_us(20);
	}
	for (i = 0; i < 4; i++)
		CHECK(jobs[i].finish == RING_FINISH_CANCELLED);
	pk_backend_stop(b);
	pk_backend_stats(b, &st);
	CHECK(st.exited == 1 && st.notices_out == 4);
	pk_backend_destroy(b);
	pkt_rings_free(&r);
}

int main(void)
{
	fm_init(&FM, V, 4, 30);
	main_workload();
	last_t = 0;
	drain_and_shutdown();
	fm_fini(&FM);
	if (check_exit())
		return 1;
	printf("test_emu: ok\n");
	return 0;
}
