"""The same VAE loss written with PyTorch autograd, on fastvae's own parameter tensors.

Used only by tests: it is an independent derivation of every gradient (autograd) to hold
the hand-written backward against.
"""
import math

import numpy as np
import torch

ACT = {
    "relu": torch.relu,
    "tanh": torch.tanh,
    "sigmoid": torch.sigmoid,
    "softplus": torch.nn.functional.softplus,
}


def _host(a):
    """A NumPy copy of a parameter, wherever the model keeps it (CuPy arrays have .get())."""
    return np.array(a.get() if hasattr(a, "get") else a)


def _act(name, alpha):
    if name == "leaky_relu":
        return lambda a: torch.nn.functional.leaky_relu(a, alpha)
    if name == "elu":
        return lambda a: torch.nn.functional.elu(a, alpha)
    return ACT[name]


def _round_bf16(t):
    """t (float32) rounded to bfloat16 (nearest-even) and back: exact in float32."""
    return t.to(torch.bfloat16).to(t.dtype)


class Bf16Matmul(torch.autograd.Function):
    """a @ b as mixed precision computes it: operands rounded to bfloat16, float32 sums, and
    in backward the same for both products (dA = dY B^T, dB = A^T dY), as on tensor cores."""

    @staticmethod
    def forward(ctx, a, b):
        ra, rb = _round_bf16(a), _round_bf16(b)
        ctx.save_for_backward(ra, rb)
        return ra @ rb

    @staticmethod
    def backward(ctx, g):
        ra, rb = ctx.saved_tensors
        rg = _round_bf16(g)
        return rg @ rb.T, ra.T @ rg


def loss_and_grads(model, x, eps, lv_range=(-30.0, 20.0), ls_floor=-6.0, bf16=False):
    """(loss, {name: grad}) of fastvae's objective computed by torch autograd in the model's
    dtype.  eps (L, B, Z).  The conventions, written out here independently of fastvae's
    kernels: the KL per dimension is 0.5 (mu^2 + expm1(lv) - lv) with lv the clamped logvar,
    continued linearly past the clamp; learned log-scales are floor + softplus(raw - floor).
    bf16: every matrix product as :class:`Bf16Matmul` (precision="bf16")."""
    mm = Bf16Matmul.apply if bf16 else torch.matmul
    p = {k: torch.tensor(_host(v), requires_grad=True) for k, v in model.parameters().items()}
    xt = torch.tensor(np.asarray(x))
    et = torch.tensor(np.asarray(eps))
    L, B, Z = et.shape
    act = _act(model.activation, model.act_alpha)
    h = xt
    for i in range(len(model.enc_hidden)):
        h = act(mm(h, p[f"enc.{i}.W"]) + p[f"enc.{i}.b"])
    head = mm(h, p["enc.head.W"]) + p["enc.head.b"]
    raw = head[:, Z:]
    mu, logvar = head[:, :Z], torch.clamp(raw, *lv_range)
    sigma = torch.exp(0.5 * logvar)
    z = (mu[None] + sigma[None] * et).reshape(L * B, Z)
    g = z
    for j in range(len(model.dec_hidden)):
        g = act(mm(g, p[f"dec.{j}.W"]) + p[f"dec.{j}.b"])
    out = mm(g, p["dec.out.W"]) + p["dec.out.b"]
    xr = xt.repeat(L, 1)
    if model.likelihood == "bernoulli":
        rec = torch.nn.functional.binary_cross_entropy_with_logits(out, xr, reduction="sum")
    else:
        if model.learn_scale:
            ls = ls_floor + torch.nn.functional.softplus(p["dec.logscale"] - ls_floor)
        else:
            ls = torch.tensor(math.log(model.obs_scale), dtype=out.dtype)
        rec = (0.5 * (xr - out) ** 2 * torch.exp(-2 * ls) + ls + 0.5 * math.log(2 * math.pi)).sum()
    em1 = torch.expm1(logvar)
    kl_dim = (0.5 * (mu ** 2 + em1 - logvar) + 0.5 * em1 * (raw - logvar)).mean(dim=0)
    if model.free_bits > 0:
        kl = torch.clamp(kl_dim, min=model.free_bits).sum()
    else:
        kl = kl_dim.sum()
    loss = rec / (L * B) + model.beta * kl
    loss.backward()
    return loss.item(), {k: v.grad.numpy() for k, v in p.items()}


