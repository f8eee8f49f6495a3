"""Real spherical harmonics with their gradients, in e3nn's convention, feature-major ([F, E]).

The reference path of the model evaluates Y_lm with ``e3nn.o3.SphericalHarmonics`` and differentiates
by autograd.  The analytic fast path (``basis.EdgeEmbedding.with_grad``) needs Y and ∇Y in one pass and
in a layout that makes the per-(n, l, m) gathers plain row copies, so this module evaluates

    Y_lm(u) = N_lm Q_l^|m|(u_z') · {Re, Im}(u_x' + i u_y')^|m|,   Q_l^m = d^m P_l / dz^m,

with the three-term recurrence (l - m) Q_l^m = (2l - 1) z Q_{l-1}^m - (l + m - 1) Q_{l-2}^m vectorised
over m, ∂Q_l^m/∂z = Q_l^{m+1} and ∂(x + iy)^m/∂x = m (x + iy)^{m-1}, ∂/∂y = i m (x + iy)^{m-1}.  The
gradient with respect to the (unnormalised) vector is (I - u uᵀ) ∇_u Y / r.

e3nn's real basis is the standard one up to a cyclic relabelling of the axes (x', y', z') = (z, x, y)
and a signed permutation within each l; ``e3nn_signed_permutation`` finds that permutation numerically
once (it must be exact, or it raises), and callers fold it into their gathers at no run-time cost.
Normalisation: ∫ Y_lm² dΩ = 1 (e3nn ``normalization="integral"``).
"""
from __future__ import annotations

import math
from typing import List, Tuple

import numpy as np
import torch
from torch import nn


def _double_factorial(n: int) -> float:
    return float(np.prod(np.arange(n, 0, -2))) if n > 0 else 1.0


def _norms(max_l: int) -> np.ndarray:
    """N_lm for m = -l..l, l = 0..L (flat, e3nn-independent standard ordering)."""
    out = []
    for l in range(max_l + 1):
        for m in range(-l, l + 1):
            am = abs(m)
            k = math.sqrt((2 * l + 1) / (4 * math.pi) * math.factorial(l - am) / math.factorial(l + am))
            out.append(k if m == 0 else math.sqrt(2.0) * k)
    return np.asarray(out)


