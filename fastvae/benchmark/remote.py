"""A benchmark implementation's training step in a process of its own, driven line by line
over stdin/stdout (:class:`fastvae.benchmark.measure.RemoteStep`).

    python -m fastvae.benchmark.remote NAME MODEL BATCH [TORCH_THREADS]

Commands, one per line, each answered with one line: ``ready`` -> ``ok`` (the
implementation is built); ``calibrate TARGET_S CALLS`` -> the block length (warm-up first;
CALLS > 0 fixes it); ``block N`` -> seconds per call over N calls; ``quit``.
"""
from __future__ import annotations

import sys


def main(argv=None):
    args = list(argv or sys.argv[1:])
    name, model, batch = args[:3]
    if len(args) > 3 and int(args[3]) > 0 and name.startswith("torch"):
        import torch
        torch.set_num_threads(int(args[3]))
    from .impls import MODELS, build, make_batches
    from .measure import time_block
    impl = build(name, model)
    batches = make_batches(MODELS[model][0], int(batch))
    state = {"i": 0}

    def step():
        x = batches[state["i"] % len(batches)]
        state["i"] += 1
        return impl.train_step(x)

    if hasattr(impl, "enter"):
        impl.enter()
    sync = impl.sync
    for line in sys.stdin:
        cmd, *args = line.split()
        if cmd == "quit":
            break
        if cmd == "ready":
            out = "ok"
        elif cmd == "calibrate":
            target, calls = float(args[0]), int(args[1])
            for _ in range(3):
                step()
            sync()
            out = calls if calls > 0 else max(1, min(1000, int(target / max(
                time_block(step, 1, sync), 1e-7))))
        elif cmd == "block":
            out = repr(time_block(step, int(args[0]), sync))
        else:
            raise ValueError(f"unknown command {line!r}")
        sys.stdout.write(f"{out}\n")
        sys.stdout.flush()


if __name__ == "__main__":
    main()
