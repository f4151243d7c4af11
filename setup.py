"""Packaging. The templates live in the top-level kernels/ folder of the repository and ship
inside the wheel as the package ``hetcl.kernels`` (hetcl/codegen/render.py finds them in both
places), so a non-editable install can render and build every kernel."""
from setuptools import find_packages, setup

setup(
    packages=find_packages(include=["hetcl", "hetcl.*"]) + ["hetcl.kernels"],
    package_dir={"hetcl.kernels": "kernels"},
    package_data={"hetcl.kernels": ["*.cl.mako", "*.mako"], "hetcl.tuning": ["*.json"]},
    include_package_data=True,
)
