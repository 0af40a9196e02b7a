/* SPDX-License-Identifier: Apache-2.0 */
/*
 * tests/daemon/test_stop.c: the incremental stop-string matcher against a naive whole-text search.
 * Random texts over a small alphabet (so stop strings and their prefixes occur often), with stop
 * strings inserted, split at random points into pieces; the streamed output must equal the naive
 * answer: the text cut before the stop string that completes first (longest on a tie).
 */
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "check.h"
#include "rng.h"
#include "stop.h"

static uint64_t rng = 0x9e3779b97f4a7c15ull;
static unsigned rnd(unsigned n)
{
	return (unsigned)(test_rng_next(&rng) % n);
}

/* Naive: first end offset where any stop ends; the longest one there. Returns the cut (or len
 * when none) and *which. */
static size_t naive(const char *t, size_t len, char stops[][64], const size_t *sl, int n,
		    int *which)
{
	size_t e;
	int i;

	for (e = 1; e <= len; e++) {
		int best = -1;

		for (i = 0; i < n; i++)
			if (sl[i] <= e && memcmp(t + e - sl[i], stops[i], sl[i]) == 0 &&
			    (best < 0 || sl[i] > sl[best]))
				best = i;
		if (best >= 0) {
			*which = best;
			return e - sl[best];
		}
	}
	*which = -1;
	return len;
}

/* UTF-8 pieces of the alphabet: multi-byte ones check that held text stays on code points. */
static const char *const alpha[] = {"a", "b", "c", "\xC3\xA9", "\xE2\x82\xAC", " ", "\n"};

static void gen(char *out, size_t *len, size_t max_units)
{
	size_t n = 1 + rnd((unsigned)max_units), i;

	*len = 0;
	for (i = 0; i < n; i++) {
		const char *a = alpha[rnd(sizeof(alpha) / sizeof(alpha[0]))];

		memcpy(out + *len, a, strlen(a));
		*len += strlen(a);
	}
}

static void test_random(int iters)
{
	static char text[4096], out[4096 + API_STOP_MAX_LEN], got[8192];
	char stops[API_MAX_STOP][64];
	size_t sl[API_MAX_STOP];
	const char *sp[API_MAX_STOP];
	int it, i;

	for (it = 0; it < iters; it++) {
		struct stop_matcher m;
		int n = rnd(API_MAX_STOP + 1), which, rc = 0, hit = 0;
		size_t len, pos = 0, glen = 0, want;

		for (i = 0; i < n; i++) {
			gen(stops[i], &sl[i], 4);
			sp[i] = stops[i];
		}
		gen(text, &len, 200);
		/* insert a stop string or two at random places */
		for (i = 0; n > 0 && i < 2; i++) {
			int k = rnd(n);
			size_t at = rnd((unsigned)len + 1);

			/* keep code points whole: move to a lead byte */
			while (at < len && ((unsigned char)text[at] & 0xC0) == 0x80)
				at++;
			memmove(text + at + sl[k], text + at, len - at);
			memcpy(text + at, stops[k], sl[k]);
			len += sl[k];
		}
		want = naive(text, len, stops, sl, n, &which);
		CHECK(stop_init(&m, sp, sl, n) == 0, "init");
		while (pos < len) {
			size_t piece = 1 + rnd(12), ol = 0;

			if (piece > len - pos)
				piece = len - pos;
			rc = stop_push(&m, text + pos, piece, out, sizeof(out), &ol);
			CHECK(rc >= 0, "push rc %d", rc);
			memcpy(got + glen, out, ol);
			glen += ol;
			pos += piece;
			if (rc == 1) {
				hit = 1;
				break;
			}
		}
		if (!hit)
			glen += stop_flush(&m, got + glen, API_STOP_MAX_LEN);
		CHECK(glen == want && memcmp(got, text, want) == 0,
		      "iter %d: streamed %zu bytes, naive %zu", it, glen, want);
		CHECK(hit == (which >= 0), "iter %d: hit %d naive %d", it, hit, which);
		if (hit)
			CHECK(m.matched == which, "iter %d: matched %d naive %d", it, m.matched,
			      which);
		if (check_failures() > 10)
			return;
	}
}

static void test_fixed(void)
{
	struct stop_matcher m;
	const char *s[] = {"</s>", "\n\nUser:"};
	size_t l[] = {4, 7}, ol;
	char out[512];

	CHECK(stop_init(&m, s, l, 2) == 0, "init");
	CHECK(stop_push(&m, "Hello <", 7, out, sizeof(out), &ol) == 0 && ol == 6 &&
		      memcmp(out, "Hello ", 6) == 0,
	      "held '<' (ol %zu)", ol);
	CHECK(stop_push(&m, "b>", 2, out, sizeof(out), &ol) == 0 && ol == 3 &&
		      memcmp(out, "<b>", 3) == 0,
	      "released '<b>' (ol %zu)", ol);
	CHECK(stop_push(&m, "ok\n", 3, out, sizeof(out), &ol) == 0 && ol == 2, "held newline");
	CHECK(stop_push(&m, "\nUs", 3, out, sizeof(out), &ol) == 0 && ol == 0, "held more");
	CHECK(stop_push(&m, "er: hi", 6, out, sizeof(out), &ol) == 1 && ol == 0 && m.matched == 1,
	      "matched across three pieces");
	CHECK(stop_push(&m, "x", 1, out, 0, &ol) == -ENOBUFS, "ENOBUFS");
	CHECK(stop_init(&m, s, (size_t[]){0, 1}, 2) == -EINVAL, "empty stop rejected");
}

int main(void)
{
	test_fixed();
	test_random(20000);
	if (check_exit())
		return 1;
	printf("test_stop: ok\n");
	return 0;
}
