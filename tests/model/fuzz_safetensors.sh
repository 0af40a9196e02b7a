#!/bin/sh
# SPDX-License-Identifier: Apache-2.0
# Build tests/model/fuzz_st.c with clang + libFuzzer + ASan/UBSan and run it for a bounded time
# (FUZZ_SECONDS, default 60). Exit 77 (skip) when clang or the libFuzzer runtime is missing
# (apt-get install clang libclang-rt-14-dev).
set -eu
src=${OFFPATH_SRC:?run through meson test}
out=${OFFPATH_BUILD:?run through meson test}/tests/model/fuzz-st
secs=${FUZZ_SECONDS:-60}
CLANG=${CLANG:-clang}
command -v "$CLANG" >/dev/null 2>&1 || { echo "clang not found: skipping"; exit 77; }
mkdir -p "$out/corpus"
flags="-g -O1 -fsanitize=fuzzer,address,undefined -fno-sanitize-recover=all -D_GNU_SOURCE"
if ! "$CLANG" $flags -I"$src/model" -o "$out/fuzz_st" \
	"$src/tests/model/fuzz_st.c" "$src/model/safetensors.c" "$src/model/half.c" \
	-ljansson -lm 2>"$out/build.log"; then
	if grep -q -e 'libclang_rt.fuzzer' -e 'cannot find' "$out/build.log"; then
		cat "$out/build.log"; echo "libFuzzer runtime missing (libclang-rt-14-dev): skipping"
		exit 77
	fi
	cat "$out/build.log"; exit 1
fi
# Seeds: a valid two-tensor file and a header with metadata.
seed() { # name header data-bytes
	h=$2; n=${#h}
	printf "$(printf '\\%03o\\%03o\\%03o\\%03o\\000\\000\\000\\000' \
		$((n & 255)) $(((n >> 8) & 255)) $(((n >> 16) & 255)) $(((n >> 24) & 255)))" \
		>"$out/corpus/$1"
	printf '%s' "$h" >>"$out/corpus/$1"
	head -c "$3" /dev/zero >>"$out/corpus/$1"
}
seed two '{"a":{"dtype":"F32","shape":[2],"data_offsets":[0,8]},"b":{"dtype":"BF16","shape":[2,2],"data_offsets":[8,16]}}' 16
seed meta '{"__metadata__":{"format":"pt"},"w":{"dtype":"F16","shape":[1,1,1,3],"data_offsets":[0,6]}}  ' 6
seed empty '{}      ' 0
rc=0
ASAN_OPTIONS=detect_leaks=1 "$out/fuzz_st" -max_total_time="$secs" -max_len=4096 \
	-dict="$src/tests/model/fuzz_st.dict" \
	-print_final_stats=1 "$out/corpus" >"$out/fuzz.log" 2>&1 || rc=$?
tail -n 40 "$out/fuzz.log"
exit $rc
