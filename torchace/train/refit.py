"""The last phase of ``torchace.train``: variable projection's re-solve of the parameters the model is linear in
(identity-branch densities and the pair part, ``torchace.uncertainty.nonlinear``) at the trained radials and
other densities, with the warm start's solver (docs/training.md, "Refit of the linear part")."""
from __future__ import annotations

from typing import Any, Dict

import torch

from ..fit.data import Dataset
from .loss import loss_metrics


def refit_linear(model, train_structs, weights, solver, lam, gamma, batches, val_batches, penalty) -> Dict[str, Any]:
    """Re-solve θ exactly (default BLR; ``solvers.QR(lam)`` with a column prior Γ); kept only if the
    validation loss (training loss without validation) goes down."""
    from ..uncertainty.nonlinear import committee_system, fully_linear, linear_coefficients, \
        set_linear_coefficients
    from ..fit import solvers as S
    from ..fit.driver import solve_system

    if model.embedding_fn is not None and model.embedding_name != "fs":
        return {"result": "skipped (the MLP embedding has no linear part)", "before": float("nan"),
                "after": float("nan")}

    def score():  # the held-out misfit (no penalty) with a validation split, else the training objective
        return (loss_metrics(model, val_batches) if val_batches else loss_metrics(model, batches, penalty))["loss"]
    before = score()
    theta0 = linear_coefficients(model).detach().clone()
    state = {k: v.detach().clone() for k, v in model.state_dict().items()}
    dev, dt = model.density_coefficients.device, model.density_coefficients.dtype
    system = committee_system(model.to(torch.float64), Dataset(list(train_structs)), weights)
    sv = solver if solver is not None else (S.QR(lam=lam) if gamma is not None else S.BLR())
    sol = solve_system(system, sv, gamma=gamma)
    set_linear_coefficients(model, sol.coefficients)
    model.to(device=dev, dtype=dt)
    after = score()
    kept = after < before and bool(torch.isfinite(sol.coefficients).all())
    if not kept:
        model.load_state_dict(state)
    return {"result": ("kept" if kept else "discarded (no better)") + f" ({type(sv).__name__}"
            + (", fully linear model" if fully_linear(model) else "") + ")", "before": before,
            "after": after, "change": float((sol.coefficients.to(theta0) - theta0).norm()
                                            / theta0.norm().clamp_min(1e-300))}
