"""oneDNN's OpenMP threads are loaded asleep between products (GOMP_SPINCOUNT=0 while the
library loads, the environment put back after), and the cpu backend's kernels then take
every core by default; a user's setting, or a GNU OpenMP already loaded, is left alone."""
from __future__ import annotations

import json
import os
import subprocess
import sys

import pytest

from fastvae.backends.cpu import onednn, pool


def _library_or_skip():
    try:
        return onednn.library()
    except RuntimeError as e:
        pytest.skip(str(e))


@pytest.fixture
def fresh_pool(monkeypatch):
    """The pool's settings as in a new process (restored after)."""
    monkeypatch.setattr(pool, "_pool", {"n": None, "pool": None, "chosen": False})
    monkeypatch.delenv(pool.ENV_VAR, raising=False)


@pytest.mark.parametrize("before, after, state", [
    (False, True, "sleeps"),    # oneDNN brought GNU OpenMP: it read the 0
    (False, False, "spins"),    # a oneDNN on another runtime: nothing read it
    (True, True, "spins"),      # already loaded (PyTorch's): too late to set
    (None, None, "spins")])     # not knowable (no /proc): not set
def test_the_spin_is_set_only_while_oneDNN_loads_and_only_when_it_can_take_effect(
        monkeypatch, before, after, state):
    for v in ("GOMP_SPINCOUNT", "OMP_WAIT_POLICY"):
        monkeypatch.delenv(v, raising=False)
    answers = iter([before, after])
    monkeypatch.setattr(onednn, "_gomp_loaded", lambda: next(answers))
    with onednn._quiet_openmp() as waits:
        inside = os.environ.get("GOMP_SPINCOUNT")
    assert "GOMP_SPINCOUNT" not in os.environ
    assert waits[0][0] == state
    assert inside == (onednn.QUIET_SPINCOUNT if before is False else None)


def test_a_failed_load_puts_the_environment_back(monkeypatch):
    monkeypatch.delenv("GOMP_SPINCOUNT", raising=False)
    monkeypatch.delenv("OMP_WAIT_POLICY", raising=False)
    monkeypatch.setattr(onednn, "_gomp_loaded", lambda: False)
    with pytest.raises(OSError):
        with onednn._quiet_openmp():
            raise OSError("no such library")
    assert "GOMP_SPINCOUNT" not in os.environ


@pytest.mark.parametrize("env, state", [
    ({"GOMP_SPINCOUNT": "300000"}, "spins"), ({"GOMP_SPINCOUNT": "0"}, "sleeps"),
    ({"GOMP_SPINCOUNT": "0k"}, "sleeps"), ({"GOMP_SPINCOUNT": "infinite"}, "spins"),
    ({"OMP_WAIT_POLICY": "PASSIVE"}, "sleeps"), ({"OMP_WAIT_POLICY": "active"}, "spins"),
    # (libgomp: the spin count wins over the policy)
    ({"OMP_WAIT_POLICY": "passive", "GOMP_SPINCOUNT": "300000"}, "spins"),
    ({"OMP_WAIT_POLICY": "active", "GOMP_SPINCOUNT": "0"}, "sleeps")])
def test_a_users_openmp_setting_is_kept_and_read(monkeypatch, env, state):
    for v in ("GOMP_SPINCOUNT", "OMP_WAIT_POLICY"):
        monkeypatch.delenv(v, raising=False)
    for k, v in env.items():
        monkeypatch.setenv(k, v)
    monkeypatch.setattr(onednn, "_gomp_loaded", lambda: False)
    with onednn._quiet_openmp() as waits:
        assert {k: os.environ[k] for k in env} == env
    assert waits[0][0] == state
    assert all(f"{k}={v}" in waits[0][1] for k, v in env.items())
    assert {k: os.environ[k] for k in env} == env


def test_default_to_cores_respects_a_chosen_count(fresh_pool, monkeypatch):
    monkeypatch.setattr(pool, "usable_cores", lambda: 3)
    assert pool.get_num_threads() == 1
    pool.default_to_cores()
    assert pool.get_num_threads() == 3
    pool.set_num_threads(1)
    pool.default_to_cores()
    assert pool.get_num_threads() == 1


