"""LAMMPS ``pair_style table`` file of a model's pair part (pair basis + ZBL baseline), written beside a .yace.

ML-PACE has no pair potential of torchace's form: the pair sum U_ab(r) is tabulated for
``pair_style hybrid/overlay pace table`` (docs/yace.md), one section per ordered element pair.  The table is
torchace's pair energy on [rmin, rcut]; LAMMPS stops at a pair closer than the table's first point ("Pair
distance < table inner cutoff"), so it continues down to ``rcore`` with a repulsive core: the model's own
pair energy when it has a ZBL baseline, else ``repulsive_core`` (a ZBL-shaped wall, C² at rmin).
"""
from __future__ import annotations

import math
import warnings
from typing import Dict, Optional, Sequence, Tuple

import numpy as np
import torch

from ...atomic import check_output, text_output, write_output, write_text

DEFAULT_PAIR_POINTS = 20000     # pair-table points on [pair_rmin, rcut]
DEFAULT_PAIR_RCORE = 0.1        # Å: the table's repulsive core reaches down to here


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


def pair_keyword(elements, a, b) -> str:
    """Section name of the element pair (a, b) in the table file: ``A_B`` (both orders are written)."""
    return f"{elements[a]}_{elements[b]}"


def _u_and_derivatives(U, r: torch.Tensor, order: int = 1):
    """U(r) and its first ``order`` r-derivatives (autograd, exact) as numpy arrays."""
    rr = r.clone().requires_grad_(True)
    e = U(rr)
    out = [e.detach().numpy()]
    g = e
    for _ in range(order):
        (g,) = torch.autograd.grad(g.sum(), rr, create_graph=order > 1)
        out.append(g.detach().numpy())
    return out


def repulsive_core(U0: float, U1: float, U2: float, r_lo: float, z1: int, z2: int,
                   r: np.ndarray) -> Tuple[np.ndarray, np.ndarray]:
    """Steep repulsive extension of a pair energy below ``r_lo``, C² there: (E, dE/dr) at ``r`` (< r_lo).

    E(r) = U0 + U1 (r − r_lo) + ½ U2 (r − r_lo)² + K q(r),  q = Z − (Z0 + Z1 (r − r_lo) + ½ Z2 (r − r_lo)²),
    Z the bare ZBL energy of atomic numbers z1, z2 (torchace.model.zbl) and Z0, Z1, Z2 its value and first two
    derivatives at r_lo: q, q′, q″ vanish at r_lo and, since Z‴ < 0, q > 0 and q′ < 0 below it, so E is the
    pair energy's second-order expansion plus a ZBL-shaped wall.  K = max(1, twice the smallest K that makes
    dE/dr < 0 for 0.01 r_lo ≤ r ≤ 0.9 r_lo): repulsive from 0.9 r_lo down, ≈ ZBL at short range."""
    from ...model.zbl import zbl_unswitched

    Z0, Z1, Z2 = (float(zbl_unswitched(r_lo, z1, z2, k)) for k in range(3))

    def q(x):
        d = x - r_lo
        return (zbl_unswitched(x, z1, z2) - (Z0 + Z1 * d + 0.5 * Z2 * d * d),
                zbl_unswitched(x, z1, z2, 1) - (Z1 + Z2 * d))

    g = np.linspace(0.01, 0.9, 400) * r_lo                  # K does not depend on the evaluation points
    need = (U1 + U2 * (g - r_lo)) / -q(g)[1]                # dE/dr < 0  ⟺  K > need
    K = max(1.0, 2.0 * float(need.max()))
    r = np.asarray(r, dtype=np.float64)
    d = r - r_lo
    qv, dqv = q(r)
    return U0 + U1 * d + 0.5 * U2 * d * d + K * qv, U1 + U2 * d + K * dqv


# the first line of every pair table torchace writes: the marker of the output rule (torchace.atomic)
HEADER = "# torchace pair part"
TABLE = text_output(HEADER, "LAMMPS pair table written by torchace")


def write_pair_table(model, path: str, n_points: int = DEFAULT_PAIR_POINTS, rmin: Optional[float] = None,
                     rcore: Optional[float] = DEFAULT_PAIR_RCORE, *, overwrite: bool = False) -> Optional[dict]:
    """``pair_table_text`` written atomically to ``path``; an existing file there is replaced only if it is a pair
    table torchace wrote, or with ``overwrite`` (torchace.atomic, the output rule).  Returns its report, or None
    (nothing written) when the model has no pair part and no ZBL baseline."""
    check_output(path, TABLE, overwrite)  # before the work
    out = pair_table_text(model, n_points, rmin, rcore)
    if out is None:
        return None
    text, info = out
    write_output(path, TABLE, lambda tmp: write_text(tmp, text), ".table", overwrite)
    return info


