"""ACEConfig: the single source of truth for a model's hyper-parameters (JSON/YAML mirror it).

Defaults follow ACEpotentials.jl v0.10 ``ace1_model``: r0 for an element pair is the mean of the two
elements' ``bond_len`` (VASP auto length scales, shipped as ``data/length_scales.json``), and
rcut = 2.5·r0 taken as the maximum over pairs.
"""
from __future__ import annotations

import dataclasses
import json
from dataclasses import dataclass, field
from functools import lru_cache
from importlib import resources
from typing import Dict, List, Optional, Sequence, Union

import numpy as np
from ase.data import atomic_numbers, chemical_symbols

from .basis.spec import check_size, totaldegree_per_order
from .fieldcheck import check_ace_fields


@lru_cache(maxsize=1)
def length_scales() -> Dict[int, Dict[str, float]]:
    text = resources.files("torchace").joinpath("data/length_scales.json").read_text()
    return {int(z): v for z, v in json.loads(text)["elements"].items()}


def element_symbol(e: Union[str, int]) -> str:
    if isinstance(e, str):
        if e not in atomic_numbers:
            raise ValueError(f"unknown element symbol {e!r}")
        return e
    z = int(e)
    if not 0 < z < len(chemical_symbols):
        raise ValueError(f"unknown atomic number {e!r}")
    return chemical_symbols[z]


def bond_length(symbol: str) -> float:
    z = atomic_numbers[symbol]
    table = length_scales()
    if z not in table:
        raise ValueError(f"no default bond length for {symbol}: pass r0 (and rcut) explicitly")
    return float(table[z]["bond_len"])


