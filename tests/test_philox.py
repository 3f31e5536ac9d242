"""Philox4x32-10, the generator of the noise contract, against the published known answers
of Random123 (Salmon, Moraes, Dror, Shaw, SC'11) on every backend: the reference (NumPy),
the Numba one of the cpu backend and the CUDA device function of kernels/common.cuh (compiled for
the emulator with the options the backend passes)."""
from __future__ import annotations

import ctypes
import shutil

import numba
import numpy as np
import pytest

from fastvae.backends import cpu
from fastvae.backends import reference as R

import cuda_emu

#: The three "philox4x32 10" lines of tests/kat_vectors in DEShawResearch/random123
#: (commit 9545ff6413f258be2f04c1d319d99aaef7521150, lines 27-29): counter (4 words),
#: key (2 words) -> expected output (4 words).
KAT = [
    ((0x00000000, 0x00000000, 0x00000000, 0x00000000), (0x00000000, 0x00000000),
     (0x6627e8d5, 0xe169c58d, 0xbc57ac4c, 0x9b00dbd8)),
    ((0xffffffff, 0xffffffff, 0xffffffff, 0xffffffff), (0xffffffff, 0xffffffff),
     (0x408f276d, 0x41c83b0e, 0xa20bc7c6, 0x6d5451fd)),
    ((0x243f6a88, 0x85a308d3, 0x13198a2e, 0x03707344), (0xa4093822, 0x299f31d0),
     (0xd16cfe09, 0x94fdcceb, 0x5001e420, 0x24126ea1)),
]
IDS = ["zeros", "ones", "pi"]


@pytest.mark.parametrize("ctr,key,want", KAT, ids=IDS)
def test_reference(ctr, key, want):
    got = R.philox4x32_10(*ctr, *key)
    assert [int(w) for w in got] == list(want)


def test_reference_on_arrays():
    """The reference runs on arrays of counters (as normal_eps calls it): one key at a
    time, each column its own counter."""
    for key in {k for _, k, _ in KAT}:
        rows = [(c, w) for c, k, w in KAT if k == key]
        ctr = np.array([c for c, _ in rows], dtype=np.uint32).T
        got = np.stack(R.philox4x32_10(*ctr, *key))
        assert got.dtype == np.uint32
        assert got.T.tolist() == [list(w) for _, w in rows]


@pytest.mark.parametrize("fresh", [False, True], ids=["cached", "fresh"])
@pytest.mark.parametrize("ctr,key,want", KAT, ids=IDS)
def test_cpu(ctr, key, want, fresh):
    """The Numba function as the backend runs it (from Numba's disk cache, when there is
    one), and compiled afresh: Numba freezes the constants it imports from codes.py when it
    compiles, and its cache is keyed by cpu/reparam.py alone, so only a fresh compile sees a changed
    codes.py."""
    fn = numba.njit(cpu.philox4x32_10.py_func) if fresh else cpu.philox4x32_10
    got = fn(*(np.uint64(v) for v in (*ctr, *key)))
    assert [int(w) for w in got] == list(want)


_KAT_SRC = r'''
#include "cuda_emu.h"
#include "common.cuh"
extern "C" void philox_kat(const unsigned int* in, unsigned int* out) {
    u32x4 c = {{in[0], in[1], in[2], in[3]}};
    u32x4 r = philox4x32_10(c, in[4], in[5]);
    for (int i = 0; i < 4; ++i) out[i] = r.v[i];
}
'''


@pytest.fixture(scope="module")
def cuda_philox(tmp_path_factory):
    if shutil.which("g++") is None:
        pytest.skip("the emulated GPU needs g++ (apt-get install -y g++)")
    lib = ctypes.CDLL(str(cuda_emu.build_source(
        _KAT_SRC, "fastvae_philox_kat", out_dir=tmp_path_factory.mktemp("philox"))))

    def run(ctr, key):
        inp = np.array([*ctr, *key], dtype=np.uint32)
        out = np.zeros(4, dtype=np.uint32)
        lib.philox_kat(inp.ctypes.data_as(ctypes.c_void_p), out.ctypes.data_as(ctypes.c_void_p))
        return out
    return run


@pytest.mark.parametrize("ctr,key,want", KAT, ids=IDS)
def test_cuda_device_function(cuda_philox, ctr, key, want):
    assert cuda_philox(ctr, key).tolist() == list(want)
