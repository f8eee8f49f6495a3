"""Design-matrix rows of the linear ACE basis: energy, forces (-∂/∂x) and virials of every basis function.

Because A_i = Σ_j φ(r_ij) is linear in the edges, ∂B_i/∂r_ij = (∂B/∂A)(A_i) · ∂φ(r_ij)/∂r_ij
(ACE's "adjoint" structure, ACEpotentials.jl paper §II).  ∂φ/∂r comes from forward-mode AD of the
same edge embedding the energy uses (three directions vmapped; each edge depends only on its own
vector).  For the product basis, dAA_k = Σ_t L_{k,t} dA_{a_{k,t}} with the leave-one-out products
L_{k,t} = Π_{s≠t} A_{a_{k,s}} computed once per atom; then G_e = C·dAA_e per edge, in memory-bounded
chunks.  Cost ∝ edges × (ν·n_AA + nnz(C)), not one backward pass per basis function.  Finally
F_j = Σ_{e: i(e)=j} G_e - Σ_{e: j(e)=j} G_e and W = -½ Σ_e (r_e ⊗ G_e + G_e ⊗ r_e), in Voigt order
xx, yy, zz, yz, xz, xy.
"""
from __future__ import annotations

from typing import Dict, Optional

import torch
from torch.func import jvp, vmap

from . import keys as K
from .basis import pool
from .batch import DEFAULT_MIN_DISTANCE, collate
from .evaluate import model_device_dtype

_VOIGT_A = [a for a, _ in K.VOIGT]
_VOIGT_B = [b for _, b in K.VOIGT]


def _edge_jacobian(fn, vectors: torch.Tensor):
    """(fn(vectors), d fn / d vectors[:, α] for α = x, y, z) for an edge-local fn: [E, F], [E, 3, F].

    Each edge's output depends on its own vector only, so the JVP with tangent e_α on every edge gives
    all per-edge derivatives along α at once; the three directions are vmapped into one pass.
    """
    tangents = torch.eye(3, dtype=vectors.dtype, device=vectors.device).unsqueeze(1).expand(3, vectors.shape[0], 3)
    val = fn(vectors)
    d = vmap(lambda t: jvp(fn, (vectors,), (t,))[1])(tangents)  # [3, E, F]
    return val, d.transpose(0, 1)


