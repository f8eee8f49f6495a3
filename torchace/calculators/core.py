"""The core every engine adapter (ASE, LAMMPS fix external, TorchSim) stands on.

- ``load_model``: a model object, or the path of a model file (``torchace.io.model_file``: data only, no code
  runs); a TorchScript archive (code) only where the engine asks for one (``backend="torchscript"``).
- ``SpeciesMap``: atomic numbers ↔ model species indices (and element symbols, LAMMPS types), with the errors the
  engines give for elements the model does not have.
- ``EngineModel``: the model as evaluated on the engine's device and dtype (``binding.BoundModel``: the caller's
  model or a copy kept in step with it) through a named backend (``torchace.backends``), with the forward
  signature of ``ACEModel.forward``.
- ``closest_pair``: the shortest edge of a list (from the fused kernel's ``closest_pair`` output when it
  measured every distance), for the engines' ``min_distance`` check.
- ``engine_stress``: σ = −W/V (``model.evaluate.stress_from_virial``, the one formula), NaN for systems not
  periodic along all three axes.

The neighbour lists (skin list, searches, the choice rule) are ``torchace.structures.neighbours``.
"""
from __future__ import annotations

import os
import zipfile
from typing import List, Optional, Sequence, Tuple

import numpy as np
import torch

from ..model.backends import AUTO, EVALUATE, select
from ..model.backends.fused import CLOSEST_PAIR
from ..model.contract import EnergyModel
from ..model.evaluate import stress_from_virial
from ..structures.geometry import edge_vectors
from .binding import BoundModel

TORCHSCRIPT = "torchscript"  # the backend name of a TorchScript export (ASE calculator only)


class LoadedModel:
    """What ``load_model`` found: ``model`` (None for a TorchScript export), ``script`` (the export or None),
    ``numbers`` (atomic numbers, species order), ``rcut`` (Å) and ``path`` (None for a model object)."""

    __slots__ = ("model", "script", "numbers", "rcut", "path")

    def __init__(self, model, script, numbers, rcut, path):
        self.model, self.script, self.numbers, self.rcut, self.path = model, script, list(numbers), float(rcut), path


def load_model(model_or_path, device, dtype: torch.dtype, backend: str = AUTO, engine: Optional[str] = None
               ) -> LoadedModel:
    """A torchace model object as given, or the model of a model file loaded on ``device`` in ``dtype``.

    A path that does not exist is ``FileNotFoundError``; a TorchScript archive (a zip: it contains code) is
    loaded only with ``backend="torchscript"`` (``engine`` None: the ASE calculator, the one engine that runs
    exports; otherwise the engine's name for the message); any other object than an energy model
    (``torchace.model.contract.EnergyModel``) is ``TypeError``."""
    if isinstance(model_or_path, (str, os.PathLike)):
        path = os.fspath(model_or_path)
        if not os.path.exists(path):
            raise FileNotFoundError(f"{path}: no such model file")
        if zipfile.is_zipfile(path):  # a TorchScript archive (torchace.export)
            if engine is not None:
                raise ValueError(f"{path} is a TorchScript archive (it contains code), which the {engine} does not "
                                 "load: use the torchace model file (.json) it was exported from")
            if backend != TORCHSCRIPT:
                # loading a model file never runs code; a TorchScript archive is code: only on request
                raise ValueError(f"{path} is a TorchScript archive (it contains code); load it with "
                                 f"TorchACECalculator(path, backend='torchscript') if you trust it, or use "
                                 "the torchace model file (.json) it was exported from")
            from ..io.torchscript import load_torchscript

            module, meta = load_torchscript(path, map_location=device)
            module = module.to(dtype)
            module.eval()
            return LoadedModel(None, module, meta["atomic_numbers"], meta["rcut"], path)
        if backend == TORCHSCRIPT:
            raise ValueError(f"backend='torchscript': {path} is not a TorchScript archive")
        from ..io.model_file import load

        model = load(path, dtype=dtype, device=device)
        return LoadedModel(model, None, model.config.numbers, model.rcut, path)
    model = model_or_path
    if not isinstance(model, EnergyModel):  # the contract (torchace.model.contract), not attributes
        raise TypeError(f"expected a torchace model or the path of a model file, got {type(model).__name__}")
    return LoadedModel(model, None, model.config.numbers, model.rcut, None)


def symbol(z: int) -> str:
    """The element symbol of atomic number ``z`` ("Z=…" outside the table)."""
    from ase.data import chemical_symbols

    return chemical_symbols[z] if 0 <= z < len(chemical_symbols) else f"Z={z}"


