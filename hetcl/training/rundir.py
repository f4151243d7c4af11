"""Where a training run writes, checked before its first step: the checkpoint directory (one
run at a time, an earlier run never overwritten by accident), the log file and the plot.

The lock is an flock(2) on <checkpoint>/.lock: the kernel drops it when its process ends, so a
killed run never leaves one behind. The file holds the owner's pid, for the message only.
"""
import errno
import fcntl
import os
import tempfile
import time

from ..errors import HetclError
from .metrics import pyplot


class RunLock:
    """An exclusive lock on a checkpoint directory, held from acquire() to release()."""

    def __init__(self, directory):
        self.path = os.path.join(directory, ".lock")
        self.file = None

    def acquire(self):
        f = open(self.path, "a+")
        try:
            fcntl.flock(f, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError as e:
            f.seek(0)
            owner = f.read().strip() or "unknown"
            f.close()
            if e.errno in (errno.EAGAIN, errno.EACCES):
                raise HetclError(f"checkpoint directory {os.path.dirname(self.path)} is in use "
                                 f"by another hetcl run (pid {owner}); wait for it to end or "
                                 f"choose another --checkpoint") from None
            raise
        f.seek(0)
        f.truncate()
        f.write(f"{os.getpid()}\n")
        f.flush()
        self.file = f

    def release(self):
        if self.file:
            self.file.close()  # closing the descriptor drops the flock
            self.file = None


def holds_run(directory):
    return os.path.isfile(os.path.join(directory, "meta.json"))


def move_aside(directory):
    """Rename a directory that holds a run to <directory>.previous-<time> (nothing deleted);
    -> the new name."""
    stamp = time.strftime("%Y%m%d-%H%M%S")
    target = f"{directory.rstrip(os.sep)}.previous-{stamp}"
    n = 1
    while os.path.exists(target):
        n += 1
        target = f"{directory.rstrip(os.sep)}.previous-{stamp}-{n}"
    os.rename(directory, target)
    return target


def _writable_dir(directory, what):
    try:
        os.makedirs(directory, exist_ok=True)
        with tempfile.TemporaryFile(dir=directory):
            pass
    except OSError as e:
        raise HetclError(f"cannot write {what} {directory}: {e.strerror or e}; choose a "
                         f"writable place") from None


def check_outputs(checkpoint=None, log=None, plot=None):
    """Everything a run will write, tried before it trains: a one-line error instead of a
    traceback after the first epoch (or the last one, for --plot)."""
    if checkpoint:
        _writable_dir(checkpoint, "the checkpoint directory")
    if log:
        try:
            with open(log, "a"):
                pass
        except OSError as e:
            raise HetclError(f"cannot write the log file {log}: {e.strerror or e}; choose a "
                             f"writable place") from None
    if plot:
        _writable_dir(os.path.dirname(os.path.abspath(plot)), "the plot's directory")
        pyplot()  # (its one-line error where matplotlib is missing)
