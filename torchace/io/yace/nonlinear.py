"""What ``write_yace`` writes for an ``ACEModel`` with a nonlinear readout or learned radials (docs/nonlinear.md,
docs/yace.md "Nonlinear models").

ML-PACE's C-tilde potential has the nonlinear model's form: per atom P densities ρ_p = Σ_f c̃_{f,p} Re Π A,
E_i = E0 + Σ_p a_p f(ρ_p; m_p) (``FinnisSinclairShiftedScaled``, ``FS_parameters`` [a_1, m_1, a_2, m_2, …])
and radial functions R^{μ_i μ_j}_{nl}(r) = Σ_k crad[μ_i, μ_j, n, l, k] g_k(r) that may depend on l.  So:

* densities: c̃_{f,p} is c_p[z] mapped through the coupling and the complex harmonics exactly as the linear
  model's c (``ctilde.ctilde_functions`` with P coefficient rows); ``ndensity`` = P;
* embedding: None → ndensity 1, FS_parameters [1, 1] (F = ρ_1, the linear writer's line); "fs" → the
  model's ``embedding_fn.fs_parameters()`` per element; the MLP embedding is refused (no ML-PACE form);
* learned radials: R_nl = Σ_k W[μ_i, μ_j, n, l, k] s_{k,l}(μ_j) P_k·env is fitted itself, per (n, l), in the
  writer's radial base (``yace_radial``, same tolerance); the prior's scale s is inside R_nl, so it is not
  folded into c̃ again;
* pair part, ZBL and E0: those of ``model.linear_model()`` (density 1 + the pair coefficients), written as
  for a linear model (the pair table, the ``E0`` list).
"""
from __future__ import annotations

from typing import Any, List, NamedTuple, Optional

import numpy as np
import torch

from ...model.contract import capabilities


class YaceParts(NamedTuple):
    basis: Any                                  # ACEModel (float64, CPU): spec, coupling, radials, E0
    coefficients: torch.Tensor                  # [P, NZ, n_b] many-body coefficients, one row per density
    fs_parameters: Optional[List[List[float]]]  # [NZ][2P]; None: the linear embedding [1, 1]
    radial_weights: Optional[np.ndarray]        # W·s [NZ, NZ, n_poly, max_l + 1, n_poly]; None: fixed radials
    pair_model: Any                             # ACEModel whose pair part and ZBL go into the pair table


def is_nonlinear(model) -> bool:
    return capabilities(model).nonlinear


def check_exportable(model) -> None:
    """Refuse what ML-PACE cannot evaluate: the MLP embedding (before any file is touched)."""
    f = model.embedding_fn
    if f is not None and getattr(f, "name", None) != "fs":
        raise ValueError(
            f"write_yace: this ACEModel has the {getattr(f, 'name', type(f).__name__)!r} embedding, "
            "which is torch only: ML-PACE's .yace (C-tilde basis) has only the Finnis-Sinclair embeddings. "
            "Export this model with torchace.export(model, path, format='torchscript') or format='metatomic' "
            "(LAMMPS pair_style metatomic) instead, or use embedding='fs' (ML-PACE's "
            "FinnisSinclairShiftedScaled) or None for a .yace")


def learned_radial_weights(model) -> np.ndarray:
    """W·s [NZ, NZ, n_poly, max_l + 1, n_poly]: (W·s)[a, b, n, l, k] = W[a, b, n, l, k] · nl_scale[k·NZ + b, l],
    the coefficients of the learned R_nl on the linear polynomials P_k·env (``LearnableRadials``)."""
    W = model.radials.weights.detach().to("cpu", torch.float64).numpy()
    nz, n_poly = W.shape[0], W.shape[2]
    s = model.embedding.nl_scale.detach().to("cpu", torch.float64).numpy()   # [n_poly·NZ, max_l + 1]
    s = s.reshape(n_poly, nz, s.shape[1]).transpose(1, 0, 2)                 # [b, k, l]
    return W * s.transpose(0, 2, 1)[None, :, None, :, :]                     # s[b, l, k] on [a, b, n, l, k]


def nonlinear_parts(model) -> YaceParts:
    """The pieces of the export of an ``ACEModel`` with embedding None or "fs" (float64, CPU copies;
    the caller's model is never changed)."""
    check_exportable(model)
    if model.density_coefficients.dtype != torch.float64 or model.density_coefficients.device.type != "cpu":
        # rebuild in float64 on the CPU from the model file's document (buffers rounded to float32 would
        # leave a ~1e-7 step at rcut; see write_yace)
        model = type(model).from_dict(model.to_dict())
    c = model.density_coefficients.detach().clone()
    if not torch.isfinite(c).all() or not torch.isfinite(model.pair_coefficients.detach()).all():
        raise ValueError("model coefficients are not finite: nothing to export")
    fs = None
    if model.embedding_fn is not None:
        fs = [[float(v) for v in row] for row in model.embedding_fn.fs_parameters()]
        if not all(np.isfinite(row).all() for row in fs):
            raise ValueError(f"FS parameters are not finite: {fs}")
    W = None
    if model.radials is not None:
        W = learned_radial_weights(model)
        if not np.isfinite(W).all():
            raise ValueError("learned radial weights are not finite: nothing to export")
    lin = model.linear_model().eval()  # the basis, and density 1 + the pair part (its pair table and ZBL)
    return YaceParts(lin, c, fs, W, lin)


def embedding_line(z: int, P: int, fs: Optional[List[List[float]]], fmt) -> str:
    """The ``embeddings`` entry of element z (the linear writer's line for fs None)."""
    params = "[1, 1]" if fs is None else "[" + ", ".join(fmt(v) for v in fs[z]) + "]"
    return (f"  {z}: {{ndensity: {P}, FS_parameters: {params}, npoti: FinnisSinclairShiftedScaled, "
            "rho_core_cutoff: 100000, drho_core_cutoff: 250}")
