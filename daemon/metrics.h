/* SPDX-License-Identifier: Apache-2.0 */
/*
 * daemon/metrics.h: Prometheus metrics for GET /metrics: counters, gauges and latency histograms
 * (seconds), rendered in the text exposition format 0.0.4. Updates are lock-free atomics so the
 * ingest and egress threads can record while the /metrics handler renders.
 *
 * Families (all prefixed offpath_; docs/api.md has the list with their meaning):
 *   counters   requests_total{endpoint}, request_success_total{finish_reason},
 *              request_errors_total{status_class}, prompt_tokens_total, generation_tokens_total
 *   gauges     queue_depth, requests_running, kv_pages_used, kv_pages_free, host_cuda_calls
 *   histograms time_to_first_token_seconds, time_per_output_token_seconds,
 *              request_queue_time_seconds, e2e_request_latency_seconds
 *
 * Ownership: met_create() allocates one struct met (at boot); met_destroy() frees it.
 * Threading: met_add/met_set/met_observe may be called from any thread at any time (relaxed
 *   atomics: each value is exact, a render taken during updates may mix old and new values of
 *   different series; a histogram's _count always equals its +Inf bucket). met_render from any
 *   thread. Nothing allocates after create.
 */
#ifndef OFFPATH_DAEMON_METRICS_H
#define OFFPATH_DAEMON_METRICS_H

#include <stddef.h>
#include <stdint.h>

enum met_counter {
	MET_REQ_COMPLETIONS = 0, /* requests_total{endpoint="completions"} */
	MET_REQ_CHAT,            /* requests_total{endpoint="chat"} */
	MET_FINISH_STOP,         /* request_success_total{finish_reason="stop"} */
	MET_FINISH_LENGTH,       /* request_success_total{finish_reason="length"} */
	MET_FINISH_ABORT,        /* request_success_total{finish_reason="abort"} */
	MET_ERR_4XX,             /* request_errors_total{status_class="4xx"} */
	MET_ERR_5XX,             /* request_errors_total{status_class="5xx"} */
	MET_PROMPT_TOKENS,       /* prompt_tokens_total */
	MET_GEN_TOKENS,          /* generation_tokens_total */
	MET_N_COUNTERS
};

enum met_gauge {
	MET_QUEUE_DEPTH = 0, /* requests waiting for admission */
	MET_RUNNING,         /* requests admitted and generating */
	MET_KV_USED,         /* KV-cache pages in use */
	MET_KV_FREE,         /* KV-cache pages free */
	MET_HOST_CUDA,       /* CUDA API calls made by host threads since the scheduler started */
	MET_N_GAUGES
};

enum met_hist {
	MET_TTFT = 0, /* request arrival -> first token, s */
	MET_TPOT,     /* time per output token after the first, s (one observation per request) */
	MET_QUEUE,    /* arrival -> admission by the scheduler, s */
	MET_E2E,      /* arrival -> last byte, s */
	MET_N_HISTS
};

struct met;

int met_create(struct met **out);
void met_destroy(struct met *m);

void met_add(struct met *m, enum met_counter c, uint64_t n);
void met_set(struct met *m, enum met_gauge g, int64_t v);
void met_gauge_add(struct met *m, enum met_gauge g, int64_t delta);
/* seconds >= 0 (negative and NaN are counted as 0) */
void met_observe(struct met *m, enum met_hist h, double seconds);

/* Render the exposition text into out. Returns the bytes needed (without NUL); writes at most cap
 * (NUL-terminated when it fits). 16 KiB is enough for the families above. */
size_t met_render(const struct met *m, char *out, size_t cap);

#endif /* OFFPATH_DAEMON_METRICS_H */
