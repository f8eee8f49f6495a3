"""Gram-only streaming assembly and primal Tikhonov solves on it, for bases whose dense design matrix does not fit.

``assemble_gram`` accumulates, one batch of ``fit.assembly.batch_system`` rows at a time and never keeping them,

    G = Mᵀ M,   b = Mᵀ y,   yᵀ y,   n        (M = [A | Z]: the weighted rows, then the E0 count columns if fitted)

plus, for every error set (a test or validation split, or the training set unweighted), the ``streams.Residual``
of each label kind, so that its RMSE for any coefficients follows without the rows.  The memory plan refuses up
front, with its numbers, what cannot fit; with ``checkpoint`` the accumulation is saved and resumed
(``fit.checkpoint.resume_steps``, the fingerprint of ``fit.checkpoint``).

A prior is a column scaling Γ applied to the Gram matrix, so a scan over priors (σ) never reassembles:

    min ‖A c − y‖² + λ ‖Γ c‖²   ⇔   c = Γ⁻¹ c',  (Γ⁻¹ G Γ⁻¹ + λ I) c' = Γ⁻¹ b.

The E0 columns are not regularised.  ``TikhonovGram`` solves for many λ: ``method="cholesky"`` factors
Γ⁻¹GΓ⁻¹ + λD (D = 1 on the basis, 0 on E0) once per λ in one reused buffer (2 K² beside G); ``method="eigh"``
(4 K² while it diagonalises; ``"auto"``: eigh where that fits, ``streams.choose_method``) eliminates E0
exactly (the Schur complement S = G_bb − G_be G_ee⁺ G_eb, r = b_b − G_be G_ee⁺ b_e) and diagonalises Γ⁻¹SΓ⁻¹ = V W Vᵀ
once: c' = V (W + λ)⁻¹ Vᵀ Γ⁻¹ r for every λ, then c_e = G_ee⁺ (b_e − G_eb c).
"""
from __future__ import annotations

import json
from dataclasses import dataclass, field
from typing import Dict, List, Optional, Sequence, Tuple

import torch

from ..atomic import check_outputs
from .checkpoint import data_hash, fingerprint, resume_steps
from .streams import (KINDS, MemoryPlan, Residual, RowSource, accumulate_residual, choose_method, kind_index,
                      make_plan, residual_bytes, residual_from_state, residual_state)


@dataclass
class GramSystem:
    """The normal equations of the weighted rows [A | Z] (width = K + n_e0) and the error sets' residuals."""

    G: torch.Tensor
    b: torch.Tensor
    yty: float
    n_obs: int
    n_basis: int
    n_e0: int
    errors: Dict[str, Dict[str, Residual]] = field(default_factory=dict)
    plan: Optional[MemoryPlan] = None

    @property
    def width(self) -> int:
        return self.n_basis + self.n_e0

    def split(self, C: torch.Tensor) -> Tuple[torch.Tensor, Optional[torch.Tensor]]:
        """(basis coefficients, E0 corrections or None) of full solutions C [width(, p)]."""
        return C[:self.n_basis], (C[self.n_basis:] if self.n_e0 else None)

    def error_table(self, C: torch.Tensor) -> Dict[str, torch.Tensor]:
        """RMSE ``{"<set>_<kind>": [p]}`` of every error set for full solutions C [width, p]."""
        return {f"{name}_{kind}": r.rmse(C) for name, res in self.errors.items() for kind, r in res.items()}


def error_sources(model, errors, **kw) -> Dict[str, RowSource]:
    """``errors``: {name: structures} or {name: (structures, kinds)} → error ``RowSource``s (per-atom E, V)."""
    out = {}
    for name, spec in (errors or {}).items():
        structs, kinds = spec if isinstance(spec, tuple) else (spec, KINDS)
        out[name] = RowSource.errors(model, structs, kinds, **kw)
    return out


