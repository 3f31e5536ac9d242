"""Memory and quality, side by side (run once each; the numbers go to extra_info and the
printed output).  Peak resident memory of a training run, fastvae against PyTorch, and the
Fashion-MNIST comparison of test negative ELBOs per epoch (benchmarks/bench_fashion.py)."""
import os
import sys

import pytest

from conftest import SMOKE
from fastvae import data
from fastvae.benchmark import impls as I
from fastvae.benchmark import measure

HERE = os.path.dirname(os.path.abspath(__file__))


@pytest.mark.parametrize("name", [n for n in ("fastvae-cpu", "torch-eager")
                                  if I.available(n) is None])
def test_peak_memory(benchmark, name):
    benchmark.group = "memory: training run, canonical B128"
    res = benchmark.pedantic(measure.peak_memory, args=(name,),
                             kwargs={"steps": 5 if SMOKE else 500}, rounds=1)
    benchmark.extra_info.update(res)
    print(f"\n{name}: peak RSS {res['peak_rss_mb']:.0f} MB")
    if name.startswith("fastvae"):
        assert res["steady_state_peak_bytes"] < 128 * 20 * 4  # no array allocated per step


@pytest.mark.skipif(not os.path.isdir(data.DEBIAN_FASHION_MNIST),
                    reason="apt-get install dataset-fashion-mnist")
def test_fashion_mnist_quality(benchmark):
    pytest.importorskip("torch")
    sys.path.insert(0, HERE)
    import bench_fashion

    benchmark.group = "quality: Fashion-MNIST"
    kw = {"epochs": 1, "steps": 5} if SMOKE else {"epochs": 10}
    res = benchmark.pedantic(bench_fashion.run, kwargs={**kw, "quiet": False}, rounds=1)
    benchmark.extra_info.update(test_gap_nats=res["test_gap_nats"],
                                rows=res["rows"])
    print("\n" + bench_fashion.markdown(res))
