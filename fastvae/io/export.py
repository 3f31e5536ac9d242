"""ONNX export: a trained model as a graph that runs without fastvae (``fastvae[onnx]``).

    model.export_onnx("vae.onnx")                     # or fastvae export MODEL --onnx PATH
    sess = onnxruntime.InferenceSession("vae.onnx")
    x_hat, mu, logvar, z = sess.run(None, {"x": x, "eps": eps})

Three parts, with fixed names (B, the batch dimension, is dynamic: ``"batch"``):

=========  ============================  ==============================================
part       inputs                        outputs
=========  ============================  ==============================================
encoder    ``x`` (B, D)                  ``mu`` (B, Z), ``logvar`` (B, Z)
decoder    ``z`` (B, Z)                  ``x_hat`` (B, D)
vae        ``x`` (B, D), ``eps`` (B, Z)  ``x_hat``, ``mu``, ``logvar``, ``z``
=========  ============================  ==============================================

- ``logvar`` is clamped to :data:`fastvae.backends.codes.LOGVAR_RANGE` (a ``Clip``), as the model does;
- ``x_hat`` is what :meth:`VAE.decode` returns: pixel probabilities (the sigmoid of the
  logits) for the Bernoulli likelihood, means for the Gaussian one;
- ``vae`` takes the noise as an input: ``z = mu + exp(0.5 * logvar) * eps`` and
  ``x_hat = decoder(z)``.  Nothing in the graph is random, so a given ``eps`` gives the
  same numbers as fastvae (draw ``eps ~ N(0, I)`` in the app for a sample; zeros give the
  reconstruction at the posterior mean).  One sample per row: for L samples, repeat rows.

**Block models** (a list of likelihood blocks, conditions, missing cells) take and give
more, by name:

- ``x`` (B, D) holds the data columns: categorical codes (read as a gather of the first
  weight matrix's rows, as fastvae does), counts, and NaN for a missing cell when the model
  was built with ``missing="mask"``;
- ``conditions`` (B, C) is an input of every part when the model has conditions, and
  ``exposure`` (B,) of the decoder and vae parts when a count block takes one;
- ``x_hat`` (B, P) is :meth:`VAE.decode`'s output (each column's mean, a categorical
  column's class probabilities), and each block i has its parameters as outputs:
  ``block{i}_mean`` and ``block{i}_log_scale`` (Gaussian), ``block{i}_prob`` (Bernoulli),
  ``block{i}_probs`` (categorical: the K probabilities of each column, side by side),
  ``block{i}_rate`` (Poisson), ``block{i}_mean`` and ``block{i}_theta`` (negative binomial:
  the inverse dispersion of each row's condition group when it depends on it), each
  (B, width).

The graph's element type is the model's dtype (float32 or float64); parameters are stored
as initializers under the model's own names (``enc.0.W``, ``enc.head.b``, ...).  The model's
configuration, fastvae's version and, for the Gaussian likelihood, the observation
log-scale (what a draw from p(x|z) needs) are in the model's ``metadata_props``.

**Opset.**  :data:`DEFAULT_OPSET` is 17; any opset from :data:`MIN_OPSET` (13) to the newest
the installed ``onnx`` knows can be asked for, and the graph is the same in all of them.
13 is the floor because ``Split`` takes its sizes as an input from 13 on (onnxruntime runs
13 from 1.6, 2020).  Nothing the graph uses changed meaning after 13 (later versions of
these ops add bfloat16/float16 types), so a newer default would only shut out older
runtimes; 17 (onnx 1.12, run by onnxruntime from 1.13, late 2022) is a widely supported
middle.  The installed onnxruntime (1.31) runs opsets up to 26; the tests run the exported
graphs at 13, 17 and the newest opset it runs, and pass the newest onnx knows (28) through
the checker.

**Exactness.**  Activations are the native ONNX op where onnxruntime's kernel for the
model's dtype is as accurate as fastvae's own, else the reference formula of
``fastvae/backends/reference.py`` written out in elementary ops.  Measured on onnxruntime
1.31, relative error element by element:

- ``Relu`` is exact and ``Tanh`` within 4 ulp in both precisions; ``LeakyRelu`` (exact)
  and ``Softplus`` (3 ulp) are used in float32, but onnxruntime has no float64 kernel for
  them (LeakyRelu: none at opsets 13 and 21-26; at 17 one that is off by 2e-8), so
  float64 graphs write them out (``Where``; softplus with an exact log1p);
- ``Sigmoid`` loses relative precision for negative inputs (1e-5 in float32 on [-5, 0],
  5e-8 in float64 on [-20, -10]), and the Bernoulli output ``x_hat`` is a sigmoid, so
  sigmoid is always written out as fastvae computes it: e = exp(-|a|), r = 1 / (1 + e),
  where(a >= 0, r, e r);
- ``Elu`` loses relative precision near 0 (7e-5 in float32, as exp(a) - 1 would) and has
  no float64 kernel, so ELU is written out with an exact expm1 for a <= 0: 2 t / (1 - t),
  t = tanh(a / 2) (nothing cancels: 1 - t lies in [1, 2]).

The written-out forms are within 3 ulp of fastvae's in both precisions from 1e-20 to 300 in
magnitude (a test holds them to 8 ulp).

The graph is checked with ``onnx.checker.check_model(proto, full_check=True)`` before it is
written; the file is written atomically.
"""
from __future__ import annotations