def gram_plan(source: RowSource, errors: Dict[str, RowSource], *, available: Optional[int] = None) -> MemoryPlan:
    """What ``assemble_gram`` and a scan on its result hold: the Gram matrix, the scan's scaled copy and factor, the
    error sets' residuals (rows or moments, whichever is smaller) and one batch of rows with a working copy."""
    W = source.width
    batch = max([source.max_batch_rows()] + [e.max_batch_rows() for e in errors.values()])
    parts = {"Gram matrix": 8 * W * W, "scan workspace (scaled Gram + factor)": 16 * W * W,
             "one batch of rows": 16 * W * batch}
    for name, e in errors.items():
        parts[f"{name} residuals"] = sum(residual_bytes(e.rows_of(k), W) for k in KINDS if e.rows_of(k))
    return make_plan("the Gram-only assembly", source.n_basis, source.n_rows, parts, source.device, available)


def gram_fingerprint(source: RowSource, errors: Dict[str, RowSource]) -> Dict[str, object]:
    fp = fingerprint(source.model, source.structs, source.weights, "gram", source.batch_atoms)
    fp["fit_e0"] = source.fit_e0
    fp["errors"] = json.dumps({n: [data_hash(e.structs), sorted(e.weights["default"].items())]
                               for n, e in errors.items()}, sort_keys=True)
    return fp


def assemble_gram(model, train, weights=None, *, errors=None, fit_e0: bool = False, batch_atoms: int = 2048,
                  device=None, checkpoint: Optional[str] = None, every: int = 1, on_step=None,
                  memory_budget: int = 256 * 2**20, backend: str = "auto", available: Optional[int] = None
                  ) -> GramSystem:
    """Stream the rows of ``train`` (``fit``'s weights and rows) into G, b, yᵀy and those of every error set of
    ``errors`` ({name: structures or (structures, kinds)}, unit weights, E and V per atom) into its residuals.

    ``fit_e0``: E0 count columns after the K basis columns (unregularised in the solves; the model's E0 are the
    reference the fitted corrections add to).  Refused before any work if ``gram_plan`` exceeds the memory
    available (``available`` overrides the measured bytes).  ``checkpoint``: a path where the state is saved
    every ``every`` batches and from which a killed run resumes (same result as an uninterrupted one)."""
    kw = dict(batch_atoms=batch_atoms, device=device, memory_budget=memory_budget, backend=backend)
    source = RowSource(model, train, weights, fit_e0=fit_e0, **kw)
    if not source.structs:
        raise ValueError("assemble_gram: no training structures (isolated atoms only define E0)")
    errs = error_sources(model, errors, fit_e0=fit_e0, **kw)
    plan = gram_plan(source, errs, available=available).check(
        "use the dual solver (torchace.fit.dual) when K exceeds the rows, fewer error sets, or a smaller basis")
    W, dev = source.width, source.device
    state = {"G": torch.zeros(W, W, dtype=torch.float64, device=dev),
             "b": torch.zeros(W, dtype=torch.float64, device=dev), "yty": torch.zeros((), dtype=torch.float64,
                                                                                     device=dev)}
    steps: List[Tuple[str, int]] = [("", i) for i in range(len(source.batches))]
    for name, e in errs.items():
        for kind in KINDS:
            if e.rows_of(kind):
                state.update(residual_state(f"{name}.{kind}", e.rows_of(kind), W, dev))
        steps += [(name, i) for i in range(len(e.batches))]

    def step(j: int, st: Dict[str, torch.Tensor]) -> None:
        name, i = steps[j]
        M, y, kinds = (errs[name] if name else source).batch(i)
        if not name:
            st["G"].addmm_(M.T, M)
            st["b"].addmv_(M.T, y)
            st["yty"] += y @ y
            return
        for kind in set(kinds):
            idx = kind_index(kinds, kind, M.device)
            accumulate_residual(st, f"{name}.{kind}", M[idx], y[idx])

    if checkpoint is not None:
        check_outputs([], {"checkpoint": checkpoint}, "assemble_gram")
    resume_steps(len(steps), step, state, path=checkpoint, every=every, on_step=on_step, device=dev,
                 fp=gram_fingerprint(source, errs) if checkpoint is not None else None)
    residuals = {name: {k: residual_from_state(state, f"{name}.{k}", e.rows_of(k)) for k in KINDS if e.rows_of(k)}
                 for name, e in errs.items()}
    return GramSystem(state["G"], state["b"], float(state["yty"]), source.n_rows, source.n_basis,
                      W - source.n_basis, residuals, plan)


