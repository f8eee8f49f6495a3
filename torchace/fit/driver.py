"""``torchace.fit``: the linear ACE fit of ACEpotentials.jl's ``acefit!``, with priors and solvers.

Pipeline: data → labels and weights → E0 (given, from ``isolated_atom`` structures, or fitted) → prior
(a *basis* prior rescales the one-particle basis inside the model; a *column* prior scales the design
matrix columns, A → A·Γ⁻¹ and c = Γ⁻¹c') → weighted design matrix (dense, or a memory-bounded reduced
system) → solver → coefficients (referring to the model's own, possibly rescaled, basis) → training errors.
"""
from __future__ import annotations

import logging
import time
import warnings
from dataclasses import dataclass, field
from typing import Any, Dict, Optional

import torch

from ..fieldcheck import check_bool, check_device, check_float, check_int, check_str
from ..jobs import announce, dense_solve_peak, human_bytes, job_options, matrix_size
from ..model.backends import ROWS, select
from ..structures.batch import DEFAULT_MIN_DISTANCE
from .assembly import LinearSystem, assemble, assemble_reduced, fitting_structures
from .contacts import DEFAULT_CLOSE_CONTACT, check_close_contacts
from .data import Dataset, DataKeys, isolated_atom_energies, read_data
from .weights import resolve_weights
from .metrics import errors as error_table
from .metrics import format_table

log = logging.getLogger("torchace")


@dataclass
class FitResult:
    hyperparameters: Dict[str, Any]
    errors: Dict[str, Any]
    solver: str
    prior: Optional[Dict[str, Any]]
    E0: Dict[str, float]
    n_structures: int
    n_obs: int
    basis_size: int
    timings: Dict[str, float] = field(default_factory=dict)
    info: Dict[str, Any] = field(default_factory=dict)

    def table(self) -> str:
        return format_table(self.errors, "training errors")

    def to_dict(self) -> Dict[str, Any]:
        def clean(x):
            if isinstance(x, dict):
                return {str(k): clean(v) for k, v in x.items()}
            if isinstance(x, (list, tuple)):
                return [clean(v) for v in x]
            if isinstance(x, torch.Tensor):
                return x.tolist() if x.numel() < 64 else f"tensor{tuple(x.shape)}"
            if isinstance(x, (int, float, str, bool)) or x is None:
                return x
            return str(x)

        return clean(self.__dict__)


def set_E0(model, ds: Dataset, E0) -> Dict[str, float]:
    syms = model.elements
    if E0 is None or E0 == "isolated":
        found = isolated_atom_energies(ds)
        if E0 == "isolated" or found:
            missing = [s for s in syms if s not in found]
            if missing:
                raise ValueError(f"E0: no isolated_atom structure for {missing}; give E0 explicitly or E0='fit'")
            values = found
        else:
            values = dict(zip(syms, model.E0.tolist()))
            if all(v == 0.0 for v in values.values()):
                warnings.warn("E0 = 0 for all elements (no isolated_atom data, none given): fitting total energies")
    elif isinstance(E0, dict):
        unknown = set(E0) - set(syms)
        if unknown:
            raise ValueError(f"E0 given for {sorted(unknown)}, not in the model's elements {syms}")
        missing = [s for s in syms if s not in E0]
        if missing:  # the others would silently be 0 eV
            raise ValueError(f"E0 given for {sorted(E0)} but not for {missing}: give every element's isolated-atom "
                             "energy (0 is allowed), E0='isolated' or E0='fit'")
        values = {s: check_float("E0", s, E0[s]) for s in syms}  # NaN/inf/bool refused
    else:
        raise ValueError(f"E0 must be None, 'isolated', 'fit' or a dict, got {E0!r}")
    with torch.no_grad():
        model.E0.copy_(torch.tensor([values[s] for s in syms], dtype=model.E0.dtype))
    return values


def check_weights_match(weights, ds: Dataset) -> None:
    """Weights for a config_type the data do not contain are a typo, not a no-op: refuse them."""
    from .repulsion import RESTRAINT, SYNTHETIC_DIMER

    present = set(ds.config_types)
    unknown = sorted(set(weights or {}) - {"default", SYNTHETIC_DIMER, RESTRAINT} - present)
    if unknown:
        raise ValueError(f"weights given for config_type(s) {unknown} that the training data do not contain "
                         f"(its config_types: {sorted(present)}); a typo?")


