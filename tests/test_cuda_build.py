"""The cuda backend's sources and CPU-side logic, checked without a GPU: every .cu file
compiles with nvcc for sm_80 and sm_90, every kernel a launcher names exists in both
precisions, launch shapes cover any matrix, and the wheel ships the kernels where the
backend finds them."""
from __future__ import annotations

import inspect
import re
import shutil
import subprocess
import sys
import zipfile
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest

from fastvae.backends import cuda as C
from fastvae.backends import reference as R

from cuda_helpers import emu_library  # noqa: F401  (fixture)

ROOT = Path(__file__).resolve().parents[1]
LAUNCHERS = ROOT / "fastvae" / "backends" / "cuda"
CU_FILES = sorted((ROOT / "kernels").glob("*.cu"))


#: the reference's kernels (its KERNELS, computed from its public functions) that run on the
#: device, and so have a cuda twin
DEVICE_KERNELS = tuple(k for k in R.KERNELS if k not in R.HOST_KERNELS)
#: device kernels whose launcher does not launch a kernel of the same base name: cuBLAS's
#: products, the sum of squares (sq_norm_partial), the gather (one kernel per dtype pair),
#: the bf16 rounding (of float32 only: to_bf16_f32)
OTHER_LAUNCH = ("matmul", "matmul_bf16", "matmul_f32_beside_bf16", "sq_norm", "gather_rows",
                "to_bf16")
#: kernels that exist for float32 only
FLOAT32_ONLY = ("to_bf16_f32",)


def test_every_launcher_kernel_exists_in_both_precisions():
    """The launchers of backends/cuda/ launch, for each device kernel of the reference, the CUDA
    kernel of its name; every kernel they name exists as _f32 and _f64."""
    sigs = C.kernel_signatures(ROOT / "kernels")
    src = "".join(f.read_text() for f in sorted(LAUNCHERS.glob("*.py")))
    bases = set(re.findall(r'kernel_name\("(\w+)"', src))
    assert set(DEVICE_KERNELS) - set(OTHER_LAUNCH) <= bases
    assert {"sum_partials", "sq_norm_partial"} <= bases
    for base in bases:
        assert f"{base}_f32" in sigs and f"{base}_f64" in sigs, base
    for out in ("f32", "f64"):
        for data in ("u8", "f32", "f64"):
            assert f"gather_rows_{out}_{data}" in sigs
    # the two precisions of a kernel take the same parameters
    for name, (_, types) in sigs.items():
        if name in FLOAT32_ONLY:
            assert 'launch("' + name + '"' in src, name
            continue
        if name.endswith("_f32") and not name.startswith("gather_rows"):
            other = sigs[name[:-4] + "_f64"][1]
            assert [t.replace("float", "double") for t in types] == other, name


def test_each_launcher_module_launches_its_own_cu_file():
    """backends/cuda/ has one launcher module per kernels/*.cu file (as cpu/ has one kernel
    module per file), and each launches only the kernels of its file; launch.py, the shared
    helpers, launches dense.cu's sum_partials."""
    sigs = C.kernel_signatures(ROOT / "kernels")
    files = {Path(f).stem for f, _ in sigs.values()}
    modules = {f.stem for f in LAUNCHERS.glob("*.py")} - {"__init__", "launch"}
    assert modules == files, (modules, files)
    for mod in sorted(modules | {"launch"}):
        src = (LAUNCHERS / f"{mod}.py").read_text()
        names = set(re.findall(r'kernel_name\("(\w+)"', src)) | {
            n.rsplit("_", 1)[0] for n in re.findall(r'launch\("(\w+)"', src)}
        if mod == "data":
            names.add("gather_rows")  # (named by an f-string: gather_rows_<out>_<data>)
        assert names, mod
        home = "dense" if mod == "launch" else mod
        for base in names:
            found = {Path(f).stem for k, (f, _) in sigs.items() if k.startswith(base + "_")}
            assert found == {home}, (mod, base, found)


