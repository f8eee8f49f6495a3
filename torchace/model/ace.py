"""The linear ACE model: E_i = E0(z_i) + c_{z_i}·B_i + Σ_j c_{z_i z_j}·V(r_ij) [+ ½ Σ_j V_ZBL(r_ij)], E = Σ_i E_i.

ACEpotentials.jl paper §II (eq. for the site energy with a pair potential).  Forces and virials are
derivatives of the total energy through one symmetric-strain pass: positions and cell are mapped by
(I + ε) with ε symmetric, F = -∂E/∂x and W = -∂E/∂ε = -V·σ (ASE stress σ = -W/V).

Column order of ``coefficients`` (and of the design-matrix rows): many-body blocks of ``n_b`` per
centre element (elements in model order), then pair blocks of ``n_pair`` per ordered element pair
(centre, neighbour).  The optional ZBL baseline (``config.zbl``, torchace.repulsion) has no coefficients.
"""
from __future__ import annotations

import dataclasses
from typing import Dict, List, Optional, Tuple

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
from .state import ModelState
from .strain import autograd_outputs, edge_gradient_outputs, strained_geometry


class ACEModel(ModelState, nn.Module):
    __jit_unused_properties__ = ["elements"]
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
        # ``forward`` in eval mode without a graph: hand-written adjoints (``analytic_forward``); False: always
        # the autograd definition (``reference_forward``).  The backends call either one explicitly.
        self.analytic = True
        # the analytic path handles at most this many edges at once (centre atoms in chunks): bounds the
        # per-edge temporaries (~(3·n_a + 2·max_n + n_y)·8 bytes per edge) for very large systems
        self.edge_chunk = 1 << 22
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
        if self.n_pair > 0 and vectors.shape[0] > 0:
            i, j = edge_index[0], edge_index[1]
            V = self.pair_features(vectors, species, edge_index)
            c_pair = self.coefficients[self.n_manybody:].view(self.nz, self.nz, self.n_pair)
            e = e + pool((V * c_pair[species[i], species[j]]).sum(-1), i, species.shape[0])
        if self.zbl is not None:
            e = e + self.baseline_node_energies(vectors, species, edge_index)
        return e

    def baseline_node_energies(self, vectors: torch.Tensor, species: torch.Tensor,
                               edge_index: torch.Tensor) -> torch.Tensor:
        """Site energies of the coefficient-free baseline, ½ Σ_j V_ZBL(r_ij) (zeros without a baseline)."""
        e = torch.zeros(species.shape[0], dtype=vectors.dtype, device=vectors.device)
        if self.zbl is not None and vectors.shape[0] > 0:
            i, j = edge_index[0], edge_index[1]
            r = torch.linalg.norm(vectors, dim=-1)
            e = pool(0.5 * self.zbl(r, species[i], species[j]), i, species.shape[0])
        return e

    def forward(self, positions: torch.Tensor, species: torch.Tensor, batch: torch.Tensor,
                edge_index: torch.Tensor, unit_shifts: torch.Tensor, cell: torch.Tensor, n_structures: int,
                compute_forces: bool = True, compute_virials: bool = True) -> Dict[str, torch.Tensor]:
        """Energies, site energies, forces and virials (the TorchScript export's entry point).

        The rule, not a heuristic: in eval mode, when no graph through the outputs can be needed (positions
        and cell do not require grad), the hand-adjoint ``analytic_forward``; otherwise (training, or
        derivatives of forces wanted) the autograd definition ``reference_forward``.  ``torchace.backends``
        names and selects these and the fused kernel explicitly."""
        if self.analytic and not self.training and not positions.requires_grad and not cell.requires_grad:
            return self.analytic_forward(positions, species, batch, edge_index, unit_shifts, cell, n_structures,
                                         compute_forces, compute_virials)
        return self.reference_forward(positions, species, batch, edge_index, unit_shifts, cell, n_structures,
                                      compute_forces, compute_virials)

    def reference_forward(self, positions: torch.Tensor, species: torch.Tensor, batch: torch.Tensor,
                          edge_index: torch.Tensor, unit_shifts: torch.Tensor, cell: torch.Tensor, n_structures: int,
                          compute_forces: bool = True, compute_virials: bool = True) -> Dict[str, torch.Tensor]:
        """The readable definition: E from ``node_energies``, F = −∂E/∂x and W = −∂E/∂ε by autograd (in
        training mode with ``create_graph``, so force losses are differentiable in the coefficients)."""
        return self._autograd(positions, species, batch, edge_index, unit_shifts, cell, n_structures,
                              compute_forces, compute_virials, False)

    def baseline(self, positions: torch.Tensor, species: torch.Tensor, batch: torch.Tensor,
                 edge_index: torch.Tensor, unit_shifts: torch.Tensor, cell: torch.Tensor,
                 n_structures: int) -> Dict[str, torch.Tensor]:
        """Energy, forces and virial of the baseline alone (no E0, no basis); zeros without a baseline."""
        return self._autograd(positions, species, batch, edge_index, unit_shifts, cell, n_structures,
                              True, True, True)

    def _autograd(self, positions: torch.Tensor, species: torch.Tensor, batch: torch.Tensor,
                  edge_index: torch.Tensor, unit_shifts: torch.Tensor, cell: torch.Tensor, n_structures: int,
                  compute_forces: bool, compute_virials: bool, baseline_only: bool) -> Dict[str, torch.Tensor]:
        positions, strain, pos, cel = strained_geometry(positions, cell, batch, n_structures, compute_forces,
                                                        compute_virials)
        vectors = edge_vectors(pos, edge_index, unit_shifts, cel, batch)
        if baseline_only:
            e_node = self.baseline_node_energies(vectors, species, edge_index)
        else:
            e_node = self.node_energies(vectors, species, edge_index)
        energy = torch.zeros(n_structures, dtype=e_node.dtype, device=e_node.device).index_add_(0, batch, e_node)
        return autograd_outputs(energy, e_node, positions, strain, compute_forces, compute_virials, self.training)

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
        state = {"site": torch.compile(self._site_terms, dynamic=True, **compile_kwargs)}

        def forward(positions: torch.Tensor, species: torch.Tensor, batch: torch.Tensor, edge_index: torch.Tensor,
                    unit_shifts: torch.Tensor, cell: torch.Tensor, n_structures: int, compute_forces: bool = True,
                    compute_virials: bool = True) -> Dict[str, torch.Tensor]:
            if self.training:
                raise RuntimeError("compiled_forward is for eval mode (call model.eval())")
            positions, cell = positions.detach(), cell.detach()
            vectors, ei = self._analytic_edges(positions, edge_index, unit_shifts, cell, batch)
            if vectors.shape[0] > self.edge_chunk:  # memory-bounded chunks: the eager path
                return self.analytic_forward(positions, species, batch, edge_index, unit_shifts, cell, n_structures,
                                             compute_forces, compute_virials)
            i, j = ei[0], ei[1]
            args = (vectors, i, species[i], species[j], species, compute_forces or compute_virials)
            try:
                e, g = state["site"](*args)
            except Exception as err:  # noqa: BLE001 — a compiler failure must not stop an MD run
                if state["site"] is self._site_terms:
                    raise
                import warnings

                warnings.warn(f"torch.compile failed ({type(err).__name__}: {str(err).strip()[:200]}); "
                              "using the eager analytic path", RuntimeWarning, stacklevel=2)
                state["site"] = self._site_terms
                e, g = self._site_terms(*args)
            return edge_gradient_outputs(e, g, vectors, ei, positions, batch, n_structures, compute_forces,
                                          compute_virials)

        return forward

    def analytic_forward(self, positions: torch.Tensor, species: torch.Tensor, batch: torch.Tensor,
                         edge_index: torch.Tensor, unit_shifts: torch.Tensor, cell: torch.Tensor, n_structures: int,
                         compute_forces: bool = True, compute_virials: bool = True) -> Dict[str, torch.Tensor]:
        """Energy, forces and virial with hand-written adjoints (eval mode; forces not differentiable).

        The same quantities as the autograd path: ∂E/∂r_e = Σ_a (∂E/∂A_{i,a}) ∂φ_a(r_e)/∂r_e with
        ∂E/∂A from the leave-one-out products and ∂φ/∂r from the analytic radials and harmonics
        (``EdgeEmbedding.with_grad``); the per-edge features stay feature-major so every gather is a row
        copy.  F_i = Σ_{e: i(e)=i} ∂E/∂r_e - Σ_{e: j(e)=i} ∂E/∂r_e, W = -½ Σ_e (r_e ⊗ g_e + g_e ⊗ r_e).
        """
        n_atoms = species.shape[0]
        vectors, edge_index = self._analytic_edges(positions, edge_index, unit_shifts, cell, batch)
        i, j = edge_index[0], edge_index[1]
        need_grad = compute_forces or compute_virials
        n_edges = vectors.shape[0]
        if n_edges <= self.edge_chunk:
            e, g_vec = self._site_terms(vectors, i, species[i], species[j], species, need_grad)
        else:
            # memory-bounded: centre atoms in chunks of ~edge_chunk edges (each atom's edges in one chunk)
            n_chunks = (n_edges + self.edge_chunk - 1) // self.edge_chunk
            step = (n_atoms + n_chunks - 1) // n_chunks
            e_parts: List[torch.Tensor] = []
            g_vec = torch.zeros((3, n_edges), dtype=vectors.dtype, device=vectors.device)
            for a0 in range(0, n_atoms, step):
                a1 = min(a0 + step, n_atoms)
                sel = torch.nonzero((i >= a0) & (i < a1)).squeeze(1)
                ii = i.index_select(0, sel)
                e_c, g_c = self._site_terms(vectors.index_select(0, sel), ii - a0, species.index_select(0, ii),
                                            species.index_select(0, j.index_select(0, sel)), species[a0:a1], need_grad)
                e_parts.append(e_c)
                g_vec.index_copy_(1, sel, g_c)
            e = torch.cat(e_parts)
        return edge_gradient_outputs(e, g_vec, vectors, edge_index, positions, batch, n_structures, compute_forces,
                                      compute_virials)

    def _analytic_edges(self, positions: torch.Tensor, edge_index: torch.Tensor, unit_shifts: torch.Tensor,
                        cell: torch.Tensor, batch: torch.Tensor) -> Tuple[torch.Tensor, torch.Tensor]:
        """Edge vectors and indices, without the pairs beyond rcut (skin lists: they contribute exactly zero)."""
        vectors = edge_vectors(positions, edge_index, unit_shifts, cell, batch)
        inside = (vectors * vectors).sum(-1) < self.rcut * self.rcut
        if not bool(inside.all()):
            keep = torch.nonzero(inside).squeeze(1)
            vectors = vectors.index_select(0, keep)
            edge_index = edge_index.index_select(1, keep)
        return vectors, edge_index

    def _site_terms(self, vectors: torch.Tensor, i: torch.Tensor, zi: torch.Tensor, zj: torch.Tensor,
                    species: torch.Tensor, need_grad: bool) -> Tuple[torch.Tensor, torch.Tensor]:
        """Site energies of the atoms ``species`` (centres i index them) and ∂E/∂r_e [3, E] of their edges."""
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
                        n_atoms: int, need_grad: bool) -> Tuple[torch.Tensor, torch.Tensor]:
        """Site energies Σ_j c_{z_i z_j}·V(r_ij) [+ ½ Σ_j V_ZBL(r_ij)] and their per-edge ∂/∂r_e [3, E] (``r`` =
        |r_e|, ``u`` [3, E] = r̂_e): the pair part of every hand-adjoint evaluator (analytic, triton)."""
        e = torch.zeros(n_atoms, dtype=r.dtype, device=r.device)
        g_vec = torch.zeros((3, r.shape[0]), dtype=r.dtype, device=r.device)
        if self.n_pair > 0 and r.shape[0] > 0:
            with torch.no_grad():
                V, dV = self.pair.with_grad(r, zi, zj)  # [n_pair, E]
            c_pair = self.coefficients[self.n_manybody:].view(self.nz, self.nz, self.n_pair)[zi, zj]  # [E, n_pair]
            e = e + pool((V * c_pair.t()).sum(0), i, n_atoms)
            if need_grad:
                with torch.no_grad():
                    g_vec = g_vec + u * (dV * c_pair.t()).sum(0)
        if self.zbl is not None and r.shape[0] > 0:
            ez, gz = self.baseline_site_terms(r, u, i, zi, zj, n_atoms)
            e = e + ez
            g_vec = g_vec + gz
        return e, g_vec

    def baseline_site_terms(self, r: torch.Tensor, u: torch.Tensor, i: torch.Tensor, zi: torch.Tensor,
                            zj: torch.Tensor, n_atoms: int) -> Tuple[torch.Tensor, torch.Tensor]:
        """Site energies ½ Σ_j E_ZBL(r_ij) and per-edge ∂/∂r_e [3, E] of the ZBL baseline (``r`` = |r_e|,
        ``u`` [3, E] = r̂_e); used by the analytic path and by backends that compute the basis elsewhere."""
        zbl = self.zbl
        if zbl is None:
            return (torch.zeros(n_atoms, dtype=r.dtype, device=r.device),
                    torch.zeros((3, r.shape[0]), dtype=r.dtype, device=r.device))
        with torch.no_grad():
            ez, dz = zbl.with_grad(r, zi, zj)
            g = u * (0.5 * dz)
        return pool(0.5 * ez, i, n_atoms), g

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
