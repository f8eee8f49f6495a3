"""Design-matrix rows (energy, forces −∂/∂x, virials of every basis function) in torch ops, any device: the
rows of the ``analytic`` backend (and, with forward-mode ∂φ/∂r, of ``reference``).

Because A_i = Σ_j φ(r_ij) is linear in the edges, ∂B_i/∂r_ij = (∂B/∂A)(A_i) · ∂φ(r_ij)/∂r_ij
(ACE's "adjoint" structure, ACEpotentials.jl paper §II).  ∂φ/∂r comes from the analytic radials and
harmonics (``EdgeEmbedding.dphi``), or, as the reference, from forward-mode AD of the edge embedding the
energy uses (three directions vmapped; each edge depends only on its own vector).  For the product
basis, dAA_k = Σ_t L_{k,t} dA_{a_{k,t}} with the leave-one-out products L_{k,t} = Π_{s≠t} A_{a_{k,s}}, so
the site Jacobian J_i = ∂B/∂A = C·∂AA/∂A is assembled once per atom from L and the sparse coupling, and
G_e = J_i·∂φ_e is a dense batched matrix product per chunk of atoms (BLAS, edges padded per atom), never
one backward pass per basis function.  Finally F_i += Σ_{slots of i} G_e, F_j -= G_e and
W = -½ Σ_e (r_e ⊗ G_e + G_e ⊗ r_e) (one bmm over the slots of each atom), in Voigt order xx, yy, zz, yz,
xz, xy.
"""
from __future__ import annotations

from typing import Callable, Dict, Optional, Tuple

import torch
from torch.func import jvp, vmap

from ... import keys as K
from ...structures.geometry import edge_vectors

_VOIGT_A, _VOIGT_B = K.VOIGT_ROWS, K.VOIGT_COLS


def _edge_jacobian(fn, vectors: torch.Tensor):
    """(fn(vectors), d fn / d vectors[:, α] for α = x, y, z) for an edge-local fn: [E, F], [E, 3, F].

    Each edge's output depends on its own vector only, so the JVP with tangent e_α on every edge gives
    all per-edge derivatives along α at once; the three directions are vmapped into one pass.
    """
    tangents = torch.eye(3, dtype=vectors.dtype, device=vectors.device).unsqueeze(1).expand(3, vectors.shape[0], 3)
    val, d = vmap(lambda t: jvp(fn, (vectors,), (t,)))(tangents)  # [3, E, F] each; the primal is the same 3×
    return val[0], d.transpose(0, 1)


