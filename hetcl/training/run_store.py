"""The checkpoint directory of one training run: locked while the run lives, an earlier run
refused or moved aside, the last save and the best one (by test accuracy) kept, a failed save
reported with what the directory still holds."""
from ..errors import HetclError
from . import checkpoint
from .rundir import RunLock, check_outputs, holds_run, move_aside


class SaveFailed(HetclError):
    pass


class RunStore:
    def __init__(self, directory):
        self.directory = directory
        self.lock = RunLock(directory)
        self.best_acc = None
        self.last = None  # (epoch, step) of the last save that landed
        self.moved_to = None  # where --start-over moved an earlier run

    def open(self, resume, start_over):
        """Lock the directory; -> the saved run's meta (resume) or None (a new run)."""
        check_outputs(checkpoint=self.directory)
        self.lock.acquire()
        try:
            if resume:
                meta = checkpoint.read_meta(self.directory)
                best = meta.get("best") or {}
                self.best_acc = best.get("score", best.get("test_acc"))  # (older saves)
                self.last = (meta.get("epoch"), meta.get("step"))
                return meta
            if holds_run(self.directory):
                self._start_over(start_over)
            return None
        except BaseException:
            self.close()
            raise

    def _start_over(self, start_over):
        if not start_over:
            meta = checkpoint.read_meta(self.directory)
            raise HetclError(f"{self.directory} holds a run ({meta.get('model')}, "
                             f"{self._describe(meta.get('epoch'), meta.get('step'))}); pass "
                             f"--resume to continue it, --start-over to move it aside and start "
                             f"again, or another --checkpoint")
        old = self.lock
        self.moved_to = move_aside(self.directory)  # (our lock moves with it)
        check_outputs(checkpoint=self.directory)
        self.lock = RunLock(self.directory)
        self.lock.acquire()
        old.release()

    @staticmethod
    def _describe(epoch, step):
        return f"epoch {epoch}" + (f" step {step}" if step else "") + " done"

    def holds(self):
        """What the directory holds now, for messages."""
        if self.last is None:
            return f"{self.directory} holds no save of this run"
        return f"{self.directory} still holds the save after {self._describe(*self.last)}"

    def save(self, params, optim_state, meta):
        """Save as the last state, and as the best one where meta's score (the held-out
        accuracy) beats it."""
        acc = meta.get("score")
        best = acc is not None and (self.best_acc is None or acc > self.best_acc)
        try:
            checkpoint.save(self.directory, params, optim_state, meta, best=best)
        except OSError as e:
            raise SaveFailed(f"could not save the checkpoint in {self.directory}: "
                             f"{e.strerror or e}; nothing of this save was kept: "
                             f"{self.holds()}") from None
        self.last = (meta.get("epoch"), meta.get("step"))
        if best:
            self.best_acc = acc

    def close(self):
        self.lock.release()
