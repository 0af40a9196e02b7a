/* SPDX-License-Identifier: Apache-2.0 */
/*
 * test_ing.c - the io_uring server (nic/ing.h) over real sockets on 127.0.0.1.
 * A small app on ing.h answers /hello, /echo, /fail and streams chunks from on_poll (/stream,
 * /forever, /fat). Clients: curl (the reference HTTP client) and raw C sockets.
 * Usage: test_ing [--fallback|--busy]   (--fallback: single-shot accept/recv, no DEFER_TASKRUN;
 *                                       --busy: the loop busy-polls, wait_us = 0)
 */
#include "ing.h"

#include "check.h"

#include <arpa/inet.h>
#include <errno.h>
#include <netinet/in.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/time.h>
#include <time.h>
#include <unistd.h>

#define MAX_CONNS       64
#define HDR_TIMEOUT_MS  300
#define IDLE_TIMEOUT_MS 1500

/* ---- the app (runs on the loop thread) ---- */

enum skind { S_FREE, S_COUNT, S_FOREVER, S_FAT };
struct stream {
	int kind;
	struct ing_conn conn;
	int next, total;
};

static struct ing_server *srv;
static struct stream streams[256];
static atomic_int n_polls, n_requests, n_close_peer, n_close_shutdown, n_enobufs, n_stale_ok;
static struct ing_conn closed_handle;
static int have_closed_handle;

static struct stream *stream_get(void)
{
	for (size_t i = 0; i < sizeof(streams) / sizeof(streams[0]); i++) {
		if (streams[i].kind == S_FREE)
			return &streams[i];
	}
	return NULL;
}

static bool starts(const struct http_req *r, const char *p)
{
	size_t n = strlen(p);

	return r->target_len >= n && memcmp(r->target, p, n) == 0;
}

static int app_request(void *ctx, struct ing_conn c, const struct http_req *r)
{
	struct stream *s;

	(void)ctx;
	atomic_fetch_add(&n_requests, 1);
	if (starts(r, "/hello"))
		return ing_respond(srv, c, 200, "Content-Type: text/plain\r\n", "hello\n", 6);
	if (starts(r, "/echo"))
		return ing_respond(srv, c, 200, "Content-Type: application/octet-stream\r\n",
		                   r->body, r->content_length);
	if (starts(r, "/fail"))
		return -EBUSY;
	if (starts(r, "/stream") || starts(r, "/forever") || starts(r, "/fat")) {
		s = stream_get();
		if (!s)
			return -EBUSY;
		s->conn = c;
		s->next = 0;
		s->total = 0;
		if (starts(r, "/stream")) {
			const char *q = memchr(r->target, '=', r->target_len);

			s->kind = S_COUNT;
			s->total = q ? atoi(q + 1) : 3;
		} else {
			s->kind = starts(r, "/fat") ? S_FAT : S_FOREVER;
		}
		ing_set_data(srv, c, s);
		return ing_stream_begin(srv, c, 200, "Content-Type: text/event-stream\r\n");
	}
	return ing_respond(srv, c, 404, NULL, "no\n", 3);
}

static void app_poll(void *ctx)
{
	static char fat[16384];
	char line[64];
	int n, rc;

	(void)ctx;
	atomic_fetch_add_explicit(&n_polls, 1, memory_order_relaxed);
	if (have_closed_handle) {
		/* A handle kept after its connection closed must be refused, not reused. */
		rc = ing_stream_write(srv, closed_handle, "x", 1);
		if (rc == -ESTALE)
			atomic_fetch_add(&n_stale_ok, 1);
		have_closed_handle = 0;
	}
	for (size_t i = 0; i < sizeof(streams) / sizeof(streams[0]); i++) {
		struct stream *s = &streams[i];

		switch (s->kind) {
		case S_COUNT:
			if (s->next == s->total) {
				ing_stream_end(srv, s->conn);
				s->kind = S_FREE;
				break;
			}
			n = snprintf(line, sizeof(line), "data: %d\n\n", s->next);
			if (ing_stream_write(srv, s->conn, line, (size_t)n) == 0)
				s->next++;
			break;
		case S_FOREVER:
			n = snprintf(line, sizeof(line), "data: %d\n\n", s->next);
			if (ing_stream_write(srv, s->conn, line, (size_t)n) == 0)
				s->next++;
			break;
		case S_FAT:
			memset(fat, 'f', sizeof(fat));
			rc = ing_stream_write(srv, s->conn, fat, sizeof(fat));
			if (rc == -ENOBUFS) {
				/* The client does not read: cancel, as the daemon will. */
				atomic_fetch_add(&n_enobufs, 1);
				ing_close(srv, s->conn);
				s->kind = S_FREE;
			}
			break;
		}
	}
}

