"""Integer codes and constants shared by every backend's kernels, and the public names they
stand for: the one place they are written down.

Kernels take small integers rather than strings so that Numba and CUDA can branch on them
cheaply; the model turns user-facing names into these codes once, at construction.  The CUDA
kernels do not define these values themselves: :func:`cuda_defines` passes them to every
compile (``fastvae.backends.cuda.compile_options``), and a kernel file compiled without them
stops with an ``#error``.
"""
ACT_IDENTITY = 0
ACT_RELU = 1
ACT_LEAKY_RELU = 2
ACT_TANH = 3
ACT_SIGMOID = 4
ACT_ELU = 5
ACT_SOFTPLUS = 6

#: public activation name -> (code, default alpha); alpha is the leaky slope or ELU scale
ACTIVATIONS = {
    "relu": (ACT_RELU, 0.0),
    "leaky_relu": (ACT_LEAKY_RELU, 0.01),
    "tanh": (ACT_TANH, 0.0),
    "sigmoid": (ACT_SIGMOID, 0.0),
    "elu": (ACT_ELU, 1.0),
    "softplus": (ACT_SOFTPLUS, 0.0),
}

LIK_BERNOULLI = 0
LIK_GAUSSIAN = 1

#: public likelihood name -> code
LIKELIHOODS = {"bernoulli": LIK_BERNOULLI, "gaussian": LIK_GAUSSIAN}


#: the kinds of likelihood column blocks (fastvae.core.blocks): the code each column of a
#: block model carries in the kernels' column table
BLK_GAUSSIAN = 0
BLK_BERNOULLI = 1
BLK_CATEGORICAL = 2
BLK_POISSON = 3
BLK_NEGBIN = 4
BLK_ZINB = 5

#: the modes of the encoder's dense input columns (encoder_input): the value (NaN read as
#: 0), log1p of a count (NaN read as 0), and the observed mask (1, or 0 where NaN)
ENC_VALUE = 0
ENC_LOG1P = 1
ENC_MASK = 2


def activation_code(name):
    """Return (code, alpha) for a public activation name, or raise a ValueError listing them."""
    try:
        return ACTIVATIONS[name]
    except (KeyError, TypeError):
        raise ValueError(
            f"unknown activation {name!r}; choose one of: {', '.join(ACTIVATIONS)}"
        ) from None


def likelihood_code(name):
    """Return the code for a public likelihood name, or raise a ValueError listing them."""
    try:
        return LIKELIHOODS[name]
    except (KeyError, TypeError):
        raise ValueError(
            f"unknown likelihood {name!r}; choose one of: {', '.join(LIKELIHOODS)}"
        ) from None

#: logvar is clamped to this range before exp (sigma from 3e-7 to 2.2e4).  Outside it the
#: sample path's gradient with respect to logvar is zero, and the KL term continues linearly
#: with its slope at the edge, so that the KL still pulls logvar back into the range.
LOGVAR_RANGE = (-30.0, 20.0)

#: learned Gaussian log-scales (obs_scale="learned" | "per_pixel") are softly floored:
#: log sigma = floor + softplus(raw - floor), as in the sigma-VAE (Rybkin et al. 2021), so a
#: constant pixel cannot drive sigma to 0 (sigma >= exp(-6) = 0.0025 in the data's units)
LOGSCALE_FLOOR = -6.0

#: Optimizer moments smaller than this in magnitude are stored as zero.  A moment whose
#: gradient stays zero (a dead ReLU unit, say) decays geometrically into the denormal range
#: within ~800 steps (0.9^n); denormal arithmetic made the Adam step 10x and the whole
#: training step 3x slower.  Flushed values cannot matter: the update they would make is
#: below 1e-22 * lr.
MOMENT_FLUSH = 1e-30
#: the block kernels write a decoder-output gradient (dout) smaller in magnitude than this
#: as zero.  A confident softmax's gradient p - onehot reaches float32's denormals (p below
#: 1.2e-38) after a few thousand steps on a table, and a product reading denormals ran 20x
#: slower (wa_churn: the dec.out weight gradient from 62 to 1,281 us, the whole fit 2x);
#: such a gradient moves no weight by more than 1e-30 * lr
GRAD_FLUSH = 1e-30

