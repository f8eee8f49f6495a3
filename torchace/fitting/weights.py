"""Observation weights per config_type (ACEpotentials.jl defaults E 30, F 1, V 1) and the one row-weighting rule."""
from __future__ import annotations

from typing import Dict, Optional, Tuple


DEFAULT_WEIGHTS = {"default": {"E": 30.0, "F": 1.0, "V": 1.0}}


def resolve_weights(weights: Optional[Dict[str, Dict[str, float]]]) -> Dict[str, Dict[str, float]]:
    """Merge user weights over the defaults; per config_type dicts may give any of E, F, V."""
    out = {k: dict(v) for k, v in DEFAULT_WEIGHTS.items()}
    weights = dict(weights or {})
    # "default" first, so that per-config_type entries inherit user defaults
    for ct, w in sorted(weights.items(), key=lambda kv: kv[0] != "default"):
        if not isinstance(w, dict):
            raise ValueError(f"weights[{ct!r}] must be a dict with keys E, F, V")
        bad = set(w) - {"E", "F", "V"}
        if bad:
            raise ValueError(f"weights[{ct!r}] has unknown keys {sorted(bad)}; use E, F, V")
        base = dict(out.get("default", DEFAULT_WEIGHTS["default"]))
        base.update({k: float(v) for k, v in w.items()})
        out[ct] = base
    return out


def weights_for(weights: Dict[str, Dict[str, float]], config_type: str) -> Tuple[float, float, float]:
    w = weights.get(config_type, weights["default"])
    return w["E"], w["F"], w["V"]