static void app_close(void *ctx, struct ing_conn c, void *data, enum ing_close_reason why)
{
	struct stream *s = data;

	(void)ctx;
	if (s)
		s->kind = S_FREE;
	if (why == ING_CLOSE_PEER)
		atomic_fetch_add(&n_close_peer, 1);
	if (why == ING_CLOSE_SHUTDOWN)
		atomic_fetch_add(&n_close_shutdown, 1);
	closed_handle = c;
	have_closed_handle = 1;
}

/* ---- client helpers ---- */

static int port;

static double now_s(void)
{
	struct timespec ts;

	clock_gettime(CLOCK_MONOTONIC, &ts);
	return (double)ts.tv_sec + (double)ts.tv_nsec * 1e-9;
}

/* rcvbuf > 0: a small receive window, set before connect so it takes effect. */
static int cli_connect_rcvbuf(int rcvbuf)
{
	struct sockaddr_in a = {.sin_family = AF_INET, .sin_port = htons((uint16_t)port)};
	struct timeval tv = {.tv_sec = 5};
	int fd = socket(AF_INET, SOCK_STREAM, 0);

	a.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
	setsockopt(fd, SOL_SOCKET, SO_RCVTIMEO, &tv, sizeof(tv));
	if (rcvbuf > 0)
		setsockopt(fd, SOL_SOCKET, SO_RCVBUF, &rcvbuf, sizeof(rcvbuf));
	if (connect(fd, (struct sockaddr *)&a, sizeof(a)) < 0) {
		perror("connect");
		close(fd);
		return -1;
	}
	return fd;
}

static int cli_connect(void)
{
	return cli_connect_rcvbuf(0);
}

static void send_all(int fd, const void *p, size_t n)
{
	while (n) {
		ssize_t w = send(fd, p, n, MSG_NOSIGNAL);

		if (w <= 0)
			return;
		p = (const char *)p + w;
		n -= (size_t)w;
	}
}

struct cli {
	int fd;
	size_t len;
	char buf[1 << 17];
};

/* Reads at least need bytes into c->buf; false on EOF/timeout first. */
static bool cli_fill(struct cli *c, size_t need)
{
	while (c->len < need) {
		ssize_t r;

		if (c->len == sizeof(c->buf))
			return false;
		r = recv(c->fd, c->buf + c->len, sizeof(c->buf) - c->len, 0);
		if (r <= 0)
			return false;
		c->len += (size_t)r;
	}
	return true;
}

static void cli_consume(struct cli *c, size_t n)
{
	memmove(c->buf, c->buf + n, c->len - n);
	c->len -= n;
}

/* c becomes a fresh connection with req[0..n) sent on it. */
static void cli_open(struct cli *c, const void *req, size_t n)
{
	c->fd = cli_connect();
	c->len = 0;
	send_all(c->fd, req, n);
}

