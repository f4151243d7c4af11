"""Split each global batch across devices in proportion to their measured throughput.

Pure Python (no OpenCL): the runtime reports each device's compute and exchange seconds after
each step; the scheduler keeps a smoothed samples/s per device and proposes the next split.
* Calibration: the first step splits evenly (nothing is known yet).
* Re-balancing: shards proportional to the smoothed throughput, so that all devices finish
  together, in whole granules (shards.py); a new split is taken only when it is predicted to
  be at least `hysteresis` faster than the current one.
* Dropping: a device whose share makes the step slower - its exchange costs more than the
  compute it saves the others, or, measured, steps run faster without it (devices that share
  hardware) - gets nothing, with a log line saying why. Which device stays where one would be
  left is measured (a trial of each alone), not modelled. A device stays only where steps are
  faster with it, with no margin in its favour: all devices together should never be slower
  than the best of them alone (the figures behind these rules: docs/benchmarks.md, "Several
  devices"). A dropped device is probed again after `probe_every` steps and `probe_seconds`
  of training, whichever is later; each probe that ends with it dropped again doubles both.
"""
import collections

from ..log import logger
from .shards import proportional_shards


class Scheduler:
    def __init__(self, names, granule=16, smoothing=0.5, hysteresis=0.05, probe_every=500,
                 probe_seconds=30.0, adaptive=True, exchange_alone=False):
        self.names = list(names)
        self.granule, self.smoothing = int(granule), float(smoothing)
        self.hysteresis, self.probe_every = float(hysteresis), int(probe_every)
        self.probe_seconds = float(probe_seconds)
        self.elapsed = 0.0           # seconds of the steps timed so far (end_step)
        self.drops = [0] * len(self.names)  # times each device was dropped (probe back-off)
        k = len(self.names)
        self.speed = [None] * k      # samples / s of compute, smoothed
        self.exchange = [0.0] * k    # seconds of gradient read-back + upload, smoothed
        self.active = [True] * k
        self.dropped_at = [None] * k  # (step, elapsed, steps to wait, seconds to wait)
        self.steps = 0
        self.current = None          # (n, shards) last proposed
        self.messages = []           # why devices were dropped or re-admitted
        self.timing = {}             # active-set tuple -> the last 64 measured step seconds
        self.trial, self.trial_steps, self.next_trial = None, 5, (0, 0.0)
        # Steps not timed after a new configuration or a measured step: the first builds
        # kernels, and after a step that waited for the devices the host runs ahead while the
        # queues refill, so the next start-to-start times measure the host, not the devices.
        self.settle = 2
        self._unsettled = 0
        self.trial_age = 0  # steps the current trial configuration has run
        self._last_key = self._last_shards = None
        self.told = set()  # devices whose drop was already logged
        self.measurements = 0  # record() calls so far
        self._proposed = None  # what the current proposal was made from
        self._used = {}  # (n, active tuple) -> the last split proposed for it
        self.adaptive = adaptive  # False: proportional shares only, never drop a device
        self.exchange_alone = exchange_alone  # True: one device alone still exchanges (MPI)
        self._trial_asked = None  # the set of devices the model last asked a trial for

    # --- proposals -----------------------------------------------------------------------------
    def split(self, n):
        """Shard sizes (one per device, 0 for devices that get nothing) summing to n."""
        self._maybe_probe()
        # Speeds change only on measured steps: between them the last proposal stands (the
        # host's time per step counts where LeNet-5 steps take under a millisecond).
        key = (n, tuple(self.active), self.measurements)
        if key == self._proposed and self.current:
            return list(self.current[1])
        self._proposed = key
        if any(s is None for s, a in zip(self.speed, self.active) if a):  # calibration
            shards = self._proportional(n, [1.0 if a else 0.0 for a in self.active])
        else:
            shards = self._proportional(n, self._weights())
            self._say_why_empty(n, shards)
            # Not worth a new shard size (= new kernel builds: on PoCL a second or more): the
            # split this set of devices had last - the one in use, or after a probe the share
            # the re-admitted device had, whose kernels are built.
            keep = self._used.get((n, tuple(self.active)))
            if keep and [c > 0 for c in keep] == [s > 0 for s in shards] and \
                    self.predict(keep) <= self.predict(shards) * (1 + self.hysteresis):
                shards = list(keep)
        self.current = (n, shards)
        self._used[n, tuple(self.active)] = list(shards)
        return shards

    def _say_why_empty(self, n, shards):
        for i, (size, active) in enumerate(zip(shards, self.active)):
            if active and size == 0 and i not in self.told:
                self.told.add(i)
                msg = (f"scheduler: {self.names[i]} gets no samples: at {self.speed[i]:.0f} "
                       f"samples/s its share of a batch of {n} is under one granule "
                       f"({self.granule}) against {max(s or 0 for s in self.speed):.0f} "
                       f"samples/s for the fastest device")
                self.messages.append(msg)
                logger.warning(msg)

    def _weights(self, without=None):
        return [sp if (a and i != without) else 0.0
                for i, (sp, a) in enumerate(zip(self.speed, self.active))]

    def _proportional(self, n, weights):
        return proportional_shards(n, weights, self.granule)

    def predict(self, shards):
        """Predicted step seconds: the slowest device's compute + exchange. A device that
        takes the whole batch exchanges nothing (unless `exchange_alone`: under MPI it still
        sums with the other ranks)."""
        alone = sum(1 for s in shards if s) == 1 and not self.exchange_alone
        t = 0.0
        for s, speed, ex in zip(shards, self.speed, self.exchange):
            if s:
                t = max(t, s / max(speed or 1e-9, 1e-9) + (0.0 if alone else ex))
        return t

    # --- measurements --------------------------------------------------------------------------
    def record(self, shards, compute_seconds, exchange_seconds=None):
        """Per device: samples computed, seconds of compute, seconds of gradient exchange.
        Call end_step() after it (and on steps that ran on one device only)."""
        exchange_seconds = exchange_seconds or [0.0] * len(shards)
        self.measurements += 1
        a = self.smoothing
        for i, (s, t, ex) in enumerate(zip(shards, compute_seconds, exchange_seconds)):
            if not s or t is None or t <= 0:
                continue
            speed = s / t
            self.speed[i] = speed if self.speed[i] is None else a * speed + (1 - a) * self.speed[i]
            self.exchange[i] = ex if self.steps == 0 else a * ex + (1 - a) * self.exchange[i]
        self._drop_slow(sum(shards))

    def end_step(self, step_seconds=None):
        """step_seconds: wall-clock time of the step that just ended, start to next start."""
        self.steps += 1
        self.elapsed += step_seconds or 0.0
        if self.trial is None and sum(1 for s in self._shards() if s) < 2:
            # One device computes (the others are dropped or under a granule): nothing to
            # compare, and a probe needs only steps and seconds (the median and the trial
            # checks cost a host-bound step measurable time).
            self._last_key = None  # a probe's first steps are then not timed (settle)
            return
        self._observe(step_seconds)
        self._explore()

    # --- measured trials -----------------------------------------------------------------------
    # The throughput model assumes devices do not slow each other down. Devices that share
    # hardware (two OpenCL devices on the same CPU cores, a CPU device feeding a GPU) break that,
    # so the scheduler also measures: once the split has settled, it runs a few steps without
    # the slowest device and keeps whichever configuration was faster in wall-clock time.

    def _shards(self):
        """The current split's shard sizes (zeros before the first)."""
        return self.current[1] if self.current else [0] * len(self.active)

    def _observe(self, step_seconds):
        key = tuple(self.active)
        shards = self._shards()
        if key != self._last_key or shards != self._last_shards or step_seconds is None:
            self._unsettled = self.settle + (step_seconds is not None)
        self._last_key, self._last_shards = key, shards
        if self._unsettled:
            self._unsettled -= 1
            return
        # Bounded: the median is taken every step, and a long run must not slow down with it.
        samples = self.timing.setdefault(key, collections.deque(maxlen=64))
        if len(samples) >= self.trial_steps and step_seconds > 3 * self._mean_time(key):
            return  # the host did something else between steps (evaluation, a checkpoint)
        samples.append(step_seconds)

    def _mean_time(self, key):
        """Median step time of a configuration (robust to the odd slow step)."""
        samples = sorted(self.timing.get(key, []))
        return samples[len(samples) // 2] if samples else None

    def _explore(self):
        """Trials: each active device in turn is left out for a few measured steps; then the
        fastest configuration is kept (all devices unless one is clearly faster without)."""
        if self.trial is not None:
            self._continue_trial(tuple(self.active))
        else:
            self._start_trial(tuple(self.active))

    def _continue_trial(self, key):
        i, base, todo, results = self.trial
        self.trial_age += 1
        # A trial that cannot collect its samples (steps keep being rejected) ends anyway.
        if len(self.timing.get(key, [])) < self.trial_steps and \
                self.trial_age < 4 * (self.trial_steps + self.settle):
            return
        self.trial_age = 0
        results[i] = self._mean_time(key) or float("inf")
        self.active[i] = True
        if todo:
            self.active[todo[0]] = False
            self.timing.pop(tuple(self.active), None)  # this trial's own samples only
            self.trial = (todo[0], base, todo[1:], results)
            return
        self.trial = None
        self.next_trial = (self.steps + self.probe_every, self.elapsed + self.probe_seconds)
        self._finish_trial(base, results)

    def _finish_trial(self, base, results):
        """Drop the device whose absence made the steps fastest, if faster than with all."""
        with_all = self._mean_time(base)
        best = min(results, key=results.get)
        if results[best] >= with_all:
            return
        n = self.current[0] if self.current else 0
        modelled = self.predict(self._proportional(n, self._weights(without=best))) < \
            self.predict(self._proportional(n, self._weights()))
        self._drop(best, f"scheduler: dropping {self.names[best]}: measured steps take "
                         f"{1e3 * with_all:.1f} ms with it and "
                         f"{1e3 * results[best]:.1f} ms without it (it computes "
                         f"{self.speed[best] or 0:.0f} samples/s and its gradient "
                         f"exchange costs {1e3 * self.exchange[best]:.1f} ms" +
                         ("" if modelled else "; devices that share hardware slow each "
                                              "other") + ")")

    def _start_trial(self, key):
        # Devices that have work (an active one under a granule has none: nothing to measure)
        shards = self._shards()
        act = [i for i, a in enumerate(self.active) if a and shards[i]]
        if not self.adaptive or len(act) < 2 or self.steps < self.next_trial[0] or \
                self.elapsed < self.next_trial[1] or \
                any(self.speed[i] is None for i in act) or \
                len(self.timing.get(key, [])) < self.trial_steps:
            return
        # Slowest first, and only devices the throughput model does not already call vital
        # (leaving a GPU out for a few steps to "measure" a CPU alone costs seconds).
        n = self.current[0] if self.current else 0
        with_all = self.predict(self._proportional(n, self._weights())) if n else 0.0
        order = [i for i in sorted(act, key=lambda i: self.speed[i] or 0.0)
                 if not n or self.predict(self._proportional(n, self._weights(without=i)))
                 <= 2 * with_all]
        if not order:
            self.next_trial = (self.steps + self.probe_every, self.elapsed + self.probe_seconds)
            return
        self.active[order[0]] = False
        self.timing.pop(tuple(self.active), None)  # this trial's own samples only
        self.trial, self.trial_age = (order[0], key, order[1:], {}), 0

    def _drop_slow(self, n):
        while self.adaptive and sum(self.active) > 1:
            act = [i for i, a in enumerate(self.active) if a]
            if any(self.speed[i] is None for i in act):
                return
            with_all = self.predict(self._proportional(n, self._weights()))
            best, gain = None, 0.0
            for i in act:
                without = self.predict(self._proportional(n, self._weights(without=i)))
                if without < with_all and with_all - without > gain:
                    best, gain = i, with_all - without
            if best is None:
                return
            if len(act) == 2:
                # Down to one device: which one to keep is measured (a trial, at once; once
                # per set of devices): speeds measured while devices share cores mislead.
                if self._trial_asked != tuple(self.active):
                    self._trial_asked = tuple(self.active)
                    self.next_trial = (self.steps, self.elapsed)
                return
            self._drop(best, f"scheduler: dropping {self.names[best]}: with it a step takes "
                             f"{1e3 * with_all:.1f} ms, without it {1e3 * (with_all - gain):.1f} "
                             f"ms (it computes {self.speed[best]:.0f} samples/s and its gradient "
                             f"exchange costs {1e3 * self.exchange[best]:.1f} ms)")

    def _drop(self, i, why):
        """Give device i nothing until its probe; log why (once per device: later probes that
        agree stay quiet)."""
        back_off = 2 ** min(self.drops[i], 6)
        wait = (self.probe_every * back_off, self.probe_seconds * back_off)
        self.drops[i] += 1
        self.active[i] = False
        self._trial_asked = None
        self.dropped_at[i] = (self.steps, self.elapsed) + wait
        msg = f"{why}; probing again after {wait[0]} steps and {wait[1]:.0f} s"
        self.messages.append(msg)
        if i not in self.told:
            self.told.add(i)
            logger.warning(msg)

    def _maybe_probe(self):
        for i, at in enumerate(self.dropped_at):
            if not self.active[i] and at is not None and self.steps - at[0] >= at[2] and \
                    self.elapsed - at[1] >= at[3]:
                self.active[i] = True
                self.dropped_at[i] = None
                self.timing.pop(tuple(self.active), None)  # measure it afresh, not from memory
                self.messages.append(f"scheduler: probing {self.names[i]} again")

    def remove(self, i, reason):
        """A device that failed: never scheduled again."""
        if self.trial is not None:  # a failure invalidates the measurements: start again
            self.active[self.trial[0]] = True
            self.trial = None
        self.active[i] = False
        self.dropped_at[i] = None
        self.speed[i] = 0.0
        self.measurements += 1  # (the next split is proposed afresh)
        self.messages.append(f"scheduler: removed {self.names[i]}: {reason}")

    def shares(self):
        n, shards = self.current or (0, [])
        return {name: s for name, s in zip(self.names, shards)}
