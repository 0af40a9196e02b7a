/* SPDX-License-Identifier: Apache-2.0 */
/* daemon/metrics.c: Prometheus counters, gauges and histograms; see metrics.h. */
#include "metrics.h"

#include <errno.h>
#include <inttypes.h>
#include <math.h>
#include <stdarg.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>

#include "api_pvt.h"

#define MET_MAX_BUCKETS 24

struct met_hist_def {
	const char *name;
	const char *help;
	int n; /* finite upper bounds, ascending; +Inf is implicit */
	double le[MET_MAX_BUCKETS];
};

/* Bucket bounds in seconds. TTFT and e2e span a warm-cache decode (ms) to a long prefill queue;
 * TPOT spans an H100's ~1 ms/token to a CPU backend's ~1 s/token. */
static const struct met_hist_def hist_defs[MET_N_HISTS] = {
	[MET_TTFT] = {"offpath_time_to_first_token_seconds",
		      "Time from request arrival to the first generated token.",
		      19,
		      {0.001, 0.005, 0.01, 0.02, 0.04, 0.06, 0.08, 0.1, 0.25, 0.5, 0.75, 1.0, 2.5,
		       5.0, 7.5, 10.0, 20.0, 40.0, 80.0}},
	[MET_TPOT] = {"offpath_time_per_output_token_seconds",
		      "Mean time per generated token after the first, one observation per request.",
		      20,
		      {0.0005, 0.001, 0.0025, 0.005, 0.0075, 0.01, 0.015, 0.02, 0.025, 0.03, 0.04,
		       0.05, 0.075, 0.1, 0.15, 0.2, 0.3, 0.5, 1.0, 2.5}},
	[MET_QUEUE] = {"offpath_request_queue_time_seconds",
		       "Time from request arrival to admission by the scheduler.",
		       16,
		       {0.00001, 0.00005, 0.0001, 0.0005, 0.001, 0.005, 0.01, 0.05, 0.1, 0.25, 0.5,
			1.0, 2.5, 5.0, 10.0, 30.0}},
	[MET_E2E] = {"offpath_e2e_request_latency_seconds",
		     "Time from request arrival to the last byte of the response.",
		     17,
		     {0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 15.0, 20.0, 30.0, 40.0,
		      60.0, 120.0, 300.0}},
};

/* Counter families: one HELP/TYPE per family, one series per label value. */
static const struct {
	const char *family;
	const char *help;
	const char *label; /* NULL: no label */
	const char *value;
} counter_defs[MET_N_COUNTERS] = {
	[MET_REQ_COMPLETIONS] = {"offpath_requests_total", "Requests accepted, by endpoint.",
				 "endpoint", "completions"},
	[MET_REQ_CHAT] = {"offpath_requests_total", NULL, "endpoint", "chat"},
	[MET_FINISH_STOP] = {"offpath_request_success_total",
			     "Requests finished, by finish reason.", "finish_reason", "stop"},
	[MET_FINISH_LENGTH] = {"offpath_request_success_total", NULL, "finish_reason", "length"},
	[MET_FINISH_ABORT] = {"offpath_request_success_total", NULL, "finish_reason", "abort"},
	[MET_ERR_4XX] = {"offpath_request_errors_total",
			 "Requests answered with an error status, by class.", "status_class",
			 "4xx"},
	[MET_ERR_5XX] = {"offpath_request_errors_total", NULL, "status_class", "5xx"},
	[MET_PROMPT_TOKENS] = {"offpath_prompt_tokens_total", "Prompt tokens prefilled.", NULL,
			       NULL},
	[MET_GEN_TOKENS] = {"offpath_generation_tokens_total", "Tokens generated.", NULL, NULL},
};

static const struct {
	const char *name;
	const char *help;
} gauge_defs[MET_N_GAUGES] = {
	[MET_QUEUE_DEPTH] = {"offpath_queue_depth", "Requests waiting for admission."},
	[MET_RUNNING] = {"offpath_requests_running", "Requests admitted and generating."},
	[MET_KV_USED] = {"offpath_kv_pages_used", "KV-cache pages in use."},
	[MET_KV_FREE] = {"offpath_kv_pages_free", "KV-cache pages free."},
	[MET_HOST_CUDA] = {"offpath_host_cuda_calls",
			   "CUDA API calls made by host threads since the scheduler started "
			   "(0 growth in steady state is the point of offpath)."},
};

/* Each value sits in its own atomic; writers on different threads touch different series, so
 * false sharing costs little at these rates (a few updates per request or per step). */
