"""Rows streamed batch by batch, the residual statistics a test error needs, and the memory plan of the Gram and
kernel solvers (``fit.gram``, ``fit.dual``).

``RowSource``: the rows [A | Z] and targets y of a set of structures exactly as ``fit.assembly.batch_system``
gives them (A the weighted design rows, Z the weighted E0 count columns when E0 are fitted), one batch of
``batch_atoms`` at a time, each row tagged with its kind (E, F or V).  An *error* source weights every label 1
and divides energy and virial rows by N once more, so that its rows are per atom: the RMSE of its residual is
the error table's (eV/atom, eV/Å, eV/atom).

``Residual``: ‖M c − y‖² over the n rows of one kind, kept either as moments (G = MᵀM, b = Mᵀy, yᵀy), so that

    rmse² = (cᵀ G c − 2 cᵀ b + yᵀ y) / n,

or, where a kind has no more rows than columns (cheaper), as the rows themselves.  Both give the same numbers
(to rounding); neither needs the rows again for a new c.

``MemoryPlan``: the bytes each part of a solve needs (with K, the number of rows, and the available memory), so
that what cannot fit is refused before any work, naming the numbers.
"""
from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Dict, Iterator, List, Optional, Sequence, Tuple

import torch

from ..fieldcheck import check_int
from ..resources import ResourceLimitError, available_bytes, gib
from ..structures.batch import DEFAULT_MIN_DISTANCE
from .assembly import batch_system, fitting_structures, structure_batches
from .weights import label_weights, resolve_weights

KINDS = ("E", "F", "V")


def error_weights(kinds: Sequence[str]) -> Dict[str, Dict[str, float]]:
    """Weight 1 for the labels of ``kinds``, 0 for the others (``batch_system`` leaves weight-0 rows out)."""
    bad = sorted(set(kinds) - set(KINDS))
    if bad:
        raise ValueError(f"error kinds must be among {KINDS}, got {bad}")
    return {"default": {k: (1.0 if k in kinds else 0.0) for k in KINDS}}


class RowSource:
    """The rows of ``structs`` (a ``Dataset`` or list of ``Labelled``; isolated atoms are left out) in batches.

    ``weights``: the fit's (resolved like ``fit``'s); ``per_atom``: an error source (see the module docstring;
    build one with ``RowSource.errors``).  ``fit_e0``: the E0 count columns follow the K basis columns."""

    def __init__(self, model, structs, weights=None, *, fit_e0: bool = False, per_atom: bool = False,
                 batch_atoms: int = 2048, device=None, memory_budget: int = 256 * 2**20, backend: str = "auto",
                 min_distance: float = DEFAULT_MIN_DISTANCE):
        check_int("RowSource", "batch_atoms", batch_atoms, minimum=1)
        self.model, self.weights = model, resolve_weights(weights)
        self.structs = fitting_structures(structs)
        self.fit_e0, self.per_atom = bool(fit_e0), bool(per_atom)
        self.device = torch.device(device) if device is not None else model.coefficients.device
        if self.device.type != model.coefficients.device.type:  # collate puts the batch there, the model must follow
            raise ValueError(f"device={str(self.device)!r} but the model is on {model.coefficients.device}; move it "
                             f"first (model.to({str(self.device)!r}))")
        self.kw = dict(device=self.device, memory_budget=memory_budget, backend=backend, min_distance=min_distance)
        self.batches = list(structure_batches(self.structs, batch_atoms)) if self.structs else []
        self.batch_atoms = int(batch_atoms)
        self.n_basis = int(model.basis_size)
        self.width = self.n_basis + (int(model.nz) if fit_e0 else 0)
        self.kinds, self.scale = self.layout(self.structs)
        self.n_rows = len(self.kinds)

    @classmethod
    def errors(cls, model, structs, kinds: Sequence[str] = KINDS, **kw) -> "RowSource":
        """A source whose residual RMSE per kind is the error table's (unit weights, E and V per atom)."""
        return cls(model, structs, error_weights(kinds), per_atom=True, **kw)

    def layout(self, structs) -> Tuple[List[str], List[float]]:
        """Each row's kind and extra factor (1/√N on per-atom E and V rows), in ``batch_system``'s order."""
        kinds, scale = [], []
        for s in structs:
            wE, wF, wV = label_weights(self.weights, s)
            f = 1.0 / math.sqrt(s.n_atoms) if self.per_atom else 1.0
            for kind, w, n, g in (("E", wE, 1, f), ("F", wF, 3 * s.n_atoms, 1.0), ("V", wV, 6, f)):
                if w != 0:
                    kinds += [kind] * n
                    scale += [g] * n
        return kinds, scale

    def rows_of(self, kind: str) -> int:
        return sum(1 for k in self.kinds if k == kind)

    def max_batch_rows(self) -> int:
        return max((len(self.layout(b)[0]) for b in self.batches), default=0)

    def batch(self, i: int) -> Tuple[torch.Tensor, torch.Tensor, List[str]]:
        """Batch i: (M [m, width] float64, y [m] float64, the m row kinds)."""
        b = self.batches[i]
        A, y, Z = batch_system(self.model, b, self.weights, **self.kw)
        M = torch.cat([A, Z], 1) if self.fit_e0 else A
        M, y = M.to(torch.float64), y.to(torch.float64)
        kinds, scale = self.layout(b)
        if len(kinds) != M.shape[0]:  # the layout must be batch_system's, row for row
            raise RuntimeError(f"row layout of batch {i}: {len(kinds)} rows expected, batch_system gave {M.shape[0]}")
        if self.per_atom:
            g = torch.tensor(scale, dtype=torch.float64, device=M.device)
            M, y = M * g[:, None], y * g
        return M, y, kinds

    def __iter__(self) -> Iterator[Tuple[torch.Tensor, torch.Tensor, List[str]]]:
        for i in range(len(self.batches)):
            yield self.batch(i)


