"""Every HETCL_* environment setting, read here and nowhere else (each call reads the
environment as it is now, so a caller or a test may change it between calls). A value that
cannot be used is a one-line HetclError naming the variable and what it takes.

HETCL_CACHE_DIR       kernel binaries, verdicts and the tuning DB (default
                      $XDG_CACHE_HOME/hetcl, else ~/.cache/hetcl)
HETCL_BUILD_OPTIONS   extra OpenCL compiler options for every build (e.g. -cl-opt-disable)
HETCL_DEBUG           1: log compiles, cache hits and proofs to stderr; 2: also kernel sources
HETCL_PROVE           0/off/no: build in-process without proving each first build in a child
HETCL_PROVE_TIMEOUT   seconds one proof may take before it counts as hung (default 300)
HETCL_PROVE_FAULT     KIND:TEMPLATE[:PARAMS[:DEVICE]];... faults injected into proofs (tests)
HETCL_FAULT           DEVICE:STEP - that device fails at that training step (tests)
HETCL_PIN_HOST        auto (default) / off / a core: where the feeding thread runs
HETCL_DATA_BUDGET     bytes of a data set's images a device keeps (e.g. 512M, 2G; default: a
                      quarter of its memory, at most one allocation): larger sets stream
HETCL_MPI             0: ignore an MPI launcher
HETCL_MPI_ALLREDUCE   thread (default) / nonblocking: how gradient sums cross ranks
HETCL_MPI_TIMEOUT     seconds a rank waits for the others (default 120)
HETCL_PROVER_REPLY_FD (internal) set by the prover for its child process
"""
import os

from .errors import HetclError

PREFIX = "HETCL_"
PROVER_REPLY_FD = "HETCL_PROVER_REPLY_FD"
OFF = ("0", "off", "no")


def _raw(name, default=""):
    return os.environ.get(name, default)


def _seconds(name, default):
    raw = _raw(name, str(default))
    try:
        value = float(raw or default)
    except ValueError:
        value = 0.0
    if not value > 0:
        raise HetclError(f"{name}={raw!r} is not a positive number of seconds")
    return value


def cache_dir():
    override = _raw("HETCL_CACHE_DIR")
    if override:
        return override
    base = os.environ.get("XDG_CACHE_HOME") or os.path.join(os.path.expanduser("~"), ".cache")
    return os.path.join(base, "hetcl")


def build_options():
    return _raw("HETCL_BUILD_OPTIONS").strip()


def debug_level():
    try:
        return int(_raw("HETCL_DEBUG", "0") or 0)
    except ValueError:
        return 0


def prove():
    return _raw("HETCL_PROVE", "1").strip().lower() not in OFF


def prove_timeout():
    return _seconds("HETCL_PROVE_TIMEOUT", 300)


def prove_faults():
    """[(kind, template, params substring, device index)] of HETCL_PROVE_FAULT."""
    out = []
    for spec in _raw("HETCL_PROVE_FAULT").split(";"):
        kind, template, needle, device = (spec.strip().split(":") + ["", "", ""])[:4]
        if kind:
            out.append((kind, template, needle, device))
    return out


def step_fault():
    """(device index, step) of HETCL_FAULT as strings, or None."""
    spec = _raw("HETCL_FAULT")
    if ":" not in spec:
        return None
    device, step = spec.split(":", 1)
    return device.strip(), step.strip()


def data_budget():
    """HETCL_DATA_BUDGET in bytes, or None where unset (K, M, G: powers of 1024)."""
    raw = _raw("HETCL_DATA_BUDGET").strip()
    if not raw:
        return None
    scale = 1 << (10 * " KMG".index(raw[-1].upper())) if raw[-1].upper() in "KMG" else 1
    try:
        value = int(float(raw.rstrip("kKmMgG")) * scale)
    except ValueError:
        value = -1
    if value < 0:
        raise HetclError(f"HETCL_DATA_BUDGET={raw!r} is not a number of bytes (e.g. 512M, 2G)")
    return value


def pin_host():
    return _raw("HETCL_PIN_HOST", "auto")


def mpi():
    return _raw("HETCL_MPI", "1") != "0"


def mpi_allreduce():
    mode = _raw("HETCL_MPI_ALLREDUCE", "thread")
    if mode not in ("thread", "nonblocking"):
        raise HetclError(f"HETCL_MPI_ALLREDUCE={mode!r}: use thread or nonblocking")
    return mode


def mpi_timeout(default):
    return _seconds("HETCL_MPI_TIMEOUT", default)


def prover_reply_fd():
    return _raw(PROVER_REPLY_FD)


def current():
    """{name: value} of every HETCL_* setting set now (handed to the prover's child)."""
    return {k: v for k, v in os.environ.items() if k.startswith(PREFIX) and k != PROVER_REPLY_FD}


def replace_all(values):
    """Make `values` the only HETCL_* settings of this process (the prover's child)."""
    for key in [k for k in os.environ if k.startswith(PREFIX) and k != PROVER_REPLY_FD]:
        del os.environ[key]
    os.environ.update(values)
