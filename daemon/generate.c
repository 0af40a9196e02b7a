/* SPDX-License-Identifier: Apache-2.0 */
/*
 * daemon/generate.c: `offpathd generate`: one prompt, one completion, on the CPU reference forward
 * pass, streamed to stdout as it is generated. The same sampling (model/sample.h) and the same
 * detokenizer (tok_stream) as the server, so a request with the same seed and parameters gives the
 * same text through either.
 */
#include <errno.h>
#include <getopt.h>
#include <jansson.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "cmd.h"
#include "cpu.h"
#include "log.h"
#include "mdl.h"
#include "sample.h"
#include "tok.h"

#define GEN_PAGE_TOKENS 16

struct gen_opts {
	const char *model;
	const char *prompt;
	int max_tokens;
	int threads;
	bool ignore_eos;
	bool show_stats;
	struct mdl_sampling smp;
};

static void gen_usage(FILE *f)
{
	fprintf(f,
		"usage: offpathd generate --model DIR --prompt TEXT [options]\n"
		"\n"
		"Encodes TEXT with DIR/tokenizer.json, runs the CPU reference forward pass, and prints\n"
		"the completion to stdout as it is generated (timing to stderr with --stats).\n"
		"\n"
		"  --model DIR          Hugging Face model directory (offpath-mkmodel writes test ones)\n"
		"  --prompt TEXT        the prompt; '-' reads it from stdin\n"
		"  --max-tokens N       most tokens to generate (default 64)\n"
		"  --temperature T      0 = greedy; default 1.0 (the OpenAI API default)\n"
		"  --top-k K            keep the K most likely tokens (default off)\n"
		"  --top-p P            nucleus sampling mass in (0, 1] (default 1 = off)\n"
		"  --seed S             sampling seed (default: from the clock, printed with --stats)\n"
		"  --ignore-eos         keep going past end-of-sequence tokens\n"
		"  --threads N          matmul threads (default: one per core)\n"
		"  --stats              print prompt/generation token counts and speed to stderr\n");
}

static int gen_parse(struct gen_opts *o, int argc, char **argv)
{
	static const struct option longopts[] = {
		{"model", required_argument, 0, 'm'},   {"prompt", required_argument, 0, 'p'},
		{"max-tokens", required_argument, 0, 'n'}, {"temperature", required_argument, 0, 't'},
		{"top-k", required_argument, 0, 'k'},   {"top-p", required_argument, 0, 'P'},
		{"seed", required_argument, 0, 's'},    {"threads", required_argument, 0, 'j'},
		{"ignore-eos", no_argument, 0, 'E'},    {"stats", no_argument, 0, 'S'},
		{"help", no_argument, 0, 'h'},          {0, 0, 0, 0},
	};
	bool have_seed = false;
	char *end;
	int c;
	*o = (struct gen_opts){.max_tokens = 64, .smp = {.temperature = 1.0f, .top_p = 1.0f}};
	optind = 1;
	while ((c = getopt_long(argc, argv, "m:p:n:t:k:P:s:j:ESh", longopts, NULL)) != -1) {
		errno = 0;
		switch (c) {
		case 'm':
			o->model = optarg;
			break;
		case 'p':
			o->prompt = optarg;
			break;
		case 'n':
			o->max_tokens = (int)strtol(optarg, &end, 10);
			if (*end || o->max_tokens < 1 || o->max_tokens > 1 << 20)
				goto bad;
			break;
		case 't':
			o->smp.temperature = strtof(optarg, &end);
			if (*end || !(o->smp.temperature >= 0.0f && o->smp.temperature <= 100.0f))
				goto bad;
			break;
		case 'k':
			o->smp.top_k = (int)strtol(optarg, &end, 10);
			if (*end || o->smp.top_k < 0)
				goto bad;
			break;
		case 'P':
			o->smp.top_p = strtof(optarg, &end);
			if (*end || !(o->smp.top_p > 0.0f && o->smp.top_p <= 1.0f))
				goto bad;
			break;
		case 's':
			o->smp.seed = strtoull(optarg, &end, 0);
			if (*end || errno)
				goto bad;
			have_seed = true;
			break;
		case 'j':
			o->threads = (int)strtol(optarg, &end, 10);
			if (*end || o->threads < 0 || o->threads > 1024)
				goto bad;
			break;
		case 'E':
			o->ignore_eos = true;
			break;
		case 'S':
			o->show_stats = true;
			break;
		case 'h':
			gen_usage(stdout);
			return 1;
		default:
			gen_usage(stderr);
			return -EINVAL;
		}
	}
	if (!o->model || !o->prompt) {
		fprintf(stderr, "offpathd generate: --model and --prompt are required\n\n");
		gen_usage(stderr);
		return -EINVAL;
	}
	if (!have_seed) {
		struct timespec ts;
		clock_gettime(CLOCK_REALTIME, &ts);
		o->smp.seed = mdl_mix64((uint64_t)ts.tv_sec * 1000000000ull + (uint64_t)ts.tv_nsec);
	}
	return 0;
bad:
	fprintf(stderr, "offpathd generate: bad value '%s'\n", optarg);
	return -EINVAL;
}

