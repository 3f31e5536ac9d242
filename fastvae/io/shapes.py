"""The built-in dataset: images of one white 2-D shape on black, drawn procedurally."""
from __future__ import annotations

import numpy as np

from .dataset import Dataset

#: the shapes of the built-in dataset, by the value of its ``shape`` factor
SHAPE_NAMES = ("square", "ellipse", "triangle")


def shapes(n=20000, size=28, seed=0):
    """The built-in dataset: n images of one white 2-D shape on black, in the spirit of
    dSprites, drawn procedurally (no download), deterministic by seed.

    Each image has five ground-truth factors, returned in ``Dataset.factors``:
    ``shape`` (0 square, 1 ellipse, 2 triangle; see SHAPE_NAMES), ``scale`` in [0.5, 1],
    ``rotation`` in [0, 2 pi), and the centre ``x``, ``y`` in [0, 1] (0 = left / top of the
    range the shape can occupy).  Edges are anti-aliased, so pixels lie in [0, 1].
    The labels are the shape factor.  size: 28 (default) or any size >= 8, e.g. 64.
    """
    n, size = int(n), int(size)
    if n < 1:
        raise ValueError(f"n must be >= 1, got {n}")
    if size < 8:
        raise ValueError(f"size must be >= 8 pixels, got {size}")
    rng = np.random.default_rng(seed)
    kind = rng.integers(0, 3, n)
    scale = rng.uniform(0.5, 1.0, n)
    rot = rng.uniform(0.0, 2 * np.pi, n)
    fx, fy = rng.uniform(0.0, 1.0, n), rng.uniform(0.0, 1.0, n)
    x = np.empty((n, size * size), dtype=np.float32)
    # pixel centres in [-1, 1]; the shape's extent is at most 0.5 * scale from its centre
    c = (np.arange(size, dtype=np.float32) + 0.5) * (2.0 / size) - 1.0
    py, px = np.meshgrid(c, c, indexing="ij")
    px, py = px.ravel()[None, :], py.ravel()[None, :]
    sdf = (lambda qx, qy: _sdf_box(qx, qy, 0.42),
           lambda qx, qy: _sdf_ellipse(qx, qy, 0.56, 0.30),
           lambda qx, qy: _sdf_triangle(qx, qy, 0.50))
    for k in range(3):  # one shape at a time: each pixel is measured against one outline
        rows = np.flatnonzero(kind == k)
        for s in range(0, rows.size, 2048):
            r = rows[s:s + 2048]
            sc = scale[r, None].astype(np.float32)
            room = 0.92 - 0.6 * sc  # keep the whole shape inside the frame
            cx = (2 * fx[r, None] - 1).astype(np.float32) * room
            cy = (2 * fy[r, None] - 1).astype(np.float32) * room
            cos = np.cos(rot[r, None]).astype(np.float32)
            sin = np.sin(rot[r, None]).astype(np.float32)
            dx, dy = px - cx, py - cy
            inv = 1.0 / sc
            qx, qy = (cos * dx + sin * dy) * inv, (cos * dy - sin * dx) * inv  # shape's frame
            # signed distance in pixels -> coverage: a one-pixel linear ramp across the edge
            d = sdf[k](qx, qy)
            d *= sc * np.float32(size / 2.0)
            x[r] = np.clip(0.5 - d, 0.0, 1.0)
    factors = {"shape": kind, "scale": scale, "rotation": rot, "x": fx, "y": fy}
    return Dataset(x, (size, size), kind, SHAPE_NAMES, factors, f"shapes{size}", 1.0)


def _sdf_box(qx, qy, b):
    ax, ay = np.abs(qx) - b, np.abs(qy) - b
    outside = np.hypot(np.maximum(ax, 0), np.maximum(ay, 0))
    return outside + np.minimum(np.maximum(ax, ay), 0)


def _sdf_ellipse(qx, qy, rx, ry):
    # not an exact distance, but exact on the boundary and close enough for a 1-px ramp
    return (np.hypot(qx * np.float32(1 / rx), qy * np.float32(1 / ry)) - 1) * np.float32(min(rx, ry))


def _sdf_triangle(qx, qy, r):
    """Equilateral triangle with half-side r, centred, pointing up (negative y is up)."""
    k, r = np.float32(np.sqrt(3.0)), np.float32(r)
    x = np.abs(qx) - r
    y = np.float32(r / k) - qy
    fold = x + k * y > 0
    x, y = np.where(fold, (x - k * y) / 2, x), np.where(fold, (-k * x - y) / 2, y)
    x = x - np.clip(x, -2 * r, 0)
    return -np.hypot(x, y) * np.sign(y)
