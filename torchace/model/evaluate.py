"""``evaluate``: energies, forces, virials and stresses of ``ase.Atoms`` with one batched model call.

Units: eV, Å.  ``virial`` = -∂E/∂ε = -V·σ (3×3, eV); ``stress`` is ASE's σ = -W/V (3×3, eV/Å³),
NaN for structures that are not periodic along all three axes.
"""
from __future__ import annotations

from typing import Dict, Optional

import torch

from .. import keys as K
from ..jobs import job_options
from ..resources import check_fits
from ..structures.batch import DEFAULT_MIN_DISTANCE, collate
from .backends import AUTO, EVALUATE, select

# bytes per edge that autograd's reference evaluation keeps (the one-particle basis φ [E, n_a], its inputs and the
# saved tensors of the backward pass), measured 1.4 kB at n_a = 12 and 6.7 kB at n_a = 75; the other backends
# stream edges (fused) or work in chunks of ``edge_chunk`` edges (analytic, triton)
REFERENCE_EDGE_BYTES = (400, 90)  # constant + per one-particle function


def model_inputs(model, batch: Dict[str, torch.Tensor]):
    """Positional arguments of ``ACEModel.forward`` from a collated batch."""
    return (batch[K.POSITIONS], batch[K.SPECIES], batch[K.BATCH], batch[K.EDGE_INDEX], batch[K.UNIT_SHIFTS],
            batch[K.CELL], int(batch[K.N_ATOMS].shape[0]))


def model_device_dtype(model):
    p = model.coefficients
    return p.device, p.dtype


def stress_from_virial(virial: torch.Tensor, cell: torch.Tensor, pbc: torch.Tensor,
                       volume: Optional[torch.Tensor] = None) -> torch.Tensor:
    """σ = −W/V [S, 3, 3] (NaN where not periodic along all axes); ``volume`` [S]: |det cell| when the caller
    holds it already (an engine's neighbour list: the cell is the same until the list is rebuilt)."""
    vol = torch.linalg.det(cell).abs() if volume is None else volume
    periodic = pbc.all(dim=1)
    stress = -virial / vol.clamp_min(1e-300).view(-1, 1, 1)
    return torch.where(periodic.view(-1, 1, 1), stress, torch.full_like(stress, float("nan")))


@job_options("evaluate", default_threads=None, with_log=False)
def evaluate(model, structures, *, forces: bool = True, virials: bool = True,
             min_distance: float = DEFAULT_MIN_DISTANCE, module: Optional[torch.nn.Module] = None,
             backend: str = AUTO) -> Dict[str, torch.Tensor]:
    """Evaluate ``model`` on one ``ase.Atoms`` or a list of them, in one batched call.

    Returns ``energy`` [S], ``node_energy`` [ΣN], ``forces`` [ΣN, 3] (structure-major), ``virial``
    [S, 3, 3], ``stress`` [S, 3, 3] and ``n_atoms`` [S], all detached.  ``module`` may be a scripted
    or exported copy of ``model`` (it is called instead; ``model`` supplies elements and rcut).
    ``backend``: "auto" (the fastest that supports the model and device, ``torchace.backends.select``; a
    model in training mode gets the path ``forward``'s rule gives it, ``torchace.model.derivatives``:
    ``reference``, or ``analytic`` for models whose hand adjoint is differentiable) or a backend name.
    ``threads``: torch threads for this call, restored after it (None, the default: unchanged; "auto": the
    usable cores minus the load average; ``torchace.jobs``).
    """
    device, dtype = model_device_dtype(model)
    batch = collate(structures, model.config.numbers, model.rcut, dtype=dtype, device=device,
                    min_distance=min_distance)
    return evaluate_batch(model, batch, forces=forces, virials=virials, module=module, backend=backend)


def evaluate_batch(model, batch: Dict[str, torch.Tensor], *, forces: bool = True, virials: bool = True,
                   module: Optional[torch.nn.Module] = None, backend: str = AUTO) -> Dict[str, torch.Tensor]:
    """``evaluate`` on an already collated batch (``torchace.structures.collate``)."""
    device = batch[K.POSITIONS].device
    b = None if module is not None else select(model, device, backend, EVALUATE)
    if b is not None and b.name == "reference":
        n_edges, n_a = int(batch[K.EDGE_INDEX].shape[1]), int(model.embedding.n_a)
        per_edge = REFERENCE_EDGE_BYTES[0] + REFERENCE_EDGE_BYTES[1] * n_a
        check_fits(n_edges * per_edge, f"the reference (autograd) evaluation of {n_edges:,} neighbour pairs "
                   f"(~{per_edge:,} bytes a pair for {n_a} one-particle functions)",
                   "use backend='auto' (fused or analytic: bounded memory; a model in training mode gets 'reference', "
                   "model.eval() does not) or evaluate fewer structures at a time", device)
    fn = module if module is not None else b.evaluator(model)
    out = fn(*model_inputs(model, batch), forces, virials)
    res = {k: v.detach() for k, v in out.items()}
    res[K.N_ATOMS] = batch[K.N_ATOMS]
    if virials:
        res[K.STRESS] = stress_from_virial(res[K.VIRIAL], batch[K.CELL], batch[K.PBC])
    return res
