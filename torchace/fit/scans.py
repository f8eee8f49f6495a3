"""Scans of the regularisation λ and of the prior (e.g. the Gaussian regularity prior's σ) on one assembled system.

``scan`` works on a ``fit.gram.GramSystem`` (assembled once with the error sets it reports): every prior is a
column scaling Γ of the same Gram matrix and every λ of a prior comes from one factorisation
(``fit.gram.TikhonovGram``), the errors from the error sets' residuals, rmse² = (cᵀGc − 2cᵀb + yᵀy)/n.
``scan_dual`` is the same for K > rows: one kernel AΓ⁻²Aᵀ per prior (Γ is inside the kernel), every λ from its
eigendecomposition (``fit.dual.TikhonovDual``), the errors from one pass over each error set's rows for every
prior and λ together.

λ is chosen on the ``select`` column (default the validation force RMSE, ``"validation_F"``); the best on
``test`` (default ``"test_F"``) is reported beside it for studies that follow a paper's best-on-test protocol.
``relative=True`` reads λ in units of mean(diag Γ⁻¹GΓ⁻¹) of each prior (the regularity study's convention).
The result is a table (a list of dicts, one per prior and λ), the chosen and best-on-test rows, the chosen full
solution (basis coefficients on the unscaled basis, then E0 corrections) and ``to_json``.
"""
from __future__ import annotations

import math
import os
import random
import time
from dataclasses import dataclass, field
from typing import Any, Dict, List, Optional, Sequence, Tuple

import torch

from ..atomic import write_json_atomic
from .dual import TikhonovDual, assemble_kernel, lams_relative
from .priors import use_prior
from .gram import GramSystem, TikhonovGram, assemble_gram, error_sources, mean_diag
from .streams import RowSource, stream_errors


@dataclass
class ScanResult:
    """``table``: one dict per (prior, λ) with ``prior``, ``lam``, ``lam_rel`` and the RMSE ``<set>_<kind>``
    (eV/atom for E and V, eV/Å for F; None where the solve failed); ``best``: the row chosen on ``select``;
    ``best_test``: the row best on ``test``; ``coefficients``: the chosen full solution [K + NZ]."""

    table: List[Dict[str, Any]]
    select: str
    test: Optional[str]
    best: Optional[Dict[str, Any]]
    best_test: Optional[Dict[str, Any]]
    coefficients: Optional[torch.Tensor] = None
    n_basis: int = 0
    info: Dict[str, Any] = field(default_factory=dict)

    def to_dict(self) -> Dict[str, Any]:
        return {"select": self.select, "test": self.test, "best": self.best, "best_test": self.best_test,
                "table": self.table, "info": self.info}

    def to_json(self, path: str) -> None:
        """The table and choices as JSON (written atomically)."""
        write_json_atomic(path, self.to_dict())

    def apply(self, model) -> None:
        """Put the chosen solution into ``model`` (an unscaled model as assembled): coefficients, and the fitted E0
        corrections added to its E0."""
        if self.coefficients is None:
            raise ValueError(f"scan: no λ gave a finite {self.select}; nothing to apply")
        c = self.coefficients
        with torch.no_grad():
            if c.shape[0] > self.n_basis:
                model.E0.add_(c[self.n_basis:].to(model.E0))
        model.coefficients = c[:self.n_basis].clone().to(model.coefficients)


def _gammas(priors, model, n_basis: int) -> List[Tuple[str, Optional[torch.Tensor]]]:
    """(name, Γ or None) for {name: None | a prior of torchace.priors | a tensor [K]}."""
    out = []
    for name, p in (priors if priors is not None else {"none": None}).items():
        if p is None or isinstance(p, torch.Tensor):
            out.append((str(name), p))
            continue
        if not hasattr(p, "column_scale"):
            raise TypeError(f"scan: priors[{name!r}] must be None, a torchace.priors object or a tensor [{n_basis}], "
                            f"got {type(p).__name__}")
        if model is None:
            raise ValueError(f"scan: priors[{name!r}] is a prior object: pass model= to compute its Γ")
        out.append((str(name), p.column_scale(model)))
    return out


def _finite(x: float) -> Optional[float]:
    return x if math.isfinite(x) else None


def _rows(name: str, lams: Sequence[float], unit: float, relative: bool, errors: Dict[str, torch.Tensor]):
    rows = []
    for j, lam in enumerate(lams):
        r = {"prior": name, "lam": float(lam) * (unit if relative else 1.0),
             "lam_rel": float(lam) if relative else float(lam) / unit}
        r.update({k: _finite(float(v[j])) for k, v in errors.items()})
        rows.append(r)
    return rows


