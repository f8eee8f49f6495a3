"""The contract of every energy model: E = Σ_i E_i, E_i a function of the edge vectors r_ij (j within rcut).

An energy model (``ACEModel`` with any readout, ``PACEModel``) is an ``nn.Module`` that declares

- ``elements`` (chemical symbols in model order: the species index), ``rcut`` (Å), ``device`` / ``dtype``;
- ``node_energies(vectors [E, 3], species [N], edge_index [2, E]) -> E_i [N]``: the site energies, the readable
  definition that autograd differentiates (``torchace.model.derivatives``: F = −∂E/∂x, W = −∂E/∂ε through a
  symmetric strain of the edge vectors);
- optionally ``site_terms(vectors, i, zi, zj, species, need_grad) -> (E_i [N], ∂E/∂r_e [3, E])``: the hand
  adjoint, for models whose ``capabilities.hand_adjoint`` is True;
- ``capabilities``: what the rest of torchace may ask of it (``Capabilities``), in place of tests of the class
  or of its attributes.

The derivative driver (``derivatives.DerivativeDriver``, mixed in here) gives every model the same ``forward``
(``positions, species, batch, edge_index, unit_shifts, cell, n_structures, compute_forces, compute_virials``)
and the rule that picks autograd or the hand adjoint.  An additive, coefficient-free baseline (ZBL,
``model.zbl``; None: none) enters every family through ``baseline_node_energies`` / ``baseline_site_terms``.
"""
from __future__ import annotations

import abc
from dataclasses import dataclass
from typing import List, Tuple

import torch

from ..basis.embedding import pool
from .derivatives import DerivativeDriver, autograd_site_terms

# readouts: how the site energy is read from the basis (docs/nonlinear.md, docs/pace.md); "other": an object
# outside the contract (a scripted or exported module), which declares nothing
LINEAR, FS, MLP, PACE, OTHER = "linear", "fs", "mlp", "pace", "other"
READOUTS = (LINEAR, FS, MLP, PACE, OTHER)
# the readouts of the ACE model (``model.ace``): what ``torchace.train`` and the nonlinear committee take
ACE_READOUTS = (LINEAR, FS, MLP)
# evaluation backends (torchace.model.backends.registry); "module": the model's own forward only
TORCH_BACKENDS = ("reference", "analytic")


@dataclass(frozen=True)
class Capabilities:
    """What a model declares about itself (one frozen record per model; read ``model.capabilities``).

    readout:        "linear" (E_i = c·B_i), "fs" / "mlp" (F(ρ_1 … ρ_P), ρ_p = c_p·B_i) or "pace" (a .yace)
    rows:           E is linear in ``model.coefficients``: design-matrix rows exist (``torchace.fit``)
    nonlinear:      an ACE model whose E is not linear in ``coefficients`` through fixed basis functions (a
                    nonlinear readout or learned radials; docs/nonlinear.md): trained, not fitted, and its
                    committee is that of ``torchace.uncertainty.nonlinear``
    committee:      may carry a committee of coefficient samples that inference uses (uncertainties)
    hand_adjoint:   implements ``site_terms`` (the driver's hand-adjoint path)
    adjoint_graph:  ``site_terms`` is differentiable in the parameters: training runs it with ``create_graph``
                    (one backward pass for a force loss) instead of the autograd path's double backward
    scriptable:     ``torch.jit.script`` of the model itself works (exports)
    learnable_radials: the many-body radials have trainable weights
    backends:       the evaluation backends that run it (``torchace.model.backends``; "module": own forward)
    """
    readout: str
    rows: bool = False
    nonlinear: bool = False
    committee: bool = False
    hand_adjoint: bool = False
    adjoint_graph: bool = False
    scriptable: bool = False
    learnable_radials: bool = False
    backends: Tuple[str, ...] = ("module",)

    def __post_init__(self):
        if self.readout not in READOUTS:
            raise ValueError(f"readout must be one of {READOUTS}, got {self.readout!r}")
        if self.adjoint_graph and not self.hand_adjoint:
            raise ValueError("adjoint_graph needs hand_adjoint")


