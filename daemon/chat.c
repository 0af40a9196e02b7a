/* SPDX-License-Identifier: Apache-2.0 */
/* daemon/chat.c: chat-template families rendered in C; see chat.h for what each reproduces. */
#include "chat.h"

#include <errno.h>
#include <jansson.h>
#include <stdio.h>
#include <string.h>
#include <time.h>

#include "api_pvt.h"

const char *chat_family_name(enum chat_family f)
{
	switch (f) {
	case CHAT_LLAMA3:
		return "llama3";
	case CHAT_LLAMA31:
		return "llama3.1";
	case CHAT_CHATML:
		return "chatml";
	case CHAT_QWEN3:
		return "qwen3";
	}
	return "?";
}

const char *chat_role_name(enum chat_role r)
{
	switch (r) {
	case CHAT_SYSTEM:
		return "system";
	case CHAT_USER:
		return "user";
	case CHAT_ASSISTANT:
		return "assistant";
	case CHAT_TOOL:
		return "tool";
	}
	return "?";
}

/* ---------------------------------------------------------------- detection */

/* ChatML templates that write a literal default system prompt (Qwen2/2.5, SmolLM2) contain
 * '<|im_start|>system\n<text><|im_end|>' inside one Jinja string literal. */
static void find_default_system(struct chat_template *t, const char *j)
{
	static const char key[] = "<|im_start|>system\\n";
	const char *p = j;

	t->default_system[0] = '\0';
	while ((p = strstr(p, key)) != NULL) {
		const char *s = p + strlen(key), *e = strstr(s, "<|im_end|>");
		size_t o = 0;

		p = s;
		if (!e || (size_t)(e - s) >= sizeof(t->default_system) || e == s)
			continue;
		if (strcspn(s, "'\"+{}") < (size_t)(e - s))
			continue;
		for (; s < e; s++) {
			if (s[0] == '\\' && s + 1 < e && s[1] == 'n') {
				t->default_system[o++] = '\n';
				s++;
			} else {
				t->default_system[o++] = *s;
			}
		}
		t->default_system[o] = '\0';
		return;
	}
}

int chat_template_detect(struct chat_template *t, const char *jinja, const char *bos)
{
	memset(t, 0, sizeof(*t));
	if (!jinja)
		return -EINVAL;
	if (strstr(jinja, "<|start_header_id|>")) {
		t->family = strstr(jinja, "Cutting Knowledge Date") ? CHAT_LLAMA31 : CHAT_LLAMA3;
		t->date_today = strstr(jinja, "strftime_now") != NULL;
		snprintf(t->bos, sizeof(t->bos), "%s", bos ? bos : "<|begin_of_text|>");
		return 0;
	}
	if (strstr(jinja, "<|im_start|>")) {
		if (strstr(jinja, "enable_thinking") || strstr(jinja, "reasoning_content")) {
			t->family = CHAT_QWEN3;
			return 0;
		}
		if (strstr(jinja, "<think>")) /* QwQ, DeepSeek-R1 distills: other think rules */
			return -ENOTSUP;
		t->family = CHAT_CHATML;
		t->tool_response = strstr(jinja, "<tool_response>") != NULL;
		find_default_system(t, jinja);
		return 0;
	}
	return -ENOTSUP;
}

int chat_template_load(struct chat_template *t, const char *path, char *err, size_t errlen)
{
	json_error_t jerr;
	json_t *root, *tpl, *bos;
	const char *src = NULL, *bos_s = NULL;
	int rc;

	root = json_load_file(path, 0, &jerr);
	if (!root) {
		snprintf(err, errlen, "%s: %s", path, jerr.text);
		return -ENOENT;
	}
	tpl = json_object_get(root, "chat_template");
	if (json_is_string(tpl)) {
		src = json_string_value(tpl);
	} else if (json_is_array(tpl)) {
		size_t i;
		json_t *e;

		json_array_foreach(tpl, i, e)
		{
			json_t *name = json_object_get(e, "name");

			if (json_is_string(name) && strcmp(json_string_value(name), "default") == 0)
				src = json_string_value(json_object_get(e, "template"));
		}
	}
	bos = json_object_get(root, "bos_token");
	if (json_is_object(bos))
		bos = json_object_get(bos, "content");
	if (json_is_string(bos))
		bos_s = json_string_value(bos);
	if (!src) {
		snprintf(err, errlen, "%s: no chat_template (a base model? use /v1/completions)",
			 path);
		json_decref(root);
		return -EINVAL;
	}
	rc = chat_template_detect(t, src, bos_s);
	if (rc)
		snprintf(err, errlen,
			 "%s: chat_template is not a family we render (llama3, llama3.1, chatml, "
			 "qwen3)",
			 path);
	json_decref(root);
	return rc;
}

/* ---------------------------------------------------------------- string helpers (Python's) */

