"""Linear least-squares solvers (ACEfit.jl's): every solver has ``solve(A, y, *, n_obs, rss_offset, validation)``."""
from .base import SolveResult, Solver, committee_std
from .bayesian import ARD, BLR
from .linear import LSQR, QR, RRQR, TruncatedSVD

__all__ = ["SolveResult", "Solver", "QR", "LSQR", "RRQR", "TruncatedSVD", "BLR", "ARD", "committee_std"]
