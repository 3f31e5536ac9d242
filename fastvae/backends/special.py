"""lgamma, digamma and the two differences the negative binomial needs, written out.

There is no SciPy in a kernel, and neither C's math library nor CUDA's has a digamma, so
these are written once here, as scalar functions of Python floats using only ``math``: the
reference runs them as they are, the cpu backend compiles the same source with Numba
(:func:`fastvae.backends.nbmath.jit`), and the CUDA kernels carry the same formulas in C.
Every function takes x >= 0 (counts) and t > 0 (the inverse dispersion theta), and keeps
its relative precision where the obvious formula cancels:

- ``lgamma_diff(x, t) = lgamma(x + t) - lgamma(t)``: for t = 1e4 both terms are near
  9e4 while their difference is about 9x; written as (t - 1/2) log1p(x/t) + x log(x + t) - x
  plus the difference of two small Stirling series, after shifting t above SHIFT with
  log1p terms (the recurrence lgamma(z + 1) = lgamma(z) + log z).
- ``digamma_diff(x, t) = digamma(x + t) - digamma(t)``: for large t about x / t while both
  terms are near log t; written as log1p(x/t) plus small series terms, after the shift
  digamma(z + 1) = digamma(z) + 1/z, whose terms x / ((t + k)(x + t + k)) lose nothing for
  small t either (digamma(1e-3) is about -1000).

The series are the asymptotic (Stirling) expansions with the Bernoulli numbers, used from
SHIFT = 10 up, where the first omitted term is below 1e-16 relative.
"""
from __future__ import annotations

import math

#: every function here, helpers before the functions that call them (for Numba)
FUNCTIONS = ("lgamma_series", "digamma_series", "lgamma", "digamma", "lgamma_diff",
             "digamma_diff")
#: arguments are shifted up to at least this before the asymptotic series are used
SHIFT = 10.0
_HALF_LOG_2PI = 0.5 * math.log(2.0 * math.pi)


def lgamma_series(z):
    """lgamma(z) - [(z - 1/2) log z - z + log(2 pi) / 2], z >= SHIFT (Stirling)."""
    r = 1.0 / z
    r2 = r * r
    return r * (1.0 / 12 - r2 * (1.0 / 360 - r2 * (1.0 / 1260 - r2 * (1.0 / 1680
                                                                     - r2 * (1.0 / 1188)))))


def digamma_series(z):
    """digamma(z) - [log z - 1/(2z)], z >= SHIFT."""
    r2 = 1.0 / (z * z)
    return -r2 * (1.0 / 12 - r2 * (1.0 / 120 - r2 * (1.0 / 252 - r2 * (
        1.0 / 240 - r2 * (1.0 / 132 - r2 * (691.0 / 32760 - r2 * (1.0 / 12)))))))


def lgamma(z):
    """log Gamma(z) for z > 0."""
    prod = 1.0
    while z < SHIFT:  # lgamma(z) = lgamma(z + 1) - log z: one log of the product (< 1e10)
        prod *= z
        z += 1.0
    return (z - 0.5) * math.log(z) - z + _HALF_LOG_2PI + lgamma_series(z) - math.log(prod)


def digamma(z):
    """digamma(z) = d/dz log Gamma(z), for z > 0."""
    acc = 0.0
    while z < SHIFT:  # digamma(z) = digamma(z + 1) - 1/z
        acc -= 1.0 / z
        z += 1.0
    return acc + math.log(z) - 0.5 / z + digamma_series(z)


def lgamma_diff(x, t):
    """lgamma(x + t) - lgamma(t) for x >= 0, t > 0, without the cancellation of the two."""
    if x == 0.0:
        return 0.0
    acc = 0.0
    while t < SHIFT:  # both arguments move up by one: the difference loses log1p(x / t)
        acc -= math.log1p(x / t)
        t += 1.0
    u = x + t
    return (acc + (t - 0.5) * math.log1p(x / t) + x * math.log(u) - x
            + (lgamma_series(u) - lgamma_series(t)))


def digamma_diff(x, t):
    """digamma(x + t) - digamma(t) for x >= 0, t > 0, without the cancellation of the two."""
    if x == 0.0:
        return 0.0
    acc = 0.0
    while t < SHIFT:  # digamma(z + 1) - 1/z on both sides: 1/t - 1/(x + t) = x / (t (x + t))
        acc += x / (t * (x + t))
        t += 1.0
    u = x + t
    return (acc + math.log1p(x / t) + 0.5 * x / (t * u)
            + (digamma_series(u) - digamma_series(t)))
