"""Datasets: the built-in shapes, IDX (MNIST-style) / .npy / .npz loaders, batching.

Everything here is plain NumPy.  A :class:`Dataset` keeps its pixels in their stored dtype
(uint8 images stay uint8, a ``.npy`` file stays memory-mapped) and converts one batch at a
time, so a dataset larger than memory trains in batches and an 8-bit one costs a quarter of
the float32 memory.  Every loader checks its input before any training starts and raises
:class:`DataError` naming the file and the problem.
"""
from __future__ import annotations

import gzip
import os
import re
import struct

import numpy as np

#: the class names of Fashion-MNIST, by label
FASHION_MNIST_CLASSES = ("T-shirt/top", "Trouser", "Pullover", "Dress", "Coat", "Sandal",
                         "Shirt", "Sneaker", "Bag", "Ankle boot")
#: the shapes of the built-in dataset, by the value of its ``shape`` factor
SHAPE_NAMES = ("square", "ellipse", "triangle")
#: where Debian's ``dataset-fashion-mnist`` package puts the four IDX files
DEBIAN_FASHION_MNIST = "/usr/share/datasets/fashion-mnist"

_CHUNK_ROWS = 8192  # rows per pass when scanning a (possibly memory-mapped) array


class DataError(ValueError):
    """A data file or array that cannot be used, with the reason."""


class Dataset:
    """N datapoints of D values each, with optional labels and ground-truth factors.

    x : (N, D) array, float (used as is) or uint8 (scaled by 1/255 when a batch is read);
        may be a ``np.memmap``.  image_shape : (H, W) when the rows are images, else None.
    labels : (N,) int array or None; label_names : names by label value, or None.
    factors : dict name -> (N,) array of generating factors (the built-in shapes), or None.
    name : a short name for messages and file names.

    ``ds.batch(idx)`` returns rows ``idx`` as float32 in [0, 1] (see :meth:`batch`).
    """

    def __init__(self, x, image_shape=None, labels=None, label_names=None, factors=None,
                 name="data", scale=None):
        x = _as_2d(x, name)
        self.x = x
        self.name = name
        if image_shape is not None and int(np.prod(image_shape)) != x.shape[1]:
            raise DataError(f"{name}: image shape {tuple(image_shape)} does not match "
                            f"{x.shape[1]} values per row")
        self.image_shape = None if image_shape is None else tuple(int(s) for s in image_shape)
        if labels is not None:
            labels = np.asarray(labels)
            if labels.shape != (x.shape[0],):
                raise DataError(f"{name}: {labels.shape[0] if labels.ndim else 0} labels for "
                                f"{x.shape[0]} rows (labels shape {labels.shape})")
        self.labels = labels
        self.label_names = label_names
        self.factors = factors
        self.scale = _default_scale(x, name) if scale is None else float(scale)

    def __len__(self):
        return self.x.shape[0]

    @property
    def dim(self):
        """D, the number of values per datapoint."""
        return self.x.shape[1]

    def __repr__(self):
        shape = "x".join(map(str, self.image_shape)) if self.image_shape else str(self.dim)
        extra = ", labelled" if self.labels is not None else ""
        extra += f", factors {list(self.factors)}" if self.factors else ""
        return f"Dataset({self.name!r}, {len(self)} x {shape}, {self.x.dtype}{extra})"

    def batch(self, idx, out=None, dtype=np.float32):
        """Rows ``idx`` (an int array) as floats, (len(idx), D); written into ``out`` when
        given (no allocation for float data of the same dtype)."""
        idx = np.asarray(idx)
        if out is None:
            out = np.empty((idx.shape[0], self.dim), dtype=dtype)
        if self.x.dtype == out.dtype and self.scale == 1.0:
            np.take(self.x, idx, axis=0, out=out)
        else:
            if isinstance(self.x, np.memmap):  # read the file in order, then put rows back
                order = np.argsort(idx)
                rows = np.empty((idx.size, self.dim), dtype=self.x.dtype)
                rows[order] = self.x[idx[order]]
            else:
                rows = self.x[idx]
            np.multiply(rows, out.dtype.type(self.scale), out=out, casting="unsafe")
        return out

    def to_array(self, dtype=np.float32):
        """The whole dataset as one (N, D) float array in memory."""
        return self.batch(np.arange(len(self)), dtype=dtype)

    def subset(self, idx, name=None):
        """A new Dataset holding rows ``idx`` (copied into memory)."""
        idx = np.asarray(idx)
        pick = lambda a: None if a is None else np.asarray(a)[idx]  # noqa: E731
        factors = None if self.factors is None else {k: pick(v) for k, v in self.factors.items()}
        return Dataset(np.asarray(self.x[idx]), self.image_shape, pick(self.labels),
                       self.label_names, factors, name or self.name, self.scale)

    def check(self, likelihood="bernoulli", rows=None, digest=None):
        """Scan every value (in chunks, so memory-mapped data stays on disk) and raise
        :class:`DataError` on NaN/inf, or on values outside [0, 1] for the Bernoulli
        likelihood.  ``rows``: (start, stop) scans only those rows (data-parallel ranks
        share the scan of memory-mapped data).  ``digest``: a hashlib object updated with
        the bytes of the scanned rows in the same pass (data-parallel ranks compare their
        copies by it).  Returns self."""
        start, stop = (0, len(self)) if rows is None else rows
        if (digest is None and self.x.dtype.kind == "u"
                and self.scale * np.iinfo(self.x.dtype).max <= 1.0 + 1e-6):
            return self  # unsigned ints scaled into [0, 1]: nothing can be wrong
        lo, hi, bad = _scan(self.x, start, stop, digest)
        where = "" if rows is None else f" in rows {start}..{stop - 1}"
        if bad:
            raise DataError(f"{self.name}: {bad} NaN or infinite value(s){where}")
        lo, hi = lo * self.scale, hi * self.scale
        if likelihood == "bernoulli" and (lo < 0 or hi > 1):
            show = lambda v: np.format_float_positional(v, trim="-")  # noqa: E731  (shortest exact)
            err = DataError(f"{self.name}: values{where} lie in [{show(lo)}, {show(hi)}], "
                            "but the Bernoulli likelihood needs [0, 1]; rescale the data or "
                            "use likelihood='gaussian'")
            err.out_of_range = True  # (the CLI names its own option for the remedy)
            raise err
        return self


