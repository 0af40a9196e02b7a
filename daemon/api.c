/* SPDX-License-Identifier: Apache-2.0 */
/* daemon/api.c: request parsing/validation, errors, non-streaming responses; see api.h. */
#include "api.h"

#include <errno.h>
#include <inttypes.h>
#include <jansson.h>
#include <math.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "api_pvt.h"
#include "sse.h"

/* ---------------------------------------------------------------- errors */

static const char *type_for_status(int status)
{
	switch (status) {
	case 400:
	case 404:
	case 413:
		return "invalid_request_error";
	case 429:
		return "rate_limit_error";
	case 503:
		return "service_unavailable_error";
	default:
		return status >= 500 ? "server_error" : "invalid_request_error";
	}
}

int api_error_set(struct api_error *err, int status, const char *param, const char *code,
		  const char *fmt, ...)
{
	va_list ap;

	if (!err)
		return -EINVAL;
	err->status = status;
	err->type = type_for_status(status);
	err->code = code;
	snprintf(err->param, sizeof(err->param), "%s", param ? param : "");
	va_start(ap, fmt);
	vsnprintf(err->message, sizeof(err->message), fmt, ap);
	va_end(ap);
	return -EINVAL;
}

void api_w_error(struct api_wbuf *w, const struct api_error *err)
{
	api_w_str(w, "{\"error\":{\"message\":\"");
	api_w_esc(w, err->message, strlen(err->message));
	api_w_str(w, "\",\"type\":\"");
	api_w_str(w, err->type ? err->type : type_for_status(err->status));
	api_w_str(w, "\",\"param\":");
	if (err->param[0]) {
		api_w_ch(w, '"');
		api_w_esc(w, err->param, strlen(err->param));
		api_w_ch(w, '"');
	} else {
		api_w_str(w, "null");
	}
	api_w_str(w, ",\"code\":");
	if (err->code) {
		api_w_ch(w, '"');
		api_w_esc(w, err->code, strlen(err->code));
		api_w_ch(w, '"');
	} else {
		api_w_str(w, "null");
	}
	api_w_str(w, "}}");
}

size_t api_error_json(const struct api_error *err, char *out, size_t cap)
{
	struct api_wbuf w = {out, cap, 0};

	api_w_error(&w, err);
	return api_w_end(&w);
}

const char *api_finish_str(enum api_finish f)
{
	switch (f) {
	case API_FINISH_STOP:
		return "stop";
	case API_FINISH_LENGTH:
		return "length";
	default:
		return "abort";
	}
}

void api_make_id(char out[API_ID_LEN], enum api_endpoint ep, uint64_t hi, uint64_t lo)
{
	snprintf(out, API_ID_LEN, "%s%016" PRIx64 "%016" PRIx64,
		 ep == API_CHAT ? "chatcmpl-" : "cmpl-", hi, lo);
}

/* ---------------------------------------------------------------- field readers */

/* A field that is absent or JSON null reads as absent (OpenAI's optional fields). */
static json_t *field(json_t *obj, const char *key)
{
	json_t *v = json_object_get(obj, key);

	return json_is_null(v) ? NULL : v;
}

static const char *json_kind(const json_t *v)
{
	switch (json_typeof(v)) {
	case JSON_OBJECT:
		return "an object";
	case JSON_ARRAY:
		return "an array";
	case JSON_STRING:
		return "a string";
	case JSON_INTEGER:
		return "an integer";
	case JSON_REAL:
		return "a number";
	case JSON_TRUE:
	case JSON_FALSE:
		return "a boolean";
	default:
		return "null";
	}
}

static int type_error(struct api_error *err, const char *param, const char *want, const json_t *v)
{
	api_error_set(err, 400, param, "invalid_type",
		      "Invalid type for '%s': expected %s, but got %s instead.", param, want,
		      json_kind(v));
	return -EINVAL;
}

/* Integer field: a JSON integer, or a number with an integral value (as pydantic accepts).
 * Returns 1 present, 0 absent, -EINVAL. */
static int get_int(json_t *obj, const char *key, int64_t *out, struct api_error *err)
{
	json_t *v = field(obj, key);

	if (!v)
		return 0;
	if (json_is_integer(v)) {
		*out = json_integer_value(v);
		return 1;
	}
	if (json_is_real(v)) {
		double d = json_real_value(v);

		if (d == floor(d) && fabs(d) < 9.0e15) {
			*out = (int64_t)d;
			return 1;
		}
	}
	return type_error(err, key, "an integer", v);
}

static int get_num(json_t *obj, const char *key, double *out, struct api_error *err)
{
	json_t *v = field(obj, key);

	if (!v)
		return 0;
	if (!json_is_number(v))
		return type_error(err, key, "a number", v);
	*out = json_number_value(v);
	return 1;
}

