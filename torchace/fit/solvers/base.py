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

import dataclasses
import math
import typing
from dataclasses import dataclass, field
from typing import Optional

import torch

from ...fieldcheck import check_bool, check_float, check_int

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


def fnorm2(v: torch.Tensor) -> float:
    return float(torch.dot(v, v))


class Solver:
    """Base class: ``solve`` checks the system and hands it to the subclass's ``_solve``.

    Construction checks every numeric field the same way for Python and config files (``torchace fit``):
    finite, not a bool, >= 0 (``lam=nan``, ``damp=-1``, ``committee_size=2.5`` are refused with the field
    named)."""

    def __post_init__(self):
        hints = typing.get_type_hints(type(self))
        for f in dataclasses.fields(self):
            v, t = getattr(self, f.name), hints.get(f.name)
            where = type(self).__name__
            if v is None:
                continue
            if t in (float, Optional[float]):
                check_float(where, f.name, v, nonnegative=True)
            elif t in (int, Optional[int]):
                check_int(where, f.name, v, minimum=0)
            elif t is bool:
                check_bool(where, f.name, v)

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
        res.info["rss"] = fnorm2(A @ res.coefficients - y) + off
        res.info["n_obs"] = N
        if validation is not None:
            r = validation[0] @ res.coefficients - validation[1]
            res.info["validation_rmse"] = math.sqrt(fnorm2(r) / max(1, r.numel()))
        return res

    def _solve(self, A, y, N, off, validation) -> SolveResult:  # pragma: no cover
        raise NotImplementedError
