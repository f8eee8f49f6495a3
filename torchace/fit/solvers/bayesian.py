"""Bayesian solvers: BLR (evidence-maximising ridge, committee from the posterior) and ARD (ACEfit.jl; MacKay 1992;
Tipping 2001)."""
from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Callable, Tuple

import torch

from .base import SolveResult, Solver, fnorm2


def _maximise_profile(profile: Callable, lo: float, hi: float, n_grid: int, tol: float):
    """Maximise L(u) on [lo, hi] given profile(u [G]) -> (L [G], dL/du [G]).

    Grid search, then the root of dL/du in the best bracket where it changes sign (+ to −) by the
    Illinois (modified regula falsi) method.  Returns (u*, L*, iterations, at_bound).
    """
    u = torch.linspace(lo, hi, n_grid, dtype=torch.float64)
    L, g = (t.detach().cpu().double() for t in profile(u))
    best_u, best_L, at_bound = None, -math.inf, True
    for i, ok in ((0, float(g[0]) <= 0), (n_grid - 1, float(g[-1]) >= 0)):  # boundary maxima
        if ok and float(L[i]) > best_L:
            best_u, best_L = float(u[i]), float(L[i])
    sign = ((g[:-1] > 0) & (g[1:] <= 0)).nonzero().flatten()
    its = 0
    if len(sign):
        i = int(sign[torch.argmax(torch.maximum(L[sign], L[sign + 1]))])
        a, b, fa, fb = float(u[i]), float(u[i + 1]), float(g[i]), float(g[i + 1])
        c, side = a, 0
        while its < 200 and b - a > tol and fb != 0:
            its += 1
            c = (a * fb - b * fa) / (fb - fa)
            if not a < c < b:
                c = 0.5 * (a + b)
            fc = float(profile(torch.tensor([c], dtype=torch.float64))[1][0])
            if fc == 0:
                a = b = c
                break
            if fc > 0:
                a, fa = c, fc
                if side == 1:
                    fb *= 0.5
                side = 1
            else:
                b, fb = c, fc
                if side == -1:
                    fa *= 0.5
                side = -1
        c = b if fb == 0 else 0.5 * (a + b)
        Lc = float(profile(torch.tensor([c], dtype=torch.float64))[0][0])
        if Lc >= best_L or not math.isfinite(best_L):
            best_u, best_L, at_bound = c, Lc, False
    if best_u is None:  # no sign change and no boundary maximum: take the best grid point
        j = int(torch.argmax(L))
        best_u, best_L, at_bound = float(u[j]), float(L[j]), j in (0, n_grid - 1)
    return best_u, best_L, its, at_bound


def _posterior_samples(mean: torch.Tensor, sqrt_apply: Callable, K: int, seed: int) -> torch.Tensor:
    """K samples mean + S ξ (ξ ~ N(0, I), S Sᵀ = Σ); sqrt_apply maps ξ [K, k] to (S ξ)ᵀ rows."""
    gen = torch.Generator(device=mean.device)
    gen.manual_seed(int(seed))
    xi = torch.randn(K, mean.shape[0], generator=gen, dtype=mean.dtype, device=mean.device)
    return mean + sqrt_apply(xi)


