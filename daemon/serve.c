/* SPDX-License-Identifier: Apache-2.0 */
/*
 * daemon/serve.c: `offpathd serve`: the OpenAI-compatible server.
 *
 * The data path, in the order a request travels it:
 *   nic/ing_uring.c (io_uring accept/recv/parse, this thread)  -> srv_on_request()
 *     api_parse() -> chat_render() -> tok_encode() -> ring_req_sp_push()    request ring
 *   persistent_kernel/ backend (CPU emulation thread, or the GPU) admits, batches, steps, samples
 *     -> ring_tok_sp_push()                                                 token ring
 *   srv_on_poll() (this thread, every loop iteration) -> ring_tok_sc_pop_burst()
 *     -> tok_stream_push() -> stop_push() -> sse_write_text() -> ing_stream_write()
 * Cancellation (client gone, stop string, drain timeout) goes back through the control ring.
 *
 * Threading: everything here runs on the one ingest thread that runs ing_run(), except the signal
 *   handler (sets a flag) and the backend (its own thread, or the GPU), which shares only the rings.
 * Memory: the request table, per-request detokenizers, the output scratch and the rings are
 *   allocated at boot. Per request, api_parse() allocates the parsed body and a non-streaming
 *   request grows its text/logprob buffers; nothing is allocated per token while streaming.
 */
#include <errno.h>
#include <getopt.h>
#include <math.h>
#include <signal.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include "api.h"
#include "boot.h"
#include "cmd.h"
#include "engine.h"
#include "http.h"
#include "ing.h"
#include "log.h"
#include "metrics.h"
#include "pk_sched.h"
#include "ring.h"
#include "sample.h"
#include "sse.h"
#include "stop.h"

#define SRV_OUT_CAP   (256 * 1024) /* one SSE event or error body; responses are built here */
#define SRV_POP_BURST 64

struct srv_opts {
	const char *model;
	const char *listen;
	const char *backend;
	const char *served_name;
	int threads;
	int max_queue;   /* request ring slots (power of two) */
	int max_live;    /* requests the host tracks at once: queued + running + finishing */
	int kv_pages;
	int page_tokens;
	int step_tokens;
	int max_seqs;
	int drain_timeout_ms;
};

enum sreq_state {
	SREQ_FREE = 0,
	SREQ_LIVE,     /* in the rings, answering the client */
	SREQ_DETACHED, /* the client's answer is done or gone; waiting for the LAST record */
};

/* Host-side state of one request. Indexed by the low 16 bits of its ring id. */
struct sreq {
	enum sreq_state state;
	uint32_t gen; /* high bits of the ring id; bumped on every reuse */
	uint64_t id;
	struct ing_conn conn;
	struct api_request req;
	bool parsed; /* req holds a parsed body (api_request_free at the end) */
	bool cancel_pending; /* a cancel could not be pushed yet (control ring full) */
	bool stream;
	char api_id[API_ID_LEN];
	int64_t created;
	int n_prompt;
	int n_gen;
	int n_top; /* top logprobs per token, or -1 when logprobs are off */
	double t_arrival, t_first, t_last;
	struct tok_stream *ts;
	struct stop_matcher stop;
	struct sse_stream sse;
	/* Non-streaming accumulation, grown per request, kept across reuse. */
	char *text;
	size_t text_len, text_cap;
	struct api_logprob *lp;
	struct api_top *top; /* n_gen x RING_MAX_TOP */
	size_t lp_cap;
	char *echo_text; /* echo: the prompt text (owned) */
	size_t echo_len;
	/* echo + logprobs: one record per prompt token (the first has none), grown per request. */
	bool prompt_lp;     /* asked the scheduler for RING_TOK_PROMPT records */
	bool echo_sent;     /* streaming: the echo event is out */
	int32_t prompt0;    /* the first prompt token (it gets no record) */
	int n_plp;
	size_t plp_cap;
	struct api_logprob *plp;
	struct api_top *ptop; /* plp_cap x RING_MAX_TOP */
};

struct srv {
	struct srv_opts o;
	struct boot_model bm;
	struct tok_enc *enc;
	struct api_config acfg;
	const char *names[2];
	struct met *met;
	struct ing_server *ing;
	struct engine eng; /* the rings and the scheduler backend */
	struct sreq *reqs;
	int n_live;
	uint64_t boot_rand, n_ids;
	int32_t *ids;     /* encode scratch: max_model_len + 1 */
	char *prompt_buf; /* chat render scratch */
	size_t prompt_cap;
	char *out;        /* SRV_OUT_CAP */
	char *stop_out;   /* STOP_OUT_CAP of one token's text */
	struct ring_tok_rec recs[SRV_POP_BURST];
	bool draining;
	double drain_deadline;
	struct ing_conn *flush; /* draining: connections whose last bytes may still be unsent */
	int n_flush;
	bool drain_cancelled;
};

static atomic_int srv_signalled; /* set by the signal handler; read by srv_on_poll() */
static struct ing_server *srv_ing_for_signal;

static double now_s(void)
{
	struct timespec ts;
	clock_gettime(CLOCK_MONOTONIC, &ts);
	return (double)ts.tv_sec + 1e-9 * (double)ts.tv_nsec;
}

static void srv_signal(int sig)
{
	(void)sig;
	/* Relaxed: the ingest loop polls it; ing_stop() only wakes the loop (async-signal-safe). */
	if (atomic_fetch_add_explicit(&srv_signalled, 1, memory_order_relaxed) >= 1 &&
	    srv_ing_for_signal)
		ing_stop(srv_ing_for_signal); /* a second signal: stop without draining */
}

/* ---- responses --------------------------------------------------------------------------- */

