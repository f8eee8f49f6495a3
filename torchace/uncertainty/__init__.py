"""Committee uncertainties (used at inference by the calculators): ``committee`` (posterior samples of a linear
model's coefficients: spread of energy, forces and virial) and ``nonlinear`` (the committee of a nonlinear
model: the Bayesian posterior of the parameters its energy is linear in).  Kept apart from ``fit`` and
``train`` so that engines import no fitting code."""
from .committee import committee_predictions, spread

__all__ = ["committee_predictions", "spread"]