def _check_fit_arguments(model, solver, prior, streaming, batch_atoms, min_distance, device, close_contact=0.0,
                         close_contact_error=False) -> None:
    """``fit``'s arguments, checked like the fit config's (the same checks), before any data is read."""
    from . import solvers as S
    from ..resources import available_bytes

    if solver is not None and not isinstance(solver, S.Solver):
        raise TypeError(f"solver must be a torchace.solvers object such as solvers.BLR() or solvers.QR(lam=1e-3), "
                        f"got {solver!r}")
    if prior is not None and not (hasattr(prior, "kind") and hasattr(prior, "to_dict")):
        raise TypeError(f"prior must be a torchace.priors object such as priors.algebraic_smoothness(p=4), got "
                        f"{prior!r}")
    check_str("fit", "streaming", streaming, choices=("qr", "normal"), allow_none=True)
    check_int("fit", "batch_atoms", batch_atoms, minimum=1)
    check_float("fit", "min_distance", min_distance, nonnegative=True)
    check_float("fit", "close_contact", close_contact, nonnegative=True)
    check_bool("fit", "close_contact_error", close_contact_error)
    if device is not None:
        check_device("fit", "device", str(device))
    members = int(getattr(solver, "committee_size", 0) or 0)
    avail = available_bytes(device)
    need = 3 * members * model.basis_size * 8  # the samples, their noise and one working copy (float64)
    if members and avail is not None and need > avail:
        raise ValueError(f"{type(solver).__name__}: committee_size {members:,} × {model.basis_size:,} basis functions "
                         f"needs {need / 2**30:.1f} GiB, more than the {avail / 2**30:.1f} GiB available; use a "
                         "smaller committee (8-32 members are typical)")


def read_announced(data, progress: bool, **kwargs) -> Dataset:
    """``read_data`` between two stage lines (``torchace.jobs.announce``): what is read, then how much it was."""
    if isinstance(data, Dataset):  # read already: no stage
        return read_data(data, **kwargs)
    t0 = time.perf_counter()
    announce(f"fit: reading the training data ({describe_data(data)})", progress)
    ds = read_data(data, **kwargs)
    announce(f"fit: read {len(ds)} structures, {sum(s.n_atoms for s in ds)} atoms in {time.perf_counter() - t0:.1f} s",
             progress)
    return ds


def assembly_line(model, train: Dataset, backend: str, device, streaming: Optional[str]) -> str:
    """The stage line of the assembly: the design matrix's rows × columns and bytes (an upper bound: every
    structure's 1 + 3N + 6 rows), or the K × K system the streaming assembly reduces it to."""
    rows, k = sum(3 * s.n_atoms + 7 for s in fitting_structures(train)), model.basis_size
    reduced = "" if streaming is None else \
        f", reduced on the fly to {k:,} × {k:,} ({streaming}; {human_bytes(k * k * 8)})"
    return f"fit: assembling the design matrix with the {backend} backend on {device}: up to {matrix_size(rows, k)}" \
        + reduced


def describe_data(data) -> str:
    """Short words for what ``fit``/``train`` read: the files and their sizes, or the number of structures."""
    import os

    paths = [data] if isinstance(data, (str, os.PathLike)) else (
        list(data) if isinstance(data, (list, tuple)) and all(isinstance(p, (str, os.PathLike)) for p in data)
        else None)
    if paths is None:
        return f"{len(data)} structures given" if hasattr(data, "__len__") else "structures given"
    size = sum(os.path.getsize(p) for p in paths if os.path.isfile(p))
    names = ", ".join(os.path.basename(os.fspath(p)) for p in paths[:3]) + (", ..." if len(paths) > 3 else "")
    return f"{len(paths)} file{'s' if len(paths) != 1 else ''}: {names}; {human_bytes(size)}"


@dataclass
class Solution:
    """Output of ``solve_system``: coefficients on the model's basis (Γ undone), committee, fitted E0."""

    coefficients: torch.Tensor
    committee: Optional[torch.Tensor]
    E0: Optional[torch.Tensor]  # [NZ] where E0 was fitted, else None
    result: Any  # the solver's result (hyperparameters, info)


