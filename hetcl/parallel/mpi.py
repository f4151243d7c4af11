"""Data parallelism across processes (ranks) over MPI, through mpi4py. The only module that
imports mpi4py, and only when hetcl was started by mpirun/mpiexec with more than one process.

Every rank holds a replica of the model on its own devices and takes a contiguous, disjoint
slice of every global batch (World.shard: the first n % size ranks get one sample more); its
shards' losses are divided by the *global* batch size like any device's, so the plain sum of
all ranks' gradients is the gradient of the whole batch, uneven slices included. The sum is
one non-blocking Iallreduce per layer, started as soon as the rank's devices have read that
layer back (comm.py), so the network works while earlier layers still compute.

A rank that dies or hangs must not leave the others waiting forever: every wait polls its
request against a deadline (HETCL_MPI_TIMEOUT seconds, default 120) and, past it, prints what
it was waiting for and aborts the whole job (MPI_Abort), so mpirun exits non-zero.
"""
import json
import os
import queue
import sys
import threading
import time

import numpy as np

from .. import settings
from ..errors import HetclError

# Set by the launchers: MPICH/Intel MPI (Hydra PMI), Open MPI, Slurm's srun with PMIx.
_SIZE_VARS = ("PMI_SIZE", "OMPI_COMM_WORLD_SIZE", "PMIX_SIZE", "MPI_LOCALNRANKS")
DEFAULT_TIMEOUT = 120.0


def launched_size():
    """Number of processes the MPI launcher started (1 when not under mpirun)."""
    for var in _SIZE_VARS:
        if os.environ.get(var, "").isdigit():
            return int(os.environ[var])
    return 1


class _Job:
    """A sum handed to the communication thread; Test() like an MPI request's."""

    def __init__(self, array):
        self.array, self.error, self.finished = array, None, threading.Event()

    def Test(self):
        return self.finished.is_set()


