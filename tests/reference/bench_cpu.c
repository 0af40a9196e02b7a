/* SPDX-License-Identifier: Apache-2.0 */
/*
 * tests/reference/bench_cpu.c: prints the speed of the reference CPU forward pass (not a test).
 *   bench_cpu MODEL_DIR [n_threads]   a model directory: prefill 64 tokens, then 32 decode steps
 *   bench_cpu --mkmodel MKMODEL [n_threads]  the same on a llama tiny model it has MKMODEL write
 *   bench_cpu --1b [n_threads]        a Llama-3.2-1B-shaped model built in memory (random fp32
 *                                     weights, ~5 GB, no files), prefill 16 tokens + 4 decode steps
 * Exit 0, 1 on failure, 77 when the 1B model does not fit in memory.
 */
#include <errno.h>
#include <ftw.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <sys/wait.h>
#include <unistd.h>

#include "cpu.h"
#include "mdl.h"

static double now(void)
{
	struct timespec t;
	clock_gettime(CLOCK_MONOTONIC, &t);
	return (double)t.tv_sec + 1e-9 * (double)t.tv_nsec;
}

static int fill(struct mdl_tensor *t, int ndim, int64_t d0, int64_t d1, float scale, uint64_t *rs)
{
	t->dtype = MDL_F32;
	t->ndim = ndim;
	t->shape[0] = d0;
	t->shape[1] = d1;
	size_t n = (size_t)d0 * (size_t)(ndim > 1 ? d1 : 1);
	float *p = malloc(n * sizeof(float));
	if (!p)
		return -ENOMEM;
	for (size_t i = 0; i < n; i++) { /* xorshift: cheap noise, values do not matter for speed */
		*rs ^= *rs << 13;
		*rs ^= *rs >> 7;
		*rs ^= *rs << 17;
		p[i] = scale * ((float)(*rs >> 40) * (1.0f / 16777216.0f) - 0.5f);
	}
	t->data = p;
	t->nbytes = n * sizeof(float);
	return 0;
}

/* Llama-3.2-1B shapes: hidden 2048, 16 layers, 32 heads, 8 kv heads, mlp 8192, vocab 128256. */
static int build_1b(struct mdl *m)
{
	struct mdl_config *c = &m->cfg;
	memset(m, 0, sizeof(*m));
	*c = (struct mdl_config){.arch = MDL_ARCH_LLAMA,
	                         .vocab_size = 128256,
	                         .hidden = 2048,
	                         .intermediate = 8192,
	                         .n_layers = 16,
	                         .n_heads = 32,
	                         .n_kv_heads = 8,
	                         .head_dim = 64,
	                         .max_pos = 131072,
	                         .rms_eps = 1e-5f,
	                         .rope = {MDL_ROPE_LLAMA3, 500000.0, 32.0f, 1.0f, 4.0f, 8192},
	                         .tie_embeddings = true,
	                         .bos_id = -1,
	                         .dtype = MDL_F32};
	uint64_t rs = 88172645463325252ull;
	int64_t h = c->hidden, f = c->intermediate, qd = c->n_heads * c->head_dim;
	int64_t kvd = c->n_kv_heads * c->head_dim;
	m->layers = calloc((size_t)c->n_layers, sizeof(*m->layers));
	if (!m->layers)
		return -ENOMEM;
	int rc = fill(&m->embed, 2, c->vocab_size, h, 0.1f, &rs);
	rc = rc ? rc : fill(&m->final_norm, 1, h, 0, 2.0f, &rs);
	m->lm_head = m->embed;
	for (int l = 0; l < c->n_layers && !rc; l++) {
		struct mdl_layer *L = &m->layers[l];
		rc = rc ? rc : fill(&L->attn_norm, 1, h, 0, 2.0f, &rs);
		rc = rc ? rc : fill(&L->wq, 2, qd, h, 0.05f, &rs);
		rc = rc ? rc : fill(&L->wk, 2, kvd, h, 0.05f, &rs);
		rc = rc ? rc : fill(&L->wv, 2, kvd, h, 0.05f, &rs);
		rc = rc ? rc : fill(&L->wo, 2, h, qd, 0.05f, &rs);
		rc = rc ? rc : fill(&L->mlp_norm, 1, h, 0, 2.0f, &rs);
		rc = rc ? rc : fill(&L->w_gate, 2, f, h, 0.05f, &rs);
		rc = rc ? rc : fill(&L->w_up, 2, f, h, 0.05f, &rs);
		rc = rc ? rc : fill(&L->w_down, 2, h, f, 0.05f, &rs);
	}
	return rc;
}

static void free_1b(struct mdl *m)
{
	free((void *)m->embed.data);
	free((void *)m->final_norm.data);
	for (int l = 0; m->layers && l < m->cfg.n_layers; l++) {
		struct mdl_layer *L = &m->layers[l];
		const void *p[] = {L->attn_norm.data, L->wq.data,   L->wk.data,
		                   L->wv.data,        L->wo.data,   L->mlp_norm.data,
		                   L->w_gate.data,    L->w_up.data, L->w_down.data};
		for (size_t i = 0; i < sizeof(p) / sizeof(p[0]); i++)
			free((void *)p[i]);
	}
	free(m->layers);
}

