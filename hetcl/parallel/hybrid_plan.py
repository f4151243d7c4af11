"""The plan of a hybrid step (hybrid.py), without devices: which layers form the model's dense
tail, how a layer's output neurons are split across devices, and the bytes a step moves in each
parallel mode (the formula in docs/benchmarks.md, "Hybrid parallelism")."""

MODES = ("data", "hybrid", "auto")


def dense_tail(model):
    """[(node, act)] of the model's trailing dense layers, or [] if it cannot run hybrid (it
    must end in Dense layers, with at least one layer before them, e.g. Flatten)."""
    tail = []
    for node in reversed(model.nodes[1:]):
        if node.fused_into is not None:  # an activation fused into the dense layer before it
            continue
        if node.layer.kind != "dense" or len(node.inputs) != 1:
            break
        tail.insert(0, node)
    if not tail or tail[0].inputs[0] == 0:
        return []
    return tail


def columns(width, shards):
    """Split `width` output neurons in proportion to the batch shards (largest remainders;
    a device without samples gets none)."""
    total = sum(shards)
    exact = [width * s / total for s in shards]
    cols = [int(e) for e in exact]
    for i in sorted(range(len(shards)), key=lambda i: exact[i] - cols[i], reverse=True):
        if sum(cols) == width:
            break
        if shards[i]:
            cols[i] += 1
    return cols


def transfer_bytes(model, mode, shards):
    """Bytes read from and uploaded to the devices in one step (the docs' formula), for the
    devices' batch shards (zeros: devices that sit out)."""
    shards = [s for s in shards if s]
    n, b = len(shards), sum(shards)
    params = {k: v.size for k, v in model.parameters().items()}
    if mode == "data" or n == 1:  # each reads its gradients and receives the n - 1 others
        return 4 * sum(params.values()) * n * n if n > 1 else 0
    tail = dense_tail(model)
    tail_names = {f"{node.layer.name}.{k}" for node in tail for k in ("weight", "bias")}
    head = sum(v for k, v in params.items() if k not in tail_names)
    floats = head * n * n
    widths = [node.layer.in_features for node in tail] + [tail[-1].layer.out_features]
    floats += b * widths[0] * (1 + n)            # X_0: rows read, whole matrix to each device
    for out in widths[1:-1]:
        floats += b * out * (1 + n)              # Y_l: columns read, whole matrix to each
    floats += 4 * b * widths[-1]                 # logits read, rows back; dZ read, columns out
    for width in widths[1:-1]:
        floats += b * width * (n + 1)            # partial dX read from each, columns out
    if _head_needs_grad(model, tail):
        floats += b * widths[0] * (n + 1)        # partial dX_0 from each, rows back
    return 4 * floats


def _head_needs_grad(model, tail):
    return any(node.layer.param_shapes() for node in model.nodes[1:tail[0].index])
