"""Kernel implementations, one module per backend; chosen by :mod:`fastvae.backend`."""
