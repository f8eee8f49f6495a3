"""Training data: extended-XYZ files or ``ase.Atoms`` → labelled structures (energy, forces, virial).

Label keys are configurable; by default the common ones are detected (ACEpotentials.jl / ASE / GAP
conventions): energy ``energy``/``dft_energy``/``REF_energy`` (or the attached calculator's energy),
forces ``forces``/``force``/``dft_force``/``REF_forces``, virial ``virial``/``dft_virial``/``REF_virial``
(3×3, 9 or Voigt-6 xx, yy, zz, yz, xz, xy; eV) or else stress ``stress``/``dft_stress``/``REF_stress``
(ASE sign and units, eV/Å³; converted to virial = −V·σ).  Bad data raises an error naming the file and
frame — or, with ``skip_bad=True``, the frame is skipped with a warning and listed in ``skipped``.
"""
from __future__ import annotations

import math
import os
import warnings
from dataclasses import dataclass, field
from typing import Dict, List, Optional, Sequence, Tuple

import numpy as np
from ase import Atoms

from .. import keys as K
from ..fieldcheck import check_bool

ENERGY_KEYS = ("energy", "dft_energy", "REF_energy", "free_energy")
FORCE_KEYS = ("forces", "force", "dft_force", "dft_forces", "REF_forces", "REF_force")
VIRIAL_KEYS = ("virial", "dft_virial", "REF_virial")
STRESS_KEYS = ("stress", "dft_stress", "REF_stress")
ISOLATED_ATOM = "isolated_atom"


class DataError(ValueError):
    """Bad training data; the message names the file, frame and field."""


@dataclass
class Labelled:
    """One training structure with its reference labels (None where absent)."""

    atoms: Atoms
    energy: Optional[float]
    forces: Optional[np.ndarray]   # [N, 3] eV/Å
    virial: Optional[np.ndarray]   # [3, 3] eV, = −V·σ
    config_type: str
    source: str                    # "file:frame" for messages

    @property
    def n_atoms(self) -> int:
        return len(self.atoms)


@dataclass
class DataKeys:
    energy: Optional[str] = None
    forces: Optional[str] = None
    virial: Optional[str] = None
    stress: Optional[str] = None
    config_type: str = "config_type"


@dataclass
class Dataset:
    structures: List[Labelled]
    skipped: List[Tuple[str, str]] = field(default_factory=list)  # (source, reason)

    def __len__(self) -> int:
        return len(self.structures)

    def __iter__(self):
        return iter(self.structures)

    @property
    def config_types(self) -> List[str]:
        return sorted({s.config_type for s in self.structures})


def _calc_result(atoms: Atoms, name: str):
    calc = atoms.calc
    if calc is None:
        return None
    res = getattr(calc, "results", {}) or {}
    return res.get(name)


def _find(atoms: Atoms, explicit: Optional[str], candidates: Sequence[str], where: str, calc_name: Optional[str]):
    """Return (key, value) from info/arrays (or the attached calculator), or (None, None)."""
    store = atoms.info if where == "info" else atoms.arrays
    if explicit is not None:
        if explicit in store:
            return explicit, store[explicit]
        if calc_name is not None and explicit == calc_name and _calc_result(atoms, calc_name) is not None:
            return explicit, _calc_result(atoms, calc_name)
        return explicit, None
    for key in candidates:
        if key in store:
            return key, store[key]
    if calc_name is not None:
        v = _calc_result(atoms, calc_name)
        if v is not None:
            return calc_name, v
    return None, None


def _not_bool(value, source: str, key: str) -> None:
    # extended XYZ reads T/F as booleans, and float(True) == 1.0 would be a silent wrong label
    if np.asarray(value).dtype.kind == "b":
        raise DataError(f"{source}: {key} = {value!r} is a boolean, not a number")


def _as_virial(value, source: str, key: str) -> np.ndarray:
    _not_bool(value, source, key)
    v = np.asarray(value, dtype=np.float64).reshape(-1)
    if v.size == 9:
        return v.reshape(3, 3)
    if v.size == 6:
        W = np.zeros((3, 3))
        for k, (a, b) in enumerate(K.VOIGT):
            W[a, b] = W[b, a] = v[k]
        return W
    raise DataError(f"{source}: {key} has {v.size} values, expected 9 (3×3) or 6 (Voigt)")


