"""Residual blocks built with hetcl.Graph and Add: an identity block and a downsampling block
(a strided 3x3 convolution beside a strided 1x1 shortcut), ReLU after each sum, global average
pooling and a dense head - the structure of He et al.'s CIFAR ResNets without batch norm.
Against PyTorch (CPU, float32) from the same weights: the loss and every gradient, then 10
momentum-SGD steps; and a batch split 13/3 over two uneven devices == one device."""
import numpy as np
import pytest

import hetcl
from conftest import DEVICES
from hetcl.backend.device import Device
from hetcl.layers import Add, Conv2D, Dense, GlobalAvgPool, ReLU

torch = pytest.importorskip("torch")
nn, F = torch.nn, torch.nn.functional
torch.set_num_threads(1)
torch.use_deterministic_algorithms(True)

TOL = 1e-4


def resnet(seed=0):
    g = hetcl.Graph(seed=seed)
    x = g.input((3, 12, 12))
    h = g.add(ReLU(), g.add(Conv2D(3, 8, 3, padding=1), x))
    a = g.add(ReLU(), g.add(Conv2D(8, 8, 3, padding=1), h))            # identity block
    h = g.add(ReLU(), g.add(Add(), g.add(Conv2D(8, 8, 3, padding=1), a), h))
    a = g.add(ReLU(), g.add(Conv2D(8, 16, 3, stride=2, padding=1), h))  # downsampling block
    b = g.add(Conv2D(16, 16, 3, padding=1), a)
    shortcut = g.add(Conv2D(8, 16, 1, stride=2), h)
    h = g.add(ReLU(), g.add(Add(), b, shortcut))
    g.add(Dense(16, 10), g.add(GlobalAvgPool(), h))
    return g.build()


class TorchResNet(nn.Module):
    def __init__(self):
        super().__init__()
        self.convs = nn.ModuleList([nn.Conv2d(3, 8, 3, padding=1), nn.Conv2d(8, 8, 3, padding=1),
                                    nn.Conv2d(8, 8, 3, padding=1),
                                    nn.Conv2d(8, 16, 3, stride=2, padding=1),
                                    nn.Conv2d(16, 16, 3, padding=1), nn.Conv2d(8, 16, 1, stride=2)])
        self.head = nn.Linear(16, 10)

    def forward(self, x):
        c = self.convs
        h = F.relu(c[0](x))
        h = F.relu(c[2](F.relu(c[1](h))) + h)
        h = F.relu(c[4](F.relu(c[3](h))) + c[5](h))
        return self.head(h.mean(dim=(2, 3)))


def rel(a, b):
    a, b = np.asarray(a, np.float64), np.asarray(b, np.float64)
    return np.linalg.norm(a - b) / max(np.linalg.norm(b), 1e-30)


def torch_twin(model):
    ref = TorchResNet()
    ours = model.parameters()
    theirs = list(ref.parameters())
    assert [tuple(p.shape) for p in theirs] == [v.shape for v in ours.values()]
    with torch.no_grad():
        for p, v in zip(theirs, ours.values()):
            p.copy_(torch.tensor(v))
    return ref


def batch(n, seed):
    rng = np.random.default_rng(seed)
    return rng.random((n, 3, 12, 12), dtype=np.float32), rng.integers(0, 10, n)


def test_residual_gradients_match_torch(device):
    model = resnet()
    ref = torch_twin(model)
    x, y = batch(7, 1)
    loss, grads = hetcl.Runtime([device]).gradients(model, x, y)
    ref_loss = F.cross_entropy(ref(torch.tensor(x)), torch.tensor(y, dtype=torch.long))
    ref_loss.backward()
    assert abs(loss - ref_loss.item()) < TOL * ref_loss.item()
    for (name, g), p in zip(grads.items(), ref.parameters()):
        assert rel(g, p.grad.numpy()) < TOL, name


def test_residual_sgd_matches_torch(device):
    model = resnet(seed=2)
    ref = torch_twin(model)
    rt, opt = hetcl.Runtime([device]), hetcl.optim.SGD(lr=0.1, momentum=0.9)
    ref_opt = torch.optim.SGD(ref.parameters(), lr=0.1, momentum=0.9)
    for step in range(10):
        x, y = batch(16, 10 + step)
        loss = rt.train_step(model, opt, x, y)
        ref_opt.zero_grad()
        ref_loss = F.cross_entropy(ref(torch.tensor(x)), torch.tensor(y, dtype=torch.long))
        ref_loss.backward()
        ref_opt.step()
        assert abs(loss - ref_loss.item()) < TOL * ref_loss.item(), step
    for (name, v), p in zip(model.parameters().items(), ref.parameters()):
        assert rel(v, p.detach().numpy()) < TOL, name


@pytest.mark.skipif(len(DEVICES) < 2, reason="needs two devices (POCL_DEVICES='pthread basic')")
def test_residual_two_uneven_devices_equal_one():
    x, y = batch(16, 3)
    fresh = [Device(d.cl_device, dict(d.profile)) for d in DEVICES[:2]]
    loss1, g1 = hetcl.Runtime(fresh[:1]).gradients(resnet(), x, y)
    loss2, g2 = hetcl.Runtime(fresh).gradients(resnet(), x, y, split=[13, 3])
    assert abs(loss1 - loss2) < 1e-5 * loss1
    for name in g1:
        assert rel(g2[name], g1[name]) < 1e-5, name
