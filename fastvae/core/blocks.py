"""Likelihoods made of column blocks: what the user writes, and its configuration.

A block covers consecutive columns of the data; the decoder's last layer outputs each
column's parameters (one per column, K for a categorical column of K classes)::

    VAE(likelihood=[Gaussian(7, scale="learned"), Categorical([5, 7, 8]), NegBinomial(3),
                    Poisson(2), Bernoulli(4)])

takes rows of 7 + 3 + 3 + 2 + 4 = 19 columns (a categorical column holds the integer code
0..K-1) and its decoder has 7 + 20 + 3 + 2 + 4 = 36 outputs.  The per-cell formulas and their
gradients are in DESIGN.md ("Column blocks") and :mod:`fastvae.backends.reference_blocks`.

:class:`fastvae.core.columns.Columns` compiles a list of blocks into the integer tables the
kernels read.
"""
from __future__ import annotations

import math
import numbers

import numpy as np

from ..backends.codes import (BLK_BERNOULLI, BLK_CATEGORICAL, BLK_GAUSSIAN, BLK_NEGBIN,
                              BLK_POISSON, BLK_ZINB, ENC_LOG1P, ENC_VALUE)


def sigmoid(xp, a):
    """The logistic function of a, stable at both ends (xp: a's array module)."""
    e = xp.exp(-xp.abs(a))
    return xp.where(a >= 0, 1 / (1 + e), e / (1 + e))


def _count(n, what):
    if not isinstance(n, numbers.Integral) or isinstance(n, bool) or n < 1:
        raise ValueError(f"{what} must be a positive integer (a number of columns), got {n!r}")
    return int(n)


def _flag(v, what):
    if not isinstance(v, bool):
        raise ValueError(f"{what} must be True or False, got {v!r}")
    return v


class Block:
    """A run of consecutive data columns with one likelihood.  ``n`` columns; ``kind`` the
    kernel's code; :meth:`widths` the decoder outputs per column.

    What the engine needs of a block, it asks the block (:class:`~fastvae.core.columns.Columns`
    tests no block's type): ``enc_mode``, how the encoder reads a column (None: as a
    categorical code, a row of the first weight matrix); :meth:`invalid`, the values it
    cannot hold; :meth:`aux`, the aux parameters (log-scales, dispersions) its columns read.
    """

    kind = None
    name = None
    #: how the encoder reads the block's columns: ENC_VALUE, ENC_LOG1P, or None (embedded)
    enc_mode = ENC_VALUE
    #: whether the block's aux parameters are per condition (one-hot conditions needed)
    per_condition = False

    def __init__(self, n):
        self.n = _count(n, f"{type(self).__name__}'s n")

    def widths(self):
        """Decoder outputs of each column, a list of n ints."""
        return [1] * self.n

    @property
    def exposure(self):
        return False

    def invalid(self, v):
        """(bad, why, classes) for the block's present cells v (N, n) of float data: bad (N,
        n) marks the values the block cannot hold (NaN never; the caller masks missing
        cells), ``why`` ends the message naming one ("... which is not finite"), with
        ``{k}`` for the column's class count when ``classes`` (n,) is given."""
        raise NotImplementedError(type(self).__name__)

    def means(self, a, log_exposure, xp):
        """The block's distribution means from its decoder outputs a (N, sum of widths),
        bias added, as a new array of a's kind (``xp``: its array module): Gaussian means,
        Bernoulli probabilities, each categorical column's K class probabilities, count
        means exp(a + log exposure) (log_exposure (N,) or None)."""
        return a.copy()

    def draw(self, m, cols, aux, groups, rng, mean):
        """The block's columns (N, n) of host values from the means m (N, P) (float64, every
        block's; see :class:`~fastvae.core.columns.Readout`): with ``mean`` their typical
        values, else a draw from p(x | z) with NumPy Generator ``rng``, one column after
        another.  cols (n, 6): the block's rows of the kernels' column table (its outputs'
        offset, width, aux index, stride); aux: the model's aux vector; groups (N,) the rows'
        condition groups."""
        out = np.empty((m.shape[0], self.n))
        for k, (_, o, _, ab, stride, _) in enumerate(cols.tolist()):
            mu = m[:, o]  # (one output per column: a categorical block draws its own way)
            out[:, k] = mu if mean else self.draw_column(mu, aux, ab, stride, groups, rng)
        return out

    def draw_column(self, mu, aux, ab, stride, groups, rng):
        """One column's draw (N,) from its means mu (N,) (see :meth:`draw`)."""
        raise NotImplementedError(type(self).__name__)

    def aux(self, n_conditions):
        """The aux parameters the block's columns read: None, or (section, size, index,
        stride, fixed) with section "fixed" (fixed log-scales, their values ``fixed``),
        "ls" (learned log-scales) or "theta" (log inverse dispersions); ``size`` entries
        in all; column k reads entry index[k] (+ stride * its condition group)."""
        return None

    def config(self):
        """A JSON-able dict that :func:`block_from_config` turns back into this block."""
        return {"type": self.name, "n": self.n}

    def __eq__(self, other):
        return type(self) is type(other) and self.config() == other.config()

    def __hash__(self):
        return hash(repr(self))

    def __repr__(self):
        args = ", ".join(f"{k}={v!r}" for k, v in self.config().items() if k != "type")
        return f"{type(self).__name__}({args})"