static int get_bool(json_t *obj, const char *key, bool *out, struct api_error *err)
{
	json_t *v = field(obj, key);

	if (!v)
		return 0;
	if (!json_is_boolean(v))
		return type_error(err, key, "a boolean", v);
	*out = json_is_true(v);
	return 1;
}

static int unsupported(struct api_error *err, const char *param, const char *msg)
{
	api_error_set(err, 400, param, "unsupported_value", "%s", msg);
	return -ENOTSUP;
}

/* ---------------------------------------------------------------- prompt and messages */

static int read_ids(json_t *arr, const char *param, const struct api_config *cfg,
		    struct api_request *req, struct api_error *err)
{
	size_t i, n = json_array_size(arr);

	if (n == 0)
		return api_error_set(err, 400, param, NULL, "'%s' must not be empty.", param);
	req->prompt_ids = malloc(n * sizeof(*req->prompt_ids));
	if (!req->prompt_ids) {
		api_error_set(err, 500, NULL, NULL, "out of memory");
		return -ENOMEM;
	}
	for (i = 0; i < n; i++) {
		json_t *v = json_array_get(arr, i);
		json_int_t id;

		if (!json_is_integer(v))
			return api_error_set(err, 400, param, "invalid_type",
					     "'%s' mixes token ids with %s; a prompt is a string, "
					     "a list of token ids, or a list of one of those.",
					     param, json_kind(v));
		id = json_integer_value(v);
		if (id < 0 || id >= cfg->vocab_size)
			return api_error_set(err, 400, param, "invalid_value",
					     "Token id %" PRId64 " in '%s' is out of vocabulary "
					     "range [0, %d).",
					     (int64_t)id, param, cfg->vocab_size);
		req->prompt_ids[i] = (int32_t)id;
	}
	req->n_prompt_ids = n;
	req->prompt_kind = API_PROMPT_IDS;
	return 0;
}

static int parse_prompt(json_t *root, const struct api_config *cfg, struct api_request *req,
			struct api_error *err)
{
	json_t *p = field(root, "prompt"), *first;

	if (!p)
		return api_error_set(err, 400, "prompt", "missing_required_parameter",
				     "Missing required parameter: 'prompt'.");
	if (json_is_string(p)) {
		req->prompt = json_string_value(p);
		req->prompt_len = json_string_length(p);
		req->prompt_kind = API_PROMPT_TEXT;
		if (req->prompt_len == 0)
			return api_error_set(err, 400, "prompt", "invalid_value",
					     "'prompt' must not be empty.");
		return 0;
	}
	if (!json_is_array(p))
		return type_error(err, "prompt", "a string or an array", p);
	if (json_array_size(p) == 0)
		return api_error_set(err, 400, "prompt", "invalid_value",
				     "'prompt' must not be empty.");
	first = json_array_get(p, 0);
	if (json_is_integer(first))
		return read_ids(p, "prompt", cfg, req, err);
	if (json_is_string(first) || json_is_array(first)) {
		if (json_array_size(p) != 1)
			return unsupported(err, "prompt",
					   "Batched prompts are not supported: send one prompt per "
					   "request (a string, or a list of token ids).");
		if (json_is_array(first))
			return read_ids(first, "prompt", cfg, req, err);
		req->prompt = json_string_value(first);
		req->prompt_len = json_string_length(first);
		req->prompt_kind = API_PROMPT_TEXT;
		if (req->prompt_len == 0)
			return api_error_set(err, 400, "prompt", "invalid_value",
					     "'prompt' must not be empty.");
		return 0;
	}
	return type_error(err, "prompt", "a string, a list of token ids or a list of one of those",
			  first);
}

static int role_of(const char *s, enum chat_role *r)
{
	static const struct {
		const char *name;
		enum chat_role role;
	} roles[] = {
		{"system", CHAT_SYSTEM},
		{"user", CHAT_USER},
		{"assistant", CHAT_ASSISTANT},
		{"tool", CHAT_TOOL},
	};
	size_t i;

	for (i = 0; i < sizeof(roles) / sizeof(roles[0]); i++) {
		if (strcmp(s, roles[i].name) == 0) {
			*r = roles[i].role;
			return 0;
		}
	}
	return -EINVAL;
}

/* content: a string, or a list of {"type":"text","text":...} parts joined with "\n" (as vLLM
 * joins them for string-content templates). The joined string replaces the list in the JSON tree,
 * so it is freed with it. */
static int parse_content(json_t *msg, size_t i, enum chat_role role, struct chat_msg *out,
			 struct api_error *err)
{
	char param[64];
	json_t *c = json_object_get(msg, "content");
	size_t j, n, total = 0, off = 0;
	char *buf;
	json_t *s;

