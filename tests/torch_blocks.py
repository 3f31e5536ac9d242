"""A block model's loss written with PyTorch autograd, on fastvae's own parameter tensors.

An independent derivation for the tests: built from the block list (not from the kernels'
tables), with explicit one-hot encoder inputs where fastvae gathers rows, torch's own
distributions for every cell's log-density, the missing cells' terms multiplied out by the
mask, and the conditions concatenated to both networks' inputs.
"""
import math

import numpy as np
import torch

from fastvae.core.blocks import ZINB, Bernoulli, Categorical, Gaussian, NegBinomial, Poisson

from torch_ref import _act, _host

D_ = torch.distributions


def _split(model, rows):
    D, C = model.columns.D, model.columns.C
    x = rows[:, :D]
    cond = rows[:, D:D + C]
    expo = rows[:, D + C] if model.columns.E else torch.ones(rows.shape[0], dtype=rows.dtype)
    return x, cond, expo


def encoder_input(model, rows):
    """(B, enc rows): numeric values (counts as log1p), the observed masks, the conditions,
    then one one-hot block per categorical column, missing cells as zeros."""
    x, cond, _ = _split(model, rows)
    obs = ~torch.isnan(x)
    x0 = torch.where(obs, x, torch.zeros_like(x))
    dense, onehot = [], []
    j = 0
    for b in model.columns.blocks:
        for k in range(b.n):
            if isinstance(b, Categorical):
                K = b.classes[k]
                oh = torch.nn.functional.one_hot(x0[:, j].long(), K).to(x.dtype)
                onehot.append(oh * obs[:, j:j + 1])
            elif isinstance(b, Poisson):  # NegBinomial too
                dense.append(torch.log1p(x0[:, j:j + 1]))
            else:
                dense.append(x0[:, j:j + 1])
            j += 1
    if model.columns.missing:
        dense.append(obs.to(x.dtype))
    dense.append(cond)
    return torch.cat(dense + onehot, dim=1)


def logp_cells(model, p, out, rows, R):
    """(R, D) log p of every cell (0 where missing) for decoder outputs out (R, P)."""
    x, cond, expo = _split(model, rows)
    B = x.shape[0]
    idx = torch.arange(R) % B
    x, cond, expo = x[idx], cond[idx], expo[idx]
    obs = ~torch.isnan(x)
    x0 = torch.where(obs, x, torch.zeros_like(x))
    floor = -6.0
    ls_learned = (floor + torch.nn.functional.softplus(p["dec.logscale"] - floor)
                  if "dec.logscale" in p else None)
    theta = torch.exp(p["dec.log_theta"]) if "dec.log_theta" in p else None
    cells = []
    j = o = nl = nt = 0
    group = torch.argmax(cond, dim=1) if cond.shape[1] else torch.zeros(R, dtype=torch.long)
    for b in model.columns.blocks:
        if isinstance(b, Gaussian):
            if isinstance(b.scale, str):
                n_ls = 1 if b.scale == "learned" else b.n
                ls = ls_learned[nl:nl + n_ls]
                nl += n_ls
                ls = ls.expand(b.n) if n_ls == 1 else ls
            else:
                ls = torch.full((b.n,), math.log(b.scale), dtype=out.dtype)
            lp = D_.Normal(out[:, o:o + b.n], torch.exp(ls)).log_prob(x0[:, j:j + b.n])
            cells.append(lp)
            j, o = j + b.n, o + b.n
        elif isinstance(b, Bernoulli):
            cells.append(-torch.nn.functional.binary_cross_entropy_with_logits(
                out[:, o:o + b.n], x0[:, j:j + b.n], reduction="none"))
            j, o = j + b.n, o + b.n
        elif isinstance(b, Categorical):
            for K in b.classes:
                lp = torch.log_softmax(out[:, o:o + K], dim=1)
                cells.append(lp.gather(1, x0[:, j:j + 1].long()))
                j, o = j + 1, o + K
        else:
            wd = 2 if isinstance(b, ZINB) else 1  # (ZINB: [a, inflation logit] per column)
            eta = out[:, o:o + wd * b.n:wd]
            mu = torch.exp(eta) * (expo[:, None] if b.exposure else 1.0)
            xv = x0[:, j:j + b.n]
            if isinstance(b, NegBinomial):
                if b.dispersion == "condition":
                    th = theta[nt:nt + b.n * cond.shape[1]].reshape(cond.shape[1], b.n)[group]
                    nt += b.n * cond.shape[1]
                else:
                    th = theta[nt:nt + b.n].expand(R, b.n)
                    nt += b.n
                lp = D_.NegativeBinomial(total_count=th, logits=torch.log(mu) - torch.log(th)
                                         ).log_prob(xv)
            else:
                lp = D_.Poisson(mu).log_prob(xv)
            if isinstance(b, ZINB):  # a zero: inflated, or the NB's zero
                zeta = out[:, o + 1:o + 2 * b.n:2]
                lp = torch.where(xv == 0, torch.logaddexp(torch.nn.functional.logsigmoid(zeta),
                                                          torch.nn.functional.logsigmoid(-zeta) + lp),
                                 torch.nn.functional.logsigmoid(-zeta) + lp)
            cells.append(lp)
            j, o = j + b.n, o + wd * b.n
    lp = torch.cat(cells, dim=1)
    return torch.where(obs, lp, torch.zeros_like(lp))


