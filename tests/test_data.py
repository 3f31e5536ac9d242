"""Datasets: the built-in shapes, IDX/npy/npz loaders, scaling, binarization, bad files."""
import gzip
import os
import struct

import numpy as np
import pytest

from fastvae import data
from fastvae.io.data import DataError


def write_idx(path, arr, gz=True, type_code=0x08, ndim=None, extra=b"", cut=0):
    arr = np.asarray(arr)
    ndim = arr.ndim if ndim is None else ndim
    head = bytes([0, 0, type_code, ndim]) + struct.pack(">" + "I" * arr.ndim, *arr.shape)
    body = arr.astype(">u1" if type_code == 0x08 else ">f4").tobytes() + extra
    raw = head + (body[:-cut] if cut else body)
    with (gzip.open if gz else open)(path, "wb") as f:
        f.write(raw)
    return str(path)


def idx_dir(tmp_path, n_train=12, n_test=5, gz=True, labels_n=None):
    rng = np.random.default_rng(0)
    sfx = ".gz" if gz else ""
    imgs = {s: rng.integers(0, 256, (n, 4, 3), dtype=np.uint8)
            for s, n in (("train", n_train), ("t10k", n_test))}
    for s, a in imgs.items():
        write_idx(tmp_path / f"{s}-images-idx3-ubyte{sfx}", a, gz)
        nl = len(a) if labels_n is None else labels_n
        write_idx(tmp_path / f"{s}-labels-idx1-ubyte{sfx}", rng.integers(0, 10, nl), gz)
    return imgs


# ------------------------------------------------------------------------ shapes
def test_shapes_deterministic_in_range_with_factors():
    a, b = data.shapes(300, seed=4), data.shapes(300, seed=4)
    np.testing.assert_array_equal(a.x, b.x)
    assert not np.array_equal(a.x, data.shapes(300, seed=5).x)
    assert a.x.shape == (300, 784) and a.image_shape == (28, 28) and a.x.dtype == np.float32
    assert a.x.min() == 0.0 and a.x.max() == 1.0
    assert set(a.factors) == {"shape", "scale", "rotation", "x", "y"}
    assert set(np.unique(a.factors["shape"])) == {0, 1, 2}
    np.testing.assert_array_equal(a.labels, a.factors["shape"])
    assert (a.factors["scale"] >= 0.5).all() and (a.factors["scale"] <= 1).all()
    # every image shows a shape, none touches the frame
    img = a.x.reshape(-1, 28, 28)
    assert (img.sum(axis=(1, 2)) > 5).all()
    assert img[:, 0, :].max() == 0 and img[:, -1, :].max() == 0
    assert img[:, :, 0].max() == 0 and img[:, :, -1].max() == 0


def test_shapes_factors_drive_the_picture():
    ds = data.shapes(2000, seed=0)
    img = ds.x.reshape(-1, 28, 28)
    cols = np.arange(28) + 0.5
    cx = (img.sum(axis=1) * cols).sum(axis=1) / img.sum(axis=(1, 2))  # centre of mass
    assert np.corrcoef(cx, ds.factors["x"])[0, 1] > 0.95
    area = img.sum(axis=(1, 2))
    for k in range(3):  # area grows with scale squared, shape by shape
        m = ds.factors["shape"] == k
        assert np.corrcoef(area[m], ds.factors["scale"][m] ** 2)[0, 1] > 0.95


def test_shapes_64():
    ds = data.shapes(50, size=64)
    assert ds.x.shape == (50, 4096) and ds.image_shape == (64, 64)
    with pytest.raises(ValueError, match="size"):
        data.shapes(10, size=4)


def test_load_shapes_splits():
    train, test = data.load("shapes", shapes_n=1000)
    assert len(train) == 900 and len(test) == 100
    full = data.shapes(1000)
    np.testing.assert_array_equal(test.x, full.x[900:])


