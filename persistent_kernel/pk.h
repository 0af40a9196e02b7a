/* SPDX-License-Identifier: Apache-2.0 */
/*
 * persistent_kernel/pk.h: the backend interface of the persistent scheduler. A backend runs the
 * scheduler loop (poll request and control rings -> schedule -> forward step -> sample -> token
 * ring) somewhere: on a host thread with the reference CPU forward pass (emu.h), or as a
 * persistent CUDA kernel (later). The daemon talks to either through the three rings, which live
 * in shared memory in both cases, and through these few ops.
 *
 * Ownership: a backend's create function (pk_emu_create(), ...) allocates it; pk_backend_destroy()
 *   stops it if needed and frees it. The rings belong to the caller and must outlive the backend.
 * Threading: start, stop, stats and destroy are called from one control thread. While running, the
 *   backend is the consumer of the request and control rings and the producer of the token ring;
 *   the caller is the other side of each (see ring.h).
 */
#ifndef OFFPATH_PK_PK_H
#define OFFPATH_PK_PK_H

#include <stdint.h>
#include "ring.h"

struct pk_rings {
	struct ring_hdr *req; /* RING_KIND_REQ: host produces */
	struct ring_hdr *tok; /* RING_KIND_TOK: backend produces */
	struct ring_hdr *ctl; /* RING_KIND_CTL: host produces */
};

/* Counters since start; a snapshot, each field read atomically (relaxed), not all at one instant. */
struct pk_stats {
	uint64_t steps;          /* forward steps run */
	uint64_t step_tokens;    /* tokens fed to steps (prefill + decode) */
	uint64_t tokens_out;     /* token records with a token */
	uint64_t notices_out;    /* records without a token (cancel, error) */
	uint64_t preemptions;
	uint64_t requests_in;
	uint64_t held_no_credit; /* iterations the token ring's free space limited the plan */
	uint64_t drained;        /* 1 after a drain request once nothing is left to run */
	uint64_t exited;         /* 1 once the loop has returned */
	/* Gauges, as of the loop's last iteration. */
	uint64_t waiting; /* requests taken from the ring, not admitted (new or preempted) */
	uint64_t running; /* admitted requests */
	uint64_t kv_used; /* KV pages held */
	uint64_t kv_free; /* KV pages free */
};

struct pk_backend;

struct pk_backend_ops {
	const char *name;
	/* Start the loop. 0, or a negative errno (-EALREADY when started). */
	int (*start)(struct pk_backend *b);
	/* Ask the loop to shut down (cancel everything, flush notices while the token ring has
	 * room) and wait until it has returned. 0, or a negative errno. Idempotent. */
	int (*stop)(struct pk_backend *b);
	void (*stats)(struct pk_backend *b, struct pk_stats *out);
	void (*destroy)(struct pk_backend *b);
};

struct pk_backend {
	const struct pk_backend_ops *ops;
	struct pk_rings rings;
};

static inline int pk_backend_start(struct pk_backend *b)
{
	return b->ops->start(b);
}

static inline int pk_backend_stop(struct pk_backend *b)
{
	return b->ops->stop(b);
}

static inline void pk_backend_stats(struct pk_backend *b, struct pk_stats *out)
{
	b->ops->stats(b, out);
}

static inline void pk_backend_destroy(struct pk_backend *b)
{
	if (b)
		b->ops->destroy(b);
}

#endif
