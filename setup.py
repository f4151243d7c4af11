"""Packaging. The templates live in the top-level kernels/ folder of the repository and ship
inside the wheel as the package ``hetcl.kernels`` (hetcl/codegen/render.py finds them in both
places), so a non-editable install can render and build every kernel."""
from setuptools import setup

setup(
    packages=["hetcl", "hetcl.codegen", "hetcl.codegen.probes", "hetcl.kernels"],
    package_dir={"hetcl.kernels": "kernels"},
    package_data={"hetcl.kernels": ["*.cl.mako", "*.mako"], "hetcl.codegen": ["*.json"]},
    include_package_data=True,
)
