"""The regularity-priors study's linear algebra (Darby et al., *Regularity priors for the linear atomic
cluster expansion*, 2026, §3; docs/regularity_priors.md): the weighted normal equations of a training set
with unregularised E0 columns plus the error residuals (``torchace.fit.gram``: no rows kept), synthetic dimers
(§2.5) added to them, ridge solves under a column prior Γ (min ‖A c − y‖² + λ‖Γ c‖²), λ scans and the bisection
in log λ to a target training force RMSE.  ``scripts/studies/regularity_study.py`` drives it; the rows, targets,
E0 columns and weights are those of the fit (``torchace.fit.assembly.batch_system``,
``torchace.fit.weights.row_weights``).
"""
from __future__ import annotations

import copy
import dataclasses
import math
from dataclasses import dataclass, field
from typing import Dict, List, Optional, Sequence

import torch
from ase import Atoms

from .. import keys as K
from ..fit.data import Labelled
from ..fit.gram import GramSystem, TikhonovGram, assemble_gram, mean_diag
from ..fit.repulsion import envelope_distance
from ..fit.rows import design_matrix_rows
from ..fit.weights import resolve_weights
from .curves import element_pairs

E_SYN, W_SYN = 100.0, 0.01  # the paper's synthetic dimers (§2.5): label and weight


@dataclass
class System:
    """The study's Gram system (``torchace.fit.gram.GramSystem``): the weighted normal equations of the training set
    and the residuals of the training forces, test forces and test energies (per atom), never their rows.

    Columns: the K basis functions, then (if E0 is fitted) one unregularised count column per element."""

    gram: GramSystem
    K: int
    n_e0: int
    info: Dict[str, object] = field(default_factory=dict)


def _reference_model(model, e0: Optional[Dict[str, float]]):
    """A copy of ``model`` whose E0 are ``e0`` (zero when E0 are fitted): ``batch_system``'s energy targets are
    E − Σ E0 of the model, the study's E − Σ e0."""
    ref = copy.deepcopy(model)
    with torch.no_grad():
        ref.E0.copy_(torch.tensor([0.0 if e0 is None else e0[x] for x in model.elements], dtype=ref.E0.dtype))
    return ref


def assemble(model, train: List[Labelled], test: List[Labelled], weights, e0: Optional[Dict[str, float]],
             batch_atoms: int = 2048) -> System:
    """The Gram matrix of the fit's weighted rows (``torchace.fit.assembly.batch_system``: energy rows w_E/√N,
    forces w_F, virials w_V/√N, ``fit.weights.row_weights``, as ACEpotentials.jl) and the error residuals (training
    forces, test forces and per-atom test energies, weight 1), streamed by ``torchace.fit.gram.assemble_gram``
    (refused up front, with its numbers, where they cannot fit).  ``e0=None``: E0 are fitted (count columns, no
    regularisation)."""
    model = _reference_model(model, e0)
    g = assemble_gram(model, train, resolve_weights(weights), fit_e0=e0 is None, batch_atoms=batch_atoms,
                      errors={"train": (train, ("F",)), "test": (test, ("E", "F"))})
    n_e0 = 0 if e0 is not None else model.nz
    return System(g, model.basis_size, n_e0, {"n_train": len(train), "n_test": len(test), "synthetic_dimers": False})


def with_synthetic_dimers(model, sys_: System, E_syn: float = E_SYN, w_syn: float = W_SYN) -> System:
    """The paper's synthetic dimers (§2.5) added to an assembled system: one per element pair at
    f_env(r_syn) = E_syn, energy label E_syn above the isolated atoms, weight w_syn (/√2 as every energy row).
    An isolated atom has no ACE energy beyond E0, so the row's E0 columns are zero."""
    G, b = sys_.gram.G.clone(), sys_.gram.b.clone()
    for a, c in element_pairs(range(model.nz)):
        r = envelope_distance(model, a, c, E_syn)
        at = Atoms([model.elements[a], model.elements[c]], positions=[[0, 0, 0], [r, 0, 0]])
        row = design_matrix_rows(model, [at])[K.ENERGY][0]
        row = torch.cat([row, torch.zeros(sys_.n_e0, dtype=torch.float64)]) * (w_syn / math.sqrt(2))
        G += torch.outer(row, row)
        b += row * (E_syn * w_syn / math.sqrt(2))
    gram = dataclasses.replace(sys_.gram, G=G, b=b)  # the error residuals are shared, not copied
    return System(gram, sys_.K, sys_.n_e0, dict(sys_.info, synthetic_dimers=True))


