"""The model-file form of an ``ACEModel`` (docs/model_file.md): one JSON-compatible dict, loaded without code.

``ModelState`` is a mixin of ``ACEModel``: ``to_dict`` / ``from_dict`` / ``save``.  Floats are written with
Python's shortest round-trip repr, so coefficients reload bit-exactly; writes are atomic (temporary file +
rename).  ``torchace.io.model_file`` reads files (strict JSON) and calls ``from_dict``.
"""
from __future__ import annotations

import json
from typing import Any, Dict, Optional

import torch

from .. import keys as K
from ..atomic import check_output, json_output, write_json_atomic
from ..config import ACEConfig
from ..fieldcheck import unique_keys
from ..inputs import open_input

FORMAT = "torchace-model"
FORMAT_VERSION = 1
UNITS = {"energy": "eV", "length": "Angstrom", "virial": "eV", "stress": "eV/Angstrom^3"}


class ModelFileError(ValueError):
    """A model file that cannot be loaded; the message names the file and the field."""


def finite_list(t: torch.Tensor, what: str) -> Any:
    """A tensor as nested lists of float64 for a model file; non-finite values refused."""
    x = t.detach().to("cpu", torch.float64)
    if not torch.isfinite(x).all():
        raise ValueError(f"cannot save: {what} contains non-finite values")
    return x.tolist()


# the fields of the document (``to_dict``); anything else is refused (a typo, or a file of another program)
FIELDS = ("format", "format_version", "torchace_version", "units", "config", "basis_size", "coefficients",
          "nl_scale", "pair_scale", "prior", "committee", "metadata")

# config fields a model file must carry (a missing one would load with a default that changes the model);
# pure2b / pure were added later and default to False for files written before them
REQUIRED_CONFIG = ("elements", "order", "totaldegree", "wL", "rcut", "r0", "E0", "pair", "zbl", "zbl_inner",
                   "zbl_outer")


def has_bool(x: Any) -> bool:
    """Whether a (nested) list holds a JSON true/false (torch.tensor would read it as 1.0/0.0)."""
    if isinstance(x, bool):
        return True
    return isinstance(x, list) and any(has_bool(v) for v in x)


def json_type(v: Any) -> str:
    """The JSON name of a parsed value's type, for messages about a file."""
    if v is None:
        return "null"
    if isinstance(v, bool):
        return "true/false"
    return {str: "a string", dict: "an object", list: "a list"}.get(type(v), "a number")


# larger magnitudes are no model parameter: products of two of them overflow float64 (an energy of inf)
MAX_ABS_VALUE = 1e100


def tensor_field(d: Dict[str, Any], key: str, shape, path: str, where: str = "",
                 positive: bool = False) -> torch.Tensor:
    """Field ``key`` of a model-file mapping ``d`` as a float64 tensor of exactly ``shape`` (``where``: the
    mapping's prefix in messages, e.g. "embedding."); a ``ModelFileError`` names the file and the field.
    Values must be finite and below ``MAX_ABS_VALUE`` in magnitude (and > 0 with ``positive``: scale factors)."""
    name = where + key
    if key in d and has_bool(d[key]):
        raise ModelFileError(f"{path}: field {name!r} holds true/false where numbers belong")
    if key in d and not isinstance(d[key], list):
        raise ModelFileError(f"{path}: field {name!r} must be a list of numbers, got {json_type(d[key])}")
    try:
        t = torch.tensor(d[key], dtype=torch.float64)
    except KeyError:
        raise ModelFileError(f"{path}: missing field {name!r}") from None
    except (TypeError, ValueError, RuntimeError):
        raise ModelFileError(f"{path}: field {name!r} must be a (nested) list of numbers of shape {tuple(shape)}; "
                             "it holds other values or rows of unequal length") from None
    if tuple(t.shape) != tuple(shape):
        raise ModelFileError(f"{path}: field {name!r} has shape {tuple(t.shape)}, expected {tuple(shape)}")
    if not torch.isfinite(t).all():
        raise ModelFileError(f"{path}: field {name!r} contains non-finite values")
    if t.numel() and float(t.abs().max()) > MAX_ABS_VALUE:
        raise ModelFileError(f"{path}: field {name!r} contains values of magnitude {float(t.abs().max()):.3g}, beyond "
                             f"{MAX_ABS_VALUE:.0e}: no model has such parameters (energies would overflow to inf)")
    if positive and t.numel() and not bool((t > 0).all()):
        raise ModelFileError(f"{path}: field {name!r} must hold positive scale factors, got {float(t.min()):.6g} "
                             "(a zero or negative scale switches basis functions off or flips them: a corrupt file)")
    return t