def full_gamma(system: GramSystem, gamma: Optional[torch.Tensor]) -> torch.Tensor:
    """Γ over all columns: the prior's on the basis (1 without a prior), 1 on the E0 columns."""
    dev = system.G.device
    g = torch.ones(system.n_basis, dtype=torch.float64, device=dev) if gamma is None else \
        torch.as_tensor(gamma, dtype=torch.float64).to(dev)
    if g.shape != (system.n_basis,):
        raise ValueError(f"gamma must have one entry per basis function ({system.n_basis}), got {tuple(g.shape)}")
    return torch.cat([g, torch.ones(system.n_e0, dtype=torch.float64, device=dev)])


def mean_diag(system: GramSystem, gamma: Optional[torch.Tensor]) -> float:
    """mean(diag Γ⁻¹GΓ⁻¹) over the basis columns: the natural unit of λ (a scan's relative λ multiplies it)."""
    g = full_gamma(system, gamma)[:system.n_basis]
    return float((torch.diagonal(system.G)[:system.n_basis] / g ** 2).mean())


class TikhonovGram:
    """min ‖A c − y‖² + λ‖Γ c‖² (E0 columns free) on a ``GramSystem`` for many λ: see the module docstring.

    ``solve(lams)`` → full solutions C [width, p] (a column of NaN where Cholesky finds Γ⁻¹GΓ⁻¹ + λD not
    numerically positive definite).  Memory beside the system's G: two width² buffers (Cholesky), or four while
    the eigendecomposition runs and one after it (eigh); ``method="auto"`` takes eigh where that fits."""

    def __init__(self, system: GramSystem, gamma: Optional[torch.Tensor] = None, method: str = "cholesky"):
        method = choose_method(method, system.width, system.G.device, "TikhonovGram")
        self.system, self.method = system, method
        self.gi = 1.0 / full_gamma(system, gamma)
        Kb, gi = system.n_basis, self.gi
        if method == "cholesky":
            self.W = system.G.clone().mul_(gi[:, None]).mul_(gi[None, :])
            self.diag = self.W.diagonal()[:Kb].clone()
            self.L = torch.empty_like(self.W)
            self.rhs = system.b * gi
            return
        G, b = system.G, system.b
        S, r = G[:Kb, :Kb].clone(), b[:Kb].clone()
        if system.n_e0:  # eliminate the free E0 columns exactly (pseudo-inverse: an element may lack energies)
            self.Gee_pinv = torch.linalg.pinv(G[Kb:, Kb:], hermitian=True)
            Gbe = G[:Kb, Kb:]
            S.addmm_(Gbe @ self.Gee_pinv, Gbe.T, alpha=-1.0)
            r.sub_(Gbe @ (self.Gee_pinv @ b[Kb:]))
        S.mul_(gi[:Kb, None]).mul_(gi[None, :Kb])
        self.w, V = torch.linalg.eigh(S)
        del S
        self.V, self.Vr = V, V.T @ (r * gi[:Kb])

    def solve(self, lams: Sequence[float]) -> torch.Tensor:
        s, Kb = self.system, self.system.n_basis
        lams = [float(x) for x in lams]
        C = torch.empty(s.width, len(lams), dtype=torch.float64, device=s.G.device)
        if self.method == "cholesky":
            for j, lam in enumerate(lams):
                self.W.diagonal()[:Kb].add_(lam)
                _, info = torch.linalg.cholesky_ex(self.W, out=(self.L, torch.empty((), dtype=torch.int32,
                                                                                    device=self.W.device)))
                self.W.diagonal()[:Kb].copy_(self.diag)  # restored exactly (not by subtracting λ again)
                C[:, j] = torch.cholesky_solve(self.rhs[:, None], self.L)[:, 0] * self.gi if int(info) == 0 \
                    else float("nan")
            return C
        lam = torch.tensor(lams, dtype=torch.float64, device=C.device)
        C[:Kb] = (self.V @ (self.Vr[:, None] / (self.w[:, None] + lam[None, :]))) * self.gi[:Kb, None]
        if s.n_e0:
            C[Kb:] = self.Gee_pinv @ (s.b[Kb:, None] - s.G[Kb:, :Kb] @ C[:Kb])
        return C

