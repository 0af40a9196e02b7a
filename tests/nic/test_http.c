/* SPDX-License-Identifier: Apache-2.0 */
/*
 * test_http.c - unit tests for the nic/http.h request parser and head writer.
 * Every case is also fed split at every byte boundary and one byte at a time: the incremental
 * result must equal the one-shot result. Expected statuses are the ones RFC 9110/9112 require.
 */
#include "http.h"

#include "check.h"

#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

static struct http_limits lim = {.max_header_bytes = 8192, .max_body_bytes = 1 << 20};

static int parse_once(const char *s, size_t len, struct http_req *req)
{
	struct http_parser p;

	http_parser_reset(&p);
	return http_parse(&p, (const uint8_t *)s, len, &lim, req);
}

/* Feeds s in pieces ending at each cut (cuts ascending, last one == len). */
static int parse_cuts(const char *s, const size_t *cuts, size_t ncuts, struct http_req *req)
{
	struct http_parser p;
	int rc = HTTP_PARSE_MORE;
	size_t i;

	http_parser_reset(&p);
	for (i = 0; i < ncuts; i++) {
		rc = http_parse(&p, (const uint8_t *)s, cuts[i], &lim, req);
		if (rc != HTTP_PARSE_MORE)
			return rc;
	}
	return rc;
}

static bool same_req(const struct http_req *a, const struct http_req *b)
{
	uint32_t i;

	if (a->method != b->method || a->target_len != b->target_len || a->version != b->version ||
	    a->keep_alive != b->keep_alive || a->nheaders != b->nheaders ||
	    a->content_length != b->content_length || a->total_len != b->total_len ||
	    a->head_len != b->head_len || a->target != b->target || a->body != b->body)
		return false;
	for (i = 0; i < a->nheaders; i++) {
		if (a->headers[i].name != b->headers[i].name ||
		    a->headers[i].value_len != b->headers[i].value_len ||
		    a->headers[i].value != b->headers[i].value)
			return false;
	}
	return true;
}

/* Parses s whole, then split at every boundary, then byte by byte; all must agree. */
static int parse_all_ways(const char *s, struct http_req *out)
{
	size_t len = strlen(s), i;
	static struct http_req r2;
	size_t cuts[2], *many;
	int rc = parse_once(s, len, out), rc2;

	for (i = 0; i <= len; i++) {
		cuts[0] = i;
		cuts[1] = len;
		rc2 = parse_cuts(s, cuts, 2, &r2);
		CHECK(rc2 == rc, "split at %zu: %d vs %d for %.40s", i, rc2, rc, s);
		if (rc == HTTP_PARSE_DONE && rc2 == rc)
			CHECK(same_req(out, &r2), "split at %zu: different request", i);
	}
	many = malloc((len + 1) * sizeof(*many));
	for (i = 0; i <= len; i++)
		many[i] = i;
	rc2 = parse_cuts(s, many, len + 1, &r2);
	CHECK(rc2 == rc, "byte by byte: %d vs %d for %.40s", rc2, rc, s);
	if (rc == HTTP_PARSE_DONE && rc2 == rc)
		CHECK(same_req(out, &r2), "byte by byte: different request");
	free(many);
	return rc;
}

static bool span_eq(const char *p, size_t n, const char *lit)
{
	return strlen(lit) == n && memcmp(p, lit, n) == 0;
}

static void expect_err(const char *s, int err, int status)
{
	static struct http_req req;
	int rc = parse_all_ways(s, &req);

	CHECK(rc == err, "got %d want %d for [%s]", rc, err, s);
	CHECK(http_status_for_error(rc) == status, "status %d want %d", http_status_for_error(rc),
	      status);
}

