/* SPDX-License-Identifier: Apache-2.0 */
/* model/config.c: config.json (Hugging Face transformers) -> struct mdl_config, validated. */
#include <errno.h>
#include <math.h>
#include <stdio.h>
#include <string.h>
#include <sys/stat.h>

#include <jansson.h>

#include "mdl.h"
#include "mdl_pvt.h"

/* Sanity limits: far above any released model, low enough that products of two of them fit
 * comfortably in 64 bits and that a corrupt file is caught before it sizes an allocation. */
#define CFG_MAX_VOCAB        (4 * 1024 * 1024)
#define CFG_MAX_HIDDEN       65536
#define CFG_MAX_INTERMEDIATE (1024 * 1024)
#define CFG_MAX_LAYERS       1024
#define CFG_MAX_HEADS        1024
#define CFG_MAX_HEAD_DIM     1024
#define CFG_MAX_POS          (64 * 1024 * 1024)
#define CFG_MAX_FILE         (16 * 1024 * 1024) /* config.json; real ones are a few KB */

/* Present and not null. */
static const json_t *cfg_get(const json_t *o, const char *key)
{
	const json_t *v = json_object_get(o, key);
	return json_is_null(v) ? NULL : v;
}

/* *v <- key's value, present and not null. Returns 1 when present; 0 when absent and def_ok (the
 * caller applies its default); -EINVAL, with the message, when absent and required. */
static int cfg_field(const json_t *o, const char *key, const json_t **v, bool def_ok,
                     const char *file, char *err, size_t errlen)
{
	*v = cfg_get(o, key);
	if (*v)
		return 1;
	if (def_ok)
		return 0;
	mdl_err(err, errlen, file, "missing required field \"%s\"", key);
	return -EINVAL;
}

/* An integer field in [lo, hi]. Absent: *out = def when def_ok, else an error. */
static int cfg_int(const json_t *o, const char *key, int *out, bool def_ok, int def, long long lo,
                   long long hi, const char *file, char *err, size_t errlen)
{
	const json_t *v;
	int rc = cfg_field(o, key, &v, def_ok, file, err, errlen);
	if (rc <= 0) {
		if (rc == 0)
			*out = def;
		return rc;
	}
	if (!json_is_integer(v)) {
		mdl_err(err, errlen, file, "\"%s\" must be an integer", key);
		return -EINVAL;
	}
	long long x = json_integer_value(v);
	if (x < lo || x > hi) {
		mdl_err(err, errlen, file, "\"%s\" = %lld is out of range [%lld, %lld]", key, x, lo,
		        hi);
		return -EINVAL;
	}
	*out = (int)x;
	return 0;
}

/* A finite number (integer or real) in (lo, hi]. Absent: def. */
static int cfg_num(const json_t *o, const char *key, double *out, bool def_ok, double def,
                   double lo, double hi, const char *file, char *err, size_t errlen)
{
	const json_t *v;
	int rc = cfg_field(o, key, &v, def_ok, file, err, errlen);
	if (rc <= 0) {
		if (rc == 0)
			*out = def;
		return rc;
	}
	if (!json_is_number(v)) {
		mdl_err(err, errlen, file, "\"%s\" must be a number", key);
		return -EINVAL;
	}
	double x = json_number_value(v);
	if (!isfinite(x) || !(x > lo) || x > hi) {
		mdl_err(err, errlen, file, "\"%s\" = %g is out of range (%g, %g]", key, x, lo, hi);
		return -EINVAL;
	}
	*out = x;
	return 0;
}

static int cfg_bool(const json_t *o, const char *key, bool *out, bool def, const char *file,
                    char *err, size_t errlen)
{
	const json_t *v = cfg_get(o, key);
	if (!v) {
		*out = def;
		return 0;
	}
	if (!json_is_boolean(v)) {
		mdl_err(err, errlen, file, "\"%s\" must be true or false", key);
		return -EINVAL;
	}
	*out = json_is_true(v);
	return 0;
}

struct cfg_arch_name {
	const char *name;
	enum mdl_arch arch;
};

static const struct cfg_arch_name cfg_archs[] = {
    {"LlamaForCausalLM", MDL_ARCH_LLAMA},
    {"MistralForCausalLM", MDL_ARCH_LLAMA},
    {"Qwen2ForCausalLM", MDL_ARCH_QWEN2},
    {"Qwen3ForCausalLM", MDL_ARCH_QWEN3},
};

static const struct cfg_arch_name cfg_model_types[] = {
    {"llama", MDL_ARCH_LLAMA},
    {"mistral", MDL_ARCH_LLAMA},
    {"qwen2", MDL_ARCH_QWEN2},
    {"qwen3", MDL_ARCH_QWEN3},
};

