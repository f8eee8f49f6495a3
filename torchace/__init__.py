"""torchace: the linear Atomic Cluster Expansion (ACEpotentials.jl conventions) as PyTorch modules."""
from .config import ACEConfig
from .evaluate import evaluate
from .model import ACEModel, ace_model
from .rows import design_matrix_rows

__version__ = "0.1.0"
__all__ = ["ACEConfig", "ACEModel", "ace_model", "evaluate", "design_matrix_rows", "__version__"]
