"""The loss of ``torchace.train``: the weighted E/F/V misfit of ``torchace.fit`` (docs/training.md) with the same
weights and row scaling (``fit.weights.label_weights``), evaluated with the model's own forward in train mode
(forces and virials differentiable in θ), plus the penalty λ² R(θ) (``Penalty``); with one density, no embedding
and fixed radials its minimiser is the ``solvers.QR(lam=λ)`` solution of the same weights — training and
fitting are one problem.

    L(θ) = ( Σ_s [ (wE/√N)² (E_s − Ê_s)² + wF² ‖F_s − F̂_s‖² + (wV/√N)² ‖W_s − Ŵ_s‖²_Voigt ] + λ² R(θ) ) / n_rows
"""
from __future__ import annotations

import math
from typing import List, Optional

import numpy as np
import torch

from .. import keys as K
from ..model.backends import AUTO, EVALUATE, select
from ..model.evaluate import model_inputs
from ..structures.batch import collate
from ..fit.weights import label_weights


def make_batches(model, structs, weights, batch_size, device, dtype):
    """Collate ``structs`` (Labelled) into batches with targets and per-row weights (``fit.weights.label_weights``,
    the fit's rows: missing labels weigh 0)."""
    batches = []
    for b0 in range(0, len(structs), batch_size):
        chunk = structs[b0:b0 + batch_size]
        batch = collate([s.atoms for s in chunk], model.config.numbers, model.rcut, dtype=dtype, device=device,
                        names=[s.source for s in chunk])
        n = np.array([s.n_atoms for s in chunk], dtype=float)
        w = np.array([label_weights(weights, s) for s in chunk], dtype=float)  # [S, 3]; 0: no such label
        E = np.array([s.energy if s.energy is not None else 0.0 for s in chunk])
        F = np.concatenate([s.forces if s.forces is not None else np.zeros((s.n_atoms, 3)) for s in chunk])
        wF = np.concatenate([np.full(s.n_atoms, w[k, 1]) for k, s in enumerate(chunk)])
        V = np.stack([K.to_voigt(s.virial if s.virial is not None else np.zeros((3, 3))) for s in chunk])
        t = dict(dtype=dtype, device=device)
        batch.update(E=torch.tensor(E, **t), wE=torch.tensor(w[:, 0], **t),
                     F=torch.tensor(F, **t), wF=torch.tensor(wF, **t),
                     V=torch.tensor(V, **t), wV=torch.tensor(w[:, 2], **t),
                     n=torch.tensor(n, **t))
        # rows of the linear system this batch contributes (as torchace.assembly counts them)
        batch["n_rows"] = int((batch["wE"] != 0).sum() + 3 * (batch["wF"] != 0).sum() + 6 * (batch["wV"] != 0).sum())
        batches.append(batch)
    return batches


def residuals(model, batch, forward=None):
    """Model predictions minus labels on one batch: (unweighted errors dict, weighted squared sum);
    ``forward``: the evaluation (default: the model's own forward, differentiable in training mode)."""
    virials = bool((batch["wV"] != 0).any())
    out = (forward or model)(*model_inputs(model, batch), True, virials)
    dE = out[K.ENERGY] - batch["E"]
    dF = out[K.FORCES] - batch["F"]
    rss = ((batch["wE"] * dE) ** 2).sum() + ((batch["wF"][:, None] * dF) ** 2).sum()
    err = {"E": dE / batch["n"], "F": dF, "mE": batch["wE"] != 0, "mF": batch["wF"] != 0}
    if virials:
        W = out[K.VIRIAL]
        dV = K.to_voigt(W) - batch["V"]
        rss = rss + ((batch["wV"][:, None] * dV) ** 2).sum()
        err.update(V=dV / batch["n"][:, None], mV=batch["wV"] != 0)
    return err, rss