/* One response: status, and the decoded body in body[0..*blen). -1 when none arrived. */
static int cli_response(struct cli *c, char *body, size_t *blen, size_t cap)
{
	char *end, *p;
	size_t hl, cl = 0;
	bool chunked, have_cl;
	int status;

	for (;;) {
		end = memmem(c->buf, c->len, "\r\n\r\n", 4);
		if (end)
			break;
		if (!cli_fill(c, c->len + 1))
			return -1;
	}
	hl = (size_t)(end - c->buf) + 4;
	c->buf[hl - 1] = '\0';
	if (sscanf(c->buf, "HTTP/1.1 %d", &status) != 1)
		return -1;
	chunked = strcasestr(c->buf, "\r\nTransfer-Encoding: chunked") != NULL;
	p = strcasestr(c->buf, "\r\nContent-Length: ");
	have_cl = p != NULL;
	if (p)
		cl = strtoul(p + 18, NULL, 10);
	cli_consume(c, hl);
	*blen = 0;
	if (status == 100)
		return cli_response(c, body, blen, cap);
	if (have_cl) {
		if (!cli_fill(c, cl) || cl > cap)
			return -1;
		memcpy(body, c->buf, cl);
		*blen = cl;
		cli_consume(c, cl);
	} else if (chunked) {
		for (;;) {
			size_t n;

			while (!(end = memmem(c->buf, c->len, "\r\n", 2))) {
				if (!cli_fill(c, c->len + 1))
					return -1;
			}
			n = strtoul(c->buf, NULL, 16);
			cli_consume(c, (size_t)(end - c->buf) + 2);
			if (!cli_fill(c, n + 2) || *blen + n > cap)
				return -1;
			memcpy(body + *blen, c->buf, n);
			*blen += n;
			cli_consume(c, n + 2);
			if (n == 0)
				break;
		}
	} else {
		while (cli_fill(c, c->len + 1))
			;
		if (c->len > cap)
			return -1;
		memcpy(body, c->buf, c->len);
		*blen = c->len;
		c->len = 0;
	}
	return status;
}

/* true when the server closed the connection within secs (EOF or reset, not timeout). */
static bool wait_eof(int fd, double secs)
{
	struct timeval tv = {.tv_sec = 0, .tv_usec = 100000};
	double t0 = now_s();
	char b[4096];

	setsockopt(fd, SOL_SOCKET, SO_RCVTIMEO, &tv, sizeof(tv));
	while (now_s() - t0 < secs) {
		ssize_t r = recv(fd, b, sizeof(b), 0);

		if (r == 0 || (r < 0 && errno != EAGAIN && errno != EWOULDBLOCK))
			return true;
	}
	return false;
}

static bool wait_counter(atomic_int *v, int want, double secs)
{
	double t0 = now_s();

	while (now_s() - t0 < secs) {
		if (atomic_load(v) >= want)
			return true;
		usleep(5000);
	}
	return false;
}

/* ---- tests ---- */

static struct cli cl;
static char body[1 << 17];

