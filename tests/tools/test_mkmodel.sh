#!/usr/bin/env bash
# SPDX-License-Identifier: Apache-2.0
# tests/tools/test_mkmodel.sh: offpath-mkmodel end to end. Writes tiny models for every
# architecture and dtype, sharded and not, and checks them with check_model.py (an independent
# reader: Python standard library only, run by Debian's /usr/bin/python3) and, when built, with
# the project's mdl_open(); then determinism (same seed -> identical bytes whatever the thread and
# shard counts; another seed -> every tensor differs) and the command-line errors.
# usage: test_mkmodel.sh MKMODEL CHECK_MODEL_PY [MKMODEL_OPEN]. Exit 0 pass, 1 fail, 77 skip.
set -u
MK=$1
CHECK=$2
OPEN=${3:-}
PY=/usr/bin/python3
if [ ! -x "$PY" ]; then
	echo "skip: $PY (Debian's python3) is not installed"
	exit 77
fi
if [ -z "${OFFPATH_NPM:-}" ] || [ ! -d "$OFFPATH_NPM" ]; then
	echo "skip: no npm reference packages at '${OFFPATH_NPM:-}' (run scripts/deps.sh)"
	exit 77
fi
T=$(mktemp -d /tmp/offpath-mkmodel-test.XXXXXX)
trap 'rm -rf "$T"' EXIT
fails=0

run() {
	echo "+ $*"
	if ! "$@"; then
		echo "FAIL: $*"
		fails=$((fails + 1))
		return 1
	fi
}

# A command that must fail with exit status $1 and print $2 on stderr.
must_fail() {
	local want=$1 text=$2
	shift 2
	echo "+ (must fail $want) $*"
	local out rc
	out=$("$@" 2>&1 >/dev/null)
	rc=$?
	if [ "$rc" != "$want" ] || ! grep -qF -- "$text" <<<"$out"; then
		echo "FAIL: exit $rc (want $want), stderr: $out (want '$text')"
		fails=$((fails + 1))
	fi
}

same_files() {
	local a=$1 b=$2 f
	for f in "$a"/*; do
		if ! cmp -s "$f" "$b/$(basename "$f")"; then
			echo "FAIL: $f and $b/$(basename "$f") differ"
			fails=$((fails + 1))
		fi
	done
	if [ "$(ls "$a")" != "$(ls "$b")" ]; then
		echo "FAIL: $a and $b hold different files"
		fails=$((fails + 1))
	fi
}

# every architecture and dtype, one file
for arch in llama qwen2 qwen3; do
	for dt in bf16 f16 f32; do
		d=$T/$arch-$dt
		run "$MK" --quiet --arch "$arch" --size tiny --dtype "$dt" --seed 7 --out "$d" || continue
		run "$PY" "$CHECK" check "$d" --arch "$arch" --dtype "$dt" --shards 1
		if [ -n "$OPEN" ]; then
			run "$OPEN" "$d" "$arch" "$dt"
		fi
	done
done

# sharded: three files and an index, the same tensor bytes as the single file
for arch in llama qwen2 qwen3; do
	d=$T/$arch-bf16-s3
	run "$MK" --quiet --arch "$arch" --size tiny --dtype bf16 --seed 7 --shards 3 --threads 1 \
		--out "$d" || continue
	run "$PY" "$CHECK" check "$d" --arch "$arch" --dtype bf16 --shards 3
	run "$PY" "$CHECK" same "$d" "$T/$arch-bf16"
	if [ -n "$OPEN" ]; then
		run "$OPEN" "$d" "$arch" bf16
	fi
done

# determinism: same seed, other thread count -> identical files; another seed -> all differ
run "$MK" --quiet --arch qwen3 --size tiny --dtype bf16 --seed 7 --threads 1 --out "$T/again" &&
	same_files "$T/qwen3-bf16" "$T/again"
run "$MK" --quiet --arch llama --size tiny --dtype f32 --seed 7 --threads 3 --out "$T/again-l" &&
	same_files "$T/llama-f32" "$T/again-l"
run "$MK" --quiet --arch qwen3 --size tiny --dtype bf16 --seed 8 --out "$T/seed8" &&
	run "$PY" "$CHECK" differ "$T/seed8" "$T/qwen3-bf16"
# rewriting a directory with fewer shards leaves no stale shard behind
run "$MK" --quiet --arch qwen2 --size tiny --dtype bf16 --seed 7 --out "$T/qwen2-bf16-s3" &&
	run "$PY" "$CHECK" check "$T/qwen2-bf16-s3" --arch qwen2 --dtype bf16 --shards 1
# overrides reach config.json and the shapes
run "$MK" --quiet --arch qwen3 --size tiny --dtype f32 --seed 1 --layers 3 --hidden 96 --heads 6 \
	--kv-heads 3 --head-dim 32 --intermediate 128 --untie --out "$T/override" &&
	run "$PY" "$CHECK" check "$T/override" --arch qwen3 --dtype f32 &&
	run "$PY" -c 'import json,sys; c=json.load(open(sys.argv[1]+"/config.json"));
assert (c["num_hidden_layers"],c["hidden_size"],c["num_attention_heads"],c["num_key_value_heads"],
        c["head_dim"],c["intermediate_size"],c["tie_word_embeddings"])==(3,96,6,3,32,128,False), c' \
		"$T/override"

# command-line errors
must_fail 2 "has no size 1b" "$MK" --arch qwen2 --size 1b --out "$T/x"
must_fail 2 "has no size 1.5b" "$MK" --arch llama --size 1.5b --out "$T/x"
must_fail 2 "expected llama, qwen2 or qwen3" "$MK" --arch gpt2 --size tiny --out "$T/x"
must_fail 2 "expected bf16, f16 or f32" "$MK" --arch qwen3 --size tiny --dtype f8 --out "$T/x"
must_fail 2 "multiple of num_key_value_heads" "$MK" --arch qwen3 --size tiny --kv-heads 3 --out "$T/x"
must_fail 2 "are required" "$MK" --arch qwen3 --size tiny
must_fail 1 "smaller than the tokenizer" "$MK" --arch qwen3 --size tiny --vocab 1000 --out "$T/x"
must_fail 1 "--npm" "$MK" --arch qwen3 --size tiny --npm "$T/nowhere" --out "$T/x"
must_fail 1 "--shards 500" "$MK" --arch qwen3 --size tiny --shards 500 --out "$T/x"
echo "+ --help"
if ! "$MK" --help | grep -q "Llama-3.2-1B"; then
	echo "FAIL: --help lacks the size table"
	fails=$((fails + 1))
fi

if [ "$fails" -ne 0 ]; then
	echo "test_mkmodel: $fails failure(s)"
	exit 1
fi
echo "test_mkmodel: ok"
