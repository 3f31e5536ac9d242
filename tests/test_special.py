"""fastvae.backends.special: lgamma, digamma and the negative binomial's differences, against
exact sums, Python's math.lgamma and torch.digamma (float64), and compiled by Numba as the
cpu backend will (the same source, its fast-math flags)."""
from __future__ import annotations

import math

import numpy as np
import pytest

from fastvae.backends import special as S

Z = [1e-8, 1e-3, 0.1, 0.5, 0.9, 1.0, 1.4616321449683622, 2.0, 3.7, 9.999, 10.0, 10.001,
     57.3, 1e3, 1e6, 1e12]
T = [1e-3, 0.37, 1.0, 3.0, 9.5, 10.0, 123.4, 1e4, 1e8]
X = [0, 1, 2, 3, 17, 250, 1000]


@pytest.mark.parametrize("z", Z)
def test_lgamma_against_math(z):
    want = math.lgamma(z)
    # relative, and near lgamma's zeros (z = 1, 2) absolute: a few ulp of the terms summed,
    # which are about lgamma(SHIFT) = 12.8 below SHIFT
    assert abs(S.lgamma(z) - want) <= 2e-15 * abs(want) + 4e-14 * (z < S.SHIFT)


@pytest.mark.parametrize("z", Z)
def test_digamma_against_torch(z):
    torch = pytest.importorskip("torch")
    want = torch.digamma(torch.tensor(z, dtype=torch.float64)).item()
    # (digamma has its root at 1.46163...: there only an absolute error means anything)
    assert abs(S.digamma(z) - want) <= 1e-14 * max(1.0, abs(want))


@pytest.mark.parametrize("t", T)
@pytest.mark.parametrize("x", X)
def test_the_differences_equal_their_exact_sums(x, t):
    """For a count x: lgamma(x + t) - lgamma(t) = sum_k log(t + k), and
    digamma(x + t) - digamma(t) = sum_k 1 / (t + k), k < x (the recurrences)."""
    lg = math.fsum(math.log(t + k) for k in range(x))
    dg = math.fsum(1.0 / (t + k) for k in range(x))
    # relative, and absolute where the shift below SHIFT sums terms of about log(SHIFT)
    small = 2e-14 if t < S.SHIFT else 1e-300
    assert S.lgamma_diff(float(x), t) == pytest.approx(lg, rel=1e-14, abs=small)
    assert S.digamma_diff(float(x), t) == pytest.approx(dg, rel=1e-14, abs=small)


@pytest.mark.parametrize("x,t", [(1e6, 1e-3), (1e6, 1e4), (3.5, 1e8), (0.25, 1e9),
                                 (12345.6, 0.05), (40.0, 7.0)])
def test_the_differences_where_no_sum_is_exact(x, t):
    """Large or fractional x: against the plain difference where it does not cancel (t small
    against x), else the leading terms of the expansion in x / t."""
    if t < x:
        assert S.lgamma_diff(x, t) == pytest.approx(math.lgamma(x + t) - math.lgamma(t),
                                                    rel=1e-13)
        torch = pytest.importorskip("torch")
        d = torch.digamma(torch.tensor([x + t, t], dtype=torch.float64))
        assert S.digamma_diff(x, t) == pytest.approx((d[0] - d[1]).item(), rel=1e-12)
    else:  # t >> x: lgamma_diff = x log t + x(x-1)/(2t) + ..., digamma_diff = x/t - ...
        lead = x * math.log(t) + x * (x - 1) / (2 * t)
        assert S.lgamma_diff(x, t) == pytest.approx(lead, rel=1e-12)
        assert S.digamma_diff(x, t) == pytest.approx(x / t - x * (x - 1) / (2 * t * t),
                                                     rel=1e-12)


@pytest.mark.parametrize("x,t", [(0.0, 2.0), (3.0, 1e-3), (17.0, 0.5), (1000.0, 9.9),
                                 (5.0, 1e4), (2.5, 30.0)])
def test_digamma_diff_is_the_derivative_of_lgamma_diff_in_t(x, t):
    """What the negative binomial's dispersion gradient relies on: d/dt lgamma_diff(x, t)
    = digamma_diff(x, t) (central differences, step relative to t)."""
    h = 1e-5 * t
    fd = (S.lgamma_diff(x, t + h) - S.lgamma_diff(x, t - h)) / (2 * h)
    assert S.digamma_diff(x, t) == pytest.approx(fd, rel=1e-6, abs=1e-9)


def test_the_recurrences_hold_across_the_shift():
    """lgamma(z + 1) = lgamma(z) + log z and digamma(z + 1) = digamma(z) + 1/z, on both sides
    of SHIFT, where the formulas change."""
    for z in np.linspace(0.05, 2 * S.SHIFT, 97):
        assert S.lgamma(z + 1) == pytest.approx(S.lgamma(z) + math.log(z), rel=1e-14,
                                                abs=1e-14)
        assert S.digamma(z + 1) == pytest.approx(S.digamma(z) + 1 / z, rel=1e-14, abs=1e-14)


def test_numba_compiles_the_same_source():
    """The cpu backend's copies: the same functions compiled with its flags agree with the
    Python ones (fast math may reassociate: a few ulp)."""
    from fastvae.backends.nbmath import jit_module_functions
    nb = jit_module_functions(S, S.FUNCTIONS)
    fns = {name: nb[name] for name in ("lgamma", "digamma")}
    fns2 = {name: nb[name] for name in ("lgamma_diff", "digamma_diff")}
    for z in Z:
        for name, f in fns.items():
            # (near lgamma's zeros, a few ulp of the terms summed, as against math.lgamma)
            assert f(z) == pytest.approx(getattr(S, name)(z), rel=1e-14, abs=4e-14), (name, z)
    for t in T:
        for x in (0.0, 3.0, 1e6):
            for name, f in fns2.items():
                assert f(x, t) == pytest.approx(getattr(S, name)(x, t), rel=1e-14,
                                                abs=2e-14), (name, x, t)