def test_the_kernel_list_comes_from_the_reference():
    assert set(R.HOST_KERNELS) <= set(R.KERNELS) and len(set(R.KERNELS)) == len(R.KERNELS)
    assert {"matmul", "bias_act_fwd", "act_bias_bwd", "reparam_kl_fwd", "reparam_kl_bwd",
            "likelihood_fwd_bwd", "adam_step", "sgd_step", "normal_eps",
            "scatter_rows"} <= set(R.KERNELS)
    assert not set(R.HELPERS) & set(R.KERNELS)
    assert all(callable(getattr(R, h)) for h in R.HELPERS)  # a stale helper name fails here
    # every public function of the reference is in the list or a named helper (one defined
    # below the list's computation would be missed by it)
    public = {n for n, f in vars(R).items() if inspect.isfunction(f)
              and f.__module__ in R.MODULES and not n.startswith("_")}
    assert public == set(R.KERNELS) | set(R.HELPERS)


def test_the_same_kernels_as_the_reference():
    """Each reference kernel has a cpu twin and, where it runs on the device, a cuda twin,
    of the same name and parameters."""
    from fastvae.backends import cpu

    def params(f):
        return list(inspect.signature(getattr(f, "py_func", f)).parameters)

    for name in R.KERNELS:
        assert hasattr(cpu, name), f"reference.{name} has no twin in the cpu backend"
        assert params(getattr(cpu, name)) == params(getattr(R, name)), name
        if name in DEVICE_KERNELS:
            assert hasattr(C, name), f"reference.{name} has no twin in backends/cuda/"
            assert params(getattr(C, name)) == params(getattr(R, name)), name


