/* SPDX-License-Identifier: Apache-2.0 */
/*
 * daemon/serve_pvt.h: what the three files of `offpathd serve` share.
 *   serve.c      options, boot, the request table, response helpers, the poll hook and the drain
 *   serve_in.c   ingress: routing, validation, prompt encoding, the request ring
 *   serve_out.c  egress: token-ring records -> detokenized text, stop strings, SSE or JSON
 * Threading: all of it runs on the ingest thread (the one that runs ing_run()); the backend shares
 *   only the rings (daemon/engine.h).
 */
#ifndef OFFPATH_DAEMON_SERVE_PVT_H
#define OFFPATH_DAEMON_SERVE_PVT_H

#include <stdbool.h>
#include <stdint.h>

#include "api.h"
#include "boot.h"
#include "engine.h"
#include "http.h"
#include "ing.h"
#include "metrics.h"
#include "ring.h"
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
	int max_queue; /* request ring slots (power of two) */
	int max_live;  /* requests the host tracks at once: queued + running + finishing */
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
	bool parsed;         /* req holds a parsed body (api_request_free at the end) */
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
	bool prompt_lp;  /* asked the scheduler for RING_TOK_PROMPT records */
	bool echo_sent;  /* streaming: the echo event is out */
	int32_t prompt0; /* the first prompt token (it gets no record) */
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
	char *out;      /* SRV_OUT_CAP */
	char *stop_out; /* STOP_OUT_CAP of one token's text */
	struct ring_tok_rec recs[SRV_POP_BURST];
	bool draining;
	double drain_deadline;
	int n_cancel_pending;   /* requests whose cancel still waits for room in the control ring */
	struct ing_conn *flush; /* draining: connections whose last bytes may still be unsent */
	int n_flush;
	bool drain_cancelled;
};

/* serve.c */
double srv_now(void); /* CLOCK_MONOTONIC seconds */
void srv_count_status(struct srv *s, int status);
void srv_respond_error(struct srv *s, struct ing_conn c, const struct api_error *e);
void srv_error(struct srv *s, struct ing_conn c, int status, const char *param, const char *code,
               const char *msg);
void srv_respond_json(struct srv *s, struct ing_conn c, int status, const char *body, size_t len);
struct sreq *srv_req_by_id(struct srv *s, uint64_t id);
struct sreq *srv_req_alloc(struct srv *s);
void srv_req_free(struct srv *s, struct sreq *r);
void srv_cancel(struct srv *s, struct sreq *r);

/* serve_in.c: the transport's callbacks for requests, transport errors and closed connections */
int srv_on_request(void *ctx, struct ing_conn c, const struct http_req *h);
size_t srv_error_body(void *ctx, int status, char *out, size_t cap, const char **ctype);
void srv_on_close(void *ctx, struct ing_conn c, void *data, enum ing_close_reason why);

/* serve_out.c */
void srv_drain_tokens(struct srv *s); /* every record in the token ring, to its client */
bool srv_flushed(struct srv *s);      /* draining: every answer has left the output buffers */

#endif