class Gaussian(Block):
    """Real-valued columns: the decoder gives the mean; the log standard deviation is fixed
    (``scale`` a float > 0, the standard deviation), one learned for the block ("learned") or
    one learned per column ("per_column").  Learned log-scales have the soft floor
    LOGSCALE_FLOOR (fastvae.backends.codes), as ``obs_scale`` has."""

    kind, name = BLK_GAUSSIAN, "gaussian"

    def __init__(self, n, scale=1.0):
        super().__init__(n)
        if isinstance(scale, str):
            if scale not in ("learned", "per_column"):
                raise ValueError(f"Gaussian scale must be a positive number, 'learned' or "
                                 f"'per_column', got {scale!r}")
        elif (not isinstance(scale, numbers.Real) or isinstance(scale, bool)
              or not math.isfinite(scale) or scale <= 0):
            raise ValueError(f"Gaussian scale must be a positive number, 'learned' or "
                             f"'per_column', got {scale!r}")
        else:
            scale = float(scale)
        self.scale = scale

    def invalid(self, v):
        return ~np.isfinite(v), "is not finite", None

    def draw_column(self, mu, aux, ab, stride, groups, rng):
        return mu + np.exp(aux[ab]) * rng.standard_normal(mu.shape[0])

    def aux(self, n_conditions):
        if not isinstance(self.scale, str):
            return "fixed", 1, [0] * self.n, 0, [math.log(self.scale)]
        if self.scale == "learned":
            return "ls", 1, [0] * self.n, 0, None
        return "ls", self.n, list(range(self.n)), 0, None

    def config(self):
        return {"type": self.name, "n": self.n, "scale": self.scale}


class Bernoulli(Block):
    """Columns in [0, 1] (binary, or probabilities): the decoder gives logits."""

    kind, name = BLK_BERNOULLI, "bernoulli"

    def invalid(self, v):
        return ~((v >= 0) & (v <= 1)), "is outside [0, 1]", None

    def means(self, a, log_exposure, xp):
        return sigmoid(xp, a)

    def draw_column(self, mu, aux, ab, stride, groups, rng):
        return (rng.random(mu.shape[0]) < mu).astype(float)