@dataclass
class BLR(Solver):
    """Bayesian linear (ridge) regression with evidence-optimised hyper-parameters (MacKay 1992).

    Prior c ~ N(0, prior_var·I), noise N(0, noise_var); both maximise the log marginal likelihood
    (evidence) log N(y | 0, noise_var·I + prior_var·A Aᵀ), as ACEfit.jl's ``BLR`` /
    ``bayesian_linear_regression`` (flat hyper-priors).  With ρ = prior_var/noise_var the optimal
    noise_var for fixed ρ is Q(ρ)/n_obs, Q(ρ) = min_c ‖A c − y‖² + rss_offset + ‖c‖²/ρ, so the evidence
    is maximised over log ρ only (grid + root of the derivative, whose stationarity condition is MacKay's
    fixed point γ = n_obs‖μ‖²/(ρQ)).  ``method="svd"``: closed form from the singular values of A;
    ``method="cholesky"``: the same quantities from Cholesky factors of I + ρ AᵀA.  The search spans
    ρ·‖A‖_F² ∈ ``rho_range`` (``info["at_bound"]`` when the optimum is on its edge).

    Posterior mean = ``coefficients``, covariance Σ = (AᵀA/noise_var + I/prior_var)⁻¹.  The committee
    (``committee_size`` K > 0) holds K independent samples of N(mean, Σ) drawn with a seeded
    torch.Generator, as ACEfit.jl's committee: the spread of ``rows @ committee.T`` (``committee_std``)
    estimates the predictive (epistemic) standard deviation.  ``return_covariance`` puts Σ into info.
    """

    committee_size: int = 0
    method: str = "svd"
    seed: int = 0
    return_covariance: bool = False
    rho_range: Tuple[float, float] = (1e-10, 1e13)
    grid_per_decade: int = 2
    tol: float = 1e-12

    def _solve(self, A, y, N, off, validation):
        m, k = A.shape
        if self.method not in ("svd", "cholesky"):
            raise ValueError(f"BLR: method must be 'svd' or 'cholesky', got {self.method!r}")
        trG = fnorm2(A.reshape(-1))
        if trG == 0:
            raise ValueError("BLR: A is zero")
        c2pi = math.log(2 * math.pi)

        if self.method == "svd":
            U, s, Vh = torch.linalg.svd(A, full_matrices=False)
            z = U.T @ y
            rss_perp = fnorm2(y - U @ z) + off
            s2, z2 = s * s, z * z

            def profile(u):
                rho = torch.exp(u.to(A))[:, None]
                d = 1 + rho * s2
                Q = (z2 / d).sum(1) + rss_perp
                L = -0.5 * N * (torch.log(2 * math.pi * Q / N) + 1) - 0.5 * torch.log(d).sum(1)
                g = 0.5 * N * (rho * z2 * s2 / d ** 2).sum(1) / Q - 0.5 * (rho * s2 / d).sum(1)
                return L, g
        else:
            G, bvec = A.T @ A, A.T @ y
            eye = torch.eye(k, dtype=A.dtype, device=A.device)

            def factor(rho):
                Lc, bad = torch.linalg.cholesky_ex(eye + rho * G)
                if int(bad):
                    return None
                mu = rho * torch.cholesky_solve(bvec[:, None], Lc)[:, 0]
                Q = fnorm2(A @ mu - y) + off + fnorm2(mu) / rho
                return Lc, mu, Q

            def profile(u):
                L, g = [], []
                for ui in u.tolist():
                    rho = math.exp(ui)
                    f = factor(rho)
                    if f is None:
                        L.append(-math.inf)
                        g.append(-math.inf)
                        continue
                    Lc, mu, Q = f
                    logdet = 2 * float(torch.log(Lc.diagonal()).sum())
                    gam = k - float(torch.cholesky_inverse(Lc).diagonal().sum())
                    L.append(-0.5 * N * (c2pi + math.log(Q / N) + 1) - 0.5 * logdet)
                    g.append(0.5 * N * fnorm2(mu) / (rho * Q) - 0.5 * gam)
                return torch.tensor(L, dtype=torch.float64), torch.tensor(g, dtype=torch.float64)

        lo, hi = (math.log(r / trG) for r in self.rho_range)
        n_grid = max(3, int(round((hi - lo) / math.log(10) * self.grid_per_decade)) + 1)
        u, logev, its, at_bound = _maximise_profile(profile, lo, hi, n_grid, self.tol)
        rho = math.exp(u)

        if self.method == "svd":
            d = 1 + rho * s2
            mu = Vh.T @ (rho * s * z / d)
            Q = float((z2 / d).sum()) + rss_perp
            gamma = float((rho * s2 / d).sum())
        else:
            Lc, mu, Q = factor(rho)
            gamma = k - float(torch.cholesky_inverse(Lc).diagonal().sum())
        noise_var = Q / N
        prior_var = rho * noise_var
        hyper = {"noise_var": noise_var, "prior_var": prior_var, "log_evidence": logev}
        info = {"method": f"BLR-{self.method}", "iterations": its, "at_bound": at_bound,
                "effective_parameters": gamma}

        if self.method == "svd":
            # Σ = V diag(noise_var/(s² + 1/ρ)) Vᵀ on range(V), prior_var on its complement
            sq_d = torch.sqrt(noise_var / (s2 + 1 / rho))
            a = math.sqrt(prior_var)
            V = Vh.T

            def sqrt_apply(xi):  # S = a (I − V Vᵀ) + V diag(sq_d) Vᵀ  (symmetric)
                return a * xi + ((xi @ V) * (sq_d - a)) @ Vh

            if self.return_covariance:
                eye = torch.eye(k, dtype=A.dtype, device=A.device)
                info["covariance"] = prior_var * (eye - V @ Vh) + (V * sq_d ** 2) @ Vh
        else:
            def sqrt_apply(xi):  # Σ = noise_var ρ (I + ρG)⁻¹ = (√(noise_var ρ) Lc⁻ᵀ)(…)ᵀ
                return math.sqrt(prior_var) * torch.linalg.solve_triangular(Lc.T, xi.T, upper=True).T

            if self.return_covariance:
                info["covariance"] = prior_var * torch.cholesky_inverse(Lc)
        committee = None
        if self.committee_size > 0:
            committee = _posterior_samples(mu, sqrt_apply, self.committee_size, self.seed)
        return SolveResult(mu, hyper, committee, info)