/* Read all of stdin into a NUL-terminated heap string. */
static char *read_stdin(void)
{
	size_t cap = 1 << 16, len = 0;
	char *buf = malloc(cap);
	while (buf) {
		size_t n = fread(buf + len, 1, cap - len - 1, stdin);
		len += n;
		if (n == 0)
			break;
		if (len + 1 == cap) {
			char *nb = realloc(buf, cap *= 2);
			if (!nb)
				free(buf);
			buf = nb;
		}
	}
	if (buf)
		buf[len] = 0;
	return buf;
}

/* Does the model's tokenizer_config.json ask for a BOS token in front of every prompt? */
static bool wants_bos(const char *dir)
{
	char path[4200];
	snprintf(path, sizeof(path), "%s/tokenizer_config.json", dir);
	json_t *root = json_load_file(path, 0, NULL);
	bool yes = root && json_is_true(json_object_get(root, "add_bos_token"));
	json_decref(root);
	return yes;
}

static bool is_eos(const struct mdl_config *cfg, int32_t id)
{
	for (int i = 0; i < cfg->n_eos; i++)
		if (cfg->eos_ids[i] == id)
			return true;
	return false;
}

static double now_s(void)
{
	struct timespec ts;
	clock_gettime(CLOCK_MONOTONIC, &ts);
	return (double)ts.tv_sec + 1e-9 * (double)ts.tv_nsec;
}

