/* SPDX-License-Identifier: Apache-2.0 */
/*
 * ing_uring.c - ing.h over io_uring (liburing >= 2.3).
 *
 * Receive: multishot accept, and multishot recv selecting from a ring-mapped provided-buffer group
 * (bytes are copied into the connection's input buffer, the provided buffer goes straight back to
 * the ring). Fallback (ING_F_NO_MULTISHOT, or when the buffer ring cannot be registered):
 * single-shot accept and single-shot recv straight into the connection's input buffer.
 * Send: io_uring_prep_send from the connection's circular output buffer, one send in flight per
 * connection, so bytes leave in the order they were queued.
 * Close: shutdown(SHUT_RDWR) wakes every operation still in flight on the socket; the slot is
 * closed and reused only when its in-flight count is back to zero, so a late completion never
 * touches the next occupant.
 */
#include "ing.h"

#include <errno.h>
#include <liburing.h>
#include <netdb.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/eventfd.h>
#include <sys/mman.h>
#include <sys/socket.h>
#include <sys/syscall.h>
#include <time.h>
#include <unistd.h>

#define unlikely(x) __builtin_expect(!!(x), 0)

#define ING_REFUSE_SLOTS 32 /* extra slots that only answer 503 */
#define ING_LINGER_MS                                                                              \
	1000 /* after our FIN, read and drop input this long so the client sees the response */
#define ING_TICK_NS         5000000ull /* deadline scan period: 5 ms */
#define ING_FOREVER_WAIT_US 5000   /* "sleep until an event" still wakes for the deadline scan */
#define ING_RBUF_SIZE       16384u /* provided receive buffer size */
#define ING_BGID            0
#define ING_KEEP_RESIDENT   (64u * 1024) /* input bytes per slot left resident after a close */

/*
 * user_data (STYLE 8): bits 63..56 op, 55..32 low 24 bits of the slot generation (for debugging
 * only: slots are matched by in-flight counting), 31..0 slot index.
 */
enum ud_op { UD_ACCEPT = 1, UD_RECV = 2, UD_SEND = 3, UD_EVENT = 4 };

static inline uint64_t ud_make(enum ud_op op, uint32_t idx, uint32_t gen)
{
	return ((uint64_t)op << 56) | ((uint64_t)(gen & 0xffffffu) << 32) | idx;
}
static inline enum ud_op ud_op(uint64_t ud)
{
	return (enum ud_op)(ud >> 56);
}
static inline uint32_t ud_idx(uint64_t ud)
{
	return (uint32_t)ud;
}

enum cstate { CS_FREE = 0, CS_OPEN, CS_LINGER, CS_CLOSING };
enum dl_kind { DL_NONE = 0, DL_HEADER, DL_BODY, DL_IDLE, DL_FLUSH, DL_LINGER };

struct conn {
	int fd;
	uint32_t gen;    /* bumped when the connection dies: handles with the old value are stale */
	uint8_t state;   /* enum cstate */
	uint8_t dl_kind; /* enum dl_kind */
	bool refusing;   /* beyond max_conns: answers 503 and closes */
	bool counted; /* counts toward n_serving (max_conns); not once it only flushes and closes */
	bool recv_armed;
	bool send_inflight;
	bool req_active; /* on_request called, response not complete */
	bool resp_started;
	bool resp_chunked;
	bool resp_head_only; /* HEAD: no body bytes */
	bool req_keep_alive;
	bool req_v11; /* the active request was HTTP/1.1: chunked streaming possible */
	bool close_after_flush;
	bool continue_sent;
	bool kicked;
	bool in_dispatch;
	uint32_t inflight;          /* SQEs on this slot whose final CQE has not arrived */
	uint32_t in_len;            /* bytes in in[] */
	uint32_t recv_off;          /* single-shot mode: where the armed recv writes */
	uint32_t in_hwm;            /* highest input offset written since accept */
	uint32_t out_head, out_len; /* circular output: out[out_head .. +out_len) */
	uint32_t next_free;
	uint32_t kick_next;
	uint8_t *in;  /* in_cap bytes: one whole request (head + body) plus pipelined bytes */
	uint8_t *out; /* out_cap bytes */
	void *data;   /* the app's per-request pointer */
	uint64_t deadline_ns;
	struct http_parser parser;
	struct http_req req;
};

struct ing_server {
	struct io_uring ring;
	bool ring_ok;
	bool defer;     /* SINGLE_ISSUER|DEFER_TASKRUN|R_DISABLED: enabled in ing_run */
	bool ms_accept; /* multishot accept */
	bool ms_recv;   /* multishot recv with the buffer ring */
	bool accept_armed;
	bool event_armed;
	bool running;
	int lfd;
	int efd;
	int port;
	/* stop: written by ing_stop() (any thread, release), read by the loop (acquire). The
	 * eventfd write only wakes the loop; the flag carries the request. */
	atomic_int stop;
	uint64_t efd_val;
	struct ing_config cfg;
	struct ing_ops ops;
	void *ctx;
	struct http_limits lim;
	struct conn *conns;
	uint32_t nslots;
	uint32_t free_head; /* UINT32_MAX: none */
	uint32_t kick_head; /* conns to re-process after on_poll */
	uint32_t n_serving;
	uint32_t in_cap, out_cap;
	uint8_t *bufmem;
	size_t bufmem_len;
	char *scratch; /* out_cap bytes for formatting response heads */
	struct io_uring_buf_ring *br;
	size_t br_len;
	uint8_t *rbufs;
	uint32_t rbuf_count;
	uint32_t rbuf_recycled; /* buffers added since the last advance */
	uint64_t now_ns;
	uint64_t next_tick_ns;
	struct ing_stats st;
};

