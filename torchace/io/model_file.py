"""Model files: one JSON document, everything needed to rebuild and evaluate the model.

Loading parses JSON and rebuilds the model from its ``ACEConfig``; no code is executed and no pickle is
involved.  Floats are written with Python's shortest round-trip repr, so coefficients reload bit-exactly.
Writes are atomic (temporary file + rename): a crash never leaves a half-written model.  The format is
documented in docs/model_file.md.
"""
from __future__ import annotations

import json
from typing import Any, Dict, Optional

import torch

from ..atomic import write_json_atomic  # noqa: F401  (re-exported)

FORMAT = "torchace-model"
FORMAT_VERSION = 1
UNITS = {"energy": "eV", "length": "Angstrom", "virial": "eV", "stress": "eV/Angstrom^3"}


class ModelFileError(ValueError):
    """A model file that cannot be loaded; the message names the file and the field."""


def _finite_list(t: torch.Tensor, what: str) -> Any:
    x = t.detach().to("cpu", torch.float64)
    if not torch.isfinite(x).all():
        raise ValueError(f"cannot save: {what} contains non-finite values")
    return x.tolist()


def model_to_dict(model, metadata: Optional[Dict[str, Any]] = None) -> Dict[str, Any]:
    from .. import __version__

    d: Dict[str, Any] = {
        "format": FORMAT,
        "format_version": FORMAT_VERSION,
        "torchace_version": __version__,
        "units": UNITS,
        # E0 lives in the buffer (fit may set it); the config copy is written from it
        "config": dict(model.config.to_dict(), E0=[float(v) for v in model.E0.tolist()]),
        "basis_size": model.basis_size,
        "coefficients": _finite_list(model.coefficients, "coefficients"),
        "nl_scale": _finite_list(model.embedding.nl_scale, "nl_scale"),
        "pair_scale": _finite_list(model.pair.scale, "pair_scale"),
        "prior": getattr(model, "prior_info", None),
        "committee": None if getattr(model, "committee", None) is None
        else _finite_list(model.committee, "committee"),
        "metadata": metadata or getattr(model, "metadata", None) or {},
    }
    return d


def save(model, path: str, metadata: Optional[Dict[str, Any]] = None) -> None:
    write_json_atomic(path, model_to_dict(model, metadata))


def _tensor(d: Dict[str, Any], key: str, shape, path: str) -> torch.Tensor:
    try:
        t = torch.tensor(d[key], dtype=torch.float64)
    except KeyError:
        raise ModelFileError(f"{path}: missing field {key!r}") from None
    except (TypeError, ValueError) as exc:
        raise ModelFileError(f"{path}: field {key!r} is not a numeric array: {exc}") from None
    if tuple(t.shape) != tuple(shape):
        raise ModelFileError(f"{path}: field {key!r} has shape {tuple(t.shape)}, expected {tuple(shape)}")
    if not torch.isfinite(t).all():
        raise ModelFileError(f"{path}: field {key!r} contains non-finite values")
    return t


def model_from_dict(d: Dict[str, Any], path: str = "<dict>", dtype: torch.dtype = torch.float64):
    from ..config import ACEConfig
    from ..model.ace import ACEModel

    if not isinstance(d, dict) or d.get("format") != FORMAT:
        raise ModelFileError(f"{path}: not a torchace model file (field 'format' must be {FORMAT!r})")
    v = d.get("format_version")
    if v != FORMAT_VERSION:
        raise ModelFileError(f"{path}: format_version {v!r} is not supported (this torchace reads {FORMAT_VERSION})")
    try:
        cfg = ACEConfig.from_dict(d["config"])
    except KeyError:
        raise ModelFileError(f"{path}: missing field 'config'") from None
    except (TypeError, ValueError) as exc:
        raise ModelFileError(f"{path}: invalid 'config': {exc}") from None
    model = ACEModel(cfg, dtype=dtype).eval()
    if d.get("basis_size") != model.basis_size:
        raise ModelFileError(f"{path}: basis_size {d.get('basis_size')!r} does not match the rebuilt model "
                             f"({model.basis_size}); the file is corrupt or from an incompatible version")
    model.coefficients = _tensor(d, "coefficients", (model.basis_size,), path).to(dtype)
    model.set_basis_scale(_tensor(d, "nl_scale", tuple(model.embedding.nl_scale.shape), path),
                          _tensor(d, "pair_scale", tuple(model.pair.scale.shape), path))
    if d.get("committee") is not None:
        try:
            c = torch.tensor(d["committee"], dtype=torch.float64)
        except (TypeError, ValueError, RuntimeError) as exc:
            raise ModelFileError(f"{path}: field 'committee' is not a numeric array: {exc}") from None
        if c.ndim != 2 or c.shape[1] != model.basis_size or not torch.isfinite(c).all():
            raise ModelFileError(f"{path}: field 'committee' must be a finite [n, {model.basis_size}] array")
        model.committee = c.to(dtype)
    model.prior_info = d.get("prior")
    model.metadata = d.get("metadata") or {}
    return model


def load(path: str, dtype: torch.dtype = torch.float64, device=None):
    """Load a model saved by ``model.save(path)``; JSON only, nothing is executed."""
    try:
        with open(path, "r") as fh:
            d = json.load(fh, parse_constant=lambda c: (_ for _ in ()).throw(ValueError(f"non-finite number {c}")))
    except FileNotFoundError:
        raise ModelFileError(f"{path}: no such file") from None
    except (json.JSONDecodeError, UnicodeDecodeError, ValueError) as exc:
        raise ModelFileError(f"{path}: not valid JSON (truncated or corrupt?): {exc}") from None
    model = model_from_dict(d, path, dtype)
    return model.to(device) if device is not None else model
