"""Prove a kernel variant before this process builds it: no compiler crash kills a run.

OpenCL compilers crash (LLVM aborts, segfaults), hang or miscompile on some kernels; inside the
user's process that would end the run. So the first build of every program on a device (per
driver: the device fingerprint includes its version) happens in a child process, the prover
(prover.py), which builds it, writes the binary to the kernel cache, launches it on a tiny
input and compares the result with numpy where the kernel family has a probe. The parent then
loads the binary from the cache (no second compile) or, where the child died, hung, failed
to build or computed wrong, gets VariantBroken and the launcher tries the next variant
(launch.build_variant). Verdicts are kept on disk (verdicts.py): a later run proves nothing.

Protocol: one child for the whole process, started at the first proof and kept; requests and
replies are JSON lines on its stdin and a private pipe (the child's stdout and stderr go to a
file, so kernel printf and compiler chatter never reach the terminal, and the last lines of it
explain a crash). A child that dies is replaced at the next proof.

Settings: HETCL_PROVE=0 builds in-process without proving (a driver the user trusts);
HETCL_PROVE_TIMEOUT (seconds, default 300) is how long one proof may take before it counts
as hung; HETCL_PROVE_FAULT injects faults into the child, for tests (prover.py).
"""
import atexit
import json
import os
import select
import signal
import subprocess
import sys
import tempfile
import time

from .. import settings
from ..errors import VariantBroken
from ..log import debug, debug_level
from . import cache, verdicts

stats = {"proved": 0, "broken": 0}
_child = None  # the running _Prover


def enabled():
    return settings.prove()


def _signal_name(code):
    try:
        return signal.Signals(-code).name
    except ValueError:
        return f"signal {-code}"


class _Prover:
    """The child process and its two pipes."""

    def __init__(self):
        # Append mode: the child writes at the end whatever offset this process reads from
        # (the two share the file's offset otherwise).
        self.log = tempfile.TemporaryFile(mode="a+b")
        self.echoed = 0  # bytes of the log already shown (_echo)
        self.asked = 0  # size of the log when the request in flight was sent
        read_fd, write_fd = os.pipe()
        env = dict(os.environ, **{settings.PROVER_REPLY_FD: str(write_fd)})
        self.proc = subprocess.Popen(
            [sys.executable, "-c", "from hetcl.codegen.prover import main; main()"],
            stdin=subprocess.PIPE,
            stdout=self.log, stderr=self.log, env=env, pass_fds=(write_fd,))
        os.close(write_fd)
        self.replies = os.fdopen(read_fd, "rb")

    def ask(self, request, timeout):
        """The child's reply (a dict), or None with the reason it gave none."""
        self.asked = os.fstat(self.log.fileno()).st_size
        try:
            self.proc.stdin.write((json.dumps(request) + "\n").encode())
            self.proc.stdin.flush()
        except OSError:
            return None, self._death()
        deadline = time.monotonic() + timeout
        while True:
            left = deadline - time.monotonic()
            ready, _, _ = select.select([self.replies], [], [], max(left, 0))
            if ready:
                line = self.replies.readline()
                self._echo()
                if line:
                    return json.loads(line), None
                return None, self._death()
            if left <= 0:
                self.close()
                return None, f"hung: no result in {timeout:g} s"

    def _echo(self):
        """With HETCL_DEBUG, what the child printed (its compiles, the compilers' logs)."""
        if debug_level() > 0:
            self.log.seek(self.echoed)
            sys.stderr.write(self.log.read().decode(errors="replace"))
            sys.stderr.flush()
            self.echoed = self.log.tell()

    def _death(self):
        code = self.proc.wait()
        self.log.seek(self.asked)  # what it printed while working on this request
        tail = [line.strip() for line in self.log.read().decode(errors="replace").splitlines()
                if line.strip()][-2:]
        how = f"crashed ({_signal_name(code)})" if code < 0 else f"exited with status {code}"
        return f"the compiler {how}" + (f": {' / '.join(tail)}" if tail else "")

    def close(self):
        if self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait()
        self.replies.close()
        self.log.close()


def _shutdown():
    global _child
    if _child is not None:
        _child.close()
        _child = None


atexit.register(_shutdown)


def _request(device, params, options, directories, context):
    # hetcl's settings as they are now (the child lives on while a caller changes them)
    return {"fingerprint": device.fingerprint, "features": device.features,
            "env": settings.current(),
            "module": type(params).__module__,
            "cls": type(params).__qualname__, "params": params.as_dict(), "options": options,
            "directories": list(directories or ()), "context": context}


def _run_child(request):
    """The child's verdict on one request: {"ok": .., "reason": ..}, or None where the child
    could not work on this device (then the parent builds in-process, unproven)."""
    global _child
    if _child is None or _child.proc.poll() is not None:
        _shutdown()
        _child = _Prover()
    reply, death = _child.ask(request, settings.prove_timeout())
    if reply is None:
        _shutdown()
        return {"ok": False, "reason": death}
    if "unavailable" in reply:
        debug("prover: %s; building in this process", reply["unavailable"])
        return None
    return {"ok": bool(reply["ok"]), "reason": reply.get("reason", "")}


def build(device, params, options="", directories=None, **context):
    """cache.build, with the program proven first (once per device and driver). Raises
    VariantBroken where it is proven not to work."""
    program = cache.in_memory(device, params, options, directories, **context)
    if program is not None:
        return program
    keyed = None  # (source, key) once rendered, so that cache.build does not render again
    if enabled() and not settings.prover_reply_fd():  # (the child builds plainly)
        keyed = cache.program_key(device, params, options, directories, **context)
        key = keyed[1]
        verdict = verdicts.lookup(device, key)
        if verdict is None:
            started = time.perf_counter()
            verdict = _run_child(_request(device, params, options, directories, context))
            debug("proved %s %s on %s in %.2f s: %s", params.template, params, device,
                  time.perf_counter() - started, verdict)
            if verdict is not None:
                stats["proved"] += 1
                verdicts.record(device, key, dict(verdict, template=params.template,
                                                  params=str(params)))
        if verdict is not None and not verdict["ok"]:
            stats["broken"] += 1
            raise VariantBroken(str(device), params.template, params, verdict["reason"])
    return cache.build(device, params, options, directories, keyed=keyed, **context)