struct met {
	_Atomic uint64_t counter[MET_N_COUNTERS];
	_Atomic int64_t gauge[MET_N_GAUGES];
	struct {
		_Atomic uint64_t bucket[MET_MAX_BUCKETS + 1]; /* non-cumulative; last is +Inf */
		_Atomic uint64_t sum_ns;                      /* sum of observations, ns */
	} hist[MET_N_HISTS];
};

int met_create(struct met **out)
{
	struct met *m = calloc(1, sizeof(*m));

	if (!m)
		return -ENOMEM;
	*out = m;
	return 0;
}

void met_destroy(struct met *m)
{
	free(m);
}

void met_add(struct met *m, enum met_counter c, uint64_t n)
{
	/* relaxed: a counter orders nothing else */
	atomic_fetch_add_explicit(&m->counter[c], n, memory_order_relaxed);
}

void met_set(struct met *m, enum met_gauge g, int64_t v)
{
	atomic_store_explicit(&m->gauge[g], v, memory_order_relaxed);
}

void met_gauge_add(struct met *m, enum met_gauge g, int64_t delta)
{
	atomic_fetch_add_explicit(&m->gauge[g], delta, memory_order_relaxed);
}

void met_observe(struct met *m, enum met_hist h, double seconds)
{
	const struct met_hist_def *d = &hist_defs[h];
	int b = 0;

	if (!(seconds > 0.0)) /* negative, zero and NaN */
		seconds = 0.0;
	if (seconds > 1.0e9)
		seconds = 1.0e9;
	/* linear scan: <= 20 bounds, cheaper than a branchy binary search at this size */
	while (b < d->n && seconds > d->le[b])
		b++;
	atomic_fetch_add_explicit(&m->hist[h].bucket[b], 1, memory_order_relaxed);
	atomic_fetch_add_explicit(&m->hist[h].sum_ns, (uint64_t)llround(seconds * 1e9),
				  memory_order_relaxed);
}

static void w_fmt(struct api_wbuf *w, const char *fmt, ...) __attribute__((format(printf, 2, 3)));
static void w_fmt(struct api_wbuf *w, const char *fmt, ...)
{
	char b[256];
	va_list ap;
	int n;

	va_start(ap, fmt);
	n = vsnprintf(b, sizeof(b), fmt, ap);
	va_end(ap);
	if (n > 0)
		api_w_put(w, b, (size_t)n < sizeof(b) ? (size_t)n : sizeof(b) - 1);
}

size_t met_render(const struct met *m, char *out, size_t cap)
{
	struct api_wbuf w = {out, cap, 0};
	int i, h, b;

	for (i = 0; i < MET_N_COUNTERS; i++) {
		uint64_t v = atomic_load_explicit(&m->counter[i], memory_order_relaxed);

		if (counter_defs[i].help) {
			w_fmt(&w, "# HELP %s %s\n", counter_defs[i].family, counter_defs[i].help);
			w_fmt(&w, "# TYPE %s counter\n", counter_defs[i].family);
		}
		if (counter_defs[i].label)
			w_fmt(&w, "%s{%s=\"%s\"} %" PRIu64 "\n", counter_defs[i].family,
			      counter_defs[i].label, counter_defs[i].value, v);
		else
			w_fmt(&w, "%s %" PRIu64 "\n", counter_defs[i].family, v);
	}
	for (i = 0; i < MET_N_GAUGES; i++) {
		w_fmt(&w, "# HELP %s %s\n", gauge_defs[i].name, gauge_defs[i].help);
		w_fmt(&w, "# TYPE %s gauge\n", gauge_defs[i].name);
		w_fmt(&w, "%s %" PRId64 "\n", gauge_defs[i].name,
		      atomic_load_explicit(&m->gauge[i], memory_order_relaxed));
	}
	for (h = 0; h < MET_N_HISTS; h++) {
		const struct met_hist_def *d = &hist_defs[h];
		uint64_t cum = 0;

		w_fmt(&w, "# HELP %s %s\n", d->name, d->help);
		w_fmt(&w, "# TYPE %s histogram\n", d->name);
		for (b = 0; b <= d->n; b++) {
			cum += atomic_load_explicit(&m->hist[h].bucket[b], memory_order_relaxed);
			if (b < d->n)
				w_fmt(&w, "%s_bucket{le=\"%g\"} %" PRIu64 "\n", d->name, d->le[b],
				      cum);
			else
				w_fmt(&w, "%s_bucket{le=\"+Inf\"} %" PRIu64 "\n", d->name, cum);
		}
		w_fmt(&w, "%s_sum %.9f\n", d->name,
		      (double)atomic_load_explicit(&m->hist[h].sum_ns, memory_order_relaxed) *
			      1e-9);
		w_fmt(&w, "%s_count %" PRIu64 "\n", d->name, cum);
	}
	return api_w_end(&w);
}
