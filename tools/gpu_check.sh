#!/usr/bin/env bash
# On the GPU machine (see ../shared/device/README.md): the tests on the NVIDIA device, the device
# table with measured GFLOP/s and GB/s, the GEMM benchmark, and training throughput of each device
# alone and all together. Logs go to $OUT (or ./out).
# Usage: source .whl/gpu-env.sh && bash tools/gpu_check.sh [pytest args]
set -uo pipefail
out=${OUT:-out}; mkdir -p "$out"
nvidia-smi --query-gpu=name,driver_version,memory.total --format=csv,noheader | tee "$out/gpu.txt"
HETCL_TEST_DEVICES=gpu timeout 300 python3 -m pytest -q -p no:cacheprovider "$@" > "$out/tests.txt" 2>&1
tail -25 "$out/tests.txt"
python3 -m hetcl devices --bench 2>/dev/null | tee "$out/devices.txt"
python3 tools/bench_gemm.py --devices gpu --sizes 1024,4096 --trans-size 4096 2>&1 | tee "$out/gemm.md"
HETCL_DEBUG=0 python3 -m hetcl bench --devices all --model lenet5 --model mlp --model cifar-cnn --steps 30 2>&1 | tee "$out/bench.txt"
