"""Coupling coefficients: rotation–reflection invariant, permutation-symmetric B = C·AA.

For an (n, l)-multiset (n_t, l_t)_{t=1..ν} the invariants of ⊗_t Y_{l_t} are the generalised
Clebsch–Gordan couplings (left-to-right coupling through intermediate L's ending at L = 0; Drautz,
PRB 99, 014104 (2019), eq. 26), here in e3nn's real basis using ``e3nn.o3.wigner_3j`` so that they
are exact for e3nn's real spherical harmonics.  Because AA is a product over a *multiset*, the
coefficients are summed over permutations of m within groups of equal (n, l) (the monomial
coefficients), and a linearly independent set is selected by an SVD (the "rpi" construction of
ACE1.jl / EquivariantModels.jl).  Rows are orthonormal as symmetric tensors.  Everything is computed
once in float64 and cached in memory and, if ``TORCHACE_CACHE`` names a directory, on disk (.npz with a
format version, its key and a SHA-256 of the arrays; never unpickled; a damaged or foreign entry is recomputed).
"""
from __future__ import annotations

import hashlib
import itertools
import os
import warnings
from functools import lru_cache
from typing import Dict, List, Sequence, Tuple

import numpy as np
import torch

_RANK_TOL = 1e-10


@lru_cache(maxsize=None)
def wigner_3j(l1: int, l2: int, l3: int) -> np.ndarray:
    """e3nn's real Wigner 3j symbol [2l1+1, 2l2+1, 2l3+1] in float64 (cached; the coupling of every basis)."""
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
                w = wigner_3j(L, lt, L2)  # [2L+1, 2lt+1, 2L2+1]
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
    for _k, g in itertools.groupby(nl_tuple):
        pattern.append(len(list(g)))
    return tuple(pattern)


CACHE_FORMAT = "torchace-coupling"
CACHE_VERSION = 2
# an entry is the coupling of one (l_1..l_ν) tuple: kilobytes to a few MB for ν ≤ 6
MAX_CACHE_ENTRY_BYTES = 256 << 20
_CACHE_MEMBERS = {"format", "version", "key", "checksum", "ms", "coeffs"}


def _disk_cache_path(key: str):
    """The cache file of ``key`` under ``TORCHACE_CACHE`` (None: no disk cache, or it cannot be created)."""
    root = os.environ.get("TORCHACE_CACHE")
    if not root:
        return None
    try:
        os.makedirs(root, exist_ok=True)
    except OSError as exc:
        warnings.warn(f"TORCHACE_CACHE={root}: cannot be used as the coupling-coefficient cache directory "
                      f"({exc.strerror or exc}); computing without it")
        return None
    return os.path.join(root, "coupling_" + hashlib.sha1(key.encode()).hexdigest()[:20] + ".npz")


def _checksum(key: str, ms: np.ndarray, coeffs: np.ndarray) -> str:
    """SHA-256 of an entry's key, shapes, dtypes and bytes (what the payload must be to be used)."""
    h = hashlib.sha256(f"{key}|{ms.dtype.str}{ms.shape}|{coeffs.dtype.str}{coeffs.shape}".encode())
    h.update(np.ascontiguousarray(ms).tobytes())
    h.update(np.ascontiguousarray(coeffs).tobytes())
    return h.hexdigest()


