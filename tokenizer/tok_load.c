/* SPDX-License-Identifier: Apache-2.0 */
/*
 * tokenizer/tok_load.c: loaders (HF tokenizer.json, tiktoken .tiktoken text, tiktoken npm JSON),
 * the tables of struct tok, merge derivation for rank files, accessors.
 *
 * Load cost (2 cores, Debian 12): cl100k ~0.2 s (base64, hash, deriving 100k merges), Qwen3
 * tokenizer.json ~0.5 s (jansson parse of 11 MB dominates). Allocation happens only here.
 */
#include <errno.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <jansson.h>

#include "tok_pvt.h"

struct ld {
	struct tok *t;
	const char *path;
	char *err;
	size_t errlen;
	/* tokens collected before the tables are sized */
	struct ent {
		int32_t id;
		uint32_t off, len;
		uint8_t kind;
		uint8_t in_bytes; /* take part in BPE (bytes -> id table) */
	} *ents;
	size_t n_ents, ents_cap;
	int32_t max_id;
};

static int fail(struct ld *l, int rc, const char *fmt, ...)
{
	if (l->err && l->errlen) {
		int n = snprintf(l->err, l->errlen, "%s: ", l->path);
		if (n < 0)
			n = 0;
		if ((size_t)n < l->errlen) {
			va_list ap;
			va_start(ap, fmt);
			vsnprintf(l->err + n, l->errlen - (size_t)n, fmt, ap);
			va_end(ap);
		}
	}
	return rc;
}

static int arena_add(struct tok *t, const void *p, size_t n, uint32_t *off)
{
	if (t->arena_len + n + 1 > t->arena_cap) {
		size_t c = t->arena_cap ? t->arena_cap : 1 << 20;
		while (c < t->arena_len + n + 1)
			c *= 2;
		char *a = realloc(t->arena, c);
		if (!a)
			return -ENOMEM;
		t->arena = a;
		t->arena_cap = c;
	}
	if (t->arena_len + n > UINT32_MAX)
		return -E2BIG;
	memcpy(t->arena + t->arena_len, p, n);
	*off = (uint32_t)t->arena_len;
	t->arena_len += n;
	return 0;
}

static int add_ent(struct ld *l, int32_t id, const void *p, size_t n, uint8_t kind, bool in_bytes)
{
	if (id < 0 || id > (1 << 28))
		return fail(l, -EINVAL, "token id %d out of range", id);
	if (l->n_ents == l->ents_cap) {
		size_t c = l->ents_cap ? 2 * l->ents_cap : 1 << 16;
		struct ent *e = realloc(l->ents, c * sizeof(*e));
		if (!e)
			return -ENOMEM;
		l->ents = e;
		l->ents_cap = c;
	}
	struct ent *e = &l->ents[l->n_ents];
	int rc = arena_add(l->t, p, n, &e->off);
	if (rc)
		return rc;
	e->id = id;
	e->len = (uint32_t)n;
	e->kind = kind;
	e->in_bytes = in_bytes;
	l->n_ents++;
	if (id > l->max_id)
		l->max_id = id;
	return 0;
}

static int add_added(struct tok *t, const char *text, size_t len, int id, bool special)
{
	struct tok_addtok *a = realloc(t->added, (size_t)(t->n_added + 1) * sizeof(*a));
	if (!a)
		return -ENOMEM;
	t->added = a;
	char *s = malloc(len + 1);
	if (!s)
		return -ENOMEM;
	memcpy(s, text, len);
	s[len] = 0;
	a[t->n_added++] = (struct tok_addtok){s, len, id, special};
	if (!special)
		t->any_added_always = true;
	if (len)
		t->added_first[(uint8_t)text[0]] |= special ? 2 : 3;
	return 0;
}

static uint32_t pow2_at_least(uint64_t n)
{
	uint32_t c = 16;
	while (c < n)
		c *= 2;
	return c;
}

