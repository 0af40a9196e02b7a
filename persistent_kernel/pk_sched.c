/* SPDX-License-Identifier: Apache-2.0 */
/*
 * persistent_kernel/pk_sched.c: the scheduling policy (see pk_sched.h, docs/scheduler.md).
 * Every loop is bounded by SCHED_MAX_REQS, KV_MAX_SEQ_PAGES or a prompt length; linear scans
 * because n <= 64 fits one warp's worth of work; rejected: heaps and hash maps (state would not be
 * plain arrays any more and the device copy would need pointers).
 */
#include <errno.h>
#include "pk_sched.h"

#define SCHED_MIN(a, b) ((a) < (b) ? (a) : (b))

PK_HD int sched_init(struct sched *s, const struct sched_config *cfg)
{
	int i, rc;

	if (cfg->max_seqs < 1 || cfg->max_seqs > SCHED_MAX_REQS || cfg->max_running < 0 ||
	    cfg->max_running > SCHED_MAX_REQS || cfg->step_tokens < 1 || cfg->vocab_size < 1 ||
	    cfg->n_eos < 0 || cfg->n_eos > SCHED_MAX_EOS || cfg->page_tokens < 1 ||
	    cfg->max_ctx < 2 || cfg->max_ctx > SCHED_MAX_CTX || cfg->prompt_lp_rows < 0 ||
	    cfg->prompt_lp_rows > SCHED_MAX_CTX ||
	    (int64_t)cfg->max_ctx > (int64_t)cfg->n_pages * cfg->page_tokens ||
	    (int64_t)cfg->max_ctx > (int64_t)KV_MAX_SEQ_PAGES * cfg->page_tokens)
		return -EINVAL;
	rc = kv_init(&s->kv, cfg->n_pages, cfg->page_tokens);
	if (rc)
		return rc;
	s->cfg = *cfg;
	if (s->cfg.max_running == 0)
		s->cfg.max_running = SCHED_MAX_REQS;
	if (s->cfg.prompt_lp_rows == 0)
		s->cfg.prompt_lp_rows = SCHED_PROMPT_LP_ROWS;
	s->step = 0;
	s->n_running = 0;
	s->n_waiting = 0;
	s->wait_head = 0;
	s->n_done = 0;
	s->n_preempt_total = 0;
	for (i = 0; i < SCHED_MAX_REQS; i++) {
		s->reqs[i].state = SCHED_FREE;
		s->reqs[i].pages.n = 0;
	}
	return 0;
}

/* ---- queues ---------------------------------------------------------------------------------- */

static PK_HD void wait_push_tail(struct sched *s, int32_t slot)
{
	s->waitq[(s->wait_head + s->n_waiting) % SCHED_MAX_REQS] = slot;
	s->n_waiting++;
}

static PK_HD void wait_push_head(struct sched *s, int32_t slot)
{
	s->wait_head = (s->wait_head + SCHED_MAX_REQS - 1) % SCHED_MAX_REQS;
	s->waitq[s->wait_head] = slot;
	s->n_waiting++;
}

static PK_HD int32_t wait_at(const struct sched *s, int i)
{
	return s->waitq[(s->wait_head + i) % SCHED_MAX_REQS];
}

/* Remove entry i of the waiting deque, keeping order. */
static PK_HD void wait_remove(struct sched *s, int i)
{
	for (; i + 1 < s->n_waiting; i++)
		s->waitq[(s->wait_head + i) % SCHED_MAX_REQS] = wait_at(s, i + 1);
	s->n_waiting--;
}

static PK_HD void running_remove(struct sched *s, int i)
{
	for (; i + 1 < s->n_running; i++)
		s->running[i] = s->running[i + 1];
	s->n_running--;
}

static PK_HD int running_index(const struct sched *s, int32_t slot)
{
	int i;

	for (i = 0; i < s->n_running; i++)
		if (s->running[i] == slot)
			return i;
	return -1;
}

/* ---- intake ---------------------------------------------------------------------------------- */

static PK_HD void set_done(struct sched *s, struct sched_req *r, uint8_t finish, int32_t err)
{
	kv_table_release(&s->kv, &r->pages);
	r->state = SCHED_DONE;
	r->finish = finish;
	r->err = err;
	s->n_done++;
}