static void srv_count_status(struct srv *s, int status)
{
	if (status >= 500)
		met_add(s->met, MET_ERR_5XX, 1);
	else if (status >= 400)
		met_add(s->met, MET_ERR_4XX, 1);
}

static void srv_respond_error(struct srv *s, struct ing_conn c, const struct api_error *e)
{
	size_t n = api_error_json(e, s->out, SRV_OUT_CAP);
	const char *extra = e->status == 429 ? "Content-Type: application/json\r\nRetry-After: 1\r\n"
					     : "Content-Type: application/json\r\n";
	srv_count_status(s, e->status);
	ing_respond(s->ing, c, e->status, extra, s->out, n < SRV_OUT_CAP ? n : SRV_OUT_CAP - 1);
}

static void srv_error(struct srv *s, struct ing_conn c, int status, const char *param,
		      const char *code, const char *msg)
{
	struct api_error e;
	api_error_set(&e, status, param, code, "%s", msg);
	srv_respond_error(s, c, &e);
}

static void srv_respond_json(struct srv *s, struct ing_conn c, int status, const char *body,
			     size_t len)
{
	int r = ing_respond(s->ing, c, status, "Content-Type: application/json\r\n", body, len);
	if (r == -EMSGSIZE) /* larger than a connection's output buffer: say so, never go silent */
		srv_error(s, c, 500, NULL, "response_too_large",
			  "the response is larger than the server's output buffer; ask for it with "
			  "\"stream\": true");
}

/* ---- the request table ------------------------------------------------------------------- */

static struct sreq *srv_req_by_id(struct srv *s, uint64_t id)
{
	uint32_t idx = (uint32_t)(id & 0xffffu);
	if (idx >= (uint32_t)s->o.max_live)
		return NULL;
	struct sreq *r = &s->reqs[idx];
	return r->state != SREQ_FREE && r->id == id ? r : NULL;
}

static struct sreq *srv_req_alloc(struct srv *s)
{
	for (int i = 0; i < s->o.max_live; i++) { /* O(max_live) once per request; max_live <= 4096 */
		struct sreq *r = &s->reqs[i];
		if (r->state != SREQ_FREE)
			continue;
		r->gen++;
		r->id = ((uint64_t)r->gen << 16) | (uint64_t)i;
		r->state = SREQ_LIVE;
		r->parsed = false;
		r->cancel_pending = false;
		r->n_gen = 0;
		r->text_len = 0;
		r->t_first = 0;
		free(r->echo_text);
		r->echo_text = NULL;
		r->echo_len = 0;
		r->prompt_lp = false;
		r->echo_sent = false;
		r->n_plp = 0;
		tok_stream_reset(r->ts);
		s->n_live++;
		return r;
	}
	return NULL;
}

static void srv_req_free(struct srv *s, struct sreq *r)
{
	if (r->parsed)
		api_request_free(&r->req);
	r->parsed = false;
	r->state = SREQ_FREE;
	s->n_live--;
}

static void srv_cancel(struct srv *s, struct sreq *r)
{
	r->cancel_pending = ring_ctl_sp_push(s->eng.rings.ctl, RING_CTL_CANCEL, r->id) != 0;
}

/* Grow a request's non-streaming buffers so that `need` more text bytes and one more logprob fit.
 * Per request and amortised: doubling. */
static int srv_req_reserve(struct sreq *r, size_t need)
{
	if (r->text_len + need + 1 > r->text_cap) {
		size_t cap = r->text_cap ? r->text_cap : 4096;
		while (cap < r->text_len + need + 1)
			cap *= 2;
		char *t = realloc(r->text, cap);
		if (!t)
			return -ENOMEM;
		r->text = t;
		r->text_cap = cap;
	}
	if (r->n_top >= 0 && (size_t)r->n_gen + 1 > r->lp_cap) {
		size_t cap = r->lp_cap ? r->lp_cap * 2 : 64;
		struct api_logprob *lp = realloc(r->lp, cap * sizeof(*lp));
		if (!lp)
			return -ENOMEM;
		r->lp = lp;
		struct api_top *top = realloc(r->top, cap * RING_MAX_TOP * sizeof(*top));
		if (!top)
			return -ENOMEM;
		r->top = top;
		r->lp_cap = cap;
		for (int i = 0; i < r->n_gen; i++) /* re-point after the move */
			r->lp[i].top = r->lp[i].top ? r->top + (size_t)i * RING_MAX_TOP : NULL;
	}
	return 0;
}

/* Room for every prompt token's logprob record (echo + logprobs). Per request, kept for reuse. */
static int srv_req_reserve_prompt(struct sreq *r, int n_prompt)
{
	if ((size_t)n_prompt <= r->plp_cap)
		return 0;
	struct api_logprob *lp = realloc(r->plp, (size_t)n_prompt * sizeof(*lp));
	if (!lp)
		return -ENOMEM;
	r->plp = lp;
	struct api_top *top = realloc(r->ptop, (size_t)n_prompt * RING_MAX_TOP * sizeof(*top));
	if (!top)
		return -ENOMEM;
	r->ptop = top;
	r->plp_cap = (size_t)n_prompt;
	return 0;
}

/* Fill one logprob record from a token-ring record: the token's bytes, its logprob and its
 * top alternatives (tops has room for RING_MAX_TOP). */
static void srv_fill_lp(const struct srv *s, struct api_logprob *lp, struct api_top *tops,
			int n_top, const struct ring_tok_rec *t)
{
	size_t tl;
	lp->token = tok_piece(s->bm.tok, t->token, &tl);
	lp->len = lp->token ? tl : 0;
	if (!lp->token)
		lp->token = "";
	lp->logprob = t->logprob;
	lp->n_top = t->n_top < n_top ? t->n_top : n_top;
	for (int i = 0; i < lp->n_top; i++) {
		tops[i].token = tok_piece(s->bm.tok, t->top_ids[i], &tl);
		tops[i].len = tops[i].token ? tl : 0;
		if (!tops[i].token)
			tops[i].token = "";
		tops[i].logprob = t->top_lps[i];
	}
	lp->top = tops;
}

