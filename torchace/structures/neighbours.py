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

import math

import numpy as np
import torch
from ase.neighborlist import primitive_neighbor_list


# dense path when atoms² × images stays below this (pairs tested at once per structure)
DENSE_MAX_PAIRS = 4_000_000
# a structure whose expected neighbour pairs exceed this is refused before the list is built (~12 GB of edge
# data: a collapsed or nearly flat periodic cell, not a material)
MAX_PAIRS = 300_000_000


def check_pair_count(n_atoms: int, cell: np.ndarray, pbc, rcut: float, positions: np.ndarray = None) -> None:
    """Refuse, before any neighbour search, a periodic structure whose number of pairs within rcut would
    be ≈ N²/V · (4/3)π rcut³ > ``MAX_PAIRS`` (ASE's search loops over all the images such a cell needs).

    Periodic along some axes only (slabs, wires; needs ``positions``): V is the measure of the periodic lattice
    (the length of its vector, or the area of its two) times the extent of the atoms along the open directions
    plus rcut, so a 2-D cell with a tiny in-plane vector is refused as well; open boundaries have at most
    N² pairs and are not checked."""
    pbc = np.asarray(pbc, dtype=bool)
    if not pbc.any():
        return
    if pbc.all():
        vol = abs(float(np.linalg.det(cell)))
        shape = "periodic cell"
    else:
        if positions is None:
            return
        P = np.asarray(cell, dtype=np.float64)[pbc]  # [k, 3] periodic lattice vectors
        measure = float(np.sqrt(max(np.linalg.det(P @ P.T), 0.0)))
        Q = np.linalg.qr(P.T, mode="complete")[0][:, len(P):]  # orthonormal basis of the open directions
        span = np.ptp(np.asarray(positions) @ Q, axis=0) if len(positions) else np.zeros(Q.shape[1])
        vol = measure * float(np.prod(span + rcut))
        what = "length" if len(P) == 1 else "area"
        shape = f"cell periodic along axes {np.flatnonzero(pbc).tolist()} only (lattice {what} {measure:.3g})"
    est = n_atoms * n_atoms / max(vol, 1e-300) * (4.0 / 3.0) * np.pi * rcut ** 3
    if est > MAX_PAIRS:
        raise ValueError(f"{n_atoms} atoms in a {shape} of volume {vol:.3g} Å³ would have about {est:.3g} "
                         f"neighbour pairs within rcut = {rcut:g} Å (limit {MAX_PAIRS:.0e}): a collapsed or nearly "
                         "flat cell, or a cutoff far larger than the cell?")


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


# a periodic cell whose lattice vectors are this far from orthogonal (Π|a_i| / volume) is Minkowski-reduced first
MAX_SKEW = 10.0


def _reduction(cell: np.ndarray, pbc: np.ndarray):
    """The integer matrix ``op`` (reduced cell = op @ cell, same lattice) of a strongly skewed periodic cell, or
    None.  [[a, 0, 0], [10^6·a, a, 0], [0, 0, a]] is a cubic lattice, but searching it as given visits 10^6 cell
    images per atom (a minute, or never); its reduced basis has the cube's images.  Shifts found with the reduced
    cell are mapped back, S = S_reduced @ op, so the list is the same set of pairs."""
    # plain Python on the 3×3 numbers: this runs at every neighbour-list build (µs, not numpy's tens of µs)
    rows = [r for r, p in zip(cell.tolist(), pbc.tolist()) if p]
    norms = [math.sqrt(x * x + y * y + z * z) for x, y, z in rows]
    if len(rows) == 1:
        measure = norms[0]
    else:
        (a1, a2, a3), (b1, b2, b3) = rows[0], rows[1]
        cx, cy, cz = a2 * b3 - a3 * b2, a3 * b1 - a1 * b3, a1 * b2 - a2 * b1
        if len(rows) == 2:
            measure = math.sqrt(cx * cx + cy * cy + cz * cz)
        else:
            measure = abs(cx * rows[2][0] + cy * rows[2][1] + cz * rows[2][2])
    if not measure > 0 or math.prod(norms) <= MAX_SKEW * measure:
        return None
    from ase.geometry import minkowski_reduce

    try:
        _, op = minkowski_reduce(cell, pbc=pbc)
    except Exception:  # noqa: BLE001 — the reduction is an optimisation; the unreduced search still works
        return None
    op = np.asarray(op, dtype=np.int64)
    if not np.array_equal(op[~pbc], np.eye(3, dtype=np.int64)[~pbc]):  # open axes must stay as they are
        return None
    return op


def neighbour_list(positions: np.ndarray, cell: np.ndarray, pbc, rcut: float):
    """Return ``(i, j, shifts)``: centre, neighbour and integer cell shifts [E, 3] (int64)."""
    pbc = np.asarray(pbc, dtype=bool)
    positions = np.asarray(positions, dtype=np.float64)
    cell = np.asarray(cell, dtype=np.float64)
    if len(positions) == 0:
        return np.zeros(0, np.int64), np.zeros(0, np.int64), np.zeros((0, 3), np.int64)
    check_pair_count(len(positions), cell, pbc, rcut, positions)
    op = _reduction(cell, pbc) if pbc.any() else None
    if op is not None:
        i, j, S = _neighbour_list(positions, op.astype(np.float64) @ cell, pbc, rcut)
        return i, j, S @ op
    return _neighbour_list(positions, cell, pbc, rcut)


def _neighbour_list(positions: np.ndarray, cell: np.ndarray, pbc: np.ndarray, rcut: float):
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
    # bins beyond a few per atom only cost time (ASE allows 10^6: two atoms 10^12 Å apart took seconds)
    i, j, S = primitive_neighbor_list("ijS", pbc, cell, positions, float(rcut), self_interaction=False,
                                      use_scaled_positions=False, max_nbins=max(1000, 4 * len(positions)))
    return i.astype(np.int64), j.astype(np.int64), S.astype(np.int64)
