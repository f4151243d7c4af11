"""hetcl against PyTorch (CPU, float32) on every device: each layer's forward and backward, both
losses, and 20 SGD-with-momentum steps of LeNet-5 from the same weights on the same batches.

tests/reference.py is our own reading of the maths; torch is an independent one, so a
convention both could get wrong the same way (weight layout, padding side, flatten order, loss
reduction, momentum formula) is caught here. Skipped where torch is not installed.
"""
import numpy as np
import pytest

torch = pytest.importorskip("torch")
nn, F = torch.nn, torch.nn.functional

import hetcl  # noqa: E402
from hetcl.backend.buffers import empty, to_device  # noqa: E402
from hetcl.model.layers import Conv2D, Dense, Flatten, MaxPool2D, ReLU, Sigmoid  # noqa: E402

TOL = 1e-4
# One thread and deterministic kernels: torch's float32 sums then come in a fixed order, so a
# failure reproduces and the 20-step comparison does not drift with the thread count.
torch.set_num_threads(1)
torch.use_deterministic_algorithms(True)


def rel(a, b):
    a, b = np.asarray(a, np.float64), np.asarray(b, np.float64)
    assert a.shape == b.shape, (a.shape, b.shape)
    return np.linalg.norm(a - b) / max(np.linalg.norm(b), 1e-30)


def t(a, grad=False):
    return torch.tensor(np.asarray(a, np.float32), requires_grad=grad)


def run_layer(device, layer, x, params, seed=0):
    """hetcl: bind the layer on the device, forward, then backward with a random dy.
    Outputs are poisoned with NaN so a slot a kernel never writes cannot pass.
    -> y, dy, dx, {name: grad}"""
    n = x.shape[0]
    layer.build(x.shape[1:])
    op = layer.bind(device, n)
    dev_x = to_device(device, x.astype(np.float32))
    dev_p = {k: to_device(device, v.astype(np.float32)) for k, v in params.items()}
    y = empty(device, (n,) + layer.output_shape).fill(np.nan)
    op.forward([dev_x], y, dev_p)
    dy = np.random.default_rng(seed).standard_normal((n,) + layer.output_shape).astype(np.float32)
    dx = empty(device, x.shape).fill(np.nan)
    grads = {k: empty(device, v.shape).fill(np.nan) for k, v in params.items()}
    op.backward([dev_x], y, to_device(device, dy), [dx], dev_p, grads)
    return y.get(), dy, dx.get(), {k: v.get() for k, v in grads.items()}


def check_against_torch(device, layer, torch_module, x, params=None):
    """Same input, same weights (hetcl's copied into the torch module), same dy: compare y, dx
    and every parameter gradient."""
    params = params or {}
    with torch.no_grad():
        for name, value in params.items():
            getattr(torch_module, name).copy_(t(value))
    y, dy, dx, g = run_layer(device, layer, x, params)
    tx = t(x, grad=True)
    ty = torch_module(tx)
    ty.backward(t(dy))
    assert rel(y, ty.detach().numpy()) < TOL
    assert rel(dx, tx.grad.numpy()) < TOL
    for name in params:
        assert rel(g[name], getattr(torch_module, name).grad.numpy()) < TOL, name


@pytest.mark.parametrize("n,fin,fout", [(1, 5, 3), (7, 13, 5), (33, 100, 10)])
def test_dense(device, n, fin, fout):
    rng = np.random.default_rng(1)
    layer = Dense(fin, fout)
    params = {"weight": rng.standard_normal((fout, fin)), "bias": rng.standard_normal(fout)}
    check_against_torch(device, layer, nn.Linear(fin, fout), rng.standard_normal((n, fin)),
                        params)


CONVS = [  # n, c, f, kernel, stride, padding   (13x11 images: no dimension a tile multiple)
    (1, 3, 4, (3, 2), 2, 1),
    (7, 5, 3, (3, 2), 2, 2),
    (7, 3, 5, (3, 3), (2, 1), (1, 2)),
]


@pytest.mark.parametrize("n,c,f,k,s,p", CONVS)
def test_conv2d(device, n, c, f, k, s, p):
    rng = np.random.default_rng(2)
    layer = Conv2D(c, f, k, stride=s, padding=p)
    params = {"weight": rng.standard_normal((f, c) + k), "bias": rng.standard_normal(f)}
    check_against_torch(device, layer, nn.Conv2d(c, f, k, stride=s, padding=p),
                        rng.standard_normal((n, c, 13, 11)), params)


@pytest.mark.parametrize("n,c,size,stride", [(1, 3, 2, 2), (7, 5, 2, 2), (7, 5, 3, 2),
                                             (1, 3, 3, 2)])
def test_maxpool(device, n, c, size, stride):
    # Continuous random values: no ties, so the arg-max (and thus dx) is unambiguous.
    x = np.random.default_rng(4).standard_normal((n, c, 13, 11))
    check_against_torch(device, MaxPool2D(size, stride), nn.MaxPool2d(size, stride), x)


