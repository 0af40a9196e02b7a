/* SPDX-License-Identifier: Apache-2.0 */
/* model/mdl.c: open a Hugging Face model directory and bind every tensor the architecture needs. */
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include <jansson.h>

#include "mdl.h"
#include "mdl_pvt.h"
#include "safetensors.h"

#define MDL_MAX_SHARDS     4096
#define MDL_MAX_SHARD_NAME 255
#define MDL_MAX_INDEX      (64 * 1024 * 1024) /* model.safetensors.index.json */
#define MDL_PATH_MAX       (4096 + MDL_MAX_SHARD_NAME + 2)

struct mdl_files {
	size_t n;                /* shards opened */
	struct mdl_st_file **st; /* n entries */
};

/* Lookup state while binding: either one file, or an index whose weight_map names shards. */
struct mdl_bind {
	struct mdl_files *files;
	const json_t *wmap; /* NULL for a single model.safetensors */
	const char *index_path;
	char *err;
	size_t errlen;
};

static bool mdl_file_exists(const char *path)
{
	struct stat sb;
	return stat(path, &sb) == 0;
}

/* A shard name from the index must name a file directly inside the model directory. */
static bool mdl_shard_name_ok(const char *s)
{
	size_t n = strlen(s);
	if (n == 0 || n > MDL_MAX_SHARD_NAME)
		return false;
	if (strcmp(s, ".") == 0 || strcmp(s, "..") == 0)
		return false;
	return strchr(s, '/') == NULL && strchr(s, '\\') == NULL;
}

static int mdl_files_add(struct mdl_files *fs, const char *path, char *err, size_t errlen)
{
	struct mdl_st_file *st;
	int rc = mdl_st_open(&st, path, err, errlen);
	if (rc)
		return rc;
	fs->st[fs->n++] = st;
	return 0;
}

static void mdl_files_free(struct mdl_files *fs)
{
	if (!fs)
		return;
	for (size_t i = 0; i < fs->n; i++)
		mdl_st_close(fs->st[i]);
	free(fs->st);
	free(fs);
}

/* Open model.safetensors.index.json and every distinct shard it names. *root_out keeps the
 * parsed index alive for lookups. */
static int mdl_open_index(struct mdl_files *fs, const char *dir, const char *index_path,
                          json_t **root_out, const json_t **wmap_out, char *err, size_t errlen)
{
	json_t *root;
	int rc = mdl_json_load(index_path, MDL_MAX_INDEX, &root, err, errlen);
	if (rc)
		return rc;
	*root_out = root;
	const json_t *wmap = json_is_object(root) ? json_object_get(root, "weight_map") : NULL;
	if (!json_is_object(wmap)) {
		mdl_err(err, errlen, index_path, "\"weight_map\" missing or not a JSON object");
		return -EINVAL;
	}
	size_t n = json_object_size(wmap);
	fs->st = calloc(n ? n : 1, sizeof(*fs->st));
	if (!fs->st) {
		mdl_err(err, errlen, index_path, "out of memory");
		return -ENOMEM;
	}
	const char *tname;
	const json_t *v;
	json_object_foreach((json_t *)wmap, tname, v)
	{
		if (!json_is_string(v)) {
			mdl_err(err, errlen, index_path,
			        "weight_map entry for tensor '%s' is not a string", tname);
			return -EINVAL;
		}
		const char *shard = json_string_value(v);
		if (!mdl_shard_name_ok(shard)) {
			mdl_err(err, errlen, index_path,
			        "tensor '%s': shard name '%.300s' is not a plain file name in the "
			        "model "
			        "directory (no '/', '..' or absolute paths)",
			        tname, shard);
			return -EINVAL;
		}
		bool seen = false;
		for (size_t i = 0; i < fs->n && !seen; i++) {
			const char *p = fs->st[i]->path;
			size_t pl = strlen(p), sl = strlen(shard);
			seen = pl > sl && p[pl - sl - 1] == '/' && strcmp(p + pl - sl, shard) == 0;
		}
		if (seen)
			continue;
		if (fs->n >= MDL_MAX_SHARDS) {
			mdl_err(err, errlen, index_path, "more than %d shard files",
			        MDL_MAX_SHARDS);
			return -EINVAL;
		}
		char path[MDL_PATH_MAX];
		snprintf(path, sizeof(path), "%s/%s", dir, shard);
		rc = mdl_files_add(fs, path, err, errlen);
		if (rc)
			return rc;
	}
	*wmap_out = wmap;
	return 0;
}