@dataclass
class ACEConfig:
    elements: List[str]
    order: int
    totaldegree: List[float]
    wL: float = 1.5
    rcut: float = 0.0
    r0: List[List[float]] = field(default_factory=list)  # [NZ][NZ], symmetric
    E0: List[float] = field(default_factory=list)        # per element, eV
    pair: bool = True
    # ZBL baseline (torchace.repulsion, docs/repulsion.md): switched off smoothly between zbl_inner and
    # zbl_outer (Å, one value for every pair; None: zbl_outer = r0 of the pair, zbl_inner = zbl_outer / 2)
    zbl: bool = False
    zbl_inner: Optional[float] = None
    zbl_outer: Optional[float] = None
    # purification (torchace.purify, docs/purification.md): pure2b removes the one-neighbour (two-body)
    # self-interaction from every order >= 2 function; pure gives the canonical cluster expansion
    pure2b: bool = False
    pure: bool = False

    @classmethod
    def build(cls, elements: Sequence[Union[str, int]], order: int, totaldegree, *, wL: float = 1.5,
              rcut: Optional[float] = None, r0=None, E0=None, pair: bool = True, zbl: bool = False,
              zbl_inner: Optional[float] = None, zbl_outer: Optional[float] = None, pure2b: bool = False,
              pure: bool = False) -> "ACEConfig":
        # one validation layer for the Python API and the config/model files (types and ranges, key named)
        given = {k: v for k, v in locals().items() if k in {f.name for f in dataclasses.fields(cls)} and v is not None}
        if isinstance(elements, tuple):
            given["elements"] = list(elements)
        check_ace_fields(given, "ace_model")
        for name, flag in (("pure2b", pure2b), ("pure", pure)):
            if not isinstance(flag, (bool, np.bool_)):
                raise ValueError(f"{name} must be true or false, got {flag!r}")
        if pure and pure2b:
            raise ValueError("pure=True already removes the two-body self-interaction (it removes all of it): "
                             "set pure or pure2b, not both")
        syms = [element_symbol(e) for e in elements]
        if len(set(syms)) != len(syms):
            raise ValueError(f"elements contain duplicates: {syms}")
        if not syms:
            raise ValueError("at least one element is needed")
        nz = len(syms)
        degs = totaldegree_per_order(int(order), totaldegree)
        check_size(nz, float(wL), degs, int(order))  # before any enumeration: l, radial degree, order
        if r0 is None:
            r0m = [[0.5 * (bond_length(a) + bond_length(b)) for b in syms] for a in syms]
        elif isinstance(r0, (int, float)):
            r0m = [[float(r0)] * nz for _ in syms]
        elif isinstance(r0, dict):
            r0m = [[0.0] * nz for _ in syms]
            for a in range(nz):
                for b in range(nz):
                    key = (syms[a], syms[b]) if (syms[a], syms[b]) in r0 else (syms[b], syms[a])
                    if key not in r0:
                        raise ValueError(f"r0 has no entry for the pair {syms[a]}-{syms[b]}")
                    r0m[a][b] = float(r0[key])
        else:
            r0m = [[float(v) for v in row] for row in r0]
            if len(r0m) != nz or any(len(row) != nz for row in r0m):
                raise ValueError(f"r0 must be a number, a dict of pairs or an {nz}x{nz} matrix")
        if any(v <= 0 for row in r0m for v in row):
            raise ValueError(f"r0 must be positive, got {r0m}")
        rc = 2.5 * max(max(row) for row in r0m) if rcut is None else float(rcut)
        if not rc > 0:
            raise ValueError(f"rcut must be positive, got {rcut}")
        for a in range(nz):
            for b in range(a, nz):
                if not r0m[a][b] < rc:
                    raise ValueError(f"rcut = {rc:g} Å is not larger than r0 = {r0m[a][b]:g} Å of the pair "
                                     f"{syms[a]}-{syms[b]} (its typical bond length): neighbours at bonding distance "
                                     "would be outside the cutoff; raise rcut (default 2.5·max r0) or give r0")
        if E0 is None:
            e0 = [0.0] * nz
        elif isinstance(E0, dict):
            unknown = set(map(str, E0)) - set(syms)
            if unknown:
                raise ValueError(f"E0 given for elements {sorted(unknown)} that are not in {syms}")
            e0 = [float(E0.get(s, 0.0)) for s in syms]
        else:
            e0 = [float(v) for v in E0]
            if len(e0) != nz:
                raise ValueError(f"E0 has {len(e0)} values for {nz} elements")
        cfg = cls(elements=syms, order=int(order), totaldegree=degs, wL=float(wL), rcut=rc, r0=r0m, E0=e0,
                  pair=bool(pair), zbl=bool(zbl), zbl_inner=None if zbl_inner is None else float(zbl_inner),
                  zbl_outer=None if zbl_outer is None else float(zbl_outer), pure2b=bool(pure2b), pure=bool(pure))
        if (zbl_inner is not None or zbl_outer is not None) and not cfg.zbl:
            raise ValueError("zbl_inner/zbl_outer are given but zbl is False")
        if cfg.zbl:
            cfg.zbl_radii()  # validates
        return cfg

    def zbl_radii(self):
        """(inner, outer) [NZ][NZ] switching radii of the ZBL baseline (Å), validated."""
        nz = len(self.elements)
        inner, outer = [[0.0] * nz for _ in range(nz)], [[0.0] * nz for _ in range(nz)]
        for a in range(nz):
            for b in range(nz):
                ro = self.r0[a][b] if self.zbl_outer is None else self.zbl_outer
                ri = 0.5 * ro if self.zbl_inner is None else self.zbl_inner
                pair = f"{self.elements[a]}-{self.elements[b]}"
                if not 0.0 <= ri < ro:
                    raise ValueError(f"ZBL switching radii for {pair}: need 0 <= zbl_inner < zbl_outer, got "
                                     f"inner {ri}, outer {ro}")
                if ro > self.rcut:
                    raise ValueError(f"ZBL switching radius zbl_outer = {ro} for {pair} exceeds rcut = {self.rcut}")
                inner[a][b], outer[a][b] = ri, ro
        return inner, outer

    @property
    def numbers(self) -> List[int]:
        return [atomic_numbers[s] for s in self.elements]

    def to_dict(self) -> dict:
        return dataclasses.asdict(self)

    @classmethod
    def from_dict(cls, d: dict) -> "ACEConfig":
        names = {f.name for f in dataclasses.fields(cls)}
        unknown = set(d) - names
        if unknown:
            raise ValueError(f"unknown ACEConfig keys {sorted(unknown)}; allowed: {sorted(names)}")
        missing = {"elements", "order", "totaldegree"} - set(d)
        if missing:
            raise ValueError(f"ACEConfig is missing {sorted(missing)}")
        check_ace_fields(d)  # types and ranges, naming the key (bool("no") would be True)
        kw = {k: v for k, v in d.items() if k not in ("elements", "order", "totaldegree")}
        for k in ("rcut", "r0", "E0"):  # 0 / [] (files of old versions): the default
            if not kw.get(k):
                kw.pop(k, None)
        return cls.build(d["elements"], d["order"], d["totaldegree"], **kw)
