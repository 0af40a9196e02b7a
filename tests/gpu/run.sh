#!/bin/bash
# SPDX-License-Identifier: Apache-2.0
# tests/gpu/run.sh: the whole GPU suite in one command, on the GPU machine.
#   builds with meson (CUDA on), writes test models with offpath-mkmodel, then runs
#   1. test_pk_kernels: every kernel vs a double CPU reference on fresh random inputs
#   2. test_pk_step per model (llama, qwen2, qwen3; f32 and bf16): teacher-forced logits over 256
#      positions vs Hugging Face transformers (hf_ref.py), vs model/cpu.c, and mixed
#      prefill+decode batches with scrambled pages vs the request alone
#   3. test_pk_devlaunch: the step fired from a kernel inside a device-launchable graph
#   4. bench/pk_bench: step time as graph replay beside the measured bandwidth floor
# and prints one summary table last. Exit 0 all passed, 1 a failure, 77 no GPU.
# usage: tests/gpu/run.sh [--no-bench] [--bench-only]
# env: PK_BUILD (build dir, default build-gpu-run), OUT (logs, default /tmp/pk-gpu-out),
#      OFFPATH_NPM (node_modules with the tokenizer files; default .deps/npm or .gpunpm),
#      PK_PREBUILT=1 (use the binaries already under PK_BUILD, same layout as a build dir:
#      tests/gpu/*, bench/pk_bench, tools/offpath-mkmodel; built on another machine).
set -u -o pipefail
cd "$(dirname "$0")/../.."
SRC=$PWD
BENCH=1
ONLY_BENCH=0
for a in "$@"; do
	case $a in
	--no-bench) BENCH=0 ;;
	--bench-only) ONLY_BENCH=1 ;;
	*) echo "usage: $0 [--no-bench] [--bench-only]"; exit 2 ;;
	esac
done
if ! command -v nvidia-smi >/dev/null || ! nvidia-smi -L >/dev/null 2>&1; then
	echo "tests/gpu/run.sh: SKIP: no NVIDIA GPU on this machine"
	exit 77
fi
[ -f .debs/unpack.sh ] && source .debs/unpack.sh
B=${PK_BUILD:-build-gpu-run}
OUT=${OUT:-/tmp/pk-gpu-out}
mkdir -p "$OUT"
if [ -z "${OFFPATH_NPM:-}" ]; then
	if [ -d .deps/npm/node_modules/tiktoken ]; then OFFPATH_NPM=$SRC/.deps/npm/node_modules
	else OFFPATH_NPM=$SRC/.gpunpm/node_modules; fi
fi
export OFFPATH_NPM
PY=python3
SUMMARY=$OUT/summary.txt
: >"$SUMMARY"
FAIL=0
row() { printf '%-58s %s\n' "$1" "$2" | tee -a "$SUMMARY" >/dev/null; }

t0=$(date +%s)
if [ -n "${PK_PREBUILT:-}" ]; then
	echo "prebuilt binaries in $B"
elif [ ! -f "$B/build.ninja" ]; then
	meson setup "$B" -Dwerror=true -Dcuda=enabled >"$OUT/meson-setup.log" 2>&1 ||
		{ tail -30 "$OUT/meson-setup.log"; exit 1; }
fi
[ -n "${PK_PREBUILT:-}" ] || ninja -C "$B" tests/gpu/test_pk_kernels tests/gpu/test_pk_step \
	tests/gpu/test_pk_devlaunch bench/pk_bench tools/offpath-mkmodel >"$OUT/build.log" 2>&1 ||
	{ grep -v '^\[' "$OUT/build.log" | tail -40; exit 1; }
echo "build: $(( $(date +%s) - t0 )) s"
nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv,noheader | tee -a "$SUMMARY"

run() { # name, log, command...
	local name=$1 log=$2
	shift 2
	local t=$(date +%s)
	"$@" >"$OUT/$log" 2>&1
	local rc=$?
	grep -E '^  |PASS|FAIL|SKIP|error|Error' "$OUT/$log" | grep -v '^weights' | head -60
	if [ $rc -eq 0 ]; then row "$name" "PASS ($(( $(date +%s) - t )) s)"
	else row "$name" "FAIL rc=$rc (log $log)"; FAIL=1; tail -20 "$OUT/$log"; fi
}

