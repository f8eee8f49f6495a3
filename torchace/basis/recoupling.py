"""Coupled pairs: a linear ACE site energy through recoupled pairs of one-particle blocks (issue 29).

The linear site energy is a polynomial in the atomic basis, E_i = Σ_μ c̃_μ Π_{a∈μ} A_a, with c̃ = c·C folded onto
the m-resolved products AA (ACEpotentials.jl paper §II; ``SymmetricCoupling.transpose_apply``).  The A_a of one
block β = (n, l) (all m, e3nn's real basis, one radial function) rotate together by D^l, so the part of E on one
multiset of blocks is a rotation invariant of ⊗_t V_{l_t}; symmetrised over equal blocks it lies in the span of
the recoupled invariants (Drautz, PRB 99, 014104 (2019) eq. 26, coupled two by two):

    order 1   w·A_β                          (l = 0)
    order 2   w·Σ_m A_{β1 m} A_{β2 m}          (l1 = l2)
    order 3   w·Σ_M P^{l3}_M(β1, β2) A_{β3 M}
    order 4   Σ_L w_L Σ_M P^L_M(β1, β2) P^L_M(β3, β4)

with the coupled pairs P^L_M(β1, β2) = Σ_{m1 m2} C^{L M}_{l1 m1 l2 m2} A_{β1 m1} A_{β2 m2} (C: ``e3nn.o3.wigner_3j``)
shared by every product that uses them (ace-jax 0.7's "pair values").  Each weight is linear in c̃,
w = c̃·S, with S (the projection of the symmetrised coefficient tensor on each invariant) built once per basis, so a
new set of coefficients costs one sparse product.  The energy is then E = Σ_t w_t Σ_{j<len_t} Z[x_t+j] Z[y_t+j]
over the terms t, Z = [A | 1 | P]: the pair values cost one multiply-add per non-zero C, a term 2L+1, against one
per node of the shared-prefix DAG (``model/backends/products.py``), and the reverse sweep is the same lists backwards.
``cost`` estimates both; the fused kernel takes this scheme where it is cheaper (``products.product_scheme``).
"""
from __future__ import annotations

import itertools
from dataclasses import dataclass
from functools import lru_cache
from typing import Dict, List, Optional, Tuple

import numpy as np
import torch

from .coupling_coefficients import wigner_3j

# a weight column whose entries are all below this (pure numbers of order 1) is an exact zero of the symmetrised
# coupling (e.g. an odd L between two equal blocks): dropped
_ZERO = 1e-12


@dataclass
class CoupledPairs:
    """The coupled-pair plan of one product basis (see the module docstring).

    ``pair_index`` [n_cg, 3] (a1, a2, slot) and ``pair_coef`` [n_cg]: P[slot] += coef·A[a1]·A[a2];
    ``terms`` [n_terms, 3] (x, y, len) into Z = [A (n_a) | 1 | P (n_p)]; ``S`` the weights' map from the AA
    coefficients, as COO (``s_aa``, ``s_term``, ``s_val``): w[..., t] = Σ c̃[..., k] S[k, t]."""
    n_a: int
    n_p: int
    pair_index: torch.Tensor
    pair_coef: torch.Tensor
    terms: torch.Tensor
    s_aa: torch.Tensor
    s_term: torch.Tensor
    s_val: torch.Tensor

    @property
    def n_terms(self) -> int:
        return int(self.terms.shape[0])

    def weights(self, c_aa: torch.Tensor) -> torch.Tensor:
        """Term weights [..., n_terms] (float64) of AA coefficients c_aa [..., n_aa]."""
        c = c_aa.to(torch.float64)
        lead = c.shape[:-1]
        out = torch.zeros(*lead, self.n_terms, dtype=torch.float64, device=c.device)
        return out.index_add_(-1, self.s_term.to(c.device),
                               c.index_select(-1, self.s_aa.to(c.device)) * self.s_val.to(c.device))

    def cost(self) -> Dict[str, int]:
        """Multiply-adds per atom, energy and its reverse sweep: the pair values (3 per C entry), the terms."""
        n_cg = int(self.pair_index.shape[0])
        n_term = int(self.terms[:, 2].sum()) if self.n_terms else 0
        return {"pair_values": self.n_p, "cg_entries": n_cg, "term_entries": n_term,
                "flops": 3 * n_cg + 3 * n_term}

    def site_energy(self, A: torch.Tensor, w: torch.Tensor) -> torch.Tensor:
        """Σ_t w_t Σ_j Z[x_t+j] Z[y_t+j] for A [N, n_a] and per-atom weights w [N, n_terms] (torch reference of
        the kernel's loops; differentiable)."""
        N = A.shape[0]
        pi = self.pair_index.to(A.device)
        vals = A.index_select(1, pi[:, 0]) * A.index_select(1, pi[:, 1]) * self.pair_coef.to(A)
        P = torch.zeros(N, self.n_p, dtype=A.dtype, device=A.device).index_add_(1, pi[:, 2], vals)
        Z = torch.cat([A, torch.ones_like(A[:, :1]), P], dim=1)
        ex, ey, et = (t.to(A.device) for t in _expand(self.terms))
        return (Z.index_select(1, ex) * Z.index_select(1, ey) * w.to(A).index_select(1, et)).sum(1)