import json
import types

import numpy as np

from ..backends.codes import ACTIVATIONS, ENC_LOG1P, LIKELIHOODS, LOGVAR_RANGE

PARTS = ("encoder", "decoder", "vae")
DEFAULT_OPSET = 17
MIN_OPSET = 13
INSTALL_HINT = "pip install 'fastvae[onnx]'"


def _import_onnx():
    """The onnx package, or an ImportError that says how to install it."""
    try:
        import onnx
        import onnx.checker  # noqa: F401
        import onnx.helper  # noqa: F401
        import onnx.numpy_helper  # noqa: F401
    except ImportError as e:
        raise ImportError(f"ONNX export needs the onnx package ({e}): {INSTALL_HINT}") from None
    return onnx


def check_part(part):
    """``part`` if it is one of PARTS, else a ValueError listing them."""
    if not isinstance(part, str) or part not in PARTS:
        raise ValueError(f"part must be one of {', '.join(map(repr, PARTS))}; got {part!r}")
    return part


def check_opset(opset, newest):
    """The opset to write: DEFAULT_OPSET for None, else an int in [MIN_OPSET, newest]."""
    if opset is None:
        return DEFAULT_OPSET
    if isinstance(opset, bool) or not isinstance(opset, (int, np.integer)):
        raise ValueError(f"opset must be an integer, got {opset!r}")
    if not MIN_OPSET <= opset <= newest:
        raise ValueError(f"opset {opset} cannot be exported: this exporter writes opsets "
                         f"{MIN_OPSET} to {newest} (the newest the installed onnx knows); "
                         f"the default is {DEFAULT_OPSET}")
    return int(opset)


def check_exportable(model):
    """Raise a ValueError naming the first feature of ``model`` that has no ONNX form here.

    Everything fastvae's VAE offers today is exportable; this guards the exporter against a
    model configured with something it does not know (a new activation or likelihood)."""
    if not all(hasattr(model, a) for a in ("parameters", "act_code", "lik_code", "kernels")):
        raise ValueError(f"export_onnx exports a fastvae.VAE, got {type(model).__name__}")
    known = ACTIVATIONS.get(model.activation, (None,))[0]
    if model.activation not in _ACTIVATIONS or known != model.act_code:
        raise ValueError(f"cannot export to ONNX: activation {model.activation!r} (code "
                         f"{model.act_code}) has no ONNX form here; exportable: "
                         f"{', '.join(_ACTIVATIONS)}")
    if getattr(model, "columns", None) is not None:  # conditions and missing cells export
        missing = [b for b in model.columns.blocks if b.name not in HEADS]
        if missing:
            raise ValueError(f"cannot export to ONNX: block {missing[0]!r} has no ONNX head "
                             f"here (fastvae.io.export.HEADS); exportable: {', '.join(HEADS)}")
    elif model.likelihood not in LIKELIHOODS or LIKELIHOODS[model.likelihood] != model.lik_code:
        raise ValueError(f"cannot export to ONNX: likelihood {model.likelihood!r} has no ONNX "
                         f"form here; exportable: {', '.join(LIKELIHOODS)}")
    if np.dtype(model.dtype).name not in ("float32", "float64"):
        raise ValueError(f"cannot export to ONNX: dtype {model.dtype} (float32 and float64 "
                         "export)")


