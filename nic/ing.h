/* SPDX-License-Identifier: Apache-2.0 */
/*
 * ing.h - ingest/egress: an HTTP/1.1 server event loop that hands parsed requests to the
 * application and carries its responses (whole, or streamed chunk by chunk for SSE) back.
 * Transport-independent: ing_uring.c implements it with io_uring sockets; a DPDK transport can
 * implement the same functions.
 *
 * Model: ONE thread (pinned to the ingest core by the caller) runs ing_run(). It accepts, reads,
 * parses, and calls ops->on_request on that same thread; the application answers from that thread,
 * either at once inside on_request or later from ops->on_poll, which the loop calls once per
 * iteration (at least every cfg.wait_us microseconds; that is where the app drains the GPU's
 * token ring and writes SSE chunks).
 *
 * Requests on one connection are served in order, one at a time: pipelined requests wait in the
 * connection's input buffer until the previous response is complete (ing_respond, or
 * ing_stream_end). Streamed responses use Transfer-Encoding: chunked for HTTP/1.1 clients (the
 * connection stays usable) and close-delimited framing (Connection: close) for HTTP/1.0 clients.
 *
 * Ownership: ing_create() allocates everything (connection pool, input/output buffers, receive
 * buffer ring) once; ing_destroy() frees it. No allocation per connection or request after that.
 * Request memory (struct http_req and what it points to) is owned by the server and valid only
 * during the on_request call: copy what you need.
 * Threading: ing_stop() may be called from any thread (also a signal handler). ing_create(),
 * ing_destroy() and ing_local_port() from any one thread while the loop is not running. Every
 * other function only from inside the callbacks, i.e. on the thread running ing_run().
 */
#ifndef OFFPATH_ING_H
#define OFFPATH_ING_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "http.h"

struct ing_server;

/*
 * A connection handle, passed by value. gen changes whenever the slot is closed or reused, so a
 * handle kept after its connection went away is detected (-ESTALE) instead of writing into
 * another client's connection.
 */
struct ing_conn {
	uint32_t idx;
	uint32_t gen;
};

enum ing_flags {
	/* Force single-shot accept/recv into per-connection buffers (the fallback path). */
	ING_F_NO_MULTISHOT = 1u << 0,
	/* Do not ask for SINGLE_ISSUER|DEFER_TASKRUN. */
	ING_F_NO_DEFER_TASKRUN = 1u << 1,
};

struct ing_config {
	/* "127.0.0.1:8080" or "[::1]:0" (port 0: the kernel picks; see ing_local_port). */
	const char *listen;
	/* Connections served at once; more are answered 503 and closed (default 256). */
	uint32_t max_conns;
	/* Request line + header fields; over: 431 (default 16 KiB). */
	uint32_t max_header_bytes;
	/* Content-Length over this: 413 (default 1 MiB). */
	uint32_t max_body_bytes;
	/* Per-connection output buffer; one whole response must fit (default 256 KiB). */
	uint32_t out_buf_bytes;
	/* A started request must complete its head, and then its body, within this each;
	 * else 408 + close (default 10000). */
	uint32_t header_timeout_ms;
	/* Keep-alive connection with no request in progress: closed after this (default 60000). */
	uint32_t idle_timeout_ms;
	/* Loop wait when idle: > 0 at most this many µs, 0 busy-poll (never sleeps), < 0 sleep
	 * until an event (still wakes every 5 ms for deadlines) (default 50). */
	int32_t wait_us;
	/* enum ing_flags */
	uint32_t flags;
	/* listen() backlog (default 1024). */
	int backlog;
};

/* Why an active request ended without a complete response (the reason passed to on_close). */
enum ing_close_reason {
	ING_CLOSE_PEER = 1, /* the client closed or reset the connection */
	ING_CLOSE_OVERFLOW, /* the client sent more pipelined bytes than the input buffer holds */
	ING_CLOSE_SHUTDOWN, /* the server stopped (ing_stop) */
};

