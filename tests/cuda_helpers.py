"""Fixtures shared by the cuda backend's tests: an emulated device everywhere, the real GPU
where there is one (tests marked ``gpu``)."""
from __future__ import annotations

import shutil

import numpy as np
import pytest

import fastvae.backends
from fastvae.backends import cuda as C

import cuda_emu


@pytest.fixture(scope="session")
def emu_library(tmp_path_factory):
    if shutil.which("g++") is None:
        pytest.skip("the emulated GPU needs g++ (apt-get install -y g++)")
    return cuda_emu.build_library(out_dir=tmp_path_factory.mktemp("cuda_emu"))


def _gpu_device():
    problem = fastvae.backends.cuda_status()
    if problem:
        pytest.skip(problem)
    return C.CupyDevice()


@pytest.fixture
def gpu_device():
    """The real GPU (installed, then removed); skips where there is none."""
    d = _gpu_device()
    C.use_device(d)
    yield d
    C.use_device(None)


@pytest.fixture(params=["emulated", pytest.param("gpu", marks=pytest.mark.gpu)])
def dev(request, emu_library, monkeypatch):
    """The device the cuda backend runs on in this test (installed, then removed)."""
    if request.param == "gpu":
        d = _gpu_device()
    else:
        d = cuda_emu.emulated_device(*emu_library)
        monkeypatch.setattr(fastvae.backends, "cuda_status", lambda raise_if_missing=False: None)
    C.use_device(d)
    yield d
    C.use_device(None)


@pytest.fixture
def emu(emu_library, monkeypatch):
    """The emulated device only (for tests that count launches, reads or GEMMs): the real
    CupyDevice on the emulator; ``.xp`` is the fake CuPy, ``.fake_cublas`` the fake cuBLAS."""
    d = cuda_emu.emulated_device(*emu_library)
    monkeypatch.setattr(fastvae.backends, "cuda_status", lambda raise_if_missing=False: None)
    C.use_device(d)
    yield d
    C.use_device(None)


def host(a):
    """A NumPy copy of a device (or host) array."""
    return np.array(a.get() if hasattr(a, "get") else a)
