"""The JSON side of model files (docs/model_file.md): strict reading, atomic writing, and field checks whose
errors (``ModelFileError``) name the file and the field.

Floats are written with Python's shortest round-trip repr, so parameters reload bit-exactly; writes are atomic
(temporary file + rename); non-finite numbers are refused.  The document of the ACE model is defined in
``model.document``.
"""
from __future__ import annotations

import json
from typing import Any, Dict

import torch

from .. import keys as K
from ..atomic import check_output, json_output, write_json_atomic
from ..fieldcheck import unique_keys
from ..inputs import open_input

UNITS = {"energy": "eV", "length": "Angstrom", "virial": "eV", "stress": "eV/Angstrom^3"}


class ModelFileError(ValueError):
    """A model file that cannot be loaded; the message names the file and the field."""


def finite_list(t: torch.Tensor, what: str) -> Any:
    """A tensor as nested lists of float64 for a model file; non-finite values refused."""
    x = t.detach().to("cpu", torch.float64)
    if not torch.isfinite(x).all():
        raise ValueError(f"cannot save: {what} contains non-finite values")
    return x.tolist()


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
