"""The validation set of ``torchace.train`` (``validation=``, ``data.validation`` of a train config).

One check of the argument for the Python API and the config alike (``check_validation``): None, a fraction in
(0, 1) of the training structures (a seeded split), or data (a path, a non-empty list of paths, ``ase.Atoms``
objects or a ``Dataset``).  Integers (``1`` would read as "all of it"), booleans and empty lists are refused
naming the field, instead of failing later with a message about iterating an ``int``.

``validation_split`` then resolves it against the training data and refuses a validation set that cannot
measure generalisation: the training file itself, every validation structure also a training structure, or no
structure left after filtering (isolated atoms only, all skipped as bad).  Validation structures that repeat
some training structures are used, with a warning that names how many: they make the validation loss
optimistic and early stopping late.  Structures are compared by their geometry (species, positions, cell,
periodicity), whatever their labels.
"""
from __future__ import annotations

import hashlib
import numbers
import os
import warnings
from typing import Any, List, Sequence, Tuple

import numpy as np

from ..atomic import same_file
from ..fieldcheck import short_repr
from ..fit.assembly import fitting_structures
from ..fit.data import DataError, Dataset, Labelled, read_data


class ValidationOverlapWarning(UserWarning):
    """Some validation structures are also training structures (the validation loss is then optimistic)."""


def _is_data(v: Any) -> bool:
    from ase import Atoms

    if isinstance(v, (str, os.PathLike)):
        return bool(os.fspath(v))
    if isinstance(v, (Dataset, Atoms)):
        return True
    if isinstance(v, (list, tuple)):
        return bool(v) and all(isinstance(x, (str, os.PathLike, Atoms, Labelled))
                               and not (isinstance(x, str) and not x) for x in v)
    return False


def check_validation(where: str, key: str, v: Any) -> Any:
    """``v`` if it is None, a fraction in (0, 1) or data; else ValueError naming ``key``."""
    if v is None or _is_data(v):
        return v
    if isinstance(v, numbers.Real) and not isinstance(v, (bool, numbers.Integral)) and 0.0 < v < 1.0:
        return float(v)  # numpy floats too
    what = ("a fraction in (0, 1) of the training structures (e.g. 0.1), validation data (a file, a list of files "
            "or structures) or none")
    if isinstance(v, (bool, numbers.Real)):
        hint = " (an integer is not a fraction: write 0.1 for 10 %)" \
            if isinstance(v, numbers.Integral) and not isinstance(v, bool) else ""
        raise ValueError(f"{where}: '{key}' must be {what}, got {short_repr(v)}{hint}")
    if isinstance(v, (list, tuple)) and not v:
        raise ValueError(f"{where}: '{key}' is an empty list; give {what}")
    raise ValueError(f"{where}: '{key}' must be {what}, got {short_repr(v)}")


def geometry_key(s: Labelled) -> str:
    """SHA-256 of a structure's species, positions, cell and periodicity (its labels left out)."""
    h = hashlib.sha256()
    a = s.atoms
    for arr in (a.numbers, a.positions, a.cell[:], a.pbc):
        arr = np.ascontiguousarray(np.asarray(arr, dtype=np.float64))
        h.update(str(arr.shape).encode())
        h.update(arr.tobytes())
    return h.hexdigest()


def _paths(v: Any) -> List[str]:
    if isinstance(v, (str, os.PathLike)):
        return [os.fspath(v)]
    if isinstance(v, (list, tuple)):
        return [os.fspath(p) for p in v if isinstance(p, (str, os.PathLike))]
    return []


def split_fraction(structs: Sequence[Labelled], fraction: float, seed: int) -> Tuple[list, list]:
    """(training, validation) structures: a seeded random ``fraction`` of ``structs`` held out."""
    n_val = int(round(fraction * len(structs)))
    if n_val < 1 or n_val >= len(structs):
        raise ValueError(f"train: validation={fraction} leaves {n_val} of {len(structs)} structures for validation; "
                         "give a fraction that leaves at least one structure on each side")
    perm = np.random.default_rng(seed).permutation(len(structs))
    val = set(perm[:n_val].tolist())
    return ([s for k, s in enumerate(structs) if k not in val], [s for k, s in enumerate(structs) if k in val])


def validation_split(ds: Dataset, data: Any, validation: Any, seed: int, *, keys=None, elements=None,
                     skip_bad: bool = False) -> Tuple[list, list]:
    """(training structures, validation structures) for ``validation`` (checked by ``check_validation``);
    ``data`` is what ``ds`` was read from (to recognise the training file given again)."""
    validation = check_validation("train", "validation", validation)
    structs = fitting_structures(ds)
    if validation is None:
        return structs, []
    if isinstance(validation, float):
        return split_fraction(structs, validation, seed)
    for p in _paths(validation):
        for q in _paths(data):
            if same_file(p, q):
                raise ValueError(f"train: 'validation' {p} is the training data ({q}): a validation set must hold "
                                 "other structures; give a fraction (e.g. validation=0.1) to hold some out")
    try:
        vds = read_data(validation, keys=keys, elements=elements, skip_bad=skip_bad)
    except DataError as exc:
        raise DataError(f"train: 'validation': {exc}") from None
    val = fitting_structures(vds)
    if not val:
        raise ValueError(f"train: 'validation' has no structure to validate on ({len(vds)} structure(s), all "
                         f"isolated atoms{', or skipped as bad' if skip_bad else ''}); give other data or a fraction")
    seen = {geometry_key(s) for s in structs}
    repeated = [s for s in val if geometry_key(s) in seen]
    if len(repeated) == len(val):
        raise ValueError(f"train: 'validation': all {len(val)} validation structures are training structures "
                         f"(e.g. {repeated[0].source}); a validation set must hold other structures")
    if repeated:
        warnings.warn(f"train: 'validation': {len(repeated)} of {len(val)} validation structures are also training "
                      f"structures (e.g. {repeated[0].source}); the validation loss is optimistic for them",
                      ValidationOverlapWarning, stacklevel=3)
    return structs, val
