/* SPDX-License-Identifier: Apache-2.0 */
/*
 * tokenizer/tok_pretok.c: the pre-tokenizer split patterns as hand-written scanners (no regex
 * engine), UTF-8 validation and WHATWG repair.
 *
 * Each scanner returns the end of the match that a backtracking regex engine (fancy-regex in
 * tiktoken, Oniguruma in HF tokenizers) finds at pos: alternatives tried in order, greedy
 * quantifiers giving back only as far as needed. \s is Unicode White_Space; (?i:'s...) folds case
 * the Unicode way ('ſ' matches s). Classes come from a 64K table for the BMP (built once from
 * libutf8proc) and utf8proc_category() above it.
 */
#include <pthread.h>
#include <string.h>

#include <utf8proc.h>

#include "tok_pvt.h"

enum {
	CL_L = 1,    /* \p{L} */
	CL_N = 2,    /* \p{N} */
	CL_WS = 4,   /* White_Space */
	CL_NL = 8,   /* \r or \n */
	CL_UP = 16,  /* [\p{Lu}\p{Lt}\p{Lm}\p{Lo}\p{M}] (o200k) */
	CL_LO = 32,  /* [\p{Ll}\p{Lm}\p{Lo}\p{M}] (o200k) */
	CL_ANY = 64, /* set on every table entry, so 0 means "not computed" */
};

static uint8_t bmp_cls[0x10000];
static pthread_once_t bmp_once = PTHREAD_ONCE_INIT;

static bool is_white_space(uint32_t c)
{
	return (c >= 9 && c <= 13) || c == 0x20 || c == 0x85 || c == 0xa0 || c == 0x1680 ||
	       (c >= 0x2000 && c <= 0x200a) || c == 0x2028 || c == 0x2029 || c == 0x202f ||
	       c == 0x205f || c == 0x3000;
}

static uint8_t cls_compute(uint32_t c)
{
	uint8_t k = CL_ANY;
	if (is_white_space(c))
		k |= CL_WS;
	if (c == '\r' || c == '\n')
		k |= CL_NL;
	switch (utf8proc_category((utf8proc_int32_t)c)) {
	case UTF8PROC_CATEGORY_LU:
	case UTF8PROC_CATEGORY_LT:
		k |= CL_L | CL_UP;
		break;
	case UTF8PROC_CATEGORY_LL:
		k |= CL_L | CL_LO;
		break;
	case UTF8PROC_CATEGORY_LM:
	case UTF8PROC_CATEGORY_LO:
		k |= CL_L | CL_UP | CL_LO;
		break;
	case UTF8PROC_CATEGORY_MN:
	case UTF8PROC_CATEGORY_MC:
	case UTF8PROC_CATEGORY_ME:
		k |= CL_UP | CL_LO;
		break;
	case UTF8PROC_CATEGORY_ND:
	case UTF8PROC_CATEGORY_NL:
	case UTF8PROC_CATEGORY_NO:
		k |= CL_N;
		break;
	default:
		break;
	}
	return k;
}

static void bmp_init(void)
{
	for (uint32_t c = 0; c < 0x10000; c++)
		bmp_cls[c] = cls_compute(c);
}

static inline unsigned cls(uint32_t c)
{
	if (tok_likely(c < 0x10000))
		return bmp_cls[c];
	return cls_compute(c);
}

/* Decode one code point of valid UTF-8 at s[i]; returns the next index. */
static inline size_t dec(const uint8_t *s, size_t i, uint32_t *cp)
{
	uint32_t b = s[i];
	if (b < 0x80) {
		*cp = b;
		return i + 1;
	}
	if (b < 0xe0) {
		*cp = ((b & 0x1f) << 6) | (s[i + 1] & 0x3f);
		return i + 2;
	}
	if (b < 0xf0) {
		*cp = ((b & 0x0f) << 12) | ((uint32_t)(s[i + 1] & 0x3f) << 6) | (s[i + 2] & 0x3f);
		return i + 3;
	}
	*cp = ((b & 0x07) << 18) | ((uint32_t)(s[i + 1] & 0x3f) << 12) |
	      ((uint32_t)(s[i + 2] & 0x3f) << 6) | (s[i + 3] & 0x3f);
	return i + 4;
}

