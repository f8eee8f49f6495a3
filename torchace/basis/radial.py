"""Radial embeddings: Agnesi distance transform, envelopes, orthonormal polynomials.

ACEpotentials.jl v0.10 ``ace1_model`` conventions (ACEpotentials.jl paper, §II.B and appendix):

* Agnesi transform y(r) = 1 / (1 + a s^q / (1 + s^(q-p))), s = r/r0,
  a = (-2q + p(4q-2)) / (p + p² + q + q²); x = -1 + 2 (y - y(0)) / (y(rcut) - y(0)) so x(0) = -1,
  x(rcut) = +1.  (p, q) = (2, 4) for the many-body basis and (1, 3) for the pair basis.
* Many-body radials R_n(r) = P_{n-1}(x) (1 - x)² (1 + x)² with P_k orthonormal on [-1, 1] for the
  weight (1 - x)⁴ (1 + x)⁴, i.e. the R_n are orthonormal in L²(dx).  With several elements the
  neighbour species is interleaved into n (see ``spec``).
* Pair radials: orthonormal Legendre P_k(x) (Agnesi(1, 3)) times the envelope
  s^-2 - s_c^-2 + 2 s_c^-3 (s - s_c), s = r/r0, s_c = rcut/r0, zero beyond rcut.

Every transform parameter is per (centre, neighbour) element pair, held in [NZ, NZ] buffers.
"""
from __future__ import annotations

from typing import Tuple

import numpy as np
import torch
from torch import nn


def agnesi_a(p: float, q: float) -> float:
    return (-2.0 * q + p * (4.0 * q - 2.0)) / (p + p * p + q + q * q)


def agnesi_y(r: torch.Tensor, r0: torch.Tensor, p: float, q: float) -> torch.Tensor:
    s = r / r0
    return 1.0 / (1.0 + agnesi_a(p, q) * s**q / (1.0 + s ** (q - p)))


def agnesi_y_dy(r: torch.Tensor, r0: torch.Tensor, p: float, q: float) -> Tuple[torch.Tensor, torch.Tensor]:
    """y(r) of ``agnesi_y`` and dy/dr (analytic: y = 1/(1 + a·g(s)), g = s^q/(1 + s^(q-p)), s = r/r0)."""
    a = agnesi_a(p, q)
    s = r / r0
    sqp = s ** (q - p)
    den = 1.0 + sqp
    g = s**q / den
    dg = (q * s ** (q - 1.0) * den - s**q * (q - p) * s ** (q - p - 1.0)) / (den * den)
    y = 1.0 / (1.0 + a * g)
    return y, -a * y * y * dg / r0


def orthonormal_recurrence(maxdeg: int, alpha: float, beta: float) -> np.ndarray:
    """Three-term recurrence of polynomials orthonormal for (1-x)^alpha (1+x)^beta on [-1, 1].

    Stieltjes procedure with Gauss–Legendre quadrature exact for every inner product used.
    Returns ``coef`` [maxdeg + 1, 3] with p_0 = coef[0, 0] and
    p_{k+1} = (coef[k+1, 0] x + coef[k+1, 1]) p_k + coef[k+1, 2] p_{k-1}.
    """
    npts = maxdeg + int(alpha + beta) // 2 + 8
    x, w = np.polynomial.legendre.leggauss(npts)
    w = w * (1 - x) ** alpha * (1 + x) ** beta
    coef = np.zeros((maxdeg + 1, 3))
    p_prev = np.zeros_like(x)
    p = np.full_like(x, 1.0 / np.sqrt(w.sum()))
    coef[0, 0] = p[0]
    b_prev = 0.0
    for k in range(maxdeg):
        a_k = np.sum(w * x * p * p)
        q = (x - a_k) * p - b_prev * p_prev
        b_k = np.sqrt(np.sum(w * q * q))
        coef[k + 1] = (1.0 / b_k, -a_k / b_k, -b_prev / b_k)
        p_prev, p, b_prev = p, q / b_k, b_k
    return coef


