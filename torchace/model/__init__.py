"""Stage 3, the model: ``ACEModel`` (site energies E_i = E0 + c·B_i + pair + ZBL, ``ace``), the strain
derivatives (``strain``), the ZBL baseline (``zbl``), ``evaluate`` and the evaluation ``backends``; ``pace``
holds the ML-PACE (.yace) model family."""
from .ace import ACEModel
from .evaluate import evaluate
# ace_model with the nonlinear options (densities, embedding, learnable_radials); the defaults give ACEModel
from .nonlinear import NonlinearACEModel, ace_model, from_linear, nonlinear_ace_model

__all__ = ["ACEModel", "NonlinearACEModel", "ace_model", "nonlinear_ace_model", "from_linear", "evaluate"]
