/* SPDX-License-Identifier: Apache-2.0 */
/*
 * tokenizer/tok_nfc.c: NFC that runs libutf8proc only on the spans that may change.
 *
 * A code point is "safe" when it is a starter (ccc 0), NFC maps it to itself, it never is the
 * second part of a canonical composition (NFC_Quick_Check = Maybe) and its canonical
 * decomposition does not begin with an unsafe one. Composition and canonical reordering never
 * cross a safe code point: nothing before it can combine with it or be reordered past it, and
 * what follows it composes with it or later starters only. So NFC(text) is the concatenation of
 * NFC over the segments that begin at safe code points, and a segment that is one safe code
 * point is its own NFC. We copy those verbatim and normalise only [previous safe code point,
 * next safe code point) around each unsafe one. (This is UAX #15's quick check, with Maybe
 * widened: unsafe = every code point that appears after the first position of some canonical
 * decomposition, a superset of NFC_QC=Maybe; a wider set only costs time, never exactness.)
 *
 * The table is one bit per code point (136 KB), built once per process from libutf8proc (~10
 * ms), so it matches the library's Unicode version exactly. Code points below U+0300 (UTF-8 lead
 * bytes < 0xCC) are all safe, which lets the scan skip 8 bytes at a time.
 */
#include <errno.h>
#include <pthread.h>
#include <stdlib.h>
#include <string.h>

#include <utf8proc.h>

#include "tok_pvt.h"

#define NFC_NCP 0x110000u

static uint8_t nfc_unsafe[NFC_NCP / 8];
static pthread_once_t nfc_once = PTHREAD_ONCE_INIT;

static inline void set_unsafe(uint32_t c)
{
	nfc_unsafe[c >> 3] |= (uint8_t)(1u << (c & 7));
}

static inline bool is_unsafe(uint32_t c)
{
	return nfc_unsafe[c >> 3] >> (c & 7) & 1;
}

static bool has_decomp(uint32_t c, const utf8proc_property_t *p)
{
	return p->decomp_seqindex != UINT16_MAX || (c >= 0xac00 && c <= 0xd7a3);
}

static void nfc_init(void)
{
	utf8proc_int32_t d[8];
	for (uint32_t c = 0; c < NFC_NCP; c++) {
		if (c >= 0xd800 && c <= 0xdfff)
			continue;
		const utf8proc_property_t *p = utf8proc_get_property((utf8proc_int32_t)c);
		if (p->combining_class)
			set_unsafe(c);
		if (!has_decomp(c, p))
			continue;
		/* canonical decomposition: everything after its first code point may combine */
		utf8proc_ssize_t n = utf8proc_decompose_char((utf8proc_int32_t)c, d, 8,
							     UTF8PROC_DECOMPOSE, NULL);
		if (n < 1 || n > 8) {
			set_unsafe(c);
			continue;
		}
		for (utf8proc_ssize_t k = 1; k < n; k++)
			set_unsafe((uint32_t)d[k]);
		/* NFC of the code point alone: singletons and composition exclusions change */
		n = utf8proc_normalize_utf32(d, n, UTF8PROC_STABLE | UTF8PROC_COMPOSE);
		if (n != 1 || (uint32_t)d[0] != c)
			set_unsafe(c);
	}
	/* a decomposition that starts with an unsafe code point makes the composite unsafe */
	for (uint32_t c = 0x300; c < NFC_NCP; c++) {
		if ((c >= 0xd800 && c <= 0xdfff) || is_unsafe(c))
			continue;
		const utf8proc_property_t *p = utf8proc_get_property((utf8proc_int32_t)c);
		if (!has_decomp(c, p))
			continue;
		utf8proc_ssize_t n =
			utf8proc_decompose_char((utf8proc_int32_t)c, d, 8, UTF8PROC_DECOMPOSE, NULL);
		if (n >= 1 && is_unsafe((uint32_t)d[0]))
			set_unsafe(c);
	}
}

bool tok_nfc_unsafe(uint32_t c)
{
	pthread_once(&nfc_once, nfc_init);
	return c < NFC_NCP && is_unsafe(c);
}

/* Decode one code point of valid UTF-8 at s[i] (s[i] >= 0xc0); returns its length. */
static inline size_t dec_mb(const uint8_t *s, size_t i, uint32_t *cp)
{
	uint32_t b = s[i];
	if (b < 0xe0) {
		*cp = ((b & 0x1f) << 6) | (s[i + 1] & 0x3f);
		return 2;
	}
	if (b < 0xf0) {
		*cp = ((b & 0x0f) << 12) | ((uint32_t)(s[i + 1] & 0x3f) << 6) | (s[i + 2] & 0x3f);
		return 3;
	}
	*cp = ((b & 0x07) << 18) | ((uint32_t)(s[i + 1] & 0x3f) << 12) |
	      ((uint32_t)(s[i + 2] & 0x3f) << 6) | (s[i + 3] & 0x3f);
	return 4;
}

