/* SPDX-License-Identifier: Apache-2.0 */
/*
 * tests/daemon/test_api.c: request validation (every error case with its status, param and code),
 * accepted requests' fields, the error body, non-streaming responses and SSE streams parsed back
 * with jansson (framing, role in the first chat event, finish_reason, usage, [DONE]), logprobs in
 * both formats, U+FFFD for broken token bytes, and the context-length helper.
 */
#include <errno.h>
#include <jansson.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "api.h"
#include "check.h"
#include "sse.h"

static const char *const names[] = {"offpath-test", "alias"};
static const struct api_config cfg = {names, 2, 1000, 128};

struct bad {
	enum api_endpoint ep;
	const char *body;
	int status;
	const char *param; /* NULL: JSON null */
	int rc;
};

#define C API_COMPLETIONS
#define H API_CHAT
static const struct bad bads[] = {
	{C, "", 400, NULL, -EINVAL},
	{C, "{", 400, NULL, -EINVAL},
	{C, "[1]", 400, NULL, -EINVAL},
	{C, "{\"prompt\":\"a\"} x", 400, NULL, -EINVAL},
	{C, "{\"prompt\":\"\xC3\x28\"}", 400, NULL, -EINVAL},       /* invalid UTF-8 */
	{C, "{\"prompt\":\"\xED\xA0\x80\"}", 400, NULL, -EINVAL},   /* encoded surrogate */
	{C, "{\"prompt\":\"\\ud800\"}", 400, NULL, -EINVAL},        /* lone surrogate escape */
	{C, "{\"model\":\"gpt-4\",\"prompt\":\"a\"}", 404, "model", -ENOENT},
	{C, "{\"model\":7,\"prompt\":\"a\"}", 400, "model", -EINVAL},
	{C, "{}", 400, "prompt", -EINVAL},
	{C, "{\"prompt\":\"\"}", 400, "prompt", -EINVAL},
	{C, "{\"prompt\":[]}", 400, "prompt", -EINVAL},
	{C, "{\"prompt\":5}", 400, "prompt", -EINVAL},
	{C, "{\"prompt\":[\"a\",\"b\"]}", 400, "prompt", -ENOTSUP},
	{C, "{\"prompt\":[[1],[2]]}", 400, "prompt", -ENOTSUP},
	{C, "{\"prompt\":[[]]}", 400, "prompt", -EINVAL},
	{C, "{\"prompt\":[1,\"a\"]}", 400, "prompt", -EINVAL},
	{C, "{\"prompt\":[1,1000]}", 400, "prompt", -EINVAL},
	{C, "{\"prompt\":[-1]}", 400, "prompt", -EINVAL},
	{C, "{\"prompt\":[true]}", 400, "prompt", -EINVAL},
	{C, "{\"prompt\":\"a\",\"max_tokens\":0}", 400, "max_tokens", -EINVAL},
	{C, "{\"prompt\":\"a\",\"max_tokens\":-3}", 400, "max_tokens", -EINVAL},
	{C, "{\"prompt\":\"a\",\"max_tokens\":\"5\"}", 400, "max_tokens", -EINVAL},
	{C, "{\"prompt\":\"a\",\"max_tokens\":2.5}", 400, "max_tokens", -EINVAL},
	{C, "{\"prompt\":\"a\",\"max_tokens\":129}", 400, "max_tokens", -EINVAL},
	{C, "{\"prompt\":\"a\",\"temperature\":2.5}", 400, "temperature", -EINVAL},
	{C, "{\"prompt\":\"a\",\"temperature\":-0.1}", 400, "temperature", -EINVAL},
	{C, "{\"prompt\":\"a\",\"temperature\":\"hot\"}", 400, "temperature", -EINVAL},
	{C, "{\"prompt\":\"a\",\"top_p\":0}", 400, "top_p", -EINVAL},
	{C, "{\"prompt\":\"a\",\"top_p\":1.5}", 400, "top_p", -EINVAL},
	{C, "{\"prompt\":\"a\",\"top_k\":-2}", 400, "top_k", -EINVAL},
	{C, "{\"prompt\":\"a\",\"top_k\":1.5}", 400, "top_k", -EINVAL},
	{C, "{\"prompt\":\"a\",\"seed\":\"x\"}", 400, "seed", -EINVAL},
	{C, "{\"prompt\":\"a\",\"stop\":5}", 400, "stop", -EINVAL},
	{C, "{\"prompt\":\"a\",\"stop\":[\"a\",\"b\",\"c\",\"d\",\"e\"]}", 400, "stop", -EINVAL},
	{C, "{\"prompt\":\"a\",\"stop\":[\"a\",3]}", 400, "stop", -EINVAL},
	{C, "{\"prompt\":\"a\",\"stop\":\"\"}", 400, "stop", -EINVAL},
	{C, "{\"prompt\":\"a\",\"stop_token_ids\":[1,1000]}", 400, "stop_token_ids", -EINVAL},
	{C, "{\"prompt\":\"a\",\"stop_token_ids\":7}", 400, "stop_token_ids", -EINVAL},
	{C, "{\"prompt\":\"a\",\"stream\":\"yes\"}", 400, "stream", -EINVAL},
	{C, "{\"prompt\":\"a\",\"stream_options\":{\"include_usage\":true}}", 400, "stream_options",
	 -EINVAL},
	{C, "{\"prompt\":\"a\",\"stream\":true,\"stream_options\":{\"include_usage\":1}}", 400,
	 "stream_options.include_usage", -EINVAL},
	{C, "{\"prompt\":\"a\",\"n\":2}", 400, "n", -ENOTSUP},
	{C, "{\"prompt\":\"a\",\"n\":0}", 400, "n", -EINVAL},
	{C, "{\"prompt\":\"a\",\"best_of\":3}", 400, "best_of", -ENOTSUP},
	{C, "{\"prompt\":\"a\",\"logprobs\":21}", 400, "logprobs", -EINVAL},
	{C, "{\"prompt\":\"a\",\"logprobs\":-1}", 400, "logprobs", -EINVAL},
	{C, "{\"prompt\":\"a\",\"logprobs\":true}", 400, "logprobs", -EINVAL},
	{C, "{\"prompt\":\"a\",\"echo\":1}", 400, "echo", -EINVAL},
	{C, "{\"prompt\":\"a\",\"presence_penalty\":0.5}", 400, "presence_penalty", -ENOTSUP},
	{C, "{\"prompt\":\"a\",\"frequency_penalty\":3}", 400, "frequency_penalty", -EINVAL},
	{C, "{\"prompt\":\"a\",\"repetition_penalty\":1.2}", 400, "repetition_penalty", -ENOTSUP},
	{C, "{\"prompt\":\"a\",\"logit_bias\":{\"5\":1}}", 400, "logit_bias", -ENOTSUP},
	{C, "{\"prompt\":\"a\",\"suffix\":\"z\"}", 400, "suffix", -ENOTSUP},
	{C, "{\"prompt\":\"a\",\"ignore_eos\":\"no\"}", 400, "ignore_eos", -EINVAL},
	{C, "{\"prompt\":\"a\",\"user\":5}", 400, "user", -EINVAL},
	{C, "{\"prompt\":\"a\",\"min_tokens\":5,\"max_tokens\":2}", 400, "min_tokens", -EINVAL},
	{H, "{}", 400, "messages", -EINVAL},
	{H, "{\"messages\":[]}", 400, "messages", -EINVAL},
	{H, "{\"messages\":{}}", 400, "messages", -EINVAL},
	{H, "{\"messages\":[5]}", 400, "messages[0]", -EINVAL},
	{H, "{\"messages\":[{\"content\":\"x\"}]}", 400, "messages[0].role", -EINVAL},
	{H, "{\"messages\":[{\"role\":\"wizard\",\"content\":\"x\"}]}", 400, "messages[0].role",
	 -EINVAL},
	{H, "{\"messages\":[{\"role\":\"user\"}]}", 400, "messages[0].content", -EINVAL},
	{H, "{\"messages\":[{\"role\":\"user\",\"content\":\"a\"},{\"role\":\"user\",\"content\":7}]}",
	 400, "messages[1].content", -EINVAL},
	{H, "{\"messages\":[{\"role\":\"user\",\"content\":[{\"type\":\"image_url\",\"image_url\":{}}]}]}",
	 400, "messages[0].content[0]", -ENOTSUP},
	{H, "{\"messages\":[{\"role\":\"user\",\"content\":[{\"type\":\"text\"}]}]}", 400,
	 "messages[0].content[0]", -EINVAL},
	{H, "{\"messages\":[{\"role\":\"assistant\",\"tool_calls\":[{\"id\":\"x\"}]}]}", 400,
	 "messages[0].tool_calls", -ENOTSUP},
	{H, "{\"messages\":[{\"role\":\"user\",\"content\":\"a\"}],\"max_completion_tokens\":0}", 400,
	 "max_completion_tokens", -EINVAL},
	{H, "{\"messages\":[{\"role\":\"user\",\"content\":\"a\"}],\"logprobs\":3}", 400, "logprobs",
	 -EINVAL},
	{H, "{\"messages\":[{\"role\":\"user\",\"content\":\"a\"}],\"top_logprobs\":3}", 400,
	 "top_logprobs", -EINVAL},
	{H, "{\"messages\":[{\"role\":\"user\",\"content\":\"a\"}],\"logprobs\":true,\"top_logprobs\":30}",
	 400, "top_logprobs", -EINVAL},
	{H, "{\"messages\":[{\"role\":\"user\",\"content\":\"a\"}],\"tools\":[{\"type\":\"function\"}]}",
	 400, "tools", -ENOTSUP},
	{H, "{\"messages\":[{\"role\":\"user\",\"content\":\"a\"}],\"response_format\":{\"type\":\"json_object\"}}",
	 400, "response_format", -ENOTSUP},
	{H, "{\"messages\":[{\"role\":\"user\",\"content\":\"a\"}],\"chat_template_kwargs\":{\"enable_thinking\":\"no\"}}",
	 400, "chat_template_kwargs.enable_thinking", -EINVAL},
	{H, "{\"model\":\"nope\",\"messages\":[{\"role\":\"user\",\"content\":\"a\"}]}", 404, "model",
	 -ENOENT},
};

