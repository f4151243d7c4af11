"""The tuning-bucket schema (tuning/buckets.py): the shards of a split batch find the entries
tuned on the whole batch, for every kernel of a training step, and buckets of the older
exact-shape form are read in the schema."""
from hetcl.tuning import buckets, tunedb
from hetcl.codegen import launch
from hetcl.engine import ops
from hetcl.tuning.tune import step_executor


def test_old_buckets_are_read_in_the_schema():
    assert buckets.upgrade("bias_act", "256x120x1 relu nfs bias1") == "n256 120x1 relu nfs bias1"
    assert buckets.upgrade("maxpool_fwd", "208x16x10x10 k2x2 s2x2") == "n256 16x10x10 k2x2 s2x2"
    assert buckets.upgrade("im2col", "6x14x14 k5x5 s1x1 p0x0 n48 planes9x7") == \
        "n64 6x14x14 k5x5 s1x1 p0x0 planes9x7"
    assert buckets.upgrade("splitk", "NT-16x150x50176") == "n65536 NT-16x150"
    assert buckets.upgrade("gemm", "NN-256x128x512") == "NN-256x128x512"


def test_nearest_takes_one_differing_dimension_within_one_class():
    tuned = ["n256 120x1 relu nfs bias1", "n16 120x1 relu nfs bias1", "n256 84x1 relu nfs bias1"]
    assert buckets.nearest("n32 120x1 relu nfs bias1", tuned) == "n16 120x1 relu nfs bias1"
    assert buckets.nearest("n128 120x1 relu nfs bias1", tuned) == "n256 120x1 relu nfs bias1"
    assert buckets.nearest("n512 120x1 relu nfs bias1", tuned) == "n256 120x1 relu nfs bias1"
    assert buckets.nearest("n64 120x1 relu nfs bias1", tuned) is None  # a quarter of 256
    assert buckets.nearest("n128 100x1 relu nfs bias1", tuned) is None  # (another layer)
    gemms = ["NN-256x128x512", "NN-256x256x256", "NT-64x128x512"]
    assert buckets.nearest("NN-128x128x512", gemms) == "NN-256x128x512"
    assert buckets.nearest("NN-64x128x512", gemms) is None  # two classes away
    assert buckets.nearest("NN-128x256x512", gemms) is None  # two dimensions differ


def _tuned_kernels(ex, batch):
    """{(kernel, bucket): params} of every DB-chosen kernel launched in one step."""
    with launch.record_launches() as launches:
        for _ in ex.enqueue_step(batch):
            pass
    ex.replica.device.queue.finish()
    return {tuple(owner.tune[:2]): owner.params for owner, _ in launches if owner.tune}


def test_every_kernel_of_a_split_shard_finds_the_whole_batch_entry(device, fresh_db,
                                                                    monkeypatch):
    """The DB holds an entry for every kernel of a LeNet-5 step at batch 256 (the parameters
    chosen there); the shards 208 (the same class) and 112 (the next) of a 256 split find one
    for each of theirs; a shard of 48 (a quarter) takes its own defaults. (Each conv layer
    takes its whole batch in one chunk here: a CPU's cache-sized chunks would give every
    batch the same conv kernel shapes.)"""
    monkeypatch.setattr(ops, "column_budget", lambda device: 1 << 30)
    whole = _tuned_kernels(step_executor("lenet5", device, 256), 256)
    for (kernel, bucket), params in whole.items():
        tunedb.record(device, kernel, bucket, params.as_dict(), 1.0, 1.0)
    db = tunedb.database()
    # at 48, only the buckets that do not depend on the batch (a split-K sum's) find entries
    small = _tuned_kernels(step_executor("lenet5", device, 48), 48)
    assert small and all((db.find(device, k, b)[0] is None) == ((k, b) not in whole)
                         for k, b in small)
    for shard in (208, 112):
        kernels = _tuned_kernels(step_executor("lenet5", device, shard), shard)
        assert {k for k, _ in kernels} == {k for k, _ in whole}  # the same kernel families
        for (kernel, bucket), params in kernels.items():
            found, own = db.find(device, kernel, bucket)
            assert own and found is not None, (shard, kernel, bucket)
            near = bucket if bucket in {b for k, b in whole if k == kernel} else \
                buckets.nearest(bucket, [b for k, b in whole if k == kernel])
            assert found == whole[kernel, near].as_dict(), (shard, kernel, bucket)
