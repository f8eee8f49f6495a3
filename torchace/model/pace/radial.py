"""ML-PACE radial basis g_k(r), the inner cutoff and the hard-core repulsion, in torch.

Definitions follow ML-PACE's ``ace_radial.cpp`` (Lysogorskiy et al., npj Comput. Mater. 7, 97 (2021);
Bochkarev et al., Phys. Rev. Mater. 6, 013804 (2022), §II.A), evaluated analytically (ML-PACE tabulates
them as cubic Hermite splines on a grid of ``deltaSplineBins``; the difference is the spline error,
≈1e-12 for the usual 1e-3 Å grid).  K = nradbase functions per bond, T_n Chebyshev polynomials of the
first kind:

- ``ChebExpCos``  x = 1 − 2 (e^{−λr/rc} − e^{−λ}) / (1 − e^{−λ}); g_0 = 1, g_k = (1 − T_k(x))/2 (k ≥ 1),
  all times the envelope (1 + cos(π r/rc))/2 and, for r > rc − dcut, (1 + cos(π (r − rc + dcut)/dcut))/2.
- ``ChebPow``     x = 1 − 2 (1 − r/rc)^λ;   g_k = (1 − T_{k+1}(x))/2, k = 0 … K−1 (no envelope).
- ``ChebLinear``  x = 1 − r/rc;             g_k = (1 − T_{k+1}(x))/2 (no envelope, not zero at rc:
  ML-PACE's definition, reproduced as is).
- ``SBessel``     "simplified spherical Bessel" functions (Kocer, Mason, Erturk, J. Chem. Phys. 150,
  154102 (2019)): f_n = (−1)^n √2 π/rc^{3/2} (n+1)(n+2)/√((n+1)² + (n+2)²) (sinc((n+1)πr/rc) +
  sinc((n+2)πr/rc)), orthogonalised by g_0 = f_0, g_n = (f_n + √(e_n/d_{n−1}) g_{n−1})/√d_n with
  e_n = n²(n+2)²/(4(n+1)⁴ + 1), d_n = 1 − e_n/d_{n−1}, d_0 = 1.

Every basis is zero for r ≤ r_in − δ_in and r ≥ rc.  With ``inner_cutoff_type`` "distance" it is
multiplied by 1 − f_in(r), f_in the quintic switch ``cutoff_func_poly`` (1 below r_in − δ_in, 0 above
r_in).  Hard-core repulsion ("density"/"distance" types):
c(r) = |pre| e^{−|λ_hc| r²}/r · (1 + cos(π r/rc))/2 (0 when |λ_hc| r² ≥ 50), times f_in(r) for "distance".
"""
from __future__ import annotations

import math

import torch

RADIAL_BASES = ("ChebExpCos", "ChebPow", "ChebLinear", "SBessel")


def chebyshev(x: torch.Tensor, nmax: int) -> torch.Tensor:
    """T_0(x) … T_nmax(x) stacked on a new last axis (three-term recurrence)."""
    T = [torch.ones_like(x), x]
    for _ in range(nmax - 1):
        T.append(2.0 * x * T[-1] - T[-2])
    return torch.stack(T[: nmax + 1], dim=-1)


def cutoff_func_poly(r: torch.Tensor, r_in: torch.Tensor, delta: torch.Tensor) -> torch.Tensor:
    """Quintic switch: 1 for r ≤ r_in − δ, 0 for r ≥ r_in, C² in between (ML-PACE ``cutoff_func_poly``)."""
    safe = torch.where(delta > 0, delta, torch.ones_like(delta))  # δ = 0: the middle branch is never taken
    x = 1.0 - 2.0 * (1.0 + (r - r_in) / safe)
    mid = 0.5 + 3.75 * (x / 4.0 - x ** 3 / 6.0 + x ** 5 / 20.0)
    one, zero = torch.ones_like(r), torch.zeros_like(r)
    return torch.where(r <= r_in - delta, one, torch.where(r >= r_in, zero, mid))


