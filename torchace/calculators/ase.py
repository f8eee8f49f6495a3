"""ASE calculator for torchace models, with neighbour-list reuse (Verlet skin) for molecular dynamics.

``TorchACECalculator(model_or_path)`` gives energy, free_energy, per-atom energies, forces and, for cells
periodic along all three axes, the stress (ASE convention: Voigt xx, yy, zz, yz, xz, xy, eV/Å³, σ = −W/V).
Evaluation goes through a named backend (``torchace.backends``; ``backend="auto"``: the fused C++ kernel on
CPU where it builds, the Triton kernels on CUDA, the analytic torch path elsewhere; ``calc.backend`` says
which).  With a committee (``model.committee``: a Bayesian fit, or ``fit_committee`` of a nonlinear model,
whose members vary the parameters its energy is linear in) the energy is the mean model's, and
``energy_std`` (eV) comes with every call at almost no cost (the members' energies are dot products on the same
basis); ``forces_std`` ([N, 3], eV/Å) and ``stress_std`` (Voigt, eV/Å³) need design rows (a few evaluations'
worth) and are computed when asked for (``calc.get_property("forces_std", atoms)``) or with ``uncertainty=True``.

Neighbour lists are built with cutoff rcut + skin and reused, with the current positions, until an atom
has moved more than skin/2 since the build (or the cell, pbc, atom count or elements changed).  Edges
longer than rcut contribute exactly zero (the many-body envelope, the pair envelope and the ZBL switch are
``torch.where``-masked to 0 at and beyond rcut), so reused lists give the same numbers as fresh ones up to
summation order.  See docs/calculator.md.
"""
from __future__ import annotations

import logging
import os
import threading
import zipfile
from contextlib import contextmanager
from typing import Dict, List, Optional, Sequence

import numpy as np
import torch
from ase.calculators.calculator import Calculator, PropertyNotImplementedError, all_changes

from .. import keys as K
from ..fieldcheck import check_device, check_float
from ..uncertainty.committee import committee_energies, member_predictions, spread
from ..fit.rows import batch_rows
from ..model.backends import AUTO, EVALUATE, select
from ..model.backends.fused import CLOSEST_PAIR, COMMITTEE_ENERGY
from ..uncertainty.nonlinear import committee_linear_model
from ..structures.batch import DEFAULT_MIN_DISTANCE, too_close, validate
from ..structures.neighbours.cell_list import cell_list_neighbours
from ..structures.geometry import edge_vectors
from ..structures.neighbours.pairs import neighbour_list
from ..model.contract import capabilities
from ..model.watch import watch
from .binding import BoundModel

__all__ = ["TorchACECalculator", "PropertyNotImplementedError"]
log = logging.getLogger("torchace")

BASE_PROPERTIES = ["energy", "free_energy", "energies", "forces", "stress"]
STD_PROPERTIES = ["energy_std", "forces_std", "stress_std"]
FORCE_STD_PROPERTIES = ["forces_std", "stress_std"]
TORCHSCRIPT = "torchscript"  # ``calc.backend`` of a TorchScript export


class _NeighbourList:
    """A neighbour list built with cutoff rcut + skin, and the state it was built for."""

    __slots__ = ("positions", "cell", "pbc", "numbers", "edge_index", "unit_shifts", "species", "batch", "cell_t")


