"""The scheduler alone (pure Python): calibration, proportional shares, granules, hysteresis,
dropping a device that only slows the step, probing it again, and removal."""
from hetcl.parallel.scheduler import Scheduler


def until_dropped(s, *args, **kwargs):
    """feed() a step at a time until a device is dropped (not just left out by a trial)."""
    for _ in range(80):
        shards = feed(s, *args, **kwargs)
        if s.trial is None and not all(s.active):
            return shards
    raise AssertionError(f"nothing dropped: {s.messages}")


def feed(s, n, speeds, exchange=None, steps=1, shared=False):
    """Simulate steps where device i computes speeds[i] samples/s alone. shared: the devices
    share hardware, so together they take the sum of their times, not the maximum."""
    for _ in range(steps):
        shards = s.split(n)
        times = [x / sp if x else None for x, sp in zip(shards, speeds)]
        ex = exchange or [0.0] * len(shards)
        used = [(t, e) for t, e in zip(times, ex) if t is not None]
        wall = sum(t for t, _ in used) if shared else max(t for t, _ in used)
        if len(used) > 1:
            s.record(shards, [t * len(used) if (shared and t) else t for t in times], exchange)
            wall += max(e for _, e in used)
        s.end_step(wall)
    return s.split(n)


def test_first_step_splits_evenly_then_follows_throughput():
    s = Scheduler(["fast", "slow"], granule=16)
    assert s.split(256) == [128, 128]
    assert feed(s, 256, [3000.0, 1000.0]) == [192, 64]


def test_shards_are_granules_and_sum_to_n():
    s = Scheduler(["a", "b", "c"], granule=16)
    for n in (256, 250):
        shards = feed(s, n, [500.0, 300.0, 200.0])
        assert sum(shards) == n and min(shards) > 0
        assert sum(x % 16 != 0 for x in shards) <= 1  # only the remainder breaks the granule
    for n in (17, 3):  # batches smaller than granules: shrunk granules, still summing to n
        assert sum(feed(s, n, [500.0, 300.0, 200.0])) == n


def test_hysteresis_keeps_a_split_that_is_nearly_as_good():
    s = Scheduler(["a", "b"], granule=1, hysteresis=0.05)
    first = feed(s, 256, [1000.0, 1000.0])
    assert first == [128, 128]
    # 2% faster on one side: not worth new shard sizes (each one costs kernel builds)
    assert feed(s, 256, [1020.0, 1000.0]) == [128, 128]
    # twice as fast: re-balance
    assert feed(s, 256, [2000.0, 1000.0], steps=3)[0] > 150


def test_device_that_only_slows_the_step_is_dropped_and_probed_again():
    s = Scheduler(["gpu", "cpu"], granule=16, probe_every=10, probe_seconds=0)
    # The CPU computes 1/10 of the GPU's rate, but its gradient exchange costs 20 ms a step:
    # the 16 samples it would take save the GPU 1.6 ms.
    # Which of two devices to keep is measured: a trial leaves the CPU out for a few steps.
    shards = until_dropped(s, 256, [10000.0, 1000.0], exchange=[0.0001, 0.02])
    assert shards == [256, 0]
    assert s.messages[0].startswith("scheduler: dropping cpu: measured steps take 44.0 ms with "
                                    "it and 25.6 ms without it (it computes 1000 samples/s and "
                                    "its gradient exchange costs 20.0 ms)")
    assert s.messages[0].endswith("probing again after 10 steps and 0 s")
    feed(s, 256, [10000.0, 1000.0], exchange=[0.0001, 0.02], steps=10)
    assert "scheduler: probing cpu again" in s.messages
    # A CPU whose exchange is cheap helps, and keeps its share.
    s2 = Scheduler(["gpu", "cpu"], granule=16)
    assert feed(s2, 256, [10000.0, 1000.0], exchange=[0.0001, 0.0001], steps=3) == [240, 16]
    assert not s2.messages


def test_devices_sharing_hardware_are_measured_and_the_slower_dropped():
    """Two OpenCL devices on the same CPU cores: each looks half as fast when both run, so the
    model alone would keep both; measuring steps without one shows it only costs time."""
    s = Scheduler(["pthread", "basic"], granule=16, probe_every=100, probe_seconds=0)
    shards = feed(s, 256, [30000.0, 15000.0], steps=20, shared=True)
    assert shards == [256, 0]
    assert s.messages[0].startswith("scheduler: dropping basic: measured steps take ")
    assert "ms; devices that share hardware slow each other)" in s.messages[0]


