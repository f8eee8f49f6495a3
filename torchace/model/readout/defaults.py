"""Model-construction defaults of the ACE model's readout, written once (issue 30; docs/nonlinear.md).

Two sets, different on purpose:

* ``NONLINEAR`` (pacemaker's): two densities, the Finnis–Sinclair embedding F = ρ_1 + f(ρ_2; 1/2), learnable
  radials — the defaults of ``nonlinear_ace_model``, ``from_linear`` and the model section of the ``torchace
  train`` config (asking for a nonlinear model means asking for these).
* ``LINEAR``: one density, no embedding, fixed radials — the defaults of ``torchace.ace_model``, of
  ``ACEModel(config)`` and of ``model.with_readout()``: the linear model is the default model, and any
  nonlinear option asks for a nonlinear readout (``ace_model(densities=2)`` takes the FS embedding, as the train
  config does).
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Optional

from .embedding import FS


@dataclass(frozen=True)
class ModelDefaults:
    densities: int
    embedding: Optional[str]
    learnable_radials: bool


NONLINEAR = ModelDefaults(densities=2, embedding=FS, learnable_radials=True)
LINEAR = ModelDefaults(densities=1, embedding=None, learnable_radials=False)