static void test_valid(void)
{
	static struct http_req req;
	const struct http_header *h;
	const char *s;
	int rc;

	s = "GET /v1/models?x=1 HTTP/1.1\r\nHost: a\r\nX-Empty:\r\nX-Pad: \t v a l \t \r\n\r\n";
	rc = parse_all_ways(s, &req);
	CHECK(rc == HTTP_PARSE_DONE, "rc %d", rc);
	CHECK(req.method == HTTP_M_GET, "method");
	CHECK(span_eq(req.target, req.target_len, "/v1/models?x=1"), "target");
	CHECK(req.version == 11 && req.keep_alive, "version/keep-alive");
	CHECK(req.nheaders == 3, "nheaders %u", req.nheaders);
	CHECK(req.total_len == strlen(s) && req.head_len == strlen(s), "lengths");
	h = http_find_header(&req, "x-pad");
	CHECK(h && span_eq(h->value, h->value_len, "v a l"), "OWS trimmed");
	h = http_find_header(&req, "X-EMPTY");
	CHECK(h && h->value_len == 0, "empty value");
	CHECK(http_find_header(&req, "x-missing") == NULL, "missing header");

	s = "POST /v1/completions HTTP/1.1\r\nHost: x\r\nContent-Length: 11\r\n\r\nhello world";
	rc = parse_all_ways(s, &req);
	CHECK(rc == HTTP_PARSE_DONE, "rc %d", rc);
	CHECK(req.method == HTTP_M_POST && req.content_length == 11, "post");
	CHECK(req.body && memcmp(req.body, "hello world", 11) == 0, "body");

	/* A short body: MORE until the last byte. */
	rc = parse_once(s, strlen(s) - 1, &req);
	CHECK(rc == HTTP_PARSE_MORE, "short body rc %d", rc);

	/* Empty lines before the request line are ignored (RFC 9112 2.2). */
	rc = parse_all_ways("\r\n\r\nGET / HTTP/1.1\r\nHost: a\r\n\r\n", &req);
	CHECK(rc == HTTP_PARSE_DONE && req.method == HTTP_M_GET, "leading CRLF rc %d", rc);

	rc = parse_all_ways("GET / HTTP/1.0\r\n\r\n", &req);
	CHECK(rc == HTTP_PARSE_DONE && req.version == 10 && !req.keep_alive, "1.0 close");
	rc = parse_all_ways("GET / HTTP/1.0\r\nConnection: Keep-Alive\r\n\r\n", &req);
	CHECK(rc == HTTP_PARSE_DONE && req.keep_alive, "1.0 keep-alive");
	rc = parse_all_ways("GET / HTTP/1.1\r\nHost: a\r\nConnection: foo, close\r\n\r\n", &req);
	CHECK(rc == HTTP_PARSE_DONE && !req.keep_alive, "1.1 close in a list");
	rc = parse_all_ways("GET / HTTP/1.1\r\nHost: a\r\nConnection: keep-alive\r\n\r\n", &req);
	CHECK(rc == HTTP_PARSE_DONE && req.keep_alive, "1.1 keep-alive");
	rc = parse_all_ways("GET / HTTP/1.2\r\nHost: a\r\n\r\n", &req);
	CHECK(rc == HTTP_PARSE_DONE && req.version == 11, "1.2 answered as 1.1");
	rc = parse_all_ways("FOO /x HTTP/1.1\r\nHost: a\r\n\r\n", &req);
	CHECK(rc == HTTP_PARSE_DONE && req.method == HTTP_M_OTHER, "unknown method parses");
	rc = parse_all_ways("OPTIONS * HTTP/1.1\r\nHost: a\r\n\r\n", &req);
	CHECK(rc == HTTP_PARSE_DONE && req.target_len == 1, "asterisk-form");
	rc = parse_all_ways("GET http://h:1/p?q HTTP/1.1\r\nHost: h:1\r\n\r\n", &req);
	CHECK(rc == HTTP_PARSE_DONE && span_eq(req.target, req.target_len, "http://h:1/p?q"),
	      "absolute-form");
	rc = parse_all_ways("get / HTTP/1.1\r\nHost: a\r\n\r\n", &req);
	CHECK(rc == HTTP_PARSE_DONE && req.method == HTTP_M_OTHER, "methods are case-sensitive");
	rc = parse_all_ways("POST / HTTP/1.1\r\nHost: a\r\nContent-Length: 007\r\n\r\n1234567",
	                    &req);
	CHECK(rc == HTTP_PARSE_DONE && req.content_length == 7, "leading zeros");
	rc = parse_all_ways("GET / HTTP/1.1\r\nHost: a\r\nX-Utf8: caf\xc3\xa9\r\n\r\n", &req);
	CHECK(rc == HTTP_PARSE_DONE, "obs-text in a value");
}

static void test_expect_continue(void)
{
	static struct http_req req;
	struct http_parser p;
	const char *s =
	    "POST / HTTP/1.1\r\nHost: a\r\nExpect: 100-Continue\r\nContent-Length: 3\r\n\r\n";
	int rc;

	http_parser_reset(&p);
	rc = http_parse(&p, (const uint8_t *)s, strlen(s), &lim, &req);
	CHECK(rc == HTTP_PARSE_MORE && p.head_done && req.expect_continue, "expect rc %d", rc);
	expect_err("POST / HTTP/1.1\r\nHost: a\r\nExpect: weird\r\n\r\n", -EOPNOTSUPP, 417);
}

