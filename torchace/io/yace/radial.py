"""Radial functions of a ``.yace`` export: torchace's R_n written in one of ML-PACE's parametric radial bases.

python-ace 0.4 / released ML-PACE read only their own parametric bases (and the old ACE1.jl polynomial basis);
torchace's radials P_k(x(r))·env(x(r)) (Agnesi transform, docs/conventions.md) are analytic on [0, rcut] and
vanish at rcut, so they are expanded in

* ``ChebPow`` with λ = 1: g_k(r) = (1 − T_k(2r/rcut − 1))/2, k = 1..K (the polynomials of degree ≤ K in r
  that vanish at rcut), or
* ``ChebExpCos`` with λ > 0 and dcut = 0: g_0 = env, g_k = (1 − T_k(x))/2·env (k = 1..K−1),
  x = 1 − 2 (e^{−λr/rcut} − e^{−λ})/(1 − e^{−λ}), env = (1 + cos(πr/rcut))/2 (ML-PACE ``chebExpCos``; with
  dcut = 0 its outer taper is never active).

``crad`` is a least-squares fit at Chebyshev points of the base's own variable; the error in R and dR/dr,
relative to each function's maximum, is checked on a fine grid.  The Agnesi transform has complex poles near
[0, rcut], so K is large either way (60–110); the exponential variable of ``ChebExpCos`` (λ ≈ 2–3) needs
15–20 % fewer functions than ``ChebPow`` for the same error (docs/yace.md).

``fit_radial_coefficients(lean=True)`` takes the smallest K (any integer) of the candidate bases
``LEAN_BASES`` that meets ``tol`` on [``RADIAL_CHECK_RMIN``, rcut]; ``lean=False`` is the original choice
(``ChebPow``, K a multiple of 10, checked on [0, rcut]).

Learned radials (``learnable_radials=True``, ``radial_weights`` = W·s [NZ, NZ, n_poly, max_l + 1, n_poly]): the
fitted functions are R_nl = Σ_k (W·s)[μ_i, μ_j, n, l, k] P_k·env themselves, one per (n, l), and ``tol`` is
checked on them (relative to each R_nl's maximum); crad is then [n_poly, max_l + 1, K].
"""
from __future__ import annotations

from typing import Dict, NamedTuple, Optional, Tuple

import numpy as np
import torch

LEAN_BASES = (("ChebExpCos", 2.0), ("ChebExpCos", 2.5), ("ChebExpCos", 3.0), ("ChebPow", 1.0))
RADIAL_CHECK_RMIN = 0.1    # Å: lean fits are checked on [0.1 Å, rcut] (no physical pair is closer; ML-PACE's
#                            tables start at deltaSplineBins); the fit points still cover [0, rcut]
_K_MIN = 8


class RadialFit(NamedTuple):
    nradbase: int
    crad: Dict[Tuple[int, int], np.ndarray]     # (μ_i, μ_j) -> [n_poly, nradbase] ([n_poly, n_l, nradbase])
    error: float
    radbasename: str
    lam: float


def _chebyshev_tu(x: np.ndarray, K: int) -> Tuple[np.ndarray, np.ndarray]:
    """T_0..T_K and T_0'..T_K' (T_k' = k U_{k−1}, by recurrences exact at x = ±1): two [P, K + 1] arrays."""
    T = np.polynomial.chebyshev.chebvander(x, K)
    U = np.zeros((x.shape[0], K + 1))
    U[:, 0] = 1.0
    if K > 0:
        U[:, 1] = 2.0 * x
    for k in range(2, K + 1):
        U[:, k] = 2.0 * x * U[:, k - 1] - U[:, k - 2]
    dT = np.zeros_like(T)
    dT[:, 1:] = U[:, :K] * np.arange(1, K + 1)
    return T, dT


def chebpow_basis(r: np.ndarray, rcut: float, nradbase: int) -> Tuple[np.ndarray, np.ndarray]:
    """ML-PACE's ``ChebPow`` radial base with λ = 1 (``ace_radial.cpp``): g_k(r) = (1 − T_k(x))/2,
    x = 1 − 2(1 − r/rcut)^λ = 2r/rcut − 1, k = 1..nradbase.  Returns (g [P, nradbase], dg/dr [P, nradbase])."""
    x = 2.0 * np.asarray(r, dtype=np.float64) / rcut - 1.0
    T, dT = _chebyshev_tu(x, nradbase)
    return 0.5 - 0.5 * T[:, 1:], -0.5 * dT[:, 1:] * (2.0 / rcut)


