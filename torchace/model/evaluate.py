"""``evaluate``: energies, forces, virials and stresses of ``ase.Atoms`` with one batched model call.

Units: eV, Å.  ``virial`` = -∂E/∂ε = -V·σ (3×3, eV); ``stress`` is ASE's σ = -W/V (3×3, eV/Å³),
NaN for structures that are not periodic along all three axes.
"""
from __future__ import annotations

from typing import Dict, Optional

import torch

from .. import keys as K
from ..structures.batch import DEFAULT_MIN_DISTANCE, collate
from .backends import AUTO, EVALUATE, select


def model_inputs(model, batch: Dict[str, torch.Tensor]):
    """Positional arguments of ``ACEModel.forward`` from a collated batch."""
    return (batch[K.POSITIONS], batch[K.SPECIES], batch[K.BATCH], batch[K.EDGE_INDEX], batch[K.UNIT_SHIFTS],
            batch[K.CELL], int(batch[K.N_ATOMS].shape[0]))


def model_device_dtype(model):
    p = model.coefficients
    return p.device, p.dtype


def stress_from_virial(virial: torch.Tensor, cell: torch.Tensor, pbc: torch.Tensor) -> torch.Tensor:
    vol = torch.linalg.det(cell).abs()
    periodic = pbc.all(dim=1)
    stress = -virial / vol.clamp_min(1e-300).view(-1, 1, 1)
    return torch.where(periodic.view(-1, 1, 1), stress, torch.full_like(stress, float("nan")))


def evaluate(model, structures, *, forces: bool = True, virials: bool = True,
             min_distance: float = DEFAULT_MIN_DISTANCE, module: Optional[torch.nn.Module] = None,
             backend: str = AUTO) -> Dict[str, torch.Tensor]:
    """Evaluate ``model`` on one ``ase.Atoms`` or a list of them, in one batched call.

    Returns ``energy`` [S], ``node_energy`` [ΣN], ``forces`` [ΣN, 3] (structure-major), ``virial``
    [S, 3, 3], ``stress`` [S, 3, 3] and ``n_atoms`` [S], all detached.  ``module`` may be a scripted
    or exported copy of ``model`` (it is called instead; ``model`` supplies elements and rcut).
    ``backend``: "auto" (the fastest that supports the model and device, ``torchace.backends.select``; a
    model in training mode gets ``reference``, whose forces are differentiable) or a backend name.
    """
    device, dtype = model_device_dtype(model)
    batch = collate(structures, model.config.numbers, model.rcut, dtype=dtype, device=device,
                    min_distance=min_distance)
    return evaluate_batch(model, batch, forces=forces, virials=virials, module=module, backend=backend)


def evaluate_batch(model, batch: Dict[str, torch.Tensor], *, forces: bool = True, virials: bool = True,
                   module: Optional[torch.nn.Module] = None, backend: str = AUTO) -> Dict[str, torch.Tensor]:
    """``evaluate`` on an already collated batch (``torchace.structures.collate``)."""
    fn = module if module is not None else select(model, batch[K.POSITIONS].device, backend, EVALUATE).evaluator(model)
    out = fn(*model_inputs(model, batch), forces, virials)
    res = {k: v.detach() for k, v in out.items()}
    res[K.N_ATOMS] = batch[K.N_ATOMS]
    if virials:
        res[K.STRESS] = stress_from_virial(res[K.VIRIAL], batch[K.CELL], batch[K.PBC])
    return res
