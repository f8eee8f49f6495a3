"""Neighbour lists of many systems at once (a TorchSim state, a batch of structures), on their device.

``batch_neighbour_search(positions, cells, pbc, batch, cutoff)`` returns ``edge_index`` [2, E] (indices into
the batch's atoms) and ``unit_shifts`` [E, 3] of every system.  Systems whose candidates (atoms² × lattice
images) are at most ``choice.BATCHED_MAX_CANDIDATES`` (up to ~50 atoms in a cell of Si at 5.5 Å) go into one
batched all-pairs search per distinct image range (no loop over systems: the pair vectors x_j − x_i once
per pair, the image vectors S·cell once per system, broadcast against each other, in chunks of
``CHUNK_CANDIDATES``); the others one by one (``search.neighbour_search``, or the cell list / the host list
when asked).  Image ranges: |S_a| ≤ cutoff/h_a + span_a, with h_a the spacing of lattice planes and span_a
the extent of the system's fractional coordinates (unwrapped positions need more images).  Mixed boundaries
(periodic along some axes only) are searched one by one.
"""
from __future__ import annotations

from typing import List, Optional, Sequence, Tuple

import numpy as np
import torch

from .choice import CELL_LIST, joins_batch
from .search import AUTO, HOST, neighbour_search

BATCHED = "batched"  # every system in the batched search (mixed boundaries: one by one)
METHODS = (AUTO, BATCHED, CELL_LIST, HOST)
# (pair, image) candidates materialised at once in the batched search (~150 bytes each)
CHUNK_CANDIDATES = 2 ** 20


def image_ranges(positions: torch.Tensor, cells_h: np.ndarray, batch: torch.Tensor, pbc: Sequence[bool],
                 cutoff: float) -> Optional[np.ndarray]:
    """Largest |S_a| that can put a pair within ``cutoff``, per system and axis [S, 3] (int64), or None for
    mixed boundaries (module docstring)."""
    n_sys = cells_h.shape[0]
    if not any(pbc):
        return np.zeros((n_sys, 3), dtype=np.int64)
    if not all(pbc):
        return None
    inv = torch.as_tensor(np.linalg.inv(cells_h), dtype=torch.float64, device=positions.device)
    frac = torch.einsum("na,nab->nb", positions.to(torch.float64), inv[batch])
    idx = batch.unsqueeze(1).expand(-1, 3)
    hi = torch.full((n_sys, 3), -np.inf, dtype=torch.float64, device=positions.device)
    lo = torch.full((n_sys, 3), np.inf, dtype=torch.float64, device=positions.device)
    span = (hi.scatter_reduce(0, idx, frac, "amax") - lo.scatter_reduce(0, idx, frac, "amin")).cpu().numpy()
    cross = np.linalg.norm(np.cross(cells_h[:, [1, 2, 0]], cells_h[:, [2, 0, 1]]), axis=2)
    h = np.abs(np.linalg.det(cells_h))[:, None] / cross
    return np.floor(cutoff / h + span + 1e-8).astype(np.int64)