if [ $ONLY_BENCH = 0 ]; then
	run "kernels vs CPU double reference" kernels.log "$B/tests/gpu/test_pk_kernels"

	M=/tmp/pk-models
	mkdir -p $M
	for arch in llama qwen2 qwen3; do
		for dt in f32 bf16; do
			d=$M/$arch-small-$dt
			"$B/tools/offpath-mkmodel" --arch $arch --size small --dtype $dt --seed 11 \
				--out $d --quiet >"$OUT/mk-$arch-$dt.log" 2>&1 ||
				{ row "mkmodel $arch small $dt" "FAIL"; FAIL=1; cat "$OUT/mk-$arch-$dt.log"; continue; }
			$PY tests/gpu/hf_ref.py $d $d/ref.bin 256 >"$OUT/hf-$arch-$dt.log" 2>&1 ||
				{ row "transformers reference $arch $dt" "FAIL"; FAIL=1; tail -20 "$OUT/hf-$arch-$dt.log"; continue; }
			extra=""
			[ $dt = f32 ] && extra="--cpu"
			if [ $dt = bf16 ]; then
				$PY tests/gpu/hf_ref.py $d $d/ref32.bin 256 1 --fp32 >>"$OUT/hf-$arch-$dt.log" 2>&1 &&
					extra="--ref32 $d/ref32.bin"
			fi
			run "step $arch small $dt: vs HF, cpu, mixed" step-$arch-$dt.log \
				"$B/tests/gpu/test_pk_step" --model $d --dtype $dt --ref $d/ref.bin --mixed $extra
		done
	done
	# the same bf16 model on the unfused path everywhere (A/B for the fused skinny-GEMM path)
	d=$M/llama-small-bf16
	[ -f $d/ref32.bin ] && run "step llama small bf16, unfused path: vs HF" step-unfused.log \
		env PK_STEP_UNFUSED=1 "$B/tests/gpu/test_pk_step" --model $d --dtype bf16 --ref $d/ref.bin --ref32 $d/ref32.bin
	# head_dim 256 (and 64/128 above): qwen3 tiny widened
	d=$M/qwen3-hd256-f32
	if "$B/tools/offpath-mkmodel" --arch qwen3 --size tiny --head-dim 256 --hidden 256 --layers 2 \
		--dtype f32 --seed 5 --out $d --quiet >"$OUT/mk-hd256.log" 2>&1 &&
		$PY tests/gpu/hf_ref.py $d $d/ref.bin 256 >"$OUT/hf-hd256.log" 2>&1; then
		run "step qwen3 head_dim 256 f32: vs HF, cpu" step-hd256.log \
			"$B/tests/gpu/test_pk_step" --model $d --dtype f32 --ref $d/ref.bin --cpu
	else
		row "qwen3 head_dim 256 model/reference" "FAIL"; FAIL=1; tail -5 "$OUT/mk-hd256.log" "$OUT/hf-hd256.log"
	fi
	run "device graph launch from a device-launched kernel" devlaunch.log \
		"$B/tests/gpu/test_pk_devlaunch" $M/llama-small-bf16 bf16
fi

if [ $BENCH = 1 ]; then
	"$B/bench/pk_bench" 2>&1 | tee "$OUT/bench.md"
	[ ${PIPESTATUS[0]} -eq 0 ] && row "bench" "done" || { row "bench" "FAIL"; FAIL=1; }
	if [ -n "${PK_BENCH_AB:-}" ]; then
		echo "unfused path (PK_STEP_UNFUSED=1), for comparison:"
		PK_STEP_UNFUSED=1 "$B/bench/pk_bench" "$PK_BENCH_AB" 2>&1 | grep '^|' | tee "$OUT/bench-unfused.md"
	fi
fi
echo
echo "==== GPU suite summary ($(date -u +%F' '%T) UTC) ===="
cat "$SUMMARY"
[ -f "$OUT/bench.md" ] && grep '^|' "$OUT/bench.md"
exit $FAIL
