"""Scalar math for the Numba kernels: fastmath flags chosen once, and vectorisable exp/log1p.

Why hand-written exp and log1p: without Intel's SVML, LLVM cannot vectorise calls to libm,
and a scalar ``expf`` + ``log1pf`` pair cost about 17 ns per element here, which made the
Bernoulli loss alone slower than PyTorch's whole step at batch 128.  The float32 versions
below are plain polynomial arithmetic that LLVM turns into AVX-512 code (about 0.5 ns per
element), accurate to a few float32 ulp.  float64 keeps the libm functions: that path exists
for exactness, not speed.
"""
from __future__ import annotations

import math
import types as types_mod

import numpy as np
from llvmlite import ir
from numba import njit, types
from numba.extending import intrinsic, overload

#: LLVM fast-math flags used by every kernel.  No 'nnan'/'ninf': NaN and inf must propagate
#: so that bad values surface instead of being optimised into garbage.
FASTMATH = {"nsz", "arcp", "contract", "afn", "reassoc"}

# error_model="numpy": division by zero yields inf/nan instead of raising; the Python
# model's zero check is what stopped LLVM from vectorising every loop with a division.
#: the decorator of every cpu kernel: these fast-math flags, cached on disk, no GIL held
jit = njit(fastmath=FASTMATH, error_model="numpy", cache=True, nogil=True)


def jit_module_functions(module, names):
    """Numba versions of the scalar functions ``names`` of ``module`` (plain Python that uses
    only ``math``, such as :mod:`fastvae.backends.special`), compiled from the same source:
    each is rebuilt over a copy of the module's globals in which the functions already
    compiled (list helpers first) are the Numba ones, so that they call each other compiled.
    Returns {name: dispatcher}."""
    scope = dict(vars(module))
    out = {}
    for name in names:
        fn = getattr(module, name)
        twin = types_mod.FunctionType(fn.__code__, scope, name, fn.__defaults__)
        twin.__qualname__, twin.__module__ = fn.__qualname__, fn.__module__
        scope[name] = out[name] = jit(twin)
    return out

_LOG2E = np.float32(1.4426950408889634)
_LN2_HI = np.float32(0.693145751953125)       # ln 2 split so that n*_LN2_HI is exact
_LN2_LO = np.float32(1.428606765330187e-06)
_EXP_MIN = np.float32(-87.0)                  # below this exp(t) would leave normal range


@intrinsic
def _int32_bits_as_float32(typingctx, i):
    sig = types.float32(types.int32)

    def codegen(context, builder, signature, args):
        return builder.bitcast(args[0], ir.FloatType())

    return sig, codegen


def exp_nonpos(t):
    """exp(t) for t <= 0 (pure Python stand-in; Numba uses the overload below)."""
    return math.exp(t)


@overload(exp_nonpos, fastmath=FASTMATH)
def _exp_nonpos_impl(t):
    if t == types.float32:
        def impl(t):
            # exp(t) = 2^n * exp(r), r = t - n ln2 in [-ln2/2, ln2/2]; degree-6 Taylor on r
            t = max(t, _EXP_MIN)
            n = np.floor(t * _LOG2E + np.float32(0.5))  # np.floor stays float32; math.floor gives int64
            r = t - n * _LN2_HI - n * _LN2_LO
            p = np.float32(1.0 / 720.0)
            p = p * r + np.float32(1.0 / 120.0)
            p = p * r + np.float32(1.0 / 24.0)
            p = p * r + np.float32(1.0 / 6.0)
            p = p * r + np.float32(0.5)
            p = p * r + np.float32(1.0)
            p = p * r + np.float32(1.0)
            return p * _int32_bits_as_float32((np.int32(n) + np.int32(127)) << np.int32(23))
        return impl

    def impl64(t):
        return math.exp(t)
    return impl64


def log1p_unit(e):
    """log(1 + e) for e in [0, 1] (pure Python stand-in; Numba uses the overload below)."""
    return math.log1p(e)


@overload(log1p_unit, fastmath=FASTMATH)
def _log1p_unit_impl(e):
    if e == types.float32:
        def impl(e):
            # log(1+e) = 2 atanh(s), s = e / (2 + e) in [0, 1/3]; odd series to s^13.
            # Exact for tiny e (no cancellation): the leading term is 2s.
            s = e / (np.float32(2.0) + e)
            s2 = s * s
            p = np.float32(1.0 / 13.0)
            p = p * s2 + np.float32(1.0 / 11.0)
            p = p * s2 + np.float32(1.0 / 9.0)
            p = p * s2 + np.float32(1.0 / 7.0)
            p = p * s2 + np.float32(1.0 / 5.0)
            p = p * s2 + np.float32(1.0 / 3.0)
            p = p * s2 + np.float32(1.0)
            return np.float32(2.0) * s * p
        return impl

    def impl64(e):
        return math.log1p(e)
    return impl64


def vexpm1(t):
    """exp(t) - 1 for t <= 88, without the cancellation of the plain difference near 0
    (pure Python stand-in; Numba uses the overload below).  libm's expm1f costs about
    14 ns a call here and does not vectorise; this is plain arithmetic."""
    return math.expm1(t)


@overload(vexpm1, fastmath=FASTMATH)
def _vexpm1_impl(t):
    if t == types.float32:
        def impl(t):
            # near 0 (|t| < 0.7) a Taylor series in t: no cancellation, its leading term
            # is t itself.  Further out |exp(t) - 1| is at least 0.5, so the difference
            # keeps its relative precision (exp(t) = 1 / exp(-t) above 0).  All three are
            # computed and one selected: this vectorises.  Within 4 ulp (a test).
            p = np.float32(1.0 / 362880.0)
            p = p * t + np.float32(1.0 / 40320.0)
            p = p * t + np.float32(1.0 / 5040.0)
            p = p * t + np.float32(1.0 / 720.0)
            p = p * t + np.float32(1.0 / 120.0)
            p = p * t + np.float32(1.0 / 24.0)
            p = p * t + np.float32(1.0 / 6.0)
            p = p * t + np.float32(0.5)
            p = p * t + np.float32(1.0)
            near = p * t
            e = exp_nonpos(-abs(t))
            far = e - np.float32(1.0) if t < np.float32(0.0) else np.float32(1.0) / e - np.float32(1.0)
            return near if abs(t) < np.float32(0.7) else far
        return impl

    def impl64(t):
        return math.expm1(t)
    return impl64


def vexp(t):
    """exp(t) for t <= 88 (pure Python stand-in; Numba uses the overload below): exp(-|t|),
    inverted above 0, so that it vectorises like exp_nonpos."""
    return math.exp(t)


@overload(vexp, fastmath=FASTMATH)
def _vexp_impl(t):
    if t == types.float32:
        def impl(t):
            e = exp_nonpos(-abs(t))
            return e if t <= np.float32(0.0) else np.float32(1.0) / e
        return impl

    def impl64(t):
        return math.exp(t)
    return impl64