def gamma_of(model, prior, n_e0: int) -> torch.Tensor:
    g = torch.ones(model.basis_size, dtype=torch.float64) if prior is None else prior.column_scale(model)
    return torch.cat([g, torch.ones(n_e0, dtype=torch.float64)])


def solve(sys_: System, gamma: torch.Tensor, lam: float) -> Optional[torch.Tensor]:
    """c minimising ||A c − y||² + λ||Γ c||² over the basis columns (E0 columns unregularised); None if the
    shifted Gram matrix is numerically not positive definite (``torchace.fit.gram.TikhonovGram``, Cholesky)."""
    return _solver(sys_, gamma)(lam)


def _solver(sys_: System, gamma: torch.Tensor):
    """λ → c (or None) for one Γ: the scaled Gram matrix is built once and factored per λ in one reused buffer."""
    tk = TikhonovGram(sys_.gram, gamma[:sys_.K], method="cholesky")

    def one(lam: float) -> Optional[torch.Tensor]:
        c = tk.solve([lam])[:, 0]
        return None if bool(torch.isnan(c).any()) else c

    return one


def errors(sys_: System, c: torch.Tensor) -> Dict[str, float]:
    """Training force, test force (eV/Å) and test energy (eV/atom) RMSE of the solution c (NaN where absent)."""
    res = sys_.gram.errors
    get = lambda s, k: float(res[s][k].rmse(c)) if k in res.get(s, {}) else float("nan")  # noqa: E731
    return {"train_F": get("train", "F"), "test_F": get("test", "F"), "test_E": get("test", "E")}


def lam_scale(sys_: System, gamma: torch.Tensor) -> float:
    return mean_diag(sys_.gram, gamma[:sys_.K])


def scan(sys_: System, gamma: torch.Tensor, exps: Sequence[float], refine: bool) -> List[Dict[str, float]]:
    """λ = 10^e · mean(diag Γ⁻¹GΓ⁻¹); test/train errors for each; ``refine`` adds half-decades around the best."""
    s = lam_scale(sys_, gamma)
    solve_at = _solver(sys_, gamma)
    out = []

    def one(e):
        c = solve_at(s * 10.0 ** e)
        if c is None:
            return
        out.append({"exp": float(e), "lam": s * 10.0 ** e, **errors(sys_, c)})

    for e in exps:
        one(e)
    if refine and out:
        best = min(out, key=lambda r: r["test_F"])["exp"]
        step = (exps[1] - exps[0]) / 2 if len(exps) > 1 else 1.0
        for e in (best - step, best + step):
            if all(abs(r["exp"] - e) > 1e-9 for r in out):
                one(e)
    return sorted(out, key=lambda r: r["exp"])


def lam_for_train_rmse(sys_: System, gamma: torch.Tensor, target: float, lo: float = -14.0, hi: float = 1.0,
                       iters: int = 20) -> Dict[str, float]:
    """Bisection in log λ for training force RMSE = target (it grows monotonically with λ); returns the
    closest end point if the target is out of reach.  λ below 1e-14·mean(diag) is at the rounding level of
    the Gram matrix: such solves are the unregularised fit (measured: a Si_tiny σ = 2 Å fit at 1e-17 has a
    −155 eV dimer at 1 Å), so a target that needs them counts as out of reach (flagged in the report)."""
    s = lam_scale(sys_, gamma)
    solve_at = _solver(sys_, gamma)

    def ev(e):
        c = solve_at(s * 10.0 ** e)
        if c is None:
            return None
        return {"exp": e, "lam": s * 10.0 ** e, **errors(sys_, c), "c": c}

    a, z = ev(lo), ev(hi)
    while a is None and lo < hi:  # not positive definite at tiny λ: move up
        lo += 1.0
        a = ev(lo)
    if a is None or z is None:
        raise RuntimeError("no λ in range gives a positive-definite system")
    if target <= a["train_F"]:
        return a
    if target >= z["train_F"]:
        return z
    for _ in range(iters):
        mid = 0.5 * (a["exp"] + z["exp"])
        m = ev(mid)
        if m is None or m["train_F"] < target:
            a = m if m is not None else a
        else:
            z = m
    return a if abs(a["train_F"] - target) < abs(z["train_F"] - target) else z


def set_model(model, sys_: System, c: torch.Tensor, e0: Optional[Dict[str, float]]):
    with torch.no_grad():
        model.coefficients = c[:sys_.K].clone().to(model.coefficients.dtype)
        if e0 is not None:
            model.E0.copy_(torch.tensor([e0[s] for s in model.elements], dtype=model.E0.dtype))
        else:
            model.E0.copy_(c[sys_.K:].to(model.E0.dtype))
    model.committee = None
    return model


def clone_model(model):
    return copy.deepcopy(model)
