#!/usr/bin/env bash
# Benchmark (not a test): what proving kernel variants costs the README's main command
# (`hetcl train --devices all`, LeNet-5, 2 epochs of Fashion-MNIST): wall seconds with a cold
# kernel cache (hetcl's and PoCL's both empty) and then warm (the same caches again), with
# proving on (the default) and off (HETCL_PROVE=0), on each PoCL build this machine has:
# Debian's (/etc/OpenCL/vendors/pocl.icd) and PyPI's (pyopencl's bundled ICD, the pocl extra).
# Usage: tools/bench_first_run.sh [extra hetcl train args]
set -uo pipefail
cd "$(dirname "$0")/.."
pypi=$(.venv/bin/python -c 'import os, pyopencl; print(os.path.join(os.path.dirname(pyopencl.__file__), ".libs", "pocl.icd"))')
lscpu | grep -m1 "Model name"
for icd in /etc/OpenCL/vendors/pocl.icd "$pypi"; do
  [ -f "$icd" ] || continue
  for prove in 1 0; do
    caches=$(mktemp -d)
    for run in cold warm; do
      start=$(date +%s%N)
      OCL_ICD_VENDORS=$icd POCL_CACHE_DIR=$caches/pocl HETCL_CACHE_DIR=$caches/hetcl \
        HETCL_PROVE=$prove .venv/bin/hetcl train --devices all "$@" > $caches/out 2>&1
      rc=$?
      end=$(date +%s%N)
      printf '%s  HETCL_PROVE=%s  %s: %d.%d s (exit %s) %s\n' "$icd" "$prove" "$run" \
        $(( (end - start) / 1000000000 )) $(( (end - start) / 100000000 % 10 )) "$rc" \
        "$(grep -o 'test acc [0-9.]*%' $caches/out | tail -1)"
    done
  done
done
