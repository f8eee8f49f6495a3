"""Levenberg–Marquardt (damped Gauss–Newton) steps on the coefficients of a nonlinear ACE model
(docs/training.md, "Gauss–Newton"; issue 16).

The energy of an ``ACEModel`` with a separable embedding (FS, or none) is E = Σ_i Σ_p f_p(ρ_ip) + pair,
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

Learned radials: on the fused kernel θ also holds the used entries of W (``get_theta``; W[:, :, n, l, :] for the
(n, l) pairs some one-particle function uses; the penalty pulls W to the identity).  Their rows need the Hessian
of the site energy in A: ∂E_i/∂W = Σ_a g_a Ψ_ak and per edge Σ_a (H ∂φ_e)_a Ψ_ak + g_a ∂ψ_ak/∂r_e (g = ∂E_i/∂A,
Ψ_ak the A-basis of the raw polynomial P_k, H = Σ_k c̃_k ∂²AA_k + Σ_p f''_p ∇ρ_p ∇ρ_pᵀ), computed per atom in the
kernel (``fused.design_rows(..., radial_columns=True)``).  Elsewhere (torch rows) W stays fixed during the
Gauss–Newton epochs (``radial_step_reason``) and is trained by the first-order phases.
"""
from __future__ import annotations

from typing import Callable, Dict, List, Optional, Tuple

import torch

from .. import keys as K
from ..model.backends import fused
from ..model.backends.fused_nonlinear import DENSITIES, nonlinear_forward, nonlinear_supported
from ..model.backends.torch_rows import torch_rows
from ..model.evaluate import model_inputs
from ..model.readout.embedding import FS, fs_shifted_scaled
from ..resources import available_bytes
from ..uncertainty.nonlinear import committee_linear_model
from .loss import loss_metrics

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


def radial_step_reason(model, device) -> Optional[str]:
    """None if the Gauss–Newton step also moves the learned radial weights W (their rows come from the fused
    kernel), else why not (W then stays where it is during the Gauss–Newton epochs)."""
    if model.radials is None:
        return "fixed radials"
    return fused_rows_reason(model, device)


def _w_index(model):
    """(u_n, u_l): the (n, l) pairs of W some one-particle function uses; θ holds W[:, :, u_n, u_l, :]."""
    return model.radials.u_n, model.radials.u_l


def get_theta(model, radials: bool) -> torch.Tensor:
    """θ = [density_coefficients | pair_coefficients (| the used W entries [NZ, NZ, n_u, n_poly])], flat."""
    theta = model.coefficients.detach()
    if not radials:
        return theta
    u_n, u_l = _w_index(model)
    return torch.cat([theta, model.radials.weights.detach()[:, :, u_n, u_l, :].reshape(-1).to(theta)])


def theta_reference(model, radials: bool) -> torch.Tensor:
    """The penalty's centre in θ: 0 for the coefficients, the identity for W (``Penalty``: λ²‖W − I‖²)."""
    k = model.density_coefficients.numel() + model.pair_coefficients.numel()
    ref = torch.zeros(k, dtype=torch.float64, device=model.density_coefficients.device)
    if not radials:
        return ref
    u_n, u_l = _w_index(model)  # the entries get_theta takes, of W = identity
    return torch.cat([ref, model.radials.identity()[:, :, u_n, u_l, :].reshape(-1).to(ref)])


def _set_theta(model, theta: torch.Tensor, radials: bool = False) -> None:
    n = model.density_coefficients.numel()
    n_pair = model.pair_coefficients.numel()
    with torch.no_grad():
        model.density_coefficients.copy_(theta[:n].view_as(model.density_coefficients))
        model.pair_coefficients.copy_(theta[n:n + n_pair].view_as(model.pair_coefficients))
        if radials:
            R = model.radials
            u_n, u_l = _w_index(model)
            R.weights[:, :, u_n, u_l, :] = theta[n + n_pair:].view(R.nz, R.nz, -1, R.n_poly).to(R.weights)


