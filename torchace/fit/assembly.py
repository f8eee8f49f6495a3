"""Weighted least-squares system [E; F; V] for a data set, dense or memory-bounded.

Rows follow ACEpotentials.jl (``ACEfit.assemble``): per structure an energy row weighted by w_E/√N, the
3N force rows by w_F, the 6 Voigt virial rows by w_V/√N, targets E − Σ E0, F, W (eV, eV/Å, eV), each
minus the model's coefficient-free baseline (ZBL, if ``config.zbl``; docs/repulsion.md).
Structures are processed in batches on the model's device (float64 by default) with the core's
``batch_rows``.  ``assemble`` returns the dense matrix; ``assemble_reduced`` never holds more than one
batch of rows: it accumulates either an augmented R factor (QR, numerically safer) or the normal
equations, and returns an equivalent k×k system (R, z, ‖y‖² − ‖z‖², m) that every solver accepts.
"""
from __future__ import annotations

import sys
import time
from dataclasses import dataclass
from typing import Callable, Dict, Iterator, List, Optional

import torch

from .. import keys as K
from ..fieldcheck import check_int
from ..resources import available_bytes
from ..structures.batch import DEFAULT_MIN_DISTANCE, collate
from .data import ISOLATED_ATOM, DataError, Dataset, Labelled
from .weights import resolve_weights, weighted_system
from ..model.evaluate import model_inputs
from .rows import batch_rows


@dataclass
class LinearSystem:
    """min ‖A c − y‖² (+ rss_offset); for a reduced system A is k×k and n_obs counts the original rows."""

    A: torch.Tensor
    y: torch.Tensor
    n_obs: int
    rss_offset: float = 0.0
    reduced: bool = False
    # dense systems only: the E0 columns [m, NZ] (weighted element counts on the energy rows, 0 elsewhere)
    e0_columns: Optional[torch.Tensor] = None


def fitting_structures(ds: Dataset) -> List[Labelled]:
    """Structures that carry information for the fit (isolated atoms only define E0)."""
    return [s for s in ds if s.config_type != ISOLATED_ATOM]


def _structures_to_fit(ds: Dataset, batch_atoms) -> List[Labelled]:
    """The fitting structures, refusing none (only isolated atoms) and a batch size that is not an integer >= 1."""
    check_int("assembly", "batch_atoms", batch_atoms, minimum=1)
    structs = fitting_structures(ds)
    if not structs:
        raise ValueError(f"no structures to fit: the {len(ds)} structure(s) given are all isolated_atom "
                         "structures (they define E0 only); add training structures")
    return structs


def structure_batches(structs: List[Labelled], batch_atoms: int) -> Iterator[List[Labelled]]:
    cur, n = [], 0
    for s in structs:
        if cur and n + s.n_atoms > batch_atoms:
            yield cur
            cur, n = [], 0
        cur.append(s)
        n += s.n_atoms
    if cur:
        yield cur


def check_memory(structs: List[Labelled], k: int, *, device=None, dense: bool, itemsize: int = 8) -> None:
    """Refuse, before any work, structures or dense systems whose rows cannot fit in memory.

    One structure's rows (1 + 3N + 6 rows of k columns) are never split across batches, so a structure
    larger than the available memory is an error naming its file and frame; the dense path also needs
    the whole matrix at once (the streaming path, ``assemble_reduced``, does not).
    """
    avail = available_bytes(device)
    if avail is None or not structs:
        return
    gb = lambda b: f"{b / 2**30:.1f} GiB"  # noqa: E731
    for s in structs:
        need = (3 * s.n_atoms + 7) * k * itemsize * 2  # the rows and one working copy
        if need > avail:
            raise DataError(f"{s.source}: structure of {s.n_atoms} atoms needs {gb(need)} for its {k}-column "
                            f"design-matrix rows, more than the {gb(avail)} available on {device or 'cpu'}; "
                            "remove or split it, or fit a smaller basis")
    if dense:
        need = sum(3 * s.n_atoms + 7 for s in structs) * k * itemsize * 2
        if need > avail:
            raise MemoryError(f"the dense design matrix ({sum(3 * s.n_atoms + 7 for s in structs)} rows × {k} "
                              f"columns) needs {gb(need)}, more than the {gb(avail)} available; use the streaming "
                              "assembly (assemble_reduced, fit(..., streaming='qr'|'normal'), config "
                              "assembly.streaming)")


