"""Export a torchace model as an ML-PACE ``.yace`` file (LAMMPS ``pair_style pace``) plus a pair table.

Target: the C-tilde form evaluated by ML-PACE (Lysogorskiy et al., npj Comput. Mater. 7, 97 (2021),
eqs. 5–9; Drautz, PRB 99, 014104 (2019), eq. 25; ``ACECTildeEvaluator::compute_atom``): the site energy
of an atom of species μ_i is

    E_i = E0(μ_i) + Σ_{f rank 1} c̃_f A1_{μ_f k_f}
                  + Σ_{f rank ≥ 2} Σ_{m ∈ ms_combs(f)} c̃_{f,m} Re Π_t A_{μ_t n_t l_t m_t},
    A1_{μ k} = Σ_{j: μ_j = μ} g_k(r_ij) Y_0^0,
    A_{μ n l m} = Σ_{j: μ_j = μ} R^{μ_i μ_j}_{n l}(r_ij) Y_l^m(r̂_ij),
    R^{μ_i μ_j}_{n l}(r) = Σ_k crad[μ_i, μ_j, n, l, k] g_k(r),

with ML-PACE's complex spherical harmonics (√(4π) × orthonormal, Condon–Shortley phase; m < 0 filled
from A_{l,−m} = (−1)^m conj A_{lm}), a linear embedding (``FinnisSinclairShiftedScaled`` with parameters
[1, 1] is F(ρ) = ρ) and no hard-core repulsion (prehc = 0).  A ``NonlinearACEModel`` (embedding None or
"fs") is written with P densities (c̃ per density), its FS parameters and, with learned radials,
l-dependent crad (``yace_nonlinear``).

Mapping of a torchace model (docs/conventions.md):

* Radials.  python-ace 0.4 / released ML-PACE read only their own parametric radial bases (plus the
  old ACE1.jl polynomial basis, which has no Agnesi transform; the spline radials of ACEpotentials.jl's
  export need a patched ML-PACE).  torchace's radials are fitted in ``ChebExpCos`` (λ 2–3) or ``ChebPow``
  (λ = 1) by ``yace_radial.fit_radial_coefficients`` (the smallest K meeting ``radial_tol``; ``lean=False``:
  ``ChebPow``, K a multiple of 10, the original export).  torchace's radial index n = k·NZ + s_j + 1
  (species interleaving) becomes PACE's (μ_j = s_j, n = k + 1); the per-(n, l) basis scale of the priors
  is folded into c̃.  ML-PACE tabulates the radials as cubic Hermite splines with step
  ``deltaSplineBins``: that, not the fit, dominates the error (docs/yace.md).
* Channels.  ML-PACE evaluates nradbase + nradmax·(lmax + 1) radial splines per neighbour (maxima over the
  bonds).  Lean (default): R_nl is written only for n ≤ the largest n a rank ≥ 2 function uses with that
  (μ_i, μ_j, l) (zeros elsewhere), nradmax / lmax those of the used rectangle (``channel_usage``);
  ``lean=False`` writes every radial degree for every l ≤ the model's max_l.
* Products.  E_i − E0 = Σ_k (c·C)_{z_i k} AA_k with AA_k a product of e3nn real A's.  Each real Y_lm is
  a fixed combination of PACE's complex Y_l^μ within its l (fitted once from sample directions,
  residual checked), so each AA expands into complex monomials; monomials with the same multiset of
  (μ_j, n, l, μ) are collected, those with Σμ ≠ 0 cancel (rotation invariance, checked), μ and −μ are
  merged (Re P(−μ) = Re P(μ) when Σμ = 0), and the coefficients are real because every torchace
  invariant has even Σl (checked).  Rank-1 terms are re-expressed on g_k (ML-PACE's A1 uses g_k itself).
* E0 goes into the file's ``E0`` list (ML-PACE adds it to every site energy).
* Pair part and ZBL.  The C-tilde ``.yace`` has no pair term, so Σ_{i<j} U_{z_i z_j}(r_ij) with
  U_ab = Σ_k c_{abk} V_k(r; a, b) + Σ_k c_{bak} V_k(r; b, a) (+ the ZBL baseline) goes into a LAMMPS
  ``pair_style table`` file (``N``, ``R rlo rhi``, columns index r E F) to be overlaid,
  ``pair_style hybrid/overlay pace table spline N`` (the overlay ACE1pack / ACEpotentials.jl use for their pair part).
  ``evaluate_pair_table`` is the reference reading of that file (cubic Hermite in E, −F).  Below the
  exact range the table has a repulsive core (``pair_table.write_pair_table``), so close pairs do not stop
  LAMMPS.
* Which table.  A comment line ``# torchace pair table: "<file>"`` (or ``none``) in the .yace names the table
  (``yace_pair``), so that ``read_yace`` gives back the whole model, pair part included.
* LAMMPS input.  ``lammps_input`` builds the lines (absolute file names quoted by ``lammps_words.lammps_word``:
  names LAMMPS cannot read back are refused before anything is written; the element of each atom type in
  one ``variable`` line that every ``pair_coeff`` line reads), written as the include file ``<stem>.lammps``.
"""
from __future__ import annotations

