"""Data sets on the devices (hetcl/engine/device_data.py): a set larger than a device's data
budget streams from host memory and trains to the same numbers as a resident one, bit for bit;
on-device augmentation draws the same images whatever the split over devices."""
import numpy as np
import pytest

import hetcl
from conftest import DEVICES
from hetcl.codegen.probes.augment import augment_reference
from hetcl.engine import chunks, staging
from hetcl.engine.device_data import Resident, Streamed
from hetcl.engine.resident_sets import Augment
from hetcl.errors import InputError
from hetcl.model.models import build_model
from hetcl.model.optim import SGD
from test_train import N_TRAIN, cfg, run, small_data  # noqa: F401 (a fixture)

N, BATCH, STEPS = 96, 32, 6


def dataset(seed=0, classes=10):
    """Random images and labels (uint8, or int32 past 256 classes, as data.py keeps them)."""
    rng = np.random.default_rng(seed)
    images = rng.integers(0, 256, (N, 1, 28, 28), dtype=np.uint8)
    return images, rng.integers(0, classes, N).astype(np.uint8 if classes <= 256 else np.int32)


def step_indices(step):
    """The step's batch: BATCH samples, the last step fewer (a partial batch)."""
    size = BATCH if step < STEPS - 1 else BATCH - 12
    return np.random.default_rng([1, step]).permutation(N)[:size].astype(np.int32)


def coming(step, lookahead):
    """upcoming for the step: None; "next": the following steps' indices (as `hetcl train`
    passes them); "one": the next step's only; "other": the following steps' reversed, never
    what comes; "detour": as "next", but after step 2 something else (step 3 is not planned)."""
    following = [step_indices(s) for s in range(step + 1, STEPS)]
    return {None: None, "next": following, "one": following[:1],
            "other": [b[::-1] for b in following],
            "detour": following[::-1] if step == 2 else following}[lookahead]


PLANNED = {None: [False] * STEPS, "next": [False] + [True] * (STEPS - 1),
           "one": [False] + [True] * (STEPS - 1), "other": [False] * STEPS,
           "detour": [False, True, True, False, True, True]}  # step by step: from a chunk?


