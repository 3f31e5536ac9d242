"""The flat parameter buffer: its layout, its named views and its initialisation.

Every parameter tensor of a model is a view into one contiguous 1-D buffer, and so is its
gradient and each optimizer moment.  One buffer means one optimizer kernel per step, one
copy to save or to move between devices, and no per-tensor bookkeeping in the hot path.
"""
from __future__ import annotations

import math
from collections import OrderedDict

import numpy as np

from ..backends.aligned import aligned_zeros
from ..backends.codes import LOGSCALE_FLOOR


#: each tensor starts on a 64-byte boundary (16 float32 / 8 float64) so SIMD loads of a row
#: start aligned; the few padding entries stay zero in params, grads and moments
_ALIGN_BYTES = 64


def build_layout(enc_in, enc_hidden, latent_dim, dec_hidden, out_dim, extras, itemsize,
                 dec_in=None, dec_inject=0):
    """Return (entries, total size).

    enc_in : rows of the encoder's first weight matrix (the data width, or for a block
        model its dense input columns and one-hot rows); dec_in : rows of the decoder's
        first (latent_dim, or latent_dim + the conditions); dec_inject : rows added to
        each later decoder weight (dec.{j}.W, j > 0, and dec.out.W) for the conditions
        that inject_conditions joins to their inputs; out_dim : decoder outputs;
        extras : [(name, size)] of 1-D tensors after the layers (``dec.logscale``,
        ``dec.log_theta``), skipped when the size is 0.
    entries: OrderedDict name -> (offset, shape, fan_in), in the public order
    ``enc.{i}.W, enc.{i}.b, enc.head.W, enc.head.b, dec.{j}.W, dec.{j}.b, dec.out.W,
    dec.out.b[, extras]``.  W has shape (fan_in, fan_out): y = x @ W + b.
    ``fan_in`` is None for tensors not initialised like a linear layer.
    """
    align = max(1, _ALIGN_BYTES // itemsize)
    shapes = []
    prev = enc_in
    for i, n in enumerate(enc_hidden):
        shapes += [(f"enc.{i}.W", (prev, n), prev), (f"enc.{i}.b", (n,), prev)]
        prev = n
    shapes += [("enc.head.W", (prev, 2 * latent_dim), prev),
               ("enc.head.b", (2 * latent_dim,), prev)]
    prev = latent_dim if dec_in is None else dec_in
    for j, n in enumerate(dec_hidden):
        shapes += [(f"dec.{j}.W", (prev, n), prev), (f"dec.{j}.b", (n,), prev)]
        prev = n + dec_inject
    shapes += [("dec.out.W", (prev, out_dim), prev), ("dec.out.b", (out_dim,), prev)]
    shapes += [(name, (size,), None) for name, size in extras if size]
    entries = OrderedDict()
    offset = 0
    for name, shape, fan_in in shapes:
        offset = -(-offset // align) * align
        entries[name] = (offset, shape, fan_in)
        offset += math.prod(shape)
    return entries, offset


def views(flat, entries):
    """OrderedDict name -> view of ``flat`` with the layout's shape (no copies)."""
    out = OrderedDict()
    for name, (off, shape, _) in entries.items():
        out[name] = flat[off:off + math.prod(shape)].reshape(shape)
    return out


def init_linear_(named, entries, rng):
    """Initialise in place like ``torch.nn.Linear``: W and b ~ U(-1/sqrt(fan_in), +).

    (PyTorch's kaiming_uniform with a=sqrt(5) reduces to exactly this bound.)  Log-scales
    start at 0, i.e. an observation standard deviation of 1.
    """
    for name, (_, shape, fan_in) in entries.items():
        v = named[name]
        if fan_in is None:
            v[...] = 0
        else:
            bound = 1.0 / math.sqrt(fan_in)
            v[...] = rng.uniform(-bound, bound, size=shape)


def spec_layout(spec, dec_inject=0):
    """(entries, size) of :func:`build_layout` for the model a
    :class:`~fastvae.core.spec.Spec` describes: a block model's encoder reads its dense
    columns and one-hot codes and its decoder writes the blocks' P outputs from [z |
    conditions]; ``dec.logscale`` holds learned Gaussian log-scales, ``dec.log_theta`` the
    negative binomial log inverse dispersions."""
    cl = spec.columns
    extras = [("dec.logscale", spec.logscale_size if spec.learn_scale else 0)]
    if cl is None:
        enc_in, out_dim, dec_in = spec.input_dim, spec.input_dim, None
    else:
        enc_in, out_dim = cl.n_dense + cl.n_onehot, cl.P
        dec_in = spec.latent_dim + cl.C
        extras.append(("dec.log_theta", cl.n_theta))
    return build_layout(enc_in, spec.enc_hidden, spec.latent_dim, spec.dec_hidden, out_dim,
                        extras, spec.dtype.itemsize, dec_in, dec_inject)


def initial_values(entries, size, dtype, learn_scale, rng):
    """The flat parameters (size,) on the host, 64-byte aligned, initialised from NumPy
    Generator ``rng`` (:func:`init_linear_`); learned log-scales start where sigma is 1."""
    host = aligned_zeros(np, size, dtype)
    named = views(host, entries)
    init_linear_(named, entries, rng)
    if learn_scale:  # the raw value whose soft-floored log-scale is 0
        named["dec.logscale"][...] = LOGSCALE_FLOOR + math.log(math.expm1(-LOGSCALE_FLOOR))
    return host
