/* SPDX-License-Identifier: Apache-2.0 */
/*
 * persistent_kernel/emu.h: the CPU emulation of the persistent kernel, a struct pk_backend (pk.h)
 * whose loop runs on one host thread: poll the control and request rings -> sched_schedule() ->
 * one forward step over the plan (model/cpu.h's struct mdl_cpu_seq) -> prompt-logprob records
 * (RING_TOK_PROMPT) of the chunks that owe them -> sample each emitting request (model/sample.h,
 * counter = tokens generated so far, so recompute after preemption draws the same numbers) ->
 * token ring records with CLOCK_MONOTONIC timestamps -> retire.
 *
 * The compute is a pair of callbacks, so tests can drive the loop with a fake step; emu_cpu.c
 * wires the real one (mdl_cpu_step + mdl_sample): pk_emu_cpu_create().
 *
 * Ownership: pk_emu_create() allocates the backend, the scheduler state and a logits buffer of
 *   (max_seqs + prompt_lp_rows) x vocab_size floats (sched_config.prompt_lp_rows, default
 *   SCHED_PROMPT_LP_ROWS); pk_backend_destroy() stops the thread, calls compute.fini and frees.
 *   The loop allocates nothing.
 * Threading: start/stop/stats/destroy from one control thread. pk_emu_iterate() runs one loop
 *   iteration on the caller's thread and is only for a backend that was never started (tests).
 *   The compute callbacks run on the loop thread only.
 */
#ifndef OFFPATH_PK_EMU_H
#define OFFPATH_PK_EMU_H

#include <stdint.h>
#include "cpu.h"
#include "mdl.h"
#include "pk.h"
#include "sample.h"
#include "pk_sched.h"

struct pk_emu_compute {
	void *ctx;
	int vocab_size;
	/* One forward step: for every seq with n_logits > 0, write n_logits rows of vocab_size logits
	 * for its last n_logits tokens (more than one only for prompt logprobs). 0, or a negative
	 * errno (every request in the step then gets an ERROR notice). */
	int (*step)(void *ctx, const struct mdl_cpu_seq *seqs, int n_seqs);
	/* Pick a token, as mdl_sample() does. */
	int32_t (*sample)(void *ctx, const float *logits, const struct mdl_sampling *p,
			  uint64_t counter, float *logprob);
	/* Called once by destroy (may be NULL). */
	void (*fini)(void *ctx);
};

struct pk_emu_opts {
	struct pk_rings rings;
	struct sched_config sched; /* vocab_size 0: take compute.vocab_size */
	int idle_spins;    /* empty polls before the loop starts sleeping; 0 = 1000 */
	int idle_sleep_us; /* sleep per empty poll after that; 0 = 50 */
};

/* Create (not started). Checks the rings (ring_check) and the scheduler config. On success the
 * backend owns compute.ctx (fini at destroy); on failure the caller still does. 0, -EINVAL, -ENOMEM. */
int pk_emu_create(struct pk_backend **out, const struct pk_emu_opts *o,
		  const struct pk_emu_compute *compute);

/* Run one iteration of the loop on this thread (never-started backends only). Returns the number
 * of sequences stepped (0: nothing to run), or -ESHUTDOWN once a shutdown was processed and every
 * notice flushed (the loop would exit). */
int pk_emu_iterate(struct pk_backend *b);

/* The scheduler state, read-only, for tests (never while the thread runs). */
const struct sched *pk_emu_sched(struct pk_backend *b);

/* The real CPU backend: mdl_cpu (n_pages, page_tokens, max_tokens = step_tokens, max_seqs from
 * o->sched) + an mdl_sampler. vocab_size and, when o->sched.n_eos is 0, the EOS ids come from the
 * model. n_threads: mdl_cpu worker threads (0: one per core). m must outlive the backend.
 * -ENOTSUP when this build has no model/cpu.c. */
int pk_emu_cpu_create(struct pk_backend **out, const struct mdl *m, const struct pk_emu_opts *o,
		      int n_threads);

#endif
