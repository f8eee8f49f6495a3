"""TorchSim model interface for torchace models: batched MD, relaxation and many-system evaluation.

``TorchACEModel(model_or_path)`` is a ``torch_sim.models.interface.ModelInterface``: ``model(state)`` takes a
``torch_sim.SimState`` holding any number of systems and returns

- ``energy`` [n_systems] (eV, E0 included);
- ``forces`` [n_atoms, 3] (eV/Å; ``compute_forces=True``, the default);
- ``stress`` [n_systems, 3, 3] (eV/Å³; ``compute_stress=True``, the default): ASE's sign, σ = −W/V with
  torchace's virial W = −∂E/∂ε (positive = tensile), the convention of torch_sim's cell optimizers and
  barostats (they form the virial as −V·σ); NaN unless the state is periodic along all three axes;
- ``energies`` [n_atoms] (eV; ``per_atom_energies=True``): site energies, summing to ``energy``.

Conventions: torch_sim stores ``state.cell`` with the lattice vectors as *columns*; torchace's edges are
r_ij = x_j − x_i + S·cell with lattice vectors as rows, so the model is given ``state.row_vector_cell``.
The neighbour lists of all systems come from the batched search (``torchace.structures.neighbours.batched``), on
the state's device: systems with n_atoms² × lattice images ≤ ``choice.BATCHED_MAX_CANDIDATES`` (up to ~50 atoms
in a cell of Si at rcut 5.5 Å) in one batched all-pairs search over every system at once, larger ones one by
one by the choice rule (``torchace.structures.neighbours.choice``).  They are held in the engines' skin list
(``structures.neighbours.skin.SkinList``, following the atoms torch_sim wraps into the cell): ``skin=0`` (the
default) builds them at rcut whenever an atom moved, a skin > 0 builds at rcut + skin and keeps them until an
atom moved more than skin/2.  Then one batched model evaluation through a torchace backend
(``backend="auto"``: the fused C++ kernel on CPU, the Triton kernels on CUDA, ``torchace.backends``).  Atomic
numbers map to model species through a lookup table on the device.  Positions, species and the list stay on
the device; the host work per call is a loop over the *large* systems (cell-list calls), the image ranges
(3 numbers per system) and a few scalar checks (unknown elements, non-finite positions, degenerate cells,
atoms closer than ``min_distance``), each raising ``ValueError`` naming the system.  See docs/torchsim.md.
"""
from __future__ import annotations

from typing import Dict, List, Optional

import numpy as np
import torch

from .. import keys as K
from ..model.backends import AUTO
from ..structures.batch import DEFAULT_MIN_DISTANCE
from ..structures.neighbours.batched import batch_neighbour_search
from ..structures.neighbours.search import HOST
from ..structures.neighbours.skin import SkinList
from .core import EngineAdapter, EngineModel, SpeciesMap, closest_pair, engine_stress, load_model

try:
    import torch_sim
    from torch_sim.models.interface import ModelInterface
except ImportError as err:  # pragma: no cover - exercised only without the extra
    raise ImportError("torchace.calculators.torchsim needs torch-sim-atomistic: pip install 'torchace[torchsim]'"
                      ) from err

__all__ = ["TorchACEModel"]

AUTO_LIST = "auto"
LISTS = (AUTO_LIST, "batched", "cell_list", "numpy")
SEARCH = {"numpy": HOST}  # the TorchSim option's name of a batched-search method (the others are the same)


