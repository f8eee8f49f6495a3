"""Symmetric strain ε applied to positions and cell, so that W = -∂E/∂ε comes out of the same backward pass.

x' = x (I + ε_s), h' = h (I + ε_s) with ε_s = (ε + εᵀ)/2 and ε = 0 (only its gradient is used): the virial
W = -∂E/∂ε = -V σ (docs/conventions.md).  Shared by every autograd evaluator (ACEModel, the .yace module);
``edge_gradient_outputs`` is the same for evaluators with hand-written per-edge gradients.
"""
from __future__ import annotations

from typing import Dict, Tuple

import torch

from .. import keys as K


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


def autograd_outputs(energy: torch.Tensor, e_node: torch.Tensor, positions: torch.Tensor, strain: torch.Tensor,
                     compute_forces: bool, compute_virials: bool, create_graph: bool) -> Dict[str, torch.Tensor]:
    """{energy, node_energy, forces = −∂E/∂x, virial = −∂E/∂ε} from one backward pass through the leaves of
    ``strained_geometry`` (every autograd evaluator: ACEModel's reference path, the .yace module)."""
    out: Dict[str, torch.Tensor] = {K.ENERGY: energy, K.NODE_ENERGY: e_node}
    if compute_forces or compute_virials:
        inputs = [positions] if compute_forces else []
        if compute_virials:
            inputs.append(strain)
        grads = torch.autograd.grad([energy.sum()], inputs, create_graph=create_graph, allow_unused=True)
        k = 0
        if compute_forces:
            g = grads[0]
            out[K.FORCES] = -g if g is not None else torch.zeros_like(positions)
            k = 1
        if compute_virials:
            g = grads[k]
            out[K.VIRIAL] = -g if g is not None else torch.zeros_like(strain)
    return out


def edge_gradient_outputs(e: torch.Tensor, g_vec: torch.Tensor, vectors: torch.Tensor, edge_index: torch.Tensor,
                          positions: torch.Tensor, batch: torch.Tensor, n_structures: int, compute_forces: bool,
                          compute_virials: bool) -> Dict[str, torch.Tensor]:
    """Structure energies, forces and virials from site energies ``e`` and per-edge ∂E/∂r_e ``g_vec`` [3, E]
    (the hand-adjoint evaluators): F_i = Σ_{e: i(e)=i} g_e − Σ_{e: j(e)=i} g_e, W = −½ Σ_e (r_e ⊗ g_e + g_e ⊗ r_e)."""
    i, j = edge_index[0], edge_index[1]
    energy = torch.zeros(n_structures, dtype=e.dtype, device=e.device).index_add_(0, batch, e)
    out: Dict[str, torch.Tensor] = {K.ENERGY: energy, K.NODE_ENERGY: e}
    g = g_vec.t().contiguous()  # [E, 3]
    if compute_forces:
        f = torch.zeros_like(positions).index_add_(0, i, g)
        out[K.FORCES] = f.index_add_(0, j, -g)
    if compute_virials:
        w = vectors.unsqueeze(2) * g.unsqueeze(1)
        w = -0.5 * (w + w.transpose(1, 2))
        out[K.VIRIAL] = torch.zeros((n_structures, 3, 3), dtype=w.dtype, device=w.device).index_add_(0, batch[i], w)
    return out
