"""Export a linear or nonlinear ACE model as a metatomic ``AtomisticModel`` (LAMMPS ``pair_style metatomic``,
i-PI, ASE).

metatomic (metatensor's atomistic-model interface) hands the model a list of ``System`` objects: atomic
types (= atomic numbers), positions, cell, pbc and the neighbour lists the model asked for.  We ask for
one full, strict list with cutoff ``rcut``; its samples are (first_atom, second_atom, cell_shift_a/b/c) and
its values the pair vectors r_ij = x_j − x_i + S·cell, the same convention as torchace's edges
(docs/conventions.md), so the site energies are exactly ``ACEModel.node_energies(r, species, edges)``:

    E_i = E0(z_i) + c_{z_i}·B_i + Σ_j c_{z_i z_j}·V(r_ij) [+ ½ Σ_j V_ZBL(r_ij)]        (ACEpotentials.jl §II)

and for a nonlinear readout its ``node_energies`` (E0 + F(ρ_1 … ρ_P) + pair [+ ZBL], docs/nonlinear.md),
compiled from the model's own code as the TorchScript export does (``torchace.io.torchscript``).

The engine differentiates the energy itself.  The pair vectors carry autograd links to the positions
and the cell (metatomic's ``register_autograd_neighbors``, done by the engines' neighbour lists), so
forces F = −∂E/∂x and the virial from the engine's strain derivative come out of the energy without any
force code here; the model never reads positions or cell directly, which also makes LAMMPS's ghost
atoms (pairs without cell shifts) work.

Outputs: ``energy`` (per system or per atom; ``selected_atoms`` restricts which site energies count,
as LAMMPS asks for its local atoms only) and, for a linear model with a committee (Bayesian fit,
``model.committee`` [n, K]), ``energy_ensemble`` (one property per member: the energy with that member's
coefficients) and ``energy_uncertainty`` (the members' sample standard deviation).  The committee path
builds the per-site features [B_i | Σ_j V(r_ij) per neighbour element] once and contracts them with all
members; it is evaluated only when an engine asks for it.

Requires ``metatomic-torch`` (``pip install "torchace[metatomic]"``); imported lazily by
``torchace.export(model, path, format="metatomic")``.
"""
# no ``from __future__ import annotations``: metatomic checks the real annotation types of ``forward``
import json
import os
from typing import Dict, List, Optional

import torch

ENSEMBLE = "energy_ensemble"
UNCERTAINTY = "energy_uncertainty"


try:
    from metatensor.torch import Labels, TensorBlock, TensorMap
    from metatomic.torch import (AtomisticModel, ModelCapabilities, ModelMetadata, ModelOutput,
                                 NeighborListOptions, System)
except ImportError as exc:  # optional dependency; torchace.export imports this module only on demand
    raise ImportError("export format 'metatomic' needs the metatomic-torch package: "
                      "pip install 'torchace[metatomic]'") from exc


