"""Loading data: IDX (MNIST-style) / .npy / .npz files, Debian's Fashion-MNIST, the built-in
shapes, into :class:`~fastvae.io.dataset.Dataset`.

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

from .dataset import DataError, Dataset
from .shapes import shapes

#: the class names of Fashion-MNIST, by label
FASHION_MNIST_CLASSES = ("T-shirt/top", "Trouser", "Pullover", "Dress", "Coat", "Sandal",
                         "Shirt", "Sneaker", "Bag", "Ankle boot")
#: where Debian's ``dataset-fashion-mnist`` package puts the four IDX files
DEBIAN_FASHION_MNIST = "/usr/share/datasets/fashion-mnist"


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


