"""Stage 3, the model: the contract every energy model implements (``contract``: ``EnergyModel``,
``Capabilities``), the one derivative driver (``derivatives``, on the strain blocks of ``strain``), the ACE model
(``ace``: basis + readout, E_i = E0 + F(ρ_1 … ρ_P) + pair + ZBL; its readouts in ``readout``, its file in
``document``, its builders in ``build``), the ZBL baseline (``zbl``), ``evaluate`` and the evaluation
``backends``; ``pace`` (ML-PACE .yace models) is the other family."""
from .ace import ACEModel
from .build import ace_model, from_linear, nonlinear_ace_model
from .contract import Capabilities, EnergyModel
from .evaluate import evaluate

__all__ = ["EnergyModel", "Capabilities", "ACEModel", "ace_model", "nonlinear_ace_model", "from_linear", "evaluate"]
