/* SPDX-License-Identifier: Apache-2.0 */
/* persistent_kernel/kv.c: page-id stack and per-sequence page tables (see kv.h). No libc. */
#include <errno.h>
#include <stdlib.h>
#include "kv.h"

PK_HD int kv_init(struct kv_pool *kv, int n_pages, int page_tokens)
{
	int i;

	if (n_pages < 1 || n_pages > KV_MAX_PAGES || page_tokens < 1)
		return -EINVAL;
	kv->n_pages = n_pages;
	kv->page_tokens = page_tokens;
	/* Low ids on top, so a fresh pool hands out 0, 1, 2, ... (easier to read in traces). */
	for (i = 0; i < n_pages; i++)
		kv->stack[i] = n_pages - 1 - i;
	kv->n_free = n_pages;
	return 0;
}

PK_HD int32_t kv_alloc_page(struct kv_pool *kv)
{
	if (kv->n_free == 0)
		return -1;
	return kv->stack[--kv->n_free];
}

PK_HD void kv_free_page(struct kv_pool *kv, int32_t page)
{
	kv->stack[kv->n_free++] = page;
}

PK_HD int kv_free_count(const struct kv_pool *kv)
{
	return kv->n_free;
}

PK_HD int kv_pages_for(const struct kv_pool *kv, int n_pos)
{
	return n_pos <= 0 ? 0 : (n_pos + kv->page_tokens - 1) / kv->page_tokens;
}

PK_HD int kv_table_reserve(struct kv_pool *kv, struct kv_table *t, int n_pos)
{
	int need = kv_pages_for(kv, n_pos);

	if (need <= t->n)
		return 0;
	if (need > KV_MAX_SEQ_PAGES)
		return -E2BIG;
	if (need - t->n > kv->n_free)
		return -ENOSPC;
	while (t->n < need)
		t->pages[t->n++] = kv_alloc_page(kv);
	return 0;
}

PK_HD void kv_table_release(struct kv_pool *kv, struct kv_table *t)
{
	while (t->n > 0)
		kv_free_page(kv, t->pages[--t->n]);
}

int kv_check(const struct kv_pool *kv)
{
	uint8_t *seen;
	int i, rc = 0;

	if (kv->n_free < 0 || kv->n_free > kv->n_pages)
		return -EINVAL;
	seen = (uint8_t *)calloc((size_t)kv->n_pages, 1);
	if (!seen)
		return -ENOMEM;
	for (i = 0; i < kv->n_free; i++) {
		int32_t p = kv->stack[i];

		if (p < 0 || p >= kv->n_pages || seen[p]) {
			rc = -EINVAL;
			break;
		}
		seen[p] = 1;
	}
	free(seen);
	return rc;
}
