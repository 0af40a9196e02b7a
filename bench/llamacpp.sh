#!/bin/bash
# SPDX-License-Identifier: Apache-2.0
# bench/llamacpp.sh: llama.cpp as the peer, on the GPU machine, decoding the same model shapes
# (written by offpath-mkmodel, bf16) at batch 1 (notes/llamacpp-peer.md says how it was found to
# build there). The llama.cpp source is NOT part of this repository: it comes from the npm package
# node-llama-cpp@3.22.1 (llama/gitRelease.bundle), cloned and pruned into a scratch folder that
# the device call carries.
# usage: bench/llamacpp.sh LLAMA_SRC MKMODEL [WORKDIR] ; prints llama-bench's markdown tables.
set -u -o pipefail
SRC=$1 MK=$2 W=${3:-/tmp/llamacpp}
mkdir -p "$W"
t0=$(date +%s)
cmake -S "$SRC" -B "$W/build" -DGGML_CUDA=ON -DCMAKE_CUDA_ARCHITECTURES=90 -DLLAMA_CURL=OFF \
	-DLLAMA_BUILD_UI=OFF -DLLAMA_USE_PREBUILT_UI=OFF -DLLAMA_BUILD_TESTS=OFF \
	-DLLAMA_BUILD_EXAMPLES=OFF -DGGML_NATIVE=OFF -DCMAKE_BUILD_TYPE=Release >"$W/cmake.log" 2>&1 ||
	{ tail -20 "$W/cmake.log"; exit 1; }
cmake --build "$W/build" -j"$(nproc)" --target llama-bench >"$W/build.log" 2>&1 ||
	{ tail -30 "$W/build.log"; exit 1; }
echo "llama.cpp build: $(( $(date +%s) - t0 )) s"
for spec in "qwen2 1.5b Qwen2.5-1.5B" "llama 1b Llama-3.2-1B"; do
	set -- $spec
	d=$W/$1-$2
	"$MK" --arch "$1" --size "$2" --dtype bf16 --seed 3 --out "$d" --quiet >"$W/mk-$1.log" 2>&1 ||
		{ echo "$3: mkmodel failed"; tail -3 "$W/mk-$1.log"; continue; }
	PYTHONPATH="$SRC/gguf-py" python3 "$SRC/convert_hf_to_gguf.py" "$d" --outtype bf16 \
		--outfile "$d.gguf" >"$W/convert-$1.log" 2>&1 ||
		{ echo "$3: convert_hf_to_gguf failed"; tail -3 "$W/convert-$1.log"; continue; }
	echo "### llama.cpp, $3 (bf16, batch 1 decode, flash attention)"
	"$W/build/bin/llama-bench" -m "$d.gguf" -ngl 99 -fa 1 -p 0 -n 128 -r 5 -o md 2>&1 | grep '^|'
	"$W/build/bin/llama-bench" -m "$d.gguf" -ngl 99 -fa 1 -p 0 -n 128 -r 3 -d 4096 -o md 2>&1 |
		grep '^|' | tail -1
done
