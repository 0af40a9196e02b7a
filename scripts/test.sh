#!/usr/bin/env bash
# SPDX-License-Identifier: Apache-2.0
# Set up a fresh Debian 12 machine and run the whole test suite (suites fast, nic, fuzz; the gpu
# suite skips itself without a GPU). Warnings are errors. Prints "N passed, N failed" last.
set -euo pipefail
cd "$(dirname "$0")/.."
./scripts/deps.sh
B=${OFFPATH_BUILDDIR:-build}
if [ -f "$B/build.ninja" ]; then
	meson setup --reconfigure "$B" -Dwerror=true >/dev/null
else
	meson setup "$B" -Dwerror=true >/dev/null
fi
ninja -C "$B"
rc=0
meson test -C "$B" --no-rebuild --print-errorlogs --num-processes 2 \
	--suite fast --suite nic --suite fuzz --suite gpu "$@" || rc=$?
python3 scripts/test_summary.py "$B/meson-logs/testlog.json"
exit $rc
