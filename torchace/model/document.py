"""The model file of the ACE model (docs/model_file.md): one JSON document, no code, strict checks.

One schema for every readout (``format`` "torchace-model", ``format_version`` 2): the ``ACEConfig``, the
``readout`` (densities, embedding with its parameters, learnable radials), the flat ``coefficients`` (density 1 …
P, then pair: ``ACEModel``'s layout), ``radial_weights``, the prior's basis scale, committee, prior description
and metadata.  Today's older files load too: version 1 of "torchace-model" (the linear model) and
"torchace-nonlinear-model" version 1 (``density_coefficients`` / ``pair_coefficients`` and the readout as
top-level fields); both are read into the same model, and ``save`` writes version 2.
"""
from __future__ import annotations

from typing import Any, Dict, Optional

import torch

from ..config import ACEConfig
from .readout.embedding import FS, IDENTITY_TOL, MLP
from .state import (UNITS, ModelFileError, check_config, document_head, finite_list, has_bool, json_type,
                    l_axis_field, tensor_field, write_document)

FORMAT = "torchace-model"
FORMAT_VERSION = 2
# the files of earlier versions this torchace reads (``from_dict``)
LINEAR_V1 = (FORMAT, 1)
NONLINEAR_V1 = ("torchace-nonlinear-model", 1)
READS = (LINEAR_V1, NONLINEAR_V1, (FORMAT, FORMAT_VERSION))

# the fields of each document; anything else is refused (a typo, or a file of another program)
FIELDS = {
    (FORMAT, FORMAT_VERSION): ("format", "format_version", "torchace_version", "units", "config", "readout",
                               "basis_size", "coefficients", "radial_weights", "nl_scale", "pair_scale", "prior",
                               "committee", "metadata"),
    LINEAR_V1: ("format", "format_version", "torchace_version", "units", "config", "basis_size", "coefficients",
                "nl_scale", "pair_scale", "prior", "committee", "metadata"),
    NONLINEAR_V1: ("format", "format_version", "torchace_version", "units", "config", "densities", "embedding",
                   "learnable_radials", "density_coefficients", "pair_coefficients", "radial_weights", "nl_scale",
                   "pair_scale", "prior", "committee", "metadata"),
}
# fields a document may leave out (committee: added to nonlinear files later)
OPTIONAL = ("torchace_version", "prior", "committee", "metadata")
READOUT_FIELDS = ("densities", "embedding", "learnable_radials")


def embedding_document(model) -> Optional[Dict[str, Any]]:
    """The embedding F of ``model`` as a mapping (None: the linear readout F = ρ_1)."""
    f = model.embedding_fn
    if f is None:
        return None
    if f.name == FS:
        return {"name": FS, "fs_parameters": f.fs_parameters(), "learnable": bool(f.learnable)}
    return {"name": MLP, "hidden": f.hidden, "W": finite_list(f.W, "embedding.W"),
            "b": finite_list(f.b, "embedding.b"), "w": finite_list(f.w, "embedding.w")}


def readout_options(r: Dict[str, Any], path: str, where: str) -> Dict[str, Any]:
    """``ACEModel``'s readout keywords from a mapping with ``densities``, ``embedding``, ``learnable_radials``
    (``where``: the mapping's prefix in messages)."""
    P = r.get("densities")
    if isinstance(P, bool) or not isinstance(P, int) or P < 1:
        raise ModelFileError(f"{path}: field '{where}densities' must be a positive integer, got {P!r}")
    if not isinstance(r.get("learnable_radials"), bool):
        raise ModelFileError(f"{path}: field '{where}learnable_radials' must be true or false")
    emb = r.get("embedding")
    kw: Dict[str, Any] = dict(densities=P, embedding=None, learnable_radials=r["learnable_radials"])
    if emb is None:
        return kw
    if not isinstance(emb, dict) or emb.get("name") not in (FS, MLP):
        raise ModelFileError(f"{path}: field '{where}embedding' must be null or a mapping with name 'fs' or 'mlp'")
    allowed = {FS: {"name", "fs_parameters", "learnable"}, MLP: {"name", "hidden", "W", "b", "w"}}[emb["name"]]
    if set(emb) != allowed:
        raise ModelFileError(f"{path}: '{where}embedding' ({emb['name']}) must have exactly the fields "
                             f"{sorted(allowed)}, got {sorted(emb)}")
    if emb["name"] == FS:
        if not isinstance(emb["learnable"], bool):
            raise ModelFileError(f"{path}: field '{where}embedding.learnable' must be true or false")
        return dict(kw, embedding=FS, fs_parameters=emb["fs_parameters"], learnable_fs=emb["learnable"])
    h = emb["hidden"]
    if isinstance(h, bool) or not isinstance(h, int) or h < 1:
        raise ModelFileError(f"{path}: field '{where}embedding.hidden' must be a positive integer, got {h!r}")
    return dict(kw, embedding=MLP, mlp_hidden=h)


