#!/usr/bin/env bash
# SPDX-License-Identifier: Apache-2.0
# Set up a fresh Debian 12 machine, build offpath, write the demo model (a tiny Qwen3-shaped model
# with random weights and the real Qwen tokenizer), and run a completion on the CPU backend.
set -euo pipefail
cd "$(dirname "$0")/.."
./scripts/deps.sh
B=${OFFPATH_BUILDDIR:-build}
[ -f "$B/build.ninja" ] || meson setup "$B" >/dev/null
ninja -C "$B" >/dev/null
M=$B/demo-model
[ -f "$M/config.json" ] || "$B/tools/offpath-mkmodel" --arch qwen3 --size tiny --dtype bf16 --seed 1 --out "$M"
echo "== offpathd generate --model $M --prompt 'The quick brown fox' --max-tokens 32 --seed 7 --stats"
"$B/daemon/offpathd" generate --model "$M" --prompt "The quick brown fox" --max-tokens 32 --seed 7 --stats
