"""Atomic basis A, product basis AA and symmetric (coupled) basis B.

ACE (Drautz 2019; ACEpotentials.jl paper §II): A_{i,nlm} = Σ_j R_n(r_ij) Y_l^m(r̂_ij) (pooled by a
scatter-add over edges), AA_{i,k} = Π_t A_{i, a_{k,t}} over sorted multisets a_k of A-indices, and
B_i = C·AA_i with the sparse coupling matrix C of ``coupling``.
"""
from __future__ import annotations

from typing import List, Tuple

import numpy as np
import torch
from e3nn import o3
from torch import nn

from .radial import ManyBodyRadials
from .sph import RealSphericalHarmonics, e3nn_signed_permutation, solid_gradient_matrices

MAX_L_E3NN = 12  # e3nn's spherical harmonics are implemented up to l = 12


class EdgeEmbedding(nn.Module):
    """phi[e, a] = R_n(r_e; z_i, z_j) · Y_l^m(r̂_e) for the one-particle functions a = (n, l, m) in use.

    ``cols`` lists them as flat indices (n - 1)·(L+1)² + l² + (m + l) (L = max_l); only functions that
    appear in some product are computed (with total-degree selection that is a small fraction of all
    (n, l, m) pairs, e.g. 170 of 1620 for Si order 3, totaldegree [20, 16, 12]).
    """

    def __init__(self, radials: ManyBodyRadials, max_l: int, cols: np.ndarray):
        super().__init__()
        if max_l > MAX_L_E3NN:
            raise ValueError(f"this basis needs spherical harmonics up to l = {max_l}; e3nn provides l <= {MAX_L_E3NN}: "
                             "lower totaldegree or raise wL")
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

    def dphi(self, saved: List[torch.Tensor]) -> torch.Tensor:
        """∂phi[a, e]/∂r_e[c] as [3, n_a, E]."""
        u, r, R, dR, Rsel, Ysel, Y = saved
        w = self.lm_sign * self.nl_scale[self.n_idx, self.l_idx]
        rinv = 1.0 / r.clamp_min(1e-300)
        DY = torch.zeros((3 * self.n_y, Y.shape[1]), dtype=Y.dtype, device=Y.device).index_add_(
            0, self.dsh_row, Y.index_select(0, self.dsh_col) * self.dsh_val.to(Y.dtype).unsqueeze(1))
        dS = DY.view(3, self.n_y, -1).index_select(1, self.lm_std)  # ∂S_lm(u)/∂v_c [3, n_a, E]
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


class ProductBasis(nn.Module):
    """AA[i, k] = Π_t A[i, idx[k, t]]; rows of lower order are padded with a column of ones."""

    def __init__(self, aa: List[np.ndarray], n_a: int):
        super().__init__()
        order = max(x.shape[1] for x in aa) if aa else 1
        blocks = []
        for x in aa:
            pad = np.full((x.shape[0], order - x.shape[1]), n_a, dtype=np.int64)
            blocks.append(np.concatenate([x, pad], axis=1))
        idx = np.concatenate(blocks) if blocks else np.zeros((0, order), np.int64)
        self.register_buffer("idx", torch.from_numpy(idx))
        self.n_a = int(n_a)

    @property
    def n_aa(self) -> int:
        return int(self.idx.shape[0])

    def forward(self, A: torch.Tensor) -> torch.Tensor:
        A1 = torch.cat([A, torch.ones_like(A.narrow(-1, 0, 1))], dim=-1)
        # explicit product over the (few) correlation positions: cheaper than prod() under autograd/jvp
        out = A1.index_select(-1, self.idx[:, 0])
        for t in range(1, self.idx.shape[1]):
            out = out * A1.index_select(-1, self.idx[:, t])
        return out


    def grad(self, A: torch.Tensor, c: torch.Tensor) -> torch.Tensor:
        """∂(Σ_k c[..., k] AA[..., k])/∂A [..., n_a] from the leave-one-out products (no autograd)."""
        loo = self.leave_one_out(A) * c.unsqueeze(-2)  # [..., ν, n_AA]
        shape = list(A.shape[:-1]) + [self.n_a + 1]
        out = torch.zeros(shape, dtype=A.dtype, device=A.device)
        for t in range(self.idx.shape[1]):
            out.index_add_(-1, self.idx[:, t], loo.select(-2, t))
        return out.narrow(-1, 0, self.n_a)

    def leave_one_out(self, A: torch.Tensor) -> torch.Tensor:
        """L[..., t, k] = Π_{s≠t} A[..., idx[k, s]] ([..., ν, n_AA]), so that dAA_k = Σ_t L[t, k]·dA[idx[k, t]]."""
        A1 = torch.cat([A, torch.ones_like(A.narrow(-1, 0, 1))], dim=-1)
        nu = self.idx.shape[1]
        f = [A1.index_select(-1, self.idx[:, t]) for t in range(nu)]
        # prefix/suffix products: no division, exact when factors vanish
        pre = [torch.ones_like(f[0])]
        for t in range(nu - 1):
            pre.append(pre[-1] * f[t])
        out = [pre[nu - 1]]
        suf = torch.ones_like(f[0])
        for t in range(nu - 1, 0, -1):
            suf = suf * f[t]
            out.append(pre[t - 1] * suf)
        out.reverse()
        return torch.stack(out, dim=-2)

    def tangent(self, loo: torch.Tensor, dA: torch.Tensor) -> torch.Tensor:
        """dAA [..., n_AA] from leave-one-out products ``loo`` [..., ν, n_AA] and a tangent dA [..., n_a]."""
        dA1 = torch.cat([dA, torch.zeros_like(dA.narrow(-1, 0, 1))], dim=-1)
        out = loo.select(-2, 0) * dA1.index_select(-1, self.idx[:, 0])
        for t in range(1, self.idx.shape[1]):
            out = out + loo.select(-2, t) * dA1.index_select(-1, self.idx[:, t])
        return out


class SymmetricCoupling(nn.Module):
    """B = C·AA with C sparse (COO buffers ``rows``, ``cols``, ``vals``)."""

    def __init__(self, rows: np.ndarray, cols: np.ndarray, vals: np.ndarray, n_b: int, n_aa: int):
        super().__init__()
        self.register_buffer("rows", torch.from_numpy(rows))
        self.register_buffer("cols", torch.from_numpy(cols))
        self.register_buffer("vals", torch.from_numpy(vals))
        self.n_b = int(n_b)
        self.n_aa = int(n_aa)

    def forward(self, AA: torch.Tensor) -> torch.Tensor:
        shape = list(AA.shape[:-1]) + [self.n_b]
        out = torch.zeros(shape, dtype=AA.dtype, device=AA.device)
        return out.index_add_(-1, self.rows, AA.index_select(-1, self.cols) * self.vals)

    def transpose_apply(self, c: torch.Tensor) -> torch.Tensor:
        """c·C for c [..., n_b] → [..., n_aa]: coefficients of B expressed on AA."""
        shape = list(c.shape[:-1]) + [self.n_aa]
        out = torch.zeros(shape, dtype=c.dtype, device=c.device)
        return out.index_add_(-1, self.cols, c.index_select(-1, self.rows) * self.vals)
