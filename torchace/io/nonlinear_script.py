"""A TorchScript-ready evaluator of a ``NonlinearACEModel`` (docs/nonlinear.md), for the TorchScript and metatomic
exports (docs/export.md).

``ScriptableNonlinear(model)`` copies the model's tensors (density and pair coefficients, the embedding's
parameters, the learnable radial weights and their index buffers) into buffers and holds a copy of the linear
model ``model.linear`` (an ``ACEModel``, scriptable as the linear export scripts it) for everything below the
site energy: radial polynomials, harmonics, product basis, coupling, pair basis, ZBL and E0.  It performs the
operations of ``NonlinearACEModel.node_energies`` / ``site_terms`` in the same order, written without what
TorchScript cannot compile (module-level float constants, optional submodules passed as arguments), so its
numbers are the model's:

- ``forward``: ``NonlinearACEModel.forward``'s signature, outputs and rule (eval mode without a graph through
  positions or cell: the hand adjoints ``analytic_forward``; otherwise ``reference_forward`` by autograd);
- ``node_energies(vectors, species, edge_index)``: site energies differentiable in the pair vectors (what the
  metatomic wrapper calls; the engine differentiates).

The embedding F is selected by ``is_fs`` (ML-PACE's FinnisSinclairShiftedScaled) / ``is_mlp`` (neither: F = ρ_1);
the buffers of the other kind are empty.  A committee is not exported (a warning says so): energies, forces and
virials of the model only.
"""
from __future__ import annotations

import copy
import warnings
from typing import Dict, List, Optional, Tuple

import torch
from torch import nn

from ..basis.embedding import pool
from ..model.nonlinear.embedding import FS, IDENTITY_TOL, MLP
from ..model.strain import autograd_outputs, edge_gradient_outputs, strained_geometry
from ..structures.geometry import edge_vectors

def _copy(t: torch.Tensor) -> torch.Tensor:
    return t.detach().clone()