class _Chooser:
    """Tracks the best row on ``select`` (and its solution) and on ``test`` while the priors are scanned."""

    def __init__(self, select: str, test: Optional[str]):
        self.select, self.test = select, test
        self.best = self.best_test = self.coef = None

    def offer(self, rows: List[Dict[str, Any]], C: torch.Tensor) -> None:
        for j, r in enumerate(rows):
            if self.select not in r:
                raise ValueError(f"scan: select={self.select!r} is not a column of the scan; columns: "
                                 f"{sorted(k for k in r if k not in ('prior', 'lam', 'lam_rel'))}")
            v = r[self.select]
            if v is not None and (self.best is None or v < self.best[self.select]):
                self.best, self.coef = r, C[:, j].clone()
            t = r.get(self.test) if self.test else None
            if t is not None and (self.best_test is None or t < self.best_test[self.test]):
                self.best_test = r


def scan(system: GramSystem, lams: Sequence[float], *, priors: Optional[Dict[str, Any]] = None, model=None,
         relative: bool = True, select: str = "validation_F", test: Optional[str] = "test_F",
         method: str = "auto") -> ScanResult:
    """Every prior × every λ on one Gram system (``fit.gram.assemble_gram`` with ``errors={"validation": ...,
    "test": ...}``), without reassembling; ``method``: ``TikhonovGram``'s ("eigh": one eigendecomposition per
    prior for all λ; "cholesky": one factorisation per λ; "auto": eigh where its memory fits)."""
    table: List[Dict[str, Any]] = []
    ch = _Chooser(select, test)
    methods = {}
    for name, gamma in _gammas(priors, model, system.n_basis):
        unit = mean_diag(system, gamma)
        abs_lams = [float(x) * unit if relative else float(x) for x in lams]
        solver = TikhonovGram(system, gamma, method=method)
        C, methods[name] = solver.solve(abs_lams), solver.method
        del solver  # its buffers (width² each) go before the next prior's
        rows = _rows(name, lams, unit, relative, system.error_table(C))
        ch.offer(rows, C)
        table += rows
    return ScanResult(table, select, test, ch.best, ch.best_test, ch.coef, system.n_basis,
                      {"solver": "gram", "methods": methods, "n_obs": system.n_obs, "K": system.n_basis})


def scan_dual(model, train, lams: Sequence[float], *, errors: Dict[str, Any], weights=None,
              priors: Optional[Dict[str, Any]] = None, fit_e0: bool = False, relative: bool = True,
              select: str = "validation_F", test: Optional[str] = "test_F", batch_atoms: int = 2048, device=None,
              keep_rows="auto", spill: Optional[str] = None, available: Optional[int] = None,
              method: str = "auto", checkpoint_dir: Optional[str] = None) -> ScanResult:
    """``scan`` for K > rows: per prior one kernel (``fit.dual.assemble_kernel``: ``keep_rows``, ``spill``), all λ
    from its eigendecomposition or Cholesky factors (``method``), the errors of ``errors`` ({name: structures or
    (structures, kinds)}) from one pass over their rows for every prior and λ together (``info["seconds"]``: each
    prior's kernel and solves, then that pass).  ``checkpoint_dir``: each prior's kernel is checkpointed
    there (``kernel_<i>.npz``, i the prior's position): a killed scan started again resumes where it stopped."""
    table: List[Dict[str, Any]] = []
    ch = _Chooser(select, test)
    sources: Dict[str, RowSource] = error_sources(model, errors, fit_e0=fit_e0, batch_atoms=batch_atoms,
                                                  device=device)
    n_basis = int(model.basis_size)
    plan, methods, seconds = None, {}, {}
    solved: List[Tuple[str, float, torch.Tensor]] = []
    for i, (name, gamma) in enumerate(_gammas(priors, model, n_basis)):
        t0 = time.perf_counter()
        ckpt = None if checkpoint_dir is None else os.path.join(checkpoint_dir, f"kernel_{i}.npz")
        ks = assemble_kernel(model, train, weights, gamma=gamma, fit_e0=fit_e0, batch_atoms=batch_atoms,
                             device=device, keep_rows=keep_rows, spill=spill, available=available, checkpoint=ckpt)
        plan, unit = ks.plan, lams_relative(ks)
        abs_lams = [float(x) * unit if relative else float(x) for x in lams]
        solver = TikhonovDual(ks, method=method, consume=True)
        C, methods[name] = solver.solve(abs_lams), solver.method
        del solver
        ks.remove_spill()
        del ks
        solved.append((name, unit, C))
        seconds[name] = time.perf_counter() - t0
    # the error sets' rows once for the solutions of every prior and λ together (one pass per set, not per prior)
    t0 = time.perf_counter()
    errs: Dict[str, torch.Tensor] = {}
    if solved:
        C_all = torch.cat([C for _, _, C in solved], 1)
        for sname, src in sources.items():
            e0 = C_all[n_basis:] if fit_e0 else None
            errs.update({f"{sname}_{k}": v for k, v in stream_errors(src, C_all[:n_basis], e0).items()})
    seconds["errors"] = time.perf_counter() - t0
    for j, (name, unit, C) in enumerate(solved):
        cols = slice(j * len(lams), (j + 1) * len(lams))
        rows = _rows(name, lams, unit, relative, {k: v[cols] for k, v in errs.items()})
        ch.offer(rows, C)
        table += rows
    return ScanResult(table, select, test, ch.best, ch.best_test, ch.coef, n_basis,
                      {"solver": "dual", "methods": methods, "K": n_basis, "seconds": seconds,
                       "plan": plan.to_dict() if plan is not None else None})