static int rm_one(const char *path, const struct stat *st, int flag, struct FTW *f)
{
	(void)st;
	(void)flag;
	(void)f;
	return remove(path);
}

/* Run offpath-mkmodel into a new temporary directory, written into dir. */
static int make_tiny(const char *mkmodel, char *dir)
{
	strcpy(dir, "/tmp/offpath-bench-XXXXXX");
	if (!mkdtemp(dir))
		return -errno;
	char out[64];
	snprintf(out, sizeof(out), "%s/m", dir);
	pid_t pid = fork();
	if (pid < 0)
		return -errno;
	if (pid == 0) {
		execl(mkmodel, mkmodel, "--arch", "llama", "--size", "tiny", "--dtype", "bf16",
		      "--seed", "1", "--out", out, (char *)NULL);
		_exit(127);
	}
	int st;
	if (waitpid(pid, &st, 0) < 0 || !WIFEXITED(st) || WEXITSTATUS(st) != 0)
		return -EIO;
	strcat(dir, "/m");
	return 0;
}

int main(int argc, char **argv)
{
	if (argc < 2) {
		fprintf(stderr, "usage: %s MODEL_DIR|--1b [n_threads]\n", argv[0]);
		return 1;
	}
	bool big = strcmp(argv[1], "--1b") == 0;
	bool mk = strcmp(argv[1], "--mkmodel") == 0;
	const char *dir = argv[1];
	char tmp[96];
	if (mk) {
		if (argc < 3 || make_tiny(argv[2], tmp)) {
			fprintf(stderr, "cannot make a tiny model with %s\n",
			        argc < 3 ? "?" : argv[2]);
			return 1;
		}
		dir = tmp;
		argv++;
		argc--;
	}
	int n_threads = argc > 2 ? atoi(argv[2]) : 0;
	struct mdl mm, *m = NULL;
	char err[MDL_ERR_LEN];
	int rc;

	if (big) {
		long pages = sysconf(_SC_AVPHYS_PAGES), psz = sysconf(_SC_PAGESIZE);
		if (pages > 0 && (double)pages * (double)psz < 7e9) {
			printf("SKIP: the 1B-shaped model needs ~6 GB of free memory\n");
			return 77;
		}
		m = &mm;
		double t0 = now();
		rc = build_1b(m);
		if (rc) {
			printf("SKIP: cannot allocate the 1B-shaped model\n");
			free_1b(m);
			return 77;
		}
		printf("built a 1B-shaped model in memory in %.1f s\n", now() - t0);
	} else {
		rc = mdl_open(&m, dir, err, sizeof(err));
		if (rc) {
			fprintf(stderr, "mdl_open: %s\n", err);
			return 1;
		}
	}

	const int n_prefill = big ? 16 : 64, n_decode = big ? 4 : 32;
	const int V = m->cfg.vocab_size;
	struct mdl_cpu_opts o = {.n_pages = 64,
	                         .page_tokens = 16,
	                         .max_tokens = n_prefill,
	                         .max_seqs = 1,
	                         .n_threads = n_threads};
	struct mdl_cpu *c = NULL;
	double t0 = now();
	rc = mdl_cpu_create(&c, m, &o);
	if (rc) {
		fprintf(stderr, "mdl_cpu_create: %s\n", strerror(-rc));
		goto out;
	}
	double t_create = now() - t0;
	int32_t tok[128], pages[64];
	for (int i = 0; i < 128; i++)
		tok[i] = (int32_t)((i * 7919 + 13) % V);
	for (int i = 0; i < 64; i++)
		pages[i] = i;
	float *logits = malloc((size_t)V * sizeof(float));
	if (!logits)
		goto out;
	struct mdl_cpu_seq s = {tok, n_prefill, 0, pages, logits, 1};
	t0 = now();
	rc = mdl_cpu_step(c, &s, 1);
	double t_prefill = now() - t0;
	t0 = now();
	for (int i = 0; i < n_decode && !rc; i++) {
		s = (struct mdl_cpu_seq){tok + n_prefill + i, 1, n_prefill + i, pages, logits, 1};
		rc = mdl_cpu_step(c, &s, 1);
	}
	double t_decode = now() - t0;
	free(logits);
	if (rc) {
		fprintf(stderr, "mdl_cpu_step: %s\n", strerror(-rc));
		goto out;
	}
	printf("%s: %s L=%d hidden=%d vocab=%d: create %.3f s, prefill %d tok %.1f tok/s, "
	       "decode %.2f ms/step (%.1f tok/s)\n",
	       big ? "1B-shaped" : dir, mdl_arch_name(m->cfg.arch), m->cfg.n_layers, m->cfg.hidden,
	       V, t_create, n_prefill, n_prefill / t_prefill, 1e3 * t_decode / n_decode,
	       n_decode / t_decode);
out:
	mdl_cpu_destroy(c);
	if (big)
		free_1b(m);
	else
		mdl_close(m);
	if (mk) { /* tmp is "<tempdir>/m": remove the temporary directory */
		tmp[strlen(tmp) - 2] = '\0';
		nftw(tmp, rm_one, 8, FTW_DEPTH | FTW_PHYS);
	}
	return rc ? 1 : 0;
}
