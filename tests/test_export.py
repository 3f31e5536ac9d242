"""ONNX export: the exported encoder, decoder and whole model run in onnxruntime and agree
with fastvae's own passes; bad input is refused with errors that say what to do."""
import os
import subprocess
import sys

import numpy as np
import pytest

import fastvae
from fastvae.io import export
from fastvae.backends.reference import _act
from fastvae.backends.codes import ACTIVATIONS, LOGVAR_RANGE
from fastvae.cli import main

onnx = pytest.importorskip("onnx")
ort = pytest.importorskip("onnxruntime")

D, Z = 10, 3
TOL = {"float32": 1e-5, "float64": 1e-12}
LIKELIHOODS = [("bernoulli", 1.0), ("gaussian", 0.5), ("gaussian", "learned")]
LAYERS = [((), None), ((16, 8), None), ((9,), (4, 6, 5))]  # none; two; decoder differs
BATCHES = (1, 7, 256)


def session(proto):
    # one thread: creating onnxruntime's thread pool costs 25 ms a session, the whole file's time
    so = ort.SessionOptions()
    so.intra_op_num_threads = so.inter_op_num_threads = 1
    return ort.InferenceSession(proto.SerializeToString(), so,
                                providers=["CPUExecutionProvider"])


def make(act, lik, scale, hidden, dec_hidden, dtype, seed=1):
    """A small model whose logvar clamp is active in one column (raw logvar -45 < -30)."""
    m = fastvae.VAE(D, hidden=hidden, decoder_hidden=dec_hidden, latent_dim=Z,
                    activation=act, likelihood=lik, obs_scale=scale, dtype=dtype,
                    backend="numpy", seed=seed)
    m.parameters()["enc.head.b"][Z] = -45.0
    return m


def data(B, dtype, seed=0):
    rng = np.random.default_rng(seed + B)
    return rng.random((B, D)).astype(dtype), rng.standard_normal((B, Z)).astype(dtype)


def assert_close(got, want, tol):
    """Same dtype and shape, and |got - want| <= tol (|want| + max |want|): relative to the
    element or to the array's scale.  (An element near zero is the cancellation of a dot
    product whose terms BLAS and onnxruntime sum in different orders, so its own relative
    error says nothing; the activations' relative error is checked element by element in
    test_activations_are_exact_elementwise.)"""
    assert got.dtype == want.dtype and got.shape == want.shape
    np.testing.assert_allclose(got, want, rtol=tol, atol=tol * float(np.abs(want).max()))


@pytest.mark.parametrize("dtype", ["float32", "float64"])
@pytest.mark.parametrize("lik,scale", LIKELIHOODS)
@pytest.mark.parametrize("act", list(ACTIVATIONS))
def test_exported_parts_agree_with_fastvae(act, lik, scale, dtype):
    tol = TOL[dtype]
    for hidden, dec_hidden in LAYERS:
        m = make(act, lik, scale, hidden, dec_hidden, dtype)
        enc, dec, vae = (session(export.to_onnx(m, p)) for p in export.PARTS)
        for B in BATCHES:
            x, eps = data(B, dtype)
            mu, logvar = m.encode(x)
            got_mu, got_lv = enc.run(["mu", "logvar"], {"x": x})
            assert_close(got_mu, mu, tol)
            assert_close(got_lv, logvar, tol)
            assert (got_lv[:, 0] == LOGVAR_RANGE[0]).all()  # the clamp, exactly
            (got_xhat,) = dec.run(["x_hat"], {"z": mu})
            assert_close(got_xhat, m.decode(mu), tol)
            z = mu + np.exp(0.5 * logvar) * eps
            out = vae.run(["x_hat", "mu", "logvar", "z"], {"x": x, "eps": eps})
            for g, w in zip(out, (m.decode(z), mu, logvar, z)):
                assert_close(g, w, tol)


def test_logvar_is_clamped_at_both_ends():
    m = make("relu", "bernoulli", 1.0, (8,), None, "float64")
    m.parameters()["enc.head.b"][Z + 1] = 45.0  # above the range's top
    x, _ = data(7, "float64")
    got = session(export.to_onnx(m, "encoder")).run(["logvar"], {"x": x})[0]
    assert (got[:, 0] == LOGVAR_RANGE[0]).all() and (got[:, 1] == LOGVAR_RANGE[1]).all()
    want = m.encode(x)[1]
    np.testing.assert_array_equal(got[:, :2], want[:, :2])  # the clamp's constants, exactly
    # the unclamped column is a product onnxruntime and BLAS sum in their own orders
    assert_close(got, want, TOL["float64"])


def _run_activation(name, alpha, a):
    """The exporter's ONNX form of one activation, run element-wise in onnxruntime."""
    g = export._Graph(onnx, a.dtype)
    out = export._ACTIVATIONS[name](g, "a", alpha)
    h = onnx.helper
    graph = h.make_graph(g.nodes, "act", [h.make_tensor_value_info("a", g.elem, ["n"])],
                         [h.make_tensor_value_info(out, g.elem, ["n"])], g.inits)
    proto = h.make_model(graph, opset_imports=[h.make_opsetid("", export.DEFAULT_OPSET)],
                         ir_version=8)
    onnx.checker.check_model(proto, full_check=True)
    return session(proto).run(None, {"a": a})[0]