/* Size the per-id arrays and the bytes -> id table from the collected entries. */
static int build_tables(struct ld *l)
{
	struct tok *t = l->t;
	int n = l->max_id + 1;
	t->n_vocab = n;
	t->off = calloc((size_t)n, sizeof(*t->off));
	t->len = calloc((size_t)n, sizeof(*t->len));
	t->kind = calloc((size_t)n, 1);
	t->whole_ok = calloc((size_t)n, 1);
	size_t n_bytes = 0;
	for (size_t i = 0; i < l->n_ents; i++)
		n_bytes += l->ents[i].in_bytes;
	t->bh_mask = pow2_at_least(2 * n_bytes + 16) - 1;
	t->bh = malloc(((size_t)t->bh_mask + 1) * sizeof(*t->bh));
	if (!t->off || !t->len || !t->kind || !t->whole_ok || !t->bh)
		return -ENOMEM;
	memset(t->bh, 0xff, ((size_t)t->bh_mask + 1) * sizeof(*t->bh));
	for (int b = 0; b < 256; b++)
		t->byte_id[b] = -1;
	for (size_t i = 0; i < l->n_ents; i++) {
		const struct ent *e = &l->ents[i];
		if (t->kind[e->id] != TOK_KIND_UNUSED) {
			/* HF may list a vocab token again in added_tokens: the added entry wins for its
			 * kind only when it is not a BPE token */
			if (!e->in_bytes && t->kind[e->id] == TOK_KIND_NORMAL)
				continue;
			return fail(l, -EEXIST, "duplicate token id/rank %d", e->id);
		}
		t->kind[e->id] = e->kind;
		t->off[e->id] = e->off;
		t->len[e->id] = e->len;
		if (e->len > t->max_len)
			t->max_len = e->len;
		if (!e->in_bytes)
			continue;
		const void *p = t->arena + e->off;
		if (tok_lookup_bytes(t, p, e->len) >= 0)
			return fail(l, -EEXIST, "duplicate token bytes (id %d)", e->id);
		uint64_t hh = tok_hash_bytes(p, e->len);
		uint32_t h = (uint32_t)hh & t->bh_mask;
		while ((int32_t)(uint32_t)t->bh[h] >= 0)
			h = (h + 1) & t->bh_mask;
		t->bh[h] = (hh & 0xffffffff00000000ull) | (uint32_t)e->id;
		if (e->len == 1)
			t->byte_id[(uint8_t)t->arena[e->off]] = e->id;
	}
	return 0;
}

static int pairs_init(struct tok *t, size_t n)
{
	t->ph_mask = pow2_at_least(2 * (uint64_t)n + 16) - 1;
	t->ph = calloc((size_t)t->ph_mask + 1, sizeof(*t->ph));
	return t->ph ? 0 : -ENOMEM;
}

/* Insert or overwrite (later HF merges of the same pair win, as in HF's HashMap collect). */
static int pair_put(struct tok *t, int32_t a, int32_t b, uint32_t prio, int32_t id)
{
	if (t->n_merges == t->merges_cap) {
		int c = t->merges_cap ? 2 * t->merges_cap : 1 << 14;
		int32_t(*m)[2] = realloc(t->merges, (size_t)c * sizeof(*m));
		if (!m)
			return -ENOMEM;
		t->merges = m;
		uint32_t *mp = realloc(t->merge_prio, (size_t)c * sizeof(*mp));
		if (!mp)
			return -ENOMEM;
		t->merge_prio = mp;
		t->merges_cap = c;
	}
	t->merges[t->n_merges][0] = a;
	t->merges[t->n_merges][1] = b;
	t->merge_prio[t->n_merges] = prio;
	t->n_merges++;
	if ((uint64_t)(t->n_pairs + 1) * 2 > (uint64_t)t->ph_mask + 1)
		return -ENOSPC;
	uint64_t k = ((uint64_t)(uint32_t)(a + 1) << 32) | (uint32_t)b;
	uint64_t hk = k * 0x9e3779b97f4a7c15ull;
	uint32_t i = (uint32_t)(hk >> 32) & t->ph_mask;
	while (t->ph[i].key && t->ph[i].key != k)
		i = (i + 1) & t->ph_mask;
	if (!t->ph[i].key)
		t->n_pairs++;
	t->ph[i] = (struct tok_pslot){k, prio, id};
	return 0;
}

