/* SPDX-License-Identifier: Apache-2.0 */
/*
 * daemon/serve_in.c: ingress of `offpathd serve`: route a parsed HTTP request, validate it
 * (daemon/api.c), render a chat, encode the prompt, and push it into the request ring; the
 * transport's error bodies and closed connections. Ingest thread only (serve_pvt.h).
 */
#include <errno.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "log.h"
#include "sample.h"
#include "serve_pvt.h"

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
			return api_error_set(
			    e, 400, "messages", NULL,
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
			return api_error_set(
			    e, 400, "messages", "context_length_exceeded",
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
		return api_error_set(e, 400,
		                     q->prompt_kind == API_PROMPT_CHAT ? "messages" : "prompt",
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
		                     "at most %d top logprobs per token are supported",
		                     RING_MAX_TOP);
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
			tok_decode(s->bm.tok, s->ids, (size_t)r->n_prompt, r->echo_text,
			           (size_t)need);
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
		return api_error_set(e, 400, "prompt", NULL,
		                     "the prompt is too long for the queue");

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
		n = sse_write_text(&r->sse, s->out, SRV_OUT_CAP, r->echo_text, r->echo_len, NULL,
		                   0);
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
	r->t_arrival = srv_now();
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

int srv_on_request(void *ctx, struct ing_conn c, const struct http_req *h)
{
	struct srv *s = ctx;
	bool get = h->method == HTTP_M_GET || h->method == HTTP_M_HEAD;

	if (path_is(h, "/v1/completions") || path_is(h, "/v1/chat/completions")) {
		if (h->method != HTTP_M_POST) {
			srv_error(s, c, 405, NULL, "method_not_allowed", "use POST");
			return 0;
		}
		return srv_route_post(
		    s, c, h, path_is(h, "/v1/chat/completions") ? API_CHAT : API_COMPLETIONS);
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
size_t srv_error_body(void *ctx, int status, char *out, size_t cap, const char **ctype)
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
void srv_on_close(void *ctx, struct ing_conn c, void *data, enum ing_close_reason why)
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
