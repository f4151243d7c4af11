"""Training metrics: a progress bar on stderr, a JSON-lines log, and loss/accuracy curves."""
import json
import sys
import time

from ..errors import HetclError


class Progress:
    """One line per epoch, redrawn in place: [#####.....] 120/235 loss 0.4123 acc 85.1% 9.8k img/s"""

    def __init__(self, total, label, stream=None, width=24):
        self.total, self.label, self.width = total, label, width
        self.stream = stream or sys.stderr
        self.tty = self.stream.isatty()
        self.start = time.perf_counter()
        self.last_draw = 0.0

    def update(self, done, images, **values):
        now = time.perf_counter()
        if self.tty and done < self.total and now - self.last_draw < 0.1:
            return
        self.last_draw = now
        rate = images / max(now - self.start, 1e-9)
        filled = int(self.width * done / max(self.total, 1))
        text = " ".join(f"{k} {v}" for k, v in values.items())
        line = (f"{self.label} [{'#' * filled}{'.' * (self.width - filled)}] {done}/{self.total}"
                f" {text} {rate / 1000:.1f}k img/s")
        if self.tty:
            self.stream.write("\r" + line)
        elif done == self.total:
            self.stream.write(line + "\n")
        self.stream.flush()
        self.rate = rate

    def close(self, extra=""):
        if self.tty:
            self.stream.write(extra + "\n")
        elif extra:
            self.stream.write(extra.strip() + "\n")
        self.stream.flush()


class JsonLog:
    """Appends one JSON object per line; flushed each time so a crash loses nothing written."""

    def __init__(self, path):
        self.file = open(path, "a") if path else None

    def write(self, **record):
        if self.file:
            self.file.write(json.dumps(record) + "\n")
            self.file.flush()

    def close(self):
        if self.file:
            self.file.close()


def pyplot():
    """matplotlib.pyplot on a file-only backend, or a one-line error saying how to get it."""
    try:
        import matplotlib
        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        raise HetclError("--plot needs matplotlib: pip install 'hetcl[plot]'") from None
    return plt


def plot_curves(history, path):
    """history: list of epoch records with train_loss, train_acc and val_acc and/or test_acc."""
    plt = pyplot()
    epochs = [h["epoch"] for h in history]
    fig, (ax1, ax2) = plt.subplots(1, 2, figsize=(10, 4))
    ax1.plot(epochs, [h["train_loss"] for h in history], marker="o")
    ax1.set(xlabel="epoch", ylabel="training loss", title="Loss")
    ax2.plot(epochs, [100 * h["train_acc"] for h in history], marker="o", label="train")
    for key, label in (("val_acc", "validation"), ("test_acc", "test")):
        if all(key in h for h in history):
            ax2.plot(epochs, [100 * h[key] for h in history], marker="o", label=label)
    ax2.set(xlabel="epoch", ylabel="accuracy (%)", title="Accuracy")
    ax2.legend()
    fig.tight_layout()
    fig.savefig(path)
    plt.close(fig)


def confusion_matrix(labels, preds, classes):
    import numpy as np
    m = np.zeros((classes, classes), np.int64)
    np.add.at(m, (np.asarray(labels, np.int64), np.asarray(preds, np.int64)), 1)
    return m