	snprintf(param, sizeof(param), "messages[%zu].content", i);
	if (!c || json_is_null(c)) {
		if (role == CHAT_ASSISTANT) { /* an assistant turn may carry only tool_calls */
			out->content = "";
			out->len = 0;
			return 0;
		}
		return api_error_set(err, 400, param, "missing_required_parameter",
				     "Missing required parameter: '%s'.", param);
	}
	if (json_is_string(c)) {
		out->content = json_string_value(c);
		out->len = json_string_length(c);
		return 0;
	}
	if (!json_is_array(c))
		return type_error(err, param, "a string or an array of content parts", c);
	n = json_array_size(c);
	for (j = 0; j < n; j++) {
		json_t *part = json_array_get(c, j), *type, *text;
		char pp[96];

		snprintf(pp, sizeof(pp), "%s[%zu]", param, j);
		if (!json_is_object(part))
			return type_error(err, pp, "an object", part);
		type = json_object_get(part, "type");
		if (!json_is_string(type))
			return api_error_set(err, 400, pp, "missing_required_parameter",
					     "Missing required parameter: '%s.type'.", pp);
		if (strcmp(json_string_value(type), "text") != 0) {
			char m[160];

			snprintf(m, sizeof(m), "Content parts of type '%.40s' are not supported: "
				 "only 'text'.", json_string_value(type));
			return unsupported(err, pp, m);
		}
		text = json_object_get(part, "text");
		if (!json_is_string(text))
			return api_error_set(err, 400, pp, "invalid_type",
					     "'%s.text' must be a string.", pp);
		total += json_string_length(text) + (j ? 1 : 0);
	}
	buf = malloc(total + 1);
	if (!buf) {
		api_error_set(err, 500, NULL, NULL, "out of memory");
		return -ENOMEM;
	}
	for (j = 0; j < n; j++) {
		json_t *text = json_object_get(json_array_get(c, j), "text");

		if (j)
			buf[off++] = '\n';
		memcpy(buf + off, json_string_value(text), json_string_length(text));
		off += json_string_length(text);
	}
	buf[off] = '\0';
	s = json_stringn_nocheck(buf, off);
	free(buf);
	if (!s || json_object_set_new(msg, "content", s) != 0) {
		api_error_set(err, 500, NULL, NULL, "out of memory");
		return -ENOMEM;
	}
	c = json_object_get(msg, "content");
	out->content = json_string_value(c);
	out->len = json_string_length(c);
	return 0;
}

static int parse_messages(json_t *root, struct api_request *req, struct api_error *err)
{
	json_t *ms = field(root, "messages");
	size_t i, n;

	if (!ms)
		return api_error_set(err, 400, "messages", "missing_required_parameter",
				     "Missing required parameter: 'messages'.");
	if (!json_is_array(ms))
		return type_error(err, "messages", "an array", ms);
	n = json_array_size(ms);
	if (n == 0)
		return api_error_set(err, 400, "messages", "invalid_value",
				     "'messages' must contain at least one message.");
	if (n > API_MAX_MESSAGES)
		return api_error_set(err, 400, "messages", "invalid_value",
				     "'messages' has %zu messages; at most %d are accepted.", n,
				     API_MAX_MESSAGES);
	req->messages = calloc(n, sizeof(*req->messages));
	if (!req->messages) {
		api_error_set(err, 500, NULL, NULL, "out of memory");
		return -ENOMEM;
	}
	req->prompt_kind = API_PROMPT_CHAT;
	for (i = 0; i < n; i++) {
		json_t *m = json_array_get(ms, i), *role, *tc;
		char param[64];
		int rc;

		snprintf(param, sizeof(param), "messages[%zu]", i);
		if (!json_is_object(m))
			return type_error(err, param, "an object", m);
		snprintf(param, sizeof(param), "messages[%zu].role", i);
		role = json_object_get(m, "role");
		if (!role || json_is_null(role))
			return api_error_set(err, 400, param, "missing_required_parameter",
					     "Missing required parameter: '%s'.", param);
		if (!json_is_string(role))
			return type_error(err, param, "a string", role);
		if (role_of(json_string_value(role), &req->messages[i].role) != 0) {
			char msg[200];

			snprintf(msg, sizeof(msg), "Unsupported role '%.60s': roles are 'system', "
				 "'user', 'assistant' and 'tool'.", json_string_value(role));
			api_error_set(err, 400, param, "invalid_value", "%s", msg);
			return -EINVAL;
		}
		tc = json_object_get(m, "tool_calls");
		if (json_array_size(tc) > 0) {
			snprintf(param, sizeof(param), "messages[%zu].tool_calls", i);
			return unsupported(err, param, "Tool calls are not supported.");
		}
		rc = parse_content(m, i, req->messages[i].role, &req->messages[i], err);
		if (rc)
			return rc;
		req->n_messages = i + 1;
	}
	return 0;
}

/* ---------------------------------------------------------------- sampling fields */