/* What BPE over each token's own bytes needs at load: an encoder on t and room for the parts
 * tok_bpe_bytes() leaves (at most max_len). The caller frees *parts and destroys *e. */
static int bpe_scratch(struct tok *t, struct tok_enc **e, int32_t **parts)
{
	int rc = tok_enc_create(e, t);
	if (rc)
		return rc;
	*parts = malloc(((size_t)t->max_len + 1) * sizeof(**parts));
	if (!*parts) {
		tok_enc_destroy(*e);
		return -ENOMEM;
	}
	return 0;
}

/* tiktoken: for each token in rank order, BPE over its bytes with only lower ranks; two parts
 * left = the merge that makes it. Tokens that end in more parts are reachable only whole. */
static int derive_merges(struct ld *l)
{
	struct tok *t = l->t;
	struct tok_enc *e;
	int32_t *parts;
	int rc = pairs_init(t, (size_t)t->n_vocab);
	if (rc)
		return rc;
	rc = bpe_scratch(t, &e, &parts);
	if (rc)
		return rc;
	for (int id = 0; id < t->n_vocab && !rc; id++) {
		if (t->kind[id] != TOK_KIND_NORMAL)
			continue;
		t->whole_ok[id] = 1;
		if (t->len[id] < 2)
			continue;
		int m = tok_bpe_bytes(e, (const uint8_t *)t->arena + t->off[id], t->len[id],
				      (uint32_t)id, parts);
		if (m < 0)
			rc = m;
		else if (m == 2)
			rc = pair_put(t, parts[0], parts[1], (uint32_t)id, id);
	}
	free(parts);
	tok_enc_destroy(e);
	return rc;
}

/* HF without ignore_merges: the whole-piece shortcut is exact for tokens BPE maps to themselves. */
static int compute_whole_ok(struct tok *t)
{
	struct tok_enc *e;
	int32_t *parts;
	int rc = bpe_scratch(t, &e, &parts);
	if (rc)
		return rc;
	for (int id = 0; id < t->n_vocab; id++) {
		if (t->kind[id] != TOK_KIND_NORMAL || tok_lookup_bytes(t, t->arena + t->off[id],
								      t->len[id]) != id)
			continue;
		if (t->whole_first) {
			t->whole_ok[id] = 1;
			continue;
		}
		int m = tok_bpe_bytes(e, (const uint8_t *)t->arena + t->off[id], t->len[id],
				      UINT32_MAX, parts);
		if (m < 0) {
			rc = m;
			break;
		}
		t->whole_ok[id] = m == 1 && parts[0] == id;
	}
	free(parts);
	tok_enc_destroy(e);
	return rc;
}

/* ---- base64 ---- */

static int b64_val(int c)
{
	if (c >= 'A' && c <= 'Z')
		return c - 'A';
	if (c >= 'a' && c <= 'z')
		return c - 'a' + 26;
	if (c >= '0' && c <= '9')
		return c - '0' + 52;
	if (c == '+')
		return 62;
	if (c == '/')
		return 63;
	return -1;
}

/* Decode n chars of base64 (padding allowed at the end) into out; returns bytes or -EINVAL. */
static int b64_decode(const char *s, size_t n, uint8_t *out)
{
	uint32_t acc = 0;
	int bits = 0, o = 0;
	size_t i = 0;
	for (; i < n && s[i] != '='; i++) {
		int v = b64_val((unsigned char)s[i]);
		if (v < 0)
			return -EINVAL;
		acc = (acc << 6) | (uint32_t)v;
		bits += 6;
		if (bits >= 8) {
			bits -= 8;
			out[o++] = (uint8_t)(acc >> bits);
		}
	}
	for (; i < n; i++)
		if (s[i] != '=')
			return -EINVAL;
	if (n % 4 || o == 0)
		return -EINVAL;
	return o;
}

