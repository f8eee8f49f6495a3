"""Stage 3, the model: the contract every energy model implements (``contract``: ``EnergyModel``,
``Capabilities``), the one derivative driver (``derivatives``, on the strain blocks of ``strain``),
``ACEModel`` (site energies E_i = E0 + c·B_i + pair + ZBL, ``ace``), the ZBL baseline (``zbl``), ``evaluate``
and the evaluation ``backends``; ``nonlinear`` and ``pace`` (ML-PACE .yace models) are the other families."""
from .ace import ACEModel
from .contract import Capabilities, EnergyModel
from .evaluate import evaluate
# ace_model with the nonlinear options (densities, embedding, learnable_radials); the defaults give ACEModel
from .nonlinear import NonlinearACEModel, ace_model, from_linear, nonlinear_ace_model

__all__ = ["EnergyModel", "Capabilities", "ACEModel", "NonlinearACEModel", "ace_model", "nonlinear_ace_model",
           "from_linear", "evaluate"]