/* The shard that holds name, or NULL with err filled. */
static const struct mdl_st_file *mdl_locate(struct mdl_bind *b, const char *name)
{
	if (!b->wmap)
		return b->files->st[0];
	const json_t *v = json_object_get(b->wmap, name);
	if (!v) {
		mdl_err(b->err, b->errlen, b->index_path, "missing tensor '%s' (not in weight_map)",
		        name);
		return NULL;
	}
	const char *shard = json_string_value(v);
	size_t sl = strlen(shard);
	for (size_t i = 0; i < b->files->n; i++) {
		const char *p = b->files->st[i]->path;
		size_t pl = strlen(p);
		if (pl > sl && p[pl - sl - 1] == '/' && strcmp(p + pl - sl, shard) == 0)
			return b->files->st[i];
	}
	mdl_err(b->err, b->errlen, b->index_path, "tensor '%s': shard '%s' was not opened", name,
	        shard);
	return NULL;
}

/* Bind tensor name into t and check that its shape is exactly (d0) or (d0, d1). */
static int mdl_bind_tensor(struct mdl_bind *b, const char *name, struct mdl_tensor *t, int ndim,
                           int64_t d0, int64_t d1)
{
	const struct mdl_st_file *st = mdl_locate(b, name);
	if (!st)
		return -ENOENT;
	int rc = mdl_st_view(st, name, t, b->err, b->errlen);
	if (rc)
		return rc;
	int64_t want[2] = {d0, d1};
	bool ok = t->ndim == ndim;
	for (int i = 0; ok && i < ndim; i++)
		ok = t->shape[i] == want[i];
	if (!ok) {
		char got[128] = "";
		size_t off = 0;
		for (int i = 0; i < t->ndim && off < sizeof(got); i++)
			off += (size_t)snprintf(got + off, sizeof(got) - off, "%s%lld",
			                        i ? ", " : "", (long long)t->shape[i]);
		if (ndim == 1)
			mdl_err(b->err, b->errlen, st->path,
			        "tensor '%s' has shape [%s], config.json implies [%lld]", name, got,
			        (long long)d0);
		else
			mdl_err(b->err, b->errlen, st->path,
			        "tensor '%s' has shape [%s], config.json implies [%lld, %lld]",
			        name, got, (long long)d0, (long long)d1);
		return -EINVAL;
	}
	return 0;
}

static int mdl_bind_layer(struct mdl_bind *b, const struct mdl_config *c, int l,
                          struct mdl_layer *L)
{
	int64_t h = c->hidden, q = (int64_t)c->n_heads * c->head_dim;
	int64_t kv = (int64_t)c->n_kv_heads * c->head_dim, im = c->intermediate;
	char n[128];
	int rc;
#define BIND(field, suffix, nd, a, bb)                                                             \
	do {                                                                                       \
		snprintf(n, sizeof(n), "model.layers.%d.%s", l, suffix);                           \
		if ((rc = mdl_bind_tensor(b, n, &L->field, nd, a, bb)))                            \
			return rc;                                                                 \
	} while (0)
	BIND(attn_norm, "input_layernorm.weight", 1, h, 0);
	BIND(wq, "self_attn.q_proj.weight", 2, q, h);
	BIND(wk, "self_attn.k_proj.weight", 2, kv, h);
	BIND(wv, "self_attn.v_proj.weight", 2, kv, h);
	BIND(wo, "self_attn.o_proj.weight", 2, h, q);
	if (c->attn_bias) {
		BIND(bq, "self_attn.q_proj.bias", 1, q, 0);
		BIND(bk, "self_attn.k_proj.bias", 1, kv, 0);
		BIND(bv, "self_attn.v_proj.bias", 1, kv, 0);
	}
	if (c->qk_norm) {
		BIND(q_norm, "self_attn.q_norm.weight", 1, c->head_dim, 0);
		BIND(k_norm, "self_attn.k_norm.weight", 1, c->head_dim, 0);
	}
	BIND(mlp_norm, "post_attention_layernorm.weight", 1, h, 0);
	BIND(w_gate, "mlp.gate_proj.weight", 2, im, h);
	BIND(w_up, "mlp.up_proj.weight", 2, im, h);
	BIND(w_down, "mlp.down_proj.weight", 2, h, im);
#undef BIND
	return 0;
}