static void test_bad(void)
{
	size_t i;

	for (i = 0; i < sizeof(bads) / sizeof(bads[0]); i++) {
		const struct bad *b = &bads[i];
		struct api_request req;
		struct api_error err;
		char body[1024];
		json_t *j, *e, *param;
		int rc;

		memset(&err, 0, sizeof(err));
		rc = api_parse(&req, b->ep, b->body, strlen(b->body), &cfg, &err);
		CHECK(rc == b->rc, "case %zu %s: rc %d, want %d (%s)", i, b->body, rc, b->rc,
		      err.message);
		CHECK(err.status == b->status, "case %zu: status %d want %d", i, err.status,
		      b->status);
		CHECK(api_error_json(&err, body, sizeof(body)) < sizeof(body), "case %zu: body", i);
		j = json_loads(body, 0, NULL);
		e = json_object_get(j, "error");
		CHECK(json_is_object(e), "case %zu: not an error object: %s", i, body);
		CHECK(json_string_length(json_object_get(e, "message")) > 0, "case %zu: message", i);
		CHECK(json_is_string(json_object_get(e, "type")), "case %zu: type", i);
		param = json_object_get(e, "param");
		if (b->param)
			CHECK(json_is_string(param) && strcmp(json_string_value(param), b->param) == 0,
			      "case %zu: param %s want %s", i, json_string_value(param), b->param);
		else
			CHECK(json_is_null(param), "case %zu: param should be null", i);
		CHECK(json_object_get(e, "code") != NULL, "case %zu: code key", i);
		if (b->status == 404)
			CHECK(strcmp(json_string_value(json_object_get(e, "code")),
				     "model_not_found") == 0,
			      "404 code");
		json_decref(j);
		api_request_free(&req); /* safe after a failure */
	}
}

