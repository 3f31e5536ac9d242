"""Speed, side by side: training step, inference, single-row latency, one epoch, cold start.

Parameters come from the same plan as ``fastvae bench`` (fastvae.benchmark.suite.plan);
each pytest-benchmark group is one workload at one size, so its rows compare
implementations on identical work (same initial weights, same batches, same Adam).
"""
import numpy as np
import pytest

from conftest import SMOKE
from fastvae.benchmark import impls as I
from fastvae.benchmark import measure, suite

pytest.importorskip("pytest_benchmark")

PLAN = suite.plan(quick=False)
if SMOKE:
    PLAN.update(train=[("tiny", 32)], infer=[("tiny", 32)], latency=[("tiny", 1)],
                epoch=[("tiny", 32)], epoch_rows=256, compile={("train", "tiny", 32)})
NAMES = [n for n in I.ALL if I.available(n) is None]
_BUILT = {}


def impl(name, model):
    """One built implementation per (name, model), shared by the tests of this module
    (torch.compile compiles once per shape, not once per test)."""
    key = (name, model)
    if key not in _BUILT:
        _BUILT[key] = I.build(name, model)
    return _BUILT[key]


def cases(kind):
    return [pytest.param(n, m, b, id=f"{m}-B{b}-{n}") for m, b in PLAN[kind]
            for n in suite._impls_for(kind, m, b, PLAN, NAMES)]


@pytest.mark.parametrize("name,model,batch", cases("train"))
def test_train_step(benchmark, name, model, batch):
    benchmark.group = f"train {model} B{batch}"
    xs = I.make_batches(I.MODELS[model][0], batch)
    it = iter(range(10 ** 9))
    m = impl(name, model)
    benchmark.extra_info["flop"] = I.train_flop(model, batch)
    loss = benchmark(lambda: m.train_step(xs[next(it) % 8]))
    assert np.isfinite(float(loss))


@pytest.mark.parametrize("name,model,batch", cases("infer"))
def test_encode_decode(benchmark, name, model, batch):
    benchmark.group = f"infer {model} B{batch}"
    D, _, Z = I.MODELS[model]
    x = I.make_batches(D, batch, n=1)[0]
    z = np.random.default_rng(0).standard_normal((batch, Z)).astype(np.float32)
    m = impl(name, model)
    mu, out = benchmark(lambda: (m.encode(x)[0], m.decode(z)))
    assert np.asarray(out).shape == (batch, D) and np.asarray(mu).shape == (batch, Z)


@pytest.mark.parametrize("name,model,batch", cases("latency"))
def test_encode_one_row(benchmark, name, model, batch):
    benchmark.group = f"latency {model}"
    x = I.make_batches(I.MODELS[model][0], 1, n=1)[0]
    m = impl(name, model)
    mu, _ = benchmark(lambda: m.encode(x))
    assert np.asarray(mu).shape == (1, I.MODELS[model][2])


@pytest.mark.parametrize("name,model,batch", cases("epoch"))
def test_one_epoch(benchmark, name, model, batch):
    benchmark.group = f"epoch {model} {PLAN['epoch_rows']} rows B{batch}"
    data = np.vstack(I.make_batches(I.MODELS[model][0], PLAN["epoch_rows"] // 8, seed=1))
    run = suite._epoch_fn(impl(name, model), data, batch, np.random.default_rng(0))
    benchmark.pedantic(run, rounds=1 if SMOKE else 5, warmup_rounds=1)


@pytest.mark.parametrize("name", [n for n in NAMES if n != "torch-compile"])
def test_cold_start(benchmark, name, tmp_path):
    """A fresh process: import, build the model, first encode (fastvae: Numba cache warm,
    after one cold run whose time is recorded in extra_info)."""
    benchmark.group = "cold start canonical"
    cache = str(tmp_path)
    benchmark.extra_info["cold_cache_s"] = measure.cold_start(name, "canonical", cache)["total_s"]
    res = benchmark.pedantic(measure.cold_start, args=(name, "canonical", cache),
                             rounds=1 if SMOKE else 3)
    assert res["total_s"] > 0