static int parse_stop(json_t *root, struct api_request *req, struct api_error *err)
{
	json_t *s = field(root, "stop"), *ids = field(root, "stop_token_ids");
	size_t i;

	if (s && json_is_string(s)) {
		req->stop[0] = json_string_value(s);
		req->stop_len[0] = json_string_length(s);
		req->n_stop = 1;
	} else if (s && json_is_array(s)) {
		if (json_array_size(s) > API_MAX_STOP)
			return api_error_set(err, 400, "stop", "invalid_value",
					     "'stop' has %zu entries; at most %d are allowed.",
					     json_array_size(s), API_MAX_STOP);
		for (i = 0; i < json_array_size(s); i++) {
			json_t *v = json_array_get(s, i);

			if (!json_is_string(v))
				return type_error(err, "stop", "a string or an array of strings",
						  v);
			req->stop[i] = json_string_value(v);
			req->stop_len[i] = json_string_length(v);
		}
		req->n_stop = (int)json_array_size(s);
	} else if (s) {
		return type_error(err, "stop", "a string or an array of strings", s);
	}
	for (i = 0; i < (size_t)req->n_stop; i++) {
		if (req->stop_len[i] == 0)
			return api_error_set(err, 400, "stop", "invalid_value",
					     "Stop strings must not be empty.");
		if (req->stop_len[i] > API_STOP_MAX_LEN)
			return api_error_set(err, 400, "stop", "invalid_value",
					     "Stop strings are limited to %d bytes; got %zu.",
					     API_STOP_MAX_LEN, req->stop_len[i]);
	}
	if (ids) {
		if (!json_is_array(ids))
			return type_error(err, "stop_token_ids", "an array of integers", ids);
		if (json_array_size(ids) > API_MAX_STOP_IDS)
			return api_error_set(err, 400, "stop_token_ids", "invalid_value",
					     "'stop_token_ids' has %zu entries; at most %d are "
					     "allowed.",
					     json_array_size(ids), API_MAX_STOP_IDS);
		for (i = 0; i < json_array_size(ids); i++) {
			json_t *v = json_array_get(ids, i);

			if (!json_is_integer(v))
				return type_error(err, "stop_token_ids", "an array of integers",
						  v);
			req->stop_ids[i] = (int32_t)json_integer_value(v);
			if (json_integer_value(v) < 0 || json_integer_value(v) > INT32_MAX)
				req->stop_ids[i] = -1;
		}
		req->n_stop_ids = (int)json_array_size(ids);
	}
	return 0;
}

static int parse_sampling(json_t *root, const struct api_config *cfg, struct api_request *req,
			  struct api_error *err)
{
	int64_t iv;
	double d;
	bool b;
	int rc, i;
	json_t *v;

	/* n / best_of: one choice per request */
	static const char *const one_only[] = {"n", "best_of"};
	for (i = 0; i < 2; i++) {
		if (i == 1 && req->endpoint != API_COMPLETIONS)
			break;
		rc = get_int(root, one_only[i], &iv, err);
		if (rc < 0)
			return rc;
		if (rc && iv < 1)
			return api_error_set(err, 400, one_only[i], "invalid_value",
					     "'%s' must be at least 1, got %" PRId64 ".",
					     one_only[i], iv);
		if (rc && iv > 1) {
			char m[128];

			snprintf(m, sizeof(m), "'%s' > 1 is not supported: send %" PRId64
				 " requests instead.", one_only[i], iv);
			return unsupported(err, one_only[i], m);
		}
	}

	/* max_tokens (chat: max_completion_tokens wins when both are given) */
	req->max_tokens = -1;
	rc = get_int(root, "max_tokens", &iv, err);
	if (rc < 0)
		return rc;
	bool mt_given = rc;
	int64_t mt_raw = iv;
	if (rc)
		req->max_tokens = iv > INT32_MAX ? INT32_MAX : iv < -1 ? -2 : (int)iv;
	const char *mt_name = "max_tokens";
	if (req->endpoint == API_CHAT) {
		rc = get_int(root, "max_completion_tokens", &iv, err);
		if (rc < 0)
			return rc;
		if (rc) {
			req->max_tokens = iv > INT32_MAX ? INT32_MAX : iv < -1 ? -2 : (int)iv;
			mt_name = "max_completion_tokens";
			mt_given = true;
			mt_raw = iv;
		}
	}
	if (mt_given && req->max_tokens < 1 &&
	    !(req->max_tokens == 0 && req->endpoint == API_COMPLETIONS && req->echo))
		return api_error_set(err, 400, mt_name, "invalid_value",
				     "'%s' must be at least 1, got %" PRId64 ".", mt_name, mt_raw);
	if (req->max_tokens > cfg->max_model_len)
		return api_error_set(err, 400, mt_name, "context_length_exceeded",
				     "'%s' is %d, more than this model's maximum context length "
				     "of %d tokens.",
				     mt_name, req->max_tokens, cfg->max_model_len);
	rc = get_int(root, "min_tokens", &iv, err);
	if (rc < 0)
		return rc;
	if (rc && (iv < 0 || (req->max_tokens >= 0 && iv > req->max_tokens)))
		return api_error_set(err, 400, "min_tokens", "invalid_value",
				     "'min_tokens' must be between 0 and max_tokens, got %" PRId64
				     ".",
				     iv);
	req->min_tokens = rc ? (int)iv : 0;

