/* SPDX-License-Identifier: Apache-2.0 */
/*
 * tokenizer/tok_pvt.h: internals shared by the tokenizer's .c files (not an interface).
 *
 * One BPE core serves tiktoken rank files and Hugging Face merges: a pair table maps two adjacent
 * token ids (a, b) to (priority, merged id). For HF the priority is the merge's index; for
 * tiktoken the merges are derived at load (for each token, BPE over its bytes with only lower
 * ranks must end in exactly two parts) and the priority is the merged token's rank. BPE merges the
 * leftmost pair of lowest priority until none is left. tiktoken (and HF with ignore_merges) first
 * look the whole piece up in the vocabulary; for HF without it we precompute, per token, whether
 * BPE of its own bytes gives back that token (whole_ok), which makes the same lookup exact.
 *
 * Ownership: struct tok owns every table below; struct tok_enc owns its scratch buffers.
 * Threading: struct tok is read-only after tok_load(); a tok_enc belongs to one thread.
 */
#ifndef OFFPATH_TOKENIZER_TOK_PVT_H
#define OFFPATH_TOKENIZER_TOK_PVT_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "tok.h"

#include <errno.h>
#include <stdlib.h>
#include <string.h>

#define tok_likely(x)	__builtin_expect(!!(x), 1)
#define tok_unlikely(x) __builtin_expect(!!(x), 0)

/* Grows a scratch byte buffer of a struct tok_enc (fix, nfc, pfx) to at least need bytes:
 * doubling from 4 KiB, so growth is amortised and stops once the longest input has been seen.
 * Returns 0 or -ENOMEM (then *buf and *cap are unchanged). */
static inline int tok_grow_bytes(char **buf, size_t *cap, size_t need)
{
	if (need <= *cap)
		return 0;
	size_t c = *cap ? *cap : 4096;
	while (c < need)
		c *= 2;
	char *b = realloc(*buf, c);
	if (!b)
		return -ENOMEM;
	*buf = b;
	*cap = c;
	return 0;
}

/* a[0..n) == b[0..n): pieces are short (median ~4 bytes), where a libc memcmp call costs more
 * than the compare; up to 16 bytes with two overlapping loads per side, longer ones via memcmp. */
static inline bool tok_bytes_eq(const void *a, const void *b, size_t n)
{
	const uint8_t *x = a, *y = b;
	if (n >= 8) {
		if (n > 16)
			return !memcmp(x, y, n);
		uint64_t a0, a1, b0, b1;
		memcpy(&a0, x, 8);
		memcpy(&b0, y, 8);
		memcpy(&a1, x + n - 8, 8);
		memcpy(&b1, y + n - 8, 8);
		return !((a0 ^ b0) | (a1 ^ b1));
	}
	if (n >= 4) {
		uint32_t a0, a1, b0, b1;
		memcpy(&a0, x, 4);
		memcpy(&b0, y, 4);
		memcpy(&a1, x + n - 4, 4);
		memcpy(&b1, y + n - 4, 4);
		return !((a0 ^ b0) | (a1 ^ b1));
	}
	return !n || (x[0] == y[0] && x[n / 2] == y[n / 2] && x[n - 1] == y[n - 1]);
}

/* Pre-tokenizer split patterns we have scanners for. cl100k_base and Llama 3 share one pattern. */
enum tok_pat {
	TOK_PAT_NONE = 0, /* no split: the whole section is one piece */
	TOK_PAT_GPT2,	  /* r50k/p50k/gpt2, and HF ByteLevel(use_regex: true) */
	TOK_PAT_CL100K,	  /* cl100k_base == Llama 3 */
	TOK_PAT_QWEN2,	  /* as cl100k but \p{N} one digit at a time */
	TOK_PAT_O200K,
};

enum tok_kind {
	TOK_KIND_UNUSED = 0,
	TOK_KIND_NORMAL = 1,  /* produced by BPE */
	TOK_KIND_SPECIAL = 2, /* added token, special: matched only with TOK_SPECIAL */
	TOK_KIND_ADDED = 3,   /* added token, not special: HF matches it in any text */
};

struct tok_pslot { /* pair table slot, 16 bytes; key 0 = empty (a pair (0,0) is stored +1) */
	uint64_t key;  /* ((a + 1) << 32) | b */
	uint32_t prio; /* merge priority: lower merges first */
	int32_t id;    /* merged token */
};

struct tok_addtok {
	char *text;
	size_t len;
	int id;
	bool special;
};

struct tok {
	int n_vocab;	       /* highest id + 1 */
	uint32_t *off;	       /* [n_vocab] offset of token bytes in arena */
	uint32_t *len;	       /* [n_vocab] length of token bytes */
	uint8_t *kind;	       /* [n_vocab] enum tok_kind */
	uint8_t *whole_ok;     /* [n_vocab] BPE of the token's bytes gives the token itself */
	char *arena;	       /* token bytes, back to back */
	size_t arena_len, arena_cap;
	uint32_t max_len;      /* longest token, bytes */
	int32_t byte_id[256];  /* single-byte token of each byte, -1 if none */