class _Progress:
    """Progress on stderr: one updating line on a terminal; otherwise (a SLURM log, a pipe) plain lines, at
    most one per 10 % of the work or per 30 s, so that logs stay readable."""

    def __init__(self, total: int, enabled: bool, label: str = "assembling"):
        self.total, self.done, self.enabled, self.label = total, 0, enabled, label
        self.t0 = self.t_last = time.perf_counter()
        self.tty = enabled and sys.stderr.isatty()
        self.next_fraction = 0.1

    def update(self, n: int) -> None:
        self.done += n
        if not self.enabled:
            return
        now = time.perf_counter()
        line = f"{self.label}: {self.done}/{self.total} atoms, {now - self.t0:.1f} s"
        finished = self.done >= self.total
        if self.tty:
            sys.stderr.write("\r" + line + ("\n" if finished else ""))
        elif finished or self.done >= self.next_fraction * self.total or now - self.t_last >= 30.0:
            sys.stderr.write(line + "\n")
            self.t_last = now
            while self.next_fraction * self.total <= self.done and self.next_fraction < 1.0:
                self.next_fraction += 0.1
        sys.stderr.flush()


def _baseline(model, batch) -> Optional[Dict[str, torch.Tensor]]:
    """Energy [S], forces [N, 3], virial [S, 3, 3] of the model's baseline on a batch (None without one)."""
    if getattr(model, "zbl", None) is None:
        return None
    with torch.enable_grad():
        out = model.baseline(*model_inputs(model, batch))
    return {k: out[k].detach() for k in (K.ENERGY, K.FORCES, K.VIRIAL)}


