"""Neighbour list on the device of the positions: a binned cell list (linked-cell algorithm) in torch.

``cell_list_neighbours(positions, cell, pbc, rcut)`` returns ``(i, j, S)``: all pairs with
|x_j − x_i + S·cell| < rcut (no self pair i == j with S == 0), sorted by centre i, as int64 tensors on the
device of ``positions`` — the same set as ASE's ``primitive_neighbor_list("ijS")``.

Algorithm (O(N), vectorised, no Python loop over atoms):

1. Fractional coordinates f = x·C⁻¹ in float64, where C is the cell with its open (non-periodic) axes
   replaced by unit vectors orthogonal to the periodic ones (so an open coordinate is a length along that
   direction).  Periodic coordinates are wrapped into [0, 1); the integer wrap n = floor(f) is kept, so the
   shifts returned refer to the original (possibly unwrapped) positions: S = s + n_i − n_j for an image
   shift s between wrapped positions.
2. Binning: along a periodic axis with perpendicular spacing h (V / |b × c|), nb = floor(h / rcut) bins of
   perpendicular width ≥ rcut; an axis shorter than rcut has one bin and needs k = ceil(rcut / h) images
   on each side.  An open axis is binned over the bounding box of the atoms (bins ≥ rcut wide, no images).
   Atoms are sorted by linear bin key (argsort); the occupied bins are found by ``searchsorted``, so empty
   space (a cluster in vacuum) costs nothing.
3. For each centre and each bin offset d of half of the ∏(2k + 1) offsets (27 for cells ≥ rcut; d ≥ 0
   lexicographically, and for d = 0 only the atoms after the centre in its own bin), the target bin and the
   image shift s follow from the unrolled bin index B = b + d (s = B div nb, target = B mod nb — distinct
   offsets give distinct (bin, image) pairs, so nothing is counted twice); the candidates are the atoms of
   that bin (counts and starts from ``searchsorted``, expanded with ``repeat_interleave``/``cumsum``) and
   are kept if their distance (wrapped positions and s) is below rcut.  The other half is the mirror
   (j, i, −S) of these pairs; a stable argsort on i orders the list by centre.
   The (centre, offset) rows are processed in blocks and the candidates in chunks (``MAX_CANDIDATES``), so
   memory stays bounded for millions of atoms (1 M atoms of Si, rcut 5.5 Å: 33 M pairs, ~5 GB peak).

Host synchronisations: a few per call (input checks, the bounding box, one per block and per chunk).
"""
from __future__ import annotations

import math
from typing import Sequence, Tuple, Union

import numpy as np
import torch

from ...resources import ResourceLimitError
from .pairs import MAX_PAIRS, check_pair_count, completed_cell

# candidate pairs (before the distance filter) materialised at once: about 100 bytes each
MAX_CANDIDATES = 2 ** 24
# (centre, bin offset) rows handled at once
ROW_BLOCK = 2 ** 21
# bins per axis at most (the linear bin key must fit int64; larger bins stay correct, just slower)
MAX_BINS_PER_AXIS = 2 ** 20
# relative slack on rcut in the bin geometry: rounding in fractional coordinates never drops a pair
_SLACK = 1e-8

Tensor = torch.Tensor


def _empty(device) -> Tuple[Tensor, Tensor, Tensor]:
    z = torch.zeros(0, dtype=torch.int64, device=device)
    return z, z.clone(), torch.zeros((0, 3), dtype=torch.int64, device=device)


