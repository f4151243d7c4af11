"""The `hetcl` command. The only module that imports click.

User mistakes (HetclError) print one line, `hetcl: error: ...`, and exit with status 1; no
traceback. Anything else is a bug and keeps its traceback.
"""
import json
import statistics
import sys
import warnings

import click

from . import __version__
from . import mpi
from .errors import HetclError
from .models import MODELS

MODEL_NAMES = list(MODELS)
PARALLEL_HELP = ("data: every layer data-parallel (gradients all-reduced); hybrid: the dense "
                 "layers model-parallel, each device holding a slice of their neurons "
                 "(activations gathered instead of dense gradients reduced: less traffic for "
                 "wide dense layers); auto: both timed over the first steps, the faster kept "
                 "(logged with both step times and bytes).")

DEVICES_HELP = ("Which OpenCL devices: all, cpu, gpu, igpu, dgpu, indices as listed by "
                "`hetcl devices` (e.g. 0,2), or P:D (platform:device).")


def _show_warning(message, category, filename, lineno, file=None, line=None):
    """hetcl's warnings (a device dropped, a kernel variant replaced) as one line each."""
    click.echo(f"hetcl: warning: {message}", err=True)


class _Group(click.Group):
    def invoke(self, ctx):
        warnings.showwarning = _show_warning
        try:
            return super().invoke(ctx)
        except HetclError as e:
            click.echo(f"hetcl: error: {e}", err=True)
            mpi.stop_all()  # under mpirun the other ranks would wait for this one
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


def _check_devices(chosen, as_json):
    from .check import check_device, describe
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
@click.option("--check", is_flag=True,
              help="Build and run every kernel hetcl's models use on each device, each new "
                   "variant proven in a child process against numpy, and print a verdict per "
                   "device: ok, replaced (variants that failed and what took their place) or "
                   "unusable (why). Exits 1 where no selected device is usable.")
def devices(spec, as_json, bench, check):
    """List every OpenCL device over all platforms: index, platform:device, kind (cpu, igpu =
    GPU sharing host memory, dgpu, accelerator), compute units, clock, memory, limits, driver."""
    from .device import list_devices, select_devices
    from .host_cpu import same_host_cpu
    # The listing shows every device, a CPU that two platforms give included (marked).
    chosen = list_devices() if spec.strip().lower() == "all" else select_devices(spec)
    duplicates = dict(same_host_cpu(chosen))  # (Devices hash by identity)
    if check:
        return _check_devices(chosen, as_json)
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
        mark = "+" if dev in duplicates else ""
        row = [f"{p['index']}{mark}", f"{p['platform_index']}:{p['device_index']}", p["kind"],
               p["name"],
               p["platform"], p["compute_units"], p["clock_mhz"],
               _human_bytes(p["global_mem_bytes"]),
               _human_bytes(p["local_mem_bytes"]) + ("" if p["local_mem_dedicated"] else "*"),
               p["max_work_group_size"], "yes" if p["fp64"] else "no", p["driver_version"]]
        if bench:
            r = results[dev.index]
            row += [f"{r['gflops']:.1f}", f"{r['h2d_gbs']:.1f}", f"{r['d2h_gbs']:.1f}"]
        rows.append(row)
    click.echo(_table(rows, headers))
    for dup, kept in duplicates.items():
        click.echo(f"+ device {dup.index} is the same CPU as device {kept.index} on another "
                   f"OpenCL platform (older driver): `--devices all` leaves it out")
    if any(not d.profile["local_mem_dedicated"] for d in chosen):
        click.echo("* local memory emulated in global memory (hetcl's CPU kernels do not use it)")
    if bench:
        click.echo(f"GFLOP/s: FP32 GEMM, {', '.join(sorted({str(r['gemm_n']) for r in results.values()}))}"
                   "^3, median of 5; GB/s: 64 MiB copies")


@main.command()
@click.option("--model", type=click.Choice(MODEL_NAMES), default="lenet5",
              show_default=True, help="Network to train.")
@click.option("--data", type=click.Path(), default=None,
              help="Directory of IDX (MNIST-style) or CIFAR-10 binary files. Default: "
                   "Fashion-MNIST from Debian's dataset-fashion-mnist.")
@click.option("--epochs", type=int, default=2, show_default=True,
              help="Passes over the training set. 2 keeps the default run to a few minutes "
                   "on a 2-core CPU; with the defaults LeNet-5 reaches 90% in 10.")
