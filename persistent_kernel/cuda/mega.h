/* SPDX-License-Identifier: Apache-2.0 */
/*
 * persistent_kernel/cuda/mega.h: the decode megakernel. One launch runs a whole small step
 * (1 .. PK_MEGA_MAX_M tokens, bf16): embedding, every layer, and the LM head, on one resident
 * block per SM. Each block has a producer warp that claims work units in a global ticket order
 * and streams their weights into a shared-memory ring with TMA bulk copies, running ahead across
 * stage boundaries, and 16 consumer warps that wait for a unit's inputs (release/acquire
 * counters in global memory), compute it from the ring and signal it done. Work that needs a
 * whole head or a whole split-K group (q/k norm + RoPE + KV append; the split merge) is done by
 * whichever unit completes the group last: a layer is five waits (QKV -> ATTN per KV group, ATTN
 * -> O, O -> GU, GU -> DOWN, DOWN -> next QKV) instead of six or seven kernels.
 * Sampling and the done counter stay separate kernels after it (step.cu records them).
 *
 * Status: correct on every GPU check, but slower than the per-kernel fused path (H200, batch 1:
 * 1.8-2.0x its step time), so pk_step uses it only with env PK_STEP_MEGA=1; docs/gpu-step.md
 * has the measurements, the cycle profile (env PK_MEGA_PROFILE=1 prints it when the pk_step is
 * destroyed) and what has to change. Env PK_MEGA_SLOT_KB sets the ring slot size (default 32).
 *
 * Units are claimed in ticket order and a unit waits only on units with smaller tickets, which
 * are held by blocks already running: the kernel needs no co-residency guarantee (no
 * cooperative launch) and is safe in device-launched graphs and beside other resident kernels.
 * The counters return to zero at the end of every launch (the last block out resets them).
 *
 * Ownership: pk_mega_create() allocates the unit tables, counters and its own activation
 *   scratch; it reads the weights, KV pool and batch descriptor through the pointers it is given
 *   (owned by pk_step) and writes logits into the descriptor's logits rows.
 * Threading: create/record/destroy on the host thread that owns pk_step. Launches of one
 *   pk_mega must not overlap (one stream, as the step's graphs are replayed).
 * Errors: 0 or a negative errno; create returns -ENOTSUP with the reason in err for shapes it
 *   does not cover (the caller keeps its per-kernel path for them).
 */
#ifndef OFFPATH_PK_CUDA_MEGA_H
#define OFFPATH_PK_CUDA_MEGA_H

#include <stddef.h>

#include <cuda_runtime_api.h>

#include "step_pvt.h"

/* Largest bucket the megakernel runs (its activations for every token sit in shared memory). */
#define PK_MEGA_MAX_M 4

struct pk_mega;

struct pk_mega_model {
	struct pk_dims d;
	const struct pk_layer_w *lw; /* host array of n_layers device pointers */
	const void *embed, *final_norm, *lm_head;
	const float *inv_freq;
	void *kv;
	const struct pk_step_batch *b; /* logits rows 0 .. min(bucket, n_logits) are written */
};

int pk_mega_create(struct pk_mega **out, const struct pk_mega_model *m, int max_m, char *err,
		   size_t errlen);
/* Enqueue the forward for a batch of at most `bucket` (<= max_m) tokens: logits rows
 * 0 .. min(bucket, max_logits) of the descriptor are written. Capture-safe. */
int pk_mega_record(struct pk_mega *g, int bucket, cudaStream_t st);
void pk_mega_destroy(struct pk_mega *g);
/* The largest bucket this megakernel runs (a power of two <= PK_MEGA_MAX_M). */
int pk_mega_max_m(const struct pk_mega *g);

#endif
