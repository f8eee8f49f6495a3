"""Linear least-squares solvers for fitting linear ACE: min_c ‖A c − y‖², with regularisation or priors.

Modelled on the solvers of ACEfit.jl / ACEpotentials.jl (``acefit!``): ``QR``, ``LSQR``, ``RRQR``,
``TruncatedSVD``, ``BLR`` (Bayesian ridge with committee) and ``ARD``.  Every solver is a small
dataclass with ``solve(A, y, *, n_obs, rss_offset, validation) -> SolveResult``; all work is done in torch
on the device and dtype of ``A`` (float64 expected), without Python loops over rows.

Reduced systems.  A solver may be called on the full system (A [m, k], y [m]) or on an equivalent
reduced one: A = R (k×k from a, possibly streamed, QR of the full matrix), y = Qᵀ y_full, ``n_obs`` = m
and ``rss_offset`` = ‖y_full‖² − ‖Qᵀ y_full‖².  Since ‖A_full c − y_full‖² = ‖R c − Qᵀy_full‖² + rss_offset
for every c, least-squares solutions coincide, and the Bayesian solvers use only AᵀA, Aᵀy, the residual
plus ``rss_offset`` and ``n_obs``, so the chosen hyper-parameters agree too.  Relative tolerances that
depend on the problem size use max(n_obs, k), for the same reason.

References: ACEfit.jl (ACEsuit, src/solvers.jl, src/bayesianlinear.jl); C. C. Paige and M. A. Saunders,
ACM TOMS 8, 43 (1982) (LSQR); D. J. C. MacKay, Neural Computation 4, 415 (1992) (evidence framework);
M. E. Tipping, JMLR 1, 211 (2001) (sparse Bayesian learning / ARD).
"""
from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Callable, Optional, Tuple

import torch

__all__ = ["SolveResult", "Solver", "QR", "LSQR", "RRQR", "TruncatedSVD", "BLR", "ARD", "committee_std"]


@dataclass
class SolveResult:
    """Solution of a linear fit.

    ``coefficients`` [k]; ``hyperparameters`` the chosen ones (``lam``, ``rank``, ``noise_var``,
    ``prior_var``, ``log_evidence`` ... depending on the solver); ``committee`` [K, k] posterior samples
    (BLR/ARD with ``committee_size > 0``); ``info`` diagnostics (always ``rss`` = ‖A_full c − y_full‖²
    and ``n_obs``; ``validation_rmse`` when a validation set was given).
    """

    coefficients: torch.Tensor
    hyperparameters: dict
    committee: Optional[torch.Tensor] = None
    info: dict = field(default_factory=dict)


def committee_std(committee: torch.Tensor, rows: torch.Tensor, correction: int = 1) -> torch.Tensor:
    """Standard deviation over the committee of the predictions ``rows @ c_K``: [K, k], [r, k] -> [r].

    ``correction=1`` (default) is the sample standard deviation (divides by K − 1, as Julia's ``std``).
    """
    if committee.ndim != 2 or rows.ndim != 2 or rows.shape[1] != committee.shape[1]:
        raise ValueError(f"committee_std: expected committee [K, k] and rows [r, k], got "
                         f"{tuple(committee.shape)} and {tuple(rows.shape)}")
    return torch.std(rows.to(committee) @ committee.T, dim=1, correction=correction)


def _fnorm2(v: torch.Tensor) -> float:
    return float(torch.dot(v, v))


class Solver:
    """Base class: ``solve`` checks the system and hands it to the subclass's ``_solve``."""

    def solve(self, A: torch.Tensor, y: torch.Tensor, *, n_obs: Optional[int] = None,
              rss_offset: float = 0.0, validation: Optional[tuple] = None) -> SolveResult:
        if not isinstance(A, torch.Tensor) or A.ndim != 2:
            raise ValueError("solve: A must be a 2-d torch.Tensor [m, k]")
        if not A.is_floating_point():
            raise ValueError(f"solve: A must be floating point, got {A.dtype}")
        y = torch.as_tensor(y).to(device=A.device, dtype=A.dtype)
        if y.ndim != 1 or y.shape[0] != A.shape[0]:
            raise ValueError(f"solve: y must have shape [{A.shape[0]}], got {tuple(y.shape)}")
        if A.shape[1] == 0:
            raise ValueError("solve: A has no columns")
        N = A.shape[0] if n_obs is None else int(n_obs)
        if N < A.shape[0]:
            raise ValueError(f"solve: n_obs={N} is smaller than the number of rows {A.shape[0]}")
        off = float(rss_offset)
        if not math.isfinite(off):
            raise ValueError("solve: rss_offset must be finite")
        off = max(off, 0.0)  # ‖y‖² − ‖Qᵀy‖² can be slightly negative through rounding
        if validation is not None:
            Av, yv = validation
            validation = (Av.to(A), torch.as_tensor(yv).to(A))
            if validation[0].ndim != 2 or validation[0].shape[1] != A.shape[1] \
                    or validation[1].shape != validation[0].shape[:1]:
                raise ValueError("solve: validation must be (A_val [r, k], y_val [r])")
        res = self._solve(A, y, N, off, validation)
        res.info["rss"] = _fnorm2(A @ res.coefficients - y) + off
        res.info["n_obs"] = N
        if validation is not None:
            r = validation[0] @ res.coefficients - validation[1]
            res.info["validation_rmse"] = math.sqrt(_fnorm2(r) / max(1, r.numel()))
        return res

    def _solve(self, A, y, N, off, validation) -> SolveResult:  # pragma: no cover
        raise NotImplementedError