class RealSphericalHarmonics(nn.Module):
    """Y [(L+1)², E] and, with ``grad=True``, ∂Y/∂v [3, (L+1)², E], in the standard real basis.

    Standard ordering within l: m = -l..l, with m < 0 ↔ Im, m > 0 ↔ Re of (x' + i y')^|m| and
    (x', y', z') = (v_z, v_x, v_y) (the relabelling that makes e3nn's basis a signed permutation of it).
    """

    def __init__(self, max_l: int):
        super().__init__()
        self.max_l = int(max_l)
        L = self.max_l
        self.register_buffer("norm", torch.from_numpy(_norms(L)))
        absm = [abs(m) for l in range(L + 1) for m in range(-l, l + 1)]
        self.register_buffer("absm", torch.tensor(absm, dtype=torch.long))
        # recurrence constants per l ≥ 2 for m = 0..l-2: a = (2l-1)/(l-m), b = (l+m-1)/(l-m)
        a, b = [], []
        for l in range(2, L + 1):
            m = np.arange(l - 1)
            a.append((2 * l - 1) / (l - m))
            b.append((l + m - 1) / (l - m))
        self.register_buffer("rec_a", torch.from_numpy(np.concatenate(a)) if a else torch.zeros(0, dtype=torch.float64))
        self.register_buffer("rec_b", torch.from_numpy(np.concatenate(b)) if b else torch.zeros(0, dtype=torch.float64))
        self.register_buffer("qmm", torch.tensor([_double_factorial(2 * l - 1) for l in range(L + 1)],
                                                 dtype=torch.float64))
        self.register_buffer("mfac", torch.tensor([float(abs(m)) for m in range(-L, L + 1)], dtype=torch.float64))

    def forward(self, vectors: torch.Tensor, grad: bool = False) -> Tuple[torch.Tensor, torch.Tensor]:
        L = self.max_l
        r = torch.linalg.norm(vectors, dim=-1).clamp_min(1e-300)
        u = (vectors / r.unsqueeze(-1)).t()  # [3, E]
        x, y, z = u[2], u[0], u[1]  # primed frame
        one = torch.ones_like(x)
        # (x + i y)^m, m = 0..L
        c: List[torch.Tensor] = [one]
        s: List[torch.Tensor] = [torch.zeros_like(x)]
        for _ in range(L):
            c_new = x * c[-1] - y * s[-1]
            s.append(x * s[-1] + y * c[-1])
            c.append(c_new)
        C, S = torch.stack(c), torch.stack(s)  # [L+1, E]
        cs = torch.cat([S.flip(0)[:L], C])  # rows m = -L..L: S_|m| (m<0), C_m (m≥0)
        # Q_l^m, m = 0..l, as [l+1, E] blocks; padded with a zero row (Q_l^{l+1} = 0) for ∂/∂z
        q_prev2 = one.unsqueeze(0)
        Q: List[torch.Tensor] = [q_prev2]
        if L >= 1:
            q_prev = torch.stack([z, one])
            Q.append(q_prev)
            o = 0
            for l in range(2, L + 1):
                a = self.rec_a[o:o + l - 1].unsqueeze(1).to(x.dtype)
                b = self.rec_b[o:o + l - 1].unsqueeze(1).to(x.dtype)
                o += l - 1
                low = a * z * q_prev[: l - 1] - b * q_prev2[: l - 1]
                top = (2 * l - 1) * z * q_prev[l - 1: l]
                q = torch.cat([low, top, self.qmm[l].to(x.dtype) * one.unsqueeze(0)])
                Q.append(q)
                q_prev2, q_prev = q_prev, q
        blocks: List[torch.Tensor] = []
        gx: List[torch.Tensor] = []
        gy: List[torch.Tensor] = []
        gz: List[torch.Tensor] = []
        if grad:
            zero = torch.zeros_like(x).unsqueeze(0)
            # ∂/∂x' of S_|m| (m<0) = |m| S_{|m|-1}; of C_m = m C_{m-1}; ∂/∂y': |m| C_{|m|-1}, -m S_{m-1}
            mf = self.mfac.to(x.dtype).unsqueeze(1)
            dcs_x = mf * torch.cat([S.flip(0)[1:L + 1], zero, C[:L]]) if L > 0 else zero
            dcs_y = mf * torch.cat([C.flip(0)[1:L + 1], zero, -S[:L]]) if L > 0 else zero
        else:
            dcs_x = cs
            dcs_y = cs
        p = 0
        for l in range(L + 1):
            n = 2 * l + 1
            am = self.absm[p:p + n]
            nrm = self.norm[p:p + n].to(x.dtype).unsqueeze(1)
            p += n
            q = Q[l].index_select(0, am)
            rows = slice(L - l, L + l + 1)
            blocks.append(nrm * q * cs[rows])
            if grad:
                gx.append(nrm * q * dcs_x[rows])
                gy.append(nrm * q * dcs_y[rows])
                if l > 0:
                    q1 = torch.cat([Q[l], torch.zeros_like(x).unsqueeze(0)]).index_select(0, am + 1)
                    gz.append(nrm * q1 * cs[rows])
                else:
                    gz.append(torch.zeros_like(blocks[-1]))
        Y = torch.cat(blocks)
        if not grad:
            return Y, Y.new_zeros(0)
        # gradient of the polynomial extension in the unprimed frame: ∂/∂u_x = ∂/∂y', ∂/∂u_y = ∂/∂z', ∂/∂u_z = ∂/∂x'
        G = torch.stack([torch.cat(gy), torch.cat(gz), torch.cat(gx)])  # [3, nY, E]
        radial = (u.unsqueeze(1) * G).sum(0, keepdim=True)  # u·∇f [1, nY, E]
        dY = (G - u.unsqueeze(1) * radial) / r.unsqueeze(0)
        return Y, dY