def _chunk_size(n_per_row: int, budget_bytes: int, itemsize: int) -> int:
    return max(1, budget_bytes // max(1, n_per_row * itemsize))


def _edge_virial(vectors: torch.Tensor, G: torch.Tensor) -> torch.Tensor:
    """Per-edge Voigt virial -½ (r_a G_b + r_b G_a): G [E, 3, F] → [E, 6, F]."""
    ra, rb = vectors[:, _VOIGT_A], vectors[:, _VOIGT_B]  # [E, 6]
    return -0.5 * (ra.unsqueeze(-1) * G[:, _VOIGT_B] + rb.unsqueeze(-1) * G[:, _VOIGT_A])


def _scatter_edges(G: torch.Tensor, vectors: torch.Tensor, i: torch.Tensor, j: torch.Tensor, sid: torch.Tensor,
                   block: torch.Tensor, n_blocks: int, forces: torch.Tensor, virial: torch.Tensor) -> None:
    """Add per-edge derivatives G [E, 3, F] (∂/∂r_e of the centre's functions) into block-major
    force rows [N·n_blocks, 3, F] (+ at the centre, - at the neighbour) and virial rows [S·n_blocks, 6, F]."""
    forces.index_add_(0, i * n_blocks + block, G)
    forces.index_add_(0, j * n_blocks + block, -G)
    virial.index_add_(0, sid * n_blocks + block, _edge_virial(vectors, G))


def _columns(x: torch.Tensor, n_rows: int, n_blocks: int) -> torch.Tensor:
    """Block-major [n_rows·n_blocks, C, F] → [n_rows, C, n_blocks·F] (block b in columns b·F … (b+1)·F - 1)."""
    c, f = x.shape[1], x.shape[2]
    return x.view(n_rows, n_blocks, c, f).permute(0, 2, 1, 3).reshape(n_rows, c, n_blocks * f)


def jacobian_pattern(model):
    """Static index arrays for J[i, a, b] = ∂B_b/∂A_a.

    ∂B_b/∂A_a = Σ_{(b,k)∈C} C_bk Σ_t L_{k,t} δ(a, idx[k,t]), with L the leave-one-out products.
    Returns (flat target a·n_b + b, flat source t·n_AA + k, coupling value).
    """
    idx, n_a, n_aa = model.product.idx, model.product.n_a, model.product.n_aa
    rows, cols, vals = model.coupling.rows, model.coupling.cols, model.coupling.vals
    tgt, src, val = [], [], []
    for t in range(idx.shape[1]):
        a = idx[cols, t]
        m = a < n_a  # padded positions (lower orders) contribute nothing
        tgt.append(a[m] * model.n_b + rows[m])
        src.append(t * n_aa + cols[m])
        val.append(vals[m])
    return torch.cat(tgt), torch.cat(src), torch.cat(val)


def torch_rows(model, batch: Dict[str, torch.Tensor], memory_budget: int = 256 * 2**20,
               analytic: bool = True, densities: Optional[Tuple[torch.Tensor, Callable]] = None
               ) -> Dict[str, torch.Tensor]:
    """Design-matrix rows of a collated batch in torch ops, any device (``torchace.design_matrix_rows``).

    ``analytic``: ∂φ/∂r from the analytic radials and harmonics (``EdgeEmbedding.dphi``); False: from
    forward-mode AD of the reference embedding (the slower reference the analytic path is tested against).

    ``densities`` = (c [P, NZ, n_b], embedding derivatives ``(ρ [N, P], species) → (F', F'') [N, P]``): the
    Jacobian of E = Σ_i F(ρ_i), ρ_ip = c_p[z_i]·B_i, for a separable F (Σ_p f_p(ρ_p)) with respect to every c_p
    instead of the rows of Σ_i B_i: ∂E/∂c_p = Σ_i F'_p B_i and, per edge, ∂/∂r_e (F'_p B_i) = F'_p G_e +
    F''_p (G_e·c_p) B_i (the Gauss–Newton rows of ``torchace.train.gauss_newton``).  Many-body columns are
    then [P, NZ, n_b] flat (``density_coefficients``' layout), followed by the pair columns as usual.

    Per atom i the Jacobian J_i = ∂B/∂A (over the A-columns in use) is assembled from the leave-one-out
    products; the per-edge derivatives G_e = J_i · ∂φ_e/∂r_e are then one batched matrix product per
    chunk of atoms (edges padded to the largest neighbour count in the chunk).
    """
    species, bidx, ei = batch[K.SPECIES], batch[K.BATCH], batch[K.EDGE_INDEX]
    n_atoms, n_s = species.shape[0], int(batch[K.N_ATOMS].shape[0])
    nz, nb, npair = model.nz, model.n_b, model.n_pair
    dtype, dev = batch[K.POSITIONS].dtype, species.device
    zeros = lambda *shape: torch.zeros(shape, dtype=dtype, device=dev)  # noqa: E731
    with torch.no_grad():
        # edges grouped by centre (stable), so each atom's edges are contiguous
        order = torch.argsort(ei[0], stable=True)
        i, j = ei[0][order], ei[1][order]
        sid = bidx[i]
        vectors = edge_vectors(batch[K.POSITIONS], torch.stack([i, j]), batch[K.UNIT_SHIFTS][order],
                               batch[K.CELL], bidx)
        zi, zj = species[i], species[j]
        A = model.atomic_basis(vectors, species, torch.stack([i, j]))
        B = model.site_basis(A)  # [N, nb]
        n_p = 1
        if densities is not None:
            c_dens, d_embed = densities
            n_p = int(c_dens.shape[0])
            c_site = c_dens.to(B).permute(1, 0, 2)[species]  # [N, P, nb]
            s_site, t_site = d_embed(torch.einsum("nb,npb->np", B, c_site), species)  # F', F'' [N, P]
            e_mb = zeros(n_s * n_p * nz, 1, nb)
            for p in range(n_p):
                e_mb.index_add_(0, (bidx * n_p + p) * nz + species, (s_site[:, p:p + 1] * B).unsqueeze(1))
        else:
            e_mb = zeros(n_s * nz, 1, nb).index_add_(0, bidx * nz + species, B.unsqueeze(1))
        nzp = n_p * nz  # many-body column blocks: (density, centre element)

        tgt, src, val = jacobian_pattern(model)
        n_used = model.embedding.n_a
        deg = torch.bincount(i, minlength=n_atoms)
        start = torch.cumsum(deg, 0) - deg
        slot = torch.arange(i.numel(), device=dev) - start[i]
        f_mb, v_mb = zeros((n_atoms + 1) * nzp, 3, nb), zeros(n_s * nzp, 6, nb)  # + a spare atom for padding
        max_deg = int(deg.max()) if n_atoms else 0
        per_atom = (model.product.idx.shape[1] * model.product.n_aa + n_used * nb
                    + 3 * max(max_deg, 1) * (2 * n_used + 2 * nb))
        step = _chunk_size(per_atom, memory_budget, B.element_size())
        for a0 in range(0, n_atoms, step):
            a1 = min(a0 + step, n_atoms)
            e0, e1 = int(start[a0]), int(start[a1 - 1] + deg[a1 - 1])
            if e1 == e0:
                continue
            na, sl = a1 - a0, slice(e0, e1)
            loo = model.product.leave_one_out(A[a0:a1]).reshape(na, -1)  # [na, ν·n_AA]
            J = zeros(na, n_used * nb).index_add_(1, tgt, loo.index_select(1, src) * val).view(na, n_used, nb)
            if analytic:
                _, saved = model.embedding.with_grad(vectors[sl], zi[sl], zj[sl])
                dphi = model.embedding.dphi(saved).permute(2, 0, 1)  # [ne, 3, n_used]
            else:
                _, dphi = _edge_jacobian(lambda v: model.embedding(v, zi[sl], zj[sl]), vectors[sl])
            md = int(deg[a0:a1].max())
            il, sk = i[sl] - a0, slot[sl]
            D = zeros(na, md, 3, n_used)
            D[il, sk] = dphi
            # G stays padded [na, md, 3, nb] (zero in empty slots): centre forces and the virial are then
            # reductions over slots (a sum and one bmm per atom), never [E, 6, nb] per-edge temporaries
            G = torch.bmm(D.view(na, md * 3, n_used), J).view(na, md, 3, nb)
            atoms = torch.arange(a0, a1, device=dev)
            jpad = torch.full((na, md), n_atoms, dtype=torch.long, device=dev)  # empty slots → a spare row
            jpad[il, sk] = j[sl]
            rpad = zeros(na, md, 3)
            rpad[il, sk] = vectors[sl]
            for p in range(n_p):
                Gp = G
                if densities is not None:  # F'_p G_e + F''_p (G_e·c_p) B_i
                    g_rho = torch.einsum("nmcb,nb->nmc", G, c_site[a0:a1, p])
                    Gp = torch.addcmul((s_site[a0:a1, p].view(na, 1, 1, 1) * G),
                                       (t_site[a0:a1, p].view(na, 1, 1) * g_rho).unsqueeze(-1),
                                       B[a0:a1].view(na, 1, 1, nb))
                blk = p * nz + species[a0:a1]
                f_mb.index_add_(0, atoms * nzp + blk, Gp.sum(1))  # +∂/∂r_e at the centre
                f_mb.index_add_(0, (jpad * nzp + blk.unsqueeze(1)).view(-1), Gp.reshape(na * md, 3, nb), alpha=-1)
                W = torch.bmm(rpad.transpose(1, 2), Gp.reshape(na, md, 3 * nb)).view(na, 3, 3, nb)  # Σ_e r_a G_b
                Wv = -0.5 * (W[:, _VOIGT_A, _VOIGT_B] + W[:, _VOIGT_B, _VOIGT_A])  # [na, 6, nb]
                v_mb.index_add_(0, bidx[a0:a1] * nzp + blk, Wv)
        energy = [_columns(e_mb, n_s, nzp)]
        forces = [_columns(f_mb[: n_atoms * nzp], n_atoms, nzp)]
        virial = [_columns(v_mb, n_s, nzp)]

        if npair > 0:  # pair blocks per ordered (centre, neighbour) element pair
            if analytic:
                r = torch.linalg.norm(vectors, dim=-1)
                V, dV = model.pair.with_grad(r, zi, zj)  # [n_pair, E]
                V = V.t()
                dV = (vectors / r.unsqueeze(-1)).unsqueeze(-1) * dV.t().unsqueeze(1)  # [E, 3, n_pair]
            else:
                V, dV = _edge_jacobian(lambda v: model.pair(torch.linalg.norm(v, dim=-1), zi, zj), vectors)
            blk = zi * nz + zj
            e_p = zeros(n_s * nz * nz, 1, npair).index_add_(0, sid * nz * nz + blk, V.unsqueeze(1))
            f_p, v_p = zeros(n_atoms * nz * nz, 3, npair), zeros(n_s * nz * nz, 6, npair)
            _scatter_edges(dV, vectors, i, j, sid, blk, nz * nz, f_p, v_p)
            energy.append(_columns(e_p, n_s, nz * nz))
            forces.append(_columns(f_p, n_atoms, nz * nz))
            virial.append(_columns(v_p, n_s, nz * nz))
    return {
        K.ENERGY: torch.cat(energy, dim=-1).squeeze(1),
        K.FORCES: torch.cat(forces, dim=-1).reshape(3 * n_atoms, -1),
        K.VIRIAL: torch.cat(virial, dim=-1),
    }