# ------------------------------------------------------------------ regularised / truncated least squares

@dataclass
class QR(Solver):
    """Tikhonov-regularised least squares by a QR factorisation, as ACEfit.jl's ``QR(lambda, P)``.

    Convention: the stacked system [A; lam·P] c ≈ [y; 0] is solved, i.e.

        c = argmin ‖A c − y‖² + lam² ‖P c‖²

    (ACEfit.jl's code stacks ``[A; λP]`` exactly like this; its docstring writes λ‖Pθ‖², but the
    penalty its code implements is λ²‖Pθ‖²).  This is also the ``damp`` convention of LSQR, so
    ``QR(lam=d)`` and a converged ``LSQR(damp=d)`` agree.  ``Gamma`` is P: None (identity), a
    vector [k] (diagonal P) or a matrix [p, k].  lam = 0 needs A of full column rank (else use RRQR or
    TruncatedSVD).
    """

    lam: float = 0.0
    Gamma: Optional[torch.Tensor] = None

    def _solve(self, A, y, N, off, validation):
        k = A.shape[1]
        As, ys = A, y
        if self.lam != 0:
            if self.Gamma is None:
                P = torch.eye(k, dtype=A.dtype, device=A.device)
            else:
                P = torch.as_tensor(self.Gamma).to(A)
                P = torch.diag(P) if P.ndim == 1 else P
            if P.ndim != 2 or P.shape[1] != k:
                raise ValueError(f"QR: Gamma must be [k] or [p, k] with k={k}, got {tuple(P.shape)}")
            As = torch.cat([A, self.lam * P])
            ys = torch.cat([y, y.new_zeros(P.shape[0])])
        if As.shape[0] < k:
            raise ValueError("QR: underdetermined system (fewer rows than columns) needs lam > 0")
        Q, R = torch.linalg.qr(As, mode="reduced")
        c = torch.linalg.solve_triangular(R, (Q.T @ ys)[:, None], upper=True)[:, 0]
        return SolveResult(c, {"lam": float(self.lam)}, info={"method": "QR"})