	req->temperature = 1.0f;
	rc = get_num(root, "temperature", &d, err);
	if (rc < 0)
		return rc;
	if (rc && !(d >= 0.0 && d <= 2.0))
		return api_error_set(err, 400, "temperature", "invalid_value",
				     "'temperature' must be between 0 and 2, got %g.", d);
	if (rc)
		req->temperature = (float)d;
	req->top_p = 1.0f;
	rc = get_num(root, "top_p", &d, err);
	if (rc < 0)
		return rc;
	if (rc && !(d > 0.0 && d <= 1.0))
		return api_error_set(err, 400, "top_p", "invalid_value",
				     "'top_p' must be in (0, 1], got %g.", d);
	if (rc)
		req->top_p = (float)d;
	req->top_k = -1;
	rc = get_int(root, "top_k", &iv, err);
	if (rc < 0)
		return rc;
	if (rc && iv < -1)
		return api_error_set(err, 400, "top_k", "invalid_value",
				     "'top_k' must be -1 (off) or at least 1, got %" PRId64 ".", iv);
	if (rc && iv >= 1)
		req->top_k = iv > INT32_MAX ? INT32_MAX : (int)iv;
	rc = get_int(root, "seed", &iv, err);
	if (rc < 0)
		return rc;
	req->has_seed = rc == 1;
	req->seed = rc ? (uint64_t)iv : 0;

	/* penalties we do not implement: accept their neutral values only */
	static const char *const pens[] = {"presence_penalty", "frequency_penalty"};
	for (i = 0; i < 2; i++) {
		rc = get_num(root, pens[i], &d, err);
		if (rc < 0)
			return rc;
		if (rc && !(d >= -2.0 && d <= 2.0))
			return api_error_set(err, 400, pens[i], "invalid_value",
					     "'%s' must be between -2 and 2, got %g.", pens[i], d);
		if (rc && d != 0.0) {
			char m[96];

			snprintf(m, sizeof(m), "'%s' is not supported: only 0 is accepted.",
				 pens[i]);
			return unsupported(err, pens[i], m);
		}
	}
	rc = get_num(root, "repetition_penalty", &d, err);
	if (rc < 0)
		return rc;
	if (rc && d != 1.0)
		return unsupported(err, "repetition_penalty",
				   "'repetition_penalty' is not supported: only 1 is accepted.");
	v = field(root, "logit_bias");
	if (v && !json_is_object(v))
		return type_error(err, "logit_bias", "an object", v);
	if (v && json_object_size(v) > 0)
		return unsupported(err, "logit_bias", "'logit_bias' is not supported.");

	rc = parse_stop(root, req, err);
	if (rc)
		return rc;
	for (i = 0; i < req->n_stop_ids; i++) {
		if (req->stop_ids[i] < 0 || req->stop_ids[i] >= cfg->vocab_size)
			return api_error_set(err, 400, "stop_token_ids", "invalid_value",
					     "Stop token ids must be in [0, %d).", cfg->vocab_size);
	}
	b = false;
	if ((rc = get_bool(root, "ignore_eos", &b, err)) < 0)
		return rc;
	req->ignore_eos = b;
	b = true;
	if ((rc = get_bool(root, "skip_special_tokens", &b, err)) < 0)
		return rc;
	req->skip_special_tokens = b;
	return 0;
}

static int parse_stream(json_t *root, struct api_request *req, struct api_error *err)
{
	json_t *so;
	bool b = false;
	int rc;

	if ((rc = get_bool(root, "stream", &b, err)) < 0)
		return rc;
	req->stream = b;
	so = field(root, "stream_options");
	if (!so)
		return 0;
	if (!json_is_object(so))
		return type_error(err, "stream_options", "an object", so);
	if (!req->stream)
		return api_error_set(err, 400, "stream_options", "invalid_value",
				     "'stream_options' is only allowed when 'stream' is true.");
	b = false;
	if ((rc = get_bool(so, "include_usage", &b, err)) < 0) {
		snprintf(err->param, sizeof(err->param), "stream_options.include_usage");
		return rc;
	}
	req->include_usage = b;
	return 0;
}

