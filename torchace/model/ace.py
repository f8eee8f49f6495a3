"""The ACE model: E_i = E0(z_i) + F_{z_i}(ρ_1, …, ρ_P) + Σ_j c_{z_i z_j}·V(r_ij) [+ ½ Σ_j V_ZBL(r_ij)], E = Σ_i E_i,
ρ_p,i = c_p[z_i]·B_i (ACEpotentials.jl paper §II; docs/nonlinear.md).

One class composed of the basis (radials, harmonics, A, AA, B: ``basis``), a readout F (``readout``: none,
i.e. F = ρ_1, the linear model; ML-PACE's Finnis–Sinclair form; a small MLP) and radials (fixed, or learnable:
``readout.radials``).  With the linear readout and fixed radials (the default) E is linear in
``coefficients``: design-matrix rows exist (``torchace.fit``) and every backend runs it; the operations are
those of the linear model, whatever the readout machinery around them.

The model implements the energy-model contract (``contract.EnergyModel``): ``node_energies`` (the autograd
definition) and the hand adjoint ``site_terms`` (∂E/∂A = Σ_p ∂F/∂ρ_p ∂ρ_p/∂A: the linear adjoint with the
per-atom coefficients c_eff = Σ_p F'_p c_p, differentiable in every parameter, so that training records it with
``create_graph``); forces F = −∂E/∂x and virials W = −∂E/∂ε = −V·σ come from the one derivative driver.

``coefficients`` (one parameter, flat): the many-body blocks of density 1 … P ([P, NZ, n_b]: ``n_b`` per centre
element, elements in model order), then the pair blocks of ``n_pair`` per ordered element pair (centre,
neighbour).  With one density this is the column order of the design-matrix rows (``basis_size`` columns).  The
optional ZBL baseline (``config.zbl``, torchace.repulsion) has no coefficients.
"""
from __future__ import annotations

import copy
from typing import List, Optional, Tuple

import numpy as np
import torch
from torch import nn

from ..basis.embedding import EdgeEmbedding, pool
from ..basis.product import ProductBasis
from ..basis.coupling import SymmetricCoupling
from ..config import ACEConfig
from ..basis.coupling_coefficients import couple_spec
from ..basis.purification import purify_coupling
from ..basis.radial import ManyBodyRadials, PairBasis
from .zbl import ZBL
from ..basis.spec import ProductSpec, pair_degree, product_spec
from ..structures.geometry import edge_vectors
from .compiled import compiled_forward
from .contract import LINEAR, Capabilities, EnergyModel
from .readout.defaults import LINEAR as LINEAR_DEFAULTS
from .readout.embedding import FS, fs_shifted_scaled
from .readout.options import check_readout, make_embedding, mlp_width
from .readout.radials import LearnableRadials
from .readout.size import check_model_size
from .document import ModelState

# the linear readout on fixed radials: rows, committees, every backend, a hand adjoint differentiable in the
# coefficients (training runs it with create_graph), scriptable as it is
LINEAR_CAPABILITIES = Capabilities(readout=LINEAR, rows=True, committee=True, hand_adjoint=True, adjoint_graph=True,
                                   scriptable=True, backends=("reference", "analytic", "fused", "triton"))