PK_HD int sched_submit(struct sched *s, const struct ring_req_rec *in, const int32_t *prompt)
{
	struct sched_req *r = 0;
	int32_t slot, i;
	int32_t err = 0;

	for (slot = 0; slot < SCHED_MAX_REQS; slot++)
		if (s->reqs[slot].state == SCHED_FREE) {
			r = &s->reqs[slot];
			break;
		}
	if (!r)
		return -EAGAIN;
	r->id = in->id;
	r->n_prompt = (int32_t)in->prompt_len;
	r->n_tokens = 0;
	r->n_gen = 0;
	r->n_computed = 0;
	r->n_prompt_lp = 0;
	r->max_tokens = in->max_tokens;
	r->n_stop = in->n_stop;
	r->n_top = in->n_top;
	r->top_k = in->top_k;
	r->temperature = in->temperature;
	r->top_p = in->top_p;
	r->seed = in->seed;
	r->plan_step = 0;
	r->n_preempt = 0;
	r->flags = in->flags;
	r->pages.n = 0;
	if (in->prompt_len < 1 || in->max_tokens < 0 ||
	    (in->max_tokens == 0 && !(in->flags & RING_REQ_PROMPT_LOGPROBS)) ||
	    in->n_stop > RING_MAX_STOP || in->n_top > RING_MAX_TOP)
		err = -EINVAL;
	else if (in->prompt_len > (uint32_t)s->cfg.max_ctx ||
		 (in->max_tokens > 0 && in->prompt_len == (uint32_t)s->cfg.max_ctx))
		err = -E2BIG; /* room for one generated token, unless only scoring */
	for (i = 0; !err && i < (int32_t)in->prompt_len; i++) {
		if (prompt[i] < 0 || prompt[i] >= s->cfg.vocab_size)
			err = -EINVAL;
		r->tokens[i] = prompt[i];
	}
	if (err) {
		r->n_stop = 0;
		set_done(s, r, RING_FINISH_ERROR, err);
		return slot;
	}
	for (i = 0; i < r->n_stop; i++)
		r->stop_ids[i] = in->stop_ids[i];
	r->n_tokens = r->n_prompt;
	if (r->max_tokens == 0 && r->n_prompt == 1) { /* scoring, and no position to score */
		set_done(s, r, RING_FINISH_LENGTH, 0);
		return slot;
	}
	r->state = SCHED_WAITING;
	wait_push_tail(s, slot);
	return slot;
}

/* ---- cancellation and notices ---------------------------------------------------------------- */

PK_HD int sched_cancel(struct sched *s, uint64_t id)
{
	int i;

	for (i = 0; i < s->n_running; i++)
		if (s->reqs[s->running[i]].id == id) {
			struct sched_req *r = &s->reqs[s->running[i]];

			running_remove(s, i);
			set_done(s, r, RING_FINISH_CANCELLED, 0);
			return 0;
		}
	for (i = 0; i < s->n_waiting; i++)
		if (s->reqs[wait_at(s, i)].id == id) {
			struct sched_req *r = &s->reqs[wait_at(s, i)];

			wait_remove(s, i);
			set_done(s, r, RING_FINISH_CANCELLED, 0);
			return 0;
		}
	return -ENOENT;
}

PK_HD void sched_fail(struct sched *s, int32_t slot, int32_t err)
{
	struct sched_req *r = &s->reqs[slot];
	int i;

	if (r->state == SCHED_RUNNING) {
		i = running_index(s, slot);
		if (i >= 0)
			running_remove(s, i);
	} else if (r->state == SCHED_WAITING) {
		for (i = 0; i < s->n_waiting; i++)
			if (wait_at(s, i) == slot) {
				wait_remove(s, i);
				break;
			}
	} else {
		return;
	}
	set_done(s, r, RING_FINISH_ERROR, err);
}

PK_HD void sched_cancel_all(struct sched *s)
{
	while (s->n_running > 0) {
		struct sched_req *r = &s->reqs[s->running[s->n_running - 1]];

		s->n_running--;
		set_done(s, r, RING_FINISH_CANCELLED, 0);
	}
	while (s->n_waiting > 0) {
		struct sched_req *r = &s->reqs[wait_at(s, s->n_waiting - 1)];

		s->n_waiting--;
		set_done(s, r, RING_FINISH_CANCELLED, 0);
	}
}