/* ---- tiktoken ---- */

static const struct {
	const char *name;
	const char *text;
	int id;
} known_specials[] = {
	{"cl100k_base", "<|endoftext|>", 100257},  {"cl100k_base", "<|fim_prefix|>", 100258},
	{"cl100k_base", "<|fim_middle|>", 100259}, {"cl100k_base", "<|fim_suffix|>", 100260},
	{"cl100k_base", "<|endofprompt|>", 100276}, {"o200k_base", "<|endoftext|>", 199999},
	{"o200k_base", "<|endofprompt|>", 200018}, {"r50k_base", "<|endoftext|>", 50256},
	{"p50k_base", "<|endoftext|>", 50256},	    {"gpt2", "<|endoftext|>", 50256},
};

static int add_special(struct ld *l, const char *text, int id)
{
	int rc = add_ent(l, id, text, strlen(text), TOK_KIND_SPECIAL, false);
	if (rc)
		return rc;
	return add_added(l->t, text, strlen(text), id, true);
}

static int finish_tiktoken(struct ld *l)
{
	struct tok *t = l->t;
	t->from_tiktoken = true;
	t->whole_first = true;
	int rc = build_tables(l);
	if (rc)
		return rc;
	for (int b = 0; b < 256; b++)
		if (t->byte_id[b] < 0)
			return fail(l, -EINVAL, "no token for byte 0x%02x", b);
	rc = derive_merges(l);
	if (rc)
		return fail(l, rc, "deriving merges: %s", strerror(-rc));
	return 0;
}

static int load_tiktoken_text(struct ld *l, const char *buf, size_t n)
{
	uint8_t tmp[1024];
	size_t i = 0;
	int line = 0, rc;
	while (i < n) {
		line++;
		size_t e = i;
		while (e < n && buf[e] != '\n')
			e++;
		size_t le = e;
		if (le > i && buf[le - 1] == '\r')
			le--;
		if (le > i) {
			size_t sp = i;
			while (sp < le && buf[sp] != ' ')
				sp++;
			if (sp == le || sp - i > 4 * sizeof(tmp) / 3)
				return fail(l, -EINVAL, "line %d: expected \"<base64> <rank>\"", line);
			int m = b64_decode(buf + i, sp - i, tmp);
			if (m < 0)
				return fail(l, -EINVAL, "line %d: bad base64", line);
			char *endp;
			char num[16];
			size_t nl = le - sp - 1;
			if (nl == 0 || nl >= sizeof(num))
				return fail(l, -EINVAL, "line %d: bad rank", line);
			memcpy(num, buf + sp + 1, nl);
			num[nl] = 0;
			long r = strtol(num, &endp, 10);
			if (*endp || r < 0)
				return fail(l, -EINVAL, "line %d: bad rank", line);
			rc = add_ent(l, (int32_t)r, tmp, (size_t)m, TOK_KIND_NORMAL, true);
			if (rc)
				return rc;
		}
		i = e + 1;
	}
	if (!l->n_ents)
		return fail(l, -EINVAL, "no ranks");
	const char *base = strrchr(l->path, '/');
	base = base ? base + 1 : l->path;
	l->t->pat = TOK_PAT_NONE;
	for (size_t k = 0; k < sizeof(known_specials) / sizeof(known_specials[0]); k++) {
		if (!strncmp(base, known_specials[k].name, strlen(known_specials[k].name))) {
			l->t->pat = tok_pat_from_name(known_specials[k].name);
			rc = add_special(l, known_specials[k].text, known_specials[k].id);
			if (rc)
				return rc;
		}
	}
	if (l->t->pat == TOK_PAT_NONE)
		return fail(l, -EINVAL,
			    "cannot tell the split pattern of a .tiktoken file from its name "
			    "(expected cl100k_base, o200k_base, r50k_base, p50k_base or gpt2)");
	return finish_tiktoken(l);
}