class Penalty:
    """λ² R(θ): L2 of the density and pair coefficients (Γ-weighted for a column prior) and of W − I."""

    def __init__(self, model, lam: float, gamma: Optional[torch.Tensor]):
        self.lam2 = float(lam) ** 2
        n_mb = model.nz * model.n_b
        dev, dt = model.density_coefficients.device, model.density_coefficients.dtype
        if gamma is None:
            self.g_mb = self.g_pair = None
        else:
            gamma = gamma.to(device=dev, dtype=dt)
            self.g_mb = gamma[:n_mb].view(model.nz, model.n_b)
            self.g_pair = gamma[n_mb:].view(model.nz, model.nz, model.n_pair)
        self.eye = model.radials.identity().to(device=dev, dtype=dt) if model.radials is not None else None

    def diagonal(self, model) -> List[Optional[torch.Tensor]]:
        """½ ∂²(λ²R)/∂θ² for each of ``trainable(model)`` (None: not penalised)."""
        out = []
        for name, p in model.named_parameters():
            if not p.requires_grad:
                continue
            if name == "coefficients":  # densities 1 … P (each with the many-body Γ), then the pair part
                g = torch.ones_like(p) if self.g_mb is None else torch.cat([
                    (self.g_mb ** 2).expand(model.densities, -1, -1).reshape(-1), (self.g_pair ** 2).reshape(-1)])
            elif name == "radials.weights":
                g = torch.ones_like(p)
            else:
                out.append(None)
                continue
            out.append(self.lam2 * g)
        return out

    def __call__(self, model) -> torch.Tensor:
        c, cp = model.density_coefficients, model.pair_coefficients
        if self.g_mb is not None:
            c, cp = c * self.g_mb, cp * self.g_pair
        r = (c * c).sum() + (cp * cp).sum()
        if self.eye is not None:
            d = model.radials.weights - self.eye
            r = r + (d * d).sum()
        return self.lam2 * r


def total_loss(model, batches, penalty_fn, backward: bool) -> float:
    """Σ rss / n_rows + penalty_fn(model) / n_rows over all batches (the full loss); with ``backward`` its
    gradient is accumulated in the parameters' ``.grad``."""
    n_rows = max(sum(b["n_rows"] for b in batches), 1)
    total = 0.0
    for b in batches:
        loss = residuals(model, b)[1] / n_rows
        if backward:
            loss.backward()
        total += float(loss.detach())
    pen = penalty_fn(model) / n_rows
    if backward:
        pen.backward()
    return total + float(pen.detach())


def loss_metrics(model, batches, penalty_fn=None, missing=None):
    """Loss and RMSEs (E, V meV/atom; F eV/Å; ``missing`` without such labels) on ``batches``, in eval mode
    without a graph (only labelled, non-zero-weight rows), on the fastest backend for the model and device
    (``torchace.backends.select``: the fused kernel on CPU).  ``penalty_fn`` None: the loss is the weighted misfit
    alone, as for held-out data (the penalty is a property of θ, not of the data: added to a validation split's
    misfit over its own, ~10× fewer, rows it would weigh 10× more than in training and pick small θ, not a
    better fit)."""
    model.eval()
    se = {"E": [0.0, 0], "F": [0.0, 0], "V": [0.0, 0]}
    rss, n_rows = 0.0, 0
    forward = None
    if batches:
        forward = select(model, batches[0][K.POSITIONS].device, AUTO, EVALUATE).evaluator(model)
    with torch.no_grad():
        for b in batches:
            err, r = residuals(model, b, forward)
            rss, n_rows = rss + float(r), n_rows + b["n_rows"]
            for key in se:
                if key in err and bool(err["m" + key].any()):
                    sel = err[key][err["m" + key]]
                    se[key][0] += float((sel ** 2).sum())
                    se[key][1] += sel.numel()
        pen = float(penalty_fn(model)) if penalty_fn is not None else 0.0
    out = {"loss": (rss + pen) / max(n_rows, 1)}
    for key, (s, m) in se.items():
        out[key] = math.sqrt(s / m) * (1e3 if key != "F" else 1.0) if m else missing
    return out