static int parse_logprobs(json_t *root, struct api_request *req, struct api_error *err)
{
	json_t *lp = field(root, "logprobs");
	int64_t top = 0;
	int rc;

	req->logprobs = -1;
	if (req->endpoint == API_COMPLETIONS) {
		if (lp && !json_is_integer(lp))
			return type_error(err, "logprobs", "an integer", lp);
		if (!lp)
			return 0;
		top = json_integer_value(lp);
		if (top < 0 || top > API_MAX_LOGPROBS)
			return api_error_set(err, 400, "logprobs", "invalid_value",
					     "'logprobs' must be between 0 and %d, got %" PRId64 ".",
					     API_MAX_LOGPROBS, (int64_t)top);
		req->logprobs = (int)top;
		return 0;
	}
	if (lp && !json_is_boolean(lp))
		return type_error(err, "logprobs", "a boolean", lp);
	rc = get_int(root, "top_logprobs", &top, err);
	if (rc < 0)
		return rc;
	if (rc && (top < 0 || top > API_MAX_LOGPROBS))
		return api_error_set(err, 400, "top_logprobs", "invalid_value",
				     "'top_logprobs' must be between 0 and %d, got %" PRId64 ".",
				     API_MAX_LOGPROBS, top);
	if (rc && !json_is_true(lp))
		return api_error_set(err, 400, "top_logprobs", "invalid_value",
				     "'top_logprobs' requires 'logprobs' to be true.");
	if (json_is_true(lp))
		req->logprobs = (int)top;
	return 0;
}

static int parse_misc(json_t *root, struct api_request *req, struct api_error *err)
{
	json_t *v;
	bool b;
	int rc;

	v = field(root, "user");
	if (v && !json_is_string(v))
		return type_error(err, "user", "a string", v);
	if (req->endpoint == API_COMPLETIONS) {
		v = field(root, "suffix");
		if (v && !json_is_string(v))
			return type_error(err, "suffix", "a string", v);
		if (v && json_string_length(v) > 0)
			return unsupported(err, "suffix", "'suffix' is not supported.");
		return 0;
	}
	v = field(root, "tools");
	if (v && !json_is_array(v))
		return type_error(err, "tools", "an array", v);
	if (json_array_size(v) > 0)
		return unsupported(err, "tools", "Tool calling is not supported.");
	v = field(root, "response_format");
	if (v) {
		json_t *t = json_is_object(v) ? json_object_get(v, "type") : NULL;

		if (!json_is_string(t))
			return type_error(err, "response_format", "an object with a 'type'", v);
		if (strcmp(json_string_value(t), "text") != 0)
			return unsupported(err, "response_format",
					   "Only response_format {\"type\": \"text\"} is "
					   "supported.");
	}
	req->enable_thinking = -1;
	v = field(root, "chat_template_kwargs");
	if (v) {
		if (!json_is_object(v))
			return type_error(err, "chat_template_kwargs", "an object", v);
		b = false;
		rc = get_bool(v, "enable_thinking", &b, err);
		if (rc < 0) {
			snprintf(err->param, sizeof(err->param),
				 "chat_template_kwargs.enable_thinking");
			return rc;
		}
		if (rc)
			req->enable_thinking = b;
	}
	return 0;
}

static int parse_model(json_t *root, const struct api_config *cfg, struct api_request *req,
		       struct api_error *err)
{
	json_t *m = field(root, "model");
	const char *name;
	int i;

	req->model = cfg->n_model_names > 0 ? cfg->model_names[0] : "";
	if (!m)
		return 0;
	if (!json_is_string(m))
		return type_error(err, "model", "a string", m);
	name = json_string_value(m);
	for (i = 0; i < cfg->n_model_names; i++) {
		if (strcmp(name, cfg->model_names[i]) == 0) {
			req->model = cfg->model_names[i];
			return 0;
		}
	}
	api_error_set(err, 404, "model", "model_not_found", "The model `%.200s` does not exist.",
		      name);
	return -ENOENT;
}

int api_parse(struct api_request *req, enum api_endpoint ep, const char *body, size_t len,
	      const struct api_config *cfg, struct api_error *err)
{
	json_error_t jerr;
	json_t *root;
	bool b = false;
	int rc;

	memset(req, 0, sizeof(*req));
	req->endpoint = ep;
	req->logprobs = -1;
	req->enable_thinking = -1;
	if (!api_utf8_valid(body, len))
		return api_error_set(err, 400, NULL, "invalid_encoding",
				     "The request body is not valid UTF-8.");
	root = json_loadb(body, len, 0, &jerr);
	if (!root)
		return api_error_set(err, 400, NULL, "invalid_json",
				     "We could not parse the JSON body of your request: %s "
				     "(line %d, column %d).",
				     jerr.text, jerr.line, jerr.column);
	req->priv_ = root;
	if (!json_is_object(root)) {
		rc = api_error_set(err, 400, NULL, "invalid_json",
				   "The request body must be a JSON object.");
		goto fail;
	}
	rc = parse_model(root, cfg, req, err);
	if (rc)
		goto fail;
	if (ep == API_COMPLETIONS) {
		rc = get_bool(root, "echo", &b, err);
		if (rc < 0)
			goto fail;
		req->echo = b;
		rc = parse_prompt(root, cfg, req, err);
	} else {
		rc = parse_messages(root, req, err);
	}
	if (rc)
		goto fail;
	rc = parse_sampling(root, cfg, req, err);
	if (rc)
		goto fail;
	rc = parse_stream(root, req, err);
	if (rc)
		goto fail;
	rc = parse_logprobs(root, req, err);
	if (rc)
		goto fail;
	rc = parse_misc(root, req, err);
	if (rc)
		goto fail;
	return 0;
fail:
	api_request_free(req);
	req->endpoint = ep;
	return rc;
}

