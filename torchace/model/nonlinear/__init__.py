"""Nonlinear ACE on the linear model's basis (issue 16, part 1; docs/nonlinear.md): P densities ρ_p = c_p·B,
E_i = E0 + F(ρ_1, …, ρ_P) + pair [+ ZBL], F ML-PACE's FinnisSinclairShiftedScaled embedding or a small MLP,
optionally learnable radials."""
from __future__ import annotations

import torch

from .defaults import LINEAR, NONLINEAR, ModelDefaults
from .embedding import EMBEDDINGS, FSEmbedding, MLPEmbedding, fs_shifted_scaled
from .model import NonlinearACEModel, ace_model, from_linear, nonlinear_ace_model
from .radials import LearnableRadials
from ..state import read_document
from .state import FORMAT, FORMAT_VERSION

__all__ = ["NonlinearACEModel", "nonlinear_ace_model", "ace_model", "from_linear", "load", "FSEmbedding",
           "MLPEmbedding", "LearnableRadials", "fs_shifted_scaled", "EMBEDDINGS", "FORMAT", "FORMAT_VERSION",
           "LINEAR", "NONLINEAR", "ModelDefaults"]


def load(path: str, dtype: torch.dtype = torch.float64, device=None) -> NonlinearACEModel:
    """Load a file written by ``NonlinearACEModel.save`` (JSON only, nothing is executed)."""
    model = NonlinearACEModel.from_dict(read_document(path), path, dtype)
    return model.to(device) if device is not None else model