static void test_basic_keepalive_pipelining(void)
{
	const char *pipe3 = "GET /hello HTTP/1.1\r\nHost: t\r\n\r\n"
	                    "POST /echo HTTP/1.1\r\nHost: t\r\nContent-Length: 4\r\n\r\nping"
	                    "GET /stream?n=3 HTTP/1.1\r\nHost: t\r\n\r\n"
	                    "GET /hello HTTP/1.1\r\nHost: t\r\nConnection: close\r\n\r\n";
	size_t blen;
	int st;

	cli_open(&cl, pipe3, strlen(pipe3));
	st = cli_response(&cl, body, &blen, sizeof(body));
	CHECK(st == 200 && blen == 6 && memcmp(body, "hello\n", 6) == 0, "pipelined 1: %d", st);
	st = cli_response(&cl, body, &blen, sizeof(body));
	CHECK(st == 200 && blen == 4 && memcmp(body, "ping", 4) == 0, "pipelined 2: %d", st);
	st = cli_response(&cl, body, &blen, sizeof(body));
	CHECK(st == 200 && blen == 27 && memcmp(body, "data: 0\n\ndata: 1\n\ndata: 2\n\n", 27) == 0,
	      "pipelined 3 (stream): %d %zu", st, blen);
	st = cli_response(&cl, body, &blen, sizeof(body));
	CHECK(st == 200 && blen == 6, "pipelined 4: %d", st);
	CHECK(wait_eof(cl.fd, 2.0), "Connection: close honoured");
	close(cl.fd);

	/* The same request split into single bytes with pauses still parses. */
	cl.fd = cli_connect();
	cl.len = 0;
	for (const char *p = "GET /hello HTTP/1.1\r\nHost: t\r\n\r\n"; *p; p++) {
		send_all(cl.fd, p, 1);
		usleep(200);
	}
	st = cli_response(&cl, body, &blen, sizeof(body));
	CHECK(st == 200 && blen == 6, "byte-by-byte request: %d", st);
	/* 404 and an app error keep framing right */
	send_all(cl.fd, "GET /nothing HTTP/1.1\r\nHost: t\r\n\r\n", 34);
	st = cli_response(&cl, body, &blen, sizeof(body));
	CHECK(st == 404, "404: %d", st);
	send_all(cl.fd, "GET /fail HTTP/1.1\r\nHost: t\r\n\r\n", 31);
	st = cli_response(&cl, body, &blen, sizeof(body));
	CHECK(st == 503, "app -EBUSY -> 503: %d", st);
	close(cl.fd);
}

static void test_bad_and_limits(void)
{
	static char big[8192];
	size_t blen;
	int st, n;

	cli_open(&cl, "GET / HTTP/1.1\nHost: t\n\n", 24);
	st = cli_response(&cl, body, &blen, sizeof(body));
	CHECK(st == 400, "bare LF: %d", st);
	CHECK(wait_eof(cl.fd, 2.0), "closed after 400");
	close(cl.fd);

	cl.fd = cli_connect();
	cl.len = 0;
	n = snprintf(big, sizeof(big), "GET / HTTP/1.1\r\nHost: t\r\nX-Big: ");
	memset(big + n, 'x', sizeof(big) - (size_t)n);
	send_all(cl.fd, big, sizeof(big));
	st = cli_response(&cl, body, &blen, sizeof(body));
	CHECK(st == 431, "oversized header: %d", st);
	close(cl.fd);

	cl.fd = cli_connect();
	cl.len = 0;
	n = snprintf(big, sizeof(big),
	             "POST /echo HTTP/1.1\r\nHost: t\r\nContent-Length: 70000\r\n\r\n");
	send_all(cl.fd, big, (size_t)n);
	memset(big, 'b', sizeof(big));
	send_all(cl.fd, big, 4096); /* the client is still sending its body */
	st = cli_response(&cl, body, &blen, sizeof(body));
	CHECK(st == 413, "oversized body: %d", st);
	close(cl.fd);

	cli_open(&cl, "POST /echo HTTP/1.1\r\nHost: t\r\nTransfer-Encoding: chunked\r\n\r\n", 60);
	st = cli_response(&cl, body, &blen, sizeof(body));
	CHECK(st == 501, "chunked request body: %d", st);
	close(cl.fd);
}

