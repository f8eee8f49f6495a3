"""The readout of the ACE model (docs/nonlinear.md): how the site energy is read from the invariants B_i.

E_i = E0(z_i) + F_{z_i}(ρ_1, …, ρ_P) + pair, ρ_p,i = c_p[z_i]·B_i, with F = ρ_1 (``embedding=None``: the
linear readout, one density), ML-PACE's FinnisSinclairShiftedScaled (``"fs"``) or a small MLP (``"mlp"``);
the many-body radials fixed or learnable (``radials.LearnableRadials``).  ``check_readout`` validates the
options once (the constructor, the builders and the model file go through it); ``make_embedding`` builds F.
"""
from __future__ import annotations

from typing import Optional

from torch import nn

from .embedding import EMBEDDINGS, FS, MLP, FSEmbedding, MLPEmbedding, check_fs_parameters, default_fs_parameters


def check_readout(densities, embedding, fs_parameters, learnable_radials, learnable_fs, pure: bool) -> None:
    """ValueError naming the option for an impossible readout (before anything is allocated)."""
    if isinstance(densities, bool) or not isinstance(densities, int) or densities < 1:
        raise ValueError(f"densities must be a positive integer, got {densities!r}")
    if embedding not in (None,) + EMBEDDINGS:
        raise ValueError(f"embedding must be None, 'fs' or 'mlp', got {embedding!r}")
    if embedding is None and densities != 1:
        raise ValueError(f"embedding=None is the linear model F = ρ_1: it takes densities=1, got {densities}; "
                         "use embedding='fs' or 'mlp' for more densities")
    if embedding != FS and (fs_parameters is not None or learnable_fs):
        raise ValueError(f"fs_parameters / learnable_fs belong to embedding='fs', not {embedding!r}")
    for name, flag in (("learnable_radials", learnable_radials), ("learnable_fs", learnable_fs)):
        if not isinstance(flag, bool):
            raise ValueError(f"{name} must be True or False, got {flag!r}")
    if learnable_radials and pure:
        raise ValueError("learnable_radials with pure/pure2b: purification linearises products of the fixed "
                         "polynomial radials, so it would not remove the self-interaction of learned radials; "
                         "use fixed radials (learnable_radials=False) with purified bases")


def mlp_width(embedding: Optional[str], mlp_hidden) -> int:
    """The MLP's hidden width for the size check (0 without an MLP; an invalid width is refused by the MLP)."""
    return mlp_hidden if embedding == MLP and isinstance(mlp_hidden, int) and mlp_hidden >= 1 else 0


def make_embedding(embedding: Optional[str], nz: int, densities: int, fs_parameters, learnable_fs: bool,
                   mlp_hidden: int, seed: int) -> Optional[nn.Module]:
    """F: None (F = ρ_1), ``FSEmbedding`` (pacemaker's defaults unless ``fs_parameters``) or ``MLPEmbedding``."""
    if embedding == FS:
        fs = check_fs_parameters(default_fs_parameters(densities) if fs_parameters is None else fs_parameters,
                                 nz, densities)
        return FSEmbedding(fs, learnable=learnable_fs)
    if embedding == MLP:
        return MLPEmbedding(nz, densities, mlp_hidden, seed)
    return None
