"""Learnable radials R_nl(r; z_i, z_j) = Σ_k W[z_i, z_j, n, l, k] s_{k,l} P_k(x) env(x) (pacemaker's ``crad``).

P_k(x)·env(x) are the linear model's many-body radial polynomials (``ManyBodyRadials``: Agnesi transform per
element pair, Jacobi(4,4) orthonormal P_k, envelope (1 − x)²(1 + x)²), taken species-resolved from its output
(the interleaved rows of other neighbour species are exact zeros, so summing them out is exact).  n is the
radial index within a neighbour-species block, n − 1 = 0 … n_poly − 1 (the polynomial degree of the linear
function it starts from); k = 0 … n_poly − 1; l = 0 … max_l.  The one-particle function a with interleaved
index n_a = k_a·NZ + s_a + 1 (docs/conventions.md) is φ_a = δ(s_a = z_j) R_{k_a + 1, l_a} Y_{l_a m_a}.

s_{k,l} = ``nl_scale[k·NZ + z_j, l]`` is the prior's one-particle scale (``ACEModel.set_basis_scale``) applied
to the polynomial P_k inside the sum, so the learned radial is expanded in the rescaled polynomial basis and
plain L2 on W is the regularity prior on it.  With W = identity (W[..., n, l, k] = δ_{n−1, k}, the
initialisation) φ_a is the linear model's one-particle function, rescaled as there.

``forward``: φ [E, n_a] by autograd-friendly torch ops (the reference path); ``with_grad`` / ``vjp``: the
same φ feature-major with its analytic r-derivatives (the analytic path), as ``EdgeEmbedding`` does.  The
linear model's basis evaluations (``ManyBodyRadials``, harmonics) and its current ``nl_scale`` come in as
tensors (``ACEModel.one_particle*`` computes them): the module owns only W and the constant index
maps of the one-particle functions (the angular ones copied from the ``EdgeEmbedding``, not saved), so it
compiles with ``torch.jit.script`` as part of the model (docs/export.md).
"""
from __future__ import annotations

from typing import List, Tuple

import torch
from torch import nn

from ...basis.embedding import EdgeEmbedding


def identity_weights(nz: int, n_poly: int, n_l: int, dtype: torch.dtype, device) -> torch.Tensor:
    """[nz, nz, n_poly, n_l, n_poly] with W[..., n, l, k] = δ_{n−1, k} (each R_nl its own polynomial)."""
    eye = torch.eye(n_poly, dtype=dtype, device=device)
    return eye.view(1, 1, n_poly, 1, n_poly).repeat(nz, nz, 1, n_l, 1).contiguous()