def test_removed_device_never_comes_back():
    s = Scheduler(["a", "b"], granule=16, probe_every=1, probe_seconds=0)
    s.split(64)
    s.remove(1, "CL_OUT_OF_RESOURCES")
    assert feed(s, 64, [1000.0, 1000.0], steps=5) == [64, 0]
    assert s.messages == ["scheduler: removed b: CL_OUT_OF_RESOURCES"]


def test_a_device_too_slow_for_one_granule_is_told_why():
    s = Scheduler(["gpu", "cpu"], granule=16)
    assert feed(s, 256, [250000.0, 4000.0], steps=2) == [256, 0]
    assert s.messages[0].startswith("scheduler: cpu gets no samples: at 4000 samples/s its "
                                    "share of a batch of 256 is under one granule (16)")
    # Active but with nothing to compute: steps are only counted, as with one device left.
    steps = s.steps
    feed(s, 256, [250000.0, 4000.0], steps=20)
    assert s.steps == steps + 20 and not s.timing and s.trial is None and all(s.active)


def test_not_adaptive_keeps_every_device():
    s = Scheduler(["gpu", "cpu"], granule=16, adaptive=False)
    shards = feed(s, 256, [10000.0, 1000.0], exchange=[0.0001, 0.02], steps=10)
    assert shards == [240, 16] and not s.messages


def test_a_long_run_keeps_a_bounded_history():
    """The median step time is taken every step: its sample list must not grow with the run."""
    s = Scheduler(["a", "b"], granule=16)
    feed(s, 256, [3000.0, 2000.0], steps=300)
    assert s.timing and all(len(v) <= 64 for v in s.timing.values())
    assert sum(s.split(256)) == 256


def test_a_trial_ends_even_when_its_first_steps_looked_too_fast():
    """With deferred results the host runs ahead of the devices for a step or two after each
    change: those start-to-start times are far too short. They must neither become the
    baseline that rejects every later (true) step nor keep a trial running for ever."""
    s = Scheduler(["gpu0", "gpu1"], granule=16)
    wall = {(True, True): 0.006, (True, False): 0.0106, (False, True): 0.0106}
    host_ahead = 0
    for step in range(200):
        shards = s.split(512)
        key = tuple(x > 0 for x in shards)
        if key != getattr(s, "_seen", None):
            s._seen, host_ahead = key, 2
        t = 0.002 if host_ahead else wall[key]
        host_ahead = max(0, host_ahead - 1)
        if all(shards):
            s.record(shards, [x / 50000.0 for x in shards], [0.0004, 0.0004])
        s.end_step(t)
    assert s.trial is None and s.active == [True, True]
    assert s.split(512) == [256, 256] and not s.messages


def test_probes_wait_for_steps_and_seconds_and_back_off():
    """A probe of a device that only slows the step costs slow steps: it comes after
    probe_every steps and probe_seconds of training, and twice as late each time it ends with
    the device dropped again."""
    s = Scheduler(["gpu", "cpu"], granule=16, probe_every=10, probe_seconds=1.0)
    speeds, ex = [10000.0, 1000.0], [0.0001, 0.02]
    until_dropped(s, 256, speeds, exchange=ex)  # a step now takes 25.6 ms
    assert s.messages[-1].endswith("probing again after 10 steps and 1 s")
    feed(s, 256, speeds, exchange=ex, steps=30)  # 0.77 s: ten steps passed, but not 1 s
    assert "scheduler: probing cpu again" not in s.messages
    feed(s, 256, speeds, exchange=ex, steps=10)  # 1.02 s
    assert s.messages.count("scheduler: probing cpu again") == 1
    until_dropped(s, 256, speeds, exchange=ex)
    assert s.messages[-1].endswith("probing again after 20 steps and 2 s")


