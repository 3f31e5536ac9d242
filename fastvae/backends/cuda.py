"""CUDA kernels through CuPy: the same names, argument order and contracts as ``reference.py``.

- The fused kernels are CUDA C in ``kernels/*.cu`` (shipped in the wheel as
  ``fastvae/kernels``).  Each file is compiled once per process with ``cupy.RawModule``
  the first time one of its kernels runs (CuPy also caches the binary on disk), and every
  kernel exists as ``<name>_f32`` and ``<name>_f64``.
- Matrix products go to cuBLAS through our own handle, with transpose flags and no copies
  (:func:`gemm_args`).  TF32 tensor cores are used only after ``fastvae.backends.set_tf32(True)``
  or with ``FASTVAE_TF32=1``: off by default, so float32 results match the CPU backends.
- Kernels that reduce over rows split the rows into chunks so that the GPU is full at any
  batch size, write one partial row per chunk, and ``sum_partials`` adds the partials in a
  fixed order: results are deterministic, so training resumes to the bit on the GPU too.
- Nothing here waits for the GPU except the functions that return a Python number
  (``check_data``, ``sq_norm``): a training step queues its kernels and returns.

The device itself (CuPy, the compiled modules, the cuBLAS handle) sits behind a small
object, :class:`CupyDevice`; tests install an emulated device with the same methods, which
runs the same ``.cu`` files on the CPU, so the launch logic here is exercised without a GPU.
"""
from __future__ import annotations

import math
import threading

import numpy as np

# (the device layer's public names are the backend's too: cuda.tile_plan, cuda.CupyDevice, ...)
from .cuda_device import (BLOCK_1D, DTYPE_SUFFIX, MIN_CHUNK_ROWS, WAVES_1D,  # noqa: F401
                          WAVES_TILE, CupyDevice, compile_options, gemm_args, grid_1d,
                          kernel_dir, kernel_name, kernel_signatures, tile_plan)
from .tf32 import tf32_enabled
from .codes import ACT_IDENTITY, LIK_GAUSSIAN, TILE_H, TILE_W  # noqa: F401  (the tile: cuda.TILE_W)

NAME = "cuda"
DEVICE = True

_DATA_SUFFIX = {np.dtype(np.uint8): "u8", np.dtype(np.float32): "f32", np.dtype(np.float64): "f64"}


_devices = {}        # GPU id -> its CupyDevice
_modules = None      # (cupy, cublas) the devices are made with: CuPy's, or the tests'
_lock = threading.Lock()


def device():
    """The :class:`CupyDevice` of CuPy's current GPU (made on first use).  Every launcher
    works on the current GPU: a model on ``backend="cuda:1"`` makes GPU 1 current around
    its passes (:meth:`fastvae.VAE.on_device`)."""
    global _modules, xp
    if _modules is None:
        import cupy
        from cupy_backends.cuda.libs import cublas
        _modules = (cupy, cublas)
        xp = cupy
    cp, blas = _modules
    i = int(cp.cuda.Device().id)
    dev = _devices.get(i)
    if dev is None:
        with _lock:
            dev = _devices.get(i) or _devices.setdefault(i, CupyDevice(cp, blas))
    return dev


def use_device(dev):
    """Install ``dev`` (a CupyDevice over an emulated CuPy, in the tests) as its GPU's
    device; other GPU ids get devices made from the same modules.  None resets to CuPy."""
    global _modules, xp
    _devices.clear()
    if dev is not None:
        _modules = (dev.xp, dev.cublas)
        _devices[dev.id] = dev
        xp = dev.xp
    else:
        _modules = None
        globals().pop("xp", None)  # the next access creates the real device again
    return dev


def __getattr__(name):  # ``xp`` resolves to CuPy on first access (PEP 562)
    if name == "xp":
        return device().xp
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


