"""Coupling coefficients: rotation–reflection invariant, permutation-symmetric B = C·AA.

For an (n, l)-multiset (n_t, l_t)_{t=1..ν} the invariants of ⊗_t Y_{l_t} are the generalised
Clebsch–Gordan couplings (left-to-right coupling through intermediate L's ending at L = 0; Drautz,
PRB 99, 014104 (2019), eq. 26), here in e3nn's real basis using ``e3nn.o3.wigner_3j`` so that they
are exact for e3nn's real spherical harmonics.  Because AA is a product over a *multiset*, the
coefficients are summed over permutations of m within groups of equal (n, l) (the monomial
coefficients), and a linearly independent set is selected by an SVD (the "rpi" construction of
ACE1.jl / EquivariantModels.jl).  Rows are orthonormal as symmetric tensors.  Everything is computed
once in float64 and cached in memory and, if ``TORCHACE_CACHE`` names a directory, on disk (.npz,
never pickle).
"""
from __future__ import annotations

import hashlib
import itertools
import os
from functools import lru_cache
from typing import Dict, List, Sequence, Tuple

import numpy as np
import torch

_RANK_TOL = 1e-10


@lru_cache(maxsize=None)
def _w3j(l1: int, l2: int, l3: int) -> np.ndarray:
    from e3nn import o3

    return o3.wigner_3j(l1, l2, l3, dtype=torch.float64).numpy()


@lru_cache(maxsize=None)
def generalised_cg(ls: Tuple[int, ...]) -> np.ndarray:
    """All invariant couplings of ⊗ Y_{l_t}: array [n_paths, (2l_1+1), ..., (2l_ν+1)] (possibly n_paths = 0)."""
    nu = len(ls)
    if nu == 1:
        out = np.zeros((1, 2 * ls[0] + 1))
        if ls[0] == 0:
            out[0, 0] = 1.0
            return out
        return out[:0]
    # paths: list of tensors [m_1..m_t, M_t] for each admissible intermediate sequence
    paths: List[Tuple[int, np.ndarray]] = [(ls[0], np.eye(2 * ls[0] + 1))]
    for t in range(1, nu):
        lt = ls[t]
        new = []
        last = t == nu - 1
        for L, T in paths:
            targets = [0] if last else range(abs(L - lt), L + lt + 1)
            for L2 in targets:
                if not (abs(L - lt) <= L2 <= L + lt):
                    continue
                # the remaining factors must be able to couple back to 0
                rest = ls[t + 1:]
                if rest and L2 > sum(rest):
                    continue
                w = _w3j(L, lt, L2)  # [2L+1, 2lt+1, 2L2+1]
                T2 = np.tensordot(T, w, axes=([T.ndim - 1], [0]))  # [..., m_t, M2]
                new.append((L2, T2))
        paths = new
    shape = tuple(2 * l + 1 for l in ls)
    if not paths:
        return np.zeros((0,) + shape)
    return np.stack([T[..., 0] for _, T in paths])


def _groups(nl_tuple: Sequence[Tuple[int, int]]) -> Tuple[int, ...]:
    """Group pattern: run lengths of equal consecutive (n, l) in a sorted tuple."""
    pattern = []
    for k, g in itertools.groupby(nl_tuple):
        pattern.append(len(list(g)))
    return tuple(pattern)


def _disk_cache_path(key: str):
    root = os.environ.get("TORCHACE_CACHE")
    if not root:
        return None
    os.makedirs(root, exist_ok=True)
    return os.path.join(root, "coupling_" + hashlib.sha1(key.encode()).hexdigest()[:20] + ".npz")


