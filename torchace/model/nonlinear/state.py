"""The model file of a ``NonlinearACEModel`` (docs/nonlinear.md): one JSON document, no code, strict checks.

Same conventions as the linear model file (``torchace.model.state``, docs/model_file.md): floats in Python's
shortest round-trip repr (parameters reload bit-exactly), atomic writes, non-finite numbers refused, every
error a ``ModelFileError`` naming the file and the field.  ``format`` is ``"torchace-nonlinear-model"``.
"""
from __future__ import annotations

import json
from typing import Any, Dict, Optional

import torch

from ... import keys as K
from ...atomic import check_replaceable, write_json_atomic
from ...config import ACEConfig
from ...fieldcheck import check_input_file, unique_keys
from ..state import REQUIRED_CONFIG, UNITS, ModelFileError

FORMAT = "torchace-nonlinear-model"
FORMAT_VERSION = 1
FIELDS = ("format", "format_version", "torchace_version", "units", "config", "densities", "embedding",
          "learnable_radials", "density_coefficients", "pair_coefficients", "radial_weights", "nl_scale",
          "pair_scale", "prior", "metadata")
OPTIONAL = ("torchace_version", "prior", "metadata")
MAX_FILE_BYTES = 4 << 30


def _plain(t: torch.Tensor, what: str) -> Any:
    x = t.detach().to("cpu", torch.float64)
    if not torch.isfinite(x).all():
        raise ValueError(f"cannot save: {what} contains non-finite values")
    return x.tolist()


def _has_bool(x: Any) -> bool:
    if isinstance(x, bool):
        return True
    return isinstance(x, list) and any(_has_bool(v) for v in x)


def _array(d: Dict[str, Any], key: str, shape, path: str, where: str = "") -> torch.Tensor:
    name = f"{where}{key}"
    if key not in d:
        raise ModelFileError(f"{path}: missing field {name!r}")
    if not isinstance(d[key], list):
        raise ModelFileError(f"{path}: field {name!r} must be a list of numbers, got {type(d[key]).__name__}")
    if _has_bool(d[key]):
        raise ModelFileError(f"{path}: field {name!r} holds true/false where numbers belong")
    try:
        t = torch.tensor(d[key], dtype=torch.float64)
    except (TypeError, ValueError, RuntimeError):
        raise ModelFileError(f"{path}: field {name!r} must be a (nested) list of numbers of shape {tuple(shape)}; "
                             "it holds other values or rows of unequal length") from None
    if tuple(t.shape) != tuple(shape):
        raise ModelFileError(f"{path}: field {name!r} has shape {tuple(t.shape)}, expected {tuple(shape)}")
    if not torch.isfinite(t).all():
        raise ModelFileError(f"{path}: field {name!r} contains non-finite values")
    return t


def _embedding_doc(model) -> Optional[Dict[str, Any]]:
    f = model.embedding_fn
    if f is None:
        return None
    if f.name == "fs":
        return {"name": "fs", "fs_parameters": f.fs_parameters(), "learnable": bool(f.learnable)}
    return {"name": "mlp", "hidden": f.hidden, "W": _plain(f.W, "embedding.W"), "b": _plain(f.b, "embedding.b"),
            "w": _plain(f.w, "embedding.w")}