def _expand(terms: torch.Tensor) -> Tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """(x_t + j, y_t + j, t) for every term t and j < len_t."""
    lens = terms[:, 2]
    t = torch.repeat_interleave(torch.arange(terms.shape[0]), lens)
    start = torch.cumsum(lens, 0) - lens
    j = torch.arange(int(lens.sum())) - start.repeat_interleave(lens)
    return terms[t, 0] + j, terms[t, 1] + j, t


def _blocks(n_idx: np.ndarray, l_idx: np.ndarray, lm_idx: np.ndarray):
    """Block id per A function, each block's (offset, l), or None where a block is not contiguous in m."""
    key = n_idx * 1000 + l_idx
    ids: Dict[int, int] = {}
    block = np.empty(len(key), dtype=np.int64)
    info: List[Tuple[int, int]] = []
    for a, k in enumerate(key.tolist()):
        if k not in ids:
            ids[k] = len(info)
            info.append((a, int(l_idx[a])))
        block[a] = ids[k]
    m = lm_idx - l_idx * l_idx  # 0..2l in e3nn's order
    off = np.array([o for o, _ in info], dtype=np.int64)
    ls = np.array([lv for _, lv in info], dtype=np.int64)
    counts = np.bincount(block, minlength=len(info))
    if not np.array_equal(counts, 2 * ls + 1) or not np.array_equal(np.arange(len(key)), off[block] + m):
        return None
    return block, m, off, ls


class _Builder:
    """Numbering of pair values and terms while the plan is built."""

    def __init__(self, n_a: int, off: np.ndarray, ls: np.ndarray):
        self.n_a, self.off, self.ls = n_a, off, ls
        self.pairs: Dict[Tuple[int, int, int], int] = {}  # (β1, β2, L) → P offset
        self.n_p = 0
        self.terms: List[Tuple[int, int, int]] = []
        self.s: List[Tuple[np.ndarray, np.ndarray]] = []  # (aa rows, values) per term

    def pair(self, b1: int, b2: int, L: int) -> int:
        key = (b1, b2, L)
        if key not in self.pairs:
            self.pairs[key] = self.n_p
            self.n_p += 2 * L + 1
        return self.pairs[key]

    def pair_cost(self, key: Tuple[int, int, int]) -> int:
        """Clebsch–Gordan entries a new pair value adds (0 when the plan has it)."""
        if key in self.pairs:
            return 0
        b1, b2, L = key
        return int((np.abs(wigner_3j(int(self.ls[b1]), int(self.ls[b2]), L)) > 1e-15).sum())

    def term(self, x: int, y: int, length: int, rows: np.ndarray, vals: np.ndarray) -> None:
        self.terms.append((x, y, length))
        self.s.append((rows, vals))


