"""Observation weights per config_type (ACEpotentials.jl defaults E 30, F 1, V 1) and the one row-weighting rule."""
from __future__ import annotations

import math
from typing import Dict, Optional, Tuple

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
