"""Symmetric strain ε applied to positions and cell, so that W = -∂E/∂ε comes out of the same backward pass.

x' = x (I + ε_s), h' = h (I + ε_s) with ε_s = (ε + εᵀ)/2 and ε = 0 (only its gradient is used): the virial
W = -∂E/∂ε = -V σ (docs/conventions.md).  Shared by every autograd evaluator (ACEModel, the .yace module).
"""
from __future__ import annotations

from typing import Tuple

import torch


def strained_geometry(positions: torch.Tensor, cell: torch.Tensor, batch: torch.Tensor, n_structures: int,
                      compute_forces: bool, compute_virials: bool
                      ) -> Tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
    """(positions leaf, strain leaf [S, 3, 3], strained positions, strained cell)."""
    strain = torch.zeros((n_structures, 3, 3), dtype=positions.dtype, device=positions.device)
    if compute_virials:
        strain.requires_grad_(True)
    if compute_forces:
        positions = positions.detach().requires_grad_(True)
    sym = 0.5 * (strain + strain.transpose(1, 2))
    pos = positions + torch.einsum("na,nab->nb", positions, sym[batch])
    cel = cell + torch.bmm(cell, sym)
    return positions, strain, pos, cel