static void test_good(void)
{
	struct api_request r;
	struct api_error err;
	const char *b;

	b = "{\"model\":\"alias\",\"prompt\":\"Hello\",\"max_tokens\":7,\"temperature\":0,"
	    "\"top_p\":0.5,\"top_k\":40,\"seed\":-3,\"stop\":[\"\\n\",\"END\"],\"stop_token_ids\":[2],"
	    "\"stream\":true,\"stream_options\":{\"include_usage\":true},\"logprobs\":5,"
	    "\"echo\":true,\"n\":1,\"presence_penalty\":0,\"ignore_eos\":true,\"user\":\"u\","
	    "\"min_tokens\":2,\"unknown_field\":{}}";
	CHECK(api_parse(&r, API_COMPLETIONS, b, strlen(b), &cfg, &err) == 0, "good: %s",
	      err.message);
	CHECK(r.prompt_kind == API_PROMPT_TEXT && strcmp(r.prompt, "Hello") == 0, "prompt");
	CHECK(strcmp(r.model, "alias") == 0, "model");
	CHECK(r.max_tokens == 7 && r.min_tokens == 2 && r.temperature == 0.0f && r.top_p == 0.5f &&
		      r.top_k == 40,
	      "sampling");
	CHECK(r.has_seed && r.seed == (uint64_t)-3, "seed");
	CHECK(r.n_stop == 2 && strcmp(r.stop[1], "END") == 0 && r.stop_len[0] == 1, "stop");
	CHECK(r.n_stop_ids == 1 && r.stop_ids[0] == 2, "stop ids");
	CHECK(r.stream && r.include_usage && r.logprobs == 5 && r.echo && r.ignore_eos &&
		      r.skip_special_tokens,
	      "flags");
	api_request_free(&r);

	b = "{\"prompt\":[[5,6,7]],\"max_tokens\":null,\"top_k\":0}";
	CHECK(api_parse(&r, API_COMPLETIONS, b, strlen(b), &cfg, &err) == 0, "ids: %s",
	      err.message);
	CHECK(r.prompt_kind == API_PROMPT_IDS && r.n_prompt_ids == 3 && r.prompt_ids[2] == 7, "ids");
	CHECK(r.max_tokens == -1 && r.top_k == -1 && r.temperature == 1.0f && r.logprobs == -1,
	      "defaults");
	CHECK(strcmp(r.model, "offpath-test") == 0, "default model");
	CHECK(api_check_length(&r, &cfg, 3, &err) == 16, "completions default 16");
	CHECK(api_check_length(&r, &cfg, 120, &err) == 8, "default clamped to the context");
	CHECK(api_check_length(&r, &cfg, 128, &err) == -E2BIG && err.status == 400 &&
		      strcmp(err.code, "context_length_exceeded") == 0 &&
		      strcmp(err.param, "prompt") == 0,
	      "prompt fills the context");
	api_request_free(&r);

	b = "{\"prompt\":\"x\",\"echo\":true,\"max_tokens\":0,\"logprobs\":0}";
	CHECK(api_parse(&r, API_COMPLETIONS, b, strlen(b), &cfg, &err) == 0,
	      "echo scoring with max_tokens 0: %s", err.message);
	CHECK(api_check_length(&r, &cfg, 128, &err) == 0, "scoring fits");
	api_request_free(&r);

	b = "{\"messages\":[{\"role\":\"system\",\"content\":\"S\"},{\"role\":\"user\",\"content\":"
	    "[{\"type\":\"text\",\"text\":\"a\"},{\"type\":\"text\",\"text\":\"b\"}]},"
	    "{\"role\":\"assistant\",\"content\":null},{\"role\":\"tool\",\"content\":\"t\","
	    "\"tool_call_id\":\"1\"}],\"max_tokens\":5,\"max_completion_tokens\":9,"
	    "\"logprobs\":true,\"top_logprobs\":3,\"chat_template_kwargs\":"
	    "{\"enable_thinking\":false}}";
	CHECK(api_parse(&r, API_CHAT, b, strlen(b), &cfg, &err) == 0, "chat: %s", err.message);
	CHECK(r.prompt_kind == API_PROMPT_CHAT && r.n_messages == 4, "messages");
	CHECK(r.messages[1].role == CHAT_USER && r.messages[1].len == 3 &&
		      memcmp(r.messages[1].content, "a\nb", 3) == 0,
	      "text parts joined with newline");
	CHECK(r.messages[2].role == CHAT_ASSISTANT && r.messages[2].len == 0, "null content");
	CHECK(r.messages[3].role == CHAT_TOOL, "tool role");
	CHECK(r.max_tokens == 9 && r.logprobs == 3 && r.enable_thinking == 0, "chat fields");
	CHECK(api_check_length(&r, &cfg, 119, &err) == 9, "fits");
	CHECK(api_check_length(&r, &cfg, 120, &err) == -E2BIG &&
		      strcmp(err.param, "messages") == 0 && strstr(err.message, "128"),
	      "too long: %s", err.message);
	api_request_free(&r);

	b = "{\"messages\":[{\"role\":\"user\",\"content\":\"hi\"}]}";
	CHECK(api_parse(&r, API_CHAT, b, strlen(b), &cfg, &err) == 0, "chat min");
	CHECK(api_check_length(&r, &cfg, 28, &err) == 100, "chat default fills the context");
	CHECK(r.logprobs == -1 && r.enable_thinking == -1, "chat defaults");
	api_request_free(&r);
}