@pytest.mark.parametrize("dtype", ["float32", "float64"])
@pytest.mark.parametrize("act", list(ACTIVATIONS))
def test_activations_are_exact_elementwise(act, dtype):
    """Each activation within 8 ulp of fastvae's, relative to each element, from 1e-20 to
    300 in magnitude: onnxruntime's own Sigmoid (1e-5 in float32 at a < 0) and Elu (7e-5
    near 0) would fail this, and the Bernoulli output x_hat is a sigmoid."""
    t = np.logspace(-20, 2.5, 4000)
    a = np.concatenate([-t[::-1], [0.0], t]).astype(dtype)
    alpha = np.dtype(dtype).type(ACTIVATIONS[act][1] or 0.0)
    if act in ("leaky_relu", "elu"):
        alpha = np.dtype(dtype).type(0.3)
    got = _run_activation(act, alpha, a)
    want = _act(a.copy(), ACTIVATIONS[act][0], alpha)
    assert got.dtype == want.dtype
    np.testing.assert_allclose(got, want, rtol=8 * np.finfo(dtype).eps, atol=0)


def _newest_ort_opset():
    """The newest opset the installed onnxruntime loads (probed with a one-node graph)."""
    h = onnx.helper
    for v in range(onnx.defs.onnx_opset_version(), export.MIN_OPSET - 1, -1):
        graph = h.make_graph([h.make_node("Relu", ["a"], ["b"])], "probe",
                             [h.make_tensor_value_info("a", onnx.TensorProto.FLOAT, [1])],
                             [h.make_tensor_value_info("b", onnx.TensorProto.FLOAT, [1])])
        ops = [h.make_opsetid("", v)]
        try:
            session(h.make_model(graph, opset_imports=ops,
                                 ir_version=h.find_min_ir_version_for(ops, True)))
            return v
        except Exception:
            continue
    pytest.fail("onnxruntime loads no opset this exporter writes")


def test_opsets_from_13_to_the_newest_runtime_run_the_same_graph():
    m = make("elu", "bernoulli", 1.0, (8,), (6, 5), "float64")
    x, eps = data(7, "float64")
    want = m.decode(m.encode(x)[0] + np.exp(0.5 * m.encode(x)[1]) * eps)
    newest = _newest_ort_opset()
    for v in sorted({export.MIN_OPSET, export.DEFAULT_OPSET, newest}):
        proto = export.to_onnx(m, "vae", opset=v)
        assert proto.opset_import[0].version == v
        got = session(proto).run(["x_hat"], {"x": x, "eps": eps})[0]
        assert_close(got, want, TOL["float64"])
    # the newest opset onnx knows passes the checker even where this onnxruntime is older
    export.to_onnx(m, "vae", opset=onnx.defs.onnx_opset_version())


def test_file_names_shapes_and_metadata(tmp_path):
    m = make("tanh", "gaussian", "learned", (8,), None, "float32")
    path = m.export_onnx(tmp_path / "vae.onnx")
    proto = onnx.load(path)
    onnx.checker.check_model(proto, full_check=True)
    g = proto.graph
    assert [i.name for i in g.input] == ["x", "eps"]
    assert [o.name for o in g.output] == ["x_hat", "mu", "logvar", "z"]
    for v in (*g.input, *g.output):
        t = v.type.tensor_type
        assert t.elem_type == onnx.TensorProto.FLOAT
        assert t.shape.dim[0].dim_param == "batch"  # dynamic batch
    assert proto.opset_import[0].version == export.DEFAULT_OPSET
    meta = {p.key: p.value for p in proto.metadata_props}
    assert meta["part"] == "vae" and '"activation": "tanh"' in meta["config"]
    assert np.allclose(eval(meta["obs_logscale"]), m.obs_logscale())
    names = {i.name for i in g.initializer}
    assert {"enc.0.W", "enc.head.W", "dec.out.b"} <= names and "dec.logscale" not in names
    np.testing.assert_array_equal(
        onnx.numpy_helper.to_array(next(i for i in g.initializer if i.name == "enc.0.W")),
        m.parameters()["enc.0.W"])
    assert not list(tmp_path.glob(".*tmp"))  # the atomic write left no temporary file


def test_wrong_part_lists_the_choices(tmp_path):
    m = make("relu", "bernoulli", 1.0, (4,), None, "float32")
    with pytest.raises(ValueError, match="part must be one of 'encoder', 'decoder', 'vae'; "
                                         "got 'decodr'"):
        m.export_onnx(tmp_path / "m.onnx", part="decodr")
    assert not (tmp_path / "m.onnx").exists()


