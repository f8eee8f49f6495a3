"""The one derivative driver: forces F = −∂E/∂x and virials W = −∂E/∂ε of E = Σ_i E_i(r_ij) for every model.

Two paths to the same numbers (docs/conventions.md; ACEpotentials.jl paper §II):

- **autograd** (``reference_forward``): a symmetric strain ε acts on positions and cell
  (``strain.strained_geometry``), the edge vectors r_ij are formed from the strained geometry, E_i from the
  model's ``node_energies``, and one backward pass gives F and W (``strain.autograd_outputs``; with
  ``create_graph`` in training mode, so that force losses are differentiable in the parameters).
- **hand adjoint** (``analytic_forward``): the edge vectors (the pairs beyond rcut of a skin list dropped: they
  contribute exactly zero), the model's ``site_terms`` → E_i and g_e = ∂E/∂r_e (centre atoms in chunks of at
  most ``edge_chunk`` edges, which bounds the per-edge temporaries), then F_i = Σ_{e: i(e)=i} g_e −
  Σ_{e: j(e)=i} g_e and W = −½ Σ_e (r_e ⊗ g_e + g_e ⊗ r_e) (``strain.edge_gradient_outputs``).  With
  ``create_graph`` the adjoint is recorded by autograd (one backward pass for a force loss).

**The rule** (``use_hand_adjoint``; ``forward`` and the ``analytic`` backend follow it): the hand adjoint when the
model has one (``model.analytic``, from ``Capabilities.hand_adjoint``; tests and benchmarks may switch it off),
no graph through positions or cell is wanted (neither requires grad), and either the model is in eval mode or its
adjoint is differentiable in the parameters (``Capabilities.adjoint_graph``: then training runs it with
``create_graph``); otherwise autograd.  So: eval → hand adjoint; training → autograd, except for models whose
adjoint is differentiable (the nonlinear model), which keep the hand adjoint with ``create_graph``; inputs that
require grad (derivatives of forces wanted) → autograd.

Everything here takes tensors and the model's own (scriptable) methods, so ``torch.jit.script`` of a model
compiles the driver with it.
"""
from __future__ import annotations

from typing import Dict, List, Optional, Tuple

import torch

from ..structures.geometry import edge_vectors
from .strain import autograd_outputs, edge_gradient_outputs, strained_geometry

# the hand adjoint handles at most this many edges at once (centre atoms in chunks): bounds the per-edge
# temporaries (~(3·n_a + 2·max_n + n_y)·8 bytes per edge for ACE) for very large systems
EDGE_CHUNK = 1 << 22


def use_hand_adjoint(analytic: bool, adjoint_graph: bool, training: bool, inputs_require_grad: bool) -> bool:
    """The rule (module docstring): hand adjoint iff the model has one, no graph through the inputs is wanted,
    and the model is in eval mode or its adjoint is differentiable."""
    return analytic and not inputs_require_grad and (adjoint_graph or not training)


def inside_cutoff(vectors: torch.Tensor, edge_index: torch.Tensor, rcut: float) -> Tuple[torch.Tensor, torch.Tensor]:
    """Edge vectors and indices without the pairs at or beyond ``rcut`` (skin lists: they contribute exactly zero)."""
    inside = (vectors * vectors).sum(-1) < rcut * rcut
    if not bool(inside.all()):
        keep = torch.nonzero(inside).squeeze(1)
        vectors = vectors.index_select(0, keep)
        edge_index = edge_index.index_select(1, keep)
    return vectors, edge_index


def structure_energies(e_node: torch.Tensor, batch: torch.Tensor, n_structures: int) -> torch.Tensor:
    return torch.zeros(n_structures, dtype=e_node.dtype, device=e_node.device).index_add_(0, batch, e_node)


