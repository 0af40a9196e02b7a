/* SPDX-License-Identifier: Apache-2.0 */
/*
 * tests/persistent_kernel/test_sched.c: the scheduling policy rule by rule (docs/scheduler.md),
 * driven with fake_model.h. The reference for generated tokens is fm_reference(): the same fake
 * model run on one request alone without paging, batching or preemption; for prompt-logprob
 * records (RING_REQ_PROMPT_LOGPROBS) the logits row handed out with each record must equal
 * fm_logits_at() over the prompt prefix, recomputed here without paging.
 */
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "check.h"
#include "fake_model.h"
#include "pk_sched.h"

#define V       50
#define MAXJ    200
#define MAXTOK  256

struct job {
	uint64_t id;
	int n_prompt;
	int32_t prompt[MAXTOK];
	struct mdl_sampling sp;
	int max_tokens, n_stop, n_top;
	int32_t stops[RING_MAX_STOP];
	int32_t ref[MAXTOK];
	int n_ref, ref_finish;
	int32_t got[MAXTOK];
	int n_got, got_finish, got_err, last_seen, first_plan_step;
	int submitted, cancelled;
	uint32_t flags;
	int n_plp;    /* RING_TOK_PROMPT records taken (positions 1 .. n_plp, in order) */
	int plp_last; /* a prompt record carried LAST */
};

#define LP_ROWS_MAX 128 /* the tests' prompt_lp_rows stay below this */
static int plp_mid_preempt; /* preemptions seen while a request owed part of its prompt records */

static struct job jobs[MAXJ];
static int n_jobs;
static uint64_t rng = 12345;

static uint32_t rnd(uint32_t n)
{
	rng = mdl_mix64(rng);
	return (uint32_t)(rng >> 33) % n;
}

static struct job *job_by_id(uint64_t id)
{
	return id >= 1 && id <= (uint64_t)n_jobs ? &jobs[id - 1] : NULL;
}

static void job_make(struct job *j, int n_prompt, int max_tokens, float temp, int n_stop)
{
	int i;

	memset(j, 0, sizeof(*j));
	j->id = (uint64_t)(j - jobs) + 1;
	j->n_prompt = n_prompt;
	for (i = 0; i < n_prompt; i++)
		j->prompt[i] = (int32_t)rnd(V);
	j->sp.temperature = temp;
	j->sp.top_k = 0;
	j->sp.top_p = 1.0f;
	j->sp.seed = j->id * 7919u;
	j->max_tokens = max_tokens;
	j->n_stop = n_stop;
	for (i = 0; i < n_stop; i++)
		j->stops[i] = (int32_t)rnd(V);
	j->first_plan_step = -1;
}

static void job_ref(const struct fake_model *fm, struct job *j, const struct sched_config *c)
{
	int32_t stops[RING_MAX_STOP + SCHED_MAX_EOS];
	int i, n = 0;

	if (j->max_tokens == 0) { /* scoring: prompt records only, then LENGTH */
		j->n_ref = 0;
		j->ref_finish = RING_FINISH_LENGTH;
		return;
	}
	for (i = 0; i < c->n_eos; i++)
		stops[n++] = c->eos_ids[i];
	for (i = 0; i < j->n_stop; i++)
		stops[n++] = j->stops[i];
	j->n_ref = fm_reference(fm, j->prompt, j->n_prompt, &j->sp, j->max_tokens, c->max_ctx, stops,
				n, j->ref, &j->ref_finish);
}

static int job_submit(struct sched *s, struct job *j)
{
	struct ring_req_rec r;
	int i, rc;

	memset(&r, 0, sizeof(r));
	r.id = j->id;
	r.seed = j->sp.seed;
	r.prompt_len = (uint32_t)j->n_prompt;
	r.temperature = j->sp.temperature;
	r.top_p = j->sp.top_p;
	r.top_k = j->sp.top_k;
	r.max_tokens = j->max_tokens;
	r.n_stop = (uint16_t)j->n_stop;
	r.n_top = (uint16_t)j->n_top;
	r.flags = j->flags;
	for (i = 0; i < j->n_stop; i++)
		r.stop_ids[i] = j->stops[i];
	rc = sched_submit(s, &r, j->prompt);
	if (rc >= 0)
		j->submitted = 1;
	return rc;
}

/* Every page is in exactly one place: the free stack or one running request's table. */
static void check_pages(const struct sched *s)
{
	static uint8_t seen[KV_MAX_PAGES];
	int i, k, total = 0;

	memset(seen, 0, sizeof(seen));
	CHECK(kv_check(&s->kv) == 0);
	for (i = 0; i < s->kv.n_free; i++)
		seen[s->kv.stack[i]]++;
	total += s->kv.n_free;
	for (i = 0; i < SCHED_MAX_REQS; i++) {
		const struct sched_req *r = &s->reqs[i];

		if (r->state != SCHED_RUNNING) {
			CHECK(r->pages.n == 0);
			continue;
		}
		CHECK(r->pages.n * s->cfg.page_tokens >= r->n_computed);
		for (k = 0; k < r->pages.n; k++) {
			CHECK(seen[r->pages.pages[k]] == 0);
			seen[r->pages.pages[k]]++;
		}
		total += r->pages.n;
	}
	CHECK(total == s->kv.n_pages);
}