class TorchACECalculator(Calculator):
    """ASE calculator for a torchace model.

    ``model_or_path``: an ``ACEModel``, the path of a model file (``model.save``/``torchace.load``) or of a
    TorchScript export (``torchace.export``; no committee then).  ``device``/``dtype``: where and in which
    precision to evaluate (a model that is not already there, or is in training mode, is copied, never
    modified).  ``skin`` (Å): neighbour-list skin; 0 rebuilds whenever an atom moved.  ``min_distance``
    (Å): closer pairs are an error (atoms on top of each other), as in ``torchace.evaluate``.
    ``backend``: "auto" (default: the fastest backend for the model and device, ``torchace.backends``) or
    "fused", "triton", "analytic", "reference"; ``calc.backend`` is the one in use.  ``uncertainty`` (models
    with a committee): None (default) gives ``energy_std`` on every call (nearly free) and ``forces_std`` /
    ``stress_std`` when they are requested; True gives all three on every call (and requires a committee);
    False gives none unless requested.  ``compile``: the analytic backend through ``torch.compile``
    (``ACEModel.compiled_forward``; the first step compiles, docs/performance.md has the timings).
    ``fused=True``: deprecated spelling of ``backend="fused"``.  A TorchScript archive (it contains code) is
    loaded only with ``backend="torchscript"``.  Calls are serialised by a lock: one calculator may be
    shared between threads (each call sees its own structure).

    ``n_neighbour_list_builds`` counts neighbour-list builds (reuse statistics).
    """

    implemented_properties: List[str] = BASE_PROPERTIES + STD_PROPERTIES
    default_parameters: Dict = {}
    nolabel = True

    def __init__(self, model_or_path, device="cpu", dtype: torch.dtype = torch.float64, skin: float = 0.5,
                 min_distance: float = DEFAULT_MIN_DISTANCE, uncertainty: Optional[bool] = None,
                 compile: bool = False, backend: str = AUTO, fused: Optional[bool] = None, **kwargs):
        super().__init__(**kwargs)
        check_float("TorchACECalculator", "skin", skin, nonnegative=True)  # Å; True is not a number
        check_float("TorchACECalculator", "min_distance", min_distance, nonnegative=True)
        if dtype not in (torch.float64, torch.float32):
            raise ValueError(f"dtype must be torch.float64 or torch.float32, got {dtype!r}")
        check_device("TorchACECalculator", "device", str(device))  # 'gpu', or CUDA where there is none
        self.device = torch.device(device)
        if self.device.type == "cuda" and self.device.index is None and torch.cuda.is_available():
            self.device = torch.device("cuda", torch.cuda.current_device())  # compare equal to tensors' devices
        self.dtype = dtype
        self.skin = float(skin)
        self.min_distance = float(min_distance)
        self.model_path: Optional[str] = None
        if fused is not None:
            import warnings

            warnings.warn("TorchACECalculator(fused=...) is deprecated: use backend='fused' (or the default 'auto')",
                          DeprecationWarning, stacklevel=2)
            if fused:
                backend = "fused"
        model, script, numbers, rcut = self._load(model_or_path, backend)
        self.uncertainty = uncertainty
        self._script = script
        self._bound: Optional[BoundModel] = None
        if model is None:  # a TorchScript export: its own forward
            if backend not in (AUTO, TORCHSCRIPT) or compile:
                raise ValueError(f"backend={backend!r} / compile=True need a torchace model or model file, not a "
                                 "TorchScript export")
            self.backend = TORCHSCRIPT
        else:
            if compile and backend not in (AUTO, "analytic"):
                raise ValueError(f"compile=True compiles the analytic backend; it cannot be combined with "
                                 f"backend={backend!r}")
            self._backend_choice, self._compile = backend, bool(compile)
            # the model itself, or a copy on this device/dtype made again whenever the model changes
            self._bound = BoundModel(model, self.device, self.dtype, self._make_forward)
        log.info("TorchACECalculator: backend %s on %s", self.backend, self.device)
        self.rcut = float(rcut)
        self.atomic_numbers = [int(z) for z in numbers]
        self._z_to_species = {z: s for s, z in enumerate(self.atomic_numbers)}
        # (token of the evaluated model, the linear model whose design rows and coefficients the committee
        # refers to): for a nonlinear model the linear model of the parameters its energy is linear in (a
        # snapshot with the learned radials, torchace.uncertainty.nonlinear), made again when it changes
        self._rows_cache = None
        self._token = None            # of the evaluated model, for the stored results
        if uncertainty and self.committee is None:
            raise ValueError("uncertainty=True needs a model with a committee (fit with solvers.BLR(committee_size=n) "
                             "or ARD); TorchScript exports carry none")
        self.implemented_properties = self._properties()
        self._nl: Optional[_NeighbourList] = None
        self.n_neighbour_list_builds = 0
        # one calculation at a time: ASE keeps results (and this calculator its neighbour list) on the object,
        # so two threads would read each other's structures; get_property holds it across calculate + read
        self._lock = threading.RLock()

    # ---- model ----

    @property
    def model(self):
        """The model evaluated: the caller's model itself, or its copy on this device/dtype (None for a
        TorchScript export)."""
        return None if self._bound is None else self._bound.model

    @property
    def committee(self) -> Optional[torch.Tensor]:
        """The evaluated model's committee [n_members, n_coefficients] as it is now (None: none)."""
        comm = getattr(self.model, "committee", None) if self._bound is not None else None
        return None if comm is None else comm.detach().to(self.device, self.dtype)

    def _properties(self) -> List[str]:
        return BASE_PROPERTIES + (STD_PROPERTIES if self.committee is not None else [])

    def _make_forward(self, model):
        """The backend callable of ``model`` (the caller's model or a new copy of it)."""
        if self._compile:  # torch.compile of the analytic eval path (ACEModel.compiled_forward)
            select(model, self.device, "analytic", EVALUATE)  # raises with the reason if impossible
            self.backend = "analytic"
            return model.compiled_forward()
        b = select(model, self.device, self._backend_choice, EVALUATE)
        self.backend = b.name
        # members' energies inside the one pass unless spreads are switched off (then on request, in torch); a
        # model without a committee costs nothing extra, and one fitted later is served
        return b.evaluator(model, committee=self.uncertainty is not False)

    def _rows_model(self):
        """The linear model of the committee's design rows (see __init__), for the model as it is now."""
        model = self.model
        if not capabilities(model).nonlinear:
            return model
        gen = watch(model).check()  # held by the call: no second comparison
        if self._rows_cache is None or self._rows_cache[0] is not model or self._rows_cache[1] != gen:
            self._rows_cache = (model, gen, committee_linear_model(model))
        return self._rows_cache[2]

    @contextmanager
    def _held(self):
        """The call's view of the model: up to date with the caller's model, compared once (BoundModel.held);
        results stored for an older model are dropped."""
        if self._bound is None:
            yield
            return
        with self._bound.held() as token:
            if token != self._token:
                self.results = {}
                self.implemented_properties = self._properties()
                self._token = token
            yield

    def _load(self, model_or_path, backend: str):
        if isinstance(model_or_path, (str, os.PathLike)):
            path = os.fspath(model_or_path)
            self.model_path = path
            if not os.path.exists(path):
                raise FileNotFoundError(f"{path}: no such model file")
            if zipfile.is_zipfile(path):  # a TorchScript archive (torchace.export)
                if backend != TORCHSCRIPT:
                    # loading a model file never runs code; a TorchScript archive is code: only on request
                    raise ValueError(f"{path} is a TorchScript archive (it contains code); load it with "
                                     f"TorchACECalculator(path, backend='torchscript') if you trust it, or use "
                                     "the torchace model file (.json) it was exported from")
                from ..io.torchscript import load_torchscript

                module, meta = load_torchscript(path, map_location=self.device)
                module = module.to(self.dtype)
                module.eval()
                return None, module, meta["atomic_numbers"], meta["rcut"]
            if backend == TORCHSCRIPT:
                raise ValueError(f"backend='torchscript': {path} is not a TorchScript archive")
            from ..io.model_file import load

            model = load(path, dtype=self.dtype, device=self.device)
            return model, None, model.config.numbers, model.rcut
        model = model_or_path
        if not hasattr(model, "config") or not hasattr(model, "coefficients"):
            raise TypeError(f"expected a torchace model or the path of a model file, got {type(model).__name__}")
        return model, None, model.config.numbers, model.rcut

    # ---- neighbour list ----

    def _needs_rebuild(self, atoms, pos: np.ndarray) -> bool:
        nl = self._nl
        if nl is None or len(pos) != len(nl.positions):
            return True
        if (not np.array_equal(atoms.numbers, nl.numbers) or not np.array_equal(atoms.get_pbc(), nl.pbc)
                or not np.array_equal(atoms.cell.array, nl.cell)):
            return True
        d2 = np.einsum("ij,ij->i", pos - nl.positions, pos - nl.positions)
        return bool(d2.max() > (0.5 * self.skin) ** 2) if self.skin > 0 else bool(d2.max() > 0)

    def _build(self, atoms, pos: np.ndarray) -> None:
        validate(0, atoms, self._z_to_species)
        cell = atoms.cell.array.copy()
        pbc = atoms.get_pbc().copy()
        nl = _NeighbourList()
        nl.positions = pos.copy()
        nl.cell = cell
        nl.pbc = pbc
        nl.numbers = atoms.numbers.copy()
        dev = self.device
        if dev.type == "cuda":  # the binned cell list on the GPU (no host round trip of the list)
            i, j, S = cell_list_neighbours(torch.as_tensor(pos, dtype=torch.float64, device=dev),
                                           torch.as_tensor(cell, dtype=torch.float64, device=dev), pbc,
                                           self.rcut + self.skin)
            nl.edge_index = torch.stack([i, j])
            nl.unit_shifts = S.to(self.dtype)
        else:  # numpy/vesin on the CPU: faster there for the small cells of MD (scripts/benchmarks/bench_neighbours.py)
            try:
                i, j, S = neighbour_list(pos, cell, pbc, self.rcut + self.skin)
            except ValueError as exc:  # a hopeless cell (or skin), refused before the search
                raise type(exc)(f"{exc} (the list's cutoff is rcut {self.rcut:g} Å + skin {self.skin:g} Å)") from None
            nl.edge_index = torch.as_tensor(np.stack([i, j]), dtype=torch.long, device=dev)
            nl.unit_shifts = torch.as_tensor(S, dtype=self.dtype, device=dev)
        nl.species = torch.as_tensor([self._z_to_species[int(z)] for z in atoms.numbers], dtype=torch.long,
                                     device=dev)
        nl.batch = torch.zeros(len(atoms), dtype=torch.long, device=dev)
        nl.cell_t = torch.as_tensor(cell, dtype=self.dtype, device=dev).unsqueeze(0)
        self._nl = nl
        self.n_neighbour_list_builds += 1

    def reset(self):
        """Forget results and the stored neighbour list."""
        super().reset()
        self._nl = None

    def _check_distances(self, atoms, positions: torch.Tensor) -> None:
        nl = self._nl
        if self.min_distance <= 0 or nl.edge_index.shape[1] == 0:
            return
        with torch.no_grad():
            d = torch.linalg.norm(edge_vectors(positions, nl.edge_index, nl.unit_shifts, nl.cell_t, nl.batch), dim=1)
            e = int(torch.argmin(d))
            self._reject_closest(atoms, float(d[e]), e)

    def _reject_closest(self, atoms, dmin: float, e: int) -> None:
        """Raise if the closest pair (edge ``e`` of the stored list, ``dmin`` Å; e < 0: no edges) is too close."""
        if e >= 0 and dmin < self.min_distance:
            i, j = (int(x) for x in self._nl.edge_index[:, e])
            raise too_close(0, atoms, i, j, dmin, self.min_distance)

    # ---- ASE interface ----

    def get_property(self, name, atoms=None, allow_calculation=True):
        with self._lock, self._held():
            return super().get_property(name, atoms, allow_calculation)

    def calculate(self, atoms=None, properties: Sequence[str] = ("energy",), system_changes=all_changes):
        with self._lock, self._held():
            self._calculate(atoms, properties, system_changes)

    def _calculate(self, atoms, properties, system_changes):
        super().calculate(atoms, properties, system_changes)
        atoms = self.atoms
        pos = np.asarray(atoms.get_positions(), dtype=np.float64)
        if not np.isfinite(pos).all():
            validate(0, atoms, self._z_to_species)  # raises with the offending atoms named
        if self._needs_rebuild(atoms, pos):
            self._build(atoms, pos)
        nl = self._nl
        periodic = bool(nl.pbc.all())
        positions = torch.as_tensor(pos, dtype=self.dtype, device=self.device)
        args = (positions, nl.species, nl.batch, nl.edge_index, nl.unit_shifts, nl.cell_t, 1)
        if self.backend != "fused":
            self._check_distances(atoms, positions)
        forward = self._script if self._bound is None else self._bound.forward
        with torch.enable_grad():  # the reference backend and TorchScript exports differentiate
            out = forward(*args, True, periodic)
        if CLOSEST_PAIR in out:  # the fused kernel measured every distance: this replaces _check_distances
            dmin, e = (float(x) for x in out[CLOSEST_PAIR])
            self._reject_closest(atoms, dmin, int(e))
        e_node = out[K.NODE_ENERGY].detach()
        energy = float(out[K.ENERGY].detach()[0])
        res = {"energy": energy, "free_energy": energy,
               "energies": e_node.to("cpu", torch.float64).numpy(),
               "forces": out[K.FORCES].detach().to("cpu", torch.float64).numpy()}
        vol = abs(float(np.linalg.det(nl.cell))) if periodic else 0.0
        if periodic:
            W = out[K.VIRIAL].detach()[0].to("cpu", torch.float64)
            res["stress"] = K.to_voigt(-W / vol).numpy()
        committee = self.committee  # the model's current one (a refit replaces it)
        if committee is not None:
            if self.uncertainty is not False or "energy_std" in properties:
                if COMMITTEE_ENERGY in out:
                    members = out[COMMITTEE_ENERGY].detach()[:, 0]
                else:
                    members = committee_energies(self._rows_model(), committee, out[K.ENERGY].detach(), args)[:, 0]
                res["energy_std"] = float(spread(members))
            if self.uncertainty is True or any(p in FORCE_STD_PROPERTIES for p in properties):
                res.update(self._force_spread(committee, args, periodic, vol))
        self.results = res

    def _force_spread(self, committee: torch.Tensor, args, periodic: bool, vol: float) -> Dict[str, np.ndarray]:
        """Force and stress standard deviations over the committee from one design-row evaluation."""
        positions, species, batch, edge_index, unit_shifts, cell, _ = args
        nl_batch = {K.POSITIONS: positions, K.SPECIES: species, K.BATCH: batch, K.EDGE_INDEX: edge_index,
                    K.UNIT_SHIFTS: unit_shifts, K.CELL: cell,
                    K.N_ATOMS: torch.tensor([positions.shape[0]], device=positions.device)}
        backend = self.backend if self.backend in ("fused", "analytic", "reference") else AUTO
        rows = batch_rows(self._rows_model(), nl_batch, backend=backend)
        p = member_predictions(committee, rows, torch.zeros(1, dtype=positions.dtype, device=positions.device))
        out = {"forces_std": spread(p[K.FORCES]).to("cpu", torch.float64).numpy()}
        if periodic:
            out["stress_std"] = (spread(p[K.VIRIAL])[0] / vol).to("cpu", torch.float64).numpy()
        return out

    def todict(self):
        d = {"skin": self.skin, "device": str(self.device), "dtype": str(self.dtype).replace("torch.", ""),
             "min_distance": self.min_distance, "rcut": self.rcut, "atomic_numbers": self.atomic_numbers}
        if self.model_path is not None:
            d["model"] = self.model_path
        return d
