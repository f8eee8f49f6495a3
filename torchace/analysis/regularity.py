"""The regularity-priors study's linear algebra (Darby et al., *Regularity priors for the linear atomic
cluster expansion*, 2026, §3; docs/regularity_priors.md): the weighted normal equations of a training set
with unregularised E0 columns plus raw error rows, synthetic dimers (§2.5) added to them, ridge solves under a
column prior Γ (min ‖A c − y‖² + λ‖Γ c‖²), λ scans and the bisection in log λ to a target training force
RMSE.  ``scripts/studies/regularity_study.py`` drives it; the rows, targets, E0 columns and weights are those of the fit
(``torchace.fit.assembly.batch_system``, ``torchace.fit.weights.row_weights``).
"""
from __future__ import annotations

import copy
import math
from dataclasses import dataclass, field
from typing import Dict, List, Optional, Sequence, Tuple

import torch
from ase import Atoms

from .. import keys as K
from ..fit.assembly import batch_system
from ..fit.data import Labelled
from ..fit.repulsion import envelope_distance
from ..fit.rows import design_matrix_rows
from ..fit.weights import label_weights, resolve_weights
from .curves import element_pairs

E_SYN, W_SYN = 100.0, 0.01  # the paper's synthetic dimers (§2.5): label and weight


@dataclass
class System:
    """Weighted normal equations of the training set plus raw rows for error evaluation.

    Columns: the K basis functions, then (if E0 is fitted) one unregularised count column per element."""

    G: torch.Tensor
    b: torch.Tensor
    K: int
    n_e0: int
    train_F: Tuple[torch.Tensor, torch.Tensor]          # unweighted force rows and targets (training set)
    test_F: Tuple[torch.Tensor, torch.Tensor]
    test_E: Tuple[torch.Tensor, torch.Tensor, torch.Tensor]  # energy rows, targets, atoms per structure
    info: Dict[str, object] = field(default_factory=dict)


# the force rows of structures whose force weight is zero (``batch_system`` leaves those out of the system)
FORCE_ROWS = {"default": {"E": 0.0, "F": 1.0, "V": 0.0}}


def _reference_model(model, e0: Optional[Dict[str, float]]):
    """A copy of ``model`` whose E0 are ``e0`` (zero when E0 are fitted): ``batch_system``'s energy targets are
    E − Σ E0 of the model, the study's E − Σ e0."""
    ref = copy.deepcopy(model)
    with torch.no_grad():
        ref.E0.copy_(torch.tensor([0.0 if e0 is None else e0[x] for x in model.elements], dtype=ref.E0.dtype))
    return ref


def _chunks(structs: List[Labelled], chunk: int):
    for i in range(0, len(structs), chunk):
        yield structs[i:i + chunk]


def _system_rows(model, part: List[Labelled], weights, n_e0: int):
    """``batch_system``'s weighted rows [A | Z] (Z: the E0 count columns, only when ``n_e0``) and targets, and the
    unweighted force rows and forces of each structure that has forces (its weighted rows / w_F; a second
    ``batch_system`` call for those with w_F = 0, which the system leaves out)."""
    A, y, Z = batch_system(model, part, weights)
    FA, Fy, unweighted = [], [], []
    r = 0
    for s in part:  # batch_system's rows per structure (fit.weights.weighted_system): energy, 3N forces, 6 virials
        wE, wF, wV = label_weights(weights, s)  # 0: no such rows (label missing or weight 0)
        r += int(wE != 0)
        if wF != 0:
            FA.append(A[r:r + 3 * s.n_atoms] / wF)
            Fy.append(y[r:r + 3 * s.n_atoms] / wF)
            r += 3 * s.n_atoms
        elif s.forces is not None:
            unweighted.append(s)
        r += 6 * int(wV != 0)
    assert r == A.shape[0], (r, A.shape)
    if unweighted:
        fa, fy, _ = batch_system(model, unweighted, FORCE_ROWS)
        FA.append(fa)
        Fy.append(fy)
    M = torch.cat([A, Z], 1) if n_e0 else A
    return M, y, FA, Fy