static uint64_t mono_ns(void)
{
	struct timespec ts;

	clock_gettime(CLOCK_MONOTONIC, &ts);
	return (uint64_t)ts.tv_sec * 1000000000ull + (uint64_t)ts.tv_nsec;
}

static uint32_t round_pow2(uint32_t v)
{
	uint32_t p = 1;

	while (p < v)
		p <<= 1;
	return p;
}

static size_t page_round(size_t v)
{
	return (v + 4095) & ~(size_t)4095;
}

void ing_config_default(struct ing_config *cfg)
{
	memset(cfg, 0, sizeof(*cfg));
	cfg->listen = "127.0.0.1:8080";
	cfg->max_conns = 256;
	cfg->max_header_bytes = 16 * 1024;
	cfg->max_body_bytes = 1024 * 1024;
	cfg->out_buf_bytes = 256 * 1024;
	cfg->header_timeout_ms = 10000;
	cfg->idle_timeout_ms = 60000;
	cfg->wait_us = 50;
	cfg->backlog = 1024;
}

/* ---- submission helpers ---- */

static struct io_uring_sqe *get_sqe(struct ing_server *srv)
{
	struct io_uring_sqe *sqe = io_uring_get_sqe(&srv->ring);

	if (unlikely(!sqe)) {
		io_uring_submit(&srv->ring);
		sqe = io_uring_get_sqe(&srv->ring);
	}
	return sqe;
}

static void arm_accept(struct ing_server *srv)
{
	struct io_uring_sqe *sqe;

	if (srv->accept_armed || (sqe = get_sqe(srv)) == NULL)
		return;
	if (srv->ms_accept)
		io_uring_prep_multishot_accept(sqe, srv->lfd, NULL, NULL, SOCK_CLOEXEC);
	else
		io_uring_prep_accept(sqe, srv->lfd, NULL, NULL, SOCK_CLOEXEC);
	io_uring_sqe_set_data64(sqe, ud_make(UD_ACCEPT, 0, 0));
	srv->accept_armed = true;
}

static void arm_event(struct ing_server *srv)
{
	struct io_uring_sqe *sqe;

	if (srv->event_armed || (sqe = get_sqe(srv)) == NULL)
		return;
	io_uring_prep_read(sqe, srv->efd, &srv->efd_val, sizeof(srv->efd_val), 0);
	io_uring_sqe_set_data64(sqe, ud_make(UD_EVENT, 0, 0));
	srv->event_armed = true;
}

static uint32_t conn_idx(struct ing_server *srv, struct conn *c)
{
	return (uint32_t)(c - srv->conns);
}

static void arm_recv(struct ing_server *srv, struct conn *c)
{
	struct io_uring_sqe *sqe;

	if (c->recv_armed || (c->state != CS_OPEN && c->state != CS_LINGER))
		return;
	if (!srv->ms_recv) {
		if (c->state == CS_LINGER || c->refusing || c->close_after_flush)
			c->in_len = 0; /* input is being discarded */
		if (c->in_len == srv->in_cap)
			return; /* full: read again once the current request is answered */
	}
	sqe = get_sqe(srv);
	if (unlikely(!sqe))
		return;
	if (srv->ms_recv) {
		io_uring_prep_recv_multishot(sqe, c->fd, NULL, 0, 0);
		sqe->flags |= IOSQE_BUFFER_SELECT;
		sqe->buf_group = ING_BGID;
	} else {
		c->recv_off = c->in_len;
		io_uring_prep_recv(sqe, c->fd, c->in + c->in_len, srv->in_cap - c->in_len, 0);
	}
	io_uring_sqe_set_data64(sqe, ud_make(UD_RECV, conn_idx(srv, c), c->gen));
	c->recv_armed = true;
	c->inflight++;
}

static void flush(struct ing_server *srv, struct conn *c)
{
	struct io_uring_sqe *sqe;
	uint32_t n;

	if (c->send_inflight || c->out_len == 0 || (c->state != CS_OPEN && c->state != CS_LINGER))
		return;
	sqe = get_sqe(srv);
	if (unlikely(!sqe))
		return;
	n = c->out_len;
	if (n > srv->out_cap - c->out_head)
		n = srv->out_cap - c->out_head;
	io_uring_prep_send(sqe, c->fd, c->out + c->out_head, n, MSG_NOSIGNAL);
	io_uring_sqe_set_data64(sqe, ud_make(UD_SEND, conn_idx(srv, c), c->gen));
	c->send_inflight = true;
	c->inflight++;
}

/* ---- connection lifecycle ---- */

static void set_deadline(struct ing_server *srv, struct conn *c, enum dl_kind k)
{
	uint64_t ms = 0;

	switch (k) {
	case DL_HEADER:
	case DL_BODY:
		ms = srv->cfg.header_timeout_ms;
		break;
	case DL_IDLE:
	case DL_FLUSH:
		ms = srv->cfg.idle_timeout_ms;
		break;
	case DL_LINGER:
		ms = ING_LINGER_MS;
		break;
	case DL_NONE:
		break;
	}
	c->dl_kind = (uint8_t)k;
	c->deadline_ns = k == DL_NONE ? 0 : srv->now_ns + ms * 1000000ull;
}