def eval_recurrence(x: torch.Tensor, coef: torch.Tensor, n: int) -> torch.Tensor:
    """Evaluate the first ``n`` polynomials of a recurrence at x: [..., n]."""
    p0 = torch.full_like(x, 1.0) * coef[0, 0]
    out = [p0]
    if n > 1:
        p_prev = torch.zeros_like(x)
        p = p0
        for k in range(1, n):
            p_new = (coef[k, 0] * x + coef[k, 1]) * p + coef[k, 2] * p_prev
            p_prev = p
            p = p_new
            out.append(p)
    return torch.stack(out, dim=-1)


def eval_recurrence_grad(x: torch.Tensor, coef: torch.Tensor, n: int) -> Tuple[torch.Tensor, torch.Tensor]:
    """The first ``n`` polynomials at x [E] and their x-derivatives, feature-major: ([n, E], [n, E])."""
    p = torch.full_like(x, 1.0) * coef[0, 0]
    dp = torch.zeros_like(x)
    vals, ders = [p], [dp]
    p_prev, dp_prev = torch.zeros_like(x), torch.zeros_like(x)
    for k in range(1, n):
        a, b, c = coef[k, 0], coef[k, 1], coef[k, 2]
        lin = a * x + b
        p_new = lin * p + c * p_prev
        dp_new = a * p + lin * dp + c * dp_prev
        p_prev, dp_prev, p, dp = p, dp, p_new, dp_new
        vals.append(p)
        ders.append(dp)
    return torch.stack(vals), torch.stack(ders)


class AgnesiTransform(nn.Module):
    """r ↦ x ∈ [-1, 1] per element pair; x(0) = -1, x(rcut) = +1."""

    def __init__(self, r0: torch.Tensor, rcut: float, p: float, q: float):
        super().__init__()
        self.p = float(p)
        self.q = float(q)
        self.rcut = float(rcut)
        r0 = r0.to(torch.float64)
        self.register_buffer("r0", r0)
        y_cut = agnesi_y(torch.full_like(r0, self.rcut), r0, self.p, self.q)
        self.register_buffer("y_cut", y_cut)

    def forward(self, r: torch.Tensor, zi: torch.Tensor, zj: torch.Tensor) -> torch.Tensor:
        r0 = self.r0[zi, zj]
        y = agnesi_y(r, r0, self.p, self.q)
        # y(0) = 1 for every Agnesi transform
        return -1.0 + 2.0 * (y - 1.0) / (self.y_cut[zi, zj] - 1.0)

    def with_grad(self, r: torch.Tensor, zi: torch.Tensor, zj: torch.Tensor) -> Tuple[torch.Tensor, torch.Tensor]:
        """(x, dx/dr)."""
        r0 = self.r0[zi, zj]
        y, dy = agnesi_y_dy(r, r0, self.p, self.q)
        f = 2.0 / (self.y_cut[zi, zj] - 1.0)
        return -1.0 + f * (y - 1.0), f * dy