def _read_cache_entry(path: str, key: str, nu: int):
    """(ms, coeffs) of a cache entry, or a reason why it cannot be used (damaged, truncated, of another version
    or another key, wrong shapes or dtypes, checksum mismatch).  Never unpickles (``allow_pickle=False``),
    checks the input rule (a regular file of bounded size) and the members' sizes before numpy reads them."""
    import zipfile

    from ..inputs import check_input_file

    try:
        check_input_file(path, "coupling-coefficient cache entry", MAX_CACHE_ENTRY_BYTES)
        with zipfile.ZipFile(path) as z:  # declared sizes, before anything is allocated
            infos = z.infolist()
            if {i.filename[:-4] for i in infos} != _CACHE_MEMBERS or \
                    sum(i.file_size for i in infos) > MAX_CACHE_ENTRY_BYTES:
                return None, "not an entry of this torchace's format"
        with np.load(path, allow_pickle=False) as f:
            fmt, version, stored_key, checksum = (str(f["format"]), int(f["version"]), str(f["key"]),
                                                  str(f["checksum"]))
            if fmt != CACHE_FORMAT or version != CACHE_VERSION:
                return None, f"format {fmt!r} version {version}, not {CACHE_FORMAT!r} version {CACHE_VERSION}"
            if stored_key != key:
                return None, f"it holds {stored_key!r}, not {key!r}"
            ms, coeffs = f["ms"], f["coeffs"]
    except (OSError, ValueError, KeyError, EOFError, TypeError, MemoryError, zipfile.BadZipFile) as exc:
        msg = " ".join(str(exc).split())
        if msg.startswith(path):  # the input rule's message: the path is in the warning already
            return None, msg[len(path):].lstrip(": ")[:200]
        return None, f"{type(exc).__name__}: {msg[:200]}"
    if ms.dtype != np.int64 or coeffs.dtype != np.float64 or ms.ndim != 2 or coeffs.ndim != 2 \
            or ms.shape[1] != nu or coeffs.shape[1] != ms.shape[0]:
        return None, f"arrays of shapes {ms.shape} {ms.dtype} / {coeffs.shape} {coeffs.dtype}"
    if _checksum(key, ms, coeffs) != checksum:
        return None, "checksum mismatch (the arrays were altered or damaged)"
    return (ms, coeffs), None


def _write_cache_entry(path: str, key: str, ms: np.ndarray, coeffs: np.ndarray) -> None:
    """Write (or rewrite, after a damaged entry) one cache entry: a random temporary name (mkstemp, not a
    guessable one a link could redirect), fsynced, then renamed over the entry (a link there is replaced, never
    followed); a reader sees the old entry or the whole new one."""
    from ..atomic import atomic_write

    def write(tmp: str) -> None:
        with open(tmp, "wb") as fh:  # a file object: np.savez would append ".npz" to a bare name
            np.savez(fh, format=np.array(CACHE_FORMAT), version=np.array(CACHE_VERSION), key=np.array(key),
                     checksum=np.array(_checksum(key, ms, coeffs)), ms=ms, coeffs=coeffs)

    try:
        atomic_write(path, write, ".npz")
    except (OSError, ValueError) as exc:  # OutputPathError is a ValueError
        warnings.warn(f"{path}: cannot write the coupling-coefficient cache entry ({exc}); continuing without it")


@lru_cache(maxsize=None)
def symmetric_coupling(ls: Tuple[int, ...], pattern: Tuple[int, ...]) -> Tuple[np.ndarray, np.ndarray]:
    """Independent permutation-symmetric invariants for an l-tuple with equal-(n,l) groups ``pattern``.

    Returns ``(ms, coeffs)``: ``ms`` [n_mono, ν] canonical m-indices (0-based, sorted within groups)
    and ``coeffs`` [n_inv, n_mono] with B_q = Σ_k coeffs[q, k] Π_t A_{n_t l_t ms[k, t]}.

    With ``TORCHACE_CACHE`` set, entries are read from / written to that directory; an entry that fails its
    integrity check (format, version, key, shapes, checksum) is ignored with a warning and recomputed.
    """
    key = f"v{CACHE_VERSION}|{ls}|{pattern}"
    path = _disk_cache_path(key)
    if path is not None and os.path.lexists(path):
        entry, reason = _read_cache_entry(path, key, len(ls))
        if entry is not None:
            return entry
        warnings.warn(f"{path}: ignoring a damaged or foreign coupling-coefficient cache entry ({reason}); "
                      f"recomputing it (to clear the cache, delete the files coupling_*.npz in "
                      f"{os.path.dirname(path)})")
        if not os.path.isfile(path) or os.path.islink(path):
            path = None  # never write through a link or onto a FIFO/device/directory: compute without caching
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
    if path is not None:
        _write_cache_entry(path, key, ms, coeffs)
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