static int load_tiktoken_json(struct ld *l, json_t *root)
{
	json_t *pat = json_object_get(root, "pat_str");
	json_t *sp = json_object_get(root, "special_tokens");
	json_t *br = json_object_get(root, "bpe_ranks");
	int rc;
	if (!json_is_string(pat) || !json_is_string(br))
		return fail(l, -EINVAL, "tiktoken JSON needs string pat_str and bpe_ranks");
	l->t->pat = tok_pat_from_string(json_string_value(pat));
	if (l->t->pat == TOK_PAT_NONE)
		return fail(l, -ENOTSUP, "unknown split pattern \"%.80s\"", json_string_value(pat));
	const char *s = json_string_value(br);
	size_t n = json_string_length(br), i = 0;
	long rank = -1;
	uint8_t tmp[1024];
	while (i < n) {
		while (i < n && s[i] == ' ')
			i++;
		size_t e = i;
		while (e < n && s[e] != ' ')
			e++;
		if (e == i)
			break;
		if (e - i == 1 && s[i] == '!') { /* "! <start_rank>" starts a run of ranks */
			i = e + 1;
			char *endp;
			rank = strtol(s + i, &endp, 10);
			if (endp == s + i || rank < 0 || (*endp != ' ' && *endp))
				return fail(l, -EINVAL, "bpe_ranks: bad start rank");
			i = (size_t)(endp - s);
			continue;
		}
		if (rank < 0)
			return fail(l, -EINVAL, "bpe_ranks: must start with \"! <rank>\"");
		if (e - i > 4 * sizeof(tmp) / 3)
			return fail(l, -EINVAL, "bpe_ranks: token too long at rank %ld", rank);
		int m = b64_decode(s + i, e - i, tmp);
		if (m < 0)
			return fail(l, -EINVAL, "bpe_ranks: bad base64 at rank %ld", rank);
		rc = add_ent(l, (int32_t)rank, tmp, (size_t)m, TOK_KIND_NORMAL, true);
		if (rc)
			return rc;
		rank++;
		i = e;
	}
	if (!l->n_ents)
		return fail(l, -EINVAL, "bpe_ranks: no ranks");
	if (sp) {
		const char *k;
		json_t *v;
		if (!json_is_object(sp))
			return fail(l, -EINVAL, "special_tokens must be an object");
		json_object_foreach(sp, k, v)
		{
			if (!json_is_integer(v))
				return fail(l, -EINVAL, "special token %s: id must be an integer", k);
			rc = add_special(l, k, (int)json_integer_value(v));
			if (rc)
				return rc;
		}
	}
	return finish_tiktoken(l);
}

/* ---- Hugging Face tokenizer.json ---- */

/* GPT-2 byte-level alphabet: byte -> code point, and back. */
static void bytelevel_tables(uint16_t b2u[256], int16_t u2b[324])
{
	int n = 0;
	for (int c = 0; c < 324; c++)
		u2b[c] = -1;
	for (int b = 0; b < 256; b++) {
		bool keep = (b >= 33 && b <= 126) || (b >= 161 && b <= 172) || (b >= 174);
		b2u[b] = (uint16_t)(keep ? b : 256 + n++);
		u2b[b2u[b]] = (int16_t)b;
	}
}

/* Byte-level string -> bytes; -1 when a character is outside the alphabet. */
static int bytelevel_decode(const int16_t u2b[324], const char *s, size_t n, uint8_t *out)
{
	int o = 0;
	size_t i = 0;
	while (i < n) {
		uint32_t c = (uint8_t)s[i];
		if (c < 0x80) {
			i++;
		} else if ((c & 0xe0) == 0xc0 && i + 1 < n) {
			c = ((c & 0x1f) << 6) | ((uint8_t)s[i + 1] & 0x3f);
			i += 2;
		} else {
			return -1;
		}
		if (c >= 324 || u2b[c] < 0)
			return -1;
		out[o++] = (uint8_t)u2b[c];
	}
	return o;
}