/* Is the code point starting at s[i] unsafe? *len = its length. */
static inline bool unsafe_at(const uint8_t *s, size_t i, size_t *len)
{
	uint32_t cp;
	if (s[i] < 0xcc) {
		*len = s[i] < 0x80 ? 1 : 2;
		return false;
	}
	*len = dec_mb(s, i, &cp);
	return is_unsafe(cp);
}

/* First unsafe code point at or after i (a code point boundary), or n. */
static size_t find_unsafe(const uint8_t *s, size_t n, size_t i)
{
	for (;;) {
		/* 8 bytes at a time while none is >= 0xcc: (b & 0x7f) + 0x34 >= 0x80 iff
		 * (b & 0x7f) >= 0x4c; with the high bit of b that is b >= 0xcc. A skipped block
		 * may end inside a 2-byte sequence: its continuation byte (< 0xc0) is skipped
		 * below as if it were a code point, harmless because it is safe either way. */
		while (i + 8 <= n) {
			uint64_t w;
			memcpy(&w, s + i, 8);
			if ((((w & 0x7f7f7f7f7f7f7f7full) + 0x3434343434343434ull) & w &
			     0x8080808080808080ull))
				break;
			i += 8;
		}
		for (;;) {
			if (i >= n)
				return n;
			if (s[i] >= 0xcc) {
				size_t l;
				if (unsafe_at(s, i, &l))
					return i;
				i += l;
				break;
			}
			i++;
		}
	}
}

/* Full libutf8proc NFC of s[0..n) appended to e->nfc at *o. */
static int nfc_span(struct tok_enc *e, const uint8_t *s, size_t n, size_t *o)
{
	for (;;) {
		utf8proc_ssize_t r = utf8proc_decompose(s, (utf8proc_ssize_t)n, e->u32,
							(utf8proc_ssize_t)e->u32_cap,
							UTF8PROC_STABLE | UTF8PROC_COMPOSE);
		if (r < 0)
			return -EINVAL;
		if ((size_t)r > e->u32_cap) {
			size_t c = e->u32_cap ? e->u32_cap : 1024;
			while (c < (size_t)r)
				c *= 2;
			int32_t *u = realloc(e->u32, c * sizeof(*u));
			if (!u)
				return -ENOMEM;
			e->u32 = u;
			e->u32_cap = c;
			continue;
		}
		r = utf8proc_normalize_utf32(e->u32, r, UTF8PROC_STABLE | UTF8PROC_COMPOSE);
		if (r < 0)
			return -EINVAL;
		int rc = tok_grow_bytes(&e->nfc, &e->nfc_cap, *o + (size_t)r * 4 + 1);
		if (rc)
			return rc;
		for (utf8proc_ssize_t j = 0; j < r; j++)
			*o += (size_t)utf8proc_encode_char(e->u32[j], (uint8_t *)e->nfc + *o);
		return 0;
	}
}

int tok_nfc(struct tok_enc *e, const uint8_t *s, size_t n, const uint8_t **out, size_t *olen)
{
	pthread_once(&nfc_once, nfc_init);
	size_t u = find_unsafe(s, n, 0);
	if (tok_likely(u == n)) {
		*out = s;
		*olen = n;
		return 0;
	}
	size_t o = 0, done = 0; /* bytes written to e->nfc; input consumed up to done */
	while (u < n) {
		/* back to the last safe code point after done: the segment start */
		size_t a = u;
		while (a > done) {
			size_t p = a - 1, l;
			while (p > done && (s[p] & 0xc0) == 0x80)
				p--;
			if (!unsafe_at(s, p, &l)) {
				a = p;
				break;
			}
			a = p;
		}
		/* forward to the next safe code point: the end of the span */
		size_t l, v = u;
		unsafe_at(s, v, &l);
		v += l;
		while (v < n && unsafe_at(s, v, &l))
			v += l;
		int rc = tok_grow_bytes(&e->nfc, &e->nfc_cap, o + (a - done) + 1);
		if (rc)
			return rc;
		memcpy(e->nfc + o, s + done, a - done);
		o += a - done;
		rc = nfc_span(e, s + a, v - a, &o);
		if (rc)
			return rc;
		done = v;
		u = find_unsafe(s, n, v);
	}
	int rc = tok_grow_bytes(&e->nfc, &e->nfc_cap, o + (n - done) + 1);
	if (rc)
		return rc;
	memcpy(e->nfc + o, s + done, n - done);
	*out = (const uint8_t *)e->nfc;
	*olen = o + n - done;
	return 0;
}