/* Python's str.isspace() set, which Jinja's |trim (str.strip()) removes. */
static bool py_space(unsigned cp)
{
	return (cp >= 0x09 && cp <= 0x0D) || (cp >= 0x1C && cp <= 0x20) || cp == 0x85 ||
	       cp == 0xA0 || cp == 0x1680 || (cp >= 0x2000 && cp <= 0x200A) || cp == 0x2028 ||
	       cp == 0x2029 || cp == 0x202F || cp == 0x205F || cp == 0x3000;
}

/* Decode the (valid) UTF-8 code point at s[0..len); *n gets its length. */
static unsigned cp_at(const unsigned char *s, size_t len, size_t *n)
{
	bool ok;
	size_t k = api_utf8_step(s, len, &ok), i;
	unsigned cp;

	*n = k;
	if (!ok || k == 1)
		return s[0];
	cp = s[0] & (0xFF >> (k + 1));
	for (i = 1; i < k; i++)
		cp = (cp << 6) | (s[i] & 0x3F);
	return cp;
}

/* str.strip(): Unicode whitespace at both ends. */
static void py_strip(const char **s, size_t *len)
{
	const unsigned char *u = (const unsigned char *)*s;
	size_t b = 0, e = *len, n;

	while (b < e && py_space(cp_at(u + b, e - b, &n)))
		b += n;
	while (e > b) {
		size_t st = e - 1;

		while (st > b && (u[st] & 0xC0) == 0x80)
			st--;
		if (!py_space(cp_at(u + st, e - st, &n)) || st + n != e)
			break;
		e = st;
	}
	*s += b;
	*len = e - b;
}

static void lstrip_nl(const char **s, size_t *len)
{
	while (*len && **s == '\n') {
		(*s)++;
		(*len)--;
	}
}

static void rstrip_nl(const char *s, size_t *len)
{
	(void)s;
	while (*len && s[*len - 1] == '\n')
		(*len)--;
}

static const char *find_first(const char *s, size_t len, const char *pat)
{
	return memmem(s, len, pat, strlen(pat));
}

static const char *find_last(const char *s, size_t len, const char *pat)
{
	size_t pl = strlen(pat);
	const char *p = NULL, *q = s;

	while ((q = memmem(q, len - (size_t)(q - s), pat, pl)) != NULL) {
		p = q;
		q++;
	}
	return p;
}

static bool starts_with(const char *s, size_t len, const char *pat)
{
	size_t pl = strlen(pat);

	return len >= pl && memcmp(s, pat, pl) == 0;
}

static bool ends_with(const char *s, size_t len, const char *pat)
{
	size_t pl = strlen(pat);

	return len >= pl && memcmp(s + len - pl, pat, pl) == 0;
}

/* ---------------------------------------------------------------- renderers */

static void llama_turn(struct api_wbuf *w, const char *role, const char *c, size_t len)
{
	api_w_str(w, "<|start_header_id|>");
	api_w_str(w, role);
	api_w_str(w, "<|end_header_id|>\n\n");
	py_strip(&c, &len);
	api_w_put(w, c, len);
	api_w_str(w, "<|eot_id|>");
}

static void render_llama3(struct api_wbuf *w, const struct chat_template *t,
			  const struct chat_msg *m, size_t n)
{
	size_t i;

	for (i = 0; i < n; i++) {
		if (i == 0)
			api_w_str(w, t->bos);
		llama_turn(w, chat_role_name(m[i].role), m[i].content, m[i].len);
	}
}

static void render_llama31(struct api_wbuf *w, const struct chat_template *t,
			   const struct chat_msg *m, size_t n, const struct chat_opts *o)
{
	char date[64];
	const char *sys = "";
	size_t i = 0, sys_len = 0;

	if (o && o->date_string) {
		snprintf(date, sizeof(date), "%s", o->date_string);
	} else if (t->date_today) {
		time_t now = time(NULL);
		struct tm tm;

		localtime_r(&now, &tm);
		strftime(date, sizeof(date), "%d %b %Y", &tm);
	} else {
		snprintf(date, sizeof(date), "26 Jul 2024");
	}
	if (n > 0 && m[0].role == CHAT_SYSTEM) {
		sys = m[0].content;
		sys_len = m[0].len;
		py_strip(&sys, &sys_len);
		i = 1;
	}
	api_w_str(w, t->bos);
	api_w_str(w, "<|start_header_id|>system<|end_header_id|>\n\n");
	api_w_str(w, "Cutting Knowledge Date: December 2023\nToday Date: ");
	api_w_str(w, date);
	api_w_str(w, "\n\n");
	api_w_put(w, sys, sys_len);
	api_w_str(w, "<|eot_id|>");
	for (; i < n; i++) {
		if (m[i].role == CHAT_TOOL) {
			/* `content is iterable` holds for a string: it is written | tojson */
			api_w_str(w, "<|start_header_id|>ipython<|end_header_id|>\n\n\"");
			api_w_esc(w, m[i].content, m[i].len);
			api_w_str(w, "\"<|eot_id|>");
		} else {
			llama_turn(w, chat_role_name(m[i].role), m[i].content, m[i].len);
		}
	}
}

static void chatml_turn(struct api_wbuf *w, const char *role, const char *c, size_t len)
{
	api_w_str(w, "<|im_start|>");
	api_w_str(w, role);
	api_w_ch(w, '\n');
	api_w_put(w, c, len);
	api_w_str(w, "<|im_end|>\n");
}

