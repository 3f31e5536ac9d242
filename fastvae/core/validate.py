"""Input checks that turn bad arguments into errors naming the problem.

They run before any kernel, so a kernel never sees a wrong shape, dtype or value.
"""
from __future__ import annotations

import inspect
import math
import numbers
import os

import numpy as np

from ..backends.codes import ACT_ELU, ACT_LEAKY_RELU, LIK_BERNOULLI, LIK_GAUSSIAN, activation_code


class DataError(ValueError):
    """A data file or array that cannot be used, with the reason (also
    ``fastvae.data.DataError``)."""


def user_stacklevel():
    """warnings.warn's stacklevel, for its caller, of the first frame outside fastvae: the
    user's own call, however many of the package's layers lie between."""
    package = os.path.dirname(os.path.dirname(os.path.abspath(__file__))) + os.sep
    frame, level = inspect.currentframe().f_back, 1
    while frame is not None and frame.f_code.co_filename.startswith(package):
        frame, level = frame.f_back, level + 1
    return level


def positive_int(v, what):
    """v as an int >= 1, else a ValueError naming ``what`` and the value."""
    if isinstance(v, bool) or not isinstance(v, numbers.Integral) or v < 1:
        raise ValueError(f"{what} must be a positive integer, got {v!r}")
    return int(v)


def nonneg_int(v, what):
    """v as an int >= 0, else a ValueError naming ``what`` and the value."""
    if isinstance(v, bool) or not isinstance(v, numbers.Integral) or v < 0:
        raise ValueError(f"{what} must be an integer >= 0, got {v!r}")
    return int(v)


def real(v, what, *, above=None, at_least=None, below=None):
    """v as a finite float, optionally > ``above``, >= ``at_least``, < ``below``; else a
    ValueError naming ``what``, the value and the range (NaN and inf are refused)."""
    ok = (not isinstance(v, bool) and isinstance(v, numbers.Real) and math.isfinite(v)
          and (above is None or v > above) and (at_least is None or v >= at_least)
          and (below is None or v < below))
    if not ok:
        bounds = [f"> {above:g}" if above is not None else None,
                  f">= {at_least:g}" if at_least is not None else None,
                  f"< {below:g}" if below is not None else None]
        rng = " and ".join(b for b in bounds if b)
        raise ValueError(f"{what} must be a finite number{' ' + rng if rng else ''}, got {v!r}")
    return float(v)


def choice(v, what, options):
    """v if it is one of ``options`` (strings), else a ValueError listing them."""
    if not isinstance(v, str) or v not in options:
        raise ValueError(f"{what} must be one of {', '.join(map(repr, options))}; got {v!r}")
    return v


def boolean(v, what):
    """v as a bool; only True, False (and NumPy's bools) are accepted, not 0/1 or strings."""
    if not isinstance(v, (bool, np.bool_)):
        raise ValueError(f"{what} must be True or False, got {v!r}")
    return bool(v)


def int_tuple(v, what):
    """An int or a sequence of positive ints -> tuple of ints (an empty sequence is allowed:
    no hidden layer)."""
    if isinstance(v, numbers.Integral) and not isinstance(v, bool):
        v = (v,)
    if isinstance(v, (str, bytes, dict, set, frozenset)) or not hasattr(v, "__iter__"):
        raise ValueError(f"{what} must be an integer or a sequence of integers, got {v!r}")
    return tuple(positive_int(n, f"{what} width") for n in v)


def _as_float_array(a, what, dtype, xp):
    """Bring ``a`` to a C-contiguous array of ``dtype`` on the backend's device.

    Float input of another precision is converted (a copy); integer, bool and complex
    input is refused rather than guessed at (uint8 images need scaling, not a cast).
    """
    if not hasattr(a, "dtype") or not hasattr(a, "shape"):
        a = np.asarray(a)
    kind = np.dtype(a.dtype).kind
    if kind != "f":
        hint = " (8-bit images: x.astype('float32') / 255)" if kind in "ui" else ""
        raise TypeError(f"{what} must be a floating-point array, got dtype {a.dtype}{hint}")
    if xp is np and not isinstance(a, np.ndarray):
        a = np.asarray(a.get() if hasattr(a, "get") else a)
    if a.dtype != dtype or not a.flags.c_contiguous or not isinstance(a, xp.ndarray):
        a = xp.ascontiguousarray(xp.asarray(a), dtype=dtype)
    return a


