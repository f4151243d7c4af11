"""The kernels: one host module per template of kernels/ (gemm.py, conv.py, pool.py, ...), each
with its tunable parameters declared beside it (params.py holds the generic part) and built
through launch.py; rendering (render.py), the program cache (cache.py), and proving each variant
before it is used (prove.py, prover.py, verdicts.py, vector_probe.py, probes/)."""
