"""Probes: each kernel family's check of one variant against numpy, run by the prover
(codegen/prover.py) in its child process when a variant is first built on a device.

A probe is ``probe(device, params, **context) -> float``: it builds the family's wrapper with
``params`` and the template context the variant was built with (so the program is the very
one being proven), runs it on small random inputs of the shape the context fixes and returns
the largest error relative to the largest magnitude of the numpy result (inf where an integer
output differs). Outputs start as NaN or as values the kernel must overwrite, so an element a
variant misses shows. The prover accepts errors up to prover.TOLERANCE.
"""
import numpy as np

# template -> "module:function"
PROBES = {"vector_probe.cl.mako": "hetcl.codegen.vector_probe:probe",
          "gemm.cl.mako": "hetcl.codegen.probes.dense:gemm",
          "gather.cl.mako": "hetcl.codegen.probes.augment:gather",
          "loss.cl.mako": "hetcl.codegen.probes.dense:loss",
          "update.cl.mako": "hetcl.codegen.probes.dense:update",
          "eltwise.cl.mako": "hetcl.codegen.probes.eltwise:eltwise",
          "conv2d.cl.mako": "hetcl.codegen.probes.conv:conv",
          "pool.cl.mako": "hetcl.codegen.probes.conv:pool",
          "avgpool.cl.mako": "hetcl.codegen.probes.conv:avgpool",
          "dropout.cl.mako": "hetcl.codegen.probes.dropout:dropout",
          "batchnorm.cl.mako": "hetcl.codegen.probes.norm:batchnorm"}

# The activations of eltwise.ACTIVATIONS (and a GEMM epilogue's) in numpy.
NUMPY_ACTIVATIONS = {"none": lambda x: x, "relu": lambda x: np.maximum(x, 0),
               "sigmoid": lambda x: 1 / (1 + np.exp(-x))}


def relative_error(got, ref):
    """max |got - ref| / max(1, max |ref|): NaN where got has a NaN (never <= a tolerance)."""
    return float(np.abs(got - ref).max() / max(1.0, np.abs(ref).max()))
