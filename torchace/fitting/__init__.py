"""Stage 4, fitting (ACEpotentials.jl's ``acefit!``): labelled data (``data``), weights (``weights``),
design-matrix rows (``rows``), weighted assembly (``assembly``, ``checkpoint``, ``distributed``), priors
(``priors``), solvers (``solvers/``), the fit driver (``driver``), error tables (``metrics``), committees
(``committee``), repulsion data (``repulsion``) and the ``torchace fit`` config (``config``)."""
from . import priors, repulsion, solvers
from .driver import FitResult, fit, solve_system
from .metrics import errors
from .rows import design_matrix_rows

__all__ = ["FitResult", "fit", "solve_system", "errors", "design_matrix_rows", "priors", "repulsion", "solvers"]