static void finalize(struct ing_server *srv, struct conn *c)
{
	/* A big request left pages behind: give them back (in is page-aligned; once per close). */
	if (c->in_hwm > ING_KEEP_RESIDENT)
		madvise(c->in + ING_KEEP_RESIDENT, page_round(c->in_hwm) - ING_KEEP_RESIDENT,
		        MADV_DONTNEED);
	c->in_hwm = 0;
	close(c->fd);
	c->fd = -1;
	c->state = CS_FREE;
	c->next_free = srv->free_head;
	srv->free_head = conn_idx(srv, c);
	srv->st.open_conns--;
}

/* Kills c now. why != 0 and a request active: on_close tells the app. */
static void conn_kill(struct ing_server *srv, struct conn *c, enum ing_close_reason why)
{
	struct ing_conn h = {conn_idx(srv, c), c->gen};
	bool notify = c->req_active && why != 0;
	void *data = c->data;

	if (c->state == CS_FREE || c->state == CS_CLOSING)
		return;
	c->gen++; /* every handle to this connection is stale from here on */
	c->state = CS_CLOSING;
	c->req_active = false;
	c->data = NULL;
	c->dl_kind = DL_NONE;
	c->deadline_ns = 0;
	if (c->counted)
		srv->n_serving--;
	c->counted = false;
	shutdown(c->fd, SHUT_RDWR); /* wakes the armed recv and any blocked send */
	if (notify) {
		if (why == ING_CLOSE_PEER)
			srv->st.peer_closed_active++;
		if (srv->ops.on_close)
			srv->ops.on_close(srv->ctx, h, data, why);
	}
	if (c->inflight == 0)
		finalize(srv, c);
}

/* c will only flush and close: it no longer holds one of the max_conns places. */
static void uncount(struct ing_server *srv, struct conn *c)
{
	if (c->counted)
		srv->n_serving--;
	c->counted = false;
}

static void begin_linger(struct ing_server *srv, struct conn *c)
{
	shutdown(c->fd, SHUT_WR);
	c->state = CS_LINGER;
	c->in_len = 0;
	set_deadline(srv, c, DL_LINGER);
}

static void out_put(struct ing_server *srv, struct conn *c, const void *p, uint32_t n)
{
	uint32_t tail = (c->out_head + c->out_len) % srv->out_cap;
	uint32_t first = n < srv->out_cap - tail ? n : srv->out_cap - tail;

	memcpy(c->out + tail, p, first);
	memcpy(c->out, (const uint8_t *)p + first, n - first);
	c->out_len += n;
}

/* A response the server writes itself (errors, 503 refusals, 408): closes after sending. */
static void internal_response(struct ing_server *srv, struct conn *c, int status, const char *extra)
{
	char body[512];
	char hdrs[256];
	int blen = 0;

	/* The application may word the body (an API's JSON error); else a line of plain text. */
	if (srv->ops.error_body) {
		const char *ctype = "application/json";
		size_t n = srv->ops.error_body(srv->ctx, status, body, sizeof(body), &ctype);
		if (n > 0 && n < sizeof(body)) {
			blen = (int)n;
			snprintf(hdrs, sizeof(hdrs), "%sContent-Type: %s\r\n",
				 status == 503 ? "Retry-After: 1\r\n" : "", ctype);
			extra = hdrs;
		}
	}
	if (blen == 0)
		blen = snprintf(body, sizeof(body), "%d %s\n", status, http_reason(status));
	int hlen = http_write_head(srv->scratch, srv->out_cap, status, blen, false, false,
	                           extra ? extra : "Content-Type: text/plain\r\n");

	c->close_after_flush = true;
	c->in_len = 0;
	uncount(srv, c);
	if (hlen > 0 && (uint32_t)hlen + (uint32_t)blen <= srv->out_cap - c->out_len) {
		out_put(srv, c, srv->scratch, (uint32_t)hlen);
		out_put(srv, c, body, (uint32_t)blen);
	}
	set_deadline(srv, c, DL_FLUSH);
	if (c->out_len == 0)
		begin_linger(srv, c);
	else
		flush(srv, c);
}

static void kick(struct ing_server *srv, struct conn *c)
{
	if (c->kicked)
		return;
	c->kicked = true;
	c->kick_next = srv->kick_head;
	srv->kick_head = conn_idx(srv, c);
}

/* The response to the active request is complete (all of it queued). */
static void resp_complete(struct ing_server *srv, struct conn *c)
{
	c->req_active = false;
	c->data = NULL;
	if (!c->req_keep_alive || atomic_load_explicit(&srv->stop, memory_order_relaxed)) {
		c->close_after_flush = true;
		uncount(srv, c);
		set_deadline(srv, c, DL_FLUSH);
	} else {
		set_deadline(srv, c, c->in_len ? DL_HEADER : DL_IDLE);
	}
	flush(srv, c);
	if (!c->in_dispatch)
		kick(srv, c); /* serve pipelined requests, re-arm a paused recv */
}