# ------------------------------------------------------------------- built-in shapes
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


# -------------------------------------------------------------------------- IDX files
_IDX_DTYPES = {0x08: np.uint8, 0x09: np.int8, 0x0B: ">i2", 0x0C: ">i4", 0x0D: ">f4", 0x0E: ">f8"}


def read_idx(path):
    """Read one IDX file (MNIST's format; gzip-compressed or raw) into an array.

    Raw files are memory-mapped.  Raises :class:`DataError` naming the file when the magic
    number is wrong, the header is short, or the data is truncated or has trailing bytes.
    """
    path = os.fspath(path)
    if not os.path.isfile(path):
        raise DataError(f"{path}: no such file")
    with open(path, "rb") as f:
        gz = f.read(2) == b"\x1f\x8b"
    try:
        if gz:
            with gzip.open(path, "rb") as f:
                data = f.read()
            head = data[:4]
        else:
            with open(path, "rb") as f:
                head = f.read(4)
    except (OSError, EOFError) as e:  # truncated or corrupt gzip stream
        raise DataError(f"{path}: cannot decompress ({e})") from None
    if len(head) < 4 or head[0] != 0 or head[1] != 0 or head[2] not in _IDX_DTYPES:
        raise DataError(f"{path}: not an IDX file (magic bytes {head.hex() or 'none'}; "
                        "expected 00 00 <type> <ndim>)")
    dtype, ndim = np.dtype(_IDX_DTYPES[head[2]]), head[3]
    hsize = 4 + 4 * ndim
    if gz:
        size = len(data)
        dims_raw = data[4:hsize]
    else:
        size = os.path.getsize(path)
        with open(path, "rb") as f:
            f.seek(4)
            dims_raw = f.read(4 * ndim)
    if len(dims_raw) < 4 * ndim:
        raise DataError(f"{path}: truncated IDX header ({ndim} dimensions promised)")
    dims = struct.unpack(">" + "I" * ndim, dims_raw)
    want, have = int(np.prod(dims)) * dtype.itemsize, size - hsize
    if have < want:
        raise DataError(f"{path}: truncated IDX file: the header promises shape {dims} "
                        f"({want} bytes of data) but only {have} bytes follow")
    if have > want:
        raise DataError(f"{path}: {have - want} unexpected bytes after the data of shape {dims}")
    if gz:
        return np.frombuffer(data, dtype=dtype, offset=hsize).reshape(dims)
    return np.memmap(path, dtype=dtype, mode="r", offset=hsize, shape=dims)


_IDX_NAME = re.compile(r"^(train|t10k|test)[-_.](images|labels)[-_.]idx\d[-_.]ubyte(\.gz)?$")