def chebexpcos_basis(r: np.ndarray, rcut: float, nradbase: int, lam: float) -> Tuple[np.ndarray, np.ndarray]:
    """ML-PACE's ``ChebExpCos`` radial base with dcut = 0: g_0 = env, g_k = (1 − T_k(x))/2·env, k = 1..K−1,
    x = 1 − 2 (e^{−λr/rc} − e^{−λ})/(1 − e^{−λ}), env = (1 + cos(πr/rc))/2.  (g [P, K], dg/dr [P, K])."""
    r = np.asarray(r, dtype=np.float64)
    y1, y2 = np.exp(-lam * r / rcut), np.exp(-lam)
    x = 1.0 - 2.0 * (y1 - y2) / (1.0 - y2)
    dx = 2.0 * (lam / rcut) * y1 / (1.0 - y2)
    T, dT = _chebyshev_tu(x, max(nradbase - 1, 1))
    h = np.concatenate([T[:, :1], 0.5 - 0.5 * T[:, 1:nradbase]], axis=1)
    dh = np.concatenate([np.zeros_like(x)[:, None], -0.5 * dT[:, 1:nradbase]], axis=1) * dx[:, None]
    env = 0.5 * (1.0 + np.cos(np.pi * r / rcut))
    denv = -0.5 * np.pi / rcut * np.sin(np.pi * r / rcut)
    return h * env[:, None], dh * env[:, None] + h * denv[:, None]


def radial_base(name: str, lam: float, r: np.ndarray, rcut: float, nradbase: int) -> Tuple[np.ndarray, np.ndarray]:
    if name == "ChebPow":
        if lam != 1.0:
            raise ValueError("ChebPow is used with λ = 1 only")
        return chebpow_basis(r, rcut, nradbase)
    if name == "ChebExpCos":
        return chebexpcos_basis(r, rcut, nradbase, lam)
    raise ValueError(f"radial base {name!r} is not used by the export")


def _fit_points(name: str, lam: float, rcut: float, P: int) -> np.ndarray:
    """P Chebyshev points of the base's own variable x ∈ [−1, 1], as distances in [0, rcut]."""
    u = np.cos(np.pi * (np.arange(P) + 0.5) / P)
    if name == "ChebExpCos":
        y2 = np.exp(-lam)
        return -rcut / lam * np.log(y2 + 0.5 * (1.0 - u) * (1.0 - y2))
    return 0.5 * rcut * (1.0 + u)


def torchace_radials(model, r: np.ndarray, a: int, b: int) -> Tuple[np.ndarray, np.ndarray]:
    """torchace's many-body radials P_k(x_ab(r))·env for centre a, neighbour b, and their r-derivatives
    (autograd, exact): ([P, n_poly], [P, n_poly])."""
    radials = model.embedding.radials
    nz = model.nz
    rr = torch.tensor(np.asarray(r, dtype=np.float64), requires_grad=True)
    R = radials(rr, torch.full(rr.shape, a, dtype=torch.long), torch.full(rr.shape, b, dtype=torch.long))[:, b::nz]
    ders = [torch.autograd.grad(R[:, k].sum(), rr, retain_graph=True)[0].numpy() for k in range(R.shape[1])]
    return R.detach().numpy(), np.stack(ders, -1)


def radial_targets(model, r: np.ndarray, a: int, b: int, radial_weights: Optional[np.ndarray] = None
                   ) -> Tuple[np.ndarray, np.ndarray]:
    """The functions the export fits for centre a, neighbour b and their r-derivatives: torchace's P_k·env
    ([P, n_poly], ``torchace_radials``), or with ``radial_weights`` (W·s) the learned R_nl, column
    n·(max_l + 1) + l ([P, n_poly·(max_l + 1)])."""
    R, dR = torchace_radials(model, r, a, b)
    if radial_weights is None:
        return R, dR
    Wab = np.asarray(radial_weights[a, b], dtype=np.float64)
    Wab = Wab.reshape(Wab.shape[0] * Wab.shape[1], Wab.shape[2])     # [(n, l), k]
    return R @ Wab.T, dR @ Wab.T


