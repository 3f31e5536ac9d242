"""Checkpoints: round trip, atomic writes, and clear errors for corrupt or foreign files."""
import json
import os
import zipfile
import zlib

import numpy as np
import pytest

import fastvae
from fastvae.io import checkpoint as io
from fastvae.io import CheckpointError

from tolerances import assert_close


def trained(backend="cpu", **kw):
    m = fastvae.VAE(12, hidden=(6, 5), latent_dim=3, activation="elu", backend=backend,
                    seed=2, **kw)
    x = np.random.default_rng(0).random((40, 12)).astype(m.dtype)
    m.fit(x, epochs=2, batch_size=16, progress=False, optimizer="adamw", lr=3e-3)
    return m, x


def test_round_trip_keeps_everything(tmp_path):
    m, x = trained(likelihood="gaussian", obs_scale="learned", beta=0.5, free_bits=0.1)
    m.metadata = {"image_shape": [3, 4], "note": "hello"}
    p = m.save(tmp_path / "m.npz")
    # on the model's own backend (the default, "auto", is cuda where there is a GPU): the
    # encodings below are compared bit for bit, which only one backend guarantees
    r = fastvae.load(p, backend=m.backend)
    assert r.config() == m.config() and r.metadata == m.metadata
    np.testing.assert_array_equal(r.flat_params, m.flat_params)
    for k in ("m", "v"):
        np.testing.assert_array_equal(getattr(r.optimizer, k), getattr(m.optimizer, k))
    assert r.optimizer.config() == m.optimizer.config() and r.optimizer.name == "adamw"
    assert r.optimizer.step_count == m.optimizer.step_count == 6
    assert r.history == m.history
    assert r.train_state.to_checkpoint()[0] == m.train_state.to_checkpoint()[0]
    assert r.noise.counter == m.noise.counter > 0
    np.testing.assert_array_equal(r.encode(x)[0], m.encode(x)[0])


def test_cross_backend(tmp_path):
    m, x = trained(backend="numpy")
    p = m.save(tmp_path / "m.npz")
    r = fastvae.load(p, backend="cpu")
    assert r.backend == "cpu"
    assert_close(r.encode(x)[0], m.encode(x)[0])  # numpy and cpu: a few ulp apart
    with np.load(p) as z:  # readable by plain NumPy, no pickle
        assert json.loads(z["meta"].tobytes())["format"] == "fastvae-checkpoint"


def test_model_without_optimizer_saves(tmp_path):
    m = fastvae.VAE(5, hidden=(3,), latent_dim=2, backend="numpy")
    r = fastvae.load(m.save(tmp_path / "fresh.npz"))
    assert r.optimizer is None and r.history == []
    np.testing.assert_array_equal(r.flat_params, m.flat_params)


def test_failed_write_leaves_the_old_file(tmp_path, monkeypatch):
    m, _ = trained()
    p = tmp_path / "m.npz"
    m.save(p)
    good = p.read_bytes()

    def broken_savez(f, **arrays):
        f.write(b"PK\x03\x04 half a file")
        raise OSError("disk full")

    monkeypatch.setattr(io.np, "savez", broken_savez)
    with pytest.raises(OSError, match="disk full"):
        m.save(p)
    assert p.read_bytes() == good
    assert os.listdir(tmp_path) == ["m.npz"]  # no temporary file left behind
    with pytest.raises(FileNotFoundError, match="does not exist"):
        m.save(tmp_path / "no" / "such" / "dir.npz")