import copy
import json
import math
import os
from collections import defaultdict
from typing import Dict, List, Optional, Tuple

import numpy as np
import torch

from ...atomic import check_output, text_output, write_outputs
from ...model.contract import capabilities
from ..lammps_words import lammps_word
from .pair_table import DEFAULT_PAIR_POINTS, DEFAULT_PAIR_RCORE, TABLE, pair_energy_functions, pair_table_text
from .pair import TORCHACE_HEADER, declaration
from .nonlinear import check_exportable, embedding_line, is_nonlinear, nonlinear_parts
from .radial import fit_radial_coefficients

DEFAULT_DELTA_SPLINE_BINS = 5e-4   # Å, ML-PACE's radial tabulation step (docs/yace.md: error against it)
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
        c_aa = np.stack([model.coupling.transpose_apply(c).cpu().numpy() for c in coefficients.detach()])  # [P, NZ, n_aa]
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


def _f(x: float) -> str:
    """A float as YAML 1.1 (PyYAML) and yaml-cpp read it: Python's repr with a '.' in the mantissa
    (PyYAML resolves ``1e-05`` as a string, ``1.0e-05`` as a float)."""
    t = repr(float(x))
    if "e" in t and "." not in t:
        m, e = t.split("e")
        t = f"{m}.0e{e}"
    return t


def _flow(xs, fmt=str) -> str:
    return "[" + ", ".join(fmt(x) for x in xs) + "]"


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


