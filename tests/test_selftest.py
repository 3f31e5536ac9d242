"""fastvae selftest: its checks pass on the emulated GPU (so they are right when a real one
runs them), and on a machine without a GPU it says so and checks the cpu backend."""
import json

import pytest

import fastvae.backends
from fastvae import selftest
from fastvae.cli import main

from cuda_helpers import emu, emu_library  # noqa: F401  (fixtures)


def test_every_check_passes_on_the_emulated_gpu(emu):
    lines = []
    rep = selftest.run("cuda", with_speed=False, log=lines.append)
    assert rep["ok"], rep["checks"]
    assert [c["check"] for c in rep["checks"]] == [t for t, _ in selftest.CHECKS]
    assert rep["environment"]["gpu"].startswith("emulated") and "gpu_skipped" not in rep
    assert all(ln.startswith("ok") for ln in lines)


def test_a_failing_check_is_reported_not_raised(emu, monkeypatch):
    from fastvae.backends import cuda
    monkeypatch.setattr(cuda, "bias_act_fwd", lambda *a: None)  # a kernel that does nothing
    rep = selftest.run("cuda", with_speed=False, log=lambda s: None)
    assert not rep["ok"]
    failed = [c for c in rep["checks"] if not c["ok"]]
    assert failed[0]["check"] == "kernels against the reference"
    assert "bias_act_fwd" in failed[0]["error"]


def test_without_a_gpu_it_says_why_and_checks_the_cpu(capsys):
    if fastvae.backends.cuda_status() is None:
        pytest.skip("this machine has a GPU")
    assert main(["selftest", "--json"]) == 0
    rep = json.loads(capsys.readouterr().out)
    assert rep["gpu_skipped"].startswith("the cuda backend needs") and rep["ok"]
    assert rep["backend"] == "cpu" and len(rep["checks"]) == 2


def test_a_broken_install_is_reported_not_raised(emu, monkeypatch):
    """Kernel sources missing (a broken install): the report says so, no traceback."""
    from fastvae.backends import cuda as C
    C.forget_devices()  # as in a fresh process: the device is made on first use

    def missing(*a, **k):
        raise FileNotFoundError("the CUDA kernel sources were not found; reinstall fastvae")
    monkeypatch.setattr("fastvae.backends.cuda_device.kernel_dir", missing)
    rep = selftest.run("cuda", with_speed=False, log=lambda s: None)
    assert not rep["ok"]
    assert "kernel sources were not found" in rep["environment"]["gpu_info_error"]