def _chol_or_eigh(H: torch.Tensor):
    """Factor SPD H: (H⁻¹, log det H, S) with S(ξ rows) = rows of Sξ, S Sᵀ = H⁻¹; eigh if not PD."""
    Lc, bad = torch.linalg.cholesky_ex(H)
    if not int(bad):
        Hinv = torch.cholesky_inverse(Lc)
        return (Hinv, 2 * float(torch.log(Lc.diagonal()).sum()),
                lambda xi: torch.linalg.solve_triangular(Lc.T, xi.T, upper=True).T)
    w, V = torch.linalg.eigh(H)  # pseudo-inverse fallback, as sklearn's pinvh
    keep = w > w.abs().max() * torch.finfo(H.dtype).eps * H.shape[0]
    winv = torch.where(keep, 1 / torch.where(keep, w, torch.ones_like(w)), torch.zeros_like(w))
    Hinv = (V * winv) @ V.T
    return (Hinv, float(torch.log(w[keep]).sum()), lambda xi: (xi * winv.sqrt()) @ V.T)


@dataclass
class ARD(Solver):
    """Automatic relevance determination (sparse Bayesian learning; Tipping 2001, MacKay 1992).

    Prior c_j ~ N(0, 1/λ_j) with one precision per coefficient, noise precision α; the type-II maximum
    likelihood fixed-point updates of sklearn's ``ARDRegression`` (used by ACEfit.jl's ``SKLEARN_ARD``):
    Σ = (diag λ + α AᵀA)⁻¹, μ = α Σ Aᵀy, γ_j = 1 − λ_j Σ_jj, λ_j ← (γ_j + 2λ₁)/(μ_j² + 2λ₂),
    α ← (n_obs − Σγ + 2α₁)/(‖A μ − y‖² + rss_offset + 2α₂); coefficients whose precision reaches
    ``threshold_lambda`` are pruned (exactly 0, prior_var 0); stop when Σ|Δμ| < tol.  The Gamma
    hyper-prior parameters default to sklearn's 1e-6 (0 gives the pure evidence maximiser).  α starts at
    n_obs/‖y_full‖² (sklearn: 1/var(y)).  Committee: samples of the posterior on the active set.
    """

    committee_size: int = 0
    threshold_lambda: float = 1e4
    max_iter: int = 300
    tol: float = 1e-3
    seed: int = 0
    alpha_1: float = 1e-6
    alpha_2: float = 1e-6
    lambda_1: float = 1e-6
    lambda_2: float = 1e-6
    return_covariance: bool = False

    def _solve(self, A, y, N, off, validation):
        m, k = A.shape
        G, b = A.T @ A, A.T @ y
        alpha = N / (fnorm2(y) + off + torch.finfo(A.dtype).eps)
        lam = A.new_ones(k)
        keep = torch.ones(k, dtype=torch.bool, device=A.device)
        coef = A.new_zeros(k)
        coef_old = None

        def posterior(alpha, lam, keep):
            idx = keep.nonzero().flatten()
            H = torch.diag(lam[idx]) + alpha * G[idx][:, idx]
            Hinv, logdet, sq = _chol_or_eigh(H)
            c = A.new_zeros(k)
            c[idx] = alpha * (Hinv @ b[idx])
            return idx, Hinv, logdet, sq, c

        it = 0
        for it in range(1, self.max_iter + 1):  # noqa: B007 (the count is reported after the loop)
            idx, Hinv, _, _, coef = posterior(alpha, lam, keep)
            sse = fnorm2(A @ coef - y) + off
            gamma = 1 - lam[idx] * Hinv.diagonal()
            lam[idx] = (gamma + 2 * self.lambda_1) / (coef[idx] ** 2 + 2 * self.lambda_2)
            alpha = (N - float(gamma.sum()) + 2 * self.alpha_1) / (sse + 2 * self.alpha_2)
            keep = lam < self.threshold_lambda
            coef = torch.where(keep, coef, torch.zeros_like(coef))
            if coef_old is not None and float((coef_old - coef).abs().sum()) < self.tol:
                break
            coef_old = coef.clone()
            if not bool(keep.any()):
                break
        info = {"method": "ARD", "iterations": it, "n_active": int(keep.sum())}
        prior_var = torch.where(keep, 1 / lam, torch.zeros_like(lam))
        hyper = {"noise_var": 1 / alpha, "prior_var": prior_var, "n_active": int(keep.sum())}
        committee = None
        if bool(keep.any()):
            idx, Hinv, logdet, sq, coef = posterior(alpha, lam, keep)
            sse = fnorm2(A @ coef - y) + off
            hyper["log_evidence"] = 0.5 * (float(torch.log(lam[idx]).sum()) + N * math.log(alpha)
                                           - alpha * sse - float((lam[idx] * coef[idx] ** 2).sum())
                                           - logdet - N * math.log(2 * math.pi))
            if self.return_covariance:
                cov = A.new_zeros(k, k)
                cov[idx[:, None], idx[None, :]] = Hinv
                info["covariance"] = cov
            if self.committee_size > 0:
                def sqrt_apply(xi):
                    out = torch.zeros_like(xi)
                    out[:, idx] = sq(xi[:, idx])
                    return out
                committee = _posterior_samples(coef, sqrt_apply, self.committee_size, self.seed)
        else:
            coef = A.new_zeros(k)
            if self.committee_size > 0:
                committee = A.new_zeros(self.committee_size, k)
        return SolveResult(coef, hyper, committee, info)