def check_config(d: Dict[str, Any], path: str) -> None:
    """The ``config`` of a model-file document: present, complete, and with a cutoff a model can have (files
    written by ``save`` hold the resolved cutoff; 0 or a missing value would silently become a default)."""
    if not isinstance(d.get("config"), dict):
        raise ModelFileError(f"{path}: missing field 'config' (a mapping of the model's ACEConfig fields)")
    missing = [k for k in REQUIRED_CONFIG if k not in d["config"]]
    if missing:
        raise ModelFileError(f"{path}: 'config' is missing the field(s) {missing}")
    rcut = d["config"]["rcut"]
    if isinstance(rcut, bool) or not isinstance(rcut, (int, float)) or not rcut > 0 or rcut != rcut:
        raise ModelFileError(f"{path}: field 'config.rcut' must be the model's positive cutoff in Å, got {rcut!r}")


def l_axis_field(d: Dict[str, Any], key: str, shape, path: str, l_axis: int, where: str = "",
                 positive: bool = False) -> torch.Tensor:
    """``tensor_field`` for an array with an axis over the harmonic degree l (``nl_scale``, learned radial
    weights) that may be longer in the file than in the rebuilt model: files written before issue 26 carried
    entries for l's that only products without a rotation invariant contain (no basis function uses them;
    ``torchace.basis.spec``), so the entries beyond the model's l range are dropped."""
    shape = tuple(shape)
    v, depth = d.get(key), 0
    while isinstance(v, list) and v and depth < l_axis:
        v, depth = v[0], depth + 1
    stored = len(v) if isinstance(v, list) and depth == l_axis else shape[l_axis]
    file_shape = shape[:l_axis] + (max(stored, shape[l_axis]),) + shape[l_axis + 1:]
    return tensor_field(d, key, file_shape, path, where, positive).narrow(l_axis, 0, shape[l_axis])


# model files larger than this are refused before reading (a K = 10^5 model with a 32-member committee is
# ~70 MB; parsing takes a few times the file's size in memory); nesting deeper than Python's JSON recursion limit
# is refused as corrupt
MAX_FILE_BYTES = 1 << 30


def read_document(path: str) -> Dict[str, Any]:
    """The JSON document of a model file (linear or nonlinear): strict JSON (no NaN/Infinity, no duplicate
    keys), size-limited, never a pickle or an archive; errors are ``ModelFileError`` naming the file."""
    try:  # the input rule (torchace.inputs): not /dev/zero, a FIFO or a directory, not gigabytes
        fh = open_input(path, "torchace model file", MAX_FILE_BYTES)
    except FileNotFoundError:
        raise ModelFileError(f"{path}: no such file") from None
    except (ValueError, TypeError) as exc:
        raise ModelFileError(str(exc) if isinstance(exc, ValueError) else f"{path!r}: not a file name") from None

    def refuse(c):
        raise ValueError(f"non-finite number {c}")

    try:
        with fh:
            return json.load(fh, parse_constant=refuse, object_pairs_hook=unique_keys)
    except FileNotFoundError:
        raise ModelFileError(f"{path}: no such file") from None
    except UnicodeDecodeError:
        import zipfile

        what = ("a zip archive (a TorchScript export? load it with TorchACECalculator(path, backend='torchscript'))"
                if zipfile.is_zipfile(path) else
                "a binary file (a pickle or torch.save file? torchace never loads those: they can run code)")
        raise ModelFileError(f"{path}: {what}, not a JSON model file") from None
    except (json.JSONDecodeError, ValueError) as exc:
        raise ModelFileError(f"{path}: not valid JSON (truncated or corrupt?): {exc}") from None
    except RecursionError:
        raise ModelFileError(f"{path}: nested too deeply to be a torchace model file") from None


def write_document(path: str, doc: Dict[str, Any], format_name: str, what: str, overwrite: bool) -> None:
    """Write a model-file document atomically; an existing file is replaced only if it is a ``what`` (its
    ``format`` is ``format_name``) or with ``overwrite``, and 'metadata' must hold JSON values."""
    check_output(path, json_output(format_name, what), overwrite)  # the output rule (torchace.atomic)
    try:
        json.dumps(doc["metadata"], allow_nan=False)
    except (TypeError, ValueError) as exc:
        raise ValueError(f"cannot save {path}: 'metadata' must hold JSON values (numbers, strings, lists, "
                         f"mappings): {exc}") from None
    write_json_atomic(path, doc)


