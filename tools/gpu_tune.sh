#!/usr/bin/env bash
# On the GPU machine: tune every kernel of one model's training step on the first NVIDIA GPU,
# copy the tuning DB out (to merge into hetcl/tuning/tuned.json), then run the cuDNN harness
# with the tuned kernels. An in-step tune of cifar-cnn takes longer than one 10-minute call:
# the tune is cut at SECONDS (it keeps what it found: split-K entries first, then GEMMs, then
# the other kernels). A later call may start a fresh machine, so give each call one model and
# merge the DBs it brings back (tuning-MODEL.json) into hetcl/tuning/tuned.json here.
# KINDS (e.g. KINDS="other") limits the tune as `hetcl tune --kernels` does: "other" alone
# re-tunes the non-GEMM entries, each conv's dx way (conv_dx) among them.
# Usage: source .whl/gpu-env.sh && [KINDS=...] bash tools/gpu_tune.sh [model] [seconds] [compare]
set -uo pipefail
out=${OUT:-out}; mkdir -p "$out"
model=${1:-lenet5}; seconds=${2:-300}
export HETCL_CACHE_DIR=${HETCL_CACHE_DIR:-/tmp/hetcl-cache}
kinds=(); for k in ${KINDS:-}; do kinds+=(--kernels "$k"); done
timeout "$seconds" python3 -m hetcl tune --devices 0 --model "$model" --candidates 8 ${kinds[@]+"${kinds[@]}"} \
    > "$out/tune-$model.txt" 2>&1
tr '\r' '\n' < "$out/tune-$model.txt" | grep -v candidate | tail -40
cp "$HETCL_CACHE_DIR/tuning.json" "$out/tuning-$model.json"
if [ "${3:-}" = compare ]; then
    timeout 240 python3 tools/cudnn_compare.py --out "$out/cmp.md" --png "$out/cmp.png" \
        > "$out/cmp.txt" 2>&1
    grep -E "Geometric|^\| (lenet5|cifar-cnn) \| [0-9]" "$out/cmp.md"
fi