static void test_pipelined(void)
{
	static struct http_req req;
	struct http_parser p;
	const char *s = "GET /a HTTP/1.1\r\nHost: a\r\n\r\n"
	                "POST /b HTTP/1.1\r\nHost: a\r\nContent-Length: 3\r\n\r\nxyz"
	                "GET /c HTTP/1.1\r\nHost: a\r\n\r\n";
	const char *want[] = {"/a", "/b", "/c"};
	size_t off = 0, len = strlen(s);
	int i, rc;

	for (i = 0; i < 3; i++) {
		http_parser_reset(&p);
		rc = http_parse(&p, (const uint8_t *)s + off, len - off, &lim, &req);
		CHECK(rc == HTTP_PARSE_DONE, "pipelined %d rc %d", i, rc);
		if (rc != HTTP_PARSE_DONE)
			return;
		CHECK(span_eq(req.target, req.target_len, want[i]), "pipelined target %d", i);
		off += req.total_len;
	}
	CHECK(off == len, "consumed all");
}

static void test_malformed(void)
{
	expect_err("GET  / HTTP/1.1\r\nHost: a\r\n\r\n", -EBADMSG, 400);
	expect_err("GET / HTTP/1.1 \r\nHost: a\r\n\r\n", -EBADMSG, 400);
	expect_err(" GET / HTTP/1.1\r\nHost: a\r\n\r\n", -EBADMSG, 400);
	expect_err("GET / http/1.1\r\nHost: a\r\n\r\n", -EBADMSG, 400);
	expect_err("GET / HTTP/1.1x\r\nHost: a\r\n\r\n", -EBADMSG, 400);
	expect_err("GET / HTTP/11\r\nHost: a\r\n\r\n", -EBADMSG, 400);
	expect_err("GET /\r\n\r\n", -EBADMSG, 400);
	expect_err("G@T / HTTP/1.1\r\nHost: a\r\n\r\n", -EBADMSG, 400);
	expect_err("GET /a\x7f HTTP/1.1\r\nHost: a\r\n\r\n", -EBADMSG, 400);
	expect_err("GET /caf\xc3\xa9 HTTP/1.1\r\nHost: a\r\n\r\n", -EBADMSG, 400);
	expect_err("GET / HTTP/2.0\r\nHost: a\r\n\r\n", -EPROTONOSUPPORT, 505);
	expect_err("GET / HTTP/0.9\r\nHost: a\r\n\r\n", -EPROTONOSUPPORT, 505);
	/* CR/LF oddities */
	expect_err("GET / HTTP/1.1\nHost: a\n\n", -EBADMSG, 400);
	expect_err("GET / HTTP/1.1\r\nHost: a\n\r\n", -EBADMSG, 400);
	expect_err("GET / HTTP/1.1\r\nHost: a\r\n\n", -EBADMSG, 400);
	expect_err("GET / HTTP/1.1\r\nHost: a\rb\r\n\r\n", -EBADMSG, 400);
	expect_err("GET / HTTP/1.1\r\r\nHost: a\r\n\r\n", -EBADMSG, 400);
	expect_err("GET / HTTP/1.1\r\nHost: a\r\n\r\r\n", -EBADMSG, 400);
	expect_err("\nGET / HTTP/1.1\r\nHost: a\r\n\r\n", -EBADMSG, 400);
	/* header field syntax */
	expect_err("GET / HTTP/1.1\r\nHost : a\r\n\r\n", -EBADMSG, 400);
	expect_err("GET / HTTP/1.1\r\nHost: a\r\nX: a\r\n b\r\n\r\n", -EBADMSG, 400);
	expect_err("GET / HTTP/1.1\r\n Host: a\r\n\r\n", -EBADMSG, 400);
	expect_err("GET / HTTP/1.1\r\nHost: a\r\nNoColon\r\n\r\n", -EBADMSG, 400);
	expect_err("GET / HTTP/1.1\r\nHost: a\r\n: empty-name\r\n\r\n", -EBADMSG, 400);
	expect_err("GET / HTTP/1.1\r\nHost: a\r\nX(y): z\r\n\r\n", -EBADMSG, 400);
	expect_err("GET / HTTP/1.1\r\nHost: a\r\nX: a\x01\r\n\r\n", -EBADMSG, 400);
	expect_err("GET / HTTP/1.1\r\nHost: a\r\nX: a\x7f\r\n\r\n", -EBADMSG, 400);
	/* request-target forms (RFC 9112 3.2) and bytes RFC 3986 never allows */
	expect_err("GET a/b HTTP/1.1\r\nHost: a\r\n\r\n", -EBADMSG, 400);
	expect_err("GET *x HTTP/1.1\r\nHost: a\r\n\r\n", -EBADMSG, 400);
	expect_err("GET http:/x HTTP/1.1\r\nHost: a\r\n\r\n", -EBADMSG, 400);
	expect_err("GET /a|b HTTP/1.1\r\nHost: a\r\n\r\n", -EBADMSG, 400);
	expect_err("GET /\"q\" HTTP/1.1\r\nHost: a\r\n\r\n", -EBADMSG, 400);
	/* Host */
	expect_err("GET / HTTP/1.1\r\n\r\n", -EBADMSG, 400);
	expect_err("GET / HTTP/1.1\r\nHost: a\r\nHost: b\r\n\r\n", -EBADMSG, 400);
}

