"""Neighbour lists: all pairs (i, j, S) with |x_j - x_i + S·cell| < rcut.

Two implementations with identical output sets (tested against a brute-force reference):
``dense_neighbour_list`` (torch, vectorised over all atom pairs and all lattice images that can be
within rcut — fast for the small/medium structures of training sets and on GPU) and ASE's
``primitive_neighbor_list`` (binned, O(N), Python-heavy) for large structures and mixed boundaries.
Periodic and open boundaries, triclinic cells, unwrapped positions, and cells smaller than rcut
(many images, including an atom's own images) are handled.
The list is built once per geometry in float64 on the CPU; the differentiable displacement vectors
are recomputed from positions, cell and the integer shifts inside the model, so forces and virials
flow through them.

Before any search, ``check_pair_count`` estimates the pairs (``estimate_pairs``: per-axis image counts from the
atoms' coordinates in the reduced cell, within a factor 2 of the count for every cell shape tested) and refuses
a structure whose list would not fit in the memory available (``torchace.resources``): collapsed, tiny or nearly
flat periodic cells, or a cutoff far larger than the cell.
"""
from __future__ import annotations

import math

import numpy as np
import torch
from ase.neighborlist import primitive_neighbor_list

from ...resources import ResourceLimitError, check_fits
from .choice import DENSE, VESIN, search_for


# a structure whose expected neighbour pairs exceed this is refused whatever the memory (minutes of search, not a
# material: a collapsed or nearly flat periodic cell)
MAX_PAIRS = 300_000_000
# bytes per neighbour pair held at once while a list is built and collated (the (i, j, S) arrays, the search's own
# temporaries, the distance check and the batch tensors), measured at 10^6 pairs and more: vesin's list (and the
# dense path, whose candidates are bounded anyway) ~130, ASE's binned search ~520, the torch cell list ~290
BYTES_PER_PAIR = {"vesin": 160, "ase": 560, "cell_list": 320}
# below this many pairs (by the cheap upper bound) nothing more is estimated: the check costs ~1 µs then
_CHEAP_PAIRS = 1_000_000


def completed_cell(cell: np.ndarray, pbc: np.ndarray) -> np.ndarray:
    """The cell with open axes replaced by unit vectors orthogonal to the periodic ones (and each other), so that
    a fractional coordinate along an open axis is a length (Å).  Raises ValueError for parallel or zero
    periodic vectors."""
    per = np.flatnonzero(pbc)
    out = np.eye(3)
    if len(per) == 3:
        return cell.copy()
    if len(per) == 2:
        n = np.cross(cell[per[0]], cell[per[1]])
        norm = np.linalg.norm(n)
        if not norm > 1e-12 * max(np.linalg.norm(cell[per[0]]) * np.linalg.norm(cell[per[1]]), 1e-300):
            raise ValueError(f"cell vectors {per[0]} and {per[1]} (periodic) are parallel or zero: {cell.tolist()}")
        out[per] = cell[per]
        out[np.flatnonzero(~pbc)[0]] = n / norm
    elif len(per) == 1:
        a = cell[per[0]]
        if not np.linalg.norm(a) > 0:
            raise ValueError(f"cell vector {per[0]} is periodic but zero: {cell.tolist()}")
        u = a / np.linalg.norm(a)
        helper = np.eye(3)[int(np.argmin(np.abs(u)))]
        v = np.cross(u, helper)
        v /= np.linalg.norm(v)
        w = np.cross(u, v)
        open_axes = np.flatnonzero(~pbc)
        out[per[0]] = a
        out[open_axes[0]], out[open_axes[1]] = v, w
    return out


def _cross(u, v):
    return [u[1] * v[2] - u[2] * v[1], u[2] * v[0] - u[0] * v[2], u[0] * v[1] - u[1] * v[0]]


def face_spacings(C: np.ndarray) -> np.ndarray:
    """Distances between opposite faces of the cell C (V / |b × c| per axis), Å."""
    vol = abs(float(np.linalg.det(C)))
    return np.array([vol / np.linalg.norm(np.cross(C[(a + 1) % 3], C[(a + 2) % 3])) for a in range(3)])