/* Qwen2.5 / Qwen3: consecutive tool messages share one user turn of <tool_response> blocks. */
static void tool_turn(struct api_wbuf *w, const struct chat_msg *m, size_t n, size_t i)
{
	if (i == 0 || m[i - 1].role != CHAT_TOOL)
		api_w_str(w, "<|im_start|>user");
	api_w_str(w, "\n<tool_response>\n");
	api_w_put(w, m[i].content, m[i].len);
	api_w_str(w, "\n</tool_response>");
	if (i + 1 == n || m[i + 1].role != CHAT_TOOL)
		api_w_str(w, "<|im_end|>\n");
}

static void render_chatml(struct api_wbuf *w, const struct chat_template *t,
			  const struct chat_msg *m, size_t n)
{
	size_t i;

	if (t->default_system[0] && (n == 0 || m[0].role != CHAT_SYSTEM))
		chatml_turn(w, "system", t->default_system, strlen(t->default_system));
	for (i = 0; i < n; i++) {
		if (m[i].role == CHAT_TOOL && t->tool_response)
			tool_turn(w, m, n, i);
		else
			chatml_turn(w, chat_role_name(m[i].role), m[i].content, m[i].len);
	}
}

static void render_qwen3(struct api_wbuf *w, const struct chat_msg *m, size_t n)
{
	size_t i, last_query = n ? n - 1 : 0;

	if (n > 0 && m[0].role == CHAT_SYSTEM)
		chatml_turn(w, "system", m[0].content, m[0].len);
	/* the last user message that is not a bundle of tool responses */
	for (i = n; i-- > 0;) {
		if (m[i].role == CHAT_USER &&
		    !(starts_with(m[i].content, m[i].len, "<tool_response>") &&
		      ends_with(m[i].content, m[i].len, "</tool_response>"))) {
			last_query = i;
			break;
		}
	}
	for (i = 0; i < n; i++) {
		const char *c = m[i].content;
		size_t len = m[i].len;

		if (m[i].role == CHAT_USER || (m[i].role == CHAT_SYSTEM && i > 0)) {
			chatml_turn(w, chat_role_name(m[i].role), c, len);
		} else if (m[i].role == CHAT_ASSISTANT) {
			const char *r = "";
			size_t rlen = 0;
			const char *close = find_last(c, len, "</think>");

			if (close) {
				/* content.split('</think>')[-1].lstrip('\n') */
				const char *after = close + strlen("</think>");
				size_t alen = len - (size_t)(after - c);
				/* content.split('</think>')[0].rstrip('\n').split('<think>')[-1]
				 * .lstrip('\n') */
				const char *first = find_first(c, len, "</think>"), *open;

				rlen = (size_t)(first - c);
				rstrip_nl(c, &rlen);
				open = find_last(c, rlen, "<think>");
				r = open ? open + strlen("<think>") : c;
				rlen -= (size_t)(r - c);
				lstrip_nl(&r, &rlen);
				lstrip_nl(&after, &alen);
				c = after;
				len = alen;
			}
			api_w_str(w, "<|im_start|>assistant\n");
			if (i > last_query && (i + 1 == n || rlen > 0)) {
				lstrip_nl(&r, &rlen); /* reasoning_content.strip('\n') */
				rstrip_nl(r, &rlen);
				api_w_str(w, "<think>\n");
				api_w_put(w, r, rlen);
				api_w_str(w, "\n</think>\n\n");
				lstrip_nl(&c, &len);
			}
			api_w_put(w, c, len);
			api_w_str(w, "<|im_end|>\n");
		} else if (m[i].role == CHAT_TOOL) {
			tool_turn(w, m, n, i);
		}
	}
}

ssize_t chat_render(const struct chat_template *t, const struct chat_msg *m, size_t n,
		    const struct chat_opts *opts, char *out, size_t cap)
{
	struct api_wbuf w = {out, cap, 0};
	bool gen = opts ? opts->add_generation_prompt : true;

	switch (t->family) {
	case CHAT_LLAMA3:
		render_llama3(&w, t, m, n);
		if (gen)
			api_w_str(&w, "<|start_header_id|>assistant<|end_header_id|>\n\n");
		break;
	case CHAT_LLAMA31:
		render_llama31(&w, t, m, n, opts);
		if (gen)
			api_w_str(&w, "<|start_header_id|>assistant<|end_header_id|>\n\n");
		break;
	case CHAT_CHATML:
		render_chatml(&w, t, m, n);
		if (gen)
			api_w_str(&w, "<|im_start|>assistant\n");
		break;
	case CHAT_QWEN3:
		render_qwen3(&w, m, n);
		if (gen) {
			api_w_str(&w, "<|im_start|>assistant\n");
			if (opts && opts->enable_thinking == 0)
				api_w_str(&w, "<think>\n\n</think>\n\n");
		}
		break;
	default:
		return -EINVAL;
	}
	return (ssize_t)api_w_end(&w);
}