/* Parses and dispatches every complete request waiting in c->in, in order, one at a time. */
static void conn_process(struct ing_server *srv, struct conn *c)
{
	struct ing_conn h;
	uint32_t total;
	int rc;

	while (c->state == CS_OPEN && !c->req_active && !c->close_after_flush && c->in_len) {
		rc = http_parse(&c->parser, c->in, c->in_len, &srv->lim, &c->req);
		if (rc == HTTP_PARSE_MORE) {
			if (c->parser.head_done && c->dl_kind == DL_HEADER)
				set_deadline(srv, c, DL_BODY);
			if (c->parser.head_done && c->req.expect_continue && !c->continue_sent) {
				static const char cont[] = "HTTP/1.1 100 Continue\r\n\r\n";

				c->continue_sent = true;
				if (sizeof(cont) - 1 <= srv->out_cap - c->out_len) {
					out_put(srv, c, cont, sizeof(cont) - 1);
					flush(srv, c);
				}
			}
			break;
		}
		if (rc < 0) {
			srv->st.bad_requests++;
			internal_response(srv, c, http_status_for_error(rc), NULL);
			break;
		}
		h.idx = conn_idx(srv, c);
		h.gen = c->gen;
		c->req_active = true;
		c->resp_started = false;
		c->resp_chunked = false;
		c->resp_head_only = c->req.method == HTTP_M_HEAD;
		c->req_keep_alive = c->req.keep_alive;
		c->req_v11 = c->req.version == 11;
		c->continue_sent = false;
		c->data = NULL;
		set_deadline(srv, c, DL_NONE);
		srv->st.requests++;
		total = c->req.total_len;
		c->in_dispatch = true;
		rc = srv->ops.on_request(srv->ctx, h, &c->req);
		c->in_dispatch = false;
		if (c->state != CS_OPEN || c->gen != h.gen)
			return; /* the app closed it */
		/* The request's bytes are no longer referenced: drop them, keep what is pipelined.
		 */
		memmove(c->in, c->in + total, c->in_len - total);
		c->in_len -= total;
		http_parser_reset(&c->parser);
		if (rc < 0 && c->req_active && !c->resp_started) {
			int st = (rc == -EBUSY || rc == -EAGAIN || rc == -ENOSPC) ? 503 : 500;

			c->req_active = false;
			internal_response(srv, c, st, NULL);
			return;
		}
		if (!c->req_active && !c->close_after_flush)
			set_deadline(srv, c, c->in_len ? DL_HEADER : DL_IDLE);
	}
	arm_recv(srv, c);
}

/* ---- completions ---- */

static void recycle(struct ing_server *srv, uint32_t bid)
{
	io_uring_buf_ring_add(srv->br, srv->rbufs + (size_t)bid * ING_RBUF_SIZE, ING_RBUF_SIZE,
	                      (unsigned short)bid, io_uring_buf_ring_mask(srv->rbuf_count),
	                      (int)srv->rbuf_recycled++);
}

static void new_conn(struct ing_server *srv, int fd)
{
	struct conn *c;
	uint32_t idx;

	srv->st.accepted++;
	if (unlikely(srv->free_head == UINT32_MAX)) {
		srv->st.refused++; /* even the refusal slots are busy: no answer at all */
		close(fd);
		return;
	}
	idx = srv->free_head;
	c = &srv->conns[idx];
	srv->free_head = c->next_free;
	c->fd = fd;
	c->state = CS_OPEN;
	c->recv_armed = c->send_inflight = c->req_active = c->resp_started = false;
	c->close_after_flush = c->continue_sent = c->kicked = c->in_dispatch = false;
	c->inflight = c->in_len = c->out_head = c->out_len = 0;
	c->data = NULL;
	http_parser_reset(&c->parser);
	srv->st.open_conns++;
	c->refusing = srv->n_serving >= srv->cfg.max_conns;
	c->counted = false;
	if (c->refusing) {
		srv->st.refused++;
		internal_response(srv, c, 503, "Retry-After: 1\r\nContent-Type: text/plain\r\n");
	} else {
		srv->n_serving++;
		c->counted = true;
		set_deadline(srv, c, DL_HEADER);
	}
	arm_recv(srv, c);
}

