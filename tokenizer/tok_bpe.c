/* SPDX-License-Identifier: Apache-2.0 */
/*
 * tokenizer/tok_bpe.c: the encoder (repair, added-token split, NFC, pre-tokenize, BPE), decode,
 * and the incremental detokenizer.
 *
 * BPE cost: a piece of n bytes that is not a whole token and not in the piece cache runs the
 * merge loop: n <= 48 scans a small array (O(n^2), n tiny, all in L1); longer pieces (long runs
 * of CJK, whitespace or digits) use a binary heap with lazy deletion, O(n log n).
 */
#include <errno.h>
#include <stdlib.h>
#include <string.h>

#include "tok_pvt.h"

#define SMALL_BPE 48
#define NOPRIO	  UINT32_MAX

uint64_t tok_hash_bytes(const void *p, size_t n)
{
	const uint8_t *s = p;
	uint64_t h = 0x9e3779b97f4a7c15ull ^ (n * 0xff51afd7ed558ccdull), w;
	while (n > 8) {
		memcpy(&w, s, 8);
		h = (h ^ w) * 0xc4ceb9fe1a85ec53ull;
		h ^= h >> 29;
		s += 8;
		n -= 8;
	}
	/* the last 1..8 bytes with fixed-size (overlapping) loads */
	if (n >= 4) {
		uint32_t a, b;
		memcpy(&a, s, 4);
		memcpy(&b, s + n - 4, 4);
		w = ((uint64_t)b << 32) | a;
	} else if (n) {
		w = (uint64_t)s[0] | ((uint64_t)s[n / 2] << 8) | ((uint64_t)s[n - 1] << 16);
	} else {
		w = 0;
	}
	h = (h ^ w) * 0xc4ceb9fe1a85ec53ull;
	h ^= h >> 32;
	h *= 0x9e3779b97f4a7c15ull;
	return h ^ (h >> 29);
}

int32_t tok_lookup_hashed(const struct tok *t, const void *p, size_t n, uint64_t h)
{
	uint32_t i = (uint32_t)h & t->bh_mask, tag = (uint32_t)(h >> 32);
	for (;;) {
		uint64_t sl = t->bh[i];
		int32_t id = (int32_t)(uint32_t)sl;
		if (id < 0)
			return -1;
		if ((uint32_t)(sl >> 32) == tag && t->len[id] == n &&
		    tok_bytes_eq(t->arena + t->off[id], p, n))
			return id;
		i = (i + 1) & t->bh_mask;
	}
}

int32_t tok_lookup_bytes(const struct tok *t, const void *p, size_t n)
{
	return tok_lookup_hashed(t, p, n, tok_hash_bytes(p, n));
}

static inline uint64_t pair_key(int32_t a, int32_t b)
{
	return ((uint64_t)(uint32_t)(a + 1) << 32) | (uint32_t)b;
}

static inline uint32_t pair_slot(uint64_t k)
{
	k *= 0x9e3779b97f4a7c15ull;
	return (uint32_t)(k >> 32);
}

const struct tok_pslot *tok_pair_find(const struct tok *t, int32_t a, int32_t b)
{
	uint64_t k = pair_key(a, b);
	uint32_t i = pair_slot(k) & t->ph_mask;
	for (;;) {
		const struct tok_pslot *sl = &t->ph[i];
		if (sl->key == k)
			return sl;
		if (!sl->key)
			return NULL;
		i = (i + 1) & t->ph_mask;
	}
}

static inline uint32_t pair_prio(const struct tok *t, int32_t a, int32_t b, int32_t *id)
{
	const struct tok_pslot *sl = tok_pair_find(t, a, b);
	if (!sl)
		return NOPRIO;
	*id = sl->id;
	return sl->prio;
}