def e3nn_signed_permutation(max_l: int) -> Tuple[np.ndarray, np.ndarray]:
    """(src, sign) with Y_e3nn[k] = sign[k] · Y_std[src[k]] for every k < (L+1)², found on random points.

    Raises if the relation is not an exact signed permutation (e.g. a changed e3nn convention).
    """
    from e3nn import o3

    g = torch.Generator().manual_seed(1234)
    v = torch.randn(64 + 8 * (max_l + 1) ** 2, 3, generator=g, dtype=torch.float64)
    ye = o3.spherical_harmonics(list(range(max_l + 1)), v, normalize=True, normalization="integral")
    ys, _ = RealSphericalHarmonics(max_l).to(torch.float64)(v)
    ys = ys.t()
    src = np.zeros(ye.shape[1], dtype=np.int64)
    sign = np.zeros(ye.shape[1])
    for k in range(ye.shape[1]):
        l = int(math.isqrt(k))
        cand = range(l * l, (l + 1) ** 2)
        best = max(cand, key=lambda c: abs(float((ye[:, k] * ys[:, c]).mean())))
        sg = 1.0 if float((ye[:, k] * ys[:, best]).sum()) > 0 else -1.0
        err = float((ye[:, k] - sg * ys[:, best]).abs().max())
        if err > 1e-10 * max(1.0, float(ye[:, k].abs().max())):
            raise RuntimeError(f"e3nn's real spherical harmonics (l = {l}) are not a signed permutation of the "
                               f"standard basis (residual {err:.2e}); the analytic fast path cannot be used")
        src[k], sign[k] = best, sg
    return src, sign


def solid_gradient_matrices(max_l: int) -> np.ndarray:
    """D [3, n_y, n_y] with ∂S_lm/∂v_c (u) = Σ_k D[c, lm, k] Y_k(u), S_lm(v) = r^l Y_lm(v̂) (standard basis).

    ∂_c S_lm is a harmonic homogeneous polynomial of degree l - 1, so it lies exactly in the span of the
    S_{l-1, m'}; the coefficients are found once by least squares on random unit vectors (residual checked).
    Then ∂Y_lm/∂v_c = (Σ_k D[c, lm, k] Y_k - l Y_lm u_c) / r: the harmonics' gradient costs one small GEMM.
    """
    n_y = (max_l + 1) ** 2
    D = np.zeros((3, n_y, n_y))
    if max_l == 0:
        return D
    g = torch.Generator().manual_seed(4321)
    v = torch.randn(32 + 4 * n_y, 3, generator=g, dtype=torch.float64)
    u = v / torch.linalg.norm(v, dim=-1, keepdim=True)
    Y, dY = RealSphericalHarmonics(max_l).to(torch.float64)(u, True)  # [n_y, K], [3, n_y, K]
    ls = torch.tensor([l for l in range(max_l + 1) for _ in range(2 * l + 1)], dtype=torch.float64)
    dS = dY + ls.view(1, -1, 1) * Y.unsqueeze(0) * u.t().unsqueeze(1)  # ∂_c S at |v| = 1
    for l in range(1, max_l + 1):
        lo, hi = (l - 1) ** 2, l * l  # the l - 1 block
        rows = slice(l * l, (l + 1) ** 2)
        basis = Y[lo:hi].t()  # [K, 2l-1]
        for c in range(3):
            sol = torch.linalg.lstsq(basis, dS[c, rows].t()).solution  # [2l-1, 2l+1]
            res = float((basis @ sol - dS[c, rows].t()).abs().max())
            if res > 1e-10 * max(1.0, float(dS[c, rows].abs().max())):
                raise RuntimeError(f"solid-harmonic gradient of l = {l} not in the span of l - 1 (residual {res:.1e})")
            D[c, rows, lo:hi] = sol.t().numpy()
    D[np.abs(D) < 1e-13] = 0.0
    return _snap_to_sqrt_rationals(D)


def _snap_to_sqrt_rationals(D: np.ndarray) -> np.ndarray:
    """Replace each entry by ±√(p/q), its exact value (D² is rational: the 4π of the normalisations cancels).

    Makes the table bit-identical in every process, whatever the BLAS threading of the least-squares solve
    (checkpoints fingerprint the model; resumed runs must give the same rows).
    """
    from fractions import Fraction

    out = np.zeros_like(D)
    for idx in zip(*np.nonzero(D)):
        d = float(D[idx])
        q = Fraction(d * d).limit_denominator(10**8)
        v = math.copysign(math.sqrt(q.numerator / q.denominator), d)
        if abs(v - d) > 1e-11 * abs(d):
            raise RuntimeError(f"solid-harmonic gradient entry {d!r} is not ±sqrt of a small rational")
        out[idx] = v
    return out
