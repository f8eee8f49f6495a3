"""LAMMPS ``pair_style table`` file of a model's pair part (pair basis + ZBL baseline), written beside a .yace.

ML-PACE has no pair potential of torchace's form: the pair sum U_ab(r) is tabulated for ``pair_style hybrid/overlay pace table``
(docs/yace.md).
"""
from __future__ import annotations

from typing import Dict, Optional, Sequence, Tuple

import numpy as np
import torch

from ..atomic import atomic_write

DEFAULT_PAIR_POINTS = 20000     # pair-table points on [pair_rmin, rcut]


def pair_energy_functions(model):
    """U_ab(r) as a callable torch function r -> [len(r)] for a ≤ b, or None when the model has no pair
    part and no ZBL baseline.  Σ_{i<j} U(r_ij) is the pair energy of torchace's site-energy sum."""
    nz = model.nz
    has_pair = model.n_pair > 0 and bool(torch.any(model.coefficients.detach()[model.n_manybody:] != 0))
    if not has_pair and model.zbl is None:
        return None
    c_pair = model.coefficients.detach()[model.n_manybody:].view(nz, nz, model.n_pair) if model.n_pair > 0 else None

    def make(a, b):
        def U(r):
            za = torch.full(r.shape, a, dtype=torch.long)
            zb = torch.full(r.shape, b, dtype=torch.long)
            e = torch.zeros_like(r)
            if c_pair is not None:
                e = e + (model.pair(r, za, zb) * c_pair[a, b]).sum(-1) + (model.pair(r, zb, za) * c_pair[b, a]).sum(-1)
            if model.zbl is not None:
                e = e + 0.5 * (model.zbl(r, za, zb) + model.zbl(r, zb, za))
            return e
        return U

    return {(a, b): make(a, b) for a in range(nz) for b in range(a, nz)}


def _pair_keyword(elements, a, b):
    return f"{elements[a]}_{elements[b]}"


def write_pair_table(model, path: str, n_points: int = DEFAULT_PAIR_POINTS,
                     rmin: Optional[float] = None) -> Optional[dict]:
    """Write the pair part as a LAMMPS ``pair_style table`` file (one section ``A_B`` per element pair,
    points uniform in r on [rmin, rcut], columns: index, r, E, F = −dE/dr).  Returns the LAMMPS
    ``pair_coeff`` lines, or None (nothing written) when the model has no pair part."""
    funcs = pair_energy_functions(model)
    if funcs is None:
        return None
    elements = model.elements
    if rmin is None:
        # well inside the shortest bond; the pair envelope (s⁻²) and ZBL grow without bound below it
        rmin = 0.25 * float(model.pair.transform.r0.min())
    rmin = float(rmin)
    if not 0.0 < rmin < model.rcut:
        raise ValueError(f"pair table rmin must lie in (0, rcut = {model.rcut}), got {rmin}")
    r = torch.linspace(rmin, model.rcut, int(n_points), dtype=torch.float64)
    lines = ["# torchace pair part (Σ_{i<j} U(r_ij)) for pair_style table; units metal (eV, Å)", ""]
    coeffs = []
    for (a, b), U in funcs.items():
        rr = r.clone().requires_grad_(True)
        e = U(rr)
        (de,) = torch.autograd.grad(e.sum(), rr)
        kw = _pair_keyword(elements, a, b)
        lines.append(kw)
        lines.append(f"N {len(r)} R {rmin!r} {model.rcut!r}")
        lines.append("")
        for q, (rq, eq, fq) in enumerate(zip(r.tolist(), e.detach().tolist(), (-de).tolist()), 1):
            lines.append(f"{q} {rq!r} {eq!r} {fq!r}")
        lines.append("")
        coeffs.append((a, b, kw))

    def write(tmp):
        with open(tmp, "w") as fh:
            fh.write("\n".join(lines))

    atomic_write(path, write, ".table")
    return {"keywords": coeffs, "rmin": rmin, "n_points": int(n_points)}


