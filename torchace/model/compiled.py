"""``torch.compile`` of the hand-adjoint evaluation (``ACEModel.compiled_forward``; docs/performance.md).

The per-site/per-edge work (``site_terms``) is compiled by inductor (fused C++/OpenMP loops on CPU, Triton
kernels on CUDA) with dynamic shapes, so new atom or edge counts do not recompile; the scatters into structure
energies, forces and virials (``strain.edge_gradient_outputs``) stay eager.  Eval mode only, Python only.
"""
from __future__ import annotations

import warnings
from typing import Dict

import torch

from .derivatives import inside_cutoff
from .strain import edge_gradient_outputs


def compiled_forward(model, **compile_kwargs):
    """``model.forward`` (eval mode) with ``site_terms`` compiled; the first call compiles (tens of seconds on 2
    cores).  Above ``model.edge_chunk`` edges the eager chunked path runs (memory-bounded)."""
    # torch 2.13's inductor miscompiles parallel (atomic-add) scatters into small buffers on CPU with ≥ 2
    # threads (assertion, or heap corruption that no try/except can catch): generate single-threaded C++
    # there unless the caller chooses otherwise.
    if model.coefficients.device.type == "cpu":
        opts = dict(compile_kwargs.pop("options", None) or {})
        opts.setdefault("cpp.threads", 1)
        compile_kwargs["options"] = opts
    state = {"site": torch.compile(model.site_terms, dynamic=True, **compile_kwargs)}

    def forward(positions: torch.Tensor, species: torch.Tensor, batch: torch.Tensor, edge_index: torch.Tensor,
                unit_shifts: torch.Tensor, cell: torch.Tensor, n_structures: int, compute_forces: bool = True,
                compute_virials: bool = True) -> Dict[str, torch.Tensor]:
        if model.training:
            raise RuntimeError("compiled_forward is for eval mode (call model.eval())")
        positions, cell = positions.detach(), cell.detach()
        vectors, ei = inside_cutoff(model.edge_vectors(positions, edge_index, unit_shifts, cell, batch), edge_index,
                                    model.rcut)
        if vectors.shape[0] > model.edge_chunk:  # memory-bounded chunks: the eager path
            return model.analytic_forward(positions, species, batch, edge_index, unit_shifts, cell, n_structures,
                                          compute_forces, compute_virials)
        i, j = ei[0], ei[1]
        args = (vectors, i, species[i], species[j], species, compute_forces or compute_virials)
        with torch.no_grad():  # eval: no graph through the parameters (as the driver's eval path)
            try:
                e, g = state["site"](*args)
            except Exception as err:  # noqa: BLE001 — a compiler failure must not stop an MD run
                if state["site"] is model.site_terms:
                    raise
                warnings.warn(f"torch.compile failed ({type(err).__name__}: {str(err).strip()[:200]}); "
                              "using the eager analytic path", RuntimeWarning, stacklevel=2)
                state["site"] = model.site_terms
                e, g = model.site_terms(*args)
        return edge_gradient_outputs(e, g, vectors, ei, positions, batch, n_structures, compute_forces,
                                     compute_virials)

    return forward
