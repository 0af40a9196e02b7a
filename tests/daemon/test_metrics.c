/* SPDX-License-Identifier: Apache-2.0 */
/*
 * tests/daemon/test_metrics.c: the /metrics exposition parsed by prometheus_client's parser
 * (parse_prom.py); every value read back must be what was recorded, histogram buckets cumulative
 * and consistent with the observations. Also: concurrent updates from several threads are exact.
 * Exit 77 when /usr/bin/python3 has no prometheus_client.
 */
#include <math.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "check.h"
#include "metrics.h"

#define THREADS 4
#define PER_THREAD 200000

static struct met *gm;

static void *worker(void *arg)
{
	int i;

	(void)arg;
	for (i = 0; i < PER_THREAD; i++) {
		met_add(gm, MET_GEN_TOKENS, 1);
		met_gauge_add(gm, MET_RUNNING, (i & 1) ? -1 : 1);
		met_observe(gm, MET_TPOT, 0.003);
	}
	return NULL;
}

/* The sample line "<type> <key> <value>" for key; NAN when absent. */
static double sample(const char *out, const char *key)
{
	const char *p = out;
	size_t kl = strlen(key);

	while ((p = strstr(p, key)) != NULL) {
		if (p[-1] == ' ' && p[kl] == ' ')
			return strtod(p + kl + 1, NULL);
		p += kl;
	}
	return NAN;
}

int main(void)
{
	static char text[1 << 16], parsed[1 << 17];
	char tmp[] = "/tmp/offpath-met-XXXXXX", cmd[4096];
	const char *src = getenv("OFFPATH_SRC");
	pthread_t th[THREADS];
	size_t n, got;
	FILE *f, *p;
	int fd, i, st;

	if (met_create(&gm) != 0)
		return 1;
	for (i = 0; i < THREADS; i++)
		pthread_create(&th[i], NULL, worker, NULL);
	for (i = 0; i < 50; i++) /* render while the workers update */
		CHECK(met_render(gm, text, sizeof(text)) < sizeof(text), "fits");
	for (i = 0; i < THREADS; i++)
		pthread_join(th[i], NULL);

	met_add(gm, MET_REQ_CHAT, 3);
	met_add(gm, MET_REQ_COMPLETIONS, 2);
	met_add(gm, MET_FINISH_LENGTH, 1);
	met_add(gm, MET_ERR_4XX, 4);
	met_add(gm, MET_PROMPT_TOKENS, 1234);
	met_set(gm, MET_KV_FREE, 777);
	met_set(gm, MET_KV_USED, 23);
	met_set(gm, MET_QUEUE_DEPTH, 5);
	met_observe(gm, MET_TTFT, 0.03);  /* (0.02, 0.04] */
	met_observe(gm, MET_TTFT, 0.04);  /* le is inclusive: 0.04 */
	met_observe(gm, MET_TTFT, 500.0); /* +Inf only */
	met_observe(gm, MET_TTFT, -1.0);  /* counts as 0 */
	n = met_render(gm, text, sizeof(text));
	CHECK(n < sizeof(text) && strlen(text) == n, "render length");
	CHECK(met_render(gm, text + n + 1, 10) == n, "short buffer reports the full length");

	fd = mkstemp(tmp);
	f = fd >= 0 ? fdopen(fd, "w") : NULL;
	if (!f)
		return 1;
	fwrite(text, 1, n, f);
	fclose(f);
	snprintf(cmd, sizeof(cmd), "/usr/bin/python3 '%s/tests/daemon/parse_prom.py' < '%s'",
		 src ? src : ".", tmp);
	p = popen(cmd, "r");
	got = p ? fread(parsed, 1, sizeof(parsed) - 1, p) : 0;
	parsed[got] = '\0';
	st = p ? pclose(p) : -1;
	unlink(tmp);
	if (st == -1 || (WIFEXITED(st) && WEXITSTATUS(st) == 77)) {
		printf("SKIP: /usr/bin/python3 has no prometheus_client "
		       "(apt-get install python3-prometheus-client)\n");
		return 77;
	}
	CHECK(WIFEXITED(st) && WEXITSTATUS(st) == 0, "prometheus_client rejected the exposition");

	/* prometheus_client strips _total from counter family names but keeps it on samples */
	CHECK(sample(parsed, "offpath_generation_tokens_total{}") == THREADS * PER_THREAD,
	      "tokens %g", sample(parsed, "offpath_generation_tokens_total{}"));
	CHECK(sample(parsed, "offpath_requests_total{endpoint=\"chat\"}") == 3, "chat requests");
	CHECK(sample(parsed, "offpath_requests_total{endpoint=\"completions\"}") == 2, "cmpl");
	CHECK(sample(parsed, "offpath_request_success_total{finish_reason=\"length\"}") == 1,
	      "length");
	CHECK(sample(parsed, "offpath_request_errors_total{status_class=\"4xx\"}") == 4, "4xx");
	CHECK(sample(parsed, "offpath_prompt_tokens_total{}") == 1234, "prompt tokens");
	CHECK(sample(parsed, "offpath_kv_pages_free{}") == 777, "kv free");
	CHECK(sample(parsed, "offpath_requests_running{}") == 0, "running back to 0");
	CHECK(sample(parsed, "offpath_queue_depth{}") == 5, "queue depth");
	CHECK(sample(parsed, "offpath_time_per_output_token_seconds_count{}") ==
		      THREADS * PER_THREAD,
	      "tpot count");
	CHECK(sample(parsed, "offpath_time_per_output_token_seconds_bucket{le=\"0.0025\"}") == 0 &&
		      sample(parsed, "offpath_time_per_output_token_seconds_bucket{le=\"0.005\"}") ==
			      THREADS * PER_THREAD,
	      "tpot buckets");
	CHECK(fabs(sample(parsed, "offpath_time_per_output_token_seconds_sum{}") -
		   0.003 * THREADS * PER_THREAD) < 1e-6,
	      "tpot sum %g", sample(parsed, "offpath_time_per_output_token_seconds_sum{}"));
	CHECK(sample(parsed, "offpath_time_to_first_token_seconds_bucket{le=\"0.001\"}") == 1,
	      "0 in the first bucket");
	CHECK(sample(parsed, "offpath_time_to_first_token_seconds_bucket{le=\"0.02\"}") == 1 &&
		      sample(parsed, "offpath_time_to_first_token_seconds_bucket{le=\"0.04\"}") == 3,
	      "cumulative, inclusive bounds");
	CHECK(sample(parsed, "offpath_time_to_first_token_seconds_bucket{le=\"80\"}") == 3 &&
		      sample(parsed, "offpath_time_to_first_token_seconds_bucket{le=\"+Inf\"}") == 4 &&
		      sample(parsed, "offpath_time_to_first_token_seconds_count{}") == 4,
	      "+Inf and count");
	CHECK(fabs(sample(parsed, "offpath_time_to_first_token_seconds_sum{}") - 500.07) < 1e-6,
	      "ttft sum");
	CHECK(strstr(parsed, "histogram offpath_e2e_request_latency_seconds_count{} 0.0") != NULL,
	      "empty histogram present");
	met_destroy(gm);
	if (check_failures())
		fprintf(stderr, "%s\n", parsed);
	if (check_exit())
		return 1;
	printf("test_metrics: ok\n");
	return 0;
}