def test_a_device_that_makes_steps_slightly_slower_is_dropped():
    """No margin in favour of keeping a device: measured steps 3% slower with it than without
    drop it (with a 5% margin two PoCL devices on the same cores stayed together, slower than
    one of them alone). A device that makes steps 3% faster stays."""
    for with_both, kept in ((1.03, False), (0.97, True)):
        s = Scheduler(["fast", "slow"], granule=16)
        alone = 0.010
        for _ in range(60):
            shards = s.split(256)
            if all(shards):
                s.record(shards, [x / 25600.0 for x in shards], [0.0, 0.0])
                wall = alone * with_both
            else:
                wall = alone if shards[0] else 4 * alone
            s.end_step(wall)
        assert s.trial is None and s.active == [True, kept], (with_both, s.messages)


def test_a_probe_readmits_a_device_at_the_share_it_had():
    """The kernels of its old shard size are built; a new size costs builds (a second or more
    on PoCL: on an H200 beside the CPU, one probe that moved LeNet-5 to 224/32 cost a second)."""
    s = Scheduler(["gpu", "cpu"], granule=16, hysteresis=0.2, probe_every=5, probe_seconds=0)
    assert feed(s, 256, [3000.0, 1000.0], steps=3) == [192, 64]
    s._drop(1, "scheduler: dropping cpu: test")
    assert s.split(256) == [256, 0]
    s.speed[0] = 3600.0  # the GPU looked faster since: proportional shares would be 208/48
    assert s._proportional(256, s.speed) == [208, 48]
    for _ in range(5):
        s.split(256)
        s.end_step(0.06)
    assert s.split(256) == [192, 64] and "scheduler: probing cpu again" in s.messages


def test_a_device_alone_exchanges_nothing():
    """The faster device has the costlier exchange: with both, a step takes 46 ms; the fast
    one alone takes 21.3 ms (no exchange), so the slow one goes. Counting the lone device's
    exchange (51.3 ms) kept both."""
    s = Scheduler(["slow", "fast"], granule=16)
    assert until_dropped(s, 64, [1000.0, 3000.0], exchange=[0.02, 0.03]) == [0, 64]
    assert s.messages[0].startswith("scheduler: dropping slow: measured steps take 46.0 ms with "
                                    "it and 21.3 ms without it")
    assert abs(s.predict([0, 64]) - 64 / 3000) < 1e-9
    # Under MPI a rank's one device still sums with the other ranks: its exchange counts.
    s.exchange_alone = True
    assert abs(s.predict([0, 64]) - (64 / 3000 + s.exchange[1])) < 1e-9


def test_the_model_does_not_choose_which_of_two_devices_to_keep():
    """Two devices on the same cores both look slow when both run, and pthread's exchange
    looks costly: the model would keep "basic", but alone "pthread" is faster. A trial
    measures each alone and keeps pthread."""
    s = Scheduler(["basic", "pthread"], granule=16, probe_every=100, probe_seconds=0)
    alone = {0: 0.0100, 1: 0.0063}  # seconds per step of each alone
    for _ in range(80):
        shards = s.split(16)
        if all(shards):
            s.record(shards, [0.016, 0.018], [0.0, 0.02])  # shared cores: both look slow
            wall = 0.022
        else:
            wall = alone[0 if shards[0] else 1]
        s.end_step(wall)
    assert s.active == [False, True], s.messages
    assert s.messages[0].startswith("scheduler: dropping basic: measured steps take 22.0 ms")


def test_one_device_left_is_not_timed_and_a_probe_settles_first():
    """With one device active the steps are only counted (nothing to compare); after a probe
    the first steps of the re-admitted set are not timed (they build kernels, sync replicas)."""
    s = Scheduler(["gpu", "cpu"], granule=16, probe_every=10, probe_seconds=0)
    until_dropped(s, 256, [10000.0, 1000.0], exchange=[0.0001, 0.02])
    timed = {k: len(v) for k, v in s.timing.items()}
    feed(s, 256, [10000.0, 1000.0], exchange=[0.0001, 0.02], steps=9)
    assert {k: len(v) for k, v in s.timing.items()} == timed and s.steps >= 9
    feed(s, 256, [10000.0, 1000.0], exchange=[0.0001, 0.02], steps=1)  # the probe's split
    assert "scheduler: probing cpu again" in s.messages and all(s.active)
    s.end_step(5.0)  # a slow first step (kernel builds): not a sample
    assert 5.0 not in s.timing.get((True, True), [])
