"""Nonlinear ACE on the linear model's basis: E_i = E0(z_i) + F_{z_i}(ρ_1, …, ρ_P) + Σ_j c_{z_i z_j}·V(r_ij)
[+ ½ Σ_j V_ZBL(r_ij)], ρ_p,i = c_p[z_i]·B_i (docs/nonlinear.md).

B_i are the linear model's invariants (``ACEModel``: same spec, coupling, purification and prior rescaling,
held by composition as ``model.linear``, whose own coefficients stay zero and frozen), F is ML-PACE's
``FinnisSinclairShiftedScaled`` embedding or a small MLP (``embedding``), and the many-body radials are
optionally learnable (``radials``).  With one density, no embedding and fixed radials the site energies are
computed by the same operations as ``ACEModel.node_energies`` / ``ACEModel.site_terms`` (bit for bit).

Forces F = −∂E/∂x and virials W = −∂E/∂ε come from the one derivative driver (``model.derivatives``): autograd
of ``node_energies`` through the symmetric strain, or the hand adjoint ``site_terms``, which is differentiable in
every parameter (``Capabilities.adjoint_graph``: in training mode the driver records it with ``create_graph``, so
that a force loss needs one backward pass, not the autograd path's double backward): ∂E/∂A = Σ_p ∂F/∂ρ_p ·
∂ρ_p/∂A, i.e. the linear model's adjoint with the coefficients c_eff = Σ_p F'_p c_p.
"""
from __future__ import annotations

import copy
import dataclasses
from typing import List, Optional, Tuple

import torch
from torch import nn

from ...basis.embedding import pool
from ...config import ACEConfig
from ..ace import ACEModel, ace_model as linear_ace_model
from ..contract import LINEAR as LINEAR_READOUT, Capabilities, EnergyModel
from .embedding import (EMBEDDINGS, FS, MLP, FSEmbedding, MLPEmbedding, check_fs_parameters, default_fs_parameters,
                        fs_shifted_scaled)
from .defaults import LINEAR, NONLINEAR
from .radials import LearnableRadials
from .size import check_model_size
from .state import NonlinearState