int tok_enc_reserve(struct tok_enc *e, size_t n)
{
	if (n <= e->bpe_cap)
		return 0;
	size_t c = e->bpe_cap ? e->bpe_cap : 64;
	while (c < n)
		c *= 2;
	int32_t *sym = realloc(e->sym, c * sizeof(*sym));
	if (sym)
		e->sym = sym;
	uint32_t *pr = realloc(e->pr, c * sizeof(*pr));
	if (pr)
		e->pr = pr;
	int32_t *nxt = realloc(e->nxt, c * sizeof(*nxt));
	if (nxt)
		e->nxt = nxt;
	int32_t *prv = realloc(e->prv, c * sizeof(*prv));
	if (prv)
		e->prv = prv;
	/* each merge pushes at most 2 entries: 3n bounds the heap */
	uint64_t *heap = realloc(e->heap, 3 * c * sizeof(*heap));
	if (heap)
		e->heap = heap;
	int32_t *hid = realloc(e->hid, 6 * c * sizeof(*hid));
	if (hid)
		e->hid = hid;
	if (!sym || !pr || !nxt || !prv || !heap || !hid)
		return -ENOMEM;
	e->bpe_cap = c;
	return 0;
}

/* Small pieces: compact arrays, scan for the leftmost minimum. */
static int bpe_small(const struct tok *t, int32_t *sym, uint32_t *pr, int n, uint32_t limit)
{
	int32_t mid[SMALL_BPE];
	for (int k = 0; k + 1 < n; k++)
		pr[k] = pair_prio(t, sym[k], sym[k + 1], &mid[k]);
	while (n > 1) {
		uint32_t best = NOPRIO;
		int bk = -1;
		for (int k = 0; k + 1 < n; k++) {
			if (pr[k] < best) {
				best = pr[k];
				bk = k;
			}
		}
		if (bk < 0 || best >= limit)
			break;
		sym[bk] = mid[bk];
		for (int k = bk + 1; k + 1 < n; k++) {
			sym[k] = sym[k + 1];
			pr[k] = pr[k + 1];
			mid[k] = mid[k + 1];
		}
		n--;
		if (bk > 0)
			pr[bk - 1] = pair_prio(t, sym[bk - 1], sym[bk], &mid[bk - 1]);
		if (bk + 1 < n)
			pr[bk] = pair_prio(t, sym[bk], sym[bk + 1], &mid[bk]);
	}
	return n;
}

/* Binary min-heap of (prio << 32 | pos); hid[2*slot] keeps the ids the entry was made for. */
static void heap_push(struct tok_enc *e, size_t *hn, uint64_t v, int32_t a, int32_t b)
{
	size_t i = (*hn)++;
	while (i) {
		size_t p = (i - 1) / 2;
		if (e->heap[p] <= v)
			break;
		e->heap[i] = e->heap[p];
		e->hid[2 * i] = e->hid[2 * p];
		e->hid[2 * i + 1] = e->hid[2 * p + 1];
		i = p;
	}
	e->heap[i] = v;
	e->hid[2 * i] = a;
	e->hid[2 * i + 1] = b;
}

static void heap_pop(struct tok_enc *e, size_t *hn)
{
	size_t n = --(*hn), i = 0;
	uint64_t v = e->heap[n];
	int32_t a = e->hid[2 * n], b = e->hid[2 * n + 1];
	for (;;) {
		size_t c = 2 * i + 1;
		if (c >= n)
			break;
		if (c + 1 < n && e->heap[c + 1] < e->heap[c])
			c++;
		if (v <= e->heap[c])
			break;
		e->heap[i] = e->heap[c];
		e->hid[2 * i] = e->hid[2 * c];
		e->hid[2 * i + 1] = e->hid[2 * c + 1];
		i = c;
	}
	e->heap[i] = v;
	e->hid[2 * i] = a;
	e->hid[2 * i + 1] = b;
}

/* Long pieces: linked list over positions + heap with lazy deletion. An entry is live while both
 * ends are still adjacent and still hold the ids it was pushed for. */