def check_head(d: Dict[str, Any], path: str):
    """(format, version) of a document this torchace reads, its fields checked; else a ModelFileError."""
    formats = sorted({f for f, _ in READS})
    if not isinstance(d, dict) or d.get("format") not in formats:
        raise ModelFileError(f"{path}: not a torchace model file (field 'format' must be {FORMAT!r})")
    v = d.get("format_version")
    key = (d["format"], v)
    if isinstance(v, bool) or key not in FIELDS:
        raise ModelFileError(f"{path}: format_version {v!r} of {d['format']!r} is not supported (this torchace "
                             f"reads {', '.join(f'{f} {n}' for f, n in READS)})")
    fields = FIELDS[key]
    unknown = sorted(set(d) - set(fields))
    if unknown:
        raise ModelFileError(f"{path}: unknown field(s) {unknown[:10]} (a model file has {list(fields)}; "
                             "free-form information belongs in 'metadata')")
    missing = [k for k in fields if k not in d and k not in OPTIONAL + ("basis_size",)]
    if missing:
        raise ModelFileError(f"{path}: missing field(s) {missing}")
    for k in ("prior", "metadata"):
        if d.get(k) is not None and not isinstance(d[k], dict):
            raise ModelFileError(f"{path}: field {k!r} must be a mapping or null, got {json_type(d[k])}")
    check_config(d, path)
    if d.get("units") != UNITS:
        raise ModelFileError(f"{path}: field 'units' must be {UNITS}, got {d.get('units')!r}")
    return key


def read_committee(d: Dict[str, Any], model, path: str) -> Optional[torch.Tensor]:
    """The ``committee`` field: null, or a finite [n][basis_size] array (n ≥ 1) of samples of the coefficients
    E is linear in, which a nonlinear readout must have (an FS density with m_p = 1 and a_p ≠ 0 per element)."""
    c = d.get("committee")
    if c is None:
        return None
    k = model.basis_size
    if has_bool(c):
        raise ModelFileError(f"{path}: field 'committee' holds true/false where numbers belong")
    if not isinstance(c, list) or not c or not isinstance(c[0], list):
        raise ModelFileError(f"{path}: field 'committee' must be null or a finite [n, {k}] array (n ≥ 1), got "
                             f"{json_type(c) if not isinstance(c, list) else 'a list of ' + str(len(c))}")
    f = model.embedding_fn  # the committee samples the coefficients E is linear in: there must be some
    if f is not None and (f.name != FS or not bool(
            (((f.exponents - 1.0).abs() < IDENTITY_TOL) & (f.weights.detach() != 0)).any(dim=1).all())):
        raise ModelFileError(f"{path}: field 'committee' must be null for this embedding: it needs, for every "
                             "element, an FS density with exponent m_p = 1 and weight a_p ≠ 0")
    return tensor_field(d, "committee", (len(c), k), path)


def set_parameters(model, d: Dict[str, Any], key, path: str) -> None:
    """Coefficients, radial weights and MLP weights of document ``d`` (of kind ``key``) into ``model``."""
    if key == NONLINEAR_V1:
        model.density_coefficients.copy_(tensor_field(d, "density_coefficients", model.density_coefficients.shape,
                                                      path))
        model.pair_coefficients.copy_(tensor_field(d, "pair_coefficients", model.pair_coefficients.shape, path))
    else:
        model.coefficients.copy_(tensor_field(d, "coefficients", tuple(model.coefficients.shape), path))
    if model.radials is None:
        if d.get("radial_weights") is not None:
            raise ModelFileError(f"{path}: field 'radial_weights' must be null when learnable_radials is false")
    else:
        model.radials.weights.copy_(l_axis_field(d, "radial_weights", model.radials.shape, path, 3))
    f = model.embedding_fn
    if f is not None and f.name == MLP:
        emb = d["readout"]["embedding"] if key[1] == FORMAT_VERSION else d["embedding"]
        where = "readout.embedding." if key[1] == FORMAT_VERSION else "embedding."
        for name in ("W", "b", "w"):
            getattr(f, name).copy_(tensor_field(emb, name, tuple(getattr(f, name).shape), path, where))