def pair_table_text(model, n_points: int = DEFAULT_PAIR_POINTS, rmin: Optional[float] = None,
                    rcore: Optional[float] = DEFAULT_PAIR_RCORE) -> Optional[Tuple[str, dict]]:
    """The text of the pair part as a LAMMPS ``pair_style table`` file: one section ``A_B`` per ordered element pair
    (mixed pairs twice, ``A_B`` and ``B_A``, same numbers), points uniform in r, columns index, r, E, F = −dE/dr.
    Returns (text, {"keywords": {(a, b): name}, "rmin", "rcore", "r_inner", "n_points", "core":
    "zbl"|"extension"|None}), or None when the model has no pair part and no ZBL baseline.

    On [rmin, rcut] (``n_points`` points, rmin default 0.25·min r0) the table is torchace's pair energy.  Below,
    down to ``rcore`` (default 0.1 Å; None: the table starts at rmin, and LAMMPS stops with "Pair distance <
    table inner cutoff" for a closer pair) at the same spacing: with a ZBL baseline torchace's pair energy
    itself (pair basis + ZBL), otherwise ``repulsive_core`` (C² at rmin, a ZBL-shaped wall below)."""
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
    n_points = int(n_points)
    h = (model.rcut - rmin) / (n_points - 1)
    n_core = 0
    if rcore is not None:
        rcore = float(rcore)
        if not 0.0 < rcore <= rmin:
            raise ValueError(f"pair table rcore must lie in (0, rmin = {rmin}], got {rcore}")
        n_core = int(math.ceil((rmin - rcore) / h - 1e-9))
    r_all = rmin + h * np.arange(-n_core, n_points)
    r_all[-1] = model.rcut
    r_inner = float(r_all[0])
    r_fit = torch.tensor(r_all[n_core:], dtype=torch.float64)
    core = None if n_core == 0 else ("zbl" if model.zbl is not None else "extension")
    lines = [f"{HEADER} (Σ_{{i<j}} U(r_ij)) for pair_style table; units metal (eV, Å)",
             f"# exact torchace pair energy for {rmin!r} <= r <= {float(model.rcut)!r} Å"
             + ("" if core is None else f"; below, down to {r_inner!r} Å: "
                + ("torchace's pair energy with its ZBL baseline" if core == "zbl" else
                   "a steep repulsive core continuous (C2) with it at the inner limit (not part of the model)")),
             ""]
    keywords = {}
    numbers = model.config.numbers
    for (a, b), U in funcs.items():
        if core == "zbl":
            e, de = _u_and_derivatives(U, torch.tensor(r_all, dtype=torch.float64))
            deep = r_all < 0.9 * rmin
            if np.any(de[deep] >= 0):
                warnings.warn(f"pair {elements[a]}-{elements[b]}: the model's pair energy with its ZBL baseline is not "
                              f"repulsive everywhere below {0.9 * rmin:.3g} Å (down to {r_all[0]:.3g} Å); the table "
                              "reproduces it as it is")
        else:
            e, de = _u_and_derivatives(U, r_fit)
            if core == "extension":
                u0, u1, u2 = (float(x[0]) for x in _u_and_derivatives(U, r_fit[:1], order=2))
                ec, dec = repulsive_core(u0, u1, u2, rmin, numbers[a], numbers[b], r_all[:n_core])
                e, de = np.concatenate([ec, e]), np.concatenate([dec, de])
        block = [f"N {len(r_all)} R {r_inner!r} {float(model.rcut)!r}", ""]
        block += [f"{q} {rq!r} {eq!r} {fq!r}" for q, (rq, eq, fq) in enumerate(zip(r_all.tolist(), e.tolist(),
                                                                                  (-de).tolist()), 1)]
        for ab in [(a, b)] if a == b else [(a, b), (b, a)]:
            kw = pair_keyword(elements, *ab)
            lines += [kw] + block + [""]
            keywords[ab] = kw

    return "\n".join(lines), {"keywords": keywords, "rmin": rmin, "rcore": rcore, "r_inner": r_inner,
                               "n_points": len(r_all), "core": core}


# torchace writes a few thousand points per pair: a few hundred kB per element pair
MAX_TABLE_BYTES = 256 << 20


def read_pair_table(path: str) -> Dict[str, Tuple[np.ndarray, np.ndarray, np.ndarray]]:
    """{keyword: (r, E, F)} from a LAMMPS pair table file.  With ``N n R rlo rhi`` (or ``RSQ``) the distances
    are LAMMPS's own, rlo + (rhi − rlo) i/(n − 1) (or the RSQ analogue), and the r column must agree with them."""
    from ...inputs import open_input

    out = {}
    with open_input(path, "LAMMPS pair table", MAX_TABLE_BYTES) as fh:  # the input rule: no FIFO, no /dev/zero
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
        r = arr[:, 0]
        for q, p in enumerate(params):
            if p in ("R", "RSQ"):
                try:
                    lo, hi = float(params[q + 1]), float(params[q + 2])
                except (IndexError, ValueError):
                    raise ValueError(f"{path}: section {kw!r}: bad '{p} rlo rhi' in {' '.join(params)!r}") from None
                t = np.arange(n) / (n - 1)
                r = lo + (hi - lo) * t if p == "R" else np.sqrt(lo * lo + (hi * hi - lo * lo) * t)
                if np.abs(r - arr[:, 0]).max() > 1e-9 * hi:
                    raise ValueError(f"{path}: section {kw!r}: the r column disagrees with '{p} {lo} {hi}'")
        out[kw] = (r, arr[:, 1], arr[:, 2])
    return out


def _hermite(r, knots, E, dE):
    """Cubic Hermite interpolation of E with derivative dE on sorted knots; zero outside [knots[0], knots[-1]):
    ``torchace.model.pace.pair_table.hermite`` (the one formula, also the read-back model's) on numpy arrays."""
    from ...model.pace.pair_table import hermite

    e, d = hermite(*(torch.as_tensor(np.asarray(x, dtype=np.float64)) for x in (r, knots, E, dE)))
    return e.numpy(), d.numpy()


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