static int bpe_large(struct tok_enc *e, int32_t *sym, int n, uint32_t limit)
{
	const struct tok *t = e->t;
	int32_t *nxt = e->nxt, *prv = e->prv;
	size_t hn = 0;
	int32_t id;
	for (int k = 0; k < n; k++) {
		nxt[k] = k + 1 < n ? k + 1 : -1;
		prv[k] = k - 1;
	}
	for (int k = 0; k + 1 < n; k++) {
		uint32_t p = pair_prio(t, sym[k], sym[k + 1], &id);
		if (p < limit)
			heap_push(e, &hn, ((uint64_t)p << 32) | (uint32_t)k, sym[k], sym[k + 1]);
	}
	int live = n;
	while (hn) {
		uint64_t top = e->heap[0];
		int32_t ia = e->hid[0], ib = e->hid[1];
		heap_pop(e, &hn);
		int k = (int)(uint32_t)top;
		int r = nxt[k];
		if (sym[k] != ia || r < 0 || sym[r] != ib)
			continue; /* stale */
		const struct tok_pslot *sl = tok_pair_find(t, ia, ib);
		sym[k] = sl->id;
		sym[r] = -2; /* dead */
		nxt[k] = nxt[r];
		if (nxt[r] >= 0)
			prv[nxt[r]] = k;
		live--;
		if (prv[k] >= 0) {
			int l = prv[k];
			uint32_t p = pair_prio(t, sym[l], sym[k], &id);
			if (p < limit)
				heap_push(e, &hn, ((uint64_t)p << 32) | (uint32_t)l, sym[l], sym[k]);
		}
		if (nxt[k] >= 0) {
			int rr = nxt[k];
			uint32_t p = pair_prio(t, sym[k], sym[rr], &id);
			if (p < limit)
				heap_push(e, &hn, ((uint64_t)p << 32) | (uint32_t)k, sym[k], sym[rr]);
		}
	}
	int o = 0;
	for (int k = 0; k >= 0; k = nxt[k])
		sym[o++] = sym[k];
	(void)live;
	return o;
}

int tok_bpe_bytes(struct tok_enc *e, const uint8_t *p, size_t n, uint32_t limit, int32_t *out)
{
	const struct tok *t = e->t;
	int rc = tok_enc_reserve(e, n + 1);
	if (rc)
		return rc;
	int32_t *sym = e->sym;
	int m = 0;
	for (size_t i = 0; i < n; i++) {
		int32_t id = t->byte_id[p[i]];
		if (id >= 0) /* a byte with no token is dropped, as HF does without unk */
			sym[m++] = id;
	}
	if (m == 0)
		return 0;
	if (m <= SMALL_BPE)
		m = bpe_small(t, sym, e->pr, m, limit);
	else
		m = bpe_large(e, sym, m, limit);
	if (out)
		memcpy(out, sym, (size_t)m * sizeof(*out));
	return m;
}

int tok_enc_create(struct tok_enc **out, const struct tok *t)
{
	struct tok_enc *e = calloc(1, sizeof(*e));
	if (!e)
		return -ENOMEM;
	e->t = t;
	e->cache = calloc(TOK_CACHE_SLOTS, sizeof(*e->cache));
	if (!e->cache || tok_enc_reserve(e, 256)) {
		tok_enc_destroy(e);
		return -ENOMEM;
	}
	*out = e;
	return 0;
}

void tok_enc_destroy(struct tok_enc *e)
{
	if (!e)
		return;
	free(e->fix);
	free(e->nfc);
	free(e->pfx);
	free(e->u32);
	free(e->sym);
	free(e->pr);
	free(e->nxt);
	free(e->prv);
	free(e->heap);
	free(e->hid);
	free(e->cache);
	free(e);
}

struct sink {
	int32_t *ids;
	size_t cap;
	size_t n;
};

static inline void emit(struct sink *k, int32_t id)
{
	if (k->n < k->cap)
		k->ids[k->n] = id;
	k->n++;
}

