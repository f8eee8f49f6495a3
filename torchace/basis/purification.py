"""Purification: the canonical (self-interaction-free) cluster expansion as a coupling matrix on AA.

Ho, Gutleb & Ortner, "Atomic Cluster Expansion without Self-Interaction" (2024), §2.2 and §2.4.1:
the canonical correlations 𝒜_k = Σ_{j_1 ≠ … ≠ j_N} Π_t φ_{k_t}(x_{j_t}) are a sparse linear combination
of the self-interacting products 𝐀_k = Π_t A_{k_t} over an extended index set K' (eq. 14), so the
canonical invariants are 𝓑 = C·P·𝐀 =: C_p·𝐀 (eq. 27) and cost one sparse matrix, like B = C·𝐀.

P is built here from the set-partition (Möbius) form of inclusion–exclusion over coinciding neighbours,
which is the closed form of the recursion (43) of the paper:

    𝒜_{k_1…k_N} = Σ_{π partition of {1..N}} μ(π) Π_{b ∈ π} A[Π_{t ∈ b} φ_{k_t}],
    μ(π) = Π_b (-1)^{|b|-1} (|b|-1)!,

with A[f] = Σ_j f(x_j).  Each product of one-particle functions of the same neighbour is linearised
exactly (eq. 12) into one-particle functions:

* angular part: Π_t Y_{l_t m_t} = Σ_{LM} G_{LM} Y_{LM} (real Gaunt coefficients in e3nn's real basis,
  L ≤ Σ l_t, computed by a product quadrature on the sphere that is exact for these polynomial degrees);
* radial part: R_n = P_k(x)·env(x) with env = (1-x)²(1+x)² polynomial in x (docs/conventions.md), so
  Π_{t=1}^ν R_{n_t} = [Π_t P_{k_t} · env^{ν-1}]·env = Σ_j c_j P_j(x)·env(x) = Σ_j c_j R_j, a finite
  sum with j ≤ Σ k_t + 4(ν-1) (Gauss–Legendre quadrature, exact);
* species: R_n carries δ(z_j = species of n), so products over different species vanish identically.

The extended one-particle functions (larger n, L) enter A and lower-order AA only; they add no basis
functions (the number of B's is unchanged).

``pure2b`` (ACE1x.jl's ``pure2b``): only the fully diagonal part (all factors on one neighbour) is
removed from every basis function of correlation order ≥ 2, i.e. 𝐀_k → 𝐀_k − A[Π_t φ_{k_t}].  On a
one-neighbour environment every such function is then exactly zero, so the two-body interaction is carried
by the order-1 functions (and the pair basis) alone.  After the coupling only the L = 0 part of the
diagonal survives: B_q loses Σ_j g_q(r_j), g_q = B_q on one neighbour, expanded in R_n Y_00 (ACE1x builds
the same correction numerically; here it is the exact linearisation).

Priors rescale the one-particle functions (φ → s_nl φ, ``ACEModel.set_basis_scale``); the canonical
function of scaled φ's is Π_t s times the unscaled one, so ``Purification.apply_scale`` rescales the
coupling values entrywise (C_p)_{bk'} → (C_p)_{bk'} Π_{t∈b} s / Π_{t∈k'} s.
"""
from __future__ import annotations

import math
from functools import lru_cache
from itertools import product as cartesian
from typing import Dict, Sequence, Tuple

import numpy as np
import torch

from .radial import orthonormal_recurrence

NLM = Tuple[int, int, int]  # one-particle index (n, l, m), n >= 1, -l <= m <= l

# entries of C·P below this fraction of their row's largest entry are cancellations (round-off of exact
# zeros forced by rotation invariance), not coefficients
_DROP_TOL = 1e-12
# linearisation coefficients below this (relative) are exact zeros by parity / selection rules
_LIN_TOL = 1e-14


# ---------------------------------------------------------------------------------------------------------
# radial products

def _poly_values(x: np.ndarray, deg: int) -> np.ndarray:
    """Orthonormal Jacobi(4,4) polynomials P_0..P_deg at x (same recurrence as ManyBodyRadials): [len(x), deg+1]."""
    coef = orthonormal_recurrence(deg, 4.0, 4.0)
    out = np.zeros((len(x), deg + 1))
    out[:, 0] = coef[0, 0]
    if deg >= 1:
        p_prev, p = np.zeros_like(x), out[:, 0].copy()
        for k in range(1, deg + 1):
            p, p_prev = (coef[k, 0] * x + coef[k, 1]) * p + coef[k, 2] * p_prev, p
            out[:, k] = p
    return out


