"""Observation weights per config_type (ACEpotentials.jl defaults E 30, F 1, V 1) and the one row-weighting
rule: a labelled structure of N atoms gives an energy row × w_E/√N, 3N force rows × w_F and 6 Voigt virial rows
× w_V/√N (``row_weights``; a label it lacks gives none, ``label_weights``), targets weighted alike
(``weighted_system``).  The fit's assembly, the committee's system and the training loss's batches all weight
rows through these."""
from __future__ import annotations

import math
from typing import Callable, Dict, List, Optional, Tuple

import torch

from .. import keys as K
from ..fieldcheck import check_float


DEFAULT_WEIGHTS = {"default": {"E": 30.0, "F": 1.0, "V": 1.0}}


def resolve_weights(weights: Optional[Dict[str, Dict[str, float]]]) -> Dict[str, Dict[str, float]]:
    """Merge user weights over the defaults; per config_type dicts may give any of E, F, V."""
    out = {k: dict(v) for k, v in DEFAULT_WEIGHTS.items()}
    if weights is not None and not isinstance(weights, dict):
        raise ValueError(f"weights must be a dict config_type -> {{'E': .., 'F': .., 'V': ..}} ('default' for the "
                         f"rest), got {type(weights).__name__}")
    weights = dict(weights or {})
    # "default" first, so that per-config_type entries inherit user defaults
    for ct, w in sorted(weights.items(), key=lambda kv: kv[0] != "default"):
        if not isinstance(w, dict):
            raise ValueError(f"weights[{ct!r}] must be a dict with keys E, F, V")
        bad = set(w) - {"E", "F", "V"}
        if bad:
            raise ValueError(f"weights[{ct!r}] has unknown keys {sorted(bad)}; use E, F, V")
        base = dict(out.get("default", DEFAULT_WEIGHTS["default"]))
        # the config files' check (finite, >= 0, not a bool): NaN or negative weights are refused here too
        base.update({k: check_float("weights", f"{ct}.{k}", v, nonnegative=True) for k, v in w.items()})
        out[ct] = base
    return out


def weights_for(weights: Dict[str, Dict[str, float]], config_type: str) -> Tuple[float, float, float]:
    w = weights.get(config_type, weights["default"])
    return w["E"], w["F"], w["V"]


def row_weights(weights: Dict[str, Dict[str, float]], config_type: str, n_atoms: int) -> Tuple[float, float, float]:
    """The one row-weighting rule (ACEpotentials.jl's ``ACEfit.assemble``): (w_E/√N, w_F, w_V/√N) for the
    energy row, each of the 3N force rows and each of the 6 Voigt virial rows of a structure of N atoms."""
    wE, wF, wV = weights_for(weights, config_type)
    sq = math.sqrt(n_atoms)
    return wE / sq, wF, wV / sq


def label_weights(weights: Dict[str, Dict[str, float]], s) -> Tuple[float, float, float]:
    """``row_weights`` of a labelled structure ``s`` (``fit.data.Labelled``) with 0 for a label it does not
    have: the weight of its energy row, of each force row and of each virial row (0: no such rows)."""
    wE, wF, wV = row_weights(weights, s.config_type, s.n_atoms)
    return (wE if s.energy is not None else 0.0, wF if s.forces is not None else 0.0,
            wV if s.virial is not None else 0.0)


def weighted_system(structs, rows: Dict[str, torch.Tensor], weights: Dict[str, Dict[str, float]],
                    target: Callable) -> Tuple[List[torch.Tensor], List[torch.Tensor], List[Tuple[int, int, float]]]:
    """The weighted rows and targets of a batch of labelled structures: per structure k with weights
    ``label_weights`` (w_E, w_F, w_V) its energy row × w_E, its 3N force rows × w_F, its 6 Voigt virial rows
    × w_V (none where the weight is 0), each with ``target(kind, k, s, f0)`` × the same weight.

    ``rows``: ``design_matrix_rows``'s layout for ``structs`` (energy [S, K], forces [3ΣN, K], virial [S, 6, K]);
    ``target``: the unweighted target of structure k's rows of ``kind`` "E" (a float, or a tensor [1]), "F"
    ([3N]) or "V" ([6]), ``f0`` its first force row.  Returns (row blocks, target blocks, [(first row, k, w_E)]
    of the energy rows)."""
    blocks, targets, energy_rows = [], [], []
    n_rows, f0 = 0, 0
    E, F, V = rows[K.ENERGY], rows[K.FORCES], rows[K.VIRIAL]
    for k, s in enumerate(structs):
        n = s.n_atoms
        wE, wF, wV = label_weights(weights, s)
        if wE != 0:
            energy_rows.append((n_rows, k, wE))
            blocks.append(E[k:k + 1] * wE)
            e = target("E", k, s, f0)
            targets.append(torch.tensor([e * wE], dtype=E.dtype, device=E.device) if isinstance(e, float)
                           else e * wE)
            n_rows += 1
        if wF != 0:
            blocks.append(F[f0:f0 + 3 * n] * wF)
            targets.append(target("F", k, s, f0) * wF)
            n_rows += 3 * n
        if wV != 0:
            blocks.append(V[k] * wV)
            targets.append(target("V", k, s, f0) * wV)
            n_rows += V.shape[1]
        f0 += 3 * n
    return blocks, targets, energy_rows
