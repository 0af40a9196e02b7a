/* SPDX-License-Identifier: Apache-2.0 */
/*
 * persistent_kernel/pk_sched.h: the scheduling policy of the persistent kernel (named pk_sched.h,
 * not sched.h, which would shadow libc's <sched.h> for every file built with -Ipersistent_kernel):
 * FCFS admission,
 * continuous batching with chunked prefill under a per-step token budget (decode tokens first,
 * then prefill chunks, then new admissions), paged KV through kv.h, preemption by recompute,
 * cancellation, stop conditions, and bounded output (a step emits at most as many records as the
 * token ring has free slots), prompt logprobs (RING_REQ_PROMPT_LOGPROBS: one record per prompt
 * position, computed during prefill, within a per-step budget of logits rows). docs/scheduler.md
 * states every rule.
 *
 * One call, sched_schedule(), turns the current state into a batch plan: for each scheduled request
 * its slot, the token ids to feed (a prefill chunk, or the last generated token), pos0 and its page
 * table. The plan maps 1:1 onto model/cpu.h's struct mdl_cpu_seq and onto the GPU step.
 *
 * Plain C: fixed-size arrays inside one preallocated struct sched, no libc calls, no recursion, so
 * the same source compiles as CUDA device code (PK_HD) and runs inside the persistent kernel.
 *
 * Ownership: the caller allocates struct sched (a few MiB: every request's token history lives in
 *   it) and calls sched_init(); there is nothing to free. Plan entries point into the struct and
 *   stay valid until the next call that changes the state.
 * Threading: one thread (the emulation loop, or one GPU thread) owns a struct sched; nothing here
 *   is thread-safe. The rings are the only way other threads talk to it.
 */
#ifndef OFFPATH_PK_SCHED_H
#define OFFPATH_PK_SCHED_H

#include <stdint.h>
#include "kv.h"
#include "pk_atomic.h"
#include "ring.h"

#define SCHED_MAX_REQS 64   /* request entries: running + waiting + finished-awaiting-notice */
#define SCHED_MAX_CTX  8192 /* tokens per request, prompt + generated */
#define SCHED_MAX_EOS  8
/* Default of sched_config.prompt_lp_rows: logits rows one step may spend on prompt-logprob
 * records (over all its sequences). The backend's logits buffer holds max_seqs + prompt_lp_rows
 * rows of vocab_size floats, allocated at create. */
#define SCHED_PROMPT_LP_ROWS 64

enum sched_state {
	SCHED_FREE = 0,
	SCHED_WAITING = 1, /* in the waiting queue (new, or preempted for recompute) */
	SCHED_RUNNING = 2, /* admitted: holds pages, in the running list */
	SCHED_DONE = 3,    /* finished without a token (cancel, error); a notice is pending */
};

struct sched_config {
	int32_t n_pages;     /* KV pool pages, <= KV_MAX_PAGES */
	int32_t page_tokens; /* positions per page */
	int32_t max_ctx;     /* prompt + generated, <= SCHED_MAX_CTX and <= n_pages * page_tokens */
	int32_t step_tokens; /* token budget of one step (sum of chunk lengths) */
	int32_t max_seqs;    /* sequences per step, <= SCHED_MAX_REQS */
	int32_t max_running; /* admitted requests at once; 0 = SCHED_MAX_REQS */
	int32_t vocab_size;  /* prompt ids outside [0, vocab_size) are rejected */
	int32_t n_eos;
	int32_t eos_ids[SCHED_MAX_EOS];
	int32_t prompt_lp_rows; /* prompt-logprob records (logits rows) per step, 1 .. SCHED_MAX_CTX;
				 * 0 = SCHED_PROMPT_LP_ROWS. Prefill chunks of RING_REQ_PROMPT_LOGPROBS
				 * requests are cut to fit it. */
};

struct sched_req {
	uint64_t id;
	int32_t state;      /* enum sched_state */
	int32_t n_prompt;   /* prompt length as submitted */
	int32_t n_tokens;   /* prompt + generated so far: tokens[0 .. n_tokens) */
	int32_t n_gen;      /* generated so far; the sampling counter of the next token */
	int32_t n_computed; /* positions [0, n_computed) are in the KV cache */
	int32_t n_prompt_lp; /* RING_TOK_PROMPT records emitted (positions 1 .. n_prompt_lp); kept
			      * across preemption, so recompute never emits one twice */
	int32_t max_tokens; /* 0: score the prompt only (with RING_REQ_PROMPT_LOGPROBS) */
	int32_t n_stop;
	int32_t stop_ids[RING_MAX_STOP];
	int32_t n_top;
	int32_t top_k;
	float temperature;
	float top_p;
	uint64_t seed;
	uint64_t plan_step; /* sched.step when last put in a plan (preemption skips those) */
	int32_t n_preempt;  /* times preempted (stats) */
	uint32_t flags;     /* RING_REQ_* from the request */
	uint8_t finish;     /* DONE: enum ring_finish of the pending notice */
	int32_t err;        /* DONE: negative errno of an ERROR notice */
	struct kv_table pages;
	int32_t tokens[SCHED_MAX_CTX];
};

/* One request's share of a step. tokens/pages point into struct sched.
 * Logits: the step computes rows for the LAST n_logits tokens of the chunk (positions
 * pos0 + n_tokens - n_logits ..), n_logits = n_prompt_lp + emits: row k < n_prompt_lp is the
 * position before prompt position prompt_lp_pos0 + k (its RING_TOK_PROMPT record,
 * sched_prompt_lp_rec()); with emits, the last row is sampled into the new token. */
