"""Per-device tuning: `hetcl tune` (tune.py), the GEMM search (tuner.py), the tuning database and
the shipped entries (tunedb.py, tuned.json) and the bucket schema that says which shapes an
entry serves (buckets.py)."""