/* One scheduler iteration as the emulation runs it. Returns plan.n_seqs. */
static int drive(struct sched *s, struct fake_model *fm, int credit, struct sched_plan *pl)
{
	static struct mdl_cpu_seq seqs[SCHED_MAX_REQS];
	static float logits[(SCHED_MAX_REQS + LP_ROWS_MAX) * V];
	static float want[V];
	struct ring_tok_rec o;
	int i, n, k = 0, tok_sum = 0, lp_sum = 0, rows = 0, credit0;

	CHECK(s->cfg.prompt_lp_rows <= LP_ROWS_MAX);
	while (credit > 0 && sched_next_notice(s, &o)) {
		struct job *j = job_by_id(o.id);

		CHECK(j && (o.flags & RING_TOK_LAST) && (o.flags & RING_TOK_NOTOK));
		if (j) {
			CHECK(j->got_finish == 0);
			j->got_finish = o.finish;
			j->got_err = o.err;
		}
		credit--;
	}
	credit0 = credit;
	n = sched_schedule(s, credit, pl);
	CHECK(pl->n_seqs <= s->cfg.max_seqs);
	CHECK(pl->n_emits + pl->n_prompt_lp <= credit); /* records never overflow the token ring */
	CHECK(pl->n_prompt_lp <= s->cfg.prompt_lp_rows);
	CHECK(pl->n_logits <= s->cfg.max_seqs + s->cfg.prompt_lp_rows);
	CHECK(s->n_running <= s->cfg.max_running);
	for (i = 0; i < n; i++) {
		const struct sched_seq *q = &pl->seqs[i];
		const struct sched_req *r = &s->reqs[q->slot];
		int j2;

		CHECK(r->state == SCHED_RUNNING);
		CHECK(q->pos0 == r->n_computed);
		CHECK(q->tokens == &r->tokens[q->pos0]);
		CHECK(q->n_pages * s->cfg.page_tokens >= q->pos0 + q->n_tokens);
		CHECK(q->emits == (r->max_tokens > 0 && q->pos0 + q->n_tokens == r->n_tokens));
		CHECK(q->n_logits == q->n_prompt_lp + q->emits && q->n_logits <= q->n_tokens);
		if (q->n_prompt_lp > 0) { /* rows start at the position before the first record */
			CHECK(r->flags & RING_REQ_PROMPT_LOGPROBS);
			CHECK(q->prompt_lp_pos0 == 1 + r->n_prompt_lp);
			CHECK(q->prompt_lp_pos0 - 1 == q->pos0 + q->n_tokens - q->n_logits);
			CHECK(q->prompt_lp_pos0 + q->n_prompt_lp - 1 <= r->n_prompt - 1);
		}
		for (j2 = 0; j2 < i; j2++)
			CHECK(pl->seqs[j2].slot != q->slot);
		tok_sum += q->n_tokens;
		lp_sum += q->n_prompt_lp;
		rows += q->n_logits;
		seqs[i].tokens = q->tokens;
		seqs[i].n_tokens = q->n_tokens;
		seqs[i].pos0 = q->pos0;
		seqs[i].pages = q->pages;
		seqs[i].logits = q->n_logits ? &logits[V * k] : NULL;
		seqs[i].n_logits = q->n_logits;
		k += q->n_logits;
	}
	CHECK(tok_sum == pl->n_tokens && tok_sum <= s->cfg.step_tokens);
	CHECK(lp_sum == pl->n_prompt_lp && rows == pl->n_logits);
	(void)credit0;
	check_pages(s);
	if (n)
		CHECK(fm_step(fm, seqs, n) == 0);
	for (i = 0; i < n; i++) {
		const struct sched_seq *q = &pl->seqs[i];
		const struct sched_req *r = &s->reqs[q->slot];
		struct job *j = job_by_id(r->id);
		int32_t tok = 0;

		if (q->emits) {
			struct mdl_sampling sp = {r->temperature, r->top_k, r->top_p, r->seed};

			tok = fm_sample(V, seqs[i].logits + (size_t)(q->n_logits - 1) * V, &sp,
					(uint64_t)r->n_gen, NULL); /* the last row samples */
		}
		if (j && j->first_plan_step < 0)
			j->first_plan_step = (int)s->step;
		for (k = 0; k < q->n_prompt_lp && j; k++) { /* prompt records, before advance */
			int row = sched_prompt_lp_rec(s, q, k, &o);

			CHECK(row >= 0 && row < q->n_logits);
			CHECK(o.id == j->id && (o.flags & RING_TOK_PROMPT) && o.pos == 1 + j->n_plp);
			CHECK(!(o.flags & (RING_TOK_FIRST | RING_TOK_NOTOK)) && j->n_got == 0);
			CHECK(o.pos < j->n_prompt && o.token == j->prompt[o.pos]);
			CHECK(!!(o.flags & RING_TOK_LAST) ==
			      (j->max_tokens == 0 && o.pos == j->n_prompt - 1));
			if (o.flags & RING_TOK_LAST) {
				CHECK(o.finish == RING_FINISH_LENGTH);
				j->plp_last = 1;
				j->got_finish = o.finish;
			}
			fm_logits_at(fm, j->prompt, o.pos, want);
			CHECK(memcmp(want, seqs[i].logits + (size_t)row * V, sizeof(want)) == 0);
			j->n_plp++;
		}
		if (!sched_advance(s, q, tok, &o))
			continue;
		CHECK(j != NULL);
		if (!j)
			continue;
		CHECK(o.id == j->id && o.token == tok);
		CHECK(o.pos == j->n_prompt + j->n_got);
		CHECK(!!(o.flags & RING_TOK_FIRST) == (j->n_got == 0));
		CHECK(j->got_finish == 0);
		if (j->n_got < MAXTOK)
			j->got[j->n_got++] = tok;
		if (o.flags & RING_TOK_LAST)
			j->got_finish = o.finish;
		else
			CHECK(o.finish == RING_FINISH_NONE);
	}
	CHECK(fm->n_bad == 0);
	for (i = 0; i < SCHED_MAX_REQS; i++) {
		const struct sched_req *r = &s->reqs[i];

		if (r->state == SCHED_WAITING && r->n_preempt > 0 && r->n_computed == 0 &&
		    (r->flags & RING_REQ_PROMPT_LOGPROBS) && r->n_prompt_lp > 0 &&
		    r->n_prompt_lp < r->n_prompt - 1 && pl->n_preempted > 0)
			plp_mid_preempt++;
	}
	return n;
}