/* Class of the code point at i (i < len), its end in *nx. */
static inline unsigned cls_at(const uint8_t *s, size_t i, size_t *nx)
{
	uint32_t cp;
	if (tok_likely(s[i] < 0x80)) {
		*nx = i + 1;
		return bmp_cls[s[i]];
	}
	*nx = dec(s, i, &cp);
	return cls(cp);
}

/* End of the run of code points from i whose class has any bit of m. */
static inline size_t run(const uint8_t *s, size_t len, size_t i, unsigned m)
{
	while (i < len) {
		size_t nx;
		if (!(cls_at(s, i, &nx) & m))
			break;
		i = nx;
	}
	return i;
}

/* \p{N}{1,max} whose first digit ends at nx: the end after up to max - 1 more digits. */
static inline size_t digits(const uint8_t *s, size_t len, size_t nx, int max)
{
	for (int d = 1; d < max && nx < len; d++) {
		size_t n2;
		if (!(cls_at(s, nx, &n2) & CL_N))
			break;
		nx = n2;
	}
	return nx;
}

static inline bool is_other(unsigned k)
{
	return !(k & (CL_L | CL_N | CL_WS));
}

/* Contractions 's 't 're 've 'm 'll 'd at s[i] == '\''; returns the end or 0. Case-insensitive
 * when ci (Unicode simple folding: only 'ſ' U+017F joins the ASCII letters here). */
static size_t contraction(const uint8_t *s, size_t len, size_t i, bool ci)
{
	size_t j = i + 1;
	if (j >= len)
		return 0;
	uint8_t c = s[j];
	if (ci && c == 0xc5 && j + 1 < len && s[j + 1] == 0xbf) /* ſ */
		return j + 2;
	if (ci && c >= 'A' && c <= 'Z')
		c = (uint8_t)(c + 32);
	switch (c) {
	case 's':
	case 't':
	case 'm':
	case 'd':
		return j + 1;
	case 'r':
	case 'v':
	case 'l': {
		if (j + 1 >= len)
			return 0;
		uint8_t d = s[j + 1];
		if (ci && d >= 'A' && d <= 'Z')
			d = (uint8_t)(d + 32);
		if ((c == 'r' || c == 'v') ? d == 'e' : d == 'l')
			return j + 2;
		return 0;
	}
	default:
		return 0;
	}
}

/* The whitespace alternatives shared by every pattern:
 *   (with_nl) \s*[\r\n]+ | \s+(?!\S) | \s+      at a whitespace code point i. */
static size_t ws_tail(const uint8_t *s, size_t len, size_t i, bool with_nl)
{
	size_t e = i, last_nl = 0, last_start = i;
	bool nl = false;
	while (e < len) {
		size_t nx;
		unsigned k = cls_at(s, e, &nx);
		if (!(k & CL_WS))
			break;
		if (k & CL_NL) {
			nl = true;
			last_nl = nx;
		}
		last_start = e;
		e = nx;
	}
	if (with_nl && nl)
		return last_nl; /* \s* gives back to the last newline of the run */
	if (e == len || last_start == i)
		return e;	/* \s+ at the end, or a single space before \S */
	return last_start; /* \s+(?!\S): leave the last space for the next piece */
}

static size_t scan_gpt2(const uint8_t *s, size_t len, size_t i)
{
	size_t nx;
	if (s[i] == '\'') {
		size_t e = contraction(s, len, i, false);
		if (e)
			return e;
	}
	unsigned k = cls_at(s, i, &nx);
	size_t p = i;
	if (s[i] == ' ' && nx < len) {
		size_t nx2;
		unsigned k2 = cls_at(s, nx, &nx2);
		if (!(k2 & CL_WS)) { /* ` ?X+` with the space */
			p = nx;
			k = k2;
			nx = nx2;
		}
	}
	if (k & CL_L)
		return run(s, len, nx, CL_L);
	if (k & CL_N)
		return run(s, len, nx, CL_N);
	if (is_other(k)) {
		while (nx < len) {
			size_t n2;
			if (!is_other(cls_at(s, nx, &n2)))
				break;
			nx = n2;
		}
		return nx;
	}
	(void)p;
	return ws_tail(s, len, i, false);
}

