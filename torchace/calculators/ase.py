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
import threading
from contextlib import contextmanager
from typing import Dict, List, Optional, Sequence

import numpy as np
import torch
from ase.calculators.calculator import Calculator, PropertyNotImplementedError, all_changes

from .. import keys as K
from ..fieldcheck import check_device, check_float
from ..uncertainty.committee import committee_energies, force_spreads, spread
from ..model.backends import AUTO
from ..model.backends.fused import COMMITTEE_ENERGY
from ..model.evaluate import stress_from_virial
from ..uncertainty.nonlinear import committee_linear_model
from ..structures.batch import DEFAULT_MIN_DISTANCE, too_close, validate
from ..structures.neighbours.search import neighbour_search
from ..structures.neighbours.skin import SkinList
from ..model.contract import capabilities
from ..model.watch import watch
from .core import TORCHSCRIPT, EngineAdapter, EngineModel, SpeciesMap, closest_pair, load_model

__all__ = ["TorchACECalculator", "PropertyNotImplementedError"]
log = logging.getLogger("torchace")

BASE_PROPERTIES = ["energy", "free_energy", "energies", "forces", "stress"]
STD_PROPERTIES = ["energy_std", "forces_std", "stress_std"]
FORCE_STD_PROPERTIES = ["forces_std", "stress_std"]


