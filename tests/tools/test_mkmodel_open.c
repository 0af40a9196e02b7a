/* SPDX-License-Identifier: Apache-2.0 */
/*
 * tests/tools/test_mkmodel_open.c: reopens a directory written by offpath-mkmodel with the
 * project's reader (mdl_open) and checks that what it reports agrees with what was asked for.
 * usage: test_mkmodel_open DIR llama|qwen2|qwen3 bf16|f16|f32. Exit 0 pass, 1 fail.
 */
#include <math.h>
#include <stdio.h>
#include <string.h>

#include "check.h"
#include "mdl.h"

int main(int argc, char **argv)
{
	if (argc != 4) {
		fprintf(stderr, "usage: %s DIR ARCH DTYPE\n", argv[0]);
		return 1;
	}
	char err[MDL_ERR_LEN];
	struct mdl *m = NULL;
	int rc = mdl_open(&m, argv[1], err, sizeof(err));
	if (rc) {
		fprintf(stderr, "FAIL: mdl_open(%s): %s\n", argv[1], err);
		return 1;
	}
	const struct mdl_config *c = &m->cfg;
	const char *dt = strcmp(argv[3], "bf16") == 0  ? "BF16"
	                 : strcmp(argv[3], "f16") == 0 ? "F16"
	                                               : "F32";
#define EXPECT(cond) CHECK(cond, "%s", argv[1])
	EXPECT(strcmp(mdl_arch_name(c->arch), argv[2]) == 0);
	EXPECT(strcmp(mdl_dtype_name(c->dtype), dt) == 0);
	EXPECT(c->n_layers > 0 && c->hidden > 0 && c->vocab_size > 0 && c->n_eos >= 1);
	EXPECT(c->attn_bias == (c->arch == MDL_ARCH_QWEN2));
	EXPECT(c->qk_norm == (c->arch == MDL_ARCH_QWEN3));
	EXPECT(c->rope.type == (c->arch == MDL_ARCH_LLAMA ? MDL_ROPE_LLAMA3 : MDL_ROPE_DEFAULT));
	EXPECT(m->embed.data && m->final_norm.data && m->lm_head.data && m->layers);
	EXPECT(c->tie_embeddings == (m->lm_head.data == m->embed.data));
	EXPECT(m->embed.shape[0] == c->vocab_size && m->embed.shape[1] == c->hidden);
	if (m->layers) {
		const struct mdl_layer *l = &m->layers[c->n_layers - 1];
		EXPECT(l->w_down.data && l->w_down.shape[0] == c->hidden &&
		       l->w_down.shape[1] == c->intermediate);
		EXPECT((l->bq.data != NULL) == c->attn_bias &&
		       (l->q_norm.data != NULL) == c->qk_norm);
	}
	if (m->final_norm.data) {
		double s = 0;
		size_t n = mdl_tensor_numel(&m->final_norm);
		for (size_t i = 0; i < n; i++)
			s += mdl_tensor_get(&m->final_norm, i);
		EXPECT(fabs(s / (double)n - 1.0) < 0.05); /* norms are 1 + 0.1 z */
	}
	mdl_close(m);
	return check_exit();
}