class World:
    def __init__(self, comm, timeout=None):
        from mpi4py import MPI
        self._mpi = MPI
        self.comm = comm
        self.rank, self.size = comm.Get_rank(), comm.Get_size()
        # The rank among those on the same node: picks this rank's GPU on a multi-GPU node.
        local = comm.Split_type(MPI.COMM_TYPE_SHARED, key=self.rank)
        self.local_rank, self.local_size = local.Get_rank(), local.Get_size()
        local.Free()
        self.mode = settings.mpi_allreduce()
        self._worker = None
        self._step_comm = None  # sum_in_step's communicator, duplicated on first use
        self.timeout = float(timeout) if timeout is not None else \
            settings.mpi_timeout(DEFAULT_TIMEOUT)

    def pick(self, devices, spec):
        """This rank's devices: with "gpu"/"dgpu" on a node with several GPUs, the one that
        matches the rank's place on the node; any other selection as given."""
        if spec in ("gpu", "dgpu") and len(devices) > 1:
            return [devices[self.local_rank % len(devices)]]
        return devices

    def shard(self, n):
        """(start, stop) of this rank's slice of a global batch of n samples."""
        if n < self.size:
            raise HetclError(f"a batch of {n} cannot give each of the {self.size} MPI ranks a "
                             f"sample; use --batch-size {self.size} or more")
        base, extra = divmod(n, self.size)
        start = self.rank * base + min(self.rank, extra)
        return start, start + base + (self.rank < extra)

    # --- collectives, each waited for against the deadline -----------------------------------
    def start_sum(self, array):
        """Begin summing a float32 array across ranks, in place. -> request for done()/wait().
        HETCL_MPI_ALLREDUCE picks how: "thread" (default) hands it to a communication thread
        that runs blocking Allreduces in order (MPI's tuned algorithms, progressing on their
        own while this thread enqueues kernels); "nonblocking" starts an Iallreduce, which
        progresses only when polled (docs/benchmarks.md has both measured)."""
        if self.mode == "nonblocking":
            return self.comm.Iallreduce(self._mpi.IN_PLACE, array, op=self._mpi.SUM)
        if self._worker is None:
            self._jobs = queue.Queue()
            self._worker = threading.Thread(target=self._serve, name="hetcl-mpi", daemon=True)
            self._worker.start()
        job = _Job(array)
        self._jobs.put(job)
        return job

    def _serve(self):
        while True:
            job = self._jobs.get()
            try:
                self.comm.Allreduce(self._mpi.IN_PLACE, job.array, op=self._mpi.SUM)
            except Exception as e:  # reported by wait() on the main thread
                job.error = e
            job.finished.set()

    def done(self, request):
        return request.Test()

    def wait(self, request, what):
        """Poll until the request completes; past the deadline, abort the whole job."""
        deadline = time.monotonic() + self.timeout
        spins = 0
        while not request.Test():
            spins += 1
            if spins > 1000:
                time.sleep(1e-4)
            if time.monotonic() > deadline:
                self.abort(f"rank {self.rank} waited {self.timeout:.0f} s for the other ranks "
                           f"({what}); one of them died or hangs. Stopping all ranks "
                           f"(set HETCL_MPI_TIMEOUT to wait longer).")
        if getattr(request, "error", None) is not None:
            self.abort(f"rank {self.rank}: MPI failed ({what}): {request.error}")

    def sum(self, values, what="the step's loss"):
        out = np.asarray(values, np.float64).copy()
        self.wait(self.comm.Iallreduce(self._mpi.IN_PLACE, out, op=self._mpi.SUM), what)
        return out

    def sum_in_step(self, values, what):
        """sum() on a communicator of its own, for sums inside a step (batch statistics): the
        communication thread may be running the gradients' Allreduces on self.comm meanwhile,
        and collectives on one communicator must come in the same order on every rank."""
        if self._step_comm is None:
            self._step_comm = self.comm.Dup()
        out = np.asarray(values, np.float64).copy()
        self.wait(self._step_comm.Iallreduce(self._mpi.IN_PLACE, out, op=self._mpi.SUM), what)
        return out

    def broadcast(self, arrays, what):
        """Rank 0's float32 arrays {name: array} into every rank's arrays (in place)."""
        for name in sorted(arrays):
            buf = np.ascontiguousarray(arrays[name], np.float32)
            self.wait(self.comm.Ibcast(buf, root=0), f"{what} {name}")
            arrays[name] = buf
        return arrays

    def broadcast_object(self, obj, what):
        """A small JSON-able object (numbers, strings, lists, dicts) from rank 0."""
        size = np.array([0], np.int64)
        blob = None
        if self.rank == 0:
            blob = np.frombuffer(json.dumps(obj).encode(), np.uint8)
            size[0] = blob.size
        self.wait(self.comm.Ibcast(size, root=0), what)
        if self.rank != 0:
            blob = np.empty(int(size[0]), np.uint8)
        self.wait(self.comm.Ibcast(blob, root=0), what)
        return json.loads(blob.tobytes().decode())

    def abort(self, message):
        print(f"hetcl: {message}", file=sys.stderr, flush=True)
        _flush_then_abort(self.comm)


_world = None  # the World of this process, once detect() found one


def stop_all():
    """After an error on this rank: abort the job, since the other ranks would otherwise
    wait for this one (a rank that merely exits leaves them blocked). No-op without MPI."""
    if _world is not None:
        _flush_then_abort(_world.comm)


def _flush_then_abort(comm):
    # The launcher forwards a rank's output asynchronously and drops what it has not forwarded
    # when the job is aborted: flush, and give it a moment, so the reason is not lost.
    sys.stdout.flush()
    sys.stderr.flush()
    time.sleep(0.5)
    comm.Abort(1)


def _abort_on_exception(previous):
    def hook(kind, value, tb):
        previous(kind, value, tb)
        stop_all()
    return hook


def detect(timeout=None):
    """The MPI world when started by mpirun with several processes, else None. An uncaught
    exception on a rank then aborts the job (as `python -m mpi4py` does)."""
    global _world
    if not settings.mpi() or launched_size() <= 1:
        return None
    try:
        from mpi4py import MPI
    except ImportError:
        raise HetclError(f"started by an MPI launcher with {launched_size()} processes, but "
                         f"mpi4py is not installed: pip install 'hetcl[mpi]' (or run without "
                         f"mpirun, or set HETCL_MPI=0)") from None
    world = World(MPI.COMM_WORLD, timeout)
    if world.size <= 1:
        return None
    if _world is None:
        sys.excepthook = _abort_on_exception(sys.excepthook)
    _world = world
    return world
