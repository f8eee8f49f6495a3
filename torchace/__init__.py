"""torchace: the linear Atomic Cluster Expansion (ACEpotentials.jl conventions) as PyTorch modules."""
from . import priors, repulsion, solvers
from .config import ACEConfig
from .errors import errors
from .evaluate import evaluate
from .export import export
from .fit import FitResult, fit
from .model import ACEModel, ace_model
from .rows import design_matrix_rows
from .serialization import load

__version__ = "0.1.0"
__all__ = ["ACEConfig", "ACEModel", "ace_model", "evaluate", "design_matrix_rows", "fit", "FitResult", "errors",
           "load", "export", "priors", "repulsion", "solvers", "__version__"]
