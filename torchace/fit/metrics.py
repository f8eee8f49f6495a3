"""Error tables: RMSE and MAE per config_type and overall, and a parity plot.

Units follow ACEpotentials.jl's tables: E in meV/atom, F in eV/Å per Cartesian component, V in meV/atom.
"""
from __future__ import annotations

import os

from typing import Dict, List, Optional

import numpy as np
import torch

from .. import keys as K
from .data import ISOLATED_ATOM, Dataset, read_data
from ..model.evaluate import evaluate_batch
from ..structures.batch import collate

ALL = "all"


def predictions(model, ds: Dataset, *, batch_atoms: int = 4096) -> List[Dict[str, np.ndarray]]:
    """Model energy/forces/virial for every structure of ``ds`` (batched evaluation), as numpy."""
    out: List[Dict[str, np.ndarray]] = []
    structs = list(ds)
    k = 0
    while k < len(structs):
        batch, n = [], 0
        while k < len(structs) and (not batch or n + structs[k].n_atoms <= batch_atoms):
            batch.append(structs[k])
            n += structs[k].n_atoms
            k += 1
        res = evaluate_batch(model, collate([s.atoms for s in batch], model.config.numbers, model.rcut,
                                            dtype=model.coefficients.dtype, device=model.coefficients.device,
                                            names=[s.source for s in batch]))
        forces = torch.split(res[K.FORCES], res[K.N_ATOMS].tolist())
        for j in range(len(batch)):
            out.append({K.ENERGY: float(res[K.ENERGY][j]), K.FORCES: forces[j].cpu().numpy(),
                        K.VIRIAL: res[K.VIRIAL][j].cpu().numpy()})
    return out


def structure_errors(ds: Dataset, preds) -> List[Dict[str, Optional[np.ndarray]]]:
    """Per-structure prediction − label, aligned with ``ds``: E (meV/atom, [1]), F (eV/Å, [N, 3]), V (meV/atom,
    [3, 3]); None where the structure has no such label."""
    out = []
    for s, p in zip(ds, preds):
        out.append({"E": None if s.energy is None else np.array([(p[K.ENERGY] - s.energy) / s.n_atoms * 1e3]),
                    "F": None if s.forces is None else p[K.FORCES] - s.forces,
                    "V": None if s.virial is None else (p[K.VIRIAL] - s.virial) / s.n_atoms * 1e3})
    return out


def _stats(x: List[np.ndarray]) -> Optional[Dict[str, float]]:
    if not x:
        return None
    v = np.concatenate([np.ravel(a) for a in x])
    if v.size == 0:
        return None
    return {"rmse": float(np.sqrt(np.mean(v * v))), "mae": float(np.mean(np.abs(v)))}


def errors(model, data, *, include_isolated: bool = True, preds=None,
           **read_kwargs) -> Dict[str, Dict[str, Optional[Dict[str, float]]]]:
    """``{config_type or "all": {"E": {"rmse", "mae"}, "F": ..., "V": ...}}`` (meV/atom, eV/Å, meV/atom).

    A quantity without labels in a group is ``None``.  Isolated atoms count (as in ACEpotentials.jl's
    tables; their energy error is zero when E0 comes from them) unless ``include_isolated=False``.
    """
    ds = read_data(data, elements=model.elements, **read_kwargs)
    preds = preds if preds is not None else predictions(model, ds)  # aligned with all of ds
    groups: Dict[str, Dict[str, List[np.ndarray]]] = {}
    for s, e in zip(ds, structure_errors(ds, preds)):
        if s.config_type == ISOLATED_ATOM and not include_isolated:
            continue
        for g in (s.config_type, ALL):
            d = groups.setdefault(g, {"E": [], "F": [], "V": []})
            for q in ("E", "F", "V"):
                if e[q] is not None:
                    d[q].append(e[q])
    order = sorted(g for g in groups if g != ALL) + [ALL]
    return {g: {q: _stats(groups[g][q]) for q in ("E", "F", "V")} for g in order}