class SpeciesMap:
    """Atomic numbers (``numbers``: species 0, 1, ...) ↔ model species indices."""

    def __init__(self, numbers: Sequence[int]):
        self.atomic_numbers: List[int] = [int(z) for z in numbers]
        self.z_to_species = {z: s for s, z in enumerate(self.atomic_numbers)}
        self.elements = [symbol(z) for z in self.atomic_numbers]
        lut = np.full(max(self.atomic_numbers) + 1, -1, dtype=np.int64)
        lut[self.atomic_numbers] = np.arange(len(self.atomic_numbers))
        self.table = lut  # atomic number → species (-1: not the model's)

    def of_numbers(self, numbers: np.ndarray) -> np.ndarray:
        """Species of host atomic numbers that are all the model's (checked before, e.g. by ``validate``)."""
        return self.table[np.asarray(numbers, dtype=np.int64)]

    def of_types(self, elements_by_type: Sequence[str]) -> np.ndarray:
        """[ntypes + 1] species per LAMMPS type (entry 0 unused, -1) from the element symbol of type 1, 2, ..."""
        from ase.data import atomic_numbers

        if isinstance(elements_by_type, str) or not len(elements_by_type):
            raise ValueError(f"elements_by_type must be a list of element symbols, one per LAMMPS atom type "
                             f"(type 1 first), got {elements_by_type!r}")
        out = [-1]
        for t, el in enumerate(elements_by_type, start=1):
            if el not in atomic_numbers or atomic_numbers[el] not in self.z_to_species:
                raise ValueError(f"LAMMPS type {t} is {el!r}, which is not an element of the model {self.elements}")
            out.append(self.z_to_species[atomic_numbers[el]])
        return np.asarray(out, dtype=np.int64)

    def of_tensor(self, numbers: torch.Tensor, table: torch.Tensor, system_idx: torch.Tensor) -> torch.Tensor:
        """Species of atomic numbers on a device through ``table`` (``self.table`` there); ValueError naming the
        system and the first atom of an element the model does not have."""
        z = numbers.to(table.device, torch.long)
        species = table[z.clamp(0, table.shape[0] - 1)]
        bad = (species < 0) | (z < 0) | (z >= table.shape[0])
        if bool(bad.any()):
            a = int(torch.nonzero(bad)[0, 0])
            zs = sorted({int(x) for x in z[bad].tolist()})
            raise ValueError(f"system {int(system_idx[a])}: element(s) {[symbol(x) for x in zs]} not in the "
                             f"model's elements {self.elements} (first at atom {a})")
        return species


class EngineModel:
    """The model an engine evaluates: ``forward(positions, species, batch, edge_index, unit_shifts, cell,
    n_systems, compute_forces, compute_virials)`` through the backend ``backend`` ("auto": the fastest for the
    model and device) of the caller's model or its copy on ``device``/``dtype`` (``BoundModel``).  ``compile``:
    the analytic backend through ``torch.compile``; ``committee``: the members' energies in the same pass where
    the backend computes them.  ``self.backend`` names the backend in use."""

    def __init__(self, model, device, dtype: torch.dtype, backend: str = AUTO, *, compile: bool = False,
                 committee: Optional[bool] = None):
        self.device, self.choice, self.compile, self.committee = torch.device(device), backend, bool(compile), committee
        self.backend: Optional[str] = None
        self.bound = BoundModel(model, self.device, dtype, self._make_forward)

    def _make_forward(self, model):
        """The backend callable of ``model`` (the caller's model or a new copy of it)."""
        if self.compile:  # torch.compile of the analytic eval path (ACEModel.compiled_forward)
            select(model, self.device, "analytic", EVALUATE)  # raises with the reason if impossible
            self.backend = "analytic"
            return model.compiled_forward()
        b = select(model, self.device, self.choice, EVALUATE)
        self.backend = b.name
        return b.evaluator(model) if self.committee is None else b.evaluator(model, committee=self.committee)


class EngineAdapter:
    """What every engine adapter reports: ``backend`` (of its ``_engine``, an ``EngineModel``) and
    ``n_neighbour_list_builds`` (of its ``_nl``, a ``structures.neighbours.skin.SkinList``)."""

    @property
    def backend(self) -> Optional[str]:
        """The backend in use (``torchace.backends``)."""
        return self._engine.backend

    @property
    def n_neighbour_list_builds(self) -> int:
        """Neighbour-list builds (reuse statistics)."""
        return self._nl.n_builds


def closest_pair(positions: torch.Tensor, edge_index: torch.Tensor, unit_shifts: torch.Tensor, cell: torch.Tensor,
                 batch: torch.Tensor, out: Optional[dict] = None) -> Tuple[float, int]:
    """(shortest edge length in Å, its index in the list; -1 without edges): the fused kernel's measurement in
    ``out`` where it made one, else the edge vectors' norms."""
    if out is not None and CLOSEST_PAIR in out:
        dmin, e = (float(x) for x in out[CLOSEST_PAIR])
        return dmin, int(e)
    if edge_index.shape[1] == 0:
        return float("inf"), -1
    with torch.no_grad():
        d = torch.linalg.norm(edge_vectors(positions, edge_index, unit_shifts, cell, batch), dim=1)
        e = int(torch.argmin(d))
        return float(d[e]), e


def engine_stress(virial: torch.Tensor, cell: torch.Tensor, pbc) -> torch.Tensor:
    """σ = −W/V [S, 3, 3] (ASE's sign: positive = tensile) of virials W [S, 3, 3] and cells [S, 3, 3]; NaN for
    systems not periodic along all three axes (``pbc``: three booleans for all systems)."""
    periodic = torch.as_tensor(np.asarray(pbc, dtype=bool), device=cell.device).reshape(1, 3).expand(cell.shape[0], 3)
    return stress_from_virial(virial, cell, periodic)