class NonlinearACEModel(NonlinearState, EnergyModel):
    """``NonlinearACEModel(config, densities=1, embedding=None, ...)``; see ``nonlinear_ace_model`` and
    ``from_linear`` for the usual constructors.

    Parameters: ``density_coefficients`` [P, NZ, n_b], ``pair_coefficients`` [NZ, NZ, n_pair], the embedding's
    (``embedding_fn``: FS weights if ``learnable_fs``; the MLP's W, b, w) and the radial weights
    ``radials.weights`` [NZ, NZ, n_poly, max_l + 1, n_poly] when ``learnable_radials``."""

    # torch.jit.script compiles the evaluation (site_densities … site_terms, forward; torchace.io.torchscript):
    # the Python-side description of the model stays out of the compiled module
    __jit_unused_properties__ = ["elements", "capabilities", "zbl", "embedding", "coefficients", "device", "dtype"]
    __jit_ignored_attributes__ = ["config", "spec", "nl_of_b", "embedding_name", "committee", "prior_info",
                                  "metadata"]

    def __init__(self, config: ACEConfig, densities: int = LINEAR.densities,
                 embedding: Optional[str] = LINEAR.embedding, fs_parameters=None,
                 learnable_radials: bool = LINEAR.learnable_radials, learnable_fs: bool = False, mlp_hidden: int = 16,
                 seed: int = 0, dtype: torch.dtype = torch.float64):
        super().__init__()
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
        if learnable_radials and (config.pure or config.pure2b):
            raise ValueError("learnable_radials with pure/pure2b: purification linearises products of the fixed "
                             "polynomial radials, so it would not remove the self-interaction of learned radials; "
                             "use fixed radials (learnable_radials=False) with purified bases")
        lin = ACEModel(config, dtype=torch.float64)
        lin.coefficients.requires_grad_(False)  # the basis only: its coefficients stay zero
        # sizes checked against the memory before any parameter is allocated (an invalid mlp_hidden is
        # refused below by MLPEmbedding with its own message)
        hidden = mlp_hidden if embedding == MLP and isinstance(mlp_hidden, int) and mlp_hidden >= 1 else 0
        n_l, n_poly = lin.embedding.max_l + 1, lin.embedding.radials.n_poly
        check_model_size(lin.nz, lin.n_b, lin.n_pair, densities, embedding, hidden,
                         lin.nz * lin.nz * n_poly * n_l * n_poly if learnable_radials else 0)
        self.linear = lin
        self.config = config
        self.nz, self.n_b, self.n_pair, self.rcut = lin.nz, lin.n_b, lin.n_pair, lin.rcut
        self.spec, self.nl_of_b = lin.spec, lin.nl_of_b
        self.densities = densities
        self.embedding_name = embedding
        self.density_coefficients = nn.Parameter(torch.zeros(densities, self.nz, self.n_b, dtype=torch.float64))
        self.pair_coefficients = nn.Parameter(torch.zeros(self.nz, self.nz, self.n_pair, dtype=torch.float64))
        if embedding == FS:
            fs = check_fs_parameters(default_fs_parameters(densities) if fs_parameters is None else fs_parameters,
                                     self.nz, densities)
            self.embedding_fn = FSEmbedding(fs, learnable=learnable_fs)
        elif embedding == MLP:
            self.embedding_fn = MLPEmbedding(self.nz, densities, mlp_hidden, seed)
        else:
            self.embedding_fn = None
        self.radials = LearnableRadials(lin.embedding, self.nz) if learnable_radials else None
        self.committee = None   # no committees for nonlinear models (yet)
        self.prior_info = None  # JSON description of the prior the basis was rescaled with
        self.metadata = {}
        self.init_driver()      # analytic (the rule's switch), edge_chunk: torchace.model.derivatives
        self.to(dtype)

    # ---- what the rest of torchace reads from a model ----

    @property
    def elements(self):
        return list(self.config.elements)

    @property
    def capabilities(self) -> Capabilities:
        """No design rows; a committee through ``torchace.uncertainty.nonlinear``; a differentiable hand adjoint."""
        return Capabilities(readout=self.embedding_name or LINEAR_READOUT, nonlinear=True, committee=True,
                            hand_adjoint=True, adjoint_graph=True, scriptable=True,
                            learnable_radials=self.radials is not None,
                            backends=("reference", "analytic", "fused"))

    @property
    def E0(self) -> torch.Tensor:
        return self.linear.E0

    @property
    def zbl(self):
        return self.linear.zbl

    @property
    def embedding(self):
        """The one-particle basis (``EdgeEmbedding``, its ``nl_scale``): what the priors read."""
        return self.linear.embedding

    @property
    def learnable_radials(self) -> bool:
        return self.radials is not None

    @property
    def coefficients(self) -> torch.Tensor:
        """The linear-in-B coefficients, flat: [density_coefficients | pair_coefficients] (for device, dtype and
        an L2 penalty; a copy, not a parameter)."""
        return torch.cat([self.density_coefficients.reshape(-1), self.pair_coefficients.reshape(-1)])

    def config_dict(self) -> dict:
        return self.linear.config_dict()

    def reference_energy(self, numbers) -> float:
        return self.linear.reference_energy(numbers)

    def set_basis_scale(self, nl_scale: Optional[torch.Tensor] = None,
                        pair_scale: Optional[torch.Tensor] = None) -> None:
        """The prior's rescaling of the one-particle and pair bases (``ACEModel.set_basis_scale``); with learnable
        radials the scale multiplies the polynomials inside the radial sum (``radials``)."""
        self.linear.set_basis_scale(nl_scale, pair_scale)

    def linear_model(self) -> ACEModel:
        """The linear ACEModel of density 1 and the pair part (this model's values when F = ρ_1, fixed radials)."""
        lin = copy.deepcopy(self.linear)
        with torch.no_grad():
            lin.coefficients = torch.cat([self.density_coefficients[0].reshape(-1), self.pair_coefficients.reshape(-1)])
        lin.coefficients.requires_grad_(True)
        lin.prior_info, lin.metadata = copy.deepcopy(self.prior_info), copy.deepcopy(self.metadata)
        return lin.train(self.training)

    # ---- the site energies (reference path) ----

    def site_densities(self, vectors: torch.Tensor, species: torch.Tensor, edge_index: torch.Tensor) -> torch.Tensor:
        """ρ [N, P], ρ_p,i = c_p[z_i]·B_i (B with the learned radials when they are learnable)."""
        lin = self.linear
        if self.radials is None:
            A = lin.atomic_basis(vectors, species, edge_index)
        else:
            i, j = edge_index[0], edge_index[1]
            A = pool(self.learned_basis(vectors, species[i], species[j]), i, species.shape[0])
        AA = lin.product(A)
        rho = [(AA * lin.coupling.transpose_apply(self.density_coefficients[p])[species]).sum(-1)
               for p in range(self.densities)]
        return torch.stack(rho, dim=-1)

    def node_energies(self, vectors: torch.Tensor, species: torch.Tensor, edge_index: torch.Tensor) -> torch.Tensor:
        lin = self.linear
        rho = self.site_densities(vectors, species, edge_index)
        e_mb = rho[:, 0] if self.embedding_fn is None else self.embedding_fn(rho, species)
        e = lin.E0[species] + e_mb
        return lin.add_pair_energies(e, vectors, species, edge_index, self.pair_coefficients)

    # ---- the hand adjoint (the derivative driver's ``analytic_forward``) ----

    def site_terms(self, vectors: torch.Tensor, i: torch.Tensor, zi: torch.Tensor, zj: torch.Tensor,
                   species: torch.Tensor, need_grad: bool) -> Tuple[torch.Tensor, torch.Tensor]:
        """Site energies of the atoms ``species`` and ∂E/∂r_e [3, E] of their edges (centres ``i``)."""
        lin = self.linear
        n_atoms = species.shape[0]
        phi, saved = self.one_particle_with_grad(vectors, zi, zj)
        A = pool(phi.t().contiguous(), i, n_atoms)
        AA = lin.product(A)
        c_aa = [lin.coupling.transpose_apply(self.density_coefficients[p])[species] for p in range(self.densities)]
        rho = [(AA * c).sum(-1) for c in c_aa]
        if self.embedding_fn is None:
            F, dF = rho[0], None
        else:
            F, dF = self.embedding_fn.value_and_grad(torch.stack(rho, dim=-1), species)
        e = lin.E0[species] + F
        g_vec = torch.zeros((3, vectors.shape[0]), dtype=vectors.dtype, device=vectors.device)
        if need_grad:
            c_eff = c_aa[0]  # ∂E/∂AA = Σ_p F'_p c_p (C-transposed): the linear adjoint with these coefficients
            if dF is not None:
                c_eff = dF[:, :1] * c_aa[0]
                for p in range(1, self.densities):
                    c_eff = c_eff + dF[:, p:p + 1] * c_aa[p]
            gA = lin.product.grad(A, c_eff).index_select(0, i).t().contiguous()
            g_vec = self.one_particle_vjp(gA, saved)
        e_p, g_p = lin.pair_site_terms(saved[1], saved[0], i, zi, zj, n_atoms, need_grad, self.pair_coefficients)
        return e + e_p, g_vec + g_p

    # ---- the one-particle basis φ: the linear model's, or with the learnable radials (radials.py) ----

    def learned_basis(self, vectors: torch.Tensor, zi: torch.Tensor, zj: torch.Tensor) -> torch.Tensor:
        """φ [E, n_a] with the learned radials (reference path; needs ``radials``)."""
        emb = self.linear.embedding
        radials = self.radials
        assert radials is not None
        r = torch.linalg.norm(vectors, dim=-1)
        return radials(emb.radials(r, zi, zj), emb.sh(vectors), emb.nl_scale, zi, zj)

    def one_particle_with_grad(self, vectors: torch.Tensor, zi: torch.Tensor,
                               zj: torch.Tensor) -> Tuple[torch.Tensor, List[torch.Tensor]]:
        """φ [n_a, E] and what ``one_particle_vjp`` needs (``EdgeEmbedding.with_grad`` or the learned radials'),
        the saved list starting [u, r, …]."""
        emb = self.linear.embedding
        radials = self.radials
        if radials is None:
            return emb.with_grad(vectors, zi, zj)
        r = torch.linalg.norm(vectors, dim=-1)
        R, dR = emb.radials.with_grad(r, zi, zj)
        Y, _ = emb.sph(vectors, False)
        return radials.with_grad(vectors, r, R, dR, Y, emb.nl_scale, zi, zj)

    def one_particle_vjp(self, g: torch.Tensor, saved: List[torch.Tensor]) -> torch.Tensor:
        """Σ_a g[a, e] ∂φ[a, e]/∂r_e [3, E] for the saved list of ``one_particle_with_grad``."""
        radials = self.radials
        return self.linear.embedding.vjp(g, saved) if radials is None else radials.vjp(g, saved)

    def randomize_densities(self, scale: float, seed: int = 0, first: int = 1) -> None:
        """Densities ``first`` … P − 1 ← N(0, scale²) (seeded); density 0 and the rest are left alone."""
        g = torch.Generator().manual_seed(int(seed))
        c = torch.randn(self.density_coefficients[first:].shape, generator=g, dtype=torch.float64) * float(scale)
        with torch.no_grad():
            self.density_coefficients[first:] = c.to(self.density_coefficients)

    def split_densities(self, kappa: float) -> None:
        """Move the share κ of density 1 to densities 2 … P (FS only): c_p = κ c_1 (p ≥ 2), c_1 ← (1 − κ Σ_p a_p
        f'_p(0)) c_1, which leaves the energies unchanged to first order in ρ.  The training's warm start has
        densities 2 … P at zero, a saddle of the loss (their gradient is f'_p(0) times density 1's, which
        vanishes at the linear optimum); this is where training starts instead."""
        f = self.embedding_fn
        if not kappa or self.densities == 1 or f is None or f.name != FS:
            return
        m = f.exponents[:, 1:]
        slope = (f.weights.detach()[:, 1:] * fs_shifted_scaled(torch.zeros_like(m), m)[1]).sum(1)  # [NZ]
        with torch.no_grad():
            c = self.density_coefficients[0].clone()
            self.density_coefficients[1:] = float(kappa) * c
            self.density_coefficients[0] = c * (1.0 - float(kappa) * slope.to(c)).unsqueeze(1)

    def extra_repr(self) -> str:
        c = self.config
        return (f"elements={c.elements}, order={c.order}, totaldegree={c.totaldegree}, densities={self.densities}, "
                f"embedding={self.embedding_name}, learnable_radials={self.learnable_radials}, n_b={self.n_b}, "
                f"n_pair={self.n_pair}")