def _valid_perms(pattern: Tuple[int, ...]) -> List[Tuple[int, ...]]:
    """Permutations of the factor slots that keep each slot's block (the symmetry of a product multiset)."""
    return [p for p in itertools.permutations(range(len(pattern))) if all(pattern[q] == pattern[i]
                                                                           for i, q in enumerate(p))]


@lru_cache(maxsize=None)
def _invariants(ls: Tuple[int, ...]) -> List[Tuple[int, np.ndarray]]:
    """(L, T_L) spanning the invariants of ⊗ V_l in the pairing (12)(34) (order 4) or (12)3 (order 3)."""
    if len(ls) == 1:
        return [(0, np.ones(1))] if ls[0] == 0 else []
    if len(ls) == 2:
        return [(0, np.eye(2 * ls[0] + 1))] if ls[0] == ls[1] else []
    if len(ls) == 3:
        l1, l2, l3 = ls
        return [(l3, wigner_3j(l1, l2, l3))] if abs(l1 - l2) <= l3 <= l1 + l2 else []
    l1, l2, l3, l4 = ls
    out = []
    for L in range(max(abs(l1 - l2), abs(l3 - l4)), min(l1 + l2, l3 + l4) + 1):
        out.append((L, np.einsum("abM,cdM->abcd", wigner_3j(l1, l2, L), wigner_3j(l3, l4, L))))
    return out


# the pairings of the factor slots, pairs kept in block order: (01)(23), (02)(13), (03)(12); order 3: (01)2, ...
_PAIRINGS = {3: ((0, 1, 2), (0, 2, 1), (1, 2, 0)), 4: ((0, 1, 2, 3), (0, 2, 1, 3), (0, 3, 1, 2))}


def _pairing_terms(lv, mg, perms, sigma):
    """[(L, values over the group's rows)] of the non-zero invariants in the pairing ``sigma``."""
    ls = tuple(lv[i] for i in sigma)
    out = []
    for L, T in _invariants(ls):
        val = sum(T[tuple(mg[:, p][:, sigma].T)] for p in perms) / (len(perms) * float((T * T).sum()))
        if np.abs(val).max() >= _ZERO:
            out.append((L, val))
    return out


def _add_group(bld: "_Builder", bl, lv, mg, rows, perms) -> None:
    """The terms of one block multiset ``bl`` (rows ``rows`` of the product basis, their m ``mg``): for orders 3
    and 4, in the pairing that adds the fewest new Clebsch–Gordan entries and term entries to the plan."""
    nu, n_a, off = len(bl), bld.n_a, bld.off
    if nu <= 2:
        for _, val in _pairing_terms(lv, mg, perms, tuple(range(nu))):
            x, y, n = (off[bl[0]], n_a, 1) if nu == 1 else (off[bl[0]], off[bl[1]], 2 * lv[0] + 1)
            bld.term(int(x), int(y), int(n), rows, val)
        return
    best = None
    for sigma in _PAIRINGS[nu]:
        terms = _pairing_terms(lv, mg, perms, sigma)
        b = [int(bl[i]) for i in sigma]
        keys = [(b[0], b[1], L) for L, _ in terms] + ([(b[2], b[3], L) for L, _ in terms] if nu == 4 else [])
        cost = sum(bld.pair_cost(k) for k in set(keys)) + sum(2 * L + 1 for L, _ in terms)
        if best is None or cost < best[0]:
            best = (cost, b, terms)
    _, b, terms = best
    for L, val in terms:
        x = n_a + 1 + bld.pair(b[0], b[1], L)
        y = off[b[2]] if nu == 3 else n_a + 1 + bld.pair(b[2], b[3], L)
        bld.term(int(x), int(y), 2 * L + 1, rows, val)


