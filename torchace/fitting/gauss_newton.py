"""Levenberg–Marquardt (damped Gauss–Newton) steps on the coefficients of a nonlinear ACE model
(docs/training.md, "Gauss–Newton"; issue 16).

The energy of a ``NonlinearACEModel`` with a separable embedding (FS, or none) is E = Σ_i Σ_p f_p(ρ_ip) + pair,
ρ_ip = c_p[z_i]·B_i: at fixed radials every residual is a smooth function of θ = [c_1 … c_P | c_pair] whose
Jacobian J is the linear design matrix with per-site weights (∂E/∂c_p = Σ_i f'_p B_i, edge derivatives
f'_p G_e + f''_p (G_e·c_p) B_i): on CPU from the fused C++ kernel (``fused.design_rows(..., densities=…)``, after
``fused_nonlinear.nonlinear_forward`` gave the residuals and ρ), elsewhere ``torch_rows(..., densities=…)``.
One step solves

    (JᵀJ + λ²Γ² + μ diag(JᵀJ)) δ = −(Jᵀr + λ²Γ²θ)

for the weighted residuals r of ``torchace.fit``'s rows (``training.make_batches``) and the penalty of
``trainer.Penalty``; μ shrinks ×1/3 after a step that lowers the loss and grows ×4 (retrying) after one that
does not.  This is the fit's normal-equations problem iterated: for one density, no embedding and fixed
radials the first undamped step from any θ lands on the ``solvers.QR(lam)`` solution.  First-order methods
stall on these problems (the normal matrix's condition number is 1e7–1e9), Gauss–Newton does not.

The learnable radials W are not in θ: the rows are those of the basis at the current W (``LearnedBasis``), so a
Gauss–Newton step is exact in θ at fixed W, and W is trained by the first-order phases.
"""
from __future__ import annotations

from typing import Callable, Dict, List, Optional, Tuple

import torch

from .. import keys as K
from ..model.backends import fused
from ..model.backends.fused_nonlinear import DENSITIES, nonlinear_forward, nonlinear_supported
from ..model.backends.torch_rows import torch_rows
from ..model.evaluate import model_inputs
from ..model.nonlinear.embedding import FS, fs_shifted_scaled
from .assembly import available_bytes
from .nonlinear_committee import committee_linear_model
from .training import loss_metrics

__all__ = ["embedding_derivatives", "normal_equations", "check_memory", "GaussNewton"]


def embedding_derivatives(model) -> Callable[[torch.Tensor, torch.Tensor], Tuple[torch.Tensor, torch.Tensor]]:
    """(ρ [N, P], species [N]) → (∂F/∂ρ_p, ∂²F/∂ρ_p²) [N, P] of a separable embedding (none, or FS).  The MLP
    couples the densities (∂²F/∂ρ_p∂ρ_q ≠ 0) and is refused."""
    f = model.embedding_fn
    if f is None:
        return lambda rho, species: (torch.ones_like(rho), torch.zeros_like(rho))
    if f.name != FS:
        raise ValueError(f"Gauss–Newton needs a separable embedding (None or 'fs'), not {f.name!r}: use "
                         "optimizer='adam' or 'lbfgs' for the MLP embedding")

    def deriv(rho, species):
        m = f.exponents[species].to(rho)
        a = f.weights.detach()[species].to(rho)
        with torch.enable_grad():
            r = rho.detach().requires_grad_(True)
            _, df = fs_shifted_scaled(r, m)
            (d2f,) = torch.autograd.grad(df.sum(), r)  # elementwise: the diagonal of the Hessian
        return a * df.detach(), a * d2f

    return deriv


def _set_theta(model, theta: torch.Tensor) -> None:
    n = model.density_coefficients.numel()
    with torch.no_grad():
        model.density_coefficients.copy_(theta[:n].view_as(model.density_coefficients))
        model.pair_coefficients.copy_(theta[n:].view_as(model.pair_coefficients))


def fused_rows_reason(model, device) -> Optional[str]:
    """None if the Gauss–Newton rows of ``model`` run on the fused C++ kernel (CPU), else why not (they then run
    in torch ops, ``torch_rows``)."""
    if torch.device(device).type != "cpu":
        return "the fused kernel is CPU-only"
    return nonlinear_supported(model)


