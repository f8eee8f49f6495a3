"""The readouts of the ACE model (docs/nonlinear.md): the embedding F(ρ_1 … ρ_P) (``embedding``: none, FS,
MLP), learnable radials (``radials``), their option checks (``options``), size checks (``size``) and the
model-construction defaults (``defaults``)."""
from .defaults import LINEAR, NONLINEAR, ModelDefaults
from .embedding import EMBEDDINGS, FS, MLP, FSEmbedding, MLPEmbedding, fs_shifted_scaled
from .radials import LearnableRadials

__all__ = ["LINEAR", "NONLINEAR", "ModelDefaults", "EMBEDDINGS", "FS", "MLP", "FSEmbedding", "MLPEmbedding",
           "fs_shifted_scaled", "LearnableRadials"]