OPTIONS = ("densities", "embedding", "fs_parameters", "learnable_radials", "learnable_fs", "mlp_hidden", "seed")


def nonlinear_ace_model(elements, order: int, totaldegree, *, densities: int = NONLINEAR.densities,
                        embedding: Optional[str] = NONLINEAR.embedding, fs_parameters=None,
                        learnable_radials: bool = NONLINEAR.learnable_radials, learnable_fs: bool = False,
                        mlp_hidden: int = 16, init_scale: float = 0.0, seed: int = 0,
                        dtype: torch.dtype = torch.float64, **options) -> NonlinearACEModel:
    """A nonlinear ACE model on the basis of ``torchace.ace_model(elements, order, totaldegree, **options)``
    (``options``: the other ``ACEConfig`` fields).  Defaults: two densities with pacemaker's FS embedding
    [1, 1, 1, 0.5] (F = ρ_1 + f(ρ_2; 1/2)) and learnable radials; every coefficient starts at zero, the
    densities 2 … P at N(0, init_scale²) (seeded) if ``init_scale`` > 0."""
    fields = [f.name for f in dataclasses.fields(ACEConfig)][3:]
    unknown = sorted(set(options) - set(fields))
    if unknown:
        raise TypeError(f"nonlinear_ace_model: unknown option(s) {unknown}; the model fields are {fields}, "
                        f"and {list(OPTIONS)}, init_scale, dtype")
    cfg = ACEConfig.build(elements, order, totaldegree, **options)
    model = NonlinearACEModel(cfg, densities=densities, embedding=embedding, fs_parameters=fs_parameters,
                              learnable_radials=learnable_radials, learnable_fs=learnable_fs, mlp_hidden=mlp_hidden,
                              seed=seed, dtype=dtype)
    if init_scale:
        model.randomize_densities(init_scale, seed)
    return model.eval()