class NonlinearState:
    """``to_dict`` / ``save`` / ``from_dict`` (mixed into ``NonlinearACEModel``)."""

    def to_dict(self, metadata: Optional[Dict[str, Any]] = None) -> Dict[str, Any]:
        return {
            "format": FORMAT,
            "format_version": FORMAT_VERSION,
            "torchace_version": K.VERSION,
            "units": UNITS,
            "config": self.config_dict(),
            "densities": self.densities,
            "embedding": _embedding_doc(self),
            "learnable_radials": self.radials is not None,
            "density_coefficients": _plain(self.density_coefficients, "density_coefficients"),
            "pair_coefficients": _plain(self.pair_coefficients, "pair_coefficients"),
            "radial_weights": None if self.radials is None else _plain(self.radials.weights, "radial_weights"),
            "nl_scale": _plain(self.embedding.nl_scale, "nl_scale"),
            "pair_scale": _plain(self.linear.pair.scale, "pair_scale"),
            "prior": getattr(self, "prior_info", None),
            "metadata": metadata or getattr(self, "metadata", None) or {},
        }

    def save(self, path: str, metadata: Optional[Dict[str, Any]] = None, *, overwrite: bool = False) -> None:
        """One JSON file (atomic write; loads without executing code: ``torchace.model.nonlinear.load``).  An
        existing file at ``path`` is replaced only if it is a nonlinear model file, or with ``overwrite=True``."""
        if not overwrite:
            check_replaceable(path, FORMAT, "torchace nonlinear model file")
        doc = self.to_dict(metadata)
        try:
            json.dumps(doc["metadata"], allow_nan=False)
        except (TypeError, ValueError) as exc:
            raise ValueError(f"cannot save {path}: 'metadata' must hold JSON values: {exc}") from None
        write_json_atomic(path, doc)

    @classmethod
    def from_dict(cls, d: Dict[str, Any], path: str = "<dict>", dtype: torch.dtype = torch.float64):
        if not isinstance(d, dict) or d.get("format") != FORMAT:
            raise ModelFileError(f"{path}: not a torchace nonlinear model file (field 'format' must be {FORMAT!r})")
        if d.get("format_version") != FORMAT_VERSION or isinstance(d.get("format_version"), bool):
            raise ModelFileError(f"{path}: format_version {d.get('format_version')!r} is not supported "
                                 f"(this torchace reads {FORMAT_VERSION})")
        unknown = sorted(set(d) - set(FIELDS))
        if unknown:
            raise ModelFileError(f"{path}: unknown field(s) {unknown}; allowed: {list(FIELDS)}")
        missing = [k for k in FIELDS if k not in d and k not in OPTIONAL]
        if missing:
            raise ModelFileError(f"{path}: missing field(s) {missing}")
        for key in ("prior", "metadata"):
            if d.get(key) is not None and not isinstance(d[key], dict):
                raise ModelFileError(f"{path}: field {key!r} must be a mapping or null, got {type(d[key]).__name__}")
        if d["units"] != UNITS:
            raise ModelFileError(f"{path}: field 'units' must be {UNITS}, got {d['units']!r}")
        if not isinstance(d["config"], dict):
            raise ModelFileError(f"{path}: field 'config' must be a mapping of the ACEConfig fields")
        missing = [k for k in REQUIRED_CONFIG if k not in d["config"]]
        if missing:
            raise ModelFileError(f"{path}: 'config' is missing the field(s) {missing}")
        try:
            cfg = ACEConfig.from_dict(d["config"])
        except (KeyError, TypeError, ValueError) as exc:
            raise ModelFileError(f"{path}: invalid 'config': {exc}") from None
        P = d["densities"]
        if isinstance(P, bool) or not isinstance(P, int) or P < 1:
            raise ModelFileError(f"{path}: field 'densities' must be a positive integer, got {P!r}")
        if not isinstance(d["learnable_radials"], bool):
            raise ModelFileError(f"{path}: field 'learnable_radials' must be true or false")
        emb, kw = d["embedding"], {}
        if emb is not None:
            if not isinstance(emb, dict) or emb.get("name") not in ("fs", "mlp"):
                raise ModelFileError(f"{path}: field 'embedding' must be null or a mapping with name 'fs' or 'mlp'")
            allowed = {"fs": {"name", "fs_parameters", "learnable"}, "mlp": {"name", "hidden", "W", "b", "w"}}[emb["name"]]
            if set(emb) != allowed:
                raise ModelFileError(f"{path}: 'embedding' ({emb['name']}) must have exactly the fields "
                                     f"{sorted(allowed)}, got {sorted(emb)}")
            if emb["name"] == "fs":
                if not isinstance(emb["learnable"], bool):
                    raise ModelFileError(f"{path}: field 'embedding.learnable' must be true or false")
                kw = dict(fs_parameters=emb["fs_parameters"], learnable_fs=emb["learnable"])
            else:
                h = emb["hidden"]
                if isinstance(h, bool) or not isinstance(h, int) or h < 1:
                    raise ModelFileError(f"{path}: field 'embedding.hidden' must be a positive integer, got {h!r}")
                kw = dict(mlp_hidden=h)
        try:
            model = cls(cfg, densities=P, embedding=None if emb is None else emb["name"],
                        learnable_radials=d["learnable_radials"], dtype=torch.float64, **kw)
        except ValueError as exc:
            raise ModelFileError(f"{path}: {exc}") from None
        with torch.no_grad():
            model.set_basis_scale(_array(d, "nl_scale", tuple(model.embedding.nl_scale.shape), path),
                                  _array(d, "pair_scale", tuple(model.linear.pair.scale.shape), path))
            model.density_coefficients.copy_(_array(d, "density_coefficients", model.density_coefficients.shape, path))
            model.pair_coefficients.copy_(_array(d, "pair_coefficients", model.pair_coefficients.shape, path))
            if model.radials is None:
                if d["radial_weights"] is not None:
                    raise ModelFileError(f"{path}: field 'radial_weights' must be null when learnable_radials is false")
            else:
                model.radials.weights.copy_(_array(d, "radial_weights", model.radials.shape, path))
            f = model.embedding_fn
            if f is not None and f.name == "mlp":
                for key in ("W", "b", "w"):
                    getattr(f, key).copy_(_array(emb, key, tuple(getattr(f, key).shape), path, "embedding."))
        model.prior_info = d.get("prior")
        model.metadata = d.get("metadata") or {}
        return model.to(dtype).eval()


def read_document(path: str) -> Dict[str, Any]:
    """The JSON document of a model file: strict JSON (no NaN/Infinity, no duplicate keys), size-limited."""
    try:
        check_input_file(path, "torchace nonlinear model file", MAX_FILE_BYTES)  # not a directory, FIFO, device
    except FileNotFoundError:
        raise ModelFileError(f"{path}: no such file") from None
    except (ValueError, TypeError) as exc:
        raise ModelFileError(str(exc) if isinstance(exc, ValueError) else f"{path!r}: not a file name") from None

    def refuse(c):
        raise ValueError(f"non-finite number {c}")

    try:
        with open(path, "r", encoding="utf-8") as fh:
            return json.load(fh, parse_constant=refuse, object_pairs_hook=unique_keys)
    except (json.JSONDecodeError, UnicodeDecodeError, ValueError) as exc:
        raise ModelFileError(f"{path}: not valid JSON (truncated or corrupt?): {exc}") from None
    except RecursionError:
        raise ModelFileError(f"{path}: nested too deeply to be a torchace model file") from None
