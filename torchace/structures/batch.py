"""Structure batch: many ``ase.Atoms`` of different sizes and elements → one set of flat tensors.

Atoms of all structures are concatenated (``batch`` maps atom → structure), edges come from the
neighbour list with global atom indices.  Input is validated here, where it enters: the error
names the structure (its index in the list, and ``info['config_type']``/``info['name']`` if set).
"""
from __future__ import annotations

import os
from typing import Dict, List, Optional, Sequence, Union

import numpy as np
import torch
from ase import Atoms

from .. import keys as K
from ..fieldcheck import check_float, short_repr
from .neighbours.pairs import neighbour_list

DEFAULT_MIN_DISTANCE = 0.01  # Å; closer pairs are "atoms on top of each other"


def _label(k: int, atoms: Atoms, name: Optional[str] = None) -> str:
    """"structure k (formula, config_type=…)", or with ``name`` (a data file's "file:frame") that name."""
    extra = [f"{key}={atoms.info[key]!r}" for key in ("config_type", "name") if key in atoms.info]
    where = name if name is not None else f"structure {k}"
    return f"{where} ({atoms.get_chemical_formula()}{', ' + ', '.join(extra) if extra else ''})"


def as_list(structures: Union[Atoms, Sequence[Atoms]]) -> List[Atoms]:
    if isinstance(structures, Atoms):
        return [structures]
    if isinstance(structures, (str, bytes, os.PathLike)):
        raise TypeError(f"structures is a file name ({os.fspath(structures)!r}), not ase.Atoms: read it with "
                        "ase.io.read(path, ':') (torchace.fit and read_data take file names)")
    try:
        out = list(structures)
    except TypeError:
        raise TypeError("structures must be an ase.Atoms or a list of them, "
                        f"got {short_repr(structures, 60)}") from None
    for k, a in enumerate(out):
        if not isinstance(a, Atoms):
            raise TypeError(f"structure {k} is a {type(a).__name__}, expected ase.Atoms")
    return out


def validate(k: int, atoms: Atoms, z_to_species: Dict[int, int], name: Optional[str] = None) -> None:
    label = _label(k, atoms, name)
    if len(atoms) == 0:
        raise ValueError(f"{label}: has no atoms")
    pos = atoms.get_positions()
    bad = ~np.isfinite(pos).all(axis=1)
    if bad.any():
        raise ValueError(f"{label}: non-finite positions for atoms {np.flatnonzero(bad)[:10].tolist()}")
    unknown = sorted(set(atoms.numbers.tolist()) - set(z_to_species))
    if unknown:
        from ase.data import chemical_symbols

        names = [chemical_symbols[z] if 0 <= z < len(chemical_symbols) else str(z) for z in unknown]
        known = [chemical_symbols[z] for z in z_to_species]
        raise ValueError(f"{label}: element(s) {names} not in the model's elements {known}")
    pbc = atoms.get_pbc()
    cell = atoms.cell.array
    if not np.isfinite(cell).all():
        raise ValueError(f"{label}: non-finite cell")
    if pbc.any():
        vecs = cell[pbc]
        # the periodic lattice vectors must be linearly independent
        if np.linalg.matrix_rank(vecs, tol=1e-8) < len(vecs) or (pbc.all() and abs(np.linalg.det(cell)) < 1e-8):
            raise ValueError(f"{label}: periodic cell is degenerate (zero volume or dependent lattice vectors)")


def too_close(k: int, atoms: Atoms, i: int, j: int, d: float, min_distance: float,
              name: Optional[str] = None) -> ValueError:
    """The error for atoms ``i`` and ``j`` of structure ``k`` closer than ``min_distance`` (Å)."""
    return ValueError(f"{_label(k, atoms, name)}: atoms {i} and {j} are {d:.3g} Å apart "
                      f"(< min_distance {min_distance} Å): atoms on top of each other")


def collate(structures, elements_z: Sequence[int], rcut: float, *, dtype=torch.float64,
            device=None, min_distance: float = DEFAULT_MIN_DISTANCE,
            names: Optional[Sequence[str]] = None) -> Dict[str, torch.Tensor]:
    """Validate, build neighbour lists and concatenate ``structures`` into flat tensors.  ``names``: where
    each structure came from ("file:frame"), used in error messages instead of its index in this batch."""
    atoms_list = as_list(structures)
    if not atoms_list:
        raise ValueError("no structures given")
    check_float("argument", "min_distance", min_distance, nonnegative=True)  # NaN would switch the check off
    if names is not None and len(names) != len(atoms_list):
        raise ValueError(f"collate: {len(names)} names for {len(atoms_list)} structures")
    z_to_species = {int(z): s for s, z in enumerate(elements_z)}
    pos_l, num_l, bat_l, ei_l, ej_l, sh_l, cells, pbcs, nat = [], [], [], [], [], [], [], [], []
    offset = 0
    for k, atoms in enumerate(atoms_list):
        name = None if names is None else names[k]
        validate(k, atoms, z_to_species, name)
        pos = atoms.get_positions()
        cell = atoms.cell.array.copy()
        pbc = atoms.get_pbc()
        try:
            i, j, S = neighbour_list(pos, cell, pbc, rcut)
        except ValueError as exc:  # a hopeless cell, refused before the search
            raise type(exc)(f"{_label(k, atoms, name)}: {exc}") from None  # ResourceLimitError stays one
        if len(i):
            d = np.linalg.norm(pos[j] - pos[i] + S @ cell, axis=1)
            close = np.flatnonzero(d < min_distance)
            if len(close):
                e = close[0]
                raise too_close(k, atoms, int(i[e]), int(j[e]), float(d[e]), min_distance, name)
        pos_l.append(pos)
        num_l.append(atoms.numbers)
        bat_l.append(np.full(len(atoms), k))
        ei_l.append(i + offset)
        ej_l.append(j + offset)
        sh_l.append(S)
        cells.append(cell)
        pbcs.append(pbc)
        nat.append(len(atoms))
        offset += len(atoms)
    numbers = np.concatenate(num_l)
    species = np.array([z_to_species[int(z)] for z in numbers], dtype=np.int64)
    f = dict(dtype=dtype, device=device)
    i_dev = dict(dtype=torch.long, device=device)
    return {
        K.POSITIONS: torch.tensor(np.concatenate(pos_l), **f),
        K.NUMBERS: torch.tensor(numbers, **i_dev),
        K.SPECIES: torch.tensor(species, **i_dev),
        K.BATCH: torch.tensor(np.concatenate(bat_l), **i_dev),
        K.CELL: torch.tensor(np.stack(cells), **f),
        K.PBC: torch.tensor(np.stack(pbcs), dtype=torch.bool, device=device),
        K.EDGE_INDEX: torch.tensor(np.stack([np.concatenate(ei_l), np.concatenate(ej_l)]), **i_dev),
        K.UNIT_SHIFTS: torch.tensor(np.concatenate(sh_l), **f),
        K.N_ATOMS: torch.tensor(nat, **i_dev),
    }