def normal_equations(model, batches: List[Dict]) -> Tuple[torch.Tensor, torch.Tensor, float]:
    """(JᵀJ [K, K], Jᵀr [K], rss) over ``batches`` (``training.make_batches``), K = θ's size, in float64; r the
    weighted residuals (prediction − label), J = ∂r/∂θ; the rows from the fused kernel on CPU
    (``fused_rows_reason``), else ``torch_rows``."""
    was_training = model.training
    model.eval()
    basis = committee_linear_model(model) if model.radials is not None else model.linear
    deriv = embedding_derivatives(model)
    c = model.density_coefficients.detach()
    k = c.numel() + model.pair_coefficients.numel()
    H = torch.zeros(k, k, dtype=torch.float64, device=c.device)
    g = torch.zeros(k, dtype=torch.float64, device=c.device)
    rss = 0.0
    fast = fused_rows_reason(model, c.device) is None
    with torch.no_grad():
        for b in batches:
            virials = bool((b["wV"] != 0).any())
            if fast:  # the fused kernel: outputs and densities ρ, then the rows with f'_p(ρ), f''_p(ρ)
                out = nonlinear_forward(model, *model_inputs(model, b), True, virials, with_densities=True)
                w, t = deriv(out[DENSITIES], b[K.SPECIES])
                rows = fused.design_rows(basis, b, densities=(c, w, t))
            else:
                out = model(*model_inputs(model, b), True, virials)
                rows = torch_rows(basis, b, analytic=True, densities=(c, deriv))
            J = [rows[K.ENERGY] * b["wE"][:, None], (rows[K.FORCES].view(-1, 3, k) * b["wF"][:, None, None]).view(-1, k)]
            r = [(out[K.ENERGY] - b["E"]) * b["wE"], ((out[K.FORCES] - b["F"]) * b["wF"][:, None]).reshape(-1)]
            if virials:
                J.append((rows[K.VIRIAL] * b["wV"][:, None, None]).reshape(-1, k))
                r.append(((K.to_voigt(out[K.VIRIAL]) - b["V"]) * b["wV"][:, None]).reshape(-1))
            J, r = torch.cat(J).to(torch.float64), torch.cat(r).to(torch.float64)
            H.addmm_(J.t(), J)
            g.addmv_(J.t(), r)
            rss += float(r @ r)
    model.train(was_training)
    return H, g, rss


def check_memory(model, device=None) -> None:
    """Refuse (MemoryError, before any work) a θ whose K × K normal matrix does not fit on ``device``."""
    k = model.density_coefficients.numel() + model.pair_coefficients.numel()
    dev = device if device is not None else model.density_coefficients.device
    need, avail = 4 * k * k * 8, available_bytes(dev)  # JᵀJ, the damped copy, its factor, a temporary
    if avail is not None and need > avail:
        raise MemoryError(f"Gauss–Newton on {k} coefficients needs {need / 2**30:.1f} GiB for its {k} × {k} "
                          f"normal matrix, more than the {avail / 2**30:.1f} GiB available on {dev}; use "
                          "optimizer='lbfgs' (or fewer densities / a smaller basis)")


class GaussNewton:
    """Levenberg–Marquardt on θ = [density_coefficients | pair_coefficients] of ``model`` for the loss
    ``loss_metrics(model, batches, penalty)`` (``penalty``: ``trainer.Penalty``); ``step()`` is one iteration."""

    def __init__(self, model, batches: List[Dict], penalty, mu: float = 1e-3, max_tries: int = 8):
        self.model, self.batches, self.penalty = model, batches, penalty
        self.mu, self.max_tries = float(mu), int(max_tries)
        self.n_rows = max(sum(b["n_rows"] for b in batches), 1)
        check_memory(model)
        self.evaluations = 0
        self.metrics: Optional[Dict] = None  # loss_metrics at the accepted point of the last step (None: none)

    def _penalty_diagonal(self) -> torch.Tensor:
        """λ²Γ² on θ: the penalty's diagonal of the density and pair coefficients."""
        names = [n for n, p in self.model.named_parameters() if p.requires_grad]
        d = dict(zip(names, self.penalty.diagonal(self.model)))
        return torch.cat([d["density_coefficients"].reshape(-1), d["pair_coefficients"].reshape(-1)]).detach().to(
            torch.float64)

    def loss(self) -> float:
        self.evaluations += 1
        self.metrics = loss_metrics(self.model, self.batches, self.penalty)
        return self.metrics["loss"]

    def state_dict(self) -> Dict:
        return {"mu": self.mu}

    def load_state_dict(self, state: Dict) -> None:
        self.mu = float(state["mu"])

    def step(self) -> Dict:
        """One LM iteration: the normal equations at θ, then damped solves until the loss goes down (at most
        ``max_tries``; θ is left unchanged if none does)."""
        model = self.model
        self.metrics = None
        theta = model.coefficients.detach()  # [density_coefficients | pair_coefficients], flat
        theta64 = theta.to(torch.float64)
        H, g, rss = normal_equations(model, self.batches)
        d_pen = self._penalty_diagonal()
        with torch.no_grad():
            before = (rss + float(self.penalty(model))) / self.n_rows
        grad = g + d_pen * theta64
        Hd = H.diagonal().clamp_min(1e-300)
        A0 = H + torch.diag(d_pen)
        for t in range(self.max_tries):
            A = A0 + torch.diag(self.mu * Hd)
            L, info = torch.linalg.cholesky_ex(A)
            if int(info) != 0:
                self.mu *= 4.0
                continue
            delta = -torch.cholesky_solve(grad.unsqueeze(1), L).squeeze(1)
            _set_theta(model, (theta64 + delta).to(theta))
            after = self.loss()
            if after < before:
                self.mu = max(self.mu / 3.0, 1e-12)
                return {"before": before, "after": after, "mu": self.mu, "tries": t + 1,
                        "step": float(delta.norm() / theta64.norm().clamp_min(1e-300))}
            self.mu *= 4.0
        _set_theta(model, theta)
        self.metrics = None
        return {"before": before, "after": before, "mu": self.mu, "tries": self.max_tries, "step": 0.0}
