/* SPDX-License-Identifier: Apache-2.0 */
/* tests/persistent_kernel/test_kv.c: the KV page allocator: limits, all-or-nothing reserve, and no
 * page lost or handed out twice over a long random sequence of reserve/release. */
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "check.h"
#include "kv.h"
#include "sample.h" /* mdl_mix64 as the test's random source */

#define NT 40

static struct kv_pool kv;
static struct kv_table tabs[NT];
static uint8_t owner[KV_MAX_PAGES];

/* Every page is free or held by exactly one table. */
static void check_whole(int n_pages)
{
	int i, k, held = 0;

	memset(owner, 0, sizeof(owner));
	CHECK(kv_check(&kv) == 0);
	for (i = 0; i < kv.n_free; i++)
		owner[kv.stack[i]]++;
	for (i = 0; i < NT; i++)
		for (k = 0; k < tabs[i].n; k++) {
			CHECK(tabs[i].pages[k] >= 0 && tabs[i].pages[k] < n_pages);
			CHECK(owner[tabs[i].pages[k]] == 0);
			owner[tabs[i].pages[k]]++;
			held++;
		}
	CHECK(held + kv_free_count(&kv) == n_pages);
}

int main(void)
{
	uint64_t r = 99;
	int i, n_pages = 500, step;

	CHECK(kv_init(&kv, 0, 16) == -EINVAL);
	CHECK(kv_init(&kv, KV_MAX_PAGES + 1, 16) == -EINVAL);
	CHECK(kv_init(&kv, 10, 0) == -EINVAL);

	/* Alloc everything: distinct ids, then -1; free all: back to full. */
	CHECK(kv_init(&kv, 10, 16) == 0);
	for (i = 0; i < 10; i++) {
		int32_t p = kv_alloc_page(&kv);

		CHECK(p >= 0 && p < 10 && owner[p] == 0);
		owner[p] = 1;
	}
	CHECK(kv_alloc_page(&kv) == -1 && kv_free_count(&kv) == 0);
	for (i = 0; i < 10; i++)
		kv_free_page(&kv, i);
	CHECK(kv_free_count(&kv) == 10 && kv_check(&kv) == 0);
	kv_free_page(&kv, 3); /* a double free is what kv_check exists to catch */
	CHECK(kv_check(&kv) == -EINVAL);

	/* Page arithmetic and all-or-nothing reserve. */
	CHECK(kv_init(&kv, 10, 16) == 0);
	CHECK(kv_pages_for(&kv, 0) == 0 && kv_pages_for(&kv, 1) == 1 && kv_pages_for(&kv, 16) == 1 &&
	      kv_pages_for(&kv, 17) == 2);
	memset(tabs, 0, sizeof(tabs));
	CHECK(kv_table_reserve(&kv, &tabs[0], 100) == 0 && tabs[0].n == 7);
	CHECK(kv_table_reserve(&kv, &tabs[0], 90) == 0 && tabs[0].n == 7); /* never shrinks */
	CHECK(kv_table_reserve(&kv, &tabs[1], 64) == -ENOSPC && tabs[1].n == 0);
	CHECK(kv_free_count(&kv) == 3);
	CHECK(kv_table_reserve(&kv, &tabs[1], 48) == 0 && tabs[1].n == 3);
	CHECK(kv_table_reserve(&kv, &tabs[2], 16 * KV_MAX_SEQ_PAGES + 1) == -E2BIG);
	kv_table_release(&kv, &tabs[0]);
	kv_table_release(&kv, &tabs[1]);
	CHECK(tabs[0].n == 0 && kv_free_count(&kv) == 10 && kv_check(&kv) == 0);

	/* Random grow / release over NT tables. */
	CHECK(kv_init(&kv, n_pages, 8) == 0);
	memset(tabs, 0, sizeof(tabs));
	for (step = 0; step < 200000; step++) {
		struct kv_table *t;
		int before, rc, want;

		r = mdl_mix64(r);
		t = &tabs[r % NT];
		before = kv_free_count(&kv);
		if ((r >> 8) % 4 == 0) {
			int had = t->n;

			kv_table_release(&kv, t);
			CHECK(kv_free_count(&kv) == before + had);
			continue;
		}
		want = t->n * 8 + (int)((r >> 16) % 200);
		rc = kv_table_reserve(&kv, t, want);
		if (rc == 0)
			CHECK(t->n == kv_pages_for(&kv, want) || t->n * 8 >= want);
		else
			CHECK(rc == -ENOSPC && kv_free_count(&kv) == before);
		if (step % 5000 == 0)
			check_whole(n_pages);
	}
	check_whole(n_pages);
	for (i = 0; i < NT; i++)
		kv_table_release(&kv, &tabs[i]);
	CHECK(kv_free_count(&kv) == n_pages && kv_check(&kv) == 0);
	if (check_exit())
		return 1;
	printf("test_kv: ok\n");
	return 0;
}
