"""MD stability runs: Langevin dynamics until a covalent bond breaks or forms (time to failure).

The protocol of Darby et al., *Regularity priors for the linear atomic cluster expansion* (2026), §3.2
(figure 13): start from test-set configurations, run ASE Langevin dynamics (0.5 fs step, friction
3 ps⁻¹) at a given temperature, and stop a trajectory when a bond of the starting molecule breaks or a new
bond forms.  Thresholds per element pair come from the training data: the largest bonded distance seen
plus a tolerance (0.5 Å in the paper) for breaking, the smallest non-bonded distance minus the tolerance
for forming.  Bonds are pairs closer than ``bond_scale`` × (sum of covalent radii).

Independent trajectories can share one ASE simulation (``batch=True``): the replicas are placed side by side,
further apart than the cutoff, so that one calculator call evaluates all of them; Langevin noise is drawn
per atom, so they stay independent.  A failed replica is removed and the others continue.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Dict, List, Optional, Sequence, Tuple

import numpy as np
from ase import Atoms, units
from ase.data import covalent_radii

__all__ = ["BondCriterion", "MDResult", "md_stability"]


def _bonded(atoms: Atoms, bond_scale: float) -> np.ndarray:
    """Boolean [N, N] bond matrix: d_ij < bond_scale·(r_cov,i + r_cov,j), i ≠ j."""
    d = atoms.get_all_distances()
    rc = covalent_radii[atoms.numbers]
    b = d < bond_scale * (rc[:, None] + rc[None, :])
    np.fill_diagonal(b, False)
    return b


def _pair_key(z1: int, z2: int) -> Tuple[int, int]:
    return (min(z1, z2), max(z1, z2))


@dataclass
class BondCriterion:
    """Failure criterion for a molecule: bonds (i, j) of the reference structure must stay shorter than
    ``break_at[pair]``; non-bonded pairs must stay longer than ``form_at[pair]`` (pair = sorted atomic numbers)."""

    bonds: np.ndarray                     # [N, N] bool, from the reference structure
    numbers: np.ndarray
    break_at: Dict[Tuple[int, int], float]
    form_at: Dict[Tuple[int, int], float]

    @classmethod
    def from_structures(cls, reference: Atoms, training: Sequence[Atoms] = (), tol: float = 0.5,
                        bond_scale: float = 1.2, default_break: float = 1.5, default_form: float = 0.75):
        """Bonds of ``reference``; thresholds from ``training`` (same molecule, same atom order) as the paper:
        max bonded distance + tol and min non-bonded distance − tol per element pair.  Pairs not seen in
        ``training`` get ``default_break`` × / ``default_form`` × the covalent-radius sum."""
        if tol < 0:
            raise ValueError(f"tol must be >= 0, got {tol}")
        bonds = _bonded(reference, bond_scale)
        z = reference.numbers
        n = len(z)
        max_b: Dict[Tuple[int, int], float] = {}
        min_nb: Dict[Tuple[int, int], float] = {}
        iu = np.triu_indices(n, 1)
        for at in training:
            if len(at) != n or not np.array_equal(at.numbers, z):
                raise ValueError("training structures for the bond criterion must be the reference molecule "
                                 "(same atoms, same order)")
            d = at.get_all_distances()
            for i, j in zip(*iu):
                k = _pair_key(z[i], z[j])
                if bonds[i, j]:
                    max_b[k] = max(max_b.get(k, 0.0), d[i, j])
                else:
                    min_nb[k] = min(min_nb.get(k, np.inf), d[i, j])
        break_at, form_at = {}, {}
        for i, j in zip(*iu):
            k = _pair_key(z[i], z[j])
            rsum = covalent_radii[k[0]] + covalent_radii[k[1]]
            break_at[k] = max_b[k] + tol if k in max_b else default_break * rsum
            form_at[k] = min_nb[k] - tol if k in min_nb else default_form * rsum
        return cls(bonds, np.array(z), break_at, form_at)

    def violation(self, positions: np.ndarray) -> Optional[str]:
        """None if the structure is intact, else a description of the first broken/formed bond."""
        pos = np.asarray(positions, dtype=np.float64)
        if not np.all(np.isfinite(pos)):
            return "non-finite positions"
        d = np.linalg.norm(pos[:, None, :] - pos[None, :, :], axis=-1)
        z = self.numbers
        n = len(z)
        for i in range(n):
            for j in range(i + 1, n):
                k = _pair_key(z[i], z[j])
                if self.bonds[i, j] and d[i, j] > self.break_at[k]:
                    return f"bond {i}-{j} broke ({d[i, j]:.2f} Å > {self.break_at[k]:.2f} Å)"
                if not self.bonds[i, j] and d[i, j] < self.form_at[k]:
                    return f"bond {i}-{j} formed ({d[i, j]:.2f} Å < {self.form_at[k]:.2f} Å)"
        return None


@dataclass
class MDResult:
    time_to_failure_fs: List[Optional[float]]   # None: survived the whole run
    reasons: List[Optional[str]]
    total_time_fs: float
    temperature_K: float
    info: Dict[str, object] = field(default_factory=dict)

    @property
    def survived(self) -> int:
        return sum(t is None for t in self.time_to_failure_fs)

    def mean_time_fs(self) -> float:
        """Mean duration, survivors counted with the full run length (a lower bound, as in the paper's plots)."""
        return float(np.mean([self.total_time_fs if t is None else t for t in self.time_to_failure_fs]))


def _combine(replicas: List[Atoms], spacing: float) -> Tuple[Atoms, List[slice]]:
    parts, slices, x0, start = [], [], 0.0, 0
    for a in replicas:
        b = a.copy()
        b.positions -= b.positions.mean(axis=0)
        b.positions[:, 0] += x0
        x0 += spacing
        parts.append(b)
        slices.append(slice(start, start + len(b)))
        start += len(b)
    out = parts[0]
    for b in parts[1:]:
        out = out + b
    out.pbc = False
    out.cell = np.zeros((3, 3))
    return out, slices


def md_stability(calc, starts: Sequence[Atoms], criterion: BondCriterion, *, temperature_K: float = 300.0,
                 steps: int = 2000, timestep_fs: float = 0.5, friction_per_ps: float = 3.0, check_every: int = 10,
                 seed: int = 0, batch: bool = True, spacing: Optional[float] = None) -> MDResult:
    """Langevin MD from each of ``starts`` for ``steps`` steps; returns the time to failure of each (None if
    it survived).  Failure (``criterion``) is checked every ``check_every`` steps, so times are resolved to
    check_every·timestep.  ``batch``: run all replicas in one simulation (``spacing`` Å apart; default
    2·(cutoff of the calculator or 6 Å) + extent of the molecule); otherwise one simulation each.
    A calculator error (e.g. atoms on top of each other) counts as a failure of the replica whose
    criterion is violated (if none is, the error is raised)."""
    from ase.md.langevin import Langevin
    from ase.md import velocitydistribution as vd

    from .curves import as_calculator

    calc = as_calculator(calc)
    if steps < 0 or check_every < 1 or timestep_fs <= 0 or temperature_K < 0:
        raise ValueError("need steps >= 0, check_every >= 1, timestep_fs > 0, temperature_K >= 0")
    starts = [a.copy() for a in starts]
    if not starts:
        raise ValueError("md_stability needs at least one starting structure")
    n = len(criterion.numbers)
    for a in starts:
        if len(a) != n or not np.array_equal(a.numbers, criterion.numbers):
            raise ValueError("every starting structure must be the criterion's molecule (same atoms, same order)")
    rng = np.random.default_rng(seed)
    for a in starts:
        a.pbc = False
        # ASE renamed MaxwellBoltzmannDistribution to thermalize_momenta (3.26)
        thermalize = getattr(vd, "thermalize_momenta", None) or vd.MaxwellBoltzmannDistribution
        thermalize(a, temperature_K=temperature_K, rng=rng)
        vd.Stationary(a)
    rcut = float(getattr(calc, "rcut", 6.0))
    extent = max(float(np.ptp(a.positions, axis=0).max()) for a in starts)
    spacing = float(spacing) if spacing is not None else 2.0 * rcut + extent + 5.0
    groups = [list(range(len(starts)))] if batch else [[k] for k in range(len(starts))]
    ttf: List[Optional[float]] = [None] * len(starts)
    why: List[Optional[str]] = [None] * len(starts)
    dt = timestep_fs * units.fs
    for group in groups:
        active = list(group)
        state = [starts[k] for k in active]
        done = 0
        dyn = None
        while active and done < steps:
            if dyn is None:  # (re)build the simulation of the active replicas
                atoms, slices = _combine(state, spacing)
                atoms.calc = calc
                dyn = Langevin(atoms, dt, temperature_K=temperature_K,
                               friction=friction_per_ps / (1000.0 * units.fs), rng=rng, fixcm=False)
            chunk = min(check_every, steps - done)
            n0 = dyn.nsteps
            error = None
            try:
                dyn.run(chunk)
            except (ValueError, FloatingPointError, RuntimeError) as e:  # the potential blew up inside the chunk
                error = e
            done += dyn.nsteps - n0 if error is not None else chunk
            failed = []
            for k, sl in zip(active, slices):
                v = criterion.violation(atoms.positions[sl])
                if v is not None:
                    failed.append(k)
                    ttf[k], why[k] = done * timestep_fs, v
            if error is not None and not failed:
                raise error
            if failed or error is not None:
                mom = atoms.get_momenta()
                keep = [(k, sl) for k, sl in zip(active, slices) if k not in failed]
                state = []
                for _, sl in keep:
                    b = Atoms(atoms.numbers[sl], positions=atoms.positions[sl], pbc=False)
                    b.set_momenta(mom[sl])
                    state.append(b)
                active = [k for k, _ in keep]
                dyn = None
    return MDResult(ttf, why, steps * timestep_fs, float(temperature_K),
                    info={"timestep_fs": timestep_fs, "friction_per_ps": friction_per_ps, "check_every": check_every,
                          "batch": batch, "spacing": spacing, "seed": seed})