def test_default_to_cores_keeps_the_environments_count(fresh_pool, monkeypatch):
    monkeypatch.setenv(pool.ENV_VAR, "1")
    monkeypatch.setattr(pool, "usable_cores", lambda: 4)
    pool.default_to_cores()
    assert pool.get_num_threads() == 1


def test_default_to_cores_is_capped_at_the_finest_cut(fresh_pool, monkeypatch):
    monkeypatch.setattr(pool, "usable_cores", lambda: 64)
    pool.default_to_cores()
    assert pool.get_num_threads() == pool.MAX_CHUNKS


PROBE = """
import json, os, sys
from fastvae.backends.cpu import onednn, pool
before = pool.get_num_threads()
onednn.library()
print(json.dumps({"before": before, "after": pool.get_num_threads(),
                  "waits": onednn.openmp_waits(), "cores": pool.usable_cores(),
                  "left": os.environ.get("GOMP_SPINCOUNT"),
                  "gomp": onednn._gomp_loaded()}))
"""


def _probe(env_extra, drop=()):
    env = {k: v for k, v in os.environ.items()
           if k not in ("GOMP_SPINCOUNT", "OMP_WAIT_POLICY", pool.ENV_VAR, *drop)}
    env.update(env_extra)
    out = subprocess.run([sys.executable, "-c", PROBE], env=env, capture_output=True,
                         text=True, timeout=120)
    assert out.returncode == 0, out.stderr
    got = json.loads(out.stdout.strip().splitlines()[-1])
    got["stderr"] = out.stderr
    return got


def _gnu_openmp_or_skip():
    lib = _library_or_skip()
    if not onednn._gomp_loaded():
        pytest.skip(f"the oneDNN found ({lib.path}) does not run on GNU OpenMP")


def test_a_new_process_loads_oneDNN_asleep_and_takes_every_core():
    _gnu_openmp_or_skip()
    # (libgomp prints the settings it read at load, to stderr)
    got = _probe({"OMP_DISPLAY_ENV": "VERBOSE"})
    assert got["waits"][0] == "sleeps" and got["left"] is None
    assert "GOMP_SPINCOUNT = '0'" in got["stderr"]
    assert got["before"] == 1 and got["after"] == min(pool.MAX_CHUNKS, got["cores"])


@pytest.mark.parametrize("env, state", [({"GOMP_SPINCOUNT": "300000"}, "spins"),
                                        ({pool.ENV_VAR: "1"}, "sleeps")])
def test_a_new_process_keeps_what_the_user_set(env, state):
    _gnu_openmp_or_skip()
    got = _probe(env)
    assert got["waits"][0] == state
    assert got["left"] == env.get("GOMP_SPINCOUNT")
    assert got["after"] == 1


def test_the_cli_gives_each_mpi_rank_one_thread(fresh_pool, monkeypatch):
    from types import SimpleNamespace

    from fastvae.cli.common import set_threads
    monkeypatch.setattr(pool, "usable_cores", lambda: 2)
    pool.default_to_cores()  # (as a bf16 model's oneDNN would)
    model = SimpleNamespace(train_state=None)
    set_threads(SimpleNamespace(threads=None), model, {}, ranks=2)
    assert pool.get_num_threads() == 1
    set_threads(SimpleNamespace(threads=None), model, {"shards": 2}, ranks=1)
    assert pool.get_num_threads() == 2
    set_threads(SimpleNamespace(threads=3), model, {}, ranks=2)
    assert pool.get_num_threads() == 3


def test_info_names_a_bad_thread_count_instead_of_a_traceback():
    env = {k: v for k, v in os.environ.items() if k != pool.ENV_VAR}
    env[pool.ENV_VAR] = "abc"
    out = subprocess.run([sys.executable, "-m", "fastvae", "info"], env=env,
                         capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, out.stderr
    assert "FASTVAE_NUM_THREADS must be a positive integer, got 'abc'" in out.stdout
    assert "Traceback" not in out.stderr
