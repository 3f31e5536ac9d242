"""The model's noise streams: counter-based standard normal draws, one counter value per draw.

eps of (draw t, row b, sample l, dimension d) is element t * 2^34 + l*Z + d of the
Philox4x32-10 stream of counter ``row0 + b``, keyed by the stream's key
(:func:`fastvae.backends.reference.normal_eps`, the same function on every backend).  A
row's noise therefore depends only on (key, t, its place in the global batch): not on the
backend, the batch split (MPI ranks, chunks) or anything drawn before it.

A :class:`Noise` owns its position.  Training advances it one draw per step and gives a
step's draw back when the step does not happen (:meth:`mark` / :meth:`give_back`), so that
a failed or interrupted step leaves the run exactly where it was.
"""
from __future__ import annotations

#: the draws of one counter value are elements [t * 2^34, (t + 1) * 2^34) of a row's stream
DRAW_SHIFT = 34


class Noise:
    """A counter-based normal stream: ``key`` (two uint32 words) and ``counter``, the number
    of draws taken so far."""

    __slots__ = ("key", "counter")

    def __init__(self, key, counter=0):
        self.key = tuple(int(k) for k in key)
        self.counter = int(counter)

    def draw(self, kernels, eps, row0=0):
        """Fill ``eps`` (L, B, Z) with the next draw on the backend ``kernels`` (rows
        ``row0 .. row0 + B`` of the global batch), and move on by one draw."""
        kernels.normal_eps(eps, self.key, row0, self.counter << DRAW_SHIFT)
        self.counter += 1

    def skip(self):
        """Move on by one draw without drawing (a rank with no rows in a step still takes
        the step's draw, so every rank's position stays the same)."""
        self.counter += 1

    def mark(self):
        """The position now, for :meth:`give_back`."""
        return self.counter

    def give_back(self, mark):
        """Return to a position from :meth:`mark`: the draws since were never taken."""
        self.counter = int(mark)

    def __repr__(self):
        return f"Noise(key={self.key}, counter={self.counter})"
