"""What the `hetcl` commands share: option help texts and plain-text tables. Part of the CLI
(the cli/ package: the only modules that import click)."""
from ..model.models import MODELS

MODEL_NAMES = list(MODELS)


def _what(build):
    """What a model is: its docstring up to the first colon or full stop."""
    text = " ".join(build.__doc__.split())
    return min((text.split(sep)[0] for sep in (": ", ". ")), key=len).rstrip(".")


MODEL_HELP = "Network to train: " + "; ".join(f"{name} ({_what(build)})"
                                              for name, build in MODELS.items()) + "."
PARALLEL_HELP = ("data: every layer data-parallel (gradients all-reduced); hybrid: the dense "
                 "layers model-parallel, each device holding a slice of their neurons "
                 "(activations gathered instead of dense gradients reduced: less traffic for "
                 "wide dense layers); auto: both timed over the first steps, the faster kept "
                 "(logged with both step times and bytes).")

DEVICES_HELP = ("Which OpenCL devices: all, cpu, gpu, igpu, dgpu, indices as listed by "
                "`hetcl devices` (e.g. 0,2), or P:D (platform:device).")


def human_bytes(n):
    for unit in ("B", "KiB", "MiB", "GiB", "TiB"):
        if n < 1024 or unit == "TiB":
            return f"{n:.0f} {unit}" if unit == "B" else f"{n:.1f} {unit}"
        n /= 1024


def table(rows, headers):
    widths = [max(len(str(x)) for x in col) for col in zip(headers, *rows)]
    fmt = "  ".join("{:<%d}" % w for w in widths)
    lines = [fmt.format(*headers), fmt.format(*("-" * w for w in widths))]
    lines += [fmt.format(*(str(x) for x in row)) for row in rows]
    return "\n".join(line.rstrip() for line in lines)