/* Split an SSE stream into JSON events; returns how many, and whether [DONE] ended it. */
static int parse_sse(const char *s, size_t len, json_t **ev, int max, int *done)
{
	int n = 0;
	size_t i = 0;

	*done = 0;
	while (i < len) {
		const char *end = strstr(s + i, "\n\n");

		CHECK(strncmp(s + i, "data: ", 6) == 0, "event must start with 'data: '");
		CHECK(end != NULL, "event must end with a blank line");
		if (!end || strncmp(s + i, "data: ", 6) != 0)
			return n;
		if (strncmp(s + i + 6, "[DONE]", 6) == 0) {
			*done = 1;
			CHECK((size_t)(end + 2 - s) == len, "[DONE] must be last");
			return n;
		}
		CHECK(n < max, "too many events");
		if (n >= max)
			return n;
		ev[n] = json_loadb(s + i + 6, (size_t)(end - (s + i + 6)), 0, NULL);
		CHECK(ev[n] != NULL, "event %d is not JSON", n);
		n++;
		i = (size_t)(end + 2 - s);
	}
	return n;
}

static void test_sse(void)
{
	static char buf[1 << 16], all[1 << 16];
	struct sse_stream st;
	struct api_top tops[2] = {{"lo", 2, -0.1f}, {"\xFF", 1, -2.5f}};
	struct api_logprob lp[2] = {{"He", 2, -0.25f, tops, 2}, {"llo\"\n", 5, -INFINITY, NULL, 0}};
	struct api_usage u = {5, 2};
	json_t *ev[16];
	size_t n, total = 0;
	int k, done, ep;

	for (ep = 0; ep < 2; ep++) {
		total = 0;
		sse_init(&st, ep, ep ? "chatcmpl-1" : "cmpl-1", "m\"x", 1700000000, true);
		n = sse_write_text(&st, buf, 10, "He", 2, lp, 1); /* too small: reports the need */
		CHECK(n > 10, "short buffer reports need");
		n = sse_write_text(&st, buf, sizeof(buf), "He", 2, lp, 1);
		memcpy(all + total, buf, n);
		total += n;
		n = sse_write_text(&st, buf, sizeof(buf), "llo\"\n\xC3", 6, lp + 1, 1);
		memcpy(all + total, buf, n);
		total += n;
		n = sse_write_finish(&st, buf, sizeof(buf), API_FINISH_LENGTH, &u);
		memcpy(all + total, buf, n);
		total += n;
		all[total] = '\0';
		k = parse_sse(all, total, ev, 16, &done);
		CHECK(done && k == 4, "ep %d: %d events, done %d", ep, k, done);
		if (k != 4)
			continue;
		for (int i = 0; i < 4; i++) {
			CHECK(strcmp(json_string_value(json_object_get(ev[i], "model")), "m\"x") == 0,
			      "model");
			CHECK(strcmp(json_string_value(json_object_get(ev[i], "object")),
				     ep ? "chat.completion.chunk" : "text_completion") == 0,
			      "object");
			CHECK(json_integer_value(json_object_get(ev[i], "created")) == 1700000000,
			      "created");
		}
		json_t *c0 = json_array_get(json_object_get(ev[0], "choices"), 0);
		json_t *c1 = json_array_get(json_object_get(ev[1], "choices"), 0);
		json_t *c2 = json_array_get(json_object_get(ev[2], "choices"), 0);
		if (ep) {
			json_t *d0 = json_object_get(c0, "delta");
			json_t *l0 = json_array_get(json_object_get(json_object_get(c0, "logprobs"),
								    "content"),
						    0);

			CHECK(strcmp(json_string_value(json_object_get(d0, "role")), "assistant") ==
				      0,
			      "first chat event carries the role");
			CHECK(!json_object_get(json_object_get(c1, "delta"), "role"),
			      "only the first carries the role");
			CHECK(strcmp(json_string_value(json_object_get(json_object_get(c1, "delta"),
								       "content")),
				     "llo\"\n\xEF\xBF\xBD") == 0,
			      "text escaped, broken byte -> U+FFFD");
			CHECK(json_array_size(json_object_get(l0, "bytes")) == 2 &&
				      fabs(json_number_value(json_object_get(l0, "logprob")) + 0.25) <
					      1e-6,
			      "chat logprob");
			json_t *t1 = json_array_get(json_object_get(l0, "top_logprobs"), 1);
			CHECK(strcmp(json_string_value(json_object_get(t1, "token")), "\xEF\xBF\xBD") ==
					  0 &&
				      json_integer_value(json_array_get(json_object_get(t1, "bytes"),
									0)) == 255,
			      "bytes keep the raw byte");
			json_t *l1 = json_array_get(json_object_get(json_object_get(c1, "logprobs"),
								    "content"),
						    0);
			CHECK(json_number_value(json_object_get(l1, "logprob")) == -9999.0,
			      "-inf clamps to -9999");
		} else {
			json_t *l0 = json_object_get(c0, "logprobs"), *l1 = json_object_get(c1, "logprobs");

			CHECK(strcmp(json_string_value(json_object_get(c0, "text")), "He") == 0, "text");
			CHECK(json_integer_value(json_array_get(json_object_get(l1, "text_offset"),
								0)) == 2,
			      "text_offset advances by code points");
			CHECK(json_object_size(json_array_get(json_object_get(l0, "top_logprobs"),
							      0)) == 2,
			      "top_logprobs dict");
			CHECK(json_is_null(json_array_get(json_object_get(l1, "top_logprobs"), 0)),
			      "null top");
		}
		CHECK(strcmp(json_string_value(json_object_get(c2, "finish_reason")), "length") == 0,
		      "finish_reason");
		CHECK(json_is_null(json_object_get(c1, "finish_reason")), "null finish before end");
		CHECK(json_array_size(json_object_get(ev[3], "choices")) == 0 &&
			      json_integer_value(json_object_get(json_object_get(ev[3], "usage"),
								 "total_tokens")) == 7,
		      "usage event");
		for (int i = 0; i < k; i++)
			json_decref(ev[i]);
	}
	/* chat with no text at all still opens with the role; no usage without include_usage */
	sse_init(&st, API_CHAT, "chatcmpl-2", "m", 1, false);
	n = sse_write_finish(&st, buf, sizeof(buf), API_FINISH_STOP, &u);
	k = parse_sse(buf, n, ev, 16, &done);
	CHECK(k == 2 && done, "role + finish, no usage: %d", k);
	for (int i = 0; i < k; i++)
		json_decref(ev[i]);
	{
		struct api_error e;

		api_error_set(&e, 503, NULL, NULL, "draining");
		n = sse_write_error(&st, buf, sizeof(buf), &e);
		k = parse_sse(buf, n, ev, 16, &done);
		CHECK(k == 1 && done && json_object_get(ev[0], "error"), "error event");
		for (int i = 0; i < k; i++)
			json_decref(ev[i]);
	}
	/* escaping matches json.dumps(ensure_ascii=False) for control characters */
	n = sse_json_escape(buf, sizeof(buf), "a\x01\x1f\t\\\x7f", 6);
	buf[n] = '\0';
	CHECK(strcmp(buf, "a\\u0001\\u001f\\t\\\\\x7f") == 0, "escape: %s", buf);
}

