"""``export(model, path, format=...)``: TorchScript, metatomic or ML-PACE .yace (docs/export.md)."""
from __future__ import annotations

import copy
import os
from typing import Any, Dict, Optional

from .torchscript import as_dtype, export_torchscript

FORMATS = ("torchscript", "metatomic", "yace")


class YaceExport(str):
    """What ``export(..., format="yace")`` returns: the path as given (a ``str``, so existing callers keep
    working) that also carries the export's files and LAMMPS input, file names absolute:

    ``.yace``, ``.pair_table`` (None without a pair part), ``.lammps_include`` (the ``<stem>.lammps`` file for
    LAMMPS ``include``), ``.lammps`` (its command lines), ``.elements``, ``.lammps_types`` (element per atom
    type) and ``.info`` (``write_yace``'s full report)."""

    def __new__(cls, path: str, info: Dict[str, Any]):
        obj = super().__new__(cls, path)
        obj.info = info
        for key in ("yace", "pair_table", "lammps_include", "lammps", "elements", "lammps_types"):
            setattr(obj, key, info.get(key))
        return obj

    def __reduce__(self):
        return (YaceExport, (str(self), self.info))


def export(model, path: str, format: str = "torchscript", *, metadata: Optional[Dict[str, Any]] = None,
           dtype=None, overwrite: bool = False, **kwargs) -> str:
    """Export ``model`` to ``path`` in ``format`` (``FORMATS``); returns the path.  Writes are atomic.

    ``"torchscript"``: a TorchScript archive with JSON metadata (see the module docstring);
    ``metadata``: extra JSON-serialisable entries stored under ``"user"``.
    ``"metatomic"``: a metatomic ``AtomisticModel`` file (keyword arguments: ``name``, ``description``,
    ``authors``, ``devices``; ``metadata`` goes into its ``ModelMetadata.extra["user"]`` as JSON).
    ``"yace"``: ``torchace.io.write_yace(model, path, **kwargs)`` (potential, pair table, ``<stem>.lammps``
    include file); returns a ``YaceExport``: the path, with ``.lammps`` (input lines), ``.lammps_include``,
    ``.yace``, ``.pair_table`` (absolute) and ``.info``.
    ``dtype``: export a copy converted to this dtype (default: the model's).
    ``overwrite``: replace existing files that torchace did not write (default: an existing file is replaced
    only if it is a torchace export of the same kind; ``OutputPathError`` otherwise, before any work).
    """
    fmt = str(format).lower()
    if fmt not in FORMATS:
        raise ValueError(f"unknown export format {format!r}; choose one of {list(FORMATS)}")
    path = os.fspath(path)
    dt = as_dtype(dtype)
    if fmt == "torchscript":
        if kwargs:
            raise TypeError(f"export format 'torchscript' takes no options {sorted(kwargs)}")
        if dt is not None and dt != model.coefficients.dtype:
            model = copy.deepcopy(model).to(dt)
        return export_torchscript(model, path, metadata, overwrite=overwrite)
    if fmt == "metatomic":
        from .metatomic import export_metatomic  # optional dependency, imported on demand

        return export_metatomic(model, path, dtype=dt, metadata=metadata, overwrite=overwrite, **kwargs)
    from .yace.write import write_yace  # fmt == "yace"

    if dt is not None and dt != model.coefficients.dtype:
        model = copy.deepcopy(model).to(dt)
    if metadata is not None:
        kwargs["metadata"] = metadata
    if overwrite:
        kwargs["overwrite"] = True
    info = write_yace(model, path, **kwargs)
    return YaceExport(path, info) if isinstance(info, dict) else path