class ACEModel(ModelState, EnergyModel):
    """``ACEModel(config, densities=1, embedding=None, ...)``: see ``torchace.ace_model``,
    ``nonlinear_ace_model`` and ``from_linear`` for the usual constructors.

    Parameters: ``coefficients`` (views ``density_coefficients`` [P, NZ, n_b] and ``pair_coefficients``
    [NZ, NZ, n_pair]), the embedding's (``embedding_fn``: FS weights if ``learnable_fs``; the MLP's W, b, w) and
    the radial weights ``radials.weights`` [NZ, NZ, n_poly, max_l + 1, n_poly] when ``learnable_radials``."""

    # torch.jit.script compiles the evaluation; the Python-side description of the model stays out of it
    __jit_unused_properties__ = ["elements", "capabilities", "learnable_radials", "device", "dtype"]
    __jit_ignored_attributes__ = ["config", "spec", "nl_of_b", "prior_info", "metadata", "purification",
                                  "embedding_name"]

    def __init__(self, config: ACEConfig, dtype: torch.dtype = torch.float64, *,
                 densities: int = LINEAR_DEFAULTS.densities, embedding: Optional[str] = LINEAR_DEFAULTS.embedding,
                 fs_parameters=None, learnable_radials: bool = LINEAR_DEFAULTS.learnable_radials,
                 learnable_fs: bool = False, mlp_hidden: int = 16, seed: int = 0):
        super().__init__()
        check_readout(densities, embedding, fs_parameters, learnable_radials, learnable_fs,
                      bool(config.pure or config.pure2b))
        self.config = config
        nz = len(config.elements)
        self.nz = nz
        self.rcut = float(config.rcut)
        spec: ProductSpec = product_spec(nz, config.order, config.totaldegree, config.wL)
        self.spec = spec
        r0 = torch.tensor(config.r0, dtype=torch.float64)
        n_y = (spec.max_l + 1) ** 2
        cs = couple_spec(spec.nl_tuples, lambda n, l: (n - 1) * n_y + l * l)
        max_degree, max_l = spec.max_degree, spec.max_l
        self.purification = None
        if config.pure or config.pure2b:
            # C·P on an extended AA (torchace.purify); A gains the one-particle functions (larger n, L) of the
            # linearised self-interaction products, the number of B's is unchanged
            cs = purify_coupling(cs, n_y, nz, cs["nl_of_b"], "pure" if config.pure else "pure2b", spec.max_l)
            max_degree, max_l = (cs["max_n"] - 1) // nz, cs["max_l"]
            self.purification = cs["purification"]
        # keep only the one-particle functions that some product uses; AA indices refer to that list
        used = np.unique(np.concatenate([a.reshape(-1) for a in cs["aa"]]))
        aa = [np.searchsorted(used, a) for a in cs["aa"]]
        self.embedding = EdgeEmbedding(ManyBodyRadials(r0, config.rcut, nz, max_degree), max_l, used)
        self.nl_of_b = cs["nl_of_b"]
        self.product = ProductBasis(aa, self.embedding.n_a)
        self.coupling = SymmetricCoupling(cs["rows"], cs["cols"], cs["vals"], cs["n_b"], cs["n_aa"])
        self.n_b = int(cs["n_b"])
        self.n_pair = pair_degree(config.totaldegree, config.order) if config.pair else 0
        self.pair = PairBasis(r0, config.rcut, self.n_pair)
        self.n_manybody = nz * self.n_b
        self.basis_size = self.n_manybody + nz * nz * self.n_pair  # columns of the design-matrix rows
        self.register_buffer("E0", torch.tensor(config.E0, dtype=torch.float64))
        # additive, coefficient-free baseline (None: none); fit targets have it subtracted (assembly)
        self.zbl = ZBL(config.numbers, *config.zbl_radii()) if config.zbl else None
        self.register_buffer("atomic_numbers", torch.tensor(config.numbers, dtype=torch.long))
        # the readout: P densities, F, learnable radials; sizes checked against the memory before allocating
        n_l, n_poly = self.embedding.max_l + 1, self.embedding.radials.n_poly
        check_model_size(nz, self.n_b, self.n_pair, densities, embedding, mlp_width(embedding, mlp_hidden),
                         nz * nz * n_poly * n_l * n_poly if learnable_radials else 0)
        self.densities = densities
        self.embedding_name = embedding
        self.coefficients = nn.Parameter(torch.zeros(densities * self.n_manybody + nz * nz * self.n_pair,
                                                     dtype=torch.float64))
        self.embedding_fn = make_embedding(embedding, nz, densities, fs_parameters, learnable_fs, mlp_hidden, seed)
        self.radials = LearnableRadials(self.embedding, nz) if learnable_radials else None
        # posterior samples [n, basis_size] of the coefficients E is linear in (uncertainties; None: none)
        self.register_buffer("committee", None)
        self.prior_info = None  # JSON description of the prior the basis was rescaled/fitted with
        self.metadata = {}      # fit information carried into the model file
        self.init_driver()      # analytic (the rule's switch), edge_chunk: torchace.model.derivatives
        self.to(dtype)

    # ``model.coefficients = tensor`` copies into the parameter (shape-checked) instead of replacing it
    def __setattr__(self, name, value):
        if name == "coefficients" and "coefficients" in self._parameters and not isinstance(value, nn.Parameter):
            n = self._parameters["coefficients"].shape[0]
            try:
                value = torch.as_tensor(value)
            except (TypeError, ValueError, RuntimeError):
                raise ValueError(f"coefficients must be {n} numbers (a tensor, array or list), got "
                                 f"{type(value).__name__}") from None
            if value.shape != (n,):
                raise ValueError(f"coefficients must have shape ({n},), got {tuple(value.shape)}")
            if not value.is_floating_point() and value.dtype not in (torch.int32, torch.int64):
                raise ValueError(f"coefficients must be real numbers, got dtype {value.dtype}")
            if not bool(torch.isfinite(value).all()):  # one O(K) pass; NaN would make every energy NaN
                bad = torch.nonzero(~torch.isfinite(value)).flatten()[:5].tolist()
                raise ValueError(f"coefficients must be finite; non-finite at index {bad}")
            with torch.no_grad():
                self._parameters["coefficients"].copy_(value)
            return
        super().__setattr__(name, value)

    # ---- what the rest of torchace reads from a model ----

    @property
    def elements(self):
        return list(self.config.elements)

    @property
    def capabilities(self) -> Capabilities:
        if self.embedding_fn is None and self.radials is None:
            return LINEAR_CAPABILITIES
        # a nonlinear readout or learned radials: no design rows in the coefficients (a committee through
        # torchace.uncertainty.nonlinear); the fused kernel runs it, Triton does not
        return Capabilities(readout=self.embedding_name or LINEAR, nonlinear=True, committee=True,
                            hand_adjoint=True, adjoint_graph=True, scriptable=True,
                            learnable_radials=self.radials is not None, backends=("reference", "analytic", "fused"))

    @property
    def learnable_radials(self) -> bool:
        return self.radials is not None

    @property
    def density_coefficients(self) -> torch.Tensor:
        """c_p [P, NZ, n_b]: a view of ``coefficients`` (writes go to the parameter)."""
        return self.coefficients[: self.densities * self.n_manybody].view(self.densities, self.nz, self.n_b)

    @property
    def pair_coefficients(self) -> torch.Tensor:
        """c_pair [NZ, NZ, n_pair]: a view of ``coefficients``."""
        return self.coefficients[self.densities * self.n_manybody:].view(self.nz, self.nz, self.n_pair)

    def pair_coefficient_blocks(self) -> torch.Tensor:
        """c_pair [NZ, NZ, n_pair] (a view of ``coefficients``)."""
        return self.pair_coefficients

    def config_dict(self) -> dict:
        """The model's ``ACEConfig`` as a dict with E0 read from the ``E0`` buffer (E0's one home: a fit sets
        the buffer; ``config.E0`` is only the value the model was built with)."""
        return dict(self.config.to_dict(), E0=[float(v) for v in self.E0.tolist()])

    def reference_energy(self, numbers) -> float:
        """Σ_i E0(Z_i) for atomic numbers ``numbers``: the isolated-atom reference (E0's one home is the
        ``E0`` buffer; the model file records it from there)."""
        e0 = dict(zip(self.config.numbers, self.E0.tolist()))
        return float(sum(e0[int(z)] for z in numbers))

    # ---- basis rescaling (priors act here so that fitting and gradient training share one code path) ----

    def set_basis_scale(self, nl_scale: Optional[torch.Tensor] = None,
                        pair_scale: Optional[torch.Tensor] = None) -> None:
        """Rescale the one-particle basis per (n, l) ([max_n, max_l + 1], n = 1..max_n as rows) and the pair
        basis per degree ([n_pair]).  Coefficients refer to the rescaled basis; callers that want the same
        model values must rescale the coefficients themselves.  Learned radials take the scale inside their
        polynomial sum (``LearnableRadials``)."""
        with torch.no_grad():
            for name, value, buf in (("nl_scale", nl_scale, self.embedding.nl_scale),
                                     ("pair_scale", pair_scale, self.pair.scale)):
                if value is None:
                    continue
                value = torch.as_tensor(value, dtype=buf.dtype, device=buf.device)
                if value.shape != buf.shape:
                    raise ValueError(f"{name} must have shape {tuple(buf.shape)}, got {tuple(value.shape)}")
                buf.copy_(value)
            if self.purification is not None and nl_scale is not None:
                # purified couplings depend on the one-particle scales (torchace.purify)
                self.purification.apply_scale(self.embedding.nl_scale, self.coupling.vals)

    # ---- basis pieces (shared by the energy, the design-matrix rows and the fast paths) ----

    def edge_vectors(self, positions: torch.Tensor, edge_index: torch.Tensor, unit_shifts: torch.Tensor,
                     cell: torch.Tensor, batch: torch.Tensor) -> torch.Tensor:
        return edge_vectors(positions, edge_index, unit_shifts, cell, batch)

    def atomic_basis(self, vectors: torch.Tensor, species: torch.Tensor, edge_index: torch.Tensor) -> torch.Tensor:
        """A [N, n_a] (with the learned radials when they are learnable)."""
        i, j = edge_index[0], edge_index[1]
        radials = self.radials
        if radials is None:
            phi = self.embedding(vectors, species[i], species[j])
        else:
            emb = self.embedding
            r = torch.linalg.norm(vectors, dim=-1)
            phi = radials(emb.radials(r, species[i], species[j]), emb.sh(vectors), emb.nl_scale, species[i],
                          species[j])
        return pool(phi, i, species.shape[0])

    def site_basis(self, A: torch.Tensor) -> torch.Tensor:
        """B [..., n_b] from A [..., n_a] (the same function for every centre element)."""
        return self.coupling(self.product(A))

    def pair_features(self, vectors: torch.Tensor, species: torch.Tensor, edge_index: torch.Tensor) -> torch.Tensor:
        r = torch.linalg.norm(vectors, dim=-1)
        return self.pair(r, species[edge_index[0]], species[edge_index[1]])

    def density_couplings(self, species: torch.Tensor) -> List[torch.Tensor]:
        """c_p·C per atom, [N, n_aa] for each density p: c·C once per element, not C·AA per atom."""
        c = self.density_coefficients
        return [self.coupling.transpose_apply(c[p])[species] for p in range(self.densities)]

    def readout(self, AA: torch.Tensor, c_aa: List[torch.Tensor],
                species: torch.Tensor) -> Tuple[torch.Tensor, Optional[torch.Tensor]]:
        """F(ρ) [N] and ∂F/∂ρ [N, P] (None for the linear readout, F = ρ_1) from AA and ``density_couplings``."""
        rho = [(AA * c).sum(-1) for c in c_aa]
        emb = self.embedding_fn
        if emb is None:
            return rho[0], None
        return emb.value_and_grad(torch.stack(rho, dim=-1), species)

    # ---- the site energies (reference path) ----

    def site_densities(self, vectors: torch.Tensor, species: torch.Tensor, edge_index: torch.Tensor) -> torch.Tensor:
        """ρ [N, P], ρ_p,i = c_p[z_i]·B_i."""
        AA = self.product(self.atomic_basis(vectors, species, edge_index))
        return torch.stack([(AA * c).sum(-1) for c in self.density_couplings(species)], dim=-1)

    def node_energies(self, vectors: torch.Tensor, species: torch.Tensor, edge_index: torch.Tensor) -> torch.Tensor:
        AA = self.product(self.atomic_basis(vectors, species, edge_index))
        rho = [(AA * c).sum(-1) for c in self.density_couplings(species)]
        emb = self.embedding_fn
        e_mb = rho[0] if emb is None else emb(torch.stack(rho, dim=-1), species)
        e = self.E0[species] + e_mb
        return self.add_pair_energies(e, vectors, species, edge_index, self.pair_coefficients)

    def add_pair_energies(self, e: torch.Tensor, vectors: torch.Tensor, species: torch.Tensor,
                          edge_index: torch.Tensor, c_pair: torch.Tensor) -> torch.Tensor:
        """e + Σ_j c_{z_i z_j}·V(r_ij) [+ ½ Σ_j V_ZBL(r_ij)] with pair coefficients ``c_pair`` [NZ, NZ, n_pair]."""
        if self.n_pair > 0 and vectors.shape[0] > 0:
            i, j = edge_index[0], edge_index[1]
            V = self.pair_features(vectors, species, edge_index)
            e = e + pool((V * c_pair[species[i], species[j]]).sum(-1), i, species.shape[0])
        if self.zbl is not None:
            e = e + self.baseline_node_energies(vectors, species, edge_index)
        return e

    # ---- the hand adjoint (the derivative driver's ``analytic_forward``) ----

    def site_terms(self, vectors: torch.Tensor, i: torch.Tensor, zi: torch.Tensor, zj: torch.Tensor,
                   species: torch.Tensor, need_grad: bool) -> Tuple[torch.Tensor, torch.Tensor]:
        """Site energies of the atoms ``species`` (centres i index them) and ∂E/∂r_e [3, E] of their edges:
        ∂E/∂r_e = Σ_a (∂E/∂A_{i,a}) ∂φ_a(r_e)/∂r_e with ∂E/∂A from the leave-one-out products at c_eff = Σ_p F'_p
        c_p and ∂φ/∂r from the analytic radials and harmonics (the per-edge features stay feature-major so every
        gather is a row copy)."""
        n_atoms = species.shape[0]
        phi, saved = self.one_particle_with_grad(vectors, zi, zj)
        A = pool(phi.t().contiguous(), i, n_atoms)  # a strided source takes a slow scatter path
        AA = self.product(A)
        c_aa = self.density_couplings(species)
        F, dF = self.readout(AA, c_aa, species)
        e = self.E0[species] + F
        g_vec = torch.zeros((3, vectors.shape[0]), dtype=vectors.dtype, device=vectors.device)
        if need_grad:
            c_eff = c_aa[0]  # ∂E/∂AA = Σ_p F'_p c_p (C-transposed): the linear adjoint with these coefficients
            if dF is not None:
                c_eff = dF[:, :1] * c_aa[0]
                for p in range(1, self.densities):
                    c_eff = c_eff + dF[:, p:p + 1] * c_aa[p]
            gA = self.product.grad(A, c_eff).index_select(0, i).t().contiguous()
            g_vec = self.one_particle_vjp(gA, saved)
        e_p, g_p = self.pair_site_terms(saved[1], saved[0], i, zi, zj, n_atoms, need_grad, self.pair_coefficients)
        return e + e_p, g_vec + g_p

    def pair_site_terms(self, r: torch.Tensor, u: torch.Tensor, i: torch.Tensor, zi: torch.Tensor, zj: torch.Tensor,
                        n_atoms: int, need_grad: bool,
                        c_pair: Optional[torch.Tensor] = None) -> Tuple[torch.Tensor, torch.Tensor]:
        """Site energies Σ_j c_{z_i z_j}·V(r_ij) [+ ½ Σ_j V_ZBL(r_ij)] and their per-edge ∂/∂r_e [3, E] (``r`` =
        |r_e|, ``u`` [3, E] = r̂_e; ``c_pair`` [NZ, NZ, n_pair], default this model's): the pair part of every
        hand-adjoint evaluator (analytic, triton), differentiable in a given ``c_pair``."""
        e = torch.zeros(n_atoms, dtype=r.dtype, device=r.device)
        g_vec = torch.zeros((3, r.shape[0]), dtype=r.dtype, device=r.device)
        if self.n_pair > 0 and r.shape[0] > 0:
            with torch.no_grad():
                V, dV = self.pair.with_grad(r, zi, zj)  # [n_pair, E]
            # c_pair None (other backends' callers): this model's, without a graph
            c = (self.pair_coefficients.detach() if c_pair is None else c_pair)[zi, zj]  # [E, n_pair]
            e = e + pool((V * c.t()).sum(0), i, n_atoms)
            if need_grad:
                g_vec = g_vec + u * (dV * c.t()).sum(0)
        if self.zbl is not None and r.shape[0] > 0:
            ez, gz = self.baseline_site_terms(r, u, i, zi, zj, n_atoms)
            e = e + ez
            g_vec = g_vec + gz
        return e, g_vec

    # ---- the one-particle basis φ: fixed, or with the learnable radials (readout/radials.py) ----

    def one_particle_with_grad(self, vectors: torch.Tensor, zi: torch.Tensor,
                               zj: torch.Tensor) -> Tuple[torch.Tensor, List[torch.Tensor]]:
        """φ [n_a, E] and what ``one_particle_vjp`` needs (``EdgeEmbedding.with_grad`` or the learned radials'),
        the saved list starting [u, r, …]."""
        emb = self.embedding
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
        return self.embedding.vjp(g, saved) if radials is None else radials.vjp(g, saved)

    @torch.jit.unused
    def compiled_forward(self, **compile_kwargs):
        """``forward`` (eval mode) with the hand adjoint compiled by ``torch.compile`` (``model.compiled``)."""
        return compiled_forward(self, **compile_kwargs)

    # ---- readout changes (warm starts, training) ----

    @torch.jit.unused
    def with_readout(self, densities: int = LINEAR_DEFAULTS.densities,
                     embedding: Optional[str] = LINEAR_DEFAULTS.embedding, fs_parameters=None,
                     learnable_radials: bool = LINEAR_DEFAULTS.learnable_radials, learnable_fs: bool = False,
                     mlp_hidden: int = 16, seed: int = 0) -> "ACEModel":
        """A copy on the same basis (config, E0, basis scale, prior description, metadata) with another readout:
        density 1 and the pair part copied from this model's, the other densities zero, radials at the identity,
        F as given.  No committee is carried over (it belongs to this readout)."""
        check_readout(densities, embedding, fs_parameters, learnable_radials, learnable_fs,
                      bool(self.config.pure or self.config.pure2b))
        n_l, n_poly = self.embedding.max_l + 1, self.embedding.radials.n_poly
        check_model_size(self.nz, self.n_b, self.n_pair, densities, embedding, mlp_width(embedding, mlp_hidden),
                         self.nz ** 2 * n_poly * n_l * n_poly if learnable_radials else 0)
        new = copy.deepcopy(self)
        dev, dt = self.coefficients.device, self.coefficients.dtype
        c = self.coefficients.detach()
        new.densities, new.embedding_name = densities, embedding
        coefficients = torch.zeros(densities * self.n_manybody + self.nz ** 2 * self.n_pair, dtype=dt, device=dev)
        coefficients[: self.n_manybody] = c[: self.n_manybody]
        coefficients[densities * self.n_manybody:] = c[self.densities * self.n_manybody:]
        new.coefficients = nn.Parameter(coefficients)
        new.committee = None
        emb = make_embedding(embedding, self.nz, densities, fs_parameters, learnable_fs, mlp_hidden, seed)
        new.embedding_fn = None if emb is None else emb.to(device=dev, dtype=dt)
        new.radials = LearnableRadials(self.embedding, self.nz).to(device=dev, dtype=dt) if learnable_radials \
            else None
        new.init_driver()
        return new.train(self.training)

    @torch.jit.unused
    def linear_model(self) -> "ACEModel":
        """The linear model of density 1 and the pair part on fixed radials (this model's values when F = ρ_1
        and the radials are at the identity)."""
        return self.with_readout()

    @torch.jit.unused
    def randomize_densities(self, scale: float, seed: int = 0, first: int = 1) -> None:
        """Densities ``first`` … P − 1 ← N(0, scale²) (seeded); density 0 and the rest are left alone."""
        g = torch.Generator().manual_seed(int(seed))
        c = torch.randn(self.density_coefficients[first:].shape, generator=g, dtype=torch.float64) * float(scale)
        with torch.no_grad():
            self.density_coefficients[first:] = c.to(self.coefficients)

    @torch.jit.unused
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
            dc = self.density_coefficients
            c = dc[0].clone()
            dc[1:] = float(kappa) * c
            dc[0] = c * (1.0 - float(kappa) * slope.to(c)).unsqueeze(1)

    def extra_repr(self) -> str:
        c = self.config
        readout = "" if self.capabilities.rows else (f", densities={self.densities}, embedding={self.embedding_name}, "
                                                     f"learnable_radials={self.radials is not None}")
        return (f"elements={c.elements}, order={c.order}, totaldegree={c.totaldegree}, wL={c.wL}, "
                f"rcut={self.rcut:.4g}, basis_size={self.basis_size} (n_b={self.n_b} per element, "
                f"n_pair={self.n_pair} per pair)" + readout + (", ZBL baseline" if c.zbl else ""))
