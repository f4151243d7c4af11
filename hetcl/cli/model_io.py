"""`hetcl predict` and `hetcl export`: a trained model classifying files, and leaving hetcl
as ONNX or safetensors. Part of the CLI (the cli/ package: the only modules that import
click)."""
import json
import os

import click

from .common import DEVICES_HELP

FORMATS = {"onnx": ".onnx", "safetensors": ".safetensors"}


@click.command()
@click.option("--checkpoint", type=click.Path(file_okay=False), required=True,
              help="Directory written by `hetcl train --checkpoint`.")
@click.argument("files", nargs=-1, required=True, type=click.Path())
@click.option("--top-k", type=int, default=3, show_default=True,
              help="How many of the most probable classes to show per image.")
@click.option("--json", "as_json", is_flag=True,
              help="One JSON list on stdout: per image its file and top classes (name, index, "
                   "probability).")
@click.option("--best", is_flag=True, help="Use the best save instead of the last.")
@click.option("--devices", "devices_spec", default="all", show_default=True, help=DEVICES_HELP)
@click.option("--batch-size", type=int, default=256, show_default=True)
def predict(checkpoint, files, top_k, as_json, best, devices_spec, batch_size):
    """Classify image files (PNG, JPEG, BMP) or the images of IDX / CIFAR binary files with a
    saved model: the most probable classes, by name, with their probabilities."""
    from ..training.predict import classify
    results = classify(checkpoint, files, devices_spec, "best" if best else "last", top_k,
                       batch_size)
    if as_json:
        click.echo(json.dumps(results, indent=1))
        return
    for r in results:
        top = ", ".join(f"{t['class']} {100 * t['probability']:.1f}%" for t in r["top"])
        click.echo(f"{r['file']}: {top}")


@click.command()
@click.option("--checkpoint", type=click.Path(file_okay=False), required=True,
              help="Directory written by `hetcl train --checkpoint`.")
@click.option("--format", "fmt", type=click.Choice(list(FORMATS)), required=True,
              help="onnx: the inference graph (normalisation inside, class names and "
                   "mean/std in its metadata), for ONNX Runtime and others; safetensors: the "
                   "parameters under PyTorch's state_dict names (see tools/torch_models.py).")
@click.option("--out", type=click.Path(dir_okay=False), default=None,
              help="File to write. Default: model.onnx / model.safetensors in the checkpoint.")
@click.option("--best", is_flag=True, help="Export the best save instead of the last.")
def export(checkpoint, fmt, out, best):
    """Write a saved model as ONNX or safetensors."""
    from ..training.export import export_saved
    out = out or os.path.join(checkpoint, "model" + FORMATS[fmt])
    export_saved(checkpoint, fmt, out, "best" if best else "last")
    click.echo(f"wrote {out}")