@click.option("--batch-size", type=int, default=256, show_default=True,
              help="Global mini-batch, split across the devices.")
@click.option("--lr", type=float, default=0.1, show_default=True,
              help="Peak learning rate (after warm-up).")
@click.option("--momentum", type=float, default=0.9, show_default=True)
@click.option("--weight-decay", type=float, default=5e-4, show_default=True,
              help="L2 penalty, as PyTorch's SGD applies it.")
@click.option("--nesterov", is_flag=True, help="Nesterov momentum.")
@click.option("--lr-schedule", type=click.Choice(["constant", "step", "cosine"]),
              default="cosine", show_default=True,
              help="step: x0.1 at 50% and 75% of the epochs; cosine: to 0 over the run.")
@click.option("--warmup-epochs", type=float, default=1.0, show_default=True,
              help="Ramp the learning rate up linearly over this many epochs first.")
@click.option("--seed", type=int, default=0, show_default=True,
              help="Seeds initial weights and shuffling: same seed, same device, same numbers.")
@click.option("--devices", "devices_spec", default="all", show_default=True, help=DEVICES_HELP)
@click.option("--log", type=click.Path(dir_okay=False), default=None,
              help="Append metrics as JSON lines to this file.")
@click.option("--log-every", type=click.Choice(["epoch", "step"]), default="epoch",
              show_default=True)
@click.option("--plot", type=click.Path(dir_okay=False), default=None,
              help="Save loss and accuracy curves as a PNG (needs hetcl[plot]).")
@click.option("--checkpoint", type=click.Path(file_okay=False), default=None,
              help="Save the run here after each epoch (and on Ctrl-C): the last state and the "
                   "best one by test accuracy. One run per directory at a time; a directory "
                   "that holds a run needs --resume or --start-over.")
@click.option("--resume", is_flag=True,
              help="Continue the run saved in --checkpoint with its saved settings and data "
                   "(a setting given here that differs is an error; see --override).")
@click.option("--start-over", is_flag=True,
              help="Move a run already in --checkpoint aside (to DIR.previous-<time>) and "
                   "start a new one.")
@click.option("--override", is_flag=True,
              help="With --resume: the settings given here replace the saved ones (e.g. more "
                   "--epochs), and other data is accepted.")
@click.option("--max-loss", type=float, default=None,
              help="Stop the run when a step's loss passes this (default 10 x ln(classes), "
                   "ten times the loss of a uniform guess: 23.0 for 10 classes) or is NaN/Inf; "
                   "the checkpoint keeps the last good save.")
@click.option("--parallel", type=click.Choice(["data", "hybrid", "auto"]), default="data",
              show_default=True, help=PARALLEL_HELP)
def train(devices_spec, **options):
    """Train a model on the selected devices, splitting each mini-batch across them.

    Shows a progress bar per epoch (loss, accuracy, images/s) and the test accuracy after each
    epoch. Ctrl-C stops after the step in flight and saves (with --checkpoint); a second Ctrl-C
    stops at once without saving."""
    from .train import TrainConfig, Trainer
    ctx = click.get_current_context()
    given = {name for name in options
             if ctx.get_parameter_source(name) != click.core.ParameterSource.DEFAULT}
    cfg = TrainConfig(devices=devices_spec, **options)
    trainer = Trainer(cfg, given=given)
    cfg = trainer.cfg  # (on --resume: the saved run's settings)
    if trainer.store and trainer.store.moved_to:
        click.echo(f"hetcl: the earlier run in {cfg.checkpoint} was moved to "
                   f"{trainer.store.moved_to}", err=True)
    names = ", ".join(f"{d.index}:{d.name}" for d in trainer.rt.devices)
    start = f" from epoch {trainer.epoch + 1} step {trainer.step_in_epoch}" if cfg.resume else ""
    ranks = f" as rank 0 of {trainer.world.size} MPI ranks" if trainer.world else ""
    if len(trainer.rt.devices) > 1:
        ranks += f" ({cfg.parallel} parallel)"
    if trainer.lead:
        click.echo(f"training {cfg.model} on {trainer.data.name} ({len(trainer.data.train_x)} "
                   f"images) with {names}{ranks}{start}", err=True)
    try:
        history = trainer.run()
    except KeyboardInterrupt:
        click.echo(f"\nhetcl: interrupted at epoch {trainer.epoch + 1} step "
                   f"{trainer.step_in_epoch}; {trainer.stopped}", err=True)
        sys.exit(130)
    if history and trainer.lead:
        last = history[-1]
        click.echo(f"final: test accuracy {100 * last['test_acc']:.2f}%, train loss "
                   f"{last['train_loss']:.4f}, {last['images_per_s']:.0f} images/s")


