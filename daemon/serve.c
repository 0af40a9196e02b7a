/* SPDX-License-Identifier: Apache-2.0 */
/*
 * daemon/serve.c: `offpathd serve`: the OpenAI-compatible server.
 *
 * The data path, in the order a request travels it (ingress in serve_in.c, egress in
 * serve_out.c; this file boots, polls and drains):
 *   nic/ing_uring.c (io_uring accept/recv/parse, this thread)  -> srv_on_request()
 *     api_parse() -> chat_render() -> tok_encode() -> ring_req_sp_push()    request ring
 *   persistent_kernel/ backend (CPU emulation thread, or the GPU) admits, batches, steps, samples
 *     -> ring_tok_sp_push()                                                 token ring
 *   srv_on_poll() (this thread, every loop iteration) -> ring_tok_sc_pop_burst()
 *     -> tok_stream_push() -> stop_push() -> sse_write_text() -> ing_stream_write()
 * Cancellation (client gone, stop string, drain timeout) goes back through the control ring.
 *
 * Threading: everything here runs on the one ingest thread that runs ing_run(), except the signal
 *   handler (sets a flag) and the backend (its own thread, or the GPU), which shares only the
 * rings. Memory: the request table, per-request detokenizers, the output scratch and the rings are
 *   allocated at boot. Per request, api_parse() allocates the parsed body and a non-streaming
 *   request grows its text/logprob buffers; nothing is allocated per token while streaming.
 */
#include <errno.h>
#include <getopt.h>
#include <signal.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include "cmd.h"
#include "log.h"
#include "pk_sched.h"
#include "sample.h"
#include "serve_pvt.h"

static atomic_int srv_signalled; /* set by the signal handler; read by srv_on_poll() */
static struct ing_server *srv_ing_for_signal;

double srv_now(void)
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

void srv_count_status(struct srv *s, int status)
{
	if (status >= 500)
		met_add(s->met, MET_ERR_5XX, 1);
	else if (status >= 400)
		met_add(s->met, MET_ERR_4XX, 1);
}

void srv_respond_error(struct srv *s, struct ing_conn c, const struct api_error *e)
{
	size_t n = api_error_json(e, s->out, SRV_OUT_CAP);
	const char *extra = e->status == 429
	                        ? "Content-Type: application/json\r\nRetry-After: 1\r\n"
	                        : "Content-Type: application/json\r\n";
	srv_count_status(s, e->status);
	ing_respond(s->ing, c, e->status, extra, s->out, n < SRV_OUT_CAP ? n : SRV_OUT_CAP - 1);
}

void srv_error(struct srv *s, struct ing_conn c, int status, const char *param, const char *code,
               const char *msg)
{
	struct api_error e;
	api_error_set(&e, status, param, code, "%s", msg);
	srv_respond_error(s, c, &e);
}

void srv_respond_json(struct srv *s, struct ing_conn c, int status, const char *body, size_t len)
{
	int r = ing_respond(s->ing, c, status, "Content-Type: application/json\r\n", body, len);
	if (r == -EMSGSIZE) /* larger than a connection's output buffer: say so, never go silent */
		srv_error(s, c, 500, NULL, "response_too_large",
		          "the response is larger than the server's output buffer; ask for it with "
		          "\"stream\": true");
}

/* ---- the request table ------------------------------------------------------------------- */

struct sreq *srv_req_by_id(struct srv *s, uint64_t id)
{
	uint32_t idx = (uint32_t)(id & 0xffffu);
	if (idx >= (uint32_t)s->o.max_live)
		return NULL;
	struct sreq *r = &s->reqs[idx];
	return r->state != SREQ_FREE && r->id == id ? r : NULL;
}