def radial_scale(model) -> torch.Tensor:
    """∂W_eff/∂W per θ column of W (the prior scale s[k·NZ + z_j, l_u]: ``LearnableRadials.effective_weights``)."""
    R = model.radials
    s = R.scale(model.embedding.nl_scale.detach().to(torch.float64))  # [NZ(z_j), n_u, n_poly]
    return s.unsqueeze(0).expand(R.nz, -1, -1, -1).reshape(-1)


def fused_rows_reason(model, device) -> Optional[str]:
    """None if the Gauss–Newton rows of ``model`` run on the fused C++ kernel (CPU), else why not (they then run
    in torch ops, ``torch_rows``)."""
    if torch.device(device).type != "cpu":
        return "the fused kernel is CPU-only"
    return nonlinear_supported(model)


def add_gram(H: torch.Tensor, J: torch.Tensor, block: int = 256) -> None:
    """H += JᵀJ on the upper block triangle only (column blocks of ``block``): about half the GEMM flops of the
    full product; ``normal_equations`` mirrors the upper triangle at the end."""
    k = J.shape[1]
    for i in range(0, k, block):
        H[i:i + block, i:].addmm_(J[:, i:i + block].t(), J[:, i:])


def normal_equations(model, batches: List[Dict], radials: bool = False) -> Tuple[torch.Tensor, torch.Tensor, float]:
    """(JᵀJ [K, K], Jᵀr [K], rss) over ``batches`` (``training.make_batches``), K = θ's size, in float64; r the
    weighted residuals (prediction − label), J = ∂r/∂θ; the rows from the fused kernel on CPU
    (``fused_rows_reason``), else ``torch_rows``.  ``radials``: θ includes the used W entries (``get_theta``;
    fused kernel only, ``radial_step_reason``)."""
    was_training = model.training
    model.eval()
    basis = committee_linear_model(model) if model.radials is not None else model
    deriv = embedding_derivatives(model)
    c = model.density_coefficients.detach()
    k = get_theta(model, radials).numel()
    H = torch.zeros(k, k, dtype=torch.float64, device=c.device)
    g = torch.zeros(k, dtype=torch.float64, device=c.device)
    rss = 0.0
    fast = fused_rows_reason(model, c.device) is None
    if radials and not fast:
        raise ValueError(f"Gauss–Newton rows in W: {radial_step_reason(model, c.device)}")
    w_scale = radial_scale(model) if radials else None
    with torch.no_grad():
        for b in batches:
            virials = bool((b["wV"] != 0).any())
            if fast:  # the fused kernel: outputs and densities ρ, then the rows with f'_p(ρ), f''_p(ρ)
                out = nonlinear_forward(model, *model_inputs(model, b), True, virials, with_densities=True)
                w, t = deriv(out[DENSITIES], b[K.SPECIES])
                rows = fused.design_rows(basis, b, densities=(c, w, t), radial_columns=radials)
                if radials:  # the kernel's columns are ∂/∂W_eff: chain rule to W
                    n_w = w_scale.numel()
                    for key in (K.ENERGY, K.FORCES, K.VIRIAL):
                        rows[key][..., -n_w:] *= w_scale.to(rows[key])
            else:
                out = model(*model_inputs(model, b), True, virials)
                rows = torch_rows(basis, b, analytic=True, densities=(c, deriv))
            J = [rows[K.ENERGY] * b["wE"][:, None],
                 (rows[K.FORCES].view(-1, 3, k) * b["wF"][:, None, None]).view(-1, k)]
            r = [(out[K.ENERGY] - b["E"]) * b["wE"], ((out[K.FORCES] - b["F"]) * b["wF"][:, None]).reshape(-1)]
            if virials:
                J.append((rows[K.VIRIAL] * b["wV"][:, None, None]).reshape(-1, k))
                r.append(((K.to_voigt(out[K.VIRIAL]) - b["V"]) * b["wV"][:, None]).reshape(-1))
            J, r = torch.cat(J).to(torch.float64), torch.cat(r).to(torch.float64)
            add_gram(H, J)
            g.addmv_(J.t(), r)
            rss += float(r @ r)
    model.train(was_training)
    return torch.triu(H) + torch.triu(H, 1).t(), g, rss