static struct sched *S;
static struct sched_plan PL;

static void cfg_default(struct sched_config *c)
{
	memset(c, 0, sizeof(*c));
	c->n_pages = 40;
	c->page_tokens = 4;
	c->max_ctx = 100;
	c->step_tokens = 24;
	c->max_seqs = 6;
	c->max_running = 8;
	c->vocab_size = V;
	c->n_eos = 1;
	c->eos_ids[0] = 7;
}

/* S from config c, and a fake model with c's pages. */
static void start(const struct sched_config *c, struct fake_model *fm)
{
	CHECK(sched_init(S, c) == 0);
	fm_init(fm, V, c->page_tokens, c->n_pages);
}

/* The references of jobs[0 .. n), each submitted after its reference is made. */
static void ref_and_submit(const struct fake_model *fm, const struct sched_config *c, int n)
{
	for (int i = 0; i < n; i++) {
		job_ref(fm, &jobs[i], c);
		CHECK(job_submit(S, &jobs[i]) >= 0);
	}
}

/* Drive S with a fixed credit per step until it is idle, at most `max` steps; returns the steps
 * counted (max + 1 when it stopped at the bound). */
static int run(struct fake_model *fm, int credit, int max)
{
	int steps = 0;

	while (!sched_idle(S) && steps++ < max)
		drive(S, fm, credit, &PL);
	return steps;
}

/* Run until idle (bounded); credit per step fixed. */
static void run_idle(struct fake_model *fm, int credit)
{
	run(fm, credit, 5000);
	CHECK(sched_idle(S));
}

/* The job got its reference tokens. */
static int job_is_ref(const struct job *j)
{
	return j->n_got == j->n_ref && memcmp(j->got, j->ref, sizeof(int32_t) * (size_t)j->n_ref) == 0;
}

/* Random workload with tight KV pages and a random token-ring credit per step: budgets hold every
 * step (checked in drive()), preemption happens, every finished request's tokens equal the
 * reference's, and the pool is whole at the end. A third of the requests want prompt logprobs
 * (some of them only that: max_tokens 0) with lp_rows rows per step: each gets every prompt
 * record exactly once, in order, with the right logits, preempted or not. */
