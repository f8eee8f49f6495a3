"""One structure's neighbour list as tensors on an engine's device, by the rule of ``choice``.

``neighbour_search(positions, cell, pbc, cutoff, device, dtype)`` returns ``edge_index`` [2, E] (int64) and the
integer ``unit_shifts`` [E, 3] in ``dtype`` (the model's edge vectors are r_ij = x_j − x_i + S·cell): the device
cell list on a GPU (no host round trip of the list); on the CPU vesin where it is installed, else the dense
path for few candidates, else the torch cell list (ASE's list for mixed boundaries): ``choice.search_for``.
``method`` overrides the rule ("cell_list" or "host": ``pairs.neighbour_list``, copied to the device).
"""
from __future__ import annotations

from typing import Tuple

import numpy as np
import torch

from .cell_list import cell_list_neighbours
from .choice import CELL_LIST, have_vesin, search_for
from .pairs import dense_candidates, neighbour_list

AUTO = "auto"
HOST = "host"  # pairs.neighbour_list (dense / vesin / ASE by the same rule) copied to the device


def neighbour_search(positions, cell, pbc, cutoff: float, device, dtype: torch.dtype, method: str = AUTO
                     ) -> Tuple[torch.Tensor, torch.Tensor]:
    """(edge_index [2, E], unit_shifts [E, 3] in ``dtype``) on ``device`` of one structure (module docstring).
    ``positions`` [N, 3] and ``cell`` [3, 3]: numpy arrays or tensors (float64 is used for the search)."""
    device = torch.device(device)
    if method == AUTO:
        method = CELL_LIST if _rule(positions, cell, pbc, cutoff, device) == CELL_LIST else HOST
    if method == CELL_LIST:
        i, j, S = cell_list_neighbours(torch.as_tensor(positions, dtype=torch.float64, device=device),
                                       torch.as_tensor(cell, dtype=torch.float64, device=device), pbc, cutoff)
        return torch.stack([i, j]), S.to(dtype)
    if method != HOST:
        raise ValueError(f"neighbour search method must be {AUTO!r}, {CELL_LIST!r} or {HOST!r}, got {method!r}")
    if isinstance(positions, torch.Tensor):
        positions = positions.detach().to("cpu", torch.float64).numpy()
    if isinstance(cell, torch.Tensor):
        cell = cell.detach().to("cpu", torch.float64).numpy()
    i, j, S = neighbour_list(positions, cell, pbc, cutoff)
    return (torch.as_tensor(np.stack([i, j]), dtype=torch.long, device=device),
            torch.as_tensor(S, dtype=dtype, device=device))


def _rule(positions, cell, pbc, cutoff: float, device: torch.device) -> str:
    if device.type == "cuda":
        return CELL_LIST
    vesin = have_vesin()
    candidates = 0
    if not vesin:  # the dense path's candidates decide between it and the cell list
        pos = positions.detach().to("cpu", torch.float64).numpy() if isinstance(positions, torch.Tensor) \
            else np.asarray(positions, dtype=np.float64)
        c = cell.detach().to("cpu", torch.float64).numpy() if isinstance(cell, torch.Tensor) \
            else np.asarray(cell, dtype=np.float64)
        candidates = dense_candidates(pos, c, np.asarray(pbc, dtype=bool), cutoff) if len(pos) else 0
    return search_for(candidates, list(np.asarray(pbc, dtype=bool)), device, vesin)
