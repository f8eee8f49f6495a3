"""Model files: one JSON document, everything needed to rebuild and evaluate the model (docs/model_file.md).

Loading parses strict JSON and rebuilds the model from its ``ACEConfig`` (``ACEModel.from_dict``, or
``NonlinearACEModel.from_dict`` for a document of the nonlinear model's format); no code
is executed and no pickle is involved.  The document itself is defined in ``torchace.model.state``.
"""
from __future__ import annotations

import json
from typing import Any, Dict, Optional

import torch

from ..fieldcheck import check_input_file, unique_keys
from ..model.ace import ACEModel
from ..model.state import FORMAT, FORMAT_VERSION, UNITS, ModelFileError

__all__ = ["FORMAT", "FORMAT_VERSION", "UNITS", "ModelFileError", "model_to_dict", "model_from_dict", "save", "load"]


def model_to_dict(model, metadata: Optional[Dict[str, Any]] = None) -> Dict[str, Any]:
    return model.to_dict(metadata)


def _model_class(d):
    """The class a document describes: the nonlinear model's own format, else the linear ``ACEModel``."""
    from ..model.nonlinear import FORMAT as NONLINEAR_FORMAT, NonlinearACEModel

    return NonlinearACEModel if isinstance(d, dict) and d.get("format") == NONLINEAR_FORMAT else ACEModel


def model_from_dict(d: Dict[str, Any], path: str = "<dict>", dtype: torch.dtype = torch.float64):
    return _model_class(d).from_dict(d, path, dtype)


def save(model, path: str, metadata: Optional[Dict[str, Any]] = None, *, overwrite: bool = False) -> None:
    """``model.save``: an existing file other than a torchace model file is replaced only with ``overwrite``."""
    model.save(path, metadata, overwrite=overwrite)


# model files larger than this are refused before reading (a K = 10^5 model with a 32-member committee is
# ~70 MB); nesting deeper than Python's JSON recursion limit is refused as corrupt
MAX_FILE_BYTES = 4 << 30


def load(path: str, dtype: torch.dtype = torch.float64, device=None):
    """Load a model saved by ``model.save(path)``; JSON only, nothing is executed."""
    try:
        check_input_file(path, "torchace model file", MAX_FILE_BYTES)  # not /dev/zero, a FIFO or a directory
    except FileNotFoundError:
        raise ModelFileError(f"{path}: no such file") from None
    except (ValueError, TypeError) as exc:
        raise ModelFileError(str(exc) if isinstance(exc, ValueError) else f"{path!r}: not a file name") from None
    try:
        with open(path, "r") as fh:
            d = json.load(fh, parse_constant=lambda c: (_ for _ in ()).throw(ValueError(f"non-finite number {c}")),
                          object_pairs_hook=unique_keys)
    except FileNotFoundError:
        raise ModelFileError(f"{path}: no such file") from None
    except UnicodeDecodeError:
        import zipfile

        what = "a zip archive (a TorchScript export? load it with TorchACECalculator(path, backend='torchscript'))" \
            if zipfile.is_zipfile(path) else "a binary file (a pickle or torch.save file? torchace never loads those: " \
            "they can run code)"
        raise ModelFileError(f"{path}: {what}, not a JSON model file") from None
    except (json.JSONDecodeError, ValueError) as exc:
        raise ModelFileError(f"{path}: not valid JSON (truncated or corrupt?): {exc}") from None
    except RecursionError:
        raise ModelFileError(f"{path}: nested too deeply to be a torchace model file") from None
    model = _model_class(d).from_dict(d, path, dtype)
    return model.to(device) if device is not None else model