static int hf_normalizer(struct ld *l, json_t *nm)
{
	if (!nm || json_is_null(nm))
		return 0;
	const char *type = json_string_value(json_object_get(nm, "type"));
	if (type && !strcmp(type, "NFC")) {
		l->t->nfc = true;
		tok_nfc_unsafe(0); /* build the NFC table now (~20 ms once), not in the first encode */
		return 0;
	}
	if (type && !strcmp(type, "Sequence")) {
		json_t *a = json_object_get(nm, "normalizers"), *x;
		size_t i;
		json_array_foreach(a, i, x)
		{
			int rc = hf_normalizer(l, x);
			if (rc)
				return rc;
		}
		return 0;
	}
	return fail(l, -ENOTSUP, "normalizer %s is not supported (NFC, Sequence[NFC] or null)",
		    type ? type : "?");
}

static int hf_pretok(struct ld *l, json_t *pt)
{
	struct tok *t = l->t;
	const char *type = json_string_value(json_object_get(pt, "type"));
	if (!type)
		return fail(l, -EINVAL, "pre_tokenizer without type");
	if (!strcmp(type, "ByteLevel")) {
		json_t *ur = json_object_get(pt, "use_regex");
		t->pat = (!ur || json_is_true(ur)) ? TOK_PAT_GPT2 : TOK_PAT_NONE;
		t->add_prefix_space = json_is_true(json_object_get(pt, "add_prefix_space"));
		return 0;
	}
	if (!strcmp(type, "Sequence")) {
		json_t *a = json_object_get(pt, "pretokenizers");
		json_t *sp = json_array_get(a, 0), *bl = json_array_get(a, 1);
		const char *t0 = json_string_value(json_object_get(sp, "type"));
		const char *t1 = json_string_value(json_object_get(bl, "type"));
		if (json_array_size(a) != 2 || !t0 || !t1 || strcmp(t0, "Split") ||
		    strcmp(t1, "ByteLevel") || json_is_true(json_object_get(bl, "use_regex")) ||
		    json_is_true(json_object_get(bl, "add_prefix_space")))
			return fail(l, -ENOTSUP,
				    "pre_tokenizer Sequence must be [Split(Regex), "
				    "ByteLevel(use_regex: false, add_prefix_space: false)]");
		const char *beh = json_string_value(json_object_get(sp, "behavior"));
		if (!beh || strcmp(beh, "Isolated") || json_is_true(json_object_get(sp, "invert")))
			return fail(l, -ENOTSUP, "Split must have behavior Isolated, invert false");
		const char *re = json_string_value(json_object_get(json_object_get(sp, "pattern"),
								   "Regex"));
		if (!re)
			return fail(l, -ENOTSUP, "Split pattern must be a Regex");
		t->pat = tok_pat_from_string(re);
		if (t->pat == TOK_PAT_NONE)
			return fail(l, -ENOTSUP, "unknown split pattern \"%.80s\"", re);
		return 0;
	}
	return fail(l, -ENOTSUP, "pre_tokenizer %s is not supported", type);
}

