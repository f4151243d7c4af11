"""The `hetcl` command: the group, `train` and `evaluate` (`devices` in cli/devices.py, `bench`
and `tune` in cli/bench.py). The CLI modules are the only ones that import click.

User mistakes (HetclError) print one line, `hetcl: error: ...`, and exit with status 1; no
traceback. Anything else is a bug and keeps its traceback.
"""
import sys
import warnings

import click

from .. import __version__
from ..errors import HetclError
from ..parallel import mpi
from ..training.run_config import AUGMENTS
from .common import DEVICES_HELP, MODEL_HELP, MODEL_NAMES, PARALLEL_HELP

MATRIX_CLASSES = 20  # evaluate prints the confusion matrix up to this many classes


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


@main.command()
@click.option("--model", type=click.Choice(MODEL_NAMES), default="lenet5",
              show_default=True, help=MODEL_HELP)
@click.option("--data", type=click.Path(), default=None,
              help="Directory of IDX (MNIST-style) files, CIFAR-10 or CIFAR-100 binary files, "
                   "or images (PNG/JPEG/BMP) in one folder per class (optionally under train/, "
                   "val/ and test/). Default: Fashion-MNIST from Debian's "
                   "dataset-fashion-mnist.")
@click.option("--image-size", type=int, default=None,
              help="Image folders: resize the shorter side to N and centre-crop to N x N "
                   "(needed where the images differ in size). Converted once into a cache "
                   "beside the images; a changed folder is converted again.")
@click.option("--strict", is_flag=True,
              help="Image folders: a file that is not a readable image is an error (default: "
                   "a warning naming it, and the file is skipped).")
@click.option("--val-split", type=float, default=None,
              help="Hold out this fraction of the training set (seeded by --seed) to validate "
                   "on; the best checkpoint follows its accuracy. Default: none, or 0.1 where "
                   "the data has neither a test nor a val split.")
@click.option("--augment", type=click.Choice(list(AUGMENTS)), default="none",
              show_default=True,
              help="flip-crop: random 4-pixel-padded crops and horizontal flips, drawn on the "
                   "devices per (seed, epoch, image): any device split and --resume see the "
                   "same images.")
@click.option("--epochs", type=int, default=2, show_default=True,
              help="Passes over the training set. 2 keeps the default run to a few minutes "
                   "on a 2-core CPU; with the defaults LeNet-5 reaches 90% in 10.")
@click.option("--batch-size", type=int, default=256, show_default=True,
              help="Global mini-batch, split across the devices.")
@click.option("--optimizer", type=click.Choice(["sgd", "adam", "adamw"]), default="sgd",
              show_default=True, help="sgd: SGD with momentum; adam: Adam (betas 0.9, 0.999, "
                                      "eps 1e-8); adamw: Adam with decoupled weight decay. "
                                      "Each as PyTorch's, run on the devices.")
@click.option("--lr", type=float, default=None,
              help="Peak learning rate (after warm-up). Default: 0.1 for sgd, 0.001 for adam "
                   "and adamw.")
@click.option("--momentum", type=float, default=0.9, show_default=True, help="SGD's.")
@click.option("--weight-decay", type=float, default=5e-4, show_default=True,
              help="sgd and adam: an L2 penalty added to the gradient; adamw: the parameters "
                   "shrink by lr x this each step.")
@click.option("--nesterov", is_flag=True, help="Nesterov momentum (sgd).")
@click.option("--max-grad-norm", type=float, default=None,
              help="Clip the gradients to this global L2 norm before each update (PyTorch's "
                   "clip_grad_norm_). Default: no clipping.")
@click.option("--lr-schedule", type=click.Choice(["constant", "step", "cosine"]),
              default="cosine", show_default=True,
              help="step: x0.1 at 50% and 75% of the epochs; cosine: to 0 over the run.")
@click.option("--warmup-epochs", type=float, default=1.0, show_default=True,
              help="Ramp the learning rate up linearly over this many epochs first.")
@click.option("--init", type=click.Path(dir_okay=False), default=None,
              help="Start from these parameters: a .safetensors file with hetcl's names or a "
                   "PyTorch state_dict's (the models' PyTorch twins: tools/torch_models.py; "
                   "`hetcl export --format safetensors` writes one). Shapes are checked.")
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
    from ..training.train import TrainConfig, Trainer
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
        accs = "".join(f"{name} accuracy {100 * last[key]:.2f}%, " for key, name in
                       (("val_acc", "validation"), ("test_acc", "test")) if key in last)
        click.echo(f"final: {accs}train loss {last['train_loss']:.4f}, "
                   f"{last['images_per_s']:.0f} images/s")


@main.command()
@click.option("--checkpoint", type=click.Path(file_okay=False), required=True,
              help="Directory written by `hetcl train --checkpoint`.")
@click.option("--data", type=click.Path(), default=None, help="Data directory (as for train).")
@click.option("--devices", "devices_spec", default="all", show_default=True, help=DEVICES_HELP)
@click.option("--best", is_flag=True,
              help="Evaluate the best save (highest test accuracy) instead of the last.")
def evaluate(checkpoint, data, devices_spec, best):
    """Accuracy per class and confusion matrix of a saved model (default: its last save, on
    the test split of the data it was trained on, else on the part its run held out)."""
    from ..training.evaluate import evaluate as run_evaluate
    result = run_evaluate(checkpoint, data, devices_spec, "best" if best else "last")
    m, names = result.matrix, result.class_names
    click.echo(f"{result.part} accuracy {100 * result.accuracy:.2f}% "
               f"({int(m.trace())}/{int(m.sum())})")
    width = max(len(str(int(m.max()))), 3)
    label = max(len(n) for n in names)
    click.echo("per class (accuracy, images):")
    for i, name in enumerate(names):
        total = int(m[i].sum())
        acc = f"{100 * m[i, i] / total:6.2f}%" if total else "     -"
        click.echo(f"{i:>4} {name:<{label}} {acc} {total:>{width}}")
    if len(names) <= MATRIX_CLASSES:
        click.echo("confusion matrix (rows: true class, columns: predicted):")
        click.echo("     " + " ".join(f"{j:>{width}}" for j in range(len(m))))
        for i, row in enumerate(m):
            click.echo(f"{i:>4} " + " ".join(f"{int(v):>{width}}" for v in row))


from .bench import bench, tune  # noqa: E402 (the commands register on main)
from .devices import devices  # noqa: E402
from .model_io import export, predict  # noqa: E402

for command in (devices, bench, tune, predict, export):
    main.add_command(command)