static void test_concurrent(void)
{
	static struct cli cs[MAX_CONNS];
	size_t blen;
	int i, r, st, ok = 0;

	usleep(100000); /* let the previous tests' connections close */
	for (i = 0; i < MAX_CONNS; i++) {
		cs[i].fd = cli_connect();
		cs[i].len = 0;
	}
	for (r = 0; r < 3; r++) {
		for (i = 0; i < MAX_CONNS; i++) {
			char req[128];
			int n = snprintf(
			    req, sizeof(req),
			    "POST /echo HTTP/1.1\r\nHost: t\r\nContent-Length: 6\r\n\r\n%06d",
			    i * 10 + r);

			send_all(cs[i].fd, req, (size_t)n);
		}
		for (i = MAX_CONNS - 1; i >= 0; i--) {
			char want[8];

			snprintf(want, sizeof(want), "%06d", i * 10 + r);
			st = cli_response(&cs[i], body, &blen, sizeof(body));
			ok += st == 200 && blen == 6 && memcmp(body, want, 6) == 0;
		}
	}
	CHECK(ok == 3 * MAX_CONNS, "%d of %d echoes right on %d connections", ok, 3 * MAX_CONNS,
	      MAX_CONNS);

	/* All MAX_CONNS are busy: one more is answered 503 and closed. */
	{
		struct cli *x = &cl;

		cli_open(x, "GET /hello HTTP/1.1\r\nHost: t\r\n\r\n", 32);
		st = cli_response(x, body, &blen, sizeof(body));
		CHECK(st == 503, "over max_conns: %d", st);
		CHECK(wait_eof(x->fd, 3.0), "refused connection closed");
		close(x->fd);
	}
	for (i = 0; i < MAX_CONNS; i++)
		close(cs[i].fd);
	usleep(100000);
	/* slots come back */
	cli_open(&cl, "GET /hello HTTP/1.1\r\nHost: t\r\n\r\n", 32);
	st = cli_response(&cl, body, &blen, sizeof(body));
	CHECK(st == 200, "after the crowd left: %d", st);
	close(cl.fd);
}

static void test_timeouts(void)
{
	size_t blen;
	double t0;
	int st, fd;

	/* slow loris: half a head, then nothing */
	cl.fd = cli_connect();
	cl.len = 0;
	t0 = now_s();
	send_all(cl.fd, "GET /hello HTTP/1.1\r\nHo", 23);
	st = cli_response(&cl, body, &blen, sizeof(body));
	CHECK(st == 408, "slow loris answered 408: %d", st);
	CHECK(wait_eof(cl.fd, 3.0), "slow loris closed");
	CHECK(now_s() - t0 < 3.0 && now_s() - t0 >= HDR_TIMEOUT_MS / 1000.0 * 0.9,
	      "closed after %.3f s (timeout %d ms)", now_s() - t0, HDR_TIMEOUT_MS);
	close(cl.fd);

	/* connects and sends nothing */
	fd = cli_connect();
	t0 = now_s();
	CHECK(wait_eof(fd, 3.0), "silent connection closed");
	close(fd);

	/* idle keep-alive */
	cli_open(&cl, "GET /hello HTTP/1.1\r\nHost: t\r\n\r\n", 32);
	st = cli_response(&cl, body, &blen, sizeof(body));
	CHECK(st == 200, "%d", st);
	t0 = now_s();
	usleep(HDR_TIMEOUT_MS * 1000 + 100000); /* longer than the header timeout: still open */
	send_all(cl.fd, "GET /hello HTTP/1.1\r\nHost: t\r\n\r\n", 32);
	st = cli_response(&cl, body, &blen, sizeof(body));
	CHECK(st == 200, "idle shorter than idle_timeout keeps the connection: %d", st);
	t0 = now_s();
	CHECK(wait_eof(cl.fd, 4.0), "idle connection closed");
	CHECK(now_s() - t0 >= IDLE_TIMEOUT_MS / 1000.0 * 0.9, "idle close after %.3f s",
	      now_s() - t0);
	close(cl.fd);
}

static void test_disconnect_and_backpressure(void)
{
	size_t blen;
	int st, before = atomic_load(&n_close_peer), stale = atomic_load(&n_stale_ok), rcv = 4096;

	cli_open(&cl, "GET /forever HTTP/1.1\r\nHost: t\r\n\r\n", 34);
	CHECK(cli_fill(&cl, 200), "stream started");
	close(cl.fd);
	CHECK(wait_counter(&n_close_peer, before + 1, 3.0),
	      "on_close(PEER) after client went away");
	CHECK(wait_counter(&n_stale_ok, stale + 1, 3.0), "stale handle refused with -ESTALE");

	/* a client that never reads: stream_write reports -ENOBUFS */
	before = atomic_load(&n_enobufs);
	cl.fd = cli_connect_rcvbuf(rcv);
	send_all(cl.fd, "GET /fat HTTP/1.1\r\nHost: t\r\n\r\n", 30);
	CHECK(wait_counter(&n_enobufs, before + 1, 5.0),
	      "-ENOBUFS for a client that does not read");
	close(cl.fd);
	(void)blen;
	(void)st;
}

