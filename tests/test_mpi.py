"""Training over MPI ranks (hetcl/parallel/mpi.py), run with `mpiexec -n 2` on this machine (loopback):
the same parameters as one process, resume, and a rank that dies or hangs stops the job."""
import json
import os
import shutil
import subprocess
import sys

import numpy as np
import pytest

from conftest import subprocess_env
from hetcl.errors import HetclError
from hetcl.parallel.mpi import World
from test_train import small_data  # noqa: F401  (fixture)

MPIEXEC = shutil.which("mpiexec", path=os.path.dirname(sys.executable) + os.pathsep +
                       os.environ.get("PATH", ""))
try:
    import mpi4py  # noqa: F401
    HAVE_MPI4PY = True
except ImportError:
    HAVE_MPI4PY = False
needs_mpi = pytest.mark.skipif(not (MPIEXEC and HAVE_MPI4PY),
                               reason="needs mpi4py and mpiexec (pip install 'hetcl[mpi]')")

# 20 SGD steps of a model (LeNet-5 on 28x28 images, a global batch of 63: ranks get 32 and 31
# samples; resnet20 with sigmoids on 12x12 images, batch 15, its batch norm statistics summed
# over the ranks); every rank writes its parameters. Without mpiexec it is the one-process reference.
STEPS = r"""
import sys, numpy as np, hetcl
from hetcl.parallel import mpi
from hetcl.layers import ReLU, Sigmoid
from hetcl.model.models import MODELS
from hetcl.model.optim import SGD
world = mpi.detect()
mode, devices, name = sys.argv[2], sys.argv[3], sys.argv[4]
size, n = (28, 63) if name == "lenet5" else (12, 15)
rt = hetcl.Runtime(devices, world=world)
graph = MODELS[name]((1, size, size), 10, 1)
for node in graph.nodes[1:]:  # resnet20's smooth twin: tests/test_batchnorm.py says why
    if isinstance(node.layer, ReLU) and name == "resnet20":
        node.layer = Sigmoid()
model, opt = graph.build(), SGD(0.01, 0.9)
rng = np.random.default_rng(0)
for step in range(20):
    x = rng.standard_normal((n, 1, size, size)).astype(np.float32)
    y = rng.integers(0, 10, n).astype(np.int32)
    if mode == "hang" and world.rank == 1 and step == 3:
        import time; time.sleep(600)
    if mode == "die" and world.rank == 1 and step == 3:
        import os, signal; os.kill(os.getpid(), signal.SIGKILL)
    loss = rt.train_step(model, opt, x, y)
rank = world.rank if world else 0
np.savez(f"{sys.argv[1]}-{rank}.npz", loss=loss, **model.parameters())
"""


def env(**extra):
    # One single-threaded PoCL device per rank: two ranks share this machine's cores.
    return subprocess_env(POCL_DEVICES="basic", **extra)


def run_steps(tmp_path, mode, ranks=None, timeout=300, devices="0", model="lenet5", **extra):
    script = tmp_path / "steps.py"
    script.write_text(STEPS)
    out = str(tmp_path / ("mpi" if ranks else "one"))
    cmd = ([MPIEXEC, "-n", str(ranks)] if ranks else []) + [sys.executable, str(script), out,
                                                              mode, devices, model]
    proc = subprocess.run(cmd, capture_output=True, text=True, env=dict(env(), **extra),
                          timeout=timeout)
    return proc, out


def rel(a, b):
    return float(np.linalg.norm(a - b) / max(np.linalg.norm(b), 1e-30))


@needs_mpi
@pytest.mark.parametrize("model", ["lenet5", "resnet20"])
def test_two_ranks_give_the_one_process_parameters(tmp_path, model):
    """resnet20: batch norm's statistics (and running statistics) are the whole batch's."""
    one, one_out = run_steps(tmp_path, "ok", model=model)
    assert one.returncode == 0, one.stderr
    two, two_out = run_steps(tmp_path, "ok", ranks=2, model=model)
    assert two.returncode == 0, two.stderr
    ref = np.load(one_out + "-0.npz")
    ranks = [np.load(f"{two_out}-{r}.npz") for r in range(2)]
    for k in ref.files:
        assert rel(ranks[0][k], ref[k]) < 1e-5, k
        assert np.array_equal(ranks[0][k], ranks[1][k]), k  # the replicas stay identical


