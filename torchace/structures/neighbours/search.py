"""One structure's neighbour list as tensors on an engine's device, by the rule of ``choice``.

``neighbour_search(positions, cell, pbc, cutoff, device, dtype)`` returns ``edge_index`` [2, E] (int64) and the
integer ``unit_shifts`` [E, 3] in ``dtype`` (the model's edge vectors are r_ij = x_j − x_i + S·cell): the device
cell list on a GPU (no host round trip of the list), else the host search (dense / vesin / ASE,
``pairs.neighbour_list``) copied to the device.  ``method`` overrides the rule ("cell_list" or "host").
"""
from __future__ import annotations

from typing import Tuple

import numpy as np
import torch

from .cell_list import cell_list_neighbours
from .choice import CELL_LIST, HOST, device_search
from .pairs import neighbour_list

AUTO = "auto"


def neighbour_search(positions, cell, pbc, cutoff: float, device, dtype: torch.dtype, method: str = AUTO
                     ) -> Tuple[torch.Tensor, torch.Tensor]:
    """(edge_index [2, E], unit_shifts [E, 3] in ``dtype``) on ``device`` of one structure (module docstring).
    ``positions`` [N, 3] and ``cell`` [3, 3]: numpy arrays or tensors (float64 is used for the search)."""
    device = torch.device(device)
    method = device_search(device) if method == AUTO else method
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
