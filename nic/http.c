/* SPDX-License-Identifier: Apache-2.0 */
/* http.c - strict HTTP/1.1 request parser (RFC 9110/9112 subset) and response-head writer. */
#include "http.h"

#include <errno.h>
#include <string.h>

#define unlikely(x) __builtin_expect(!!(x), 0)

/* tchar per RFC 9110 5.6.2: the characters of a token (method, field name). */
static bool is_tchar(uint8_t c)
{
	if ((c >= '0' && c <= '9') || (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z'))
		return true;
	switch (c) {
	case '!':
	case '#':
	case '$':
	case '%':
	case '&':
	case '\'':
	case '*':
	case '+':
	case '-':
	case '.':
	case '^':
	case '_':
	case '`':
	case '|':
	case '~':
		return true;
	default:
		return false;
	}
}

/* field-value octets: HTAB, SP, VCHAR, obs-text. Everything else (CTLs, DEL) is rejected. */
static bool is_field_byte(uint8_t c)
{
	return c == '\t' || (c >= 0x20 && c != 0x7f);
}

/* request-target bytes: visible ASCII minus what RFC 3986 never allows in a URI. */
static bool is_target_byte(uint8_t c)
{
	if (c <= 0x20 || c >= 0x7f)
		return false;
	switch (c) {
	case '"':
	case '<':
	case '>':
	case '\\':
	case '^':
	case '`':
	case '{':
	case '|':
	case '}':
		return false;
	default:
		return true;
	}
}

static bool is_alpha(uint8_t c)
{
	return (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z');
}

/*
 * RFC 9112 3.2: origin-form "/...", asterisk-form "*", absolute-form "scheme://...".
 * authority-form (CONNECT) is not served.
 */
static bool target_form_ok(const uint8_t *t, uint32_t n)
{
	uint32_t i = 1;

	if (t[0] == '/')
		return true;
	if (t[0] == '*')
		return n == 1;
	if (!is_alpha(t[0]))
		return false;
	while (i < n && (is_alpha(t[i]) || (t[i] >= '0' && t[i] <= '9') || t[i] == '+' ||
	                 t[i] == '-' || t[i] == '.'))
		i++;
	return n - i > 3 && memcmp(t + i, "://", 3) == 0;
}

static uint8_t lower(uint8_t c)
{
	return (c >= 'A' && c <= 'Z') ? (uint8_t)(c + 32) : c;
}

bool http_token_eq(const char *s, size_t n, const char *lit)
{
	size_t i;

	for (i = 0; i < n; i++) {
		if (lit[i] == '\0' || lower((uint8_t)s[i]) != lower((uint8_t)lit[i]))
			return false;
	}
	return lit[n] == '\0';
}

void http_parser_reset(struct http_parser *p)
{
	memset(p, 0, sizeof(*p));
}

static enum http_method method_of(const char *m, size_t n)
{
	/* Methods are case-sensitive (RFC 9110 9.1). */
	static const struct {
		const char *s;
		enum http_method m;
	} tab[] = {
	    {"GET", HTTP_M_GET}, {"HEAD", HTTP_M_HEAD},     {"POST", HTTP_M_POST},
	    {"PUT", HTTP_M_PUT}, {"DELETE", HTTP_M_DELETE}, {"OPTIONS", HTTP_M_OPTIONS},
	};
	size_t i;

	for (i = 0; i < sizeof(tab) / sizeof(tab[0]); i++) {
		if (strlen(tab[i].s) == n && memcmp(tab[i].s, m, n) == 0)
			return tab[i].m;
	}
	return HTTP_M_OTHER;
}

/* request-line = method SP request-target SP HTTP-version, single spaces, nothing else. */
static int parse_request_line(const uint8_t *l, uint32_t n, struct http_req *req)
{
	uint32_t i = 0, m_end, t_start, t_end;

	while (i < n && is_tchar(l[i]))
		i++;
	if (i == 0 || i >= n || l[i] != ' ')
		return -EBADMSG;
	m_end = i++;
	t_start = i;
	while (i < n && is_target_byte(l[i]))
		i++;
	if (i == t_start || i >= n || l[i] != ' ' || !target_form_ok(l + t_start, i - t_start))
		return -EBADMSG;
	t_end = i++;
	/* HTTP-version = "HTTP" "/" DIGIT "." DIGIT, case-sensitive. */
	if (n - i != 8 || memcmp(l + i, "HTTP/", 5) != 0 || l[i + 5] < '0' || l[i + 5] > '9' ||
	    l[i + 6] != '.' || l[i + 7] < '0' || l[i + 7] > '9')
		return -EBADMSG;
	if (l[i + 5] != '1')
		return -EPROTONOSUPPORT;
	/* HTTP/1.x with x >= 1 is answered as 1.1 (RFC 9110 6.2). */
	req->version = l[i + 7] == '0' ? 10 : 11;
	req->method_str = (const char *)l;
	req->method_len = m_end;
	req->method = method_of(req->method_str, m_end);
	req->target = (const char *)l + t_start;
	req->target_len = t_end - t_start;
	return 0;
}

/* field-line = field-name ":" OWS field-value OWS. No obs-fold, no space before the colon. */
static int parse_header_line(const uint8_t *l, uint32_t n, struct http_req *req)
{
	uint32_t i = 0, v_start, v_end;
	struct http_header *h;

	while (i < n && is_tchar(l[i]))
		i++;
	if (i == 0 || i >= n || l[i] != ':')
		return -EBADMSG; /* also catches obs-fold: the line starts with SP/HTAB */
	if (unlikely(req->nheaders == HTTP_MAX_HEADERS))
		return -E2BIG;
	h = &req->headers[req->nheaders];
	h->name = (const char *)l;
	h->name_len = i;
	i++;
	while (i < n && (l[i] == ' ' || l[i] == '\t'))
		i++;
	v_start = i;
	for (; i < n; i++) {
		if (!is_field_byte(l[i]))
			return -EBADMSG;
	}
	v_end = n;
	while (v_end > v_start && (l[v_end - 1] == ' ' || l[v_end - 1] == '\t'))
		v_end--;
	h->value = (const char *)l + v_start;
	h->value_len = v_end - v_start;
	req->nheaders++;
	return 0;
}

const struct http_header *http_find_header(const struct http_req *req, const char *name)
{
	uint32_t i;

	for (i = 0; i < req->nheaders; i++) {
		if (http_token_eq(req->headers[i].name, req->headers[i].name_len, name))
			return &req->headers[i];
	}
	return NULL;
}

/* Connection: a comma-separated list of tokens. */
static void apply_connection(const struct http_header *h, struct http_req *req)
{
	uint32_t i = 0, s, e;

	while (i < h->value_len) {
		while (i < h->value_len &&
		       (h->value[i] == ' ' || h->value[i] == '\t' || h->value[i] == ','))
			i++;
		s = i;
		while (i < h->value_len && h->value[i] != ',')
			i++;
		e = i;
		while (e > s && (h->value[e - 1] == ' ' || h->value[e - 1] == '\t'))
			e--;
		if (http_token_eq(h->value + s, e - s, "close"))
			req->keep_alive = false;
		else if (http_token_eq(h->value + s, e - s, "keep-alive") && req->version == 10)
			req->keep_alive = true;
	}
}

/* The semantic checks that need the whole head: framing, Host, Connection, Expect. */
static int finish_head(struct http_req *req, const struct http_limits *lim)
{
	bool have_cl = false, have_te = false, have_close = false;
	uint32_t i, j, hosts = 0;
	uint64_t cl = 0;

	req->keep_alive = req->version == 11;
	for (i = 0; i < req->nheaders; i++) {
		const struct http_header *h = &req->headers[i];

		if (http_token_eq(h->name, h->name_len, "content-length")) {
			/* Any second Content-Length, even with the same value, is rejected. */
			/* Strict: no trailing whitespace either (the byte after the trimmed value
			 * is the line's CR exactly when nothing was trimmed). */
			if (have_cl || h->value_len == 0 || h->value_len > 19 ||
			    h->value[h->value_len] != '\r')
				return -EBADMSG;
			for (j = 0; j < h->value_len; j++) {
				if (h->value[j] < '0' || h->value[j] > '9')
					return -EBADMSG;
				cl = cl * 10 + (uint64_t)(h->value[j] - '0');
			}
			have_cl = true;
		} else if (http_token_eq(h->name, h->name_len, "transfer-encoding")) {
			have_te = true;
		} else if (http_token_eq(h->name, h->name_len, "host")) {
			hosts++;
		} else if (http_token_eq(h->name, h->name_len, "connection")) {
			apply_connection(h, req);
			have_close |= !req->keep_alive;
		} else if (http_token_eq(h->name, h->name_len, "expect")) {
			if (!http_token_eq(h->value, h->value_len, "100-continue"))
				return -EOPNOTSUPP;
			req->expect_continue = req->version == 11;
		}
	}
	if (have_close)
		req->keep_alive = false;
	if (have_te)
		return have_cl ? -EBADMSG : -ENOSYS; /* TE + CL is a smuggling attempt: 400 */
	if (hosts > 1 || (hosts == 0 && req->version == 11))
		return -EBADMSG;
	if (cl > lim->max_body_bytes || cl > (uint64_t)UINT32_MAX - req->head_len)
		return -EFBIG;
	req->content_length = cl;
	req->total_len = req->head_len + (uint32_t)cl;
	return 0;
}

int http_parse(struct http_parser *p, const uint8_t *buf, size_t len, const struct http_limits *lim,
               struct http_req *req)
{
	uint32_t i, line_len;
	int rc;

	if (!p->head_done) {
		if (p->scan == 0) {
			req->nheaders = 0;
			req->method_str = NULL;
			req->method_len = 0;
			req->target = NULL;
			req->target_len = 0;
			req->content_length = 0;
			req->expect_continue = false;
			req->body = NULL;
		}
		for (i = p->scan; i < len; i++) {
			if (i >= lim->max_header_bytes)
				return -E2BIG;
			if (buf[i] == '\r') {
				if (i + 1 == len)
					break; /* look at the byte after CR next time */
				if (buf[i + 1] != '\n')
					return -EBADMSG; /* bare CR */
				continue;
			}
			if (buf[i] != '\n')
				continue;
			if (i == 0 || buf[i - 1] != '\r')
				return -EBADMSG; /* bare LF */
			line_len = i - 1 - p->line_start;
			if (line_len == 0) {
				if (req->method_str == NULL) {
					/* RFC 9112 2.2: ignore empty lines before the request line.
					 */
					p->line_start = i + 1;
					continue;
				}
				req->head_len = i + 1;
				p->scan = i + 1;
				p->head_done = true;
				rc = finish_head(req, lim);
				if (rc < 0)
					return rc;
				goto body;
			}
			if (req->method_str == NULL)
				rc = parse_request_line(buf + p->line_start, line_len, req);
			else
				rc = parse_header_line(buf + p->line_start, line_len, req);
			if (rc < 0)
				return rc;
			p->line_start = i + 1;
		}
		p->scan = i;
		return HTTP_PARSE_MORE;
	}
body:
	if (len < req->total_len)
		return HTTP_PARSE_MORE;
	req->body = buf + req->head_len;
	return HTTP_PARSE_DONE;
}

int http_status_for_error(int err)
{
	switch (err) {
	case -EBADMSG:
		return 400;
	case -E2BIG:
		return 431;
	case -EFBIG:
		return 413;
	case -ENOSYS:
		return 501;
	case -EPROTONOSUPPORT:
		return 505;
	case -EOPNOTSUPP:
		return 417;
	default:
		return 500;
	}
}

const char *http_reason(int status)
{
	switch (status) {
	case 100:
		return "Continue";
	case 200:
		return "OK";
	case 201:
		return "Created";
	case 202:
		return "Accepted";
	case 204:
		return "No Content";
	case 301:
		return "Moved Permanently";
	case 302:
		return "Found";
	case 304:
		return "Not Modified";
	case 400:
		return "Bad Request";
	case 401:
		return "Unauthorized";
	case 403:
		return "Forbidden";
	case 404:
		return "Not Found";
	case 405:
		return "Method Not Allowed";
	case 408:
		return "Request Timeout";
	case 409:
		return "Conflict";
	case 411:
		return "Length Required";
	case 413:
		return "Content Too Large";
	case 414:
		return "URI Too Long";
	case 415:
		return "Unsupported Media Type";
	case 417:
		return "Expectation Failed";
	case 422:
		return "Unprocessable Content";
	case 429:
		return "Too Many Requests";
	case 431:
		return "Request Header Fields Too Large";
	case 500:
		return "Internal Server Error";
	case 501:
		return "Not Implemented";
	case 502:
		return "Bad Gateway";
	case 503:
		return "Service Unavailable";
	case 504:
		return "Gateway Timeout";
	case 505:
		return "HTTP Version Not Supported";
	default:
		return "Unknown";
	}
}

/* Appends s[0..n) at out+*pos if it fits; returns false (and leaves *pos) when it does not. */
static bool put(char *out, size_t cap, size_t *pos, const char *s, size_t n)
{
	if (n > cap - *pos)
		return false;
	memcpy(out + *pos, s, n);
	*pos += n;
	return true;
}

static size_t fmt_u64(char *out, uint64_t v, unsigned base)
{
	static const char digits[] = "0123456789abcdef";
	char tmp[24];
	size_t n = 0, i;

	do {
		tmp[n++] = digits[v % base];
		v /= base;
	} while (v);
	for (i = 0; i < n; i++)
		out[i] = tmp[n - 1 - i];
	return n;
}

int http_write_chunk_size(char *out, uint64_t n)
{
	size_t len = fmt_u64(out, n, 16);

	out[len++] = '\r';
	out[len++] = '\n';
	return (int)len;
}

int http_write_head(char *out, size_t cap, int status, int64_t content_length, bool chunked,
                    bool keep_alive, const char *extra)
{
	const char *reason = http_reason(status);
	char num[24];
	size_t pos = 0, n;

	if (status < 100 || status > 599 || cap > (size_t)INT32_MAX)
		return -EINVAL;
	n = fmt_u64(num, (uint64_t)status, 10);
	if (!put(out, cap, &pos, "HTTP/1.1 ", 9) || !put(out, cap, &pos, num, n) ||
	    !put(out, cap, &pos, " ", 1) || !put(out, cap, &pos, reason, strlen(reason)) ||
	    !put(out, cap, &pos, "\r\n", 2))
		return -ENOBUFS;
	if (content_length >= 0) {
		n = fmt_u64(num, (uint64_t)content_length, 10);
		if (!put(out, cap, &pos, "Content-Length: ", 16) || !put(out, cap, &pos, num, n) ||
		    !put(out, cap, &pos, "\r\n", 2))
			return -ENOBUFS;
	} else if (chunked) {
		if (!put(out, cap, &pos, "Transfer-Encoding: chunked\r\n", 28))
			return -ENOBUFS;
	}
	if (keep_alive) {
		if (!put(out, cap, &pos, "Connection: keep-alive\r\n", 24))
			return -ENOBUFS;
	} else if (!put(out, cap, &pos, "Connection: close\r\n", 19)) {
		return -ENOBUFS;
	}
	if (extra && !put(out, cap, &pos, extra, strlen(extra)))
		return -ENOBUFS;
	if (!put(out, cap, &pos, "\r\n", 2))
		return -ENOBUFS;
	return (int)pos;
}