class ManyBodyRadials(nn.Module):
    """R[e, n] for n = 1..max_n, species interleaved: n = k·NZ + s_j + 1, R = P_k(x) (1-x)²(1+x)²."""

    def __init__(self, r0: torch.Tensor, rcut: float, nz: int, max_degree: int):
        super().__init__()
        self.nz = int(nz)
        self.n_poly = int(max_degree) + 1
        self.transform = AgnesiTransform(r0, rcut, 2.0, 4.0)
        self.register_buffer("coef", torch.from_numpy(orthonormal_recurrence(self.n_poly, 4.0, 4.0)))
        self.rcut = float(rcut)

    @property
    def max_n(self) -> int:
        return self.n_poly * self.nz

    def forward(self, r: torch.Tensor, zi: torch.Tensor, zj: torch.Tensor) -> torch.Tensor:
        x = self.transform(r, zi, zj)
        env = (1.0 - x) ** 2 * (1.0 + x) ** 2
        env = torch.where(r < self.rcut, env, torch.zeros_like(env))
        P = eval_recurrence(x, self.coef, self.n_poly) * env.unsqueeze(-1)  # [E, n_poly]
        onehot = nn.functional.one_hot(zj, self.nz).to(P.dtype)  # [E, NZ]
        return (P.unsqueeze(-1) * onehot.unsqueeze(-2)).reshape(r.shape[0], self.n_poly * self.nz)

    def with_grad(self, r: torch.Tensor, zi: torch.Tensor, zj: torch.Tensor) -> Tuple[torch.Tensor, torch.Tensor]:
        """(R, dR/dr) feature-major [max_n, E] (the analytic fast path; same values as ``forward``ᵀ)."""
        x, dx = self.transform.with_grad(r, zi, zj)
        inside = r < self.rcut
        w = 1.0 - x * x
        env = torch.where(inside, w * w, torch.zeros_like(w))
        denv = torch.where(inside, -4.0 * x * w * dx, torch.zeros_like(w))
        P, dP = eval_recurrence_grad(x, self.coef, self.n_poly)  # [n_poly, E]
        R, dR = P * env, dP * (dx * env) + P * denv
        if self.nz == 1:
            return R, dR
        onehot = nn.functional.one_hot(zj, self.nz).to(R.dtype).t()  # [NZ, E]
        n_e = r.shape[0]
        return ((R.unsqueeze(1) * onehot).reshape(self.n_poly * self.nz, n_e),
                (dR.unsqueeze(1) * onehot).reshape(self.n_poly * self.nz, n_e))


class PairBasis(nn.Module):
    """V[e, k], k = 0..n_pair-1: orthonormal Legendre in the Agnesi(1, 3) variable times the pair envelope."""

    def __init__(self, r0: torch.Tensor, rcut: float, n_pair: int):
        super().__init__()
        self.n_pair = int(n_pair)
        self.rcut = float(rcut)
        self.transform = AgnesiTransform(r0, rcut, 1.0, 3.0)
        self.register_buffer("coef", torch.from_numpy(orthonormal_recurrence(max(self.n_pair, 1), 0.0, 0.0)))
        # per-degree rescaling (priors act on the pair basis as on R_nl); 1 = none
        self.register_buffer("scale", torch.ones(self.n_pair, dtype=torch.float64))

    def forward(self, r: torch.Tensor, zi: torch.Tensor, zj: torch.Tensor) -> torch.Tensor:
        x = self.transform(r, zi, zj)
        r0 = self.transform.r0[zi, zj]
        s = r / r0
        sc = self.rcut / r0
        env = s ** (-2) - sc ** (-2) + 2.0 * sc ** (-3) * (s - sc)
        env = torch.where(r < self.rcut, env, torch.zeros_like(env))
        return eval_recurrence(x, self.coef, self.n_pair) * (env.unsqueeze(-1) * self.scale)

    def with_grad(self, r: torch.Tensor, zi: torch.Tensor, zj: torch.Tensor) -> Tuple[torch.Tensor, torch.Tensor]:
        """(V, dV/dr) feature-major [n_pair, E]."""
        x, dx = self.transform.with_grad(r, zi, zj)
        r0 = self.transform.r0[zi, zj]
        s = r / r0
        sc = self.rcut / r0
        inside = r < self.rcut
        env = torch.where(inside, s ** (-2) - sc ** (-2) + 2.0 * sc ** (-3) * (s - sc), torch.zeros_like(s))
        denv = torch.where(inside, (-2.0 * s ** (-3) + 2.0 * sc ** (-3)) / r0, torch.zeros_like(s))
        P, dP = eval_recurrence_grad(x, self.coef, self.n_pair)
        sc_k = self.scale.unsqueeze(1)
        return P * env * sc_k, (dP * (dx * env) + P * denv) * sc_k
