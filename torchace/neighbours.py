"""Neighbour lists: all pairs (i, j, S) with |x_j - x_i + S·cell| < rcut.

Periodic and open boundaries (per axis), triclinic cells, and cells smaller than rcut (many images,
including an atom's own images) are handled by ASE's ``primitive_neighbor_list`` (binned, O(N)).
The list is built once per geometry in float64 on the CPU; the differentiable displacement vectors
are recomputed from positions, cell and the integer shifts inside the model, so forces and virials
flow through them.
"""
from __future__ import annotations

import numpy as np
from ase.neighborlist import primitive_neighbor_list


def neighbour_list(positions: np.ndarray, cell: np.ndarray, pbc, rcut: float):
    """Return ``(i, j, shifts)``: centre, neighbour and integer cell shifts [E, 3] (int64)."""
    pbc = np.asarray(pbc, dtype=bool)
    positions = np.asarray(positions, dtype=np.float64)
    cell = np.asarray(cell, dtype=np.float64)
    if len(positions) == 0:
        return np.zeros(0, np.int64), np.zeros(0, np.int64), np.zeros((0, 3), np.int64)
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