static void test_random_workload(int n_pages, int credit_max, unsigned seed, int lp_rows)
{
	struct sched_config c;
	struct fake_model fm;
	int i, next = 0, steps = 0, n_plp = 0;

	cfg_default(&c);
	c.prompt_lp_rows = lp_rows;
	c.n_pages = n_pages;
	if (c.max_ctx > n_pages * c.page_tokens)
		c.max_ctx = n_pages * c.page_tokens;
	rng = seed;
	start(&c, &fm);
	n_jobs = 60;
	for (i = 0; i < n_jobs; i++) {
		job_make(&jobs[i], 1 + (int)rnd(60), 1 + (int)rnd(40), rnd(2) ? 0.8f : 0.0f,
			 (int)rnd(3));
		if (rnd(3) == 0) {
			jobs[i].flags = RING_REQ_PROMPT_LOGPROBS;
			if (rnd(4) == 0)
				jobs[i].max_tokens = 0;
			n_plp++;
		}
		job_ref(&fm, &jobs[i], &c);
	}
	while (steps < 20000) {
		int k = (int)rnd(4);

		while (k-- > 0 && next < n_jobs && job_submit(S, &jobs[next]) >= 0)
			next++;
		drive(S, &fm, (int)rnd((uint32_t)credit_max + 1), &PL);
		steps++;
		if (next == n_jobs && sched_idle(S))
			break;
	}
	CHECK(sched_idle(S));
	for (i = 0; i < n_jobs; i++) {
		struct job *j = &jobs[i];

		CHECK(j->n_got == j->n_ref);
		CHECK(memcmp(j->got, j->ref, sizeof(int32_t) * (size_t)j->n_ref) == 0);
		CHECK(j->got_finish == j->ref_finish);
		CHECK(j->n_plp == (j->flags & RING_REQ_PROMPT_LOGPROBS ? j->n_prompt - 1 : 0));
		CHECK(j->plp_last == (j->max_tokens == 0 && j->n_prompt > 1));
		if (j->n_got != j->n_ref || j->got_finish != j->ref_finish) {
			fprintf(stderr, "job %d: got %d tokens finish %d, want %d finish %d\n", i,
				j->n_got, j->got_finish, j->n_ref, j->ref_finish);
			break;
		}
	}
	CHECK(kv_free_count(&S->kv) == c.n_pages);
	printf("random workload: pages %d credit<=%d lp_rows %d: %d steps, %llu preemptions, "
	       "%d prompt-logprob requests, %d preempted mid-records so far\n", n_pages, credit_max,
	       S->cfg.prompt_lp_rows, steps, (unsigned long long)S->n_preempt_total, n_plp,
	       plp_mid_preempt);
	if (n_pages < 40)
		CHECK(S->n_preempt_total > 0); /* the workload is sized to force it */
	fm_fini(&fm);
}

/* FCFS: with room for one running request at a time, requests start in submission order; with
 * room for all, the earlier never starts later. */
static void test_fcfs(void)
{
	struct sched_config c;
	struct fake_model fm;
	int i, steps = 0;

	for (int mr = 1; mr <= 3; mr += 2) {
		cfg_default(&c);
		c.n_pages = 200;
		c.max_running = mr;
		start(&c, &fm);
		n_jobs = 12;
		for (i = 0; i < n_jobs; i++)
			job_make(&jobs[i], 5 + (int)rnd(30), 3 + (int)rnd(5), 0.0f, 0);
		ref_and_submit(&fm, &c, n_jobs);
		steps += run(&fm, 64, 10000 - steps); /* one bound over both rounds */
		for (i = 1; i < n_jobs; i++)
			CHECK(jobs[i].first_plan_step >= jobs[i - 1].first_plan_step);
		if (mr == 1)
			for (i = 1; i < n_jobs; i++) /* strictly after the previous one ended */
				CHECK(jobs[i].first_plan_step > jobs[i - 1].first_plan_step);
		fm_fini(&fm);
	}
}

/* The chunking set-up: an 8-token step budget, pages to spare, no EOS, prompt_lp_rows rows; S and
 * fm started for two jobs. */
static void start_chunking(struct sched_config *c, struct fake_model *fm, int prompt_lp_rows)
{
	cfg_default(c);
	c->step_tokens = 8;
	c->n_pages = 100;
	c->n_eos = 0;
	c->prompt_lp_rows = prompt_lp_rows;
	start(c, fm);
	n_jobs = 2;
}

/* Chunked prefill: a 37-token prompt with an 8-token budget goes in chunks 8,8,8,8,5 at
 * pos0 0,8,16,24,32, and only the last chunk emits. Then decode goes first: a second request's
 * prefill gets the budget left after the first's decode token. */