int cmd_generate(int argc, char **argv)
{
	struct gen_opts o;
	struct mdl *m = NULL;
	struct tok *t = NULL;
	struct tok_enc *enc = NULL;
	struct tok_stream *ts = NULL;
	struct mdl_cpu *cpu = NULL;
	struct mdl_sampler *smp = NULL;
	int32_t *ids = NULL, *pages = NULL;
	float *logits = NULL;
	char *stdin_text = NULL;
	char err[MDL_ERR_LEN];
	int rc = 1, r;

	r = gen_parse(&o, argc, argv);
	if (r)
		return r > 0 ? 0 : 2;
	if (!strcmp(o.prompt, "-")) {
		stdin_text = read_stdin();
		if (!stdin_text) {
			log_error("generate", "reading the prompt from stdin: out of memory");
			goto out;
		}
		o.prompt = stdin_text;
	}

	r = mdl_open(&m, o.model, err, sizeof(err));
	if (r) {
		log_error("model", "%s", err);
		goto out;
	}
	char tpath[4200];
	snprintf(tpath, sizeof(tpath), "%s/tokenizer.json", o.model);
	r = tok_load(&t, tpath, err, sizeof(err));
	if (r) {
		log_error("tokenizer", "%s", err);
		goto out;
	}
	if ((r = tok_enc_create(&enc, t)) || (r = tok_stream_create(&ts, t)) ||
	    (r = mdl_sampler_create(&smp, m->cfg.vocab_size))) {
		log_error("generate", "setting up: %s", strerror(-r));
		goto out;
	}

	/* Prompt ids: optional BOS, then the text. */
	size_t plen = strlen(o.prompt);
	size_t cap = plen + 2;
	ids = malloc((cap + (size_t)o.max_tokens) * sizeof(*ids));
	if (!ids)
		goto oom;
	size_t n_prompt = 0;
	if (wants_bos(o.model) && m->cfg.bos_id >= 0)
		ids[n_prompt++] = m->cfg.bos_id;
	ssize_t ne = tok_encode(enc, o.prompt, plen, ids + n_prompt, cap - n_prompt, 0);
	if (ne < 0) {
		log_error("tokenizer", "encoding the prompt: %s", strerror((int)-ne));
		goto out;
	}
	n_prompt += (size_t)ne;
	if (n_prompt == 0) {
		log_error("generate", "the prompt is empty and the model has no BOS token");
		goto out;
	}
	size_t total = n_prompt + (size_t)o.max_tokens;
	if (total > (size_t)m->cfg.max_pos) {
		log_error("generate", "prompt (%zu tokens) + --max-tokens (%d) exceeds the context (%d)",
			  n_prompt, o.max_tokens, m->cfg.max_pos);
		goto out;
	}

	/* A private KV pool just big enough for this one sequence, pages in order. */
	int n_pages = (int)((total + GEN_PAGE_TOKENS - 1) / GEN_PAGE_TOKENS);
	pages = malloc((size_t)n_pages * sizeof(*pages));
	logits = malloc((size_t)m->cfg.vocab_size * sizeof(*logits));
	if (!pages || !logits)
		goto oom;
	for (int i = 0; i < n_pages; i++)
		pages[i] = i;
	struct mdl_cpu_opts co = {.n_pages = n_pages,
				  .page_tokens = GEN_PAGE_TOKENS,
				  .max_tokens = (int)n_prompt,
				  .max_seqs = 1,
				  .n_threads = o.threads};
	r = mdl_cpu_create(&cpu, m, &co);
	if (r) {
		log_error("generate", "creating the CPU backend: %s", strerror(-r));
		goto out;
	}

	double t0 = now_s(), t_first = 0;
	struct mdl_cpu_seq seq = {.tokens = ids, .n_tokens = (int)n_prompt, .pos0 = 0,
				  .pages = pages, .logits = logits, .n_logits = 1};
	int n_gen = 0;
	const char *piece;
	size_t plen_out;
	for (;;) {
		r = mdl_cpu_step(cpu, &seq, 1);
		if (r) {
			log_error("generate", "forward step failed: %s", strerror(-r));
			goto out;
		}
		int32_t next = mdl_sample(smp, logits, &o.smp, (uint64_t)n_gen, NULL);
		if (n_gen == 0)
			t_first = now_s();
		ids[n_prompt + (size_t)n_gen++] = next;
		if (!o.ignore_eos && is_eos(&m->cfg, next))
			break;
		if (tok_stream_push(ts, next, &piece, &plen_out) == 0 && plen_out)
			fwrite(piece, 1, plen_out, stdout);
		fflush(stdout);
		if (n_gen == o.max_tokens)
			break;
		seq.tokens = &ids[n_prompt + (size_t)n_gen - 1];
		seq.pos0 = (int)n_prompt + n_gen - 1;
		seq.n_tokens = 1;
	}
	if (tok_stream_finish(ts, &piece, &plen_out) == 0 && plen_out)
		fwrite(piece, 1, plen_out, stdout);
	fputc('\n', stdout);
	fflush(stdout);
	if (o.show_stats) {
		double t1 = now_s();
		fprintf(stderr,
			"prompt %zu tokens, generated %d tokens, seed %llu; first token %.1f ms, "
			"%.1f tokens/s after it\n",
			n_prompt, n_gen, (unsigned long long)o.smp.seed, (t_first - t0) * 1e3,
			n_gen > 1 ? (n_gen - 1) / (t1 - t_first) : 0.0);
	}
	rc = 0;
	goto out;
oom:
	log_error("generate", "out of memory");
out:
	mdl_cpu_destroy(cpu);
	mdl_sampler_destroy(smp);
	tok_stream_destroy(ts);
	tok_enc_destroy(enc);
	tok_destroy(t);
	mdl_close(m);
	free(ids);
	free(pages);
	free(logits);
	free(stdin_text);
	return rc;
}
