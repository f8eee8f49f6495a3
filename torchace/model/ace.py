"""The linear ACE model: E_i = E0(z_i) + c_{z_i}·B_i + Σ_j c_{z_i z_j}·V(r_ij) [+ ½ Σ_j V_ZBL(r_ij)], E = Σ_i E_i.

ACEpotentials.jl paper §II (eq. for the site energy with a pair potential).  The model implements the energy
model contract (``contract.EnergyModel``): ``node_energies`` (the autograd definition) and the hand adjoint
``site_terms``; forces F = -∂E/∂x and virials W = -∂E/∂ε = -V·σ (ASE stress σ = -W/V) come from the one
derivative driver (``derivatives``), which also picks between the two.

Column order of ``coefficients`` (and of the design-matrix rows): many-body blocks of ``n_b`` per
centre element (elements in model order), then pair blocks of ``n_pair`` per ordered element pair
(centre, neighbour).  The optional ZBL baseline (``config.zbl``, torchace.repulsion) has no coefficients.
"""
from __future__ import annotations

import dataclasses
from typing import Dict, Optional, Tuple

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
from .contract import LINEAR, Capabilities, EnergyModel
from .derivatives import inside_cutoff
from .state import ModelState
from .strain import edge_gradient_outputs

# the linear model: rows, committees, every backend, hand adjoint (not differentiable in the coefficients:
# training takes the autograd path), scriptable as it is
LINEAR_CAPABILITIES = Capabilities(readout=LINEAR, rows=True, committee=True, hand_adjoint=True, scriptable=True,
                                   backends=("reference", "analytic", "fused", "triton"))