class MetatomicACE(torch.nn.Module):
    """metatomic ``ModelInterface`` around an evaluator with ``node_energies(vectors, species, edge_index)``: an
    ``ACEModel`` with any readout (see the module docstring).  ``committee``
    (linear models only): the members' coefficients [n, basis_size], or None (no ensemble outputs; the
    committee code is then not compiled)."""

    def __init__(self, model, numbers: List[int], committee: Optional[torch.Tensor]):
        super().__init__()
        self.ace = model
        self.nz = int(model.nz)
        self.n_b = int(model.n_b)
        self.n_pair = int(model.n_pair)
        self.n_manybody = self.nz * self.n_b
        self.nl = NeighborListOptions(cutoff=float(model.rcut), full_list=True, strict=True)
        numbers = [int(z) for z in numbers]
        # atomic number -> element index (-1: not in the model; metatomic rejects such types first)
        lookup = torch.full((max(numbers) + 1,), -1, dtype=torch.long)
        lookup[torch.tensor(numbers)] = torch.arange(len(numbers))
        self.register_buffer("species_of_type", lookup)
        self.register_buffer("committee", None if committee is None else committee.detach().clone())

    def requested_neighbor_lists(self) -> List[NeighborListOptions]:
        return [self.nl]

    def _site_features(self, vectors: torch.Tensor, species: torch.Tensor, edge_index: torch.Tensor):
        """B_i [N, n_b] and the pair sums P_i [N, NZ, n_pair] (Σ over neighbours j of element s)."""
        n = species.shape[0]
        B = self.ace.site_basis(self.ace.atomic_basis(vectors, species, edge_index))
        P = torch.zeros((n * self.nz, self.n_pair), dtype=vectors.dtype, device=vectors.device)
        if self.n_pair > 0 and vectors.shape[0] > 0:
            V = self.ace.pair_features(vectors, species, edge_index)
            P = P.index_add(0, edge_index[0] * self.nz + species[edge_index[1]], V)
        return B, P.view(n, self.nz, self.n_pair)

    def _committee_site_energies(self, vectors: torch.Tensor, species: torch.Tensor,
                                 edge_index: torch.Tensor) -> torch.Tensor:
        """E_i for every committee member, [N, n_members]."""
        B, P = self._site_features(vectors, species, edge_index)
        committee = self.committee
        assert committee is not None
        m = committee.shape[0]
        c_mb = committee[:, : self.n_manybody].reshape(m, self.nz, self.n_b)[:, species]  # [m, N, n_b]
        e = torch.einsum("nb,mnb->nm", B, c_mb)
        if self.n_pair > 0:
            c_p = committee[:, self.n_manybody:].reshape(m, self.nz, self.nz, self.n_pair)[:, species]
            e = e + torch.einsum("nsp,mnsp->nm", P, c_p)
        base = self.ace.E0[species] + self.ace.baseline_node_energies(vectors, species, edge_index)
        return e + base.unsqueeze(1)

    def forward(self, systems: List[System], outputs: Dict[str, ModelOutput],
                selected_atoms: Optional[Labels] = None) -> Dict[str, TensorMap]:
        results: Dict[str, TensorMap] = {}
        if len(outputs) == 0:
            return results
        device = systems[0].positions.device
        dtype = systems[0].positions.dtype
        # all systems as one flat batch: atoms concatenated, edges offset
        species_l: List[torch.Tensor] = []
        vectors_l: List[torch.Tensor] = []
        edges_l: List[torch.Tensor] = []
        system_l: List[torch.Tensor] = []
        atom_l: List[torch.Tensor] = []
        offset = 0
        for k, system in enumerate(systems):
            n = len(system)
            nl = system.get_neighbor_list(self.nl)
            first = nl.samples.column("first_atom").to(torch.long)
            second = nl.samples.column("second_atom").to(torch.long)
            species_l.append(self.species_of_type[system.types.to(torch.long)])
            vectors_l.append(nl.values.reshape(-1, 3))
            edges_l.append(torch.stack([first, second]) + offset)
            system_l.append(torch.full((n,), k, dtype=torch.long, device=device))
            atom_l.append(torch.arange(n, dtype=torch.long, device=device))
            offset += n
        species = torch.cat(species_l)
        vectors = torch.cat(vectors_l)
        edge_index = torch.cat(edges_l, dim=1)
        sys_of_atom = torch.cat(system_l)
        atom_in_sys = torch.cat(atom_l)
        keep = torch.ones(offset, dtype=torch.bool, device=device)
        if selected_atoms is not None:
            starts = torch.tensor([0] + [len(s) for s in systems], dtype=torch.long, device=device).cumsum(0)
            sel = selected_atoms.values.to(torch.long)
            keep = torch.zeros(offset, dtype=torch.bool, device=device)
            keep[starts[sel[:, 0]] + sel[:, 1]] = True

        if "energy" in outputs:
            e = self.ace.node_energies(vectors, species, edge_index).unsqueeze(1)
            results["energy"] = self._pack(e, outputs["energy"], keep, sys_of_atom, atom_in_sys,
                                           len(systems), "energy", dtype)
        if "energy_ensemble" in outputs or "energy_uncertainty" in outputs:
            if self.committee is None:  # static in TorchScript: without a committee nothing below is compiled
                raise ValueError("this torchace model has no committee: outputs 'energy_ensemble' and "
                                 "'energy_uncertainty' are not available")
            else:
                self._committee_outputs(results, outputs, vectors, species, edge_index, keep, sys_of_atom,
                                        atom_in_sys, len(systems), dtype)
        return results

    def _committee_outputs(self, results: Dict[str, TensorMap], outputs: Dict[str, ModelOutput],
                           vectors: torch.Tensor, species: torch.Tensor, edge_index: torch.Tensor, keep: torch.Tensor,
                           sys_of_atom: torch.Tensor, atom_in_sys: torch.Tensor, n_systems: int,
                           dtype: torch.dtype) -> None:
        """``energy_ensemble`` / ``energy_uncertainty`` into ``results``."""
        e_m = self._committee_site_energies(vectors, species, edge_index)
        if "energy_ensemble" in outputs:
            results["energy_ensemble"] = self._pack(e_m, outputs["energy_ensemble"], keep, sys_of_atom,
                                                    atom_in_sys, n_systems, "energy", dtype)
        if "energy_uncertainty" in outputs:
            per_atom = outputs["energy_uncertainty"].sample_kind == "atom"
            if per_atom:
                u = e_m.std(dim=1, keepdim=True)
            else:
                tot = torch.zeros((n_systems, e_m.shape[1]), dtype=dtype, device=e_m.device)
                tot = tot.index_add(0, sys_of_atom[keep], e_m[keep])
                u = tot.std(dim=1, keepdim=True)
            results["energy_uncertainty"] = self._pack(u, outputs["energy_uncertainty"], keep, sys_of_atom,
                                                       atom_in_sys, n_systems, "energy", dtype,
                                                       already_summed=not per_atom)

    def _pack(self, values: torch.Tensor, output: ModelOutput, keep: torch.Tensor, sys_of_atom: torch.Tensor,
              atom_in_sys: torch.Tensor, n_systems: int, name: str, dtype: torch.dtype,
              already_summed: bool = False) -> TensorMap:
        """Site values [N, p] as a metatensor TensorMap: per atom (selected atoms) or summed per system."""
        device = values.device
        p = values.shape[1]
        props = Labels([name], torch.arange(p, dtype=torch.int32, device=device).reshape(-1, 1))
        if output.sample_kind == "atom":
            samples = Labels(["system", "atom"],
                             torch.stack([sys_of_atom[keep], atom_in_sys[keep]], dim=1).to(torch.int32))
            vals = values[keep]
        else:
            if already_summed:
                vals = values
            else:
                vals = torch.zeros((n_systems, p), dtype=dtype, device=device).index_add(
                    0, sys_of_atom[keep], values[keep])
            samples = Labels(["system"], torch.arange(n_systems, dtype=torch.int32, device=device).reshape(-1, 1))
        block = TensorBlock(values=vals, samples=samples, components=[], properties=props)
        return TensorMap(Labels(["_"], torch.tensor([[0]], dtype=torch.int32, device=device)), [block])


