/* SPDX-License-Identifier: Apache-2.0 */
/*
 * fuzz_http.c - libFuzzer target for the nic/http.h request parser.
 * Input: byte 0 picks the header limit and a split point, the rest is the request stream.
 * Checks: no crash or sanitizer report; an incremental parse (split in two, and byte by byte for
 * short inputs) gives the same result as a one-shot parse; every pointer and length in a parsed
 * request stays inside the input and inside the limits; pipelined requests parse in sequence.
 */
#include "http.h"

#include <stdlib.h>
#include <string.h>

#define REQUIRE(c)                                                                                 \
	do {                                                                                       \
		if (!(c))                                                                          \
			abort();                                                                   \
	} while (0)

static void check_req(const struct http_req *r, const uint8_t *d, size_t n,
                      const struct http_limits *lim)
{
	const char *lo = (const char *)d, *hi = (const char *)d + r->head_len;
	uint32_t i;

	REQUIRE(r->head_len <= lim->max_header_bytes);
	REQUIRE(r->content_length <= lim->max_body_bytes);
	REQUIRE(r->total_len == r->head_len + r->content_length && r->total_len <= n);
	REQUIRE(r->body == d + r->head_len);
	REQUIRE(r->version == 10 || r->version == 11);
	REQUIRE(r->method_str >= lo && r->method_str + r->method_len <= hi && r->method_len > 0);
	REQUIRE(r->target >= lo && r->target + r->target_len <= hi && r->target_len > 0);
	REQUIRE(r->nheaders <= HTTP_MAX_HEADERS);
	for (i = 0; i < r->nheaders; i++) {
		const struct http_header *h = &r->headers[i];

		REQUIRE(h->name_len > 0 && h->name >= lo && h->name + h->name_len <= hi);
		REQUIRE(h->value >= lo && h->value + h->value_len <= hi);
		REQUIRE(memchr(h->value, '\n', h->value_len) == NULL);
		REQUIRE(memchr(h->value, '\r', h->value_len) == NULL);
	}
}

static int parse_split(const uint8_t *d, size_t n, size_t cut, const struct http_limits *lim,
                       struct http_req *r)
{
	struct http_parser p;
	int rc;

	http_parser_reset(&p);
	rc = http_parse(&p, d, cut, lim, r);
	if (rc != HTTP_PARSE_MORE)
		return rc;
	return http_parse(&p, d, n, lim, r);
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	static struct http_req a, b;
	struct http_limits lim;
	struct http_parser p;
	size_t off = 0, i;
	int rc, rc2, k, guard;

	if (size < 1)
		return 0;
	k = data[0];
	data++;
	size--;
	lim.max_header_bytes = 64 + (uint32_t)(k & 0x3f) * 64;
	lim.max_body_bytes = 4096;

	http_parser_reset(&p);
	rc = http_parse(&p, data, size, &lim, &a);
	REQUIRE(rc == HTTP_PARSE_DONE || rc == HTTP_PARSE_MORE || rc < 0);
	if (rc == HTTP_PARSE_DONE)
		check_req(&a, data, size, &lim);
	rc2 = parse_split(data, size, ((size_t)k * 131) % (size + 1), &lim, &b);
	REQUIRE(rc2 == rc);
	if (rc == HTTP_PARSE_DONE)
		REQUIRE(b.total_len == a.total_len && b.nheaders == a.nheaders &&
		        b.target == a.target && b.keep_alive == a.keep_alive);
	if (size <= 512) {
		http_parser_reset(&p);
		rc2 = HTTP_PARSE_MORE;
		for (i = 0; i <= size && rc2 == HTTP_PARSE_MORE; i++)
			rc2 = http_parse(&p, data, i, &lim, &b);
		REQUIRE(rc2 == rc);
		if (rc == HTTP_PARSE_DONE)
			REQUIRE(b.total_len == a.total_len && b.head_len == a.head_len);
	}
	/* pipelined: keep going while requests complete */
	for (guard = 0; rc == HTTP_PARSE_DONE && guard < 64; guard++) {
		off += a.total_len;
		if (a.total_len == 0)
			abort();
		http_parser_reset(&p);
		rc = http_parse(&p, data + off, size - off, &lim, &a);
		if (rc == HTTP_PARSE_DONE)
			check_req(&a, data + off, size - off, &lim);
	}
	return 0;
}