class ACEModel(ModelState, EnergyModel):
    __jit_unused_properties__ = ["elements", "capabilities"]
    __jit_ignored_attributes__ = ["config", "spec", "nl_of_b", "prior_info", "metadata", "purification"]

    def __init__(self, config: ACEConfig, dtype: torch.dtype = torch.float64):
        super().__init__()
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
        self.basis_size = self.n_manybody + nz * nz * self.n_pair
        self.register_buffer("E0", torch.tensor(config.E0, dtype=torch.float64))
        # additive, coefficient-free baseline (None: none); fit targets have it subtracted (assembly)
        self.zbl = ZBL(config.numbers, *config.zbl_radii()) if config.zbl else None
        self.register_buffer("atomic_numbers", torch.tensor(config.numbers, dtype=torch.long))
        self.coefficients = nn.Parameter(torch.zeros(self.basis_size, dtype=torch.float64))
        # posterior samples [n, basis_size] from a Bayesian fit (uncertainties); None if not fitted so
        self.register_buffer("committee", None)
        self.prior_info = None  # JSON description of the prior the basis was rescaled/fitted with
        self.metadata = {}      # fit information carried into the model file
        self.init_driver()      # analytic (the rule's switch), edge_chunk: torchace.model.derivatives
        self.to(dtype)

    # ``model.coefficients = tensor`` copies into the parameter (shape-checked) instead of replacing it
    def __setattr__(self, name, value):
        if name == "coefficients" and "coefficients" in self._parameters and not isinstance(value, nn.Parameter):
            try:
                value = torch.as_tensor(value)
            except (TypeError, ValueError, RuntimeError):
                raise ValueError(f"coefficients must be {self.basis_size} numbers (a tensor, array or list), got "
                                 f"{type(value).__name__}") from None
            if value.shape != (self.basis_size,):
                raise ValueError(f"coefficients must have shape ({self.basis_size},), got {tuple(value.shape)}")
            if not value.is_floating_point() and value.dtype not in (torch.int32, torch.int64):
                raise ValueError(f"coefficients must be real numbers, got dtype {value.dtype}")
            if not bool(torch.isfinite(value).all()):  # one O(K) pass; NaN would make every energy NaN
                bad = torch.nonzero(~torch.isfinite(value)).flatten()[:5].tolist()
                raise ValueError(f"coefficients must be finite; non-finite at index {bad}")
            with torch.no_grad():
                self._parameters["coefficients"].copy_(value)
            return
        super().__setattr__(name, value)

    @property
    def elements(self):
        return list(self.config.elements)

    @property
    def capabilities(self) -> Capabilities:
        return LINEAR_CAPABILITIES

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
        model values must rescale the coefficients themselves."""
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
        """A [N, n_a]."""
        i, j = edge_index[0], edge_index[1]
        phi = self.embedding(vectors, species[i], species[j])
        return pool(phi, i, species.shape[0])

    def site_basis(self, A: torch.Tensor) -> torch.Tensor:
        """B [..., n_b] from A [..., n_a] (the same function for every centre element)."""
        return self.coupling(self.product(A))

    def pair_features(self, vectors: torch.Tensor, species: torch.Tensor, edge_index: torch.Tensor) -> torch.Tensor:
        r = torch.linalg.norm(vectors, dim=-1)
        return self.pair(r, species[edge_index[0]], species[edge_index[1]])

    def node_energies(self, vectors: torch.Tensor, species: torch.Tensor, edge_index: torch.Tensor) -> torch.Tensor:
        A = self.atomic_basis(vectors, species, edge_index)
        c_mb = self.coefficients[: self.n_manybody].view(self.nz, self.n_b)
        c_aa = self.coupling.transpose_apply(c_mb)  # [NZ, n_aa]: c·C once, not C·AA per atom
        AA = self.product(A)
        e = self.E0[species] + (AA * c_aa[species]).sum(-1)
        return self.add_pair_energies(e, vectors, species, edge_index, self.pair_coefficient_blocks())

    def pair_coefficient_blocks(self) -> torch.Tensor:
        """c_pair [NZ, NZ, n_pair] (a view of ``coefficients``)."""
        return self.coefficients[self.n_manybody:].view(self.nz, self.nz, self.n_pair)

    def add_pair_energies(self, e: torch.Tensor, vectors: torch.Tensor, species: torch.Tensor,
                          edge_index: torch.Tensor, c_pair: torch.Tensor) -> torch.Tensor:
        """e + Σ_j c_{z_i z_j}·V(r_ij) [+ ½ Σ_j V_ZBL(r_ij)] with pair coefficients ``c_pair`` [NZ, NZ, n_pair]
        (the pair part and baseline of every model on this basis)."""
        if self.n_pair > 0 and vectors.shape[0] > 0:
            i, j = edge_index[0], edge_index[1]
            V = self.pair_features(vectors, species, edge_index)
            e = e + pool((V * c_pair[species[i], species[j]]).sum(-1), i, species.shape[0])
        if self.zbl is not None:
            e = e + self.baseline_node_energies(vectors, species, edge_index)
        return e

    def compiled_forward(self, **compile_kwargs):
        """``forward`` (eval mode) with the analytic path compiled by ``torch.compile`` (inductor: fused
        C++/OpenMP loops on CPU, Triton kernels on CUDA) with dynamic shapes, so new atom or edge counts do
        not recompile.  The first call compiles (tens of seconds on 2 cores); Python only (not TorchScript)."""
        # torch 2.13's inductor miscompiles parallel (atomic-add) scatters into small buffers on CPU with ≥ 2
        # threads (assertion, or heap corruption that no try/except can catch): generate single-threaded C++
        # there unless the caller chooses otherwise.  Only the per-site/per-edge work is compiled; the final
        # scatters into structure energies/virials stay eager.
        if self.coefficients.device.type == "cpu":
            opts = dict(compile_kwargs.pop("options", None) or {})
            opts.setdefault("cpp.threads", 1)
            compile_kwargs["options"] = opts
        state = {"site": torch.compile(self.site_terms, dynamic=True, **compile_kwargs)}

        def forward(positions: torch.Tensor, species: torch.Tensor, batch: torch.Tensor, edge_index: torch.Tensor,
                    unit_shifts: torch.Tensor, cell: torch.Tensor, n_structures: int, compute_forces: bool = True,
                    compute_virials: bool = True) -> Dict[str, torch.Tensor]:
            if self.training:
                raise RuntimeError("compiled_forward is for eval mode (call model.eval())")
            positions, cell = positions.detach(), cell.detach()
            vectors, ei = inside_cutoff(self.edge_vectors(positions, edge_index, unit_shifts, cell, batch), edge_index,
                                        self.rcut)
            if vectors.shape[0] > self.edge_chunk:  # memory-bounded chunks: the eager path
                return self.analytic_forward(positions, species, batch, edge_index, unit_shifts, cell, n_structures,
                                             compute_forces, compute_virials)
            i, j = ei[0], ei[1]
            args = (vectors, i, species[i], species[j], species, compute_forces or compute_virials)
            try:
                e, g = state["site"](*args)
            except Exception as err:  # noqa: BLE001 — a compiler failure must not stop an MD run
                if state["site"] is self.site_terms:
                    raise
                import warnings

                warnings.warn(f"torch.compile failed ({type(err).__name__}: {str(err).strip()[:200]}); "
                              "using the eager analytic path", RuntimeWarning, stacklevel=2)
                state["site"] = self.site_terms
                e, g = self.site_terms(*args)
            return edge_gradient_outputs(e, g, vectors, ei, positions, batch, n_structures, compute_forces,
                                          compute_virials)

        return forward

    def site_terms(self, vectors: torch.Tensor, i: torch.Tensor, zi: torch.Tensor, zj: torch.Tensor,
                    species: torch.Tensor, need_grad: bool) -> Tuple[torch.Tensor, torch.Tensor]:
        """Site energies of the atoms ``species`` (centres i index them) and ∂E/∂r_e [3, E] of their edges (the
        hand adjoint: ∂E/∂r_e = Σ_a (∂E/∂A_{i,a}) ∂φ_a(r_e)/∂r_e with ∂E/∂A from the leave-one-out products and
        ∂φ/∂r from the analytic radials and harmonics, ``EdgeEmbedding.with_grad``; the per-edge features stay
        feature-major so every gather is a row copy)."""
        n_atoms = species.shape[0]
        with torch.no_grad():
            phi, saved = self.embedding.with_grad(vectors, zi, zj)
            A = pool(phi.t().contiguous(), i, n_atoms)  # a strided source takes a slow scatter path
        c_mb = self.coefficients[: self.n_manybody].view(self.nz, self.n_b)
        c_aa = self.coupling.transpose_apply(c_mb)[species]  # [N, n_aa]
        e = self.E0[species] + (self.product(A) * c_aa).sum(-1)
        g_vec = torch.zeros((3, vectors.shape[0]), dtype=vectors.dtype, device=vectors.device)
        with torch.no_grad():
            if need_grad:
                gA = self.product.grad(A, c_aa.detach())  # [N, n_a]
                g_vec = self.embedding.vjp(gA.index_select(0, i).t().contiguous(), saved)
        e_p, g_p = self.pair_site_terms(saved[1], saved[0], i, zi, zj, n_atoms, need_grad)
        return e + e_p, g_vec + g_p

    def pair_site_terms(self, r: torch.Tensor, u: torch.Tensor, i: torch.Tensor, zi: torch.Tensor, zj: torch.Tensor,
                        n_atoms: int, need_grad: bool,
                        c_pair: Optional[torch.Tensor] = None) -> Tuple[torch.Tensor, torch.Tensor]:
        """Site energies Σ_j c_{z_i z_j}·V(r_ij) [+ ½ Σ_j V_ZBL(r_ij)] and their per-edge ∂/∂r_e [3, E] (``r`` =
        |r_e|, ``u`` [3, E] = r̂_e; ``c_pair`` [NZ, NZ, n_pair], default this model's): the pair part of every
        hand-adjoint evaluator (analytic, triton, the nonlinear model's; the gradients differentiable in a given
        ``c_pair``)."""
        e = torch.zeros(n_atoms, dtype=r.dtype, device=r.device)
        g_vec = torch.zeros((3, r.shape[0]), dtype=r.dtype, device=r.device)
        if self.n_pair > 0 and r.shape[0] > 0:
            with torch.no_grad():
                V, dV = self.pair.with_grad(r, zi, zj)  # [n_pair, E]
            c = (self.pair_coefficient_blocks() if c_pair is None else c_pair)[zi, zj]  # [E, n_pair]
            e = e + pool((V * c.t()).sum(0), i, n_atoms)
            if need_grad:  # this model's own forces carry no graph (its adjoint is not differentiable)
                c_g = c.detach() if c_pair is None else c
                g_vec = g_vec + u * (dV * c_g.t()).sum(0)
        if self.zbl is not None and r.shape[0] > 0:
            ez, gz = self.baseline_site_terms(r, u, i, zi, zj, n_atoms)
            e = e + ez
            g_vec = g_vec + gz
        return e, g_vec

    def extra_repr(self) -> str:
        c = self.config
        return (f"elements={c.elements}, order={c.order}, totaldegree={c.totaldegree}, wL={c.wL}, "
                f"rcut={self.rcut:.4g}, basis_size={self.basis_size} (n_b={self.n_b} per element, "
                f"n_pair={self.n_pair} per pair)" + (", ZBL baseline" if c.zbl else ""))


def ace_model(elements, order: int, totaldegree, *, dtype: torch.dtype = torch.float64, **options) -> ACEModel:
    """Build a linear ACE model with ACEpotentials.jl v0.10 ``ace1_model`` conventions (see docs/conventions.md).

    ``options`` are the other ``ACEConfig`` fields (the one list of model fields; the fit config's ``model:``
    section and the model file's ``config`` are the same), validated like the config files:
    ``wL`` (1.5), ``rcut`` (2.5·max r0), ``r0`` (mean bond length per pair), ``E0`` (per element, 0), ``pair``
    (True), ``zbl`` (False; the ZBL baseline switched off between ``zbl_inner`` and ``zbl_outer``, Å; defaults
    r0/2 and r0 of each pair, docs/repulsion.md), ``pure2b`` (False: removes the one-neighbour self-interaction
    from every function of correlation order >= 2), ``pure`` (False: the canonical, self-interaction-free
    cluster expansion, docs/purification.md)."""
    fields = [f.name for f in dataclasses.fields(ACEConfig)][3:]
    unknown = sorted(set(options) - set(fields))
    if unknown:
        raise TypeError(f"ace_model: unknown option(s) {unknown}; the model fields are {fields} (and dtype)")
    if dtype not in (torch.float64, torch.float32):
        raise ValueError(f"ace_model: dtype must be torch.float64 or torch.float32, got {dtype!r}")
    cfg = ACEConfig.build(elements, order, totaldegree, **options)
    # inference mode by default; .train() makes forces differentiable (create_graph) for force losses
    return ACEModel(cfg, dtype=dtype).eval()
