#!/usr/bin/env bash
# `hetcl bench` of two versions side by side in one call, on the same machine: an older tree
# (a directory holding its hetcl/ and kernels/, e.g. from `git archive REV hetcl kernels`) and
# this checkout, alternating ROUNDS times after a warm-up of each (kernel builds and proofs go
# to one shared cache: both versions render the same kernels). Prints each run's table.
# Usage: bash tools/bench_versions.sh OLD_DIR ROUNDS [hetcl bench options...]
set -uo pipefail
old=$(cd "$1" && pwd); rounds=$2; shift 2
cache=$(mktemp -d)
# (run from the tree itself: `python -m` puts the working directory first on sys.path)
run() { (cd "$1" && PYTHONPATH="$1${PYTHONPATH:+:$PYTHONPATH}" HETCL_CACHE_DIR=$cache \
  python3 -m hetcl bench "${@:2}"); }
for tree in "$old" "$PWD"; do run "$tree" "$@" --steps 5 > /dev/null 2>&1; done
for round in $(seq "$rounds"); do
  for tree in "$old" "$PWD"; do
    name=new; [ "$tree" = "$old" ] && name=old
    echo "== round $round, $name ($(cd "$tree" && python3 -c 'import hetcl; print(hetcl.__file__)'))"
    run "$tree" "$@"
  done
done