@pytest.mark.parametrize("layer,module", [(ReLU(), nn.ReLU()), (Sigmoid(), nn.Sigmoid())])
def test_activation(device, layer, module):
    # Scaled so that sigmoid reaches its flat tails, where 1 - s loses precision.
    x = np.random.default_rng(5).standard_normal((7, 3, 5, 4)) * 4
    check_against_torch(device, layer, module, x)


def torch_loss(kind, logits, labels):
    if kind == "softmax_ce":
        return F.cross_entropy(logits, labels)
    onehot = F.one_hot(labels, logits.shape[1]).to(logits.dtype)
    return F.binary_cross_entropy_with_logits(logits, onehot, reduction="sum") / logits.shape[0]


@pytest.mark.parametrize("kind", ["softmax_ce", "sigmoid_bce"])
@pytest.mark.parametrize("n,classes,scale", [(7, 10, 1.0), (33, 10, 1.0), (5, 3, 30.0)])
def test_loss(device, kind, n, classes, scale):
    """Loss value and the gradients it sends back, through a model whose output is the logits
    (a single Dense, so dW = dlogits^T x carries the loss gradient). scale=30 gives logits in
    the hundreds: an unstabilised exp() overflows there."""
    rng = np.random.default_rng(6)
    model = hetcl.Sequential([Dense(13, classes)], loss=kind, seed=0, input_shape=(13,))
    model.build()
    w = rng.standard_normal((classes, 13)) * scale
    b = rng.standard_normal(classes)
    model.load_parameters({"dense0.weight": w, "dense0.bias": b})
    x = rng.standard_normal((n, 13)).astype(np.float32)
    y = rng.integers(0, classes, n)

    loss, grads = hetcl.Runtime([device]).gradients(model, x, y)

    lin = nn.Linear(13, classes)
    with torch.no_grad():
        lin.weight.copy_(t(w))
        lin.bias.copy_(t(b))
    ref = torch_loss(kind, lin(t(x)), torch.tensor(y, dtype=torch.long))
    ref.backward()
    assert abs(loss - ref.item()) <= TOL * abs(ref.item())
    assert rel(grads["dense0.weight"], lin.weight.grad.numpy()) < TOL
    assert rel(grads["dense0.bias"], lin.bias.grad.numpy()) < TOL


def lenet5():
    return hetcl.Sequential([Conv2D(1, 6, 5, padding=2), ReLU(), MaxPool2D(2), Conv2D(6, 16, 5),
                             ReLU(), MaxPool2D(2), Flatten(), Dense(400, 120), ReLU(),
                             Dense(120, 84), ReLU(), Dense(84, 10)], seed=0, input_shape=(1, 28, 28))


def torch_lenet5():
    return nn.Sequential(nn.Conv2d(1, 6, 5, padding=2), nn.ReLU(), nn.MaxPool2d(2),
                         nn.Conv2d(6, 16, 5), nn.ReLU(), nn.MaxPool2d(2), nn.Flatten(),
                         nn.Linear(400, 120), nn.ReLU(), nn.Linear(120, 84), nn.ReLU(),
                         nn.Linear(84, 10))


def test_lenet5_sgd_matches_torch(device):
    """20 momentum-SGD steps from the same weights on the same batches: the same loss at every
    step and nearly the same weights at the end. This checks the whole chain at once - fusion
    of ReLU into conv/dense, Flatten order, loss reduction, and PyTorch's momentum rule
    (buf = m*buf + g; p -= lr*buf, with buf = g on the first step)."""
    steps, batch, lr, momentum = 20, 32, 0.05, 0.9
    model = lenet5().build()
    ref = torch_lenet5()
    params = model.parameters()
    ref_params = list(ref.parameters())
    assert [p.shape for p in params.values()] == [tuple(p.shape) for p in ref_params]
    with torch.no_grad():
        for p, v in zip(ref_params, params.values()):
            p.copy_(t(v))

    rt = hetcl.Runtime([device])
    opt = hetcl.optim.SGD(lr=lr, momentum=momentum)
    ref_opt = torch.optim.SGD(ref.parameters(), lr=lr, momentum=momentum)
    rng = np.random.default_rng(7)
    losses, ref_losses = [], []
    for _ in range(steps):
        # Image-like inputs in [0, 1): with N(0, 1) inputs this lr makes LeNet-5 diverge, and a
        # chaotic trajectory would amplify float32 rounding past any useful tolerance.
        x = rng.random((batch, 1, 28, 28), dtype=np.float32)
        y = rng.integers(0, 10, batch)
        losses.append(rt.train_step(model, opt, x, y))
        ref_opt.zero_grad()
        ref_loss = F.cross_entropy(ref(t(x)), torch.tensor(y, dtype=torch.long))
        ref_loss.backward()
        ref_opt.step()
        ref_losses.append(ref_loss.item())

    losses, ref_losses = np.array(losses), np.array(ref_losses)
    step_rel = np.abs(losses - ref_losses) / np.abs(ref_losses)
    assert step_rel.max() < TOL, (losses, ref_losses)
    # The weights moved (else equal losses would prove little) and moved the same way.
    final = model.parameters()
    for (name, v), p, p0 in zip(final.items(), ref_params, params.values()):
        assert rel(v, p0) > 1e-3, name
        assert rel(v, p.detach().numpy()) < TOL, name