class ModelState:
    """``to_dict`` / ``save`` / ``from_dict`` of the model file (mixed into ``ACEModel``)."""

    def to_dict(self, metadata: Optional[Dict[str, Any]] = None) -> Dict[str, Any]:
        """The model file's JSON document (plain types only)."""
        return {
            **document_head(FORMAT, FORMAT_VERSION, self.config_dict()),  # E0 from the model's buffer
            "readout": {"densities": self.densities, "embedding": embedding_document(self),
                        "learnable_radials": self.radials is not None},
            "basis_size": self.basis_size,
            "coefficients": finite_list(self.coefficients, "coefficients"),
            "radial_weights": None if self.radials is None else finite_list(self.radials.weights, "radial_weights"),
            "nl_scale": finite_list(self.embedding.nl_scale, "nl_scale"),
            "pair_scale": finite_list(self.pair.scale, "pair_scale"),
            "prior": getattr(self, "prior_info", None),
            "committee": None if self.committee is None else finite_list(self.committee, "committee"),
            "metadata": metadata or getattr(self, "metadata", None) or {},
        }

    def save(self, path: str, metadata: Optional[Dict[str, Any]] = None, *, overwrite: bool = False) -> None:
        """Write the model as one JSON file (docs/model_file.md); atomic, loads without executing code.

        An existing file at ``path`` is replaced only if it is a torchace model file (re-saving a model), or with
        ``overwrite=True``: saving onto training data or any other file by mistake raises ``OutputPathError``
        and leaves it as it was."""
        write_document(path, self.to_dict(metadata), FORMAT, "torchace model file", overwrite)

    @classmethod
    def from_dict(cls, d: Dict[str, Any], path: str = "<dict>", dtype: torch.dtype = torch.float64):
        """Rebuild a model from a document of ``to_dict`` (or of an earlier version, module docstring); ``path``
        names the source in error messages."""
        key = check_head(d, path)
        try:
            cfg = ACEConfig.from_dict(d["config"])
        except KeyError as exc:
            raise ModelFileError(f"{path}: 'config' is missing {exc}") from None
        except (TypeError, ValueError) as exc:
            raise ModelFileError(f"{path}: invalid 'config': {exc}") from None
        if key == LINEAR_V1:
            options: Dict[str, Any] = {}
        elif key == NONLINEAR_V1:
            options = readout_options(d, path, "")
        else:
            if not isinstance(d["readout"], dict) or set(d["readout"]) != set(READOUT_FIELDS):
                raise ModelFileError(f"{path}: field 'readout' must be a mapping with exactly the fields "
                                     f"{list(READOUT_FIELDS)}")
            options = readout_options(d["readout"], path, "readout.")
        if "basis_size" in d and (not isinstance(d["basis_size"], int) or isinstance(d["basis_size"], bool)):
            raise ModelFileError(f"{path}: field 'basis_size' must be an integer, got {json_type(d['basis_size'])}")
        if key != NONLINEAR_V1 and "basis_size" not in d:
            raise ModelFileError(f"{path}: missing field(s) ['basis_size']")
        try:
            model = cls(cfg, dtype=torch.float64, **options)
        except ValueError as exc:
            raise ModelFileError(f"{path}: {exc}") from None
        if "basis_size" in d and d["basis_size"] != model.basis_size:
            raise ModelFileError(f"{path}: basis_size {d['basis_size']!r} does not match the rebuilt model "
                                 f"({model.basis_size}); the file is corrupt or from an incompatible version")
        with torch.no_grad():
            model.set_basis_scale(l_axis_field(d, "nl_scale", tuple(model.embedding.nl_scale.shape), path, 1,
                                               positive=True),
                                  tensor_field(d, "pair_scale", tuple(model.pair.scale.shape), path, positive=True))
            set_parameters(model, d, key, path)
        committee = read_committee(d, model, path)
        model.prior_info = d.get("prior")
        model.metadata = d.get("metadata") or {}
        model = model.to(dtype).eval()
        model.committee = None if committee is None else committee.to(dtype)
        return model
