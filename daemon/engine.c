/* SPDX-License-Identifier: Apache-2.0 */
#include <errno.h>
#include <stdlib.h>
#include <string.h>

#include "emu.h"
#include "engine.h"
#include "log.h"
#include "ring.h"

int engine_max_ctx(const struct boot_model *bm)
{
	return bm->m->cfg.max_pos < SCHED_MAX_CTX ? bm->m->cfg.max_pos : SCHED_MAX_CTX;
}

static int engine_rings(struct engine *e, const struct engine_opts *o)
{
	static const uint32_t kinds[3] = {RING_KIND_REQ, RING_KIND_TOK, RING_KIND_CTL};
	/* Token ring: a few steps of every running sequence. Control ring: cancels are rare and
	 * drained every scheduler iteration. The prompt arena holds a quarter context per queued
	 * request (at least 64k tokens); a prompt that finds it full waits as a 429. */
	uint64_t arena = (uint64_t)o->max_queue * (uint64_t)o->max_ctx / 4;
	if (arena < 65536)
		arena = 65536;
	if (arena > RING_MAX_ARENA)
		arena = RING_MAX_ARENA;
	uint32_t slots[3] = {(uint32_t)o->max_queue, 4096, 1024};
	uint32_t arenas[3] = {(uint32_t)arena, 0, 0};
	struct ring_hdr **dst[3] = {&e->rings.req, &e->rings.tok, &e->rings.ctl};

	for (int i = 0; i < 3; i++) {
		uint64_t bytes = ring_bytes(kinds[i], slots[i], arenas[i]);
		if (!bytes)
			return -EINVAL;
		bytes = (bytes + RING_LINE - 1) / RING_LINE * RING_LINE;
		e->mem[i] = aligned_alloc(RING_LINE, bytes);
		if (!e->mem[i])
			return -ENOMEM;
		int r = ring_init(e->mem[i], bytes, kinds[i], slots[i], arenas[i]);
		if (r)
			return r;
		*dst[i] = e->mem[i];
	}
	return 0;
}

int engine_start(struct engine *e, const struct boot_model *bm, const struct engine_opts *o)
{
	int page_tokens = o->page_tokens ? o->page_tokens : 16;
	int r;

	memset(e, 0, sizeof(*e));
	e->kv_pages =
	    o->kv_pages ? o->kv_pages : 8 * ((o->max_ctx + page_tokens - 1) / page_tokens);
	r = engine_rings(e, o);
	if (r) {
		log_error("engine", "allocating the rings (%d request slots): %s", o->max_queue,
		          strerror(-r));
		goto fail;
	}
	struct pk_emu_opts eo = {
	    .rings = e->rings,
	    .sched = {.n_pages = e->kv_pages,
	              .page_tokens = page_tokens,
	              .max_ctx = o->max_ctx,
	              .step_tokens = o->step_tokens ? o->step_tokens : 256,
	              .max_seqs = o->max_seqs ? o->max_seqs : 64,
	              .n_eos = bm->n_eos},
	};
	memcpy(eo.sched.eos_ids, bm->eos_ids, (size_t)bm->n_eos * sizeof(int32_t));
	r = pk_emu_cpu_create(&e->be, bm->m, &eo, o->threads);
	if (r) {
		log_error("engine",
		          "creating the CPU backend (%d KV pages of %d tokens, context %d): %s",
		          e->kv_pages, page_tokens, o->max_ctx, strerror(-r));
		goto fail;
	}
	r = pk_backend_start(e->be);
	if (r) {
		log_error("engine", "starting the CPU backend: %s", strerror(-r));
		goto fail;
	}
	return 0;
fail:
	engine_stop(e);
	return r;
}

void engine_stop(struct engine *e)
{
	if (e->be) {
		pk_backend_stop(e->be);
		pk_backend_destroy(e->be);
		e->be = NULL;
	}
	for (int i = 0; i < 3; i++) {
		free(e->mem[i]);
		e->mem[i] = NULL;
	}
}