class TorchACECalculator(EngineAdapter, Calculator):
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
        if fused is not None:
            import warnings

            warnings.warn("TorchACECalculator(fused=...) is deprecated: use backend='fused' (or the default 'auto')",
                          DeprecationWarning, stacklevel=2)
            if fused:
                backend = "fused"
        loaded = load_model(model_or_path, self.device, self.dtype, backend)
        self.model_path: Optional[str] = loaded.path
        self.uncertainty = uncertainty
        self._script = loaded.script
        self._engine: Optional[EngineModel] = None
        if loaded.model is None:  # a TorchScript export: its own forward
            if backend not in (AUTO, TORCHSCRIPT) or compile:
                raise ValueError(f"backend={backend!r} / compile=True need a torchace model or model file, not a "
                                 "TorchScript export")
            self._script_backend = TORCHSCRIPT
        else:
            if compile and backend not in (AUTO, "analytic"):
                raise ValueError(f"compile=True compiles the analytic backend; it cannot be combined with "
                                 f"backend={backend!r}")
            # the model itself, or a copy on this device/dtype made again whenever the model changes; members'
            # energies inside the one pass unless spreads are switched off (then on request, in torch)
            self._engine = EngineModel(loaded.model, self.device, self.dtype, backend, compile=compile,
                                       committee=uncertainty is not False)
        log.info("TorchACECalculator: backend %s on %s", self.backend, self.device)
        self.rcut = loaded.rcut
        self.species = SpeciesMap(loaded.numbers)
        self.atomic_numbers = self.species.atomic_numbers
        # (token of the evaluated model, the linear model whose design rows and coefficients the committee
        # refers to): for a nonlinear model the linear model of the parameters its energy is linear in (a
        # snapshot with the learned radials, torchace.uncertainty.nonlinear), made again when it changes
        self._rows_cache = None
        self._token = None            # of the evaluated model, for the stored results
        if uncertainty and self.committee is None:
            raise ValueError("uncertainty=True needs a model with a committee (fit with solvers.BLR(committee_size=n) "
                             "or ARD); TorchScript exports carry none")
        self.implemented_properties = self._properties()
        self._nl = SkinList(self.rcut, self.skin)  # the Verlet list (structures.neighbours.skin)
        self._inputs = None  # species, batch and cell tensors of the list's structure
        # one calculation at a time: ASE keeps results (and this calculator its neighbour list) on the object,
        # so two threads would read each other's structures; get_property holds it across calculate + read
        self._lock = threading.RLock()

    # ---- model ----

    @property
    def backend(self) -> str:
        """The backend in use (``torchace.backends``; "torchscript" for an export)."""
        return self._script_backend if self._engine is None else self._engine.backend

    @property
    def model(self):
        """The model evaluated: the caller's model itself, or its copy on this device/dtype (None for a
        TorchScript export)."""
        return None if self._engine is None else self._engine.bound.model

    @property
    def committee(self) -> Optional[torch.Tensor]:
        """The evaluated model's committee [n_members, n_coefficients] as it is now (None: none)."""
        comm = getattr(self.model, "committee", None) if self._engine is not None else None
        return None if comm is None else comm.detach().to(self.device, self.dtype)

    def _properties(self) -> List[str]:
        return BASE_PROPERTIES + (STD_PROPERTIES if self.committee is not None else [])

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
        if self._engine is None:
            yield
            return
        with self._engine.bound.held() as token:
            if token != self._token:
                self.results = {}
                self.implemented_properties = self._properties()
                self._token = token
            yield

    # ---- neighbour list ----

    def _neighbours(self, atoms, pos: np.ndarray):
        """(species, batch, cell) tensors of the structure, with the skin list kept or rebuilt for ``pos``."""
        cell, pbc = atoms.cell.array, atoms.get_pbc()
        if self._nl.update(pos, cell, pbc, lambda: self._search(atoms, pos), key=(atoms.numbers,)):
            dev = self.device
            self._inputs = (torch.as_tensor(self.species.of_numbers(atoms.numbers), dtype=torch.long, device=dev),
                            torch.zeros(len(atoms), dtype=torch.long, device=dev),
                            torch.as_tensor(cell, dtype=self.dtype, device=dev).unsqueeze(0),
                            # the host cell and boundaries of the stress (stress_from_virial), made once per list
                            torch.as_tensor(np.asarray(pbc, dtype=bool)).reshape(1, 3),
                            torch.linalg.det(torch.as_tensor(cell, dtype=torch.float64).unsqueeze(0)).abs())
        return self._inputs[:3]

    def _search(self, atoms, pos: np.ndarray):
        validate(0, atoms, self.species.z_to_species)
        try:
            return neighbour_search(pos, atoms.cell.array, atoms.get_pbc(), self._nl.cutoff, self.device, self.dtype)
        except ValueError as exc:  # a hopeless cell (or skin), refused before the search
            raise type(exc)(f"{exc} (the list's cutoff is rcut {self.rcut:g} Å + skin {self.skin:g} Å)") from None

    def reset(self):
        """Forget results and the stored neighbour list."""
        super().reset()
        nl = self.__dict__.get("_nl")  # (ASE's Calculator.__init__ resets before the list exists)
        if nl is not None:
            nl.reset()

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
            validate(0, atoms, self.species.z_to_species)  # raises with the offending atoms named
        species, batch, cell = self._neighbours(atoms, pos)
        nl = self._nl
        periodic = bool(nl.pbc.all())
        positions = torch.as_tensor(pos, dtype=self.dtype, device=self.device)
        args = (positions, species, batch, nl.edge_index, nl.unit_shifts, cell, 1)
        check = self.min_distance > 0 and nl.edge_index.shape[1] > 0
        if check and self.backend != "fused":  # before the evaluation (the fused kernel measures inside it)
            self._reject_closest(atoms, *closest_pair(positions, nl.edge_index, nl.unit_shifts, cell, batch))
        forward = self._script if self._engine is None else self._engine.bound.forward
        with torch.enable_grad():  # the reference backend and TorchScript exports differentiate
            out = forward(*args, True, periodic)
        if check and self.backend == "fused":
            self._reject_closest(atoms, *closest_pair(positions, nl.edge_index, nl.unit_shifts, cell, batch, out))
        e_node = out[K.NODE_ENERGY].detach()
        energy = float(out[K.ENERGY].detach()[0])
        res = {"energy": energy, "free_energy": energy,
               "energies": e_node.to("cpu", torch.float64).numpy(),
               "forces": out[K.FORCES].detach().to("cpu", torch.float64).numpy()}
        pbc_h, volume = self._inputs[3:]
        if periodic:
            W = out[K.VIRIAL].detach()[:1].to("cpu", torch.float64)
            res["stress"] = K.to_voigt(stress_from_virial(W, None, pbc_h, volume)[0]).numpy()
        committee = self.committee  # the model's current one (a refit replaces it)
        if committee is not None:
            if self.uncertainty is not False or "energy_std" in properties:
                if COMMITTEE_ENERGY in out:
                    members = out[COMMITTEE_ENERGY].detach()[:, 0]
                else:
                    members = committee_energies(self._rows_model(), committee, out[K.ENERGY].detach(), args)[:, 0]
                res["energy_std"] = float(spread(members))
            if self.uncertainty is True or any(p in FORCE_STD_PROPERTIES for p in properties):
                res.update(self._force_spread(committee, args, periodic))
        self.results = res

    def _force_spread(self, committee: torch.Tensor, args, periodic: bool) -> Dict[str, np.ndarray]:
        """Force and stress standard deviations over the committee from one design-row evaluation."""
        positions, species, batch, edge_index, unit_shifts, cell, _ = args
        nl_batch = {K.POSITIONS: positions, K.SPECIES: species, K.BATCH: batch, K.EDGE_INDEX: edge_index,
                    K.UNIT_SHIFTS: unit_shifts, K.CELL: cell,
                    K.N_ATOMS: torch.tensor([positions.shape[0]], device=positions.device)}
        backend = self.backend if self.backend in ("fused", "analytic", "reference") else AUTO
        forces_std, virial_std = force_spreads(self._rows_model(), committee, nl_batch, backend=backend)
        out = {"forces_std": forces_std.to("cpu", torch.float64).numpy()}
        if periodic:
            vol = abs(float(np.linalg.det(self._nl.cell)))
            out["stress_std"] = (virial_std[0] / vol).to("cpu", torch.float64).numpy()
        return out

    def todict(self):
        d = {"skin": self.skin, "device": str(self.device), "dtype": str(self.dtype).replace("torch.", ""),
             "min_distance": self.min_distance, "rcut": self.rcut, "atomic_numbers": self.atomic_numbers}
        if self.model_path is not None:
            d["model"] = self.model_path
        return d