@needs_mpi
def test_two_ranks_with_two_devices_each_give_the_one_process_parameters(tmp_path):
    """Each rank splits its slice across its own two PoCL devices (host sum of the two, then
    the rank sum)."""
    one, one_out = run_steps(tmp_path, "ok")
    assert one.returncode == 0, one.stderr
    two, two_out = run_steps(tmp_path, "ok", ranks=2, devices="all",
                             POCL_DEVICES="basic basic")
    assert two.returncode == 0, two.stderr
    ref, got = np.load(one_out + "-0.npz"), np.load(two_out + "-0.npz")
    for k in ref.files:
        assert rel(got[k], ref[k]) < 1e-5, k


@needs_mpi
def test_a_rank_that_dies_stops_the_others(tmp_path):
    proc, _ = run_steps(tmp_path, "die", ranks=2, timeout=120)
    assert proc.returncode != 0
    said = (proc.stdout + proc.stderr).lower()  # the launcher's words (MPICH, Open MPI) or ours
    assert "killed" in said or "waited" in said, said


@needs_mpi
def test_a_rank_that_hangs_stops_the_others_after_the_timeout(tmp_path):
    proc, _ = run_steps(tmp_path, "hang", ranks=2, timeout=120, HETCL_MPI_TIMEOUT="3")
    assert proc.returncode != 0
    assert "rank 0 waited 3 s for the other ranks" in proc.stderr, proc.stderr


def train(args, ranks, tmp_path):
    cmd = [MPIEXEC, "-n", str(ranks), sys.executable, "-m", "hetcl", "train"] + args
    return subprocess.run(cmd, capture_output=True, text=True, timeout=600,
                          env=env(HETCL_CACHE_DIR=str(tmp_path / "kcache")))


def weights(ckpt):
    meta = json.load(open(os.path.join(ckpt, "meta.json")))
    return np.load(os.path.join(ckpt, meta["files"]["weights"])), meta


@needs_mpi
@pytest.mark.parametrize("optimizer", [["--lr", "0.05"],  # SGD: momentum broadcast on resume
                                       ["--optimizer", "adamw", "--lr", "0.001",
                                        "--max-grad-norm", "1.0"]])  # both Adam buffers
def test_resume_under_mpi_equals_the_uninterrupted_run(small_data, tmp_path,  # noqa: F811
                                                        optimizer):
    common = ["--data", small_data, "--batch-size", "128", "--lr-schedule", "constant",
              "--warmup-epochs", "0", "--devices", "0"] + optimizer
    full, part = str(tmp_path / "full"), str(tmp_path / "part")
    done = train(common + ["--epochs", "2", "--checkpoint", full], 2, tmp_path)
    assert done.returncode == 0, done.stderr
    assert done.stderr.count("training lenet5") == 1  # rank 0 alone prints
    assert "as rank 0 of 2 MPI ranks" in done.stderr
    first = train(common + ["--epochs", "1", "--checkpoint", part], 2, tmp_path)
    assert first.returncode == 0, first.stderr
    resumed = train(common + ["--epochs", "2", "--checkpoint", part, "--resume",
                             "--override"], 2, tmp_path)
    assert resumed.returncode == 0, resumed.stderr
    (a, meta_a), (b, meta_b) = weights(full), weights(part)
    assert meta_a["epoch"] == meta_b["epoch"] == 2
    assert max(np.abs(a[k] - b[k]).max() for k in a.files) <= 1e-6


@needs_mpi
def test_a_user_error_on_rank_0_ends_every_rank(small_data, tmp_path):  # noqa: F811
    """Only rank 0 reads the checkpoint; its one-line error must not leave rank 1 waiting."""
    proc = train(["--data", small_data, "--resume", "--checkpoint", str(tmp_path / "none"),
                  "--devices", "0"], 2, tmp_path)
    assert proc.returncode != 0
    assert "hetcl: error:" in proc.stderr and "Traceback" not in proc.stderr




@pytest.mark.parametrize("n,size,expect", [(63, 2, [(0, 32), (32, 63)]),
                                           (10, 3, [(0, 4), (4, 7), (7, 10)]),
                                           (4, 4, [(0, 1), (1, 2), (2, 3), (3, 4)])])
def test_each_rank_gets_a_disjoint_slice(n, size, expect):
    slices = []
    for rank in range(size):
        w = World.__new__(World)
        w.rank, w.size = rank, size
        slices.append(w.shard(n))
    assert slices == expect


def test_a_batch_smaller_than_the_ranks_is_a_clear_error():
    w = World.__new__(World)
    w.rank, w.size = 0, 4
    with pytest.raises(HetclError, match="batch of 3 cannot give each of the 4 MPI ranks"):
        w.shard(3)
