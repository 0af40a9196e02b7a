/* SPDX-License-Identifier: Apache-2.0 */
/*
 * daemon/serve_out.c: egress of `offpathd serve`: records from the token ring, in bursts, to
 * their clients: detokenize (tok_stream), hold back possible stop strings, then one SSE event per
 * piece or, for a non-streamed request, the whole JSON answer at the end. Prompt-logprob records
 * for echo. Ingest thread only (serve_pvt.h); nothing is allocated per token while streaming.
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
			size_t m =
			    sse_write_text(&r->sse, s->out, SRV_OUT_CAP, s->stop_out, n, NULL, 0);
			ing_stream_write(s->ing, r->conn, s->out, m);
		} else if (n && !srv_req_reserve(r, n)) {
			memcpy(r->text + r->text_len, s->stop_out, n);
			r->text_len += n;
		}
	}
	met_add(s->met,
	        fin == API_FINISH_STOP     ? MET_FINISH_STOP
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
	double t = srv_now();
	met_observe(s->met, MET_E2E, t - r->t_arrival);
	if (r->n_gen > 1)
		met_observe(s->met, MET_TPOT, (r->t_last - r->t_first) / (r->n_gen - 1));
	r->state = SREQ_DETACHED; /* freed when the LAST record arrives (or now, if it has) */
	if (s->draining && s->n_flush < s->o.max_live)
		s->flush[s->n_flush++] = r->conn;
}

/* Draining: has every answer finished leaving? (connections that are gone count as done) */
bool srv_flushed(struct srv *s)
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
	double now = srv_now();
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
			size_t n = sse_write_text(&r->sse, s->out, SRV_OUT_CAP, s->stop_out,
			                          out_len, lp, lp ? 1 : 0);
			if (ing_stream_write(s->ing, r->conn, s->out, n) == -ENOBUFS) {
				/* The client does not drain its stream: cancel rather than block.
				 */
				log_warn("serve", "request %s: client too slow, cancelled",
				         r->api_id);
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

void srv_drain_tokens(struct srv *s)
{
	uint32_t n;
	while ((n = ring_tok_sc_pop_burst(s->eng.rings.tok, s->recs, SRV_POP_BURST)) > 0)
		for (uint32_t i = 0; i < n; i++)
			srv_record(s, &s->recs[i]);
}
