/* SPDX-License-Identifier: Apache-2.0 */
/*
 * model/mdl.h: a model directory (Hugging Face layout: config.json + *.safetensors, single or
 * sharded through model.safetensors.index.json) turned into one architecture description and a
 * set of named weight views. Model files are untrusted input: every size, offset, dtype and shape
 * is checked before anything is read, and each failure says which file and what is wrong.
 *
 * Ownership: mdl_open() creates a struct mdl that owns the read-only mmaps of every shard;
 *   mdl_close() unmaps and frees. Every mdl_tensor.data points into those maps and is valid until
 *   mdl_close().
 * Threading: open and close on one thread. After mdl_open() returns, the struct is immutable and
 *   any thread may read it.
 * Errors: 0 or a negative errno. Functions that read files fill err (always NUL-terminated) with
 *   "<file>: <problem>"; they log nothing; the caller logs once.
 */
#ifndef OFFPATH_MODEL_MDL_H
#define OFFPATH_MODEL_MDL_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#define MDL_MAX_EOS    8
#define MDL_MAX_DIMS   4
#define MDL_ERR_LEN    512

enum mdl_dtype {
	MDL_F32 = 0,
	MDL_F16 = 1,
	MDL_BF16 = 2,
};

enum mdl_arch {
	MDL_ARCH_LLAMA = 0, /* LlamaForCausalLM (Llama 2/3.x, Mistral, SmolLM) */
	MDL_ARCH_QWEN2 = 1, /* Qwen2ForCausalLM: q/k/v projections carry a bias */
	MDL_ARCH_QWEN3 = 2, /* Qwen3ForCausalLM: RMSNorm on q and k per head, no bias */
};

enum mdl_rope_type {
	MDL_ROPE_DEFAULT = 0, /* inv_freq[i] = theta^(-2i/head_dim) */
	MDL_ROPE_LINEAR = 1,  /* positions divided by factor */
	MDL_ROPE_LLAMA3 = 2,  /* Llama 3.1 frequency-band scaling */
};

struct mdl_rope {
	enum mdl_rope_type type;
	double theta;
	float factor;           /* linear, llama3 */
	float low_freq_factor;  /* llama3 */
	float high_freq_factor; /* llama3 */
	int original_max_pos;   /* llama3: original_max_position_embeddings */
};

/* Everything config.json says that the forward pass needs, validated for consistency. */
struct mdl_config {
	enum mdl_arch arch;
	int vocab_size;
	int hidden;       /* hidden_size */
	int intermediate; /* intermediate_size */
	int n_layers;     /* num_hidden_layers */
	int n_heads;      /* num_attention_heads */
	int n_kv_heads;   /* num_key_value_heads; n_heads % n_kv_heads == 0 */
	int head_dim;     /* head_dim, or hidden / n_heads when absent */
	int max_pos;      /* max_position_embeddings */
	float rms_eps;    /* rms_norm_eps */
	struct mdl_rope rope;
	bool tie_embeddings; /* tie_word_embeddings: lm_head is embed */
	bool attn_bias;      /* q/k/v bias present (qwen2 only; llama attention_bias, which also biases o_proj, is refused) */
	bool qk_norm;        /* per-head RMSNorm on q and k (qwen3) */
	int bos_id;          /* -1 when absent */
	int eos_ids[MDL_MAX_EOS];
	int n_eos;
	enum mdl_dtype dtype; /* torch_dtype: what the weights are stored as */
};

/* A read-only view of one tensor inside a mapped safetensors file. Row-major, shape[0] outermost. */
struct mdl_tensor {
	enum mdl_dtype dtype;
	int ndim;
	int64_t shape[MDL_MAX_DIMS];
	const void *data; /* NULL when the tensor is absent (optional tensors only) */
	size_t nbytes;
};

/* Hugging Face names: model.layers.N.<name>. Shapes are (out_features, in_features). */
struct mdl_layer {
	struct mdl_tensor attn_norm; /* input_layernorm.weight            (hidden) */
	struct mdl_tensor wq;        /* self_attn.q_proj.weight           (n_heads*head_dim, hidden) */
	struct mdl_tensor wk;        /* self_attn.k_proj.weight           (n_kv_heads*head_dim, hidden) */
	struct mdl_tensor wv;        /* self_attn.v_proj.weight           (n_kv_heads*head_dim, hidden) */
	struct mdl_tensor wo;        /* self_attn.o_proj.weight           (hidden, n_heads*head_dim) */
	struct mdl_tensor bq, bk, bv; /* self_attn.{q,k,v}_proj.bias      when attn_bias */
	struct mdl_tensor q_norm;    /* self_attn.q_norm.weight           (head_dim) when qk_norm */
	struct mdl_tensor k_norm;    /* self_attn.k_norm.weight           (head_dim) when qk_norm */
	struct mdl_tensor mlp_norm;  /* post_attention_layernorm.weight   (hidden) */
	struct mdl_tensor w_gate;    /* mlp.gate_proj.weight              (intermediate, hidden) */
	struct mdl_tensor w_up;      /* mlp.up_proj.weight                (intermediate, hidden) */
	struct mdl_tensor w_down;    /* mlp.down_proj.weight              (hidden, intermediate) */
};

struct mdl_files; /* private: the mapped shards */

struct mdl {
	struct mdl_config cfg;
	struct mdl_tensor embed;      /* model.embed_tokens.weight (vocab, hidden) */
	struct mdl_tensor final_norm; /* model.norm.weight (hidden) */
	struct mdl_tensor lm_head;    /* lm_head.weight (vocab, hidden); == embed when tied */
	struct mdl_layer *layers;     /* n_layers entries */
	char dir[4096];               /* the model directory as given */
	struct mdl_files *files;
};

/* Parse config.json at path into cfg. Unknown architectures, missing or inconsistent fields and
 * unsupported rope_scaling types are errors. */
int mdl_config_load(struct mdl_config *cfg, const char *path, char *err, size_t errlen);

/* Open a model directory: config.json, then model.safetensors or the shards named by
 * model.safetensors.index.json. Every tensor the architecture needs must be present with the
 * shape the config implies and one of the supported dtypes. */
int mdl_open(struct mdl **out, const char *dir, char *err, size_t errlen);
void mdl_close(struct mdl *m);

/* Element size in bytes; 0 for an invalid dtype. */
size_t mdl_dtype_size(enum mdl_dtype dt);
const char *mdl_dtype_name(enum mdl_dtype dt);
const char *mdl_arch_name(enum mdl_arch arch);

/* Element i of t as fp32 (bf16/fp16 widened exactly). No bounds check: i < numel. */
float mdl_tensor_get(const struct mdl_tensor *t, size_t i);
/* Number of elements (product of shape). */
size_t mdl_tensor_numel(const struct mdl_tensor *t);

/* bf16/fp16 <-> fp32, round-to-nearest-even on narrowing; NaN stays NaN. */
float mdl_bf16_to_f32(uint16_t h);
uint16_t mdl_f32_to_bf16(float f);
float mdl_f16_to_f32(uint16_t h);
uint16_t mdl_f32_to_f16(float f);

#endif