def _axis_images(t: torch.Tensor, window: float, periodic: bool) -> float:
    """Σ_i #{(j, n): |t_j + n − t_i| < window} over the 1-D coordinates t (fractional along a periodic axis, then
    n runs over all integers; a length along an open axis, n = 0): a sort and binary searches, O(N log N), on the
    device of t."""
    s = torch.sort(t).values
    if not periodic:
        return float((torch.searchsorted(s, t + window, right=True) - torch.searchsorted(s, t - window)).sum())

    def upto(y):  # #{(j, n): s_j + n <= y}, up to a constant that cancels
        fl = torch.floor(y)
        return len(s) * fl + torch.searchsorted(s, y - fl, right=True)

    return float((upto(t + window) - upto(t - window)).sum())


def estimate_pairs(positions, cell: np.ndarray, pbc, rcut: float) -> float:
    """About how many (i, j, S) pairs lie within ``rcut``, for any cell shape, before any search.

    Per axis a of the (reduced) cell, with spacing h_a between its faces, m_a is the mean over atom pairs of the
    number of images of j within rcut of i along the face normal (|Δf_a + n|·h_a < rcut), counted exactly from the
    atoms' coordinates (so atoms bunched in a flat cell count as bunched); the estimate is N² · Π m_a times the
    ratio of the ball to the box |x·n_a| < rcut.  It is N²·(4/3)πr³/V for uniformly spread atoms and for cells
    much smaller than rcut, and N²·2r/h for atoms on one line of images of a flat cell.  ``positions``: numpy or
    torch [N, 3] (a torch tensor is used on its device)."""
    pbc = np.asarray(pbc, dtype=bool)
    cell = np.asarray(cell, dtype=np.float64)
    x = positions.detach().to(torch.float64) if isinstance(positions, torch.Tensor) \
        else torch.from_numpy(np.ascontiguousarray(positions, dtype=np.float64))
    n = x.shape[0]
    if n == 0:
        return 0.0
    if pbc.any():
        op = _reduction(cell, pbc)
        if op is not None:
            cell = op.astype(np.float64) @ cell
    C = completed_cell(cell, pbc)
    vol = abs(float(np.linalg.det(C)))
    if not vol > 0:
        return 0.0  # a singular cell is refused by the caller's own checks
    h = np.where(pbc, face_spacings(C), 1.0)
    f = x @ torch.as_tensor(np.linalg.inv(C), dtype=torch.float64, device=x.device)
    normals = np.stack([np.cross(C[(a + 1) % 3], C[(a + 2) % 3]) for a in range(3)])
    normals /= np.linalg.norm(normals, axis=1, keepdims=True)
    ratio = (np.pi / 6.0) * abs(float(np.linalg.det(normals)))  # ball / box (2r)³/|det N|
    est = float(n) * n * ratio
    for a in range(3):
        t = f[:, a] - torch.floor(f[:, a]) if pbc[a] else f[:, a].contiguous()
        est *= _axis_images(t, rcut / h[a], bool(pbc[a])) / (float(n) * n)
    return est


def pair_bound(n: int, cell: np.ndarray, pbc, rcut: float) -> float:
    """A cheap upper bound of the pairs within rcut: N² times the images within rcut of a point along every periodic
    axis of the given cell (plain Python on the 3×3 numbers for a fully periodic cell: µs, at every neighbour-list
    build).  inf or NaN for a singular periodic cell."""
    pbc = np.asarray(pbc, dtype=bool)
    bound = float(n) * n
    if pbc.all():
        rows = cell.tolist()
        crosses = [_cross(rows[(a + 1) % 3], rows[(a + 2) % 3]) for a in range(3)]
        vol = abs(sum(x * y for x, y in zip(rows[0], crosses[0])))
        for c in crosses:
            norm = math.sqrt(c[0] * c[0] + c[1] * c[1] + c[2] * c[2])
            bound *= 2.0 * rcut * norm / vol + 1.0 if vol > 0 else math.inf
    elif pbc.any():
        try:
            h = face_spacings(completed_cell(cell, pbc))
        except ValueError:
            return 0.0  # parallel periodic vectors: the caller's own checks say so
        with np.errstate(divide="ignore", invalid="ignore"):
            bound *= float(np.prod(np.where(pbc, 2.0 * rcut / h + 1.0, 1.0)))
    return bound


