"""Model files: one JSON document, everything needed to rebuild and evaluate the model (docs/model_file.md).

Loading parses strict JSON and rebuilds the model from its ``ACEConfig`` and readout (``ACEModel.from_dict``:
the current schema and the earlier linear and nonlinear files); no code is executed and no pickle is
involved.  The document itself is defined in ``torchace.model.document``.
"""
from __future__ import annotations

from typing import Any, Dict, Optional

import torch

from ..model.ace import ACEModel
from ..model.document import FORMAT, FORMAT_VERSION
from ..model.state import UNITS, ModelFileError, read_document

__all__ = ["FORMAT", "FORMAT_VERSION", "UNITS", "ModelFileError", "model_to_dict", "model_from_dict", "save", "load"]


def model_to_dict(model, metadata: Optional[Dict[str, Any]] = None) -> Dict[str, Any]:
    return model.to_dict(metadata)


def model_from_dict(d: Dict[str, Any], path: str = "<dict>", dtype: torch.dtype = torch.float64):
    return ACEModel.from_dict(d, path, dtype)


def save(model, path: str, metadata: Optional[Dict[str, Any]] = None, *, overwrite: bool = False) -> None:
    """``model.save``: an existing file other than a torchace model file is replaced only with ``overwrite``."""
    model.save(path, metadata, overwrite=overwrite)


def load(path: str, dtype: torch.dtype = torch.float64, device=None):
    """Load a model saved by ``model.save(path)`` (JSON), or an ML-PACE ``.yace`` potential (``read_yace``: a
    ``PACEModel``, linear or nonlinear, e.g. written by pacemaker); nothing is executed."""
    import os

    if not isinstance(path, (str, os.PathLike)):
        raise TypeError(f"torchace.load: path must be a model file path (str or os.PathLike), got {path!r}")
    if os.fspath(path).endswith(".yace"):
        from .yace.read import read_yace

        return read_yace(path, dtype=dtype, device=device)
    model = ACEModel.from_dict(read_document(path), path, dtype)
    return model.to(device) if device is not None else model
