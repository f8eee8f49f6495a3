"""Committee uncertainties: spread of energy, forces and virial over posterior samples of the coefficients.

A Bayesian fit (``solvers.BLR``/``ARD`` with ``committee_size > 0``) leaves ``model.committee`` [n, K],
samples of the posterior N(mean, Σ) (ACEfit.jl's committee).  Because the model is linear in its
coefficients, every committee member's prediction is ``rows @ c_k``: one design-matrix evaluation gives
all members at once.
"""
from __future__ import annotations

from typing import Dict

import torch

from .. import keys as K
from .rows import design_matrix_rows


def committee_predictions(model, structures) -> Dict[str, torch.Tensor]:
    """Per-member energy [n, S], forces [n, ΣN, 3] and Voigt virial [n, S, 6] (E0 included in energies)."""
    comm = getattr(model, "committee", None)
    if comm is None:
        raise ValueError("the model has no committee: fit it with solvers.BLR(committee_size=n) or ARD(...)")
    rows = design_matrix_rows(model, structures)
    C = comm.to(rows[K.ENERGY])
    from ..structures.batch import collate

    batch = collate(structures, model.config.numbers, model.rcut, dtype=C.dtype, device=C.device)
    e0 = torch.zeros(int(batch[K.N_ATOMS].shape[0]), dtype=C.dtype, device=C.device)
    e0.index_add_(0, batch[K.BATCH], model.E0.to(C)[batch[K.SPECIES]])
    n = C.shape[0]
    return {K.ENERGY: C @ rows[K.ENERGY].T + e0,
            K.FORCES: (C @ rows[K.FORCES].T).view(n, -1, 3),
            K.VIRIAL: torch.einsum("nk,svk->nsv", C, rows[K.VIRIAL])}


def uncertainty(model, structures) -> Dict[str, torch.Tensor]:
    """Committee standard deviations: ``energy`` [S] (eV), ``forces`` [ΣN, 3] (eV/Å), ``virial`` [S, 6] (eV)."""
    p = committee_predictions(model, structures)
    return {k: v.std(dim=0, correction=1) for k, v in p.items()}