def bootstrap_mae(per_structure: List[Dict[str, Optional[np.ndarray]]], *, n: int = 10000, level: float = 0.95,
                  seed: int = 0) -> Dict[str, Optional[Dict[str, float]]]:
    """Percentile bootstrap interval of the E and F MAE, resampling whole structures (a test set's forces are
    correlated within a structure, so structures, not components, are the independent draws).

    Returns ``{"E": {"mae", "lo", "hi"}, "F": {...}}`` (None where no structure has the label).  With 25-31
    test structures, as in the Zuo et al. sets, the interval shows how much of a difference between two MAEs
    the test set can resolve.
    """
    if not 0 < level < 1:
        raise ValueError(f"level must be in (0, 1), got {level}")
    rng = np.random.default_rng(seed)
    out: Dict[str, Optional[Dict[str, float]]] = {}
    for q in ("E", "F"):
        errs = [np.abs(np.ravel(e[q])) for e in per_structure if e[q] is not None]
        if not errs:
            out[q] = None
            continue
        sums = np.array([e.sum() for e in errs])
        counts = np.array([e.size for e in errs], dtype=float)
        idx = rng.integers(0, len(errs), size=(n, len(errs)))
        boot = sums[idx].sum(1) / counts[idx].sum(1)
        a = (1 - level) / 2
        out[q] = {"mae": float(sums.sum() / counts.sum()), "lo": float(np.quantile(boot, a)),
                  "hi": float(np.quantile(boot, 1 - a))}
    return out


def format_table(err: Dict[str, Dict[str, Optional[Dict[str, float]]]], title: str = "") -> str:
    """Plain-text table in the style of ACEpotentials.jl's error tables."""
    lines = []
    if title:
        lines.append(title)
    # a quantity no group has (e.g. virials of molecules, or a fit without virial labels) gets no columns
    quantities = [q for q in ("E", "F", "V") if any(d.get(q) is not None for d in err.values())] or ["E"]
    units = {"E": "meV/at", "F": "eV/Å", "V": "meV/at"}
    head = f"{'config_type':<20} " + " ".join(f"{q + ' ' + m:>9}" for q in quantities for m in ("rmse", "mae"))
    lines += [head, f"{'':<20} " + " ".join(f"{units[q]:>9}" for q in quantities for _ in range(2)), "-" * len(head)]
    for g, d in err.items():
        cells = []
        for q in quantities:
            s = d.get(q)
            cells += ["-", "-"] if s is None else [f"{s['rmse']:.4g}", f"{s['mae']:.4g}"]
        lines.append(f"{g:<20} " + " ".join(f"{c:>9}" for c in cells))
    return "\n".join(lines)


def parity_plot(model, data, path: str, *, preds=None, title: Optional[str] = None, overwrite: bool = False,
                **read_kwargs) -> str:
    """Energy-per-atom and force-component parity plots (PNG, ``torchace.analysis.plots.parity_panels``), written
    atomically: axes with units, a colour and an RMSE per config_type in the legend, the identity line; each panel
    is titled with the set (``title``, default: the data file's name) and its MAE / RMSE (meV/atom, eV/Å).  An
    existing file at ``path`` is replaced only if it is a torchace plot, or with ``overwrite`` (torchace.atomic,
    the output rule).

    ``preds`` (optional) must be aligned with all structures of ``data`` (as ``predictions`` returns)."""
    from ..analysis.plots import parity_panels
    from ..atomic import PLOT, check_output

    check_output(path, PLOT, overwrite)  # before the predictions
    ds = read_data(data, elements=model.elements, **read_kwargs)
    preds = preds if preds is not None else predictions(model, ds)  # aligned with all of ds
    keep = [k for k, s in enumerate(ds) if s.config_type != ISOLATED_ATOM]
    structs, preds = [ds.structures[k] for k in keep], [preds[k] for k in keep]
    if title is None:
        title = os.path.basename(data) if isinstance(data, (str, os.PathLike)) else "data"
    energy, force = {}, {}
    for ct in sorted({s.config_type for s in structs}):
        idx = [k for k, s in enumerate(structs) if s.config_type == ct]
        e = [(structs[k].energy / structs[k].n_atoms, preds[k][K.ENERGY] / structs[k].n_atoms)
             for k in idx if structs[k].energy is not None]
        if e:
            energy[ct] = (np.array([a for a, _ in e]), np.array([b for _, b in e]))
        f = [(structs[k].forces.ravel(), preds[k][K.FORCES].ravel()) for k in idx if structs[k].forces is not None]
        if f:
            force[ct] = (np.concatenate([a for a, _ in f]), np.concatenate([b for _, b in f]))
    return parity_panels(path, [("energy", "eV/atom", 1e3, "meV/atom", energy),
                                ("force component", "eV/Å", 1.0, "eV/Å", force)], title=title, overwrite=overwrite)