static int encode_piece(struct tok_enc *e, const uint8_t *p, size_t n, struct sink *k)
{
	const struct tok *t = e->t;
	uint64_t h = tok_hash_bytes(p, n);
	struct tok_cache_ent *ce = NULL;
	if (n <= TOK_CACHE_KEY) {
		ce = &e->cache[(h >> 20) & (TOK_CACHE_SLOTS - 1)];
		if (ce->klen == n && tok_bytes_eq(ce->key, p, n)) {
			for (int i = 0; i < ce->n; i++)
				emit(k, ce->ids[i]);
			return 0;
		}
	}
	int32_t id = tok_lookup_hashed(t, p, n, h);
	int m;
	if (id >= 0 && t->whole_ok[id]) {
		e->sym[0] = id;
		m = 1;
	} else {
		m = tok_bpe_bytes(e, p, n, NOPRIO, NULL);
		if (m < 0)
			return m;
	}
	for (int i = 0; i < m; i++)
		emit(k, e->sym[i]);
	if (ce && m <= TOK_CACHE_IDS) {
		ce->klen = (uint8_t)n;
		ce->n = (uint8_t)m;
		memcpy(ce->key, p, n);
		memcpy(ce->ids, e->sym, (size_t)m * sizeof(int32_t));
	}
	return 0;
}

static int encode_section(struct tok_enc *e, const uint8_t *s, size_t n, struct sink *k)
{
	const struct tok *t = e->t;
	int rc;
	if (!n)
		return 0;
	if (t->nfc) {
		rc = tok_nfc(e, s, n, &s, &n);
		if (rc)
			return rc;
	}
	if (tok_unlikely(t->add_prefix_space && s[0] != ' ')) {
		/* HF ByteLevel(add_prefix_space): the section gets a leading space */
		rc = tok_grow_bytes(&e->pfx, &e->pfx_cap, n + 1);
		if (rc)
			return rc;
		e->pfx[0] = ' ';
		memmove(e->pfx + 1, s, n);
		s = (const uint8_t *)e->pfx;
		n++;
	}
	size_t i = 0;
	while (i < n) {
		size_t j = tok_pretok_next(t->pat, s, n, i);
		rc = encode_piece(e, s + i, j - i, k);
		if (rc)
			return rc;
		i = j;
	}
	return 0;
}

/* Leftmost-longest added token at or after i; returns its start (n if none) and *which. */
static size_t find_added(const struct tok *t, const uint8_t *s, size_t n, size_t i, bool special,
			 int *which)
{
	/* Skip bytes that start no added token: one table probe per byte instead of a pass over
	 * all added tokens (Qwen3 has 26, all starting with '<'). */
	const unsigned m = special ? 2 : 1;
	for (; i < n; i++) {
		while (tok_likely(!(t->added_first[s[i]] & m)))
			if (++i == n)
				return n;
		int best = -1;
		size_t bl = 0;
		for (int a = 0; a < t->n_added; a++) {
			const struct tok_addtok *x = &t->added[a];
			if ((x->special && !special) || !x->len || x->len > n - i ||
			    (uint8_t)x->text[0] != s[i] || x->len <= bl)
				continue;
			if (!memcmp(x->text, s + i, x->len)) {
				best = a;
				bl = x->len;
			}
		}
		if (best >= 0) {
			*which = best;
			return i;
		}
	}
	return n;
}

ssize_t tok_encode(struct tok_enc *e, const char *text, size_t len, int32_t *ids, size_t cap,
		   unsigned flags)
{
	const struct tok *t = e->t;
	const uint8_t *s = (const uint8_t *)text;
	struct sink k = {ids, cap, 0};
	int rc;
	if (tok_unlikely(tok_utf8_valid_prefix(s, len) != len)) {
		rc = tok_grow_bytes(&e->fix, &e->fix_cap, 3 * len + 1);
		if (rc)
			return rc;
		len = tok_utf8_repair(s, len, (uint8_t *)e->fix);
		s = (const uint8_t *)e->fix;
	}
	bool special = flags & TOK_SPECIAL;
	if (t->n_added && (special || t->any_added_always)) {
		size_t i = 0;
		while (i < len) {
			int w = -1;
			size_t a = find_added(t, s, len, i, special, &w);
			rc = encode_section(e, s + i, a - i, &k);
			if (rc)
				return rc;
			if (a == len)
				break;
			emit(&k, t->added[w].id);
			i = a + t->added[w].len;
		}
	} else {
		rc = encode_section(e, s, len, &k);
		if (rc)
			return rc;
	}
	return (ssize_t)k.n;
}