class LearnableRadials(nn.Module):
    __jit_unused_properties__ = ["shape"]

    def __init__(self, embedding: EdgeEmbedding, nz: int):
        super().__init__()
        self.nz = int(nz)
        self.n_poly = int(embedding.radials.n_poly)
        self.max_l = int(embedding.max_l)
        n_l = self.max_l + 1
        self.weights = nn.Parameter(identity_weights(self.nz, self.n_poly, n_l, torch.float64, "cpu"))
        # the (n, l) pairs some one-particle function uses (u), and which one each function a uses
        k_a = torch.div(embedding.n_idx, self.nz, rounding_mode="floor")
        key = k_a * n_l + embedding.l_idx
        used, u_of_a = torch.unique(key, return_inverse=True)
        self.register_buffer("u_n", torch.div(used, n_l, rounding_mode="floor"))  # n − 1 of u
        self.register_buffer("u_l", used % n_l)
        self.register_buffer("u_of_a", u_of_a)
        self.register_buffer("s_of_a", embedding.n_idx % self.nz)  # neighbour species of a
        # the embedding's constant (l, m) maps of the functions a and its sparse solid-harmonic gradients
        # (EdgeEmbedding.vjp), copied so the analytic path needs no module argument; not part of the state
        for key in ("lm_idx", "lm_std", "lm_sign", "l_std", "dsh_col", "dsh_col_t", "dsh_val", "dsh_dir"):
            self.register_buffer(key, getattr(embedding, key).clone(), persistent=False)

    def identity(self) -> torch.Tensor:
        """W = identity (W[..., n, l, k] = δ_{n−1, k}: the linear model's radials), in the weights' shape,
        dtype and device: the initialisation, the warm start and the penalty's centre."""
        W = self.weights
        return identity_weights(self.nz, self.n_poly, self.max_l + 1, W.dtype, W.device)

    @property
    def shape(self) -> Tuple[int, ...]:
        return tuple(self.weights.shape)

    def scale(self, nl_scale: torch.Tensor) -> torch.Tensor:
        """The prior's scale of each used weight, s[k·NZ + z_j, l_u]: [NZ(z_j), n_u, n_poly] (= ∂W_eff/∂W)."""
        rows = torch.arange(self.n_poly, device=nl_scale.device).unsqueeze(0) * self.nz \
            + torch.arange(self.nz, device=nl_scale.device).unsqueeze(1)  # [NZ(z_j), n_poly]
        return nl_scale[rows][:, :, self.u_l].transpose(1, 2)

    def effective_weights(self, nl_scale: torch.Tensor) -> torch.Tensor:
        """W_u[z_i, z_j, u, k] · s[k·NZ + z_j, l_u]: [NZ, NZ, n_u, n_poly]."""
        W = self.weights[:, :, self.u_n, self.u_l, :]  # [NZ, NZ, n_u, n_poly]
        return W * self.scale(nl_scale).unsqueeze(0).to(W.dtype)

    def _contract(self, P: torch.Tensor, Weff: torch.Tensor, zi: torch.Tensor, zj: torch.Tensor) -> torch.Tensor:
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

    def forward(self, R: torch.Tensor, Y: torch.Tensor, nl_scale: torch.Tensor, zi: torch.Tensor,
                zj: torch.Tensor) -> torch.Tensor:
        """φ [E, n_a] (the reference path: autograd through everything, W included) from the polynomials
        R = ``ManyBodyRadials(r)`` [E, n_poly·NZ] (column k·NZ + s; other species' columns are zeros), the
        harmonics Y = ``EdgeEmbedding.sh(r_e)`` [E, n_y] and the prior's ``nl_scale``."""
        P = R.view(R.shape[0], self.n_poly, self.nz).sum(-1)  # P_k(x)·env(x) [E, n_poly]
        R_u = self._contract(P, self.effective_weights(nl_scale), zi, zj)
        mask = (zj.unsqueeze(1) == self.s_of_a.unsqueeze(0)).to(R_u.dtype)
        return R_u.index_select(1, self.u_of_a) * mask * Y.index_select(1, self.lm_idx)

    # ---- analytic path (feature-major [F, E], as EdgeEmbedding.with_grad / vjp) ----

    def with_grad(self, vectors: torch.Tensor, r: torch.Tensor, R: torch.Tensor, dR: torch.Tensor, Y: torch.Tensor,
                  nl_scale: torch.Tensor, zi: torch.Tensor,
                  zj: torch.Tensor) -> Tuple[torch.Tensor, List[torch.Tensor]]:
        """φ [n_a, E] and what ``vjp`` needs: [u, r, Rsel, dRsel, Ysel, Y], from r = |r_e|, (R, dR/dr) =
        ``ManyBodyRadials.with_grad(r)`` [n_poly·NZ, E] and Y = ``EdgeEmbedding.sph(r_e)`` [n_y, E] (standard
        real basis)."""
        n_e = r.shape[0]
        P = R.reshape(self.n_poly, self.nz, n_e).sum(1).t()
        dP = dR.reshape(self.n_poly, self.nz, n_e).sum(1).t()
        Weff = self.effective_weights(nl_scale)
        mask = (zj.unsqueeze(0) == self.s_of_a.unsqueeze(1)).to(P.dtype)  # [n_a, E]
        Rsel = self._contract(P, Weff, zi, zj).t().index_select(0, self.u_of_a) * mask
        dRsel = self._contract(dP, Weff, zi, zj).t().index_select(0, self.u_of_a) * mask
        Ysel = Y.index_select(0, self.lm_std) * self.lm_sign.to(Y.dtype).unsqueeze(1)
        u = (vectors / r.clamp_min(1e-300).unsqueeze(-1)).t()
        return Rsel * Ysel, [u, r, Rsel, dRsel, Ysel, Y]

    def vjp(self, g: torch.Tensor, saved: List[torch.Tensor]) -> torch.Tensor:
        """Σ_a g[a, e] ∂φ[a, e]/∂r_e → [3, E] (radial part with the learned dR/dr; angular part as
        ``EdgeEmbedding.vjp``: ∂Y/∂v = (∇S − l Y u)/r with the sparse solid-harmonic gradients)."""
        u, r, Rsel, dRsel, Ysel, Y = saved[0], saved[1], saved[2], saved[3], saved[4], saved[5]
        radial = (g * Ysel * dRsel).sum(0)
        sign = self.lm_sign.to(Y.dtype).unsqueeze(1)
        g_lm = torch.zeros_like(Y).index_add_(0, self.lm_std, g * Rsel * sign)
        terms = (g_lm.index_select(0, self.dsh_col_t) * Y.index_select(0, self.dsh_col)
                 * self.dsh_val.to(Y.dtype).unsqueeze(1))
        ang = torch.zeros((3, Y.shape[1]), dtype=Y.dtype, device=Y.device).index_add_(0, self.dsh_dir, terms)
        lt = (self.l_std.to(Y.dtype).unsqueeze(1) * g_lm * Y).sum(0)
        rinv = 1.0 / r.clamp_min(1e-300)
        return u * (radial - lt * rinv) + ang * rinv