/* ` ?[^\s\p{L}\p{N}]+[\r\n]*` (o200k: [\r\n/]*) at i; 0 if it does not match. */
static size_t punct(const uint8_t *s, size_t len, size_t i, bool slash)
{
	size_t nx, p = i;
	unsigned k = cls_at(s, i, &nx);
	if (s[i] == ' ' && nx < len) {
		size_t n2;
		if (is_other(cls_at(s, nx, &n2))) {
			p = nx;
			k = CL_ANY;
			nx = n2;
		}
	}
	if (!is_other(k) || p == len)
		return 0;
	while (nx < len) {
		size_t n2;
		if (!is_other(cls_at(s, nx, &n2)))
			break;
		nx = n2;
	}
	while (nx < len && (s[nx] == '\r' || s[nx] == '\n' || (slash && s[nx] == '/')))
		nx++;
	return nx;
}

/* cl100k_base / Llama 3 (ndig 3) and Qwen2 (ndig 1):
 * (?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}{1,ndig}| ?[^\s\p{L}\p{N}]+[\r\n]*|
 * \s*[\r\n]+|\s+(?!\S)|\s+ */
static size_t scan_cl100k(const uint8_t *s, size_t len, size_t i, int ndig)
{
	size_t nx, e;
	if (s[i] == '\'') {
		e = contraction(s, len, i, true);
		if (e)
			return e;
	}
	unsigned k = cls_at(s, i, &nx);
	if (k & CL_L)
		return run(s, len, nx, CL_L);
	if (!(k & (CL_NL | CL_N)) && nx < len) {
		size_t n2;
		if (cls_at(s, nx, &n2) & CL_L)
			return run(s, len, n2, CL_L);
	}
	if (k & CL_N)
		return digits(s, len, nx, ndig);
	e = punct(s, len, i, false);
	if (e)
		return e;
	return ws_tail(s, len, i, true);
}

/* o200k contraction suffix (?i:'s|'t|'re|'ve|'m|'ll|'d)? at e. */
static inline size_t o200k_suffix(const uint8_t *s, size_t len, size_t e)
{
	if (e < len && s[e] == '\'') {
		size_t c = contraction(s, len, e, true);
		if (c)
			return c;
	}
	return e;
}

/* [UP]*[LO]+ contraction? at p; 0 if no match. */
static size_t o200k_a1(const uint8_t *s, size_t len, size_t p)
{
	size_t q = p, last_lo_end = 0;
	while (q < len) {
		size_t nx;
		unsigned k = cls_at(s, q, &nx);
		if (!(k & CL_UP)) {
			if (k & CL_LO) /* Ll: the [LO]+ starts here */
				return o200k_suffix(s, len, run(s, len, nx, CL_LO));
			break;
		}
		if (k & CL_LO)
			last_lo_end = nx;
		q = nx;
	}
	if (!last_lo_end)
		return 0;
	/* Backtrack [UP]* to the last code point that is also in [LO]; [LO]+ takes just it,
	 * since what follows it in the run is Lu/Lt only (or the run's end). */
	return o200k_suffix(s, len, last_lo_end);
}

/* [UP]+[LO]* contraction? at p; 0 if no match. */
static size_t o200k_a2(const uint8_t *s, size_t len, size_t p)
{
	size_t nx;
	if (p >= len || !(cls_at(s, p, &nx) & CL_UP))
		return 0;
	size_t q = run(s, len, nx, CL_UP);
	return o200k_suffix(s, len, run(s, len, q, CL_LO));
}

