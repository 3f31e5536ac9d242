"""Checkpoints: one file with everything needed to continue training exactly.

The file is a NumPy ``.npz`` archive (readable with ``np.load(path)``, no pickle):

- ``params``: the flat parameter buffer, as laid out by :mod:`fastvae.params`;
- ``opt.<name>``: the optimizer's buffers (Adam's ``m``, ``v``; SGD's ``buf``), if any;
- ``meta``: UTF-8 JSON holding the format tag and version, fastvae's version, the model's
  configuration, the optimizer's configuration and step count, the noise generator's state,
  the training state (epoch, position in the epoch, data-order generator) and the history.

Writes go to a temporary file in the same directory, are flushed to disk, then renamed
over the target, so a crash leaves either the old checkpoint or the new one, never half of
one.  Loading checks the tag, the version and a CRC-32 of the parameters, and names the file
in every error.
"""
from __future__ import annotations

import json
import os
import tempfile
import zipfile
import zlib

import numpy as np

from ._version import __version__

FORMAT = "fastvae-checkpoint"
FORMAT_VERSION = 1


class CheckpointError(ValueError):
    """A file that is not a usable fastvae checkpoint, with the reason."""


def save(model, path):
    """Write ``model`` (parameters, configuration, optimizer state, generator states,
    training state and history) to ``path`` atomically.  Returns the path."""
    path = os.fspath(path)
    bk = model._bk
    params = np.ascontiguousarray(bk.to_numpy(model.flat_params))
    arrays = {"params": params}
    opt_meta = None
    if model.optimizer is not None:
        st = model.optimizer.state_dict()
        opt_meta = {"config": model.optimizer.config(), "step_count": st.pop("step_count")}
        arrays.update({f"opt.{k}": v for k, v in st.items()})
    meta = {
        "format": FORMAT,
        "format_version": FORMAT_VERSION,
        "fastvae_version": __version__,
        "config": model.config(),
        "params_crc32": zlib.crc32(params.tobytes()),
        "noise_rng": model.rng.bit_generator.state,
        "noise_counter": model._noise_counter,
        "optimizer": opt_meta,
        "train_state": model._train_state,
        "history": model.history,
        "metadata": model.metadata,
    }
    arrays["meta"] = np.frombuffer(json.dumps(meta).encode("utf-8"), dtype=np.uint8)
    _atomic_write(path, lambda f: np.savez(f, **arrays))
    return path


def _atomic_write(path, write):
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
    if not os.path.isfile(path):
        raise FileNotFoundError(f"{path}: no such checkpoint file")
    with open(path, "rb") as f:
        magic = f.read(4)
    if magic not in (b"PK\x03\x04", b"PK\x05\x06"):
        raise CheckpointError(f"{path}: not a fastvae checkpoint (not an .npz archive; "
                              f"it starts with {magic!r})")
    try:
        z = np.load(path, allow_pickle=False)
        if not hasattr(z, "files"):  # a bare .npy array
            raise CheckpointError(f"{path}: not a fastvae checkpoint (a single array, "
                                  f"shape {getattr(z, 'shape', None)})")
        with z:
            if "meta" not in z.files:
                raise CheckpointError(f"{path}: not a fastvae checkpoint (an .npz archive "
                                      f"without 'meta'; it holds {z.files})")
            arrays = {k: z[k] for k in z.files}
    except CheckpointError:
        raise
    except (zipfile.BadZipFile, ValueError, OSError, EOFError, KeyError) as e:
        raise CheckpointError(f"{path}: not a readable fastvae checkpoint (truncated or "
                              f"corrupt: {e})") from None
    try:
        meta = json.loads(arrays.pop("meta").tobytes().decode("utf-8"))
    except (UnicodeDecodeError, json.JSONDecodeError) as e:
        raise CheckpointError(f"{path}: corrupt checkpoint metadata ({e})") from None
    if not isinstance(meta, dict) or meta.get("format") != FORMAT:
        raise CheckpointError(f"{path}: not a fastvae checkpoint (format tag "
                              f"{meta.get('format') if isinstance(meta, dict) else None!r})")
    if meta.get("format_version") != FORMAT_VERSION:
        raise CheckpointError(f"{path}: checkpoint format version {meta.get('format_version')}"
                              f" written by fastvae {meta.get('fastvae_version')}; this "
                              f"fastvae ({__version__}) reads version {FORMAT_VERSION}")
    params = arrays.get("params")
    if params is None or zlib.crc32(np.ascontiguousarray(params).tobytes()) != meta.get("params_crc32"):
        raise CheckpointError(f"{path}: parameter checksum mismatch (the file is corrupt)")
    return meta, arrays


def load(path, backend=None):
    """Rebuild the model saved at ``path`` on ``backend`` (default: the current default),
    with its optimizer (``model.optimizer``), generator states, training state and
    history, so that ``model.fit`` continues exactly where the saved run stopped."""
    from .model import VAE
    from .optim import make_optimizer

    meta, arrays = read(path)
    cfg = dict(meta["config"])
    try:
        model = VAE(backend=backend, **cfg)
    except (TypeError, ValueError) as e:
        raise CheckpointError(f"{path}: cannot rebuild the model from its configuration "
                              f"({e})") from None
    params = arrays["params"]
    if params.shape != tuple(model.flat_params.shape) or params.dtype != model.dtype:
        raise CheckpointError(f"{path}: parameters have shape {params.shape} and dtype "
                              f"{params.dtype}; the configuration needs "
                              f"{tuple(model.flat_params.shape)} {model.dtype}")
    model.flat_params[...] = model._bk.asarray(params)
    model.rng.bit_generator.state = meta["noise_rng"]
    model._noise_counter = int(meta.get("noise_counter", 0))  # the GPU's noise position
    if meta.get("optimizer"):
        om = meta["optimizer"]
        conf = dict(om["config"])
        opt = make_optimizer(conf.pop("name"), model, **conf)
        st = {k[4:]: v for k, v in arrays.items() if k.startswith("opt.")}
        st["step_count"] = om["step_count"]
        try:
            opt.load_state_dict(st)
        except (KeyError, ValueError) as e:
            raise CheckpointError(f"{path}: optimizer state does not fit ({e})") from None
        model.optimizer = opt
    model._train_state = meta.get("train_state")
    model.history = list(meta.get("history") or [])
    model.metadata = dict(meta.get("metadata") or {})
    return model
