/* SPDX-License-Identifier: Apache-2.0 */
/*
 * daemon/sse.h: the streaming half of the OpenAI-compatible API. Formats Server-Sent Events for
 * POST /v1/completions and /v1/chat/completions with "stream": true: one `data: {...}\n\n` event per
 * piece of text (chat: the first one carries delta.role), a final event with finish_reason, an
 * optional usage event (stream_options.include_usage), then `data: [DONE]\n\n`. Also the JSON string
 * escaper every formatter here uses.
 *
 * Everything writes into a caller-provided buffer and never allocates: these run once per token on
 * the egress thread. Each writer returns the number of bytes the event needs (like snprintf); when
 * that is more than cap, the contents of out are unspecified and the caller retries with a larger
 * buffer (size it at request start: SSE_CHUNK_OVERHEAD + 6 * text bytes + the logprobs' share).
 *
 * Ownership: struct sse_stream is plain memory owned by the caller (one per streamed request); it
 *   copies the id and model name, so it holds no pointers.
 * Threading: no global state; a struct sse_stream is used by one thread at a time.
 */
#ifndef OFFPATH_DAEMON_SSE_H
#define OFFPATH_DAEMON_SSE_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "api.h"

/* Bytes of an event besides its escaped text and logprobs: id, model, object, framing. */
#define SSE_CHUNK_OVERHEAD (512 + API_MODEL_MAX * 6)

struct sse_stream {
	enum api_endpoint endpoint;
	char id[API_ID_LEN];
	char model[API_MODEL_MAX];
	int64_t created; /* unix seconds */
	bool include_usage;
	bool role_sent; /* chat: the first event, carrying delta.role, has been written */
	bool finished;
	uint64_t text_offset; /* completions logprobs: code points of text sent so far (echo included) */
};

/* Prepare st for one request. model is copied (truncated to API_MODEL_MAX - 1 bytes). */
void sse_init(struct sse_stream *st, enum api_endpoint ep, const char *id, const char *model,
	      int64_t created, bool include_usage);

/* Chat only: the opening event with delta {"role":"assistant","content":""}. Optional: the first
 * sse_write_text() carries the role itself when this was not sent. Completions: writes nothing. */
size_t sse_write_role(struct sse_stream *st, char *out, size_t cap);

/* One event with `len` bytes of text (UTF-8; invalid sequences become U+FFFD) and the logprobs of
 * the n_lp tokens that produced it (lp may be NULL when logprobs were not requested; for chat,
 * n_lp == 0 with lp != NULL writes "logprobs":{"content":[]}). */
size_t sse_write_text(struct sse_stream *st, char *out, size_t cap, const char *text, size_t len,
		      const struct api_logprob *lp, size_t n_lp);

/* The end of the stream: the event with finish_reason, then (include_usage) the usage event with
 * "choices":[], then `data: [DONE]`. */
size_t sse_write_finish(struct sse_stream *st, char *out, size_t cap, enum api_finish finish,
			const struct api_usage *usage);

/* An error after the stream started (headers already sent): `data: {"error":{...}}\n\n` then
 * `data: [DONE]\n\n`. */
size_t sse_write_error(struct sse_stream *st, char *out, size_t cap, const struct api_error *err);

/*
 * JSON string contents for s[0..len) (no surrounding quotes), escaped as Python's
 * json.dumps(ensure_ascii=False) does: \" \\ \n \r \t \b \f, other bytes below 0x20 as \u00xx,
 * everything else verbatim; invalid UTF-8 becomes U+FFFD (one per maximal invalid subpart, as
 * WHATWG decoders do). Returns the bytes needed; writes at most cap.
 */
size_t sse_json_escape(char *out, size_t cap, const char *s, size_t len);

/* Number of code points in valid UTF-8 s[0..len) (count of non-continuation bytes). */
size_t sse_utf8_count(const char *s, size_t len);

#endif /* OFFPATH_DAEMON_SSE_H */
