"""Render kernels/*.cl.mako into OpenCL C. The only module that imports Mako.

Templates are rendered with strict_undefined=True: a name the template uses but nobody passed is
an error at render time (TemplateError naming the template and the name), not a silent "".
The context of a render is the kernel's parameters (upper-case names), the shape-specific
options the caller passes (lower-case, e.g. trans_a) and the device feature flags (``features``).
"""
import functools
import os

from mako import exceptions as mako_exceptions
from mako.lookup import TemplateLookup

from ..errors import TemplateError
from ..log import debug


def kernel_dirs():
    """Installed wheel: the templates ship as the package hetcl.kernels (hetcl/kernels/).
    Source checkout: they live in the repository's top-level kernels/."""
    pkg = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
    dirs = [os.path.join(pkg, "kernels"), os.path.join(os.path.dirname(pkg), "kernels")]
    return [d for d in dirs if os.path.isdir(d)][:1]


@functools.lru_cache(maxsize=None)
def _lookup(directories):
    return TemplateLookup(directories=list(directories), strict_undefined=True,
                          input_encoding="utf-8")


def render(template, params, directories=None, **context):
    """Source text of ``template`` for ``params`` (a KernelParams) plus extra context."""
    dirs = tuple(directories or kernel_dirs())
    if not dirs:
        raise TemplateError("kernel templates not found: reinstall hetcl (the wheel ships "
                            "hetcl/kernels/*.cl.mako)")
    values = dict(params.as_dict() if params is not None else {}, **context)
    try:
        source = _lookup(dirs).get_template(template).render(**values)
    except NameError as e:
        raise TemplateError(f"template {template} uses an undefined name ({e}); "
                            f"passed: {sorted(values)}") from None
    except mako_exceptions.TopLevelLookupException:
        raise TemplateError(f"no kernel template {template!r} in {', '.join(dirs)}") from None
    except mako_exceptions.MakoException as e:
        raise TemplateError(f"template {template} failed to render: {e}") from None
    debug("rendered %s (%s):\n%s", template, params, source, level=2)
    return source