struct sreq *srv_req_alloc(struct srv *s)
{
	for (int i = 0; i < s->o.max_live;
	     i++) { /* O(max_live) once per request; max_live <= 4096 */
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

void srv_req_free(struct srv *s, struct sreq *r)
{
	if (r->parsed)
		api_request_free(&r->req);
	r->parsed = false;
	if (r->cancel_pending)
		s->n_cancel_pending--;
	r->cancel_pending = false;
	r->state = SREQ_FREE;
	s->n_live--;
}

void srv_cancel(struct srv *s, struct sreq *r)
{
	bool was = r->cancel_pending;
	r->cancel_pending = ring_ctl_sp_push(s->eng.rings.ctl, RING_CTL_CANCEL, r->id) != 0;
	s->n_cancel_pending += (int)r->cancel_pending - (int)was;
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

	srv_drain_tokens(s);

	for (int i = 0; s->n_cancel_pending && i < s->o.max_live;
	     i++) /* rare: control ring was full */
		if (s->reqs[i].state != SREQ_FREE && s->reqs[i].cancel_pending)
			srv_cancel(s, &s->reqs[i]);
	srv_update_gauges(s);

	if (!s->draining && atomic_load_explicit(&srv_signalled, memory_order_relaxed)) {
		s->draining = true;
		s->drain_deadline = srv_now() + s->o.drain_timeout_ms * 1e-3;
		log_info("serve", "draining: %d requests in flight, new requests get 503",
		         s->n_live);
	}
	if (s->draining) {
		if (!s->drain_cancelled && srv_now() > s->drain_deadline) {
			log_warn("serve", "drain timeout: cancelling %d requests", s->n_live);
			for (int i = 0; i < s->o.max_live; i++)
				if (s->reqs[i].state != SREQ_FREE)
					srv_cancel(s, &s->reqs[i]);
			s->drain_cancelled = true;
		}
		if ((s->n_live == 0 && srv_flushed(s)) || srv_now() > s->drain_deadline + 5.0)
			ing_stop(s->ing);
	}
}

/* ---- boot -------------------------------------------------------------------------------- */

static void serve_usage(FILE *f)
{
	fprintf(
	    f,
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
	    "  --backend auto|cpu     the persistent scheduler's backend (default auto = cpu "
	    "here)\n"
	    "  --served-name NAME     the model name clients use (default: the directory's name)\n"
	    "  --threads N            CPU backend matmul threads (default: one per core)\n"
	    "  --max-queue N          request ring slots, a power of two (default 256)\n"
	    "  --kv-pages N           KV-cache pages (default: enough for 8 full contexts)\n"
	    "  --page-tokens N        positions per KV page (default 16)\n"
	    "  --step-tokens N        token budget of one forward step (default 256)\n"
	    "  --max-seqs N           sequences per step (default 64)\n"
	    "  --drain-timeout-ms N   on SIGTERM, cancel what is still running after N ms (default "
	    "30000)\n");
}

static int serve_parse(struct srv_opts *o, int argc, char **argv)
{
	static const struct option longopts[] = {
	    {"model", required_argument, 0, 'm'},
	    {"listen", required_argument, 0, 'l'},
	    {"backend", required_argument, 0, 'b'},
	    {"served-name", required_argument, 0, 'N'},
	    {"threads", required_argument, 0, 'j'},
	    {"max-queue", required_argument, 0, 'q'},
	    {"kv-pages", required_argument, 0, 'K'},
	    {"page-tokens", required_argument, 0, 'T'},
	    {"step-tokens", required_argument, 0, 'S'},
	    {"max-seqs", required_argument, 0, 'B'},
	    {"drain-timeout-ms", required_argument, 0, 'D'},
	    {"help", no_argument, 0, 'h'},
	    {0, 0, 0, 0},
	};
	int c;
	*o = (struct srv_opts){.listen = "127.0.0.1:8080",
	                       .backend = "auto",
	                       .max_queue = 256,
	                       .page_tokens = 16,
	                       .step_tokens = 256,
	                       .max_seqs = 64,
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
		case 'm':
			o->model = optarg;
			break;
		case 'l':
			o->listen = optarg;
			break;
		case 'b':
			o->backend = optarg;
			break;
		case 'N':
			o->served_name = optarg;
			break;
		case 'j':
			o->threads = (int)v;
			break;
		case 'q':
			o->max_queue = (int)v;
			break;
		case 'K':
			o->kv_pages = (int)v;
			break;
		case 'T':
			o->page_tokens = (int)v;
			break;
		case 'S':
			o->step_tokens = (int)v;
			break;
		case 'B':
			o->max_seqs = (int)v;
			break;
		case 'D':
			o->drain_timeout_ms = (int)v;
			break;
		case 'h':
			serve_usage(stdout);
			return 1;
		default:
			serve_usage(stderr);
			return -EINVAL;
		}
	}
	if (!o->model) {
		fprintf(stderr, "offpathd serve: --model is required\n\n");
		serve_usage(stderr);
		return -EINVAL;
	}
	if (strcmp(o->backend, "auto") && strcmp(o->backend, "cpu")) {
		fprintf(stderr,
		        "offpathd serve: --backend %s: this build serves with the cpu backend "
		        "only (the CUDA scheduler is not wired in yet)\n",
		        o->backend);
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
	s->boot_rand =
	    mdl_mix64((uint64_t)ts.tv_nsec ^ ((uint64_t)ts.tv_sec << 30) ^ (uint64_t)getpid());

	struct engine_opts eo = {.max_queue = s->o.max_queue,
	                         .max_ctx = s->acfg.max_model_len,
	                         .kv_pages = s->o.kv_pages,
	                         .page_tokens = s->o.page_tokens,
	                         .step_tokens = s->o.step_tokens,
	                         .max_seqs = s->o.max_seqs,
	                         .threads = s->o.threads};
	if ((r = engine_start(&s->eng, &s->bm, &eo)))
		return r;

	struct ing_config ic;
	ing_config_default(&ic);
	ic.listen = s->o.listen;
	ic.max_body_bytes = 4u << 20; /* a long chat history; 413 above */
	ic.out_buf_bytes = 1u << 20;  /* a whole non-streamed answer with logprobs */
	static const struct ing_ops ops = {.on_request = srv_on_request,
	                                   .on_poll = srv_on_poll,
	                                   .on_close = srv_on_close,
	                                   .error_body = srv_error_body};
	r = ing_create(&ic, &ops, s, &s->ing);
	if (r) {
		log_error("serve", "listening on %s: %s%s", s->o.listen, strerror(-r),
		          r == -EADDRINUSE
		              ? " (another server has the port: pick one with --listen)"
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
	log_info("serve",
	         "model %s (%s, %d layers, vocab %d, context %d), backend cpu, "
	         "listening on %.*s:%d",
	         s.names[0], mdl_arch_name(s.bm.m->cfg.arch), s.bm.m->cfg.n_layers,
	         s.bm.m->cfg.vocab_size, s.acfg.max_model_len, host_len, s.o.listen,
	         ing_local_port(s.ing));
	r = ing_run(s.ing);
	if (r)
		log_error("serve", "the ingest loop failed: %s", strerror(-r));
	srv_ing_for_signal = NULL;
	srv_fini(&s);
	log_info("serve", "stopped");
	return r ? 1 : 0;
}
