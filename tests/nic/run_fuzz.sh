#!/bin/sh
# SPDX-License-Identifier: Apache-2.0
# Builds tests/nic/fuzz_http.c with clang's libFuzzer (+ASan/UBSan) and runs it for a bounded time.
# Env: OFFPATH_SRC, OFFPATH_BUILD (meson test_env), FUZZ_SECONDS (default 60), CLANG (default clang).
# Exit 77 when clang cannot build a libFuzzer binary here (install clang and libclang-rt-14-dev).
set -u
src=${OFFPATH_SRC:?}
out=${OFFPATH_BUILD:?}/tests/nic/fuzz
cc=${CLANG:-clang}
secs=${FUZZ_SECONDS:-60}
mkdir -p "$out/corpus" || exit 1
probe="$out/probe.c"
printf 'int LLVMFuzzerTestOneInput(const unsigned char *d, unsigned long n);\nint LLVMFuzzerTestOneInput(const unsigned char *d, unsigned long n) { (void)d; (void)n; return 0; }\n' > "$probe"
if ! "$cc" -fsanitize=fuzzer "$probe" -o "$out/probe" >/dev/null 2>&1; then
	echo "SKIP: $cc cannot link a libFuzzer target (apt-get install clang libclang-rt-14-dev)"
	exit 77
fi
"$cc" -std=gnu11 -g -O1 -Wall -Wextra -Werror -fsanitize=fuzzer,address,undefined \
	-fno-sanitize-recover=undefined -I"$src/nic" \
	"$src/nic/http.c" "$src/tests/nic/fuzz_http.c" -o "$out/fuzz_http" || exit 1
# Seeds: valid, pipelined and broken requests (byte 0 is the fuzzer's knob).
printf '\040GET /v1/models HTTP/1.1\r\nHost: a\r\n\r\n' > "$out/corpus/seed-get"
printf '\077POST /v1/completions HTTP/1.1\r\nHost: a\r\nContent-Length: 5\r\nConnection: close\r\n\r\nhello' > "$out/corpus/seed-post"
printf '\020GET / HTTP/1.0\r\nConnection: keep-alive\r\n\r\nGET /b HTTP/1.1\r\nHost: x\r\nExpect: 100-continue\r\nContent-Length: 1\r\n\r\nz' > "$out/corpus/seed-pipe"
printf '\005POST / HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: chunked\r\nContent-Length: 3\r\n\r\n' > "$out/corpus/seed-te"
exec "$out/fuzz_http" -max_total_time="$secs" -timeout=10 -rss_limit_mb=2048 -print_final_stats=1 "$out/corpus"
