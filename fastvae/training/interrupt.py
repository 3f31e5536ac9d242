"""Ctrl-C during training: the first press asks the loop to stop between two steps, the second
aborts, except inside a section that must not be cut short (a step's update and its
record), where it waits for the end of the section."""
from __future__ import annotations

import signal
import threading


class SigintGuard:
    """Turns the first Ctrl-C into a flag the loop checks between steps (so a step is never
    cut in half); a second Ctrl-C raises KeyboardInterrupt as usual.  ``out`` (a Progress,
    set when there is one) gets a note; an error writing it is not the handler's to raise."""

    def __init__(self):
        self.hit = False
        self.out = None
        self._old = None
        self.held, self.late = 0, False

    def hold(self):
        """Until the matching :meth:`release` (holds nest), a second Ctrl-C waits."""
        self.held += 1

    def release(self):
        self.held -= 1
        if self.late and not self.held:
            self.late = False
            raise KeyboardInterrupt

    def _handle(self, signum, frame):
        if self.hit:
            if self.held:
                self.late = True
                return
            raise KeyboardInterrupt
        self.hit = True
        try:
            if self.out is not None:
                self.out.note("Ctrl-C: stopping after this step (press again to abort now)")
        except Exception:  # noqa: BLE001  (a closed stream must not raise mid-step)
            pass

    def __enter__(self):
        if threading.current_thread() is threading.main_thread():
            self._old = signal.signal(signal.SIGINT, self._handle)
        return self

    def __exit__(self, *exc):
        if self._old is not None:
            signal.signal(signal.SIGINT, self._old)
        return False
