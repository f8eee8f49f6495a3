"""One-particle and product (AA) specifications, ACEpotentials.jl v0.10 ``ace1_model`` conventions.

The one-particle basis is phi_{n l m}(r_ij) = R_n(r_ij; z_i, z_j) Y_l^m(r̂_ij) with the neighbour
species interleaved into the radial index: n = k·NZ + s + 1 (k = polynomial degree, s = species
index of the neighbour, NZ = number of elements), so n >= 1 and ``level(n, l) = n/NZ + wL·l``
(ACEpotentials.jl paper, §II.B, "total degree").  A product (n_t, l_t)_{t=1..ν} is kept when
Σ_t level(n_t, l_t) <= totaldegree[ν], Σ_t l_t is even (reflection invariance), its l's can couple to a
rotation invariant (each l_t <= the sum of the others: the "polygon" condition, which for ν = 1 means l = 0
and for ν = 2 l_1 = l_2; a product that fails it has no invariant, ``generalised_cg``) and, for ν = 1,
l = 0.  The polygon condition bounds the harmonic degree: 2·l_t <= Σ l and Σ wL·l <= totaldegree[ν] − ν/NZ,
so l <= (totaldegree[ν] − ν/NZ) / (2·wL) (``max_coupled_l``), half of what one factor alone could take.
Products are multisets: the tuple is stored sorted, which is what makes the AA basis symmetric under
permutations of equal one-particle indices.
"""
from __future__ import annotations

import math
import os
from dataclasses import dataclass
from typing import List, Optional, Sequence, Tuple

NL = Tuple[int, int]  # one-particle index (n, l), n >= 1

# Levels are compared with a tolerance because n/NZ and wL·l are not exact in binary.
_LEVEL_TOL = 1e-9
# the real spherical harmonics and their coupling go up to l = 12 (e3nn's implementation)
MAX_L = 12
# product (AA) multisets at most (the ACEpotentials.jl paper's largest bases have ~10^4-10^5; 3·10^5 products
# take ~20 s to build and give ~10^6 basis functions, beyond any linear fit); larger requests are refused
# before enumerating them (``estimate_products``: a count, milliseconds), not after.  Override with the
# environment variable TORCHACE_MAX_PRODUCTS.
DEFAULT_MAX_PRODUCTS = 300_000
# radial polynomial degree at most this (n/NZ <= totaldegree: the pair basis has ceil(totaldegree) polynomials,
# the many-body radials totaldegree); typical fits use 10-30
MAX_RADIAL_DEGREE = 1000


def max_products() -> int:
    text = os.environ.get("TORCHACE_MAX_PRODUCTS")
    if text is None:
        return DEFAULT_MAX_PRODUCTS
    try:
        value = int(text)
    except ValueError:
        value = 0
    if value < 1:
        raise ValueError(f"the environment variable TORCHACE_MAX_PRODUCTS must be a positive integer, got {text!r}")
    return value


def totaldegree_per_order(order: int, totaldegree) -> List[float]:
    """Normalise ``totaldegree`` (a number or one value per correlation order) to a list of length ``order``."""
    if order < 1:
        raise ValueError(f"order must be >= 1, got {order}")
    if isinstance(totaldegree, (int, float)):
        degs = [float(totaldegree)] * order
    else:
        degs = [float(d) for d in totaldegree]
        if len(degs) != order:
            raise ValueError(
                f"totaldegree has {len(degs)} entries but order is {order}: give a number or one value per order"
            )
    if any(not math.isfinite(d) or d <= 0 for d in degs):
        raise ValueError(f"totaldegree must be positive and finite, got {degs}")
    return degs


def level(nl: NL, nz: int, wL: float) -> float:
    n, l = nl
    return n / nz + wL * l


@dataclass(frozen=True)
class ProductSpec:
    """The many-body specification of one centre element (identical for every centre)."""

    nz: int
    wL: float
    degrees: Tuple[float, ...]
    max_n: int  # largest radial index n (so n = 1..max_n)
    max_l: int
    nl_tuples: Tuple[Tuple[NL, ...], ...]  # sorted multisets, grouped by order

    @property
    def order(self) -> int:
        return len(self.degrees)

    @property
    def max_degree(self) -> int:
        """Largest radial polynomial degree k (R uses P_0 .. P_max_degree)."""
        return (self.max_n - 1) // self.nz


def max_coupled_l(nz: int, wL: float, degrees: Sequence[float]) -> int:
    """The largest l of a one-particle function in any kept product: max over the orders ν >= 2 of
    floor((totaldegree[ν] − ν/NZ) / (2·wL)).  A kept product couples to an invariant, so its largest l is at
    most the sum of the others' (module docstring): 2·l_max <= Σ l <= (totaldegree[ν] − Σ n_t/NZ) / wL with
    n_t >= 1; the bound is reached by (1, l), (1, l), (1, 0), ... .  0 for order 1 (l = 0 only)."""
    best = 0
    for nu, d in enumerate(degrees[1:], start=2):
        # min(): a subnormal wL would make the bound inf, which floor cannot take
        best = max(best, math.floor(min((d - nu / nz) / (2 * wL), 1e18) + _LEVEL_TOL))
    return best