class Categorical(Block):
    """One column per entry of ``classes`` (an int, or a list of ints >= 2): the column
    holds the integer code 0..K-1 of one of K classes, and the decoder gives K logits (a
    softmax group per column).  The encoder reads the code as a row of its first weight
    matrix, the product of a one-hot vector with it, without building the vector."""

    kind, name = BLK_CATEGORICAL, "categorical"
    enc_mode = None  # the code picks a row of the encoder's first weight matrix

    def __init__(self, classes):
        many = classes if isinstance(classes, (list, tuple)) else [classes]
        if not many:
            raise ValueError("Categorical needs at least one column: classes=[K, ...]")
        out = []
        for k in many:
            if not isinstance(k, numbers.Integral) or isinstance(k, bool) or k < 2:
                raise ValueError(f"Categorical classes must be integers >= 2 (the number of "
                                 f"classes of each column), got {k!r}")
            out.append(int(k))
        self.classes = out
        self.n = len(out)

    def widths(self):
        return list(self.classes)

    def invalid(self, v):
        k = np.array(self.classes)
        return ((v != np.floor(v)) | (v < 0) | (v >= k),
                "is not a code in 0..K-1 (K = {k} classes)", k)

    def means(self, a, log_exposure, xp):
        m, o = a.copy(), 0
        for w in self.classes:  # a softmax per column
            # (on a C-ordered copy of the column's logits: the same operations, 1.4x
            # faster than on the strided slice of a wide row; a copy always, since a
            # column that spans a is contiguous and ascontiguousarray would hand back a)
            g = a[:, o:o + w].copy()
            g -= g.max(axis=1, keepdims=True)
            xp.exp(g, out=g)
            g /= g.sum(axis=1, keepdims=True)
            m[:, o:o + w] = g
            o += w
        return m

    def draw(self, m, cols, aux, groups, rng, mean):
        """Codes: the most probable (``mean``) or one drawn from the K probabilities."""
        N = m.shape[0]
        out = np.empty((N, self.n))
        for k, (_, o, w, _, _, _) in enumerate(cols.tolist()):
            p = m[:, o:o + w]
            if mean:
                out[:, k] = p.argmax(axis=1)
            else:
                u = rng.random(N)[:, None]
                out[:, k] = np.minimum((np.cumsum(p, axis=1) < u).sum(axis=1), w - 1)
        return out

    def config(self):
        return {"type": self.name, "classes": list(self.classes)}


class Poisson(Block):
    """Count columns (integers >= 0): the decoder gives the log-rate, to which the row's
    log-exposure is added when ``exposure`` is True (a library size or size factor, passed
    to fit and the estimators as ``exposure=``)."""

    kind, name = BLK_POISSON, "poisson"
    enc_mode = ENC_LOG1P  # counts reach the encoder as log(1 + x)

    def __init__(self, n, exposure=False):
        super().__init__(n)
        self._exposure = _flag(exposure, f"{type(self).__name__}'s exposure")

    @property
    def exposure(self):
        return self._exposure

    def invalid(self, v):
        return (v != np.floor(v)) | (v < 0) | ~np.isfinite(v), \
            "is not a count (an integer >= 0)", None

    def means(self, a, log_exposure, xp):
        if self.exposure and log_exposure is not None:
            a = a + log_exposure[:, None]
        return xp.exp(a)

    def draw_column(self, mu, aux, ab, stride, groups, rng):
        return rng.poisson(mu)

    def config(self):
        return {"type": self.name, "n": self.n, "exposure": self._exposure}


class NegBinomial(Poisson):
    """Count columns with a negative binomial (NB2, as scVI): the decoder gives the log-mean
    (plus the log-exposure when ``exposure``); the inverse dispersion theta = exp(r) is
    learned per column (``dispersion="column"``) or per column and condition ("condition":
    needs one-hot conditions, n_conditions of them).  The parameter ``dec.log_theta`` holds
    r, starting at 0 (theta = 1)."""

    kind, name = BLK_NEGBIN, "negbinomial"

    def __init__(self, n, exposure=False, dispersion="column"):
        super().__init__(n, exposure)
        if dispersion not in ("column", "condition"):
            raise ValueError(f"{type(self).__name__} dispersion must be 'column' or "
                             f"'condition', got {dispersion!r}")
        self.dispersion = dispersion
        self.per_condition = dispersion == "condition"

    def aux(self, n_conditions):
        groups = n_conditions if self.per_condition else 1
        return ("theta", self.n * groups, list(range(self.n)),
                self.n if self.per_condition else 0, None)

    # (its checks are Poisson's: counts)

    def draw_column(self, mu, aux, ab, stride, groups, rng):
        th = np.exp(aux[ab + groups * stride])  # a gamma-Poisson mixture
        return rng.poisson(rng.gamma(th, mu / th))

    def config(self):
        return {"type": self.name, "n": self.n, "exposure": self.exposure,
                "dispersion": self.dispersion}


