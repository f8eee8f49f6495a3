"""The C-tilde functions of a torchace model: its many-body energy in ML-PACE's form (``write_yace``).

ML-PACE (Lysogorskiy et al., npj Comput. Mater. 7, 97 (2021), eqs. 5–9; Drautz, PRB 99, 014104 (2019),
eq. 25) evaluates E_i − E0 = Σ_f c̃_f A1 + Σ_{f rank ≥ 2} Σ_{m ∈ ms_combs(f)} c̃_{f,m} Re Π_t A_{μ_t n_t l_t m_t}
on complex spherical harmonics (√(4π) × orthonormal, Condon–Shortley phase).  torchace's energy is
Σ_k (c·C)_{z_i k} AA_k with AA_k a product of e3nn real A's.  Each real Y_lm is a fixed combination of the
complex Y_l^μ within its l (``real_to_complex_matrices``: fitted once from sample directions, residual
checked), so each AA expands into complex monomials; monomials with the same multiset of (μ_j, n, l, μ) are
collected, those with Σμ ≠ 0 cancel (rotation invariance, checked), μ and −μ are merged (Re P(−μ) = Re P(μ)
when Σμ = 0), and the coefficients are real because every torchace invariant has even Σl (checked)
(``ctilde_functions``).  Rank-1 terms are re-expressed on g_k, ML-PACE's A1 (``rank1_in_radial_base``);
``channel_usage`` lists the (n, l) channels the functions use (the lean export writes only those).
"""
from __future__ import annotations

import math
from collections import defaultdict
from typing import Dict, List, Optional, Tuple

import numpy as np
import torch


_CONVENTION_TOL = 1e-10         # relative size of terms that must vanish exactly (Σμ ≠ 0, Im c̃)
_DROP_TOL = 1e-14               # relative size of c̃ treated as rounding noise of an exact zero


# ---------------------------------------------------------------- spherical harmonics conventions


def complex_sph(l: int, vec: np.ndarray) -> np.ndarray:
    """ML-PACE's complex spherical harmonics: √(4π)·Y_l^μ(r̂) with Y_l^μ orthonormal in the Condon–Shortley
    convention, μ = −l..l: [P, 2l + 1].  (ML-PACE's Y_0^0 is 1: ``ace_spherical_cart.cpp`` starts the
    recurrence from P_0^0 = 1; measured against pyace, a rank-1/2/3 function of l = 0 comes out
    (4π)^{ν/2} times the orthonormal value.)"""
    vec = np.asarray(vec, dtype=np.float64)
    r = np.linalg.norm(vec, axis=-1)
    ct = vec[:, 2] / r
    st = np.sqrt(np.clip(1.0 - ct * ct, 0.0, None))
    phi = np.arctan2(vec[:, 1], vec[:, 0])
    out = np.zeros((vec.shape[0], 2 * l + 1), dtype=np.complex128)
    for m in range(l + 1):
        # associated Legendre P_l^m(cos θ) with the (−1)^m phase, by upward recurrence in l
        pmm = np.ones_like(ct)
        for k in range(1, m + 1):
            pmm = -pmm * (2 * k - 1) * st
        if l == m:
            plm = pmm
        else:
            p_prev, p = pmm, ct * (2 * m + 1) * pmm
            for ll in range(m + 2, l + 1):
                p_prev, p = p, ((2 * ll - 1) * ct * p - (ll + m - 1) * p_prev) / (ll - m)
            plm = p
        norm = math.sqrt((2 * l + 1) * math.factorial(l - m) / math.factorial(l + m))
        y = norm * plm * np.exp(1j * m * phi)
        out[:, l + m] = y
        if m > 0:
            out[:, l - m] = (-1) ** m * np.conj(y)
    return out


