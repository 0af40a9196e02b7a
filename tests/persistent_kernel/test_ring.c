/* SPDX-License-Identifier: Apache-2.0 */
/*
 * tests/persistent_kernel/test_ring.c: the ring ABI. Single-threaded edge cases (full, empty,
 * arena wrap, limits), then stress: a producer and a consumer thread move millions of records
 * through the token ring and hundreds of thousands of requests with prompts through the request
 * ring; the consumer checks order (no loss, no duplicate) and a checksum over every payload byte
 * that matters (no torn read). Built twice: plain, and with -fsanitize=thread (RING_TEST_TSAN,
 * fewer records), where TSan also checks that the payload accesses are ordered by the seq fences.
 */
#include <errno.h>
#include <pthread.h>
#include <sched.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "check.h"
#include "pk_test.h"
#include "sample.h" /* mdl_mix64 as the test's hash */

#ifdef RING_TEST_TSAN
#define N_TOK 200000u
#define N_REQ 20000u
#else
#define N_TOK 2000000u
#define N_REQ 100000u
#endif

/* ---- token ring: fill every field from i, check them all plus a checksum field --------------- */

static void tok_fill(struct ring_tok_rec *r, uint64_t i)
{
	uint64_t h = mdl_mix64(i);
	int k;

	memset(r, 0, sizeof(*r));
	r->id = i;
	r->t_ns = h;
	r->token = (int32_t)(h >> 40);
	r->pos = (int32_t)i;
	r->flags = (uint16_t)(h & 15);
	r->finish = (uint8_t)(h >> 8 & 3);
	r->n_top = (uint8_t)((h >> 16) % (RING_MAX_TOP + 1));
	for (k = 0; k < RING_MAX_TOP; k++) {
		r->top_ids[k] = (int32_t)(mdl_mix64(h + (uint64_t)k) >> 33);
		r->top_lps[k] = (float)k;
	}
	r->err = (int32_t)(mdl_mix64(h ^ 0x55) >> 33);
	r->logprob = (float)(r->token ^ r->err ^ r->top_ids[RING_MAX_TOP - 1]); /* checksum-ish */
}

static int tok_ok(const struct ring_tok_rec *got, uint64_t i)
{
	struct ring_tok_rec want;

	tok_fill(&want, i);
	return memcmp(got, &want, sizeof(want)) == 0;
}

struct tok_arg {
	struct ring_hdr *h;
	uint64_t full_spins;
	uint64_t n;
};

static void *tok_producer(void *arg)
{
	struct tok_arg *a = arg;
	struct ring_tok_rec r;
	uint64_t i;

	for (i = 0; i < a->n; i++) {
		tok_fill(&r, i);
		while (ring_tok_sp_push(a->h, &r) == -EAGAIN) {
			a->full_spins++;
			sched_yield();
		}
	}
	return NULL;
}

/* Starts the producer thread fn(arg) of a stress run on ring h; -1 (a failed CHECK) when there is
 * no ring. */
static int producer_start(pthread_t *th, const struct ring_hdr *h, void *(*fn)(void *), void *arg)
{
	CHECK(h != NULL);
	if (!h)
		return -1;
	pthread_create(th, NULL, fn, arg);
	return 0;
}

static void stress_tok(uint32_t n_slots, uint64_t count)
{
	struct ring_hdr *h = pkt_ring_try(RING_KIND_TOK, n_slots, 0);
	struct tok_arg a = {h, 0, count};
	struct ring_tok_rec buf[32];
	pthread_t th;
	uint64_t next = 0, bad = 0;

	if (producer_start(&th, h, tok_producer, &a))
		return;
	while (next < count) {
		uint32_t n = ring_tok_sc_pop_burst(h, buf, 1 + (uint32_t)(next % 32)), k;

		if (!n) {
			sched_yield();
			continue;
		}
		for (k = 0; k < n; k++, next++)
			if (buf[k].id != next || !tok_ok(&buf[k], next))
				bad++;
	}
	pthread_join(th, NULL);
	CHECK(bad == 0);
	CHECK(ring_tok_sc_pop_burst(h, buf, 32) == 0); /* nothing extra */
	CHECK(h->prod == count && h->cons == count);
	printf("token ring %u slots: %llu records, %llu bad, producer saw full %llu times\n", n_slots,
	       (unsigned long long)count, (unsigned long long)bad, (unsigned long long)a.full_spins);
	free(h);
}

/* ---- request ring: prompts of varying length through the arena -------------------------------- */

static uint32_t req_len(uint64_t i)
{
	return 1 + (uint32_t)(mdl_mix64(i ^ 0x77) % 700);
}

