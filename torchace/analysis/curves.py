"""One-dimensional cuts through a potential-energy surface (PES), for any ASE calculator or torchace model.

These are the "quick metrics" of Darby et al., *Regularity priors for the linear atomic cluster expansion*
(2026), §3.1 (figures 5 and 6; Si) and §3.2 (figure S8; dimer curves of a molecule):

* dimer and trimer curves, E(r) − Σ E(isolated atom), with the isolated-atom energies taken from the same
  calculator (so E0 conventions cancel);
* rigid decohesion: a periodic crystal is split along a lattice plane and the two halves are separated
  rigidly by d (cell vector and upper half moved together), E(d) per unit area and its derivative, the
  decohesion stress s(d) = (1/A) dE/dd (paper figure 5; the training data of a good potential should make
  s(d) a single smooth maximum);
* energy–volume curves of crystal phases at fixed fractional coordinates, with the pressure from the
  calculator's stress, P = −tr(σ)/3 (= −dE/dV, checked in tests/test_analysis.py);
* the energy along an arbitrary path of structures and its derivative from the forces, dE/ds = −Σ F·dR/ds.

Units: eV, Å; stresses in GPa where named ``*_GPa``.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Dict, List, Optional, Sequence, Tuple

import numpy as np
from ase import Atoms, units
from ase.calculators.calculator import Calculator

__all__ = [
    "as_calculator", "isolated_energy", "dimer_curve", "dimer_curves", "trimer_curve", "ev_curve", "EVCurve",
    "decohesion_slab", "decohesion_curve", "DecohesionCurve", "path_energies", "PathEnergies",
    "element_pairs", "silicon_phases",
]

EV_PER_A3_TO_GPA = 1.0 / units.GPa  # 160.2177 GPa per eV/Å³


def as_calculator(obj, **kwargs) -> Calculator:
    """An ASE calculator for ``obj``: an ASE calculator is returned as is; a torchace model, a model file or a
    TorchScript export becomes a ``TorchACECalculator`` (``kwargs`` passed on)."""
    if isinstance(obj, Calculator):
        return obj
    from ..calculators.ase import TorchACECalculator

    return TorchACECalculator(obj, **kwargs)


def _energy(calc: Calculator, atoms: Atoms) -> float:
    atoms = atoms.copy()
    atoms.calc = calc
    return float(atoms.get_potential_energy())


def isolated_energy(calc, symbol: str) -> float:
    """Energy of one isolated atom (non-periodic, alone in space)."""
    return _energy(as_calculator(calc), Atoms(symbol, positions=[[0.0, 0.0, 0.0]], pbc=False))


def element_pairs(elements: Sequence[str]) -> List[Tuple[str, str]]:
    """Unordered element pairs (a, b), a ≤ b in the given order."""
    els = list(elements)
    return [(els[i], els[j]) for i in range(len(els)) for j in range(i, len(els))]


def _check_r(r, name: str = "r") -> np.ndarray:
    r = np.asarray(r, dtype=np.float64).reshape(-1)
    if r.size == 0 or not np.all(np.isfinite(r)) or np.any(r <= 0):
        raise ValueError(f"{name} must be a non-empty array of positive finite distances (Å)")
    return r


def dimer_curve(calc, el1: str, el2: str, r) -> np.ndarray:
    """E(el1–el2 dimer at distance r) − E(el1) − E(el2) (eV) for each r (Å)."""
    calc = as_calculator(calc)
    r = _check_r(r)
    e_iso = isolated_energy(calc, el1) + isolated_energy(calc, el2)
    return np.array([_energy(calc, Atoms([el1, el2], positions=[[0, 0, 0], [x, 0, 0]], pbc=False)) - e_iso
                     for x in r])


def dimer_curves(calc, elements: Sequence[str], r) -> Dict[str, np.ndarray]:
    """``{"A-B": dimer_curve(...)}`` for every unordered element pair."""
    calc = as_calculator(calc)
    return {f"{a}-{b}": dimer_curve(calc, a, b, r) for a, b in element_pairs(elements)}


def trimer_curve(calc, elements: Sequence[str], r, angle_deg: float = 60.0, r2=None) -> np.ndarray:
    """Trimer energy minus isolated atoms: atom 1 at distance r from atom 0, atom 2 at distance r2 (default r)
    from atom 0, angle 1–0–2 = ``angle_deg``.  ``elements`` = (el0, el1, el2)."""
    calc = as_calculator(calc)
    if len(elements) != 3:
        raise ValueError(f"trimer_curve needs three elements, got {list(elements)}")
    r = _check_r(r)
    r2 = r if r2 is None else _check_r(np.broadcast_to(np.asarray(r2, dtype=np.float64), r.shape), "r2")
    th = np.deg2rad(float(angle_deg))
    e_iso = sum(isolated_energy(calc, s) for s in elements)
    out = []
    for a, b in zip(r, r2):
        pos = [[0.0, 0.0, 0.0], [a, 0.0, 0.0], [b * np.cos(th), b * np.sin(th), 0.0]]
        out.append(_energy(calc, Atoms(list(elements), positions=pos, pbc=False)) - e_iso)
    return np.array(out)


# ---------------------------------------------------------------------------------------------
#  energy–volume curves


@dataclass
class EVCurve:
    volume: np.ndarray        # Å³/atom
    energy: np.ndarray        # eV/atom
    pressure_GPa: np.ndarray  # −tr(σ)/3 from the calculator's stress (nan if it has none)


def ev_curve(calc, atoms: Atoms, scale) -> EVCurve:
    """E–V curve of a periodic crystal at fixed fractional coordinates: the cell is scaled isotropically by
    the linear factors ``scale`` (volume ∝ scale³)."""
    calc = as_calculator(calc)
    if not atoms.pbc.all():
        raise ValueError("ev_curve needs a fully periodic structure")
    scale = _check_r(scale, "scale")
    n = len(atoms)
    V, E, P = [], [], []
    for s in scale:
        a = atoms.copy()
        a.set_cell(atoms.cell.array * s, scale_atoms=True)
        a.calc = calc
        E.append(a.get_potential_energy() / n)
        V.append(a.get_volume() / n)
        try:
            P.append(-np.trace(a.get_stress(voigt=False)) / 3.0 * EV_PER_A3_TO_GPA)
        except Exception:  # calculators without stress: pressure unknown
            P.append(np.nan)
    return EVCurve(np.array(V), np.array(E), np.array(P))


def silicon_phases() -> Dict[str, Atoms]:
    """Diamond, β-tin and simple-hexagonal Si at roughly their DFT equilibrium geometries (for E–V curves
    at fixed fractional coordinates).  β-tin: body-centred tetragonal A5, c/a = 0.552; simple hexagonal:
    one atom per cell, c/a = 0.94 (Si high-pressure phases, e.g. the Si GAP-18 paper's tests)."""
    from ase.build import bulk

    dia = bulk("Si", "diamond", a=5.46)
    a, c = 4.80, 4.80 * 0.552
    btin = Atoms("Si4", cell=[a, a, c], pbc=True,
                 scaled_positions=[[0, 0, 0], [0.5, 0.5, 0.5], [0, 0.5, 0.25], [0.5, 0, 0.75]])
    ah = 2.56
    sh = Atoms("Si", cell=[[ah, 0, 0], [-ah / 2, ah * np.sqrt(3) / 2, 0], [0, 0, 0.94 * ah]], pbc=True,
               scaled_positions=[[0, 0, 0]])
    return {"diamond": dia, "beta-tin": btin, "simple hexagonal": sh}


# ---------------------------------------------------------------------------------------------
#  rigid decohesion


def decohesion_slab(bulk_atoms: Atoms, miller: Tuple[int, int, int], layers: Optional[int] = None,
                    min_thickness: float = 15.0) -> Atoms:
    """A periodic cell of ``bulk_atoms`` whose third axis is normal to the (hkl) plane (ase.build.surface with
    no vacuum, periodic), ready for ``decohesion_curve``.  ``layers=None``: as many as needed for a cell at
    least ``min_thickness`` Å thick, so that the opened gap does not see its periodic image through the
    block (choose it above twice the cutoff).  Use the conventional (cubic) cell for cubic Miller indices."""
    from ase.build import surface

    if layers is not None:
        return surface(bulk_atoms, tuple(miller), layers, periodic=True)
    one = surface(bulk_atoms, tuple(miller), 1, periodic=True)
    n = max(1, int(np.ceil(min_thickness / one.cell.array[2, 2])))
    return surface(bulk_atoms, tuple(miller), n, periodic=True)


def _split_plane(atoms: Atoms) -> float:
    """z in the middle of the widest gap between atomic layers (inside the cell): the bonds cut there are the
    weakest (for diamond (111), the shuffle plane)."""
    z = np.sort(np.unique(np.round(atoms.positions[:, 2], 6)))
    if z.size < 2:
        raise ValueError("decohesion needs at least two atomic layers along z")
    gaps = np.diff(z)
    k = int(np.argmax(gaps))
    return 0.5 * (z[k] + z[k + 1])


@dataclass
class DecohesionCurve:
    separation: np.ndarray     # d (Å), the added gap
    energy: np.ndarray         # (E(d) − E(0)) / A  (eV/Å²), A = area of the split plane in the cell
    stress_GPa: np.ndarray     # (1/A) dE/dd from forces and stress (analytic derivative), GPa
    area: float
    n_upper: int


def _check_slab(atoms: Atoms) -> None:
    cell = atoms.cell.array
    if not atoms.pbc.all():
        raise ValueError("decohesion needs a fully periodic cell")
    if abs(cell[0, 2]) > 1e-8 or abs(cell[1, 2]) > 1e-8 or cell[2, 2] <= 0:
        raise ValueError("decohesion needs the first two cell vectors in the xy plane and the third with "
                         "positive z (use decohesion_slab)")


def _separated(atoms: Atoms, d: float, z_split: float) -> Tuple[Atoms, np.ndarray]:
    a = atoms.copy()
    upper = a.positions[:, 2] > z_split
    pos = a.positions.copy()
    pos[upper, 2] += d
    cell = a.cell.array.copy()
    cell[2, 2] += d
    a.set_cell(cell, scale_atoms=False)
    a.positions = pos
    return a, upper


def decohesion_curve(calc, atoms: Atoms, separations, z_split: Optional[float] = None) -> DecohesionCurve:
    """Rigid decohesion: the atoms above the plane z = ``z_split`` (default: the widest interlayer gap) and
    the third cell vector are moved by d along z, opening one gap per cell (the periodic images stay bonded).

    dE/dd = Σ_upper ∂E/∂z_i + ∂E/∂c_z|_positions, and the cell derivative follows from the stress:
    V σ_zz = dE/dε_zz = Σ_i z_i ∂E/∂z_i + c_z ∂E/∂c_z (a, b lie in the xy plane), so no finite differences
    are needed.  ``separations`` (Å) may include 0; the energy is relative to d = 0 (the intact crystal)."""
    calc = as_calculator(calc)
    _check_slab(atoms)
    d = np.asarray(separations, dtype=np.float64).reshape(-1)
    if d.size == 0 or not np.all(np.isfinite(d)) or np.any(d < 0):
        raise ValueError("separations must be finite and >= 0 (Å)")
    zs = _split_plane(atoms) if z_split is None else float(z_split)
    area = float(np.linalg.norm(np.cross(atoms.cell.array[0], atoms.cell.array[1])))
    ref, _ = _separated(atoms, 0.0, zs)
    ref.calc = calc
    e_ref = ref.get_potential_energy()
    E, S = [], []
    n_upper = 0
    for x in d:
        a, upper = _separated(atoms, float(x), zs)
        n_upper = int(upper.sum())
        a.calc = calc
        E.append((a.get_potential_energy() - e_ref) / area)
        F = a.get_forces()
        sigma = a.get_stress(voigt=False)
        V, cz = a.get_volume(), a.cell.array[2, 2]
        dE_dcz = (V * sigma[2, 2] + float(np.dot(a.positions[:, 2], F[:, 2]))) / cz
        dE_dd = -float(F[upper, 2].sum()) + dE_dcz
        S.append(dE_dd / area * EV_PER_A3_TO_GPA)
    return DecohesionCurve(d, np.array(E), np.array(S), area, n_upper)


# ---------------------------------------------------------------------------------------------
#  arbitrary paths


@dataclass
class PathEnergies:
    s: np.ndarray          # cumulative path length √(Σ|ΔR|²) (Å), 0 at the first image
    energy: np.ndarray     # eV, relative to the first image
    dE_ds: np.ndarray      # −Σ F·t, t the unit tangent (central differences of the images), eV/Å


def path_energies(calc, images: Sequence[Atoms]) -> PathEnergies:
    """Energy along a path of structures (same atoms, same order) and its slope from the forces."""
    calc = as_calculator(calc)
    images = list(images)
    if len(images) < 2:
        raise ValueError("a path needs at least two images")
    n = len(images[0])
    if any(len(a) != n or not np.array_equal(a.numbers, images[0].numbers) for a in images):
        raise ValueError("all images of a path must have the same atoms in the same order")
    R = np.array([a.positions for a in images])
    steps = np.sqrt(((R[1:] - R[:-1]) ** 2).sum(axis=(1, 2)))
    s = np.concatenate([[0.0], np.cumsum(steps)])
    E, slope = [], []
    for k, a in enumerate(images):
        a = a.copy()
        a.calc = calc
        E.append(a.get_potential_energy())
        F = a.get_forces()
        lo, hi = max(k - 1, 0), min(k + 1, len(images) - 1)
        t = R[hi] - R[lo]
        t = t / max(np.linalg.norm(t), 1e-300)
        slope.append(-float((F * t).sum()))
    E = np.array(E)
    return PathEnergies(s, E - E[0], np.array(slope))