@dataclass
class LSQR(Solver):
    """LSQR (Paige & Saunders 1982): Golub–Kahan bidiagonalisation for min ‖A c − y‖² + damp² ‖c‖².

    Written in torch (matrix-vector products only); same recurrences, stopping tests and parameters as
    the reference implementation (``scipy.sparse.linalg.lsqr``, IterativeSolvers.jl used by ACEfit.jl):
    ``atol``, ``btol``, ``conlim``, ``maxiter`` (None: 2k).  Defaults for damp/atol/conlim as ACEfit.jl.
    ``info``: ``istop`` (scipy's codes), ``iterations``, ``anorm``, ``acond``, ``arnorm``.
    """

    damp: float = 5e-3
    atol: float = 1e-6
    btol: float = 1e-6
    conlim: float = 1e8
    maxiter: Optional[int] = None

    def _solve(self, A, y, N, off, validation):
        k = A.shape[1]
        maxiter = 2 * k if self.maxiter is None else int(self.maxiter)
        eps = torch.finfo(A.dtype).eps
        damp = float(self.damp)
        ctol = 1.0 / self.conlim if self.conlim > 0 else 0.0
        x = A.new_zeros(k)
        hyper = {"damp": damp}
        beta = bnorm = math.sqrt(_fnorm2(y))
        info = {"istop": 0, "iterations": 0, "method": "LSQR"}
        if beta == 0:
            return SolveResult(x, hyper, info=info)
        u = y / beta
        v = A.T @ u
        alfa = math.sqrt(_fnorm2(v))
        if alfa == 0:
            return SolveResult(x, hyper, info=info)
        v = v / alfa
        w = v.clone()
        rhobar, phibar = alfa, beta
        anorm = acond = ddnorm = res2 = xnorm = xxnorm = z = 0.0
        cs2, sn2 = -1.0, 0.0
        arnorm, istop, itn = alfa * beta, 0, 0
        while itn < maxiter:
            itn += 1
            # bidiagonalisation: beta u = A v − alfa u, alfa v = Aᵀ u − beta v
            u = A @ v - alfa * u
            beta = math.sqrt(_fnorm2(u))
            if beta > 0:
                u = u / beta
                anorm = math.sqrt(anorm ** 2 + alfa ** 2 + beta ** 2 + damp ** 2)
                v = A.T @ u - beta * v
                alfa = math.sqrt(_fnorm2(v))
                if alfa > 0:
                    v = v / alfa
            # rotation eliminating the damping term, then the subdiagonal beta
            if damp > 0:
                rhobar1 = math.hypot(rhobar, damp)
                psi = damp / rhobar1 * phibar
                phibar = rhobar / rhobar1 * phibar
            else:
                rhobar1, psi = rhobar, 0.0
            rho = math.hypot(rhobar1, beta)
            cs, sn = rhobar1 / rho, beta / rho
            theta = sn * alfa
            rhobar = -cs * alfa
            phi = cs * phibar
            phibar = sn * phibar
            tau = sn * phi
            ddnorm += _fnorm2(w) / rho ** 2
            x = x + (phi / rho) * w
            w = v - (theta / rho) * w
            # estimate ‖x‖ via a rotation on the right
            delta = sn2 * rho
            gambar = -cs2 * rho
            rhs = phi - delta * z
            xnorm = math.sqrt(xxnorm + (rhs / gambar) ** 2)
            gamma = math.hypot(gambar, theta)
            cs2, sn2 = gambar / gamma, theta / gamma
            z = rhs / gamma
            xxnorm += z ** 2
            # convergence tests
            acond = anorm * math.sqrt(ddnorm)
            res2 += psi ** 2
            rnorm = math.sqrt(phibar ** 2 + res2)
            arnorm = alfa * abs(tau)
            test1 = rnorm / bnorm
            test2 = arnorm / (anorm * rnorm + eps)
            test3 = 1.0 / (acond + eps)
            t1 = test1 / (1 + anorm * xnorm / bnorm)
            rtol = self.btol + self.atol * anorm * xnorm / bnorm
            if itn >= maxiter:
                istop = 7
            if 1 + test3 <= 1:
                istop = 6
            if 1 + test2 <= 1:
                istop = 5
            if 1 + t1 <= 1:
                istop = 4
            if test3 <= ctol:
                istop = 3
            if test2 <= self.atol:
                istop = 2
            if test1 <= rtol:
                istop = 1
            if istop:
                break
        info.update(istop=istop, iterations=itn, anorm=anorm, acond=acond, arnorm=arnorm)
        return SolveResult(x, hyper, info=info)


def _pivoted_qr_torch(A: torch.Tensor, y: torch.Tensor):
    """Householder QR with column pivoting (Businger–Golub); returns R [n, k], Qᵀy [n], piv [k]."""
    m, k = A.shape
    n = min(m, k)
    R, b = A.clone(), y.clone()
    piv = torch.arange(k, device=A.device)
    for j in range(n):  # loop over columns; each step is a vectorised rank-1 update
        p = j + int(torch.argmax((R[j:, j:] ** 2).sum(0)))
        if p != j:
            R[:, [j, p]] = R[:, [p, j]]
            piv[[j, p]] = piv[[p, j]]
        x = R[j:, j]
        nx = torch.linalg.vector_norm(x)
        if float(nx) == 0:
            break
        v = x.clone()
        v[0] = v[0] + torch.where(x[0] >= 0, nx, -nx)
        v = v / torch.linalg.vector_norm(v)
        R[j:, j:] -= 2 * torch.outer(v, v @ R[j:, j:])
        b[j:] -= 2 * v * torch.dot(v, b[j:])
    return torch.triu(R[:n]), b[:n], piv