@lru_cache(maxsize=None)
def radial_product(ks: Tuple[int, ...]) -> Tuple[Tuple[int, float], ...]:
    """Π_t R_{k_t} = Σ_j c_j R_j (R_k = P_k(x)·env(x)): returns ((j, c_j), ...), exact (j ≤ Σk + 4(ν-1))."""
    nu = len(ks)
    if nu == 1:
        return ((ks[0], 1.0),)
    deg = sum(ks) + 4 * (nu - 1)
    x, w = np.polynomial.legendre.leggauss(deg + 8)  # exact for the degree-(2·deg + 8) integrands
    env = (1.0 - x) ** 2 * (1.0 + x) ** 2
    P = _poly_values(x, deg)
    q = np.prod(P[:, list(ks)], axis=1) * env ** (nu - 1)
    c = P.T @ (w * env * env * q)  # ⟨q, P_j⟩ in the weight env² = (1-x)⁴(1+x)⁴
    keep = np.abs(c) > _LIN_TOL * np.abs(c).max()
    return tuple((int(j), float(c[j])) for j in np.flatnonzero(keep))


# ---------------------------------------------------------------------------------------------------------
# angular products

@lru_cache(maxsize=None)
def _sphere_quadrature(lmax: int) -> Tuple[np.ndarray, np.ndarray]:
    """Y [n_q, (lmax+1)²] (e3nn real, ∫Y² = 1) at a product quadrature exact for degree 2·lmax, and weights."""
    from e3nn import o3

    n_t, n_p = lmax + 2, 2 * lmax + 3
    z, wz = np.polynomial.legendre.leggauss(n_t)
    ph = 2 * np.pi * np.arange(n_p) / n_p
    zz, pp = np.meshgrid(z, ph, indexing="ij")
    s = np.sqrt(1.0 - zz ** 2)
    vec = np.stack([s * np.cos(pp), s * np.sin(pp), zz], axis=-1).reshape(-1, 3)
    w = (wz[:, None] * np.full(n_p, 2 * np.pi / n_p)[None, :]).reshape(-1)
    Y = o3.spherical_harmonics(list(range(lmax + 1)), torch.from_numpy(vec), normalize=True,
                               normalization="integral").numpy()
    return Y, w


@lru_cache(maxsize=None)
def angular_product(lms: Tuple[Tuple[int, int], ...]) -> Tuple[Tuple[int, int, float], ...]:
    """Π_t Y_{l_t m_t} = Σ_{LM} G_{LM} Y_{LM} (real Gaunt series): ((L, M, G), ...), L ≤ Σ l_t, exact."""
    if len(lms) == 1:
        return ((lms[0][0], lms[0][1], 1.0),)
    lsum = sum(l for l, _ in lms)
    Y, w = _sphere_quadrature(lsum)
    f = np.ones(len(w))
    for l, m in lms:
        f = f * Y[:, l * l + m + l]
    g = Y.T @ (w * f)
    keep = np.abs(g) > _LIN_TOL * max(np.abs(g).max(), 1e-300)
    out = []
    for i in np.flatnonzero(keep):
        L = int(math.isqrt(int(i)))
        if (L - lsum) % 2 == 0:  # parity: only L ≡ Σ l (mod 2) occur
            out.append((L, int(i) - L * L - L, float(g[i])))
    return tuple(out)


# ---------------------------------------------------------------------------------------------------------
# one-particle products and canonical correlations

def linearise(block: Sequence[NLM], nz: int) -> Dict[NLM, float]:
    """Π_{t ∈ block} φ_{n_t l_t m_t}(x) = Σ_κ c_κ φ_κ(x) for one neighbour x (exact; {} if species differ)."""
    return dict(_linearise(tuple(sorted(block)), nz))