def train(devices, augment=False, classes=10, lookahead=None):
    """STEPS steps of the MLP on the set (its few kernels compile quickly; the data path is
    the same for every model); lookahead: what each step passes as upcoming (coming).
    -> (runtime, model, losses, (images, labels))."""
    images, labels = dataset(classes=classes)
    model = build_model("mlp", (1, 28, 28), classes, 0)
    rt, opt = hetcl.Runtime(devices), SGD(0.05, 0.9)
    losses = []
    for step in range(STEPS):
        aug = Augment(4, True, seed=7, epoch=step // 2) if augment else None
        losses.append(rt.train_step_indices(model, opt, images, labels, step_indices(step),
                                            0.3, 0.3, augment=aug,
                                            upcoming=coming(step, lookahead)))
    return rt, model, losses, (images, labels)


def spy_on_lookahead(monkeypatch, samples=N):
    """-> a list of whether each streamed step's run (one per step and device) of the set of
    `samples` images came from a chunk uploaded ahead (HostChunks.locate found it)."""
    answers, locate = [], chunks.HostChunks.locate

    def spy(self, idx):
        found = locate(self, idx)
        if len(self.images) == samples:
            answers.append(found is not None)
        return found
    monkeypatch.setattr(chunks.HostChunks, "locate", spy)
    return answers


@pytest.mark.parametrize("augment, classes, queue, lookahead, chunk_steps", [
    (False, 10, "main", None, 16), (True, 10, "main", "next", 16),
    (False, 300, "main", "other", 16), (True, 10, "copy", None, 16),
    (False, 10, "copy", "one", 16), (True, 300, "main", "next", 2),
    (False, 10, "main", "detour", 2)])
def test_streamed_set_trains_like_a_resident_one(device, monkeypatch, augment, classes, queue,
                                                 lookahead, chunk_steps):
    """queue: which of the device's queues carries a step's own upload (small ones go on the
    main queue; "copy": the one a large upload takes, forced by a threshold of 0 bytes).
    lookahead: the coming steps' rows, uploaded ahead in chunks of up to chunk_steps steps,
    serve a step only where it is the one planned (else the step uploads its own): the same
    bits either way."""
    rt, model, losses, data = train(device, augment, classes)
    assert isinstance(rt.resident_sets.get(device, *data, 0.3, 0.3), Resident)
    monkeypatch.setenv("HETCL_DATA_BUDGET", "1K")  # the set's 75 KiB no longer fit
    if queue == "copy":
        monkeypatch.setattr(staging, "MAIN_QUEUE_UPLOAD_BYTES", 0)
    monkeypatch.setattr(chunks, "CHUNK_STEPS", chunk_steps)
    answers = spy_on_lookahead(monkeypatch)
    rt2, model2, losses2, data2 = train(device, augment, classes, lookahead)
    assert answers == PLANNED[lookahead]
    streamed = rt2.resident_sets.get(device, *data2, 0.3, 0.3)
    assert isinstance(streamed, Streamed)
    # (one staging per executor: the last, partial batch has its own)
    assert {s.on_copy_queue for s in streamed._stages.values()} == {queue == "copy"}
    assert losses2 == losses  # bitwise: the gather reads the same bytes
    p, p2 = model.parameters(), model2.parameters()
    assert all(np.array_equal(p[k], p2[k]) for k in p)
    preds = rt.evaluate_indices(model, *data, 0.3, 0.3, batch_size=40)
    assert np.array_equal(rt2.evaluate_indices(model2, *data2, 0.3, 0.3, batch_size=40), preds)


@pytest.mark.skipif(len(DEVICES) < 2, reason="needs two OpenCL devices")
@pytest.mark.parametrize("budget", [None, "1K"])
def test_two_devices_augmented_equal_one(monkeypatch, budget):
    """Augmented steps split over two uneven devices (resident, or streamed to both) == one
    device: each sample's crop and flip follow its index, not its place in the split."""
    _, one, losses1, _ = train(DEVICES[0], augment=True)
    if budget:
        monkeypatch.setenv("HETCL_DATA_BUDGET", budget)
    answers = spy_on_lookahead(monkeypatch)
    rt, two, losses2, _ = train("all", augment=True, lookahead="next")
    assert len(rt.devices) == 2
    # streamed: the first step splits evenly (two runs gathered at the step); from the second
    # step on, each run was gathered ahead. The scheduler may leave the slow device out of a
    # later step (its share under a granule), so a later step has one or two runs.
    if budget:
        assert answers[:2] == [False] * 2 and all(answers[2:])
        assert STEPS - 1 <= len(answers) - 2 <= 2 * (STEPS - 1)
    else:
        assert answers == []
    assert np.allclose(losses2, losses1, rtol=1e-5, atol=0)
    p1, p2 = one.parameters(), two.parameters()
    for k in p1:
        assert np.abs(p1[k] - p2[k]).max() <= 1e-5 * max(1.0, np.abs(p1[k]).max()), k


@pytest.mark.parametrize("budget", [None, "1K"])
def test_a_step_trains_on_the_reference_crops_and_flips(device, monkeypatch, budget):
    """The input a training step's layers see is the numpy reference's augmented batch (with
    mean 0 and std 1/255 the normalisation is the identity), resident or streamed."""
    if budget:
        monkeypatch.setenv("HETCL_DATA_BUDGET", budget)
    images, labels = dataset()
    model = build_model("mlp", (1, 28, 28), 10, 0)
    rt, idx = hetcl.Runtime(device), np.arange(60, 60 - BATCH, -1).astype(np.int32)
    rt.train_step_indices(model, SGD(0.01), images, labels, idx, 0.0, 1 / 255,
                          augment=Augment(3, True, seed=11, epoch=4))
    x = rt.executor(model, device, BATCH).out[0].get()
    ref = augment_reference(images, idx, idx, 11, 4, 3, True)
    assert np.array_equal(x, ref.astype(np.float32).reshape(x.shape))
    assert not np.array_equal(ref, images[idx])  # (something was cropped or flipped)


def test_a_chunk_finds_a_run_at_whole_indices_only():
    """Chunk.find: a device's run of a planned step, by a byte search that must land on a whole
    int32 (256 then 3 hold the bytes of 0x300 across their boundary)."""
    c = chunks.Chunk(0, [np.array([1, 256, 3, 7, 1, 2], np.int32), np.array([9, 8], np.int32)],
                     None)
    assert c.find(0, np.array([1, 2], np.int32)) == 4        # the second 1 starts the run
    assert c.find(0, np.array([256, 3], np.int32)) == 1
    assert c.find(1, np.array([8], np.int32)) == 7           # after the first step's 6 rows
    for missing in ([5], [0x300], [3, 7, 1, 2, 9], []):
        assert c.find(0, np.array(missing, np.int32)) is None, missing


def test_a_coming_index_outside_the_set_is_an_input_error(device, monkeypatch):
    """upcoming is checked where a chunk is planned: an index past the set says so, and the
    steps after it still train (each uploading its own rows)."""
    monkeypatch.setenv("HETCL_DATA_BUDGET", "1K")
    images, labels = dataset()
    model, rt, opt = build_model("mlp", (1, 28, 28), 10, 0), hetcl.Runtime(device), SGD(0.05)
    with pytest.raises(InputError, match=rf"indices must be in \[0, {N}\)"):
        rt.train_step_indices(model, opt, images, labels, step_indices(0), 0.3, 0.3,
                              upcoming=[step_indices(1), np.array([0, N])])
    loss = rt.train_step_indices(model, opt, images, labels, step_indices(1), 0.3, 0.3)
    assert np.isfinite(loss) and 1.0 < loss < 4.0


def test_hetcl_train_streams_its_steps_ahead_into_the_next_epoch(small_data, monkeypatch):
    """`hetcl train` over budget: the numbers of resident data, and every step but the run's
    first came from a chunk - the plan goes on over the epoch's end (and the evaluations)."""
    _, resident = run(cfg(small_data, epochs=2))
    monkeypatch.setenv("HETCL_DATA_BUDGET", "1K")
    answers = spy_on_lookahead(monkeypatch, samples=N_TRAIN)
    _, streamed = run(cfg(small_data, epochs=2))
    assert [h["train_loss"] for h in streamed] == [h["train_loss"] for h in resident]
    assert [h["test_acc"] for h in streamed] == [h["test_acc"] for h in resident]
    assert answers == [False] + [True] * (2 * N_TRAIN // 128 - 1)


@pytest.mark.parametrize("budget", [None, "1K"])
def test_evaluation_with_reads_in_flight_equals_waiting_for_each_batch(device, monkeypatch,
                                                                       budget):
    """Evaluation reads each batch's logits without waiting for them before the next batch
    (resident_sets.READS_IN_FLIGHT): 14 batches of 7 (the last one partial), resident or
    streamed, predict what the same executor does batch by batch, waiting for each."""
    if budget:
        monkeypatch.setenv("HETCL_DATA_BUDGET", budget)
    images, labels = dataset()
    model, rt = build_model("mlp", (1, 28, 28), 10, 0), hetcl.Runtime(device)
    preds = rt.evaluate_indices(model, images, labels, 0.3, 0.3, batch_size=7)
    ex = rt.executor(model, device, 7)
    data = rt.resident_sets.get(device, images, labels, 0.3, 0.3)
    waited = []
    for start in range(0, N, 7):
        ex.gather(data, np.minimum(np.arange(start, start + 7), N - 1))
        waited.append(ex.forward().get().argmax(axis=1)[:N - start])
    assert len(preds) == N and len(set(preds.tolist())) > 1
    assert np.array_equal(preds, np.concatenate(waited))


def test_a_larger_batch_later_sizes_the_chunks_anew(device, monkeypatch):
    """Chunks are sized for the first announced batch (two steps of 8 rows here); a batch of
    32 later sizes them anew, and its steps still come from chunks, with resident numbers."""
    monkeypatch.setattr(chunks, "CHUNK_STEPS", 2)
    images, labels = dataset()
    order = np.random.default_rng(9).permutation(N).astype(np.int32)
    steps = [order[:8], order[8:16], order[16:24], order[24:56], order[56:88], order[64:96]]

    def losses(budget):
        if budget:
            monkeypatch.setenv("HETCL_DATA_BUDGET", budget)
        model, rt, opt = build_model("mlp", (1, 28, 28), 10, 0), hetcl.Runtime(device), SGD(0.05)
        return [rt.train_step_indices(model, opt, images, labels, idx, 0.3, 0.3,
                                      upcoming=steps[k + 1:]) for k, idx in enumerate(steps)]
    resident = losses(None)
    answers = spy_on_lookahead(monkeypatch)
    assert losses("1K") == resident
    assert answers == [False] + [True] * 5