static int load_hf(struct ld *l, json_t *root)
{
	struct tok *t = l->t;
	json_t *model = json_object_get(root, "model");
	uint16_t b2u[256];
	int16_t u2b[324];
	uint8_t tmp[4096];
	int rc;
	bytelevel_tables(b2u, u2b);
	const char *mt = json_string_value(json_object_get(model, "type"));
	if (mt && strcmp(mt, "BPE"))
		return fail(l, -ENOTSUP, "model type %s is not supported (BPE only)", mt);
	json_t *vocab = json_object_get(model, "vocab");
	json_t *merges = json_object_get(model, "merges");
	if (!json_is_object(vocab))
		return fail(l, -EINVAL, "model.vocab missing");
	if (!json_is_array(merges))
		return fail(l, -EINVAL, "model.merges missing");
	if (json_is_true(json_object_get(model, "byte_fallback")))
		return fail(l, -ENOTSUP, "byte_fallback BPE is not supported");
	const char *cp = json_string_value(json_object_get(model, "continuing_subword_prefix"));
	const char *ews = json_string_value(json_object_get(model, "end_of_word_suffix"));
	if ((cp && *cp) || (ews && *ews))
		return fail(l, -ENOTSUP, "subword prefix/suffix is not supported");
	t->whole_first = json_is_true(json_object_get(model, "ignore_merges"));
	rc = hf_normalizer(l, json_object_get(root, "normalizer"));
	if (rc)
		return rc;
	json_t *pt = json_object_get(root, "pre_tokenizer");
	if (!pt || json_is_null(pt))
		return fail(l, -ENOTSUP, "a byte-level pre_tokenizer is required");
	rc = hf_pretok(l, pt);
	if (rc)
		return rc;

	const char *k;
	json_t *v;
	json_object_foreach(vocab, k, v)
	{
		if (!json_is_integer(v))
			return fail(l, -EINVAL, "vocab entry %.40s: id must be an integer", k);
		size_t kl = strlen(k);
		int m = kl < sizeof(tmp) ? bytelevel_decode(u2b, k, kl, tmp) : -1;
		if (m > 0)
			rc = add_ent(l, (int32_t)json_integer_value(v), tmp, (size_t)m,
				     TOK_KIND_NORMAL, true);
		else /* not byte-level text: keep it for decode, BPE cannot produce it */
			rc = add_ent(l, (int32_t)json_integer_value(v), k, kl, TOK_KIND_NORMAL,
				     false);
		if (rc)
			return rc;
	}
	json_t *added = json_object_get(root, "added_tokens"), *a;
	size_t ai;
	json_array_foreach(added, ai, a)
	{
		json_t *jid = json_object_get(a, "id");
		const char *content = json_string_value(json_object_get(a, "content"));
		if (!json_is_integer(jid) || !content)
			return fail(l, -EINVAL, "added_tokens[%zu]: needs id and content", ai);
		bool special = json_is_true(json_object_get(a, "special"));
		int id = (int)json_integer_value(jid);
		rc = add_ent(l, id, content, strlen(content),
			     special ? TOK_KIND_SPECIAL : TOK_KIND_ADDED, false);
		if (!rc)
			rc = add_added(t, content, strlen(content), id, special);
		if (rc)
			return rc;
	}
	rc = build_tables(l);
	if (rc)
		return rc;
	rc = pairs_init(t, json_array_size(merges));
	if (rc)
		return rc;
	size_t mi;
	json_t *mg;
	json_array_foreach(merges, mi, mg)
	{
		const char *sa, *sb;
		size_t la, lb;
		if (json_is_string(mg)) {
			const char *s = json_string_value(mg);
			const char *sp = strchr(s, ' ');
			if (!sp || strchr(sp + 1, ' '))
				return fail(l, -EINVAL, "merges[%zu]: expected \"a b\"", mi);
			sa = s;
			la = (size_t)(sp - s);
			sb = sp + 1;
			lb = strlen(sb);
		} else if (json_is_array(mg) && json_array_size(mg) == 2 &&
			   json_is_string(json_array_get(mg, 0)) &&
			   json_is_string(json_array_get(mg, 1))) {
			sa = json_string_value(json_array_get(mg, 0));
			sb = json_string_value(json_array_get(mg, 1));
			la = strlen(sa);
			lb = strlen(sb);
		} else {
			return fail(l, -EINVAL, "merges[%zu]: expected \"a b\" or [\"a\", \"b\"]", mi);
		}
		int ma = la < sizeof(tmp) / 2 ? bytelevel_decode(u2b, sa, la, tmp) : -1;
		int mb = ma > 0 && lb < sizeof(tmp) / 2 ? bytelevel_decode(u2b, sb, lb, tmp + ma)
							 : -1;
		if (ma <= 0 || mb <= 0)
			return fail(l, -EINVAL, "merges[%zu]: not byte-level text", mi);
		int32_t ia = tok_lookup_bytes(t, tmp, (size_t)ma);
		int32_t ib = tok_lookup_bytes(t, tmp + ma, (size_t)mb);
		int32_t ic = tok_lookup_bytes(t, tmp, (size_t)(ma + mb));
		if (ia < 0 || ib < 0 || ic < 0)
			return fail(l, -EINVAL, "merges[%zu] \"%.40s %.40s\": token not in vocab", mi,
				    sa, sb);
		rc = pair_put(t, ia, ib, (uint32_t)mi, ic);
		if (rc)
			return rc;
	}
	return compute_whole_ok(t);
}

