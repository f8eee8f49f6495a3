"""torchace: the Atomic Cluster Expansion (ACEpotentials.jl conventions) as PyTorch modules.

Stages (docs/architecture.md): ``structures`` → ``basis`` → ``model`` (with ``model.backends``) →
``fit`` (solve once), ``train`` (iterative), ``uncertainty`` → ``io`` → ``calculators``, ``analysis``;
``testing`` is the reusable test kit, ``cli`` the command line.
"""
from . import calculators, io, keys
from .config import ACEConfig
from .fit import FitResult, design_matrix_rows, errors, priors, repulsion, solvers
from .fit.data import example_data
from .train import TrainResult
from .io import export, load
from .model import ACEModel, ace_model, evaluate, from_linear, nonlinear_ace_model
from .model import backends  # noqa: F401  (torchace.backends.available / select)
from . import fit, train  # callable packages: torchace.fit(...) runs the fit, torchace.fit.assembly is a module

__version__ = keys.VERSION
__all__ = ["ACEConfig", "ACEModel", "ace_model", "nonlinear_ace_model", "from_linear", "evaluate",
           "design_matrix_rows", "fit", "FitResult", "train", "TrainResult", "errors", "load", "export",
           "example_data", "priors", "repulsion", "solvers", "backends", "calculators", "io", "__version__"]

