/* SPDX-License-Identifier: Apache-2.0 */
/*
 * daemon/api.h: the OpenAI-compatible request/response layer, as pure functions (no sockets).
 * Parses and validates the JSON bodies of POST /v1/completions and POST /v1/chat/completions into
 * a struct api_request, builds OpenAI-style error bodies with their HTTP status, and formats the
 * non-streaming responses (streaming: sse.h). vLLM's extensions are accepted where they make sense
 * (top_k, min_tokens, stop_token_ids, ignore_eos, skip_special_tokens, chat_template_kwargs).
 * docs/api.md lists every field, its range, and the error each invalid value gives.
 *
 * Ownership: api_parse() fills a caller-owned struct api_request and allocates what it points to
 *   (the parsed JSON, the token-id arrays, the chat messages); api_request_free() releases it.
 *   Parsing happens once per request at ingest; the per-token path (sse.h, stop.h) never allocates.
 * Threading: no global state; every function may be called from any thread. A request is used by
 *   one thread at a time.
 * Errors: api_parse() returns 0, or a negative errno with *err filled (status, message, param,
 *   code); api_error_json() renders that as the response body.
 */
#ifndef OFFPATH_DAEMON_API_H
#define OFFPATH_DAEMON_API_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <sys/types.h>

#include "chat.h"

#define API_MAX_STOP      4   /* OpenAI's limit on "stop" strings */
#define API_STOP_MAX_LEN  256 /* bytes per stop string (ours; stop.h holds this much back) */
#define API_MAX_STOP_IDS  64  /* "stop_token_ids" entries */
#define API_MAX_LOGPROBS  20  /* completions "logprobs" and chat "top_logprobs" upper bound */
#define API_MAX_MESSAGES  1024
#define API_ID_LEN        48  /* "chatcmpl-" + 32 hex + NUL fits */
#define API_MODEL_MAX     256 /* bytes of a model name we echo back */

enum api_endpoint {
	API_COMPLETIONS = 0, /* POST /v1/completions */
	API_CHAT = 1,        /* POST /v1/chat/completions */
};

enum api_prompt_kind {
	API_PROMPT_TEXT = 0, /* completions: prompt text */
	API_PROMPT_IDS = 1,  /* completions: prompt as token ids */
	API_PROMPT_CHAT = 2, /* chat: messages, rendered with chat.h */
};

enum api_finish {
	API_FINISH_STOP = 0,   /* EOS, a stop string or a stop token id */
	API_FINISH_LENGTH = 1, /* max_tokens or the context ran out */
	API_FINISH_ABORT = 2,  /* cancelled (client gone, shutdown); reported as "abort" like vLLM */
};

struct api_error {
	int status;          /* HTTP status: 400, 404, 413, 429, 500, 503 */
	const char *type;    /* "invalid_request_error", "not_found_error", "server_error", ... */
	const char *code;    /* OpenAI's machine code ("model_not_found") or NULL (JSON null) */
	char param[64];      /* the offending field ("messages[2].content") or "" (JSON null) */
	char message[512];
};

/* What the daemon serves; api_parse() checks requests against it. */
struct api_config {
	const char *const *model_names; /* accepted "model" values; [0] is echoed when absent */
	int n_model_names;
	int vocab_size;    /* token ids must be in [0, vocab_size) */
	int max_model_len; /* context length in tokens */
};

struct api_request {
	enum api_endpoint endpoint;
	enum api_prompt_kind prompt_kind;
	const char *model; /* the served name that matched (or model_names[0]) */

	const char *prompt; /* API_PROMPT_TEXT: UTF-8, prompt_len bytes, NUL-terminated */
	size_t prompt_len;
	int32_t *prompt_ids; /* API_PROMPT_IDS */
	size_t n_prompt_ids;
	struct chat_msg *messages; /* API_PROMPT_CHAT */
	size_t n_messages;
	int enable_thinking; /* chat_template_kwargs.enable_thinking: -1 absent, 0 false, 1 true */

	int max_tokens; /* -1: not given (chat: fill the context; completions: 16, as OpenAI) */
	int min_tokens; /* vLLM: EOS/stop ids ignored before this many tokens; 0 default */
	float temperature; /* [0, 2], default 1; 0 is greedy */
	float top_p;       /* (0, 1], default 1 */
	int top_k;         /* -1 off (0 is accepted as off too), else >= 1 */
	bool has_seed;
	uint64_t seed; /* the JSON integer, two's complement when negative */

