"""The Verlet list with a skin, shared by the engines (ASE calculator, LAMMPS driver, TorchSim model).

A list built with cutoff rcut + skin holds every pair within rcut until some atom has moved more than skin/2
since the build (two atoms approaching each other by at most skin); edges longer than rcut contribute exactly
zero (the many-body envelope, the pair envelope and the ZBL switch are ``torch.where``-masked to 0 at and beyond
rcut), so a reused list gives the numbers of a fresh one up to summation order.  ``SkinList.update`` rebuilds
when

- an atom moved more than skin/2 (skin 0: when any atom moved at all),
- the cell, the boundaries or the atom count changed,
- a key changed (atomic numbers, LAMMPS atom IDs and types, a batch's system index: arrays or tensors).

With ``follow_wraps`` (engines that wrap atoms back into the cell: LAMMPS, TorchSim) a displacement by whole
lattice vectors n_i along periodic axes is not a move: the list is kept with S' = S + n_i − n_j, so that
r_ij = x_j − x_i + S'·cell is unchanged, and the reference positions move with the atoms.  Positions may be a
numpy array [N, 3] (host engines: the check costs microseconds) or a tensor on any device (one host
synchronisation); ``cell`` is the host copy, [3, 3] or [S, 3, 3] per system with ``batch`` [N] (system of each
atom).
"""
from __future__ import annotations

from typing import Callable, Optional, Sequence, Tuple

import numpy as np
import torch


def _same(a, b) -> bool:
    if isinstance(a, torch.Tensor) or isinstance(b, torch.Tensor):
        return (isinstance(a, torch.Tensor) and isinstance(b, torch.Tensor) and a.shape == b.shape
                and a.device == b.device and bool(torch.equal(a, b)))
    return np.array_equal(a, b)


class SkinList:
    """The list (``edge_index`` [2, E], ``unit_shifts`` [E, 3]) at ``cutoff`` = rcut + skin, the state it was
    built for, and the counts ``n_builds`` / ``n_wrapped`` (calls that kept it across wrapped atoms)."""

    def __init__(self, rcut: float, skin: float, follow_wraps: bool = False):
        self.rcut, self.skin, self.follow_wraps = float(rcut), float(skin), bool(follow_wraps)
        self.cutoff = self.rcut + self.skin
        self.n_builds = self.n_wrapped = 0
        self.reset()

    def reset(self) -> None:
        """Forget the list: the next ``update`` builds."""
        self.positions = self.cell = self.pbc = self.key = self.batch = None
        self.edge_index = self.unit_shifts = None

    def update(self, positions, cell: np.ndarray, pbc, build: Callable[[], Tuple[torch.Tensor, torch.Tensor]],
               key: Sequence = (), batch: Optional[torch.Tensor] = None) -> bool:
        """Keep the list or build it with ``build()`` (a search at ``self.cutoff`` of these positions returning
        (edge_index, unit_shifts)); True when it was built."""
        pbc = np.asarray(pbc, dtype=bool)
        if not self._changed(positions, cell, pbc, key):
            moved, jump = self._moved(positions, cell, pbc, batch)
            if not moved:
                if jump is not None:
                    self._follow(jump, cell, batch)
                return False
        self.edge_index, self.unit_shifts = build()
        self.positions = positions.clone() if isinstance(positions, torch.Tensor) else np.array(positions, copy=True)
        self.cell, self.pbc = np.array(cell, copy=True), pbc.copy()
        self.key = tuple(k.clone() if isinstance(k, torch.Tensor) else np.array(k, copy=True) for k in key)
        self.batch = batch
        self.n_builds += 1
        return True

    def _changed(self, positions, cell, pbc, key) -> bool:
        return (self.edge_index is None or len(positions) != len(self.positions) or len(key) != len(self.key)
                or not all(_same(a, b) for a, b in zip(key, self.key)) or not np.array_equal(pbc, self.pbc)
                or not np.array_equal(cell, self.cell))

    def _moved(self, positions, cell, pbc, batch=None):
        """(moved more than skin/2, the lattice jumps [N, 3] of wrapped atoms or None)."""
        d = positions - self.positions
        jump = None
        if self.follow_wraps and pbc.any() and len(d):
            jump = self._jumps(d, cell, pbc, batch)
            if jump is not None:
                d = d - self._lattice(jump, cell, batch)
        if isinstance(d, torch.Tensor):
            d2 = float((d * d).sum(1).max()) if len(d) else 0.0
        else:
            d2 = float(np.einsum("ij,ij->i", d, d).max()) if len(d) else 0.0
        moved = d2 > (0.5 * self.skin) ** 2 if self.skin > 0 else d2 > 0
        return moved, jump

    @staticmethod
    def _jumps(d, cell, pbc, batch):
        """Whole lattice vectors n [N, 3] in the displacements d (open axes 0), or None when there are none."""
        if isinstance(d, torch.Tensor):
            inv = torch.as_tensor(np.linalg.inv(cell), dtype=torch.float64, device=d.device)
            n = torch.round(torch.einsum("na,nab->nb", d.to(torch.float64), inv[batch]) if inv.ndim == 3
                            else d.to(torch.float64) @ inv)
            n[:, torch.as_tensor(~pbc, device=d.device)] = 0
            return n if bool(n.any()) else None
        n = np.rint(np.linalg.solve(cell.T, d.T).T)
        n[:, ~pbc] = 0
        return n if n.any() else None

    @staticmethod
    def _lattice(n, cell, batch):
        """n·cell per atom (the cell of its system)."""
        if isinstance(n, torch.Tensor):
            c = torch.as_tensor(cell, dtype=torch.float64, device=n.device)
            return (torch.einsum("na,nab->nb", n, c[batch]) if c.ndim == 3 else n @ c)
        return n @ cell

    def _follow(self, jump, cell, batch) -> None:
        """Keep r_ij = x_j − x_i + S·cell across x_i → x_i + n_i·cell: S' = S + n_i − n_j."""
        nt = torch.as_tensor(jump, dtype=self.unit_shifts.dtype, device=self.unit_shifts.device)
        i, j = self.edge_index
        self.unit_shifts = self.unit_shifts + nt[i] - nt[j]
        shift = self._lattice(jump, cell, batch)
        self.positions = self.positions + (shift.to(self.positions.dtype) if isinstance(shift, torch.Tensor)
                                           else shift)
        self.n_wrapped += 1
