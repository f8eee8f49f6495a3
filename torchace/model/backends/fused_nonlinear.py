"""The ACE model with a nonlinear readout or learned radials (docs/nonlinear.md) on the fused C++ CPU kernel.

E_i = E0 + F(ρ_i1, …, ρ_iP) + pair_i, ρ_ip = c_p[z_i]·B_i, and ∂E_i/∂A = Σ_p ∂F/∂ρ_p ∂ρ_p/∂A is the linear
adjoint with the per-atom coefficients c_eff,i = Σ_p F'_p(ρ_i) c_p (ACEpotentials.jl paper §II; the analytic
path's ``site_terms`` does the same in torch ops).  Two passes of ``fused.py``'s kernel: the first gives the
densities ρ_ip (the kernel's extra coefficient sets, per atom) and E0 + pair_i; F and F' come from the model's
own embedding (one formula, ``embedding.py``); the second gives the forces and virials of c_eff (the kernel's
``site_mix``).  Learned radials enter the kernel as a mixing of its polynomial radials (``fused.basis_args``).
Eval mode without a graph only (no autograd through the kernel), CPU only; a ZBL baseline is added in torch
(``fused.add_baseline``).
"""
from __future__ import annotations

from typing import Dict, Optional

import torch

from ... import keys as K
from . import fused, products

DENSITIES = "densities"  # extra output of nonlinear_forward(..., with_densities=True): ρ [N, P]


def nonlinear_supported(model) -> Optional[str]:
    """None if the nonlinear ``model`` can be evaluated on the fused kernel, else the reason."""
    why = fused.supported(model, with_baseline=False)
    if why is not None:
        return why
    if not fused.available():
        return fused.build_error() or "the C++ extension could not be built"
    return None


def nonlinear_forward(model, positions: torch.Tensor, species: torch.Tensor, batch: torch.Tensor,
                      edge_index: torch.Tensor, unit_shifts: torch.Tensor, cell: torch.Tensor, n_structures: int,
                      compute_forces: bool = True, compute_virials: bool = True,
                      with_densities: bool = False) -> Dict[str, torch.Tensor]:
    """``ACEModel.forward``'s dictionary (energy, node_energy, forces?, virial?) of ``model`` through
    the fused kernel; ``with_densities``: also ``DENSITIES`` ρ [N, P] (what the Gauss–Newton rows need next)."""
    if positions.device.type != "cpu":
        raise ValueError("the fused kernel runs on CPU tensors; use the model itself on other devices")
    ext = fused.load_extension()
    dtype = positions.dtype
    f = dict(dtype=dtype, device="cpu")
    scheme = products.product_scheme(model)  # learned radials: the DAG
    dag, pairs = products.product_args(model, scheme, dtype)
    n_p = model.densities
    with torch.no_grad():
        c = model.density_coefficients.detach().reshape(n_p, -1)
        c_node = products.product_coefficients(model, c, scheme).to(**f).contiguous()  # [P, nz, nodes or terms]
        c_pair = fused.pair_constants(model, model.pair_coefficients, dtype)
        zeros_mb = torch.zeros(model.nz, c_node.shape[-1], **f)
        zeros_pair = torch.zeros(n_p, model.nz, model.nz, model.n_pair, **f)
        geometry = (positions.contiguous(), species.contiguous(), batch.contiguous(), edge_index.contiguous(),
                    unit_shifts.to(dtype).contiguous(), cell.to(dtype).contiguous(), int(n_structures))
        consts = fused.basis_args(model, dtype, radials=model.radials) + dag
        tail = (model.E0.detach().to(**f).contiguous(), c_pair, c_node, zeros_pair)
        # pass 1: E0 + pair per atom (the main coefficient set is zero) and the densities (the extra sets)
        _, base, _, _, _, _, rho = ext.site_energy_forces(*geometry, False, False, *consts, zeros_mb, *tail,
                                                          torch.zeros(0, **f), *pairs)
        rho = rho.t().contiguous()  # [N, P]
        emb = model.embedding_fn
        if emb is None:
            F, dF = rho[:, 0], torch.ones_like(rho)
        else:
            F, dF = emb.value_and_grad(rho, species)
        site = base + F
        out: Dict[str, torch.Tensor] = {
            K.ENERGY: torch.zeros(int(n_structures), **f).index_add_(0, batch, site), K.NODE_ENERGY: site}
        if with_densities:
            out[DENSITIES] = rho
        if compute_forces or compute_virials:
            # pass 2: the forces and virials of the pair part and of the per-atom coefficients Σ_p F'_p c_p
            _, _, forces, virial, _, _, _ = ext.site_energy_forces(*geometry, True, bool(compute_virials), *consts,
                                                                   zeros_mb, *tail, dF.detach().to(**f).contiguous(),
                                                                   *pairs)
            if compute_forces:
                out[K.FORCES] = forces
            if compute_virials:
                out[K.VIRIAL] = virial
    if model.zbl is not None:
        fused.add_baseline(model, out, positions, species, batch, edge_index, unit_shifts, cell, n_structures,
                           compute_forces, compute_virials)
    return out
