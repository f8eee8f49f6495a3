"""Which pair table belongs to a ``.yace``: the export's declaration, and reading that table back.

ML-PACE's C-tilde ``.yace`` has no pair term, so ``write_yace`` puts a model's pair part (pair basis, ZBL) into
a LAMMPS pair table beside it (torchace.io.yace.pair_table).  The ``.yace`` records which one in a comment line
that ML-PACE ignores::

    # torchace pair table: "m_pairpot.table"      (a JSON string: the file, relative to the .yace's folder)
    # torchace pair table: none                   (the model has no pair part)

``read_yace`` reads the declared table too (``pair_term``), so that the model it returns is the whole model
the export describes, as ``pair_style hybrid/overlay pace table`` evaluates it, never the many-body half
alone.  ``.yace`` files written by torchace before the declaration existed are recognised by their first
line; their table is the default ``<stem>_pairpot.table`` when it exists, else the export's LAMMPS include
file ``<stem>.lammps`` tells whether there was a pair part; otherwise the reader refuses.  Other ``.yace``
files (pacemaker) are whole models by themselves.
"""
from __future__ import annotations

import json
import os
from typing import Optional, Tuple, Union

import numpy as np

from ...model.pace.pair_table import TabulatedPair
from ...model.state import ModelFileError

DECLARATION = "# torchace pair table: "
# the first line of every .yace that torchace writes (write_yace)
TORCHACE_HEADER = "# ML-PACE C-tilde potential written by torchace"


def declaration(yace_path: str, table_path: Optional[str]) -> str:
    """The comment line that ties ``table_path`` (None: no pair part) to the .yace at ``yace_path``."""
    if table_path is None:
        return DECLARATION + "none"
    folder = os.path.dirname(os.path.abspath(yace_path))
    return DECLARATION + json.dumps(os.path.relpath(os.path.abspath(table_path), folder))


def declared_pair_table(yace_path: str) -> Tuple[bool, Optional[str]]:
    """(written by torchace, the pair table that belongs to the .yace or None): from the declaration line, or
    for an older torchace export from the files beside it.  Raises ``ModelFileError`` for an older torchace
    export whose pair part cannot be told."""
    yace_path = os.fspath(yace_path)
    header = []
    with open(yace_path, "r", encoding="utf-8", errors="replace") as fh:
        for line in fh:
            if not line.startswith("#"):
                break                       # the comments come first; never read the whole file here
            header.append(line.rstrip("\n"))
            if len(header) > 100:
                break
    for line in header:
        if line.startswith(DECLARATION):
            value = line[len(DECLARATION):].strip()
            if value == "none":
                return True, None
            try:
                name = json.loads(value)
            except ValueError:
                name = None
            if not isinstance(name, str) or not name:
                raise ModelFileError(f"{yace_path}: the line '{DECLARATION.strip()}' must hold a quoted file name or "
                                     f"none, got {value[:80]!r}")
            return True, os.path.join(os.path.dirname(os.path.abspath(yace_path)), name)
    if not (header and header[0].startswith(TORCHACE_HEADER)):
        return False, None
    stem = yace_path[: -len(".yace")] if yace_path.endswith(".yace") else yace_path
    if os.path.isfile(stem + "_pairpot.table"):
        return True, os.path.abspath(stem + "_pairpot.table")
    include = stem + ".lammps"
    if os.path.isfile(include):
        with open(include, "r", encoding="utf-8", errors="replace") as fh:
            styles = [ln.split() for ln in fh if ln.lstrip().startswith("pair_style")]
        if styles and styles[0] == ["pair_style", "pace"]:
            return True, None               # the export said: ML-PACE alone is the whole model
    raise ModelFileError(f"{yace_path}: written by an older torchace, which keeps the model's pair part (if it has "
                         f"one) in a separate LAMMPS pair table, and no {os.path.basename(stem)}_pairpot.table is "
                         "beside it: pass read_yace(..., pair_table=PATH) with the export's table, or "
                         "pair_table=False if the model has no pair part")


def read_pair_term(table_path: str, elements, source_yace: str) -> TabulatedPair:
    """The pair term of ``table_path`` (sections ``A_B`` for every ordered pair of ``elements``, as
    ``write_pair_table`` writes them and the LAMMPS input's ``pair_coeff`` lines name them)."""
    from .pair_table import read_pair_table

    try:  # read_pair_table applies the input rule (a regular file, its size limit)
        sections = read_pair_table(table_path)
    except FileNotFoundError:
        raise ModelFileError(f"{source_yace}: its pair part is in the LAMMPS pair table {table_path}, which does not "
                             "exist: keep the export's files together, pass read_yace(..., pair_table=PATH), or "
                             "pair_table=False for the many-body part alone (pair_style pace without the "
                             "table)") from None
    except IndexError:   # read_pair_table ran out of lines inside a section
        raise ModelFileError(f"{table_path}: ends inside a section (truncated?); it is the pair part of "
                             f"{source_yace}: re-export the model") from None
    except (ValueError, UnicodeDecodeError) as exc:
        text = str(exc) if str(exc).startswith(str(table_path)) else \
            f"{table_path}: not a LAMMPS pair table (sections of a keyword, 'N n R rlo rhi' and 'index r E F' lines)"
        raise ModelFileError(f"{text} (the pair part of {source_yace})") from None
    tables, names = {}, {}
    for a, ea in enumerate(elements):
        for b, eb in enumerate(elements):
            name = f"{ea}_{eb}"
            if name not in sections:
                raise ModelFileError(f"{table_path}: no section {name!r} (the pair part of {source_yace} needs one "
                                     "for every ordered element pair)")
            r, E, F = sections[name]
            if len(r) < 2 or not (np.all(np.isfinite(r)) and np.all(np.isfinite(E)) and np.all(np.isfinite(F))) \
                    or not np.all(np.diff(r) > 0) or r[0] <= 0:
                raise ModelFileError(f"{table_path}: section {name!r}: needs at least two points, finite numbers and "
                                     "distances increasing from above 0")
            tables[(a, b)], names[(a, b)] = (r, E, F), name
    return TabulatedPair(tables, len(elements), names, table_path)


def pair_term(yace_path: str, elements, pair_table: Union[None, bool, str, os.PathLike] = None
              ) -> Optional[TabulatedPair]:
    """The pair term that ``read_yace`` adds: ``pair_table`` None (default) — the one the .yace declares (a
    torchace export; none for other .yace files); a path — that table (an overlay of one's own); False — none
    (the many-body part alone, what ``pair_style pace`` without the table computes)."""
    if pair_table is False:
        return None
    if pair_table is True:
        raise ValueError("pair_table must be None (the table the .yace declares), a file name or False, got True")
    if pair_table is None:
        _, pair_table = declared_pair_table(yace_path)
        if pair_table is None:
            return None
    return read_pair_term(os.fspath(pair_table), elements, os.fspath(yace_path))