static int cfg_arch(const json_t *root, struct mdl_config *cfg, int *max_pos_def, const char *file,
                    char *err, size_t errlen)
{
	const json_t *a = cfg_get(root, "architectures");
	const char *name = NULL;
	const struct cfg_arch_name *tab = cfg_archs;
	size_t ntab = sizeof(cfg_archs) / sizeof(cfg_archs[0]);
	if (a) {
		if (!json_is_array(a) || json_array_size(a) == 0 ||
		    !json_is_string(json_array_get(a, 0))) {
			mdl_err(err, errlen, file,
			        "\"architectures\" must be a non-empty array of strings");
			return -EINVAL;
		}
		name = json_string_value(json_array_get(a, 0));
	} else {
		const json_t *mt = cfg_get(root, "model_type");
		if (!mt) {
			mdl_err(err, errlen, file,
			        "missing required field \"architectures\" (or \"model_type\")");
			return -EINVAL;
		}
		if (!json_is_string(mt)) {
			mdl_err(err, errlen, file, "\"model_type\" must be a string");
			return -EINVAL;
		}
		name = json_string_value(mt);
		tab = cfg_model_types;
		ntab = sizeof(cfg_model_types) / sizeof(cfg_model_types[0]);
	}
	for (size_t i = 0; i < ntab; i++) {
		if (strcmp(tab[i].name, name) == 0) {
			cfg->arch = tab[i].arch;
			/* transformers' defaults for max_position_embeddings */
			*max_pos_def = strstr(name, "istral")        ? 131072
			               : cfg->arch == MDL_ARCH_LLAMA ? 2048
			                                             : 32768;
			return 0;
		}
	}
	mdl_err(
	    err, errlen, file,
	    "unsupported architecture '%.64s' (supported: LlamaForCausalLM, MistralForCausalLM, "
	    "Qwen2ForCausalLM, Qwen3ForCausalLM)",
	    name);
	return -ENOTSUP;
}

/* rope_scaling (transformers <= 4.x) or rope_parameters (5.x): null or an object. */
static int cfg_rope(const json_t *root, struct mdl_config *cfg, const char *file, char *err,
                    size_t errlen)
{
	struct mdl_rope *r = &cfg->rope;
	double theta;
	int rc = cfg_num(root, "rope_theta", &theta, true, 10000.0, 0.0, 1e12, file, err, errlen);
	if (rc)
		return rc;
	r->type = MDL_ROPE_DEFAULT;
	r->theta = theta;
	r->factor = 1.0f;
	r->low_freq_factor = 1.0f;
	r->high_freq_factor = 1.0f;
	r->original_max_pos = 0;

	const char *key = "rope_scaling";
	const json_t *s = cfg_get(root, key);
	if (!s) {
		key = "rope_parameters";
		s = cfg_get(root, key);
		if (s && json_is_object(s) && cfg_get(s, "rope_theta")) {
			rc = cfg_num(s, "rope_theta", &theta, false, 0, 0.0, 1e12, file, err,
			             errlen);
			if (rc)
				return rc;
			r->theta = theta;
		}
	}
	if (!s)
		return 0;
	if (!json_is_object(s)) {
		mdl_err(err, errlen, file, "\"%s\" must be null or an object", key);
		return -EINVAL;
	}
	const json_t *t = cfg_get(s, "rope_type");
	if (!t)
		t = cfg_get(s, "type");
	if (!t) {
		mdl_err(err, errlen, file, "\"%s\" has no \"rope_type\" (or \"type\")", key);
		return -EINVAL;
	}
	if (!json_is_string(t)) {
		mdl_err(err, errlen, file, "\"%s\".rope_type must be a string", key);
		return -EINVAL;
	}
	const char *ty = json_string_value(t);
	double f, lo, hi;
	int omax;
	if (strcmp(ty, "default") == 0)
		return 0;
	if (strcmp(ty, "linear") == 0) {
		rc = cfg_num(s, "factor", &f, false, 0, 0.0, 1e6, file, err, errlen);
		if (rc)
			return rc;
		r->type = MDL_ROPE_LINEAR;
		r->factor = (float)f;
		return 0;
	}
	if (strcmp(ty, "llama3") == 0) {
		rc = cfg_num(s, "factor", &f, false, 0, 0.0, 1e6, file, err, errlen);
		if (!rc)
			rc = cfg_num(s, "low_freq_factor", &lo, false, 0, 0.0, 1e6, file, err,
			             errlen);
		if (!rc)
			rc = cfg_num(s, "high_freq_factor", &hi, false, 0, 0.0, 1e6, file, err,
			             errlen);
		if (!rc)
			rc = cfg_int(s, "original_max_position_embeddings", &omax, false, 0, 1,
			             CFG_MAX_POS, file, err, errlen);
		if (rc)
			return rc;
		if (!(hi > lo)) {
			mdl_err(err, errlen, file,
			        "\"%s\": high_freq_factor (%g) must exceed low_freq_factor (%g)",
			        key, hi, lo);
			return -EINVAL;
		}
		r->type = MDL_ROPE_LLAMA3;
		r->factor = (float)f;
		r->low_freq_factor = (float)lo;
		r->high_freq_factor = (float)hi;
		r->original_max_pos = omax;
		return 0;
	}
	mdl_err(err, errlen, file,
	        "unsupported rope type '%.32s' in \"%s\" (supported: default, linear, llama3)", ty,
	        key);
	return -ENOTSUP;
}

