"""Stage 3, the model: ``ACEModel`` (site energies E_i = E0 + c·B_i + pair + ZBL, ``ace``), the strain
derivatives (``strain``), the ZBL baseline (``zbl``), ``evaluate`` and the evaluation ``backends``; ``pace``
holds the ML-PACE (.yace) model family."""
from .ace import ACEModel, ace_model
from .evaluate import evaluate

__all__ = ["ACEModel", "ace_model", "evaluate"]
