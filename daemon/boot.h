/* SPDX-License-Identifier: Apache-2.0 */
/*
 * daemon/boot.h: what every command loads from a model directory before it can serve: the
 * weights (model/), the tokenizer (tokenizer.json), whether prompts start with BOS, and the chat
 * template (tokenizer_config.json). One place, so `generate` and `serve` treat a prompt the same.
 *
 * Ownership: boot_model_open() fills a caller-owned struct boot_model; boot_model_close() frees
 *   what it holds (safe on a zeroed or half-opened one).
 * Threading: open/close on the main thread; afterwards the members are read-only and shared.
 */
#ifndef OFFPATH_DAEMON_BOOT_H
#define OFFPATH_DAEMON_BOOT_H

#include <stdbool.h>

#include "chat.h"
#include "mdl.h"
#include "tok.h"

struct boot_model {
	struct mdl *m;
	struct tok *tok;
	bool add_bos; /* tokenizer_config.json add_bos_token and the model has a BOS id */
	int n_eos;    /* end-of-sequence ids: config.json's and generation_config.json's */
	int32_t eos_ids[MDL_MAX_EOS];
	bool have_chat; /* a chat template we can render was found */
	struct chat_template chat;
	char
	    chat_err[512]; /* why there is no chat template (for the 400 on /v1/chat/completions) */
};

/* Loads DIR. Logs what went wrong (once) and returns a negative errno on failure. */
int boot_model_open(struct boot_model *b, const char *dir);
void boot_model_close(struct boot_model *b);

/* A completion prompt as the model expects it: BOS when the tokenizer config asks for one, then
 * the text's tokens (special-token text encoded as ordinary text). Returns the number of ids the
 * prompt needs (only the first cap are written), or a negative errno. */
ssize_t boot_encode_prompt(const struct boot_model *b, struct tok_enc *enc, const char *text,
                           size_t len, int32_t *ids, size_t cap);

#endif
