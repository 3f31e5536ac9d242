"""The constants the backends share (activation and likelihood codes, MOMENT_FLUSH, the
Philox4x32-10 constants, the CUDA tile shape) are written once, in fastvae/backends/codes.py:
the CUDA kernels get them as -D options (codes.cuda_defines, in cuda.compile_options), use
no other, and define none of them themselves; a compile without them stops with an #error
(g++ for the emulator, NVRTC where CuPy's binding is installed)."""
from __future__ import annotations

import re
import shutil
import subprocess
from pathlib import Path

import numpy as np
import pytest

from fastvae.backends import cuda as C
from fastvae.backends import reference as R
from fastvae.backends import codes

import cuda_emu

KERNELS = Path(__file__).resolve().parents[1] / "kernels"
SOURCES = sorted(KERNELS.glob("*.cu")) + [KERNELS / "common.cuh"]
#: the names of the constants the kernels are given
PASSED = {o[2:].split("=")[0] for o in codes.cuda_defines()}
#: what such a name looks like in a kernel file
CONSTANT = re.compile(r"\b(?:ACT_[A-Z_0-9]+|LIK_[A-Z_]+|BLK_[A-Z_]+|ENC_[A-Z_0-9]+|PHILOX_[MW]\d|"
                      r"TILE_[WH]|MOMENT_FLUSH|GRAD_FLUSH|NOISE_[A-Z0-9_]+)\b")


def _code(path):
    """A kernel file without its comments and #error messages (code only)."""
    text = re.sub(r"//[^\n]*", "", path.read_text())
    return re.sub(r'#error "[^"]*"', "#error", text)


def test_cuda_defines_carry_the_values_of_codes():
    d = dict(o[2:].split("=", 1) for o in codes.cuda_defines())
    for name, (code, _) in codes.ACTIVATIONS.items():
        assert int(d["ACT_" + name.upper()]) == code
    for name, code in codes.LIKELIHOODS.items():
        assert int(d["LIK_" + name.upper()]) == code
    for name in ("BLK_GAUSSIAN", "BLK_BERNOULLI", "BLK_CATEGORICAL", "BLK_POISSON", "BLK_NEGBIN",
                 "BLK_ZINB", "ENC_VALUE", "ENC_LOG1P", "ENC_MASK"):
        assert int(d[name]) == getattr(codes, name)
    assert int(d["ACT_IDENTITY"]) == codes.ACT_IDENTITY
    assert float(d["MOMENT_FLUSH"]) == codes.MOMENT_FLUSH == R.MOMENT_FLUSH
    assert float(d["GRAD_FLUSH"]) == codes.GRAD_FLUSH
    for i in range(2):
        assert int(d[f"PHILOX_M{i}"].rstrip("u"), 16) == codes.PHILOX_M[i]
        assert int(d[f"PHILOX_W{i}"].rstrip("u"), 16) == codes.PHILOX_W[i]
    assert (int(d["TILE_W"]), int(d["TILE_H"])) == (codes.TILE_W, codes.TILE_H)
    for name, v in codes.noise_f32().items():  # float32 literals that are the float32 values
        assert np.float32(d[name].strip("()").rstrip("f")) == np.float32(v)
        assert float(np.float32(v)) == v
    assert (C.TILE_W, C.TILE_H) == (codes.TILE_W, codes.TILE_H)  # what the launchers plan with


def test_every_compile_passes_the_defines():
    """RawModule, the NVRTC tests and the emulator's RawModule check all use
    compile_options; the emulator's g++ build and the nvcc test take its -D options."""
    opts = C.compile_options(KERNELS)
    assert set(codes.cuda_defines()) <= set(opts)
    assert set(codes.cuda_defines()) <= set(cuda_emu.gxx_command(KERNELS))


def test_the_kernels_use_only_passed_constants_and_guard_each():
    used, guarded = set(), set()
    for path in SOURCES:
        code = _code(path)
        used |= set(CONSTANT.findall(code))
        guarded |= set(re.findall(r"defined\((\w+)\)", code))
        guarded |= set(re.findall(r"#ifndef\s+(\w+)", code))
    assert used == PASSED, "constants used by the kernels vs passed by codes.cuda_defines()"
    assert guarded == PASSED, "each passed constant has an #error guard where it is used"


@pytest.mark.parametrize("path", SOURCES, ids=lambda p: p.name)
def test_no_kernel_file_hard_codes_a_shared_constant(path):
    text = path.read_text()
    defined = set(re.findall(r"#\s*define\s+(\w+)", text))
    assert not defined & PASSED, f"{path.name} defines {defined & PASSED} itself"
    for value in (*codes.PHILOX_M, *codes.PHILOX_W):
        assert f"{value:08x}" not in text.lower(), f"{path.name} writes {value:#010x}"


#: one constant of each guard, and a file whose compile reaches that guard
DROPPED = [("ACT_SOFTPLUS", "dense.cu"), ("LIK_GAUSSIAN", "likelihood.cu"),
           ("MOMENT_FLUSH", "optim.cu"), ("TILE_H", "data.cu"), ("PHILOX_W1", "reparam.cu"),
           ("BLK_NEGBIN", "blocks.cu"), ("ENC_LOG1P", "blocks.cu"), ("GRAD_FLUSH", "blocks.cu"),
           ("NOISE_SQRT2", "reparam.cu")]


def _without(name):
    return [o for o in codes.cuda_defines() if not o.startswith(f"-D{name}=")]


@pytest.mark.skipif(shutil.which("g++") is None, reason="the emulated GPU needs g++")
@pytest.mark.parametrize("name,cu", [(None, "dense.cu")] + DROPPED)
def test_the_emulator_compile_needs_every_define(name, cu, tmp_path):
    src = tmp_path / "one.cpp"
    src.write_text(f'#include "cuda_emu.h"\n#include "{cu}"\n')
    defines = codes.cuda_defines() if name is None else _without(name)
    cmd = [*cuda_emu.gxx_command(KERNELS, defines), "-fsyntax-only", str(src)]
    r = subprocess.run(cmd, capture_output=True, text=True)
    if name is None:
        assert r.returncode == 0, r.stderr
    else:
        assert r.returncode != 0
        assert "must be passed by fastvae.backends.codes" in r.stderr, r.stderr
        assert name.split("_")[0] in r.stderr.split("must be passed")[0], r.stderr


def _nvrtc():
    try:
        from cupy_backends.cuda.libs import nvrtc
        nvrtc.getVersion()
    except Exception as e:  # noqa: BLE001  (not installed, or no NVRTC library)
        pytest.skip(f"NVRTC through CuPy is not available ({type(e).__name__}: {e})")
    return nvrtc


@pytest.mark.parametrize("name,cu", DROPPED)
def test_the_nvrtc_compile_needs_every_define(name, cu):
    nvrtc = _nvrtc()
    opts = [o for o in C.compile_options(KERNELS) if not o.startswith(f"-D{name}=")]
    assert len(opts) == len(C.compile_options(KERNELS)) - 1
    prog = nvrtc.createProgram((KERNELS / cu).read_text(), cu, [], [])
    with pytest.raises(nvrtc.NVRTCError):
        nvrtc.compileProgram(prog, [*opts, "--gpu-architecture=compute_80"])
    assert "must be passed by fastvae.backends.codes" in nvrtc.getProgramLog(prog)