def test_corrupt_truncated_and_foreign_files(tmp_path):
    m, _ = trained()
    p = tmp_path / "m.npz"
    m.save(p)
    raw = p.read_bytes()
    (tmp_path / "cut.npz").write_bytes(raw[: len(raw) // 2])
    with pytest.raises(CheckpointError, match="cut.npz: not a readable fastvae checkpoint"):
        fastvae.load(tmp_path / "cut.npz")
    # flip one byte inside the stored parameters: zip's CRC or ours must notice
    with zipfile.ZipFile(p) as z:
        info = z.getinfo("params.npy")
    flipped = bytearray(raw)
    pos = info.header_offset + 30 + len(info.filename) + 200
    flipped[pos] ^= 0xFF
    (tmp_path / "flip.npz").write_bytes(bytes(flipped))
    with pytest.raises(CheckpointError, match="flip.npz: .*(corrupt|checksum)"):
        fastvae.load(tmp_path / "flip.npz")
    np.savez(tmp_path / "foreign.npz", weights=np.zeros(3))
    with pytest.raises(CheckpointError, match=r"foreign.npz: not a fastvae checkpoint .*'weights'"):
        fastvae.load(tmp_path / "foreign.npz")
    np.save(tmp_path / "arr.npy", np.zeros(3))
    with pytest.raises(CheckpointError, match="arr.npy: not a fastvae checkpoint"):
        fastvae.load(tmp_path / "arr.npy")
    (tmp_path / "text.npz").write_text("hello")
    with pytest.raises(CheckpointError, match="text.npz: not a fastvae checkpoint .not an .npz"):
        fastvae.load(tmp_path / "text.npz")
    with pytest.raises(FileNotFoundError, match="missing.npz: no such checkpoint"):
        fastvae.load(tmp_path / "missing.npz")


def _rewrite_meta(src, dst, change):
    with np.load(src) as z:
        arrays = {k: z[k] for k in z.files}
    meta = json.loads(arrays["meta"].tobytes())
    change(meta, arrays)
    arrays["meta"] = np.frombuffer(json.dumps(meta).encode(), np.uint8)
    np.savez(dst, **arrays)


def test_version_and_consistency_checks(tmp_path):
    m, _ = trained()
    p = m.save(tmp_path / "m.npz")
    _rewrite_meta(p, tmp_path / "v9.npz", lambda meta, a: meta.update(format_version=9))
    with pytest.raises(CheckpointError, match="v9.npz: checkpoint format version 9"):
        fastvae.load(tmp_path / "v9.npz")
    _rewrite_meta(p, tmp_path / "crc.npz", lambda meta, a: a.update(params=a["params"] * 2))
    with pytest.raises(CheckpointError, match="crc.npz: parameter checksum mismatch"):
        fastvae.load(tmp_path / "crc.npz")
    _rewrite_meta(p, tmp_path / "cfg.npz",
                  lambda meta, a: meta["config"].update(activation="swish"))
    with pytest.raises(CheckpointError, match="cfg.npz: cannot rebuild the model"):
        fastvae.load(tmp_path / "cfg.npz")
    _rewrite_meta(p, tmp_path / "shape.npz",
                  lambda meta, a: meta["config"].update(latent_dim=4))
    with pytest.raises(CheckpointError, match="shape.npz: parameters have shape"):
        fastvae.load(tmp_path / "shape.npz")


def test_any_damaged_byte_of_the_zip_directory_is_a_checkpoint_error(tmp_path):
    """Every byte of the archive's central directory, flipped in turn: the file loads (a
    byte nobody reads) or raises CheckpointError naming it, never a raw zipfile/NumPy
    exception (a damaged compression-method field raised NotImplementedError)."""
    m = fastvae.VAE(10, hidden=(6,), latent_dim=2, backend="numpy")
    raw = open(m.save(tmp_path / "m.npz"), "rb").read()
    start = raw.index(b"PK\x01\x02")
    bad = tmp_path / "bad.npz"
    for pos in range(start, len(raw)):
        flipped = bytearray(raw)
        flipped[pos] ^= 0xFF
        bad.write_bytes(bytes(flipped))
        try:
            fastvae.load(bad)
        except CheckpointError as e:
            assert "bad.npz" in str(e)


def test_a_bernoulli_model_saved_with_an_unused_obs_scale_still_loads(tmp_path):
    """Earlier versions accepted (and ignored) a numeric obs_scale with the Bernoulli
    likelihood; their files load, with the default."""
    m = fastvae.VAE(10, hidden=(6,), latent_dim=2, backend="numpy")
    p = m.save(tmp_path / "m.npz")
    _rewrite_meta(p, tmp_path / "old.npz", lambda meta, a: meta["config"].update(obs_scale=0.5))
    old = fastvae.load(tmp_path / "old.npz")
    assert old.obs_scale == 1.0
    np.testing.assert_array_equal(old.flat_params, m.flat_params)


def test_a_damaged_training_state_is_a_checkpoint_error(tmp_path):
    m, _ = trained()
    p = m.save(tmp_path / "m.npz")
    for name, change in (("rng", lambda meta, a: meta["train_state"].update(order_rng=5)),
                         ("sums", lambda meta, a: meta["train_state"].update(sums=[1.0]))):
        _rewrite_meta(p, tmp_path / f"{name}.npz", change)
        with pytest.raises(CheckpointError, match=f"{name}.npz: "):
            fastvae.load(tmp_path / f"{name}.npz")


def test_foreign_metadata_is_a_checkpoint_error(tmp_path):
    with zipfile.ZipFile(tmp_path / "raw.npz", "w") as z:
        z.writestr("meta.npy", b"not an npy")  # np.load hands back bytes
    with pytest.raises(CheckpointError, match="raw.npz: corrupt checkpoint metadata .'meta' "
                                              "is not an array"):
        fastvae.load(tmp_path / "raw.npz")
    p = fastvae.VAE(10, hidden=(6,), latent_dim=2, backend="numpy").save(tmp_path / "m.npz")
    _rewrite_meta(p, tmp_path / "none.npz", lambda meta, a: meta.pop("config"))
    _rewrite_meta(p, tmp_path / "null.npz", lambda meta, a: meta.update(config=None))
    for name in ("none", "null"):
        with pytest.raises(CheckpointError, match=f"{name}.npz: cannot rebuild the model"):
            fastvae.load(tmp_path / f"{name}.npz")


def test_checkpoint_permissions_follow_umask(tmp_path):
    m = fastvae.VAE(5, hidden=(3,), latent_dim=2, backend="numpy")
    old = os.umask(0o022)
    try:
        p = m.save(tmp_path / "m.npz")
    finally:
        os.umask(old)
    assert oct(os.stat(p).st_mode & 0o777) == oct(0o644)


def to_version_1(src, dst, batch_index=0):
    """Rewrite a checkpoint in the layout fastvae 0.1 wrote (format version 1): learned
    log-scales stored as the log-scale itself, no fit settings, the position in batches."""
    with np.load(src) as z:
        arrays = {k: z[k] for k in z.files}
    meta = json.loads(arrays.pop("meta").tobytes())
    m = fastvae.load(src, backend="numpy")
    params = arrays["params"].copy()
    if m.learn_scale:
        params[-m.logscale_size:] = m.obs_logscale()
    ts = meta["train_state"]
    old = {"format": "fastvae-checkpoint", "format_version": 1, "fastvae_version": "0.1.0",
           "config": {**meta["config"], "activation_alpha": m.act_alpha},
           "params_crc32": zlib.crc32(params.tobytes()), "noise_rng": np.random.PCG64(0).state,
           "noise_counter": meta["noise"]["counter"], "metadata": meta["metadata"],
           "optimizer": None if ts is None else ts["optimizer"],
           "train_state": None if ts is None else {
               "epoch": ts["epoch"], "batch": batch_index, "step": ts["step"],
               "seconds": ts["seconds"], "sums": ts["sums"], "order_rng": ts["order_rng"],
               "binarize_rng": ts["binarize_rng"]},
           "history": [] if ts is None else ts["history"]}
    out = {"params": params, "meta": np.frombuffer(json.dumps(old).encode(), np.uint8)}
    out.update({k[6:]: v for k, v in arrays.items() if k.startswith("train.")})
    np.savez(dst, **out)


@pytest.mark.parametrize("cfg", [dict(), dict(likelihood="gaussian", obs_scale="per_pixel")])
def test_version_1_checkpoints_load(tmp_path, cfg):
    m, x = trained(**cfg)
    p = m.save(tmp_path / "v2.npz")
    to_version_1(p, tmp_path / "v1.npz")
    with pytest.warns(UserWarning, match="version 1 checkpoint, which did not record fit's "
                      "settings"):
        # on the model's own backend: the format is under test here, and only one backend
        # on one machine is bit-exact (numpy and cpu round a float32 product differently)
        r = fastvae.load(tmp_path / "v1.npz", backend=m.backend)
    np.testing.assert_allclose(r.obs_logscale(), m.obs_logscale(), atol=2e-6)  # float32 of ~6
    np.testing.assert_array_equal(r.encode(x)[0], m.encode(x)[0])
    assert r.history == m.history and r.optimizer.step_count == m.optimizer.step_count
    np.testing.assert_array_equal(r.optimizer.m, m.optimizer.m)
    assert not r.train_state.settings_saved
    r.fit(x, epochs=1, batch_size=16, progress=False)  # trains on
    r.save(tmp_path / "again.npz")
    assert fastvae.load(tmp_path / "again.npz").train_state.settings_saved


def test_a_version_1_checkpoint_of_leaky_relu_with_alpha_0_loads_as_relu(tmp_path):
    m = fastvae.VAE(12, hidden=(6,), latent_dim=3, backend="numpy", seed=2)
    x = np.random.default_rng(0).random((40, 12)).astype(m.dtype)
    m.fit(x, epochs=1, batch_size=16, progress=False)
    p = m.save(tmp_path / "v2.npz")
    to_version_1(p, tmp_path / "v1.npz")
    with np.load(tmp_path / "v1.npz") as z:
        arrays = {k: z[k] for k in z.files}
    meta = json.loads(arrays["meta"].tobytes())
    meta["config"].update(activation="leaky_relu", activation_alpha=0.0)  # 0.1 accepted this
    arrays["meta"] = np.frombuffer(json.dumps(meta).encode(), np.uint8)
    np.savez(tmp_path / "v1a.npz", **arrays)
    with pytest.warns(UserWarning):
        r = fastvae.load(tmp_path / "v1a.npz", backend="numpy")
    assert r.activation == "relu"
    np.testing.assert_array_equal(r.encode(x)[0], m.encode(x)[0])


def test_a_pickle_made_before_the_layout_by_job_loads(tmp_path):
    """tests/data/vae_before_layout.pkl was pickled by fastvae before the package was grouped
    by job (it names the class fastvae.model.VAE): it loads, with its parameters and training
    state, encodes as it did (to the cross-machine tolerance: the file was made on another
    CPU), and trains on."""
    import pickle
    from pathlib import Path

    with open(Path(__file__).parent / "data" / "vae_before_layout.pkl", "rb") as f:
        old = pickle.load(f)
    m = old["model"]
    assert isinstance(m, fastvae.VAE) and m.backend == "numpy"
    np.testing.assert_array_equal(m.flat_params, old["params"])
    assert_close(m.encode(old["x"])[0], old["encode"])
    assert m.train_state.epoch == 1 and m.optimizer.step_count == 3
    m.fit(old["x"], epochs=1, progress=False)
    assert m.train_state.epoch == 2


def test_pickles_name_the_public_class_path():
    """A pickle names fastvae.VAE, not the module the engine lives in, so that moving it
    inside the package does not break pickles again."""
    import pickle
    m = fastvae.VAE(6, hidden=(3,), latent_dim=2, backend="numpy")
    blob = pickle.dumps(m)
    assert b"fastvae.core" not in blob and type(pickle.loads(blob)) is fastvae.VAE
