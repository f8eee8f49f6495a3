"""Neighbour lists: all pairs (i, j, S) with |x_j - x_i + S·cell| < rcut.

Two implementations with identical output sets (tested against a brute-force reference):
``dense_neighbour_list`` (torch, vectorised over all atom pairs and all lattice images that can be
within rcut — fast for the small/medium structures of training sets and on GPU) and ASE's
``primitive_neighbor_list`` (binned, O(N), Python-heavy) for large structures and mixed boundaries.
Periodic and open boundaries, triclinic cells, unwrapped positions, and cells smaller than rcut
(many images, including an atom's own images) are handled.
The list is built once per geometry in float64 on the CPU; the differentiable displacement vectors
are recomputed from positions, cell and the integer shifts inside the model, so forces and virials
flow through them.
"""
from __future__ import annotations

import numpy as np
import torch
from ase.neighborlist import primitive_neighbor_list


# dense path when atoms² × images stays below this (pairs tested at once per structure)
DENSE_MAX_PAIRS = 4_000_000
# a structure whose expected neighbour pairs exceed this is refused before the list is built (~12 GB of edge
# data: a collapsed or nearly flat periodic cell, not a material)
MAX_PAIRS = 300_000_000


def check_pair_count(n_atoms: int, cell: np.ndarray, pbc, rcut: float) -> None:
    """Refuse, before any neighbour search, a periodic structure whose number of pairs within rcut would
    be ≈ N²/V · (4/3)π rcut³ > ``MAX_PAIRS`` (ASE's search loops over all the images such a cell needs)."""
    if not np.asarray(pbc, dtype=bool).all():
        return
    vol = abs(float(np.linalg.det(cell)))
    est = n_atoms * n_atoms / max(vol, 1e-300) * (4.0 / 3.0) * np.pi * rcut ** 3
    if est > MAX_PAIRS:
        raise ValueError(f"{n_atoms} atoms in a periodic cell of volume {vol:.3g} Å³ would have about {est:.3g} "
                         f"neighbour pairs within rcut = {rcut:g} Å (limit {MAX_PAIRS:.0e}): a collapsed or nearly "
                         "flat cell?")


def _image_range(positions: np.ndarray, cell: np.ndarray, rcut: float) -> np.ndarray:
    """Largest |S_a| that can put a pair within rcut, per axis (fully periodic cell)."""
    frac = np.linalg.solve(cell.T, positions.T).T
    vol = abs(np.linalg.det(cell))
    spacing = np.array([vol / np.linalg.norm(np.cross(cell[(a + 1) % 3], cell[(a + 2) % 3])) for a in range(3)])
    span = frac.max(0) - frac.min(0)  # unwrapped positions need more images
    return np.ceil(rcut / spacing + span).astype(np.int64)


def dense_neighbour_list(positions: np.ndarray, cell: np.ndarray, pbc, rcut: float, device=None):
    """All-pairs × all-images neighbour list in torch (float64). Returns numpy (i, j, S)."""
    pbc = np.asarray(pbc, dtype=bool)
    if pbc.all():
        nmax = _image_range(positions, cell, rcut)
        axes = [torch.arange(-n, n + 1, device=device) for n in nmax]
        S = torch.cartesian_prod(*axes).to(torch.float64)
    else:
        S = torch.zeros((1, 3), dtype=torch.float64, device=device)
    pos = torch.as_tensor(positions, dtype=torch.float64, device=device)
    shifts = S @ torch.as_tensor(cell, dtype=torch.float64, device=device)  # [M, 3]
    n = pos.shape[0]
    d = pos.view(1, n, 1, 3) - pos.view(n, 1, 1, 3) + shifts.view(1, 1, -1, 3)  # [i, j, M, 3]
    mask = (d * d).sum(-1) < rcut * rcut
    zero = int(torch.nonzero((S == 0).all(1))[0, 0])
    mask[torch.arange(n, device=device), torch.arange(n, device=device), zero] = False
    i, j, m = torch.nonzero(mask, as_tuple=True)
    return i.cpu().numpy(), j.cpu().numpy(), S[m].to(torch.int64).cpu().numpy()


def neighbour_list(positions: np.ndarray, cell: np.ndarray, pbc, rcut: float):
    """Return ``(i, j, shifts)``: centre, neighbour and integer cell shifts [E, 3] (int64)."""
    pbc = np.asarray(pbc, dtype=bool)
    positions = np.asarray(positions, dtype=np.float64)
    cell = np.asarray(cell, dtype=np.float64)
    if len(positions) == 0:
        return np.zeros(0, np.int64), np.zeros(0, np.int64), np.zeros((0, 3), np.int64)
    check_pair_count(len(positions), cell, pbc, rcut)
    if pbc.all() or not pbc.any():
        n_img = int(np.prod(2 * _image_range(positions, cell, rcut) + 1)) if pbc.all() else 1
        if len(positions) ** 2 * n_img <= DENSE_MAX_PAIRS:
            return dense_neighbour_list(positions, cell, pbc, rcut)
        if _vesin() is not None:
            return vesin_neighbour_list(positions, cell, pbc, rcut)
    return ase_neighbour_list(positions, cell, pbc, rcut)


def _vesin():
    try:
        import vesin
    except ImportError:
        return None
    return vesin


def vesin_neighbour_list(positions: np.ndarray, cell: np.ndarray, pbc, rcut: float):
    """vesin's C++ cell list (optional accelerator, ~10× ASE's); periodic along all axes or none only.

    Same convention as ASE's: r_ij = x_j - x_i + S·cell; pairs sorted by centre (stable) as ASE returns them.
    """
    pbc = np.asarray(pbc, dtype=bool)
    periodic = bool(pbc.all())
    box = cell if periodic else np.zeros((3, 3))
    nl = _vesin().NeighborList(cutoff=float(rcut), full_list=True)
    i, j, S = nl.compute(points=positions, box=box, periodic=periodic, quantities="ijS")
    order = np.argsort(i, kind="stable")
    return i[order].astype(np.int64), j[order].astype(np.int64), S[order].astype(np.int64)


def ase_neighbour_list(positions: np.ndarray, cell: np.ndarray, pbc, rcut: float):
    """ASE's binned O(N) list; open axes get an enclosing box so binning sees a non-degenerate cell."""
    pbc = np.asarray(pbc, dtype=bool)
    if not pbc.any():
        # ASE needs a non-singular cell only along periodic axes; give it an enclosing box
        lo, hi = positions.min(0), positions.max(0)
        cell = np.diag(np.maximum(hi - lo, 1.0) + rcut)
    elif not pbc.all():
        # complete the open axes so that ASE's binning sees a non-degenerate cell
        cell = cell.copy()
        span = positions.max(0) - positions.min(0)
        for ax in np.flatnonzero(~pbc):
            if np.linalg.norm(cell[ax]) < 1e-12:
                others = [cell[a] for a in range(3) if a != ax]
                n = np.cross(others[0], others[1])
                if np.linalg.norm(n) < 1e-12:
                    n = np.eye(3)[ax]
                cell[ax] = n / np.linalg.norm(n) * (np.max(span) + rcut + 1.0)
    i, j, S = primitive_neighbor_list("ijS", pbc, cell, positions, float(rcut), self_interaction=False,
                                      use_scaled_positions=False)
    return i.astype(np.int64), j.astype(np.int64), S.astype(np.int64)