def _decoder_logp(model, p, z, xt):
    """log p(x|z) per row of z (R, Z) for data xt (B, D) tiled to R rows."""
    act = _act(model.activation, model.act_alpha)
    g = z
    for j in range(len(model.dec_hidden)):
        g = act(g @ p[f"dec.{j}.W"] + p[f"dec.{j}.b"])
    out = g @ p["dec.out.W"] + p["dec.out.b"]
    xr = xt.repeat(z.shape[0] // xt.shape[0], 1)
    if model.likelihood == "bernoulli":
        return -torch.nn.functional.binary_cross_entropy_with_logits(out, xr, reduction="none").sum(1)
    if model.learn_scale:
        ls = -6.0 + torch.nn.functional.softplus(p["dec.logscale"] + 6.0)
    else:
        ls = torch.tensor(math.log(model.obs_scale), dtype=out.dtype)
    return -(0.5 * (xr - out) ** 2 * torch.exp(-2 * ls) + ls + 0.5 * math.log(2 * math.pi)).sum(1)


def iwae_loss_and_grads(model, x, eps, dreg=False, lv_range=(-30.0, 20.0)):
    """(loss, {name: grad}) of the IWAE bound with K = eps.shape[0] samples, by autograd:
    log w = log p(x|z) + log N(z; 0, I) - log N(z; mu, sigma), written with torch's own
    densities of z (not fastvae's eps form).  dreg: the encoder's gradients from the DReG
    surrogate (Tucker et al. 2019: -sum_k stopgrad(w~_k)^2 log w_k with q's parameters
    detached inside log q), the decoder's from the IWAE loss."""
    p = {k: torch.tensor(_host(v), requires_grad=True) for k, v in model.parameters().items()}
    xt = torch.tensor(np.asarray(x))
    et = torch.tensor(np.asarray(eps))
    K, B, Z = et.shape
    act = _act(model.activation, model.act_alpha)
    h = xt
    for i in range(len(model.enc_hidden)):
        h = act(h @ p[f"enc.{i}.W"] + p[f"enc.{i}.b"])
    head = h @ p["enc.head.W"] + p["enc.head.b"]
    mu, logvar = head[:, :Z], torch.clamp(head[:, Z:], *lv_range)
    sigma = torch.exp(0.5 * logvar)
    z = mu[None] + sigma[None] * et                     # (K, B, Z)
    normal = torch.distributions.Normal
    log_pz = normal(0.0, 1.0).log_prob(z).sum(-1)
    log_px = _decoder_logp(model, p, z.reshape(K * B, Z), xt).reshape(K, B)

    def log_w(m, s):
        return log_px + log_pz - normal(m[None], s[None]).log_prob(z).sum(-1)

    lw = log_w(mu, sigma)
    loss = -(torch.logsumexp(lw, 0) - math.log(K)).mean()
    enc = [k for k in p if k.startswith("enc.")]
    dec = [k for k in p if not k.startswith("enc.")]
    grads = dict(zip(dec, torch.autograd.grad(loss, [p[k] for k in dec], retain_graph=True)))
    if dreg:
        lw_stop = log_w(mu.detach(), sigma.detach())
        wt = torch.softmax(lw_stop, 0).detach()
        surrogate = -(wt ** 2 * lw_stop).sum(0).mean()
        grads.update(zip(enc, torch.autograd.grad(surrogate, [p[k] for k in enc])))
    else:
        grads.update(zip(enc, torch.autograd.grad(loss, [p[k] for k in enc])))
    return loss.item(), {k: v.numpy() for k, v in grads.items()}