def from_linear(model: ACEModel, densities: int = NONLINEAR.densities,
                embedding: Optional[str] = NONLINEAR.embedding, fs_parameters=None,
                learnable_radials: bool = NONLINEAR.learnable_radials, learnable_fs: bool = False, mlp_hidden: int = 16,
                init_scale: float = 0.0, seed: int = 0) -> NonlinearACEModel:
    """Warm start from a (fitted) linear model: same config, E0, basis scale (prior) and prior description;
    density 1 = its many-body coefficients, the pair part = its pair coefficients, the other densities zero
    (or N(0, init_scale²)), radials at the identity.  With zero extra densities and an embedding with
    F(ρ_1, 0, …) = ρ_1 (FS with a_1 = m_1 = 1, or the MLP at initialisation) the new model *is* the linear one.
    A committee is not carried over."""
    if not isinstance(model, ACEModel):
        raise TypeError(f"from_linear needs an ACEModel, got {type(model).__name__}")
    cfg = dataclasses.replace(model.config, E0=[float(v) for v in model.E0.tolist()])
    dev, dtype = model.coefficients.device, model.coefficients.dtype
    nl = NonlinearACEModel(cfg, densities=densities, embedding=embedding, fs_parameters=fs_parameters,
                           learnable_radials=learnable_radials, learnable_fs=learnable_fs, mlp_hidden=mlp_hidden,
                           seed=seed, dtype=dtype).to(dev)
    nl.set_basis_scale(model.embedding.nl_scale, model.pair.scale)
    c = model.coefficients.detach()
    with torch.no_grad():
        nl.density_coefficients[0] = c[: model.n_manybody].view(nl.nz, nl.n_b)
        nl.pair_coefficients.copy_(c[model.n_manybody:].view(nl.nz, nl.nz, nl.n_pair))
    if init_scale:
        nl.randomize_densities(init_scale, seed)
    nl.prior_info = copy.deepcopy(model.prior_info)
    nl.metadata = copy.deepcopy(model.metadata)
    return nl.train(model.training)


