"""The neighbour list of a supercell built from one periodic cell's list, exactly and in O(edges).

A supercell of m = (m1, m2, m3) copies of a base cell whose positions repeat in every copy (a periodic
rattle): block t (integer triple), base edge (i, j, S) becomes centre t·n0 + i, neighbour w·n0 + j with
w = (t + S) mod m and supercell shift (t + S) div m.  Used where a million-atom structure is needed and no
fast list is available for it (the GPU benchmark's largest-system search)."""
from __future__ import annotations

from typing import Sequence, Tuple

import numpy as np
import torch

from .pairs import neighbour_list


def tiled_neighbours(base_pos, base_cell, reps: Sequence[int], rcut: float, device=None
                     ) -> Tuple[torch.Tensor, np.ndarray, Tuple[torch.Tensor, torch.Tensor, torch.Tensor]]:
    """Positions [N, 3] (float64 on ``device``), cell [3, 3] and list (i, j, S) of the supercell ``reps`` ×
    the periodic base cell (``base_pos`` [n0, 3], ``base_cell`` [3, 3]); edges sorted by centre within each
    block, blocks in row-major order of their triples."""
    i, j, S = (torch.as_tensor(x, device=device) for x in neighbour_list(base_pos, base_cell, (True,) * 3, rcut))
    n0 = len(base_pos)
    m = torch.as_tensor(reps, device=device)
    grid = torch.stack(torch.meshgrid(*[torch.arange(int(n), device=device) for n in reps], indexing="ij"),
                       -1).reshape(-1, 3)

    def linear(t):  # block triple -> block number, row-major
        return (t[..., 0] * m[1] + t[..., 1]) * m[2] + t[..., 2]

    u = grid[:, None, :] + S[None]                     # [T, E0, 3]
    w, shift = torch.remainder(u, m), torch.div(u, m, rounding_mode="floor")
    ci = (linear(grid)[:, None] * n0 + i[None]).reshape(-1)
    cj = (linear(w) * n0 + j[None]).reshape(-1)
    pos = (torch.as_tensor(base_pos, device=device)[None] + (grid.to(torch.float64) @
           torch.as_tensor(base_cell, device=device))[:, None]).reshape(-1, 3)
    cell = np.asarray(base_cell) * np.asarray(reps)[:, None]
    return pos, cell, (ci, cj, shift.reshape(-1, 3))
