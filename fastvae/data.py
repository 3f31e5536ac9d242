"""Datasets (``from fastvae import data``): the public names of :mod:`fastvae.io.dataset` (the
Dataset), :mod:`fastvae.io.data` (the loaders) and :mod:`fastvae.io.shapes` (the built-in
shapes)."""
from .io.data import (DEBIAN_FASHION_MNIST, FASHION_MNIST_CLASSES, load,  # noqa: F401
                      load_idx_dir, read_idx)
from .io.dataset import DataError, Dataset, binarize  # noqa: F401
from .io.shapes import SHAPE_NAMES, shapes  # noqa: F401