/* curl: the reference client. Returns its exit status; output in out (NUL-terminated). */
static int run_curl(const char *args, char *out, size_t cap)
{
	char cmd[1024];
	FILE *f;
	size_t n;

	snprintf(cmd, sizeof(cmd), "curl -sS --max-time 10 %s 2>&1", args);
	f = popen(cmd, "r");
	if (!f)
		return -1;
	n = fread(out, 1, cap - 1, f);
	out[n] = '\0';
	return pclose(f);
}

static void test_curl(void)
{
	static char out[1 << 17], args[512], want[1 << 16];
	char dir[] = "/tmp/test_ing_XXXXXX";
	FILE *f;
	int rc;

	if (system("curl --version >/dev/null 2>&1") != 0) {
		printf("SKIP curl tests: curl not installed (apt-get install curl)\n");
		return;
	}
	/* keep-alive: two URLs on one connection (curl says it re-used it) */
	snprintf(args, sizeof(args), "-v http://127.0.0.1:%d/hello http://127.0.0.1:%d/hello", port,
	         port);
	rc = run_curl(args, out, sizeof(out));
	CHECK(rc == 0 && strstr(out, "Re-using existing connection"), "curl keep-alive rc %d:\n%s",
	      rc, out);
	snprintf(args, sizeof(args), "http://127.0.0.1:%d/hello", port);
	rc = run_curl(args, out, sizeof(out));
	CHECK(rc == 0 && strcmp(out, "hello\n") == 0, "curl GET: %d [%s]", rc, out);

	/* streaming: curl decodes our chunked SSE framing, and the HTTP/1.0 close framing */
	snprintf(args, sizeof(args), "-N http://127.0.0.1:%d/stream?n=4", port);
	rc = run_curl(args, out, sizeof(out));
	CHECK(rc == 0 && strcmp(out, "data: 0\n\ndata: 1\n\ndata: 2\n\ndata: 3\n\n") == 0,
	      "curl stream: %d [%s]", rc, out);
	snprintf(args, sizeof(args), "-0 -N http://127.0.0.1:%d/stream?n=2", port);
	rc = run_curl(args, out, sizeof(out));
	CHECK(rc == 0 && strcmp(out, "data: 0\n\ndata: 1\n\n") == 0, "curl -0 stream: %d [%s]", rc,
	      out);

	/* a 40 kB POST body (curl sends Expect: 100-continue for it) */
	if (!mkdtemp(dir))
		return;
	for (size_t i = 0; i < 40000; i++)
		want[i] = (char)('a' + (i * 7) % 26);
	snprintf(args, sizeof(args), "%s/body", dir);
	f = fopen(args, "wb");
	fwrite(want, 1, 40000, f);
	fclose(f);
	snprintf(args, sizeof(args), "--data-binary @%s/body http://127.0.0.1:%d/echo", dir, port);
	rc = run_curl(args, out, sizeof(out));
	CHECK(rc == 0 && memcmp(out, want, 40000) == 0 && out[40000] == '\0',
	      "curl POST echo rc %d", rc);
	snprintf(args, sizeof(args), "%s/body", dir);
	unlink(args);
	rmdir(dir);

	/* curl sees our status codes */
	snprintf(args, sizeof(args),
	         "-o /dev/null -w '%%{http_code}' -H 'Content-Length: 99999999' "
	         "-X POST http://127.0.0.1:%d/echo",
	         port);
	rc = run_curl(args, out, sizeof(out));
	CHECK(strstr(out, "413") != NULL, "curl 413: [%s]", out);
}