def split(structures, fractions: Sequence[float], seed: int = 0) -> List[list]:
    """Shuffle ``structures`` (seeded) and cut them into parts of the given fractions (summing to at most 1; the
    last part takes what rounding leaves), e.g. ``train, validation = split(data, (0.8, 0.2))``."""
    items = list(structures)
    if any(f < 0 for f in fractions) or sum(fractions) > 1 + 1e-12:
        raise ValueError(f"split: fractions must be >= 0 and sum to at most 1, got {list(fractions)}")
    random.Random(seed).shuffle(items)
    out, a = [], 0
    whole = abs(sum(fractions) - 1) < 1e-12
    for i, f in enumerate(fractions):
        b = len(items) if whole and i == len(fractions) - 1 else a + int(round(f * len(items)))
        out.append(items[a:b])
        a = b
    return out


def scan_data(model, train, lams: Sequence[float], *, validation=None, test=None, form: str = "gram",
              weights=None, priors: Optional[Dict[str, Any]] = None, fit_e0: bool = False,
              select: str = "validation_F", seed: int = 0, batch_atoms: int = 2048, device=None,
              checkpoint_dir: Optional[str] = None) -> ScanResult:
    """A scan from data, as ``torchace.fit`` fits: ``validation`` is structures or a fraction of ``train`` (a seeded
    ``split``), ``test`` structures (or None); ``form``: "gram" (K < rows: one Gram system for every prior) or
    "dual" (K > rows: one kernel per prior).  The model's E0 are the reference (``fit_e0``: corrections fitted);
    a basis prior left in it is undone (the priors are column scalings of the unscaled basis).  The chosen solution
    is put into ``model``.  ``checkpoint_dir``: the assembly (``gram.npz``) or each kernel is checkpointed there."""
    if form not in ("gram", "dual"):
        raise ValueError(f"scan: form must be 'gram' or 'dual', got {form!r}")
    use_prior(model, None)  # the priors are column scalings of the unscaled basis: no basis prior left in the model
    train = list(train)
    if isinstance(validation, float):
        train, validation = split(train, (1 - validation, validation), seed=seed)
    errors = {k: v for k, v in (("validation", validation), ("test", test)) if v is not None}
    test_key = "test_F" if test is not None else None
    if form == "gram":
        system = assemble_gram(model, train, weights, errors=errors, fit_e0=fit_e0, batch_atoms=batch_atoms,
                               device=device, checkpoint=None if checkpoint_dir is None else
                               os.path.join(checkpoint_dir, "gram.npz"))
        res = scan(system, lams, priors=priors, model=model, select=select, test=test_key)
    else:
        res = scan_dual(model, train, lams, errors=errors, weights=weights, priors=priors, fit_e0=fit_e0,
                        checkpoint_dir=checkpoint_dir,
                        select=select, test=test_key, batch_atoms=batch_atoms, device=device)
    res.info.update(form=form, n_train=len(train), n_validation=len(validation or []), n_test=len(test or []))
    res.apply(model)
    return res