def batch_system(model, structs: List[Labelled], weights, *, device=None, memory_budget: int = 256 * 2**20,
                 backend: str = "auto", min_distance: float = DEFAULT_MIN_DISTANCE):
    """Weighted rows, targets and E0 columns of one batch: (A [m, K], y [m], Z [m, NZ])."""
    dtype = model.coefficients.dtype
    dev = device or model.coefficients.device
    batch = collate([s.atoms for s in structs], model.config.numbers, model.rcut, dtype=dtype, device=dev,
                    names=[s.source for s in structs], min_distance=min_distance)
    rows = batch_rows(model, batch, memory_budget, backend)
    base = _baseline(model, batch)

    def target(kind, k, s, f0):  # the label minus E0 and the baseline
        if kind == "E":
            return float(s.energy - model.reference_energy(s.atoms.numbers)
                         - (float(base[K.ENERGY][k]) if base is not None else 0.0))
        if kind == "F":
            f = torch.as_tensor(s.forces.reshape(-1), dtype=dtype, device=dev)
            return f - base[K.FORCES][f0 // 3:f0 // 3 + s.n_atoms].reshape(-1) if base is not None else f
        W = torch.as_tensor(s.virial, dtype=dtype, device=dev)
        return K.to_voigt(W - base[K.VIRIAL][k] if base is not None else W)

    blocks, targets, energy_rows = weighted_system(structs, rows, weights, target)
    if not blocks:
        return (torch.zeros(0, model.basis_size, dtype=dtype, device=dev), torch.zeros(0, dtype=dtype, device=dev),
                torch.zeros(0, model.nz, dtype=dtype, device=dev))
    A = torch.cat(blocks)
    Z = torch.zeros(A.shape[0], model.nz, dtype=dtype, device=dev)
    numbers = torch.tensor(model.config.numbers)
    for r, k, wE in energy_rows:  # the E0 columns: weighted element counts on the energy rows
        counts = (torch.as_tensor(structs[k].atoms.numbers).unsqueeze(1) == numbers).sum(0).to(torch.float64)
        Z[r] = (counts * float(wE)).to(Z)
    return A, torch.cat(targets), Z


def assemble(model, ds: Dataset, weights=None, *, batch_atoms: int = 2048, device=None, progress: bool = False,
             memory_budget: int = 256 * 2**20, backend: str = "auto",
             min_distance: float = DEFAULT_MIN_DISTANCE) -> LinearSystem:
    """Dense weighted system for all fitting structures of ``ds`` (``backend``: of the rows, ``torchace.backends``)."""
    weights = resolve_weights(weights)
    structs = _structures_to_fit(ds, batch_atoms)
    check_memory(structs, model.basis_size, device=device, dense=True)
    bar = _Progress(sum(s.n_atoms for s in structs), progress)
    As, ys, Zs = [], [], []
    for b in structure_batches(structs, batch_atoms):
        A, y, Z = batch_system(model, b, weights, device=device, memory_budget=memory_budget, backend=backend,
                               min_distance=min_distance)
        As.append(A)
        ys.append(y)
        Zs.append(Z)
        bar.update(sum(s.n_atoms for s in b))
    A, y = torch.cat(As), torch.cat(ys)
    return LinearSystem(A=A, y=y, n_obs=int(A.shape[0]), e0_columns=torch.cat(Zs))


def assemble_reduced(model, ds: Dataset, weights=None, *, method: str = "qr", batch_atoms: int = 2048,
                     device=None, progress: bool = False, memory_budget: int = 256 * 2**20,
                     on_batch: Optional[Callable[[int, Dict[str, torch.Tensor]], None]] = None,
                     state: Optional[Dict[str, torch.Tensor]] = None, backend: str = "auto",
                     min_distance: float = DEFAULT_MIN_DISTANCE) -> LinearSystem:
    """Memory-bounded assembly: the k×k equivalent system, one batch of rows in memory at a time.

    ``method="qr"`` keeps the (k+1)×(k+1) triangular factor of [A | y] (stable); ``"normal"`` accumulates
    AᵀA, Aᵀy, yᵀy in float64 (cheaper per batch, squares the condition number).  ``state``/``on_batch``
    allow checkpointing: ``on_batch(n_batches_done, state)`` is called after every batch, and passing a
    saved ``state`` resumes after its ``n_batches`` batches.
    """
    if method not in ("qr", "normal"):
        raise ValueError(f"method must be 'qr' or 'normal', got {method!r}")
    weights = resolve_weights(weights)
    if state is not None and int(state.get("n_obs", 0)) > 0 and not fitting_structures(ds):
        structs = []  # finishing accumulated rows (distributed.finish, a resumed checkpoint): nothing more to add
    else:
        structs = _structures_to_fit(ds, batch_atoms)
    check_memory(structs, model.basis_size, device=device, dense=False)
    k = model.basis_size
    dev = device or model.coefficients.device
    f64 = dict(dtype=torch.float64, device=dev)
    if state is None:
        state = {"n_batches": torch.tensor(0), "n_obs": torch.tensor(0)}
        if method == "qr":
            state["T"] = torch.zeros(0, k + 1, **f64)
        else:
            state.update(AtA=torch.zeros(k, k, **f64), Aty=torch.zeros(k, **f64), yty=torch.zeros((), **f64))
    skip = int(state["n_batches"])
    bar = _Progress(sum(s.n_atoms for s in structs), progress)
    for nb, b in enumerate(structure_batches(structs, batch_atoms)):
        if nb < skip:
            bar.update(sum(s.n_atoms for s in b))
            continue
        A, y, _ = batch_system(model, b, weights, device=device, memory_budget=memory_budget, backend=backend,
                               min_distance=min_distance)
        A, y = A.to(torch.float64), y.to(torch.float64)
        if method == "qr":
            M = torch.cat([state["T"], torch.cat([A, y.unsqueeze(1)], dim=1)])
            state["T"] = torch.linalg.qr(M, mode="r")[1][: k + 1]
        else:
            state["AtA"] += A.T @ A
            state["Aty"] += A.T @ y
            state["yty"] += y @ y
        state["n_obs"] = state["n_obs"] + A.shape[0]
        state["n_batches"] = torch.tensor(nb + 1)
        bar.update(sum(s.n_atoms for s in b))
        if on_batch is not None:
            on_batch(nb + 1, state)
    n_obs = int(state["n_obs"])
    if method == "qr":
        T = state["T"]
        if T.shape[0] < k + 1:  # fewer rows than columns so far: pad with zero rows
            T = torch.cat([T, torch.zeros(k + 1 - T.shape[0], k + 1, **f64)])
        R, z, rho = T[:k, :k], T[:k, k], T[k, k]
        return LinearSystem(A=R, y=z, n_obs=n_obs, rss_offset=float(rho * rho), reduced=True)
    # normal equations → an equivalent square system via the symmetric eigendecomposition (handles rank
    # deficiency, e.g. the duplicated (A,B)/(B,A) pair blocks of multi-element models)
    lam, V = torch.linalg.eigh(state["AtA"])
    keep = lam > lam.max().clamp_min(0) * 1e-14
    sq = lam.clamp_min(0).sqrt()
    R = (V * sq).T  # RᵀR = AᵀA
    w = V.T @ state["Aty"]
    z = torch.where(keep, w / torch.where(keep, sq, torch.ones_like(sq)), torch.zeros_like(w))
    rss = float(state["yty"] - z @ z)
    return LinearSystem(A=R, y=z, n_obs=n_obs, rss_offset=max(rss, 0.0), reduced=True)