def load_idx_dir(path):
    """The standard four IDX files of an MNIST-like directory -> (train, test) Datasets.

    File names as MNIST ships them (``train-images-idx3-ubyte.gz``, ``t10k-labels-...``),
    compressed or not.  A missing file or images and labels of different lengths is an error.
    """
    found = {}
    for fname in sorted(os.listdir(path)):
        m = _IDX_NAME.match(fname)
        if m:
            split = "train" if m.group(1) == "train" else "test"
            found.setdefault((split, m.group(2)), os.path.join(path, fname))
    missing = [f"{s} {k}" for s in ("train", "test") for k in ("images", "labels")
               if (s, k) not in found]
    if missing:
        raise DataError(f"{path}: no IDX file for {', '.join(missing)} (expected names like "
                        "train-images-idx3-ubyte.gz, t10k-labels-idx1-ubyte.gz)")
    fashion = "fashion" in os.path.abspath(path).lower()
    out = []
    for split in ("train", "test"):
        images = read_idx(found[split, "images"])
        labels = read_idx(found[split, "labels"])
        name = found[split, "images"]
        if images.ndim != 3:
            raise DataError(f"{name}: expected images of shape (N, H, W), got {images.shape}")
        if labels.ndim != 1:
            raise DataError(f"{found[split, 'labels']}: expected labels of shape (N,), got "
                            f"{labels.shape} (is it an images file?)")
        if labels.shape[0] != images.shape[0]:
            raise DataError(f"{found[split, 'labels']}: {labels.shape[0]} labels for "
                            f"{images.shape[0]} images in {name}")
        N, H, W = images.shape
        tag = ("fashion-mnist" if fashion else os.path.basename(os.path.normpath(path)))
        out.append(Dataset(images.reshape(N, H * W), (H, W), np.asarray(labels, dtype=np.int64),
                           FASHION_MNIST_CLASSES if fashion else None, None, f"{tag}-{split}"))
    return tuple(out)


# ----------------------------------------------------------------------- the front door
_NPZ_X = ("x_train", "train_images", "x", "X", "images", "data", "arr_0")
_NPZ_Y = ("y_train", "train_labels", "y", "labels", "targets")
_NPZ_XT = ("x_test", "test_images")
_NPZ_YT = ("y_test", "test_labels")


def load(source="shapes", *, shapes_n=20000, shapes_size=28, seed=0, test_fraction=0.1):
    """Load data by name or path -> (train, test) Datasets (test may be None).

    source: ``"shapes"`` (built-in; ``shapes_n`` images of ``shapes_size`` pixels, the last
    ``test_fraction`` held out as test), ``"fashion-mnist"`` (Debian's package), a
    directory of IDX files, one IDX file, a ``.npy`` file (memory-mapped) or a ``.npz``
    file (``x_train``/``x_test``/``y_train``/``y_test`` or ``x``/``y`` keys).
    """
    if source in ("shapes", "builtin"):
        ds = shapes(shapes_n, shapes_size, seed)
        n_test = int(round(len(ds) * test_fraction))
        n = len(ds) - n_test
        return (ds.subset(np.arange(n), f"{ds.name}-train"),
                ds.subset(np.arange(n, len(ds)), f"{ds.name}-test") if n_test else None)
    if source == "fashion-mnist":
        if not os.path.isdir(DEBIAN_FASHION_MNIST):
            raise DataError("fashion-mnist: not installed (apt-get install dataset-fashion-mnist, "
                            f"which puts the files in {DEBIAN_FASHION_MNIST})")
        source = DEBIAN_FASHION_MNIST
    path = os.fspath(source)
    if not os.path.exists(path):
        raise DataError(f"{path}: no such file or directory (built-in data: 'shapes')")
    if os.path.isdir(path):
        return load_idx_dir(path)
    base = os.path.basename(path)
    lower = base.lower()
    if lower.endswith(".npy"):
        try:
            arr = np.load(path, mmap_mode="r", allow_pickle=False)
        except (ValueError, OSError) as e:
            raise DataError(f"{path}: not a readable .npy file ({e})") from None
        return _from_array(arr, path), None
    if lower.endswith(".npz"):
        return _load_npz(path)
    if "idx" in lower or lower.endswith("ubyte") or lower.endswith("ubyte.gz"):
        arr = read_idx(path)
        return _from_array(arr, path), None
    raise DataError(f"{path}: unknown data format (expected a directory of IDX files, an IDX "
                    "file, .npy or .npz)")


