"""Regularised and truncated least squares: QR (Tikhonov), LSQR, rank-revealing QR, truncated SVD (ACEfit.jl)."""
from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Optional

import torch

from .base import SolveResult, Solver, fnorm2


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
        beta = bnorm = math.sqrt(fnorm2(y))
        info = {"istop": 0, "iterations": 0, "method": "LSQR"}
        if beta == 0:
            return SolveResult(x, hyper, info=info)
        u = y / beta
        v = A.T @ u
        alfa = math.sqrt(fnorm2(v))
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
            beta = math.sqrt(fnorm2(u))
            if beta > 0:
                u = u / beta
                anorm = math.sqrt(anorm ** 2 + alfa ** 2 + beta ** 2 + damp ** 2)
                v = A.T @ u - beta * v
                alfa = math.sqrt(fnorm2(v))
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
            ddnorm += fnorm2(w) / rho ** 2
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
            import importlib.util

            use_scipy = importlib.util.find_spec("scipy") is not None
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
