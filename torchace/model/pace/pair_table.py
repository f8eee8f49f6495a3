"""A tabulated pair potential (LAMMPS ``pair_style table``) as an additive term of a ``PACEModel``.

A torchace ``.yace`` export is ML-PACE's many-body part plus the model's pair part in a LAMMPS pair table,
meant for ``pair_style hybrid/overlay pace table`` (torchace.io.yace.write): E = E_pace + Σ_{i<j} U_{z_i z_j}(r_ij).
``TabulatedPair`` is that second term, so that ``read_yace`` of an export gives the whole model.  U between
the file's knots is the cubic Hermite interpolant of E with slopes −F (``hermite``: C¹, and the forces are its
exact derivative); LAMMPS's ``table spline N`` re-splines E and F separately, which differs from it by the
interpolation error only (~1e-12 relative on torchace's 20,000-point tables).  Zero at and beyond the last
knot (the cutoff); a pair closer than the first knot is an error, as in LAMMPS ("Pair distance < table
inner cutoff").
"""
from __future__ import annotations

from typing import Dict, Sequence, Tuple

import numpy as np
import torch


def hermite(r: torch.Tensor, knots: torch.Tensor, E: torch.Tensor, dE: torch.Tensor):
    """Cubic Hermite interpolation of E with derivative dE on sorted knots: (value, derivative) at ``r``, both
    zero outside [knots[0], knots[-1])."""
    q = (torch.searchsorted(knots, r.detach(), right=True) - 1).clamp(0, knots.shape[0] - 2)
    k0, k1 = knots[q], knots[q + 1]
    h = k1 - k0
    t = (r - k0) / h
    t2, t3 = t * t, t * t * t
    e = ((2 * t3 - 3 * t2 + 1) * E[q] + (t3 - 2 * t2 + t) * h * dE[q]
         + (-2 * t3 + 3 * t2) * E[q + 1] + (t3 - t2) * h * dE[q + 1])
    d = ((6 * t2 - 6 * t) * E[q] + (3 * t2 - 4 * t + 1) * h * dE[q]
         + (-6 * t2 + 6 * t) * E[q + 1] + (3 * t2 - 2 * t) * h * dE[q + 1]) / h
    inside = r < knots[-1]
    return torch.where(inside, e, torch.zeros_like(e)), torch.where(inside, d, torch.zeros_like(d))


class TabulatedPair(torch.nn.Module):
    """Σ_{i<j} U_{z_i z_j}(r_ij) from table sections: ``tables[(a, b)] = (r, E, F)`` for every ordered element pair
    (a, b) of the model's elements (``names[(a, b)]``: the section name, for messages); ``source``: the file."""

    def __init__(self, tables: Dict[Tuple[int, int], Tuple[np.ndarray, np.ndarray, np.ndarray]], nz: int,
                 names: Dict[Tuple[int, int], str], source: str, dtype: torch.dtype = torch.float64):
        super().__init__()
        self.nz = int(nz)
        self.source = str(source)
        self.names = dict(names)
        self.rcut = 0.0
        for (a, b), (r, E, F) in tables.items():
            self.register_buffer(f"knots_{a}_{b}", torch.tensor(np.asarray(r, dtype=np.float64), dtype=dtype))
            self.register_buffer(f"E_{a}_{b}", torch.tensor(np.asarray(E, dtype=np.float64), dtype=dtype))
            self.register_buffer(f"dE_{a}_{b}", torch.tensor(-np.asarray(F, dtype=np.float64), dtype=dtype))
            self.rcut = max(self.rcut, float(r[-1]))
        self.pairs: Sequence[Tuple[int, int]] = sorted(tables)

    def forward(self, r: torch.Tensor, zi: torch.Tensor, zj: torch.Tensor) -> torch.Tensor:
        """U_{z_i z_j}(r) per directed edge [E] (each pair appears twice in a full neighbour list)."""
        u = torch.zeros_like(r)
        for a, b in self.pairs:
            sel = torch.nonzero((zi == a) & (zj == b)).flatten()
            if sel.numel() == 0:
                continue
            knots = getattr(self, f"knots_{a}_{b}")
            rs = r[sel]
            closest = float(rs.detach().min())
            if closest < float(knots[0]):
                raise ValueError(f"{self.source}: pair distance {closest:.4g} Å is below the inner end "
                                 f"{float(knots[0]):.4g} Å of the pair table's section {self.names[(a, b)]!r} "
                                 "(LAMMPS stops there too: 'Pair distance < table inner cutoff')")
            e, _ = hermite(rs, knots, getattr(self, f"E_{a}_{b}"), getattr(self, f"dE_{a}_{b}"))
            u = u.index_put((sel,), e)
        return u

    def extra_repr(self) -> str:
        return f"source={self.source!r}, sections={len(self.pairs)}, rcut={self.rcut:.4g}"
