"""Checkpoint files: one archive with everything needed to continue training exactly.

This module is the file format only; :meth:`fastvae.VAE.save` and :func:`fastvae.load` turn
a model into its content and back.  The file is a NumPy ``.npz`` archive (readable with
``np.load(path)``, no pickle):

- ``params``: the flat parameter buffer, as laid out by :mod:`fastvae.core.params`;
- ``train.opt.<name>``: the optimizer's buffers (Adam's ``m``, ``v``; SGD's ``buf``), if any;
- ``meta``: UTF-8 JSON holding the format tag and version, fastvae's version, the model's
  configuration and backend, the training noise's position, free-form metadata, and the
  training state (settings, optimizer configuration and step count, epoch, position in the
  epoch, generator states, history; see :class:`fastvae.training.state.TrainState`).

Writes go to a temporary file in the same directory, are flushed to disk, then renamed
over the target, so a crash leaves either the old checkpoint or the new one, never half of
one.  Loading checks the tag, the version and a CRC-32 of the parameters, and names the file
in every error.  Version 1 files (fastvae 0.1) are read too, and upgraded as they load.
"""
from __future__ import annotations

import json
import os
import tempfile
import warnings
import zipfile
import zlib

import numpy as np

from ..version import __version__
from ..backends.codes import LOGSCALE_FLOOR

FORMAT = "fastvae-checkpoint"
FORMAT_VERSION = 2


class CheckpointError(ValueError):
    """A file that is not a usable fastvae checkpoint, with the reason."""


def write(path, meta, arrays):
    """Write a checkpoint of ``meta`` (JSON-able dict) and ``arrays`` (name -> host array,
    ``params`` among them) to ``path`` atomically.  Returns the path."""
    path = os.fspath(path)
    arrays = dict(arrays)
    params = np.ascontiguousarray(arrays["params"])
    meta = {"format": FORMAT, "format_version": FORMAT_VERSION, "fastvae_version": __version__,
            "params_crc32": zlib.crc32(params.tobytes()), **meta}
    arrays["meta"] = np.frombuffer(json.dumps(meta).encode("utf-8"), dtype=np.uint8)
    atomic_write(path, lambda f: np.savez(f, **arrays))
    return path


def atomic_write(path, write):
    """Call write(file) on a temporary file beside ``path``, fsync, then rename it over
    ``path``; on any failure the temporary file is removed and ``path`` is untouched."""
    d = os.path.dirname(os.path.abspath(path))
    if not os.path.isdir(d):
        raise FileNotFoundError(f"{path}: directory {d} does not exist")
    fd, tmp = tempfile.mkstemp(prefix="." + os.path.basename(path) + ".", suffix=".tmp", dir=d)
    try:
        umask = os.umask(0)
        os.umask(umask)
        os.fchmod(fd, 0o666 & ~umask)  # mkstemp's 0600 would make the checkpoint private
        with os.fdopen(fd, "wb") as f:
            write(f)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        try:
            os.unlink(tmp)
        except FileNotFoundError:
            pass
        raise
    try:  # make the rename itself durable where the platform allows it
        dfd = os.open(d, os.O_RDONLY)
        try:
            os.fsync(dfd)
        finally:
            os.close(dfd)
    except OSError:
        pass


def read(path):
    """(meta dict, arrays dict) of a checkpoint, checked; raises :class:`CheckpointError`."""
    path = os.fspath(path)
    if os.path.isdir(path):  # (a run directory given for the model it holds)
        inside = os.path.join(path, "model.npz")
        hint = f"; its model is {inside}" if os.path.isfile(inside) else ""
        raise FileNotFoundError(f"{path}: a directory, not a checkpoint file{hint}")
    if not os.path.isfile(path):
        raise FileNotFoundError(f"{path}: no such checkpoint file")
    with open(path, "rb") as f:
        magic = f.read(4)
    if magic not in (b"PK\x03\x04", b"PK\x05\x06"):
        raise CheckpointError(f"{path}: not a fastvae checkpoint (not an .npz archive; "
                              f"it starts with {magic!r})")
    try:
        # our own handle, closed whatever happens (np.load leaves a corrupt zip's open)
        with open(path, "rb") as fh:
            z = np.load(fh, allow_pickle=False)
            if not hasattr(z, "files"):  # a bare .npy array
                raise CheckpointError(f"{path}: not a fastvae checkpoint (a single array, "
                                      f"shape {getattr(z, 'shape', None)})")
            with z:
                if "meta" not in z.files:
                    raise CheckpointError(f"{path}: not a fastvae checkpoint (an .npz "
                                          f"archive without 'meta'; it holds {z.files})")
                arrays = {k: z[k] for k in z.files}
    except CheckpointError:
        raise
    except (zipfile.BadZipFile, ValueError, OSError, EOFError, KeyError, NotImplementedError,
            RuntimeError) as e:  # (the last two: a damaged zip header, an encrypted member)
        raise CheckpointError(f"{path}: not a readable fastvae checkpoint (truncated or "
                              f"corrupt: {e})") from None
    try:
        raw = arrays.pop("meta")
        if not isinstance(raw, np.ndarray):  # (a member without the .npy header)
            raise ValueError(f"'meta' is not an array but {type(raw).__name__}")
        meta = json.loads(raw.tobytes().decode("utf-8"))
    except (UnicodeDecodeError, ValueError) as e:  # (json.JSONDecodeError is a ValueError)
        raise CheckpointError(f"{path}: corrupt checkpoint metadata ({e})") from None
    if not isinstance(meta, dict) or meta.get("format") != FORMAT:
        raise CheckpointError(f"{path}: not a fastvae checkpoint (format tag "
                              f"{meta.get('format') if isinstance(meta, dict) else None!r})")
    if meta.get("format_version") not in (1, FORMAT_VERSION):
        raise CheckpointError(f"{path}: checkpoint format version {meta.get('format_version')}"
                              f" written by fastvae {meta.get('fastvae_version')}; this "
                              f"fastvae ({__version__}) reads versions 1 and {FORMAT_VERSION}")
    params = arrays.get("params")
    if params is None or zlib.crc32(np.ascontiguousarray(params).tobytes()) != meta.get("params_crc32"):
        raise CheckpointError(f"{path}: parameter checksum mismatch (the file is corrupt)")
    if meta["format_version"] == 1:
        try:
            meta, arrays = _upgrade_v1(path, meta, arrays)
        except (KeyError, TypeError, ValueError) as e:
            raise CheckpointError(f"{path}: cannot read this version 1 checkpoint ({e})") from None
    return meta, arrays