static void test_chunking(void)
{
	struct sched_config c;
	struct fake_model fm;
	int i;

	start_chunking(&c, &fm, 0);
	job_make(&jobs[0], 37, 20, 0.0f, 0);
	job_make(&jobs[1], 30, 5, 0.0f, 0);
	CHECK(sched_init(S, &c) == 0); /* again: a fresh scheduler */
	CHECK(job_submit(S, &jobs[0]) >= 0);
	for (i = 0; i < 5; i++) {
		CHECK(drive(S, &fm, 4, &PL) == 1);
		CHECK(PL.seqs[0].pos0 == 8 * i);
		CHECK(PL.seqs[0].n_tokens == (i < 4 ? 8 : 5));
		CHECK(PL.seqs[0].emits == (i == 4));
	}
	CHECK(jobs[0].n_got == 1);
	CHECK(job_submit(S, &jobs[1]) >= 0);
	CHECK(drive(S, &fm, 4, &PL) == 2);
	CHECK(PL.seqs[0].slot != PL.seqs[1].slot);
	CHECK(PL.seqs[0].n_tokens == 1 && PL.seqs[0].emits); /* decode first */
	CHECK(PL.seqs[1].n_tokens == 7 && PL.seqs[1].pos0 == 0 && !PL.seqs[1].emits);
	/* No token-ring credit: no emitting seq; the decode is held, the prefill goes on. */
	CHECK(drive(S, &fm, 0, &PL) == 1);
	CHECK(PL.n_emits == 0 && PL.seqs[0].n_tokens == 8 && PL.seqs[0].pos0 == 7);
	/* The prefill's final chunk with no credit stops one token short. */
	CHECK(drive(S, &fm, 0, &PL) == 1);
	CHECK(PL.n_emits == 0 && PL.seqs[0].n_tokens == 8 && PL.seqs[0].pos0 == 15);
	CHECK(drive(S, &fm, 0, &PL) == 1);
	CHECK(PL.n_emits == 0 && PL.seqs[0].n_tokens == 6 && PL.seqs[0].pos0 == 23);
	CHECK(drive(S, &fm, 0, &PL) == 0);
	CHECK(drive(S, &fm, 1, &PL) == 1 && PL.n_emits == 1);
	sched_cancel_all(S);
	while (sched_next_notice(S, &(struct ring_tok_rec){0}))
		;
	CHECK(sched_idle(S) && kv_free_count(&S->kv) == c.n_pages);
	fm_fini(&fm);
}

/* The preemption set-up: pages for 48 positions (the context), no EOS, prompt_lp_rows rows, and
 * two sampled requests: the older of 10 + 30 tokens, the younger of n_prompt + max_tokens with
 * flags. References made, both submitted. */
static void preempt_pair(struct sched_config *c, struct fake_model *fm, int prompt_lp_rows,
			 int n_prompt, int max_tokens, uint32_t flags)
{
	cfg_default(c);
	c->n_eos = 0;
	c->n_pages = 12; /* 48 positions */
	c->max_ctx = 48;
	c->prompt_lp_rows = prompt_lp_rows;
	start(c, fm);
	n_jobs = 2;
	job_make(&jobs[0], 10, 30, 1.0f, 0);
	job_make(&jobs[1], n_prompt, max_tokens, 1.0f, 0);
	jobs[1].flags = flags;
	ref_and_submit(fm, c, 2);
}

/* Preemption by recompute, deterministic: two long requests and pages for only one of them at
 * full length. The younger loses its pages, is recomputed from prompt + generated, and both
 * produce the reference tokens (sampled, so the counter must carry over). */
static void test_preempt(void)
{
	struct sched_config c;
	struct fake_model fm;
	int i;

	preempt_pair(&c, &fm, 0, 10, 30, 0);
	run(&fm, 8, 1000);
	CHECK(S->n_preempt_total > 0);
	CHECK(S->reqs[0].n_preempt + S->reqs[1].n_preempt > 0);
	for (i = 0; i < 2; i++) {
		CHECK(jobs[i].n_got == 30 && jobs[i].got_finish == RING_FINISH_LENGTH);
		CHECK(memcmp(jobs[i].got, jobs[i].ref, sizeof(int32_t) * 30) == 0);
	}
	CHECK(kv_free_count(&S->kv) == c.n_pages);
	fm_fini(&fm);
}

/* Random submit / cancel / step: cancelled requests end with exactly one CANCELLED record, pages
 * come back at once, and nothing leaks. */
static void test_cancel_leak(void)
{
	struct sched_config c;
	struct fake_model fm;
	int i, next = 0, steps = 0, n_cancel = 0;

	cfg_default(&c);
	c.n_pages = 30;
	rng = 777;
	start(&c, &fm);
	n_jobs = 150;
	for (i = 0; i < n_jobs; i++)
		job_make(&jobs[i], 1 + (int)rnd(50), 1 + (int)rnd(30), 0.5f, (int)rnd(2));
	while (steps++ < 20000 && !(next == n_jobs && sched_idle(S))) {
		if (next < n_jobs && rnd(2) && job_submit(S, &jobs[next]) >= 0)
			next++;
		if (next > 0 && rnd(5) == 0) {
			struct job *j = &jobs[rnd((uint32_t)next)];
			int before = kv_free_count(&S->kv);
			int rc = sched_cancel(S, j->id);

			if (rc == 0) {
				j->cancelled = 1;
				n_cancel++;
				CHECK(kv_free_count(&S->kv) >= before);
				check_pages(S);
			} else {
				CHECK(rc == -ENOENT && j->got_finish != 0);
			}
		}
		drive(S, &fm, 1 + (int)rnd(6), &PL);
	}
	CHECK(next == n_jobs && sched_idle(S));
	for (i = 0; i < n_jobs; i++) {
		CHECK(jobs[i].got_finish != 0);
		CHECK(jobs[i].cancelled == (jobs[i].got_finish == RING_FINISH_CANCELLED));
	}
	CHECK(n_cancel > 10);
	CHECK(kv_free_count(&S->kv) == c.n_pages && kv_check(&S->kv) == 0);
	fm_fini(&fm);
}

