"""Build generated kernels, once: an in-memory cache and an on-disk cache of program binaries.

Disk key = sha256(device fingerprint (driver version included) | build options | rendered
source). The rendered source is a function of the template's content and the parameters, so the
key changes whenever either does, and a driver update rebuilds everything.

File layout, <cache dir>/programs/<key>.bin:  b"HETCLBIN1" | sha256(payload) (32 bytes) | payload
(the driver's binary). A file that is short, has another magic, fails its checksum or that the
driver refuses is deleted and rebuilt from source: the cache is never fatal. Files are written to
a temporary name and renamed, so a crash leaves either nothing or a whole file. A cache dir that
cannot be written (no permission, read-only, full, not a directory) is said once per process and
dir; the programs then live in this process's memory only.
"""
import contextlib
import errno
import hashlib
import json
import os
import sys
import tempfile
import warnings

import pyopencl as cl

from .. import settings
from ..atomic import write_atomically
from ..errors import BuildError
from ..log import debug, debug_level
from .render import render

MAGIC = b"HETCLBIN1"
stats = {"compiled": 0, "disk_hits": 0, "memory_hits": 0, "rebuilt_corrupt": 0}
_programs = {}
_unwritable = set()  # the dirs whose write failure was said already (once per process each)


def cache_dir():
    """User cache dir for kernel binaries and the tuning DB (HETCL_CACHE_DIR overrides)."""
    return settings.cache_dir()


def _disk_path(key):
    return os.path.join(cache_dir(), "programs", key + ".bin")


def _read_binary(path):
    try:
        with open(path, "rb") as f:
            blob = f.read()
    except FileNotFoundError:
        return None
    except OSError as e:
        debug("kernel cache: cannot read %s (%s), rebuilding", path, e)
        return None
    head = len(MAGIC) + 32
    payload = blob[head:]
    if (len(blob) <= head or not blob.startswith(MAGIC)
            or hashlib.sha256(payload).digest() != blob[len(MAGIC):head]):
        debug("kernel cache: %s is corrupt, rebuilding", path)
        stats["rebuilt_corrupt"] += 1
        _remove(path)
        return None
    return payload


def _write_binary(path, payload):
    _write_atomic(path, MAGIC + hashlib.sha256(payload).digest() + payload)


def write_json(path, data):
    """Write `data` as JSON to `path` atomically (a temporary file renamed over it): an
    interrupted writer leaves the previous complete file. -> whether it was written; where it
    could not be, a warning says so (once per dir), never an exception."""
    return _write_atomic(path, json.dumps(data, indent=1, sort_keys=True).encode())


def _write_atomic(path, blob):
    """Write `blob` to a temporary file beside `path` and rename it over `path`. An OSError
    leaves no temporary file behind, is warned about once and makes this return False: an
    unwritable cache costs rebuilds, never the run."""
    try:
        os.makedirs(os.path.dirname(path), exist_ok=True)
        write_atomically(path, lambda f: f.write(blob))
    except OSError as e:
        _warn_unwritable(path, e)
        return False
    return True


def _warn_unwritable(path, error):
    """Say, once per process and dir, that nothing can be saved there: otherwise each run
    compiles every kernel again (tens of seconds) with no hint why."""
    debug("kernel cache: cannot write %s (%s)", path, error)
    root = cache_dir()
    if _inside(path, root):
        where = root
        message = (f"hetcl cache {root} cannot be written ({_describe(error)}): nothing is saved, "
                   f"so kernels are compiled again in every run - set HETCL_CACHE_DIR to a "
                   f"writable directory")
    else:  # a path the caller chose (e.g. a tuning DB elsewhere)
        where = os.path.dirname(path)
        message = (f"hetcl cannot write {path} ({_describe(error)}); it is not saved - choose "
                   f"a path in a writable directory")
    if where not in _unwritable:
        _unwritable.add(where)
        warnings.warn(message)


def _inside(path, directory):
    directory = os.path.abspath(directory)
    return os.path.commonpath([directory, os.path.abspath(path)]) == directory


def _describe(error):
    """The OS error without the path (the warning names the dir)."""
    if error.errno is not None and error.strerror:
        return f"{errno.errorcode.get(error.errno, error.errno)}: {error.strerror}"
    return str(error)


def _remove(path):
    try:
        os.remove(path)
    except OSError:
        pass