static int cfg_dtype(const json_t *root, struct mdl_config *cfg, const char *file, char *err,
                     size_t errlen)
{
	const char *key = "dtype";
	const json_t *v = cfg_get(root, key);
	if (!v) {
		key = "torch_dtype";
		v = cfg_get(root, key);
	}
	cfg->dtype = MDL_F32; /* transformers' default when the field is absent */
	if (!v)
		return 0;
	if (!json_is_string(v)) {
		mdl_err(err, errlen, file, "\"%s\" must be a string", key);
		return -EINVAL;
	}
	const char *s = json_string_value(v);
	if (strcmp(s, "bfloat16") == 0)
		cfg->dtype = MDL_BF16;
	else if (strcmp(s, "float16") == 0 || strcmp(s, "half") == 0)
		cfg->dtype = MDL_F16;
	else if (strcmp(s, "float32") == 0 || strcmp(s, "float") == 0)
		cfg->dtype = MDL_F32;
	else {
		mdl_err(err, errlen, file,
		        "unsupported \"%s\" '%.32s' (supported: bfloat16, float16, float32)", key,
		        s);
		return -ENOTSUP;
	}
	return 0;
}

static int cfg_tokens(const json_t *root, struct mdl_config *cfg, const char *file, char *err,
                      size_t errlen)
{
	int rc = cfg_int(root, "bos_token_id", &cfg->bos_id, true, -1, 0, cfg->vocab_size - 1, file,
	                 err, errlen);
	if (rc)
		return rc;
	cfg->n_eos = 0;
	const json_t *e = cfg_get(root, "eos_token_id");
	if (!e)
		return 0;
	if (json_is_integer(e)) {
		rc = cfg_int(root, "eos_token_id", &cfg->eos_ids[0], false, 0, 0,
		             cfg->vocab_size - 1, file, err, errlen);
		if (rc)
			return rc;
		cfg->n_eos = 1;
		return 0;
	}
	if (!json_is_array(e)) {
		mdl_err(err, errlen, file,
		        "\"eos_token_id\" must be an integer or a list of integers");
		return -EINVAL;
	}
	if (json_array_size(e) > MDL_MAX_EOS) {
		mdl_err(err, errlen, file, "\"eos_token_id\" lists %zu ids, at most %d supported",
		        json_array_size(e), MDL_MAX_EOS);
		return -EINVAL;
	}
	size_t i;
	const json_t *x;
	json_array_foreach(e, i, x)
	{
		if (!json_is_integer(x) || json_integer_value(x) < 0 ||
		    json_integer_value(x) >= cfg->vocab_size) {
			mdl_err(err, errlen, file,
			        "\"eos_token_id\"[%zu] is not an integer in [0, vocab_size)", i);
			return -EINVAL;
		}
		cfg->eos_ids[cfg->n_eos++] = (int)json_integer_value(x);
	}
	return 0;
}

int mdl_json_load(const char *path, int max_bytes, json_t **root, char *err, size_t errlen)
{
	struct stat sb;
	if (stat(path, &sb) != 0) {
		int e = errno;
		mdl_err(err, errlen, path, "cannot open: %s", strerror(e));
		return -e;
	}
	if (!S_ISREG(sb.st_mode) || sb.st_size > max_bytes) {
		mdl_err(err, errlen, path, "not a regular file of at most %d bytes", max_bytes);
		return -EINVAL;
	}
	json_error_t je;
	*root = json_load_file(path, JSON_REJECT_DUPLICATES, &je);
	if (!*root) {
		mdl_err(err, errlen, path, "invalid JSON: %s (line %d, column %d)", je.text,
		        je.line, je.column);
		return -EINVAL;
	}
	return 0;
}