def coupled_pairs(idx: torch.Tensor, n_a: int, n_idx: torch.Tensor, l_idx: torch.Tensor,
                  lm_idx: torch.Tensor) -> Optional[CoupledPairs]:
    """The coupled-pair plan of the product basis ``idx`` [n_aa, ν] (sorted A indices padded with ``n_a``) over
    the one-particle functions (n_idx, l_idx, lm_idx) of an ``EdgeEmbedding``; None where the scheme does not
    apply (order above 4, a block without all its m)."""
    idx = idx.detach().cpu().numpy()
    if idx.shape[1] > 4:
        return None
    blocks = _blocks(*(t.detach().cpu().numpy() for t in (n_idx, l_idx, lm_idx)))
    if blocks is None:
        return None
    block, m_of, off, ls = blocks
    bld = _Builder(n_a, off, ls)
    order = (idx != n_a).sum(1)
    for nu in range(1, idx.shape[1] + 1):
        rows = np.nonzero(order == nu)[0]
        if len(rows) == 0:
            continue
        a = idx[rows, :nu]
        b, m = block[a], m_of[a]
        srt = np.argsort(b * 64 + m, axis=1, kind="stable")  # by block, then m
        b, m = np.take_along_axis(b, srt, 1), np.take_along_axis(m, srt, 1)
        groups, gid = np.unique(b, axis=0, return_inverse=True)
        gid = gid.reshape(-1)
        # classes of groups sharing (l-tuple, equality pattern): one set of invariants and permutations each
        lt = ls[groups]
        pat = np.stack([np.searchsorted(np.unique(g), g) for g in groups]) if nu > 1 else np.zeros_like(groups)
        classes, cid = np.unique(np.concatenate([lt, pat], 1), axis=0, return_inverse=True)
        cid = cid.reshape(-1)
        order_of_rows = np.argsort(gid, kind="stable")
        starts = np.searchsorted(gid[order_of_rows], np.arange(len(groups) + 1))
        for c, key in enumerate(classes):
            lv, pattern = tuple(int(v) for v in key[:nu]), tuple(int(v) for v in key[nu:])
            perms = _valid_perms(pattern)
            for g in np.nonzero(cid == c)[0]:
                sel = order_of_rows[starts[g]:starts[g + 1]]
                _add_group(bld, groups[g], lv, m[sel], rows[sel], perms)
    return _finish(bld)


def _finish(bld: _Builder) -> CoupledPairs:
    pi, pc = [], []
    for (b1, b2, L), p in bld.pairs.items():
        C = wigner_3j(int(bld.ls[b1]), int(bld.ls[b2]), L)
        m1, m2, M = np.nonzero(np.abs(C) > 1e-15)
        pi.append(np.stack([bld.off[b1] + m1, bld.off[b2] + m2, p + M], 1))
        pc.append(C[m1, m2, M])
    pair_index = np.concatenate(pi) if pi else np.zeros((0, 3), np.int64)
    pair_coef = np.concatenate(pc) if pc else np.zeros(0)
    srt = np.argsort(pair_index[:, 2], kind="stable")  # slot order: each P value accumulated in one run
    s_aa = np.concatenate([r for r, _ in bld.s]) if bld.s else np.zeros(0, np.int64)
    s_val = np.concatenate([v for _, v in bld.s]) if bld.s else np.zeros(0)
    s_term = np.repeat(np.arange(len(bld.s)), [len(r) for r, _ in bld.s]).astype(np.int64)
    keep = np.abs(s_val) > 1e-15
    long = lambda x: torch.from_numpy(np.ascontiguousarray(x, dtype=np.int64))  # noqa: E731
    return CoupledPairs(int(bld.n_a), int(bld.n_p), long(pair_index[srt]), torch.from_numpy(pair_coef[srt].copy()),
                        long(np.array(bld.terms, dtype=np.int64).reshape(-1, 3)), long(s_aa[keep]),
                        long(s_term[keep]), torch.from_numpy(s_val[keep].copy()))
