"""Whole graphs on a device: gradients of Sequential and branched Graphs against a float64 numpy
run of the same graph built from tests/reference.py, training, parameters, shape errors."""
import numpy as np
import pytest

import hetcl
import hetcl.backend.device
import reference as ref
from hetcl.errors import ShapeError
from hetcl.model.layers import Add, Conv2D, Dense, Flatten, MaxPool2D, ReLU, Sigmoid
from hetcl.model.optim import SGD


def numpy_run(model, params, x, labels):
    """float64 loss and gradients of the model's graph, from the reference equations."""
    nodes = model.nodes
    outs, caches = {0: x.astype(np.float64)}, {}
    P = {k: v.astype(np.float64) for k, v in params.items()}
    for node in nodes[1:]:
        L, xs = node.layer, [outs[i] for i in node.inputs]
        p = lambda k: P[f"{L.name}.{k}"]
        if isinstance(L, Dense):
            outs[node.index] = ref.dense_fwd(xs[0], p("weight"), p("bias"))
        elif isinstance(L, Conv2D):
            outs[node.index] = ref.conv2d_fwd(xs[0], p("weight"), p("bias"), L.stride, L.padding)
        elif isinstance(L, MaxPool2D):
            outs[node.index], caches[node.index] = ref.maxpool_fwd(xs[0], L.size, L.stride)
        elif isinstance(L, Flatten):
            outs[node.index] = xs[0].reshape(len(x), -1)
        elif isinstance(L, ReLU):
            outs[node.index] = ref.relu_fwd(xs[0])
        elif isinstance(L, Sigmoid):
            outs[node.index] = ref.sigmoid_fwd(xs[0])
        elif isinstance(L, Add):
            outs[node.index] = sum(xs)
    loss_fn = ref.softmax_ce if model.loss == "softmax_ce" else ref.sigmoid_bce
    loss, dlogits = loss_fn(outs[model.output_node], labels, len(x))
    grads, d = {}, {model.output_node: dlogits}
    for node in reversed(nodes[1:]):
        L, dy = node.layer, d.pop(node.index)
        xs = [outs[i] for i in node.inputs]
        if isinstance(L, Dense):
            dxs = [None]
            dxs[0], grads[f"{L.name}.weight"], grads[f"{L.name}.bias"] = ref.dense_bwd(
                xs[0], P[f"{L.name}.weight"], dy)
        elif isinstance(L, Conv2D):
            dxs = [None]
            dxs[0], grads[f"{L.name}.weight"], grads[f"{L.name}.bias"] = ref.conv2d_bwd(
                xs[0], P[f"{L.name}.weight"], dy, L.stride, L.padding)
        elif isinstance(L, MaxPool2D):
            dxs = [ref.maxpool_bwd(xs[0].shape, caches[node.index], dy)]
        elif isinstance(L, Flatten):
            dxs = [dy.reshape(xs[0].shape)]
        elif isinstance(L, ReLU):
            dxs = [ref.relu_bwd(outs[node.index], dy)]
        elif isinstance(L, Sigmoid):
            dxs = [ref.sigmoid_bwd(outs[node.index], dy)]
        elif isinstance(L, Add):
            dxs = [dy] * len(xs)
        for i, dx in zip(node.inputs, dxs):
            d[i] = d.get(i, 0) + dx
    return loss, grads


def rel(a, b):
    return np.linalg.norm(np.asarray(a, np.float64) - b) / max(np.linalg.norm(b), 1e-30)


def small_lenet(seed=0, loss="softmax_ce"):
    return hetcl.Sequential([Conv2D(1, 4, 5, padding=2), ReLU(), MaxPool2D(2),
                             Conv2D(4, 6, 3, stride=2, padding=1), Sigmoid(), Flatten(),
                             Dense(6 * 4 * 4, 12), ReLU(), Dense(12, 10)], loss=loss, seed=seed)


def data(n, shape=(1, 14, 14), classes=10, seed=0):
    rng = np.random.default_rng(seed)
    return (rng.standard_normal((n,) + shape).astype(np.float32),
            rng.integers(0, classes, n).astype(np.int32))


