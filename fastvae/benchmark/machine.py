"""A description of the machine a benchmark ran on, stored beside every result, and the
writing of a result (JSON for machines, markdown for people)."""
from __future__ import annotations

import datetime
import json
import os
import platform


def _cpu_model():
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.startswith("model name"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def _gpu():
    try:
        import cupy
        props = cupy.cuda.runtime.getDeviceProperties(0)
        return props["name"].decode() if isinstance(props["name"], bytes) else props["name"]
    except Exception:
        return None


def _cpu_flags():
    """The CPU features that decide which matrix-product paths exist: AVX-512, bfloat16
    (AVX512_BF16), AMX; None where /proc/cpuinfo cannot be read."""
    try:
        with open("/proc/cpuinfo") as f:
            flags = next((ln.split(":", 1)[1].split() for ln in f if ln.startswith("flags")), [])
    except OSError:
        return None
    want = ("avx2", "avx512f", "avx512_bf16", "amx_bf16", "amx_tile")
    return [w for w in want if w in flags]


def describe():
    """dict: CPU model, cores, GPU (or None), Python and library versions, date."""
    import numba
    import numpy

    d = {"cpu": _cpu_model(), "cores": os.cpu_count(), "gpu": _gpu(),
         "python": platform.python_version(), "numpy": numpy.__version__,
         "numba": numba.__version__, "platform": platform.platform(),
         "date": datetime.date.today().isoformat()}
    try:
        import torch
        d["torch"] = torch.__version__
    except ImportError:
        d["torch"] = None
    # (the version without importing jax: importing it starts its runtime's threads)
    try:
        from importlib.metadata import PackageNotFoundError, version
        d["jax"] = version("jax")
    except PackageNotFoundError:
        d["jax"] = None
    d["cpu_flags"] = _cpu_flags()
    try:
        import fastvae
        d["fastvae"] = fastvae.__version__
    except ImportError:
        pass
    try:
        cfg = numpy.show_config(mode="dicts")
        blas = cfg.get("Build Dependencies", {}).get("blas", {})
        d["numpy_blas"] = f"{blas.get('name')} {blas.get('version')}"
    except Exception:
        pass
    return d


def save(res, md, json_path=None, md_path=None):
    """Write the result dict res to json_path and its markdown report md to md_path (each
    skipped when None; folders are made).  Returns the paths written."""
    paths = []
    for path, text in ((json_path, lambda: json.dumps(res, indent=1)),
                       (md_path, lambda: md.rstrip("\n") + "\n")):
        if path:
            os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)
            with open(path, "w") as f:
                f.write(text())
            paths.append(str(path))
    return paths
