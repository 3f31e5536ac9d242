"""The table model's latent density (fastvae.tabular.latent): the mixture's densities
against a direct formula, EM against a mixture it was drawn from, and draws against the
mixture they come from."""
import math

import numpy as np
import pytest

from fastvae.tabular.latent import GaussianMixture, _component_logpdf, fit_mixture


def _direct_logpdf(x, means, chol):
    """log N(x | means[k], L L^T) (n, K), point by point with a solve and a log-determinant."""
    n, d = x.shape
    out = np.empty((n, len(means)))
    for k in range(len(means)):
        cov = chol[k] @ chol[k].T
        _, logdet = np.linalg.slogdet(cov)
        for i in range(n):
            r = x[i] - means[k]
            out[i, k] = -0.5 * (r @ np.linalg.solve(cov, r) + logdet + d * math.log(2 * math.pi))
    return out


def _random_mixture(rng, K, d):
    means = rng.normal(0, 2, (K, d))
    chol = np.tril(rng.normal(0, 0.3, (K, d, d)), -1)
    chol[:, np.arange(d), np.arange(d)] = rng.uniform(0.2, 1.5, (K, d))
    return means, chol


@pytest.mark.parametrize("K,d", [(1, 1), (3, 2), (10, 16), (4, 33)])
def test_component_logpdf_matches_the_direct_formula(K, d):
    rng = np.random.default_rng(K * 100 + d)
    means, chol = _random_mixture(rng, K, d)
    x = rng.normal(0, 3, (57, d))
    np.testing.assert_allclose(_component_logpdf(x, means, chol),
                               _direct_logpdf(x, means, chol), rtol=1e-9, atol=1e-9)


def test_fit_mixture_finds_the_mixture_it_was_drawn_from():
    rng = np.random.default_rng(0)
    d = 3
    means = np.array([[-4.0, 0.0, 1.0], [3.0, 3.0, -2.0], [0.0, -5.0, 4.0]])
    chol = np.array([np.diag([0.5, 1.0, 0.3]),
                     [[1.0, 0, 0], [0.6, 0.5, 0], [0.0, 0.2, 0.7]],
                     np.diag([0.8, 0.4, 1.1])])
    weights = np.array([0.5, 0.3, 0.2])
    g = GaussianMixture(d, np.arange(d), weights, means, chol)
    x = g.sample(30000, np.random.default_rng(1))
    w, m, c, ll = fit_mixture(x, 3, rng)
    order = np.argsort(m[:, 0])  # (components come back in any order)
    truth = np.argsort(means[:, 0])
    np.testing.assert_allclose(w[order], weights[truth], atol=0.01)
    np.testing.assert_allclose(m[order], means[truth], atol=0.05)
    cov = c @ c.transpose(0, 2, 1)
    true_cov = chol @ chol.transpose(0, 2, 1)
    np.testing.assert_allclose(cov[order], true_cov[truth], atol=0.06)
    # the fitted mixture is at least as likely as the truth on its own data, and the
    # reported mean log-likelihood is its density's
    assert ll >= g.log_density(x).mean() - 1e-9
    fitted = GaussianMixture(d, np.arange(d), w, m, c)
    assert fitted.log_density(x).mean() == pytest.approx(ll, abs=1e-3)


def test_em_never_lowers_the_likelihood():
    rng = np.random.default_rng(5)
    x = np.concatenate([rng.normal(0, 1, (400, 4)), rng.normal(2, 0.5, (300, 4))])
    lls = [fit_mixture(x, 4, np.random.default_rng(2), iters=i, tol=0.0)[3] for i in (1, 2, 4, 8, 16)]
    assert all(b >= a - 1e-10 for a, b in zip(lls, lls[1:])), lls


def test_draws_follow_each_component_and_the_prior_elsewhere():
    rng = np.random.default_rng(3)
    Z, dims = 6, np.array([1, 4])
    means, chol = _random_mixture(rng, 2, 2)
    g = GaussianMixture(Z, dims, [0.25, 0.75], means, chol)
    z = g.sample(200000, np.random.default_rng(4))
    rest = np.delete(z, dims, axis=1)
    np.testing.assert_allclose(rest.mean(0), 0, atol=0.01)
    np.testing.assert_allclose(rest.std(0), 1, atol=0.01)
    # the active dimensions' mean and covariance are the mixture's
    a = z[:, dims]
    w = np.array([0.25, 0.75])
    mean = w @ means
    cov = sum(w[k] * (chol[k] @ chol[k].T + np.outer(means[k], means[k])) for k in range(2)) \
        - np.outer(mean, mean)
    np.testing.assert_allclose(a.mean(0), mean, atol=0.02)
    np.testing.assert_allclose(np.cov(a, rowvar=False), cov, rtol=0.03, atol=0.02)
    # the same generator state gives the same draws
    np.testing.assert_array_equal(g.sample(100, np.random.default_rng(9)),
                                  g.sample(100, np.random.default_rng(9)))


def test_em_without_the_outer_products_table_fits_the_same_mixture(monkeypatch):
    """Past OUTER_MAX numbers (a large latent_dim) EM sums the second moments a component
    at a time instead: the same mixture, to the rounding of the sums."""
    import fastvae.tabular.latent as latent
    rng = np.random.default_rng(8)
    x = np.concatenate([rng.normal(0, 1, (500, 5)), rng.normal(3, 0.4, (300, 5))])
    table = fit_mixture(x, 3, np.random.default_rng(1))
    monkeypatch.setattr(latent, "OUTER_MAX", 0)
    loop = fit_mixture(x, 3, np.random.default_rng(1))
    for a, b in zip(table, loop):
        np.testing.assert_allclose(a, b, rtol=1e-7, atol=1e-9)


def test_the_mixture_never_has_more_numbers_than_training_rows():
    """components(): at most one free number per training row (d means, d (d + 1) / 2
    covariances and a weight per component), at least one component, at most the cap."""
    from fastvae.tabular.latent import components
    for rows in (1, 30, 247, 384, 1530, 5071, 10**6):
        for d in (1, 3, 7, 16, 32):
            K = components(rows, d, 10)
            per = d + d * (d + 1) // 2 + 1
            assert 1 <= K <= 10
            assert K == 1 or K * per <= rows
            assert K == 10 or (K + 1) * per > rows  # (the most the rows allow)


def test_fit_latent_on_few_rows_fits_fewer_components():
    """Thirty rows' codes in 3 dimensions (10 numbers a component) get 3 components, not
    the 10 asked for; 3,000 rows get all 10."""
    from fastvae.tabular.latent import fit_latent
    rng = np.random.default_rng(6)
    for rows, K in ((30, 3), (3000, 10)):
        mu = rng.standard_normal((rows, 3))
        g = fit_latent(mu, np.full_like(mu, -2.0), np.ones(3), 10, np.random.default_rng(7))
        assert g.K == K and g.dims.tolist() == [0, 1, 2]