def solve_system(system: LinearSystem, solver, *, gamma: Optional[torch.Tensor] = None, fit_e0: bool = False,
                 validation=None) -> Solution:
    """Solve an assembled weighted system, the algebra of ``fit`` after assembly.

    ``gamma``: a column prior Γ [K] (solve with A·Γ⁻¹, return c = Γ⁻¹c').  ``fit_e0``: the E0 columns of
    a dense system are left unregularised — projected out of the rows exactly, then recovered by least
    squares on the residual.  ``validation``: (A, y) of a validation system, for solvers that select on it.
    Separate from ``fit`` so that one assembled system can be solved under several priors and solvers.
    """
    if system.n_obs == 0:
        raise ValueError("the fit has no rows: every structure's labels have zero weight (or none are labelled); "
                         "check the weights and the data's energy/force/virial keys")
    if not (bool(torch.isfinite(system.A).all()) and bool(torch.isfinite(system.y).all())):
        raise ValueError("the weighted design matrix or targets hold inf/NaN (weights or labels too large for "
                         "float64?); check the weights and the data's labels")
    if not bool(system.A.any()):  # one pass over A, small next to assembling it
        raise ValueError("every design-matrix entry is zero: no training structure has a neighbour within the "
                         "model's cutoff (isolated atoms or far-apart molecules only, or rcut too small?); there is "
                         "nothing to fit")
    A, y = system.A.to(torch.float64), system.y.to(torch.float64)
    if gamma is not None:
        gamma = gamma.to(device=A.device, dtype=torch.float64)
        A = A / gamma
    Z = None
    if fit_e0:
        if system.e0_columns is None:
            raise ValueError("fitting E0 needs the dense design matrix (its E0 columns); give E0 or isolated atoms")
        Z = system.e0_columns.to(torch.float64)
        rank = int(torch.linalg.matrix_rank(Z)) if Z.numel() else 0
        if rank < Z.shape[1]:
            raise ValueError(f"E0='fit' is ill-posed here: the weighted energy rows determine only {rank} of the "
                             f"{Z.shape[1]} per-element energies (every structure has the same composition, or an "
                             "element has no weighted energy); give E0 or isolated_atom structures")
        Q, _ = torch.linalg.qr(Z)
        A = A - Q @ (Q.T @ A)
        y_fit = y - Q @ (Q.T @ y)
    else:
        y_fit = y
    val = None
    if validation is not None:
        vA, vy = validation[0].to(torch.float64), validation[1].to(torch.float64)
        val = (vA / gamma.to(vA.device) if gamma is not None else vA, vy)
    res = solver.solve(A, y_fit, n_obs=system.n_obs, rss_offset=system.rss_offset, validation=val)
    c = res.coefficients.to(torch.float64)
    committee = res.committee
    if gamma is not None:
        c = c / gamma.to(c.device)
        if committee is not None:
            committee = committee / gamma.to(committee.device)
    e0 = None
    if fit_e0:
        e0 = torch.linalg.lstsq(Z, (y - system.A.to(torch.float64) @ c).unsqueeze(1)).solution.squeeze(1)
    return Solution(coefficients=c, committee=committee, E0=e0, result=res)


