#!/usr/bin/env bash
# On the GPU machine: tune the GEMMs of every model on the NVIDIA GPU (and the PoCL CPU beside
# it), copy the tuning DB out (to ship in hetcl/codegen/tuned.json), then run the cuDNN harness
# with the tuned kernels. Usage: source .whl/gpu-env.sh && bash tools/gpu_tune.sh
set -uo pipefail
out=${OUT:-out}; mkdir -p "$out"
export HETCL_CACHE_DIR=${HETCL_CACHE_DIR:-/tmp/hetcl-cache}
timeout 240 python3 -m hetcl tune --devices gpu --model all --candidates 16 2>/dev/null | tee "$out/tune_gpu.txt"
cp "$HETCL_CACHE_DIR/tuning.json" "$out/tuning.json"
timeout 240 python3 tools/cudnn_compare.py --out "$out/cmp.md" --png "$out/cmp.png" 2>/dev/null | tail -60
cp "$HETCL_CACHE_DIR/tuning.json" "$out/tuning.json"