/* ---- admission ----------------------------------------------------------------------------- */

static int srv_read_prompt(struct srv *s, struct sreq *r, struct api_error *e)
{
	struct api_request *q = &r->req;
	const char *text = NULL;
	size_t len = 0;
	unsigned flags = 0;
	size_t cap = (size_t)s->acfg.max_model_len + 1;

	if (q->prompt_kind == API_PROMPT_IDS) {
		if (q->n_prompt_ids > cap)
			return api_check_length(q, &s->acfg, (int)q->n_prompt_ids, e);
		memcpy(s->ids, q->prompt_ids, q->n_prompt_ids * sizeof(int32_t));
		r->n_prompt = (int)q->n_prompt_ids;
		return 0;
	}
	if (q->prompt_kind == API_PROMPT_CHAT) {
		if (!s->bm.have_chat)
			return api_error_set(e, 400, "messages", NULL,
					     "this model has no chat template offpath can render: %s",
					     s->bm.chat_err);
		struct chat_opts co = {.add_generation_prompt = true,
				       .enable_thinking = q->enable_thinking};
		ssize_t need = chat_render(&s->bm.chat, q->messages, q->n_messages, &co,
					   s->prompt_buf, s->prompt_cap);
		if (need < 0)
			return api_error_set(e, 400, "messages", NULL,
					     "the chat template cannot express these messages");
		if ((size_t)need >= s->prompt_cap)
			return api_error_set(e, 400, "messages", "context_length_exceeded",
					     "the rendered conversation is too long for this model");
		text = s->prompt_buf;
		len = (size_t)need;
		flags = TOK_SPECIAL; /* the template's markers are special tokens */
	} else {
		text = q->prompt;
		len = q->prompt_len;
	}
	ssize_t ne = flags ? tok_encode(s->enc, text, len, s->ids, cap, flags)
			   : boot_encode_prompt(&s->bm, s->enc, text, len, s->ids, cap);
	if (ne < 0)
		return api_error_set(e, 400, "prompt", NULL, "the prompt could not be tokenized");
	r->n_prompt = (int)ne;
	if ((size_t)r->n_prompt >= cap) /* too long: api_check_length words the error */
		return api_check_length(q, &s->acfg, r->n_prompt, e);
	if (r->n_prompt == 0)
		return api_error_set(e, 400, q->prompt_kind == API_PROMPT_CHAT ? "messages" : "prompt",
				     NULL, "the prompt is empty");
	return 0;
}

static int srv_admit(struct srv *s, struct sreq *r, enum api_endpoint ep, const struct http_req *h,
		     struct api_error *e)
{
	struct api_request *q = &r->req;
	int rc = api_parse(q, ep, (const char *)h->body, h->content_length, &s->acfg, e);
	if (rc)
		return rc;
	r->parsed = true;
	if (q->logprobs > RING_MAX_TOP)
		return api_error_set(e, 400, ep == API_CHAT ? "top_logprobs" : "logprobs", NULL,
				     "at most %d top logprobs per token are supported", RING_MAX_TOP);
	if (q->n_stop_ids > RING_MAX_STOP)
		return api_error_set(e, 400, "stop_token_ids", NULL,
				     "at most %d stop_token_ids are supported", RING_MAX_STOP);
	if ((rc = srv_read_prompt(s, r, e)))
		return rc;
	int max_new = api_check_length(q, &s->acfg, r->n_prompt, e);
	if (max_new < 0)
		return max_new;
	if (q->echo) {
		/* The prompt as text: what was sent, or the decoded ids. */
		if (q->prompt_kind == API_PROMPT_TEXT) {
			r->echo_text = malloc(q->prompt_len + 1);
			if (!r->echo_text)
				return api_error_set(e, 500, NULL, NULL, "out of memory");
			memcpy(r->echo_text, q->prompt, q->prompt_len);
			r->echo_len = q->prompt_len;
		} else {
			ssize_t need = tok_decode(s->bm.tok, s->ids, (size_t)r->n_prompt, NULL, 0);
			r->echo_text = malloc(need > 0 ? (size_t)need : 1);
			if (!r->echo_text || need < 0)
				return api_error_set(e, 400, "prompt", NULL, "bad token ids");
			tok_decode(s->bm.tok, s->ids, (size_t)r->n_prompt, r->echo_text, (size_t)need);
			r->echo_len = (size_t)need;
		}
	}

	/* echo + logprobs: the scheduler reports every prompt token's logprob (vLLM's prompt
	 * logprobs); max_tokens 0 with echo scores the prompt without generating. */
	r->prompt_lp = q->echo && (q->logprobs >= 0 || max_new == 0);
	r->prompt0 = s->ids[0];
	if (r->prompt_lp && srv_req_reserve_prompt(r, r->n_prompt))
		return api_error_set(e, 500, NULL, NULL, "out of memory");
	struct ring_req_rec rec = {
		.id = r->id,
		.seed = q->has_seed ? q->seed : (s->boot_rand ^ mdl_mix64(r->id)),
		.temperature = q->temperature,
		.top_p = q->top_p,
		.top_k = q->top_k,
		.max_tokens = max_new,
		.n_stop = (uint16_t)q->n_stop_ids,
		.n_top = (uint16_t)(q->logprobs > 0 ? q->logprobs : 0),
		.flags = (q->ignore_eos ? RING_REQ_IGNORE_EOS : 0u) |
			 (r->prompt_lp ? RING_REQ_PROMPT_LOGPROBS : 0u),
	};
	memcpy(rec.stop_ids, q->stop_ids, (size_t)q->n_stop_ids * sizeof(int32_t));
	rc = ring_req_sp_push(s->eng.rings.req, &rec, s->ids, (uint32_t)r->n_prompt);
	if (rc == -EAGAIN)
		return api_error_set(e, 429, NULL, "queue_full",
				     "the server is at capacity; retry after a moment");
	if (rc)
		return api_error_set(e, 400, "prompt", NULL, "the prompt is too long for the queue");

