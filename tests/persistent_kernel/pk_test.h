/* SPDX-License-Identifier: Apache-2.0 */
/*
 * tests/persistent_kernel/pk_test.h: ring allocation shared by the persistent_kernel tests.
 *
 *   pkt_ring_try(kind, n, arena)   a ring in fresh aligned memory, or NULL (bad geometry, memory)
 *   pkt_ring(kind, n, arena)       the same, aborting the test instead of returning NULL
 *   pkt_rings(&r, req_n, req_arena, tok_n, ctl_n), pkt_rings_free(&r): a backend's three rings
 *
 * The memory is filled with 0xa5 before ring_init(), so that no test relies on zeroed memory.
 * Ownership: the caller frees each ring with free() (pkt_rings_free() frees all three).
 * Threading: any thread; a ring then follows ring.h's single-producer/single-consumer rules.
 */
#ifndef OFFPATH_TESTS_PK_TEST_H
#define OFFPATH_TESTS_PK_TEST_H

#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "pk.h"

static inline struct ring_hdr *pkt_ring_try(uint32_t kind, uint32_t n, uint32_t arena)
{
	uint64_t b = ring_bytes(kind, n, arena);
	void *m = NULL;

	if (!b || posix_memalign(&m, RING_LINE, b))
		return NULL;
	memset(m, 0xa5, b); /* init must not rely on zeroed memory */
	if (ring_init(m, b, kind, n, arena)) {
		free(m);
		return NULL;
	}
	return m;
}

static inline struct ring_hdr *pkt_ring(uint32_t kind, uint32_t n, uint32_t arena)
{
	struct ring_hdr *h = pkt_ring_try(kind, n, arena);

	if (!h)
		abort();
	return h;
}

/* A request ring of req_n slots and a req_arena-token arena, a token ring, a control ring. */
static inline void pkt_rings(struct pk_rings *r, uint32_t req_n, uint32_t req_arena, uint32_t tok_n,
                             uint32_t ctl_n)
{
	r->req = pkt_ring(RING_KIND_REQ, req_n, req_arena);
	r->tok = pkt_ring(RING_KIND_TOK, tok_n, 0);
	r->ctl = pkt_ring(RING_KIND_CTL, ctl_n, 0);
}

static inline void pkt_rings_free(struct pk_rings *r)
{
	free(r->req);
	free(r->tok);
	free(r->ctl);
}

#endif
