/* SPDX-License-Identifier: Apache-2.0 */
/*
 * daemon/chat.h: chat templates without a Jinja engine. A model's tokenizer_config.json carries
 * its chat template as Jinja source; we recognise the family from that source and render it in C,
 * byte for byte as Jinja2 (under transformers' settings) renders the real template for plain-text
 * messages (system/user/assistant/tool, string content, no tool definitions):
 *
 *   CHAT_LLAMA3   Llama 3 / 3.0 ("<|start_header_id|>", no date header): bos, then
 *                 "<|start_header_id|>{role}<|end_header_id|>\n\n{content|trim}<|eot_id|>" per
 *                 message, then the assistant header.
 *   CHAT_LLAMA31  Llama 3.1 / 3.2 / 3.3 ("Cutting Knowledge Date"): a system block is always
 *                 written, "Cutting Knowledge Date: December 2023\nToday Date: {date}\n\n" followed
 *                 by the first message's content|trim when it is a system message; tool messages
 *                 become "ipython" turns with the content as a JSON string (the template's
 *                 `is iterable` test is true for strings). date: opts->date_string, else today as
 *                 "%d %b %Y" when the template calls strftime_now (3.2), else "26 Jul 2024".
 *   CHAT_CHATML   ChatML ("<|im_start|>"): "<|im_start|>{role}\n{content}<|im_end|>\n" per
 *                 message; a literal default system prompt in the template (Qwen2/2.5: "You are
 *                 Qwen, created by Alibaba Cloud...") is written when messages[0] is not system;
 *                 when the template knows "<tool_response>", tool messages are grouped into a user
 *                 turn as Qwen2.5 does.
 *   CHAT_QWEN3    Qwen3 (ChatML with "<think>" handling): history assistant turns lose their
 *                 <think> part, assistant turns after the last user query keep it as
 *                 "<think>\n{reasoning}\n</think>\n\n", enable_thinking=false appends
 *                 "<think>\n\n</think>\n\n" to the generation prompt; default (undefined) appends
 *                 nothing, as the template does.
 *
 * Ownership: struct chat_template is plain memory (no pointers); chat_msg points at caller memory.
 * Threading: no global state; all functions are reentrant.
 */
#ifndef OFFPATH_DAEMON_CHAT_H
#define OFFPATH_DAEMON_CHAT_H

#include <stdbool.h>
#include <stddef.h>
#include <sys/types.h>

enum chat_role {
	CHAT_SYSTEM = 0,
	CHAT_USER = 1,
	CHAT_ASSISTANT = 2,
	CHAT_TOOL = 3,
};

struct chat_msg {
	enum chat_role role;
	const char *content; /* UTF-8, len bytes (need not be NUL-terminated) */
	size_t len;
};

enum chat_family {
	CHAT_LLAMA3 = 0,
	CHAT_LLAMA31 = 1,
	CHAT_CHATML = 2,
	CHAT_QWEN3 = 3,
};

#define CHAT_TOKEN_MAX   64
#define CHAT_DEFSYS_MAX  512

struct chat_template {
	enum chat_family family;
	bool date_today;                /* LLAMA31: the template calls strftime_now */
	bool tool_response;             /* CHATML: tool turns as Qwen2.5's <tool_response> */
	char bos[CHAT_TOKEN_MAX];       /* LLAMA*: written first ("<|begin_of_text|>") */
	char default_system[CHAT_DEFSYS_MAX]; /* CHATML: "" when the template has none */
};

struct chat_opts {
	bool add_generation_prompt; /* end with the assistant header (what a server wants) */
	int enable_thinking;        /* QWEN3: -1 undefined (default), 0 false, 1 true */
	const char *date_string;    /* LLAMA31: overrides the date (NULL: as described above) */
};

/* Recognise the family of Jinja source `jinja`. bos: the tokenizer's bos_token (NULL: the
 * family's usual one). Returns 0, or -ENOTSUP for a template we cannot render. */
int chat_template_detect(struct chat_template *t, const char *jinja, const char *bos);

/* Read chat_template and bos_token from a tokenizer_config.json (a chat_template given as a list
 * of {name, template} uses "default"). Returns 0, -ENOENT/-EINVAL/-ENOTSUP with err filled. */
int chat_template_load(struct chat_template *t, const char *path, char *err, size_t errlen);

/* Family name ("llama3", "llama3.1", "chatml", "qwen3"). */
const char *chat_family_name(enum chat_family f);

/* "system", "user", "assistant", "tool". */
const char *chat_role_name(enum chat_role r);

/* Render n messages into out (cap bytes). Returns the bytes the prompt needs (it is complete and
 * NUL-terminated only if that is < cap), or -EINVAL for a role the family cannot express. */
ssize_t chat_render(const struct chat_template *t, const struct chat_msg *m, size_t n,
		    const struct chat_opts *opts, char *out, size_t cap);

#endif /* OFFPATH_DAEMON_CHAT_H */
