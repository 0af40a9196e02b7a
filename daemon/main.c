/* SPDX-License-Identifier: Apache-2.0 */
/*
 * offpathd: an LLM inference daemon in which the host CPU stays off the per-token path.
 *
 * Where to start reading: main() picks a subcommand.
 *   `serve` (daemon/serve.c) is the data path: nic/ receives and parses HTTP on the ingest
 *   thread, daemon/api.c validates, tokenizer/ encodes into the request ring
 *   (persistent_kernel/ring.h), the persistent scheduler (persistent_kernel/, on the GPU or its
 *   CPU emulation) batches, steps and samples into the token ring, and serve.c's poll hook
 *   detokenizes and streams the tokens back through nic/.
 *   `generate` (daemon/generate.c) is the shortest path through the model, for scripts.
 */
#include <stdio.h>
#include <string.h>

#include "offpath_config.h"
#include "cmd.h"

static void usage(FILE *f)
{
	fprintf(
	    f,
	    "offpathd %s: LLM inference with the host CPU off the per-token path\n"
	    "\n"
	    "usage: offpathd COMMAND [OPTIONS]\n"
	    "\n"
	    "commands:\n"
	    "  serve --model DIR [--listen H:P]     the OpenAI-compatible HTTP server\n"
	    "  generate --model DIR --prompt TEXT   print a completion (CPU reference forward)\n"
	    "  help                                 this text\n"
	    "\n"
	    "`offpathd COMMAND --help` describes a command's options.\n"
	    "Models are Hugging Face directories (config.json, *.safetensors, tokenizer.json);\n"
	    "offpath-mkmodel writes test models with random weights.\n",
	    OFFPATH_VERSION);
}

int main(int argc, char **argv)
{
	if (argc < 2) {
		usage(stderr);
		return 2;
	}
	const char *cmd = argv[1];
	if (!strcmp(cmd, "serve")) {
#if HAVE_LIBURING
		return cmd_serve(argc - 1, argv + 1);
#else
		fprintf(stderr,
		        "offpathd: this build has no io_uring transport (install liburing-dev "
		        "and rebuild) so it cannot serve\n");
		return 2;
#endif
	}
	if (!strcmp(cmd, "generate"))
		return cmd_generate(argc - 1, argv + 1);
	if (!strcmp(cmd, "help") || !strcmp(cmd, "--help") || !strcmp(cmd, "-h")) {
		usage(stdout);
		return 0;
	}
	if (!strcmp(cmd, "--version")) {
		printf("offpathd %s\n", OFFPATH_VERSION);
		return 0;
	}
	fprintf(stderr, "offpathd: unknown command '%s'\n\n", cmd);
	usage(stderr);
	return 2;
}