def read_pair_table(path: str) -> Dict[str, Tuple[np.ndarray, np.ndarray, np.ndarray]]:
    """{keyword: (r, E, F)} from a LAMMPS pair table file (``N n R rlo rhi`` or explicit r columns)."""
    out = {}
    with open(path) as fh:
        lines = [ln.split("#")[0].strip() for ln in fh]
    i = 0
    while i < len(lines):
        if not lines[i]:
            i += 1
            continue
        kw = lines[i]
        params = lines[i + 1].split()
        if params[0] != "N":
            raise ValueError(f"{path}: section {kw!r}: expected 'N ...' parameter line, got {lines[i + 1]!r}")
        n = int(params[1])
        i += 2
        rows = []
        while len(rows) < n:
            if lines[i]:
                rows.append([float(x) for x in lines[i].split()[1:4]])
            i += 1
        arr = np.array(rows)
        out[kw] = (arr[:, 0], arr[:, 1], arr[:, 2])
    return out


def _hermite(r, knots, E, dE):
    """Cubic Hermite interpolation of E with derivative dE on sorted knots; zero outside [knots[0], knots[-1])."""
    q = np.clip(np.searchsorted(knots, r, side="right") - 1, 0, len(knots) - 2)
    h = knots[q + 1] - knots[q]
    t = (r - knots[q]) / h
    h00, h10, h01, h11 = 2 * t**3 - 3 * t**2 + 1, t**3 - 2 * t**2 + t, -2 * t**3 + 3 * t**2, t**3 - t**2
    e = h00 * E[q] + h10 * h * dE[q] + h01 * E[q + 1] + h11 * h * dE[q + 1]
    d = ((6 * t**2 - 6 * t) * E[q] + (3 * t**2 - 4 * t + 1) * h * dE[q]
         + (-6 * t**2 + 6 * t) * E[q + 1] + (3 * t**2 - 2 * t) * h * dE[q + 1]) / h
    inside = r < knots[-1]
    return np.where(inside, e, 0.0), np.where(inside, d, 0.0)


def evaluate_pair_table(path: str, atoms, elements: Sequence[str]) -> dict:
    """Energy, forces and stress (ASE sign, Voigt) of Σ_{i<j} U(r_ij) read from a pair table file,
    with cubic Hermite interpolation in (E, −F) — a reading of the file independent of torchace's model."""
    from ase.neighborlist import neighbor_list

    tab = read_pair_table(path)
    rc = max(float(t[0][-1]) for t in tab.values())
    i, j, d, D = neighbor_list("ijdD", atoms, rc)
    sym = atoms.get_chemical_symbols()
    energy = 0.0
    forces = np.zeros((len(atoms), 3))
    virial = np.zeros((3, 3))
    for a in range(len(elements)):
        for b in range(a, len(elements)):
            kw = f"{elements[a]}_{elements[b]}"
            if kw not in tab:
                continue
            sel = np.array([{sym[p], sym[q]} == {elements[a], elements[b]} for p, q in zip(i, j)], dtype=bool)
            if not sel.any():
                continue
            r, E, F = tab[kw]
            if d[sel].min() < r[0]:
                raise ValueError(f"{path}: pair distance {d[sel].min():.4f} Å below the table's inner end {r[0]} Å")
            e, de = _hermite(d[sel], r, E, -F)
            energy += 0.5 * e.sum()                       # each pair appears twice in the full list
            g = 0.5 * (de / d[sel])[:, None] * D[sel]     # ∂(½U)/∂D for the ordered pair (i, j)
            np.add.at(forces, i[sel], g)
            np.add.at(forces, j[sel], -g)
            virial -= D[sel].T @ g
    out = {"energy": energy, "forces": forces}
    if atoms.pbc.all():
        s = -virial / atoms.get_volume()
        out["stress"] = np.array([s[0, 0], s[1, 1], s[2, 2], s[1, 2], s[0, 2], s[0, 1]])
    return out


# ---------------------------------------------------------------- the .yace file