class ScriptableNonlinear(nn.Module):
    """The TorchScript form of a ``NonlinearACEModel`` (a copy: later changes of the model do not reach it)."""

    def __init__(self, model, committee: Optional[torch.Tensor] = None):
        super().__init__()
        if committee is not None or getattr(model, "committee", None) is not None:
            warnings.warn("the committee of a nonlinear model is not exported (no energy_ensemble / uncertainty "
                          "outputs): the export gives the model's energies, forces and virials only", UserWarning,
                          stacklevel=3)
        dtype = model.density_coefficients.dtype
        lin = copy.deepcopy(model.linear).eval()
        lin.committee = None
        lin.prior_info, lin.metadata = None, {}
        self.linear = lin
        self.nz, self.n_b, self.n_pair = int(model.nz), int(model.n_b), int(model.n_pair)
        self.rcut = float(model.rcut)
        self.densities = int(model.densities)
        self.analytic = True
        self.identity_tol = float(IDENTITY_TOL)
        self.register_buffer("density_coefficients", _copy(model.density_coefficients))
        self.register_buffer("pair_coefficients", _copy(model.pair_coefficients))
        empty = torch.zeros(0, dtype=dtype)
        f = model.embedding_fn
        name = None if f is None else f.name
        self.is_fs, self.is_mlp = name == FS, name == MLP  # neither: F = ρ_1
        self.register_buffer("fs_weights", _copy(f.weights) if name == FS else empty.clone())
        self.register_buffer("fs_exponents", _copy(f.exponents) if name == FS else empty.clone())
        self.register_buffer("mlp_W", _copy(f.W) if name == MLP else empty.clone())
        self.register_buffer("mlp_b", _copy(f.b) if name == MLP else empty.clone())
        self.register_buffer("mlp_w", _copy(f.w) if name == MLP else empty.clone())
        rad = model.radials
        self.learnable_radials = rad is not None
        idx = torch.zeros(0, dtype=torch.long)
        self.n_poly = int(rad.n_poly) if rad is not None else 0
        self.register_buffer("radial_weights", _copy(rad.weights) if rad is not None else empty.clone())
        for key in ("u_n", "u_l", "u_of_a", "s_of_a"):
            self.register_buffer(key, _copy(getattr(rad, key)) if rad is not None else idx.clone())

    # ---- the embedding F(ρ) ----

    def fs_shifted_scaled(self, rho: torch.Tensor, m: torch.Tensor) -> Tuple[torch.Tensor, torch.Tensor]:
        """ML-PACE's FexpShiftedScaled (f, f') elementwise, as ``torchace.model.nonlinear.fs_shifted_scaled``."""
        ident = (m - 1.0).abs() < self.identity_tol
        m_s = torch.where(ident, torch.full_like(m, 2.0), m)
        nu = 1.0 / m_s
        cx = nu ** (nu / (1.0 - nu))
        cy = nu ** (1.0 / (1.0 - nu))
        sign = torch.where(rho < 0, -torch.ones_like(rho), torch.ones_like(rho)).detach()
        a = rho * sign
        e = torch.exp(-a)
        x0, y0 = cx * e, cy * e
        base = x0 + a
        f = sign * (base ** m_s - y0)
        df = y0 + m_s * (1.0 - x0) * base ** (m_s - 1.0)
        return torch.where(ident, rho, f), torch.where(ident, torch.ones_like(rho), df)

    def embed(self, rho: torch.Tensor, species: torch.Tensor) -> torch.Tensor:
        """F [N] from ρ [N, P] (autograd-friendly)."""
        if self.is_fs:
            f, _ = self.fs_shifted_scaled(rho, self.fs_exponents[species])
            return (self.fs_weights[species] * f).sum(-1)
        if self.is_mlp:
            b = self.mlp_b[species]
            t = torch.tanh(torch.einsum("nhp,np->nh", self.mlp_W[species], rho) + b)
            return rho[:, 0] + (self.mlp_w[species] * (t - torch.tanh(b))).sum(-1)
        return rho[:, 0]

    def embed_with_grad(self, rho: torch.Tensor, species: torch.Tensor) -> Tuple[torch.Tensor, torch.Tensor]:
        """(F [N], ∂F/∂ρ [N, P]) with the hand-written derivatives."""
        if self.is_fs:
            f, df = self.fs_shifted_scaled(rho, self.fs_exponents[species])
            w = self.fs_weights[species]
            return (w * f).sum(-1), w * df
        if self.is_mlp:
            W, b, w = self.mlp_W[species], self.mlp_b[species], self.mlp_w[species]
            t = torch.tanh(torch.einsum("nhp,np->nh", W, rho) + b)
            value = rho[:, 0] + (w * (t - torch.tanh(b))).sum(-1)
            grad = torch.einsum("nh,nhp->np", w * (1.0 - t * t), W)
            grad[:, 0] += 1.0
            return value, grad
        return rho[:, 0], torch.ones_like(rho)

    # ---- learnable radials (as ``LearnableRadials``, with the embedding read from ``self.linear``) ----

    def effective_weights(self) -> torch.Tensor:
        nl_scale = self.linear.embedding.nl_scale
        W = self.radial_weights[:, :, self.u_n, self.u_l, :]  # [NZ, NZ, n_u, n_poly]
        rows = torch.arange(self.n_poly, device=nl_scale.device).unsqueeze(0) * self.nz \
            + torch.arange(self.nz, device=nl_scale.device).unsqueeze(1)
        s = nl_scale[rows][:, :, self.u_l].transpose(1, 2)  # [NZ(z_j), n_u, n_poly]
        return W * s.unsqueeze(0).to(W.dtype)

    def contract(self, P: torch.Tensor, Weff: torch.Tensor, zi: torch.Tensor, zj: torch.Tensor) -> torch.Tensor:
        """R_u [E, n_u] = Σ_k P[e, k] Weff[z_i, z_j, u, k], one GEMM per element pair."""
        if self.nz == 1:
            return P @ Weff[0, 0].t()
        pid = zi * self.nz + zj
        parts: List[torch.Tensor] = []
        sels: List[torch.Tensor] = []
        for b in range(self.nz * self.nz):
            sel = torch.nonzero(pid == b).squeeze(1)
            parts.append(P.index_select(0, sel) @ Weff[b // self.nz, b % self.nz].t())
            sels.append(sel)
        order = torch.cat(sels)
        inverse = torch.empty_like(order)
        inverse[order] = torch.arange(order.shape[0], device=order.device)
        return torch.cat(parts).index_select(0, inverse)

    def learned_phi(self, vectors: torch.Tensor, zi: torch.Tensor, zj: torch.Tensor) -> torch.Tensor:
        """φ [E, n_a] with the learned radials (autograd-friendly)."""
        emb = self.linear.embedding
        r = torch.linalg.norm(vectors, dim=-1)
        P = emb.radials(r, zi, zj).view(r.shape[0], self.n_poly, self.nz).sum(-1)
        R_u = self.contract(P, self.effective_weights(), zi, zj)
        mask = (zj.unsqueeze(1) == self.s_of_a.unsqueeze(0)).to(R_u.dtype)
        Y = emb.sh(vectors)
        return R_u.index_select(1, self.u_of_a) * mask * Y.index_select(1, emb.lm_idx)

    def learned_with_grad(self, vectors: torch.Tensor, zi: torch.Tensor,
                          zj: torch.Tensor) -> Tuple[torch.Tensor, List[torch.Tensor]]:
        """φ [n_a, E] and [u, r, Rsel, dRsel, Ysel, Y] (``LearnableRadials.with_grad``)."""
        emb = self.linear.embedding
        r = torch.linalg.norm(vectors, dim=-1)
        n_e = r.shape[0]
        R, dR = emb.radials.with_grad(r, zi, zj)
        P = R.reshape(self.n_poly, self.nz, n_e).sum(1).t()
        dP = dR.reshape(self.n_poly, self.nz, n_e).sum(1).t()
        Weff = self.effective_weights()
        mask = (zj.unsqueeze(0) == self.s_of_a.unsqueeze(1)).to(P.dtype)
        Rsel = self.contract(P, Weff, zi, zj).t().index_select(0, self.u_of_a) * mask
        dRsel = self.contract(dP, Weff, zi, zj).t().index_select(0, self.u_of_a) * mask
        Y, _ = emb.sph(vectors, False)
        Ysel = Y.index_select(0, emb.lm_std) * emb.lm_sign.to(Y.dtype).unsqueeze(1)
        u = (vectors / r.clamp_min(1e-300).unsqueeze(-1)).t()
        return Rsel * Ysel, [u, r, Rsel, dRsel, Ysel, Y]

    def learned_vjp(self, g: torch.Tensor, saved: List[torch.Tensor]) -> torch.Tensor:
        """Σ_a g[a, e] ∂φ[a, e]/∂r_e [3, E] (``LearnableRadials.vjp``)."""
        emb = self.linear.embedding
        u, r, Rsel, dRsel, Ysel, Y = saved[0], saved[1], saved[2], saved[3], saved[4], saved[5]
        radial = (g * Ysel * dRsel).sum(0)
        sign = emb.lm_sign.to(Y.dtype).unsqueeze(1)
        g_lm = torch.zeros_like(Y).index_add_(0, emb.lm_std, g * Rsel * sign)
        terms = (g_lm.index_select(0, emb.dsh_col_t) * Y.index_select(0, emb.dsh_col)
                 * emb.dsh_val.to(Y.dtype).unsqueeze(1))
        ang = torch.zeros((3, Y.shape[1]), dtype=Y.dtype, device=Y.device).index_add_(0, emb.dsh_dir, terms)
        lt = (emb.l_std.to(Y.dtype).unsqueeze(1) * g_lm * Y).sum(0)
        rinv = 1.0 / r.clamp_min(1e-300)
        return u * (radial - lt * rinv) + ang * rinv

    # ---- site energies (reference path) ----

    def site_densities(self, vectors: torch.Tensor, species: torch.Tensor, edge_index: torch.Tensor) -> torch.Tensor:
        lin = self.linear
        if self.learnable_radials:
            i, j = edge_index[0], edge_index[1]
            A = pool(self.learned_phi(vectors, species[i], species[j]), i, species.shape[0])
        else:
            A = lin.atomic_basis(vectors, species, edge_index)
        AA = lin.product(A)
        rho = [(AA * lin.coupling.transpose_apply(self.density_coefficients[p])[species]).sum(-1)
               for p in range(self.densities)]
        return torch.stack(rho, dim=-1)

    def node_energies(self, vectors: torch.Tensor, species: torch.Tensor, edge_index: torch.Tensor) -> torch.Tensor:
        lin = self.linear
        e = lin.E0[species] + self.embed(self.site_densities(vectors, species, edge_index), species)
        if self.n_pair > 0 and vectors.shape[0] > 0:
            i, j = edge_index[0], edge_index[1]
            V = lin.pair_features(vectors, species, edge_index)
            e = e + pool((V * self.pair_coefficients[species[i], species[j]]).sum(-1), i, species.shape[0])
        e = e + lin.baseline_node_energies(vectors, species, edge_index)  # zeros without ZBL
        return e

    # ---- evaluation: NonlinearACEModel.forward ----

    def forward(self, positions: torch.Tensor, species: torch.Tensor, batch: torch.Tensor,
                edge_index: torch.Tensor, unit_shifts: torch.Tensor, cell: torch.Tensor, n_structures: int,
                compute_forces: bool = True, compute_virials: bool = True) -> Dict[str, torch.Tensor]:
        if self.analytic and not self.training and not positions.requires_grad and not cell.requires_grad:
            return self.analytic_forward(positions, species, batch, edge_index, unit_shifts, cell, n_structures,
                                         compute_forces, compute_virials)
        return self.reference_forward(positions, species, batch, edge_index, unit_shifts, cell, n_structures,
                                      compute_forces, compute_virials)

    def reference_forward(self, positions: torch.Tensor, species: torch.Tensor, batch: torch.Tensor,
                          edge_index: torch.Tensor, unit_shifts: torch.Tensor, cell: torch.Tensor, n_structures: int,
                          compute_forces: bool = True, compute_virials: bool = True) -> Dict[str, torch.Tensor]:
        positions, strain, pos, cel = strained_geometry(positions, cell, batch, n_structures, compute_forces,
                                                        compute_virials)
        vectors = edge_vectors(pos, edge_index, unit_shifts, cel, batch)
        e_node = self.node_energies(vectors, species, edge_index)
        energy = torch.zeros(n_structures, dtype=e_node.dtype, device=e_node.device).index_add_(0, batch, e_node)
        return autograd_outputs(energy, e_node, positions, strain, compute_forces, compute_virials, self.training)

    def analytic_forward(self, positions: torch.Tensor, species: torch.Tensor, batch: torch.Tensor,
                         edge_index: torch.Tensor, unit_shifts: torch.Tensor, cell: torch.Tensor, n_structures: int,
                         compute_forces: bool = True, compute_virials: bool = True) -> Dict[str, torch.Tensor]:
        vectors = edge_vectors(positions, edge_index, unit_shifts, cell, batch)
        inside = (vectors * vectors).sum(-1) < self.rcut * self.rcut  # skin edges contribute exactly zero
        if not bool(inside.all()):
            keep = torch.nonzero(inside).squeeze(1)
            vectors, edge_index = vectors.index_select(0, keep), edge_index.index_select(1, keep)
        i, j = edge_index[0], edge_index[1]
        with torch.no_grad():
            e, g_vec = self.site_terms(vectors, i, species[i], species[j], species, compute_forces or compute_virials)
        return edge_gradient_outputs(e, g_vec, vectors, edge_index, positions, batch, n_structures, compute_forces,
                                     compute_virials)

    def site_terms(self, vectors: torch.Tensor, i: torch.Tensor, zi: torch.Tensor, zj: torch.Tensor,
                   species: torch.Tensor, need_grad: bool) -> Tuple[torch.Tensor, torch.Tensor]:
        """Site energies and ∂E/∂r_e [3, E] (``NonlinearACEModel.site_terms``)."""
        lin = self.linear
        emb = lin.embedding
        n_atoms = species.shape[0]
        if self.learnable_radials:
            phi, saved = self.learned_with_grad(vectors, zi, zj)
        else:
            phi, saved = emb.with_grad(vectors, zi, zj)
        A = pool(phi.t().contiguous(), i, n_atoms)
        AA = lin.product(A)
        c_aa = [lin.coupling.transpose_apply(self.density_coefficients[p])[species] for p in range(self.densities)]
        rho = [(AA * c).sum(-1) for c in c_aa]
        if not (self.is_fs or self.is_mlp):
            F, dF = rho[0], torch.ones_like(rho[0]).unsqueeze(1)
        else:
            F, dF = self.embed_with_grad(torch.stack(rho, dim=-1), species)
        e = lin.E0[species] + F
        g_vec = torch.zeros((3, vectors.shape[0]), dtype=vectors.dtype, device=vectors.device)
        if need_grad:
            c_eff = c_aa[0]  # ∂E/∂AA = Σ_p F'_p c_p (C-transposed)
            if self.is_fs or self.is_mlp:
                c_eff = dF[:, :1] * c_aa[0]
                for p in range(1, self.densities):
                    c_eff = c_eff + dF[:, p:p + 1] * c_aa[p]
            gA = lin.product.grad(A, c_eff).index_select(0, i).t().contiguous()
            g_vec = self.learned_vjp(gA, saved) if self.learnable_radials else emb.vjp(gA, saved)
        e_p, g_p = self.pair_site_terms(saved[1], saved[0], i, zi, zj, n_atoms, need_grad)
        return e + e_p, g_vec + g_p

    def pair_site_terms(self, r: torch.Tensor, u: torch.Tensor, i: torch.Tensor, zi: torch.Tensor, zj: torch.Tensor,
                        n_atoms: int, need_grad: bool) -> Tuple[torch.Tensor, torch.Tensor]:
        lin = self.linear
        e = torch.zeros(n_atoms, dtype=r.dtype, device=r.device)
        g_vec = torch.zeros((3, r.shape[0]), dtype=r.dtype, device=r.device)
        if self.n_pair > 0 and r.shape[0] > 0:
            V, dV = lin.pair.with_grad(r, zi, zj)  # [n_pair, E]
            c_pair = self.pair_coefficients[zi, zj]  # [E, n_pair]
            e = e + pool((V * c_pair.t()).sum(0), i, n_atoms)
            if need_grad:
                g_vec = g_vec + u * (dV * c_pair.t()).sum(0)
        if r.shape[0] > 0:
            ez, gz = lin.baseline_site_terms(r, u, i, zi, zj, n_atoms)  # zeros without ZBL
            e, g_vec = e + ez, g_vec + gz
        return e, g_vec
