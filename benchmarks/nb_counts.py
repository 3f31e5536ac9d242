"""The count matrix of the scVI comparisons: cells x genes of negative-binomial counts, from
clusters of cells, with a batch effect and varying library sizes (what scRNA-seq data looks
like to a model, generated offline and reproducibly).

    X, batch, cluster = counts(20_000, 2_000, seed=0)

- cluster k of ``n_clusters`` has a gene profile: log-means drawn N(0, 1) around a common
  baseline N(-1, 1.2) (a few genes high, most low);
- batch b of ``n_batches`` multiplies each gene's mean by exp(N(0, 0.5)) (batch 0 by 1): the
  effect a model should remove;
- each cell's library size scales its means by exp(N(0, 0.3));
- the count is NB2 with that mean and a per-gene inverse dispersion theta ~ Gamma(2, 2)
  (mean 4), drawn as a gamma-Poisson mixture.

Returns X (N, G) float32 of integer counts, batch (N,) and cluster (N,) int64.
"""
from __future__ import annotations

import numpy as np


def counts(n_cells=20_000, n_genes=2_000, n_batches=2, n_clusters=5, seed=0):
    rng = np.random.default_rng(seed)
    base = rng.normal(-1.0, 1.2, n_genes)
    profile = base + rng.normal(0.0, 1.0, (n_clusters, n_genes))
    effect = np.vstack([np.zeros(n_genes), rng.normal(0.0, 0.5, (n_batches - 1, n_genes))])
    theta = rng.gamma(2.0, 2.0, n_genes)
    cluster = rng.integers(0, n_clusters, n_cells)
    batch = rng.integers(0, n_batches, n_cells)
    lib = rng.normal(0.0, 0.3, n_cells)
    X = np.empty((n_cells, n_genes), dtype=np.float32)
    for s in range(0, n_cells, 2000):  # in chunks: the float64 means of all cells are 320 MB
        e = slice(s, min(n_cells, s + 2000))
        mu = np.exp(profile[cluster[e]] + effect[batch[e]] + lib[e, None])
        X[e] = rng.poisson(rng.gamma(theta, mu / theta))
    return X, batch, cluster


if __name__ == "__main__":
    X, b, c = counts()
    print(X.shape, f"mean {X.mean():.3f}, zeros {np.mean(X == 0):.1%}, max {X.max():.0f}")