# ------------------------------------------------------------------- graph building
class _Graph:
    """Nodes and initializers of one ONNX graph, built op by op in the model's dtype.

    ``op`` returns its output's name, so the graph reads like the NumPy it mirrors."""

    def __init__(self, onnx, dtype):
        self.onnx, self.dtype = onnx, np.dtype(dtype)
        self.elem = onnx.helper.np_dtype_to_tensor_dtype(self.dtype)
        self.nodes, self.inits, self._consts, self._n = [], [], {}, 0

    def op(self, kind, *inputs, out=None, **attrs):
        if out is None:
            self._n += 1
            out = f"{kind.lower()}_{self._n}"
        self.nodes.append(self.onnx.helper.make_node(kind, list(inputs), [out],
                                                     name=f"{kind}_{len(self.nodes)}", **attrs))
        return out

    def param(self, name, value):
        """An initializer holding a copy of a parameter (host array), in the model's dtype."""
        self.inits.append(self.onnx.numpy_helper.from_array(
            np.ascontiguousarray(value, dtype=self.dtype), name))
        return name

    def const(self, value, dtype=None):
        """A scalar initializer (shared between uses), in the model's dtype by default."""
        dtype = np.dtype(dtype or self.dtype)
        key = (float(value), dtype.name)
        if key not in self._consts:
            name = f"const_{dtype.name}_{len(self._consts)}"
            self.inits.append(self.onnx.numpy_helper.from_array(np.array(value, dtype), name))
            self._consts[key] = name
        return self._consts[key]


def _sigmoid(g, a, out=None):
    """fastvae's sigmoid: e = exp(-|a|), r = 1/(1+e), where(a >= 0, r, e*r) (exact to a few
    ulp everywhere; onnxruntime's Sigmoid is not for a < 0)."""
    e = g.op("Exp", g.op("Neg", g.op("Abs", a)))
    r = g.op("Div", g.const(1), g.op("Add", g.const(1), e))
    return g.op("Where", g.op("GreaterOrEqual", a, g.const(0)), r, g.op("Mul", e, r), out=out)


def _expm1_nonpos(g, m):
    """expm1(m) for m <= 0 as 2t / (1 - t), t = tanh(m/2): exact to a few ulp (1 - t is in
    [1, 2], nothing cancels), where exp(m) - 1 loses every digit as m -> 0."""
    t = g.op("Tanh", g.op("Mul", m, g.const(0.5)))
    return g.op("Div", g.op("Add", t, t), g.op("Sub", g.const(1), t))


def _log1p_unit(g, e):
    """log1p(e) for e in [0, 1] (Goldberg): u = 1 + e; where(u == 1, e, log(u) e / (u - 1)).
    u - 1 is exact, and the ratio e / (u - 1) corrects the rounding of 1 + e."""
    u = g.op("Add", g.const(1), e)
    um1 = g.op("Sub", u, g.const(1))
    ratio = g.op("Mul", g.op("Log", u), g.op("Div", e, um1))
    return g.op("Where", g.op("Equal", u, g.const(1)), e, ratio)


def _relu(g, a, alpha):
    return g.op("Relu", a)


def _tanh(g, a, alpha):
    return g.op("Tanh", a)


def _leaky_relu(g, a, alpha):
    if g.dtype == np.float32:
        return g.op("LeakyRelu", a, alpha=float(alpha))
    # onnxruntime has no float64 LeakyRelu: the reference's where(a > 0, a, alpha a)
    return g.op("Where", g.op("Greater", a, g.const(0)), a, g.op("Mul", a, g.const(alpha)))


def _elu(g, a, alpha):
    neg = _expm1_nonpos(g, g.op("Min", a, g.const(0)))
    return g.op("Where", g.op("Greater", a, g.const(0)), a, g.op("Mul", neg, g.const(alpha)))