def atomistic_model(model, *, dtype: Optional[torch.dtype] = None, name: str = "", description: str = "",
                    authors: Optional[List[str]] = None, devices: Optional[List[str]] = None,
                    metadata: Optional[dict] = None) -> AtomisticModel:
    """A metatomic ``AtomisticModel`` wrapping a copy of ``model`` (eval mode, ``dtype`` default: the
    model's).  ``devices``: supported devices in order of preference (default: cuda if available here,
    then cpu).  ``metadata``: JSON-serialisable user entries, stored as ``ModelMetadata.extra["user"]``."""
    from ..keys import VERSION as __version__
    from ..model.contract import capabilities
    from .torchscript import export_copy, export_metadata

    m = export_copy(model)  # a nonlinear model's committee is not exported (a warning): energy only
    if dtype is not None:
        m = m.to(dtype)
    dt = m.coefficients.dtype
    if dt not in (torch.float32, torch.float64):
        raise ValueError(f"metatomic export needs float32 or float64, got {dt}")
    comm = getattr(m, "committee", None)
    m.committee = None  # carried by the wrapper (as the dtype of the model), not by ACEModel
    nonlinear = capabilities(m).nonlinear
    kind = "nonlinear" if nonlinear else "linear"
    module = MetatomicACE(m, m.config.numbers, None if comm is None else comm.detach().to(dt)).eval()
    outputs = {"energy": ModelOutput(unit="eV", sample_kind="atom",
                                     description=f"{kind} ACE energy (site energies per atom)")}
    if comm is not None:
        outputs[ENSEMBLE] = ModelOutput(unit="eV", sample_kind="atom",
                                        description=f"energies of the {int(comm.shape[0])} committee members")
        outputs[UNCERTAINTY] = ModelOutput(unit="eV", sample_kind="atom",
                                           description="committee standard deviation of the energy")
    if devices is None:
        devices = (["cuda"] if torch.cuda.is_available() else []) + ["cpu"]
    caps = ModelCapabilities(outputs=outputs, atomic_types=[int(z) for z in m.config.numbers],
                             interaction_range=float(m.rcut), length_unit="angstrom",
                             supported_devices=list(devices), dtype=str(dt).replace("torch.", ""))
    meta = export_metadata(m)
    extra = {"torchace_version": str(__version__), "torchace_config": json.dumps(meta["config"]),
             "torchace_E0": json.dumps(meta["E0"]), "basis_size": str(meta["basis_size"]),
             "committee_size": str(0 if comm is None else int(comm.shape[0]))}
    if nonlinear:
        extra["torchace_nonlinear"] = json.dumps(meta["nonlinear"])
    if metadata:
        try:
            extra["user"] = json.dumps(metadata, allow_nan=False)
        except (TypeError, ValueError) as exc:
            raise ValueError(f"cannot export: metadata is not plain JSON: {exc}") from None
    cfg = m.config
    meta_obj = ModelMetadata(
        name=name or f"torchace {kind} ACE ({'-'.join(cfg.elements)}, order {cfg.order})",
        description=description or (f"{kind} Atomic Cluster Expansion (ACEpotentials.jl ace1_model basis), "
                                    f"{m.extra_repr()}"),
        authors=list(authors or []),
        references={"architecture": ["Drautz, Phys. Rev. B 99, 014104 (2019)",
                                     "Witt et al., J. Chem. Phys. 159, 164101 (2023)"]},
        extra=extra)
    return AtomisticModel(module, meta_obj, caps)


def export_metatomic(model, path: str, *, dtype: Optional[torch.dtype] = None, **kwargs) -> str:
    """Write ``model`` as a metatomic ``AtomisticModel`` file (``AtomisticModel.save``), atomically."""
    from ..atomic import check_output, write_output
    from .torchscript import ARCHIVE, quiet_jit

    overwrite = kwargs.pop("overwrite", False)
    # an existing torchace archive is replaced (re-export); training data, a model file or another program's
    # archive only with overwrite=True (torchace.atomic, the output rule)
    check_output(os.fspath(path), ARCHIVE, overwrite)
    am = atomistic_model(model, dtype=dtype, **kwargs)

    def write(tmp: str) -> None:
        with quiet_jit():
            am.save(tmp)

    write_output(path, ARCHIVE, write, ".pt", overwrite)
    return path