def _errors(G, dG, M, R, dR):
    scale = np.abs(R).max(0)
    dscale = np.abs(dR).max(0)
    e = np.abs(G @ M - R).max(0) / np.where(scale > 0, scale, 1.0)
    de = np.abs(dG @ M - dR).max(0) / np.where(dscale > 0, dscale, 1.0)
    return max(float(e.max()), float(de.max()))


def _fitter(model, name, lam, kmax, targets, r_check, radial_weights=None):
    """fit(K) -> (crad, error) for K ≤ ``kmax`` functions of one base (base values computed once for kmax:
    g_k does not depend on K)."""
    rc = model.rcut
    r_fit = _fit_points(name, lam, rc, 4 * kmax + 40)
    G_fit, _ = radial_base(name, lam, r_fit, rc, kmax)
    G_chk, dG_chk = radial_base(name, lam, r_check, rc, kmax)
    # least squares for every K from one QR: the QR of the leading K columns is the leading block
    Q, Rq = np.linalg.qr(G_fit)
    proj = {ab: Q.T @ radial_targets(model, r_fit, *ab, radial_weights)[0] for ab in targets}  # [kmax, n_f]

    def fit(K):
        crad, err = {}, 0.0
        for ab, (R_chk, dR_chk) in targets.items():
            M = np.linalg.solve(Rq[:K, :K], proj[ab][:K])                         # [K, n_f]
            err = max(err, _errors(G_chk[:, :K], dG_chk[:, :K], M, R_chk, dR_chk))
            crad[ab] = M.T.copy() if radial_weights is None else M.T.reshape(radial_weights.shape[2:4] + (K,))
        return crad, err

    return fit


def fit_radial_coefficients(model, nradbase: Optional[int] = None, tol: float = 1e-11, max_nradbase: int = 160,
                            lean: bool = True, radial_weights: Optional[np.ndarray] = None) -> RadialFit:
    """crad[(μ_i, μ_j)] [n_poly, nradbase] with Σ_k crad[n, k] g_k(r) ≈ R_n^{μ_i μ_j}(r); with
    ``radial_weights`` (learned radials, W·s) crad[(μ_i, μ_j)] [n_poly, max_l + 1, nradbase] ≈ R_nl.

    ``lean``: the smallest K (and base of ``LEAN_BASES``) whose error in R and dR/dr, relative to each
    function's maximum on [``RADIAL_CHECK_RMIN``, rcut], is below ``tol``.  ``lean=False``: ``ChebPow``
    with K the smallest multiple of 10 (from 20) meeting ``tol`` on [0, rcut] (the original export).  A given
    ``nradbase`` is used as is (with ``ChebPow`` unless lean, then the lean base with the smallest error)."""
    rc = model.rcut
    nz = model.nz
    r_check = np.linspace(RADIAL_CHECK_RMIN if lean else 0.0, rc, 6001)
    targets = {(a, b): radial_targets(model, r_check, a, b, radial_weights) for a in range(nz) for b in range(nz)}
    bases = LEAN_BASES if lean else (("ChebPow", 1.0),)
    if nradbase is not None:
        best = None
        for name, lam in bases:
            crad, err = _fitter(model, name, lam, int(nradbase), targets, r_check, radial_weights)(int(nradbase))
            if best is None or err < best.error:
                best = RadialFit(int(nradbase), crad, err, name, lam)
        return best
    best, reached = None, np.inf
    for name, lam in bases:
        hi = max_nradbase if best is None else best.nradbase - 1
        if lean:
            coarse = list(range(_K_MIN, hi + 1, 4))
        else:
            coarse = list(range(20, hi + 1, 10))
        if not coarse:
            continue
        fit = _fitter(model, name, lam, hi, targets, r_check, radial_weights)
        found = None
        for K in coarse:
            crad, err = fit(K)
            reached = min(reached, err)
            if err <= tol:
                found = (K, crad, err)
                break
        if found is None:
            continue
        if lean:   # refine below the first coarse success
            for K in range(max(_K_MIN, found[0] - 3), found[0]):
                crad, err = fit(K)
                if err <= tol:
                    found = (K, crad, err)
                    break
        if best is None or found[0] < best.nradbase:
            best = RadialFit(found[0], found[1], found[2], name, lam)
    if best is None:
        raise RuntimeError(f"radial functions not reproduced to {tol:g} with up to {max_nradbase} radial base "
                           f"functions (reached {reached:.2e}); pass a larger tolerance or nradbase")
    return best