def all_pairs(positions: torch.Tensor, cell: torch.Tensor, members: torch.Tensor, systems: np.ndarray,
              counts: np.ndarray, offsets: np.ndarray, k: np.ndarray, cutoff: float) -> List[Tuple]:
    """The batched search of ``systems`` sharing the image range ``k`` [3]: every (i, j, S) with i, j in the
    same system and |S_a| ≤ k_a, all on the device (pairs in chunks, no loop over systems)."""
    dev = positions.device
    axes = [torch.arange(-int(x), int(x) + 1, device=dev) for x in k]
    grid = torch.cartesian_prod(*axes).reshape(-1, 3)                   # [M, 3] integer shifts
    zero = (grid.shape[0] - 1) // 2                                     # the index of S = (0, 0, 0)
    images = torch.einsum("ma,sab->smb", grid.to(torch.float64), cell[torch.as_tensor(systems, device=dev)]
                          .to(torch.float64))                           # [n_sel, M, 3]
    n = counts[systems]
    n_t = torch.as_tensor(n, dtype=torch.long, device=dev)
    sys_of_pair = torch.repeat_interleave(torch.arange(len(systems), device=dev), n_t * n_t,
                                          output_size=int((n * n).sum()))
    q = torch.arange(sys_of_pair.shape[0], device=dev) - torch.as_tensor(np.cumsum(n * n) - n * n,
                                                                        device=dev)[sys_of_pair]
    first = torch.as_tensor(offsets[systems], dtype=torch.long, device=dev)[sys_of_pair]
    i = members[first + q // n_t[sys_of_pair]]
    j = members[first + q % n_t[sys_of_pair]]
    pos = positions.to(torch.float64)
    d0 = pos[j] - pos[i]
    out = []
    step = max(1, CHUNK_CANDIDATES // grid.shape[0])
    for p0 in range(0, d0.shape[0], step):
        sl = slice(p0, p0 + step)
        d = d0[sl].unsqueeze(1) + images[sys_of_pair[sl]]            # [pairs, M, 3]
        mask = (d * d).sum(-1) < cutoff ** 2
        mask[:, zero] &= i[sl] != j[sl]                                 # no self pair at S = 0
        pp, mm = torch.nonzero(mask, as_tuple=True)
        out.append((i[sl][pp], j[sl][pp], grid[mm]))
    return out


def batch_neighbour_search(positions: torch.Tensor, cell: torch.Tensor, cells_h: np.ndarray, pbc: Sequence[bool],
                           batch: torch.Tensor, members: torch.Tensor, counts: Sequence[int], cutoff: float,
                           dtype: torch.dtype, method: str = AUTO) -> Tuple[torch.Tensor, torch.Tensor]:
    """(edge_index [2, E], unit shifts [E, 3] in ``dtype``) of all systems, batch atom indices, on the device of
    ``positions``.  ``cell`` [S, 3, 3] (rows: lattice vectors) and its host copy ``cells_h``; ``members``: the
    atoms sorted by system (system s: members[offset_s : offset_s + counts[s]]).  ``method``: "auto" (small
    systems batched, the others by ``search.neighbour_search``'s rule), "batched" (every system batched),
    "cell_list" or "host" (one search per system)."""
    if method not in METHODS:
        raise ValueError(f"neighbour_list must be one of {METHODS}, got {method!r}")
    counts_np = np.asarray(counts, dtype=np.int64)
    offsets = np.cumsum(counts_np) - counts_np
    per_system = np.arange(len(counts_np))
    parts = []
    if method in (AUTO, BATCHED):
        k = image_ranges(positions, cells_h, batch, pbc, cutoff)
        if k is not None:
            cand = counts_np ** 2 * (2 * k + 1).prod(1)
            small = np.array([joins_batch(c) for c in cand.tolist()], dtype=bool) if method == AUTO \
                else cand >= 0
            for kk in np.unique(k[small], axis=0):  # one batched search per distinct image range
                sel = np.flatnonzero(small & (k == kk).all(1))
                parts += all_pairs(positions, cell, members, sel, counts_np, offsets, kk, cutoff)
            per_system = np.flatnonzero(~small)
    one = CELL_LIST if method == BATCHED else method  # what searches the systems left (BATCHED: mixed boundaries)
    for s in per_system.tolist():
        atoms = members[offsets[s]: offsets[s] + counts[s]]
        edge_index, S = neighbour_search(positions[atoms], cell[s] if one == CELL_LIST else cells_h[s], pbc,
                                         cutoff, positions.device, torch.long, one)
        parts.append((atoms[edge_index[0]], atoms[edge_index[1]], S))
    i, j, S = (torch.cat(x) for x in zip(*parts))
    return torch.stack([i, j]), S.to(dtype)