# --------------------------------------------------------------------------- helpers
def _partials(dtype, *sizes):
    """Views of the current GPU's reusable buffer for the partial sums of a launch (grown
    when a larger launch needs more; a steady-state step allocates nothing).  The partials
    are written and consumed within one launcher, on one stream, so models on the same GPU
    share the buffer safely."""
    dtype = np.dtype(dtype)
    need = sum(sizes)
    dev = device()
    buf = dev.scratch.get(dtype)
    if buf is None or buf.size < need:
        buf = dev.scratch[dtype] = dev.xp.empty(max(need, 1024), dtype=dtype)
    out, off = [], 0
    for s in sizes:
        out.append(buf[off:off + s])
        off += s
    return out


def _s(dtype, v):
    """A scalar kernel argument of the arrays' precision."""
    return np.dtype(dtype).type(v)


def _finish(dev, out, part, n_parts, n, scale):
    """out (n,) = scale * sum of the n_parts partial rows of ``part``."""
    name = kernel_name("sum_partials", out.dtype)
    dev.launch(name, (grid_1d(n, dev.sm_count),), (BLOCK_1D,),
               (out, part, np.int32(n_parts), np.int32(n), _s(out.dtype, scale)))


def asarray(a, dtype=None):
    """Bring ``a`` to the device (one copy for host arrays; none for device arrays)."""
    return device().xp.asarray(a, dtype=dtype)


def to_numpy(a):
    """A host (NumPy) copy of a device array; host arrays pass through."""
    return device().to_numpy(a)


def copy_from_host(dst, src):
    """dst (a device array) <- src (a NumPy array of the same shape and dtype), into dst's
    memory: no device allocation (a batch staged for the GPU)."""
    dst.set(src)


# --------------------------------------------------------------------------- kernels
def _contiguous(name, out, a, b):
    """cuBLAS reads the products' arrays by leading dimension: they must be C-contiguous."""
    for arr, what in ((out, "out"), (a, "a"), (b, "b")):
        if not arr.flags.c_contiguous:
            raise ValueError(f"{name}: {what} must be C-contiguous (shape {arr.shape}, "
                             f"strides {arr.strides})")


def _gemm_plan(out, a, b, trans_a, trans_b):
    """cuBLAS's column-major arguments of out = op(a) @ op(b) (:func:`gemm_args`), or None
    when there is nothing to multiply (out empty; K = 0 fills out with zeros)."""
    args = gemm_args(out.shape, a.shape, b.shape, trans_a, trans_b)
    m, n, k = args[2:5]
    if m == 0 or n == 0:
        return None
    if k == 0:
        out.fill(0)
        return None
    return args


def matmul(out, a, b, trans_a=False, trans_b=False):
    """out (M, N) = op(a) @ op(b) through cuBLAS (contract: reference.matmul).

    All three arrays must be C-contiguous and of one float dtype; transposes are flags.
    """
    _contiguous("matmul", out, a, b)
    if not (a.dtype == b.dtype == out.dtype) or np.dtype(out.dtype) not in DTYPE_SUFFIX:
        raise TypeError(f"matmul: dtypes {a.dtype}, {b.dtype} -> {out.dtype}; all must be "
                        "one of float32, float64")
    args = _gemm_plan(out, a, b, trans_a, trans_b)
    if args is None:
        return
    transa, transb, m, n, k, lda, ldb, ldc = args
    device().gemm(np.dtype(out.dtype), transa, transb, m, n, k, b, lda, a, ldb, out, ldc,
                  tf32_enabled() and out.dtype == np.float32)


def to_bf16(dst, src):
    """dst (uint16, shape of src) <- src (float32) rounded to bfloat16, nearest-even
    (contract: reference_bf16.to_bf16)."""
    dev = device()
    n = src.size
    if n:
        dev.launch("to_bf16_f32", (grid_1d(n, dev.sm_count),), (BLOCK_1D,),
                   (dst, src, np.int64(n)))


