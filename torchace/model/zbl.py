"""The ZBL baseline: a coefficient-free short-range repulsion added to the site energies (docs/repulsion.md).

``ZBL``: the Ziegler–Biersack–Littmark universal screened nuclear repulsion (ZBL 1985),
  V(r) = Z1 Z2 e²/(4πε0 r) Σ_k c_k exp(−d_k r/a),  a = 0.8854 a0 / (Z1^0.23 + Z2^0.23),
  switched off between r_inner and r_outer as LAMMPS ``pair_style zbl`` does: E(r) = V(r) + S(r) with
  S = C for r < r_inner, S = A/3 δ³ + B/4 δ⁴ + C (δ = r − r_inner) up to r_outer, E = 0 beyond, where A, B,
  C make E, E′ and E″ vanish at r_outer.  Used by ``ACEModel`` as an additive, coefficient-free baseline
  (``ACEConfig.zbl``); site energy ½ Σ_j E(r_ij), so the total is the pair sum.
The synthetic-dimer augmentations that fit around it are in ``torchace.fit.repulsion``.
"""
from __future__ import annotations

from typing import Sequence, Tuple

import numpy as np
import torch
from torch import nn

# ZBL universal screening function φ(x) = Σ_k c_k exp(−d_k x) (Ziegler, Biersack, Littmark 1985; the values
# of LAMMPS pair_style zbl)
ZBL_C = (0.18175, 0.50986, 0.28022, 0.02817)
ZBL_D = (3.19980, 0.94229, 0.40290, 0.20162)
COULOMB = 14.399645  # e²/(4πε0), eV·Å
BOHR = 0.529177      # a0, Å
ZBL_A = 0.8854       # a_u = 0.8854 a0 / (Z1^0.23 + Z2^0.23)



def zbl_screening_length(z1: float, z2: float) -> float:
    return ZBL_A * BOHR / (z1 ** 0.23 + z2 ** 0.23)


def zbl_unswitched(r, z1: float, z2: float, derivative: int = 0):
    """Bare ZBL V(r) (eV) or its first/second derivative in r, numpy, float64."""
    r = np.asarray(r, dtype=np.float64)
    a = zbl_screening_length(z1, z2)
    k = z1 * z2 * COULOMB
    c, d = np.asarray(ZBL_C), np.asarray(ZBL_D)
    e = np.exp(-np.multiply.outer(r / a, d))
    phi, dphi, ddphi = e @ c, -(e @ (c * d)), e @ (c * d * d)
    if derivative == 0:
        return k * phi / r
    if derivative == 1:
        return k * (dphi / (a * r) - phi / r ** 2)
    if derivative == 2:
        return k * (ddphi / (a * a * r) - 2.0 * dphi / (a * r * r) + 2.0 * phi / r ** 3)
    raise ValueError("derivative must be 0, 1 or 2")


def zbl_switch_coefficients(z1: float, z2: float, r_inner: float, r_outer: float):
    """(A, B, C) of the LAMMPS switching polynomial: E, E′, E″ of V + S vanish at r_outer."""
    D = r_outer - r_inner
    E, E1, E2 = (float(zbl_unswitched(r_outer, z1, z2, k)) for k in range(3))
    A = (-3.0 * E1 + D * E2) / D ** 2
    B = (2.0 * E1 - D * E2) / D ** 3
    C = -E + 0.5 * D * E1 - D * D * E2 / 12.0
    return A, B, C


class ZBL(nn.Module):
    """Switched ZBL pair energy E(r) per edge for element pairs held in [NZ, NZ] buffers."""

    def __init__(self, numbers: Sequence[int], r_inner, r_outer):
        super().__init__()
        nz = len(numbers)
        r_inner = np.asarray(r_inner, dtype=np.float64).reshape(nz, nz)
        r_outer = np.asarray(r_outer, dtype=np.float64).reshape(nz, nz)
        a, k, A, B, C = (np.zeros((nz, nz)) for _ in range(5))
        for i, zi in enumerate(numbers):
            for j, zj in enumerate(numbers):
                a[i, j] = zbl_screening_length(zi, zj)
                k[i, j] = zi * zj * COULOMB
                A[i, j], B[i, j], C[i, j] = zbl_switch_coefficients(zi, zj, r_inner[i, j], r_outer[i, j])
        f64 = lambda x: torch.tensor(x, dtype=torch.float64)  # noqa: E731
        self.register_buffer("a", f64(a))
        self.register_buffer("k", f64(k))
        self.register_buffer("r_inner", f64(r_inner))
        self.register_buffer("r_outer", f64(r_outer))
        self.register_buffer("A", f64(A))
        self.register_buffer("B", f64(B))
        self.register_buffer("C", f64(C))
        self.register_buffer("c", f64(ZBL_C))
        self.register_buffer("d", f64(ZBL_D))

    def forward(self, r: torch.Tensor, zi: torch.Tensor, zj: torch.Tensor) -> torch.Tensor:
        r_out = self.r_outer[zi, zj]
        inside = r < r_out
        rs = torch.where(inside, r, r_out)  # keeps the unused branch finite (and its gradient zero)
        x = (rs / self.a[zi, zj]).unsqueeze(-1)
        phi = (self.c * torch.exp(-self.d * x)).sum(-1)
        delta = (rs - self.r_inner[zi, zj]).clamp_min(0.0)
        S = self.A[zi, zj] / 3.0 * delta ** 3 + self.B[zi, zj] / 4.0 * delta ** 4 + self.C[zi, zj]
        E = self.k[zi, zj] * phi / rs + S
        return torch.where(inside, E, torch.zeros_like(E))

    def with_grad(self, r: torch.Tensor, zi: torch.Tensor, zj: torch.Tensor) -> Tuple[torch.Tensor, torch.Tensor]:
        """(E, dE/dr) per edge, analytic (the eval-mode fast path of the model)."""
        r_out = self.r_outer[zi, zj]
        inside = r < r_out
        rs = torch.where(inside, r, r_out)
        a = self.a[zi, zj]
        ex = self.c * torch.exp(-self.d * (rs / a).unsqueeze(-1))
        phi = ex.sum(-1)
        dphi = -(ex * self.d).sum(-1) / a
        delta = (rs - self.r_inner[zi, zj]).clamp_min(0.0)
        A, B = self.A[zi, zj], self.B[zi, zj]
        k = self.k[zi, zj]
        E = k * phi / rs + A / 3.0 * delta ** 3 + B / 4.0 * delta ** 4 + self.C[zi, zj]
        dE = k * (dphi / rs - phi / (rs * rs)) + A * delta ** 2 + B * delta ** 3
        zero = torch.zeros_like(E)
        return torch.where(inside, E, zero), torch.where(inside, dE, zero)


# ---- synthetic dimer data ----
