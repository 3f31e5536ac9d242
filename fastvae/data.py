"""Datasets (``from fastvae import data``): the public name of :mod:`fastvae.io.data`, where
loading, scanning and the built-in shapes live."""
from .io.data import (DEBIAN_FASHION_MNIST, FASHION_MNIST_CLASSES, SHAPE_NAMES,  # noqa: F401
                      DataError, Dataset, binarize, load, load_idx_dir, read_idx, shapes)
