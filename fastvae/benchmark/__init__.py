"""Benchmarks against PyTorch, side by side: the implementations (``impls``), the timing and
machine measurements (``measure``) and the suite with its report (``suite``).

Used by ``fastvae bench`` and by the pytest-benchmark modules in ``benchmarks/``.  PyTorch
is needed only here (``pip install fastvae[bench]``); nothing else in fastvae imports it.
"""
