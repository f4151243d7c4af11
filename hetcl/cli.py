"""The `hetcl` command. The only module that imports click.

User mistakes (HetclError) print one line, `hetcl: error: ...`, and exit with status 1; no
traceback. Anything else is a bug and keeps its traceback.
"""
import json
import sys

import click

from . import __version__
from .errors import HetclError

DEVICES_HELP = ("Which OpenCL devices: all, cpu, gpu, igpu, dgpu, indices as listed by "
                "`hetcl devices` (e.g. 0,2), or P:D (platform:device).")


class _Group(click.Group):
    def invoke(self, ctx):
        try:
            return super().invoke(ctx)
        except HetclError as e:
            click.echo(f"hetcl: error: {e}", err=True)
            sys.exit(1)
        except KeyboardInterrupt:
            click.echo("hetcl: interrupted", err=True)
            sys.exit(130)


@click.group(cls=_Group, context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(__version__, prog_name="hetcl")
def main():
    """hetcl: train image classifiers with OpenCL kernels generated for each device, one
    mini-batch split across every CPU and GPU of the machine.

    Start with `hetcl devices` to see what hetcl can use."""


def _human_bytes(n):
    for unit in ("B", "KiB", "MiB", "GiB", "TiB"):
        if n < 1024 or unit == "TiB":
            return f"{n:.0f} {unit}" if unit == "B" else f"{n:.1f} {unit}"
        n /= 1024


def _table(rows, headers):
    widths = [max(len(str(x)) for x in col) for col in zip(headers, *rows)]
    fmt = "  ".join("{:<%d}" % w for w in widths)
    lines = [fmt.format(*headers), fmt.format(*("-" * w for w in widths))]
    lines += [fmt.format(*(str(x) for x in row)) for row in rows]
    return "\n".join(line.rstrip() for line in lines)


@main.command()
@click.option("--devices", "spec", default="all", show_default=True, help=DEVICES_HELP)
@click.option("--json", "as_json", is_flag=True, help="Print a JSON list (for scripts).")
@click.option("--bench", is_flag=True,
              help="Also measure FP32 GFLOP/s (hetcl's GEMM) and host<->device GB/s.")
def devices(spec, as_json, bench):
    """List every OpenCL device over all platforms: index, platform:device, kind (cpu, igpu =
    GPU sharing host memory, dgpu, accelerator), compute units, clock, memory, limits, driver."""
    from .device import select_devices
    chosen = select_devices(spec)
    results = {}
    if bench:
        from .bench import bench_device
        for i, dev in enumerate(chosen):
            click.echo(f"\rmeasuring {i + 1}/{len(chosen)}: {dev.name} ...", err=True, nl=False)
            results[dev.index] = bench_device(dev)
        click.echo("\r" + " " * 60 + "\r", err=True, nl=False)
    if as_json:
        out = []
        for dev in chosen:
            entry = {k: v for k, v in dev.profile.items() if k != "extensions"}
            entry["fingerprint"] = dev.fingerprint
            entry["features"] = dev.features
            entry.update(results.get(dev.index, {}))
            out.append(entry)
        click.echo(json.dumps(out, indent=2))
        return
    headers = ["#", "P:D", "kind", "name", "platform", "CUs", "MHz", "global", "local",
               "max WG", "fp64", "driver"]
    if bench:
        headers += ["GFLOP/s", "H2D GB/s", "D2H GB/s"]
    rows = []
    for dev in chosen:
        p = dev.profile
        row = [p["index"], f"{p['platform_index']}:{p['device_index']}", p["kind"], p["name"],
               p["platform"], p["compute_units"], p["clock_mhz"],
               _human_bytes(p["global_mem_bytes"]),
               _human_bytes(p["local_mem_bytes"]) + ("" if p["local_mem_dedicated"] else "*"),
               p["max_work_group_size"], "yes" if p["fp64"] else "no", p["driver_version"]]
        if bench:
            r = results[dev.index]
            row += [f"{r['gflops']:.1f}", f"{r['h2d_gbs']:.1f}", f"{r['d2h_gbs']:.1f}"]
        rows.append(row)
    click.echo(_table(rows, headers))
    if any(not d.profile["local_mem_dedicated"] for d in chosen):
        click.echo("* local memory emulated in global memory (hetcl's CPU kernels do not use it)")
    if bench:
        click.echo(f"GFLOP/s: FP32 GEMM, {', '.join(sorted({str(r['gemm_n']) for r in results.values()}))}"
                   "^3, median of 5; GB/s: 64 MiB copies")
