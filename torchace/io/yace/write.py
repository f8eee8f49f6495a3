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
[1, 1] is F(ρ) = ρ) and no hard-core repulsion (prehc = 0).  An ``ACEModel`` with a nonlinear readout (embedding None or
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
* Products (``ctilde``: the C-tilde functions).  E_i − E0 = Σ_k (c·C)_{z_i k} AA_k with AA_k a product of
  e3nn real A's, each expanded into PACE's complex monomials and collected into real c̃ (checked); rank-1 terms
  are re-expressed on g_k (ML-PACE's A1 uses g_k itself).
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
import os
from typing import Any, Dict, List, NamedTuple, Optional, Tuple

import torch

from ...atomic import check_output, text_output, write_outputs
from ...model.contract import capabilities
from ..lammps_words import lammps_word
from .pair_table import DEFAULT_PAIR_POINTS, DEFAULT_PAIR_RCORE, TABLE, pair_energy_functions, pair_table_text
from .pair import TORCHACE_HEADER, declaration
from .ctilde import channel_usage, ctilde_functions, rank1_in_radial_base
from .nonlinear import check_exportable, embedding_line, is_nonlinear, nonlinear_parts
from .radial import fit_radial_coefficients

DEFAULT_DELTA_SPLINE_BINS = 5e-4   # Å, ML-PACE's radial tabulation step (docs/yace.md: error against it)


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
    """Write ``model`` (an ``ACEModel`` with embedding None or "fs": ndensity P,
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

    Steps: check the model and the options (``_check_request``), name and check the output files
    (``_output_names``), the float64 CPU basis and the nonlinear parts (``_export_basis``), the C-tilde
    functions and radial tables (``ctilde_basis``), the .yace text (``yace_text``), the pair table and the LAMMPS
    input, all files written as one set.
    """
    nonlinear = _check_model(model)
    path = os.fspath(path)
    meta_json = _check_request(model, path, metadata, delta_spline_bins)
    names = _output_names(path, pair_table, lammps_include, overwrite)
    basis, parts = _export_basis(model, nonlinear)
    if lammps_types is not None:
        lammps_input(basis.elements, path, None, None, basis.rcut, list(lammps_types))   # validate before writing
    cb = ctilde_basis(basis, parts, lean, nradbase, radial_tol)
    pair_model = parts.pair_model if nonlinear else basis
    # which pair table belongs to this .yace (read_yace reads it too: the whole model, never the many-body half)
    has_pair = pair_energy_functions(pair_model) is not None
    text = yace_text(basis, cb, declaration(path, names.pair_table if has_pair else None),
                     float(delta_spline_bins), lean, meta_json, nonlinear)

    table_out = pair_table_text(pair_model, pair_points, pair_rmin, pair_rcore)
    table = None if table_out is None else table_out[1]
    table_path = None if table is None else os.path.abspath(names.pair_table)
    cmds, comments = lammps_input(basis.elements, path, table, table_path, basis.rcut,
                                  None if lammps_types is None else list(lammps_types))
    # one set: every temporary file is written before any is renamed, so a full disk never leaves the new .yace
    # beside the old pair table (torchace.atomic.write_outputs)
    files = [(path, YACE, text, ".yace")]
    if table_out is not None:
        files.append((names.pair_table, TABLE, table_out[0], ".table"))
    include = names.include
    if include is not None:
        files.append((include, INCLUDE, "\n".join(comments + cmds) + "\n", ".lammps"))
        include = os.path.abspath(include)
    write_outputs(files, overwrite)
    elements, N = basis.elements, cb.fit.nradbase
    return {"yace": os.path.abspath(path), "pair_table": table_path, "lammps_include": include, "lammps": cmds,
            "elements": list(elements), "lammps_types": list(elements if lammps_types is None else lammps_types),
            "nradbase": N, "radbasename": cb.fit.radbasename, "radial_error": cb.fit.error, "nradmax": cb.nradmax,
            "lmax": cb.lmax, "channels_used": cb.used, "splines_per_neighbour": N + cb.nradmax * (cb.lmax + 1),
            "pair": table, "ndensity": cb.P, "fs_parameters": cb.fs if cb.fs is not None else [[1.0, 1.0]] * basis.nz}


def _check_model(model) -> bool:
    """Whether ``model`` is an (exportable) ACE model with a nonlinear readout or learned radials; a TypeError
    for anything but an ``ACEModel``."""
    nonlinear = is_nonlinear(model)   # torchace/io/yace/nonlinear.py
    if nonlinear:
        check_exportable(model)
    elif not capabilities(model).rows:  # the linear ACEModel
        raise TypeError(f"write_yace expects a torchace ACEModel, got {type(model).__name__}")
    return nonlinear


def _check_request(model, path: str, metadata: Optional[dict], delta_spline_bins: float) -> Optional[str]:
    """Refuse a file name without '.yace', metadata that is not JSON, a spline step outside (0, 0.1) Å and
    coefficients that are not finite; returns the metadata as JSON (None without)."""
    if not path.endswith(".yace"):
        raise ValueError(f"{path}: a .yace file name must end in '.yace' (ML-PACE chooses the reader by extension)")
    meta_json = None
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
    return meta_json


class OutputNames(NamedTuple):
    """The files of one export: the pair table (written only if the model has a pair part) and the LAMMPS
    include file (None: not written)."""

    pair_table: str
    include: Optional[str]


def _output_names(path: str, pair_table: Optional[str], lammps_include, overwrite: bool) -> OutputNames:
    """The pair table's and the include file's names (defaults ``<stem>_pairpot.table``, ``<stem>.lammps``),
    checked before any work: distinct, names LAMMPS can read back, and none a file torchace did not write."""
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
    return OutputNames(pair_table, include)


def _export_basis(model, nonlinear: bool):
    """(the float64 CPU ``ACEModel`` whose basis is written, the ``YaceParts`` of a nonlinear model or None);
    the caller's model is never changed or moved."""
    from ...model.ace import ACEModel

    p0 = model.coefficients
    if nonlinear:
        parts = nonlinear_parts(model)
        return parts.basis, parts
    if p0.dtype != torch.float64:
        # ML-PACE works in double precision.  Rebuild the basis in float64 from the config (buffers such as
        # y(rcut) rounded to float32 would leave a ~1e-7 step at rcut) and carry over what a fit sets.
        m64 = ACEModel(model.config, dtype=torch.float64)
        m64.coefficients = model.coefficients.detach().to("cpu", torch.float64)
        with torch.no_grad():
            m64.E0.copy_(model.E0.detach().to("cpu", torch.float64))
        m64.set_basis_scale(model.embedding.nl_scale.detach().to("cpu", torch.float64),
                            model.pair.scale.detach().to("cpu", torch.float64))
        return m64.eval(), None
    if p0.device.type != "cpu":
        return copy.deepcopy(model).to("cpu"), None   # never move the caller's model
    return model, None


class CTildeBasis(NamedTuple):
    """What the .yace body is written from: the radial fit, the C-tilde functions per element, the (n, l)
    channels they use, the written table sizes, P densities, their FS parameters (None: linear) and whether
    the radials are learned (R_nl depends on l)."""

    fit: Any
    funcs: List[List[dict]]
    usage: Dict[Tuple[int, int], Dict[int, int]]
    nradmax: int
    lmax: int
    used: int
    P: int
    fs: Optional[List[List[float]]]
    learned_radials: bool


def ctilde_basis(basis, parts, lean: bool, nradbase: Optional[int], radial_tol: float) -> CTildeBasis:
    """The radial fit (``yace_radial``), the C-tilde functions (rank-1 terms on the radial base g_k) and the
    table sizes: those of the used rectangle (``lean``) or the model's full grid."""
    c_mb, fs, W = (parts.coefficients, parts.fs_parameters, parts.radial_weights) if parts else (None, None, None)
    P = 1 if c_mb is None else int(c_mb.shape[0])
    fit = fit_radial_coefficients(basis, nradbase, radial_tol, lean=lean, radial_weights=W)
    funcs = ctilde_functions(basis, c_mb, fold_scale=W is None)
    usage = channel_usage(funcs, basis.nz)
    rank1_in_radial_base(funcs, fit.crad, fit.nradbase, P)
    if lean:
        nradmax = max([1] + [n for d in usage.values() for n in d.values()])
        lmax = max([0] + [l for d in usage.values() for l in d])
    else:
        nradmax, lmax = basis.embedding.radials.n_poly, int(basis.embedding.max_l)
    used = sum(n for d in usage.values() for n in d.values())
    return CTildeBasis(fit, funcs, usage, nradmax, lmax, used, P, fs, W is not None)


def yace_text(basis, cb: CTildeBasis, pair_declaration: str, delta_spline_bins: float, lean: bool,
              meta_json: Optional[str], nonlinear: bool) -> str:
    """The .yace file: comment lines (header, metadata, the pair table's declaration, what was exported), then
    elements, E0, deltaSplineBins, embeddings, bonds (``_bond_lines``) and functions (``_function_lines``)."""
    nz, fit, P, fs = basis.nz, cb.fit, cb.P, cb.fs
    out: List[str] = [f"{YACE_HEADER}.io.write_yace (many-body part and E0; "
                      "the pair part, if any, is in a LAMMPS pair table, see docs/yace.md)"]
    if meta_json is not None:
        out.append("# metadata: " + meta_json)
    out.append(pair_declaration)
    out.append(f"# {'lean' if lean else 'full-grid'} export: radial base {fit.radbasename} (lambda {fit.lam:g}, "
               f"{fit.nradbase} functions, fit error {fit.error:.1e}), nradmax {cb.nradmax}, lmax {cb.lmax}, "
               f"{cb.used} of {nz * nz * cb.nradmax * (cb.lmax + 1)} (n, l) channels used")
    if nonlinear:
        out.append(f"# nonlinear torchace model: {P} densities, embedding "
                   f"{'FinnisSinclairShiftedScaled' if fs is not None else 'none (F = rho_1)'}, "
                   f"{'learned' if cb.learned_radials else 'fixed'} radials (docs/yace.md)")
    out.append(f"elements: {_flow(basis.elements)}")
    out.append(f"E0: {_flow(basis.E0.detach().cpu().tolist(), _f)}")
    out.append(f"deltaSplineBins: {_f(delta_spline_bins)}")
    out.append("embeddings:")
    for z in range(nz):
        out.append(embedding_line(z, P, fs, _f))
    out += _bond_lines(basis, cb, lean)
    out += _function_lines(cb.funcs, P)
    return "\n".join(out) + "\n"


def _bond_lines(basis, cb: CTildeBasis, lean: bool) -> List[str]:
    """The ``bonds`` section: per (μ_i, μ_j) the radial base and crad[n][l][k] (torchace's fixed radials do not
    depend on l, learned ones do: M [n, l, k]); lean: zero where the functions use no R_nl."""
    fit, N, n_poly = cb.fit, cb.fit.nradbase, basis.embedding.radials.n_poly
    out = ["bonds:"]
    zeros = _flow([0] * N)
    for (a, b), M in fit.crad.items():
        nl_max = cb.usage[(a, b)]
        rows = []
        for n in range(cb.nradmax):
            cells = [_flow(M[n] if M.ndim == 2 else M[n, l], _f)
                     if n < n_poly and (not lean or n < nl_max.get(l, 0)) else zeros for l in range(cb.lmax + 1)]
            rows.append("[" + ", ".join(cells) + "]")
        out.append(f"  [{a}, {b}]: {{nradmax: {cb.nradmax}, lmax: {cb.lmax}, nradbasemax: {N}, "
                   f"radbasename: {fit.radbasename}, "
                   f"radparameters: [{_f(fit.lam)}], radcoefficients: [{', '.join(rows)}], prehc: 0, lambdahc: 0, "
                   f"rcut: {_f(basis.rcut)}, dcut: {'0' if fit.radbasename == 'ChebExpCos' else '0.01'}, "
                   "rcut_in: 0, dcut_in: 0, inner_cutoff_type: distance}")
    return out


def _function_lines(funcs: List[List[dict]], P: int) -> List[str]:
    """The ``functions`` section, one flow mapping per C-tilde function (``funcs`` is completed in place: ML-PACE
    wants a list per element, so an element without functions gets a zero rank-1 function)."""
    out = ["functions:"]
    for z in range(len(funcs)):
        if not funcs[z]:
            funcs[z] = [{"mu0": z, "rank": 1, "mus": [0], "ns": [1], "ls": [0], "ms_combs": [0], "ctildes": [0.0] * P}]
        out.append(f"  {z}:")
        for f in funcs[z]:
            nms = len(f["ctildes"]) // P
            out.append(f"    - {{mu0: {z}, rank: {f['rank']}, ndensity: {P}, num_ms_combs: {nms}, "
                       f"mus: {_flow(f['mus'])}, "
                       f"ns: {_flow(f['ns'])}, ls: {_flow(f['ls'])}, ms_combs: {_flow(f['ms_combs'])}, "
                       f"ctildes: {_flow(f['ctildes'], _f)}}}")
    return out

