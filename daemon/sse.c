/* SPDX-License-Identifier: Apache-2.0 */
/* daemon/sse.c: Server-Sent Events for streamed completions; see sse.h. No allocation here. */
#include "sse.h"

#include <inttypes.h>
#include <math.h>
#include <stdio.h>
#include <string.h>

#include "api_pvt.h"

static const char hexd[] = "0123456789abcdef";

void api_w_esc(struct api_wbuf *w, const char *s, size_t len)
{
	const unsigned char *u = (const unsigned char *)s;
	size_t i = 0, run = 0; /* run: start of the pending verbatim span */
	bool ok;

	while (i < len) {
		unsigned char c = u[i];
		const char *rep = NULL;
		char ubuf[7];
		size_t n = 1;

		if (c >= 0x20 && c < 0x80 && c != '"' && c != '\\') {
			i++;
			continue;
		}
		if (c >= 0x80) {
			n = api_utf8_step(u + i, len - i, &ok);
			if (ok) {
				i += n;
				continue;
			}
			rep = "\xEF\xBF\xBD"; /* U+FFFD */
		} else if (c == '"') {
			rep = "\\\"";
		} else if (c == '\\') {
			rep = "\\\\";
		} else if (c == '\n') {
			rep = "\\n";
		} else if (c == '\r') {
			rep = "\\r";
		} else if (c == '\t') {
			rep = "\\t";
		} else if (c == '\b') {
			rep = "\\b";
		} else if (c == '\f') {
			rep = "\\f";
		} else {
			memcpy(ubuf, "\\u00", 4);
			ubuf[4] = hexd[c >> 4];
			ubuf[5] = hexd[c & 15];
			ubuf[6] = '\0';
			rep = ubuf;
		}
		api_w_put(w, s + run, i - run);
		api_w_str(w, rep);
		i += n;
		run = i;
	}
	api_w_put(w, s + run, len - run);
}

size_t sse_json_escape(char *out, size_t cap, const char *s, size_t len)
{
	struct api_wbuf w = {out, cap, 0};

	api_w_esc(&w, s, len);
	return w.len;
}

size_t sse_utf8_count(const char *s, size_t len)
{
	size_t i = 0, n = 0;
	bool ok;

	while (i < len) {
		i += api_utf8_step((const unsigned char *)s + i, len - i, &ok);
		n++;
	}
	return n;
}

static void w_u64(struct api_wbuf *w, uint64_t v)
{
	char b[24];
	int n = snprintf(b, sizeof(b), "%" PRIu64, v);

	api_w_put(w, b, (size_t)n);
}

static void w_i64(struct api_wbuf *w, int64_t v)
{
	char b[24];
	int n = snprintf(b, sizeof(b), "%" PRId64, v);

	api_w_put(w, b, (size_t)n);
}

/* A logprob as JSON: NaN -> null, below -9999 (and -inf) -> -9999.0 as vLLM clamps. */
static void w_logprob(struct api_wbuf *w, float v)
{
	char b[32];
	int n;

	if (isnan(v)) {
		api_w_str(w, "null");
		return;
	}
	if (v < -9999.0f) {
		api_w_str(w, "-9999.0");
		return;
	}
	n = snprintf(b, sizeof(b), "%.8g", (double)v);
	api_w_put(w, b, (size_t)n);
}

static void w_qstr(struct api_wbuf *w, const char *s, size_t len)
{
	api_w_ch(w, '"');
	api_w_esc(w, s, len);
	api_w_ch(w, '"');
}

static void w_bytes(struct api_wbuf *w, const char *s, size_t len)
{
	size_t i;

	api_w_ch(w, '[');
	for (i = 0; i < len; i++) {
		if (i)
			api_w_ch(w, ',');
		w_u64(w, (unsigned char)s[i]);
	}
	api_w_ch(w, ']');
}