def label(atoms: Atoms, source: str, keys: DataKeys, elements: Optional[Sequence[str]] = None) -> Labelled:
    """Extract and validate the labels of one structure; raises DataError naming ``source``."""
    if len(atoms) == 0:
        raise DataError(f"{source}: structure has no atoms")
    pos = atoms.get_positions()
    if not np.isfinite(pos).all():
        raise DataError(f"{source}: non-finite positions")
    if elements is not None:
        unknown = sorted(set(atoms.get_chemical_symbols()) - set(elements))
        if unknown:
            raise DataError(f"{source}: element(s) {unknown} not in the model's elements {list(elements)}")
    ct = str(atoms.info.get(keys.config_type, "default"))

    ekey, e = _find(atoms, keys.energy, ENERGY_KEYS, "info", "energy")
    energy = None
    if e is not None:
        _not_bool(e, source, ekey)
        try:
            energy = float(e)
        except (TypeError, ValueError):
            raise DataError(f"{source}: {ekey} = {e!r} is not a number") from None
        if not math.isfinite(energy):
            raise DataError(f"{source}: {ekey} is {energy}")
    elif keys.energy is not None:
        raise DataError(f"{source}: energy key {keys.energy!r} not found (info keys: {sorted(atoms.info)})")

    fkey, f = _find(atoms, keys.forces, FORCE_KEYS, "arrays", "forces")
    forces = None
    if f is not None:
        _not_bool(f, source, fkey)
        forces = np.asarray(f, dtype=np.float64)
        if forces.shape != (len(atoms), 3):
            raise DataError(f"{source}: {fkey} has shape {forces.shape}, expected ({len(atoms)}, 3)")
        if not np.isfinite(forces).all():
            bad = np.flatnonzero(~np.isfinite(forces).all(axis=1))
            raise DataError(f"{source}: {fkey} non-finite for atoms {bad[:10].tolist()}")
    elif keys.forces is not None:
        raise DataError(f"{source}: forces key {keys.forces!r} not found (arrays: {sorted(atoms.arrays)})")

    virial = None
    vkey, v = _find(atoms, keys.virial, VIRIAL_KEYS, "info", None)
    if v is not None:
        virial = _as_virial(v, source, vkey)
    elif keys.virial is not None:
        raise DataError(f"{source}: virial key {keys.virial!r} not found (info keys: {sorted(atoms.info)})")
    else:
        skey, s = _find(atoms, keys.stress, STRESS_KEYS, "info", "stress")
        if s is not None:
            if not atoms.pbc.all():
                raise DataError(f"{source}: {skey} given for a structure that is not periodic in 3D")
            virial = -atoms.get_volume() * _as_virial(s, source, skey)
        elif keys.stress is not None:
            raise DataError(f"{source}: stress key {keys.stress!r} not found")
    if virial is not None and not np.isfinite(virial).all():
        raise DataError(f"{source}: virial/stress is not finite")
    if energy is None and forces is None and virial is None:
        raise DataError(f"{source}: no energy, forces, virial or stress labels found "
                        f"(info keys {sorted(atoms.info)}, arrays {sorted(atoms.arrays)}); set the keys explicitly")
    return Labelled(atoms=atoms, energy=energy, forces=forces, virial=virial, config_type=ct, source=source)


XYZ_SUFFIXES = (".xyz", ".extxyz")


def _comment_keys(line: str) -> List[str]:
    """The keys of the ``key=value`` pairs of an extended-XYZ comment line (quoted or braced values)."""
    keys, token, quote, depth = [], "", None, 0
    for ch in line.strip() + " ":
        if quote:
            quote = None if ch == quote else quote
        elif ch in "\"'":
            quote = ch
        elif ch in "{[":
            depth += 1
        elif ch in "}]":
            depth -= 1
        elif ch.isspace() and depth <= 0:
            if "=" in token:  # bare words (free text, flags) may repeat harmlessly
                keys.append(token.split("=", 1)[0].strip())
            token = ""
            continue
        token += ch
    return keys


def duplicate_comment_key(path: str) -> Optional[Tuple[int, str]]:
    """(frame, key) of the first extended-XYZ comment line that gives a key twice (ASE keeps the last one
    silently: ``energy=-40 energy=-41`` would be read as −41), else None.  A plain scan of the lines (one pass,
    a few ms for 10^4 atoms); files that are not extended XYZ, or malformed ones, are left to ASE."""
    name = os.fspath(path)
    base, opener = name, open
    for suffix, mod in ((".gz", "gzip"), (".bz2", "bz2"), (".xz", "lzma")):
        if name.endswith(suffix):
            base, opener = name[: -len(suffix)], __import__(mod).open
    if not base.lower().endswith(XYZ_SUFFIXES):
        return None
    try:
        with opener(name, "rt") as fh:
            frame = 0
            for count in fh:
                if not count.strip():
                    continue
                n = int(count.split()[0])
                keys = _comment_keys(fh.readline())
                seen = set()
                for k in keys:
                    if k in seen:
                        return frame, k
                    seen.add(k)
                for _ in range(n):
                    fh.readline()
                frame += 1
    except (OSError, ValueError, EOFError, UnicodeDecodeError, IndexError):
        return None
    return None


# a structure file larger than this (decompressed) is refused before ASE reads it: ASE holds every frame in
# memory, several times the text's size; larger data sets can be given as several files
MAX_DATA_BYTES = 4 << 30