int mdl_config_load(struct mdl_config *cfg, const char *path, char *err, size_t errlen)
{
	if (err && errlen)
		err[0] = '\0';
	memset(cfg, 0, sizeof(*cfg));
	json_t *root;
	int rc = mdl_json_load(path, CFG_MAX_FILE, &root, err, errlen);
	if (rc)
		return rc;
	int max_pos_def = 2048;
	if (!json_is_object(root)) {
		mdl_err(err, errlen, path, "not a JSON object");
		rc = -EINVAL;
		goto out;
	}
	rc = cfg_arch(root, cfg, &max_pos_def, path, err, errlen);
	if (rc)
		goto out;
	const char *f = path;
	if ((rc = cfg_int(root, "vocab_size", &cfg->vocab_size, false, 0, 1, CFG_MAX_VOCAB, f, err,
	                  errlen)) ||
	    (rc = cfg_int(root, "hidden_size", &cfg->hidden, false, 0, 1, CFG_MAX_HIDDEN, f, err,
	                  errlen)) ||
	    (rc = cfg_int(root, "intermediate_size", &cfg->intermediate, false, 0, 1,
	                  CFG_MAX_INTERMEDIATE, f, err, errlen)) ||
	    (rc = cfg_int(root, "num_hidden_layers", &cfg->n_layers, false, 0, 1, CFG_MAX_LAYERS, f,
	                  err, errlen)) ||
	    (rc = cfg_int(root, "num_attention_heads", &cfg->n_heads, false, 0, 1, CFG_MAX_HEADS, f,
	                  err, errlen)) ||
	    (rc = cfg_int(root, "num_key_value_heads", &cfg->n_kv_heads, true, cfg->n_heads, 1,
	                  CFG_MAX_HEADS, f, err, errlen)) ||
	    (rc = cfg_int(root, "max_position_embeddings", &cfg->max_pos, true, max_pos_def, 1,
	                  CFG_MAX_POS, f, err, errlen)))
		goto out;
	if (cfg->n_heads % cfg->n_kv_heads != 0) {
		mdl_err(err, errlen, f,
		        "num_attention_heads (%d) is not a multiple of num_key_value_heads (%d)",
		        cfg->n_heads, cfg->n_kv_heads);
		rc = -EINVAL;
		goto out;
	}
	if (!cfg_get(root, "head_dim") && cfg->hidden % cfg->n_heads != 0) {
		mdl_err(err, errlen, f,
		        "hidden_size (%d) is not a multiple of num_attention_heads (%d) and no "
		        "head_dim is given",
		        cfg->hidden, cfg->n_heads);
		rc = -EINVAL;
		goto out;
	}
	rc = cfg_int(root, "head_dim", &cfg->head_dim, true, cfg->hidden / cfg->n_heads, 2,
	             CFG_MAX_HEAD_DIM, f, err, errlen);
	if (rc)
		goto out;
	if (cfg->head_dim % 2 != 0) {
		mdl_err(err, errlen, f, "head_dim (%d) must be even for rotary embeddings",
		        cfg->head_dim);
		rc = -EINVAL;
		goto out;
	}
	double eps;
	rc = cfg_num(root, "rms_norm_eps", &eps, true, 1e-6, 0.0, 1.0, f, err, errlen);
	if (rc)
		goto out;
	cfg->rms_eps = (float)eps;
	if ((rc = cfg_rope(root, cfg, f, err, errlen)) ||
	    (rc = cfg_bool(root, "tie_word_embeddings", &cfg->tie_embeddings, false, f, err,
	                   errlen)))
		goto out;

	/* Attention and MLP biases: qwen2 always has q/k/v bias and nothing else. Llama and qwen3
	 * attention_bias also puts a bias on o_proj, and mlp_bias on the MLP: neither is
	 * represented in struct mdl_layer, so they are refused rather than silently dropped. */
	bool ab = false, mb = false, sw = false;
	if ((rc = cfg_bool(root, "attention_bias", &ab, false, f, err, errlen)) ||
	    (rc = cfg_bool(root, "mlp_bias", &mb, false, f, err, errlen)) ||
	    (rc = cfg_bool(root, "use_sliding_window", &sw, false, f, err, errlen)))
		goto out;
	if (cfg->arch != MDL_ARCH_QWEN2 && (ab || mb)) {
		mdl_err(err, errlen, f,
		        "\"%s\": true is not supported (o_proj/MLP biases are not implemented)",
		        ab ? "attention_bias" : "mlp_bias");
		rc = -ENOTSUP;
		goto out;
	}
	if (sw) {
		mdl_err(err, errlen, f, "\"use_sliding_window\": true is not supported");
		rc = -ENOTSUP;
		goto out;
	}
	cfg->attn_bias = cfg->arch == MDL_ARCH_QWEN2;
	cfg->qk_norm = cfg->arch == MDL_ARCH_QWEN3;

	if ((rc = cfg_tokens(root, cfg, f, err, errlen)) ||
	    (rc = cfg_dtype(root, cfg, f, err, errlen)))
		goto out;
out:
	json_decref(root);
	return rc;
}