def matmul_bf16(out, a, b, trans_a=False, trans_b=False):
    """out (M, N) float32 = op(a) @ op(b) for bf16 bits a, b (uint16), float32 compute,
    through cuBLAS's GemmEx (contract: reference_bf16.matmul_bf16)."""
    _contiguous("matmul_bf16", out, a, b)
    if a.dtype != np.uint16 or b.dtype != np.uint16 or out.dtype != np.float32:
        raise TypeError(f"matmul_bf16: dtypes {a.dtype}, {b.dtype} -> {out.dtype}; the "
                        "operands must be bf16 bits (uint16) and out float32")
    args = _gemm_plan(out, a, b, trans_a, trans_b)
    if args is None:
        return
    transa, transb, m, n, k, lda, ldb, ldc = args
    device().gemm_bf16(transa, transb, m, n, k, b, lda, a, ldb, out, ldc)


def bf16_support():
    """None when this GPU runs bf16 products (compute capability 8.0 or more), else why not."""
    cc = device().compute_capability
    if not cc.isdigit() or int(cc) < 80:
        return (f"precision='bf16' on the cuda backend needs a GPU of compute capability 8.0 "
                f"or more (Ampere and later), and this one is {cc[:-1]}.{cc[-1:]}; use "
                "precision='full'")
    return None


def bias_act_fwd(y, b, act, alpha):
    """y (R, N) <- act(y + b), in place; b (N,)."""
    dev = device()
    R, N = y.shape
    dev.launch(kernel_name("bias_act_fwd", y.dtype), (grid_1d(R * N, dev.sm_count),),
               (BLOCK_1D,), (y, b, np.int64(R), np.int32(N), np.int32(act), _s(y.dtype, alpha)))


def act_bias_bwd(da, db, dy, y, act, alpha):
    """da (R, N) = dy * act'(.) read off y (R, N); db (N,) = column sums of da.
    ``da`` may be ``dy``."""
    dev = device()
    R, N = y.shape
    grid, block, per, n_chunks = tile_plan(R, N, dev.sm_count)
    part = db if n_chunks == 1 else _partials(db.dtype, n_chunks * N)[0]
    dev.launch(kernel_name("act_bias_bwd", y.dtype), grid, block,
               (da, part, dy, y, np.int32(R), np.int32(N), np.int32(per), np.int32(act),
                _s(y.dtype, alpha)))
    if n_chunks > 1:
        _finish(dev, db, part, n_chunks, N, 1.0)


def reparam_kl_fwd(mu, logvar, sigma, z, kl, kl_dim, head, hb, eps, lv_min, lv_max):
    """Sampling step and analytic KL, fused (contract and shapes: reference.reparam_kl_fwd)."""
    dev = device()
    B, Z = mu.shape
    L = z.shape[0] // B
    T = mu.dtype
    grid, block, per, n_chunks = tile_plan(B, Z, dev.sm_count)
    n_tiles = grid[0]
    klpart, kldpart = _partials(T, n_tiles * B if n_tiles > 1 else 0,
                                n_chunks * Z if n_chunks > 1 else 0)
    klpart = kl if n_tiles == 1 else klpart
    kldpart = kl_dim if n_chunks == 1 else kldpart
    dev.launch(kernel_name("reparam_kl_fwd", T), grid, block,
               (mu, logvar, sigma, z, klpart, kldpart, head, hb, eps, np.int32(B),
                np.int32(Z), np.int32(L), np.int32(per), _s(T, lv_min), _s(T, lv_max),
                _s(T, 1.0 / B if n_chunks == 1 else 1.0)))
    if n_tiles > 1:
        _finish(dev, kl, klpart, n_tiles, B, 1.0)
    if n_chunks > 1:
        _finish(dev, kl_dim, kldpart, n_chunks, Z, 1.0 / B)


def reparam_kl_bwd(dhead, dhb, dz, eps, mu, sigma, head, kl_dim, kl_weight, free_bits,
                   lv_min, lv_max):
    """Sample path plus analytic KL gradient (contract: reference.reparam_kl_bwd)."""
    dev = device()
    B, Z = mu.shape
    L = dz.shape[0] // B
    T = mu.dtype
    grid, block, per, n_chunks = tile_plan(B, Z, dev.sm_count)
    part = dhb if n_chunks == 1 else _partials(T, n_chunks * 2 * Z)[0]
    dev.launch(kernel_name("reparam_kl_bwd", T), grid, block,
               (dhead, part, dz, eps, mu, sigma, head, kl_dim, np.int32(B), np.int32(Z),
                np.int32(L), np.int32(per), _s(T, kl_weight), _s(T, free_bits),
                _s(T, lv_min), _s(T, lv_max)))
    if n_chunks > 1:
        _finish(dev, dhb, part, n_chunks, 2 * Z, 1.0)


