"""Diagonal preconditioning of ``torchace.train``: the optimisers work on u with θ = d ⊙ u (docs/training.md).

The weighted E/F/V loss of an ACE model is badly conditioned in its raw parameters (the design matrix of the
linear part alone has column norms spread over many orders of magnitude: polynomial degree, body order, the
energy weight), so L-BFGS on θ crawls and Adam's step size means different things for different parameters.
With d_k = (H_kk)^(−1/2), H_kk the Gauss–Newton diagonal of the loss, every variable u_k has unit curvature.

    H_kk = 2 (Σ_rows J_rk² + λ² Γ_k²) / n_rows,    Σ_rows J_rk² = E_v[(Jᵀv)_k²]  (v: random ±1 per row)

J is the Jacobian of the weighted residuals; Jᵀv is the gradient of Σ_rows v_row r_row, one backward pass per
sample v (Hutchinson's estimator of diag JᵀJ, on a subset of the batches scaled to the whole set).  The
scale is fixed at the start of training (and saved in checkpoints), so the optimisation problem is the same
one throughout: the minimiser in u is the minimiser in θ.
"""
from __future__ import annotations

from typing import List, Optional

import torch

from .. import keys as K
from ..model.evaluate import model_inputs


def signed_residual_sum(model, batch, gen: torch.Generator) -> torch.Tensor:
    """Σ_rows v_row r_row of the weighted residuals of one batch, v = ±1 drawn from ``gen`` (CPU)."""
    virials = bool((batch["wV"] != 0).any())
    out = model(*model_inputs(model, batch), True, virials)

    def signs(shape, like):
        v = torch.randint(0, 2, shape, generator=gen, dtype=torch.int64).to(like.device)
        return (2 * v - 1).to(like.dtype)

    rE = batch["wE"] * (out[K.ENERGY] - batch["E"])
    rF = batch["wF"][:, None] * (out[K.FORCES] - batch["F"])
    s = (signs(rE.shape, rE) * rE).sum() + (signs(rF.shape, rF) * rF).sum()
    if virials:
        rV = batch["wV"][:, None] * (K.to_voigt(out[K.VIRIAL]) - batch["V"])
        s = s + (signs(rV.shape, rV) * rV).sum()
    return s


def curvature_scale(model, params: List[torch.Tensor], batches, penalty, *, samples: int = 4,
                    max_batches: int = 8, seed: int = 0) -> List[torch.Tensor]:
    """d [one per parameter] = H_kk^(−1/2) (module docstring); d = 1 where H_kk = 0 (unused entries)."""
    n_rows = max(sum(b["n_rows"] for b in batches), 1)
    step = max(1, len(batches) // max_batches)
    subset = batches[::step]
    rows_subset = max(sum(b["n_rows"] for b in subset), 1)
    gen = torch.Generator().manual_seed(int(seed) + 7919)
    acc = [torch.zeros_like(p) for p in params]
    model.train()
    for _ in range(samples):
        for p in params:
            p.grad = None
        for b in subset:
            signed_residual_sum(model, b, gen).backward()
        for a, p in zip(acc, params):
            if p.grad is not None:
                a += p.grad.detach() ** 2
    for p in params:
        p.grad = None
    diag = penalty.diagonal(model)
    out = []
    for a, _, pd in zip(acc, params, diag):
        jj = a * (n_rows / rows_subset) / samples
        h = 2.0 * (jj + (pd if pd is not None else 0.0)) / n_rows
        d = torch.where(h > 0, h.clamp_min(torch.finfo(h.dtype).tiny).rsqrt(), torch.ones_like(h))
        out.append(d.detach())
    return out


class ScaledParameters:
    """The optimiser's variables u (leaf tensors) for the model's parameters θ = d ⊙ u."""

    def __init__(self, params: List[torch.Tensor], scales: List[torch.Tensor]):
        self.params, self.scales = params, [d.to(p) for p, d in zip(params, scales)]
        self.u = [(p.detach() / d).clone().requires_grad_(True) for p, d in zip(params, self.scales)]

    def push(self) -> None:
        """θ ← d ⊙ u."""
        with torch.no_grad():
            for p, u, d in zip(self.params, self.u, self.scales):
                p.copy_(u * d)

    def pull(self) -> None:
        """u ← θ / d (after the model's parameters were set from outside, e.g. a checkpoint)."""
        with torch.no_grad():
            for p, u, d in zip(self.params, self.u, self.scales):
                u.copy_(p / d)

    def zero_model_grads(self) -> None:
        for p in self.params:
            p.grad = None

    def grads_to_u(self) -> None:
        """∂L/∂u = d ⊙ ∂L/∂θ."""
        for p, u, d in zip(self.params, self.u, self.scales):
            u.grad = (p.grad * d).detach() if p.grad is not None else torch.zeros_like(u)


class CachedClosure:
    """L-BFGS closure in u; reuses the last evaluation when called again at the same u (torch's LBFGS evaluates
    the start of every ``step``, which is the end point of the previous one)."""

    def __init__(self, model, scaled: ScaledParameters, loss_fn):
        self.model, self.scaled, self.loss_fn = model, scaled, loss_fn
        self.key: Optional[torch.Tensor] = None
        self.loss = 0.0
        self.grads: List[torch.Tensor] = []
        self.evaluations = 0

    def __call__(self):
        flat = torch.cat([u.detach().reshape(-1) for u in self.scaled.u])
        if self.key is None or not torch.equal(flat, self.key):
            self.scaled.push()
            self.model.train()
            self.scaled.zero_model_grads()
            self.loss = self.loss_fn()
            self.evaluations += 1
            self.scaled.grads_to_u()
            self.grads = [u.grad.clone() for u in self.scaled.u]
            self.key = flat
        for u, g in zip(self.scaled.u, self.grads):
            u.grad = g.clone()
        return torch.tensor(self.loss, dtype=torch.float64)