def one_particle_spec(nz: int, wL: float, degrees: Sequence[float]) -> List[NL]:
    """All (n, l) that can appear in some kept product, ordered by (n, l).  For l > 0 the cheapest partners
    are one (1, l) (the polygon condition needs Σ of the others' l >= l) and ν − 2 of (1, 0): (n, l) is
    needed if n/NZ + 2·wL·l + (ν − 1)/NZ <= totaldegree[ν] for some order ν >= 2."""
    dmax = max(degrees)
    out = []
    n = 1
    while n / nz <= dmax + _LEVEL_TOL:
        out.append((n, 0))
        l = 1
        while any(n / nz + 2 * wL * l + (nu - 1) / nz <= d + _LEVEL_TOL for nu, d in enumerate(degrees[1:], start=2)):
            out.append((n, l))
            l += 1
        n += 1
    return out


def check_size(nz: int, wL: float, degrees: Sequence[float], order: Optional[int] = None) -> None:
    """Refuse, before any enumeration, parameters whose harmonic degree exceeds ``MAX_L`` (a tiny wL or a
    large totaldegree), with the numbers: l_max = ``max_coupled_l``, the largest l a kept product holds; whose radial
    degree exceeds ``MAX_RADIAL_DEGREE``; or whose correlation order exceeds what any product can hold (each
    factor has level >= 1/NZ)."""
    if not (wL > 0 and math.isfinite(wL)):
        raise ValueError(f"wL must be a positive finite number, got {wL!r}")
    dmax = max(degrees)
    if dmax > MAX_RADIAL_DEGREE:
        raise ValueError(f"totaldegree {dmax:g} asks for radial polynomials up to degree {math.floor(dmax):,} "
                         f"({math.floor(dmax * nz):,} radial functions per l, a pair basis of {math.ceil(dmax):,} "
                         f"per element pair); the radial basis is limited to degree {MAX_RADIAL_DEGREE}: lower "
                         "totaldegree")
    l_max = max_coupled_l(nz, wL, degrees)
    if l_max > MAX_L:
        # the order that needs the largest l, and the wL that would bring it down to MAX_L
        nu, d = max(enumerate(degrees[1:], start=2), key=lambda t: (t[1] - t[0] / nz))
        raise ValueError(f"totaldegree {d:g} at order {nu} with wL = {wL:g} and {nz} element(s) keeps products "
                         f"with spherical harmonics up to l = {l_max} (l <= (totaldegree − order/NZ) / (2·wL)); "
                         f"they are implemented up to l = {MAX_L}: lower totaldegree or raise wL "
                         f"(wL >= {(d - nu / nz) / (2 * MAX_L):.3g} here)")
    if order is not None:
        if dmax * nz < 1.0 - _LEVEL_TOL:
            raise ValueError(f"totaldegree {list(degrees)} leaves no basis functions: the smallest one-particle "
                             f"level is 1/NZ = {1.0 / nz:g} (n = 1, l = 0)")
        most = math.floor(dmax * nz + _LEVEL_TOL)  # factors of level >= 1/NZ that fit in the largest degree
        if order > max(most, 1):
            raise ValueError(f"order {order} is more than any product can have: each one-particle function has "
                             f"level >= 1/NZ = {1.0 / nz:g}, so totaldegree {dmax:g} allows at most {most} "
                             f"factor(s); lower order to {max(most, 1)} or less")


def estimate_products(nz: int, wL: float, degrees: Sequence[float], onep: Sequence[NL], cap: int) -> int:
    """A lower bound on the number of product functions, counted without enumerating them (multisets of
    one-particle functions by level budget, Σl even and the polygon condition, on a grid of 1/(16·NZ) with
    levels rounded up: every multiset counted is kept); 0 when a quick upper bound already shows that there
    are at most ``cap``."""
    if sum(math.comb(len(onep) + nu - 1, nu) for nu in range(1, len(degrees) + 1)) <= cap:
        return 0
    import numpy as np

    h = 1.0 / (16 * nz)
    units = [math.ceil(level(nl, nz, wL) / h - 1e-6) for nl in onep]
    nb = int(math.floor(max(degrees) / h + 1e-6)) + 1
    order = len(degrees)
    # Σl states: exact 0..L (the polygon test compares Σl of the others with an l <= L), then Σl > L by parity
    L = max(l for _, l in onep)
    S = L + 3

    def state(x: int) -> int:
        return x if x <= L else L + 1 + x % 2

    def transition(l: int) -> np.ndarray:  # [S, S]: the Σl state after adding a function of this l
        T = np.zeros((S, S))
        for x in range(L + 1):
            T[x, state(x + l)] = 1.0
        for p in (0, 1):
            T[L + 1 + p, L + 1 + (p + l) % 2] = 1.0
        return T

    moves = {l: transition(l) for l in {l for _, l in onep}}
    # dp[c, b, s]: multisets of c functions with Σ units = b and Σl state s; float: counts can be huge
    dp = np.zeros((order + 1, nb, S))
    dp[0, 0, 0] = 1.0
    for u, (_, l) in zip(units, onep):
        if u >= nb:
            continue
        for c in range(1, order + 1):  # ascending c: the same function may be used again (multisets)
            dp[c, u:] += dp[c - 1, : nb - u] @ moves[l]
    # cumulative over the budget axis: dp_le[c, b, s] = multisets with Σ units <= b
    dp_le = np.cumsum(dp, axis=1)
    total = 0.0
    for nu in range(2, order + 1):
        budget = int(math.floor(degrees[nu - 1] / h + 1e-6))
        total += dp_le[nu, budget, 0:L + 1:2].sum() + dp_le[nu, budget, L + 1]
        # minus those that fail the polygon condition: one factor f with l_f > Σl of the other ν − 1
        # (unique, and distinct from them), Σl even
        for u, (_, l) in zip(units, onep):
            if u <= budget and l > 0:
                total -= dp_le[nu - 1, budget - u, l % 2:l:2].sum()
    return int(min(max(total, 0.0), 1e18))