@contextlib.contextmanager
def quiet_stderr():
    """Inside, what is written to file descriptor 2 is dropped. PoCL's clang prints its
    diagnostics ("1 warning generated.") straight to that descriptor, past Python's
    sys.stderr; the build log keeps them for the debug log. With HETCL_DEBUG set the terminal
    gets them as they come."""
    if debug_level() > 0:
        yield
        return
    sys.stderr.flush()
    saved = os.dup(2)
    with tempfile.TemporaryFile() as sink:
        os.dup2(sink.fileno(), 2)
        try:
            yield
        finally:
            os.dup2(saved, 2)
            os.close(saved)


def _quiet_build(program, device, options):
    """Build, keeping the compiler's warnings out of the user's terminal (HETCL_DEBUG shows
    them)."""
    with warnings.catch_warnings(), quiet_stderr():
        warnings.simplefilter("ignore", cl.CompilerWarning)
        program.build(options=options, devices=[device.cl_device])
    try:
        log = program.get_build_info(device.cl_device, cl.program_build_info.LOG).strip()
    except cl.Error:
        log = ""
    if log:
        debug("build log on %s:\n%s", device, log)
    return program


def _build_from_source(device, source, options, template, params):
    program = cl.Program(device.context, source)
    try:
        _quiet_build(program, device, options)
    except cl.RuntimeError as e:
        try:
            log = program.get_build_info(device.cl_device, cl.program_build_info.LOG)
        except cl.Error:
            log = ""
        raise BuildError(str(device), template, params, log or str(e)) from None
    return program


def _build_from_binary(device, payload, options):
    try:
        program = cl.Program(device.context, [device.cl_device], [payload])
        # pyopencl's Kernel reads the program's `_source`, which a program made from a binary
        # lacks: the attribute lookup then falls through to creating a kernel named "_source"
        # (an OpenCL error, caught, but an API misuse that checkers such as Oclgrind report).
        program._source = None
        return _quiet_build(program, device, options)
    except cl.Error:
        return None


def _binary_for(program, device):
    """The program's binary for `device`. In a context of several devices the spec gives one
    binary per device of the context (empty where not built); PoCL lists only the built one."""
    devices = program.get_info(cl.program_info.DEVICES)
    binaries = [bytes(b) for b in program.get_info(cl.program_info.BINARIES)]
    if len(binaries) == len(devices):
        return binaries[devices.index(device.cl_device)] or None
    built = [b for b in binaries if b]
    return built[0] if len(built) == 1 else None


def _options(options):
    extra = settings.build_options()
    return f"{options} {extra}".strip() if extra else options


def _memory_key(device, params, options, directories, context):
    # In memory a program belongs to one context: two identical GPUs share a fingerprint (and
    # the disk cache) but not programs, so the key names the Device object itself (it keeps
    # its context for life; the key keeps it alive, so no other Device takes its place).
    return (device, device.fingerprint, params.template, params,
            tuple(sorted(context.items())), _options(options), tuple(directories or ()))


def in_memory(device, params, options="", directories=None, **context):
    """The program if this process has built it already, else None."""
    return _programs.get(_memory_key(device, params, options, directories, context))


def program_key(device, params, options="", directories=None, **context):
    """(rendered source, disk key) of a program: the key of its binary and of its verdict."""
    source = render(params.template, params, directories, features=device.features, **context)
    blob = "\0".join((device.fingerprint, _options(options), source))
    return source, hashlib.sha256(blob.encode()).hexdigest()


def build(device, params, options="", directories=None, keyed=None, **context):
    """The built cl.Program of ``params.template`` for ``device``.

    ``context`` holds the shape-specific template options (e.g. trans_a=True); the device's
    feature flags are always passed as ``features``. keyed: program_key's result where the
    caller has it already.
    """
    template = params.template
    mem_key = _memory_key(device, params, options, directories, context)
    program = _programs.get(mem_key)
    if program is not None:
        stats["memory_hits"] += 1
        return program
    source, key = keyed or program_key(device, params, options, directories, **context)
    options = _options(options)
    path = _disk_path(key)
    payload = _read_binary(path)
    program = _build_from_binary(device, payload, options) if payload is not None else None
    if program is not None:
        stats["disk_hits"] += 1
        debug("kernel cache hit: %s %s on %s", template, params, device)
    else:
        if payload is not None:  # the driver refused a well-formed file: stale, rebuild
            stats["rebuilt_corrupt"] += 1
            _remove(path)
        debug("compiling %s %s %s on %s", template, params, context, device)
        program = _build_from_source(device, source, options, template, params)
        stats["compiled"] += 1
        binary = _binary_for(program, device)
        if binary:
            _write_binary(path, binary)
    _programs[mem_key] = program
    return program