struct sched_seq {
	int32_t slot;     /* request entry, 0 .. SCHED_MAX_REQS-1 */
	int32_t n_tokens; /* tokens to feed, >= 1 */
	int32_t pos0;     /* position of tokens[0] */
	int32_t emits;    /* 1: the last token's logits are sampled into a new token */
	int32_t n_logits; /* logits rows wanted: n_prompt_lp + emits (0 .. n_tokens) */
	int32_t n_prompt_lp;    /* RING_TOK_PROMPT records this chunk produces */
	int32_t prompt_lp_pos0; /* prompt position of the first of them */
	const int32_t *tokens;
	const int32_t *pages; /* covers positions [0, pos0 + n_tokens) */
	int32_t n_pages;
};

struct sched_plan {
	int32_t n_seqs;
	int32_t n_tokens;    /* sum of seqs[].n_tokens <= step_tokens */
	int32_t n_emits;     /* seqs with emits = 1 */
	int32_t n_prompt_lp; /* sum of seqs[].n_prompt_lp <= prompt_lp_rows;
			      * n_emits + n_prompt_lp <= credit */
	int32_t n_logits;    /* sum of seqs[].n_logits <= max_seqs + prompt_lp_rows */
	int32_t n_preempted; /* requests preempted while building this plan */
	int32_t n_admitted;
	struct sched_seq seqs[SCHED_MAX_REQS];
};

struct sched {
	struct sched_config cfg;
	uint64_t step; /* plans built so far */
	int32_t n_running;
	int32_t running[SCHED_MAX_REQS]; /* slots in (re)admission order, oldest first */
	int32_t n_waiting;
	int32_t wait_head;               /* waitq is a circular deque of slots */
	int32_t waitq[SCHED_MAX_REQS];
	int32_t n_done; /* entries in SCHED_DONE */
	uint64_t n_preempt_total;
	struct kv_pool kv;
	struct sched_req reqs[SCHED_MAX_REQS];
};

/* Returns 0, or -EINVAL when cfg breaks a limit above. */
PK_HD int sched_init(struct sched *s, const struct sched_config *cfg);

/* Take one request from the request ring (copies the prompt). Returns its slot (>= 0); -EAGAIN
 * when every entry is in use (leave it in the ring: that is the backpressure that makes the host
 * answer 429). An invalid request (prompt empty or not shorter than max_ctx -- at most max_ctx with
 * max_tokens 0 --, ids outside the vocabulary, max_tokens < 1 -- or 0 without
 * RING_REQ_PROMPT_LOGPROBS --, too many stop ids or top-N) still takes a slot, in SCHED_DONE with
 * an ERROR notice (err -E2BIG for length, -EINVAL otherwise). A scoring request (max_tokens 0)
 * with a one-token prompt has no record to give: it gets a LENGTH notice (LAST|NOTOK) at once. */
PK_HD int sched_submit(struct sched *s, const struct ring_req_rec *r, const int32_t *prompt);

/* Cancel by id: frees its pages at once; a CANCELLED notice is pending. 0, or -ENOENT when no
 * waiting or running request has that id. */
PK_HD int sched_cancel(struct sched *s, uint64_t id);

/* Fail a request that is in the current plan (the step reported an error): frees its pages; an
 * ERROR notice with err is pending. */
PK_HD void sched_fail(struct sched *s, int32_t slot, int32_t err);

/* Cancel every waiting and running request (shutdown). */
PK_HD void sched_cancel_all(struct sched *s);

/* Pop one pending notice (a final record without a token: cancelled or error) into *o and free its
 * entry. Returns 1, or 0 when none is pending. Each notice needs one token-ring slot. */
PK_HD int sched_next_notice(struct sched *s, struct ring_tok_rec *o);

/* Build the next batch plan. credit: token-ring slots the step may fill: generated tokens plus
 * prompt-logprob records never exceed it (a chunk is cut, or the request held, never waited for).
 * Returns plan->n_seqs (0: nothing to run). */
PK_HD int sched_schedule(struct sched *s, int credit, struct sched_plan *plan);

/* After the step ran, before sched_advance(q): record k (0 .. q->n_prompt_lp-1) of seq q's prompt
 * logprobs into *o (id, token = prompt[pos], pos, flags RING_TOK_PROMPT, plus LAST and finish
 * LENGTH on a scoring request's last one; the caller adds logprob, top-N and time). Returns the
 * row of the seq's logits (of q->n_logits) whose log_softmax gives them. Changes no state. */
PK_HD int sched_prompt_lp_rec(const struct sched *s, const struct sched_seq *q, int32_t k,
			      struct ring_tok_rec *o);

/* After the step ran: account seq q of the plan (its prompt-logprob records count as emitted).
 * For an emitting seq, token is the sampled id (from the seq's last logits row);
 * it is appended, stop conditions are checked, and *o gets the record (id, token, pos, flags,
 * finish; the caller adds logprobs and time). A finished request's pages and entry are freed
 * before this returns (a scoring request finishes here when its prompt is done; its LAST was on
 * the last prompt record). Returns 1 when *o was filled, 0 for a non-emitting chunk. */
PK_HD int sched_advance(struct sched *s, const struct sched_seq *q, int32_t token,
			struct ring_tok_rec *o);

/* 1 when no request is waiting, running or awaiting a notice. */
PK_HD int sched_idle(const struct sched *s);

#endif