def _softplus(g, a, alpha):
    if g.dtype == np.float32:
        return g.op("Softplus", a)
    # onnxruntime has no float64 Softplus: the reference's max(a, 0) + log1p(exp(-|a|))
    e = g.op("Exp", g.op("Neg", g.op("Abs", a)))
    return g.op("Add", g.op("Max", a, g.const(0)), _log1p_unit(g, e))


def _sigmoid_act(g, a, alpha):
    return _sigmoid(g, a)


#: activation name -> builder(graph, input, alpha) -> output name
_ACTIVATIONS = {"relu": _relu, "leaky_relu": _leaky_relu, "tanh": _tanh,
                "sigmoid": _sigmoid_act, "elu": _elu, "softplus": _softplus}


def _stack(g, model, params, side, h, last_W, last_b, out=None, first=None, join=None):
    """h through the hidden layers of ``side`` ('enc' or 'dec'), then the last product:
    Gemm(h, W, b) = h @ W + b per layer, the activation after each hidden one.
    ``first(W name, b name, out)``: the first product instead (a block model's encoder);
    ``join``: an input joined to each hidden layer's output (inject_conditions)."""
    act = _ACTIVATIONS[model.activation]
    n = len(model.enc_hidden if side == "enc" else model.dec_hidden)
    names = [(f"{side}.{i}.W", f"{side}.{i}.b") for i in range(n)] + [(last_W, last_b)]
    for i, (W, b) in enumerate(names):
        last = i == n
        if i == 0 and first is not None:
            h = first(W, b, out if last else None)
        else:
            h = g.op("Gemm", h, g.param(W, params[W]), g.param(b, params[b]),
                     out=out if last else None)
        if not last:
            h = act(g, h, model.act_alpha)
            if join is not None:
                h = g.op("Concat", h, join, axis=1)
    return h


def _encoder(g, model, params, x):
    """x -> (mu, logvar): the head's product split in two, logvar clipped to LOGVAR_RANGE."""
    Z = model.latent_dim
    first = None if model.columns is None else _block_input(g, model, params, x)
    head = _stack(g, model, params, "enc", x, "enc.head.W", "enc.head.b", first=first)
    split = g.onnx.numpy_helper.from_array(np.array([Z, Z], np.int64), "head_split")
    g.inits.append(split)
    g.nodes.append(g.onnx.helper.make_node("Split", [head, "head_split"], ["mu", "logvar_raw"],
                                           axis=1, name="Split_head"))
    lo, hi = LOGVAR_RANGE
    return "mu", g.op("Clip", "logvar_raw", g.const(lo), g.const(hi), out="logvar")


def _ints(g, name, values):
    """An int64 initializer."""
    g.inits.append(g.onnx.numpy_helper.from_array(np.asarray(values, np.int64), name))
    return name


