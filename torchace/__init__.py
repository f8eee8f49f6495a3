"""torchace: the linear Atomic Cluster Expansion (ACEpotentials.jl conventions) as PyTorch modules.

Stages (docs/architecture.md): ``structures`` → ``basis`` → ``model`` (with ``model.backends``) →
``fitting`` → ``io`` → ``calculators``, ``analysis``; ``testing`` is the reusable test kit, ``cli`` the
command line.
"""
from . import calculators, io, keys
from .compat import install as _install_compat
from .config import ACEConfig
from .fitting import FitResult, TrainResult, design_matrix_rows, errors, fit, priors, repulsion, solvers, train
from .fitting.data import example_data
from .io import export, load
from .model import ACEModel, NonlinearACEModel, ace_model, evaluate, from_linear, nonlinear_ace_model
from .model import backends  # noqa: F401  (torchace.backends.available / select)

__version__ = keys.VERSION
__all__ = ["ACEConfig", "ACEModel", "NonlinearACEModel", "ace_model", "nonlinear_ace_model", "from_linear", "evaluate", "design_matrix_rows", "fit", "FitResult", "train", "TrainResult", "errors",
           "load", "export", "example_data", "priors", "repulsion", "solvers", "backends", "calculators", "io", "__version__"]

_install_compat()
