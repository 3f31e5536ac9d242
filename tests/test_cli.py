"""The fastvae command: train, resume, sample, reconstruct, eval, info, and bad input."""
import json
import os
import subprocess
import sys

import numpy as np
import pytest

import fastvae
from fastvae.cli.main import build_parser, main

SMALL = ["--n-images", "500", "--hidden", "24", "--latent", "3", "--batch-size", "50",
         "--backend", "cpu", "--quiet"]


@pytest.fixture
def workdir(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    return tmp_path


def test_train_writes_model_history_and_pictures(workdir, capsys):
    pytest.importorskip("matplotlib")
    assert main(["train", "--epochs", "2", *SMALL]) == 0
    run = workdir / "runs" / "shapes28-1"
    files = set(os.listdir(run))
    assert {"model.npz", "history.json", "run.json", "samples.png", "reconstructions.png",
            "interpolation.png", "traversal.png", "latent.png", "loss.png"} <= files
    for f in files:
        if f.endswith(".png"):
            assert (run / f).read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    m = fastvae.load(run / "model.npz")
    assert len(m.history) == 2 and m.metadata["image_shape"] == [28, 28]
    out = capsys.readouterr().out
    assert f"test negative ELBO {m.history[-1]['val_neg_elbo']:.2f} nats" in out
    # a second run goes to the next directory instead of overwriting
    assert main(["train", "--epochs", "1", "--no-pictures", *SMALL]) == 0
    assert (workdir / "runs" / "shapes28-2" / "model.npz").exists()


def test_existing_output_is_never_overwritten(workdir, capsys):
    assert main(["train", "--epochs", "1", "--no-pictures", "--out", "r", *SMALL]) == 0
    before = (workdir / "r" / "model.npz").read_bytes()
    assert main(["train", "--epochs", "1", "--out", "r", *SMALL]) == 2
    assert "r/model.npz already exists; continue it with --resume" in capsys.readouterr().err
    assert (workdir / "r" / "model.npz").read_bytes() == before


def test_resume_equals_straight_run(workdir):
    args = ["--no-pictures", *SMALL, "--binarize", "dynamic", "--kl-warmup", "1"]
    assert main(["train", "--epochs", "3", "--out", "a", *args]) == 0
    assert main(["train", "--epochs", "1", "--out", "b", *args]) == 0
    assert main(["train", "--epochs", "3", "--out", "b", "--resume", "--quiet",
                 "--no-pictures"]) == 0
    a, b = fastvae.load("a/model.npz"), fastvae.load("b/model.npz")
    np.testing.assert_array_equal(a.flat_params, b.flat_params)
    assert [r["val_neg_elbo"] for r in a.history] == [r["val_neg_elbo"] for r in b.history]
    assert len(json.load(open("b/history.json"))) == 3


NONDEFAULT = ["--optimizer", "sgd", "--lr", "0.05", "--momentum", "0.5", "--batch-size", "40",
              "--kl-warmup", "1", "--binarize", "dynamic", "--clip-norm", "10",
              "--weight-decay", "1e-4", "--val-samples", "2"]


def test_resume_finishes_an_interrupted_run_with_its_saved_settings(workdir, monkeypatch):
    """Ctrl-C in the middle of epoch 2 of 3, then --resume with no option but --out: the
    run ends as the uninterrupted one did, bit for bit."""
    args = ["--no-pictures", *SMALL, *NONDEFAULT]
    assert main(["train", "--epochs", "3", "--out", "a", *args]) == 0
    import signal
    calls, forward = [0], fastvae.VAE.forward

    def interrupting(self, *a, **k):
        if k.get("grad", True):
            calls[0] += 1
            if calls[0] == 15:  # 12 steps per epoch: inside epoch 2
                signal.raise_signal(signal.SIGINT)
        return forward(self, *a, **k)

    monkeypatch.setattr(fastvae.VAE, "forward", interrupting)
    assert main(["train", "--epochs", "3", "--out", "b", *args]) == 130
    monkeypatch.setattr(fastvae.VAE, "forward", forward)
    b = fastvae.load("b/model.npz")
    assert b.train_state.epoch == 1 and b.train_state.row == 3 * 40
    assert main(["train", "--out", "b", "--resume", "--quiet", "--no-pictures"]) == 0
    a, b = fastvae.load("a/model.npz"), fastvae.load("b/model.npz")
    np.testing.assert_array_equal(a.flat_params, b.flat_params)
    assert b.optimizer.name == "sgd" and b.optimizer.momentum == 0.5
    assert b.optimizer.clip_norm == 10 and b.train_state.settings["batch_size"] == 40
    assert [r["val_neg_elbo"] for r in a.history] == [r["val_neg_elbo"] for r in b.history]


def test_resume_applies_and_reports_a_changed_option_and_refuses_a_model_change(workdir,
                                                                                capsys):
    args = ["--no-pictures", *SMALL, *NONDEFAULT]
    assert main(["train", "--epochs", "1", "--out", "r", *args]) == 0
    capsys.readouterr()
    assert main(["train", "--out", "r", "--resume", "--epochs", "2", "--lr", "0.01",
                 "--quiet", "--no-pictures"]) == 0
    err = capsys.readouterr().err
    assert "settings changed from the saved run (applied): lr 0.05 -> 0.01" in err
    m = fastvae.load("r/model.npz")
    assert m.optimizer.lr == 0.01 and len(m.history) == 2
    assert json.load(open("r/run.json"))["epochs"] == 2  # the run's new total
    assert main(["train", "--out", "r", "--resume", "--latent", "5", "--hidden", "24",
                 "--quiet"]) == 2
    err = capsys.readouterr().err
    assert "cannot change on --resume: --latent 5 (the model has 3)" in err
    assert "--hidden" not in err  # the same value is no change


def test_resume_of_a_run_from_fastvae_0_1_takes_its_settings_from_run_json(workdir, capsys):
    """fastvae 0.1 kept fit's settings in run.json only; --resume reads them from there."""
    from test_checkpoint import to_version_1
    args = ["--no-pictures", *SMALL, "--kl-warmup", "3"]
    assert main(["train", "--epochs", "1", "--out", "old", *args]) == 0
    to_version_1("old/model.npz", "old/model.npz")
    run = json.load(open("old/run.json"))
    run.update(batch_size=50, kl_warmup=3.0, optimizer="adam", lr=0.001)  # as 0.1 wrote it
    json.dump(run, open("old/run.json", "w"))
    capsys.readouterr()
    assert main(["train", "--out", "old", "--resume", "--epochs", "2", "--quiet",
                 "--no-pictures"]) == 0
    err = capsys.readouterr().err
    assert "settings changed" not in err and "did not record" not in err
    m = fastvae.load("old/model.npz")
    assert m.train_state.settings["batch_size"] == 50 and m.train_state.settings_saved
    assert m.history[1]["beta"] == pytest.approx(2 / 3) and m.history[1]["steps"] == 9


def test_model_and_training_options_reach_the_model(workdir):
    assert main(["train", "--epochs", "1", "--out", "g", "--no-pictures", *SMALL,
                 "--likelihood", "gaussian", "--obs-scale", "learned", "--decoder-hidden",
                 "12,10", "--activation", "leaky_relu", "--activation-alpha", "0.2",
                 "--optimizer", "adamw", "--weight-decay", "0.02", "--clip-norm", "3"]) == 0
    m = fastvae.load("g/model.npz")
    cfg = m.config()
    assert cfg["obs_scale"] == "learned" and cfg["decoder_hidden"] == [12, 10]
    assert cfg["activation_alpha"] == 0.2 and cfg["hidden"] == [24]
    assert m.optimizer.name == "adamw" and m.optimizer.weight_decay == 0.02
    assert m.optimizer.clip_norm == 3.0


def test_bad_option_combinations_write_nothing(workdir, capsys):
    assert main(["train", "--out", "x", *SMALL, "--momentum", "0.9"]) == 2
    assert "momentum applies to optimizer='sgd' only" in capsys.readouterr().err
    assert main(["train", "--out", "x", *SMALL, "--activation-alpha", "0.1"]) == 2
    assert "activation='relu' has none" in capsys.readouterr().err
    assert main(["train", "--out", "x", *SMALL, "--obs-scale", "learned"]) == 2
    assert "needs likelihood='gaussian'" in capsys.readouterr().err
    assert not os.path.exists("x")


def test_shards_train_and_resume_to_the_same_bits_on_any_thread_count(workdir, monkeypatch):
    """--shards is a saved fit setting; --threads is not, and changes no bit.  Without
    --threads (or FASTVAE_NUM_THREADS) a run takes a thread per shard."""
    from fastvae.backends import cpu
    monkeypatch.delenv("FASTVAE_NUM_THREADS", raising=False)
    before = cpu.get_num_threads()
    args = ["--no-pictures", *SMALL, "--binarize", "dynamic", "--shards", "3"]
    try:
        assert main(["train", "--epochs", "2", "--out", "a", *args]) == 0
        assert cpu.get_num_threads() == 3
        assert main(["train", "--epochs", "1", "--out", "b", "--threads", "1", *args]) == 0
        assert cpu.get_num_threads() == 1
        assert main(["train", "--epochs", "2", "--out", "b", "--resume", "--quiet",
                     "--no-pictures", "--threads", "2"]) == 0
        assert cpu.get_num_threads() == 2
    finally:
        cpu.set_num_threads(before)
    a, b = fastvae.load("a/model.npz"), fastvae.load("b/model.npz")
    assert a.train_state.settings["shards"] == b.train_state.settings["shards"] == 3
    np.testing.assert_array_equal(a.flat_params, b.flat_params)


def test_shards_with_free_bits_are_refused_before_anything_is_written(workdir, capsys):
    assert main(["train", "--out", "x", *SMALL, "--shards", "2", "--free-bits", "0.1"]) == 2
    assert "shards=2 with free_bits=0.1: free bits gate" in capsys.readouterr().err
    assert not os.path.exists("x")
    for flag in ("--shards", "--threads"):
        with pytest.raises(SystemExit):
            main(["train", "--out", "x", *SMALL, flag, "0"])
        assert f"argument {flag}: must be an integer > 0, got 0" in capsys.readouterr().err
    assert not os.path.exists("x")


def test_epochs_help_says_total_and_fit_says_more():
    from fastvae.training.fit import fit
    text = build_parser()._subparsers._group_actions[0].choices["train"].format_help()
    assert "the run's total number of epochs" in " ".join(text.split())
    assert "for ``epochs`` more epochs" in " ".join(fit.__doc__.split())


def test_sample_reconstruct_eval(workdir, capsys):
    pytest.importorskip("matplotlib")
    assert main(["train", "--epochs", "1", "--out", "r", "--no-pictures", *SMALL]) == 0
    capsys.readouterr()
    assert main(["sample", "r/model.npz", "-n", "9", "--out", "s.png", "--npy", "s.npy"]) == 0
    s = np.load("s.npy")
    assert s.shape == (9, 784) and 0 <= s.min() and s.max() <= 1
    assert (workdir / "s.png").stat().st_size > 0
    assert main(["reconstruct", "r/model.npz", "-n", "5", "--out", "rec.png"]) == 0
    assert (workdir / "rec.png").stat().st_size > 0
    capsys.readouterr()
    assert main(["eval", "r/model.npz", "--json"]) == 0
    ev = json.loads(capsys.readouterr().out)
    m = fastvae.load("r/model.npz")
    assert ev["neg_elbo"] == pytest.approx(m.history[-1]["val_neg_elbo"], rel=1e-9)
    assert ev["n"] == 50 and ev["data"] == "shapes28-test"
    assert 0 <= ev["active_units"] <= 3 and len(ev["kl_per_dim"]) == 3
    assert main(["eval", "r/model.npz", "--iwae", "20"]) == 0
    out = capsys.readouterr().out
    from fastvae import data
    ll = m.log_likelihood(data.load("shapes", shapes_n=500)[1], k=20)
    assert f"negative log-likelihood {ll.nll:.3f} +- {ll.stderr:.3f}" in out
    assert "(importance-weighted bound, k=20)" in out and "active units" in out
    # evaluation data is checked like training data; one row has no standard error: null
    bad = np.full((3, 784), 0.5, np.float32)
    bad[1, 5] = np.nan
    np.save("bad.npy", bad)
    assert main(["eval", "r/model.npz", "--data", "bad.npy", "--split", "train"]) == 2
    assert "error: bad.npy-train: 1 NaN or infinite value(s)" in capsys.readouterr().err
    np.save("one.npy", np.full((2, 784), 0.5, np.float32))  # 1 train row, 1 held out
    assert main(["eval", "r/model.npz", "--data", "one.npy", "--iwae", "3", "--json"]) == 0
    one = json.loads(capsys.readouterr().out)
    assert one["n"] == 1 and one["nll_stderr"] is None and one["nll"] > 0
    m.flat_params[...] = np.nan  # a diverged model: its numbers are null, not a traceback
    m.save("nan.npz")
    assert main(["eval", "nan.npz", "--data", "one.npy", "--iwae", "3", "--json"]) == 0
    gone = json.loads(capsys.readouterr().out)
    assert gone["neg_elbo"] is None and gone["nll"] is None


def test_info(capsys):
    assert main(["info"]) == 0
    out = capsys.readouterr().out
    assert f"fastvae {fastvae.__version__}" in out and "numba" in out and "backends:" in out
    from fastvae.backends.cpu import blas_threads
    counts = ", ".join(str(get()) for get, _ in blas_threads.controls())
    assert (f"BLAS threads: {counts}; fit's shards run each product on one" in out
            if counts else "BLAS threads: not settable here" in out)


def test_bad_input_is_one_clear_line(workdir, capsys):
    assert main(["train", "--data", "nowhere.npy", *SMALL]) == 2
    err = capsys.readouterr().err
    assert err.strip() == ("fastvae train: error: nowhere.npy: no such file or directory "
                           "(built-in data: 'shapes')")
    np.save("wide.npy", np.full((300, 16), 3.0, np.float32))
    assert main(["train", "--data", "wide.npy", *SMALL]) == 2
    assert "pass --likelihood gaussian" in capsys.readouterr().err
    nan = np.full((300, 16), 0.5, np.float32)
    nan[7, 3] = np.nan
    np.save("nan.npy", nan)
    for lik, binarize in (("bernoulli", "none"), ("gaussian", "none"),
                          ("bernoulli", "static"), ("bernoulli", "dynamic")):
        # NaN: no likelihood helps, none is suggested; a binarization does not hide it
        assert main(["train", "--data", "nan.npy", "--out", "nan", *SMALL,
                     "--likelihood", lik, "--binarize", binarize]) == 2
        err = capsys.readouterr().err
        assert "1 NaN or infinite value(s)" in err and "gaussian" not in err, err
        assert not os.path.exists("nan")  # found before the run directory is written
    assert main(["train", "--out", "big", *SMALL, "--batch-size", "5000"]) == 2
    assert "450 training rows is fewer than one batch" in capsys.readouterr().err
    assert not os.path.exists("big")  # nothing written for a run that cannot start
    assert main(["train", "--resume", *SMALL]) == 2
    assert "--resume needs --out" in capsys.readouterr().err
    for cmd in (["train", "--out", "neg", *SMALL], ["eval", "nothing.npz"],
                ["sample", "nothing.npz"]):
        with pytest.raises(SystemExit) as e:  # argparse's own one line, exit 2
            main([*cmd, "--seed", "-1"])
        assert e.value.code == 2
        assert "--seed: must be an integer >= 0, got -1" in capsys.readouterr().err
    assert main(["eval", "nothing.npz"]) == 2
    assert "nothing.npz: no such checkpoint file" in capsys.readouterr().err
    os.makedirs("rundir")
    open(os.path.join("rundir", "model.npz"), "wb").close()
    assert main(["sample", "rundir"]) == 2  # a run directory: its model named
    inside = os.path.join("rundir", "model.npz")
    assert f"a directory, not a checkpoint file; its model is {inside}" in capsys.readouterr().err
    if fastvae.backends.cuda_status() is not None:  # no GPU here: one line saying what is missing
        assert main(["train", "--out", "gpu", *SMALL, "--backend", "cuda"]) == 2
        err = capsys.readouterr().err
        assert err.startswith("fastvae train: error: the cuda backend needs ") and "\n" not in err.strip()
        assert not os.path.exists("gpu")
    with pytest.raises(SystemExit) as e:
        main(["train", "--hidden", "a,b"])
    assert e.value.code == 2 and "comma-separated integers" in capsys.readouterr().err
    with pytest.raises(SystemExit):
        main(["train", "--latent", "0"])
    assert "argument --latent: must be an integer > 0, got 0" in capsys.readouterr().err


def test_help_explains_every_option(capsys):
    parser = build_parser()
    for cmd in ("train", "sample", "reconstruct", "eval"):
        with pytest.raises(SystemExit) as e:
            main([cmd, "--help"])
        assert e.value.code == 0
        text = capsys.readouterr().out
        sub = parser._subparsers._group_actions[0].choices[cmd]
        for action in sub._actions:
            if action.option_strings and action.dest != "help":
                assert action.help, f"{cmd} {action.option_strings} has no help text"
                assert action.option_strings[-1] in text


def test_console_entry_point_runs():
    r = subprocess.run([sys.executable, "-m", "fastvae", "--help"], capture_output=True,
                       text=True, timeout=60)
    assert r.returncode == 0 and "train" in r.stdout and "info" in r.stdout