static void handle_recv(struct ing_server *srv, struct io_uring_cqe *cqe)
{
	struct conn *c = &srv->conns[ud_idx(cqe->user_data)];
	bool more = srv->ms_recv && (cqe->flags & IORING_CQE_F_MORE);
	bool has_buf = cqe->flags & IORING_CQE_F_BUFFER;
	uint32_t bid = cqe->flags >> IORING_CQE_BUFFER_SHIFT;
	int res = cqe->res;

	if (!more) {
		c->recv_armed = false;
		c->inflight--;
	}
	if (c->state == CS_CLOSING) {
		if (has_buf)
			recycle(srv, bid);
		if (c->inflight == 0)
			finalize(srv, c);
		return;
	}
	if (res <= 0) {
		if (has_buf)
			recycle(srv, bid);
		if (res == -ENOBUFS || res == -EAGAIN || res == -EINTR)
			arm_recv(srv,
			         c); /* flow control: the buffer ring refills as CQEs are handled */
		else
			conn_kill(srv, c, c->state == CS_LINGER ? 0 : ING_CLOSE_PEER);
		return;
	}
	if (c->state == CS_LINGER || c->refusing || c->close_after_flush) {
		if (has_buf)
			recycle(srv, bid); /* input after our answer is read and dropped */
		arm_recv(srv, c);
		return;
	}
	if (srv->ms_recv) {
		if (unlikely(!has_buf)) {
			conn_kill(srv, c, ING_CLOSE_PEER);
			return;
		}
		if (unlikely((uint32_t)res > srv->in_cap - c->in_len)) {
			recycle(srv, bid);
			conn_kill(srv, c, ING_CLOSE_OVERFLOW);
			return;
		}
		memcpy(c->in + c->in_len, srv->rbufs + (size_t)bid * ING_RBUF_SIZE, (size_t)res);
		recycle(srv, bid);
	} else if (c->recv_off != c->in_len) {
		/* the input was compacted while this recv was in flight */
		memmove(c->in + c->in_len, c->in + c->recv_off, (size_t)res);
	}
	if (c->recv_off + (uint32_t)res > c->in_hwm)
		c->in_hwm = c->recv_off + (uint32_t)res;
	c->in_len += (uint32_t)res;
	if (c->in_len > c->in_hwm)
		c->in_hwm = c->in_len;
	if (!c->req_active && c->dl_kind == DL_IDLE)
		set_deadline(srv, c, DL_HEADER);
	conn_process(srv, c);
}

static void handle_send(struct ing_server *srv, struct io_uring_cqe *cqe)
{
	struct conn *c = &srv->conns[ud_idx(cqe->user_data)];
	int res = cqe->res;

	c->send_inflight = false;
	c->inflight--;
	if (c->state == CS_CLOSING) {
		if (c->inflight == 0)
			finalize(srv, c);
		return;
	}
	if (res < 0) {
		if (res == -EAGAIN || res == -EINTR)
			flush(srv, c);
		else
			conn_kill(srv, c, ING_CLOSE_PEER);
		return;
	}
	c->out_head = (c->out_head + (uint32_t)res) % srv->out_cap;
	c->out_len -= (uint32_t)res;
	if (c->out_len == 0)
		c->out_head = 0;
	if (c->out_len)
		flush(srv, c);
	else if (c->close_after_flush && c->state == CS_OPEN)
		begin_linger(srv, c);
}

static void handle_cqe(struct ing_server *srv, struct io_uring_cqe *cqe)
{
	switch (ud_op(cqe->user_data)) {
	case UD_ACCEPT:
		if (!(cqe->flags & IORING_CQE_F_MORE))
			srv->accept_armed = false;
		if (cqe->res >= 0)
			new_conn(srv, cqe->res);
		else if (cqe->res == -EINVAL && srv->ms_accept)
			srv->ms_accept =
			    false; /* kernel without multishot accept: single-shot from now */
		break;
	case UD_RECV:
		handle_recv(srv, cqe);
		break;
	case UD_SEND:
		handle_send(srv, cqe);
		break;
	case UD_EVENT:
		srv->event_armed = false;
		break;
	}
}

/* O(slots) every ING_TICK_NS; cheaper than a timer wheel at these slot counts. */
static void scan_deadlines(struct ing_server *srv)
{
	uint32_t i;

	for (i = 0; i < srv->nslots; i++) {
		struct conn *c = &srv->conns[i];

		if (c->state == CS_FREE || c->state == CS_CLOSING || !c->deadline_ns ||
		    srv->now_ns < c->deadline_ns)
			continue;
		switch (c->dl_kind) {
		case DL_HEADER:
		case DL_BODY:
			srv->st.timeouts++;
			if (c->in_len && c->state == CS_OPEN && !c->req_active)
				internal_response(srv, c, 408, NULL);
			else
				conn_kill(srv, c, 0);
			break;
		case DL_IDLE:
			srv->st.timeouts++;
			conn_kill(srv, c, 0);
			break;
		default:
			conn_kill(srv, c, 0);
			break;
		}
	}
}

/* ---- public API ---- */

static struct conn *lookup(struct ing_server *srv, struct ing_conn h)
{
	struct conn *c;

	if (h.idx >= srv->nslots)
		return NULL;
	c = &srv->conns[h.idx];
	if (c->gen != h.gen || c->state != CS_OPEN)
		return NULL;
	return c;
}

int ing_respond(struct ing_server *srv, struct ing_conn conn, int status, const char *extra,
                const void *body, size_t len)
{
	struct conn *c = lookup(srv, conn);
	bool keep;
	uint64_t blen;
	int hlen;

	if (!c)
		return -ESTALE;
	if (!c->req_active || c->resp_started)
		return -EALREADY;
	keep = c->req_keep_alive && !atomic_load_explicit(&srv->stop, memory_order_relaxed);
	hlen =
	    http_write_head(srv->scratch, srv->out_cap, status, (int64_t)len, false, keep, extra);
	if (hlen < 0)
		return hlen == -ENOBUFS ? -EMSGSIZE : hlen;
	blen = c->resp_head_only ? 0 : len;
	if ((uint64_t)hlen + blen > srv->out_cap)
		return -EMSGSIZE;
	if ((uint64_t)hlen + blen > srv->out_cap - c->out_len)
		return -ENOBUFS;
	out_put(srv, c, srv->scratch, (uint32_t)hlen);
	if (blen)
		out_put(srv, c, body, (uint32_t)blen);
	c->resp_started = true;
	c->req_keep_alive = keep;
	resp_complete(srv, c);
	return 0;
}