void sse_init(struct sse_stream *st, enum api_endpoint ep, const char *id, const char *model,
	      int64_t created, bool include_usage)
{
	memset(st, 0, sizeof(*st));
	st->endpoint = ep;
	snprintf(st->id, sizeof(st->id), "%s", id ? id : "");
	snprintf(st->model, sizeof(st->model), "%s", model ? model : "");
	st->created = created;
	st->include_usage = include_usage;
}

/* `data: {"id":..,"object":..,"created":..,"model":..,` */
static void w_head(struct api_wbuf *w, const struct sse_stream *st)
{
	api_w_str(w, "data: {\"id\":");
	w_qstr(w, st->id, strlen(st->id));
	api_w_str(w, st->endpoint == API_CHAT ? ",\"object\":\"chat.completion.chunk\",\"created\":"
					      : ",\"object\":\"text_completion\",\"created\":");
	w_i64(w, st->created);
	api_w_str(w, ",\"model\":");
	w_qstr(w, st->model, strlen(st->model));
	api_w_ch(w, ',');
}

/* Completions logprobs for n tokens, advancing st->text_offset. */
static void w_lp_completions(struct api_wbuf *w, struct sse_stream *st,
			     const struct api_logprob *lp, size_t n)
{
	size_t i;
	int k;

	api_w_str(w, "{\"text_offset\":[");
	for (i = 0; i < n; i++) {
		if (i)
			api_w_ch(w, ',');
		w_u64(w, st->text_offset);
		st->text_offset += sse_utf8_count(lp[i].token, lp[i].len);
	}
	api_w_str(w, "],\"token_logprobs\":[");
	for (i = 0; i < n; i++) {
		if (i)
			api_w_ch(w, ',');
		w_logprob(w, lp[i].logprob);
	}
	api_w_str(w, "],\"tokens\":[");
	for (i = 0; i < n; i++) {
		if (i)
			api_w_ch(w, ',');
		w_qstr(w, lp[i].token, lp[i].len);
	}
	api_w_str(w, "],\"top_logprobs\":[");
	for (i = 0; i < n; i++) {
		if (i)
			api_w_ch(w, ',');
		if (!lp[i].top) {
			api_w_str(w, "null");
			continue;
		}
		api_w_ch(w, '{');
		for (k = 0; k < lp[i].n_top; k++) {
			if (k)
				api_w_ch(w, ',');
			w_qstr(w, lp[i].top[k].token, lp[i].top[k].len);
			api_w_ch(w, ':');
			w_logprob(w, lp[i].top[k].logprob);
		}
		api_w_ch(w, '}');
	}
	api_w_str(w, "]}");
}

static void w_lp_chat(struct api_wbuf *w, const struct api_logprob *lp, size_t n)
{
	size_t i;
	int k;

	api_w_str(w, "{\"content\":[");
	for (i = 0; i < n; i++) {
		if (i)
			api_w_ch(w, ',');
		api_w_str(w, "{\"token\":");
		w_qstr(w, lp[i].token, lp[i].len);
		api_w_str(w, ",\"logprob\":");
		w_logprob(w, lp[i].logprob);
		api_w_str(w, ",\"bytes\":");
		w_bytes(w, lp[i].token, lp[i].len);
		api_w_str(w, ",\"top_logprobs\":[");
		for (k = 0; lp[i].top && k < lp[i].n_top; k++) {
			const struct api_top *t = &lp[i].top[k];

			if (k)
				api_w_ch(w, ',');
			api_w_str(w, "{\"token\":");
			w_qstr(w, t->token, t->len);
			api_w_str(w, ",\"logprob\":");
			w_logprob(w, t->logprob);
			api_w_str(w, ",\"bytes\":");
			w_bytes(w, t->token, t->len);
			api_w_ch(w, '}');
		}
		api_w_str(w, "]}");
	}
	api_w_str(w, "]}");
}

