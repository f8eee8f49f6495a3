"""Reading and writing model files of other programs.

- ``read_yace(path)``: an ML-PACE / pacemaker ``.yace`` potential as a torch module (``yace_read``).
- ``write_yace(model, path)``: a fitted torchace model as a ``.yace`` for LAMMPS ``pair_style pace``
  (``yace_write``).
"""
from __future__ import annotations


def read_yace(path, **kwargs):
    from .yace_read import read_yace as _read
    return _read(path, **kwargs)


def write_yace(model, path, **kwargs):
    from .yace_write import write_yace as _write
    return _write(model, path, **kwargs)


__all__ = ["read_yace", "write_yace"]