@job_options("fit", default_threads=None)  # a library call leaves the threads alone; the CLI uses "auto"
def fit(model, data, *, weights=None, prior=None, solver=None, E0=None, keys: Optional[DataKeys] = None,
        skip_bad: bool = False, streaming: Optional[str] = None, batch_atoms: int = 2048, device=None,
        validation=None, progress: bool = False, compute_errors: bool = True, synthetic_dimers=False,
        repulsion_restraint=False, backend: str = "auto", min_distance: float = DEFAULT_MIN_DISTANCE,
        close_contact: float = DEFAULT_CLOSE_CONTACT, close_contact_error: bool = False) -> FitResult:
    """Fit ``model`` in place to ``data`` (a path, list of paths, list of ``ase.Atoms`` or a ``Dataset``).

    ``weights``: ``{"default": {"E": 30, "F": 1, "V": 1}, "<config_type>": {...}}`` (ACEpotentials.jl
    defaults; energy and virial rows scaled by 1/√N).  ``E0``: None (from ``isolated_atom`` structures
    if present, else the model's), ``"isolated"``, ``"fit"`` or ``{element: eV}``.  ``prior``: an object
    of ``torchace.priors``.  ``solver``: an object of ``torchace.solvers`` (default: BLR, as
    ``acefit!``).  ``streaming``: None (dense design matrix), ``"qr"`` or ``"normal"`` (memory-bounded).
    ``validation``: data for solvers that select hyper-parameters on a validation set (TruncatedSVD).
    ``synthetic_dimers`` / ``repulsion_restraint``: True or a dict of keyword arguments appends the dimers of
    ``torchace.fit.repulsion.synthetic_dimers`` (Darby et al.) / ``restraint_data`` (ACEpotentials.jl's
    ``repulsion_restraint``) to the training data (not to the error tables; see docs/repulsion.md).
    ``backend``: of the design rows, "auto" (the fastest for the model and device: the fused C++ kernel on
    CPU where it builds) or a name of ``torchace.backends``; ``result.info["backend"]`` records it.
    ``min_distance`` (Å): a training structure with a closer pair is an error naming its file, frame and
    atoms (implausible geometry; the calculator has the same argument).  ``close_contact``: a training structure
    with a pair closer than this fraction of the sum of their covalent radii gets a warning naming its file, frame
    and atoms (``close_contact_error``: an error; 0: not checked; ``torchace.fit.contacts``).
    ``threads``: torch threads during the fit, a positive integer, "auto" (the usable cores minus the load
    average; the default of ``torchace fit`` and the config) or None (the default here: unchanged, so a script's
    own thread setting and its numbers do not depend on the machine's load), restored after it; ``log``: a log
    file of the fit (``torchace.jobs``).
    ``progress``: also a line before every stage (reading, assembly, solve, errors) with its size and memory;
    the log gets them always.
    """
    from . import solvers as S

    t0 = time.perf_counter()
    _check_fit_arguments(model, solver, prior, streaming, batch_atoms, min_distance, device, close_contact,
                         close_contact_error)
    resolved = resolve_weights(weights)  # types and values checked before the data are read
    ds = read_announced(data, progress, keys=keys, elements=model.elements, skip_bad=skip_bad)
    check_weights_match(weights, ds)
    check_close_contacts(fitting_structures(ds), close_contact, close_contact_error)  # before synthetic data
    weights = resolved
    fit_e0 = isinstance(E0, str) and E0 == "fit"
    if fit_e0:
        e0 = {}
        with torch.no_grad():
            model.E0.zero_()
    else:
        e0 = set_E0(model, ds, E0)
    from .repulsion import augment, augmentation_report

    train, weights, extra = augment(model, ds, weights, synthetic_dimers=synthetic_dimers,
                                    repulsion_restraint=repulsion_restraint, fit_e0=fit_e0)
    solver = solver if solver is not None else S.BLR()
    from .priors import use_prior

    gamma = use_prior(model, prior)
    prior_info = model.prior_info
    if device is not None:
        model.to(device)  # assembly, solve and the fitted model live on one device
    dev = model.coefficients.device
    backend = select(model, dev, backend, ROWS).name  # checked now, before the expensive work
    log.info("fit: design rows with the %s backend on %s", backend, dev)
    timings = {"read": time.perf_counter() - t0}

    t0 = time.perf_counter()
    announce(assembly_line(model, train, backend, dev, streaming), progress)
    if streaming is None:
        system = assemble(model, train, weights, batch_atoms=batch_atoms, device=dev, progress=progress,
                          backend=backend, min_distance=min_distance)
    else:
        if fit_e0:
            raise ValueError("E0='fit' needs the dense design matrix (streaming=None); give E0 or isolated atoms")
        system = assemble_reduced(model, train, weights, method=streaming, batch_atoms=batch_atoms, device=dev,
                                  progress=progress, backend=backend, min_distance=min_distance)
    timings["assemble"] = time.perf_counter() - t0
    val = None
    if validation is not None:
        vds = read_data(validation, keys=keys, elements=model.elements, skip_bad=skip_bad)
        vsys = assemble(model, vds, weights, batch_atoms=batch_atoms, device=dev, backend=backend)
        val = (vsys.A, vsys.y)

    t0 = time.perf_counter()
    m, k = system.A.shape
    announce(f"fit: solving with {type(solver).__name__}: {matrix_size(m, k)}, peak memory ≈ "
             f"{human_bytes(dense_solve_peak(m, k))} (estimate)", progress)
    sol = solve_system(system, solver, gamma=gamma, fit_e0=fit_e0, validation=val)
    res, c, committee = sol.result, sol.coefficients, sol.committee
    timings["solve"] = time.perf_counter() - t0
    if not bool(torch.isfinite(c).all()):
        raise ValueError(f"{type(solver).__name__} returned non-finite coefficients: the system is too ill-conditioned "
                         "for it; regularise (solvers.QR(lam=...), solvers.BLR()) or check the data")
    if fit_e0:
        e0 = {s: float(v) for s, v in zip(model.elements, sol.E0.tolist())}
        with torch.no_grad():
            model.E0.copy_(sol.E0.to(model.E0.dtype))
    model.coefficients = c.to(model.coefficients.dtype)
    model.committee = None if committee is None else committee.to(model.coefficients.dtype)
    t0 = time.perf_counter()
    if compute_errors:
        announce(f"fit: training errors (evaluating {len(ds)} structures)", progress)
    errs = error_table(model, ds) if compute_errors else {}
    timings["errors"] = time.perf_counter() - t0
    result = FitResult(hyperparameters=dict(res.hyperparameters), errors=errs, solver=type(solver).__name__,
                       prior=prior_info, E0=e0, n_structures=len(fitting_structures(ds)), n_obs=system.n_obs,
                       basis_size=model.basis_size, timings=timings, info=dict(res.info))
    result.info["backend"] = backend
    if extra:
        result.info["augmentation"] = augmentation_report(model, extra)
    model.metadata = {"fit": {k: v for k, v in result.to_dict().items() if k != "info"}}
    return result