def check_batch(x, model, validate=True, check_range=True):
    """x must be (B, D) floats with D = model.input_dim; finite; in [0, 1] for Bernoulli."""
    xp = model.kernels.xp
    ndim = getattr(x, "ndim", None)
    if ndim is None:
        x = np.asarray(x)
        ndim = x.ndim
    if ndim != 2:
        raise ValueError(f"x must be a 2-D array (batch, {model.input_dim}), got shape {tuple(x.shape)}"
                         + (" (flatten images first: x.reshape(len(x), -1))" if ndim > 2 else ""))
    cl = getattr(model, "columns", None)
    if cl is not None and x.shape[1] != cl.width:
        raise ValueError(f"x has {x.shape[1]} columns but the model's data rows have "
                         f"{cl.width}: {cl.D} data columns, {cl.C} conditions and {cl.E} "
                         f"exposure (model.compose(X, conditions, exposure) builds them; "
                         f"x shape {tuple(x.shape)})")
    if cl is None and x.shape[1] != model.input_dim:
        raise ValueError(f"x has {x.shape[1]} columns but the model's input_dim is "
                         f"{model.input_dim} (x shape {tuple(x.shape)})")
    if x.shape[0] == 0:
        raise ValueError("x has no rows")
    x = _as_float_array(x, "x", model.dtype, xp)
    if cl is not None:
        if validate:  # by column, on the host: the error names the cell and its value
            cl.check(model.kernels.to_numpy(x))
        return x
    if validate:
        raise_bad_data(*model.kernels.check_data(x, *data_bounds(model, check_range)))
    return x


def data_bounds(model, check_range=True):
    """(lo, hi) the data must lie in: [0, 1] for the Bernoulli likelihood, else anything."""
    bern = model.lik_code == LIK_BERNOULLI and check_range
    return (0.0, 1.0) if bern else (-np.inf, np.inf)


def raise_bad_data(n_bad, n_out):
    """The error for check_data's counts (nothing when both are 0)."""
    if n_bad:
        raise ValueError(f"x contains {n_bad} NaN or infinite value(s)")
    if n_out:
        raise ValueError(f"x has {n_out} value(s) outside [0, 1], which the Bernoulli "
                         "likelihood needs (scale the data, or use likelihood='gaussian')")


def check_eps(eps, L, B, Z, xp):
    """eps must be (L, B, Z), or (B, Z) when L == 1; returned as (L*B, Z)."""
    shape = tuple(getattr(eps, "shape", np.shape(eps)))
    ok = shape == (L, B, Z) or (L == 1 and shape == (B, Z))
    if not ok:
        want = f"({L}, {B}, {Z})" + (f" or ({B}, {Z})" if L == 1 else "")
        raise ValueError(f"eps must have shape {want} for n_samples={L}, batch {B}, "
                         f"latent_dim {Z}; got {shape}")
    kind = np.dtype(getattr(eps, "dtype", np.float64)).kind
    if kind != "f":
        raise TypeError(f"eps must be a floating-point array, got dtype {eps.dtype}")
    eps = xp.asarray(eps).reshape(L * B, Z)
    if not bool(xp.isfinite(eps).all()):
        raise ValueError("eps contains NaN or infinite values")
    return eps


