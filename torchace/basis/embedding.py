"""Edge embedding φ[e, nlm] = R_n(r_e)·Y_lm(r̂_e) and pooling A_{i,nlm} = Σ_{e: i(e)=i} φ[e, nlm].

ACE (Drautz 2019; ACEpotentials.jl paper §II): the atomic basis A is a scatter-add of the edge features.
"""
from __future__ import annotations


from typing import List, Tuple

import numpy as np
import torch
from e3nn import o3
from torch import nn

from .radial import ManyBodyRadials
from .spec import MAX_L
from .angular import RealSphericalHarmonics, e3nn_signed_permutation, solid_gradient_matrices

MAX_L_E3NN = MAX_L  # e3nn's spherical harmonics are implemented up to l = 12


class EdgeEmbedding(nn.Module):
    """phi[e, a] = R_n(r_e; z_i, z_j) · Y_l^m(r̂_e) for the one-particle functions a = (n, l, m) in use.

    ``cols`` lists them as flat indices (n - 1)·(L+1)² + l² + (m + l) (L = max_l); only functions that
    appear in some product are computed (with total-degree selection that is a small fraction of all
    (n, l, m) pairs, e.g. 170 of 1620 for Si order 3, totaldegree [20, 16, 12]).
    """

    def __init__(self, radials: ManyBodyRadials, max_l: int, cols: np.ndarray):
        super().__init__()
        if max_l > MAX_L_E3NN:
            raise ValueError(f"this basis needs spherical harmonics up to l = {max_l}; "
                             f"e3nn provides l <= {MAX_L_E3NN}: lower totaldegree or raise wL")
        self.radials = radials
        self.max_l = int(max_l)
        self.n_y = (self.max_l + 1) ** 2
        # L²-normalised on the unit sphere: ∫ Y_lm² dΩ = 1
        self.sh = o3.SphericalHarmonics(list(range(self.max_l + 1)), normalize=True, normalization="integral")
        cols = torch.as_tensor(np.asarray(cols, dtype=np.int64))
        l_of_lm = torch.cat([torch.full((2 * l + 1,), l, dtype=torch.long) for l in range(self.max_l + 1)])
        self.register_buffer("cols", cols)
        self.register_buffer("n_idx", torch.div(cols, self.n_y, rounding_mode="floor"))  # n - 1
        self.register_buffer("lm_idx", cols % self.n_y)
        self.register_buffer("l_idx", l_of_lm[cols % self.n_y])
        # per-(n, l) rescaling of the one-particle basis (product-form priors: R_nl → R_nl/γ_nl); 1 = none
        self.register_buffer("nl_scale", torch.ones(radials.max_n, self.max_l + 1, dtype=torch.float64))
        # analytic path (``with_grad``): standard real harmonics, e3nn's basis = a signed permutation of them
        self.sph = RealSphericalHarmonics(self.max_l)
        src, sign = e3nn_signed_permutation(self.max_l)
        lm = cols % self.n_y
        self.register_buffer("lm_std", torch.from_numpy(src)[lm], persistent=False)
        self.register_buffer("lm_sign", torch.from_numpy(sign)[lm], persistent=False)
        # ∂Y/∂v = (D·Y - l Y u)/r with the (sparse) solid-harmonic gradient matrices D [3, n_y, n_y]
        # as COO (c·n_y + lm, k, value): ≤ 2 terms per (c, lm), far sparser than a dense GEMM
        D = torch.from_numpy(solid_gradient_matrices(self.max_l)).reshape(3 * self.n_y, self.n_y)
        nz_rows, nz_cols = torch.nonzero(D, as_tuple=True)
        self.register_buffer("dsh_row", nz_rows, persistent=False)  # c·n_y + lm
        self.register_buffer("dsh_col", nz_cols, persistent=False)  # k (an l - 1 harmonic)
        self.register_buffer("dsh_val", D[nz_rows, nz_cols], persistent=False)
        self.register_buffer("dsh_col_t", nz_rows % self.n_y, persistent=False)  # lm
        self.register_buffer("dsh_dir", torch.div(nz_rows, self.n_y, rounding_mode="floor"), persistent=False)
        self.register_buffer("l_std", l_of_lm.to(torch.float64), persistent=False)

    @property
    def n_a(self) -> int:
        return int(self.cols.shape[0])

    def forward(self, vectors: torch.Tensor, zi: torch.Tensor, zj: torch.Tensor) -> torch.Tensor:
        r = torch.linalg.norm(vectors, dim=-1)
        R = self.radials(r, zi, zj)  # [E, max_n]
        Y = self.sh(vectors)          # [E, (L+1)²]
        scale = self.nl_scale[self.n_idx, self.l_idx]
        return R.index_select(1, self.n_idx) * Y.index_select(1, self.lm_idx) * scale

    # ---- analytic path: values and derivatives in one pass, feature-major [F, E] (rows gather cheaply) ----

    def with_grad(self, vectors: torch.Tensor, zi: torch.Tensor,
                  zj: torch.Tensor) -> Tuple[torch.Tensor, List[torch.Tensor]]:
        """phi [n_a, E] (= ``forward``ᵀ) and what ``vjp``/``dphi`` need: [u, r, R, dR/dr, Rsel, Ysel, Y]."""
        r = torch.linalg.norm(vectors, dim=-1)
        R, dR = self.radials.with_grad(r, zi, zj)  # [max_n, E]
        Y, _ = self.sph(vectors, False)              # [n_y, E], standard basis
        w = self.lm_sign * self.nl_scale[self.n_idx, self.l_idx]
        Rsel = R.index_select(0, self.n_idx)
        Ysel = Y.index_select(0, self.lm_std) * w.unsqueeze(1)
        u = (vectors / r.clamp_min(1e-300).unsqueeze(-1)).t()
        return Rsel * Ysel, [u, r, R, dR, Rsel, Ysel, Y]

    def vjp(self, g: torch.Tensor, saved: List[torch.Tensor]) -> torch.Tensor:
        """Σ_a g[a, e] ∂phi[a, e]/∂r_e → [3, E] for a cotangent g [n_a, E] (nothing [3, n_a, E] is formed)."""
        u, r, R, dR, Rsel, Ysel, Y = saved
        w = self.lm_sign * self.nl_scale[self.n_idx, self.l_idx]
        g_n = torch.zeros_like(R).index_add_(0, self.n_idx, g * Ysel)  # radial cotangent, reduced over (l, m)
        g_lm = torch.zeros_like(Y).index_add_(0, self.lm_std, g * Rsel * w.unsqueeze(1))  # angular, over n
        # Σ_lm g_lm ∂Y_lm/∂v = (Σ_k (Dᵀ g)_k Y_k - u Σ_lm l g_lm Y_lm) / r
        # one product per non-zero D[c, lm, k]: g_lm · Y_k · D, summed into its direction c
        terms = (g_lm.index_select(0, self.dsh_col_t) * Y.index_select(0, self.dsh_col)
                 * self.dsh_val.to(Y.dtype).unsqueeze(1))
        ang = torch.zeros((3, Y.shape[1]), dtype=Y.dtype, device=Y.device).index_add_(0, self.dsh_dir, terms)
        lt = (self.l_std.to(Y.dtype).unsqueeze(1) * g_lm * Y).sum(0)
        rinv = 1.0 / r.clamp_min(1e-300)
        return u * ((g_n * dR).sum(0) - lt * rinv) + ang * rinv

    def solid_gradients(self, Y: torch.Tensor) -> torch.Tensor:
        """∇S_lm [3, n_y, E]: gradients of the solid-harmonic extensions at r̂ (Σ_k D[c, lm, k] Y_k; standard
        basis ``Y`` [n_y, E]), so that ∂Y_lm/∂v = (∇S_lm - l Y_lm u)/r."""
        DY = torch.zeros((3 * self.n_y, Y.shape[1]), dtype=Y.dtype, device=Y.device).index_add_(
            0, self.dsh_row, Y.index_select(0, self.dsh_col) * self.dsh_val.to(Y.dtype).unsqueeze(1))
        return DY.view(3, self.n_y, -1)

    def dphi(self, saved: List[torch.Tensor]) -> torch.Tensor:
        """∂phi[a, e]/∂r_e[c] as [3, n_a, E]."""
        u, r, R, dR, Rsel, Ysel, Y = saved
        w = self.lm_sign * self.nl_scale[self.n_idx, self.l_idx]
        rinv = 1.0 / r.clamp_min(1e-300)
        dS = self.solid_gradients(Y).index_select(1, self.lm_std)  # ∂S_lm(u)/∂v_c [3, n_a, E]
        # ∂phi/∂v = R w (∂S - l Y u)/r + u R' Y w: one [3, n_a, E] product plus one broadcast add
        coef = Rsel * w.unsqueeze(1) * rinv
        l_a = self.l_std.to(Y.dtype).index_select(0, self.lm_std).unsqueeze(1)
        along_u = dR.index_select(0, self.n_idx) * Ysel - l_a * Ysel * Rsel * rinv
        return torch.addcmul(u.unsqueeze(1) * along_u.unsqueeze(0), dS, coef.unsqueeze(0))


def pool(values: torch.Tensor, index: torch.Tensor, n: int) -> torch.Tensor:
    """Σ over edges into their centre atoms (native index_add_, the default scatter)."""
    shape = [n] + list(values.shape[1:])
    out = torch.zeros(shape, dtype=values.dtype, device=values.device)
    return out.index_add_(0, index, values)