def check_pair_count(positions, cell: np.ndarray, pbc, rcut: float, device=None, search: str = "ase") -> None:
    """Refuse, before any neighbour search, a structure whose pairs within rcut would not fit in the memory
    available on ``device`` (``BYTES_PER_PAIR[search]`` each; ``torchace.resources``) or exceed ``MAX_PAIRS``: a
    collapsed, tiny or nearly flat periodic cell, or a cutoff far larger than the cell.  ``positions`` [N, 3]
    (numpy or torch); the estimate is ``estimate_pairs``, made only when a cheap upper bound is large."""
    pbc = np.asarray(pbc, dtype=bool)
    cell = np.asarray(cell, dtype=np.float64)
    n = len(positions)
    if not pair_bound(n, cell, pbc, rcut) > _CHEAP_PAIRS:  # (NaN: a singular cell, refused by the caller)
        return
    h = face_spacings(completed_cell(cell, pbc)) if pbc.any() else None
    est = estimate_pairs(positions, cell, pbc, rcut)
    if est <= _CHEAP_PAIRS:
        return
    if pbc.any():
        P = cell[pbc]  # the periodic lattice vectors: their volume, area or length
        measure = float(np.sqrt(max(np.linalg.det(P @ P.T), 0.0)))
        unit, what = [("Å", "length"), ("Å²", "area"), ("Å³", "volume")][len(P) - 1]
        spacings = ", ".join(f"{v:.3g}" for v, p in zip(h, pbc) if p)
        shape = ("periodic cell" if pbc.all() else f"cell periodic along axes {np.flatnonzero(pbc).tolist()} only") \
            + f" (lattice {what} {measure:.3g} {unit}, face spacings {spacings} Å)"
    else:
        shape = "structure with open boundaries"
    pairs = f"{n} atoms in a {shape} would have about {est:.3g} neighbour pairs within rcut = {rcut:g} Å"
    advice = ("a collapsed or nearly flat cell, or a cutoff far larger than the cell? Check the cell and pbc "
              "(a periodic axis much shorter than rcut repeats every atom thousands of times)")
    if est > MAX_PAIRS:
        raise ResourceLimitError(f"{pairs}, more than the limit of {MAX_PAIRS:.0e} pairs; {advice}")
    per_pair = BYTES_PER_PAIR[search]
    check_fits(est * per_pair, f"{pairs}; the list (~{per_pair} bytes a pair)",
               advice + ", or use a machine with more memory", device)


def _image_range(positions: np.ndarray, cell: np.ndarray, rcut: float) -> np.ndarray:
    """Largest |S_a| that can put a pair within rcut, per axis (fully periodic cell)."""
    frac = np.linalg.solve(cell.T, positions.T).T
    vol = abs(np.linalg.det(cell))
    spacing = np.array([vol / np.linalg.norm(np.cross(cell[(a + 1) % 3], cell[(a + 2) % 3])) for a in range(3)])
    span = frac.max(0) - frac.min(0)  # unwrapped positions need more images
    return np.ceil(rcut / spacing + span).astype(np.int64)


