"""Embedding functions F(ρ_1, …, ρ_P) of the nonlinear ACE model (docs/nonlinear.md).

``FSEmbedding``: ML-PACE's ``FinnisSinclairShiftedScaled`` form, F = Σ_p a_p f(ρ_p; m_p) with the parameters
given as ML-PACE's ``FS_parameters`` [a_1, m_1, a_2, m_2, …] (python-ace ``lib/ace/ace-evaluator/src/
ace-evaluator/ace_abstract_basis.cpp``, ``FexpShiftedScaled`` and ``FS_values_and_derivatives``):

    f(ρ; m) = ρ                                             if |m − 1| < 1e-10
    f(ρ; m) = sign(ρ) ((x_0 + |ρ|)^m − y_0)                  otherwise,
    x_0 = ν^{ν/(1−ν)} e^{−|ρ|},  y_0 = ν^{1/(1−ν)} e^{−|ρ|},  ν = 1/m,  sign(0) = +1,
    f'(ρ; m) = y_0 + m (1 − x_0) (x_0 + |ρ|)^{m−1}           (even in ρ: f is C¹ at 0).

f(0; m) = 0 (x_0(0)^m = y_0(0)) and f'(0; 0.5) = 5/4: a density that starts at zero contributes nothing and
has a finite, non-zero gradient.  ``|ρ|`` is written as ρ·sign(ρ) with the sign held constant, so autograd
gives f'(0) = 5/4 as well (torch's ``abs`` would give a zero derivative at 0, and a density started at
zero would never move).

``MLPEmbedding`` (torch, TorchScript and metatomic exports; no .yace):
F = ρ_1 + Σ_h w_h (tanh(Σ_p W_hp ρ_p + b_h) − tanh(b_h)), per element, w = 0 at initialisation (F = ρ_1) and
F(0) = 0 for any parameters (an isolated atom has energy E0).

Both have ``forward(rho [N, P], species [N]) → F [N]`` (autograd) and ``value_and_grad`` → (F, ∂F/∂ρ [N, P])
with hand-written derivatives (the analytic evaluation path).
"""
from __future__ import annotations

import math
from typing import List, Sequence, Tuple

import torch
from torch import nn

from .size import check_evaluation

FS, MLP = "fs", "mlp"
EMBEDDINGS = (FS, MLP)
# |m − 1| below this: f = ρ exactly (ML-PACE's test in FexpShiftedScaled)
IDENTITY_TOL = 1e-10


def default_fs_parameters(densities: int) -> List[float]:
    """pacemaker's defaults: [1, 1] for one density, [1, 1, 1, 0.5] for two; more need explicit values."""
    if densities == 1:
        return [1.0, 1.0]
    if densities == 2:
        return [1.0, 1.0, 1.0, 0.5]
    raise ValueError(f"fs_parameters must be given for {densities} densities ([a_1, m_1, …, a_P, m_P])")


def check_fs_parameters(fs_parameters, nz: int, densities: int) -> List[List[float]]:
    """[2P] (every element) or [NZ][2P] → [NZ][2P] floats; exponents m > 0, everything finite."""
    rows = fs_parameters
    if isinstance(rows, torch.Tensor):
        rows = rows.tolist()
    if not isinstance(rows, (list, tuple)) or not rows:
        raise ValueError(f"fs_parameters must be a list [a_1, m_1, …] or one such list per element, got {rows!r}")
    if not isinstance(rows[0], (list, tuple)):
        rows = [list(rows)] * nz
    if len(rows) != nz:
        raise ValueError(f"fs_parameters has {len(rows)} rows for {nz} elements")
    out = []
    for row in rows:
        if not isinstance(row, (list, tuple)) or len(row) != 2 * densities:
            raise ValueError(f"fs_parameters: each element needs 2·densities = {2 * densities} numbers "
                             f"[a_1, m_1, …], got {row!r}")
        if any(isinstance(v, bool) or not isinstance(v, (int, float)) or not math.isfinite(v) for v in row):
            raise ValueError(f"fs_parameters must be finite numbers, got {row!r}")
        if any(m <= 0 for m in row[1::2]):
            raise ValueError(f"fs_parameters: the exponents m_p must be positive, got {list(row[1::2])}")
        out.append([float(v) for v in row])
    return out


def fs_shifted_scaled(rho: torch.Tensor, m: torch.Tensor,
                      identity_tol: float = IDENTITY_TOL) -> Tuple[torch.Tensor, torch.Tensor]:
    """ML-PACE's ``FexpShiftedScaled`` elementwise: (f(ρ; m), f'(ρ; m)) for ρ and m of one shape (m fixed).
    (``identity_tol``: a default argument, as TorchScript compiles no module-level float.)"""
    ident = (m - 1.0).abs() < identity_tol
    m_s = torch.where(ident, torch.full_like(m, 2.0), m)  # any m ≠ 1: the branch is not used there
    nu = 1.0 / m_s
    cx = nu ** (nu / (1.0 - nu))
    cy = nu ** (1.0 / (1.0 - nu))
    sign = torch.where(rho < 0, -torch.ones_like(rho), torch.ones_like(rho)).detach()  # signbit: +1 at 0
    a = rho * sign  # |ρ| with d|ρ|/dρ = sign(ρ), also at 0
    e = torch.exp(-a)
    x0, y0 = cx * e, cy * e
    base = x0 + a
    f = sign * (base ** m_s - y0)
    df = y0 + m_s * (1.0 - x0) * base ** (m_s - 1.0)
    return torch.where(ident, rho, f), torch.where(ident, torch.ones_like(rho), df)