@pytest.mark.parametrize("loss", ["softmax_ce", "sigmoid_bce"])
def test_sequential_gradients_match_numpy(device, loss):
    model = small_lenet(loss=loss)
    x, y = data(7)
    value, grads = hetcl.Runtime(device).gradients(model, x, y)
    ref_loss, ref_grads = numpy_run(model, model.parameters(), x, y)
    assert abs(value - ref_loss) / abs(ref_loss) < 1e-5
    assert list(grads) == list(model.parameters())
    for k in grads:
        assert rel(grads[k], ref_grads[k]) < 1e-4, k


def branched(seed=0):
    """x -> dense0 -> relu -> {dense1 -> relu, dense2} -> add -> dense3: two paths added."""
    g = hetcl.Graph(seed=seed)
    x = g.input((20,))
    h = g.add(ReLU(), g.add(Dense(20, 16), x))
    a = g.add(ReLU(), g.add(Dense(16, 16), h))
    b = g.add(Dense(16, 16), h)
    g.add(Dense(16, 5), g.add(Add(), a, b))
    return g


def test_branched_graph_gradients_and_training(device):
    model = branched()
    x, y = data(9, (20,), classes=5, seed=1)
    rt = hetcl.Runtime(device)
    value, grads = rt.gradients(model, x, y)
    ref_loss, ref_grads = numpy_run(model, model.parameters(), x, y)
    assert abs(value - ref_loss) / ref_loss < 1e-5
    for k in grads:
        assert rel(grads[k], ref_grads[k]) < 1e-4, k
    opt = SGD(lr=0.1, momentum=0.9)
    losses = [rt.train_step(model, opt, x, y) for _ in range(30)]
    assert losses[-1] < 0.2 * losses[0]  # it learns the 9 samples


def test_steps_after_the_first_build_no_kernels(device, monkeypatch):
    """Every kernel of a step is built in the first one; a later step only enqueues (a kernel
    object built per launch costs more host time than a small GPU kernel runs). The branched
    graph has a node with two consumers, whose gradients are added by a separate kernel."""
    import hetcl.codegen.launch as launch
    built = []
    init = launch.Launch.__init__
    monkeypatch.setattr(launch.Launch, "__init__",
                        lambda self, *a, **k: (built.append(a[2]), init(self, *a, **k))[1])
    model, (x, y) = branched(), data(9, (20,), classes=5, seed=1)
    rt, opt = hetcl.Runtime(device), SGD(lr=0.1, momentum=0.9)
    rt.train_step(model, opt, x, y)
    assert "axpby" in built  # (the first step built the gradient sum: the test sees builds)
    del built[:]
    losses = [rt.train_step(model, opt, x, y) for _ in range(3)]
    assert built == [] and losses[-1] < losses[0]


def test_train_step_is_sgd_on_the_reference_gradients(device):
    model = small_lenet(seed=3)
    x, y = data(8, seed=2)
    rt = hetcl.Runtime(device)
    opt = SGD(lr=0.05, momentum=0.9, weight_decay=1e-3, nesterov=True)
    model.build(x.shape[1:])
    p = {k: v.astype(np.float64) for k, v in model.parameters().items()}
    v = {k: np.zeros_like(a) for k, a in p.items()}
    for _ in range(3):
        loss = rt.train_step(model, opt, x, y)
        ref_loss, g = numpy_run(model, p, x, y)
        assert abs(loss - ref_loss) / ref_loss < 1e-4
        for k in p:
            p[k], v[k] = ref.sgd_step(p[k], g[k], v[k], 0.05, 0.9, 1e-3, nesterov=True)
    for k, val in model.parameters().items():
        assert rel(val, p[k]) < 1e-4, k
    assert opt.steps == 3


def test_forward_pads_the_last_batch(device):
    model = small_lenet()
    x, _ = data(11)
    rt = hetcl.Runtime(device)
    out = rt.forward(model, x, batch_size=4)
    assert out.shape == (11, 10)
    full = rt.forward(model, x, batch_size=11)
    assert rel(out, full) < 1e-5