int ing_stream_begin(struct ing_server *srv, struct ing_conn conn, int status, const char *extra)
{
	struct conn *c = lookup(srv, conn);
	bool chunked, keep;
	int hlen;

	if (!c)
		return -ESTALE;
	if (!c->req_active || c->resp_started)
		return -EALREADY;
	chunked = c->req_v11;
	keep =
	    chunked && c->req_keep_alive && !atomic_load_explicit(&srv->stop, memory_order_relaxed);
	hlen = http_write_head(srv->scratch, srv->out_cap, status, -1, chunked, keep, extra);
	if (hlen < 0)
		return hlen == -ENOBUFS ? -EMSGSIZE : hlen;
	if ((uint32_t)hlen > srv->out_cap - c->out_len)
		return -ENOBUFS;
	out_put(srv, c, srv->scratch, (uint32_t)hlen);
	c->resp_started = true;
	c->resp_chunked = chunked;
	c->req_keep_alive = keep;
	flush(srv, c);
	return 0;
}

int ing_stream_write(struct ing_server *srv, struct ing_conn conn, const void *data, size_t len)
{
	struct conn *c = lookup(srv, conn);
	char sz[24];
	uint64_t need;
	int szlen = 0;

	if (!c)
		return -ESTALE;
	if (!c->req_active || !c->resp_started)
		return -EALREADY;
	if (len == 0 || c->resp_head_only)
		return 0;
	if (c->resp_chunked)
		szlen = http_write_chunk_size(sz, len);
	need = (uint64_t)szlen + len + (c->resp_chunked ? 2 : 0);
	if (need > srv->out_cap)
		return -EMSGSIZE;
	if (need > srv->out_cap - c->out_len)
		return -ENOBUFS;
	if (szlen)
		out_put(srv, c, sz, (uint32_t)szlen);
	out_put(srv, c, data, (uint32_t)len);
	if (c->resp_chunked)
		out_put(srv, c, "\r\n", 2);
	flush(srv, c);
	return 0;
}

int ing_stream_end(struct ing_server *srv, struct ing_conn conn)
{
	struct conn *c = lookup(srv, conn);

	if (!c)
		return -ESTALE;
	if (!c->req_active || !c->resp_started)
		return -EALREADY;
	if (c->resp_chunked && !c->resp_head_only) {
		if (srv->out_cap - c->out_len < 5)
			return -ENOBUFS;
		out_put(srv, c, "0\r\n\r\n", 5);
	}
	resp_complete(srv, c);
	return 0;
}

int ing_set_data(struct ing_server *srv, struct ing_conn conn, void *data)
{
	struct conn *c = lookup(srv, conn);

	if (!c)
		return -ESTALE;
	c->data = data;
	return 0;
}

int64_t ing_pending_bytes(struct ing_server *srv, struct ing_conn conn)
{
	struct conn *c = lookup(srv, conn);

	return c ? (int64_t)c->out_len : -ESTALE;
}

int ing_close(struct ing_server *srv, struct ing_conn conn)
{
	struct conn *c = lookup(srv, conn);

	if (!c)
		return -ESTALE;
	c->req_active = false;
	conn_kill(srv, c, 0);
	return 0;
}

void ing_get_stats(const struct ing_server *srv, struct ing_stats *st)
{
	*st = srv->st;
}

int ing_local_port(const struct ing_server *srv)
{
	return srv->port;
}

void ing_stop(struct ing_server *srv)
{
	uint64_t one = 1;
	ssize_t rc;

	/* S1: release; pairs with the acquire load at the top of ing_run()'s loop. */
	atomic_store_explicit(&srv->stop, 1, memory_order_release);
	rc = write(srv->efd, &one,
	           sizeof(one)); /* wakes a sleeping loop; EAGAIN means already woken */
	(void)rc;
}

/* Splits "host:port" or "[v6]:port" and binds a listening socket. */
static int open_listener(struct ing_server *srv, const char *addr, int backlog)
{
	char host[128], port[16];
	const char *colon, *h = addr;
	size_t hlen;
	struct addrinfo hints, *res = NULL;
	struct sockaddr_storage ss;
	socklen_t sl = sizeof(ss);
	int fd = -1, one = 1, rc;

	colon = strrchr(addr, ':');
	if (!colon || strlen(colon + 1) == 0 || strlen(colon + 1) >= sizeof(port))
		return -EINVAL;
	hlen = (size_t)(colon - addr);
	if (hlen >= 2 && addr[0] == '[' && addr[hlen - 1] == ']') {
		h = addr + 1;
		hlen -= 2;
	}
	if (hlen == 0 || hlen >= sizeof(host))
		return -EINVAL;
	memcpy(host, h, hlen);
	host[hlen] = '\0';
	strcpy(port, colon + 1);
	memset(&hints, 0, sizeof(hints));
	hints.ai_family = AF_UNSPEC;
	hints.ai_socktype = SOCK_STREAM;
	hints.ai_flags = AI_NUMERICHOST | AI_NUMERICSERV | AI_PASSIVE;
	if (getaddrinfo(host, port, &hints, &res) != 0 || !res)
		return -EINVAL;
	fd = socket(res->ai_family, SOCK_STREAM | SOCK_CLOEXEC, 0);
	if (fd < 0) {
		rc = -errno;
		goto out;
	}
	setsockopt(fd, SOL_SOCKET, SO_REUSEADDR, &one, sizeof(one));
	setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &one,
	           sizeof(one)); /* inherited by accepted sockets */
	if (bind(fd, res->ai_addr, res->ai_addrlen) < 0 || listen(fd, backlog) < 0 ||
	    getsockname(fd, (struct sockaddr *)&ss, &sl) < 0) {
		rc = -errno;
		goto out;
	}
	srv->port = ss.ss_family == AF_INET6 ? ntohs(((struct sockaddr_in6 *)&ss)->sin6_port)
	                                     : ntohs(((struct sockaddr_in *)&ss)->sin_port);
	srv->lfd = fd;
	fd = -1;
	rc = 0;