# --------------------------------------------------------------------------- IDX
@pytest.mark.parametrize("gz", [True, False])
def test_idx_directory(tmp_path, gz):
    imgs = idx_dir(tmp_path, gz=gz)
    train, test = data.load(tmp_path)
    assert len(train) == 12 and len(test) == 5 and train.image_shape == (4, 3)
    assert train.x.dtype == np.uint8
    np.testing.assert_array_equal(train.x, imgs["train"].reshape(12, 12))
    b = train.batch(np.array([3, 0]))
    assert b.dtype == np.float32
    np.testing.assert_allclose(b, imgs["train"].reshape(12, 12)[[3, 0]] / 255.0, rtol=1e-6)
    if not gz:
        assert isinstance(read := data.read_idx(tmp_path / "train-images-idx3-ubyte"), np.memmap)
        assert read.shape == (12, 4, 3)


def test_idx_float_type(tmp_path):
    a = np.linspace(0, 1, 12, dtype=np.float32).reshape(3, 4)
    p = write_idx(tmp_path / "x.idx", a, gz=False, type_code=0x0D)
    np.testing.assert_array_equal(data.read_idx(p), a)


def test_idx_errors_name_the_file(tmp_path):
    a = np.zeros((3, 2, 2), np.uint8)
    p = write_idx(tmp_path / "cut-idx3-ubyte", a, gz=False, cut=2)
    with pytest.raises(DataError, match="cut-idx3-ubyte: truncated IDX file"):
        data.read_idx(p)
    p = write_idx(tmp_path / "long-idx3-ubyte", a, gz=False, extra=b"xx")
    with pytest.raises(DataError, match="long-idx3-ubyte: 2 unexpected bytes"):
        data.read_idx(p)
    p = tmp_path / "bad-idx3-ubyte"
    p.write_bytes(b"\x12\x34\x08\x03" + bytes(20))
    with pytest.raises(DataError, match="bad-idx3-ubyte: not an IDX file"):
        data.read_idx(p)
    gzp = write_idx(tmp_path / "g-idx3-ubyte.gz", a)
    raw = open(gzp, "rb").read()
    open(gzp, "wb").write(raw[: len(raw) // 2])
    with pytest.raises(DataError, match="g-idx3-ubyte.gz: cannot decompress"):
        data.read_idx(gzp)


def test_idx_directory_mismatches(tmp_path):
    idx_dir(tmp_path, labels_n=7)
    with pytest.raises(DataError, match="7 labels for 12 images"):
        data.load(tmp_path)
    empty = tmp_path / "empty"
    empty.mkdir()
    with pytest.raises(DataError, match="no IDX file for train images"):
        data.load(empty)
    # a labels file where the images should be
    d = tmp_path / "swap"
    d.mkdir()
    idx_dir(d)
    os.replace(d / "train-labels-idx1-ubyte.gz", d / "train-images-idx3-ubyte.gz")
    write_idx(d / "train-labels-idx1-ubyte.gz", np.zeros(12, np.uint8))
    with pytest.raises(DataError, match=r"expected images of shape \(N, H, W\)"):
        data.load(d)


@pytest.mark.skipif(not os.path.isdir(data.DEBIAN_FASHION_MNIST),
                    reason="apt-get install dataset-fashion-mnist")
def test_fashion_mnist_package():
    train, test = data.load("fashion-mnist")
    assert (len(train), len(test), train.image_shape) == (60000, 10000, (28, 28))
    assert train.label_names[9] == "Ankle boot" and set(np.unique(test.labels)) == set(range(10))


# ------------------------------------------------------------------ npy / npz
def test_npy_is_memory_mapped_and_batches(tmp_path):
    a = np.random.default_rng(0).random((50, 16)).astype(np.float32)
    np.save(tmp_path / "a.npy", a)
    ds, test = data.load(tmp_path / "a.npy")
    assert test is None and isinstance(ds.x, np.memmap) and ds.image_shape == (4, 4)
    idx = np.array([7, 2, 40, 2])
    np.testing.assert_array_equal(ds.batch(idx), a[idx])
    u8 = (a * 255).astype(np.uint8)
    np.save(tmp_path / "u.npy", u8)
    ds, _ = data.load(tmp_path / "u.npy")
    np.testing.assert_allclose(ds.batch(idx), u8[idx] / 255.0, rtol=1e-6)  # memmap, unsorted


def test_npz_keys(tmp_path):
    rng = np.random.default_rng(1)
    xt, xs = rng.random((20, 9)), rng.random((6, 9))
    np.savez(tmp_path / "d.npz", x_train=xt, y_train=np.arange(20), x_test=xs)
    train, test = data.load(tmp_path / "d.npz")
    np.testing.assert_array_equal(train.labels, np.arange(20))
    np.testing.assert_allclose(test.to_array(np.float64), xs)
    np.savez(tmp_path / "one.npz", xs)
    assert len(data.load(tmp_path / "one.npz")[0]) == 6
    np.savez(tmp_path / "odd.npz", foo=xs, bar=xs)
    with pytest.raises(DataError, match=r"odd.npz: no data array found; keys are \['foo', 'bar'\]"):
        data.load(tmp_path / "odd.npz")


def test_bad_sources(tmp_path):
    with pytest.raises(DataError, match="nope.npy: no such file"):
        data.load(tmp_path / "nope.npy")
    (tmp_path / "x.csv").write_text("1,2\n")
    with pytest.raises(DataError, match="x.csv: unknown data format"):
        data.load(tmp_path / "x.csv")
    (tmp_path / "junk.npy").write_bytes(b"not numpy at all")
    with pytest.raises(DataError, match="junk.npy: not a readable .npy file"):
        data.load(tmp_path / "junk.npy")
    (tmp_path / "junk.npz").write_bytes(b"PK not a zip")
    with pytest.raises(DataError, match="junk.npz: not a readable .npz file"):
        data.load(tmp_path / "junk.npz")


def test_check_finds_nan_and_range_in_chunks(tmp_path, monkeypatch):
    monkeypatch.setattr("fastvae.io.dataset._CHUNK_ROWS", 7)
    a = np.random.default_rng(0).random((40, 5)).astype(np.float32)
    a[33, 2] = np.nan
    a[3, 0] = np.inf
    with pytest.raises(DataError, match="mine: 2 NaN or infinite"):
        data.Dataset(a, name="mine").check()
    a = np.abs(np.nan_to_num(a, posinf=0.5))
    a[20, 1] = 1.5
    with pytest.raises(DataError, match=r"values lie in \[0, 1.5\].*Bernoulli"):
        data.Dataset(a).check("bernoulli")
    data.Dataset(a).check("gaussian")  # any finite value is fine for the Gaussian


def test_integer_scaling_rules():
    assert data.Dataset(np.array([[0, 255]], np.uint8)).scale == pytest.approx(1 / 255)
    assert data.Dataset(np.array([[0, 200]], np.int64)).scale == pytest.approx(1 / 255)
    with pytest.raises(DataError, match=r"integer values in \[0, 1000\]"):
        data.Dataset(np.array([[0, 1000]], np.int64))
    with pytest.raises(DataError, match="unsupported dtype"):
        data.Dataset(np.array([[True]]))
    with pytest.raises(DataError, match="empty dataset"):
        data.Dataset(np.zeros((0, 3)))
    with pytest.raises(DataError, match=r"expected an \(N, D\)"):
        data.Dataset(np.zeros(3))


def test_binarize():
    x = np.full((2000, 10), 0.3, np.float32)
    b = data.binarize(x, np.random.default_rng(0))
    assert set(np.unique(b)) == {0.0, 1.0} and abs(b.mean() - 0.3) < 0.01
    np.testing.assert_array_equal(data.binarize(np.array([[0.2, 0.7]])), [[0.0, 1.0]])