def _block_input(g, model, params, x):
    """The first product of a block model's encoder, as fastvae computes it: the dense
    columns (values, log1p of counts, NaN read as 0; the observed masks; the conditions) times
    W's first rows, plus the rows of W the categorical codes pick (a missing code picks
    none).  Returns first(W name, b name, out) for :func:`_stack`."""
    cl = model.columns
    nan = g.op("IsNaN", x)
    x0 = g.op("Where", nan, g.const(0), x)
    parts = []
    nc = [j for j in range(cl.D) if j not in set(cl.cat_cols.tolist())]
    if nc:
        v = g.op("Gather", x0, _ints(g, "enc_value_cols", nc), axis=1)
        # (each non-categorical block's columns, in order, as Columns reads them)
        counts = np.array([[b.enc_mode == ENC_LOG1P for b in cl.blocks if b.enc_mode is not None
                            for _ in range(b.n)]])
        is_count = g.onnx.numpy_helper.from_array(counts, "enc_count_cols")
        g.inits.append(is_count)
        parts.append(g.op("Where", "enc_count_cols", g.op("Log", g.op("Add", v, g.const(1))), v))
    if cl.missing:
        parts.append(g.op("Cast", g.op("Not", nan), to=g.elem))
    if cl.C and cl.encode_conditions:
        parts.append("conditions")

    def first(W, b, out):
        Wp = params[W]
        if parts:
            dense = parts[0] if len(parts) == 1 else g.op("Concat", *parts, axis=1)
            h = g.op("Gemm", dense, g.param(W + ".dense", Wp[:cl.n_dense]), g.param(b, params[b]),
                     out=None if cl.n_onehot else out)
        else:  # every column categorical: the bias alone, broadcast
            h = g.op("Add", g.op("Mul", g.op("ReduceSum", x0, _ints(g, "all_cols", [1]),
                                             keepdims=1), g.const(0)), g.param(b, params[b]),
                     out=None if cl.n_onehot else out)
        if not cl.n_onehot:
            return h
        codes = g.op("Gather", x, _ints(g, "enc_cat_cols", cl.cat_cols), axis=1)
        ok = g.op("Not", g.op("IsNaN", codes))
        idx = g.op("Add", g.op("Cast", g.op("Where", ok, codes, g.const(0)), to=7),
                   _ints(g, "enc_cat_rows", cl.cat_rows[None]))
        rows = g.op("Gather", g.param(W + ".onehot", Wp[cl.n_dense:]), idx, axis=0)
        rows = g.op("Mul", rows, g.op("Unsqueeze", g.op("Cast", ok, to=g.elem),
                                      _ints(g, "axis_2", [2])))
        return g.op("Add", h, g.op("ReduceSum", rows, _ints(g, "axis_1", [1]), keepdims=0),
                    out=out)
    return first


def _gaussian_head(g, b, i, a, ctx):
    m = g.op("Identity", a, out=f"block{i}_mean")
    ls = ctx.aux[ctx.cl.cols[ctx.j0:ctx.j1, 3]][None]
    g.op("Expand", g.param(f"block{i}_ls", ls), g.op("Shape", m), out=f"block{i}_log_scale")
    return m, {m: b.n, f"block{i}_log_scale": b.n}


def _bernoulli_head(g, b, i, a, ctx):
    m = _sigmoid(g, a, out=f"block{i}_prob")
    return m, {m: b.n}


def _categorical_head(g, b, i, a, ctx):
    probs, k0 = [], 0
    for K in b.classes:
        col = g.op("Gather", a, _ints(g, f"block{i}_cat{k0}", range(k0, k0 + K)), axis=1)
        probs.append(g.op("Softmax", col, axis=1))
        k0 += K
    m = g.op("Concat", *probs, axis=1, out=f"block{i}_probs") if len(probs) > 1 else \
        g.op("Identity", probs[0], out=f"block{i}_probs")
    return m, {m: sum(b.classes)}


def _poisson_head(g, b, i, a, ctx, kind="rate"):
    eta = g.op("Add", a, ctx.logex) if b.exposure else a
    m = g.op("Exp", eta, out=f"block{i}_{kind}")
    return m, {m: b.n}


def _theta(g, b, i, ctx, like):
    """block{i}_theta (B, n): the inverse dispersions of each row (of its condition group
    when they depend on it); ``like`` an output of shape (B, n)."""
    cl, aux = ctx.cl, ctx.aux
    first = cl.cols[ctx.j0:ctx.j1, 3]
    if b.per_condition:  # theta of each row's condition group
        table = np.exp(np.stack([aux[first + gi * b.n] for gi in range(cl.C)]))
        grp = g.op("ArgMax", "conditions", axis=1, keepdims=0)
        g.op("Gather", g.param(f"block{i}_theta_table", table), grp, axis=0,
             out=f"block{i}_theta")
    else:
        g.op("Expand", g.param(f"block{i}_theta_row", np.exp(aux[first])[None]),
             g.op("Shape", like), out=f"block{i}_theta")
    return {f"block{i}_theta": b.n}


def _negbinomial_head(g, b, i, a, ctx):
    m, names = _poisson_head(g, b, i, a, ctx, kind="mean")
    names.update(_theta(g, b, i, ctx, m))
    return m, names