	r->stream = q->stream;
	r->n_top = q->logprobs;
	r->created = (int64_t)time(NULL);
	api_make_id(r->api_id, ep, s->boot_rand, ++s->n_ids);
	stop_init(&r->stop, q->stop, q->stop_len, q->n_stop);
	met_add(s->met, ep == API_CHAT ? MET_REQ_CHAT : MET_REQ_COMPLETIONS, 1);
	met_add(s->met, MET_PROMPT_TOKENS, (uint64_t)r->n_prompt);
	return 0;
}

/* Start the streamed answer: headers, the chat role event, the echoed prompt. */
static int srv_stream_open(struct srv *s, struct sreq *r)
{
	int rc = ing_stream_begin(s->ing, r->conn, 200,
				  "Content-Type: text/event-stream\r\nCache-Control: no-cache\r\n");
	if (rc)
		return rc;
	sse_init(&r->sse, r->req.endpoint, r->api_id, r->req.model, r->created,
		 r->req.include_usage);
	size_t n = sse_write_role(&r->sse, s->out, SRV_OUT_CAP);
	if (n == 0 && r->echo_len && !r->prompt_lp) { /* with prompt logprobs: once they are in */
		n = sse_write_text(&r->sse, s->out, SRV_OUT_CAP, r->echo_text, r->echo_len, NULL, 0);
		r->echo_sent = true;
	}
	return n ? ing_stream_write(s->ing, r->conn, s->out, n) : 0;
}

static int srv_route_post(struct srv *s, struct ing_conn c, const struct http_req *h,
			  enum api_endpoint ep)
{
	struct api_error e;
	if (s->draining) {
		srv_error(s, c, 503, NULL, "shutting_down", "the server is shutting down");
		return 0;
	}
	struct sreq *r = srv_req_alloc(s);
	if (!r) {
		srv_error(s, c, 429, NULL, "queue_full",
			  "the server is at capacity; retry after a moment");
		return 0;
	}
	r->conn = c;
	r->t_arrival = now_s();
	if (srv_admit(s, r, ep, h, &e)) {
		srv_req_free(s, r);
		srv_respond_error(s, c, &e);
		return 0;
	}
	ing_set_data(s->ing, c, r);
	if (r->stream && srv_stream_open(s, r)) {
		/* The client cannot take even the headers: drop it; the LAST record frees r. */
		r->state = SREQ_DETACHED;
		srv_cancel(s, r);
		ing_close(s->ing, c);
	}
	return 0;
}

static bool path_is(const struct http_req *h, const char *p)
{
	size_t n = strlen(p), len = h->target_len;
	const char *q = memchr(h->target, '?', len);
	if (q)
		len = (size_t)(q - h->target);
	return len == n && !memcmp(h->target, p, n);
}

static int srv_on_request(void *ctx, struct ing_conn c, const struct http_req *h)
{
	struct srv *s = ctx;
	bool get = h->method == HTTP_M_GET || h->method == HTTP_M_HEAD;

	if (path_is(h, "/v1/completions") || path_is(h, "/v1/chat/completions")) {
		if (h->method != HTTP_M_POST) {
			srv_error(s, c, 405, NULL, "method_not_allowed", "use POST");
			return 0;
		}
		return srv_route_post(s, c, h, path_is(h, "/v1/chat/completions") ? API_CHAT
									       : API_COMPLETIONS);
	}
	if (path_is(h, "/health") || path_is(h, "/v1/models") || path_is(h, "/metrics")) {
		if (!get) {
			srv_error(s, c, 405, NULL, "method_not_allowed", "use GET");
			return 0;
		}
		if (path_is(h, "/health")) {
			if (s->draining)
				srv_error(s, c, 503, NULL, "shutting_down", "draining");
			else
				ing_respond(s->ing, c, 200, "Content-Type: application/json\r\n",
					    "{\"status\":\"ok\"}", 15);
		} else if (path_is(h, "/v1/models")) {
			size_t n;
			char *body = api_format_models(&s->acfg, (int64_t)time(NULL), &n);
			if (!body)
				return -ENOMEM;
			srv_respond_json(s, c, 200, body, n);
			free(body);
		} else {
			size_t n = met_render(s->met, s->out, SRV_OUT_CAP);
			ing_respond(s->ing, c, 200, "Content-Type: text/plain; version=0.0.4\r\n",
				    s->out, n < SRV_OUT_CAP ? n : SRV_OUT_CAP - 1);
		}
		return 0;
	}
	srv_error(s, c, 404, NULL, "not_found", "unknown path");
	return 0;
}

/* Errors the transport answers itself (malformed HTTP, oversized body, slow client): the same
 * OpenAI-style JSON as every other error. */
static size_t srv_error_body(void *ctx, int status, char *out, size_t cap, const char **ctype)
{
	struct api_error e;
	(void)ctx;
	(void)ctype;
	api_error_set(&e, status, NULL, NULL, "%s",
		      status == 413   ? "the request body is too large"
		      : status == 431 ? "the request headers are too large"
		      : status == 408 ? "the request took too long to arrive"
		      : status == 503 ? "the server has too many connections; retry after a moment"
				      : "malformed HTTP request");
	return api_error_json(&e, out, cap);
}

