"""Close contacts in training data: atom pairs far closer than any physical bond between their elements.

A training structure with two Si atoms 0.3 Å apart is almost always a broken file (wrong units, a duplicated
atom, a bad unwrapping), and fitting it silently distorts the repulsive part of the potential.  Real data sets
do contain short contacts (high-temperature MD, compressed cells), so this is a warning, not an error: a pair
closer than ``factor`` × (r_cov(a) + r_cov(b)) (ASE's covalent radii, Cordero et al. 2008; default factor 0.5:
Si–Si 1.11 Å, H–H 0.31 Å, Cu–Cu 1.32 Å, well below any bond) is reported naming the file, frame and atoms.
``error=True`` makes it an error; ``factor=0`` switches the check off.  (Atoms closer than ``min_distance``,
0.01 Å by default, "on top of each other", stay an error of their own.)  The bundled Zuo et al. data sets are at
0.82 × the covalent sum or more.

Synthetic data that are short on purpose (``synthetic_dimers``, ``repulsion_restraint``) are appended after
this check and never reach it.
"""
from __future__ import annotations

import warnings
from typing import Sequence

import numpy as np
from ase.data import chemical_symbols, covalent_radii

from ..fieldcheck import check_bool, check_float
from ..structures.neighbours.pairs import estimate_pairs, pair_bound, sparse_neighbour_list
from .data import DataError, Labelled

DEFAULT_CLOSE_CONTACT = 0.5
# at most this many structures are named in one message (the count says how many more)
SHOWN = 3
# pairs within the short cutoff per atom beyond which a structure is not searched here (a real one has ~0)
MAX_PAIRS_PER_ATOM = 100


class CloseContactWarning(UserWarning):
    """A training structure with atoms far closer than their covalent radii allow."""


def _searchable(pos: np.ndarray, cell: np.ndarray, pbc: np.ndarray, cutoff: float) -> bool:
    """Whether the short-range search is meaningful: finite numbers, a non-degenerate periodic cell and a sane
    number of pairs.  Other structures are refused later, by name, where the model's neighbour list is built
    (``torchace.structures.batch.collate``); this check neither duplicates nor pre-empts those errors."""
    if not (np.isfinite(pos).all() and np.isfinite(cell).all()):
        return False
    if pbc.any():
        if (np.linalg.matrix_rank(cell[pbc], tol=1e-8) < int(pbc.sum())
                or (pbc.all() and abs(np.linalg.det(cell)) < 1e-8)):
            return False
        sane = MAX_PAIRS_PER_ATOM * len(pos) + 1000
        try:
            if pair_bound(len(pos), cell, pbc, cutoff) > sane and estimate_pairs(pos, cell, pbc, cutoff) > sane:
                return False  # a collapsed or nearly flat cell: the pair check refuses it with the numbers
        except ValueError:
            return False
    return True


def close_contact(s: Labelled, factor: float):
    """(i, j, d, threshold) of the closest pair of ``s`` relative to its threshold, or None if none is closer than
    ``factor`` × the sum of the covalent radii (or the structure is refused elsewhere: ``_searchable``)."""
    atoms = s.atoms
    if len(atoms) == 0:
        return None
    radii = covalent_radii[atoms.numbers]
    cutoff = factor * 2.0 * float(radii.max())
    pos = atoms.get_positions()
    cell = atoms.cell.array
    pbc = np.asarray(atoms.get_pbc(), dtype=bool)
    if not _searchable(pos, cell, pbc, cutoff):
        return None
    try:
        i, j, S = sparse_neighbour_list(pos, cell, pbc, cutoff)
    except ValueError:
        return None
    if not len(i):
        return None
    d = np.linalg.norm(pos[j] - pos[i] + S @ cell, axis=1)
    thr = factor * (radii[i] + radii[j])
    rel = d / thr
    e = int(np.argmin(rel))
    if not rel[e] < 1.0:
        return None
    return int(i[e]), int(j[e]), float(d[e]), float(thr[e])


def check_close_contacts(structs: Sequence[Labelled], factor: float = DEFAULT_CLOSE_CONTACT, error: bool = False,
                         what: str = "training") -> None:
    """Warn (``CloseContactWarning``; ``error``: raise ``DataError``) naming file:frame and atoms of every
    structure of ``structs`` with a pair closer than ``factor`` × the sum of their covalent radii."""
    factor = check_float(what, "close_contact", factor, nonnegative=True)
    check_bool(what, "close_contact_error", error)
    if factor == 0:
        return
    found = []
    for s in structs:
        hit = close_contact(s, factor)
        if hit is not None:
            found.append((s, hit))
            if error:
                break
    if not found:
        return
    parts = []
    for s, (i, j, d, thr) in found[:SHOWN]:
        zi, zj = s.atoms.numbers[i], s.atoms.numbers[j]
        parts.append(f"{s.source}: atoms {i} and {j} ({chemical_symbols[zi]}-{chemical_symbols[zj]}) are {d:.3g} Å "
                     f"apart, less than {factor:g} × their covalent radii ({thr:.3g} Å)")
    more = f" (and {len(found) - SHOWN} more structures)" if len(found) > SHOWN else ""
    if error:
        raise DataError(f"{parts[0]}: a broken structure (units, duplicated atoms)? Fix or remove it, or lower "
                        "data.close_contact (fit argument close_contact; 0 switches the check off)")
    warnings.warn(f"{len(found)} {what} structure(s) with atoms far closer than a bond: " + "; ".join(parts) + more
                  + ". Check these frames (units, duplicated atoms); data.close_contact (fit argument close_contact) "
                  "sets the threshold, close_contact_error: true makes it an error", CloseContactWarning,
                  stacklevel=3)
