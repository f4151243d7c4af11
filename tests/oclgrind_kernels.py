"""Run by tests/test_oclgrind.py in a subprocess whose only OpenCL platform is Oclgrind, the
OpenCL simulator that checks every memory access: every kernel runs once on small, awkward
shapes (through a model that has every layer, both losses, the optimizer, and GEMM in both
memory paths and all transposes). Prints one line per check; results are also compared with
numpy, so a kernel that is clean but wrong fails too."""
import os
import sys

import pyopencl  # noqa: F401  (imported first: it sets PYOPENCL_HOME, which we then override)

os.environ["PYOPENCL_HOME"] = os.environ["OCL_ICD_VENDORS"] = sys.argv[1]

import numpy as np  # noqa: E402

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import hetcl  # noqa: E402
from hetcl.codegen.gemm import gemm  # noqa: E402
from hetcl.codegen.gemm import GemmParams  # noqa: E402
from hetcl.model.layers import Add, Conv2D, Dense, Flatten, MaxPool2D, ReLU, Sigmoid  # noqa: E402
from hetcl.model.optim import SGD  # noqa: E402
from test_graph import numpy_run, rel  # noqa: E402

device = hetcl.backend.device.list_devices()[0]
assert "Oclgrind" in device.profile["platform"], device.profile["platform"]
rng = np.random.default_rng(0)

for params in (GemmParams(MWG=16, NWG=16, KWG=8, MDIMC=4, NDIMC=4, VWN=2, USE_LOCAL=1),
               GemmParams(MWG=8, NWG=16, KWG=4, MDIMC=2, NDIMC=4, VWN=4, USE_LOCAL=0)):
    for ta in (False, True):
        for tb in (False, True):
            a = rng.standard_normal((9, 7) if ta else (7, 9)).astype(np.float32)
            b = rng.standard_normal((19, 9) if tb else (9, 19)).astype(np.float32)
            out = gemm(device, a, b, ta, tb, params=params)
            want = (a.T if ta else a) @ (b.T if tb else b)
            assert rel(out, want) < 1e-5
            print("gemm", params.USE_LOCAL, ta, tb, "ok", flush=True)

for loss in ("softmax_ce", "sigmoid_bce"):
    # (2,9,7) -conv3x3/p1-> (3,9,7) -pool3/2-> (3,4,3) -conv3x2/s2/p2-> (4,3,3) -> 36
    g = hetcl.Graph(loss=loss, seed=1)
    x = g.input((2, 9, 7))
    h = g.add(MaxPool2D(3, 2), g.add(ReLU(), g.add(Conv2D(2, 3, 3, padding=1), x)))
    h = g.add(Flatten(), g.add(Sigmoid(), g.add(Conv2D(3, 4, (3, 2), stride=2, padding=2), h)))
    h = g.add(ReLU(), g.add(Dense(36, 6), h))
    a = g.add(ReLU(), g.add(Dense(6, 6), h))
    b = g.add(Dense(6, 6), h)
    g.add(Dense(6, 5), g.add(ReLU(), g.add(Add(), a, b)))  # this ReLU cannot fuse: own kernel
    xs = rng.standard_normal((3, 2, 9, 7)).astype(np.float32)
    ys = rng.integers(0, 5, 3).astype(np.int32)
    rt = hetcl.Runtime(device)
    value, grads = rt.gradients(g, xs, ys)
    ref_loss, ref_grads = numpy_run(g, g.parameters(), xs, ys)
    assert abs(value - ref_loss) / ref_loss < 1e-5
    assert all(rel(grads[k], ref_grads[k]) < 1e-4 for k in grads)
    rt.train_step(g, SGD(lr=0.1, momentum=0.9, nesterov=True, weight_decay=0.01), xs, ys)
    assert rt.forward(g, xs).shape == (3, 5)
    print("model", loss, "ok", flush=True)
# A conv's input gradient as a convolution of dz with flipped weights (codegen/conv_dx.py: the
# wflip kernel, im2col reading dz's [F, N*S] planes, the NCHW-storing GEMM), forced on:
# (3,6,5) -conv(3x2, p1)-> (2,6,6) -> 72 -> 4. The first conv needs no dx: a second one does.
from hetcl.codegen.conv_dx import ConvDxParams  # noqa: E402
ConvDxParams.defaults = classmethod(lambda cls, features: cls(1))
g = hetcl.Graph(seed=2)
x = g.input((3, 6, 5))
h = g.add(ReLU(), g.add(Conv2D(3, 3, 3, padding=1), x))
h = g.add(Flatten(), g.add(ReLU(), g.add(Conv2D(3, 2, (3, 2), padding=1), h)))
g.add(Dense(72, 4), h)
xs = rng.standard_normal((2, 3, 6, 5)).astype(np.float32)
ys = rng.integers(0, 4, 2).astype(np.int32)
value, grads = hetcl.Runtime(device).gradients(g, xs, ys)
ref_loss, ref_grads = numpy_run(g, g.parameters(), xs, ys)
assert abs(value - ref_loss) / ref_loss < 1e-5
assert all(rel(grads[k], ref_grads[k]) < 1e-4 for k in grads)
print("conv dx by convolution ok", flush=True)
print("all kernels ran under Oclgrind")