def read_structures(path, index: str = ":") -> List[Atoms]:
    """The frames of one structure file (any format ASE reads) under the input rule (``torchace.inputs``: a
    regular file, FIFOs and devices refused, at most ``MAX_DATA_BYTES`` decompressed); a ``DataError`` names the
    file, and the frame that cannot be parsed."""
    from ase.io import iread, read

    from ..inputs import check_decompressed_size

    try:
        check_decompressed_size(path, "structure file", MAX_DATA_BYTES)
    except FileNotFoundError:
        raise DataError(f"{path}: no such file") from None
    except (OSError, ValueError) as exc:
        raise DataError(str(exc)) from None
    frames = []
    try:
        if index == ":":  # frame by frame, so that a parse error names its frame
            for a in iread(path, index):
                frames.append(a)
        else:
            frames = read(path, index)
    except Exception as exc:
        where = f"{path}:frame {len(frames)}" if index == ":" else f"{path}"
        raise DataError(f"{where}: cannot be read: {' '.join(str(exc).split())[:300]}") from exc
    frames = frames if isinstance(frames, list) else [frames]
    dup = duplicate_comment_key(path)
    if dup is not None:
        raise DataError(f"{path}:frame {dup[0]}: key {dup[1]!r} is given twice in the comment line (ASE would "
                        "keep the last value silently)")
    return frames


def as_keys(keys) -> DataKeys:
    """``DataKeys``, or a dict of its fields (as in the fit config's ``data.keys``), or None (auto-detect)."""
    if keys is None:
        return DataKeys()
    if isinstance(keys, DataKeys):
        return keys
    if isinstance(keys, dict):
        import dataclasses

        names = [f.name for f in dataclasses.fields(DataKeys)]
        unknown = sorted(set(map(str, keys)) - set(names))
        if unknown:
            raise ValueError(f"keys: unknown field(s) {unknown}; DataKeys has {names}")
        for k, v in keys.items():
            if v is not None and not isinstance(v, str):
                raise ValueError(f"keys: {k!r} must be a key name (a string), got {v!r}")
        return DataKeys(**keys)
    raise TypeError(f"keys must be a DataKeys or a dict of its fields, got {type(keys).__name__}")


def read_data(data, *, keys: Optional[DataKeys] = None, elements: Optional[Sequence[str]] = None,
              skip_bad: bool = False, index: str = ":") -> Dataset:
    """Read a path, a list of paths, a list of ``ase.Atoms`` or a ``Dataset`` into a ``Dataset``."""
    if isinstance(data, Dataset):
        return data
    keys = as_keys(keys)
    check_bool("read_data", "skip_bad", skip_bad)  # "no" would be True
    items: List[Tuple[Atoms, str]] = []
    if isinstance(data, Atoms):
        data = [data]
    if isinstance(data, (str, os.PathLike)):
        data = [data]
    for k, d in enumerate(data):
        if isinstance(d, Atoms):
            items.append((d, f"structure {k}"))
        elif isinstance(d, Labelled):
            items.append((d.atoms, d.source))
        elif isinstance(d, (str, os.PathLike)):
            frames = read_structures(d, index)
            if not frames:
                raise DataError(f"{d}: contains no structures (an empty file?)")
            items += [(a, f"{d}:frame {i}") for i, a in enumerate(frames)]
        else:
            raise DataError(f"data item {k} is a {type(d).__name__}; expected a path or ase.Atoms")
    out, skipped = [], []
    for atoms, src in items:
        try:
            out.append(label(atoms, src, keys, elements))
        except DataError as exc:
            if not skip_bad:
                raise
            warnings.warn(f"skipping {exc}")
            skipped.append((src, str(exc)))
    if not out:
        raise DataError("no usable structures in the data")
    return Dataset(out, skipped)


def isolated_atom_energies(ds: Dataset) -> Dict[str, float]:
    """E0 per element from ``config_type == 'isolated_atom'`` single-atom structures."""
    e0: Dict[str, float] = {}
    for s in ds:
        if s.config_type == ISOLATED_ATOM:
            if s.n_atoms != 1 or s.energy is None:
                raise DataError(f"{s.source}: isolated_atom must be one atom with an energy")
            sym = s.atoms.get_chemical_symbols()[0]
            if sym in e0 and abs(e0[sym] - s.energy) > 1e-8:
                raise DataError(f"{s.source}: second isolated_atom energy for {sym} differs ({s.energy} vs {e0[sym]})")
            e0[sym] = s.energy
    return e0


def example_data(name: str) -> str:
    """Path of a data file bundled with torchace (``torchace/data/``: e.g. ``"zuo2020/Si_train.xyz.gz"``, the
    Zuo et al. 2020 Si set, BSD-3; ``"si_examples.xyz"``); the fit config's ``@bundled/NAME``."""
    from importlib import resources

    path = resources.files("torchace").joinpath("data", name)
    if not path.is_file():
        raise FileNotFoundError(f"no bundled data file {name!r} in torchace/data")
    return str(path)