def likelihood_fwd_bwd(dout, loss_rows, db, dlogscale, out, b, x, logscale, kind,
                       learn_scale, grad_scale):
    """Reconstruction loss per row and its gradient in one pass (contract: reference)."""
    dev = device()
    R, D = out.shape
    B = x.shape[0]
    T = out.dtype
    grid, block, per, n_chunks = tile_plan(R, D, dev.sm_count)
    n_tiles = grid[0]
    learn = bool(learn_scale) and kind == LIK_GAUSSIAN
    shared = logscale.shape[0] == 1
    rowpart, dbpart, lspart = _partials(
        T, R * n_tiles if n_tiles > 1 else 0, D * n_chunks if n_chunks > 1 else 0,
        D * n_chunks if learn and (n_chunks > 1 or shared) else 0)
    rowpart = loss_rows if n_tiles == 1 else rowpart
    dbpart = db if n_chunks == 1 else dbpart
    if learn and not shared and n_chunks == 1:
        lspart = dlogscale
    dev.launch(kernel_name("likelihood_fwd_bwd", T), grid, block,
               (dout, rowpart, dbpart, lspart if learn else dbpart, out, b, x, logscale,
                np.int32(R), np.int32(B), np.int32(D), np.int32(per), np.int32(kind),
                np.int32(learn), np.int32(shared), _s(T, grad_scale)))
    if n_tiles > 1:
        _finish(dev, loss_rows, rowpart, n_tiles, R, 1.0)
    if n_chunks > 1:
        _finish(dev, db, dbpart, n_chunks, D, 1.0)
    if learn and shared:  # one log-scale: add every row chunk and every column
        _finish(dev, dlogscale, lspart, n_chunks * D, 1, 1.0)
    elif learn and n_chunks > 1:
        _finish(dev, dlogscale, lspart, n_chunks, D, 1.0)


def likelihood_fwd(loss_rows, out, b, x, logscale, kind):
    """Reconstruction loss per row only, for evaluation (contract: reference.likelihood_fwd)."""
    dev = device()
    R, D = out.shape
    T = out.dtype
    grid, block, per, _ = tile_plan(R, D, dev.sm_count)
    n_tiles = grid[0]
    rowpart = loss_rows if n_tiles == 1 else _partials(T, R * n_tiles)[0]
    dev.launch(kernel_name("likelihood_fwd", T), grid, block,
               (rowpart, out, b, x, logscale, np.int32(R), np.int32(x.shape[0]), np.int32(D),
                np.int32(per), np.int32(kind), np.int32(logscale.shape[0] == 1)))
    if n_tiles > 1:
        _finish(dev, loss_rows, rowpart, n_tiles, R, 1.0)


def logscale_fwd(ls, raw, floor):
    """ls (S,) = floor + softplus(raw - floor) (contract: reference.logscale_fwd)."""
    dev = device()
    S = ls.shape[0]
    dev.launch(kernel_name("logscale_fwd", ls.dtype), (grid_1d(S, dev.sm_count),), (BLOCK_1D,),
               (ls, raw, np.int32(S), _s(ls.dtype, floor)))


def logscale_bwd(draw, dls, raw, floor):
    """draw (S,) = dls * sigmoid(raw - floor) (contract: reference.logscale_bwd)."""
    dev = device()
    S = raw.shape[0]
    dev.launch(kernel_name("logscale_bwd", raw.dtype), (grid_1d(S, dev.sm_count),),
               (BLOCK_1D,), (draw, dls, raw, np.int32(S), _s(raw.dtype, floor)))