def _upgrade_v1(path, meta, arrays):
    """A version 1 checkpoint (fastvae 0.1) in the version 2 layout.

    Version 1 kept the optimizer and the epoch position but none of fit's settings (they
    take their defaults), counted the position in batches of an unrecorded size (an
    interrupted epoch restarts), and stored learned Gaussian log-scales directly (they are
    now the raw value under a soft floor, converted here).  Its CPU noise came from a
    NumPy generator, now from a counter-based stream: a resumed 0.1 run draws other noise
    than it would have (the GPU's step count carries over)."""
    cfg = dict(meta["config"])
    if cfg.get("activation") not in ("leaky_relu", "elu"):
        cfg["activation_alpha"] = None  # version 1 wrote 0.0 for activations without one
    elif cfg.get("activation_alpha") == 0:
        # accepted by version 1: leaky_relu and elu with alpha 0 are exactly relu, forward
        # and backward, and this version asks for alpha > 0
        cfg.update(activation="relu", activation_alpha=None)
    arrays = dict(arrays)
    if cfg.get("obs_scale") in ("learned", "per_pixel"):
        n = 1 if cfg["obs_scale"] == "learned" else int(cfg["input_dim"])
        params = arrays["params"].copy()
        old = params[-n:].astype(np.float64)
        t = np.maximum(old - LOGSCALE_FLOOR, 1e-6)  # at the floor's edge: just above it
        params[-n:] = LOGSCALE_FLOOR + t + np.log(-np.expm1(-t))  # inverse of the soft floor
        arrays["params"] = params
    old_ts, opt = meta.get("train_state"), meta.get("optimizer")
    ts = None
    if old_ts is not None or opt is not None:
        old_ts = old_ts or {}
        mid = bool(old_ts.get("batch"))
        warnings.warn(f"{path}: a version 1 checkpoint, which did not record fit's settings: "
                      "a fit without settings uses the defaults (batch_size 128, no KL "
                      "warm-up, no binarization); pass the run's own", UserWarning,
                      stacklevel=3)
        if mid:
            warnings.warn(f"{path}: a version 1 checkpoint taken inside epoch "
                          f"{old_ts.get('epoch', 0) + 1}: that epoch restarts when training "
                          "resumes (version 1 did not record the batch size)", UserWarning,
                          stacklevel=3)
        ts = {"settings": None, "optimizer": opt, "epoch": int(old_ts.get("epoch", 0)),
              "row": 0, "epoch_steps": 0, "n_rows": None, "step": int(old_ts.get("step", 0)),
              "seconds": 0.0 if mid else float(old_ts.get("seconds", 0.0)),
              "sums": [0.0, 0.0, 0.0, 0],
              # None: the generators a run of the model's seed starts from (TrainState)
              "order_rng": old_ts.get("order_rng"),
              "binarize_rng": old_ts.get("binarize_rng"),
              "history": list(meta.get("history") or [])}
        for k in [k for k in arrays if k.startswith("opt.")]:
            arrays["train." + k] = arrays.pop(k)
    new = {k: meta[k] for k in ("format", "fastvae_version", "params_crc32")}
    new.update(format_version=FORMAT_VERSION, config=cfg, backend=None,
               noise={"counter": int(meta.get("noise_counter", 0))},
               metadata=meta.get("metadata") or {}, train_state=ts)
    return new, arrays