int mdl_open(struct mdl **out, const char *dir, char *err, size_t errlen)
{
	*out = NULL;
	if (err && errlen)
		err[0] = '\0';
	if (strlen(dir) >= sizeof(((struct mdl *)0)->dir)) {
		mdl_err(err, errlen, "(model directory)", "path longer than %zu bytes",
		        sizeof(((struct mdl *)0)->dir) - 1);
		return -ENAMETOOLONG;
	}
	int rc;
	json_t *index = NULL;
	char path[MDL_PATH_MAX], index_path[MDL_PATH_MAX];
	struct mdl *m = calloc(1, sizeof(*m));
	struct mdl_files *fs = calloc(1, sizeof(*fs));
	if (!m || !fs) {
		free(m);
		free(fs);
		mdl_err(err, errlen, dir, "out of memory");
		return -ENOMEM;
	}
	m->files = fs;
	snprintf(m->dir, sizeof(m->dir), "%s", dir);
	struct mdl_bind b = {.files = fs, .err = err, .errlen = errlen};

	snprintf(path, sizeof(path), "%s/config.json", dir);
	rc = mdl_config_load(&m->cfg, path, err, errlen);
	if (rc)
		goto fail;
	const struct mdl_config *c = &m->cfg;

	snprintf(path, sizeof(path), "%s/model.safetensors", dir);
	snprintf(index_path, sizeof(index_path), "%s/model.safetensors.index.json", dir);
	if (mdl_file_exists(path)) {
		fs->st = calloc(1, sizeof(*fs->st));
		if (!fs->st) {
			rc = -ENOMEM;
			mdl_err(err, errlen, path, "out of memory");
			goto fail;
		}
		rc = mdl_files_add(fs, path, err, errlen);
		if (rc)
			goto fail;
	} else if (mdl_file_exists(index_path)) {
		rc = mdl_open_index(fs, dir, index_path, &index, &b.wmap, err, errlen);
		if (rc)
			goto fail;
		b.index_path = index_path;
	} else {
		mdl_err(err, errlen, dir,
		        "no model.safetensors or model.safetensors.index.json in the directory");
		rc = -ENOENT;
		goto fail;
	}

	rc = mdl_bind_tensor(&b, "model.embed_tokens.weight", &m->embed, 2, c->vocab_size,
	                     c->hidden);
	if (rc)
		goto fail;
	rc = mdl_bind_tensor(&b, "model.norm.weight", &m->final_norm, 1, c->hidden, 0);
	if (rc)
		goto fail;
	if (c->tie_embeddings) /* as transformers does: a stored lm_head.weight is ignored */
		m->lm_head = m->embed;
	else if ((rc = mdl_bind_tensor(&b, "lm_head.weight", &m->lm_head, 2, c->vocab_size,
	                               c->hidden)))
		goto fail;

	m->layers = calloc((size_t)c->n_layers, sizeof(*m->layers));
	if (!m->layers) {
		rc = -ENOMEM;
		mdl_err(err, errlen, dir, "out of memory for %d layers", c->n_layers);
		goto fail;
	}
	for (int l = 0; l < c->n_layers; l++) {
		rc = mdl_bind_layer(&b, c, l, &m->layers[l]);
		if (rc)
			goto fail;
	}
	json_decref(index);
	*out = m;
	return 0;
fail:
	json_decref(index);
	mdl_close(m);
	return rc;
}

void mdl_close(struct mdl *m)
{
	if (!m)
		return;
	mdl_files_free(m->files);
	free(m->layers);
	free(m);
}
