/* SPDX-License-Identifier: Apache-2.0 */
/*
 * http.h - strict, bounded, allocation-free HTTP/1.1 request parser and response-head writer.
 *
 * The parser reads one request at a time from a contiguous byte buffer that grows between calls
 * (recv appends to it). It remembers where it stopped, so feeding a request in n pieces costs
 * O(total bytes), and it never allocates. Bodies: Content-Length only; a request with any
 * Transfer-Encoding is rejected with 501 (see docs/http.md for the rules and why).
 *
 * Ownership: the caller owns struct http_parser, struct http_req and the byte buffer. The pointers
 *   inside struct http_req point into that buffer and are valid while the buffer is unchanged.
 * Threading: no global state; one parser per connection, used by one thread at a time.
 */
#ifndef OFFPATH_HTTP_H
#define OFFPATH_HTTP_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#define HTTP_MAX_HEADERS 64 /* more header fields than this: 431 */

enum http_method {
	HTTP_M_OTHER = 0, /* a syntactically valid method we do not name; the app answers 405/501 */
	HTTP_M_GET,
	HTTP_M_HEAD,
	HTTP_M_POST,
	HTTP_M_PUT,
	HTTP_M_DELETE,
	HTTP_M_OPTIONS,
};

struct http_header {
	const char *name;  /* not NUL-terminated; case as sent */
	const char *value; /* optional whitespace stripped at both ends; may be empty */
	uint32_t name_len;
	uint32_t value_len;
};

struct http_req {
	enum http_method method;
	const char *method_str;
	const char *target; /* request-target as sent, e.g. "/v1/completions?x=1" */
	uint32_t method_len;
	uint32_t target_len;
	int version;          /* 10 or 11 */
	bool keep_alive;      /* after this request: HTTP/1.1 unless "close", HTTP/1.0 only with
	                         "keep-alive" */
	bool expect_continue; /* "Expect: 100-continue" was sent */
	uint32_t nheaders;
	struct http_header headers[HTTP_MAX_HEADERS];
	uint64_t content_length; /* 0 when absent */
	const uint8_t
	    *body; /* content_length bytes, valid once http_parse returned HTTP_PARSE_DONE */
	uint32_t
	    head_len; /* bytes of request line + header fields + the empty line (+ leading CRLFs) */
	uint32_t total_len; /* head_len + content_length: where the next pipelined request starts */
};

struct http_limits {
	uint32_t max_header_bytes; /* request line + all header fields + empty line; over: 431 */
	uint64_t max_body_bytes;   /* Content-Length above this: 413 */
};

/* Incremental state. Zero it (http_parser_reset) before each request. */
struct http_parser {
	uint32_t scan;       /* bytes already scanned for the end of the head */
	uint32_t line_start; /* start of the line being scanned */
	bool head_done;      /* req holds a parsed head; only the body is missing */
};

enum {
	HTTP_PARSE_MORE = 0, /* need more bytes; call again with the same buffer, longer */
	HTTP_PARSE_DONE = 1, /* req is complete, req->total_len bytes consumed */
};

void http_parser_reset(struct http_parser *p);

/*
 * Parse the request at the start of buf[0..len). Call again with the same buf and a larger len
 * after more bytes arrive (the first len bytes must be unchanged). Returns HTTP_PARSE_DONE,
 * HTTP_PARSE_MORE, or a negative errno that http_status_for_error() maps to the status to answer:
 *   -EBADMSG malformed (400), -E2BIG head too large or too many fields (431),
 *   -EFBIG body too large (413), -ENOSYS Transfer-Encoding (501), -EPROTONOSUPPORT version (505),
 *   -EOPNOTSUPP an Expect other than 100-continue (417).
 * After an error the connection must be closed: the framing is lost.
 * Headers become readable (req fields other than body) as soon as the head is complete, even
 * while the result is HTTP_PARSE_MORE; test p->head_done.
 */
int http_parse(struct http_parser *p, const uint8_t *buf, size_t len, const struct http_limits *lim,
               struct http_req *req);

/* 400/413/431/417/501/505 for the errors above, 500 for anything else. */
int http_status_for_error(int err);

/* Reason phrase for a status code ("OK", "Not Found"; "Unknown" when not listed). */
const char *http_reason(int status);

/* Case-insensitive lookup of the first header named name; NULL when absent. */
const struct http_header *http_find_header(const struct http_req *req, const char *name);

/* Is [s, s+n) equal to the NUL-terminated lit, ignoring ASCII case? */
bool http_token_eq(const char *s, size_t n, const char *lit);

/*
 * Writes a response head into out[0..cap): status line, then "Content-Length: N" when
 * content_length >= 0 or "Transfer-Encoding: chunked" when chunked, then "Connection: close"
 * or "Connection: keep-alive", then extra (zero or more complete "Name: value\r\n" lines, or
 * NULL), then the empty line. Returns the length, or -ENOBUFS when it does not fit.
 */
int http_write_head(char *out, size_t cap, int status, int64_t content_length, bool chunked,
                    bool keep_alive, const char *extra);

/* Writes the chunk-size line "<hex>\r\n" for a chunk of n bytes; returns its length (<= 18). */
int http_write_chunk_size(char *out, uint64_t n);

#endif /* OFFPATH_HTTP_H */
