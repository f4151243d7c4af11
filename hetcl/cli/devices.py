"""`hetcl devices`: list the OpenCL devices, measure them (--bench) or check that hetcl's
kernels build and compute right on them (--check)."""
import json
import sys

import click

from .common import DEVICES_HELP, human_bytes, table

def _check_devices(chosen, as_json):
    from ..measure.check import check_device, describe
    results = []
    for i, dev in enumerate(chosen):
        if not as_json:
            click.echo(f"checking {i + 1}/{len(chosen)}: {dev.name} ...", err=True)
        results.append(check_device(dev))
        if not as_json:
            click.echo("\n".join(describe(results[-1])))
    if as_json:
        click.echo(json.dumps(results, indent=2))
    if all(r["verdict"] == "unusable" for r in results):
        sys.exit(1)


@click.command()
@click.option("--devices", "spec", default="all", show_default=True, help=DEVICES_HELP)
@click.option("--json", "as_json", is_flag=True, help="Print a JSON list (for scripts).")
@click.option("--bench", is_flag=True,
              help="Also measure FP32 GFLOP/s (hetcl's GEMM) and host<->device GB/s.")
@click.option("--check", is_flag=True,
              help="Build and run every kernel hetcl's models use on each device, each new "
                   "variant proven in a child process against numpy, and print a verdict per "
                   "device: ok, replaced (variants that failed and what took their place) or "
                   "unusable (why). Exits 1 where no selected device is usable.")
def devices(spec, as_json, bench, check):
    """List every OpenCL device over all platforms: index, platform:device, kind (cpu, igpu =
    GPU sharing host memory, dgpu, accelerator), compute units, clock, memory, limits, driver."""
    from ..backend.device import list_devices, select_devices
    from ..backend.host_cpu import same_host_cpu
    # The listing shows every device, a CPU that two platforms give included (marked).
    chosen = list_devices() if spec.strip().lower() == "all" else select_devices(spec)
    duplicates = dict(same_host_cpu(chosen))  # (Devices hash by identity)
    if check:
        return _check_devices(chosen, as_json)
    results = _measure(chosen) if bench else {}
    if as_json:
        click.echo(json.dumps([_json_entry(dev, results) for dev in chosen], indent=2))
        return
    _print_table(chosen, duplicates, results)


def _measure(chosen):
    from ..measure.bench import bench_device
    results = {}
    for i, dev in enumerate(chosen):
        click.echo(f"\rmeasuring {i + 1}/{len(chosen)}: {dev.name} ...", err=True, nl=False)
        results[dev.index] = bench_device(dev)
    click.echo("\r" + " " * 60 + "\r", err=True, nl=False)
    return results


def _json_entry(dev, results):
    entry = {k: v for k, v in dev.profile.items() if k != "extensions"}
    entry["fingerprint"] = dev.fingerprint
    entry["features"] = dev.features
    entry.update(results.get(dev.index, {}))
    return entry


def _row(dev, duplicates, results):
    p = dev.profile
    mark = "+" if dev in duplicates else ""
    row = [f"{p['index']}{mark}", f"{p['platform_index']}:{p['device_index']}", p["kind"],
           p["name"], p["platform"], p["compute_units"], p["clock_mhz"],
           human_bytes(p["global_mem_bytes"]),
           human_bytes(p["local_mem_bytes"]) + ("" if p["local_mem_dedicated"] else "*"),
           p["max_work_group_size"], "yes" if p["fp64"] else "no", p["driver_version"]]
    if results:
        r = results[dev.index]
        row += [f"{r['gflops']:.1f}", f"{r['h2d_gbs']:.1f}", f"{r['d2h_gbs']:.1f}"]
    return row


def _print_table(chosen, duplicates, results):
    headers = ["#", "P:D", "kind", "name", "platform", "CUs", "MHz", "global", "local",
               "max WG", "fp64", "driver"]
    if results:
        headers += ["GFLOP/s", "H2D GB/s", "D2H GB/s"]
    click.echo(table([_row(dev, duplicates, results) for dev in chosen], headers))
    for dup, kept in duplicates.items():
        click.echo(f"+ device {dup.index} is the same CPU as device {kept.index} on another "
                   f"OpenCL platform (older driver): `--devices all` leaves it out")
    if any(not d.profile["local_mem_dedicated"] for d in chosen):
        click.echo("* local memory emulated in global memory (hetcl's CPU kernels do not use it)")
    if results:
        sizes = ", ".join(sorted({str(r["gemm_n"]) for r in results.values()}))
        click.echo(f"GFLOP/s: FP32 GEMM, {sizes}^3, median of 5; GB/s: 64 MiB copies")
