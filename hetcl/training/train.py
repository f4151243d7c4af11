"""The training loop behind `hetcl train` and `hetcl evaluate`.

The training set stays on every device as uint8 (uploaded once); each step sends only the
shuffled indices of its batch. Shuffling is seeded by (seed, epoch), so a run resumed at
(epoch, step) sees exactly the batches the uninterrupted run would have seen: checkpoints store
the epoch and step, the parameters and the optimizer's buffers, and nothing else is needed.
"""
import dataclasses
import math
import time

import numpy as np

from ..backend.affinity import host_thread_pinned
from ..engine.chunks import LOOKAHEAD_STEPS
from ..errors import HetclError
from ..model.models import build_model
from ..model.optim import OPTIMIZERS, SGD, scheduled_lr, split_key
from ..parallel import mpi
from . import checkpoint, run_config, run_data
from .data import check_input_shape, shuffled_batches
from .interrupts import CtrlC
from .metrics import JsonLog, Progress, plot_curves
from .run_config import TrainConfig  # noqa: F401 (part of this module's API)
from ..parallel.runtime import Runtime
from .run_store import RunStore
from .rundir import check_outputs


class Diverged(HetclError):
    """The loss passed the run's limit or the parameters stopped being finite."""


class Trainer:
    """One training run. `given`: the names of the config fields the user set (the CLI knows
    them; by default all of them, the config being what the caller asked for) - on resume
    these are compared with the saved run, and the others are taken from it."""

    def __init__(self, config, dataset=None, runtime=None, given=None):
        config = run_config.with_defaults(config)
        run_config.check(config)
        self.cfg = config
        # Under mpirun every rank trains its slice of each batch; rank 0 alone prints, logs
        # and saves, and its parameters and progress are what every rank starts from.
        self.world = runtime.world if runtime else mpi.detect()
        self.lead = self.world is None or self.world.rank == 0
        self.store = RunStore(config.checkpoint) if config.checkpoint and self.lead else None
        try:
            self._open(dataset, runtime, run_config.SETTINGS if given is None else given)
        except BaseException:
            self.close()
            raise

    def _open(self, dataset, runtime, given):
        meta = None
        if self.lead:
            check_outputs(log=self.cfg.log, plot=self.cfg.plot)
        if self.store:
            meta = self.store.open(self.cfg.resume, self.cfg.start_over)
            if meta:
                self.cfg = run_config.resumed(self.cfg, self._saved_settings(meta), given,
                                              self.cfg.checkpoint)
        if self.world:  # every rank runs the lead's (possibly resumed) settings
            settings = self.world.broadcast_object(
                {k: getattr(self.cfg, k) for k in run_config.SETTINGS}, "the run's settings")
            self.cfg = dataclasses.replace(self.cfg, **settings)
        cfg = self.cfg
        # (a device typo fails before data loads)
        self.rt = runtime or Runtime(cfg.devices, world=self.world, parallel=cfg.parallel)
        self.data, self.data_id = run_data.load(cfg, dataset, identify=bool(self.store),
                                                progress=cfg.progress and self.lead)
        self.model = build_model(cfg.model, self.data.sample_shape, self.data.classes, cfg.seed)
        check_input_shape(self.data, self.model.input_shape)
        if cfg.init and not meta:  # (a resumed run has its own parameters)
            from ..interop.safetensors_io import load_safetensors
            load_safetensors(self.model, cfg.init)
        self.max_loss = run_config.max_loss(cfg, self.data.classes)
        self.opt = SGD(cfg.lr, cfg.momentum, cfg.weight_decay, cfg.nesterov, cfg.max_grad_norm) \
            if cfg.optimizer == "sgd" else OPTIMIZERS[cfg.optimizer](
                cfg.lr, weight_decay=cfg.weight_decay, max_grad_norm=cfg.max_grad_norm)
        self.epoch, self.step_in_epoch, self.history = 0, 0, []
        self.totals = self._zero_totals()
        self.ctrl_c = CtrlC()
        self.stopped = None  # after a Ctrl-C: what was saved, in words
        self._split_shown = None  # the progress bar's split: that of the last full batch
        if meta:
            self._restore(meta)
        if self.world:
            self._from_rank0()

    def close(self):
        """Release the checkpoint directory (run() does at its end)."""
        if self.store:
            self.store.close()

    # --- checkpoints --------------------------------------------------------------------------
    @staticmethod
    def _zero_totals():
        return {"loss": 0.0, "correct": 0, "seen": 0, "seconds": 0.0}

    @staticmethod
    def _saved_settings(meta):
        """Checkpoints without a saved configuration (format 1) name model, batch and seed."""
        return meta.get("config") or {k: meta[k] for k in ("model", "batch_size", "seed")
                                      if k in meta}

    def _meta(self, score=None):
        d = self.data
        return {"model": self.cfg.model, "input_shape": list(self.model.input_shape),
                "classes": d.classes, "class_names": list(d.class_names),
                "normalisation": {"mean": d.mean, "std": d.std},
                "epoch": self.epoch, "step": self.step_in_epoch,
                "optimizer_steps": self.opt.steps, "seed": self.cfg.seed,
                "batch_size": self.cfg.batch_size, "history": self.history,
                "score": score, "epoch_totals": self.totals,
                "config": run_config.saved_settings(self.cfg), "data": self.data_id,
                "rng": {"kind": "numpy default_rng([seed, epoch]) permutation per epoch"}}

    def save(self, score=None):
        """Save the run's state (a finite one only) as the last save, and as the best where
        score (the epoch's held-out accuracy) beats the best so far. Ctrl-C waits for the
        save's end."""
        if not self.store:
            return
        params = self.model.parameters()
        bad = [k for k, v in params.items() if not np.isfinite(v).all()]
        if bad:
            raise Diverged(f"the parameters became NaN or Inf ({', '.join(bad[:3])}) at epoch "
                           f"{self.epoch + 1}; the run stopped, lower --lr (now {self.cfg.lr}): "
                           f"{self.store.holds()}")
        with self.ctrl_c.held():
            self.store.save(params, self.rt.optimizer_state(self.model), self._meta(score))

    def _restore(self, meta):
        cfg, where = self.cfg, self.cfg.checkpoint
        saved_data = meta.get("data")
        if saved_data and saved_data != self.data_id and not cfg.override:
            raise HetclError(f"checkpoint {where} was trained on {saved_data['name']} "
                             f"({saved_data['train']} training images, sha256 "
                             f"{saved_data['sha256'][:12]}), not on this data ({self.data.name},"
                             f" {self.data_id['train']}, {self.data_id['sha256'][:12]}); pass "
                             f"its --data, or --override to go on with this one")
        if tuple(meta.get("input_shape", ())) != tuple(self.model.input_shape):
            raise HetclError(f"checkpoint {where} is for input shape "
                             f"{tuple(meta.get('input_shape', ()))}, the data gives "
                             f"{tuple(self.model.input_shape)}")
        params, optim_state, _ = checkpoint.load(where)
        shapes = {k: v.shape for k, v in self.model.parameters().items()}
        checkpoint.check_arrays(params, optim_state, shapes, where)
        if not optim_state and (cfg.momentum or cfg.optimizer != "sgd") and \
                meta.get("optimizer_steps"):
            raise HetclError(f"checkpoint {where} has no optimizer buffers though the run's "
                             f"{cfg.optimizer} keeps them: resuming would restart them from "
                             f"zero; resume from another checkpoint")
        optim_state = {k: v for k, v in optim_state.items() if split_key(k)[0] in self.opt.BUFFERS}
        self.model.load_parameters(params)
        self.rt.load_optimizer_state(self.model, optim_state)
        self.epoch, self.step_in_epoch = meta["epoch"], meta["step"]
        self.opt.steps = meta["optimizer_steps"]
        self.history = meta.get("history", [])
        if self.step_in_epoch and meta.get("epoch_totals"):
            self.totals = dict(self._zero_totals(), **meta["epoch_totals"])

    def _from_rank0(self):
        """Every rank starts from rank 0's parameters, optimizer state and progress (only rank 0
        reads a checkpoint: the others need not see its directory)."""
        w = self.world
        self.model.load_parameters(w.broadcast(self.model.parameters(), "initial parameters"))
        state = w.broadcast_object({"epoch": self.epoch, "step": self.step_in_epoch,
                                    "optimizer_steps": self.opt.steps, "history": self.history,
                                    "buffers": sorted(self.rt.optimizer_state(self.model))},
                                   "the run's progress")
        self.epoch, self.step_in_epoch = state["epoch"], state["step"]
        self.opt.steps, self.history = state["optimizer_steps"], state["history"]
        if state["buffers"]:
            params = self.model.parameters()
            buffers = self.rt.optimizer_state(self.model) if self.lead else \
                {k: params[split_key(k)[1]] * 0 for k in state["buffers"]}
            self.rt.load_optimizer_state(self.model, w.broadcast(buffers, "optimizer state"))

    # --- loop ---------------------------------------------------------------------------------
    def run(self):
        """Train to cfg.epochs. Ctrl-C stops after the step in flight, saves (mid-epoch: the
        step is recorded, --resume continues from it) and raises KeyboardInterrupt, with
        self.stopped saying what was saved; a second Ctrl-C stops at once and saves nothing."""
        log = JsonLog(self.cfg.log if self.lead else None)
        d = self.data
        log.write(kind="data", name=d.name, class_names=list(d.class_names), train=len(d.train_y),
                  **{part: len(labels) for part, (_, labels) in run_data.held_out(d).items()})
        self.ctrl_c.install()
        try:
            with host_thread_pinned(self.rt.devices, self.world):  # (affinity.py: GPU steps)
                while self.epoch < self.cfg.epochs:
                    self._epoch(log)
        except KeyboardInterrupt:
            self.stopped = self._save_stopped()
            raise
        finally:
            self.ctrl_c.restore()
            log.close()
            self.close()
        if self.cfg.plot and self.lead:
            plot_curves(self.history, self.cfg.plot)
        return self.history

    def _save_stopped(self):
        """Save after a Ctrl-C; -> what happened, in words."""
        if not self.store:
            return "nothing saved (no --checkpoint)" if self.lead else ""
        if self.ctrl_c.forced:
            return f"nothing saved (Ctrl-C twice stopped in the middle of a step): " \
                   f"{self.store.holds()}"
        try:
            self.save()
        except HetclError as e:
            return f"nothing saved: {e}"
        return f"saved to {self.cfg.checkpoint}, --resume continues"

    def _epoch(self, log):
        cfg, d = self.cfg, self.data
        batches = shuffled_batches(len(d.train_x), cfg.batch_size, cfg.seed, self.epoch)
        # the coming steps run on into the next epoch's (a streamed set's plan goes on)
        ahead = batches + (shuffled_batches(len(d.train_x), cfg.batch_size, cfg.seed,
                                            self.epoch + 1) if self.epoch + 1 < cfg.epochs
                           else [])[:LOOKAHEAD_STEPS]
        bar = Progress(len(batches), f"epoch {self.epoch + 1}/{cfg.epochs}") \
            if cfg.progress and self.lead else None
        start = time.perf_counter() - self.totals["seconds"]
        augment = run_data.augment(cfg, self.epoch)
        # Each step's loss is read only after the next step is enqueued (defer=True), so the
        # host prepares a step while the devices compute the one before.
        pending = None
        for i in range(self.step_in_epoch, len(batches)):
            idx = batches[i]
            self.opt.lr = scheduled_lr(cfg.lr_schedule, cfg.lr, self.epoch, i, len(batches),
                                       cfg.epochs, cfg.warmup_epochs)
            result = self.rt.train_step_indices(
                self.model, self.opt, d.train_x, d.train_y, idx, d.mean, d.std, defer=True,
                augment=augment, upcoming=ahead[i + 1:i + 1 + LOOKAHEAD_STEPS])
            self.step_in_epoch = i + 1
            if pending:
                self._account(*pending, bar, log)
            pending = (i, len(idx), result, self.opt.lr)
            if self.ctrl_c.requested:  # between steps, so the saved state is consistent
                self._account(*pending, bar, log)
                self.totals["seconds"] = time.perf_counter() - start
                raise KeyboardInterrupt
        if pending:
            self._account(*pending, bar, log)
        self._end_epoch(log, bar, time.perf_counter() - start)

    def _end_epoch(self, log, bar, elapsed):
        t = self.totals
        accs = self.accuracies()
        record = {"kind": "epoch", "epoch": self.epoch + 1,
                  "train_loss": t["loss"] / max(t["seen"], 1),
                  "train_acc": t["correct"] / max(t["seen"], 1), **accs,
                  "images_per_s": t["seen"] / max(elapsed, 1e-9), "seconds": elapsed}
        self.history.append(record)
        log.write(**record)
        if bar:
            bar.close("".join(f"  {k.replace('_', ' ')} {100 * v:.2f}%" for k, v in accs.items()))
        self.epoch, self.step_in_epoch, self.totals = self.epoch + 1, 0, self._zero_totals()
        self.save(accs.get("val_acc", accs.get("test_acc")))

    def _account(self, i, size, result, lr, bar, log):
        """Step i's loss and accuracy into the epoch's totals, the progress bar and the log."""
        loss, ok = result.get()
        if not math.isfinite(loss) or loss > self.max_loss:
            raise Diverged(f"the loss reached {loss:.4g} at epoch {self.epoch + 1} step {i + 1}"
                           f" (a run stops at a NaN, an Inf or a loss above "
                           f"{self.max_loss:.4g}, --max-loss); lower --lr (now {self.cfg.lr})" +
                           (f": {self.store.holds()}" if self.store else ""))
        totals = self.totals
        totals["loss"] += loss * size
        totals["correct"] += ok
        totals["seen"] += size
        if bar:
            extra = {}
            if len(self.rt.devices) > 1:  # the scheduler's split, device by device
                split = "/".join(str(s) for s in self.rt.last_split)
                if sum(self.rt.last_split) == self.cfg.batch_size:  # (not the short last batch)
                    self._split_shown = split
                extra["split"] = self._split_shown or split
            bar.update(i + 1, totals["seen"], loss=f"{totals['loss'] / totals['seen']:.4f}",
                       acc=f"{100 * totals['correct'] / totals['seen']:.1f}%", **extra)
        if self.cfg.log_every == "step":
            log.write(kind="step", epoch=self.epoch + 1, step=i + 1, loss=loss,
                      acc=ok / size, lr=lr)

    def accuracies(self):
        """{"val_acc": ..., "test_acc": ...} on the held-out parts the data has."""
        d = self.data
        out = {}
        for part, (images, labels) in run_data.held_out(d).items():
            preds = self.rt.evaluate_indices(self.model, images, labels, d.mean, d.std,
                                             batch_size=self.cfg.batch_size)
            out[f"{part}_acc"] = float((preds == labels).mean())
        return out