def kind_index(kinds: List[str], kind: str, device) -> torch.Tensor:
    return torch.tensor([i for i, k in enumerate(kinds) if k == kind], dtype=torch.long, device=device)


@dataclass
class Residual:
    """‖M c − y‖² over ``n`` rows of one kind: as moments (G, b, yy) or as the rows (rows, y)."""

    n: int
    G: Optional[torch.Tensor] = None
    b: Optional[torch.Tensor] = None
    yy: Optional[torch.Tensor] = None
    rows: Optional[torch.Tensor] = None
    y: Optional[torch.Tensor] = None

    def sse(self, C: torch.Tensor) -> torch.Tensor:
        """Sum of squared residuals for each column of C [width, p] (or c [width]): [p] (or a scalar)."""
        one = C.ndim == 1
        C = (C[:, None] if one else C).to(torch.float64)
        if self.rows is not None:
            out = ((self.rows @ C - self.y[:, None]) ** 2).sum(0)
        else:  # cᵀGc − 2cᵀb + yᵀy, which rounding can push a little below 0
            out = ((C * (self.G @ C)).sum(0) - 2 * (self.b @ C) + self.yy).clamp_min(0.0)
        return out[0] if one else out

    def rmse(self, C: torch.Tensor) -> torch.Tensor:
        return torch.sqrt(self.sse(C) / self.n) if self.n else torch.full_like(self.sse(C), float("nan"))


def residual_state(prefix: str, n: int, width: int, device) -> Dict[str, torch.Tensor]:
    """Empty accumulation state of a ``Residual`` of n rows: the rows where n <= width (fewer bytes), else moments."""
    f64 = dict(dtype=torch.float64, device=device)
    if n <= width:
        return {f"{prefix}.rows": torch.zeros(n, width, **f64), f"{prefix}.y": torch.zeros(n, **f64),
                f"{prefix}.fill": torch.tensor(0)}
    return {f"{prefix}.G": torch.zeros(width, width, **f64), f"{prefix}.b": torch.zeros(width, **f64),
            f"{prefix}.yy": torch.zeros((), **f64)}


def residual_bytes(n: int, width: int) -> int:
    return 8 * (min(n, width) * width + width + n)