void api_request_free(struct api_request *req)
{
	if (!req)
		return;
	free(req->prompt_ids);
	free(req->messages);
	if (req->priv_)
		json_decref((json_t *)req->priv_);
	memset(req, 0, sizeof(*req));
}

int api_check_length(const struct api_request *req, const struct api_config *cfg,
		     int n_prompt_tokens, struct api_error *err)
{
	const char *what = req->endpoint == API_CHAT ? "messages" : "prompt";
	int max_len = cfg->max_model_len, room = max_len - n_prompt_tokens;

	if (req->max_tokens == 0 && room >= 0) /* echo-only scoring request */
		return 0;
	if (room < 1) {
		api_error_set(err, 400, what, "context_length_exceeded",
			      "This model's maximum context length is %d tokens. However, your "
			      "request has %d input tokens. Please reduce the length of the input "
			      "%s.",
			      max_len, n_prompt_tokens, what);
		return -E2BIG;
	}
	if (req->max_tokens < 0) /* not given: chat fills the context; completions: 16 */
		return req->endpoint == API_CHAT ? room : (room < 16 ? room : 16);
	if (req->max_tokens > room) {
		api_error_set(err, 400, what, "context_length_exceeded",
			      "This model's maximum context length is %d tokens. However, you "
			      "requested %lld tokens (%d in the %s, %d in the completion). Please "
			      "reduce the length of the %s or completion.",
			      max_len, (long long)n_prompt_tokens + req->max_tokens,
			      n_prompt_tokens, what, req->max_tokens, what);
		return -E2BIG;
	}
	return req->max_tokens;
}

/* ---------------------------------------------------------------- responses */

/* A JSON string from bytes that may not be valid UTF-8 (token pieces): invalid subparts become
 * U+FFFD, as in the streamed events. */
static json_t *jstr_lossy(const char *s, size_t len)
{
	size_t i = 0, o = 0;
	char *buf;
	json_t *j;
	bool ok;

	if (api_utf8_valid(s, len))
		return json_stringn_nocheck(s, len);
	buf = malloc(len * 3 + 1);
	if (!buf)
		return NULL;
	while (i < len) {
		size_t n = api_utf8_step((const unsigned char *)s + i, len - i, &ok);

		if (ok) {
			memcpy(buf + o, s + i, n);
			o += n;
		} else {
			memcpy(buf + o, "\xEF\xBF\xBD", 3);
			o += 3;
		}
		i += n;
	}
	j = json_stringn_nocheck(buf, o);
	free(buf);
	return j;
}

static json_t *jlogprob(float v)
{
	if (isnan(v))
		return json_null();
	if (v < -9999.0f)
		return json_real(-9999.0);
	return json_real((double)v);
}

static json_t *jbytes(const char *s, size_t len)
{
	json_t *a = json_array();
	size_t i;

	for (i = 0; a && i < len; i++)
		json_array_append_new(a, json_integer((unsigned char)s[i]));
	return a;
}

static json_t *lp_completions(const struct api_result *res)
{
	json_t *o = json_object(), *off = json_array(), *tlp = json_array(), *toks = json_array(),
	       *top = json_array();
	uint64_t pos = 0;
	size_t part, i;

	for (part = 0; part < 2; part++) {
		const struct api_logprob *lp = part ? res->lp : res->prompt_lp;
		size_t n = part ? res->n_lp : res->n_prompt_lp;

		for (i = 0; lp && i < n; i++) {
			json_array_append_new(off, json_integer((json_int_t)pos));
			pos += sse_utf8_count(lp[i].token, lp[i].len);
			json_array_append_new(tlp, jlogprob(lp[i].logprob));
			json_array_append_new(toks, jstr_lossy(lp[i].token, lp[i].len));
			if (!lp[i].top) {
				json_array_append_new(top, json_null());
			} else {
				json_t *d = json_object();
				int k;

				for (k = 0; k < lp[i].n_top; k++) {
					const struct api_top *t = &lp[i].top[k];
					json_t *key = jstr_lossy(t->token, t->len);

					if (key)
						json_object_setn_new_nocheck(
							d, json_string_value(key),
							json_string_length(key), jlogprob(t->logprob));
					json_decref(key);
				}
				json_array_append_new(top, d);
			}
		}
	}
	json_object_set_new(o, "text_offset", off);
	json_object_set_new(o, "token_logprobs", tlp);
	json_object_set_new(o, "tokens", toks);
	json_object_set_new(o, "top_logprobs", top);
	return o;
}

