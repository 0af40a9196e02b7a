/* SPDX-License-Identifier: Apache-2.0 */
/*
 * daemon/generate.c: `offpathd generate`: one prompt, one completion, printed as it is generated.
 * It goes through the same engine as `serve` (daemon/engine.h: request ring -> persistent
 * scheduler backend -> token ring) and the same prompt encoding and detokenizer, so a request
 * with the same seed and parameters gives the same text through either.
 */
#include <errno.h>
#include <getopt.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "boot.h"
#include "cmd.h"
#include "engine.h"
#include "log.h"
#include "ring.h"
#include "sample.h"

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
	fprintf(
	    f,
	    "usage: offpathd generate --model DIR --prompt TEXT [options]\n"
	    "\n"
	    "Encodes TEXT with DIR/tokenizer.json, runs the CPU reference forward pass, and "
	    "prints\n"
	    "the completion to stdout as it is generated (timing to stderr with --stats).\n"
	    "\n"
	    "  --model DIR          Hugging Face model directory (offpath-mkmodel writes test "
	    "ones)\n"
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
	    {"model", required_argument, 0, 'm'},
	    {"prompt", required_argument, 0, 'p'},
	    {"max-tokens", required_argument, 0, 'n'},
	    {"temperature", required_argument, 0, 't'},
	    {"top-k", required_argument, 0, 'k'},
	    {"top-p", required_argument, 0, 'P'},
	    {"seed", required_argument, 0, 's'},
	    {"threads", required_argument, 0, 'j'},
	    {"ignore-eos", no_argument, 0, 'E'},
	    {"stats", no_argument, 0, 'S'},
	    {"help", no_argument, 0, 'h'},
	    {0, 0, 0, 0},
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

static double now_s(void)
{
	struct timespec ts;
	clock_gettime(CLOCK_MONOTONIC, &ts);
	return (double)ts.tv_sec + 1e-9 * (double)ts.tv_nsec;
}

int cmd_generate(int argc, char **argv)
{
	struct gen_opts o;
	struct boot_model bm = {0};
	struct engine eng = {0};
	struct tok_enc *enc = NULL;
	struct tok_stream *ts = NULL;
	int32_t *ids = NULL;
	char *stdin_text = NULL;
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
	if (boot_model_open(&bm, o.model))
		goto out;
	if ((r = tok_enc_create(&enc, bm.tok)) || (r = tok_stream_create(&ts, bm.tok))) {
		log_error("generate", "setting up the tokenizer: %s", strerror(-r));
		goto out;
	}

	int max_ctx = engine_max_ctx(&bm);
	ids = malloc(((size_t)max_ctx + 1) * sizeof(*ids));
	if (!ids) {
		log_error("generate", "out of memory");
		goto out;
	}
	ssize_t n_prompt =
	    boot_encode_prompt(&bm, enc, o.prompt, strlen(o.prompt), ids, (size_t)max_ctx + 1);
	if (n_prompt < 0) {
		log_error("tokenizer", "encoding the prompt: %s", strerror((int)-n_prompt));
		goto out;
	}
	if (n_prompt == 0) {
		log_error("generate", "the prompt is empty and the model has no BOS token");
		goto out;
	}
	if (n_prompt + o.max_tokens > max_ctx) {
		log_error("generate",
		          "prompt (%zd tokens) + --max-tokens (%d) exceeds the context (%d)",
		          n_prompt, o.max_tokens, max_ctx);
		goto out;
	}

	/* The same engine as `serve`, with room for one request. */
	int ctx = (int)n_prompt + o.max_tokens;
	struct engine_opts eo = {.max_queue = 2,
	                         .max_ctx = ctx,
	                         .threads = o.threads,
	                         .page_tokens = 16,
	                         .kv_pages = (ctx + 15) / 16};
	if (engine_start(&eng, &bm, &eo))
		goto out;
	struct ring_req_rec rec = {.id = 1,
	                           .seed = o.smp.seed,
	                           .temperature = o.smp.temperature,
	                           .top_p = o.smp.top_p,
	                           .top_k = o.smp.top_k,
	                           .max_tokens = o.max_tokens,
	                           .flags = o.ignore_eos ? RING_REQ_IGNORE_EOS : 0};
	r = ring_req_sp_push(eng.rings.req, &rec, ids, (uint32_t)n_prompt);
	if (r) {
		log_error("generate", "queueing the request: %s", strerror(-r));
		goto out;
	}

	double t0 = now_s(), t_first = 0, t_last = 0;
	int n_gen = 0;
	const char *piece;
	size_t plen;
	struct ring_tok_rec t;
	for (bool last = false; !last;) {
		if (ring_tok_sc_pop_burst(eng.rings.tok, &t, 1) == 0) {
			struct timespec nap = {0, 20000}; /* the CPU backend runs ms per token */
			nanosleep(&nap, NULL);
			continue;
		}
		last = t.flags & RING_TOK_LAST;
		if (t.finish == RING_FINISH_ERROR) {
			log_error("generate", "the scheduler rejected the prompt: %s",
			          strerror(-t.err));
			goto out;
		}
		if (t.flags & RING_TOK_NOTOK)
			continue;
		t_last = now_s();
		if (n_gen++ == 0)
			t_first = t_last;
		if (last && t.finish == RING_FINISH_STOP)
			break; /* EOS or a stop id ends the text; it is not part of it */
		if (tok_stream_push(ts, t.token, &piece, &plen) == 0 && plen)
			fwrite(piece, 1, plen, stdout);
		fflush(stdout);
	}
	if (tok_stream_finish(ts, &piece, &plen) == 0 && plen)
		fwrite(piece, 1, plen, stdout);
	fputc('\n', stdout);
	fflush(stdout);
	if (o.show_stats)
		fprintf(stderr,
		        "prompt %zd tokens, generated %d tokens, seed %llu; first token %.1f ms, "
		        "%.1f tokens/s after it\n",
		        n_prompt, n_gen, (unsigned long long)o.smp.seed, (t_first - t0) * 1e3,
		        n_gen > 1 ? (n_gen - 1) / (t_last - t_first) : 0.0);
	rc = 0;
out:
	engine_stop(&eng);
	tok_stream_destroy(ts);
	tok_enc_destroy(enc);
	boot_model_close(&bm);
	free(ids);
	free(stdin_text);
	return rc;
}