static void test_response(void)
{
	struct api_request r;
	struct api_error err;
	struct api_top tops[1] = {{" wor", 4, -0.5f}};
	struct api_logprob plp[2] = {{"Hi", 2, NAN, NULL, 0}, {" \xC3\xA9", 3, -1.0f, tops, 1}};
	struct api_logprob glp[1] = {{" wor", 4, -0.5f, tops, 1}};
	struct api_result res = {"cmpl-x", 42, NULL, " wor", 4, API_FINISH_STOP, {2, 1}, glp, 1,
				 "Hi \xC3\xA9", 5, plp, 2};
	const char *b = "{\"prompt\":\"Hi \xC3\xA9\",\"echo\":true,\"logprobs\":1}";
	char *out;
	size_t len;
	json_t *j, *c, *lp;

	CHECK(api_parse(&r, API_COMPLETIONS, b, strlen(b), &cfg, &err) == 0, "parse");
	out = api_format_response(&r, &res, &len);
	j = json_loads(out, 0, NULL);
	CHECK(j && len == strlen(out), "response JSON: %s", out);
	c = json_array_get(json_object_get(j, "choices"), 0);
	CHECK(strcmp(json_string_value(json_object_get(c, "text")), "Hi \xC3\xA9 wor") == 0,
	      "echo prepends the prompt");
	CHECK(strcmp(json_string_value(json_object_get(j, "object")), "text_completion") == 0 &&
		      strcmp(json_string_value(json_object_get(j, "model")), "offpath-test") == 0,
	      "object/model");
	lp = json_object_get(c, "logprobs");
	CHECK(json_array_size(json_object_get(lp, "tokens")) == 3, "prompt + generated tokens");
	CHECK(json_is_null(json_array_get(json_object_get(lp, "token_logprobs"), 0)),
	      "first prompt token has a null logprob");
	CHECK(json_is_null(json_array_get(json_object_get(lp, "top_logprobs"), 0)), "and null top");
	CHECK(json_integer_value(json_array_get(json_object_get(lp, "text_offset"), 2)) == 4,
	      "offsets in code points");
	CHECK(json_integer_value(json_object_get(json_object_get(j, "usage"), "total_tokens")) == 3,
	      "usage");
	json_decref(j);
	free(out);
	api_request_free(&r);

	b = "{\"messages\":[{\"role\":\"user\",\"content\":\"x\"}],\"logprobs\":true}";
	CHECK(api_parse(&r, API_CHAT, b, strlen(b), &cfg, &err) == 0, "parse chat");
	res.id = "chatcmpl-y";
	res.finish = API_FINISH_LENGTH;
	out = api_format_response(&r, &res, &len);
	j = json_loads(out, 0, NULL);
	c = json_array_get(json_object_get(j, "choices"), 0);
	CHECK(strcmp(json_string_value(json_object_get(json_object_get(c, "message"), "content")),
		     " wor") == 0 &&
		      strcmp(json_string_value(json_object_get(json_object_get(c, "message"),
							       "role")),
			     "assistant") == 0,
	      "chat message");
	CHECK(strcmp(json_string_value(json_object_get(c, "finish_reason")), "length") == 0,
	      "finish");
	CHECK(json_array_size(json_object_get(json_object_get(c, "logprobs"), "content")) == 1,
	      "chat logprobs");
	CHECK(strcmp(json_string_value(json_object_get(j, "object")), "chat.completion") == 0,
	      "object");
	json_decref(j);
	free(out);
	api_request_free(&r);

	out = api_format_models(&cfg, 7, &len);
	j = json_loads(out, 0, NULL);
	CHECK(json_array_size(json_object_get(j, "data")) == 2, "models");
	json_decref(j);
	free(out);
	{
		char id[API_ID_LEN];

		api_make_id(id, API_CHAT, 1, 2);
		CHECK(strcmp(id, "chatcmpl-00000000000000010000000000000002") == 0, "id %s", id);
	}
}

int main(void)
{
	test_bad();
	test_good();
	test_sse();
	test_response();
	if (check_exit())
		return 1;
	printf("test_api: ok (%zu error cases)\n", sizeof(bads) / sizeof(bads[0]));
	return 0;
}