static size_t scan_o200k(const uint8_t *s, size_t len, size_t i)
{
	size_t nx, e;
	unsigned k = cls_at(s, i, &nx);
	bool pre = !(k & (CL_NL | CL_L | CL_N)); /* [^\r\n\p{L}\p{N}]? can take s[i] */
	if (pre && nx < len && (e = o200k_a1(s, len, nx)))
		return e;
	if ((e = o200k_a1(s, len, i)))
		return e;
	if (pre && nx < len && (e = o200k_a2(s, len, nx)))
		return e;
	if ((e = o200k_a2(s, len, i)))
		return e;
	if (k & CL_N)
		return digits(s, len, nx, 3);
	e = punct(s, len, i, true);
	if (e)
		return e;
	return ws_tail(s, len, i, true);
}

void tok_pretok_init(void)
{
	pthread_once(&bmp_once, bmp_init);
}

size_t tok_pretok_next(enum tok_pat p, const uint8_t *s, size_t len, size_t pos)
{
	switch (p) {
	case TOK_PAT_GPT2:
		return scan_gpt2(s, len, pos);
	case TOK_PAT_CL100K:
		return scan_cl100k(s, len, pos, 3);
	case TOK_PAT_QWEN2:
		return scan_cl100k(s, len, pos, 1);
	case TOK_PAT_O200K:
		return scan_o200k(s, len, pos);
	case TOK_PAT_NONE:
	default:
		return len;
	}
}

/* The exact pattern strings we recognise (from tiktoken's encoders/NAME.json and HF tokenizer.json
 * files), and the variants with possessive quantifiers that OpenAI's Python tiktoken uses. */
static const struct {
	enum tok_pat pat;
	const char *name;
	const char *str;
} pats[] = {
	{TOK_PAT_GPT2, "gpt2",
	 "'s|'t|'re|'ve|'m|'ll|'d| ?\\p{L}+| ?\\p{N}+| ?[^\\s\\p{L}\\p{N}]+|\\s+(?!\\S)|\\s+"},
	{TOK_PAT_CL100K, "cl100k",
	 "(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\\r\\n\\p{L}\\p{N}]?\\p{L}+|\\p{N}{1,3}| "
	 "?[^\\s\\p{L}\\p{N}]+[\\r\\n]*|\\s*[\\r\\n]+|\\s+(?!\\S)|\\s+"},
	{TOK_PAT_CL100K, "cl100k",
	 "'(?i:[sdmt]|ll|ve|re)|[^\\r\\n\\p{L}\\p{N}]?+\\p{L}++|\\p{N}{1,3}+| "
	 "?[^\\s\\p{L}\\p{N}]++[\\r\\n]*+|\\s++$|\\s*[\\r\\n]|\\s+(?!\\S)|\\s"},
	{TOK_PAT_CL100K, "cl100k",
	 "(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\\r\\n\\p{L}\\p{N}]?+\\p{L}+|\\p{N}{1,3}| "
	 "?[^\\s\\p{L}\\p{N}]++[\\r\\n]*|\\s*[\\r\\n]+|\\s+(?!\\S)|\\s+"},
	{TOK_PAT_QWEN2, "qwen2",
	 "(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\\r\\n\\p{L}\\p{N}]?\\p{L}+|\\p{N}| "
	 "?[^\\s\\p{L}\\p{N}]+[\\r\\n]*|\\s*[\\r\\n]+|\\s+(?!\\S)|\\s+"},
	{TOK_PAT_O200K, "o200k",
	 "[^\\r\\n\\p{L}\\p{N}]?[\\p{Lu}\\p{Lt}\\p{Lm}\\p{Lo}\\p{M}]*[\\p{Ll}\\p{Lm}\\p{Lo}\\p{M}]+"
	 "(?i:'s|'t|'re|'ve|'m|'ll|'d)?|[^\\r\\n\\p{L}\\p{N}]?[\\p{Lu}\\p{Lt}\\p{Lm}\\p{Lo}\\p{M}]+"
	 "[\\p{Ll}\\p{Lm}\\p{Lo}\\p{M}]*(?i:'s|'t|'re|'ve|'m|'ll|'d)?|\\p{N}{1,3}| "
	 "?[^\\s\\p{L}\\p{N}]+[\\r\\n/]*|\\s*[\\r\\n]+|\\s+(?!\\S)|\\s+"},
};