def check_memory(model, device=None, radials: Optional[bool] = None) -> None:
    """Refuse (MemoryError, before any work) a θ whose K × K normal matrix does not fit on ``device``;
    ``radials`` None: W in θ as ``GaussNewton`` decides it (``radial_step_reason``)."""
    dev = device if device is not None else model.density_coefficients.device
    if radials is None:
        radials = radial_step_reason(model, dev) is None
    k = get_theta(model, radials).numel()
    need, avail = 4 * k * k * 8, available_bytes(dev)  # JᵀJ, the damped copy, its factor, a temporary
    if avail is not None and need > avail:
        raise MemoryError(f"Gauss–Newton on {k} coefficients needs {need / 2**30:.1f} GiB for its {k} × {k} "
                          f"normal matrix, more than the {avail / 2**30:.1f} GiB available on {dev}; use "
                          "optimizer='lbfgs' (or fewer densities / a smaller basis)")


class GaussNewton:
    """Levenberg–Marquardt on θ = [density_coefficients | pair_coefficients (| the used radial weights)] of
    ``model`` for the loss ``loss_metrics(model, batches, penalty)`` (``penalty``: ``trainer.Penalty``);
    ``step()`` is one iteration.  ``radials``: None (default) puts W into θ where its rows can be computed
    (``radial_step_reason``; ``self.radials_reason`` says why not otherwise), True requires it, False leaves W."""

    def __init__(self, model, batches: List[Dict], penalty, mu: float = 1e-3, max_tries: int = 8,
                 radials: Optional[bool] = None):
        self.model, self.batches, self.penalty = model, batches, penalty
        self.mu, self.max_tries = float(mu), int(max_tries)
        self.n_rows = max(sum(b["n_rows"] for b in batches), 1)
        # radials None: W is in θ whenever its rows can be computed (learned radials, fused kernel)
        why = radial_step_reason(model, model.density_coefficients.device)
        if radials and why is not None:
            raise ValueError(f"Gauss–Newton in W: {why}")
        self.radials = why is None if radials is None else bool(radials)
        self.radials_reason = None if self.radials else (why or "radials=False")
        check_memory(model, radials=self.radials)
        self.evaluations = 0
        self.metrics: Optional[Dict] = None  # loss_metrics at the accepted point of the last step (None: none)

    def _penalty_diagonal(self) -> torch.Tensor:
        """λ²Γ² on θ: the penalty's diagonal of the density and pair coefficients (and of the used W entries)."""
        names = [n for n, p in self.model.named_parameters() if p.requires_grad]
        d = dict(zip(names, self.penalty.diagonal(self.model)))
        parts = [d["coefficients"].reshape(-1)]  # [density_coefficients | pair_coefficients]
        if self.radials:
            u_n, u_l = _w_index(self.model)
            parts.append(d["radials.weights"][:, :, u_n, u_l, :].reshape(-1))
        return torch.cat([p.detach().to(torch.float64) for p in parts])

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
        theta = get_theta(model, self.radials)  # [density_coefficients | pair_coefficients (| W used)], flat
        theta64 = theta.to(torch.float64)
        H, g, rss = normal_equations(model, self.batches, self.radials)
        d_pen = self._penalty_diagonal()
        with torch.no_grad():
            before = (rss + float(self.penalty(model))) / self.n_rows
        grad = g + d_pen * (theta64 - theta_reference(model, self.radials))
        Hd = H.diagonal().clamp_min(1e-300)
        A0 = H + torch.diag(d_pen)
        for t in range(self.max_tries):
            A = A0 + torch.diag(self.mu * Hd)
            L, info = torch.linalg.cholesky_ex(A)
            if int(info) != 0:
                self.mu *= 4.0
                continue
            delta = -torch.cholesky_solve(grad.unsqueeze(1), L).squeeze(1)
            _set_theta(model, (theta64 + delta).to(theta), self.radials)
            after = self.loss()
            if after < before:
                self.mu = max(self.mu / 3.0, 1e-12)
                return {"before": before, "after": after, "mu": self.mu, "tries": t + 1,
                        "step": float(delta.norm() / theta64.norm().clamp_min(1e-300))}
            self.mu *= 4.0
        _set_theta(model, theta, self.radials)
        self.metrics = None
        return {"before": before, "after": before, "mu": self.mu, "tries": self.max_tries, "step": 0.0}