@lru_cache(maxsize=None)
def _linearise(block: Tuple[NLM, ...], nz: int) -> Tuple[Tuple[NLM, float], ...]:
    species = {(n - 1) % nz for n, _, _ in block}
    if len(species) > 1:  # R_n carries δ(z_j = species of n): the product is identically zero
        return ()
    s = species.pop()
    rad = radial_product(tuple(sorted((n - 1) // nz for n, _, _ in block)))
    ang = angular_product(tuple(sorted((l, m) for _, l, m in block)))
    return tuple(((k * nz + s + 1, L, M), cr * ca) for k, cr in rad for L, M, ca in ang)


def set_partitions(n: int):
    """All partitions of range(n) into non-empty blocks (lists of lists)."""
    if n == 0:
        yield []
        return
    for part in set_partitions(n - 1):
        for i in range(len(part)):
            yield part[:i] + [part[i] + [n - 1]] + part[i + 1:]
        yield part + [[n - 1]]


def canonical_expansion(key: Sequence[NLM], nz: int) -> Dict[Tuple[NLM, ...], float]:
    """𝒜_key (distinct neighbours) = Σ_{k'} P_{k'} 𝐀_{k'}: {sorted one-particle tuple k': coefficient}."""
    out: Dict[Tuple[NLM, ...], float] = {}
    for part in set_partitions(len(key)):
        mu = 1.0
        factors = []
        for b in part:
            mu *= (-1) ** (len(b) - 1) * math.factorial(len(b) - 1)
            lin = _linearise(tuple(sorted(key[t] for t in b)), nz)
            if not lin:
                break
            factors.append(lin)
        else:
            for terms in cartesian(*factors):
                k = tuple(sorted(t[0] for t in terms))
                c = mu
                for t in terms:
                    c *= t[1]
                out[k] = out.get(k, 0.0) + c
    return out


def diagonal_removed(key: Sequence[NLM], nz: int) -> Dict[Tuple[NLM, ...], float]:
    """pure2b: 𝐀_key − A[Π_t φ_{k_t}] (the fully diagonal, one-neighbour part removed) for order ≥ 2."""
    out: Dict[Tuple[NLM, ...], float] = {tuple(sorted(key)): 1.0}
    if len(key) >= 2:
        for kappa, c in linearise(key, nz).items():
            out[(kappa,)] = out.get((kappa,), 0.0) - c
    return out


# ---------------------------------------------------------------------------------------------------------
# merged coupling C_p = C·P

def _decode(col: int, n_y: int) -> NLM:
    n, lm = divmod(int(col), n_y)
    l = math.isqrt(lm)
    return (n + 1, l, lm - l * l - l)


class Purification:
    """Unscaled purified coupling values and the index data to rescale them (plain arrays, no torch state)."""

    def __init__(self, vals0: np.ndarray, b_nl: np.ndarray, aa_nl: np.ndarray, n_l: int):
        self.vals0 = vals0    # [nnz] C_p for unit one-particle scales
        self.b_nl = b_nl      # [nnz, ν] flat (n-1)·n_l + l of the B row's multiset, -1 = padding
        self.aa_nl = aa_nl    # [nnz, ν] the same for the AA column's factors
        self.n_l = n_l

    def apply_scale(self, nl_scale: torch.Tensor, vals: torch.Tensor) -> None:
        """vals ← vals0 · Π s(B multiset) / Π s(AA factors), s = ``nl_scale`` [max_n, max_l+1]."""
        if nl_scale.shape[-1] != self.n_l:  # the flat (n-1)·n_l + l indices assume this layout
            raise ValueError(f"nl_scale has {nl_scale.shape[-1]} l-columns, the purified coupling {self.n_l}")
        s = np.append(nl_scale.detach().cpu().to(torch.float64).numpy().reshape(-1), 1.0)
        if np.any(s == 0):
            raise ValueError("a purified model needs non-zero one-particle scales (nl_scale)")
        f = np.prod(s[self.b_nl], axis=1) / np.prod(s[self.aa_nl], axis=1)
        with torch.no_grad():
            vals.copy_(torch.from_numpy(self.vals0 * f).to(vals))


def purify_coupling(cs: Dict[str, object], n_y: int, nz: int, nl_of_b, mode: str,
                    min_max_l: int = 0) -> Dict[str, object]:
    """Replace the coupling of ``couple_spec`` output ``cs`` (A columns (n-1)·n_y + l² + m + l) by C·P.

    ``mode`` is "pure" (canonical expansion) or "pure2b" (diagonal removed).  Returns the same fields as
    ``couple_spec`` (``aa`` per order in the *extended* flat indexing with ``n_y_ext``), plus ``max_n``,
    ``max_l`` (extended one-particle range, ``max_l`` at least ``min_max_l``: the embedding's l range) and
    ``purification`` (for ``apply_scale``).
    """
    import scipy.sparse as sp

    expand = canonical_expansion if mode == "pure" else diagonal_removed
    old_keys = [tuple(_decode(c, n_y) for c in row) for block in cs["aa"] for row in block]
    new_index: Dict[Tuple[NLM, ...], int] = {}
    pr, pc, pv = [], [], []
    for i, key in enumerate(old_keys):
        for k, c in expand(key, nz).items():
            j = new_index.setdefault(k, len(new_index))
            pr.append(i)
            pc.append(j)
            pv.append(c)
    P = sp.csr_matrix((pv, (pr, pc)), shape=(len(old_keys), len(new_index)))
    C = sp.csr_matrix((cs["vals"], (cs["rows"], cs["cols"])), shape=(cs["n_b"], len(old_keys)))
    Cp = (C @ P).tocoo()
    rowmax = np.zeros(cs["n_b"])
    np.maximum.at(rowmax, Cp.row, np.abs(Cp.data))
    keep = np.abs(Cp.data) > _DROP_TOL * rowmax[Cp.row]
    rows, cols, vals = Cp.row[keep], Cp.col[keep], Cp.data[keep]

    # the AA entries in use, renumbered order by order (ProductBasis wants orders contiguous)
    keys = list(new_index)
    used = np.unique(cols)
    used_keys = sorted((keys[j] for j in used), key=lambda k: (len(k), k))
    max_n = max(n for k in used_keys for n, _, _ in k)
    max_l = max(min_max_l, max(l for k in used_keys for _, l, _ in k))
    n_y_ext = (max_l + 1) ** 2
    renum = {k: i for i, k in enumerate(used_keys)}
    cols = np.array([renum[keys[j]] for j in cols], dtype=np.int64)
    aa = []
    for nu in sorted({len(k) for k in used_keys}):
        block = [[(n - 1) * n_y_ext + l * l + m + l for n, l, m in k] for k in used_keys if len(k) == nu]
        aa.append(np.array(block, dtype=np.int64).reshape(len(block), nu))

    # scale bookkeeping (flat (n-1)·(max_l+1) + l, padded with -1 → scale 1)
    nu_max = max(max(len(t) for t in nl_of_b), max(len(k) for k in used_keys))
    n_l = max_l + 1
    b_nl = np.full((len(nl_of_b), nu_max), -1, dtype=np.int64)
    for q, t in enumerate(nl_of_b):
        b_nl[q, :len(t)] = [(n - 1) * n_l + l for n, l in t]
    k_nl = np.full((len(used_keys), nu_max), -1, dtype=np.int64)
    for i, k in enumerate(used_keys):
        k_nl[i, :len(k)] = [(n - 1) * n_l + l for n, l, _ in k]
    order = np.lexsort((cols, rows))
    rows, cols, vals = rows[order].astype(np.int64), cols[order], vals[order]
    pur = Purification(vals.copy(), b_nl[rows], k_nl[cols], n_l)
    return dict(aa=aa, rows=rows, cols=cols, vals=vals, n_b=cs["n_b"], n_aa=len(used_keys),
                nl_of_b=nl_of_b, max_n=max_n, max_l=max_l, n_y=n_y_ext, purification=pur)


# ---------------------------------------------------------------------------------------------------------
# sampling for the Gram-matrix experiment (paper §3.1)

def sample_orthonormal_envs(model, n_envs: int, n_neigh: int, rng: np.random.Generator, centre: int = 0):
    """Environments of ``n_neigh`` neighbours of element ``model.elements[centre]`` (same species), each drawn
    from the measure μ in which the one-particle functions φ_nlm = R_n(x(r)) Y_lm(r̂) are orthonormal:
    x uniform on [-1, 1] (R_n are orthonormal in L²(dx)) and r̂ uniform on the sphere (paper §3.1).
    r = x⁻¹(x) by bisection on the model's own (monotone) Agnesi transform."""
    transform = model.embedding.radials.transform
    z = int(model.config.numbers[centre])
    zi = torch.full((n_envs * n_neigh,), centre, dtype=torch.long)
    target = torch.from_numpy(rng.uniform(-1.0, 1.0, n_envs * n_neigh))
    lo, hi = torch.zeros_like(target), torch.full_like(target, model.rcut)
    for _ in range(200):
        mid = 0.5 * (lo + hi)
        below = transform(mid, zi, zi) < target
        lo, hi = torch.where(below, mid, lo), torch.where(below, hi, mid)
        if float((hi - lo).max()) < 1e-14 * model.rcut:
            break
    r = (0.5 * (lo + hi)).numpy().reshape(n_envs, n_neigh)
    d = rng.standard_normal((n_envs, n_neigh, 3))
    d /= np.linalg.norm(d, axis=-1, keepdims=True)
    return [(z, np.full(n_neigh, z), d[e] * r[e][:, None]) for e in range(n_envs)]
