"""Model files: one JSON document, everything needed to rebuild and evaluate the model (docs/model_file.md).

Loading parses strict JSON and rebuilds the model from its ``ACEConfig`` (``ACEModel.from_dict``); no code
is executed and no pickle is involved.  The document itself is defined in ``torchace.model.state``.
"""
from __future__ import annotations

import json
import os
from typing import Any, Dict, Optional

import torch

from ..fieldcheck import unique_keys
from ..model.ace import ACEModel
from ..model.state import FORMAT, FORMAT_VERSION, UNITS, ModelFileError

__all__ = ["FORMAT", "FORMAT_VERSION", "UNITS", "ModelFileError", "model_to_dict", "model_from_dict", "save", "load"]


def model_to_dict(model, metadata: Optional[Dict[str, Any]] = None) -> Dict[str, Any]:
    return model.to_dict(metadata)


def model_from_dict(d: Dict[str, Any], path: str = "<dict>", dtype: torch.dtype = torch.float64) -> ACEModel:
    return ACEModel.from_dict(d, path, dtype)


def save(model, path: str, metadata: Optional[Dict[str, Any]] = None) -> None:
    model.save(path, metadata)


# model files larger than this are refused before reading (a K = 10^5 model with a 32-member committee is
# ~70 MB); nesting deeper than Python's JSON recursion limit is refused as corrupt
MAX_FILE_BYTES = 4 << 30


def load(path: str, dtype: torch.dtype = torch.float64, device=None):
    """Load a model saved by ``model.save(path)``; JSON only, nothing is executed."""
    try:
        size = os.path.getsize(path)
    except OSError:
        raise ModelFileError(f"{path}: no such file") from None
    if size > MAX_FILE_BYTES:
        raise ModelFileError(f"{path}: {size / 2**30:.1f} GiB is larger than any torchace model file "
                             f"(limit {MAX_FILE_BYTES / 2**30:.0f} GiB)")
    try:
        with open(path, "r") as fh:
            d = json.load(fh, parse_constant=lambda c: (_ for _ in ()).throw(ValueError(f"non-finite number {c}")),
                          object_pairs_hook=unique_keys)
    except FileNotFoundError:
        raise ModelFileError(f"{path}: no such file") from None
    except (json.JSONDecodeError, UnicodeDecodeError, ValueError) as exc:
        raise ModelFileError(f"{path}: not valid JSON (truncated or corrupt?): {exc}") from None
    except RecursionError:
        raise ModelFileError(f"{path}: nested too deeply to be a torchace model file") from None
    model = ACEModel.from_dict(d, path, dtype)
    return model.to(device) if device is not None else model
