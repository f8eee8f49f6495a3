"""Stage 5, files: torchace model files (``model_file``: JSON, no code), exports (``export``: TorchScript
``torchscript``, metatomic ``metatomic``, ML-PACE ``yace_write`` + ``pair_table``) and ``.yace`` import
(``yace_read``).

- ``load(path)`` / ``save(model, path)``: torchace's own model file.
- ``read_yace(path)``: an ML-PACE / pacemaker ``.yace`` potential as a torch module.
- ``write_yace(model, path)``: a fitted torchace model as a ``.yace`` for LAMMPS ``pair_style pace``.
"""
from __future__ import annotations

from .export import FORMATS, export
from .model_file import load, save
from .yace.read import read_yace
from .yace.write import write_yace

__all__ = ["load", "save", "export", "FORMATS", "read_yace", "write_yace"]