static int32_t req_tok(uint64_t i, uint32_t k)
{
	return (int32_t)(mdl_mix64(i * 1000003u + k) >> 33);
}

static void req_fill(struct ring_req_rec *r, uint64_t i)
{
	int k;

	memset(r, 0, sizeof(*r));
	r->id = i;
	r->seed = mdl_mix64(i);
	r->temperature = (float)(i % 10);
	r->top_p = 0.5f;
	r->top_k = (int32_t)(i % 100);
	r->max_tokens = (int32_t)(i % 4096);
	r->n_stop = (uint16_t)(i % 9);
	r->n_top = (uint16_t)(i % (RING_MAX_TOP + 1));
	for (k = 0; k < RING_MAX_STOP; k++)
		r->stop_ids[k] = (int32_t)(i + (uint64_t)k);
}

struct req_arg {
	struct ring_hdr *h;
	uint64_t full_spins;
};

static void *req_producer(void *arg)
{
	struct req_arg *a = arg;
	static int32_t prompt[1024];
	struct ring_req_rec r;
	uint64_t i;
	uint32_t k;

	for (i = 0; i < N_REQ; i++) {
		uint32_t n = req_len(i);

		req_fill(&r, i);
		for (k = 0; k < n; k++)
			prompt[k] = req_tok(i, k);
		while (ring_req_sp_push(a->h, &r, prompt, n) == -EAGAIN) {
			a->full_spins++;
			sched_yield();
		}
	}
	return NULL;
}

static void stress_req(uint32_t n_slots, uint32_t arena)
{
	struct ring_hdr *h = pkt_ring_try(RING_KIND_REQ, n_slots, arena);
	struct req_arg a = {h, 0};
	pthread_t th;
	uint64_t next = 0, bad = 0;

	if (producer_start(&th, h, req_producer, &a))
		return;
	while (next < N_REQ) {
		const struct ring_req_rec *r = ring_req_sc_peek(h);
		struct ring_req_rec want;
		const int32_t *p;
		uint32_t k, n;

		if (!r) {
			sched_yield();
			continue;
		}
		req_fill(&want, next);
		n = req_len(next);
		want.prompt_off = r->prompt_off;
		want.prompt_len = n;
		if (memcmp(r, &want, sizeof(want)))
			bad++;
		p = ring_req_prompt(h, r);
		for (k = 0; k < n && k < r->prompt_len; k++)
			if (p[k] != req_tok(next, k)) {
				bad++;
				break;
			}
		ring_req_sc_pop(h);
		next++;
	}
	pthread_join(th, NULL);
	CHECK(bad == 0);
	CHECK(ring_req_sc_peek(h) == NULL);
	printf("request ring %u slots, arena %u: %u requests, %llu bad, producer saw full %llu times\n",
	       n_slots, arena, N_REQ, (unsigned long long)bad, (unsigned long long)a.full_spins);
	free(h);
}

/* ---- control ring under the same protocol, with both producers racing the consumer ----------- */

static void *ctl_producer(void *arg)
{
	struct ring_hdr *h = arg;
	uint64_t i;

	for (i = 0; i < N_REQ; i++)
		while (ring_ctl_sp_push(h, RING_CTL_CANCEL, i) == -EAGAIN)
			sched_yield();
	return NULL;
}

static void stress_ctl(void)
{
	struct ring_hdr *h = pkt_ring_try(RING_KIND_CTL, 16, 0);
	struct ring_ctl_rec c;
	pthread_t th;
	uint64_t next = 0, bad = 0;

	if (producer_start(&th, h, ctl_producer, h))
		return;
	while (next < N_REQ) {
		if (!ring_ctl_sc_pop(h, &c)) {
			sched_yield();
			continue;
		}
		bad += c.id != next || c.op != RING_CTL_CANCEL;
		next++;
	}
	pthread_join(th, NULL);
	CHECK(bad == 0);
	free(h);
}

/* ---- single-threaded edge cases ---------------------------------------------------------------- */