ssize_t tok_decode(const struct tok *t, const int32_t *ids, size_t n, char *out, size_t cap)
{
	size_t o = 0;
	for (size_t i = 0; i < n; i++) {
		int32_t id = ids[i];
		if (id < 0 || id >= t->n_vocab || t->kind[id] == TOK_KIND_UNUSED)
			return -EINVAL;
		size_t l = t->len[id];
		if (o + l <= cap)
			memcpy(out + o, t->arena + t->off[id], l);
		else if (o < cap)
			memcpy(out + o, t->arena + t->off[id], cap - o);
		o += l;
	}
	return (ssize_t)o;
}

/* ---- incremental detokenizer ---- */

struct tok_stream {
	const struct tok *t;
	uint8_t pend[4]; /* an incomplete UTF-8 sequence carried to the next push */
	size_t npend;
	uint8_t *work;	 /* pend + the token's bytes */
	char *out;	 /* emitted text of the last push */
	size_t cap;
};

int tok_stream_create(struct tok_stream **out, const struct tok *t)
{
	struct tok_stream *s = calloc(1, sizeof(*s));
	if (!s)
		return -ENOMEM;
	s->t = t;
	/* worst case: 3 pending + the longest token, every byte invalid -> 3 bytes each */
	s->cap = 3 * ((size_t)t->max_len + 4) + 16;
	s->out = malloc(s->cap);
	s->work = malloc((size_t)t->max_len + 8);
	if (!s->out || !s->work) {
		tok_stream_destroy(s);
		return -ENOMEM;
	}
	*out = s;
	return 0;
}

void tok_stream_destroy(struct tok_stream *s)
{
	if (!s)
		return;
	free(s->out);
	free(s->work);
	free(s);
}

void tok_stream_reset(struct tok_stream *s)
{
	s->npend = 0;
}

/* Emit b[0..n) as UTF-8: valid runs as they are, each maximal invalid subpart as U+FFFD, and a
 * sequence cut off by the end kept pending unless final. Returns bytes written to s->out. */
static size_t stream_emit(struct tok_stream *s, const uint8_t *b, size_t n, bool final)
{
	size_t i = 0, o = 0;
	while (i < n) {
		size_t sub;
		bool trunc;
		size_t v = tok_utf8_scan(b, n, i, &sub, &trunc);
		memcpy(s->out + o, b + i, v - i);
		o += v - i;
		i = v;
		if (!sub)
			break;
		if (trunc && !final) {
			memcpy(s->pend, b + i, n - i);
			s->npend = n - i;
			break;
		}
		memcpy(s->out + o, "\xef\xbf\xbd", 3);
		o += 3;
		i += sub;
	}
	return o;
}

int tok_stream_push(struct tok_stream *s, int32_t id, const char **text, size_t *len)
{
	const struct tok *t = s->t;
	if (id < 0 || id >= t->n_vocab || t->kind[id] == TOK_KIND_UNUSED)
		return -EINVAL;
	size_t np = s->npend, l = t->len[id];
	memcpy(s->work, s->pend, np);
	memcpy(s->work + np, t->arena + t->off[id], l);
	s->npend = 0;
	*len = stream_emit(s, s->work, np + l, false);
	*text = s->out;
	return 0;
}

int tok_stream_finish(struct tok_stream *s, const char **text, size_t *len)
{
	size_t np = s->npend;
	memcpy(s->work, s->pend, np);
	s->npend = 0;
	*len = stream_emit(s, s->work, np, true);
	*text = s->out;
	return 0;
}
