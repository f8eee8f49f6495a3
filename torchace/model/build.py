"""Builders of the ACE model (``torchace.ace_model``, ``nonlinear_ace_model``, ``from_linear``): ACEpotentials.jl
v0.10 ``ace1_model`` conventions for the basis (docs/conventions.md), pacemaker's for the nonlinear readout
(docs/nonlinear.md).  The defaults of each live in ``readout.defaults`` (``LINEAR``, ``NONLINEAR``)."""
from __future__ import annotations

import dataclasses
from typing import Optional

import torch

from ..config import ACEConfig
from .ace import ACEModel
from .readout.defaults import LINEAR, NONLINEAR
from .readout.embedding import FS

# the readout's options (ACEModel's keywords) beside the ACEConfig fields
OPTIONS = ("densities", "embedding", "fs_parameters", "learnable_radials", "learnable_fs", "mlp_hidden", "seed")


def ace_model(elements, order: int, totaldegree, *, densities: int = LINEAR.densities,
              embedding: Optional[str] = LINEAR.embedding, learnable_radials: bool = LINEAR.learnable_radials,
              fs_parameters=None, learnable_fs: bool = False, mlp_hidden: int = 16, init_scale: float = 0.0,
              seed: int = 0, dtype: torch.dtype = torch.float64, **options) -> ACEModel:
    """Build an ACE model with ACEpotentials.jl v0.10 ``ace1_model`` conventions (see docs/conventions.md).

    ``options`` are the other ``ACEConfig`` fields (the one list of model fields; the fit config's ``model:``
    section and the model file's ``config`` are the same), validated like the config files:
    ``wL`` (1.5), ``rcut`` (2.5·max r0), ``r0`` (mean bond length per pair), ``E0`` (per element, 0), ``pair``
    (True), ``zbl`` (False; the ZBL baseline switched off between ``zbl_inner`` and ``zbl_outer``, Å; defaults
    r0/2 and r0 of each pair, docs/repulsion.md), ``pure2b`` (False: removes the one-neighbour self-interaction
    from every function of correlation order >= 2), ``pure`` (False: the canonical, self-interaction-free
    cluster expansion, docs/purification.md).

    The readout (docs/nonlinear.md): by default one density, no embedding and fixed radials — the linear model
    E_i = E0 + c·B_i + pair, fitted by ``torchace.fit``.  ``densities`` P > 1 takes the FS embedding unless
    ``embedding`` ("fs", "mlp") is given; ``fs_parameters`` ([a_1, m_1, …] or one list per element; pacemaker's
    [1, 1, 1, 0.5] for two densities), ``learnable_fs``, ``mlp_hidden`` (16), ``learnable_radials``;
    densities 2 … P start at N(0, ``init_scale``²) (seeded by ``seed``), everything else at zero."""
    fields = [f.name for f in dataclasses.fields(ACEConfig)][3:]
    unknown = sorted(set(options) - set(fields))
    if unknown:
        raise TypeError(f"ace_model: unknown option(s) {unknown}; the model fields are {fields}, and "
                        f"{list(OPTIONS)}, init_scale, dtype")
    if dtype not in (torch.float64, torch.float32):
        raise ValueError(f"ace_model: dtype must be torch.float64 or torch.float32, got {dtype!r}")
    if embedding is None and densities != 1 and not isinstance(densities, bool):
        embedding = FS
    cfg = ACEConfig.build(elements, order, totaldegree, **options)
    model = ACEModel(cfg, dtype=dtype, densities=densities, embedding=embedding, fs_parameters=fs_parameters,
                     learnable_radials=learnable_radials, learnable_fs=learnable_fs, mlp_hidden=mlp_hidden,
                     seed=seed)
    if init_scale:
        model.randomize_densities(init_scale, seed)
    # inference mode by default; .train() makes forces differentiable (create_graph) for force losses
    return model.eval()


def nonlinear_ace_model(elements, order: int, totaldegree, *, densities: int = NONLINEAR.densities,
                        embedding: Optional[str] = NONLINEAR.embedding,
                        learnable_radials: bool = NONLINEAR.learnable_radials, **options) -> ACEModel:
    """``ace_model`` with pacemaker's nonlinear defaults: two densities with the FS embedding [1, 1, 1, 0.5]
    (F = ρ_1 + f(ρ_2; 1/2)) and learnable radials."""
    return ace_model(elements, order, totaldegree, densities=densities, embedding=embedding,
                     learnable_radials=learnable_radials, **options)


def from_linear(model: ACEModel, densities: int = NONLINEAR.densities,
                embedding: Optional[str] = NONLINEAR.embedding, fs_parameters=None,
                learnable_radials: bool = NONLINEAR.learnable_radials, learnable_fs: bool = False, mlp_hidden: int = 16,
                init_scale: float = 0.0, seed: int = 0) -> ACEModel:
    """Warm start from a (fitted) model: same config, E0, basis scale (prior) and prior description; density 1 =
    its many-body coefficients (of density 1), the pair part = its pair coefficients, the other densities zero
    (or N(0, init_scale²)), radials at the identity.  With zero extra densities and an embedding with
    F(ρ_1, 0, …) = ρ_1 (FS with a_1 = m_1 = 1, or the MLP at initialisation) the new model *is* the linear one.
    A committee is not carried over."""
    if not isinstance(model, ACEModel):
        raise TypeError(f"from_linear needs an ACEModel, got {type(model).__name__}")
    nl = model.with_readout(densities, embedding, fs_parameters, learnable_radials, learnable_fs, mlp_hidden, seed)
    if init_scale:
        nl.randomize_densities(init_scale, seed)
    return nl