class ZINB(NegBinomial):
    """Count columns with a zero-inflated negative binomial (scVI's ``gene_likelihood=
    "zinb"``): a zero with probability pi, else a NegBinomial count.  Two decoder outputs per
    column, [a, zeta]: the NB's log-mean a (plus the log-exposure when ``exposure``) and the
    zero-inflation logit zeta, pi = sigmoid(zeta), so the inflation depends on the code like
    the mean does; theta as :class:`NegBinomial` (``dispersion``).  Its means (decode's
    output) are, per column, the distribution's mean (1 - pi) mu and pi."""

    kind, name = BLK_ZINB, "zinb"

    def widths(self):
        return [2] * self.n

    def means(self, a, log_exposure, xp):
        eta = a[:, 0::2]
        if self.exposure and log_exposure is not None:
            eta = eta + log_exposure[:, None]
        pi = sigmoid(xp, a[:, 1::2])
        m = xp.empty_like(a)
        m[:, 0::2] = (1 - pi) * xp.exp(eta)
        m[:, 1::2] = pi
        return m

    def draw(self, m, cols, aux, groups, rng, mean):
        """Counts: the mean (``mean``), or zero with probability pi and else an NB draw of
        mean mu (a gamma-Poisson mixture; mu is the means' (1 - pi) mu over 1 - pi)."""
        N = m.shape[0]
        out = np.empty((N, self.n))
        for k, (_, o, _, ab, stride, _) in enumerate(cols.tolist()):
            mix, pi = m[:, o], m[:, o + 1]
            if mean:
                out[:, k] = mix
                continue
            keep = 1 - pi
            with np.errstate(invalid="ignore", divide="ignore"):
                mu = np.where(keep > 0, mix / keep, 0.0)  # (pi = 1: always a zero)
            nb = super().draw_column(mu, aux, ab, stride, groups, rng)
            out[:, k] = np.where(rng.random(N) < pi, 0.0, nb)
        return out


#: config "type" -> block class
BLOCKS = {cls.name: cls for cls in (Gaussian, Bernoulli, Categorical, Poisson, NegBinomial,
                                    ZINB)}


def block_from_config(cfg):
    """The block a :meth:`Block.config` dict describes."""
    if isinstance(cfg, Block):
        return cfg
    if not isinstance(cfg, dict) or cfg.get("type") not in BLOCKS:
        raise ValueError(f"a likelihood block must be one of {', '.join(c.__name__ for c in BLOCKS.values())} "
                         f"(or its config dict), got {cfg!r}")
    args = {k: v for k, v in cfg.items() if k != "type"}
    return BLOCKS[cfg["type"]](**args)


def parse_blocks(likelihood):
    """A list of blocks from a list/tuple of blocks or config dicts (a single block is a
    list of one); None for a likelihood name (a string)."""
    if isinstance(likelihood, str):
        return None
    if isinstance(likelihood, (Block, dict)):
        likelihood = [likelihood]
    if not isinstance(likelihood, (list, tuple)) or not likelihood:
        names = ", ".join(c.__name__ for c in BLOCKS.values())
        raise ValueError(f"likelihood must be 'bernoulli', 'gaussian' or a non-empty list of "
                         f"blocks ({names}), got {likelihood!r}")
    return [block_from_config(b) for b in likelihood]