static PK_HD void rec_clear(struct ring_tok_rec *o)
{
	int i;

	o->id = 0;
	o->t_ns = 0;
	o->token = -1;
	o->logprob = 0.0f;
	o->pos = 0;
	o->flags = 0;
	o->finish = RING_FINISH_NONE;
	o->n_top = 0;
	o->err = 0;
	o->reserved = 0;
	for (i = 0; i < RING_MAX_TOP; i++) {
		o->top_ids[i] = 0;
		o->top_lps[i] = 0.0f;
	}
}

PK_HD int sched_next_notice(struct sched *s, struct ring_tok_rec *o)
{
	int slot;

	if (s->n_done == 0)
		return 0;
	for (slot = 0; slot < SCHED_MAX_REQS; slot++) {
		struct sched_req *r = &s->reqs[slot];

		if (r->state != SCHED_DONE)
			continue;
		rec_clear(o);
		o->id = r->id;
		o->pos = r->n_tokens;
		o->flags = RING_TOK_LAST | RING_TOK_NOTOK;
		o->finish = r->finish;
		o->err = r->err;
		r->state = SCHED_FREE;
		s->n_done--;
		return 1;
	}
	return 0;
}

/* ---- building the plan ----------------------------------------------------------------------- */

/* One past the last position the request computes: its whole history; a scoring request
 * (max_tokens 0) stops before the last prompt position, whose logits nobody needs. */
static PK_HD int32_t seq_end(const struct sched_req *r)
{
	return r->max_tokens == 0 ? r->n_prompt - 1 : r->n_tokens;
}

/* First prompt position whose RING_TOK_PROMPT record is still owed; n_prompt when none is. */
static PK_HD int32_t lp_next(const struct sched_req *r)
{
	return (r->flags & RING_REQ_PROMPT_LOGPROBS) ? 1 + r->n_prompt_lp : r->n_prompt;
}

/* Prompt records a chunk [pos0, pos0 + c) produces, the first being for position a (>= pos0 + 1):
 * positions a .. min(pos0 + c, n_prompt - 1), each from the logits at the position before. */
static PK_HD int32_t lp_count(const struct sched_req *r, int32_t pos0, int32_t c, int32_t a)
{
	int32_t last = SCHED_MIN(pos0 + c, r->n_prompt - 1);

	return last >= a ? last - a + 1 : 0;
}

static PK_HD void retire(struct sched *s, int32_t slot)
{
	struct sched_req *r = &s->reqs[slot];
	int i = running_index(s, slot);

	if (i >= 0)
		running_remove(s, i);
	kv_table_release(&s->kv, &r->pages);
	r->state = SCHED_FREE;
}

/* Preempt by recompute: drop every page, forget the cache, go back to the head of the waiting
 * queue. tokens[] keeps prompt + generated, so the recompute prefill covers both and the next
 * sampled token uses counter n_gen as it would have. */
static PK_HD void preempt(struct sched *s, int running_i)
{
	int32_t slot = s->running[running_i];
	struct sched_req *r = &s->reqs[slot];

	running_remove(s, running_i);
	kv_table_release(&s->kv, &r->pages);
	r->n_computed = 0;
	r->state = SCHED_WAITING;
	r->n_preempt++;
	s->n_preempt_total++;
	wait_push_head(s, slot);
}

/* The youngest running request younger than `slot` that is not in the current plan: its running
 * index, or -1. */
static PK_HD int find_victim(const struct sched *s, int32_t slot)
{
	int i;

	for (i = s->n_running - 1; i >= 0; i--) {
		const struct sched_req *v = &s->reqs[s->running[i]];

		if (s->running[i] == slot)
			return -1; /* only older ones left */
		if (v->plan_step != s->step)
			return i;
	}
	return -1;
}

