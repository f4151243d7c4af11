"""Ctrl-C (SIGINT) while a run trains.

The first press asks the loop to stop after the step in flight, so that what is saved is a
consistent state. A second press stops at once (KeyboardInterrupt wherever the run is), and the
run then knows the state may be half a step: it saves nothing. While a checkpoint is written,
presses are held back until the save has ended (they then ask for a stop), so a save is never
cut in half and a message never claims a save that did not happen.
"""
import contextlib
import signal
import threading


class CtrlC:
    def __init__(self):
        self.requested = False  # a press asked to stop after the step in flight
        self.forced = False  # a second press stopped the run wherever it was
        self._saving = False
        self._previous = None

    def install(self):
        """Take SIGINT over (only the main thread can; elsewhere Ctrl-C stays Python's)."""
        self.requested = self.forced = False
        if threading.current_thread() is threading.main_thread():
            self._previous = signal.signal(signal.SIGINT, self._on_sigint)

    def restore(self):
        if self._previous is not None:
            signal.signal(signal.SIGINT, self._previous)
            self._previous = None

    def _on_sigint(self, signum, frame):
        if self._saving:
            self.requested = True
            return
        if self.requested:
            self.forced = True
            raise KeyboardInterrupt
        self.requested = True

    @contextlib.contextmanager
    def held(self):
        """Presses during the block wait for its end."""
        self._saving = True
        try:
            yield
        finally:
            self._saving = False