	uint64_t *bh;	       /* bytes -> (hash tag << 32 | id), open addressing; id -1 empty */
	uint32_t bh_mask;

	struct tok_pslot *ph;  /* (a, b) -> (prio, merged id) */
	uint32_t ph_mask;
	uint32_t n_pairs;

	int32_t (*merges)[2];  /* merges in priority order (for export) */
	uint32_t *merge_prio;
	int n_merges, merges_cap;

	struct tok_addtok *added;
	int n_added;
	uint8_t added_first[256]; /* per byte: 1 = starts a non-special added token, 2 = any */

	enum tok_pat pat;
	bool nfc;	       /* NFC-normalise text sections before splitting (HF normalizer) */
	bool add_prefix_space; /* HF ByteLevel add_prefix_space */
	bool whole_first;      /* tiktoken / HF ignore_merges: whole-piece lookup is the rule */
	bool from_tiktoken;
	bool any_added_always; /* has non-special added tokens (matched in any text) */
};

struct tok_enc {
	const struct tok *t;
	char *fix;	  /* repaired (valid UTF-8) copy of the input, when needed */
	size_t fix_cap;
	char *nfc;	  /* NFC output */
	size_t nfc_cap;
	char *pfx;	  /* section with a prefix space (add_prefix_space) */
	size_t pfx_cap;
	int32_t *u32;	  /* utf8proc working buffer, code points */
	size_t u32_cap;
	/* BPE scratch, grown to the longest piece seen */
	int32_t *sym;	  /* [n] symbol ids */
	uint32_t *pr;	  /* [n] priority of (sym[k], sym[k+1]) */
	int32_t *nxt, *prv;
	uint64_t *heap;	  /* (prio << 32 | pos) entries */
	int32_t *hid;	  /* per heap entry: packed ids to validate (2 per entry) */
	size_t bpe_cap;
	/* piece cache: direct mapped, exact (key bytes compared) */
	struct tok_cache_ent *cache;
};

#define TOK_CACHE_SLOTS 16384
#define TOK_CACHE_KEY	24
#define TOK_CACHE_IDS	7
struct tok_cache_ent {
	uint8_t klen; /* 0 = empty */
	uint8_t n;
	char key[TOK_CACHE_KEY];
	int32_t ids[TOK_CACHE_IDS];
};

/* tok_pretok.c */
enum tok_pat tok_pat_from_string(const char *pat);
enum tok_pat tok_pat_from_name(const char *name);
const char *tok_pat_string(enum tok_pat p);
/* End of the piece that starts at pos (pos < len); text is valid UTF-8. */
size_t tok_pretok_next(enum tok_pat p, const uint8_t *s, size_t len, size_t pos);
/* From i, the end of the valid UTF-8 run; *sub = length of the maximal invalid subpart there (0 at
 * the end of s), *trunc = that subpart is a valid sequence cut off by the end of s. */
size_t tok_utf8_scan(const uint8_t *s, size_t len, size_t i, size_t *sub, bool *trunc);
/* Length of the valid UTF-8 prefix of s. */
size_t tok_utf8_valid_prefix(const uint8_t *s, size_t len);
/* WHATWG repair of s into out (cap >= 3 * len); returns bytes written. */
size_t tok_utf8_repair(const uint8_t *s, size_t len, uint8_t *out);

/* tok_nfc.c */
/* NFC of s[0..n) (valid UTF-8), exactly as libutf8proc's UTF8PROC_STABLE | UTF8PROC_COMPOSE: *out
 * is s itself when nothing can change, else e->nfc; libutf8proc runs only on the spans from the
 * safe code point before each unsafe one to the next safe one. -ENOMEM, -EINVAL. */
int tok_nfc(struct tok_enc *e, const uint8_t *s, size_t n, const uint8_t **out, size_t *olen);
/* Code point c may change under NFC or affect its neighbours (ccc != 0, not NFC-stable alone,
 * composes with what precedes it, or decomposes to such); builds the table on first use. */
bool tok_nfc_unsafe(uint32_t c);

/* tok_bpe.c */
uint64_t tok_hash_bytes(const void *p, size_t n);
int32_t tok_lookup_bytes(const struct tok *t, const void *p, size_t n);
int32_t tok_lookup_hashed(const struct tok *t, const void *p, size_t n, uint64_t h);
void tok_pretok_init(void);
const struct tok_pslot *tok_pair_find(const struct tok *t, int32_t a, int32_t b);
/* BPE over bytes with merges of priority < limit; writes the parts to out (cap >= n), or leaves
 * them in e->sym when out is NULL; returns the count. Scratch comes from e. -ENOMEM if scratch cannot grow. */
int tok_bpe_bytes(struct tok_enc *e, const uint8_t *p, size_t n, uint32_t limit, int32_t *out);
int tok_enc_reserve(struct tok_enc *e, size_t n);

#endif