def cell_list_neighbours(positions: Tensor, cell: Tensor, pbc: Union[Sequence[bool], Tensor], rcut: float
                         ) -> Tuple[Tensor, Tensor, Tensor]:
    """All pairs (i, j, S) with |x_j − x_i + S·cell| < rcut, computed on ``positions.device``.

    ``positions`` [N, 3] and ``cell`` [3, 3] (rows are lattice vectors; float32 or float64, computed in
    float64), ``pbc``: three booleans.  Returns i, j (int64 [E]) and S (int64 [E, 3]), sorted by i; the
    convention is ASE's ``primitive_neighbor_list("ijS")`` (r_ij = x_j − x_i + S·cell, S a row vector).
    Open axes (pbc False) get no images and any cell vector there is ignored.
    """
    device = positions.device
    if positions.dim() != 2 or positions.shape[1] != 3:
        raise ValueError(f"positions must have shape [N, 3], got {list(positions.shape)}")
    cell = torch.as_tensor(cell)
    if tuple(cell.shape) != (3, 3):
        raise ValueError(f"cell must have shape [3, 3], got {list(cell.shape)}")
    pbc_np = np.asarray(pbc.cpu() if isinstance(pbc, Tensor) else pbc, dtype=bool).reshape(-1)
    if pbc_np.shape != (3,):
        raise ValueError(f"pbc must be three booleans, got {pbc!r}")
    rcut = float(rcut)
    if not (rcut > 0 and math.isfinite(rcut)):
        raise ValueError(f"rcut must be a finite number > 0 (Å), got {rcut!r}")
    x = positions.detach().to(torch.float64)
    # one host transfer: the cell and whether all positions are finite
    host = torch.cat([cell.to(device=device, dtype=torch.float64).reshape(-1),
                      torch.isfinite(x).all().to(torch.float64).reshape(1)]).cpu().numpy()
    cell_np = host[:9].reshape(3, 3)
    if not np.isfinite(cell_np).all():
        raise ValueError(f"cell contains NaN or inf: {cell_np.tolist()}")
    if host[9] != 1.0:
        bad = torch.nonzero(~torch.isfinite(x).all(1))[:5, 0].tolist()
        raise ValueError(f"positions contain NaN or inf (atoms {bad}{'…' if len(bad) == 5 else ''})")
    n_atoms = x.shape[0]
    if n_atoms == 0:
        return _empty(device)
    check_pair_count(x, cell_np, pbc_np, rcut, device, search="cell_list")

    C = completed_cell(cell_np, pbc_np)
    vol = abs(float(np.linalg.det(C)))
    if not vol > 0:
        raise ValueError(f"periodic cell is singular (volume {vol:g} Å³): {cell_np.tolist()}")
    spacing = np.array([vol / np.linalg.norm(np.cross(C[(a + 1) % 3], C[(a + 2) % 3])) for a in range(3)])
    per_t = torch.as_tensor(pbc_np, device=device)
    f = x @ torch.as_tensor(np.linalg.inv(C), dtype=torch.float64, device=device)
    n_wrap = torch.where(per_t, torch.floor(f), torch.zeros_like(f))
    f = f - n_wrap
    n_wrap = n_wrap.to(torch.int64)

    # bin geometry (host): bins per axis nb, images/offsets per axis k, open-axis box origin and bin width
    rc = rcut * (1.0 + _SLACK)
    if pbc_np.all():
        lo = np.zeros(3)
        span = np.ones(3)
    else:
        ext = torch.stack([f.min(0).values, f.max(0).values]).cpu().numpy()
        lo, span = ext[0], ext[1] - ext[0]
    nb, k, scale = [], [], []
    for a in range(3):
        if pbc_np[a]:
            m = int(min(max(1, math.floor(spacing[a] / rc)), MAX_BINS_PER_AXIS))
            k.append(int(math.ceil(rcut * m / spacing[a] * (1.0 + _SLACK))))
            nb.append(m)
            scale.append(float(m))  # fractional → bin index
            lo[a] = 0.0
        else:  # spacing is 1 here: f is a length along a unit vector
            width = max(rc, float(span[a]) / MAX_BINS_PER_AXIS * (1.0 + _SLACK))
            nb.append(int(min(math.floor(span[a] / width) + 1, MAX_BINS_PER_AXIS)))
            k.append(1)
            scale.append(1.0 / width)
    n_offsets = int(np.prod([2 * kk + 1 for kk in k]))
    if n_atoms * n_offsets > MAX_PAIRS:
        raise ResourceLimitError(f"{n_atoms} atoms × {n_offsets} bin offsets "
                                 f"(cell spacings {spacing.round(4).tolist()} Å, "
                                 f"rcut = {rcut:g} Å) exceed {MAX_PAIRS:.0e} searches: "
                                 "a collapsed or nearly flat cell?")

    nb_t = torch.tensor(nb, dtype=torch.int64, device=device)
    b = torch.floor((f - torch.as_tensor(lo, dtype=torch.float64, device=device))
                    * torch.as_tensor(scale, dtype=torch.float64, device=device)).to(torch.int64)
    b = torch.minimum(b.clamp_min(0), nb_t - 1)
    key = (b[:, 0] * nb[1] + b[:, 1]) * nb[2] + b[:, 2]
    order = torch.argsort(key, stable=True)
    sorted_key = key[order].contiguous()
    offsets = torch.cartesian_prod(*[torch.arange(-kk, kk + 1, dtype=torch.int64, device=device) for kk in k])
    offsets = offsets.reshape(-1, 3)
    # half of the offsets (d ≥ 0 lexicographically; d = 0: only later atoms of the same bin), then mirror:
    # the pair (i, j, S) is found from offset d exactly when (j, i, −S) would be found from −d
    lex = torch.where(offsets[:, 0] != 0, offsets[:, 0], torch.where(offsets[:, 1] != 0, offsets[:, 1], offsets[:, 2]))
    offsets = offsets[lex >= 0].contiguous()
    rank = torch.empty_like(order)
    rank[order] = torch.arange(n_atoms, device=device)

    cell64 = torch.as_tensor(cell_np, dtype=torch.float64, device=device)
    xw = x - n_wrap.to(torch.float64) @ cell64  # wrapped positions (open axes unchanged)
    ctx = (xw, xw[order].T.contiguous(), cell64, n_wrap, b, nb_t, per_t, sorted_key, order, rank, offsets,
           rcut * rcut)
    out_i, out_j, out_s = [], [], []
    n_rows = n_atoms * offsets.shape[0]
    for r0 in range(0, n_rows, ROW_BLOCK):
        for part in _row_block(ctx, r0, min(r0 + ROW_BLOCK, n_rows)):
            out_i.append(part[0])
            out_j.append(part[1])
            out_s.append(part[2])
    if not out_i:
        return _empty(device)
    i, j, S = torch.cat(out_i), torch.cat(out_j), torch.cat(out_s)
    i, j, S = torch.cat([i, j]), torch.cat([j, i]), torch.cat([S, -S])
    perm = torch.argsort(i, stable=True)
    return i[perm], j[perm], S[perm]