class FSEmbedding(nn.Module):
    """F = Σ_p a_p[z] f(ρ_p; m_p[z]); weights a [NZ, P] (a parameter if ``learnable``), exponents m [NZ, P]."""

    name = FS

    def __init__(self, fs_parameters: Sequence[Sequence[float]], learnable: bool = False):
        super().__init__()
        p = torch.tensor(fs_parameters, dtype=torch.float64)  # [NZ, 2P]
        self.learnable = bool(learnable)
        if self.learnable:
            self.weights = nn.Parameter(p[:, 0::2].clone())
        else:
            self.register_buffer("weights", p[:, 0::2].clone())
        self.register_buffer("exponents", p[:, 1::2].clone())

    @property
    def densities(self) -> int:
        return int(self.exponents.shape[1])

    def fs_parameters(self) -> List[List[float]]:
        """[NZ][2P] in ML-PACE's order [a_1, m_1, a_2, m_2, …]."""
        w, m = self.weights.detach().double().cpu(), self.exponents.double().cpu()
        return torch.stack([w, m], dim=-1).reshape(w.shape[0], -1).tolist()

    @torch.jit.unused
    def check_size(self, rho: torch.Tensor) -> None:
        check_evaluation(rho.shape[0], self.densities, FS, 0, rho.device)

    def forward(self, rho: torch.Tensor, species: torch.Tensor) -> torch.Tensor:
        if not torch.jit.is_scripting():  # the memory check is Python (an export evaluates what its engine asks)
            self.check_size(rho)
        f, _ = fs_shifted_scaled(rho, self.exponents[species])
        return (self.weights[species] * f).sum(-1)

    def value_and_grad(self, rho: torch.Tensor, species: torch.Tensor) -> Tuple[torch.Tensor, torch.Tensor]:
        if not torch.jit.is_scripting():
            self.check_size(rho)
        f, df = fs_shifted_scaled(rho, self.exponents[species])
        w = self.weights[species]
        return (w * f).sum(-1), w * df


class MLPEmbedding(nn.Module):
    """F = ρ_1 + Σ_h w[z, h] (tanh(Σ_p W[z, h, p] ρ_p + b[z, h]) − tanh(b[z, h])), one small MLP per element."""

    name = MLP

    def __init__(self, nz: int, densities: int, hidden: int = 16, seed: int = 0):
        super().__init__()
        if isinstance(hidden, bool) or not isinstance(hidden, int) or hidden < 1:
            raise ValueError(f"mlp_hidden must be a positive integer, got {hidden!r}")
        g = torch.Generator().manual_seed(int(seed))
        self.W = nn.Parameter(torch.randn(nz, hidden, densities, generator=g, dtype=torch.float64)
                              / math.sqrt(densities))
        self.b = nn.Parameter(torch.randn(nz, hidden, generator=g, dtype=torch.float64))
        self.w = nn.Parameter(torch.zeros(nz, hidden, dtype=torch.float64))  # F = ρ_1 at initialisation

    @property
    def densities(self) -> int:
        return int(self.W.shape[2])

    @property
    def hidden(self) -> int:
        return int(self.W.shape[1])

    @torch.jit.unused
    def check_size(self, rho: torch.Tensor) -> None:
        check_evaluation(rho.shape[0], self.densities, MLP, self.hidden, rho.device)

    def forward(self, rho: torch.Tensor, species: torch.Tensor) -> torch.Tensor:
        if not torch.jit.is_scripting():  # the memory check is Python (an export evaluates what its engine asks)
            self.check_size(rho)
        b = self.b[species]
        t = torch.tanh(torch.einsum("nhp,np->nh", self.W[species], rho) + b)
        return rho[:, 0] + (self.w[species] * (t - torch.tanh(b))).sum(-1)

    def value_and_grad(self, rho: torch.Tensor, species: torch.Tensor) -> Tuple[torch.Tensor, torch.Tensor]:
        if not torch.jit.is_scripting():
            self.check_size(rho)
        W, b, w = self.W[species], self.b[species], self.w[species]
        t = torch.tanh(torch.einsum("nhp,np->nh", W, rho) + b)
        value = rho[:, 0] + (w * (t - torch.tanh(b))).sum(-1)
        grad = torch.einsum("nh,nhp->np", w * (1.0 - t * t), W)
        grad[:, 0] += 1.0
        return value, grad