def test_unsupported_feature_is_named(tmp_path):
    m = make("relu", "bernoulli", 1.0, (4,), None, "float32")
    m.activation, m.act_code = "swish", 99  # a model with an activation the exporter lacks
    with pytest.raises(ValueError, match="activation 'swish'.*no ONNX form"):
        m.export_onnx(tmp_path / "m.onnx")
    m = make("relu", "bernoulli", 1.0, (4,), None, "float32")
    with pytest.raises(ValueError, match="opset 12 cannot be exported.*opsets 13 to"):
        m.export_onnx(tmp_path / "m.onnx", opset=12)
    with pytest.raises(ValueError, match="opset must be an integer"):
        m.export_onnx(tmp_path / "m.onnx", opset="17")
    with pytest.raises(ValueError, match="exports a fastvae.VAE, got dict"):
        export.export_onnx({}, tmp_path / "m.onnx")
    assert not (tmp_path / "m.onnx").exists()


def test_cli_export(tmp_path, capsys):
    m = make("softplus", "bernoulli", 1.0, (8,), None, "float64")
    m.save(tmp_path / "model.npz")
    out = tmp_path / "enc.onnx"
    assert main(["export", str(tmp_path / "model.npz"), "--onnx", str(out),
                 "--part", "encoder", "--opset", "13"]) == 0
    assert "wrote" in capsys.readouterr().out
    x, _ = data(7, "float64")
    mu, logvar = session(onnx.load(out)).run(None, {"x": x})
    assert_close(mu, m.encode(x)[0], TOL["float64"])
    assert onnx.load(out).opset_import[0].version == 13
    # bad input: one line on stderr, exit status 2
    assert main(["export", str(tmp_path / "model.npz"), "--onnx", str(out),
                 "--opset", "99"]) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("fastvae export: error: opset 99") and "\n" not in err
    assert main(["export", str(tmp_path / "nope.npz"), "--onnx", str(out)]) == 2
    assert "nope.npz" in capsys.readouterr().err
    with pytest.raises(SystemExit) as e:
        main(["export", str(tmp_path / "model.npz"), "--onnx", str(out), "--part", "all"])
    assert e.value.code == 2
    assert "choose from 'encoder', 'decoder', 'vae'" in capsys.readouterr().err
    with pytest.raises(SystemExit):
        main(["export", "--help"])
    help_text = " ".join(capsys.readouterr().out.split())
    assert (f"(default: {export.DEFAULT_OPSET}, fastvae.io.export.DEFAULT_OPSET)" in help_text
            and f"from {export.MIN_OPSET} to" in help_text and "(default: None)" not in help_text)


def test_missing_onnx_says_how_to_install(tmp_path, monkeypatch, capsys):
    m = make("relu", "bernoulli", 1.0, (4,), None, "float32")
    m.save(tmp_path / "model.npz")
    monkeypatch.setitem(sys.modules, "onnx", None)  # import onnx now raises ImportError
    with pytest.raises(ImportError, match=r"pip install 'fastvae\[onnx\]'"):
        m.export_onnx(tmp_path / "m.onnx")
    assert main(["export", str(tmp_path / "model.npz"), "--onnx", str(tmp_path / "m.onnx")]) == 2
    err = capsys.readouterr().err
    assert "pip install 'fastvae[onnx]'" in err and err.count("\n") == 1


def test_fastvae_imports_without_onnx():
    """The package, the model and the exporter module import with onnx unavailable."""
    code = ("import sys; sys.modules['onnx'] = None; import fastvae, fastvae.io.export, "
            "fastvae.core.model, fastvae.cli.main; m = fastvae.VAE(4, hidden=(3,), latent_dim=2, "
            "backend='numpy'); print('ok')")
    r = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert r.returncode == 0 and r.stdout.strip() == "ok", r.stderr


def test_readme_embedding_example_runs(tmp_path, monkeypatch):
    """The README's ONNX example runs as printed (its assert is the check)."""
    import re
    with open(os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "README.md")) as f:
        text = f.read()
    block = re.search(r"## Embedding\n.*?```python\n(.*?)```", text, re.S).group(1)
    assert "model.export_onnx" in block
    monkeypatch.chdir(tmp_path)
    exec(compile(block, "README.md", "exec"), {})
    assert (tmp_path / "vae.onnx").exists()


def test_every_block_kind_has_an_onnx_head():
    """The front end's table of ONNX heads covers every block kind (a new block is found
    in one place, and this fails until it has a head)."""
    from fastvae.core.blocks import BLOCKS
    assert set(BLOCKS) == set(export.HEADS)


def test_a_block_kind_without_a_head_is_refused_by_name(monkeypatch):
    from fastvae.core.blocks import Gaussian, Poisson
    model = fastvae.VAE(likelihood=[Gaussian(2), Poisson(1)], hidden=(4,), latent_dim=2,
                        backend="numpy")
    monkeypatch.delitem(export.HEADS, "poisson")
    with pytest.raises(ValueError, match=r"block Poisson\(n=1, exposure=False\) has no ONNX "
                                         r"head here"):
        export.check_exportable(model)