def _zinb_head(g, b, i, a, ctx):
    """block{i}_mean (1 - pi) mu, block{i}_dropout pi, block{i}_theta, each (B, n), and
    x_hat's piece block{i}_params (B, 2n): [mean, pi] per column, as decode gives them."""
    eta = g.op("Gather", a, _ints(g, f"block{i}_eta_cols", range(0, 2 * b.n, 2)), axis=1)
    zeta = g.op("Gather", a, _ints(g, f"block{i}_zeta_cols", range(1, 2 * b.n, 2)), axis=1)
    if b.exposure:
        eta = g.op("Add", eta, ctx.logex)
    pi = _sigmoid(g, zeta, out=f"block{i}_dropout")
    m = g.op("Mul", g.op("Sub", g.const(1), pi), g.op("Exp", eta), out=f"block{i}_mean")
    last = _ints(g, f"block{i}_axis2", [2])
    pair = g.op("Concat", g.op("Unsqueeze", m, last), g.op("Unsqueeze", pi, last), axis=2)
    p = g.op("Reshape", pair, _ints(g, f"block{i}_flat", [0, -1]), out=f"block{i}_params")
    return p, {p: 2 * b.n, m: b.n, pi: b.n, **_theta(g, b, i, ctx, m)}


#: each block kind's ONNX head, by its config name (Block.name): head(g, block, i, outputs
#: (B, the block's widths), ctx) -> (its x_hat piece, {output name: width}); a block kind
#: without an entry cannot be exported (tests/test_export.py checks every kind has one)
HEADS = {"gaussian": _gaussian_head, "bernoulli": _bernoulli_head,
         "categorical": _categorical_head, "poisson": _poisson_head,
         "negbinomial": _negbinomial_head, "zinb": _zinb_head}


def _block_outputs(g, model, params, out):
    """The decoder outputs out (B, P) of a block model (bias added) -> each block's
    parameters (see HEADS) and x_hat (B, P), what :meth:`VAE.decode` returns.
    Returns {output name: width}."""
    cl = model.columns
    logex = g.op("Unsqueeze", g.op("Log", "exposure"), _ints(g, "axis_1b", [1])) if cl.E else None
    aux = model.aux_values()
    pieces, names = [], {}
    o = 0
    for i, (b, (j0, j1)) in enumerate(zip(cl.blocks, cl.block_columns)):
        w = sum(b.widths())
        a = g.op("Gather", out, _ints(g, f"block{i}_outputs", range(o, o + w)), axis=1)
        ctx = types.SimpleNamespace(cl=cl, aux=aux, j0=j0, j1=j1, logex=logex)
        m, more = HEADS[b.name](g, b, i, a, ctx)
        names.update(more)
        pieces.append(m)
        o += w
    g.op("Concat", *pieces, axis=1, out="x_hat") if len(pieces) > 1 else \
        g.op("Identity", pieces[0], out="x_hat")
    return names


def _decoder(g, model, params, z):
    """z -> x_hat: probabilities (the sigmoid of the logits, Bernoulli) or means; a block
    model's decoder reads [z | conditions] (with inject_conditions, every later layer
    [h | conditions] too) and gives each block's parameters too."""
    if model.columns is not None:
        zin = g.op("Concat", z, "conditions", axis=1) if model.columns.C else z
        join = "conditions" if model.inject_conditions else None
        out = _stack(g, model, params, "dec", zin, "dec.out.W", "dec.out.b", out="decoder_out",
                     join=join)
        return _block_outputs(g, model, params, out)
    bern = model.likelihood == "bernoulli"
    out = _stack(g, model, params, "dec", z, "dec.out.W", "dec.out.b",
                 out="logits" if bern else "x_hat")
    if bern:
        _sigmoid(g, out, out="x_hat")
    return {}


_DOCS = {
    "x": "data, (batch, D)",
    "z": "latent codes, (batch, Z)",
    "eps": "standard normal noise, (batch, Z): z = mu + exp(0.5 logvar) * eps",
    "mu": "posterior mean, (batch, Z)",
    "logvar": "posterior log-variance, clamped to [%g, %g], (batch, Z)" % LOGVAR_RANGE,
    "x_hat": "decoder output, (batch, D); a block model's: each column's mean, a categorical "
             "column's class probabilities, (batch, P)",
    "conditions": "the rows' conditions, (batch, C)",
    "exposure": "the rows' exposures (library sizes, size factors), (batch,)",
}


