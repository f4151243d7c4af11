"""Measurements and checks of devices: GEMM GFLOP/s, bandwidth and training images/s (bench.py,
behind `hetcl devices --bench` and `hetcl bench`), and `hetcl devices --check` (check.py)."""