	int n_stop;
	const char *stop[API_MAX_STOP]; /* NUL-terminated, non-empty, <= API_STOP_MAX_LEN bytes */
	size_t stop_len[API_MAX_STOP];
	int n_stop_ids;
	int32_t stop_ids[API_MAX_STOP_IDS];

	bool stream;
	bool include_usage; /* stream_options.include_usage */
	bool echo;          /* completions: the prompt text is prepended to the output */
	bool ignore_eos;
	bool skip_special_tokens; /* default true */
	/* Logprobs: -1 none. Completions: "logprobs": N in 0..20 -> N top alternatives per token.
	 * Chat: "logprobs": true -> top_logprobs (0..20). */
	int logprobs;

	void *priv_; /* private: the parsed body (json_t *) that the strings above point into */
};

/* Parse and validate a request body of `len` bytes for endpoint ep. On success fills *req (free it
 * with api_request_free). On failure returns -EINVAL (400: bad JSON, bad UTF-8, a bad field),
 * -ENOENT (404: unknown model), -ENOTSUP (400: a feature we do not implement, e.g. n > 1) or
 * -ENOMEM (500), and fills *err; *req then needs no free (api_request_free is still safe). */
int api_parse(struct api_request *req, enum api_endpoint ep, const char *body, size_t len,
	      const struct api_config *cfg, struct api_error *err);
void api_request_free(struct api_request *req);

/*
 * The length check, once the prompt is tokenized. Returns the number of tokens to generate at most
 * (max_tokens, or the rest of the context when max_tokens was not given for chat), or -E2BIG with
 * *err set to the context-length error (400, code "context_length_exceeded", param "messages" or
 * "prompt"/"max_tokens") when prompt + max_tokens does not fit in max_model_len.
 */
int api_check_length(const struct api_request *req, const struct api_config *cfg,
		     int n_prompt_tokens, struct api_error *err);

/* Fill *err (printf-style message; param may be NULL). Returns -EINVAL for convenience. */
int api_error_set(struct api_error *err, int status, const char *param, const char *code,
		  const char *fmt, ...) __attribute__((format(printf, 5, 6)));

/* {"error":{"message":...,"type":...,"param":...,"code":...}} into out. Returns the bytes needed
 * (without NUL); writes at most cap (NUL-terminated when it fits). */
size_t api_error_json(const struct api_error *err, char *out, size_t cap);

/* "cmpl-" or "chatcmpl-" followed by 32 hex digits of (hi, lo): ids are unique when the caller's
 * (hi, lo) are, e.g. (boot random, request counter). */
void api_make_id(char out[API_ID_LEN], enum api_endpoint ep, uint64_t hi, uint64_t lo);

/* One alternative in a token's top_logprobs. */
struct api_top {
	const char *token; /* the token's bytes (need not be valid UTF-8) */
	size_t len;
	float logprob;
};

/* One token's logprob record. logprob is NaN for "null" (the first prompt token under echo);
 * -inf and anything below -9999 are written as -9999.0, as vLLM does. */
struct api_logprob {
	const char *token;
	size_t len;
	float logprob;
	const struct api_top *top; /* n_top alternatives, or NULL for "null" */
	int n_top;
};

struct api_usage {
	int prompt_tokens;
	int completion_tokens;
};

/* The outcome of one finished request, for the non-streaming response. */
struct api_result {
	const char *id;
	int64_t created; /* unix seconds */
	const char *model;
	const char *text; /* generated text (already cut at a stop string) */
	size_t text_len;
	enum api_finish finish;
	struct api_usage usage;
	const struct api_logprob *lp; /* per generated token, or NULL when logprobs were off */
	size_t n_lp;
	/* completions with echo: the prompt text is prepended; prompt_lp (NULL or n_prompt_lp
	 * records, the first with a NaN logprob and top == NULL) precede lp in the logprobs. */
	const char *prompt_text;
	size_t prompt_text_len;
	const struct api_logprob *prompt_lp;
	size_t n_prompt_lp;
};

/* "stop", "length" or "abort". */
const char *api_finish_str(enum api_finish f);

/* Non-streaming response body for req's endpoint ("text_completion" or "chat.completion"), built
 * with jansson once per request. Returns a malloc'd NUL-terminated string (free() it) or NULL on
 * allocation failure; *len gets its length. */
char *api_format_response(const struct api_request *req, const struct api_result *res,
			  size_t *len);

/* GET /v1/models: {"object":"list","data":[{"id":name,"object":"model","created":...,
 * "owned_by":"offpath","max_model_len":N}, ...]}. malloc'd, as above. */
char *api_format_models(const struct api_config *cfg, int64_t created, size_t *len);

#endif /* OFFPATH_DAEMON_API_H */
