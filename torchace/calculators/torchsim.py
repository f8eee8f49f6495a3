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
Each call builds the neighbour lists of all systems afresh at rcut (torch_sim wraps positions into the
cell at every MD step, so a stored list's integer shifts would go stale), on the state's device: systems with
n_atoms² × lattice images ≤ ``DENSE_MAX_CANDIDATES`` (up to ~50 atoms in a cell of Si at rcut 5.5 Å) in one
batched all-pairs search over every system at once, larger ones one by one with the binned cell list
(``torchace.structures.neighbours.cell_list``); then one batched model evaluation through a torchace backend
(``backend="auto"``: the fused C++ kernel on CPU, the Triton kernels on CUDA, ``torchace.backends``).  Atomic
numbers map to model species through a lookup table on the device.  Positions, species and the list stay on
the device; the host work per call is a loop over the *large* systems (cell-list calls), the image ranges
(3 numbers per system) and a few scalar checks (unknown elements, non-finite positions, degenerate cells,
atoms closer than ``min_distance``), each raising ``ValueError`` naming the system.  See docs/torchsim.md.
"""
from __future__ import annotations

import os
from typing import Dict, List, Optional

import numpy as np
import torch
from ase.data import chemical_symbols

from .. import keys as K
from ..model.backends import AUTO, EVALUATE, select
from ..structures.batch import DEFAULT_MIN_DISTANCE
from ..structures.neighbours.cell_list import cell_list_neighbours
from ..structures.geometry import edge_vectors
from ..structures.neighbours.pairs import neighbour_list
from .binding import BoundModel

try:
    import torch_sim
    from torch_sim.models.interface import ModelInterface
except ImportError as err:  # pragma: no cover - exercised only without the extra
    raise ImportError("torchace.calculators.torchsim needs torch-sim-atomistic: pip install 'torchace[torchsim]'"
                      ) from err

__all__ = ["TorchACEModel"]

AUTO_LIST = "auto"
LISTS = (AUTO_LIST, "batched", "cell_list", "numpy")
# a system with n_atoms² × lattice images at or below this goes to the batched all-pairs search (auto)
DENSE_MAX_CANDIDATES = 2 ** 16
# (pair, image) candidates materialised at once in the batched search (~150 bytes each)
CHUNK_CANDIDATES = 2 ** 20


def _symbol(z: int) -> str:
    return chemical_symbols[z] if 0 <= z < len(chemical_symbols) else f"Z={z}"


class TorchACEModel(ModelInterface):
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
    "numpy" (``torchace.structures.neighbours.pairs.neighbour_list`` per system, on the host).
    """

    def __init__(self, model_or_path, *, device=None, dtype: torch.dtype = torch.float64,
                 compute_forces: bool = True, compute_stress: bool = True, per_atom_energies: bool = False,
                 backend: str = AUTO, min_distance: float = DEFAULT_MIN_DISTANCE,
                 neighbour_list: str = AUTO_LIST):
        super().__init__()
        if dtype not in (torch.float64, torch.float32):
            raise ValueError(f"dtype must be torch.float64 or torch.float32, got {dtype!r}")
        if not (min_distance >= 0 and np.isfinite(min_distance)):
            raise ValueError(f"min_distance must be a finite number >= 0 (Å), got {min_distance!r}")
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
        self.model_path: Optional[str] = None
        self._backend_choice = backend
        # the caller's model itself, or a copy on this device/dtype made again whenever the model changes
        self._bound = BoundModel(self._load(model_or_path), dev, dtype, self._make_forward)
        self.model = self._bound.model
        self.rcut = float(self.model.rcut)
        self.atomic_numbers: List[int] = [int(z) for z in self.model.config.numbers]
        lut = torch.full((max(self.atomic_numbers) + 1,), -1, dtype=torch.long)
        lut[torch.tensor(self.atomic_numbers)] = torch.arange(len(self.atomic_numbers))
        self.register_buffer("_z_to_species", lut.to(dev), persistent=False)

    def _load(self, model_or_path):
        if isinstance(model_or_path, (str, os.PathLike)):
            from ..io.model_file import load

            self.model_path = os.fspath(model_or_path)
            if not os.path.exists(self.model_path):
                raise FileNotFoundError(f"{self.model_path}: no such model file")
            return load(self.model_path, dtype=self._dtype, device=self._device)
        model = model_or_path
        if not all(hasattr(model, a) for a in ("config", "coefficients", "rcut")):
            raise TypeError(f"expected a torchace model or the path of a model file, got {type(model).__name__}")
        return model

    def _make_forward(self, model):
        """The backend callable of ``model`` (the caller's model or a new copy of it)."""
        b = select(model, self._device, self._backend_choice, EVALUATE)
        self.backend = b.name
        return b.evaluator(model)

    # ---- inputs ----

    def _species(self, numbers: torch.Tensor, system_idx: torch.Tensor) -> torch.Tensor:
        lut = self._z_to_species
        z = numbers.to(self._device, torch.long)
        species = lut[z.clamp(0, lut.shape[0] - 1)]
        bad = (species < 0) | (z < 0) | (z >= lut.shape[0])
        if bool(bad.any()):
            a = int(torch.nonzero(bad)[0, 0])
            zs = sorted({int(x) for x in z[bad].tolist()})
            raise ValueError(f"system {int(system_idx[a])}: element(s) {[_symbol(x) for x in zs]} not in the "
                             f"model's elements {[_symbol(x) for x in self.atomic_numbers]} (first at atom {a})")
        return species

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

    def _image_ranges(self, positions: torch.Tensor, cells_h: np.ndarray, batch: torch.Tensor, pbc: List[bool]
                      ) -> Optional[np.ndarray]:
        """Largest |S_a| that can put a pair within rcut, per system and axis [S, 3] (int64), or None for mixed
        boundaries: |S_a| ≤ rcut/h_a + span_a, with h_a the spacing of lattice planes and span_a the extent of
        the system's fractional coordinates (unwrapped positions need more images)."""
        n_sys = cells_h.shape[0]
        if not any(pbc):
            return np.zeros((n_sys, 3), dtype=np.int64)
        if not all(pbc):
            return None
        inv = torch.as_tensor(np.linalg.inv(cells_h), dtype=torch.float64, device=positions.device)
        frac = torch.einsum("na,nab->nb", positions.to(torch.float64), inv[batch])
        idx = batch.unsqueeze(1).expand(-1, 3)
        hi = torch.full((n_sys, 3), -np.inf, dtype=torch.float64, device=positions.device)
        lo = torch.full((n_sys, 3), np.inf, dtype=torch.float64, device=positions.device)
        span = (hi.scatter_reduce(0, idx, frac, "amax") - lo.scatter_reduce(0, idx, frac, "amin")).cpu().numpy()
        cross = np.linalg.norm(np.cross(cells_h[:, [1, 2, 0]], cells_h[:, [2, 0, 1]]), axis=2)
        h = np.abs(np.linalg.det(cells_h))[:, None] / cross
        return np.floor(self.rcut / h + span + 1e-8).astype(np.int64)

    def _all_pairs(self, positions: torch.Tensor, cell: torch.Tensor, members: torch.Tensor, systems: np.ndarray,
                   counts: np.ndarray, offsets: np.ndarray, k: np.ndarray):
        """The batched search of ``systems`` sharing the image range ``k`` [3]: every (i, j, S) with i, j in the
        same system and |S_a| ≤ k_a, all on the device (pairs in chunks, no loop over systems): the pair
        vectors x_j − x_i once per pair, the image vectors S·cell once per system, broadcast against each other."""
        dev = positions.device
        axes = [torch.arange(-int(x), int(x) + 1, device=dev) for x in k]
        grid = torch.cartesian_prod(*axes).reshape(-1, 3)                   # [M, 3] integer shifts
        zero = (grid.shape[0] - 1) // 2                                     # the index of S = (0, 0, 0)
        images = torch.einsum("ma,sab->smb", grid.to(torch.float64), cell[torch.as_tensor(systems, device=dev)]
                              .to(torch.float64))                           # [n_sel, M, 3]
        n = counts[systems]
        n_t = torch.as_tensor(n, dtype=torch.long, device=dev)
        sys_of_pair = torch.repeat_interleave(torch.arange(len(systems), device=dev), n_t * n_t,
                                              output_size=int((n * n).sum()))
        q = torch.arange(sys_of_pair.shape[0], device=dev) - torch.as_tensor(np.cumsum(n * n) - n * n,
                                                                            device=dev)[sys_of_pair]
        first = torch.as_tensor(offsets[systems], dtype=torch.long, device=dev)[sys_of_pair]
        i = members[first + q // n_t[sys_of_pair]]
        j = members[first + q % n_t[sys_of_pair]]
        pos = positions.to(torch.float64)
        d0 = pos[j] - pos[i]
        out = []
        step = max(1, CHUNK_CANDIDATES // grid.shape[0])
        for p0 in range(0, d0.shape[0], step):
            sl = slice(p0, p0 + step)
            d = d0[sl].unsqueeze(1) + images[sys_of_pair[sl]]            # [pairs, M, 3]
            mask = (d * d).sum(-1) < self.rcut ** 2
            mask[:, zero] &= i[sl] != j[sl]                                 # no self pair at S = 0
            pp, mm = torch.nonzero(mask, as_tuple=True)
            out.append((i[sl][pp], j[sl][pp], grid[mm]))
        return out

    def _neighbours(self, positions: torch.Tensor, cell: torch.Tensor, cells_h: np.ndarray, pbc: List[bool],
                    batch: torch.Tensor, members: torch.Tensor, counts: List[int]):
        """(edge_index [2, E], unit shifts [E, 3]) of all systems, state atom indices, on the device: small
        systems (n² × images ≤ ``DENSE_MAX_CANDIDATES``) in one batched all-pairs search, the others one call
        per system (the cell list on the device, or numpy/vesin on host copies)."""
        counts_np = np.asarray(counts, dtype=np.int64)
        offsets = np.cumsum(counts_np) - counts_np  # system s: members[offsets[s] : offsets[s] + counts[s]]
        per_system = np.arange(len(counts_np))
        parts = []
        if self.neighbour_list in (AUTO_LIST, "batched"):
            k = self._image_ranges(positions, cells_h, batch, pbc)
            if k is not None:
                cand = counts_np ** 2 * (2 * k + 1).prod(1)
                small = cand <= DENSE_MAX_CANDIDATES if self.neighbour_list == AUTO_LIST else cand >= 0
                # one batched search per distinct image range (cells of one size share it)
                for kk in np.unique(k[small], axis=0):
                    sel = np.flatnonzero(small & (k == kk).all(1))
                    parts += self._all_pairs(positions, cell, members, sel, counts_np, offsets, kk)
                per_system = np.flatnonzero(~small)
        if len(per_system) and self.neighbour_list == "numpy":
            pos_h = positions.detach().to("cpu", torch.float64).numpy()
            members_h = members.cpu().numpy()
        for s in per_system.tolist():
            atoms = members[offsets[s]: offsets[s] + counts[s]]
            if self.neighbour_list == "numpy":
                i, j, S = (torch.as_tensor(np.asarray(x), dtype=torch.long, device=self._device) for x in
                           neighbour_list(pos_h[members_h[offsets[s]: offsets[s] + counts[s]]], cells_h[s], pbc,
                                          self.rcut))
            else:
                i, j, S = cell_list_neighbours(positions[atoms].to(torch.float64), cell[s].to(torch.float64),
                                               pbc, self.rcut)
            parts.append((atoms[i], atoms[j], S))
        i, j, S = (torch.cat(x) for x in zip(*parts))
        return torch.stack([i, j]), S.to(self._dtype)

    def _check_distances(self, positions, edge_index, unit_shifts, cell, batch) -> None:
        if self.min_distance <= 0 or edge_index.shape[1] == 0:
            return
        with torch.no_grad():
            d = torch.linalg.norm(edge_vectors(positions, edge_index, unit_shifts, cell, batch), dim=1)
            e = int(torch.argmin(d))
            dmin = float(d[e])
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
        species = self._species(state.atomic_numbers, batch)
        periodic = all(pbc)
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
        edge_index, unit_shifts = self._neighbours(positions, cell, cells_h, pbc, batch, members, counts)
        self._check_distances(positions, edge_index, unit_shifts, cell, batch)
        with self._bound.held(), torch.enable_grad():  # the reference backend differentiates
            if self.model is not self._bound.model:  # a new copy of the caller's changed model
                self.model = self._bound.model
            out = self._bound.forward(positions, species, batch, edge_index, unit_shifts, cell, n_sys,
                                      self._compute_forces, self._compute_stress)
        res = {"energy": out[K.ENERGY].detach()}
        if self._compute_forces:
            res["forces"] = out[K.FORCES].detach()
        if self._compute_stress:
            W = out[K.VIRIAL].detach()
            stress = -W / torch.linalg.det(cell).abs().reshape(-1, 1, 1)
            res["stress"] = stress if periodic else torch.full_like(W, float("nan"))
        if self.per_atom_energies:
            res["energies"] = out[K.NODE_ENERGY].detach()
        return res
