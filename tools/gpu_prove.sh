#!/usr/bin/env bash
# On the GPU machine (see ../shared/device/README.md): proving kernel variants on NVIDIA's OpenCL
# and the host's PoCL - `hetcl devices --check` cold and warm, with a fault injected into the
# GPU's GEMM, the main command's wall time with proving (cold and
# warm cache) and without, and last the proving and probe tests on the GPU. Logs go to $OUT (or ./out).
# Usage: source .whl/gpu-env.sh && bash tools/gpu_prove.sh DATA_DIR
set -uo pipefail
out=${OUT:-out}; mkdir -p "$out"; data=${1:-/usr/share/datasets/fashion-mnist}
nvidia-smi --query-gpu=name,driver_version --format=csv,noheader | tee "$out/gpu.txt"
lscpu | grep -m1 "Model name" | tee -a "$out/gpu.txt"
python3 -m hetcl devices | tee "$out/devices.txt"
cold=$(mktemp -d)
for run in cold warm; do
  /usr/bin/time -f "devices --check ($run): %e s" env HETCL_CACHE_DIR=$cold \
    python3 -m hetcl devices --check 2>&1 | tee -a "$out/check.txt"
done
fault=$(mktemp -d)
HETCL_CACHE_DIR=$fault HETCL_PROVE_FAULT="abort:gemm.cl.mako:VWN=4," \
  python3 -m hetcl devices --check --devices gpu 2>&1 | tee -a "$out/check.txt"
main="python3 -m hetcl train --devices all --data $data"
for mode in "1 cold" "1 warm" "0 cold"; do
  set -- $mode
  dir=$cold; [ "$2" = cold ] && dir=$(mktemp -d)
  /usr/bin/time -f "main command, HETCL_PROVE=$1, $2 kernel cache: %e s" env HETCL_PROVE=$1 \
    HETCL_CACHE_DIR=$dir $main 2>&1 | tail -3 | tee -a "$out/main.txt"
done
HETCL_TEST_DEVICES=gpu timeout ${TEST_TIMEOUT:-400} python3 -m pytest -q -p no:cacheprovider \
  tests/test_prove.py tests/test_probes.py tests/test_gemm.py > "$out/tests.txt" 2>&1
tail -6 "$out/tests.txt"