def _load_npz(path):
    try:
        z = np.load(path, allow_pickle=False)
        keys = list(z.keys())
    except Exception as e:  # zipfile, pickle and value errors alike: the file is unusable
        raise DataError(f"{path}: not a readable .npz file ({e})") from None
    pick = lambda names: next((k for k in names if k in keys), None)  # noqa: E731
    kx = pick(_NPZ_X) if len(keys) > 1 else keys[0] if keys else None
    if kx is None:
        raise DataError(f"{path}: no data array found; keys are {keys}, expected one of "
                        f"{list(_NPZ_X)}")
    try:
        ky, kxt, kyt = pick(_NPZ_Y), pick(_NPZ_XT), pick(_NPZ_YT)
        train = _from_array(z[kx], f"{path}[{kx}]", None if ky is None else z[ky])
        test = None if kxt is None else _from_array(z[kxt], f"{path}[{kxt}]",
                                                    None if kyt is None else z[kyt])
    except (ValueError, OSError) as e:
        raise DataError(f"{path}: cannot read ({e})") from None
    if test is not None and test.dim != train.dim:
        raise DataError(f"{path}: train rows have {train.dim} values but test rows {test.dim}")
    return train, test


def _from_array(arr, name, labels=None):
    """An (N, D) or (N, H, W) array -> Dataset; 3-D arrays are images."""
    arr = arr if isinstance(arr, np.ndarray) else np.asarray(arr)
    if arr.ndim == 3:
        N, H, W = arr.shape
        return Dataset(arr.reshape(N, H * W), (H, W), labels, None, None, name)
    image = None
    if arr.ndim == 2 and int(round(np.sqrt(arr.shape[1]))) ** 2 == arr.shape[1]:
        side = int(round(np.sqrt(arr.shape[1])))
        image = (side, side)
    return Dataset(arr, image, labels, None, None, name)


def _as_2d(x, name):
    if not hasattr(x, "ndim"):
        x = np.asarray(x)
    if x.ndim == 3:
        x = x.reshape(x.shape[0], -1)
    if x.ndim != 2:
        raise DataError(f"{name}: expected an (N, D) or (N, H, W) array, got shape {x.shape}")
    if x.shape[0] == 0 or x.shape[1] == 0:
        raise DataError(f"{name}: empty dataset (shape {x.shape})")
    if x.dtype.kind not in "fui":
        raise DataError(f"{name}: unsupported dtype {x.dtype} (need floats or integers)")
    return x


def _default_scale(x, name):
    """1.0 for floats, 1/255 for 8-bit (and for other integers holding 0..255)."""
    if x.dtype.kind == "f":
        return 1.0
    if x.dtype == np.uint8:
        return 1.0 / 255.0
    lo, hi, _ = _scan(x)
    if lo < 0 or hi > 255:
        raise DataError(f"{name}: integer values in [{lo:g}, {hi:g}]; only 0..255 images are "
                        "scaled automatically (convert to float in [0, 1] first)")
    return 1.0 / 255.0


def _scan(x, start=0, stop=None, digest=None):
    """(min, max, number of non-finite values) of rows [start, stop) of x, chunk by chunk;
    ``digest`` (a hashlib object) is updated with each chunk's bytes on the way."""
    lo, hi, bad = np.inf, -np.inf, 0
    stop = x.shape[0] if stop is None else stop
    for s in range(start, stop, _CHUNK_ROWS):
        c = np.ascontiguousarray(x[s:min(stop, s + _CHUNK_ROWS)])
        if digest is not None:
            digest.update(c.data)
        if c.dtype.kind == "f":
            fin = np.isfinite(c)
            nb = c.size - int(np.count_nonzero(fin))
            if nb:
                bad += nb
                c = c[fin]
                if c.size == 0:
                    continue
        if c.size:
            lo, hi = min(lo, float(c.min())), max(hi, float(c.max()))
    return lo, hi, bad


def binarize(x, rng=None, out=None):
    """Bernoulli draws with probabilities x (dynamic binarization), or x > 0.5 when ``rng``
    is None (deterministic).  x (N, D) in [0, 1] -> (N, D) of 0/1 in x's dtype."""
    if out is None:
        out = np.empty_like(x)
    if rng is None:
        np.greater(x, 0.5, out=out, casting="unsafe")
    else:
        u = rng.random(x.shape, dtype=np.float32 if x.dtype == np.float32 else np.float64)
        np.less(u, x, out=out, casting="unsafe")
    return out
