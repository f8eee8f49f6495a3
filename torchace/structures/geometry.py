"""Edge vectors r_ij = x_j − x_i + S_ij·cell (the one place this is written; TorchScript-compatible)."""
from __future__ import annotations

import torch


def edge_vectors(positions: torch.Tensor, edge_index: torch.Tensor, unit_shifts: torch.Tensor, cell: torch.Tensor,
                 batch: torch.Tensor) -> torch.Tensor:
    """[E, 3]: r_e = x_j − x_i + S_e·cell[batch[i]] for edges (i, j) = edge_index[:, e], lattice shifts S_e."""
    i, j = edge_index[0], edge_index[1]
    shifts = torch.einsum("ea,eab->eb", unit_shifts.to(positions.dtype), cell[batch[i]])
    return positions[j] - positions[i] + shifts