@pytest.mark.parametrize("rows", [1, 7, 8, 31, 32, 33, 100, 1000, 65536 * 3])
@pytest.mark.parametrize("cols", [1, 20, 32, 33, 784])
@pytest.mark.parametrize("sms", [1, 2, 132])
def test_tile_plan_covers_every_row_once(rows, cols, sms):
    grid, block, per, n_chunks = C.tile_plan(rows, cols, sms)
    assert block == (C.TILE_W, C.TILE_H)
    assert grid == (-(-cols // 32), n_chunks)
    assert per % C.TILE_H == 0 and per * n_chunks >= rows > per * (n_chunks - 1)
    assert n_chunks == 1 or per >= C.MIN_CHUNK_ROWS
    assert grid[1] <= 65535  # CUDA's limit on gridDim.y
    if rows <= C.MIN_CHUNK_ROWS:
        assert n_chunks == 1


def test_grid_1d_and_bad_plans():
    assert C.grid_1d(1, 132) == 1
    assert C.grid_1d(10 ** 9, 132) == C.WAVES_1D * 132
    assert C.grid_1d(257, 132) == 2
    with pytest.raises(ValueError, match="non-empty"):
        C.tile_plan(0, 5, 2)


def test_gemm_args_row_major_to_column_major():
    # out (M, N) = a (M, K) @ b (K, N): cuBLAS computes out^T = b^T a^T
    assert C.gemm_args((2, 5), (2, 3), (3, 5), False, False) == (0, 0, 5, 2, 3, 5, 3, 5)
    # a stored (K, M), b stored (N, K)
    assert C.gemm_args((2, 5), (3, 2), (5, 3), True, True) == (1, 1, 5, 2, 3, 3, 2, 5)
    with pytest.raises(ValueError, match="do not agree"):
        C.gemm_args((2, 5), (2, 3), (4, 5), False, False)


def test_kernel_name_refuses_other_dtypes():
    assert C.kernel_name("adam_step", "float32") == "adam_step_f32"
    with pytest.raises(TypeError, match="float32 or float64"):
        C.kernel_name("adam_step", "float16")


@pytest.mark.skipif(shutil.which("nvcc") is None, reason="nvcc is not installed")
def test_every_cu_file_compiles_with_nvcc_for_sm80_and_sm90(tmp_path):
    def compile_one(path):
        cmd = ["nvcc", "-c", "-std=c++17", "-o", str(tmp_path / (path.stem + ".o")),
               "-gencode", "arch=compute_80,code=sm_80",
               "-gencode", "arch=compute_90,code=sm_90",
               "-Xcompiler", "-Wall", "-Werror", "all-warnings",
               *(o for o in C.compile_options(path.parent) if o.startswith("-D")), str(path)]
        return path.name, subprocess.run(cmd, capture_output=True, text=True)

    with ThreadPoolExecutor(4) as pool:
        results = list(pool.map(compile_one, CU_FILES))
    assert len(results) == 7  # (a new kernel file must be counted here on purpose)
    for name, r in results:
        assert r.returncode == 0, f"{name}:\n{r.stdout}\n{r.stderr}"
        assert "warning" not in (r.stdout + r.stderr).lower(), f"{name}:\n{r.stderr}"


@pytest.mark.slow
def test_the_wheel_ships_the_kernels_and_the_backend_finds_them(tmp_path):
    r = subprocess.run([sys.executable, "-m", "pip", "wheel", "--no-deps", "-q", "-w",
                        str(tmp_path), str(ROOT)], capture_output=True, text=True)
    assert r.returncode == 0, r.stderr
    (wheel,) = tmp_path.glob("fastvae-*.whl")
    with zipfile.ZipFile(wheel) as zf:
        names = zf.namelist()
        shipped = {Path(n).name for n in names if n.startswith("fastvae/kernels/")}
        assert shipped == {p.name for p in CU_FILES} | {"common.cuh", "README.md"}
        zf.extractall(tmp_path / "site")
    probe = ("from fastvae.backends import cuda as C; d = C.kernel_dir(); "
             "print(d); print(len(C.kernel_signatures(d)))")
    r = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True,
                       cwd=tmp_path, env={"PYTHONPATH": str(tmp_path / "site"), "PATH": ""})
    assert r.returncode == 0, r.stderr
    where, count = r.stdout.split()
    assert Path(where) == tmp_path / "site" / "fastvae" / "kernels"
    assert int(count) == len(C.kernel_signatures(ROOT / "kernels"))


def test_removing_the_emulated_device_forgets_its_array_module(emu_library):
    import cuda_emu

    dev = cuda_emu.emulated_device(*emu_library)
    C.use_device(dev)
    assert C.xp is dev.xp and isinstance(dev.xp, cuda_emu.FakeCupy)
    C.use_device(None)
    assert "xp" not in vars(C)  # a later model gets CuPy's, not the emulator's



@pytest.mark.parametrize("arch", [80, 90])
@pytest.mark.parametrize("cu", CU_FILES, ids=lambda p: p.name)
def test_every_cu_file_compiles_with_nvrtc(cu, arch):
    """NVRTC, the compiler cupy.RawModule uses (its own headers, options and limits, unlike
    nvcc's), through CuPy's binding, which runs without a GPU, with the very options the
    backend passes; every kernel of the file must be an entry of the PTX."""
    try:
        from cupy_backends.cuda.libs import nvrtc
        nvrtc.getVersion()
    except Exception as e:  # noqa: BLE001  (not installed, or no NVRTC library)
        pytest.skip(f"NVRTC through CuPy is not available ({type(e).__name__}: {e}); "
                    "pip install cupy-cuda13x nvidia-cuda-nvrtc")
    prog = nvrtc.createProgram(cu.read_text(), cu.name, [], [])
    try:
        nvrtc.compileProgram(prog, [*C.compile_options(cu.parent),
                                    f"--gpu-architecture=compute_{arch}"])
    except nvrtc.NVRTCError:
        pytest.fail(f"{cu.name} does not compile with NVRTC for compute_{arch}:\n"
                    + nvrtc.getProgramLog(prog))
    ptx = nvrtc.getPTX(prog)
    ptx = ptx.decode() if isinstance(ptx, bytes) else ptx
    names = [n for n, (f, _) in C.kernel_signatures(cu.parent).items() if f == cu.name]
    assert names
    for name in names:
        assert re.search(rf"\.entry {name}\(", ptx), f"{name} is not in the PTX of {cu.name}"


def test_the_compile_options_change_with_the_shared_header(tmp_path):
    """CuPy's disk cache is keyed by source and options, not by included files: the options
    carry a digest of common.cuh, so a changed header builds new kernels."""
    import shutil
    from fastvae.backends import cuda as C
    kdir = tmp_path / "k"
    shutil.copytree(C.kernel_dir(), kdir)
    before = C.compile_options(kdir)
    assert before[1:] == C.compile_options(C.kernel_dir())[1:]  # same header, same digest
    with open(kdir / "common.cuh", "a") as f:
        f.write("\n// a new version\n")
    after = C.compile_options(kdir)
    assert after[:2] == before[:2] and after[2] != before[2]
    assert after[2].startswith("-DFASTVAE_COMMON_CUH=")