/* The client went away: cancel through the control ring; the LAST record frees the entry. */
static void srv_on_close(void *ctx, struct ing_conn c, void *data, enum ing_close_reason why)
{
	struct srv *s = ctx;
	struct sreq *r = data;
	(void)c;
	(void)why;
	if (!r || r->state != SREQ_LIVE)
		return;
	r->state = SREQ_DETACHED;
	srv_cancel(s, r);
}

/* ---- egress: token records to clients ---------------------------------------------------- */

static enum api_finish srv_finish(uint8_t f)
{
	switch (f) {
	case RING_FINISH_STOP:
		return API_FINISH_STOP;
	case RING_FINISH_LENGTH:
		return API_FINISH_LENGTH;
	default:
		return API_FINISH_ABORT;
	}
}

static void srv_prompt_first(const struct srv *s, struct sreq *r);
static int srv_echo_flush(struct srv *s, struct sreq *r);

/* The request's answer is complete (finish known): send the last event or the whole body. */
static void srv_complete(struct srv *s, struct sreq *r, enum api_finish fin)
{
	struct api_usage use = {.prompt_tokens = r->n_prompt, .completion_tokens = r->n_gen};
	size_t n;

	srv_echo_flush(s, r); /* a scoring request (max_tokens 0) has only its echo to send */
	bool with_plp = r->prompt_lp && r->n_top >= 0;
	if (with_plp && !r->stream)
		srv_prompt_first(s, r);
	/* Text held back by the stop matcher is released when no stop string matched. */
	if (r->stop.matched < 0) {
		n = stop_flush(&r->stop, s->stop_out, API_STOP_MAX_LEN);
		if (n && r->stream) {
			size_t m = sse_write_text(&r->sse, s->out, SRV_OUT_CAP, s->stop_out, n, NULL, 0);
			ing_stream_write(s->ing, r->conn, s->out, m);
		} else if (n && !srv_req_reserve(r, n)) {
			memcpy(r->text + r->text_len, s->stop_out, n);
			r->text_len += n;
		}
	}
	met_add(s->met, fin == API_FINISH_STOP     ? MET_FINISH_STOP
			: fin == API_FINISH_LENGTH ? MET_FINISH_LENGTH
						   : MET_FINISH_ABORT,
		1);
	if (r->stream) {
		n = sse_write_finish(&r->sse, s->out, SRV_OUT_CAP, fin, &use);
		ing_stream_write(s->ing, r->conn, s->out, n);
		ing_stream_end(s->ing, r->conn);
	} else {
		struct api_result res = {
			.id = r->api_id,
			.created = r->created,
			.model = r->req.model,
			.text = r->text ? r->text : "",
			.text_len = r->text_len,
			.finish = fin,
			.usage = use,
			.lp = r->n_top >= 0 ? r->lp : NULL,
			.n_lp = r->n_top >= 0 ? (size_t)r->n_gen : 0,
			.prompt_text = r->echo_text,
			.prompt_text_len = r->echo_len,
			.prompt_lp = with_plp ? r->plp : NULL,
			.n_prompt_lp = with_plp ? (size_t)r->n_plp : 0,
		};
		char *body = api_format_response(&r->req, &res, &n);
		if (body) {
			srv_respond_json(s, r->conn, 200, body, n);
			free(body);
		} else {
			srv_error(s, r->conn, 500, NULL, NULL, "out of memory");
		}
	}
	double t = now_s();
	met_observe(s->met, MET_E2E, t - r->t_arrival);
	if (r->n_gen > 1)
		met_observe(s->met, MET_TPOT, (r->t_last - r->t_first) / (r->n_gen - 1));
	r->state = SREQ_DETACHED; /* freed when the LAST record arrives (or now, if it has) */
	if (s->draining && s->n_flush < s->o.max_live)
		s->flush[s->n_flush++] = r->conn;
}

/* Draining: has every answer finished leaving? (connections that are gone count as done) */
static bool srv_flushed(struct srv *s)
{
	for (int i = 0; i < s->n_flush; i++)
		if (ing_pending_bytes(s->ing, s->flush[i]) > 0)
			return false;
	return true;
}

/* One generated token of a live request. */
/* A RING_TOK_PROMPT record: the logprob of prompt token t->pos given the tokens before it. */
static void srv_prompt_record(struct srv *s, struct sreq *r, const struct ring_tok_rec *t)
{
	if (!r->prompt_lp || t->pos < 1 || t->pos >= r->n_prompt)
		return; /* not asked for, or not ours to index: ignore rather than corrupt */
	srv_fill_lp(s, &r->plp[t->pos], r->ptop + (size_t)t->pos * RING_MAX_TOP,
		    r->n_top > 0 ? r->n_top : 0, t);
	if (t->pos + 1 > r->n_plp)
		r->n_plp = t->pos + 1;
}

/* The prompt's own record: no logprob (nothing comes before it), as OpenAI and vLLM report. */
static void srv_prompt_first(const struct srv *s, struct sreq *r)
{
	size_t tl;
	struct api_logprob *lp = &r->plp[0];
	lp->token = tok_piece(s->bm.tok, r->prompt0, &tl);
	lp->len = lp->token ? tl : 0;
	if (!lp->token)
		lp->token = "";
	lp->logprob = NAN;
	lp->top = NULL;
	lp->n_top = 0;
	if (r->n_plp < 1)
		r->n_plp = 1;
}

/* Streaming echo with prompt logprobs: one event with the prompt text and all its records, sent
 * once they are in (before the first generated token, or at the end of a scoring request). */