def _row_block(ctx, r0: int, r1: int):
    """Half-list pairs of the (centre, offset) rows r0..r1, in chunks of ≤ ~MAX_CANDIDATES candidates."""
    xw, xs, cell, n_wrap, b, nb, per, sorted_key, order, rank, offsets, rc2 = ctx
    device = xw.device
    m = offsets.shape[0]
    rows = torch.arange(r0, r1, dtype=torch.int64, device=device)
    centre = rows // m
    off = offsets[rows % m]
    B = b[centre] + off  # unrolled target bin
    img = torch.where(per, torch.div(B, nb, rounding_mode="floor"), torch.zeros_like(B))
    t = B - img * nb
    valid = ((t >= 0) & (t < nb)).all(1)  # open axes: inside the box
    tkey = (t[:, 0] * nb[1] + t[:, 1]) * nb[2] + t[:, 2]
    start = torch.searchsorted(sorted_key, tkey)
    end = torch.searchsorted(sorted_key, tkey, right=True)
    start = torch.where((off == 0).all(1), rank[centre] + 1, start)  # own bin: atoms after the centre
    count = torch.where(valid, end - start, torch.zeros_like(start))
    cum = torch.cumsum(count, 0)
    total = int(cum[-1])
    if total == 0:
        return
    # split rows at chunk boundaries of the candidate count (one host transfer)
    if total > MAX_CANDIDATES:
        cuts = torch.searchsorted(cum, torch.arange(MAX_CANDIDATES, total, MAX_CANDIDATES, device=device),
                                  right=True)
        cuts = torch.unique(torch.cat([cuts, torch.tensor([rows.shape[0]], device=device)]))
        edges = torch.stack([cuts, torch.cat([cum, cum.new_zeros(1)])[cuts - 1]]).cpu().tolist()
        bounds = [0] + edges[0]
        cum_at = [0] + edges[1]
    else:
        bounds, cum_at = [0, rows.shape[0]], [0, total]
    # candidate g (global index in the block) of row r is the atom at sorted position start[r] + g − cum[r − 1]
    base = start - (cum - count)
    # each row's centre, wrapped and moved by minus the image shift: d = x_sorted[candidate] − c_row ([3, rows])
    c_row = (xw.index_select(0, centre) - img.to(torch.float64) @ cell).T.contiguous()
    for p in range(len(bounds) - 1):
        a, z = bounds[p], bounds[p + 1]
        n_cand = cum_at[p + 1] - cum_at[p]
        if n_cand == 0:
            continue
        rep = torch.repeat_interleave(torch.arange(a, z, device=device), count[a:z], output_size=n_cand)
        js = base.index_select(0, rep) + torch.arange(cum_at[p], cum_at[p + 1], device=device)
        r2 = None
        for ax in range(3):  # one component at a time (1-D gathers; a sum over a last axis of 3 is slow)
            d = xs[ax].index_select(0, js) - c_row[ax].index_select(0, rep)
            r2 = d * d if r2 is None else r2.addcmul_(d, d)
        keep = torch.nonzero(r2 < rc2)[:, 0]
        rep = rep[keep]
        i = centre[rep]
        j = order[js[keep]]
        yield i, j, img[rep] + n_wrap[i] - n_wrap[j]