/* Schedule the next chunk of running request `slot` into the plan, within the budgets (tokens,
 * token-ring credit, prompt-logprob rows). Returns 1 when a seq was added.
 *
 * Records of a chunk of c tokens from pos0: prompt records lp_count(c) (positions a ..) plus one
 * generated token when it is the final chunk of a generating request. While prompt records are
 * owed nothing has been generated yet, so for c >= a - pos0 - 1 the total is pos0 + c - a + 1
 * (one record per token fed, the final chunk's last token giving the generated one): cutting c
 * by k cuts k records. */
static PK_HD int schedule_one(struct sched *s, int32_t slot, struct sched_plan *pl, int *budget,
			      int *credit, int *lp_rows)
{
	struct sched_req *r = &s->reqs[slot];
	int remaining = seq_end(r) - r->n_computed;
	int pt = s->cfg.page_tokens;
	int32_t pos0 = r->n_computed;
	int32_t a = pos0 + 1 > lp_next(r) ? pos0 + 1 : lp_next(r); /* first owed record */
	int chunk, cap, n_lp, emits;
	struct sched_seq *q;

	if (remaining < 1 || *budget < 1 || pl->n_seqs >= s->cfg.max_seqs)
		return 0;
	chunk = SCHED_MIN(*budget, remaining);
	if (a < r->n_prompt && lp_count(r, pos0, chunk, a) > *lp_rows)
		chunk = *lp_rows + a - 1 - pos0; /* exactly lp_rows prompt records: smaller */
	n_lp = lp_count(r, pos0, chunk, a);
	emits = r->max_tokens > 0 && chunk == remaining;
	if (n_lp + emits > *credit) /* no room on the token ring for all: compute fewer */
		chunk = SCHED_MIN(chunk, n_lp > 0 ? *credit + a - 1 - pos0 : remaining - 1);
	if (chunk < 1)
		return 0;
	/* Positions the held pages plus the free pool can cover; out of pages: preempt younger ones. */
	cap = (r->pages.n + kv_free_count(&s->kv)) * pt - r->n_computed;
	while (cap < 1) {
		int v = find_victim(s, slot);

		if (v < 0)
			return 0; /* hold: an older request holds the pages and will progress */
		preempt(s, v);
		pl->n_preempted++;
		cap = (r->pages.n + kv_free_count(&s->kv)) * pt - r->n_computed;
	}
	chunk = SCHED_MIN(chunk, cap);
	if (kv_table_reserve(&s->kv, &r->pages, r->n_computed + chunk))
		return 0; /* cannot happen: cap counted the free pages */
	q = &pl->seqs[pl->n_seqs++];
	q->slot = slot;
	q->n_tokens = chunk;
	q->pos0 = pos0;
	q->emits = r->max_tokens > 0 && chunk == remaining;
	q->n_prompt_lp = lp_count(r, pos0, chunk, a);
	q->prompt_lp_pos0 = a;
	q->n_logits = q->n_prompt_lp + q->emits; /* rows from position a - 1 (or the last one) */
	q->tokens = &r->tokens[r->n_computed];
	q->pages = r->pages.pages;
	q->n_pages = r->pages.n;
	r->plan_step = s->step;
	pl->n_tokens += chunk;
	pl->n_emits += q->emits;
	pl->n_prompt_lp += q->n_prompt_lp;
	pl->n_logits += q->n_logits;
	*budget -= chunk;
	*credit -= q->n_prompt_lp + q->emits;
	*lp_rows -= q->n_prompt_lp;
	return 1;
}

