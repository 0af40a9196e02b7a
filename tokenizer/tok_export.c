/* SPDX-License-Identifier: Apache-2.0 */
/*
 * tokenizer/tok_export.c: write a loaded tokenizer as a Hugging Face tokenizer.json.
 *
 * Rank files export their derived merges in rank order with ignore_merges: true, which is exactly
 * tiktoken's rule (whole piece first, then the lowest-rank merge): a token T of rank r is only
 * ever made from the two parts that BPE of T's bytes with ranks < r leaves (tok_pvt.h).
 */
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "tok_pvt.h"

static void put_json_str(FILE *f, const char *s, size_t n)
{
	fputc('"', f);
	for (size_t i = 0; i < n; i++) {
		unsigned char c = (unsigned char)s[i];
		if (c == '"' || c == '\\')
			fprintf(f, "\\%c", c);
		else if (c < 0x20 || c == 0x7f)
			fprintf(f, "\\u%04x", c);
		else
			fputc(c, f);
	}
	fputc('"', f);
}

/* bytes -> GPT-2 byte-level text (UTF-8, at most 2 bytes per input byte) */
static size_t bytelevel_encode(const uint8_t *p, size_t n, char *out)
{
	static uint16_t b2u[256];
	static int init;
	if (!init) {
		int k = 0;
		for (int b = 0; b < 256; b++) {
			bool keep = (b >= 33 && b <= 126) || (b >= 161 && b <= 172) || (b >= 174);
			b2u[b] = (uint16_t)(keep ? b : 256 + k++);
		}
		init = 1;
	}
	size_t o = 0;
	for (size_t i = 0; i < n; i++) {
		uint16_t c = b2u[p[i]];
		if (c < 0x80) {
			out[o++] = (char)c;
		} else {
			out[o++] = (char)(0xc0 | (c >> 6));
			out[o++] = (char)(0x80 | (c & 0x3f));
		}
	}
	return o;
}

static bool in_bpe(const struct tok *t, int id)
{
	return t->kind[id] == TOK_KIND_NORMAL &&
	       tok_lookup_bytes(t, t->arena + t->off[id], t->len[id]) == id;
}

static void put_token(FILE *f, const struct tok *t, int id, char *buf)
{
	if (in_bpe(t, id))
		put_json_str(f, buf, bytelevel_encode((const uint8_t *)t->arena + t->off[id],
						      t->len[id], buf));
	else
		put_json_str(f, t->arena + t->off[id], t->len[id]);
}

static void put_added(FILE *f, bool *first, int id, const char *text, size_t len, bool special)
{
	fprintf(f, "%s\n    {\"id\": %d, \"content\": ", *first ? "" : ",", id);
	put_json_str(f, text, len);
	fprintf(f, ", \"single_word\": false, \"lstrip\": false, \"rstrip\": false, "
		   "\"normalized\": false, \"special\": %s}",
		special ? "true" : "false");
	*first = false;
}

int tok_export_hf(const struct tok *t, FILE *f, const char *pattern, const struct tok_added *extra,
		  int n_extra)
{
	enum tok_pat pat = t->pat;
	if (pattern) {
		pat = tok_pat_from_name(pattern);
		if (pat == TOK_PAT_NONE)
			return -EINVAL;
	}
	for (int i = 0; i < n_extra; i++) {
		if (!extra[i].text || extra[i].id < 0)
			return -EINVAL;
		if ((extra[i].id < t->n_vocab && t->kind[extra[i].id] != TOK_KIND_UNUSED) ||
		    tok_special_id(t, extra[i].text) >= 0)
			return -EEXIST;
		for (int j = 0; j < i; j++)
			if (extra[j].id == extra[i].id || !strcmp(extra[j].text, extra[i].text))
				return -EEXIST;
	}
	char *buf = malloc(2 * (size_t)t->max_len + 2);
	if (!buf)
		return -ENOMEM;

	fputs("{\n  \"version\": \"1.0\",\n  \"truncation\": null,\n  \"padding\": null,\n"
	      "  \"added_tokens\": [",
	      f);
	bool first = true;
	for (int i = 0; i < t->n_added; i++)
		put_added(f, &first, t->added[i].id, t->added[i].text, t->added[i].len,
			  t->added[i].special);
	for (int i = 0; i < n_extra; i++)
		put_added(f, &first, extra[i].id, extra[i].text, strlen(extra[i].text), true);
	fputs("\n  ],\n", f);
	fprintf(f, "  \"normalizer\": %s,\n", t->nfc ? "{\"type\": \"NFC\"}" : "null");
	if (pat == TOK_PAT_NONE || (t->add_prefix_space && pat == TOK_PAT_GPT2)) {
		fprintf(f,
			"  \"pre_tokenizer\": {\"type\": \"ByteLevel\", \"add_prefix_space\": %s, "
			"\"trim_offsets\": true, \"use_regex\": %s},\n",
			t->add_prefix_space ? "true" : "false", pat == TOK_PAT_NONE ? "false" : "true");
	} else {
		fputs("  \"pre_tokenizer\": {\"type\": \"Sequence\", \"pretokenizers\": [\n"
		      "    {\"type\": \"Split\", \"pattern\": {\"Regex\": ",
		      f);
		const char *ps = tok_pat_string(pat);
		put_json_str(f, ps, strlen(ps));
		fputs("}, \"behavior\": \"Isolated\", \"invert\": false},\n"
		      "    {\"type\": \"ByteLevel\", \"add_prefix_space\": false, \"trim_offsets\": "
		      "true, \"use_regex\": false}]},\n",
		      f);
	}
	fputs("  \"post_processor\": null,\n"
	      "  \"decoder\": {\"type\": \"ByteLevel\", \"add_prefix_space\": true, "
	      "\"trim_offsets\": true, \"use_regex\": true},\n",
	      f);
	fprintf(f,
		"  \"model\": {\n    \"type\": \"BPE\", \"dropout\": null, \"unk_token\": null, "
		"\"continuing_subword_prefix\": null, \"end_of_word_suffix\": null, "
		"\"fuse_unk\": false, \"byte_fallback\": false, \"ignore_merges\": %s,\n"
		"    \"vocab\": {",
		t->whole_first ? "true" : "false");
	first = true;
	for (int id = 0; id < t->n_vocab; id++) {
		if (t->kind[id] != TOK_KIND_NORMAL)
			continue;
		fputs(first ? "\n      " : ",\n      ", f);
		put_token(f, t, id, buf);
		fprintf(f, ": %d", id);
		first = false;
	}
	fputs("\n    },\n    \"merges\": [", f);
	for (int i = 0; i < t->n_merges; i++) {
		fputs(i ? ",\n      [" : "\n      [", f);
		put_token(f, t, t->merges[i][0], buf);
		fputs(", ", f);
		put_token(f, t, t->merges[i][1], buf);
		fputc(']', f);
	}
	fputs("\n    ]\n  }\n}\n", f);
	free(buf);
	return ferror(f) ? -EIO : 0;
}