static int srv_echo_flush(struct srv *s, struct sreq *r)
{
	if (!r->stream || !r->echo_len || r->echo_sent)
		return 0;
	r->echo_sent = true;
	bool with_lp = r->prompt_lp && r->n_top >= 0;
	if (with_lp)
		srv_prompt_first(s, r);
	const struct api_logprob *lp = with_lp ? r->plp : NULL;
	size_t n_lp = with_lp ? (size_t)r->n_plp : 0;
	struct sse_stream before = r->sse; /* sizing advances the stream's offsets: undo it */
	size_t need = sse_write_text(&r->sse, NULL, 0, r->echo_text, r->echo_len, lp, n_lp);
	r->sse = before;
	char *buf = need < SRV_OUT_CAP ? s->out : malloc(need + 1); /* a long prompt: once */
	if (!buf)
		return -ENOMEM;
	sse_write_text(&r->sse, buf, need + 1, r->echo_text, r->echo_len, lp, n_lp);
	int rc = ing_stream_write(s->ing, r->conn, buf, need);
	if (buf != s->out)
		free(buf);
	return rc;
}

static void srv_token(struct srv *s, struct sreq *r, const struct ring_tok_rec *t)
{
	const char *piece = NULL;
	size_t plen = 0, out_len = 0;
	struct api_logprob lp1;
	struct api_top top1[RING_MAX_TOP];
	struct api_logprob *lp = NULL;

	if (srv_echo_flush(s, r) == -ENOMEM)
		goto oom;
	double now = now_s();
	if (r->n_gen == 0) {
		r->t_first = now;
		met_observe(s->met, MET_TTFT, now - r->t_arrival);
	}
	r->t_last = now;
	r->n_gen++;
	met_add(s->met, MET_GEN_TOKENS, 1);

	bool eos_like = (t->flags & RING_TOK_LAST) && t->finish == RING_FINISH_STOP;
	if (!eos_like) /* EOS / stop ids end the text; they are not part of it */
		tok_stream_push(r->ts, t->token, &piece, &plen);

	if (r->n_top >= 0) {
		struct api_top *tops = top1;
		if (!r->stream) {
			if (srv_req_reserve(r, 0))
				goto oom;
			lp = &r->lp[r->n_gen - 1];
			tops = r->top + (size_t)(r->n_gen - 1) * RING_MAX_TOP;
		} else {
			lp = &lp1;
		}
		srv_fill_lp(s, lp, tops, r->n_top, t);
	}

	int matched = stop_push(&r->stop, piece ? piece : "", plen, s->stop_out, STOP_OUT_CAP(plen),
				&out_len);
	if (r->stream) {
		if (out_len || lp) {
			size_t n = sse_write_text(&r->sse, s->out, SRV_OUT_CAP, s->stop_out, out_len, lp,
						  lp ? 1 : 0);
			if (ing_stream_write(s->ing, r->conn, s->out, n) == -ENOBUFS) {
				/* The client does not drain its stream: cancel rather than block. */
				log_warn("serve", "request %s: client too slow, cancelled", r->api_id);
				r->state = SREQ_DETACHED;
				srv_cancel(s, r);
				ing_close(s->ing, r->conn);
				return;
			}
		}
	} else if (out_len) {
		if (srv_req_reserve(r, out_len))
			goto oom;
		memcpy(r->text + r->text_len, s->stop_out, out_len);
		r->text_len += out_len;
	}
	if (matched == 1) {
		srv_cancel(s, r); /* the scheduler stops generating; its notice frees the entry */
		srv_complete(s, r, API_FINISH_STOP);
	}
	return;
oom:
	log_error("serve", "request %s: out of memory", r->api_id);
	r->state = SREQ_DETACHED;
	srv_cancel(s, r);
	ing_close(s->ing, r->conn);
}

static void srv_record(struct srv *s, const struct ring_tok_rec *t)
{
	struct sreq *r = srv_req_by_id(s, t->id);
	if (!r)
		return; /* a request we already forgot: nothing to do */
	bool last = t->flags & RING_TOK_LAST;
	if (r->state == SREQ_LIVE) {
		if (t->finish == RING_FINISH_ERROR) {
			struct api_error e;
			api_error_set(&e, t->err == -E2BIG ? 400 : 500, NULL, NULL,
				      "the scheduler rejected the request: %s", strerror(-t->err));
			if (r->stream) {
				size_t n = sse_write_error(&r->sse, s->out, SRV_OUT_CAP, &e);
				ing_stream_write(s->ing, r->conn, s->out, n);
				ing_stream_end(s->ing, r->conn);
				srv_count_status(s, e.status);
			} else {
				srv_respond_error(s, r->conn, &e);
			}
			r->state = SREQ_DETACHED;
		} else {
			if (t->flags & RING_TOK_PROMPT)
				srv_prompt_record(s, r, t);
			else if (!(t->flags & RING_TOK_NOTOK))
				srv_token(s, r, t);
			if (last && r->state == SREQ_LIVE)
				srv_complete(s, r, srv_finish(t->finish));
		}
	}
	if (last)
		srv_req_free(s, r);
}

static void srv_update_gauges(struct srv *s)
{
	struct pk_stats st;
	pk_backend_stats(s->eng.be, &st);
	met_set(s->met, MET_QUEUE_DEPTH, (int64_t)(ring_sc_count(s->eng.rings.req) + st.waiting));
	met_set(s->met, MET_RUNNING, (int64_t)st.running);
	met_set(s->met, MET_KV_USED, (int64_t)st.kv_used);
	met_set(s->met, MET_KV_FREE, (int64_t)st.kv_free);
	met_set(s->met, MET_HOST_CUDA, 0); /* CPU backend: the host makes no CUDA calls at all */
}