#: Philox4x32-10 (Salmon et al., SC'11), the counter-based generator of the noise contract:
#: the two round multipliers and the two Weyl increments of the key (Random123's
#: PHILOX_M4x32_0/1 and PHILOX_W32_0/1)
PHILOX_M = (0xD2511F53, 0xCD9E8D57)
PHILOX_W = (0x9E3779B9, 0xBB67AE85)

#: The float32 noise (normal_eps on float32 arrays, reference.normal_eps): Box-Muller in
#: float32 with these polynomials, the same IEEE operations in the same order on every
#: backend (no contraction into fused multiply-adds), so the same bits everywhere.
#: ln m = t (2 + t^2 (2/3 + t^2 (2/5 + ...))), t = (m - 1) / (m + 1), m in [1/sqrt 2, sqrt 2]
#: (truncation below 1e-9); sin and cos on [-pi/4, pi/4] by their Taylor series to x^9 and
#: x^8 (below 3e-8).  Held as float32 values.  (Numba freezes them into cpu/reparam.py's
#: cached code, whose cache is keyed by that file alone, as with PHILOX_*: a change here
#: needs a fresh compile, NUMBA_CACHE_DIR emptied.)
NOISE_LOG = (2.0, 2.0 / 3, 2.0 / 5, 2.0 / 7, 2.0 / 9)
NOISE_SIN = (-1.0 / 6, 1.0 / 120, -1.0 / 5040, 1.0 / 362880)
NOISE_COS = (-1.0 / 2, 1.0 / 24, -1.0 / 720, 1.0 / 40320)
#: ln 2, pi / 2, sqrt(1/2) and sqrt(2) for the same (float32 values)
NOISE_LN2, NOISE_PIO2, NOISE_SQRT1_2, NOISE_SQRT2 = (0.6931471805599453, 1.5707963267948966,
                                                     0.7071067811865476, 1.4142135623730951)


def noise_f32():
    """{name: value as a Python float holding the float32 value} of the float32 noise's
    constants: NOISE_LOG0..4, NOISE_SIN0..3, NOISE_COS0..3, NOISE_LN2, NOISE_PIO2,
    NOISE_SQRT1_2, NOISE_SQRT2."""
    import numpy as np
    out = {}
    for name, vals in (("NOISE_LOG", NOISE_LOG), ("NOISE_SIN", NOISE_SIN),
                       ("NOISE_COS", NOISE_COS)):
        for i, v in enumerate(vals):
            out[f"{name}{i}"] = float(np.float32(v))
    for name in ("NOISE_LN2", "NOISE_PIO2", "NOISE_SQRT1_2", "NOISE_SQRT2"):
        out[name] = float(np.float32(globals()[name]))
    return out


#: The tile of the CUDA kernels that reduce over rows or columns: a block is TILE_H warps of
#: TILE_W lanes (kernels/common.cuh; fastvae.backends.cuda plans launches with it).  TILE_W
#: is the warp size, 32: common.cuh refuses any other.
TILE_W, TILE_H = 32, 8


def cuda_defines():
    """The ``-DNAME=VALUE`` compiler options that give the CUDA kernels this module's
    constants (activation and likelihood codes, MOMENT_FLUSH, GRAD_FLUSH, the Philox constants, the tile
    shape), in a fixed order.  Every compile of ``kernels/*.cu`` passes them."""
    # every activation, likelihood, block and input-mode code above, so that a new one reaches the kernels too
    values = {name: value for name, value in globals().items()
              if name.startswith(("ACT_", "LIK_", "BLK_", "ENC_")) and isinstance(value, int)}
    values["MOMENT_FLUSH"] = repr(MOMENT_FLUSH)
    values["GRAD_FLUSH"] = repr(GRAD_FLUSH)
    for name, pair in (("PHILOX_M", PHILOX_M), ("PHILOX_W", PHILOX_W)):
        for i, v in enumerate(pair):
            values[f"{name}{i}"] = f"0x{v:08X}u"  # unsigned, as in Random123
    values["TILE_W"], values["TILE_H"] = TILE_W, TILE_H
    for name, v in noise_f32().items():  # the float32 value's double digits: exact as float
        values[name] = f"({v!r}f)"
    return tuple(f"-D{name}={value}" for name, value in values.items())