static void test_nul_byte(void)
{
	static const char s[] = "GET / HTTP/1.1\r\nHost: a\r\nX: a\0b\r\n\r\n";
	static struct http_req req;
	int rc = parse_once(s, sizeof(s) - 1, &req);

	CHECK(rc == -EBADMSG, "NUL in value rc %d", rc);
}

static void test_content_length(void)
{
	static struct http_req req;
	char buf[256];
	int rc;

	expect_err("POST / HTTP/1.1\r\nHost: a\r\nContent-Length: abc\r\n\r\n", -EBADMSG, 400);
	expect_err("POST / HTTP/1.1\r\nHost: a\r\nContent-Length: -1\r\n\r\n", -EBADMSG, 400);
	expect_err("POST / HTTP/1.1\r\nHost: a\r\nContent-Length: +5\r\n\r\n", -EBADMSG, 400);
	expect_err("POST / HTTP/1.1\r\nHost: a\r\nContent-Length:\r\n\r\n", -EBADMSG, 400);
	expect_err("POST / HTTP/1.1\r\nHost: a\r\nContent-Length: 1 2\r\n\r\n", -EBADMSG, 400);
	expect_err("POST / HTTP/1.1\r\nHost: a\r\nContent-Length: 1,1\r\n\r\n", -EBADMSG, 400);
	expect_err("POST / HTTP/1.1\r\nHost: a\r\nContent-Length: 1\t\r\n\r\nx", -EBADMSG, 400);
	expect_err("POST / HTTP/1.1\r\nHost: a\r\nContent-Length: 0x10\r\n\r\n", -EBADMSG, 400);
	expect_err("POST / HTTP/1.1\r\nHost: a\r\nContent-Length: 99999999999999999999\r\n\r\n",
	           -EBADMSG, 400);
	/* duplicates: same value or not, rejected */
	expect_err("POST / HTTP/1.1\r\nHost: a\r\nContent-Length: 1\r\nContent-Length: 1\r\n\r\nx",
	           -EBADMSG, 400);
	expect_err("POST / HTTP/1.1\r\nHost: a\r\nContent-Length: 1\r\ncontent-length: 2\r\n\r\nxy",
	           -EBADMSG, 400);
	/* Transfer-Encoding: not supported (501); with Content-Length a smuggling attempt (400) */
	expect_err("POST / HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n\r\n",
	           -ENOSYS, 501);
	expect_err(
	    "POST / HTTP/1.1\r\nHost: a\r\nContent-Length: 5\r\nTransfer-Encoding: chunked\r\n\r\n",
	    -EBADMSG, 400);
	/* limit: exactly max is fine, one more is 413 */
	snprintf(buf, sizeof(buf), "POST / HTTP/1.1\r\nHost: a\r\nContent-Length: %u\r\n\r\n",
	         (unsigned)lim.max_body_bytes + 1);
	expect_err(buf, -EFBIG, 413);
	snprintf(buf, sizeof(buf), "POST / HTTP/1.1\r\nHost: a\r\nContent-Length: %u\r\n\r\n",
	         (unsigned)lim.max_body_bytes);
	rc = parse_once(buf, strlen(buf), &req);
	CHECK(rc == HTTP_PARSE_MORE && req.content_length == lim.max_body_bytes, "max body rc %d",
	      rc);
}