def check_latent(z, model):
    """z must be (N, Z) floats with Z = model.latent_dim, finite (host arrays are scanned;
    arrays already on a GPU are taken as they are: scanning them would wait for it)."""
    shape = tuple(getattr(z, "shape", np.shape(z)))
    if len(shape) != 2 or shape[1] != model.latent_dim:
        raise ValueError(f"z must have shape (N, {model.latent_dim}), got {shape}")
    xp = model.kernels.xp
    if not hasattr(z, "dtype"):
        z = np.asarray(z)
    on_device = xp is not np and isinstance(z, xp.ndarray)
    if not on_device and z.dtype.kind == "f":
        with np.errstate(over="ignore"):  # (1e300 is inf in float32: said just below)
            z = np.asarray(z).astype(model.dtype, copy=False)
    if not on_device and z.dtype.kind == "f" and not np.isfinite(z).all():
        bad = np.argwhere(~np.isfinite(z))[0]  # (scanned here, before it goes to a GPU)
        raise ValueError(f"z has a non-finite value ({z[tuple(bad)]}) at row {bad[0]}, "
                         f"column {bad[1]}")
    return _as_float_array(z, "z", model.dtype, xp)


# ------------------------------------------------------------ the model's arguments
def activation_config(name, alpha):
    """(code, alpha) for an activation name and the user's alpha (None: the default)."""
    code, default = activation_code(name)
    if code not in (ACT_LEAKY_RELU, ACT_ELU):
        if alpha is not None:
            raise ValueError(f"activation_alpha applies to leaky_relu and elu only; "
                             f"activation={name!r} has none, got activation_alpha={alpha!r}")
        return code, 0.0
    if alpha is None:
        return code, default
    return code, real(alpha, f"activation_alpha (for activation={name!r}; backward reads the "
                             "derivative off the sign of the output)", above=0)


def check_seed(seed):
    """None, a non-negative int or a NumPy Generator (else a ValueError); returned as is."""
    if seed is None or isinstance(seed, np.random.Generator):
        return seed
    return nonneg_int(seed, "seed")


def generator(seed):
    """A NumPy Generator from None (fresh entropy), a non-negative int, or a Generator."""
    seed = check_seed(seed)
    return seed if isinstance(seed, np.random.Generator) else np.random.default_rng(seed)


def obs_scale_config(obs_scale, lik, D):
    """-> (learn_scale, log-scale size S, fixed log-scale value)."""
    if isinstance(obs_scale, str):
        if obs_scale not in ("learned", "per_pixel"):
            raise ValueError("obs_scale must be a positive number, 'learned' or 'per_pixel', "
                             f"got {obs_scale!r}")
        if lik != LIK_GAUSSIAN:
            raise ValueError(f"obs_scale={obs_scale!r} needs likelihood='gaussian'")
        return True, (1 if obs_scale == "learned" else D), 0.0
    if isinstance(obs_scale, bool) or not isinstance(obs_scale, numbers.Real):
        raise ValueError("obs_scale must be a positive number, 'learned' or 'per_pixel', "
                         f"got {obs_scale!r}")
    s = float(obs_scale)
    if not (math.isfinite(s) and s > 0):
        raise ValueError(f"obs_scale must be a positive finite number, got {obs_scale!r}")
    if lik != LIK_GAUSSIAN and s != 1.0:
        raise ValueError(f"obs_scale applies to likelihood='gaussian' only (the Bernoulli "
                         f"likelihood has no scale), got obs_scale={obs_scale!r}")
    return False, 1, math.log(s)


#: the training objectives a model can have
OBJECTIVES = ("elbo", "iwae", "iwae-dreg")


def objective_config(objective, beta, free_bits):
    """The objective's name, checked; beta and free bits are defined for the ELBO only."""
    objective = choice(objective, "objective", OBJECTIVES)
    if objective != "elbo" and (beta != 1.0 or free_bits != 0.0):
        what = f"beta={beta!r}" if beta != 1.0 else f"free_bits={free_bits!r}"
        raise ValueError(f"{what} with objective={objective!r}: beta and free bits weight the "
                         "ELBO's KL term, which the importance-weighted bound does not have "
                         "(use objective='elbo', or beta=1 and free_bits=0)")
    return objective
