"""Pictures of a trained model: samples, reconstructions, interpolations, latent traversals,
a 2-D latent scatter and loss curves, written as PNG files.

Needs matplotlib (``pip install fastvae[viz]``).  Only matplotlib's object-oriented API is
used (no pyplot), so nothing here touches a user's global plotting state.  The pictures
draw their own noise from ``seed``: making them does not disturb the model's generator.
"""
from __future__ import annotations

import os

import numpy as np

from .io.dataset import Dataset


def figure(w, h):
    """A matplotlib Figure of w x h inches drawn off screen (no pyplot, no display), or an
    ImportError saying how to install matplotlib."""
    try:
        from matplotlib.backends.backend_agg import FigureCanvasAgg
        from matplotlib.figure import Figure
    except ImportError:
        raise ImportError("pictures need matplotlib: pip install 'fastvae[viz]' "
                          "(or pip install matplotlib)") from None
    fig = Figure(figsize=(w, h), dpi=100)
    FigureCanvasAgg(fig)
    return fig


def image_grid(images, shape, ncols, pad=1, fill=1.0):
    """Tile images (N, H*W) into one 2-D array with ``ncols`` columns and ``pad`` pixels of
    ``fill`` between tiles.  Returns (rows*(H+pad)+pad, ncols*(W+pad)+pad)."""
    images = np.asarray(images, dtype=np.float32)
    H, W = shape
    n = images.shape[0]
    nrows = -(-n // ncols)
    grid = np.full((nrows * (H + pad) + pad, ncols * (W + pad) + pad), fill, dtype=np.float32)
    for i in range(n):
        r, c = divmod(i, ncols)
        y, x = pad + r * (H + pad), pad + c * (W + pad)
        grid[y:y + H, x:x + W] = images[i].reshape(H, W)
    return grid


def show_grid(grid, path, title, scale=0.06, row_labels=None, row_height=None):
    """Write the image ``grid`` (H, W), values in [0, 1], to ``path`` as a titled PNG;
    ``row_labels`` name bands of ``row_height`` pixels.  Returns the path."""
    h, w = grid.shape
    scale = min(scale, 12.0 / w, 14.0 / h)  # inches per pixel; large grids stay printable
    fig = figure(max(2.0, w * scale + (1.0 if row_labels else 0)), h * scale + 0.45)
    ax = fig.add_axes([0.12 if row_labels else 0.01, 0.01, 0.87 if row_labels else 0.98,
                       1 - 0.4 / (h * scale + 0.45)])
    ax.imshow(np.clip(grid, 0, 1), cmap="gray", vmin=0, vmax=1, interpolation="nearest")
    ax.set_xticks([])
    ax.set_yticks([])
    if row_labels:
        ax.set_yticks([(i + 0.5) * row_height for i in range(len(row_labels))])
        ax.set_yticklabels(row_labels, fontsize=7)
    ax.set_title(title, fontsize=9)
    fig.savefig(path)
    return path


def decoded_pixels(model, z):
    """Decoder means for z, as host float32 (Gaussian means clipped for display later)."""
    return model.kernels.to_numpy(model.decode(np.asarray(z, dtype=model.dtype))).astype(np.float32)


def plot_samples(model, path, shape, n=64, seed=0):
    """n images decoded from z ~ N(0, I)."""
    z = np.random.default_rng(seed).standard_normal((n, model.latent_dim))
    cols = int(np.ceil(np.sqrt(n)))
    return show_grid(image_grid(decoded_pixels(model, z), shape, cols), path, "samples from the prior")


def plot_reconstructions(model, ds, path, n=16):
    """Inputs (odd rows) above their reconstructions at z = mu (even rows)."""
    n = min(n, len(ds))
    x = ds.batch(np.arange(n), dtype=model.dtype)
    rec = model.kernels.to_numpy(model.reconstruct(x))
    cols = min(8, n)
    rows = []
    for s in range(0, n, cols):
        rows += [x[s:s + cols], rec[s:s + cols]]
        if len(rows[-1]) < cols:  # pad a short last row
            rows[-2] = np.vstack([rows[-2], np.ones((cols - len(rows[-2]), ds.dim))])
            rows[-1] = np.vstack([rows[-1], np.ones((cols - len(rows[-1]), ds.dim))])
    grid = image_grid(np.vstack(rows), ds.image_shape, cols)
    return show_grid(grid, path, "inputs (odd rows) and reconstructions (even rows)")


def plot_interpolation(model, ds, path, pairs=6, steps=10, seed=0):
    """Rows that walk in a straight line between the encodings (mu) of two inputs."""
    rng = np.random.default_rng(seed)
    idx = rng.choice(len(ds), size=2 * pairs, replace=len(ds) < 2 * pairs)
    mu, _ = model.encode(ds.batch(idx, dtype=model.dtype))
    mu = model.kernels.to_numpy(mu)
    t = np.linspace(0, 1, steps)[:, None]
    z = np.vstack([(1 - t) * mu[2 * i] + t * mu[2 * i + 1] for i in range(pairs)])
    grid = image_grid(decoded_pixels(model, z), ds.image_shape, steps)
    return show_grid(grid, path, "interpolation between two encoded inputs (ends: decoded mu)")


def plot_traversal(model, ds, path, steps=9, span=3.0, max_dims=16):
    """One row per latent dimension (most informative first, by KL): the decoded image as
    that coordinate moves from -span to +span around the encoding of one input."""
    diag = model.diagnostics(ds.subset(np.arange(min(2000, len(ds)))))
    kl = diag.kl_per_dim
    dims = diag.order[:max_dims]
    base, _ = model.encode(ds.batch(np.arange(1), dtype=model.dtype))
    base = model.kernels.to_numpy(base)[0]
    vals = np.linspace(-span, span, steps)
    z = np.repeat(base[None, :], len(dims) * steps, axis=0)
    for r, d in enumerate(dims):
        z[r * steps:(r + 1) * steps, d] = vals
    grid = image_grid(decoded_pixels(model, z), ds.image_shape, steps)
    labels = [f"z{d} (KL {kl[d]:.2f})" for d in dims]
    return show_grid(grid, path, f"latent traversal, z from {-span:g} to {span:g}",
                 row_labels=labels, row_height=ds.image_shape[0] + 1)


def plot_latent(model, ds, path, n=5000, color_by=None):
    """Scatter of the encodings mu of up to n inputs: the two coordinates themselves when
    latent_dim is 2, else their first two principal components; coloured by label, or by
    the factor ``color_by`` (built-in shapes), when the dataset has one."""
    n = min(n, len(ds))
    mu, _ = model.encode(ds.batch(np.arange(n), dtype=model.dtype))
    mu = model.kernels.to_numpy(mu).astype(np.float64)
    if mu.shape[1] == 1:
        xy, axes = np.hstack([mu, np.zeros_like(mu)]), ("z0", "")
    elif mu.shape[1] == 2:
        xy, axes = mu, ("z0", "z1")
    else:
        c = mu - mu.mean(axis=0)
        _, s, vt = np.linalg.svd(c, full_matrices=False)
        xy = c @ vt[:2].T
        share = s[:2] ** 2 / max((s ** 2).sum(), 1e-300)
        axes = (f"PC1 ({share[0]:.0%} of variance)", f"PC2 ({share[1]:.0%})")
    fig = figure(6.0, 5.0)
    ax = fig.add_subplot(1, 1, 1)
    colour, names, what = None, None, ""
    if color_by and ds.factors and color_by in ds.factors:
        colour, what = np.asarray(ds.factors[color_by])[:n], color_by
    elif ds.labels is not None:
        colour, names, what = ds.labels[:n], ds.label_names, "label"
    if colour is not None and names is not None:
        for k in np.unique(colour):
            m = colour == k
            ax.scatter(xy[m, 0], xy[m, 1], s=3, alpha=0.6,
                       label=names[k] if k < len(names) else str(k))
        ax.legend(fontsize=7, markerscale=3, loc="best")
    else:
        sc = ax.scatter(xy[:, 0], xy[:, 1], s=3, alpha=0.6, c=colour,
                        cmap=None if colour is None else "viridis")
        if colour is not None:
            fig.colorbar(sc, ax=ax, label=what)
    ax.set_xlabel(axes[0])
    ax.set_ylabel(axes[1])
    ax.set_title(f"encodings of {n} inputs" + (f", coloured by {what}" if what else ""),
                 fontsize=9)
    fig.tight_layout()
    fig.savefig(path)
    return path


def plot_history(history, path):
    """Negative ELBO per epoch (train and validation), and its two terms."""
    if not history:
        raise ValueError("plot_history: the history is empty (train for an epoch first)")
    ep = [r["epoch"] for r in history]
    fig = figure(9.0, 3.6)
    ax1, ax2 = fig.add_subplot(1, 2, 1), fig.add_subplot(1, 2, 2)
    ax1.plot(ep, [r["train_neg_elbo"] for r in history], "o-", label="train")
    if all("val_neg_elbo" in r for r in history):
        ax1.plot(ep, [r["val_neg_elbo"] for r in history], "s-", label="validation")
    ax1.set_xlabel("epoch")
    ax1.set_ylabel("negative ELBO (nats / datapoint)")
    ax1.legend()
    ax1.grid(alpha=0.3)
    ax2.plot(ep, [r["train_recon"] for r in history], "o-", label="reconstruction")
    ax2.set_ylabel("reconstruction (nats)")
    ax3 = ax2.twinx()
    ax3.plot(ep, [r["train_kl"] for r in history], "s-", color="C3", label="KL")
    ax3.set_ylabel("KL (nats)", color="C3")
    ax2.set_xlabel("epoch")
    ax2.set_title("training terms", fontsize=9)
    ax2.grid(alpha=0.3)
    fig.tight_layout()
    fig.savefig(path)
    return path


def write_all(model, ds, outdir, history=None, seed=0):
    """Write every picture that applies to ``outdir``; returns the list of paths.

    ds : a Dataset (validation or test data; its ``image_shape`` is needed for the image
    pictures, which are skipped for non-image data).
    """
    if not isinstance(ds, Dataset):
        ds = Dataset(ds)
    os.makedirs(outdir, exist_ok=True)
    j = lambda name: os.path.join(outdir, name)  # noqa: E731
    paths = []
    if ds.image_shape is not None:
        paths.append(plot_samples(model, j("samples.png"), ds.image_shape, seed=seed))
        paths.append(plot_reconstructions(model, ds, j("reconstructions.png")))
        paths.append(plot_interpolation(model, ds, j("interpolation.png"), seed=seed))
        paths.append(plot_traversal(model, ds, j("traversal.png")))
    paths.append(plot_latent(model, ds, j("latent.png")))
    if history:
        paths.append(plot_history(history, j("loss.png")))
    return paths
