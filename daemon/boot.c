/* SPDX-License-Identifier: Apache-2.0 */
#include <errno.h>
#include <jansson.h>
#include <stdio.h>
#include <string.h>

#include "boot.h"
#include "log.h"

/* Does tokenizer_config.json ask for a BOS token in front of every prompt? */
static bool boot_wants_bos(const char *dir)
{
	char path[4200];
	snprintf(path, sizeof(path), "%s/tokenizer_config.json", dir);
	json_t *root = json_load_file(path, 0, NULL);
	bool yes = root && json_is_true(json_object_get(root, "add_bos_token"));
	json_decref(root);
	return yes;
}

static void boot_add_eos(struct boot_model *b, json_int_t id)
{
	if (id < 0 || id >= b->m->cfg.vocab_size || b->n_eos == MDL_MAX_EOS)
		return;
	for (int i = 0; i < b->n_eos; i++)
		if (b->eos_ids[i] == id)
			return;
	b->eos_ids[b->n_eos++] = (int32_t)id;
}

/* EOS ids: config.json's, plus generation_config.json's (Qwen lists <|endoftext|> only there,
 * and Hugging Face's generate() stops on either). A missing or odd generation_config is ignored:
 * it only adds ids. */
static void boot_eos(struct boot_model *b, const char *dir)
{
	char path[4200];
	for (int i = 0; i < b->m->cfg.n_eos; i++)
		boot_add_eos(b, b->m->cfg.eos_ids[i]);
	snprintf(path, sizeof(path), "%s/generation_config.json", dir);
	json_t *root = json_load_file(path, 0, NULL);
	json_t *e = root ? json_object_get(root, "eos_token_id") : NULL;
	if (json_is_integer(e))
		boot_add_eos(b, json_integer_value(e));
	for (size_t i = 0; json_is_array(e) && i < json_array_size(e); i++)
		if (json_is_integer(json_array_get(e, i)))
			boot_add_eos(b, json_integer_value(json_array_get(e, i)));
	json_decref(root);
}

int boot_model_open(struct boot_model *b, const char *dir)
{
	char err[MDL_ERR_LEN > TOK_ERR_LEN ? MDL_ERR_LEN : TOK_ERR_LEN];
	char path[4200];
	int r;

	memset(b, 0, sizeof(*b));
	r = mdl_open(&b->m, dir, err, sizeof(err));
	if (r) {
		log_error("model", "%s", err);
		return r;
	}
	snprintf(path, sizeof(path), "%s/tokenizer.json", dir);
	r = tok_load(&b->tok, path, err, sizeof(err));
	if (r) {
		log_error("tokenizer", "%s", err);
		boot_model_close(b);
		return r;
	}
	if (tok_vocab_size(b->tok) > b->m->cfg.vocab_size) {
		log_error("model", "%s: the tokenizer has %d ids but the model only %d", dir,
		          tok_vocab_size(b->tok), b->m->cfg.vocab_size);
		boot_model_close(b);
		return -EINVAL;
	}
	b->add_bos = boot_wants_bos(dir) && b->m->cfg.bos_id >= 0;
	boot_eos(b, dir);
	snprintf(path, sizeof(path), "%s/tokenizer_config.json", dir);
	r = chat_template_load(&b->chat, path, b->chat_err, sizeof(b->chat_err));
	b->have_chat = r == 0;
	if (!b->have_chat)
		log_warn("model",
		         "no usable chat template (%s): /v1/chat/completions will answer 400",
		         b->chat_err);
	return 0;
}

void boot_model_close(struct boot_model *b)
{
	tok_destroy(b->tok);
	mdl_close(b->m);
	b->tok = NULL;
	b->m = NULL;
}

ssize_t boot_encode_prompt(const struct boot_model *b, struct tok_enc *enc, const char *text,
                           size_t len, int32_t *ids, size_t cap)
{
	size_t n = 0;
	if (b->add_bos) {
		if (cap > 0)
			ids[0] = b->m->cfg.bos_id;
		n = 1;
	}
	ssize_t ne =
	    tok_encode(enc, text, len, ids + (n < cap ? n : cap), cap > n ? cap - n : 0, 0);
	return ne < 0 ? ne : (ssize_t)n + ne;
}
