/* SPDX-License-Identifier: Apache-2.0 */
/*
 * tokenizer/tok.h: byte-level BPE tokenization, as GPT-2/cl100k/o200k (tiktoken) and Llama 3 /
 * Qwen2/3 (Hugging Face tokenizer.json) define it: optional NFC normalisation, a pre-tokenizer
 * split pattern (hand-written scanners for the known patterns), BPE merges by rank, added and
 * special tokens. Decode and an incremental detokenizer that never emits a broken UTF-8 sequence.
 *
 * Input text that is not valid UTF-8 is first repaired the way WHATWG (and so node's
 * Buffer.toString) does: each maximal invalid subpart becomes U+FFFD.
 *
 * Ownership: tok_load() creates a struct tok (vocabulary, merges, tables); tok_destroy() frees it.
 *   struct tok_enc (per-thread scratch for encoding) and struct tok_stream (one per request being
 *   streamed) are created against a tok and must be destroyed before it.
 * Threading: a struct tok is immutable after load and shared by all threads. A tok_enc or a
 *   tok_stream is used by one thread at a time. tok_encode()/tok_stream_push() never allocate
 *   unless the input outgrows the scratch sized at create (then they grow it once, amortised).
 * Errors: 0 or a negative errno; loaders fill err with "<file>: <problem>" and log nothing.
 */
#ifndef OFFPATH_TOKENIZER_TOK_H
#define OFFPATH_TOKENIZER_TOK_H

#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <sys/types.h>

#define TOK_ERR_LEN 512

struct tok;
struct tok_enc;
struct tok_stream;

/* Load a tokenizer: a Hugging Face tokenizer.json, a tiktoken rank file (".tiktoken" text:
 * "<base64> <rank>" per line), or the tiktoken npm package's encoder JSON ({"pat_str",
 * "special_tokens", "bpe_ranks"}). The format is detected from the contents. For a rank file
 * without a pattern, the pattern is chosen from the file name (cl100k_base, o200k_base, r50k_base,
 * p50k_base, gpt2). */
int tok_load(struct tok **out, const char *path, char *err, size_t errlen);
void tok_destroy(struct tok *t);

/* Vocabulary size: highest id + 1, special tokens included. */
int tok_vocab_size(const struct tok *t);
/* Id of an added/special token by its exact text ("<|endoftext|>"), or -ENOENT. */
int tok_special_id(const struct tok *t, const char *text);
/* The bytes a token id stands for (special tokens: their text). NULL for an unused id. */
const char *tok_piece(const struct tok *t, int id, size_t *len);

enum tok_flags {
	TOK_SPECIAL = 1u << 0, /* recognise special/added tokens in the text (chat templates) */
};

int tok_enc_create(struct tok_enc **out, const struct tok *t);
void tok_enc_destroy(struct tok_enc *e);

/* Encode len bytes of text. Writes at most cap ids and returns the total number of ids the text
 * encodes to (which may exceed cap: then only the first cap were written), or a negative errno. */
ssize_t tok_encode(struct tok_enc *e, const char *text, size_t len, int32_t *ids, size_t cap,
		   unsigned flags);

/* Decode ids into out (cap bytes). Returns the number of bytes the ids decode to (which may exceed
 * cap), or -EINVAL for an id outside the vocabulary. The bytes are the raw token bytes; they are
 * valid UTF-8 only when the ids are. */
ssize_t tok_decode(const struct tok *t, const int32_t *ids, size_t n, char *out, size_t cap);

/* Incremental detokenizer for streaming: push one id at a time; *text and *len get the bytes that are
 * now complete UTF-8 (possibly none). Bytes that cannot be completed are emitted as U+FFFD once
 * it is certain they never will be, and at tok_stream_finish(). */
int tok_stream_create(struct tok_stream **out, const struct tok *t);
void tok_stream_destroy(struct tok_stream *s);
void tok_stream_reset(struct tok_stream *s);
int tok_stream_push(struct tok_stream *s, int32_t id, const char **text, size_t *len);
int tok_stream_finish(struct tok_stream *s, const char **text, size_t *len);

/* A special token to add when exporting. */
struct tok_added {
	const char *text;
	int id;
};

/* Write t as a Hugging Face tokenizer.json (BPE model with vocab and merges, the byte-level
 * pre-tokenizer with t's split pattern, byte-level decoder, added tokens including `extra`), such
 * that tok_load() of the result and Hugging Face tokenizers both encode exactly as t does.
 * `pattern` overrides the split pattern by name ("llama3", "cl100k", "o200k", "gpt2", "qwen2") or
 * is NULL to keep t's. */
int tok_export_hf(const struct tok *t, FILE *f, const char *pattern, const struct tok_added *extra,
		  int n_extra);

#endif