@lru_cache(maxsize=None)
def symmetric_coupling(ls: Tuple[int, ...], pattern: Tuple[int, ...]) -> Tuple[np.ndarray, np.ndarray]:
    """Independent permutation-symmetric invariants for an l-tuple with equal-(n,l) groups ``pattern``.

    Returns ``(ms, coeffs)``: ``ms`` [n_mono, ν] canonical m-indices (0-based, sorted within groups)
    and ``coeffs`` [n_inv, n_mono] with B_q = Σ_k coeffs[q, k] Π_t A_{n_t l_t ms[k, t]}.
    """
    key = f"v1|{ls}|{pattern}"
    path = _disk_cache_path(key)
    if path is not None and os.path.exists(path):
        with np.load(path, allow_pickle=False) as f:
            return f["ms"], f["coeffs"]
    U = generalised_cg(ls)
    nu = len(ls)
    if U.shape[0] == 0:
        ms, coeffs = np.zeros((0, nu), dtype=np.int64), np.zeros((0, 0))
    else:
        flat = U.reshape(U.shape[0], -1)
        allm = np.stack(np.unravel_index(np.arange(flat.shape[1]), U.shape[1:]), axis=1)
        # canonical form: sort m within each group of equal (n, l)
        canon = allm.copy()
        start = 0
        for size in pattern:
            canon[:, start:start + size] = np.sort(allm[:, start:start + size], axis=1)
            start += size
        uniq, inverse = np.unique(canon, axis=0, return_inverse=True)
        inverse = inverse.reshape(-1)
        orbit = np.bincount(inverse, minlength=len(uniq)).astype(np.float64)
        mono = np.zeros((flat.shape[0], len(uniq)))
        np.add.at(mono.T, inverse, flat.T)  # monomial coefficients (sum over orbit)
        # SVD in the metric of symmetric tensors: a monomial coefficient c corresponds to c/orbit on
        # each of its `orbit` tensor entries, so the tensor norm is Σ c²/orbit.
        scaled = mono / np.sqrt(orbit)
        _, s, vt = np.linalg.svd(scaled, full_matrices=False)
        rank = int(np.sum(s > _RANK_TOL * max(1.0, s[0] if len(s) else 1.0)))
        coeffs = vt[:rank] * np.sqrt(orbit)
        # deterministic sign: first significant entry positive
        for q in range(rank):
            j = np.flatnonzero(np.abs(coeffs[q]) > 1e-12)[0]
            if coeffs[q, j] < 0:
                coeffs[q] *= -1
        keep = np.flatnonzero(np.abs(coeffs).max(axis=0) > 1e-14) if rank else np.zeros(0, dtype=np.int64)
        ms, coeffs = uniq[keep].astype(np.int64), coeffs[:, keep]
    if path is not None and not os.path.exists(path):  # written only where there is none (the output rule)
        from ..atomic import atomic_write

        def write(tmp: str) -> None:
            with open(tmp, "wb") as fh:  # a file object: np.savez would append ".npz" to a bare name
                np.savez(fh, ms=ms, coeffs=coeffs)

        # a random temporary name (mkstemp), not a guessable one a link could redirect; fsynced, then renamed
        atomic_write(path, write, ".npz")
    return ms, coeffs


def couple_spec(nl_tuples, n_y_offset) -> Dict[str, object]:
    """Build the sparse AA spec and the coupling matrix for a list of sorted (n, l) multisets.

    ``n_y_offset(n, l, m)`` maps a one-particle index to its column in the flattened A vector.
    Returns ``aa`` (list per order of int arrays [n_AA_ν, ν], columns of A, sorted within rows),
    and the COO coupling ``rows`` (B index), ``cols`` (global AA index, orders concatenated),
    ``vals``; plus ``nl_of_b`` (the (n, l) multiset of each B).
    """
    aa_index: Dict[Tuple[int, ...], int] = {}
    aa_by_order: Dict[int, List[Tuple[int, ...]]] = {}
    rows, cols, vals, nl_of_b = [], [], [], []
    nb = 0
    # AA indices are assigned order by order so that orders are contiguous
    pending = []
    for t in nl_tuples:
        ls = tuple(l for _, l in t)
        ms, coeffs = symmetric_coupling(ls, _groups(t))
        if coeffs.shape[0] == 0:
            continue
        a_cols = np.empty(ms.shape, dtype=np.int64)
        for pos, (n, l) in enumerate(t):
            a_cols[:, pos] = n_y_offset(n, l) + ms[:, pos]
        a_cols.sort(axis=1)
        keys = [tuple(r) for r in a_cols.tolist()]
        for q in range(coeffs.shape[0]):
            pending.append((nb, keys, coeffs[q]))
            nl_of_b.append(t)
            nb += 1
    for _, keys, _ in pending:
        for k in keys:
            if k not in aa_index:
                aa_by_order.setdefault(len(k), []).append(k)
                aa_index[k] = -1
    offset = 0
    aa = []
    for nu in sorted(aa_by_order):
        block = sorted(aa_by_order[nu])
        for j, k in enumerate(block):
            aa_index[k] = offset + j
        offset += len(block)
        aa.append(np.array(block, dtype=np.int64).reshape(len(block), nu))
    for b, keys, c in pending:
        for k, v in zip(keys, c):
            if abs(v) > 1e-14:
                rows.append(b)
                cols.append(aa_index[k])
                vals.append(v)
    return dict(aa=aa, rows=np.array(rows, dtype=np.int64), cols=np.array(cols, dtype=np.int64),
                vals=np.array(vals, dtype=np.float64), n_b=nb, n_aa=offset, nl_of_b=nl_of_b)
