"""The regularity-priors study's linear algebra (Darby et al., *Regularity priors for the linear atomic
cluster expansion*, 2026, §3; docs/regularity_priors.md): the weighted normal equations of a training set
with unregularised E0 columns plus raw error rows, synthetic dimers (§2.5) added to them, ridge solves under a
column prior Γ (min ‖A c − y‖² + λ‖Γ c‖²), λ scans and the bisection in log λ to a target training force
RMSE.  ``scripts/studies/regularity_study.py`` drives it; the weights follow ``fit.weights.row_weights``.
"""
from __future__ import annotations

import copy
import math
from dataclasses import dataclass, field
from typing import Dict, List, Optional, Sequence, Tuple

import torch
from ase import Atoms

from .. import keys as K
from ..fit.data import Labelled
from ..fit.repulsion import envelope_distance
from ..fit.rows import design_matrix_rows
from ..fit.weights import row_weights
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


def _rows(model, structs: List[Labelled], chunk: int = 64):
    for i in range(0, len(structs), chunk):
        part = structs[i:i + chunk]
        yield part, design_matrix_rows(model, [s.atoms for s in part])


def _e0_sum(e0, s: Labelled) -> float:
    return 0.0 if e0 is None else float(sum(e0[x] for x in s.atoms.get_chemical_symbols()))


def _counts(model, s: Labelled) -> torch.Tensor:
    syms = s.atoms.get_chemical_symbols()
    return torch.tensor([float(syms.count(e)) for e in model.elements], dtype=torch.float64)


def assemble(model, train: List[Labelled], test: List[Labelled], weights, e0: Optional[Dict[str, float]]) -> System:
    """Build the weighted Gram matrix (energy rows w_E/√N, forces w_F, virials w_V/√N, as ACEpotentials.jl)
    and the unweighted error rows.  ``e0=None``: E0 are fitted (count columns, no regularisation)."""

    Kb = model.basis_size
    n_e0 = 0 if e0 is not None else model.nz
    Kt = Kb + n_e0
    G = torch.zeros(Kt, Kt, dtype=torch.float64)
    b = torch.zeros(Kt, dtype=torch.float64)
    FA, Fy = [], []
    for part, rows in _rows(model, train):
        blocks, targets = [], []
        f0 = 0
        for k, s in enumerate(part):
            n = s.n_atoms
            wE, wF, wV = row_weights(weights, s.config_type, n)  # w_E/√N, w_F, w_V/√N
            extra = _counts(model, s) if n_e0 else torch.zeros(0, dtype=torch.float64)
            if s.energy is not None and wE:
                blocks.append(torch.cat([rows[K.ENERGY][k], extra]).unsqueeze(0) * wE)
                targets.append(torch.tensor([(s.energy - _e0_sum(e0, s)) * wE], dtype=torch.float64))
            if s.forces is not None:
                fr = rows[K.FORCES][f0:f0 + 3 * n]
                fy = torch.as_tensor(s.forces.reshape(-1), dtype=torch.float64)
                FA.append(fr)
                Fy.append(fy)
                if wF:
                    blocks.append(torch.cat([fr, torch.zeros(3 * n, n_e0, dtype=torch.float64)], 1) * wF)
                    targets.append(fy * wF)
            if s.virial is not None and wV:
                vr = rows[K.VIRIAL][k]
                blocks.append(torch.cat([vr, torch.zeros(6, n_e0, dtype=torch.float64)], 1) * wV)
                W = torch.as_tensor(s.virial, dtype=torch.float64)
                targets.append(K.to_voigt(W) * wV)
            f0 += 3 * n
        A, y = torch.cat(blocks), torch.cat(targets)
        G += A.T @ A
        b += A.T @ y
    tFA, tFy, EA, Ey, EN = [], [], [], [], []
    for part, rows in _rows(model, test):
        f0 = 0
        for k, s in enumerate(part):
            n = s.n_atoms
            if s.forces is not None:
                tFA.append(rows[K.FORCES][f0:f0 + 3 * n])
                tFy.append(torch.as_tensor(s.forces.reshape(-1), dtype=torch.float64))
            if s.energy is not None:
                extra = _counts(model, s) if n_e0 else torch.zeros(0, dtype=torch.float64)
                EA.append(torch.cat([rows[K.ENERGY][k], extra]))
                Ey.append(s.energy - _e0_sum(e0, s))
                EN.append(n)
            f0 += 3 * n
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
