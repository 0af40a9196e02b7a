#!/usr/bin/env bash
# SPDX-License-Identifier: Apache-2.0
# Set up a fresh Debian 12 machine, build offpath, write the demo model (a tiny Qwen3-shaped model
# with random weights and the real Qwen tokenizer), start `offpathd serve` on the CPU backend and
# stream a chat completion through the OpenAI-compatible HTTP API with curl.
set -euo pipefail
cd "$(dirname "$0")/.."
./scripts/deps.sh
B=${OFFPATH_BUILDDIR:-build}
[ -f "$B/build.ninja" ] || meson setup "$B" >/dev/null
ninja -C "$B" >/dev/null
M=$B/demo-model
[ -f "$M/config.json" ] || "$B/tools/offpath-mkmodel" --arch qwen3 --size tiny --dtype bf16 --seed 1 --out "$M" --quiet

log=$(mktemp)
"$B/daemon/offpathd" serve --model "$M" --listen 127.0.0.1:0 2>"$log" &
pid=$!
trap 'kill -TERM $pid 2>/dev/null; wait $pid 2>/dev/null; rm -f "$log"' EXIT
for _ in $(seq 100); do
	grep -q 'listening on' "$log" && break
	kill -0 $pid 2>/dev/null || { cat "$log"; exit 1; }
	sleep 0.1
done
port=$(sed -n 's/.*listening on [^ ]*:\([0-9]*\).*/\1/p' "$log")
cat "$log"
body='{"messages":[{"role":"user","content":"Tell me about offpath."}],"max_tokens":24,"seed":7,"stream":true}'
echo "== curl -N http://127.0.0.1:$port/v1/chat/completions -d '$body'"
curl -sS -N "http://127.0.0.1:$port/v1/chat/completions" -H 'Content-Type: application/json' -d "$body"
echo "== a plain completion from the command line: offpathd generate"
"$B/daemon/offpathd" generate --model "$M" --prompt "The quick brown fox" --max-tokens 24 --seed 7 --stats