def test_parameters_roundtrip(device):
    model = small_lenet()
    x, y = data(4)
    rt = hetcl.Runtime(device)
    before = model.build(x.shape[1:]).parameters()
    rt.train_step(model, SGD(lr=0.1), x, y)
    after = model.parameters()
    assert any(not np.allclose(before[k], after[k]) for k in before)
    model.load_parameters(before)
    assert rel(rt.forward(model, x), numpy_run_logits(model, before, x)) < 1e-4


def numpy_run_logits(model, params, x):
    out = x.astype(np.float64)
    for node in model.nodes[1:]:
        L = node.layer
        if isinstance(L, Dense):
            out = ref.dense_fwd(out, params[f"{L.name}.weight"], params[f"{L.name}.bias"])
        elif isinstance(L, Conv2D):
            out = ref.conv2d_fwd(out, params[f"{L.name}.weight"], params[f"{L.name}.bias"],
                                 L.stride, L.padding)
        elif isinstance(L, MaxPool2D):
            out = ref.maxpool_fwd(out, L.size, L.stride)[0]
        elif isinstance(L, Flatten):
            out = out.reshape(len(x), -1)
        elif isinstance(L, ReLU):
            out = ref.relu_fwd(out)
        elif isinstance(L, Sigmoid):
            out = ref.sigmoid_fwd(out)
    return out


def test_he_init_and_zero_bias():
    model = hetcl.Sequential([Flatten(), Dense(784, 256), ReLU(), Dense(256, 10)], seed=0)
    model.build((1, 28, 28))
    p = model.parameters()
    assert abs(p["dense0.weight"].std() - np.sqrt(2 / 784)) < 0.01 * np.sqrt(2 / 784) * 5
    assert not p["dense0.bias"].any() and not p["dense1.bias"].any()
    assert p["dense0.weight"].dtype == np.float32


def test_shape_errors_name_layer_and_shapes():
    model = hetcl.Sequential([Flatten(), Dense(400, 120)])
    with pytest.raises(ShapeError, match=r"Dense\(400, 120\) \(layer 'dense0'\): expects input "
                                         r"shape \(400,\), got \(300,\)"):
        model.build((3, 10, 10))
    conv = hetcl.Sequential([Conv2D(1, 6, 5)])
    with pytest.raises(ShapeError, match=r"layer 'conv0'.*output would be empty for input "
                                         r"\(1, 3, 3\)"):
        conv.build((1, 3, 3))
    wrong_channels = hetcl.Sequential([Conv2D(3, 6, 5)])
    with pytest.raises(ShapeError, match=r"expects input shape \(3, H, W\), got \(1, 28, 28\)"):
        wrong_channels.build((1, 28, 28))


def test_two_devices_give_the_one_device_gradients():
    devices = hetcl.backend.device.list_devices()
    if len(devices) < 2:
        pytest.skip("needs two OpenCL devices (POCL_DEVICES='pthread basic')")
    model = small_lenet()
    x, y = data(10)
    one = hetcl.Runtime(devices[:1]).gradients(model, x, y)
    two = hetcl.Runtime(devices[:2]).gradients(model, x, y)
    assert abs(one[0] - two[0]) / one[0] < 1e-5
    for k in one[1]:
        assert rel(two[1][k], one[1][k]) < 1e-5, k


def test_public_api_names_are_the_model_classes():
    """The names DESIGN.md gives users: hetcl.layers, hetcl.optim, hetcl.Runtime/Graph."""
    import hetcl
    from hetcl.layers import Add, Conv2D, Dense, Flatten, MaxPool2D, ReLU, Sigmoid
    from hetcl.model import layers, optim
    from hetcl.parallel.runtime import Runtime
    assert (Add, Conv2D, Dense, Flatten, MaxPool2D, ReLU, Sigmoid) == (
        layers.Add, layers.Conv2D, layers.Dense, layers.Flatten, layers.MaxPool2D, layers.ReLU,
        layers.Sigmoid)
    assert hetcl.optim.SGD is optim.SGD and hetcl.layers.Dense is layers.Dense
    assert hetcl.Runtime is Runtime and hetcl.Sequential is hetcl.model.graph.Sequential
