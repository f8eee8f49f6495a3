"""Committee uncertainties: spread of energy, forces and virial over posterior samples of the coefficients.

A Bayesian fit (``solvers.BLR``/``ARD`` with ``committee_size > 0``) leaves ``model.committee`` [n, K],
samples of the posterior N(mean, Σ) (ACEfit.jl's committee).  The model is linear in its coefficients, so

* energies: E_k = E(c̄) + e·(c_k − c̄) with e = Σ_i ∂E_i/∂c the energy row — one basis evaluation without
  derivatives gives every member (the fused kernel does it inside its single pass: ``committee_energy``);
* forces and virials: the force/virial rows times c_k (``member_predictions``), one design-row evaluation.

``member_predictions`` is the one committee-prediction function; ``spread`` the one standard deviation
(sample, ``correction=1``, as Julia's ``std``).
"""
from __future__ import annotations

from typing import Dict, Optional

import torch

from .. import keys as K
from ..model.backends import AUTO
from ..model.contract import capabilities
from ..model.evaluate import evaluate_batch
from ..structures.batch import collate
from ..structures.geometry import edge_vectors
from ..fit.rows import batch_rows


def member_predictions(committee: torch.Tensor, rows: Dict[str, torch.Tensor], energy_offset: torch.Tensor,
                       force_offset: Optional[torch.Tensor] = None,
                       virial_offset: Optional[torch.Tensor] = None) -> Dict[str, torch.Tensor]:
    """Per-member energy [n, S] (+ ``energy_offset`` [S]: Σ E0 and the baseline), forces [n, ΣN, 3] and Voigt
    virial [n, S, 6] from design rows (``torchace.design_matrix_rows`` layout) and a committee [n, K].
    ``force_offset`` [ΣN, 3] / ``virial_offset`` [S, 6]: the parts of the mean model's forces / virials that
    are not rows × coefficients (a nonlinear model's remainder; None: nothing is added)."""
    C = committee.to(rows[K.ENERGY])
    n = C.shape[0]
    out = {K.ENERGY: C @ rows[K.ENERGY].T + energy_offset.to(C),
           K.FORCES: (C @ rows[K.FORCES].T).view(n, -1, 3),
           K.VIRIAL: torch.einsum("nk,svk->nsv", C, rows[K.VIRIAL])}
    if force_offset is not None:
        out[K.FORCES] = out[K.FORCES] + force_offset.to(C).view(1, -1, 3)
    if virial_offset is not None:
        out[K.VIRIAL] = out[K.VIRIAL] + virial_offset.to(C).view(1, -1, 6)
    return out


def spread(members: torch.Tensor) -> torch.Tensor:
    """Sample standard deviation over the committee axis (dim 0)."""
    return members.std(dim=0, correction=1)


def energy_rows(model, positions: torch.Tensor, species: torch.Tensor, batch: torch.Tensor,
                edge_index: torch.Tensor, unit_shifts: torch.Tensor, cell: torch.Tensor,
                n_structures: int) -> torch.Tensor:
    """Energy rows [S, K] (Σ_i of every basis function) without derivatives: the torch route to committee
    energies for backends that do not compute them in their own pass."""
    nz, nb, npair = model.nz, model.n_b, model.n_pair
    with torch.no_grad():
        vec = edge_vectors(positions, edge_index, unit_shifts, cell, batch)
        B = model.site_basis(model.atomic_basis(vec, species, edge_index))  # [N, n_b]
        mb = torch.zeros((n_structures * nz, nb), dtype=B.dtype, device=B.device).index_add_(0, batch * nz + species, B)
        parts = [mb.view(n_structures, nz * nb)]
        if npair > 0:
            pr = torch.zeros((n_structures * nz * nz, npair), dtype=B.dtype, device=B.device)
            if vec.shape[0] > 0:
                i, j = edge_index[0], edge_index[1]
                V = model.pair_features(vec, species, edge_index)  # [E, n_pair]
                pr.index_add_(0, batch[i] * nz * nz + species[i] * nz + species[j], V)
            parts.append(pr.view(n_structures, nz * nz * npair))
        rows = torch.cat(parts, dim=1)
    return rows


def committee_energies(model, committee: torch.Tensor, mean_energy: torch.Tensor, inputs) -> torch.Tensor:
    """[n, S]: E_k = E(c̄) + e·(c_k − c̄) from the energy rows of ``inputs`` (``ACEModel.forward``'s first 7
    arguments) and the mean model's energies ``mean_energy`` [S] (baseline and E0 included there)."""
    e = energy_rows(model, *inputs)
    dc = committee.to(e) - model.coefficients.detach().to(e)
    return mean_energy.to(e) + dc @ e.T


def committee_predictions(model, structures, *, rows_model=None, backend: str = AUTO) -> Dict[str, torch.Tensor]:
    """Per-member energy [n, S], forces [n, ΣN, 3] and Voigt virial [n, S, 6] of ``structures`` (E0 and the
    baseline included in energies).

    ``rows_model``: the linear model whose design rows and ``coefficients`` c̄ the committee refers to, when it
    is not ``model`` itself (a nonlinear model's ``committee_linear_model``,
    ``torchace.uncertainty.nonlinear``); the members are then ``model``'s outputs + rows·(c_k − c̄) for
    energies, forces and virials.  ``backend``: of the rows."""
    comm = getattr(model, "committee", None)
    if comm is None:
        raise ValueError("the model has no committee: fit it with solvers.BLR(committee_size=n) or ARD(...)")
    if rows_model is None and capabilities(model).nonlinear:
        raise ValueError("a nonlinear model's committee predictions: torchace.uncertainty.nonlinear."
                         "committee_predictions / uncertainty")
    rm = model if rows_model is None else rows_model
    p = rm.coefficients.detach()
    batch = collate(structures, model.config.numbers, model.rcut, dtype=p.dtype, device=p.device)
    rows = batch_rows(rm, batch, backend=backend)
    full = rows_model is not None
    mean = evaluate_batch(model, batch, forces=full, virials=full)
    c = p.to(rows[K.ENERGY])
    offset = mean[K.ENERGY] - rows[K.ENERGY] @ c
    if not full:
        return member_predictions(comm, rows, offset)
    return member_predictions(comm, rows, offset, mean[K.FORCES].reshape(-1) - rows[K.FORCES] @ c,
                              K.to_voigt(mean[K.VIRIAL]) - rows[K.VIRIAL] @ c)


def uncertainty(model, structures) -> Dict[str, torch.Tensor]:
    """Committee standard deviations: ``energy`` [S] (eV), ``forces`` [ΣN, 3] (eV/Å), ``virial`` [S, 6] (eV)."""
    return {k: spread(v) for k, v in committee_predictions(model, structures).items()}


def force_spreads(rows_model, committee: torch.Tensor, batch: Dict[str, torch.Tensor], backend: str = AUTO):
    """(forces_std [ΣN, 3] eV/Å, Voigt virial_std [S, 6] eV) over the committee from one design-row evaluation of
    a neighbour-list batch (the engines' force uncertainties; ``rows_model`` as in ``committee_predictions``)."""
    rows = batch_rows(rows_model, batch, backend=backend)
    n_sys = batch[K.N_ATOMS].shape[0]
    p = member_predictions(committee, rows, torch.zeros(n_sys, dtype=rows[K.ENERGY].dtype,
                                                        device=rows[K.ENERGY].device))
    return spread(p[K.FORCES]), spread(p[K.VIRIAL])
