"""Stage 4, fitting (ACEpotentials.jl's ``acefit!``): labelled data (``data``), weights (``weights``),
design-matrix rows (``rows``), weighted assembly (``assembly``, ``checkpoint``, ``distributed``), priors
(``priors``), solvers (``solvers/``), the fit driver (``driver``), error tables (``metrics``), committees
(``committee``), repulsion data (``repulsion``), the ``torchace fit`` config (``config``), and gradient training
of nonlinear models (``trainer``, ``train_state``, the ``torchace train`` config ``train_config``)."""
from . import priors, repulsion, solvers
from .driver import FitResult, fit, solve_system
from .metrics import errors
from .rows import design_matrix_rows
from .trainer import TrainResult, train

__all__ = ["FitResult", "fit", "solve_system", "errors", "design_matrix_rows", "train", "TrainResult", "priors", "repulsion", "solvers"]