def loss_stats(stats, acc, loss_rows, kl, kl_dim, free_bits, kl_coef, weight, obj_rows):
    """stats (3,) float64 = [loss, recon mean, kl mean]; acc (3,) += weight * stats
    (contract: reference.loss_stats).  Stays on the device: nothing waits."""
    dev = device()
    dev.launch(kernel_name("loss_stats", loss_rows.dtype), (1,), (BLOCK_1D,),
               (stats, acc, loss_rows, kl, kl_dim, obj_rows, np.int32(loss_rows.shape[0]),
                np.int32(kl.shape[0]), np.int32(kl_dim.shape[0]), np.int32(obj_rows.shape[0]),
                np.float64(free_bits), np.float64(kl_coef), np.float64(weight)))


def likelihood_bwd(dout, db, dlogscale, out, x, logscale, kind, learn_scale, row_scale,
                   scale):
    """Row-weighted loss gradient of biased logits/means (contract: reference.likelihood_bwd)."""
    dev = device()
    R, D = out.shape
    T = out.dtype
    grid, block, per, n_chunks = tile_plan(R, D, dev.sm_count)
    learn = bool(learn_scale) and kind == LIK_GAUSSIAN
    shared = logscale.shape[0] == 1
    dbpart, lspart = _partials(T, D * n_chunks if n_chunks > 1 else 0,
                               D * n_chunks if learn and (n_chunks > 1 or shared) else 0)
    dbpart = db if n_chunks == 1 else dbpart
    if learn and not shared and n_chunks == 1:
        lspart = dlogscale
    dev.launch(kernel_name("likelihood_bwd", T), grid, block,
               (dout, dbpart, lspart if learn else dbpart, out, x, logscale, row_scale,
                np.int32(R), np.int32(x.shape[0]), np.int32(D), np.int32(per), np.int32(kind),
                np.int32(learn), np.int32(shared), _s(T, scale)))
    if n_chunks > 1:
        _finish(dev, db, dbpart, n_chunks, D, 1.0)
    if learn and shared:
        _finish(dev, dlogscale, lspart, n_chunks * D, 1, 1.0)
    elif learn and n_chunks > 1:
        _finish(dev, dlogscale, lspart, n_chunks, D, 1.0)