struct ing_ops {
	/*
	 * A complete request (head and body) on conn. Answer now or later with ing_respond() or
	 * ing_stream_begin()...ing_stream_end(). Return 0, or a negative errno when no response was
	 * started: the server then answers 503 for -EBUSY/-EAGAIN/-ENOSPC and 500 otherwise.
	 */
	int (*on_request)(void *ctx, struct ing_conn conn, const struct http_req *req);
	/* Called once per loop iteration; may be NULL. */
	void (*on_poll)(void *ctx);
	/*
	 * A request whose response was not finished will never be finished: the connection is gone.
	 * data is what the app set with ing_set_data() (NULL if none). Cancel the request here.
	 * conn is already stale when this runs. Not called for connections the app closed itself
	 * (ing_close), nor for connections without an active request. May be NULL.
	 */
	void (*on_close)(void *ctx, struct ing_conn conn, void *data, enum ing_close_reason why);
	/*
	 * The body of a response the server writes itself (400/408/413/431/501/503/505 for
	 * requests that never reached on_request). Write at most cap bytes into out, set *ctype if
	 * not JSON, return the length; 0 (or NULL callback) keeps the plain-text default. May be NULL.
	 */
	size_t (*error_body)(void *ctx, int status, char *out, size_t cap, const char **ctype);
};

struct ing_stats {
	uint64_t accepted;           /* connections accepted (served or refused) */
	uint64_t refused;            /* answered 503 because max_conns were busy */
	uint64_t requests;           /* requests handed to on_request */
	uint64_t bad_requests;       /* parse errors answered 4xx/5xx */
	uint64_t timeouts;           /* connections closed by header/idle timeout */
	uint64_t peer_closed_active; /* on_close calls with ING_CLOSE_PEER */
	uint32_t open_conns;         /* connections open now (served + refusing + closing) */
	bool multishot;     /* multishot accept + recv with a provided-buffer ring in use */
	bool defer_taskrun; /* ring set up with SINGLE_ISSUER|DEFER_TASKRUN */
};

/* Fills cfg with the defaults listed above (listen = "127.0.0.1:8080"). */
void ing_config_default(struct ing_config *cfg);

/*
 * Creates the listening socket, the ring and all pools. Returns 0 and *out, or a negative errno
 * (-EADDRINUSE, -EINVAL for a bad address or limits, -ENOMEM, -ENOSYS when io_uring is disabled).
 */
int ing_create(const struct ing_config *cfg, const struct ing_ops *ops, void *ctx,
               struct ing_server **out);

/* Closes every connection (no callbacks) and frees everything. NULL is a no-op. */
void ing_destroy(struct ing_server *srv);

/* The bound TCP port (useful after listening on port 0). */
int ing_local_port(const struct ing_server *srv);

/*
 * Runs the loop until ing_stop(). On the way out, active requests get on_close(...SHUTDOWN) and
 * every connection is closed. Returns 0, or a negative errno for a ring failure.
 * Call at most once per server.
 */
int ing_run(struct ing_server *srv);

/* Asks the loop to stop; returns at once. Any thread, async-signal-safe. */
void ing_stop(struct ing_server *srv);

/*
 * Whole response to the active request: status line, framing headers, extra (zero or more
 * "Name: value\r\n" lines, or NULL), body. Returns 0, -ESTALE (handle stale), -EALREADY (no active
 * request, or a response already started), -EMSGSIZE (larger than out_buf_bytes), -ENOBUFS
 * (does not fit now; only possible if earlier output is still unsent).
 */
int ing_respond(struct ing_server *srv, struct ing_conn conn, int status, const char *extra,
                const void *body, size_t len);

/* Starts a streamed response (see the framing note above). Same errors as ing_respond. */
int ing_stream_begin(struct ing_server *srv, struct ing_conn conn, int status, const char *extra);

/*
 * Appends one chunk (len > 0; len == 0 is a no-op). Returns 0, -ESTALE, -EALREADY (no stream
 * open), or -ENOBUFS: the client is not reading fast enough and the output buffer is full;
 * nothing was written. The app decides: retry later or cancel (ing_close).
 */
int ing_stream_write(struct ing_server *srv, struct ing_conn conn, const void *data, size_t len);

/* Ends the stream; the next pipelined request, if any, is served after it.
 * 0/-ESTALE/-EALREADY/-ENOBUFS. */
int ing_stream_end(struct ing_server *srv, struct ing_conn conn);

/* Attaches the app's per-request pointer (given back to on_close). 0 or -ESTALE. */
int ing_set_data(struct ing_server *srv, struct ing_conn conn, void *data);

/* Output bytes queued and not yet sent on conn (for app-side pacing), or -ESTALE. */
int64_t ing_pending_bytes(struct ing_server *srv, struct ing_conn conn);

/* Closes conn now (unsent output is dropped); on_close is not called. 0 or -ESTALE. */
int ing_close(struct ing_server *srv, struct ing_conn conn);

/* Counters; on the loop thread (inside callbacks) or after ing_run() returned. */
void ing_get_stats(const struct ing_server *srv, struct ing_stats *st);

#endif /* OFFPATH_ING_H */