def dense_neighbour_list(positions: np.ndarray, cell: np.ndarray, pbc, rcut: float, device=None):
    """All-pairs × all-images neighbour list in torch (float64). Returns numpy (i, j, S)."""
    pbc = np.asarray(pbc, dtype=bool)
    if pbc.all():
        nmax = _image_range(positions, cell, rcut)
        axes = [torch.arange(-n, n + 1, device=device) for n in nmax]
        S = torch.cartesian_prod(*axes).to(torch.float64)
    else:
        S = torch.zeros((1, 3), dtype=torch.float64, device=device)
    pos = torch.as_tensor(positions, dtype=torch.float64, device=device)
    shifts = S @ torch.as_tensor(cell, dtype=torch.float64, device=device)  # [M, 3]
    n = pos.shape[0]
    d = pos.view(1, n, 1, 3) - pos.view(n, 1, 1, 3) + shifts.view(1, 1, -1, 3)  # [i, j, M, 3]
    mask = (d * d).sum(-1) < rcut * rcut
    zero = int(torch.nonzero((S == 0).all(1))[0, 0])
    mask[torch.arange(n, device=device), torch.arange(n, device=device), zero] = False
    i, j, m = torch.nonzero(mask, as_tuple=True)
    return i.cpu().numpy(), j.cpu().numpy(), S[m].to(torch.int64).cpu().numpy()


# a periodic cell whose lattice vectors are this far from orthogonal (Π|a_i| / volume) is Minkowski-reduced first
MAX_SKEW = 10.0


def _reduction(cell: np.ndarray, pbc: np.ndarray):
    """The integer matrix ``op`` (reduced cell = op @ cell, same lattice) of a strongly skewed periodic cell, or
    None.  [[a, 0, 0], [10^6·a, a, 0], [0, 0, a]] is a cubic lattice, but searching it as given visits 10^6 cell
    images per atom (a minute, or never); its reduced basis has the cube's images.  Shifts found with the reduced
    cell are mapped back, S = S_reduced @ op, so the list is the same set of pairs."""
    # plain Python on the 3×3 numbers: this runs at every neighbour-list build (µs, not numpy's tens of µs)
    rows = [r for r, p in zip(cell.tolist(), pbc.tolist()) if p]
    norms = [math.sqrt(x * x + y * y + z * z) for x, y, z in rows]
    if len(rows) == 1:
        measure = norms[0]
    else:
        (a1, a2, a3), (b1, b2, b3) = rows[0], rows[1]
        cx, cy, cz = a2 * b3 - a3 * b2, a3 * b1 - a1 * b3, a1 * b2 - a2 * b1
        if len(rows) == 2:
            measure = math.sqrt(cx * cx + cy * cy + cz * cz)
        else:
            measure = abs(cx * rows[2][0] + cy * rows[2][1] + cz * rows[2][2])
    if not measure > 0 or math.prod(norms) <= MAX_SKEW * measure:
        return None
    from ase.geometry import minkowski_reduce

    try:
        _, op = minkowski_reduce(cell, pbc=pbc)
    except Exception:  # noqa: BLE001 — the reduction is an optimisation; the unreduced search still works
        return None
    op = np.asarray(op, dtype=np.int64)
    if not np.array_equal(op[~pbc], np.eye(3, dtype=np.int64)[~pbc]):  # open axes must stay as they are
        return None
    return op


def _prepared(positions, cell, pbc, rcut):
    """(positions, cell, pbc as arrays, whether vesin's search applies, the cell reduction or None), after the
    pair-count check (refused before any search: ``check_pair_count``)."""
    pbc = np.asarray(pbc, dtype=bool)
    positions = np.asarray(positions, dtype=np.float64)
    cell = np.asarray(cell, dtype=np.float64)
    fast = (pbc.all() or not pbc.any()) and _vesin() is not None
    if len(positions):
        check_pair_count(positions, cell, pbc, rcut, search="vesin" if fast else "ase")
    op = _reduction(cell, pbc) if len(positions) and pbc.any() else None
    return positions, cell, pbc, fast, op


def _no_pairs():
    return np.zeros(0, np.int64), np.zeros(0, np.int64), np.zeros((0, 3), np.int64)


def neighbour_list(positions: np.ndarray, cell: np.ndarray, pbc, rcut: float):
    """Return ``(i, j, shifts)``: centre, neighbour and integer cell shifts [E, 3] (int64)."""
    positions, cell, pbc, fast, op = _prepared(positions, cell, pbc, rcut)
    if len(positions) == 0:
        return _no_pairs()
    if op is not None:
        i, j, S = _neighbour_list(positions, op.astype(np.float64) @ cell, pbc, rcut)
        return i, j, S @ op
    return _neighbour_list(positions, cell, pbc, rcut)