static void *run_thread(void *arg)
{
	static int rc;

	rc = ing_run(arg);
	return &rc;
}

int main(int argc, char **argv)
{
	struct ing_config cfg;
	struct ing_ops ops = {.on_request = app_request, .on_poll = app_poll, .on_close = app_close};
	struct ing_stats st;
	pthread_t th;
	void *ret;
	double t0;
	int rc, fd, before;
	bool fallback = argc > 1 && strcmp(argv[1], "--fallback") == 0;
	bool busy = argc > 1 && strcmp(argv[1], "--busy") == 0;

	ing_config_default(&cfg);
	cfg.listen = "127.0.0.1:0";
	cfg.max_conns = MAX_CONNS;
	cfg.max_header_bytes = 4096;
	cfg.max_body_bytes = 65536;
	cfg.out_buf_bytes = 65536;
	cfg.header_timeout_ms = HDR_TIMEOUT_MS;
	cfg.idle_timeout_ms = IDLE_TIMEOUT_MS;
	cfg.wait_us = 200;
	if (busy)
		cfg.wait_us = 0;
	if (fallback)
		cfg.flags = ING_F_NO_MULTISHOT | ING_F_NO_DEFER_TASKRUN;
	rc = ing_create(&cfg, &ops, NULL, &srv);
	if (rc == -ENOSYS || rc == -EPERM) {
		printf("SKIP: io_uring not available (%d)\n", rc);
		return 77;
	}
	if (rc < 0) {
		fprintf(stderr, "ing_create: %s\n", strerror(-rc));
		return 1;
	}
	port = ing_local_port(srv);
	ing_get_stats(srv, &st);
	printf("port %d multishot=%d defer_taskrun=%d\n", port, st.multishot, st.defer_taskrun);
	CHECK(st.multishot == !fallback, "multishot %d in %s mode", st.multishot,
	      fallback ? "fallback" : "default");
	pthread_create(&th, NULL, run_thread, srv);

	test_basic_keepalive_pipelining();
	test_bad_and_limits();
	test_concurrent();
	test_timeouts();
	test_disconnect_and_backpressure();
	test_curl();

	/* stop from another thread while a stream is open: on_close(SHUTDOWN), loop returns */
	before = atomic_load(&n_close_shutdown);
	fd = cli_connect();
	send_all(fd, "GET /forever HTTP/1.1\r\nHost: t\r\n\r\n", 34);
	{
		char b[64];

		CHECK(recv(fd, b, sizeof(b), 0) > 0, "stream started before the stop");
	}
	t0 = now_s();
	ing_stop(srv);
	pthread_join(th, &ret);
	CHECK(*(int *)ret == 0, "ing_run returned %d", *(int *)ret);
	CHECK(now_s() - t0 < 1.0, "stop took %.3f s", now_s() - t0);
	CHECK(atomic_load(&n_close_shutdown) == before + 1,
	      "on_close(SHUTDOWN) for the open stream");
	CHECK(wait_eof(fd, 2.0), "client sees the close");
	close(fd);
	ing_get_stats(srv, &st);
	printf("polls=%d ", atomic_load(&n_polls));
	printf("accepted=%llu refused=%llu requests=%llu bad=%llu timeouts=%llu peer_closed=%llu\n",
	       (unsigned long long)st.accepted, (unsigned long long)st.refused,
	       (unsigned long long)st.requests, (unsigned long long)st.bad_requests,
	       (unsigned long long)st.timeouts, (unsigned long long)st.peer_closed_active);
	CHECK(st.refused == 1, "refused %llu", (unsigned long long)st.refused);
	CHECK(st.timeouts >= 3, "timeouts %llu", (unsigned long long)st.timeouts);
	ing_destroy(srv);
	if (check_exit())
		return 1;
	printf("test_ing%s: all passed\n", fallback ? " --fallback" : busy ? " --busy" : "");
	return 0;
}