def ace_model(elements, order: int, totaldegree, *, densities: int = LINEAR.densities,
              embedding: Optional[str] = LINEAR.embedding, learnable_radials: bool = LINEAR.learnable_radials,
              dtype: torch.dtype = torch.float64, **options):
    """``torchace.ace_model`` with the nonlinear options: the linear ``ACEModel`` for the defaults (one density,
    no embedding, fixed radials), else ``nonlinear_ace_model`` (embedding 'fs' when densities > 1 and none is
    given).  ``options``: the ``ACEConfig`` fields, and for nonlinear models fs_parameters, learnable_fs,
    mlp_hidden, init_scale, seed."""
    if densities == LINEAR.densities and embedding is LINEAR.embedding \
            and learnable_radials is LINEAR.learnable_radials:
        return linear_ace_model(elements, order, totaldegree, dtype=dtype, **options)
    if embedding is None and densities != 1:
        embedding = FS
    return nonlinear_ace_model(elements, order, totaldegree, densities=densities, embedding=embedding,
                               learnable_radials=learnable_radials, dtype=dtype, **options)


# the linear builder's documentation (every ACEConfig option and its default) stays the first thing users read
ace_model.__doc__ = (linear_ace_model.__doc__ or "") + "\n\n    Nonlinear options (docs/nonlinear.md):" \
    + (ace_model.__doc__ or "").split("``torchace.ace_model`` with the nonlinear options:", 1)[-1]