def sparse_neighbour_list(positions: np.ndarray, cell: np.ndarray, pbc, rcut: float):
    """``neighbour_list`` without the dense all-pairs path: vesin's cell list where it applies, else ASE's.  For a
    short cutoff (an Å or two: few pairs, many structures) this is several times faster than the dense path."""
    positions, cell, pbc, fast, op = _prepared(positions, cell, pbc, rcut)
    if len(positions) == 0:
        return _no_pairs()
    reduced = op.astype(np.float64) @ cell if op is not None else cell
    search = vesin_neighbour_list if fast else ase_neighbour_list
    i, j, S = search(positions, reduced, pbc, rcut)
    return (i, j, S @ op) if op is not None else (i, j, S)


def dense_candidates(positions: np.ndarray, cell: np.ndarray, pbc: np.ndarray, rcut: float) -> int:
    """atoms² × lattice images: the (pair, image) candidates of the dense path (0 for mixed boundaries, where it
    does not apply)."""
    if not (pbc.all() or not pbc.any()):
        return 0
    n_img = int(np.prod(2 * _image_range(positions, cell, rcut) + 1)) if pbc.all() else 1
    return len(positions) ** 2 * n_img


def _neighbour_list(positions: np.ndarray, cell: np.ndarray, pbc: np.ndarray, rcut: float):
    search = search_for(dense_candidates(positions, cell, pbc, rcut), pbc.tolist(), "cpu", _vesin() is not None,
                        cell_list=False)
    return {DENSE: dense_neighbour_list, VESIN: vesin_neighbour_list}.get(search, ase_neighbour_list)(
        positions, cell, pbc, rcut)


def _vesin():
    try:
        import vesin
    except ImportError:
        return None
    return vesin


def vesin_neighbour_list(positions: np.ndarray, cell: np.ndarray, pbc, rcut: float):
    """vesin's C++ cell list (optional accelerator, ~10× ASE's); periodic along all axes or none only.

    Same convention as ASE's: r_ij = x_j - x_i + S·cell; pairs sorted by centre (stable) as ASE returns them.
    """
    pbc = np.asarray(pbc, dtype=bool)
    periodic = bool(pbc.all())
    box = cell if periodic else np.zeros((3, 3))
    nl = _vesin().NeighborList(cutoff=float(rcut), full_list=True)
    i, j, S = nl.compute(points=positions, box=box, periodic=periodic, quantities="ijS")
    order = np.argsort(i, kind="stable")
    return i[order].astype(np.int64), j[order].astype(np.int64), S[order].astype(np.int64)


def ase_neighbour_list(positions: np.ndarray, cell: np.ndarray, pbc, rcut: float):
    """ASE's binned O(N) list; open axes get an enclosing box so binning sees a non-degenerate cell."""
    pbc = np.asarray(pbc, dtype=bool)
    if not pbc.any():
        # ASE needs a non-singular cell only along periodic axes; give it an enclosing box
        lo, hi = positions.min(0), positions.max(0)
        cell = np.diag(np.maximum(hi - lo, 1.0) + rcut)
    elif not pbc.all():
        # complete the open axes so that ASE's binning sees a non-degenerate cell
        cell = cell.copy()
        span = positions.max(0) - positions.min(0)
        for ax in np.flatnonzero(~pbc):
            if np.linalg.norm(cell[ax]) < 1e-12:
                others = [cell[a] for a in range(3) if a != ax]
                n = np.cross(others[0], others[1])
                if np.linalg.norm(n) < 1e-12:
                    n = np.eye(3)[ax]
                cell[ax] = n / np.linalg.norm(n) * (np.max(span) + rcut + 1.0)
    # bins beyond a few per atom only cost time (ASE allows 10^6: two atoms 10^12 Å apart took seconds)
    i, j, S = primitive_neighbor_list("ijS", pbc, cell, positions, float(rcut), self_interaction=False,
                                      use_scaled_positions=False, max_nbins=max(1000, 4 * len(positions)))
    return i.astype(np.int64), j.astype(np.int64), S.astype(np.int64)