class TorchACEModel(EngineAdapter, ModelInterface):
    """A torchace model (``ACEModel``, a ``read_yace`` model, or the path of a model file) for torch_sim.

    ``device``: where to evaluate (default: CUDA when available, else CPU, as torch_sim's models do);
    ``dtype``: ``torch.float64`` (default) or ``torch.float32``.  A model object that is not on that
    device/dtype, or is in training mode, is copied (the caller's model is never modified).
    ``compute_forces`` / ``compute_stress``: which outputs to return (forces and virial come from the same
    pass).  ``per_atom_energies``: also return site energies as ``energies``.  ``backend``: "auto" or a
    torchace backend name (``torchace.backends.available``); ``self.backend`` is the one in use.
    ``min_distance`` (Å): closer pairs raise ``ValueError`` (0 switches the check off).  ``neighbour_list``:
    "auto" (small systems batched, the others by the cell list), "batched" (every system in the batched
    search; states with mixed boundaries fall back to the cell list), "cell_list" (one call per system) or
    "numpy" (``torchace.structures.neighbours.pairs.neighbour_list`` per system, on the host).  ``skin`` (Å):
    the neighbour lists' skin (0: built at rcut whenever an atom moved; ``n_neighbour_list_builds`` counts).
    """

    def __init__(self, model_or_path, *, device=None, dtype: torch.dtype = torch.float64,
                 compute_forces: bool = True, compute_stress: bool = True, per_atom_energies: bool = False,
                 backend: str = AUTO, min_distance: float = DEFAULT_MIN_DISTANCE,
                 neighbour_list: str = AUTO_LIST, skin: float = 0.0):
        super().__init__()
        if dtype not in (torch.float64, torch.float32):
            raise ValueError(f"dtype must be torch.float64 or torch.float32, got {dtype!r}")
        if not (min_distance >= 0 and np.isfinite(min_distance)):
            raise ValueError(f"min_distance must be a finite number >= 0 (Å), got {min_distance!r}")
        if not (skin >= 0 and np.isfinite(skin)):
            raise ValueError(f"skin must be a finite number >= 0 (Å), got {skin!r}")
        if neighbour_list not in LISTS:
            raise ValueError(f"neighbour_list must be one of {LISTS}, got {neighbour_list!r}")
        dev = torch.device(device if device is not None else ("cuda" if torch.cuda.is_available() else "cpu"))
        if dev.type == "cuda" and dev.index is None and torch.cuda.is_available():
            dev = torch.device("cuda", torch.cuda.current_device())
        self._device, self._dtype = dev, dtype
        self._compute_forces, self._compute_stress = bool(compute_forces), bool(compute_stress)
        self._memory_scales_with = "n_atoms_x_density"
        self.per_atom_energies = bool(per_atom_energies)
        self.min_distance = float(min_distance)
        self.neighbour_list = neighbour_list
        loaded = load_model(model_or_path, dev, dtype, backend, engine="TorchSim model")
        self.model_path: Optional[str] = loaded.path
        # the caller's model itself, or a copy on this device/dtype made again whenever the model changes
        self._engine = EngineModel(loaded.model, dev, dtype, backend)
        self.model = self._engine.bound.model
        self.rcut = loaded.rcut
        self.species = SpeciesMap(loaded.numbers)
        self.atomic_numbers: List[int] = self.species.atomic_numbers
        self.register_buffer("_z_to_species", torch.as_tensor(self.species.table).to(dev), persistent=False)
        self._nl = SkinList(self.rcut, float(skin), follow_wraps=True)

    # ---- inputs ----

    @staticmethod
    def _pbc(state) -> List[bool]:
        p = torch.as_tensor(state.pbc).reshape(-1).tolist()
        if len(p) == 1:
            p = p * 3
        if len(p) != 3:
            raise ValueError(f"state.pbc must be one boolean or three, got {state.pbc!r}")
        return [bool(x) for x in p]

    @staticmethod
    def _check_cells(cells: np.ndarray, pbc: List[bool]) -> None:
        """Finite cells whose periodic lattice vectors are linearly independent (as ``structures.batch.validate``)."""
        bad = np.flatnonzero(~np.isfinite(cells).reshape(len(cells), -1).all(1))
        if len(bad):
            raise ValueError(f"non-finite cell in systems {bad.tolist()}")
        if not any(pbc):
            return
        rank = np.linalg.matrix_rank(cells[:, pbc, :], tol=1e-8)
        degenerate = rank < sum(pbc)
        if all(pbc):
            degenerate |= np.abs(np.linalg.det(cells)) < 1e-8
        if degenerate.any():
            raise ValueError("periodic cell is degenerate (zero volume or dependent lattice vectors) in systems "
                             f"{np.flatnonzero(degenerate).tolist()}")

    def _neighbours(self, positions: torch.Tensor, cell: torch.Tensor, cells_h: np.ndarray, pbc: List[bool],
                    batch: torch.Tensor, members: torch.Tensor, counts: List[int], numbers: torch.Tensor):
        """(edge_index [2, E], unit shifts [E, 3]) of all systems, state atom indices, on the device: the skin
        list, rebuilt by the batched search (``structures.neighbours.batched``) when atoms moved."""
        nl = self._nl
        nl.update(positions, cells_h, pbc, lambda: batch_neighbour_search(
            positions, cell, cells_h, pbc, batch, members, counts, nl.cutoff, self._dtype,
            SEARCH.get(self.neighbour_list, self.neighbour_list)), key=(numbers, batch), batch=batch)
        return nl.edge_index, nl.unit_shifts

    def _check_distances(self, positions, edge_index, unit_shifts, cell, batch) -> None:
        if self.min_distance <= 0 or edge_index.shape[1] == 0:
            return
        dmin, e = closest_pair(positions, edge_index, unit_shifts, cell, batch)
        if dmin < self.min_distance:
            i, j = (int(x) for x in edge_index[:, e])
            s = int(batch[i])
            first = int(torch.nonzero(batch == s)[0, 0])  # a system's atoms are consecutive in a SimState
            raise ValueError(f"system {s}: atoms {i - first} and {j - first} (state atoms {i}, {j}) "
                             f"are {dmin:.3g} Å apart (< min_distance {self.min_distance} Å): atoms on top of "
                             "each other")

    # ---- torch_sim interface ----

    def forward(self, state, **kwargs) -> Dict[str, torch.Tensor]:
        """Energies [n_systems], forces [n_atoms, 3] and stresses [n_systems, 3, 3] of every system of the
        ``SimState`` (or state dictionary); the input is not modified."""
        if not isinstance(state, torch_sim.SimState):
            state = torch_sim.SimState(**state)
        dev, dt = self._device, self._dtype
        positions = state.positions.detach().to(dev, dt)
        cell = state.row_vector_cell.detach().to(dev, dt)  # [S, 3, 3], rows = lattice vectors
        if cell.ndim == 2:
            cell = cell.unsqueeze(0)
        n_sys = cell.shape[0]
        batch = state.system_idx.to(dev, torch.long)
        pbc = self._pbc(state)
        species = self.species.of_tensor(state.atomic_numbers, self._z_to_species, batch)
        bad_pos = ~torch.isfinite(positions).all(1)
        # one host transfer: atoms per system (the per-system neighbour-list loop) and the count of bad positions
        host = torch.cat([torch.bincount(batch, minlength=n_sys), bad_pos.sum().reshape(1)]).tolist()
        counts, n_bad_pos = host[:n_sys], host[n_sys]
        if n_bad_pos:
            a = int(torch.nonzero(bad_pos)[0, 0])
            raise ValueError(f"system {int(batch[a])}: non-finite positions ({n_bad_pos} atoms; first: state atom "
                             f"{a})")
        cells_h = cell.to("cpu", torch.float64).numpy()
        self._check_cells(cells_h, pbc)
        members = torch.argsort(batch, stable=True)  # atoms of system s: members[offset_s : offset_s + n_s]
        edge_index, unit_shifts = self._neighbours(positions, cell, cells_h, pbc, batch, members, counts,
                                                   state.atomic_numbers)
        self._check_distances(positions, edge_index, unit_shifts, cell, batch)
        with self._engine.bound.held(), torch.enable_grad():  # the reference backend differentiates
            if self.model is not self._engine.bound.model:  # a new copy of the caller's changed model
                self.model = self._engine.bound.model
            out = self._engine.bound.forward(positions, species, batch, edge_index, unit_shifts, cell, n_sys,
                                      self._compute_forces, self._compute_stress)
        res = {"energy": out[K.ENERGY].detach()}
        if self._compute_forces:
            res["forces"] = out[K.FORCES].detach()
        if self._compute_stress:
            res["stress"] = engine_stress(out[K.VIRIAL].detach(), cell, pbc)
        if self.per_atom_energies:
            res["energies"] = out[K.NODE_ENERGY].detach()
        return res
