"""Complex spherical harmonics in ML-PACE's normalisation, as (real, imaginary) torch tensors.

ML-PACE (``ace_spherical_cart.cpp``) uses the complex harmonics with the Condon–Shortley phase, scaled so
that Y_00 = 1, i.e. Y_lm = √(4π) · Y_lm^{standard}:

    Y_lm(r̂) = √((2l+1) (l−m)!/(l+m)!) · (−1)^m · Q_l^m(ẑ) · (x̂ + iŷ)^m,    m ≥ 0,
    Y_l,−m  = (−1)^m · conj(Y_lm),

with Q_l^m(z) = d^m P_l(z)/dz^m (so that P_l^m(cos θ) = (−1)^m sin^m θ · Q_l^m(cos θ)), from the
recurrences Q_m^m = (2m−1)!!, Q_{m+1}^m = (2m+1) z Q_m^m,
Q_l^m = ((2l−1) z Q_{l−1}^m − (l+m−1) Q_{l−2}^m)/(l−m).  Writing sin^m θ e^{imφ} = (x̂ + iŷ)^m keeps
everything polynomial in the unit vector, so there is no singularity on the z axis.

Storage: column l² + l + m, m = −l … l.
"""
from __future__ import annotations

import math
from typing import Tuple

import torch


def pace_ylm(rhat: torch.Tensor, lmax: int) -> Tuple[torch.Tensor, torch.Tensor]:
    """Re Y, Im Y [E, (lmax+1)²] of unit vectors ``rhat`` [E, 3]."""
    x, y, z = rhat[:, 0], rhat[:, 1], rhat[:, 2]
    # (x + iy)^m = C_m + i S_m
    C = [torch.ones_like(x)]
    S = [torch.zeros_like(x)]
    for m in range(1, lmax + 1):
        C.append(x * C[m - 1] - y * S[m - 1])
        S.append(x * S[m - 1] + y * C[m - 1])
    Q = {}
    dfact = 1.0
    for m in range(lmax + 1):
        if m > 0:
            dfact *= 2 * m - 1
        Q[(m, m)] = torch.full_like(z, dfact)
        if m + 1 <= lmax:
            Q[(m + 1, m)] = (2 * m + 1) * z * Q[(m, m)]
        for l in range(m + 2, lmax + 1):
            Q[(l, m)] = ((2 * l - 1) * z * Q[(l - 1, m)] - (l + m - 1) * Q[(l - 2, m)]) / (l - m)
    re = [None] * (lmax + 1) ** 2
    im = [None] * (lmax + 1) ** 2
    for l in range(lmax + 1):
        for m in range(l + 1):
            norm = math.sqrt((2 * l + 1) * math.exp(math.lgamma(l - m + 1) - math.lgamma(l + m + 1)))
            base = ((-1) ** m * norm) * Q[(l, m)]
            yr, yi = base * C[m], base * S[m]
            re[l * l + l + m], im[l * l + l + m] = yr, yi
            if m > 0:
                s = (-1) ** m
                re[l * l + l - m], im[l * l + l - m] = s * yr, -s * yi
    return torch.stack(re, dim=1), torch.stack(im, dim=1)
