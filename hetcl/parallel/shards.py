"""A batch of n samples split in proportion to weights (the devices' speeds), in whole granules:
every distinct shard size costs a kernel build, so sizes stay multiples of the granule."""


def proportional_shards(n, weights, granule):
    """-> shard sizes summing to n. A zero weight gets nothing (all zero: an even split)."""
    total = sum(weights)
    k = len(weights)
    if total <= 0:
        weights, total = [1.0] * k, float(k)
    g = max(1, min(granule, n // max(1, sum(w > 0 for w in weights))))
    ideal = [n * w / total for w in weights]
    shards = [int(x // g) * g for x in ideal]
    # Hand out what rounding left, a granule at a time, to the largest shortfalls; the final
    # remainder (< g) goes to the fastest device.
    rest = n - sum(shards)
    while rest >= g:
        i = max(range(k), key=lambda j: (ideal[j] - shards[j]) if weights[j] > 0 else -1e30)
        shards[i] += g
        rest -= g
    shards[max(range(k), key=lambda j: weights[j])] += rest
    return shards
