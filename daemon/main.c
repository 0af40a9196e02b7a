/* SPDX-License-Identifier: Apache-2.0 */
/*
 * offpathd: an LLM inference daemon in which the host CPU stays off the per-token path.
 *
 * Where to start reading: main() picks a subcommand. `generate` (daemon/generate.c) is the
 * shortest path through the model: tokenizer/ encodes the prompt, model/ loads the weights and
 * runs the reference forward pass, model/sample.h picks tokens, tokenizer/ streams text back.
 */
#include <stdio.h>
#include <string.h>

#include "offpath_config.h"
#include "cmd.h"

static void usage(FILE *f)
{
	fprintf(f,
		"offpathd %s: LLM inference with the host CPU off the per-token path\n"
		"\n"
		"usage: offpathd COMMAND [OPTIONS]\n"
		"\n"
		"commands:\n"
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