@main.command()
@click.option("--checkpoint", type=click.Path(file_okay=False), required=True,
              help="Directory written by `hetcl train --checkpoint`.")
@click.option("--data", type=click.Path(), default=None, help="Data directory (as for train).")
@click.option("--devices", "devices_spec", default="all", show_default=True, help=DEVICES_HELP)
@click.option("--best", is_flag=True,
              help="Evaluate the best save (highest test accuracy) instead of the last.")
def evaluate(checkpoint, data, devices_spec, best):
    """Test accuracy and confusion matrix of a saved model (default: its last save, on the
    data it was trained on)."""
    from .train import evaluate as run_evaluate
    acc, matrix = run_evaluate(checkpoint, data, devices_spec, "best" if best else "last")
    click.echo(f"test accuracy {100 * acc:.2f}% ({int(matrix.trace())}/{int(matrix.sum())})")
    click.echo("confusion matrix (rows: true class, columns: predicted):")
    width = max(len(str(int(matrix.max()))), 3)
    click.echo("     " + " ".join(f"{j:>{width}}" for j in range(len(matrix))))
    for i, row in enumerate(matrix):
        click.echo(f"{i:>4} " + " ".join(f"{int(v):>{width}}" for v in row))


@main.command()
@click.option("--devices", "devices_spec", default="all", show_default=True, help=DEVICES_HELP)
@click.option("--model", "models", multiple=True,
              type=click.Choice(MODEL_NAMES),
              help="Model(s) to time (repeat the option); default lenet5 and mlp.")
@click.option("--batch-size", type=click.IntRange(1), default=256, show_default=True)
@click.option("--steps", type=click.IntRange(1), default=20, show_default=True,
              help="Timed training steps (after a warm-up); more while they take under a "
                   "second, so that short steps give a steady rate.")
@click.option("--parallel", "modes", multiple=True, type=click.Choice(["data", "hybrid", "auto"]),
              help="How the devices together split the work (repeat to compare; default data). "
                   + PARALLEL_HELP)
@click.option("--rounds", type=click.IntRange(1), default=1, show_default=True,
              help="Time each device alone and all together in this many windows (each "
                   "set-up is built and warmed up once; after the first round the best device "
                   "alone and all together run side by side, every other round in reverse "
                   "order), and report medians (short steps vary from second to second).")
def bench(devices_spec, models, batch_size, steps, modes, rounds):
    """Training images/s of each selected device alone and, with several, of all together.
    (tools/bench_train.py adds PyTorch on the CPU as a baseline.)"""
    from .bench import alone_and_together
    from .device import select_devices, share_contexts
    chosen = select_devices(devices_spec)
    world = mpi.detect()
    if world:  # under mpirun: all ranks together, --batch-size images per rank
        if set(modes) - {"data"}:
            raise HetclError("--parallel hybrid/auto runs within one process; under MPI use "
                             "--parallel data")
        _bench_ranks(world, world.pick(chosen, devices_spec), models, batch_size, steps)
        return
    share_contexts(chosen)  # as the runtime of all of them will (before "alone" makes contexts)
    rows, notes = [], []
    modes = (modes or ("data",)) if len(chosen) > 1 else ()
    for name in models or ("lenet5", "mlp"):
        alone, together, last = alone_and_together(
            name, chosen, modes, batch_size, steps, rounds, notes,
            progress=lambda what: click.echo(f"\r{name}: {what} ...", err=True, nl=False))
        best = max(statistics.median(v) for v in alone.values())
        for dev in chosen:
            rows.append([name, f"{dev.index}: {dev.name}",
                         f"{statistics.median(alone[dev.index]):.0f}", ""])
        for mode in modes:
            split = "/".join(str(s) for s in last[mode][0])
            rate = statistics.median(together[mode])
            # Each round's own ratio, against that round's best device alone: windows next to
            # each other share the host's slow and fast spells, so with several rounds their
            # median is the steadier figure (a ratio of medians mixes spells).
            ratios = [t / max(a[r] for a in alone.values()) for r, t in enumerate(together[mode])]
            rows.append([name, f"together, {mode} (split {split})", f"{rate:.0f}",
                         f"{statistics.median(ratios):.2f}x", f"{last[mode][1] / 1e6:.1f}"])
            if rounds > 1:
                notes.append(f"{name}, {mode}: per round " +
                             ", ".join(f"{x:.2f}x" for x in ratios) +
                             f"; ratio of the medians {rate / best:.2f}x")
    click.echo("\r" + " " * 70 + "\r", err=True, nl=False)
    click.echo(_table([r + [""] * (5 - len(r)) for r in rows],
                      ["model", "device", "images/s", "vs best alone", "MB moved/step"]))
    click.echo(f"batch {batch_size}, {steps} timed steps (more if they take under a second) "
               f"after a warm-up (3 steps; with several "
               f"devices until the scheduler's split has settled, at least 30); data resident "
               f"on the devices" + (f"; medians of {rounds} rounds, the best device alone and "
                                    f"all together side by side ('vs best alone': the median "
                                    f"of the rounds' own ratios)" if rounds > 1 else ""))
    for note in dict.fromkeys(notes):
        click.echo(note)