class DerivativeDriver:
    """``forward`` / ``reference_forward`` / ``analytic_forward`` / ``baseline`` of every energy model (mixed into
    ``contract.EnergyModel``).  Reads the model's ``node_energies``, ``site_terms``, ``baseline_node_energies``,
    ``rcut``, ``edge_chunk`` and the rule's switches ``analytic`` (hand adjoint available and wanted) and
    ``adjoint_graph`` (set by ``init_driver`` from the capabilities)."""

    def init_driver(self) -> None:
        """Set the driver's switches from ``capabilities`` (call at the end of a model's ``__init__``)."""
        caps = self.capabilities
        self.analytic = bool(caps.hand_adjoint)
        self.adjoint_graph = bool(caps.adjoint_graph)
        self.edge_chunk = EDGE_CHUNK

    def forward(self, positions: torch.Tensor, species: torch.Tensor, batch: torch.Tensor,
                edge_index: torch.Tensor, unit_shifts: torch.Tensor, cell: torch.Tensor, n_structures: int,
                compute_forces: bool = True, compute_virials: bool = True) -> Dict[str, torch.Tensor]:
        """{energy [S], node_energy [N], forces [N, 3]?, virial [S, 3, 3]?} by the path the rule picks
        (``torchace.model.derivatives``; the TorchScript export's entry point)."""
        if use_hand_adjoint(self.analytic, self.adjoint_graph, self.training,
                            positions.requires_grad or cell.requires_grad):
            return self.analytic_forward(positions, species, batch, edge_index, unit_shifts, cell, n_structures,
                                         compute_forces, compute_virials, self.training)
        return self.reference_forward(positions, species, batch, edge_index, unit_shifts, cell, n_structures,
                                      compute_forces, compute_virials)

    def reference_forward(self, positions: torch.Tensor, species: torch.Tensor, batch: torch.Tensor,
                          edge_index: torch.Tensor, unit_shifts: torch.Tensor, cell: torch.Tensor, n_structures: int,
                          compute_forces: bool = True, compute_virials: bool = True) -> Dict[str, torch.Tensor]:
        """The readable definition: E from ``node_energies``, F and W by autograd through the strain
        (``create_graph`` in training mode)."""
        positions, strain, vectors = self.strained_edges(positions, batch, edge_index, unit_shifts, cell, n_structures,
                                                         compute_forces, compute_virials)
        e_node = self.node_energies(vectors, species, edge_index)
        return autograd_outputs(structure_energies(e_node, batch, n_structures), e_node, positions, strain,
                                compute_forces, compute_virials, self.training)

    @torch.jit.unused
    def baseline(self, positions: torch.Tensor, species: torch.Tensor, batch: torch.Tensor,
                 edge_index: torch.Tensor, unit_shifts: torch.Tensor, cell: torch.Tensor,
                 n_structures: int) -> Dict[str, torch.Tensor]:
        """Energy, forces and virial of the baseline alone (no E0, no basis); zeros without a baseline (the fit
        subtracts it from its targets; not part of an export)."""
        positions, strain, vectors = self.strained_edges(positions, batch, edge_index, unit_shifts, cell, n_structures,
                                                         True, True)
        e_node = self.baseline_node_energies(vectors, species, edge_index)
        return autograd_outputs(structure_energies(e_node, batch, n_structures), e_node, positions, strain, True, True,
                                self.training)

    def strained_edges(self, positions: torch.Tensor, batch: torch.Tensor, edge_index: torch.Tensor,
                       unit_shifts: torch.Tensor, cell: torch.Tensor, n_structures: int, compute_forces: bool,
                       compute_virials: bool) -> Tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """(positions leaf, strain leaf, edge vectors of the strained geometry) for the autograd path."""
        positions, strain, pos, cel = strained_geometry(positions, cell, batch, n_structures, compute_forces,
                                                        compute_virials)
        return positions, strain, edge_vectors(pos, edge_index, unit_shifts, cel, batch)

    def analytic_forward(self, positions: torch.Tensor, species: torch.Tensor, batch: torch.Tensor,
                         edge_index: torch.Tensor, unit_shifts: torch.Tensor, cell: torch.Tensor, n_structures: int,
                         compute_forces: bool = True, compute_virials: bool = True,
                         create_graph: Optional[bool] = None) -> Dict[str, torch.Tensor]:
        """Energy, forces and virial from the per-edge gradients of ``site_terms``; ``create_graph``: recorded by
        autograd (the outputs differentiable in the parameters, for models with ``adjoint_graph``); None: as the
        rule has it (in training mode for models with ``adjoint_graph``).  Without ``create_graph`` a
        differentiable adjoint runs without autograd; one that is not differentiable records only what it
        chooses to (``ACEModel``: the energy, linear in the coefficients; its forces carry no graph)."""
        if create_graph is None:
            create_graph = self.training and self.adjoint_graph
        vectors = edge_vectors(positions, edge_index, unit_shifts, cell, batch)
        vectors, edge_index = inside_cutoff(vectors, edge_index, self.rcut)
        need_grad = compute_forces or compute_virials
        if create_graph or not self.adjoint_graph:  # (TorchScript has torch.no_grad, no set_grad_enabled)
            e, g_vec = self.chunked_site_terms(vectors, edge_index, species, need_grad)
        else:
            with torch.no_grad():
                e, g_vec = self.chunked_site_terms(vectors, edge_index, species, need_grad)
        return edge_gradient_outputs(e, g_vec, vectors, edge_index, positions, batch, n_structures, compute_forces,
                                     compute_virials)

    def chunked_site_terms(self, vectors: torch.Tensor, edge_index: torch.Tensor, species: torch.Tensor,
                           need_grad: bool) -> Tuple[torch.Tensor, torch.Tensor]:
        """``site_terms`` of all atoms; above ``edge_chunk`` edges, centre atoms in chunks of about that many
        edges (each atom's edges in one chunk)."""
        i, j = edge_index[0], edge_index[1]
        n_atoms, n_edges = species.shape[0], vectors.shape[0]
        if n_edges <= self.edge_chunk:
            return self.site_terms(vectors, i, species[i], species[j], species, need_grad)
        n_chunks = (n_edges + self.edge_chunk - 1) // self.edge_chunk
        step = (n_atoms + n_chunks - 1) // n_chunks
        e_parts: List[torch.Tensor] = []
        g_vec = torch.zeros((3, n_edges), dtype=vectors.dtype, device=vectors.device)
        for a0 in range(0, n_atoms, step):
            a1 = min(a0 + step, n_atoms)
            sel = torch.nonzero((i >= a0) & (i < a1)).squeeze(1)
            ii = i.index_select(0, sel)
            e_c, g_c = self.site_terms(vectors.index_select(0, sel), ii - a0, species.index_select(0, ii),
                                       species.index_select(0, j.index_select(0, sel)), species[a0:a1], need_grad)
            e_parts.append(e_c)
            g_vec.index_copy_(1, sel, g_c)
        return torch.cat(e_parts), g_vec


def autograd_site_terms(model, vectors: torch.Tensor, i: torch.Tensor, zi: torch.Tensor, zj: torch.Tensor,
                        species: torch.Tensor, need_grad: bool) -> Tuple[torch.Tensor, torch.Tensor]:
    """``site_terms`` of any model by autograd of ``node_energies`` on the edge vectors (models without a hand
    adjoint; Python only): each edge e gets its own neighbour of species zj[e], so the site energies of the
    centres ``species`` are those of the full structure (E_i depends on the edges of i only)."""
    n_atoms, n_edges = species.shape[0], vectors.shape[0]
    neighbours = torch.arange(n_atoms, n_atoms + n_edges, dtype=i.dtype, device=i.device)
    with torch.enable_grad():
        v = vectors.detach().requires_grad_(need_grad)
        e = model.node_energies(v, torch.cat([species, zj]), torch.stack([i, neighbours]))[:n_atoms]
        if not need_grad or n_edges == 0:
            return e.detach(), torch.zeros((3, n_edges), dtype=vectors.dtype, device=vectors.device)
        (g,) = torch.autograd.grad([e.sum()], [v], allow_unused=True)
    g = torch.zeros_like(vectors) if g is None else g
    return e.detach(), g.t().contiguous()