def _cheb_exp_cos(r, lam, rc, dcut, K: int):
    y2 = torch.exp(-lam)
    x = 1.0 - 2.0 * (torch.exp(-lam * r / rc) - y2) / (1.0 - y2)
    T = chebyshev(x, max(K - 1, 1))
    g = torch.cat([T[:, :1], 0.5 - 0.5 * T[:, 1:K]], dim=1)
    env = 0.5 * (1.0 + torch.cos(math.pi * r / rc))
    # outer smoothing over the last dcut (dcut = 0: never active, keep the division finite)
    safe = torch.where(dcut > 0, dcut, torch.ones_like(dcut))
    fc = torch.where(r > rc - dcut, 0.5 * (1.0 + torch.cos(math.pi * (r - rc + dcut) / safe)), torch.ones_like(r))
    return g * (env * fc)[:, None]


def _cheb_pow(r, lam, rc, K: int):
    y = (1.0 - r / rc) ** lam
    T = chebyshev(1.0 - 2.0 * y, K)
    return 0.5 - 0.5 * T[:, 1: K + 1]


def _cheb_linear(r, rc, K: int):
    T = chebyshev(1.0 - r / rc, K)
    return 0.5 - 0.5 * T[:, 1: K + 1]


def _simplified_bessel(r, rc, K: int):
    # sinc((k)πr/rc) for k = 1 … K+1; torch.sinc(t) = sin(πt)/(πt)
    k = torch.arange(1, K + 2, dtype=r.dtype, device=r.device)
    S = torch.sinc(k[None, :] * (r / rc)[:, None])
    scale = rc ** -1.5
    g = []
    d_prev = 1.0
    for n in range(K):
        pre = (-1) ** n * math.sqrt(2.0) * math.pi * (n + 1) * (n + 2) / math.sqrt((n + 1) ** 2 + (n + 2) ** 2)
        f = pre * scale * (S[:, n] + S[:, n + 1])
        if n == 0:
            g.append(f)
            continue
        e = n ** 2 * (n + 2) ** 2 / (4.0 * (n + 1) ** 4 + 1.0)
        d = 1.0 - e / d_prev
        g.append((f + math.sqrt(e / d_prev) * g[-1]) / math.sqrt(d))
        d_prev = d
    return torch.stack(g, dim=1)


def radial_basis(name: str, inner_type: str, r: torch.Tensor, lam: torch.Tensor, rc: torch.Tensor,
                 dcut: torch.Tensor, r_in: torch.Tensor, d_in: torch.Tensor, K: int) -> torch.Tensor:
    """g [E, K] for edges of one bond type (all parameters per edge, [E]); zero outside (r_in − δ_in, rc)."""
    inside = (r > r_in - d_in) & (r < rc)
    # evaluate the formulas on a harmless argument where the result is discarded (finite gradients)
    rs = torch.where(inside, r, 0.5 * rc)
    if name == "ChebExpCos":
        g = _cheb_exp_cos(rs, lam, rc, dcut, K)
    elif name == "ChebPow":
        g = _cheb_pow(rs, lam, rc, K)
    elif name == "ChebLinear":
        g = _cheb_linear(rs, rc, K)
    elif name == "SBessel":
        g = _simplified_bessel(rs, rc, K)
    else:
        raise ValueError(f"radial basis {name!r} not supported (supported: {', '.join(RADIAL_BASES)})")
    if inner_type == "distance":
        g = g * (1.0 - cutoff_func_poly(rs, r_in, d_in))[:, None]
    return torch.where(inside[:, None], g, torch.zeros_like(g))


def core_repulsion(inner_type: str, r: torch.Tensor, pre: torch.Tensor, lam: torch.Tensor, rc: torch.Tensor,
                   r_in: torch.Tensor, d_in: torch.Tensor) -> torch.Tensor:
    """Hard-core repulsion c(r) per edge [E] (summed into ρ_core of the centre atom)."""
    pre, lam = pre.abs(), lam.abs()
    ok = (lam * r * r < 50.0) & (r < rc)
    rs = torch.where(ok, r, 0.5 * rc)
    c = pre * torch.exp(-lam * rs * rs) / rs * 0.5 * (1.0 + torch.cos(math.pi * rs / rc))
    c = torch.where(ok, c, torch.zeros_like(c))
    if inner_type == "distance":
        c = c * cutoff_func_poly(r, r_in, d_in)
    return c