static void srv_on_poll(void *ctx)
{
	struct srv *s = ctx;
	uint32_t n;

	while ((n = ring_tok_sc_pop_burst(s->eng.rings.tok, s->recs, SRV_POP_BURST)) > 0)
		for (uint32_t i = 0; i < n; i++)
			srv_record(s, &s->recs[i]);

	for (int i = 0; i < s->o.max_live; i++) /* rare: cancels that found the control ring full */
		if (s->reqs[i].state != SREQ_FREE && s->reqs[i].cancel_pending)
			srv_cancel(s, &s->reqs[i]);
	srv_update_gauges(s);

	if (!s->draining && atomic_load_explicit(&srv_signalled, memory_order_relaxed)) {
		s->draining = true;
		s->drain_deadline = now_s() + s->o.drain_timeout_ms * 1e-3;
		log_info("serve", "draining: %d requests in flight, new requests get 503", s->n_live);
	}
	if (s->draining) {
		if (!s->drain_cancelled && now_s() > s->drain_deadline) {
			log_warn("serve", "drain timeout: cancelling %d requests", s->n_live);
			for (int i = 0; i < s->o.max_live; i++)
				if (s->reqs[i].state != SREQ_FREE)
					srv_cancel(s, &s->reqs[i]);
			s->drain_cancelled = true;
		}
		if ((s->n_live == 0 && srv_flushed(s)) || now_s() > s->drain_deadline + 5.0)
			ing_stop(s->ing);
	}
}

/* ---- boot -------------------------------------------------------------------------------- */

static void serve_usage(FILE *f)
{
	fprintf(f,
		"usage: offpathd serve --model DIR [options]\n"
		"\n"
		"Serves the OpenAI-compatible API over HTTP/1.1 (io_uring sockets):\n"
		"  POST /v1/completions, POST /v1/chat/completions (\"stream\": true for SSE),\n"
		"  GET /v1/models, GET /health, GET /metrics (Prometheus).\n"
		"SIGTERM or SIGINT drains: new requests get 503, running ones finish (a second signal\n"
		"stops at once).\n"
		"\n"
		"  --model DIR            Hugging Face model directory\n"
		"  --listen HOST:PORT     default 127.0.0.1:8080 (port 0: any free port)\n"
		"  --backend auto|cpu     the persistent scheduler's backend (default auto = cpu here)\n"
		"  --served-name NAME     the model name clients use (default: the directory's name)\n"
		"  --threads N            CPU backend matmul threads (default: one per core)\n"
		"  --max-queue N          request ring slots, a power of two (default 256)\n"
		"  --kv-pages N           KV-cache pages (default: enough for 8 full contexts)\n"
		"  --page-tokens N        positions per KV page (default 16)\n"
		"  --step-tokens N        token budget of one forward step (default 256)\n"
		"  --max-seqs N           sequences per step (default 64)\n"
		"  --drain-timeout-ms N   on SIGTERM, cancel what is still running after N ms (default 30000)\n");
}

static int serve_parse(struct srv_opts *o, int argc, char **argv)
{
	static const struct option longopts[] = {
		{"model", required_argument, 0, 'm'},      {"listen", required_argument, 0, 'l'},
		{"backend", required_argument, 0, 'b'},    {"served-name", required_argument, 0, 'N'},
		{"threads", required_argument, 0, 'j'},    {"max-queue", required_argument, 0, 'q'},
		{"kv-pages", required_argument, 0, 'K'},   {"page-tokens", required_argument, 0, 'T'},
		{"step-tokens", required_argument, 0, 'S'}, {"max-seqs", required_argument, 0, 'B'},
		{"drain-timeout-ms", required_argument, 0, 'D'}, {"help", no_argument, 0, 'h'},
		{0, 0, 0, 0},
	};
	int c;
	*o = (struct srv_opts){.listen = "127.0.0.1:8080", .backend = "auto", .max_queue = 256,
			       .page_tokens = 16, .step_tokens = 256, .max_seqs = 64,
			       .drain_timeout_ms = 30000};
	optind = 1;
	while ((c = getopt_long(argc, argv, "m:l:b:N:j:q:K:T:S:B:D:h", longopts, NULL)) != -1) {
		char *end = NULL;
		long v = 0;
		if (c != 'm' && c != 'l' && c != 'b' && c != 'N' && c != 'h' && c != '?') {
			v = strtol(optarg, &end, 10);
			if (*end || v < 0 || v > (1L << 24)) {
				fprintf(stderr, "offpathd serve: bad number '%s'\n", optarg);
				return -EINVAL;
			}
		}
		switch (c) {
		case 'm': o->model = optarg; break;
		case 'l': o->listen = optarg; break;
		case 'b': o->backend = optarg; break;
		case 'N': o->served_name = optarg; break;
		case 'j': o->threads = (int)v; break;
		case 'q': o->max_queue = (int)v; break;
		case 'K': o->kv_pages = (int)v; break;
		case 'T': o->page_tokens = (int)v; break;
		case 'S': o->step_tokens = (int)v; break;
		case 'B': o->max_seqs = (int)v; break;
		case 'D': o->drain_timeout_ms = (int)v; break;
		case 'h': serve_usage(stdout); return 1;
		default: serve_usage(stderr); return -EINVAL;
		}
	}
	if (!o->model) {
		fprintf(stderr, "offpathd serve: --model is required\n\n");
		serve_usage(stderr);
		return -EINVAL;
	}
	if (strcmp(o->backend, "auto") && strcmp(o->backend, "cpu")) {
		fprintf(stderr, "offpathd serve: --backend %s: this build serves with the cpu backend "
				"only (the CUDA scheduler is not wired in yet)\n", o->backend);
		return -ENOTSUP;
	}
	if (o->max_queue < 2 || (o->max_queue & (o->max_queue - 1))) {
		fprintf(stderr, "offpathd serve: --max-queue must be a power of two >= 2\n");
		return -EINVAL;
	}
	o->max_live = o->max_queue + SCHED_MAX_REQS;
	if (o->max_live > 0xffff)
		o->max_live = 0xffff;
	return 0;
}