def _rank1_in_radial_base(funcs: List[List[dict]], crad: Dict[Tuple[int, int], np.ndarray], nradbase: int,
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


# The first lines of the .yace and of the LAMMPS include file: the markers of the output rule (torchace.atomic):
# an existing file is replaced only if it starts with the header of its kind (or with overwrite=True).
YACE_HEADER = TORCHACE_HEADER
INCLUDE_HEADER = "# LAMMPS input (units metal: eV, Å) for the torchace model exported to"
YACE = text_output(YACE_HEADER, "ML-PACE .yace written by torchace")
INCLUDE = text_output(INCLUDE_HEADER, "LAMMPS include file written by torchace")


def lammps_input(elements: List[str], yace: str, table: Optional[dict], table_path: Optional[str], rcut: float,
                 types: Optional[List[str]] = None) -> Tuple[List[str], List[str]]:
    """(commands, comments) of the LAMMPS input for an export; file names absolute.

    The element of LAMMPS atom type t is the index variable ``torchace_type<t>`` (default ``types``, i.e.
    the model's element order): the ``pace`` line and every ``table`` line read the element names from these
    variables, so a different type order is one edit of the variable lines (or ``lmp -var torchace_type1 Ge
    ...``) and cannot leave the two parts inconsistent; the table has a section for every ordered element pair."""
    types = list(elements if types is None else types)
    bad = [t for t in types if t not in elements]
    if bad or not types:
        raise ValueError(f"lammps_types {types}: each atom type needs one of the model's elements {elements}")
    var = [f"${{torchace_type{t + 1}}}" for t in range(len(types))]
    defs = [f"variable torchace_type{t + 1} index {e}" for t, e in enumerate(types)]
    order = ", ".join(f"type {t + 1} = {e}" for t, e in enumerate(types))
    yace_word = lammps_word(os.path.abspath(yace), "ML-PACE .yace file name")
    table_word = None if table_path is None else lammps_word(os.path.abspath(table_path), "LAMMPS pair table name")
    comments = [f"{INCLUDE_HEADER} {yace_word}",
                f"# Atom types: {order} (variables torchace_type1..{len(types)}).  For another type order change "
                "only the",
                "# variable lines (or run lmp -var torchace_type1 Ge ...): every pair_coeff line follows them.  "
                "Do not write",
                "# element names into single pair_coeff lines by hand; more types: re-export with lammps_types."]
    if table is None:
        cmds = ["pair_style pace", *defs, f"pair_coeff * * {yace_word} " + " ".join(var)]
        return cmds, comments + ["# The model has no pair part and no ZBL baseline: ML-PACE alone is the whole model."]
    comments += [
        "# The model is ML-PACE's many-body part + E0 (.yace) PLUS the pair part (pair basis, ZBL) in the table:",
        "# keep pair_style hybrid/overlay; 'pair_style pace' alone silently drops the pair part.",
        "# Per-atom energies (compute pe/atom): the table gives each atom of a pair half of the pair energy, torchace",
        "# gives atom i its own block U_{z_i z_j} of a mixed pair (docs/yace.md); totals, forces and stresses agree.",
        f"# Table: torchace's pair energy for {table['rmin']:g} <= r <= {rcut:g} Å"
        + ("" if table["core"] is None else
           f"; {table['r_inner']:g} <= r < {table['rmin']:g} Å: "
           + ("torchace's pair energy with its ZBL baseline" if table["core"] == "zbl"
              else "a steep repulsive core (not part of the model)")) + "."]
    cmds = [f"pair_style hybrid/overlay pace table spline {table['n_points']}", *defs,
            f"pair_coeff * * pace {yace_word} " + " ".join(var)]
    for t in range(len(types)):
        for u in range(t, len(types)):
            cmds.append(f"pair_coeff {t + 1} {u + 1} table {table_word} {var[t]}_{var[u]} {_f(rcut)}")
    return cmds, comments


def write_yace(model, path: str, *, lean: bool = True, nradbase: Optional[int] = None, radial_tol: float = 1e-11,
               delta_spline_bins: float = DEFAULT_DELTA_SPLINE_BINS, pair_table: Optional[str] = None,
               pair_points: int = DEFAULT_PAIR_POINTS, pair_rmin: Optional[float] = None,
               pair_rcore: Optional[float] = DEFAULT_PAIR_RCORE, lammps_include=True,
               lammps_types: Optional[List[str]] = None, metadata: Optional[dict] = None,
               overwrite: bool = False) -> dict:
    """Write ``model`` (an ``ACEModel``, or a ``NonlinearACEModel`` with embedding None or "fs": ndensity P,
    its FS parameters, learned radials fitted as R_nl; the MLP embedding is refused with a ValueError) as an
    ML-PACE ``.yace`` (many-body part and E0), if the model has a pair part or a ZBL
    baseline a LAMMPS pair table beside it (``pair_table``, default ``<stem>_pairpot.table``), and the LAMMPS
    input lines as an include file (``lammps_include``: True = ``<stem>.lammps``, a path, or False).

    ``lean`` (default): only the (n, l) channels the functions use (nradmax, lmax of the used rectangle, unused
    channels inside it zero) and the smallest radial base meeting ``radial_tol`` (``yace_radial``);
    ``lean=False``: the original full grid (nradmax = all radial degrees, lmax = the model's) and ``ChebPow``.
    ``delta_spline_bins`` (Å) is the node spacing of ML-PACE's own cubic-Hermite tabulation of the radials (its
    error dominates; docs/yace.md).  ``pair_points``, ``pair_rmin``, ``pair_rcore``: ``write_pair_table``.
    ``lammps_types``: element per LAMMPS atom type (default: the model's elements in order).  ``metadata``
    (JSON-serialisable) is stored as a ``# metadata: {...}`` comment line (ML-PACE ignores comments).

    The files are replaced as a set (all written, then all renamed; a failure leaves the old set as it was), and
    an existing file is replaced only if torchace wrote it as that kind of file, or with ``overwrite=True``
    (``OutputPathError`` before any work otherwise; torchace.atomic, the output rule).

    Returns {"yace", "pair_table" (or None), "lammps_include" (or None), all absolute; "lammps": the input lines;
    "elements", "lammps_types", "nradbase", "radbasename", "radial_error", "nradmax", "lmax",
    "channels_used", "splines_per_neighbour" (ML-PACE evaluates nradbase + nradmax·(lmax + 1) splines per
    neighbour), "pair": the pair table's report (``pair_table_text``) or None, "ndensity", "fs_parameters" ([NZ][2P])}.
    """
    nonlinear = is_nonlinear(model)   # a NonlinearACEModel: torchace/io/yace_nonlinear.py
    if nonlinear:
        check_exportable(model)
    elif not capabilities(model).rows:  # the linear ACEModel
        raise TypeError(f"write_yace expects a torchace ACEModel or NonlinearACEModel, got {type(model).__name__}")
    path = os.fspath(path)
    if not path.endswith(".yace"):
        raise ValueError(f"{path}: a .yace file name must end in '.yace' (ML-PACE chooses the reader by extension)")
    if metadata is not None:
        try:
            meta_json = json.dumps(metadata, sort_keys=True, allow_nan=False)
        except (TypeError, ValueError) as exc:
            raise ValueError(f"{path}: metadata must be JSON-serialisable: {exc}") from None
    delta_spline_bins = float(delta_spline_bins)
    if not 0.0 < delta_spline_bins < 0.1:
        raise ValueError(f"delta_spline_bins must be in (0, 0.1) Å, got {delta_spline_bins}")
    if not torch.isfinite(model.coefficients.detach()).all():
        raise ValueError("model coefficients are not finite: nothing to export")
    stem = path[: -len(".yace")]
    include = stem + ".lammps" if lammps_include is True else (os.fspath(lammps_include) if lammps_include else None)
    if include is not None and os.path.abspath(include) in (os.path.abspath(path),
                                                            os.path.abspath(pair_table or stem + "_pairpot.table")):
        raise ValueError(f"{include}: the LAMMPS include file must differ from the potential and the table")
    # the LAMMPS lines name these files: refuse names no LAMMPS quoting can hold before anything is written
    for out, what in ((path, "ML-PACE .yace file name"), (include, "LAMMPS include file name"),
                      (pair_table or stem + "_pairpot.table", "LAMMPS pair table name")):
        if out is not None:
            lammps_word(os.path.abspath(out), what)
    # the output rule (torchace.atomic): never replace a file that torchace did not write (the training data, a
    # hand-written LAMMPS input), unless overwrite — checked before any work
    if pair_table is None:
        pair_table = stem + "_pairpot.table"
    for out, kind in ((path, YACE), (pair_table, TABLE), (include, INCLUDE)):
        if out is not None:
            check_output(out, kind, overwrite)
    p0 = model.coefficients
    if nonlinear:
        parts = nonlinear_parts(model)
        model = parts.basis
    elif p0.dtype != torch.float64:
        # ML-PACE works in double precision.  Rebuild the basis in float64 from the config (buffers such as
        # y(rcut) rounded to float32 would leave a ~1e-7 step at rcut) and carry over what a fit sets.
        m64 = ACEModel(model.config, dtype=torch.float64)
        m64.coefficients = model.coefficients.detach().to("cpu", torch.float64)
        with torch.no_grad():
            m64.E0.copy_(model.E0.detach().to("cpu", torch.float64))
        m64.set_basis_scale(model.embedding.nl_scale.detach().to("cpu", torch.float64),
                            model.pair.scale.detach().to("cpu", torch.float64))
        model = m64.eval()
    elif p0.device.type != "cpu":
        model = copy.deepcopy(model).to("cpu")   # never move the caller's model
    nz = model.nz
    elements = model.elements
    if lammps_types is not None:
        lammps_input(elements, path, None, None, model.rcut, list(lammps_types))   # validate before writing
    n_poly = model.embedding.radials.n_poly
    c_mb, fs, W = (parts.coefficients, parts.fs_parameters, parts.radial_weights) if nonlinear else (None, None, None)
    P = 1 if c_mb is None else int(c_mb.shape[0])
    fit = fit_radial_coefficients(model, nradbase, radial_tol, lean=lean, radial_weights=W)
    N, crad = fit.nradbase, fit.crad
    funcs = ctilde_functions(model, c_mb, fold_scale=W is None)
    usage = channel_usage(funcs, nz)
    _rank1_in_radial_base(funcs, crad, N, P)
    E0 = model.E0.detach().cpu().tolist()
    if lean:
        nradmax = max([1] + [n for d in usage.values() for n in d.values()])
        lmax = max([0] + [l for d in usage.values() for l in d])
    else:
        nradmax, lmax = n_poly, int(model.embedding.max_l)
    used = sum(n for d in usage.values() for n in d.values())

    out: List[str] = [f"{YACE_HEADER}.io.write_yace (many-body part and E0; "
                      "the pair part, if any, is in a LAMMPS pair table, see docs/yace.md)"]
    if metadata is not None:
        out.append("# metadata: " + meta_json)
    # which pair table belongs to this .yace (read_yace reads it too: the whole model, never the many-body half)
    has_pair = pair_energy_functions(parts.pair_model if nonlinear else model) is not None
    out.append(declaration(path, (pair_table or stem + "_pairpot.table") if has_pair else None))
    out.append(f"# {'lean' if lean else 'full-grid'} export: radial base {fit.radbasename} (lambda {fit.lam:g}, "
               f"{N} functions, fit error {fit.error:.1e}), nradmax {nradmax}, lmax {lmax}, {used} of "
               f"{nz * nz * nradmax * (lmax + 1)} (n, l) channels used")
    if nonlinear:
        out.append(f"# nonlinear torchace model: {P} densities, embedding "
                   f"{'FinnisSinclairShiftedScaled' if fs is not None else 'none (F = rho_1)'}, "
                   f"{'learned' if W is not None else 'fixed'} radials (docs/yace.md)")
    out.append(f"elements: {_flow(elements)}")
    out.append(f"E0: {_flow(E0, _f)}")
    out.append(f"deltaSplineBins: {_f(delta_spline_bins)}")
    out.append("embeddings:")
    for z in range(nz):
        out.append(embedding_line(z, P, fs, _f))
    out.append("bonds:")
    zeros = _flow([0] * N)
    for (a, b), M in crad.items():
        # crad[n][l][k]: torchace's fixed radials do not depend on l (learned ones do: M [n, l, k]); lean: zero
        # where the functions use no R_nl
        nl_max = usage[(a, b)]
        rows = []
        for n in range(nradmax):
            cells = [_flow(M[n] if M.ndim == 2 else M[n, l], _f)
                     if n < n_poly and (not lean or n < nl_max.get(l, 0)) else zeros for l in range(lmax + 1)]
            rows.append("[" + ", ".join(cells) + "]")
        out.append(f"  [{a}, {b}]: {{nradmax: {nradmax}, lmax: {lmax}, nradbasemax: {N}, radbasename: {fit.radbasename}, "
                   f"radparameters: [{_f(fit.lam)}], radcoefficients: [{', '.join(rows)}], prehc: 0, lambdahc: 0, "
                   f"rcut: {_f(model.rcut)}, dcut: {'0' if fit.radbasename == 'ChebExpCos' else '0.01'}, "
                   "rcut_in: 0, dcut_in: 0, inner_cutoff_type: distance}")
    out.append("functions:")
    for z in range(nz):
        if not funcs[z]:
            # ML-PACE wants a list per element; a zero rank-1 function stands for "no many-body energy"
            funcs[z] = [{"mu0": z, "rank": 1, "mus": [0], "ns": [1], "ls": [0], "ms_combs": [0], "ctildes": [0.0] * P}]
        out.append(f"  {z}:")
        for f in funcs[z]:
            nms = len(f["ctildes"]) // P
            out.append(f"    - {{mu0: {z}, rank: {f['rank']}, ndensity: {P}, num_ms_combs: {nms}, mus: {_flow(f['mus'])}, "
                       f"ns: {_flow(f['ns'])}, ls: {_flow(f['ls'])}, ms_combs: {_flow(f['ms_combs'])}, "
                       f"ctildes: {_flow(f['ctildes'], _f)}}}")
    text = "\n".join(out) + "\n"

    table_out = pair_table_text(parts.pair_model if nonlinear else model, pair_points, pair_rmin, pair_rcore)
    table = None if table_out is None else table_out[1]
    table_path = None if table is None else os.path.abspath(pair_table)
    cmds, comments = lammps_input(elements, path, table, table_path, model.rcut,
                                  None if lammps_types is None else list(lammps_types))
    # one set: every temporary file is written before any is renamed, so a full disk never leaves the new .yace
    # beside the old pair table (torchace.atomic.write_outputs)
    files = [(path, YACE, text, ".yace")]
    if table_out is not None:
        files.append((pair_table, TABLE, table_out[0], ".table"))
    if include is not None:
        files.append((include, INCLUDE, "\n".join(comments + cmds) + "\n", ".lammps"))
        include = os.path.abspath(include)
    write_outputs(files, overwrite)
    return {"yace": os.path.abspath(path), "pair_table": table_path, "lammps_include": include, "lammps": cmds,
            "elements": list(elements), "lammps_types": list(elements if lammps_types is None else lammps_types),
            "nradbase": N, "radbasename": fit.radbasename, "radial_error": fit.error, "nradmax": nradmax,
            "lmax": lmax, "channels_used": used, "splines_per_neighbour": N + nradmax * (lmax + 1), "pair": table,
            "ndensity": P, "fs_parameters": fs if fs is not None else [[1.0, 1.0]] * nz}
