"""`hetcl bench` (training images/s of each device alone and of all together) and `hetcl tune`
(kernel parameters per device)."""
import statistics

import click

from ..errors import HetclError
from ..parallel import mpi
from .common import DEVICES_HELP, MODEL_NAMES, PARALLEL_HELP, table


@click.command()
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
    from ..measure.bench import alone_and_together
    from ..backend.device import select_devices, share_contexts
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
    click.echo(table([r + [""] * (5 - len(r)) for r in rows],
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
    from ..measure.bench import train_throughput
    rows = []
    for name in models or ("lenet5", "mlp"):
        rate = train_throughput(name, devices, batch_size * world.size, steps, world=world)
        names = ", ".join(f"{d.index}:{d.name}" for d in devices)
        rows.append([name, f"{world.size} MPI ranks (rank 0: {names})", f"{rate:.0f}"])
    if world.rank == 0:
        click.echo(table(rows, ["model", "devices", "images/s"]))
        click.echo(f"batch {batch_size} per rank ({batch_size * world.size} in all), {steps} "
                   f"timed steps after a warm-up; compare with one process: hetcl bench "
                   f"--devices ... --batch-size {batch_size}")


@click.command()
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
    from ..tuning import tunedb
    from ..backend.device import select_devices
    from ..tuning.tune import STAGES, tune as run_tune
    # "all": the models trained on real data sets (cifar-cnn-wide is a benchmark model: its
    # 50M-parameter dense layers would make a CPU tune take hours; name it to tune it)
    names = ["lenet5", "mlp", "cifar-cnn"] if "all" in models else list(models or ["lenet5"])

    def report(msg, end=False):
        click.echo(msg, err=True, nl=not end)
    rows = run_tune(select_devices(devices_spec), names, batch_size, candidates, report,
                    kinds=tuple(kinds) or STAGES)
    click.echo(table([[f"{d.index}: {d.name}", label, f"{before:.3f}", f"{ms:.3f}",
                        f"{before / ms:.2f}x", str(best)]
                       for d, _, label, best, ms, before in rows],
                      ["device", "kernel", "ms before", "ms tuned", "speed-up", "params"]))
    click.echo(f"saved to {tunedb.user_path()}")