static int srv_boot(struct srv *s)
{
	int r;
	const struct mdl_config *cfg = &s->bm.m->cfg;

	s->acfg.vocab_size = cfg->vocab_size;
	s->acfg.max_model_len = engine_max_ctx(&s->bm);
	if (s->o.served_name) {
		s->names[0] = s->o.served_name;
	} else {
		const char *slash = strrchr(s->o.model, '/');
		s->names[0] = slash && slash[1] ? slash + 1 : s->o.model;
	}
	s->acfg.model_names = s->names;
	s->acfg.n_model_names = 1;

	if ((r = tok_enc_create(&s->enc, s->bm.tok)) || (r = met_create(&s->met)))
		return r;
	s->ids = malloc(((size_t)s->acfg.max_model_len + 1) * sizeof(int32_t));
	s->prompt_cap = (size_t)s->acfg.max_model_len * 16 + 4096; /* bytes of a rendered chat */
	s->prompt_buf = malloc(s->prompt_cap);
	s->out = malloc(SRV_OUT_CAP);
	s->stop_out = malloc(STOP_OUT_CAP(SRV_OUT_CAP));
	s->reqs = calloc((size_t)s->o.max_live, sizeof(*s->reqs));
	s->flush = calloc((size_t)s->o.max_live, sizeof(*s->flush));
	if (!s->ids || !s->prompt_buf || !s->out || !s->stop_out || !s->reqs || !s->flush)
		return -ENOMEM;
	for (int i = 0; i < s->o.max_live; i++)
		if ((r = tok_stream_create(&s->reqs[i].ts, s->bm.tok)))
			return r;
	struct timespec ts;
	clock_gettime(CLOCK_REALTIME, &ts);
	s->boot_rand = mdl_mix64((uint64_t)ts.tv_nsec ^ ((uint64_t)ts.tv_sec << 30) ^
				 (uint64_t)getpid());

	struct engine_opts eo = {.max_queue = s->o.max_queue, .max_ctx = s->acfg.max_model_len,
				 .kv_pages = s->o.kv_pages, .page_tokens = s->o.page_tokens,
				 .step_tokens = s->o.step_tokens, .max_seqs = s->o.max_seqs,
				 .threads = s->o.threads};
	if ((r = engine_start(&s->eng, &s->bm, &eo)))
		return r;

	struct ing_config ic;
	ing_config_default(&ic);
	ic.listen = s->o.listen;
	ic.max_body_bytes = 4u << 20; /* a long chat history; 413 above */
	ic.out_buf_bytes = 1u << 20;  /* a whole non-streamed answer with logprobs */
	static const struct ing_ops ops = {
		.on_request = srv_on_request,
		.on_poll = srv_on_poll,
		.on_close = srv_on_close,
		.error_body = srv_error_body};
	r = ing_create(&ic, &ops, s, &s->ing);
	if (r) {
		log_error("serve", "listening on %s: %s%s", s->o.listen, strerror(-r),
			  r == -EADDRINUSE ? " (another server has the port: pick one with --listen)"
					   : "");
		return r;
	}
	return 0;
}

static void srv_fini(struct srv *s)
{
	engine_stop(&s->eng);
	ing_destroy(s->ing);
	for (int i = 0; s->reqs && i < s->o.max_live; i++) {
		struct sreq *r = &s->reqs[i];
		if (r->parsed)
			api_request_free(&r->req);
		tok_stream_destroy(r->ts);
		free(r->text);
		free(r->lp);
		free(r->top);
		free(r->echo_text);
		free(r->plp);
		free(r->ptop);
	}
	free(s->reqs);
	free(s->flush);
	free(s->ids);
	free(s->prompt_buf);
	free(s->out);
	free(s->stop_out);
	met_destroy(s->met);
	tok_enc_destroy(s->enc);
	boot_model_close(&s->bm);
}

int cmd_serve(int argc, char **argv)
{
	static struct srv s; /* one server per process; static keeps it off the stack */
	int r = serve_parse(&s.o, argc, argv);
	if (r)
		return r > 0 ? 0 : 2;
	if (boot_model_open(&s.bm, s.o.model))
		return 1;
	r = srv_boot(&s);
	if (r) {
		if (r == -ENOMEM)
			log_error("serve", "out of memory while booting");
		else if (r != -EADDRINUSE)
			log_error("serve", "booting: %s", strerror(-r));
		srv_fini(&s);
		return 1;
	}
	srv_ing_for_signal = s.ing;
	struct sigaction sa = {.sa_handler = srv_signal};
	sigemptyset(&sa.sa_mask);
	sigaction(SIGTERM, &sa, NULL);
	sigaction(SIGINT, &sa, NULL);
	signal(SIGPIPE, SIG_IGN);

	const char *colon = strrchr(s.o.listen, ':');
	int host_len = colon ? (int)(colon - s.o.listen) : (int)strlen(s.o.listen);
	log_info("serve", "model %s (%s, %d layers, vocab %d, context %d), backend cpu, "
		 "listening on %.*s:%d", s.names[0], mdl_arch_name(s.bm.m->cfg.arch),
		 s.bm.m->cfg.n_layers, s.bm.m->cfg.vocab_size, s.acfg.max_model_len, host_len,
		 s.o.listen, ing_local_port(s.ing));
	r = ing_run(s.ing);
	if (r)
		log_error("serve", "the ingest loop failed: %s", strerror(-r));
	srv_ing_for_signal = NULL;
	srv_fini(&s);
	log_info("serve", "stopped");
	return r ? 1 : 0;
}