def _chunk_size(n_per_row: int, budget_bytes: int, itemsize: int) -> int:
    return max(1, budget_bytes // max(1, n_per_row * itemsize))


def _edge_virial(vectors: torch.Tensor, G: torch.Tensor) -> torch.Tensor:
    """Per-edge Voigt virial -½ (r_a G_b + r_b G_a): G [E, 3, F] → [E, 6, F]."""
    ra, rb = vectors[:, _VOIGT_A], vectors[:, _VOIGT_B]  # [E, 6]
    return -0.5 * (ra.unsqueeze(-1) * G[:, _VOIGT_B] + rb.unsqueeze(-1) * G[:, _VOIGT_A])


def batch_rows(model, batch: Dict[str, torch.Tensor], memory_budget: int = 256 * 2**20) -> Dict[str, torch.Tensor]:
    """Rows for a collated batch (see ``design_matrix_rows``)."""
    species, bidx, ei = batch[K.SPECIES], batch[K.BATCH], batch[K.EDGE_INDEX]
    n_atoms, n_s = species.shape[0], int(batch[K.N_ATOMS].shape[0])
    nz, nb = model.nz, model.n_b
    i, j = ei[0], ei[1]
    dtype = batch[K.POSITIONS].dtype
    with torch.no_grad():
        vectors = model.edge_vectors(batch[K.POSITIONS], ei, batch[K.UNIT_SHIFTS], batch[K.CELL], bidx)
        zi, zj = species[i], species[j]
        phi, dphi = _edge_jacobian(lambda v: model.embedding(v, zi, zj), vectors)  # [E, nA], [E, 3, nA]
        A = pool(phi, i, n_atoms)
        B = model.site_basis(A)  # [N, nb]

        # energy: Σ_i B_i into the block of the centre element
        e_mb = torch.zeros(n_s * nz, nb, dtype=dtype, device=A.device).index_add_(0, bidx * nz + species, B)
        energy = [e_mb.view(n_s, nz * nb)]

        # forces and virials: per-edge basis derivative G_e, in chunks of edges
        f_mb = torch.zeros(n_atoms * nz, 3, nb, dtype=dtype, device=A.device)
        v_mb = torch.zeros(n_s * nz, 6, nb, dtype=dtype, device=A.device)
        n_e = vectors.shape[0]
        step = _chunk_size(4 * model.product.idx.numel() + 3 * nb, memory_budget, dtype.itemsize)
        loo = model.product.leave_one_out(A)  # [N, ν, n_AA], once per atom
        for s in range(0, n_e, step):
            sl = slice(s, min(s + step, n_e))
            ne = sl.stop - sl.start
            dAA = model.product.tangent(loo[i[sl]].unsqueeze(1), dphi[sl])  # [ne, 3, n_AA]
            G = model.coupling(dAA)
            block = zi[sl]
            f_mb.index_add_(0, i[sl] * nz + block, G)
            f_mb.index_add_(0, j[sl] * nz + block, -G)
            v_mb.index_add_(0, bidx[i[sl]] * nz + block, _edge_virial(vectors[sl], G))
        forces = [f_mb.view(n_atoms, nz, 3, nb).permute(0, 2, 1, 3).reshape(n_atoms, 3, nz * nb)]
        virial = [v_mb.view(n_s, nz, 6, nb).permute(0, 2, 1, 3).reshape(n_s, 6, nz * nb)]

        npair = model.n_pair
        if npair > 0:
            pair_fn = lambda v: model.pair(torch.linalg.norm(v, dim=-1), zi, zj)  # noqa: E731
            V, dV = _edge_jacobian(pair_fn, vectors)  # [E, np], [E, 3, np]
            blk = zi * nz + zj
            e_p = torch.zeros(n_s * nz * nz, npair, dtype=dtype, device=A.device)
            e_p.index_add_(0, bidx[i] * nz * nz + blk, V)
            f_p = torch.zeros(n_atoms * nz * nz, 3, npair, dtype=dtype, device=A.device)
            f_p.index_add_(0, i * nz * nz + blk, dV)
            f_p.index_add_(0, j * nz * nz + blk, -dV)
            v_p = torch.zeros(n_s * nz * nz, 6, npair, dtype=dtype, device=A.device)
            v_p.index_add_(0, bidx[i] * nz * nz + blk, _edge_virial(vectors, dV))
            energy.append(e_p.view(n_s, nz * nz * npair))
            forces.append(f_p.view(n_atoms, nz * nz, 3, npair).permute(0, 2, 1, 3).reshape(n_atoms, 3, -1))
            virial.append(v_p.view(n_s, nz * nz, 6, npair).permute(0, 2, 1, 3).reshape(n_s, 6, -1))
    return {
        K.ENERGY: torch.cat(energy, dim=-1),
        K.FORCES: torch.cat(forces, dim=-1).reshape(3 * n_atoms, -1),
        K.VIRIAL: torch.cat(virial, dim=-1),
    }


def design_matrix_rows(model, structures, *, min_distance: float = DEFAULT_MIN_DISTANCE,
                       memory_budget: int = 256 * 2**20, device: Optional[torch.device] = None) -> Dict[str, torch.Tensor]:
    """Rows of the linear least-squares system for ``structures`` (``ase.Atoms`` or a list).

    ``energy`` [S, K]: Σ_i of every basis function; ``forces`` [3·ΣN, K] (structure-major, then atom,
    then x, y, z) = -∂/∂x of the energy rows; ``virial`` [S, 6, K] (Voigt xx, yy, zz, yz, xz, xy) =
    -∂/∂ε.  ``rows['energy'] @ model.coefficients + Σ E0`` is the model energy (E0 is not a column).
    """
    dev, dtype = model_device_dtype(model)
    batch = collate(structures, model.config.numbers, model.rcut, dtype=dtype, device=device or dev,
                    min_distance=min_distance)
    return batch_rows(model, batch, memory_budget)