def document_head(fmt: str, version: int, config: Dict[str, Any]) -> Dict[str, Any]:
    """The fields every model file starts with (format, versions, units, the ``ACEConfig``)."""
    return {"format": fmt, "format_version": version, "torchace_version": K.VERSION, "units": UNITS,
            "config": config}


class ModelState:
    """``to_dict`` / ``from_dict`` / ``save`` of the model file (mixed into ``ACEModel``)."""

    def to_dict(self, metadata: Optional[Dict[str, Any]] = None) -> Dict[str, Any]:
        """The model file's JSON document (plain types only)."""
        return {
            **document_head(FORMAT, FORMAT_VERSION, self.config_dict()),  # E0 from the model's buffer
            "basis_size": self.basis_size,
            "coefficients": finite_list(self.coefficients, "coefficients"),
            "nl_scale": finite_list(self.embedding.nl_scale, "nl_scale"),
            "pair_scale": finite_list(self.pair.scale, "pair_scale"),
            "prior": getattr(self, "prior_info", None),
            "committee": None if getattr(self, "committee", None) is None
            else finite_list(self.committee, "committee"),
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
        """Rebuild a model from ``to_dict``'s document; ``path`` names the source in error messages."""
        if not isinstance(d, dict) or d.get("format") != FORMAT:
            raise ModelFileError(f"{path}: not a torchace model file (field 'format' must be {FORMAT!r})")
        unknown = sorted(set(d) - set(FIELDS))
        if unknown:
            raise ModelFileError(f"{path}: unknown field(s) {unknown[:10]} (a model file has {list(FIELDS)}; "
                                 "free-form information belongs in 'metadata')")
        for key in ("prior", "metadata"):
            if d.get(key) is not None and not isinstance(d[key], dict):
                raise ModelFileError(f"{path}: field {key!r} must be a mapping or null, got {json_type(d[key])}")
        v = d.get("format_version")
        if v != FORMAT_VERSION:
            raise ModelFileError(f"{path}: format_version {v!r} is not supported "
                                 f"(this torchace reads {FORMAT_VERSION})")
        check_config(d, path)
        if d.get("units") != UNITS:
            raise ModelFileError(f"{path}: field 'units' must be {UNITS}, got {d.get('units')!r}")
        try:
            cfg = ACEConfig.from_dict(d["config"])
        except KeyError as exc:
            raise ModelFileError(f"{path}: 'config' is missing {exc}") from None
        except (TypeError, ValueError) as exc:
            raise ModelFileError(f"{path}: invalid 'config': {exc}") from None
        if not isinstance(d.get("basis_size"), int) or isinstance(d.get("basis_size"), bool):
            raise ModelFileError(f"{path}: field 'basis_size' must be an integer, got {json_type(d.get('basis_size'))}")
        model = cls(cfg, dtype=dtype).eval()
        if d.get("basis_size") != model.basis_size:
            raise ModelFileError(f"{path}: basis_size {d.get('basis_size')!r} does not match the rebuilt model "
                                 f"({model.basis_size}); the file is corrupt or from an incompatible version")
        model.coefficients = tensor_field(d, "coefficients", (model.basis_size,), path).to(dtype)
        model.set_basis_scale(l_axis_field(d, "nl_scale", tuple(model.embedding.nl_scale.shape), path, 1,
                                           positive=True),
                              tensor_field(d, "pair_scale", tuple(model.pair.scale.shape), path, positive=True))
        if d.get("committee") is not None:
            if has_bool(d["committee"]):
                raise ModelFileError(f"{path}: field 'committee' holds true/false where numbers belong")
            try:
                c = torch.tensor(d["committee"], dtype=torch.float64)
            except (TypeError, ValueError, RuntimeError) as exc:
                raise ModelFileError(f"{path}: field 'committee' is not a numeric array: {exc}") from None
            if c.ndim != 2 or c.shape[1] != model.basis_size or not torch.isfinite(c).all():
                raise ModelFileError(f"{path}: field 'committee' must be a finite [n, {model.basis_size}] array")
            c = tensor_field(d, "committee", tuple(c.shape), path)  # the magnitude bound
            model.committee = c.to(dtype)
        model.prior_info = d.get("prior")
        model.metadata = d.get("metadata") or {}
        return model