def product_spec(nz: int, order: int, totaldegree, wL: float = 1.5) -> ProductSpec:
    """Enumerate the sorted (n, l) multisets of every correlation order 1..order."""
    degrees = totaldegree_per_order(order, totaldegree)
    check_size(nz, wL, degrees)
    cap = max_products()
    onep = one_particle_spec(nz, wL, degrees)
    if not onep:
        raise ValueError(f"totaldegree {list(degrees)} leaves no basis functions: the smallest one-particle level is "
                         f"1/NZ = {1.0 / nz:g} (n = 1, l = 0)")
    check_size(nz, wL, degrees, order)
    n_est = estimate_products(nz, wL, degrees, onep, cap)
    if n_est > cap:
        raise ValueError(f"order {order}, totaldegree {list(degrees)} (wL {wL:g}, {nz} element(s)) has more than "
                         f"{cap:,} product functions (at least {n_est:,}, counted); refusing before enumerating them "
                         "(lower totaldegree or order; TORCHACE_MAX_PRODUCTS raises the limit)")
    levels = [level(nl, nz, wL) for nl in onep]
    min_level = min(levels)
    tuples: List[Tuple[NL, ...]] = []

    def extend(prefix: List[int], budget: float, remaining: int, lsum: int, lmax: int):
        # indices are non-decreasing so each multiset is produced once
        start = prefix[-1] if prefix else 0
        for a in range(start, len(onep)):
            lev = levels[a]
            if lev > budget + _LEVEL_TOL:
                continue
            # the other (remaining - 1) factors need at least min_level each
            if lev + (remaining - 1) * min_level > budget + _LEVEL_TOL:
                continue
            new = prefix + [a]
            l = onep[a][1]
            if remaining == 1:
                # reflection invariance (Σl even) and an invariant coupling (largest l <= sum of the others)
                if (lsum + l) % 2 == 0 and 2 * max(lmax, l) <= lsum + l:
                    tuples.append(tuple(onep[i] for i in new))
                    if len(tuples) > cap:
                        raise ValueError(f"order {order}, totaldegree {list(degrees)} (wL {wL:g}, {nz} element(s)) "
                                         f"has more than {cap:,} product functions; refusing before the coupling "
                                         "work (lower totaldegree or order; TORCHACE_MAX_PRODUCTS raises the limit)")
            else:
                extend(new, budget - lev, remaining - 1, lsum + l, max(lmax, l))

    for nu in range(1, order + 1):
        before = len(tuples)
        if nu == 1:
            tuples.extend(((nl,) for nl in onep if nl[1] == 0 and level(nl, nz, wL) <= degrees[0] + _LEVEL_TOL))
        else:
            extend([], degrees[nu - 1], nu, 0, 0)
        block = tuples[before:]
        # deterministic column order: by total level, then lexicographically
        block.sort(key=lambda t: (round(sum(level(nl, nz, wL) for nl in t), 9), t))
        tuples[before:] = block

    used = {nl for t in tuples for nl in t}
    if not used:
        raise ValueError(f"totaldegree {list(degrees)} leaves no basis functions")
    max_n = max(n for n, _ in used)
    max_l = max(l for _, l in used)
    return ProductSpec(nz=nz, wL=float(wL), degrees=tuple(degrees), max_n=max_n, max_l=max_l,
                       nl_tuples=tuple(tuples))


def pair_degree(totaldegree, order: int) -> int:
    """Number of pair-basis polynomials per element pair: degrees 0 .. ceil(max totaldegree) - 1."""
    return int(math.ceil(max(totaldegree_per_order(order, totaldegree)) - _LEVEL_TOL))