def assemble(model, train: List[Labelled], test: List[Labelled], weights, e0: Optional[Dict[str, float]],
             chunk: int = 64) -> System:
    """The Gram matrix of the fit's weighted rows (``torchace.fit.assembly.batch_system``: energy rows w_E/√N,
    forces w_F, virials w_V/√N, ``fit.weights.row_weights``, as ACEpotentials.jl) and the unweighted error
    rows, ``chunk`` structures at a time.  ``e0=None``: E0 are fitted (count columns, no regularisation)."""
    weights = resolve_weights(weights)
    model = _reference_model(model, e0)
    Kb = model.basis_size
    n_e0 = 0 if e0 is not None else model.nz
    Kt = Kb + n_e0
    G = torch.zeros(Kt, Kt, dtype=torch.float64)
    b = torch.zeros(Kt, dtype=torch.float64)
    FA, Fy = [], []
    for part in _chunks(train, chunk):
        M, y, fa, fy = _system_rows(model, part, weights, n_e0)
        G += M.T @ M
        b += M.T @ y
        FA += fa
        Fy += fy
    # test rows: weight 1 (energy rows 1/√N: scaled back by √N)
    tFA, tFy, EA, Ey, EN = [], [], [], [], []
    unit = {"default": {"E": 1.0, "F": 1.0, "V": 0.0}}
    for part in _chunks(test, chunk):
        M, y, fa, fy = _system_rows(model, part, unit, n_e0)
        tFA += fa
        tFy += fy
        r = 0
        for s in part:
            if s.energy is not None:
                sq = math.sqrt(s.n_atoms)
                EA.append(M[r] * sq)
                Ey.append(float(y[r]) * sq)
                EN.append(s.n_atoms)
                r += 1
            r += 3 * s.n_atoms if s.forces is not None else 0
    z = torch.zeros(0, Kt, dtype=torch.float64)
    testE = ((torch.stack(EA), torch.tensor(Ey, dtype=torch.float64), torch.tensor(EN, dtype=torch.float64))
             if EA else (z, torch.zeros(0, dtype=torch.float64), torch.zeros(0, dtype=torch.float64)))
    pad = lambda M: torch.cat([M, torch.zeros(M.shape[0], n_e0, dtype=torch.float64)], 1)  # noqa: E731
    return System(G, b, Kb, n_e0, (pad(torch.cat(FA)), torch.cat(Fy)), (pad(torch.cat(tFA)), torch.cat(tFy)),
                  testE, {"n_train": len(train), "n_test": len(test), "synthetic_dimers": False})


def with_synthetic_dimers(model, sys_: System, E_syn: float = E_SYN, w_syn: float = W_SYN) -> System:
    """The paper's synthetic dimers (§2.5) added to an assembled system: one per element pair at
    f_env(r_syn) = E_syn, energy label E_syn above the isolated atoms, weight w_syn (/√2 as every energy row).
    An isolated atom has no ACE energy beyond E0, so the row's E0 columns are zero."""
    G, b = sys_.G.clone(), sys_.b.clone()
    for a, c in element_pairs(range(model.nz)):
        r = envelope_distance(model, a, c, E_syn)
        at = Atoms([model.elements[a], model.elements[c]], positions=[[0, 0, 0], [r, 0, 0]])
        row = design_matrix_rows(model, [at])[K.ENERGY][0]
        row = torch.cat([row, torch.zeros(sys_.n_e0, dtype=torch.float64)]) * (w_syn / math.sqrt(2))
        G += torch.outer(row, row)
        b += row * (E_syn * w_syn / math.sqrt(2))
    return System(G, b, sys_.K, sys_.n_e0, sys_.train_F, sys_.test_F, sys_.test_E,
                  dict(sys_.info, synthetic_dimers=True))


def gamma_of(model, prior, n_e0: int) -> torch.Tensor:
    g = torch.ones(model.basis_size, dtype=torch.float64) if prior is None else prior.column_scale(model)
    return torch.cat([g, torch.ones(n_e0, dtype=torch.float64)])


def solve(sys_: System, gamma: torch.Tensor, lam: float) -> Optional[torch.Tensor]:
    """c minimising ||A c − y||² + λ||Γ c||² over the basis columns (E0 columns unregularised); None if the
    shifted Gram matrix is numerically not positive definite."""
    gi = 1.0 / gamma
    Gs = sys_.G * gi[:, None] * gi[None, :]
    d = torch.ones(len(gamma), dtype=torch.float64)
    if sys_.n_e0:
        d[-sys_.n_e0:] = 0.0
    L, info = torch.linalg.cholesky_ex(Gs + lam * torch.diag(d))
    if int(info) != 0:
        return None
    cp = torch.cholesky_solve((sys_.b * gi).unsqueeze(1), L).squeeze(1)
    return cp * gi


def rmse_F(rows: Tuple[torch.Tensor, torch.Tensor], c: torch.Tensor) -> float:
    A, y = rows
    return float(torch.sqrt(torch.mean((A @ c - y) ** 2))) if len(y) else float("nan")


def rmse_E(rows, c: torch.Tensor) -> float:
    A, y, n = rows
    return float(torch.sqrt(torch.mean(((A @ c - y) / n) ** 2))) if len(y) else float("nan")


def lam_scale(sys_: System, gamma: torch.Tensor) -> float:
    g = gamma[:sys_.K]
    return float((torch.diagonal(sys_.G)[:sys_.K] / g ** 2).mean())


def scan(sys_: System, gamma: torch.Tensor, exps: Sequence[float], refine: bool) -> List[Dict[str, float]]:
    """λ = 10^e · mean(diag Γ⁻¹GΓ⁻¹); test/train errors for each; ``refine`` adds half-decades around the best."""
    s = lam_scale(sys_, gamma)
    out = []

    def one(e):
        c = solve(sys_, gamma, s * 10.0 ** e)
        if c is None:
            return
        out.append({"exp": float(e), "lam": s * 10.0 ** e, "train_F": rmse_F(sys_.train_F, c),
                    "test_F": rmse_F(sys_.test_F, c), "test_E": rmse_E(sys_.test_E, c)})

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

    def ev(e):
        c = solve(sys_, gamma, s * 10.0 ** e)
        if c is None:
            return None
        return {"exp": e, "lam": s * 10.0 ** e, "train_F": rmse_F(sys_.train_F, c), "test_F": rmse_F(sys_.test_F, c),
                "test_E": rmse_E(sys_.test_E, c), "c": c}

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