def real_to_complex_matrices(sh, max_l: int, seed: int = 0) -> List[np.ndarray]:
    """W_l [2l+1 (μ), 2l+1 (real m)] with Y^real_{lm}(r̂) = Σ_μ W_l[μ, m] Y_l^μ(r̂) for the module ``sh``
    (torchace's e3nn spherical harmonics).  Fitted by least squares on sample directions; raises if the
    real functions are not in the span (a normalisation or convention mismatch)."""
    rng = np.random.default_rng(seed)
    vec = rng.normal(size=(64 * (max_l + 1), 3))
    with torch.no_grad():
        y_real = sh(torch.from_numpy(vec)).numpy()
    out = []
    for l in range(max_l + 1):
        yc = complex_sph(l, vec)
        yr = y_real[:, l * l:(l + 1) ** 2].astype(np.complex128)
        W, *_ = np.linalg.lstsq(yc, yr, rcond=None)
        res = np.abs(yc @ W - yr).max()
        if res > 1e-11:
            raise RuntimeError(f"e3nn real spherical harmonics of degree {l} are not a unitary combination "
                               f"of the complex ones (residual {res:.2e}): convention mismatch")
        out.append(W)
    return out


# ---------------------------------------------------------------- C-tilde coefficients


def ctilde_functions(model, coefficients: Optional[torch.Tensor] = None, fold_scale: bool = True) -> List[List[dict]]:
    """Per centre element: the C-tilde functions {mus, ns, ls, ms_combs, ctildes} of the many-body energy.

    ``coefficients`` [P, NZ, n_b]: the B coefficients of P densities (default: the linear model's c, P = 1);
    ``ctildes`` then holds P numbers per m-combination (ML-PACE's order, m-combination major).
    ``fold_scale``: fold the per-(n, l) basis scale into c̃ (False when it is inside learned radials)."""
    nz = model.nz
    n_y = model.embedding.n_y
    cols = model.embedding.cols.cpu().numpy()
    n_a = model.embedding.n_a
    idx = model.product.idx.cpu().numpy()
    nl_scale = model.embedding.nl_scale.detach().cpu().numpy()
    with torch.no_grad():
        if coefficients is None:
            coefficients = model.coefficients.detach()[: model.n_manybody].view(1, nz, model.n_b)
        # [P, NZ, n_aa]
        c_aa = np.stack([model.coupling.transpose_apply(c).cpu().numpy() for c in coefficients.detach()])
    P = c_aa.shape[0]
    W = real_to_complex_matrices(model.embedding.sh, model.embedding.max_l)

    # one-particle function a -> (μ_j, n (1-based, PACE), l, real m index 0..2l) and its (n, l) scale
    n_t = cols // n_y                     # torchace n - 1
    lm = cols % n_y
    l_t = np.floor(np.sqrt(lm)).astype(np.int64)
    m_t = lm - l_t * l_t
    factor_of = [((int(n) % nz), int(n) // nz + 1, int(l), int(m)) for n, l, m in zip(n_t, l_t, m_t)]
    scale_of = nl_scale[n_t, l_t] if fold_scale else np.ones(n_t.shape)

    # group AA rows by the multiset of (μ_j, n, l): one PACE function per group and centre element
    groups: Dict[tuple, List[Tuple[int, Tuple[int, ...]]]] = defaultdict(list)
    for k in range(idx.shape[0]):
        fac = sorted(factor_of[a] for a in idx[k] if a != n_a)
        if not fac:
            raise ValueError("constant product basis function: not representable in .yace (use E0)")
        key = tuple(f[:3] for f in fac)
        groups[key].append((k, tuple(f[3] for f in fac)))
        # (μ, n, l) sorted together with m keeps the key order of each row's factors

    funcs: List[List[dict]] = [[] for _ in range(nz)]
    for key, rows in groups.items():
        ls = [g[2] for g in key]
        dims = [2 * l + 1 for l in ls]
        T = np.zeros((P, nz) + tuple(dims), dtype=np.complex128)
        for k, ms in rows:
            scale = float(np.prod([scale_of[a] for a in idx[k] if a != n_a]))
            t = np.ones((), dtype=np.complex128)
            for l, m in zip(ls, ms):
                t = np.multiply.outer(t, W[l][:, m])
            T += c_aa[:, :, k].reshape((P, nz) + (1,) * len(ls)) * scale * t
        # runs of equal (μ, n, l): permuting their μ's gives the same monomial
        runs = []
        start = 0
        for t in range(1, len(key) + 1):
            if t == len(key) or key[t] != key[start]:
                runs.append((start, t))
                start = t

        def canon(mu):
            mu = list(mu)
            for s, e in runs:
                mu[s:e] = sorted(mu[s:e])
            return tuple(mu)

        tmax = np.abs(T).reshape(P, -1).max(1)           # per density
        for z in range(nz):
            if not np.any(tmax > 0.0):
                continue
            acc: Dict[tuple, np.ndarray] = defaultdict(lambda: np.zeros(P, dtype=np.complex128))
            bad = np.zeros(P)
            for pos in zip(*np.nonzero(np.any(T[:, z] != 0, axis=0))):
                mu = tuple(int(p) - l for p, l in zip(pos, ls))
                acc[canon(mu)] += T[(slice(None), z) + pos]
            merged: Dict[tuple, np.ndarray] = {}
            for mu, v in acc.items():
                if sum(mu) != 0:
                    # must cancel once permutations of equal factors are collected (rotation invariance)
                    bad = np.maximum(bad, np.abs(v))
                    continue
                if np.any(np.abs(v.imag) > _CONVENTION_TOL * tmax):
                    raise RuntimeError(f"complex C-tilde coefficient {v} for (μ,n,l) {key}, m {mu}: "
                                       "convention mismatch")
                neg = canon(tuple(-x for x in mu))
                rep = max(mu, neg)
                merged[rep] = merged.get(rep, 0.0) + v.real
            if np.any(bad > _CONVENTION_TOL * tmax):
                raise RuntimeError(f"non-invariant complex monomials (Σm ≠ 0, size {bad.max():.2e}) for {key}: "
                                   "convention mismatch")
            ms_combs, ctildes = [], []
            for mu in sorted(merged):
                keep = np.abs(merged[mu]) > _DROP_TOL * tmax   # per density: rounding noise of an exact zero
                if keep.any():
                    ms_combs.extend(mu)
                    ctildes.extend(float(v) if k else 0.0 for v, k in zip(merged[mu], keep))
            if ctildes:
                funcs[z].append({"mu0": z, "rank": len(key), "mus": [g[0] for g in key], "ns": [g[1] for g in key],
                                 "ls": ls, "ms_combs": ms_combs, "ctildes": ctildes})
    for z in range(nz):
        funcs[z].sort(key=lambda f: (f["rank"], f["mus"], f["ns"], f["ls"]))
    return funcs


def channel_usage(funcs: List[List[dict]], nz: int) -> Dict[Tuple[int, int], Dict[int, int]]:
    """{(μ_i, μ_j): {l: largest n}} of the (n, l) channels R^{μ_i μ_j}_{nl} that the rank ≥ 2 functions use
    (rank-1 functions use the radial base g_k itself, not R_nl)."""
    use: Dict[Tuple[int, int], Dict[int, int]] = {(a, b): {} for a in range(nz) for b in range(nz)}
    for z, fz in enumerate(funcs):
        for f in fz:
            if f["rank"] < 2:
                continue
            for mu, n, l in zip(f["mus"], f["ns"], f["ls"]):
                d = use[(z, mu)]
                d[l] = max(d.get(l, 0), n)
    return use


def rank1_in_radial_base(funcs: List[List[dict]], crad: Dict[Tuple[int, int], np.ndarray], nradbase: int,
                         P: int = 1) -> None:
    """ML-PACE's rank-1 functions use the radial base g_k itself (A_rank1 = Σ_j g_k(r_ij) Y00), not the
    combinations R_n = Σ_k crad[n, k] g_k (crad[n, l = 0, k] for learned radials): re-express Σ_n c_n A_{n00}
    on the g_k, for each of the P densities (in place)."""
    for z, fz in enumerate(funcs):
        acc: Dict[int, np.ndarray] = {}
        rest = []
        for f in fz:
            if f["rank"] != 1:
                rest.append(f)
                continue
            b, n = f["mus"][0], f["ns"][0]
            M = crad[(z, b)]
            acc.setdefault(b, np.zeros((P, nradbase)))
            acc[b] += np.asarray(f["ctildes"])[:, None] * (M[n - 1] if M.ndim == 2 else M[n - 1, 0])
        rank1 = []
        for b in sorted(acc):
            for k in range(nradbase):
                if np.any(acc[b][:, k] != 0.0):
                    rank1.append({"mu0": z, "rank": 1, "mus": [b], "ns": [k + 1], "ls": [0], "ms_combs": [0],
                                  "ctildes": [float(v) for v in acc[b][:, k]]})
        fz[:] = rank1 + rest