def to_onnx(model, part="vae", opset=None):
    """The ONNX ModelProto of ``part`` of ``model`` (see the module docstring), checked with
    ``onnx.checker.check_model(..., full_check=True)``.  Parameters are copied to the host."""
    part = check_part(part)
    onnx = _import_onnx()
    opset = check_opset(opset, onnx.defs.onnx_opset_version())
    check_exportable(model)
    from ..version import __version__
    helper = onnx.helper

    params = {k: np.array(model.kernels.to_numpy(v)) for k, v in model.parameters().items()}
    g = _Graph(onnx, model.dtype)
    D, Z = model.input_dim, model.latent_dim
    cl = model.columns
    P = D if cl is None else cl.P
    dims = {"x": D, "eps": Z, "z": Z, "mu": Z, "logvar": Z, "x_hat": P,
            "conditions": 0 if cl is None else cl.C}
    cond = ["conditions"] if cl is not None and cl.C else []
    expo = ["exposure"] if cl is not None and cl.E else []
    if part == "encoder":
        inputs, outputs = ["x"] + cond, ["mu", "logvar"]
        _encoder(g, model, params, "x")
    elif part == "decoder":
        inputs, outputs = ["z"] + cond + expo, ["x_hat"]
        blocks = _decoder(g, model, params, "z")
    else:
        inputs, outputs = ["x", "eps"] + cond + expo, ["x_hat", "mu", "logvar", "z"]
        mu, logvar = _encoder(g, model, params, "x")
        # the model's reparam_kl_fwd: sigma = exp(0.5 logvar), z = mu + sigma * eps
        sigma = g.op("Exp", g.op("Mul", logvar, g.const(0.5)), out="sigma")
        g.op("Add", mu, g.op("Mul", sigma, "eps"), out="z")
        blocks = _decoder(g, model, params, "z")
    if part != "encoder":
        outputs += list(blocks)
        dims.update(blocks)

    def info(name):
        if name == "exposure":
            return helper.make_tensor_value_info(name, g.elem, ["batch"], _DOCS[name])
        doc = _DOCS.get(name, "a block's parameters (module docstring), (batch, n)")
        return helper.make_tensor_value_info(name, g.elem, ["batch", dims[name]], doc)

    graph = helper.make_graph(g.nodes, f"fastvae_{part}", [info(n) for n in inputs],
                              [info(n) for n in outputs], g.inits)
    opsets = [helper.make_opsetid("", opset)]
    # the oldest IR version that carries this opset: a newer one would shut out runtimes
    # that run the opset but not the newer file format
    proto = helper.make_model(graph, opset_imports=opsets, producer_name="fastvae",
                              producer_version=__version__,
                              ir_version=helper.find_min_ir_version_for(opsets, True),
                              doc_string=f"fastvae {part}: {model!r}")
    meta = {"fastvae_version": __version__, "part": part,
            "config": json.dumps(model.config()),
            "logvar_range": json.dumps(list(LOGVAR_RANGE))}
    if model.likelihood == "gaussian":
        meta["obs_logscale"] = json.dumps(model.obs_logscale().tolist())
    helper.set_model_props(proto, meta)
    onnx.checker.check_model(proto, full_check=True)
    return proto


def export_onnx(model, path, part="vae", opset=None):
    """Write ``part`` ("encoder" | "decoder" | "vae") of ``model`` to ``path`` as an ONNX
    file (atomically), for opset ``opset`` (None: DEFAULT_OPSET).  Returns the path.

    Errors: an unknown part (the message lists them), an opset outside [MIN_OPSET, the
    newest onnx knows], a model feature with no ONNX form (named), a missing onnx package
    (an ImportError saying ``pip install 'fastvae[onnx]'``), a missing directory."""
    import os

    from .checkpoint import atomic_write
    proto = to_onnx(model, part, opset)
    data = proto.SerializeToString()
    path = os.fspath(path)
    atomic_write(path, lambda f: f.write(data))
    return path