/* Stop conditions and rejections. */
static void test_stops_and_rejects(void)
{
	struct sched_config c;
	struct fake_model fm;
	struct ring_tok_rec o;
	int i, k;

	cfg_default(&c);
	c.n_eos = 0;
	c.max_ctx = 40;
	start(&c, &fm);
	n_jobs = 6;
	job_make(&jobs[0], 8, 1, 0.0f, 0);  /* max_tokens 1: one token, FIRST and LAST */
	job_make(&jobs[1], 39, 10, 0.0f, 0); /* prompt max_ctx-1: one token, LENGTH */
	job_make(&jobs[2], 8, 20, 0.0f, 0);  /* its 3rd reference token becomes a stop id */
	job_make(&jobs[3], 40, 5, 0.0f, 0);  /* prompt == max_ctx: ERROR -E2BIG */
	job_make(&jobs[4], 8, 5, 0.0f, 0);   /* token id out of vocabulary: ERROR -EINVAL */
	jobs[4].prompt[3] = V;
	job_make(&jobs[5], 8, 0, 0.0f, 0);   /* max_tokens 0: ERROR -EINVAL */
	job_ref(&fm, &jobs[2], &c);
	jobs[2].n_stop = 2;
	jobs[2].stops[0] = V + 5; /* never generated */
	jobs[2].stops[1] = jobs[2].ref[2];
	for (i = 0; i < 3; i++)
		if (jobs[2].ref[i] == jobs[2].ref[2]) /* the first occurrence stops it */
			break;
	for (k = 0; k < 6; k++)
		CHECK(job_submit(S, &jobs[k]) >= 0);
	run(&fm, 8, 1000);
	CHECK(jobs[0].n_got == 1 && jobs[0].got_finish == RING_FINISH_LENGTH);
	CHECK(jobs[1].n_got == 1 && jobs[1].got_finish == RING_FINISH_LENGTH);
	CHECK(jobs[2].n_got == i + 1 && jobs[2].got_finish == RING_FINISH_STOP);
	CHECK(jobs[3].n_got == 0 && jobs[3].got_finish == RING_FINISH_ERROR &&
	      jobs[3].got_err == -E2BIG);
	CHECK(jobs[4].got_finish == RING_FINISH_ERROR && jobs[4].got_err == -EINVAL);
	CHECK(jobs[5].got_finish == RING_FINISH_ERROR && jobs[5].got_err == -EINVAL);

	/* EOS from the config stops like a stop id. */
	cfg_default(&c);
	c.n_eos = 1;
	n_jobs = 1;
	job_make(&jobs[0], 6, 30, 0.0f, 0);
	c.n_eos = 0;
	job_ref(&fm, &jobs[0], &c);
	c.n_eos = 1;
	c.eos_ids[0] = jobs[0].ref[jobs[0].n_ref > 4 ? 4 : jobs[0].n_ref - 1];
	job_ref(&fm, &jobs[0], &c);
	CHECK(sched_init(S, &c) == 0);
	CHECK(job_submit(S, &jobs[0]) >= 0);
	run(&fm, 8, 1000);
	CHECK(jobs[0].got_finish == RING_FINISH_STOP && jobs[0].n_got == jobs[0].n_ref);
	CHECK(jobs[0].got[jobs[0].n_got - 1] == c.eos_ids[0]);
	/* ... unless the request says RING_REQ_IGNORE_EOS: then it runs to max_tokens. */
	{
		struct job keep = jobs[0];
		int eos = c.eos_ids[0];

		job_make(&jobs[0], keep.n_prompt, 30, 0.0f, 0);
		memcpy(jobs[0].prompt, keep.prompt, sizeof(keep.prompt));
		jobs[0].flags = RING_REQ_IGNORE_EOS;
		c.n_eos = 0;
		job_ref(&fm, &jobs[0], &c);
		c.n_eos = 1;
		CHECK(sched_init(S, &c) == 0);
		CHECK(job_submit(S, &jobs[0]) >= 0);
		run(&fm, 8, 1000);
		CHECK(jobs[0].got_finish == RING_FINISH_LENGTH && jobs[0].n_got == 30);
		CHECK(memcmp(jobs[0].got, jobs[0].ref, sizeof(int32_t) * 30) == 0);
		for (i = 0, k = 0; i < 30; i++)
			k += jobs[0].got[i] == eos;
		CHECK(k > 0); /* it did generate the EOS id and went on */
	}

	/* Every entry busy: -EAGAIN, and the request can be retried later. */
	CHECK(sched_init(S, &c) == 0);
	n_jobs = 1;
	job_make(&jobs[0], 4, 4, 0.0f, 0);
	for (i = 0; i < SCHED_MAX_REQS; i++)
		CHECK(job_submit(S, &jobs[0]) == i);
	CHECK(job_submit(S, &jobs[0]) == -EAGAIN);
	sched_cancel_all(S);
	for (i = 0; sched_next_notice(S, &o); i++)
		CHECK(o.finish == RING_FINISH_CANCELLED);
	CHECK(i == SCHED_MAX_REQS && sched_idle(S));

	/* Bad configs. */
	cfg_default(&c);
	c.max_ctx = c.n_pages * c.page_tokens + 1;
	CHECK(sched_init(S, &c) == -EINVAL);
	cfg_default(&c);
	c.max_seqs = SCHED_MAX_REQS + 1;
	CHECK(sched_init(S, &c) == -EINVAL);
	fm_fini(&fm);
}