enum tok_pat tok_pat_from_string(const char *pat)
{
	for (size_t i = 0; i < sizeof(pats) / sizeof(pats[0]); i++)
		if (!strcmp(pat, pats[i].str))
			return pats[i].pat;
	return TOK_PAT_NONE;
}

enum tok_pat tok_pat_from_name(const char *name)
{
	if (!strcmp(name, "llama3") || !strcmp(name, "cl100k") || !strcmp(name, "cl100k_base"))
		return TOK_PAT_CL100K;
	if (!strcmp(name, "o200k") || !strcmp(name, "o200k_base"))
		return TOK_PAT_O200K;
	if (!strcmp(name, "qwen2") || !strcmp(name, "qwen3"))
		return TOK_PAT_QWEN2;
	if (!strcmp(name, "gpt2") || !strcmp(name, "r50k_base") || !strcmp(name, "p50k_base") ||
	    !strcmp(name, "r50k") || !strcmp(name, "p50k"))
		return TOK_PAT_GPT2;
	return TOK_PAT_NONE;
}

const char *tok_pat_string(enum tok_pat p)
{
	for (size_t i = 0; i < sizeof(pats) / sizeof(pats[0]); i++)
		if (pats[i].pat == p)
			return pats[i].str;
	return NULL;
}

/* UTF-8 per RFC 3629 / WHATWG: shortest forms, no surrogates, <= U+10FFFF. Returns the length of
 * the longest valid prefix; *sub gets the length of the maximal invalid subpart there (>= 1),
 * or 0 at a valid end. */
size_t tok_utf8_scan(const uint8_t *s, size_t len, size_t i, size_t *sub, bool *trunc)
{
	*trunc = false;
	while (i < len) {
		/* ASCII fast path, 8 bytes at a time */
		while (i + 8 <= len) {
			uint64_t w;
			memcpy(&w, s + i, 8);
			if (w & 0x8080808080808080ull)
				break;
			i += 8;
		}
		if (i >= len)
			break;
		uint8_t b = s[i];
		if (b < 0x80) {
			i++;
			continue;
		}
		size_t need;
		uint8_t lo = 0x80, hi = 0xbf;
		if (b >= 0xc2 && b <= 0xdf) {
			need = 1;
		} else if (b >= 0xe0 && b <= 0xef) {
			need = 2;
			if (b == 0xe0)
				lo = 0xa0;
			else if (b == 0xed)
				hi = 0x9f;
		} else if (b >= 0xf0 && b <= 0xf4) {
			need = 3;
			if (b == 0xf0)
				lo = 0x90;
			else if (b == 0xf4)
				hi = 0x8f;
		} else {
			*sub = 1;
			return i;
		}
		size_t k = 1;
		for (; k <= need; k++) {
			if (i + k >= len || s[i + k] < lo || s[i + k] > hi)
				break;
			lo = 0x80;
			hi = 0xbf;
		}
		if (k <= need) {
			*trunc = i + k >= len;
			*sub = k; /* lead byte plus the continuation bytes that were still valid */
			return i;
		}
		i += need + 1;
	}
	*sub = 0;
	return i;
}

size_t tok_utf8_valid_prefix(const uint8_t *s, size_t len)
{
	size_t sub;
	bool trunc;
	return tok_utf8_scan(s, len, 0, &sub, &trunc);
}

size_t tok_utf8_repair(const uint8_t *s, size_t len, uint8_t *out)
{
	size_t i = 0, o = 0;
	while (i < len) {
		size_t sub;
		bool trunc;
		size_t v = tok_utf8_scan(s, len, i, &sub, &trunc);
		memcpy(out + o, s + i, v - i);
		o += v - i;
		i = v;
		if (sub) {
			out[o++] = 0xef;
			out[o++] = 0xbf;
			out[o++] = 0xbd;
			i += sub;
		}
	}
	return o;
}
