#!/usr/bin/env bash
# CI's second PoCL build: PyPI's (the `pocl` extra: pyopencl's bundled PoCL 3.0 with LLVM 14),
# on its own (OCL_ICD_VENDORS names only its ICD file). The full suite runs on Debian's PoCL
# (README's test command); here the layer tests, with proving on (this compiler is the one
# known to crash on some CPUs), then the README's main
# command - which must exit 0, reach 85% test accuracy and print no compiler warning.
set -euo pipefail
cd "$(dirname "$0")/.."
icd=$(.venv/bin/python -c 'import os, pyopencl; print(os.path.join(os.path.dirname(pyopencl.__file__), ".libs", "pocl.icd"))')
[ -f "$icd" ] || { echo "PyPI's PoCL ICD not found at $icd: pip install '.[pocl]'" >&2; exit 1; }
export OCL_ICD_VENDORS=$icd
HETCL_PROVE=1 POCL_DEVICES="pthread basic" .venv/bin/python -m pytest -q -n 2 tests/test_layers.py
out=$(mktemp -d)
{ .venv/bin/hetcl devices && .venv/bin/hetcl train --devices all --log "$out/log.jsonl"; } 2>&1 | tee "$out/output"
if grep -qi "warning generated\|warnings generated" "$out/output"; then
  echo "a compiler warning reached the terminal" >&2; exit 1
fi
.venv/bin/python - "$out/log.jsonl" <<'PY'
import json, sys
acc = [json.loads(l)["test_acc"] for l in open(sys.argv[1]) if '"test_acc"' in l][-1]
print(f"PyPI PoCL: main command test accuracy {acc:.4f}")
assert acc >= 0.85, acc
PY