def _bench_ranks(world, devices, models, batch_size, steps):
    from .bench import train_throughput
    rows = []
    for name in models or ("lenet5", "mlp"):
        rate = train_throughput(name, devices, batch_size * world.size, steps, world=world)
        names = ", ".join(f"{d.index}:{d.name}" for d in devices)
        rows.append([name, f"{world.size} MPI ranks (rank 0: {names})", f"{rate:.0f}"])
    if world.rank == 0:
        click.echo(_table(rows, ["model", "devices", "images/s"]))
        click.echo(f"batch {batch_size} per rank ({batch_size * world.size} in all), {steps} "
                   f"timed steps after a warm-up; compare with one process: hetcl bench "
                   f"--devices ... --batch-size {batch_size}")


@main.command()
@click.option("--devices", "devices_spec", default="all", show_default=True, help=DEVICES_HELP)
@click.option("--model", "models", multiple=True,
              type=click.Choice(MODEL_NAMES + ["all"]),
              help="Tune the kernels of these models' training steps (repeatable; default "
                   "lenet5; all = lenet5, mlp and cifar-cnn).")
@click.option("--batch-size", type=click.IntRange(1), default=256, show_default=True)
@click.option("--candidates", type=click.IntRange(0), default=12, show_default=True,
              help="Parameter sets tried per kernel and shape besides the current choice.")
@click.option("--kernels", "kinds", multiple=True, type=click.Choice(["splitk", "gemm", "other"]),
              help="Tune only these (repeatable; default all, in this order): split-K slice "
                   "counts, GEMMs, the other kernels (im2col/col2im, bias+activation, gradients, "
                   "pooling).")
def tune(devices_spec, models, batch_size, candidates, kinds):
    """Auto-tune kernel parameters per device and save them in the tuning DB (user cache dir;
    training uses it automatically): every GEMM, im2col/col2im, bias+activation, gradient and
    pooling kernel of the models' training steps, each winner checked inside a training step.
    Safe to interrupt: results are saved as they come."""
    from .codegen import tunedb
    from .device import select_devices
    from .tune import KINDS, tune as run_tune
    # "all": the models trained on real data sets (cifar-cnn-wide is a benchmark model: its
    # 50M-parameter dense layers would make a CPU tune take hours; name it to tune it)
    names = ["lenet5", "mlp", "cifar-cnn"] if "all" in models else list(models or ["lenet5"])

    def report(msg, end=False):
        click.echo(msg, err=True, nl=not end)
    rows = run_tune(select_devices(devices_spec), names, batch_size, candidates, report,
                    kinds=tuple(kinds) or KINDS)
    click.echo(_table([[f"{d.index}: {d.name}", label, f"{before:.3f}", f"{ms:.3f}",
                        f"{before / ms:.2f}x", str(best)]
                       for d, _, label, best, ms, before in rows],
                      ["device", "kernel", "ms before", "ms tuned", "speed-up", "params"]))
    click.echo(f"saved to {tunedb.user_path()}")