static int read_file(const char *path, char **buf, size_t *n)
{
	FILE *f = fopen(path, "rb");
	if (!f)
		return -errno;
	size_t cap = 1 << 16, len = 0;
	char *b = malloc(cap);
	int rc = 0;
	while (b) {
		if (len + 4096 > cap) {
			char *nb = realloc(b, cap * 2);
			if (!nb) {
				free(b);
				b = NULL;
				break;
			}
			b = nb;
			cap *= 2;
		}
		size_t r = fread(b + len, 1, cap - len - 1, f);
		len += r;
		if (r == 0)
			break;
	}
	if (!b)
		rc = -ENOMEM;
	else if (ferror(f))
		rc = -EIO;
	fclose(f);
	if (rc) {
		free(b);
		return rc;
	}
	b[len] = 0;
	*buf = b;
	*n = len;
	return 0;
}

int tok_load(struct tok **out, const char *path, char *err, size_t errlen)
{
	struct ld l = {.path = path, .err = err, .errlen = errlen, .max_id = -1};
	char *buf = NULL;
	size_t n = 0;
	json_t *root = NULL;
	int rc;
	if (err && errlen)
		err[0] = 0;
	tok_pretok_init();
	l.t = calloc(1, sizeof(*l.t));
	if (!l.t)
		return -ENOMEM;
	rc = read_file(path, &buf, &n);
	if (rc) {
		fail(&l, rc, "%s", strerror(-rc));
		goto out;
	}
	size_t i = 0;
	while (i < n && (buf[i] == ' ' || buf[i] == '\n' || buf[i] == '\t' || buf[i] == '\r'))
		i++;
	if (i < n && buf[i] == '{') {
		json_error_t je;
		root = json_loadb(buf, n, 0, &je);
		if (!root) {
			rc = fail(&l, -EINVAL, "JSON line %d: %s", je.line, je.text);
			goto out;
		}
		free(buf);
		buf = NULL;
		if (json_object_get(root, "model"))
			rc = load_hf(&l, root);
		else if (json_object_get(root, "bpe_ranks"))
			rc = load_tiktoken_json(&l, root);
		else
			rc = fail(&l, -EINVAL, "JSON is neither tokenizer.json (model) nor tiktoken "
					       "(bpe_ranks)");
	} else {
		rc = load_tiktoken_text(&l, buf, n);
	}
	if (rc && err && errlen && !err[0])
		fail(&l, rc, "%s", strerror(-rc));
out:
	json_decref(root);
	free(buf);
	free(l.ents);
	if (rc) {
		tok_destroy(l.t);
		return rc;
	}
	*out = l.t;
	return 0;
}

void tok_destroy(struct tok *t)
{
	if (!t)
		return;
	free(t->off);
	free(t->len);
	free(t->kind);
	free(t->whole_ok);
	free(t->arena);
	free(t->bh);
	free(t->ph);
	free(t->merges);
	free(t->merge_prio);
	for (int i = 0; i < t->n_added; i++)
		free(t->added[i].text);
	free(t->added);
	free(t);
}

int tok_vocab_size(const struct tok *t)
{
	return t->n_vocab;
}

int tok_special_id(const struct tok *t, const char *text)
{
	for (int i = 0; i < t->n_added; i++)
		if (!strcmp(t->added[i].text, text))
			return t->added[i].id;
	return -ENOENT;
}

const char *tok_piece(const struct tok *t, int id, size_t *len)
{
	if (id < 0 || id >= t->n_vocab || t->kind[id] == TOK_KIND_UNUSED)
		return NULL;
	if (len)
		*len = t->len[id];
	return t->arena + t->off[id];
}
