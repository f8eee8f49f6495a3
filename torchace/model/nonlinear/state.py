"""The model file of a ``NonlinearACEModel`` (docs/nonlinear.md): one JSON document, no code, strict checks.

Same conventions as the linear model file (``torchace.model.state``, docs/model_file.md): floats in Python's
shortest round-trip repr (parameters reload bit-exactly), atomic writes, non-finite numbers refused, every
error a ``ModelFileError`` naming the file and the field.  ``format`` is ``"torchace-nonlinear-model"``.
"""
from __future__ import annotations

from typing import Any, Dict, Optional

import torch

from ...config import ACEConfig
from ..state import (UNITS, ModelFileError, check_config, document_head, finite_list, json_type, l_axis_field,
                     tensor_field, write_document)
from .embedding import IDENTITY_TOL

FORMAT = "torchace-nonlinear-model"
FORMAT_VERSION = 1
FIELDS = ("format", "format_version", "torchace_version", "units", "config", "densities", "embedding",
          "learnable_radials", "density_coefficients", "pair_coefficients", "radial_weights", "nl_scale",
          "pair_scale", "prior", "committee", "metadata")
# committee: added later (torchace.uncertainty.nonlinear); files written before it load without one
OPTIONAL = ("torchace_version", "prior", "committee", "metadata")


def _embedding_doc(model) -> Optional[Dict[str, Any]]:
    f = model.embedding_fn
    if f is None:
        return None
    if f.name == "fs":
        return {"name": "fs", "fs_parameters": f.fs_parameters(), "learnable": bool(f.learnable)}
    return {"name": "mlp", "hidden": f.hidden, "W": finite_list(f.W, "embedding.W"),
            "b": finite_list(f.b, "embedding.b"), "w": finite_list(f.w, "embedding.w")}


def _committee_doc(model):
    """[n][K] samples of the linear coefficients θ (torchace.uncertainty.nonlinear), or None."""
    c = getattr(model, "committee", None)
    return None if c is None else finite_list(c, "committee")


def _read_committee(d: Dict[str, Any], model, path: str) -> Optional[torch.Tensor]:
    """The ``committee`` field: null, or a finite [n][K] array with n ≥ 1 and K = NZ·n_b + NZ²·n_pair."""
    c = d.get("committee")
    if c is None:
        return None
    k = model.nz * model.n_b + model.nz * model.nz * model.n_pair
    if not isinstance(c, list) or not c or not isinstance(c[0], list):
        raise ModelFileError(f"{path}: field 'committee' must be null or a [n][{k}] list of numbers (n ≥ 1), got "
                             f"{json_type(c) if not isinstance(c, list) else 'a list of ' + str(len(c))}")
    f = model.embedding_fn  # the committee samples the coefficients E is linear in: there must be some
    if f is not None and (f.name != "fs" or not bool(
            (((f.exponents - 1.0).abs() < IDENTITY_TOL) & (f.weights.detach() != 0)).any(dim=1).all())):
        raise ModelFileError(f"{path}: field 'committee' must be null for this embedding: it needs, for every "
                             "element, an FS density with exponent m_p = 1 and weight a_p ≠ 0")
    return tensor_field(d, "committee", (len(c), k), path)


class NonlinearState:
    """``to_dict`` / ``save`` / ``from_dict`` (mixed into ``NonlinearACEModel``)."""

    def to_dict(self, metadata: Optional[Dict[str, Any]] = None) -> Dict[str, Any]:
        return {
            **document_head(FORMAT, FORMAT_VERSION, self.config_dict()),
            "densities": self.densities,
            "embedding": _embedding_doc(self),
            "learnable_radials": self.radials is not None,
            "density_coefficients": finite_list(self.density_coefficients, "density_coefficients"),
            "pair_coefficients": finite_list(self.pair_coefficients, "pair_coefficients"),
            "radial_weights": None if self.radials is None else finite_list(self.radials.weights, "radial_weights"),
            "nl_scale": finite_list(self.embedding.nl_scale, "nl_scale"),
            "pair_scale": finite_list(self.linear.pair.scale, "pair_scale"),
            "prior": getattr(self, "prior_info", None),
            "committee": _committee_doc(self),
            "metadata": metadata or getattr(self, "metadata", None) or {},
        }

    def save(self, path: str, metadata: Optional[Dict[str, Any]] = None, *, overwrite: bool = False) -> None:
        """One JSON file (atomic write; loads without executing code: ``torchace.model.nonlinear.load``).  An
        existing file at ``path`` is replaced only if it is a nonlinear model file, or with ``overwrite=True``."""
        write_document(path, self.to_dict(metadata), FORMAT, "torchace nonlinear model file", overwrite)

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
        check_config(d, path)
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
            allowed = {"fs": {"name", "fs_parameters", "learnable"},
                       "mlp": {"name", "hidden", "W", "b", "w"}}[emb["name"]]
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
            model.set_basis_scale(l_axis_field(d, "nl_scale", tuple(model.embedding.nl_scale.shape), path, 1,
                                               positive=True),
                                  tensor_field(d, "pair_scale", tuple(model.linear.pair.scale.shape), path,
                                               positive=True))
            model.density_coefficients.copy_(tensor_field(d, "density_coefficients",
                                                          model.density_coefficients.shape, path))
            model.pair_coefficients.copy_(tensor_field(d, "pair_coefficients", model.pair_coefficients.shape, path))
            if model.radials is None:
                if d["radial_weights"] is not None:
                    raise ModelFileError(f"{path}: field 'radial_weights' must be null when learnable_radials is false")
            else:
                model.radials.weights.copy_(l_axis_field(d, "radial_weights", model.radials.shape, path, 3))
            f = model.embedding_fn
            if f is not None and f.name == "mlp":
                for key in ("W", "b", "w"):
                    getattr(f, key).copy_(tensor_field(emb, key, tuple(getattr(f, key).shape), path, "embedding."))
        committee = _read_committee(d, model, path)
        model.prior_info = d.get("prior")
        model.metadata = d.get("metadata") or {}
        model = model.to(dtype).eval()
        model.committee = None if committee is None else committee.to(dtype)
        return model