# what an object outside the contract declares: nothing but its own forward
NO_CAPABILITIES = Capabilities(readout=OTHER)


def capabilities(model) -> Capabilities:
    """``model.capabilities`` for an energy model, ``NO_CAPABILITIES`` for any other object (a TorchScript
    module, None): the one place that asks what a model can do."""
    return model.capabilities if isinstance(model, EnergyModel) else NO_CAPABILITIES


class EnergyModel(DerivativeDriver, torch.nn.Module, metaclass=abc.ABCMeta):
    """The base of every energy model (see the module docstring); subclasses set ``rcut``, ``zbl`` (or None)
    and ``edge_chunk`` and implement ``elements``, ``capabilities``, ``node_energies`` (and ``site_terms``)."""

    @property
    @abc.abstractmethod
    def elements(self) -> List[str]:
        """Chemical symbols in model order (species index → element)."""

    @property
    @abc.abstractmethod
    def capabilities(self) -> Capabilities:
        """What the model declares (``Capabilities``)."""

    @property
    def device(self) -> torch.device:
        return self.coefficients.device

    @property
    def dtype(self) -> torch.dtype:
        return self.coefficients.dtype

    @abc.abstractmethod
    def node_energies(self, vectors: torch.Tensor, species: torch.Tensor, edge_index: torch.Tensor) -> torch.Tensor:
        """Site energies E_i [N] from edge vectors r_ij [E, 3] (edges i → j = ``edge_index`` [2, E])."""

    def site_terms(self, vectors: torch.Tensor, i: torch.Tensor, zi: torch.Tensor, zj: torch.Tensor,
                   species: torch.Tensor, need_grad: bool) -> Tuple[torch.Tensor, torch.Tensor]:
        """Site energies of the atoms ``species`` (centres ``i`` index them) and ∂E/∂r_e [3, E] of their edges.
        Models with ``hand_adjoint`` write it by hand; this default is autograd on the edge vectors (what the
        driver's edge path runs for the others; the rule does not pick it for them)."""
        return autograd_site_terms(self, vectors, i, zi, zj, species, need_grad)

    # ---- the additive baseline (ZBL): one path for every family ----

    def baseline_node_energies(self, vectors: torch.Tensor, species: torch.Tensor,
                               edge_index: torch.Tensor) -> torch.Tensor:
        """Site energies of the coefficient-free baseline, ½ Σ_j V_ZBL(r_ij) (zeros without a baseline)."""
        e = torch.zeros(species.shape[0], dtype=vectors.dtype, device=vectors.device)
        zbl = self.zbl
        if zbl is not None and vectors.shape[0] > 0:
            i, j = edge_index[0], edge_index[1]
            r = torch.linalg.norm(vectors, dim=-1)
            e = pool(0.5 * zbl(r, species[i], species[j]), i, species.shape[0])
        return e

    def baseline_site_terms(self, r: torch.Tensor, u: torch.Tensor, i: torch.Tensor, zi: torch.Tensor,
                            zj: torch.Tensor, n_atoms: int) -> Tuple[torch.Tensor, torch.Tensor]:
        """Site energies ½ Σ_j E_ZBL(r_ij) and per-edge ∂/∂r_e [3, E] of the ZBL baseline (``r`` = |r_e|,
        ``u`` [3, E] = r̂_e); used by the hand adjoints and by backends that compute the basis elsewhere."""
        zbl = self.zbl
        if zbl is None:
            return (torch.zeros(n_atoms, dtype=r.dtype, device=r.device),
                    torch.zeros((3, r.shape[0]), dtype=r.dtype, device=r.device))
        with torch.no_grad():
            ez, dz = zbl.with_grad(r, zi, zj)
            g = u * (0.5 * dz)
        return pool(0.5 * ez, i, n_atoms), g