def decoder(model, p, act, z, cond):
    """The decoder's outputs (R, P) of [z | cond]; with inject_conditions every later layer
    reads [h | cond] too."""
    g = torch.cat([z, cond], dim=1)
    for j in range(len(model.dec_hidden)):
        g = act(g @ p[f"dec.{j}.W"] + p[f"dec.{j}.b"])
        if model.inject_conditions:
            g = torch.cat([g, cond], dim=1)
    return g @ p["dec.out.W"] + p["dec.out.b"]


def loss_and_grads(model, rows, eps, lv_range=(-30.0, 20.0)):
    """(loss, {name: grad}) of the block model's ELBO loss by autograd; eps (L, B, Z)."""
    p = {k: torch.tensor(_host(v), requires_grad=True) for k, v in model.parameters().items()}
    rt = torch.tensor(np.asarray(rows))
    et = torch.tensor(np.asarray(eps))
    L, B, Z = et.shape
    act = _act(model.activation, model.act_alpha)
    h = encoder_input(model, rt)
    for i in range(len(model.enc_hidden)):
        h = act(h @ p[f"enc.{i}.W"] + p[f"enc.{i}.b"])
    head = h @ p["enc.head.W"] + p["enc.head.b"]
    raw = head[:, Z:]
    mu, logvar = head[:, :Z], torch.clamp(raw, *lv_range)
    z = (mu[None] + torch.exp(0.5 * logvar)[None] * et).reshape(L * B, Z)
    _, cond, _ = _split(model, rt)
    out = decoder(model, p, act, z, cond.repeat(L, 1))
    rec = -logp_cells(model, p, out, rt, L * B).sum()
    em1 = torch.expm1(logvar)
    kl = (0.5 * (mu ** 2 + em1 - logvar) + 0.5 * em1 * (raw - logvar)).mean(dim=0).sum()
    loss = rec / (L * B) + model.beta * kl
    loss.backward()
    return loss.item(), {k: v.grad.numpy() for k, v in p.items()}


def iwae_loss_and_grads(model, rows, eps, dreg=False, lv_range=(-30.0, 20.0)):
    """(loss, {name: grad}) of the block model's IWAE bound with K = eps.shape[0] samples,
    by autograd (tests/torch_ref.py's iwae_loss_and_grads with this file's encoder input,
    decoder input and cells): the encoder's gradients from the DReG surrogate with
    ``dreg``."""
    p = {k: torch.tensor(_host(v), requires_grad=True) for k, v in model.parameters().items()}
    rt = torch.tensor(np.asarray(rows))
    et = torch.tensor(np.asarray(eps))
    K, B, Z = et.shape
    act = _act(model.activation, model.act_alpha)
    h = encoder_input(model, rt)
    for i in range(len(model.enc_hidden)):
        h = act(h @ p[f"enc.{i}.W"] + p[f"enc.{i}.b"])
    head = h @ p["enc.head.W"] + p["enc.head.b"]
    mu, logvar = head[:, :Z], torch.clamp(head[:, Z:], *lv_range)
    sigma = torch.exp(0.5 * logvar)
    z = mu[None] + sigma[None] * et
    _, cond, _ = _split(model, rt)
    out = decoder(model, p, act, z.reshape(K * B, Z), cond.repeat(K, 1))
    log_px = logp_cells(model, p, out, rt, K * B).sum(1).reshape(K, B)
    normal = D_.Normal
    log_pz = normal(0.0, 1.0).log_prob(z).sum(-1)

    def log_w(m, s):
        return log_px + log_pz - normal(m[None], s[None]).log_prob(z).sum(-1)

    loss = -(torch.logsumexp(log_w(mu, sigma), 0) - math.log(K)).mean()
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