out:
	if (fd >= 0)
		close(fd);
	freeaddrinfo(res);
	return rc;
}

/* The provided-buffer ring for multishot recv; false when the kernel refuses it. */
static bool setup_buf_ring(struct ing_server *srv)
{
	struct io_uring_buf_reg reg;
	uint32_t i, n = round_pow2(srv->nslots);
	void *p;

	if (n < 64)
		n = 64;
	if (n > 1024)
		n = 1024;
	srv->rbuf_count = n;
	srv->br_len = page_round(n * sizeof(struct io_uring_buf));
	p = mmap(NULL, srv->br_len, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
	if (p == MAP_FAILED)
		goto fail;
	srv->br = p;
	p = mmap(NULL, (size_t)n * ING_RBUF_SIZE, PROT_READ | PROT_WRITE,
	         MAP_PRIVATE | MAP_ANONYMOUS | MAP_NORESERVE, -1, 0);
	if (p == MAP_FAILED)
		goto fail;
	srv->rbufs = p;
	io_uring_buf_ring_init(srv->br);
	memset(&reg, 0, sizeof(reg));
	reg.ring_addr = (unsigned long)srv->br;
	reg.ring_entries = n;
	reg.bgid = ING_BGID;
	if (io_uring_register_buf_ring(&srv->ring, &reg, 0) != 0)
		goto fail;
	for (i = 0; i < n; i++)
		recycle(srv, i);
	io_uring_buf_ring_advance(srv->br, (int)srv->rbuf_recycled);
	srv->rbuf_recycled = 0;
	return true;
fail:
	if (srv->br)
		munmap(srv->br, srv->br_len);
	if (srv->rbufs)
		munmap(srv->rbufs, (size_t)n * ING_RBUF_SIZE);
	srv->br = NULL;
	srv->rbufs = NULL;
	return false;
}

int ing_create(const struct ing_config *cfg, const struct ing_ops *ops, void *ctx,
               struct ing_server **out)
{
	struct io_uring_params p;
	struct ing_server *srv;
	size_t in_sz, out_sz;
	uint32_t i, entries;
	int rc;

	*out = NULL;
	if (!cfg || !ops || !ops->on_request || !cfg->listen || cfg->max_conns == 0 ||
	    cfg->max_conns > (1u << 20) || cfg->max_header_bytes < 64 ||
	    cfg->out_buf_bytes < 1024 ||
	    (uint64_t)cfg->max_header_bytes + cfg->max_body_bytes > (1ull << 31) ||
	    cfg->out_buf_bytes > (1u << 30))
		return -EINVAL;
	srv = calloc(1, sizeof(*srv));
	if (!srv)
		return -ENOMEM;
	srv->lfd = srv->efd = -1;
	srv->cfg = *cfg;
	srv->ops = *ops;
	srv->ctx = ctx;
	srv->lim.max_header_bytes = cfg->max_header_bytes;
	srv->lim.max_body_bytes = cfg->max_body_bytes;
	srv->in_cap = cfg->max_header_bytes + cfg->max_body_bytes;
	srv->out_cap = cfg->out_buf_bytes;
	srv->nslots = cfg->max_conns + ING_REFUSE_SLOTS;
	srv->free_head = UINT32_MAX;
	srv->kick_head = UINT32_MAX;
	srv->conns = calloc(srv->nslots, sizeof(*srv->conns));
	srv->scratch = malloc(srv->out_cap);
	if (!srv->conns || !srv->scratch) {
		rc = -ENOMEM;
		goto err;
	}
	/* One reservation for every slot's buffers; pages are committed only when touched. */
	in_sz = page_round(srv->in_cap);
	out_sz = page_round(srv->out_cap);
	srv->bufmem_len = (size_t)srv->nslots * (in_sz + out_sz);
	srv->bufmem = mmap(NULL, srv->bufmem_len, PROT_READ | PROT_WRITE,
	                   MAP_PRIVATE | MAP_ANONYMOUS | MAP_NORESERVE, -1, 0);
	if (srv->bufmem == MAP_FAILED) {
		srv->bufmem = NULL;
		rc = -ENOMEM;
		goto err;
	}
	for (i = srv->nslots; i-- > 0;) {
		struct conn *c = &srv->conns[i];

		c->fd = -1;
		c->in = srv->bufmem + (size_t)i * (in_sz + out_sz);
		c->out = c->in + in_sz;
		c->next_free = srv->free_head;
		srv->free_head = i;
	}
	rc = open_listener(srv, cfg->listen, cfg->backlog > 0 ? cfg->backlog : 1024);
	if (rc < 0)
		goto err;
	srv->efd = eventfd(0, EFD_CLOEXEC | EFD_NONBLOCK);
	if (srv->efd < 0) {
		rc = -errno;
		goto err;
	}
	entries = round_pow2(srv->nslots * 2);
	if (entries < 64)
		entries = 64;
	if (entries > 4096)
		entries = 4096;
	memset(&p, 0, sizeof(p));
	if (!(cfg->flags & ING_F_NO_DEFER_TASKRUN)) {
		/* Disabled until ing_run() enables it, so the loop thread becomes the single
		 * issuer. */
		p.flags = IORING_SETUP_SINGLE_ISSUER | IORING_SETUP_DEFER_TASKRUN |
		          IORING_SETUP_R_DISABLED;
		rc = io_uring_queue_init_params(entries, &srv->ring, &p);
		srv->defer = rc == 0;
	}
	if (!srv->defer) {
		memset(&p, 0, sizeof(p));
		rc = io_uring_queue_init_params(entries, &srv->ring, &p);
		if (rc < 0)
			goto err; /* -EPERM/-ENOSYS: io_uring disabled (sysctl
			             kernel.io_uring_disabled) */
	}
	srv->ring_ok = true;
	if (!(cfg->flags & ING_F_NO_MULTISHOT) && setup_buf_ring(srv))
		srv->ms_recv = srv->ms_accept = true;
	srv->st.multishot = srv->ms_recv;
	srv->st.defer_taskrun = srv->defer;
	*out = srv;
	return 0;
err:
	ing_destroy(srv);
	return rc;
}

void ing_destroy(struct ing_server *srv)
{
	uint32_t i;

	if (!srv)
		return;
	if (srv->ring_ok)
		io_uring_queue_exit(&srv->ring); /* cancels whatever is still in flight */
	for (i = 0; srv->conns && i < srv->nslots; i++) {
		if (srv->conns[i].fd >= 0)
			close(srv->conns[i].fd);
	}
	if (srv->lfd >= 0)
		close(srv->lfd);
	if (srv->efd >= 0)
		close(srv->efd);
	if (srv->br)
		munmap(srv->br, srv->br_len);
	if (srv->rbufs)
		munmap(srv->rbufs, (size_t)srv->rbuf_count * ING_RBUF_SIZE);
	if (srv->bufmem)
		munmap(srv->bufmem, srv->bufmem_len);
	free(srv->scratch);
	free(srv->conns);
	free(srv);
}

int ing_run(struct ing_server *srv)
{
	struct io_uring_cqe *cqe;
	struct __kernel_timespec ts;
	unsigned head, n;
	uint32_t i;
	int rc;

	if (srv->running)
		return -EBUSY;
	srv->running = true;
	if (srv->defer) {
		/* liburing 2.3 declares io_uring_enable_rings() but does not export it. */
		rc = (int)syscall(__NR_io_uring_register, srv->ring.ring_fd,
		                  IORING_REGISTER_ENABLE_RINGS, NULL, 0);
		if (rc < 0)
			return -errno;
	}
	srv->now_ns = mono_ns();
	srv->next_tick_ns = srv->now_ns + ING_TICK_NS;
	arm_accept(srv);
	arm_event(srv);
	/* A1: acquire; pairs with S1 in ing_stop(). */
	while (!atomic_load_explicit(&srv->stop, memory_order_acquire)) {
		if (srv->cfg.wait_us == 0 || srv->kick_head != UINT32_MAX) {
			rc = io_uring_submit_and_get_events(&srv->ring);
		} else {
			int64_t us = srv->cfg.wait_us > 0 ? srv->cfg.wait_us : ING_FOREVER_WAIT_US;

			ts.tv_sec = us / 1000000;
			ts.tv_nsec = (us % 1000000) * 1000;
			rc = io_uring_submit_and_wait_timeout(&srv->ring, &cqe, 1, &ts, NULL);
		}
		if (unlikely(rc < 0 && rc != -ETIME && rc != -EINTR && rc != -EAGAIN &&
		             rc != -EBUSY))
			return rc;
		srv->now_ns = mono_ns();
		n = 0;
		io_uring_for_each_cqe(&srv->ring, head, cqe)
		{
			handle_cqe(srv, cqe);
			n++;
		}
		io_uring_cq_advance(&srv->ring, n);
		if (srv->rbuf_recycled) {
			io_uring_buf_ring_advance(srv->br, (int)srv->rbuf_recycled);
			srv->rbuf_recycled = 0;
		}
		if (srv->ops.on_poll)
			srv->ops.on_poll(srv->ctx);
		while (srv->kick_head != UINT32_MAX) {
			struct conn *c = &srv->conns[srv->kick_head];

			srv->kick_head = c->kick_next;
			c->kicked = false;
			conn_process(srv, c);
		}
		if (srv->now_ns >= srv->next_tick_ns) {
			scan_deadlines(srv);
			srv->next_tick_ns = srv->now_ns + ING_TICK_NS;
		}
		arm_accept(srv);
		arm_event(srv);
	}
	for (i = 0; i < srv->nslots; i++)
		conn_kill(srv, &srv->conns[i], ING_CLOSE_SHUTDOWN);
	io_uring_submit(&srv->ring);
	return 0;
}