@dataclass
class RRQR(Solver):
    """Rank-revealing (column-pivoted) QR truncation, as ACEfit.jl's ``RRQR`` (there via LowRankApprox).

    A Π = Q R with |R_11| ≥ |R_22| ≥ ...; the numerical rank r counts |R_ii| > rtol·|R_11|
    (rtol None: eps·max(n_obs, k)); the basic solution c[Π[:r]] = R[:r, :r]⁻¹ (Qᵀy)[:r], other
    coefficients 0.  Uses LAPACK ``geqp3`` through scipy on the CPU when scipy is importable
    (``backend="auto"``), else (or ``backend="torch"``) a torch Householder loop over columns.
    """

    rtol: Optional[float] = None
    backend: str = "auto"

    def _solve(self, A, y, N, off, validation):
        m, k = A.shape
        use_scipy = self.backend == "scipy"
        if self.backend == "auto":
            try:
                import scipy.linalg  # noqa: F401
                use_scipy = True
            except ImportError:
                use_scipy = False
        if use_scipy:
            import scipy.linalg
            Q, R, piv = scipy.linalg.qr(A.detach().cpu().numpy(), mode="economic", pivoting=True)
            R = torch.from_numpy(R).to(A)
            qty = torch.from_numpy(Q).to(A).T @ y
            piv = torch.from_numpy(piv).to(A.device)
        elif self.backend in ("torch", "auto"):
            R, qty, piv = _pivoted_qr_torch(A, y)
        else:
            raise ValueError(f"RRQR: unknown backend {self.backend!r}")
        d = R.diagonal().abs()
        rtol = torch.finfo(A.dtype).eps * max(N, k) if self.rtol is None else float(self.rtol)
        r = int((d > rtol * d[0]).sum()) if float(d[0]) > 0 else 0
        c = A.new_zeros(k)
        if r > 0:
            c[piv[:r]] = torch.linalg.solve_triangular(R[:r, :r], qty[:r, None], upper=True)[:, 0]
        return SolveResult(c, {"rtol": rtol, "rank": r}, info={"method": "RRQR", "abs_diag_R": d})


@dataclass
class TruncatedSVD(Solver):
    """Truncated-SVD least squares: c = Σ_{i<r} v_i (u_iᵀy)/s_i.

    r = number of s_i > rtol·s_max, or ``rank``; if neither is set and ``validation=(A_val, y_val)`` is
    passed, r minimises the validation RMSE over all numerically non-zero ranks (vectorised over r);
    otherwise r is the numerical rank (s_i > eps·max(n_obs, k)·s_max).  Reports ``rank`` and, with
    validation, ``info["validation_rmse_by_rank"]`` (entry r−1 for rank r).
    """

    rtol: Optional[float] = None
    rank: Optional[int] = None

    def _solve(self, A, y, N, off, validation):
        k = A.shape[1]
        U, s, Vh = torch.linalg.svd(A, full_matrices=False)
        z = U.T @ y
        floor = torch.finfo(A.dtype).eps * max(N, k) * float(s[0])
        r_num = int((s > floor).sum())
        info = {"method": "TruncatedSVD", "singular_values": s, "numerical_rank": r_num}
        if self.rank is not None:
            r = max(0, min(int(self.rank), r_num))
        elif self.rtol is not None:
            r = int((s > float(self.rtol) * float(s[0])).sum())
        elif validation is not None and r_num > 0:
            Av, yv = validation
            contrib = (Av @ Vh[:r_num].T) * (z[:r_num] / s[:r_num])  # [r_val, r_num]
            err = torch.cumsum(contrib, dim=1) - yv[:, None]
            rmse = torch.sqrt((err * err).mean(0))
            r = int(torch.argmin(rmse)) + 1
            info["validation_rmse_by_rank"] = rmse
        else:
            r = r_num
        c = Vh[:r].T @ (z[:r] / s[:r])
        info["kept_singular_values"] = s[:r]
        return SolveResult(c, {"rank": r}, info=info)


# ------------------------------------------------------------------ Bayesian solvers

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
        trG = _fnorm2(A.reshape(-1))
        if trG == 0:
            raise ValueError("BLR: A is zero")
        c2pi = math.log(2 * math.pi)

        if self.method == "svd":
            U, s, Vh = torch.linalg.svd(A, full_matrices=False)
            z = U.T @ y
            rss_perp = _fnorm2(y - U @ z) + off
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
                Q = _fnorm2(A @ mu - y) + off + _fnorm2(mu) / rho
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
                    g.append(0.5 * N * _fnorm2(mu) / (rho * Q) - 0.5 * gam)
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
        alpha = N / (_fnorm2(y) + off + torch.finfo(A.dtype).eps)
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
        for it in range(1, self.max_iter + 1):
            idx, Hinv, _, _, coef = posterior(alpha, lam, keep)
            sse = _fnorm2(A @ coef - y) + off
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
            sse = _fnorm2(A @ coef - y) + off
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
