"""ML-PACE embedding F(ρ_1 … ρ_P) and the core-repulsion energy cutoff (``ace_abstract_basis.cpp``).

E_i = Σ_p w_p F_{m_p}(ρ_p) · f_cut(ρ_core) + ρ_core + E0(z_i)   (Bochkarev et al. 2022, Eq. 9–11),

FS_parameters = [w_1, m_1, w_2, m_2, …].  Two forms of F (``npoti``):

- ``FinnisSinclair``: F(x) = sign(x) ((1 − g)|x|^m + λ g |x|), g = exp(−(ω|x|)³), ω = 10⁶,
  λ = ω^{1−m}; F = λx for |x| ≤ 1e-10 (a linear core that makes |x|^m differentiable at 0).
- ``FinnisSinclairShiftedScaled``: F(x) = sign(x) ((x_0 + |x|)^m − y_0), x_0 = ν^{ν/(1−ν)} e^{−|x|},
  y_0 = ν^{1/(1−ν)} e^{−|x|}, ν = 1/m; F(x) = x when |m − 1| < 1e-10.

f_cut(ρ) = 1 for ρ ≤ ρ_c − Δρ, 0 for ρ ≥ ρ_c, the quintic switch ``radial.cutoff_func_poly`` in between
(``rho_core_cutoff`` ρ_c, ``drho_core_cutoff`` Δρ).
"""
from __future__ import annotations

import torch

from .radial import cutoff_func_poly

EMBEDDINGS = ("FinnisSinclair", "FinnisSinclairShiftedScaled")


def _sign(x: torch.Tensor) -> torch.Tensor:
    # ML-PACE uses signbit: +1 for x = +0
    return torch.where(x < 0, -torch.ones_like(x), torch.ones_like(x))


def fs_exp(x: torch.Tensor, m: float) -> torch.Tensor:
    w = 1.0e6
    lam = (1.0 / w) ** (m - 1.0)
    a = x.abs()
    big = a > 1e-10
    a_s = torch.where(big, a, torch.ones_like(a))
    w3 = (w * a_s) ** 3
    g = torch.where(w3 > 30.0, torch.zeros_like(a_s), torch.exp(-w3.clamp(max=30.0)))
    F = _sign(x) * ((1.0 - g) * a_s ** m + lam * g * a_s)
    return torch.where(big, F, lam * x)


def fs_shifted_scaled(x: torch.Tensor, m: float) -> torch.Tensor:
    if abs(m - 1.0) < 1e-10:
        return x
    a = x.abs()
    e = torch.exp(-a)
    nu = 1.0 / m
    x0 = nu ** (nu / (1.0 - nu)) * e
    y0 = nu ** (1.0 / (1.0 - nu)) * e
    return _sign(x) * ((x0 + a) ** m - y0)


def embedding_energy(npoti: str, fs_parameters, rho: torch.Tensor) -> torch.Tensor:
    """Σ_p w_p F(ρ_p) for ρ [N, P] of atoms of one element."""
    F = fs_exp if npoti == "FinnisSinclair" else fs_shifted_scaled
    out = torch.zeros(rho.shape[0], dtype=rho.dtype, device=rho.device)
    for p in range(rho.shape[1]):
        w, m = float(fs_parameters[2 * p]), float(fs_parameters[2 * p + 1])
        out = out + w * F(rho[:, p], m)
    return out


def rho_core_cutoff(rho_core: torch.Tensor, rho_cut: float, drho_cut: float) -> torch.Tensor:
    # current ML-PACE switches with the same quintic as the inner distance cutoff (older versions used
    # a cosine); python-ace 0.4 agrees with the quintic
    rc = torch.full_like(rho_core, rho_cut)
    return cutoff_func_poly(rho_core, rc, torch.full_like(rho_core, drho_cut))