PK_HD int sched_schedule(struct sched *s, int credit, struct sched_plan *pl)
{
	int budget = s->cfg.step_tokens;
	int lp_rows = s->cfg.prompt_lp_rows;
	int i;

	s->step++;
	pl->n_seqs = 0;
	pl->n_tokens = 0;
	pl->n_emits = 0;
	pl->n_prompt_lp = 0;
	pl->n_logits = 0;
	pl->n_preempted = 0;
	pl->n_admitted = 0;
	if (credit < 0)
		credit = 0;

	/* 1. decode: running requests with exactly one token to feed, oldest first. A preemption
	 * removes a younger entry from running[], so the index stays valid for older ones. */
	for (i = 0; i < s->n_running; i++) {
		struct sched_req *r = &s->reqs[s->running[i]];

		if (seq_end(r) - r->n_computed == 1)
			schedule_one(s, s->running[i], pl, &budget, &credit, &lp_rows);
	}
	/* 2. prefill chunks of running requests, oldest first. */
	for (i = 0; i < s->n_running; i++) {
		struct sched_req *r = &s->reqs[s->running[i]];

		if (r->plan_step != s->step && seq_end(r) - r->n_computed > 1)
			schedule_one(s, s->running[i], pl, &budget, &credit, &lp_rows);
	}
	/* 3. admit FCFS from the waiting head: never past a request that does not fit, and not in a
	 * step that preempted (the victim would bounce straight back). A request is admitted when the
	 * free pages cover its whole current sequence (prompt + generated). */
	while (s->n_waiting > 0 && pl->n_preempted == 0 && s->n_running < s->cfg.max_running &&
	       budget > 0 && pl->n_seqs < s->cfg.max_seqs) {
		int32_t slot = wait_at(s, 0);
		struct sched_req *r = &s->reqs[slot];

		if (kv_free_count(&s->kv) < kv_pages_for(&s->kv, r->n_tokens))
			break;
		s->wait_head = (s->wait_head + 1) % SCHED_MAX_REQS;
		s->n_waiting--;
		r->state = SCHED_RUNNING;
		s->running[s->n_running++] = slot;
		pl->n_admitted++;
		schedule_one(s, slot, pl, &budget, &credit, &lp_rows);
	}
	return pl->n_seqs;
}

/* ---- after the step -------------------------------------------------------------------------- */

static PK_HD int is_stop(const struct sched *s, const struct sched_req *r, int32_t tok)
{
	int i;

	for (i = 0; !(r->flags & RING_REQ_IGNORE_EOS) && i < s->cfg.n_eos; i++)
		if (s->cfg.eos_ids[i] == tok)
			return 1;
	for (i = 0; i < r->n_stop; i++)
		if (r->stop_ids[i] == tok)
			return 1;
	return 0;
}

PK_HD int sched_prompt_lp_rec(const struct sched *s, const struct sched_seq *q, int32_t k,
			      struct ring_tok_rec *o)
{
	const struct sched_req *r = &s->reqs[q->slot];
	int32_t pos = q->prompt_lp_pos0 + k;

	rec_clear(o);
	o->id = r->id;
	o->token = r->tokens[pos];
	o->pos = pos;
	o->flags = RING_TOK_PROMPT;
	if (r->max_tokens == 0 && pos == r->n_prompt - 1) { /* scoring only: this ends it */
		o->flags |= RING_TOK_LAST;
		o->finish = RING_FINISH_LENGTH;
	}
	return k; /* rows start at position prompt_lp_pos0 - 1 */
}

PK_HD int sched_advance(struct sched *s, const struct sched_seq *q, int32_t token,
			struct ring_tok_rec *o)
{
	struct sched_req *r = &s->reqs[q->slot];
	uint8_t finish = RING_FINISH_NONE;

	r->n_computed += q->n_tokens;
	r->n_prompt_lp += q->n_prompt_lp;
	if (r->max_tokens == 0) { /* scoring: done once every prompt record is out */
		if (r->n_computed >= seq_end(r))
			retire(s, q->slot);
		return 0;
	}
	if (!q->emits)
		return 0;
	r->tokens[r->n_tokens++] = token;
	r->n_gen++;
	rec_clear(o);
	o->id = r->id;
	o->token = token;
	o->pos = r->n_tokens - 1;
	o->n_top = 0;
	if (r->n_gen == 1)
		o->flags |= RING_TOK_FIRST;
	if (is_stop(s, r, token))
		finish = RING_FINISH_STOP;
	else if (r->n_gen >= r->max_tokens || r->n_tokens >= s->cfg.max_ctx)
		finish = RING_FINISH_LENGTH;
	if (finish != RING_FINISH_NONE) {
		o->flags |= RING_TOK_LAST;
		o->finish = finish;
		retire(s, q->slot);
	}
	return 1;
}

PK_HD int sched_idle(const struct sched *s)
{
	return s->n_running == 0 && s->n_waiting == 0 && s->n_done == 0;
}