def iwae_fwd(logw, wnorm, loss_b, loss_rows, z, eps, logvar):
    """Importance weights and the IWAE loss per datapoint (contract: reference.iwae_fwd)."""
    dev = device()
    B, Z = logvar.shape
    dev.launch(kernel_name("iwae_fwd", logw.dtype), (grid_1d(B, dev.sm_count),), (BLOCK_1D,),
               (logw, wnorm, loss_b, loss_rows, z, eps, logvar, np.int32(B), np.int32(Z),
                np.int32(loss_rows.shape[0] // B)))


def reparam_iw_bwd(dhead, dhb, dz, eps, z, sigma, head, wnorm, inv_b, dreg, lv_min, lv_max):
    """Head gradient under IWAE or DReG (contract: reference.reparam_iw_bwd)."""
    dev = device()
    B, Z = sigma.shape
    T = sigma.dtype
    grid, block, per, n_chunks = tile_plan(B, Z, dev.sm_count)
    part = dhb if n_chunks == 1 else _partials(T, n_chunks * 2 * Z)[0]
    dev.launch(kernel_name("reparam_iw_bwd", T), grid, block,
               (dhead, part, dz, eps, z, sigma, head, wnorm, np.int32(B), np.int32(Z),
                np.int32(dz.shape[0] // B), np.int32(per), _s(T, inv_b), np.int32(bool(dreg)),
                _s(T, lv_min), _s(T, lv_max)))
    if n_chunks > 1:
        _finish(dev, dhb, part, n_chunks, 2 * Z, 1.0)


def check_data(x, lo, hi):
    """Return (number of non-finite entries, number of finite entries outside [lo, hi]).
    Waits for the GPU (the answer is a host number)."""
    counts = device().xp.zeros(2, dtype=np.uint64)
    check_data_into(counts, x, lo, hi)
    bad, out = (int(v) for v in device().to_numpy(counts))
    return bad, out


def check_data_into(counts, x, lo, hi):
    """counts (2,) uint64 <- [non-finite entries, finite entries outside [lo, hi]] of x, on
    the device: the check of a training step, read with its loss, not before."""
    dev = device()
    counts.fill(0)
    n = x.size
    dev.launch(kernel_name("check_data", x.dtype), (grid_1d(n, dev.sm_count),), (BLOCK_1D,),
               (counts, x, np.int64(n), _s(x.dtype, max(lo, -np.finfo(x.dtype).max)),
                _s(x.dtype, min(hi, np.finfo(x.dtype).max))))


def _sq_norm_partials(g):
    """(part, blocks): float64 sums of squares of the flat vector g, one per block, queued."""
    dev = device()
    blocks = grid_1d(g.size, dev.sm_count)
    part = _partials(np.float64, blocks)[0]
    dev.launch(kernel_name("sq_norm_partial", g.dtype), (blocks,), (BLOCK_1D,),
               (part, g, np.int64(g.size)))
    return part, blocks


def sq_norm(g):
    """Sum of squares of the flat vector g, accumulated in float64; waits for the GPU."""
    return float(device().to_numpy(_sq_norm_partials(g)[0]).sum())


def _scale_args(T, grad_scale):
    """(scalar, device pointer) of an update's gradient scale: a float (times a constant 1
    on the device), or a device array of one float64 written by clip_scale (times 1)."""
    if isinstance(grad_scale, device().xp.ndarray):
        return _s(T, 1.0), grad_scale
    return _s(T, grad_scale), device().unit()


def clip_scale(scale, norm, g, clip_norm):
    """norm[0] (of a (2,) float64) <- |g| and scale (1,) float64 <- min(1, clip_norm /
    (|g| + 1e-6)), or NaN when |g| is not finite (then adam_step and sgd_step leave
    everything as it was, and norm[1] counts one more skipped update), all on the device:
    clipping by global norm without waiting for the GPU (contract: reference.clip_scale)."""
    part, blocks = _sq_norm_partials(g)
    device().launch(kernel_name("clip_scale", np.float64), (1,), (32,),
                    (scale, norm, part, np.int32(blocks), np.float64(clip_norm)))


def adam_step(p, m, v, g, lr, beta1, beta2, eps, weight_decay, decoupled, step, grad_scale):
    """One Adam / AdamW update over flat buffers, in place (contract: reference.adam_step;
    ``grad_scale`` may also be clip_scale's device array)."""
    dev = device()
    T = p.dtype
    bc1 = 1.0 - beta1 ** step
    bc2 = 1.0 - beta2 ** step
    l2 = 0.0 if decoupled else weight_decay
    shrink = 1.0 - lr * weight_decay if decoupled else 1.0
    n = p.size
    dev.launch(kernel_name("adam_step", T), (grid_1d(n, dev.sm_count),), (BLOCK_1D,),
               (p, m, v, g, np.int64(n), _s(T, lr / bc1), _s(T, 1.0 / math.sqrt(bc2)),
                _s(T, beta1), _s(T, beta2), _s(T, eps), _s(T, l2), _s(T, shrink),
                *_scale_args(T, grad_scale)))


def sgd_step(p, buf, g, lr, momentum, nesterov, weight_decay, step, grad_scale):
    """One SGD update (torch.optim.SGD, dampening 0) over flat buffers (contract: reference;
    ``grad_scale`` may also be clip_scale's device array)."""
    dev = device()
    T = p.dtype
    n = p.size
    dev.launch(kernel_name("sgd_step", T), (grid_1d(n, dev.sm_count),), (BLOCK_1D,),
               (p, buf, g, np.int64(n), _s(T, lr), _s(T, momentum), _s(T, weight_decay),
                np.int32(bool(nesterov)), np.int32(step == 1), *_scale_args(T, grad_scale)))


def normal_eps(eps, key, row0, first):
    """eps (L, B, Z) <- counter-based standard normal noise (contract: reference.normal_eps)."""
    dev = device()
    L, B, Z = eps.shape
    n = L * Z
    nq = (int(first) + n + 3) // 4 - int(first) // 4
    dev.launch(kernel_name("normal_eps", eps.dtype), (grid_1d(B * nq, dev.sm_count),),
               (BLOCK_1D,), (eps, np.int32(L), np.int32(B), np.int32(Z), np.int64(row0),
                             np.int64(first), np.uint32(key[0]), np.uint32(key[1])))


def gather_rows(out, X, idx, scale):
    """out (B, D) = scale * X[idx] converted to out's dtype (contract: reference.gather_rows);
    X (N, D) uint8, float32 or float64; idx (B,) int64, all on the device."""
    dev = device()
    B, D = out.shape
    try:
        name = f"gather_rows_{DTYPE_SUFFIX[np.dtype(out.dtype)]}_{_DATA_SUFFIX[np.dtype(X.dtype)]}"
    except KeyError:
        raise TypeError(f"gather_rows: {X.dtype} data into {out.dtype} batches is not "
                        "supported (uint8, float32 or float64 data)") from None
    dev.launch(name, (grid_1d(B * D, dev.sm_count),), (BLOCK_1D,),
               (out, X, idx, np.int32(B), np.int32(D), _s(out.dtype, scale)))


# ------------------------------------------------------------ column-block models (blocks.cu)
def _colsum(dev, out, a, part):
    """out (N,) = column sums of a (R, N) in a fixed order: act_bias_bwd's kernel with the
    identity (da = dy, in place), its row-chunk partials in ``part`` (n_chunks * N)."""
    R, N = a.shape
    grid, block, per, n_chunks = tile_plan(R, N, dev.sm_count)
    dst = out if n_chunks == 1 else part
    dev.launch(kernel_name("act_bias_bwd", a.dtype), grid, block,
               (a, dst, a, a, np.int32(R), np.int32(N), np.int32(per), np.int32(ACT_IDENTITY),
                _s(a.dtype, 0.0)))
    if n_chunks > 1:
        _finish(dev, out, part, n_chunks, N, 1.0)


def _blocks_grad(dev, kernel, args, dout, db, daux, x, cols, meta, R, D, n_rowpart=0):
    """Launch a gradient cell kernel, ``args(dcell, per, rowpart)`` its arguments, then sum
    the columns of dout into db and the cells' aux gradients into daux (contract:
    reference_blocks).  ``rowpart``: n_rowpart entries of the same scratch for the kernel's
    row partials; returned, for the caller to finish."""
    T = dout.dtype
    P = dout.shape[1]
    B, W = x.shape
    grid, block, per, n_cd = tile_plan(R, D, dev.sm_count)
    n_cp = tile_plan(R, P, dev.sm_count)[3]
    dcell, dcol, ppart, dpart, rowpart = _partials(
        T, R * D, D, n_cp * P if n_cp > 1 else 0, n_cd * D if n_cd > 1 else 0, n_rowpart)
    dcell = dcell.reshape(R, D)
    dev.launch(kernel, grid, block, args(dcell, per, rowpart))
    _colsum(dev, db, dout, ppart)
    A = daux.shape[0]
    if A:
        _colsum(dev, dcol, dcell, dpart)
        dev.launch(kernel_name("blocks_aux_sum", T), (grid_1d(A, dev.sm_count),), (BLOCK_1D,),
                   (daux, dcol, dcell, x, cols, meta, np.int32(A), np.int32(R), np.int32(B),
                    np.int32(W), np.int32(D)))
    return rowpart


def blocks_fwd_bwd(dout, loss_rows, db, daux, out, b, x, aux, cols, meta, grad_scale):
    """The block likelihood's loss per row and its gradient (contract: reference_blocks)."""
    dev = device()
    R, P = out.shape
    B, W = x.shape
    D = cols.shape[0]
    n_tiles = tile_plan(R, D, dev.sm_count)[0][0]

    def args(dcell, per, rowpart):
        return (dout, loss_rows if n_tiles == 1 else rowpart, dcell, out, b, x, aux, cols,
                meta, np.int32(R), np.int32(B), np.int32(W), np.int32(D), np.int32(P),
                np.int32(per), np.float64(grad_scale))
    rowpart = _blocks_grad(dev, kernel_name("blocks_fwd_bwd", out.dtype), args, dout, db, daux,
                           x, cols, meta, R, D, R * n_tiles if n_tiles > 1 else 0)
    if n_tiles > 1:
        _finish(dev, loss_rows, rowpart, n_tiles, R, 1.0)


def blocks_fwd(loss_rows, out, b, x, aux, cols, meta):
    """The block likelihood's loss per row, for evaluation (contract: reference_blocks)."""
    dev = device()
    R, P = out.shape
    B, W = x.shape
    D = cols.shape[0]
    grid, block, per, _ = tile_plan(R, D, dev.sm_count)
    n_tiles = grid[0]
    rowpart = loss_rows if n_tiles == 1 else _partials(out.dtype, R * n_tiles)[0]
    dev.launch(kernel_name("blocks_fwd", out.dtype), grid, block,
               (rowpart, out, b, x, aux, cols, meta, np.int32(R), np.int32(B), np.int32(W),
                np.int32(D), np.int32(P), np.int32(per)))
    if n_tiles > 1:
        _finish(dev, loss_rows, rowpart, n_tiles, R, 1.0)


def blocks_bwd(dout, db, daux, out, x, aux, cols, meta, row_scale, scale):
    """The block likelihood's gradient, rows weighted (contract: reference_blocks)."""
    dev = device()
    R, P = out.shape
    B, W = x.shape
    D = cols.shape[0]

    def args(dcell, per, _):
        return (dout, dcell, out, x, aux, cols, meta, row_scale, np.int32(R), np.int32(B),
                np.int32(W), np.int32(D), np.int32(P), np.int32(per), np.float64(scale))
    _blocks_grad(dev, kernel_name("blocks_bwd", out.dtype), args, dout, db, daux, x, cols,
                 meta, R, D)


def encoder_input(xin, x, src, mode):
    """xin (B, Dn): the encoder's dense input columns (contract: reference_blocks)."""
    dev = device()
    B, Dn = xin.shape
    dev.launch(kernel_name("encoder_input", xin.dtype), (grid_1d(B * Dn, dev.sm_count),),
               (BLOCK_1D,), (xin, x, src, mode, np.int32(B), np.int32(x.shape[1]),
                             np.int32(Dn)))


def embed_fwd(h, Wc, x, cat_cols, cat_rows):
    """h (B, N) += the rows of Wc the categorical codes pick (contract: reference_blocks)."""
    dev = device()
    B, N = h.shape
    dev.launch(kernel_name("embed_fwd", h.dtype), (grid_1d(B * N, dev.sm_count),),
               (BLOCK_1D,), (h, Wc, x, cat_cols, cat_rows, np.int32(B), np.int32(N),
                             np.int32(x.shape[1]), np.int32(cat_cols.shape[0])))


def embed_bwd(dWc, dh, x, cat_cols, cat_rows):
    """dWc (n_onehot, N) = dh scattered into the codes' rows (contract: reference_blocks)."""
    dev = device()
    B, N = dh.shape
    n_cat = cat_cols.shape[0]
    dev.launch(kernel_name("embed_bwd", dh.dtype), (grid_1d(max(n_cat, 1) * N, dev.sm_count),),
               (BLOCK_1D,), (dWc, dh, x, cat_cols, cat_rows, np.int32(B), np.int32(N),
                             np.int32(x.shape[1]), np.int32(n_cat), np.int32(dWc.shape[0])))


def decoder_input(zin, z, x, cond_cols):
    """zin (R, Z + C) = [z | conditions of x[r % B]] (contract: reference_blocks)."""
    dev = device()
    R, Z = z.shape
    C = cond_cols.shape[0]
    dev.launch(kernel_name("decoder_input", z.dtype), (grid_1d(R * (Z + C), dev.sm_count),),
               (BLOCK_1D,), (zin, z, x, cond_cols, np.int32(R), np.int32(x.shape[0]),
                             np.int32(Z), np.int32(C), np.int32(x.shape[1])))