static void test_header_limits(void)
{
	static struct http_req req;
	char *buf = malloc(lim.max_header_bytes + 64);
	size_t n, i;
	int rc;

	/* A head of exactly max_header_bytes parses; one byte more is 431. */
	n = (size_t)snprintf(buf, 64, "GET / HTTP/1.1\r\nHost: a\r\nX: ");
	while (n < lim.max_header_bytes - 4)
		buf[n++] = 'v';
	memcpy(buf + n, "\r\n\r\n", 5);
	CHECK(strlen(buf) == lim.max_header_bytes, "setup");
	rc = parse_all_ways(buf, &req);
	CHECK(rc == HTTP_PARSE_DONE, "exact max rc %d", rc);
	memmove(buf + 30, buf + 29, strlen(buf + 29) + 1);
	rc = parse_once(buf, strlen(buf), &req);
	CHECK(rc == -E2BIG && http_status_for_error(rc) == 431, "max+1 rc %d", rc);
	/* An endless line is refused as soon as it passes the limit, not at its end. */
	memset(buf, 'a', lim.max_header_bytes + 1);
	memcpy(buf, "GET /", 5);
	rc = parse_once(buf, lim.max_header_bytes + 1, &req);
	CHECK(rc == -E2BIG, "endless line rc %d", rc);
	rc = parse_once(buf, lim.max_header_bytes, &req);
	CHECK(rc == HTTP_PARSE_MORE, "endless line under the limit rc %d", rc);
	free(buf);
	/* Too many header fields: 431. */
	buf = malloc(8192);
	n = (size_t)sprintf(buf, "GET / HTTP/1.1\r\nHost: a\r\n");
	for (i = 1; i < HTTP_MAX_HEADERS; i++)
		n += (size_t)sprintf(buf + n, "X%zu: y\r\n", i);
	strcpy(buf + n, "\r\n");
	rc = parse_once(buf, strlen(buf), &req);
	CHECK(rc == HTTP_PARSE_DONE && req.nheaders == HTTP_MAX_HEADERS, "max headers rc %d", rc);
	strcpy(buf + n, "Z: 1\r\n\r\n");
	rc = parse_once(buf, strlen(buf), &req);
	CHECK(rc == -E2BIG, "too many headers rc %d", rc);
	free(buf);
}

static void test_write_head(void)
{
	char out[512], tiny[20];
	int n;

	n = http_write_head(out, sizeof(out), 200, 5, false, true, "Content-Type: text/plain\r\n");
	CHECK(n > 0, "n %d", n);
	out[n] = '\0';
	CHECK(strncmp(out, "HTTP/1.1 200 OK\r\n", 17) == 0, "status line [%s]", out);
	CHECK(strstr(out, "\r\nContent-Length: 5\r\n") != NULL, "content-length [%s]", out);
	CHECK(strstr(out, "\r\nConnection: keep-alive\r\n") != NULL, "keep-alive");
	CHECK(strstr(out, "\r\nContent-Type: text/plain\r\n\r\n") != NULL, "extra + end");
	CHECK(strstr(out, "\r\n\r\n") == out + n - 4, "one empty line at the end");
	n = http_write_head(out, sizeof(out), 503, -1, true, false, NULL);
	out[n] = '\0';
	CHECK(strstr(out, "503 Service Unavailable\r\n") &&
	          strstr(out, "Transfer-Encoding: chunked\r\n") &&
	          strstr(out, "Connection: close\r\n"),
	      "chunked head [%s]", out);
	CHECK(http_write_head(tiny, sizeof(tiny), 200, 5, false, true, NULL) == -ENOBUFS,
	      "no room");
	CHECK(http_write_head(out, sizeof(out), 42, 5, false, true, NULL) == -EINVAL, "bad status");
	n = http_write_chunk_size(out, 255);
	CHECK(n == 4 && memcmp(out, "ff\r\n", 4) == 0, "chunk size");
	n = http_write_chunk_size(out, 0);
	CHECK(n == 3 && memcmp(out, "0\r\n", 3) == 0, "chunk size 0");
}

int main(void)
{
	test_valid();
	test_expect_continue();
	test_pipelined();
	test_malformed();
	test_nul_byte();
	test_content_length();
	test_header_limits();
	test_write_head();
	if (check_exit())
		return 1;
	printf("test_http: all passed\n");
	return 0;
}
