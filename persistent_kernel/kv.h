/* SPDX-License-Identifier: Apache-2.0 */
/*
 * persistent_kernel/kv.h: the paged KV-cache allocator. The KV pool is n_pages fixed-size pages of
 * page_tokens positions each (the bytes live in the model's step: model/cpu.h or the GPU step);
 * this module only hands out page ids. Free pages are a stack of ids (O(1) alloc and free, no
 * search); each sequence owns a page table mapping its logical page i (positions
 * [i*page_tokens, (i+1)*page_tokens)) to a physical page id.
 *
 * Plain C with fixed-size arrays and no libc calls, so the same source compiles as CUDA device code
 * (PK_HD) for the persistent scheduler.
 *
 * Ownership: the caller allocates struct kv_pool (it is large: KV_MAX_PAGES ids) and calls
 *   kv_init(); there is nothing to free. Page tables are embedded in the scheduler's request
 *   entries; kv_table_release() returns their pages.
 * Threading: one thread (the scheduler thread, or one GPU thread) owns a pool and its tables.
 */
#ifndef OFFPATH_PK_KV_H
#define OFFPATH_PK_KV_H

#include <stdint.h>
#include "pk_atomic.h"

#define KV_MAX_PAGES        65536 /* physical pages in one pool */
#define KV_MAX_SEQ_PAGES    1024  /* logical pages per sequence (context <= 1024 * page_tokens) */

struct kv_pool {
	int32_t n_pages;     /* total pages, 1 .. KV_MAX_PAGES */
	int32_t page_tokens; /* positions per page, >= 1 */
	int32_t n_free;      /* ids in stack[0 .. n_free) are free */
	int32_t stack[KV_MAX_PAGES];
};

struct kv_table {
	int32_t n;                       /* pages held */
	int32_t pages[KV_MAX_SEQ_PAGES]; /* logical -> physical page id */
};

/* All pages free. Returns 0 or -EINVAL (n_pages or page_tokens out of range). */
PK_HD int kv_init(struct kv_pool *kv, int n_pages, int page_tokens);

/* Pop a free page id, or -1 when none is left. */
PK_HD int32_t kv_alloc_page(struct kv_pool *kv);

/* Push a page id back. The caller owns it (no double free check on the hot path; kv_check()). */
PK_HD void kv_free_page(struct kv_pool *kv, int32_t page);

PK_HD int kv_free_count(const struct kv_pool *kv);

/* Pages a sequence needs to hold n_pos positions. */
PK_HD int kv_pages_for(const struct kv_pool *kv, int n_pos);

/* Grow t so it covers positions [0, n_pos). All or nothing: returns 0, or -ENOSPC (free pages
 * short; nothing allocated) or -E2BIG (more than KV_MAX_SEQ_PAGES). */
PK_HD int kv_table_reserve(struct kv_pool *kv, struct kv_table *t, int n_pos);

/* Give every page of t back (in reverse, so a reserve right after gets the same ids). */
PK_HD void kv_table_release(struct kv_pool *kv, struct kv_table *t);

/* Debug and tests (O(n_pages)): 0 when the free stack holds distinct in-range ids; -EINVAL else. */
int kv_check(const struct kv_pool *kv);

#endif