def accumulate_residual(state: Dict[str, torch.Tensor], prefix: str, M: torch.Tensor, y: torch.Tensor) -> None:
    if f"{prefix}.rows" in state:
        f = int(state[f"{prefix}.fill"])
        state[f"{prefix}.rows"][f:f + M.shape[0]] = M
        state[f"{prefix}.y"][f:f + M.shape[0]] = y
        state[f"{prefix}.fill"] = torch.tensor(f + M.shape[0])
    else:
        state[f"{prefix}.G"].addmm_(M.T, M)
        state[f"{prefix}.b"].addmv_(M.T, y)
        state[f"{prefix}.yy"] += y @ y


def residual_from_state(state: Dict[str, torch.Tensor], prefix: str, n: int) -> Residual:
    if f"{prefix}.rows" in state:
        return Residual(n, rows=state[f"{prefix}.rows"], y=state[f"{prefix}.y"])
    return Residual(n, G=state[f"{prefix}.G"], b=state[f"{prefix}.b"], yy=state[f"{prefix}.yy"])


def stream_errors(source: RowSource, C: torch.Tensor, e0: Optional[torch.Tensor] = None) -> Dict[str, torch.Tensor]:
    """RMSE per kind of an (error) source for each column of C [K, p] (basis coefficients), with E0 corrections
    ``e0`` [NZ, p] on the count columns if the source has them: one pass over its rows, none kept."""
    C = C.to(torch.float64).to(source.device)
    if source.fit_e0:
        C = torch.cat([C, e0.to(C)], 0)
    sse: Dict[str, torch.Tensor] = {}
    for M, y, kinds in source:
        R = M @ C - y[:, None]
        for kind in set(kinds):
            idx = kind_index(kinds, kind, R.device)
            sse[kind] = sse.get(kind, 0) + (R[idx] ** 2).sum(0)
    return {k: torch.sqrt(v / source.rows_of(k)) for k, v in sse.items()}


@dataclass
class MemoryPlan:
    """Bytes per part of a streaming solve (``parts``), the basis size K and the rows it was planned for."""

    what: str
    K: int
    rows: int
    parts: Dict[str, int] = field(default_factory=dict)
    available: Optional[int] = None
    device: str = "cpu"

    @property
    def need(self) -> int:
        return int(sum(self.parts.values()))

    def check(self, advice: str) -> "MemoryPlan":
        """Raise ``ResourceLimitError`` naming K, the rows, every part and the memory available, if it cannot fit."""
        if self.available is not None and self.need > self.available:
            detail = ", ".join(f"{k} {gib(v)}" for k, v in self.parts.items())
            raise ResourceLimitError(f"{self.what} with K = {self.K:,} basis columns and {self.rows:,} rows needs "
                                     f"{gib(self.need)} ({detail}), more than the {gib(self.available)} available "
                                     f"on {self.device}; {advice}")
        return self

    def to_dict(self) -> Dict[str, object]:
        return {"what": self.what, "K": self.K, "rows": self.rows, "parts": dict(self.parts), "need": self.need,
                "available": self.available, "device": self.device}


def make_plan(what: str, K: int, rows: int, parts: Dict[str, int], device=None, available: Optional[int] = None):
    """A ``MemoryPlan`` with the memory available on ``device`` now (or the ``available`` given, e.g. for tests)."""
    dev = torch.device(device) if device is not None else torch.device("cpu")
    avail = available_bytes(dev) if available is None else int(available)
    return MemoryPlan(what, int(K), int(rows), {k: int(v) for k, v in parts.items()}, avail, str(dev))


def choose_method(method: str, n: int, device, who: str) -> str:
    """"eigh" (every λ from one eigendecomposition) or "cholesky" (one factor per λ) for an n×n system: "auto" takes
    eigh where its extra 3 n² doubles (the copy LAPACK diagonalises, its eigenvectors and the 2 n² workspace of
    divide and conquer, beyond the n² of the Cholesky factor) fit in the memory available now, else Cholesky."""
    if method not in ("auto", "eigh", "cholesky"):
        raise ValueError(f"{who}: method must be 'auto', 'eigh' or 'cholesky', got {method!r}")
    if method != "auto":
        return method
    avail = available_bytes(device)
    return "eigh" if avail is None or 8 * 4 * n * n <= avail else "cholesky"