static void w_role_event(struct api_wbuf *w, struct sse_stream *st)
{
	w_head(w, st);
	api_w_str(w, "\"choices\":[{\"index\":0,\"delta\":{\"role\":\"assistant\",\"content\":\"\"},"
		     "\"logprobs\":null,\"finish_reason\":null}]}\n\n");
	st->role_sent = true;
}

size_t sse_write_role(struct sse_stream *st, char *out, size_t cap)
{
	struct api_wbuf w = {out, cap, 0};

	if (st->endpoint == API_CHAT && !st->role_sent)
		w_role_event(&w, st);
	return api_w_end(&w);
}

size_t sse_write_text(struct sse_stream *st, char *out, size_t cap, const char *text, size_t len,
		      const struct api_logprob *lp, size_t n_lp)
{
	struct api_wbuf w = {out, cap, 0};
	uint64_t off0 = st->text_offset;

	w_head(&w, st);
	if (st->endpoint == API_CHAT) {
		api_w_str(&w, "\"choices\":[{\"index\":0,\"delta\":{");
		if (!st->role_sent)
			api_w_str(&w, "\"role\":\"assistant\",");
		api_w_str(&w, "\"content\":");
		w_qstr(&w, text, len);
		api_w_str(&w, "},\"logprobs\":");
		if (lp)
			w_lp_chat(&w, lp, n_lp);
		else
			api_w_str(&w, "null");
	} else {
		api_w_str(&w, "\"choices\":[{\"index\":0,\"text\":");
		w_qstr(&w, text, len);
		api_w_str(&w, ",\"logprobs\":");
		if (lp)
			w_lp_completions(&w, st, lp, n_lp);
		else
			api_w_str(&w, "null");
	}
	api_w_str(&w, ",\"finish_reason\":null}]}\n\n");
	if (w.len <= cap)
		st->role_sent = true;
	else
		st->text_offset = off0; /* the caller retries this event with a larger buffer */
	return api_w_end(&w);
}

size_t sse_write_finish(struct sse_stream *st, char *out, size_t cap, enum api_finish finish,
			const struct api_usage *usage)
{
	struct api_wbuf w = {out, cap, 0};
	bool role_sent = st->role_sent;

	if (st->endpoint == API_CHAT && !st->role_sent)
		w_role_event(&w, st);
	w_head(&w, st);
	if (st->endpoint == API_CHAT)
		api_w_str(&w, "\"choices\":[{\"index\":0,\"delta\":{},\"logprobs\":null,"
			      "\"finish_reason\":\"");
	else
		api_w_str(&w, "\"choices\":[{\"index\":0,\"text\":\"\",\"logprobs\":null,"
			      "\"finish_reason\":\"");
	api_w_str(&w, api_finish_str(finish));
	api_w_str(&w, "\"}]}\n\n");
	if (st->include_usage && usage) {
		w_head(&w, st);
		api_w_str(&w, "\"choices\":[],\"usage\":{\"prompt_tokens\":");
		w_i64(&w, usage->prompt_tokens);
		api_w_str(&w, ",\"completion_tokens\":");
		w_i64(&w, usage->completion_tokens);
		api_w_str(&w, ",\"total_tokens\":");
		w_i64(&w, (int64_t)usage->prompt_tokens + usage->completion_tokens);
		api_w_str(&w, "}}\n\n");
	}
	api_w_str(&w, "data: [DONE]\n\n");
	if (w.len <= cap)
		st->finished = true;
	else
		st->role_sent = role_sent;
	return api_w_end(&w);
}

size_t sse_write_error(struct sse_stream *st, char *out, size_t cap, const struct api_error *err)
{
	struct api_wbuf w = {out, cap, 0};

	api_w_str(&w, "data: ");
	api_w_error(&w, err);
	api_w_str(&w, "\n\ndata: [DONE]\n\n");
	if (w.len <= cap)
		st->finished = true;
	return api_w_end(&w);
}
