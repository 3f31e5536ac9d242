"""Shared set-up of the pytest-benchmark suite.

    pytest benchmarks                                  # full sizes (minutes; see README)
    pytest benchmarks --benchmark-group-by=group       # one table per comparison
    FASTVAE_BENCH_SMOKE=1 pytest benchmarks --benchmark-disable   # CI: runs once, tiny sizes

Every group holds one workload at one size, so the table pytest-benchmark prints compares
implementations on identical work.  Threads: BLAS and PyTorch use FASTVAE_BENCH_THREADS
(default: all cores); the Numba kernels are serial by design.
"""
import os

SMOKE = os.environ.get("FASTVAE_BENCH_SMOKE") == "1"
THREADS = int(os.environ.get("FASTVAE_BENCH_THREADS", os.cpu_count()))
for _var in ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS"):
    os.environ.setdefault(_var, str(THREADS))  # before NumPy is imported by the modules


def pytest_report_header(config):
    try:
        import torch
        torch.set_num_threads(THREADS)
        t = torch.get_num_threads()
    except ImportError:
        t = "not installed"
    return (f"fastvae benchmarks: threads BLAS {os.environ['OPENBLAS_NUM_THREADS']}, "
            f"PyTorch {t}, Numba kernels 1 (serial); smoke mode {SMOKE}")
