"""Design-matrix rows of the linear ACE basis: energy, forces (−∂/∂x) and virials (−∂/∂ε) of every basis
function, through a named backend (``torchace.backends``: ``fused`` on CPU, ``analytic`` elsewhere by default).

The algebra (ACEpotentials.jl paper §II; the adjoint structure ∂B_i/∂r_ij = (∂B/∂A)(A_i)·∂φ(r_ij)/∂r_ij) is
written in ``torchace.model.backends.torch_rows`` (torch ops) and ``csrc/ace_cpu.cpp`` (the fused kernel).
"""
from __future__ import annotations

import logging
from typing import Dict, Optional

import torch

from .. import keys as K
from ..model.backends import AUTO, ROWS, select
from ..model.contract import capabilities
from ..model.evaluate import model_device_dtype
from ..structures.batch import DEFAULT_MIN_DISTANCE, collate

log = logging.getLogger("torchace")
DEFAULT_MEMORY_BUDGET = 256 * 2**20


def batch_rows(model, batch: Dict[str, torch.Tensor], memory_budget: int = DEFAULT_MEMORY_BUDGET,
               backend: str = AUTO) -> Dict[str, torch.Tensor]:
    """Rows for a collated batch (see ``design_matrix_rows``); ``backend``: "auto" or a backend name."""
    b = select(model, batch[K.POSITIONS].device, backend, ROWS)
    return b.rows(model, batch, memory_budget)


def design_matrix_rows(model, structures, *, min_distance: float = DEFAULT_MIN_DISTANCE,
                       memory_budget: int = DEFAULT_MEMORY_BUDGET, device: Optional[torch.device] = None,
                       backend: str = AUTO) -> Dict[str, torch.Tensor]:
    """Rows of the linear least-squares system for ``structures`` (``ase.Atoms`` or a list).

    ``energy`` [S, K]: Σ_i of every basis function; ``forces`` [3·ΣN, K] (structure-major, then atom,
    then x, y, z) = -∂/∂x of the energy rows; ``virial`` [S, 6, K] (Voigt xx, yy, zz, yz, xz, xy) =
    -∂/∂ε.  ``rows['energy'] @ model.coefficients + Σ E0`` is the model energy (E0 is not a column; a
    ZBL baseline, if the model has one, is added on top and has no columns either).  ``backend``: "auto"
    (the fastest that supports the model and device: ``torchace.backends.select``) or a backend name.
    """
    if capabilities(model).nonlinear:
        raise ValueError("a nonlinear model has no design-matrix rows (its energy is not linear in its parameters); "
                         "rows exist for the linear ACEModel, e.g. model.linear_model()")
    dev, dtype = model_device_dtype(model)
    batch = collate(structures, model.config.numbers, model.rcut, dtype=dtype, device=device or dev,
                    min_distance=min_distance)
    return batch_rows(model, batch, memory_budget, backend)
