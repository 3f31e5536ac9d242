"""A dependency-free progress bar: throughput and ETA on a terminal, and epoch lines (the
loop writes at most one a second: fastvae.training.loop.LINE_EVERY_S).

On a terminal the bar redraws in place at most ten times a second; elsewhere (a log file,
CI) only the summary lines are written, so logs stay readable.
"""
from __future__ import annotations

import time


class Progress:
    """``start(label, total, batch)``, ``update(i)``, ``finish(line)``, ``note(msg)``."""

    def __init__(self, stream, enabled=True, width=24):
        self.stream = stream
        self.enabled = enabled
        isatty = getattr(stream, "isatty", None)
        self.live = enabled and bool(isatty and isatty())
        self.width = width
        self._drawn = False

    def start(self, label, total, batch, done=0):
        self.label, self.total, self.batch = label, total, batch
        self._t0 = self._last = time.perf_counter()
        self._done0 = done

    def update(self, i, extra=""):
        """Redraw at step i; ``extra`` is a string or a callable that returns one, called
        only when the bar is actually redrawn (it may be costly to compute)."""
        if not self.live:
            return
        now = time.perf_counter()
        if now - self._last < 0.1 and i < self.total:
            return
        self._last = now
        dt = now - self._t0
        rate = (i - self._done0) / dt if dt > 0 else 0.0
        eta = (self.total - i) / rate if rate > 0 else 0.0
        fill = int(self.width * i / max(1, self.total))
        bar = "#" * fill + "." * (self.width - fill)
        if callable(extra):
            extra = extra()
        self._write(f"\r{self.label} [{bar}] {i}/{self.total}  "
                    f"{rate * self.batch:,.0f} samples/s  ETA {_clock(eta)}  {extra}\x1b[K")
        self._drawn = True

    def finish(self, line):
        if self.enabled:
            self._write(("\r\x1b[K" if self._drawn else "") + line + "\n")
            self._drawn = False

    def note(self, msg):
        if self.enabled:
            self._write(("\n" if self._drawn else "") + msg + "\n")
            self._drawn = False

    def _write(self, s):
        self.stream.write(s)
        self.stream.flush()


def _clock(seconds):
    seconds = int(round(seconds))
    h, rem = divmod(seconds, 3600)
    m, s = divmod(rem, 60)
    return f"{h}:{m:02d}:{s:02d}" if h else f"{m}:{s:02d}"
