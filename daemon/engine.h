/* SPDX-License-Identifier: Apache-2.0 */
/*
 * daemon/engine.h: the three rings (persistent_kernel/ring.h) and the persistent scheduler
 * backend behind them, set up the same way for every command, so that `generate` and `serve` run
 * the very same loop and give the same tokens for the same seed and parameters.
 *
 * Ownership: engine_start() allocates the rings and creates and starts the backend;
 *   engine_stop() stops the backend and frees everything (safe on a zeroed or half-started one).
 * Threading: start/stop on one control thread. While running, the caller's threads are the host
 *   side of the rings (one producer of the request and control rings, one consumer of the token
 *   ring; see ring.h) and the backend is the other side.
 */
#ifndef OFFPATH_DAEMON_ENGINE_H
#define OFFPATH_DAEMON_ENGINE_H

#include "boot.h"
#include "pk.h"

struct engine_opts {
	int max_queue;   /* request ring slots, a power of two */
	int max_ctx;     /* prompt + generated tokens of one request */
	int kv_pages;    /* 0: eight full contexts */
	int page_tokens; /* 0: 16 */
	int step_tokens; /* 0: 256 */
	int max_seqs;    /* 0: 64 */
	int threads;     /* CPU backend matmul threads; 0: one per core */
};

struct engine {
	struct pk_rings rings;
	struct pk_backend *be;
	void *mem[3];
	int kv_pages;
};

/* The longest context the scheduler supports for this model: min(max_pos, SCHED_MAX_CTX). */
int engine_max_ctx(const struct boot_model *bm);

/* Logs what went wrong (once) and returns a negative errno on failure. */
int engine_start(struct engine *e, const struct boot_model *bm, const struct engine_opts *o);
void engine_stop(struct engine *e);

#endif