static json_t *lp_chat(const struct api_result *res)
{
	json_t *content = json_array();
	size_t i;

	for (i = 0; i < res->n_lp; i++) {
		const struct api_logprob *lp = &res->lp[i];
		json_t *e = json_object(), *tops = json_array();
		int k;

		json_object_set_new(e, "token", jstr_lossy(lp->token, lp->len));
		json_object_set_new(e, "logprob", jlogprob(lp->logprob));
		json_object_set_new(e, "bytes", jbytes(lp->token, lp->len));
		for (k = 0; lp->top && k < lp->n_top; k++) {
			json_t *t = json_object();

			json_object_set_new(t, "token", jstr_lossy(lp->top[k].token, lp->top[k].len));
			json_object_set_new(t, "logprob", jlogprob(lp->top[k].logprob));
			json_object_set_new(t, "bytes", jbytes(lp->top[k].token, lp->top[k].len));
			json_array_append_new(tops, t);
		}
		json_object_set_new(e, "top_logprobs", tops);
		json_array_append_new(content, e);
	}
	return json_pack("{s:o}", "content", content);
}

char *api_format_response(const struct api_request *req, const struct api_result *res,
			  size_t *len)
{
	json_t *root, *choice, *usage;
	char *out = NULL, *text = NULL;
	size_t tlen = res->text_len;
	bool chat = req->endpoint == API_CHAT;

	if (!chat && req->echo && res->prompt_text) {
		tlen = res->prompt_text_len + res->text_len;
		text = malloc(tlen + 1);
		if (!text)
			return NULL;
		memcpy(text, res->prompt_text, res->prompt_text_len);
		memcpy(text + res->prompt_text_len, res->text, res->text_len);
	}
	choice = json_object();
	json_object_set_new(choice, "index", json_integer(0));
	if (chat) {
		json_object_set_new(choice, "message",
				    json_pack("{s:s,s:o}", "role", "assistant", "content",
					      jstr_lossy(res->text, res->text_len)));
		json_object_set_new(choice, "logprobs",
				    req->logprobs >= 0 && res->lp ? lp_chat(res) : json_null());
	} else {
		json_object_set_new(choice, "text",
				    jstr_lossy(text ? text : res->text, tlen));
		json_object_set_new(choice, "logprobs",
				    req->logprobs >= 0 && (res->lp || res->prompt_lp)
					    ? lp_completions(res)
					    : json_null());
	}
	json_object_set_new(choice, "finish_reason", json_string(api_finish_str(res->finish)));
	usage = json_pack("{s:i,s:i,s:I}", "prompt_tokens", res->usage.prompt_tokens,
			  "completion_tokens", res->usage.completion_tokens, "total_tokens",
			  (json_int_t)res->usage.prompt_tokens + res->usage.completion_tokens);
	root = json_object();
	json_object_set_new(root, "id", json_string(res->id ? res->id : ""));
	json_object_set_new(root, "object",
			    json_string(chat ? "chat.completion" : "text_completion"));
	json_object_set_new(root, "created", json_integer(res->created));
	json_object_set_new(root, "model", jstr_lossy(res->model ? res->model : req->model,
						       strlen(res->model ? res->model : req->model)));
	json_object_set_new(root, "choices", json_pack("[o]", choice));
	json_object_set_new(root, "usage", usage);
	out = json_dumps(root, JSON_COMPACT | JSON_REAL_PRECISION(9));
	json_decref(root);
	free(text);
	if (out && len)
		*len = strlen(out);
	return out;
}

char *api_format_models(const struct api_config *cfg, int64_t created, size_t *len)
{
	json_t *data = json_array(), *root;
	char *out;
	int i;

	for (i = 0; i < cfg->n_model_names; i++)
		json_array_append_new(data, json_pack("{s:s,s:s,s:I,s:s,s:i}", "id",
						      cfg->model_names[i], "object", "model",
						      "created", (json_int_t)created, "owned_by",
						      "offpath", "max_model_len",
						      cfg->max_model_len));
	root = json_pack("{s:s,s:o}", "object", "list", "data", data);
	out = root ? json_dumps(root, JSON_COMPACT) : NULL;
	json_decref(root);
	if (out && len)
		*len = strlen(out);
	return out;
}