/* Prompt logprobs rule by rule: chunks cut to prompt_lp_rows, credit counting one record per
 * prompt token, holding at zero credit, scoring requests (max_tokens 0), intake limits, and
 * recompute after a preemption that came between two chunks of records. drive() checks every
 * record's logits against fm_logits_at() over the prompt prefix. */
static void test_prompt_lp(void)
{
	struct sched_config c;
	struct fake_model fm;
	int i;

	/* Chunking: 37 prompt tokens, budget 8, 5 record rows a step -> chunks of 5; the last
	 * (35, 2) gives record 36 and the first generated token. A plain request beside it gets the
	 * rest of the token budget. */
	start_chunking(&c, &fm, 5);
	job_make(&jobs[0], 37, 6, 0.7f, 0);
	jobs[0].flags = RING_REQ_PROMPT_LOGPROBS;
	job_make(&jobs[1], 40, 3, 0.0f, 0);
	ref_and_submit(&fm, &c, 2);
	for (i = 0; i < 8; i++) {
		CHECK(drive(S, &fm, 64, &PL) == 2);
		CHECK(PL.seqs[0].pos0 == 5 * i && PL.seqs[0].n_tokens == (i < 7 ? 5 : 2));
		CHECK(PL.seqs[0].n_prompt_lp == (i < 7 ? 5 : 1));
		CHECK(PL.seqs[0].prompt_lp_pos0 == 5 * i + 1 && PL.seqs[0].emits == (i == 7));
		CHECK(PL.seqs[1].n_tokens == (i < 7 ? 3 : 6) && PL.seqs[1].n_prompt_lp == 0);
	}
	CHECK(jobs[0].n_plp == 36 && jobs[0].n_got == 1);
	run_idle(&fm, 64);
	for (i = 0; i < 2; i++)
		CHECK(job_is_ref(&jobs[i]));

	/* Credit: a chunk of K prompt tokens needs K records of credit. With none, the flagged
	 * request is held while a plain one prefills all but its last token; with 3, the flagged
	 * one feeds 3 tokens (3 records) and the plain one is cut to nothing more to emit. */
	CHECK(sched_init(S, &c) == 0);
	job_make(&jobs[0], 10, 4, 0.0f, 0);
	jobs[0].flags = RING_REQ_PROMPT_LOGPROBS;
	job_make(&jobs[1], 8, 4, 0.0f, 0);
	ref_and_submit(&fm, &c, 2);
	CHECK(drive(S, &fm, 0, &PL) == 1);
	CHECK(PL.seqs[0].slot == 1 && PL.seqs[0].n_tokens == 7 && PL.n_emits == 0);
	CHECK(drive(S, &fm, 3, &PL) == 2);
	CHECK(PL.seqs[0].slot == 1 && PL.seqs[0].emits); /* the plain one's last token: "decode" */
	CHECK(PL.seqs[1].slot == 0 && PL.seqs[1].n_tokens == 2 && PL.seqs[1].n_prompt_lp == 2);
	CHECK(PL.n_emits + PL.n_prompt_lp == 3);
	for (i = 0; i < 8 && !sched_idle(S); i++) { /* one record a step from here */
		drive(S, &fm, 1, &PL);
		CHECK(PL.n_emits + PL.n_prompt_lp == (PL.n_seqs ? 1 : 0));
	}
	run_idle(&fm, 1);
	CHECK(jobs[0].n_plp == 9 && jobs[0].n_got == jobs[0].n_ref);
	CHECK(memcmp(jobs[0].got, jobs[0].ref, sizeof(int32_t) * (size_t)jobs[0].n_ref) == 0);

	/* Scoring (max_tokens 0): records 1 .. n-1, the last with LAST|LENGTH; the last prompt
	 * position is never fed. A one-token prompt has nothing to score: a LENGTH notice. A prompt
	 * as long as the context is fine for scoring only. */
	c.max_ctx = 40;
	c.prompt_lp_rows = 0; /* the default, SCHED_PROMPT_LP_ROWS */
	CHECK(sched_init(S, &c) == 0);
	CHECK(S->cfg.prompt_lp_rows == SCHED_PROMPT_LP_ROWS);
	n_jobs = 9;
	job_make(&jobs[0], 12, 0, 0.0f, 0);
	job_make(&jobs[1], 1, 0, 0.0f, 0);
	job_make(&jobs[2], 40, 0, 0.0f, 0);  /* == max_ctx, scoring: accepted */
	job_make(&jobs[3], 40, 1, 0.0f, 0);  /* == max_ctx, generating: -E2BIG */
	job_make(&jobs[4], 41, 0, 0.0f, 0);  /* > max_ctx: -E2BIG */
	job_make(&jobs[5], 5, 0, 0.0f, 0);   /* max_tokens 0 without the flag: -EINVAL */
	job_make(&jobs[6], 5, -1, 0.0f, 0);  /* negative: -EINVAL */
	job_make(&jobs[7], 5, 2, 0.0f, 0);   /* top-20: fine */
	job_make(&jobs[8], 5, 2, 0.0f, 0);   /* top-21: -EINVAL */
	for (i = 0; i < n_jobs; i++)
		if (i != 5)
			jobs[i].flags = RING_REQ_PROMPT_LOGPROBS;
	jobs[7].n_top = RING_MAX_TOP;
	jobs[8].n_top = RING_MAX_TOP + 1;
	for (i = 0; i < n_jobs; i++)
		CHECK(job_submit(S, &jobs[i]) >= 0);
	CHECK(drive(S, &fm, 64, &PL) >= 1);
	CHECK(PL.seqs[0].slot == 0 && PL.seqs[0].n_tokens == 8 && PL.seqs[0].n_prompt_lp == 8);
	CHECK(drive(S, &fm, 64, &PL) >= 1);
	CHECK(PL.seqs[0].slot == 0 && PL.seqs[0].n_tokens == 3 && PL.seqs[0].n_prompt_lp == 3);
	CHECK(!PL.seqs[0].emits && PL.seqs[0].n_logits == 3);
	CHECK(jobs[0].plp_last && jobs[0].got_finish == RING_FINISH_LENGTH && jobs[0].n_plp == 11);
	CHECK(S->reqs[0].state == SCHED_FREE);
	run_idle(&fm, 64);
	CHECK(jobs[0].n_got == 0);
	CHECK(jobs[1].got_finish == RING_FINISH_LENGTH && jobs[1].got_err == 0 && !jobs[1].n_plp);
	CHECK(jobs[2].got_finish == RING_FINISH_LENGTH && jobs[2].n_plp == 39 && !jobs[2].n_got);
	CHECK(jobs[3].got_finish == RING_FINISH_ERROR && jobs[3].got_err == -E2BIG);
	CHECK(jobs[4].got_finish == RING_FINISH_ERROR && jobs[4].got_err == -E2BIG);
	for (i = 5; i < 7; i++)
		CHECK(jobs[i].got_finish == RING_FINISH_ERROR && jobs[i].got_err == -EINVAL);
	CHECK(jobs[7].got_finish == RING_FINISH_LENGTH && jobs[7].n_plp == 4 && jobs[7].n_got == 2);
	CHECK(jobs[8].got_finish == RING_FINISH_ERROR && jobs[8].got_err == -EINVAL);
	CHECK(kv_free_count(&S->kv) == c.n_pages);
	fm_fini(&fm);

	/* Preemption between two chunks of records: an older plain request (10 + 30) and a younger
	 * flagged one (30 + 5) with pages for 48 positions and 4 record rows a step. The younger is
	 * preempted owing one record; its recompute feeds the 28 positions already scored without
	 * records and sends record 29 once. Both produce the reference tokens. */
	i = plp_mid_preempt;
	preempt_pair(&c, &fm, 4, 30, 5, RING_REQ_PROMPT_LOGPROBS);
	run_idle(&fm, 8);
	CHECK(S->reqs[1].n_preempt > 0 && plp_mid_preempt > i);
	CHECK(jobs[1].n_plp == 29);
	for (i = 0; i < 2; i++)
		CHECK(job_is_ref(&jobs[i]) && jobs[i].got_finish == RING_FINISH_LENGTH);
	CHECK(kv_free_count(&S->kv) == c.n_pages);
	printf("prompt logprobs: chunking, credit, scoring, preemption (%d mid-record) ok\n",
	       plp_mid_preempt);
	fm_fini(&fm);
}

int main(void)
{
	S = malloc(sizeof(*S));
	if (!S)
		return 1;
	test_chunking();
	test_fcfs();
	test_preempt();
	test_stops_and_rejects();
	test_cancel_leak();
	test_prompt_lp();
	test_random_workload(40, 8, 1, 0);
	test_random_workload(18, 3, 2, 3);
	test_random_workload(25, 1, 3, 7);
	test_random_workload(200, 16, 4, 5);
	test_random_workload(16, 6, 5, 2);
	CHECK(plp_mid_preempt > 0); /* recompute over prompt records already sent was exercised */
	free(S);
	if (check_exit())
		return 1;
	printf("test_sched: ok\n");
	return 0;
}