static void edges(void)
{
	struct ring_hdr *h;
	struct ring_tok_rec t, out[8];
	struct ring_req_rec r;
	int32_t prompt[64];
	uint32_t i;

	CHECK(ring_bytes(RING_KIND_TOK, 3, 0) == 0);     /* not a power of two */
	CHECK(ring_bytes(RING_KIND_TOK, 1, 0) == 0);
	CHECK(ring_bytes(RING_KIND_TOK, 8, 16) == 0);    /* arena on a token ring */
	CHECK(ring_bytes(RING_KIND_REQ, 8, 0) == 0);     /* no arena on a request ring */
	CHECK(ring_bytes(99, 8, 0) == 0);
	CHECK(ring_bytes(RING_KIND_TOK, 8, 0) == 3 * RING_LINE + 8 * 256);

	/* Full and empty, with wrap-around over several laps. */
	h = pkt_ring_try(RING_KIND_TOK, 4, 0);
	CHECK(h && ring_check(h, RING_KIND_TOK) == 0 && ring_check(h, RING_KIND_REQ) == -EINVAL);
	for (uint32_t lap = 0; h && lap < 5; lap++) {
		CHECK(ring_sp_free(h) == 4);
		CHECK(ring_tok_sc_pop_burst(h, out, 8) == 0);
		for (i = 0; i < 4; i++) {
			tok_fill(&t, lap * 4 + i);
			CHECK(ring_tok_sp_push(h, &t) == 0);
		}
		CHECK(ring_sp_free(h) == 0 && ring_sc_count(h) == 4);
		CHECK(ring_tok_sp_push(h, &t) == -EAGAIN);
		CHECK(ring_tok_sc_pop_burst(h, out, 3) == 3);
		CHECK(ring_sp_free(h) == 3);
		CHECK(ring_tok_sc_pop_burst(h, out + 3, 8) == 1);
		for (i = 0; i < 4; i++)
			CHECK(tok_ok(&out[i], lap * 4 + i));
	}
	free(h);

	/* Arena: exact fit, wrap skips the tail end, -EAGAIN while full, -E2BIG, -EINVAL. */
	h = pkt_ring_try(RING_KIND_REQ, 8, 64);
	CHECK(h != NULL);
	if (!h)
		return;
	for (i = 0; i < 64; i++)
		prompt[i] = (int32_t)i;
	req_fill(&r, 1);
	CHECK(ring_req_sp_push(h, &r, prompt, 0) == -EINVAL);
	CHECK(ring_req_sp_push(h, &r, prompt, 65) == -E2BIG);
	CHECK(ring_req_sp_push(h, &r, prompt, 40) == 0);  /* [0, 40) */
	CHECK(ring_req_sp_push(h, &r, prompt, 30) == -EAGAIN); /* would wrap onto live tokens */
	CHECK(ring_req_sp_push(h, &r, prompt, 24) == 0);  /* [40, 64) exact fit */
	CHECK(ring_req_sp_push(h, &r, prompt, 1) == -EAGAIN);
	CHECK(ring_req_sc_peek(h)->prompt_len == 40);
	ring_req_sc_pop(h);                              /* frees [0, 40) */
	CHECK(ring_req_sp_push(h, &r, prompt + 5, 30) == 0); /* [64, 94) = arena [0, 30) */
	CHECK(ring_req_sp_push(h, &r, prompt, 20) == -EAGAIN); /* [94, 114) overlaps [40, 64) */
	CHECK(ring_req_sc_peek(h)->prompt_off == 40);
	ring_req_sc_pop(h);
	{
		const struct ring_req_rec *q = ring_req_sc_peek(h);

		CHECK(q && q->prompt_off == 64 && q->prompt_len == 30);
		CHECK(q && ring_req_prompt(h, q)[0] == 5 && ring_req_prompt(h, q)[29] == 34);
	}
	CHECK(ring_req_sp_push(h, &r, prompt, 34) == 0); /* [94, 128): fits before the end */
	CHECK(ring_req_sp_push(h, &r, prompt, 1) == -EAGAIN);
	ring_req_sc_pop(h);
	CHECK(ring_req_sp_push(h, &r, prompt, 2) == 0); /* wraps to [128, 130) */
	ring_req_sc_pop(h);
	CHECK(ring_req_sc_peek(h)->prompt_off == 128);
	ring_req_sc_pop(h);
	CHECK(ring_req_sc_peek(h) == NULL);
	/* Slots full while the arena has room. */
	for (i = 0; i < 8; i++)
		CHECK(ring_req_sp_push(h, &r, prompt, 1) == 0);
	CHECK(ring_req_sp_push(h, &r, prompt, 1) == -EAGAIN);
	h->magic = 0;
	CHECK(ring_check(h, RING_KIND_REQ) == -EINVAL);
	free(h);
}

int main(void)
{
	edges();
	stress_tok(2, N_TOK / 4);
	stress_tok(1024, N_TOK);
	stress_req(64, 4096);
	stress_req(8, 1024); /* prompts up to 700: most pushes wrap or wait */
	stress_ctl();
	if (check_exit())
		return 1;
	printf("test_ring: ok\n");
	return 0;
}
