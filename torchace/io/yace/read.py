"""``read_yace(path)``: an ML-PACE / pacemaker ``.yace`` potential as a torch module.

The .yace file is YAML (the C-tilde basis, ML-PACE ``ACECTildeBasisSet::load_yaml``):

- ``elements`` [NZ names], ``E0`` [NZ] (optional, default 0), ``deltaSplineBins`` (ignored: torchace
  evaluates the radial functions analytically instead of tabulating them),
- ``embeddings``: {μ: {ndensity, FS_parameters [w_1, m_1, …], npoti, rho_core_cutoff, drho_core_cutoff}},
- ``bonds``: {[μ_i, μ_j]: {radbasename, nradmax, lmax, nradbasemax, radparameters [λ], radcoefficients
  [nradmax][lmax+1][nradbasemax], rcut, dcut, prehc, lambdahc, rcut_in, dcut_in, inner_cutoff_type}},
- ``functions``: {μ: [{mu0, rank, ndensity, num_ms_combs, mus, ns, ls, ms_combs, ctildes}, …]}.

Parsed with a safe YAML loader (no code execution; ``[0, 1]`` mapping keys become tuples).  Anything
missing, malformed or unsupported raises ``ValueError`` naming the file and the key.  Supported:
radial bases ChebExpCos, ChebPow, ChebLinear, SBessel; embeddings FinnisSinclair and
FinnisSinclairShiftedScaled with any number of densities; inner cutoff types "density" and "distance".
Not supported (clear error): ACE.jl radial bases, ``Tabulated`` radials, the "zbl" inner cutoff.
"""
from __future__ import annotations

import os
from typing import NamedTuple

import numpy as np
import yaml

from ...inputs import check_dimension, open_input
from ...model.pace.embedding import EMBEDDINGS
from ...model.pace.model import PACEModel, PACESpec
from ...model.pace.radial import RADIAL_BASES

INNER_CUTOFF_TYPES = ("density", "distance")
# the largest ML-PACE potentials are tens of MB; reading keeps about 10 bytes of Python objects per byte of text
MAX_YACE_BYTES = 256 << 20
# declared sizes (the values a few-kB file could declare to make the reader allocate without bound): far above
# any ML-PACE basis (lmax <= 10, nradmax / nradbasemax <= 30 in pacemaker; torchace's lean export uses
# nradbasemax <= 110), far below what would exhaust memory
MAX_LMAX = 24
MAX_NRAD = 512
MAX_NDENSITY = 64
MAX_CRAD_VALUES = 1 << 24    # the [NZ, NZ, nradmax, lmax + 1, nradbasemax] table: 128 MiB of float64
MAX_SPLINE_BINS = 10 ** 7    # rcut / deltaSplineBins: the size of ML-PACE's spline tables (LAMMPS reads the file)
MAX_NESTING = 32             # a .yace nests 5 levels deep


class YaceLoader(getattr(yaml, "CSafeLoader", yaml.SafeLoader)):
    """PyYAML safe loader whose mappings accept sequence keys (``[0, 1]:``) as tuples and refuse a key given
    twice and any alias (``*a``): ``yaml.load(fh, Loader=YaceLoader)`` reads any .yace.  (Plain
    ``yaml.safe_load`` cannot: the ``bonds`` keys of every ML-PACE file are sequences — yaml-cpp's reader
    requires them — and PyYAML's safe constructor refuses unhashable keys.)  ``parse_yace`` itself reads the
    file with ``yace_document`` (streaming, linear memory)."""

    def construct_object(self, node, deep=False):
        # a node constructed twice is an alias (or a merge key's copy of one): ML-PACE files use none, and an
        # alias bomb expands exponentially when its value is traversed
        if node in self.constructed_objects:
            raise yaml.constructor.ConstructorError(None, None, "YAML aliases are not used by .yace files and "
                                                    "are refused", node.start_mark)
        return super().construct_object(node, deep)


_Loader = YaceLoader   # the earlier private name


def _construct_mapping(loader, node):
    loader.flatten_mapping(node)
    out = {}
    for k_node, v_node in node.value:
        k = loader.construct_object(k_node, deep=True)
        if isinstance(k, list):
            k = tuple(k)
        if k in out:
            raise yaml.constructor.ConstructorError(None, None, f"duplicate key {k!r}", k_node.start_mark)
        out[k] = loader.construct_object(v_node, deep=True)
    return out


YaceLoader.add_constructor("tag:yaml.org,2002:map", _construct_mapping)

_REFUSED_TAGS = {"tag:yaml.org,2002:merge": "merge keys (<<)", "tag:yaml.org,2002:binary": "binary values"}


def yace_document(path, fh):
    """The YAML document of a .yace file, built from the parser's events (PyYAML's C parser, its safe resolver
    and scalar constructors): memory is the document's own values (a few times the text's size), never a node
    tree (~80 bytes of nodes per byte), and nothing is ever shared, so nothing can expand.  Refused, naming the
    line: anchors and aliases (``&a``, ``*a``, however spelled or placed: the events carry them), explicit tags,
    merge keys, mapping keys that are mappings, a key given twice, several documents, nesting deeper than
    ``MAX_NESTING``."""
    from yaml import events as ev

    loader = YaceLoader(fh)
    scalar_node = yaml.ScalarNode
    constructors = loader.yaml_constructors
    cache = {}  # plain scalars repeat (0, 1, [0, 0]'s indices): construct each text once
    stack = []  # [container, key (or _NO_KEY), line] per open mapping / sequence
    root, n_docs = _NO_KEY, 0

    def refuse(event, what):
        raise ValueError(f"{path}: line {event.start_mark.line + 1}: {what}")

    def add(value, event):
        nonlocal root
        if not stack:
            root = value
            return
        top = stack[-1]
        if isinstance(top[0], list):
            top[0].append(value)
        elif top[1] is _NO_KEY:
            key = tuple(value) if isinstance(value, list) else value
            try:
                hash(key)
            except TypeError:
                refuse(event, "a mapping key must be a number, a name or a list of numbers, "
                              f"got {type(value).__name__}")
            if key in top[0]:
                refuse(event, f"duplicate key {key!r}")
            top[1] = key
        else:
            top[0][top[1]] = value
            top[1] = _NO_KEY

    try:
        while True:
            e = loader.get_event()
            t = type(e)
            if t is ev.ScalarEvent or t is ev.SequenceStartEvent or t is ev.MappingStartEvent:
                if e.anchor is not None:
                    refuse(e, f"YAML anchors/aliases ('&{e.anchor}') are not used by .yace files and are refused")
                if e.tag is not None and e.tag != "!":
                    refuse(e, f"YAML tags ({e.tag!r}) are not used by .yace files and are refused")
            if t is ev.ScalarEvent:
                key = (e.value, e.implicit[0])
                value = cache.get(key, _NO_KEY)
                if value is _NO_KEY:
                    tag = loader.resolve(scalar_node, e.value, e.implicit)
                    if tag in _REFUSED_TAGS:
                        refuse(e, f"YAML {_REFUSED_TAGS[tag]} are not used by .yace files and are refused")
                    value = constructors[tag](loader, scalar_node(tag, e.value))
                    if len(cache) < 100_000 and len(e.value) < 32:
                        cache[key] = value
                add(value, e)
            elif t is ev.SequenceStartEvent or t is ev.MappingStartEvent:
                if len(stack) >= MAX_NESTING:
                    refuse(e, "nested too deeply to be a .yace file")
                stack.append([[] if t is ev.SequenceStartEvent else {}, _NO_KEY, e])
            elif t is ev.SequenceEndEvent or t is ev.MappingEndEvent:
                container, _, start = stack.pop()
                add(container, start)
            elif t is ev.AliasEvent:
                refuse(e, f"YAML anchors/aliases ('*{e.anchor}') are not used by .yace files and are refused")
            elif t is ev.DocumentStartEvent:
                n_docs += 1
                if n_docs > 1:
                    refuse(e, "a second YAML document: a .yace file holds one")
            elif t is ev.StreamEndEvent:
                break
    except yaml.YAMLError as exc:
        raise ValueError(f"{path}: not valid YAML: {' '.join(str(exc).split())}") from None
    finally:
        loader.dispose()
    return None if root is _NO_KEY else root


_NO_KEY = object()


def _has_bool(v) -> bool:
    return isinstance(v, bool) or (isinstance(v, list) and any(_has_bool(x) for x in v))


class _Reader:
    def __init__(self, path):
        self.path = str(path)

    def fail(self, key, msg):
        raise ValueError(f"{self.path}: key '{key}': {msg}")

    def get(self, d, key, where, default=...):
        if not isinstance(d, dict):
            self.fail(where, "expected a mapping")
        if key not in d:
            if default is ...:
                self.fail(f"{where}.{key}" if where else key, "missing")
            return default
        return d[key]

    def num(self, d, key, where, default=...):
        v = self.get(d, key, where, default)
        if isinstance(v, bool):  # float(True) == 1.0 would be a silent wrong value
            self.fail(f"{where}.{key}", f"expected a number, got {v!r}")
        try:
            x = float(v)
        except (TypeError, ValueError, OverflowError):
            self.fail(f"{where}.{key}", f"expected a number, got {v!r}")
        if not np.isfinite(x):  # .nan / .inf would evaluate to NaN or inf energies
            self.fail(f"{where}.{key}", f"expected a finite number, got {v!r}")
        return x

    def bounded(self, x, key, where, lo=None, hi=None, lo_open=False, why=""):
        """``x`` within [lo, hi] (``lo_open``: > lo), else an error naming the field: values no potential has."""
        if (lo is not None and (x <= lo if lo_open else x < lo)) or (hi is not None and x > hi):
            rng = f"{'>' if lo_open else '≥'} {lo:g}" if hi is None else f"in [{lo:g}, {hi:g}]"
            self.fail(f"{where}.{key}", f"must be {rng}, got {x:g}" + (f" ({why})" if why else ""))
        return x

    def int_(self, d, key, where, default=..., limit=None):
        v = self.get(d, key, where, default)
        if isinstance(v, bool) or not isinstance(v, (int, float)) or not np.isfinite(v) or int(v) != v:
            self.fail(f"{where}.{key}", f"expected an integer, got {v!r}")
        if limit is not None:  # a declared size: refused before anything of that size is allocated
            check_dimension(self.path, f"{where}.{key}" if where else key, int(v), limit, ".yace potential")
        return int(v)

    def ints(self, d, key, where, n=None):
        v = self.get(d, key, where)
        if not isinstance(v, list) or not all(isinstance(x, int) and not isinstance(x, bool) for x in v):
            self.fail(f"{where}.{key}", f"expected a list of integers, got {v!r}")
        if n is not None and len(v) != n:
            self.fail(f"{where}.{key}", f"expected {n} values, got {len(v)}")
        return v

    def nums(self, d, key, where, n=None):
        v = self.get(d, key, where)
        try:
            a = np.asarray(v, dtype=float).ravel()
        except (TypeError, ValueError):
            self.fail(f"{where}.{key}", "expected a list of numbers")
        if not isinstance(v, list) or not np.all(np.isfinite(a)) or _has_bool(v):
            self.fail(f"{where}.{key}", "expected a list of finite numbers")
        if n is not None and a.size != n:
            self.fail(f"{where}.{key}", f"expected {n} values, got {a.size}")
        return a


def parse_yace(path) -> PACESpec:
    """Read and validate a .yace file into a ``PACESpec`` (plain numbers, no torch).

    The sections in the order their checks run (the first error found is the one raised): elements and E0,
    embeddings, the bonds' sizes, the bonds' radial tables, ``deltaSplineBins``, functions."""
    rd = _Reader(path)
    # the input rule (torchace.inputs): a regular file (not /dev/zero, a FIFO, a directory), not too large
    with open_input(path, ".yace file", MAX_YACE_BYTES, "rb") as fh:  # libyaml decodes (UTF-8/16)
        doc = yace_document(path, fh)
    if not isinstance(doc, dict):
        raise ValueError(f"{path}: expected a YAML mapping with keys elements, embeddings, bonds, functions")
    elements, E0 = _read_elements(rd, doc)
    ndensity, npoti, fs, rho_cut = _read_embeddings(rd, doc, elements)
    specs, sizes = _read_bond_sizes(rd, doc, elements)
    bond, crad, radbasename = _read_radial_tables(rd, specs, len(elements), sizes)
    _check_spline_bins(rd, doc, bond)
    functions = _read_functions(rd, doc, ndensity, sizes)
    return PACESpec(elements=list(elements), E0=[float(x) for x in E0], lmax=sizes.lmax, nradmax=sizes.nradmax,
                    nradbase=sizes.nradbase, inner_cutoff_type=sizes.inner, radbasename=radbasename, bond=bond,
                    crad=crad, ndensity=ndensity, npoti=npoti, fs_parameters=fs, rho_core_cut=rho_cut,
                    functions=functions, source=os.path.basename(str(path)))


def _read_elements(rd: _Reader, doc: dict):
    """``elements`` (known, distinct symbols) and ``E0`` (default zeros)."""
    elements = rd.get(doc, "elements", "")
    if not isinstance(elements, list) or not elements or not all(isinstance(e, str) for e in elements):
        rd.fail("elements", f"expected a non-empty list of element symbols, got {elements!r}")
    from ase.data import atomic_numbers
    for e in elements:
        if e not in atomic_numbers:
            rd.fail("elements", f"unknown element {e!r}")
    if len(set(elements)) != len(elements):
        rd.fail("elements", f"an element is listed twice: {elements}")
    nz = len(elements)
    return elements, (rd.nums(doc, "E0", "", nz) if "E0" in doc else np.zeros(nz))


def _read_embeddings(rd: _Reader, doc: dict, elements):
    """Per element: ndensity P, the embedding's name, its FS parameters [2P] and the core cutoff (ρ_cut, Δρ)."""
    nz = len(elements)
    emb = rd.get(doc, "embeddings", "")
    if not isinstance(emb, dict):
        rd.fail("embeddings", "expected a mapping element index -> embedding")
    ndensity, npoti, fs, rho_cut = [], [], [], []
    for mu in range(nz):
        w = f"embeddings.{mu}"
        if mu not in emb:
            rd.fail(w, f"missing (element {elements[mu]})")
        e = emb[mu]
        P = rd.int_(e, "ndensity", w, limit=MAX_NDENSITY)
        if P < 1:
            rd.fail(f"{w}.ndensity", f"must be ≥ 1, got {P}")
        kind = rd.get(e, "npoti", w)
        if kind not in EMBEDDINGS:
            rd.fail(f"{w}.npoti", f"embedding {kind!r} not supported (supported: {', '.join(EMBEDDINGS)})")
        ndensity.append(P)
        npoti.append(kind)
        fs.append(list(rd.nums(e, "FS_parameters", w, 2 * P)))
        if any(not m > 0 for m in fs[-1][1::2]):  # F(ρ) = ρ^m: m ≤ 0 is no embedding (complex or infinite values)
            rd.fail(f"{w}.FS_parameters", "the exponents m_p (every second value) must be > 0, "
                                          f"got {[float(m) for m in fs[-1][1::2]]}")
        # ρ_core_cut < 0 would switch every density off (E = E0 for every structure, silently)
        rho_cut.append([rd.bounded(rd.num(e, "rho_core_cutoff", w), "rho_core_cutoff", w, 0.0),
                        rd.bounded(rd.num(e, "drho_core_cutoff", w), "drho_core_cutoff", w, 0.0)])
    extra = [k for k in emb if k not in range(nz)]
    if extra:
        rd.fail("embeddings", f"element indices {extra} beyond the {nz} elements")
    return ndensity, npoti, fs, rho_cut


class BondSizes(NamedTuple):
    """The maxima over the bonds that size ML-PACE's tables, and the one inner cutoff type."""

    lmax: int
    nradmax: int
    nradbase: int
    inner: str


def _read_bond_sizes(rd: _Reader, doc: dict, elements):
    """``bonds`` as {(μ_i, μ_j): bond} (every ordered pair present) and their ``BondSizes``; the size of the
    radial table they declare is checked before it is allocated."""
    nz = len(elements)
    bonds = rd.get(doc, "bonds", "")
    if not isinstance(bonds, dict):
        rd.fail("bonds", "expected a mapping [i, j] -> bond")
    specs = {}
    for key, b in bonds.items():
        if not (isinstance(key, tuple) and len(key) == 2 and all(isinstance(x, int) for x in key)
                and all(0 <= x < nz for x in key)):
            rd.fail(f"bonds.{key}", f"expected a pair [i, j] of element indices < {nz}")
        specs[key] = b
    lmax = nradmax = nradbase = 0
    inner = None
    for a in range(nz):
        for c in range(nz):
            w = f"bonds.[{a}, {c}]"
            if (a, c) not in specs:
                rd.fail(w, f"missing (bond {elements[a]}-{elements[c]})")
            b = specs[(a, c)]
            name = rd.get(b, "radbasename", w)
            if name not in RADIAL_BASES:
                rd.fail(f"{w}.radbasename", f"radial basis {name!r} not supported "
                                            f"(supported: {', '.join(RADIAL_BASES)})")
            lmax = max(lmax, rd.int_(b, "lmax", w, limit=MAX_LMAX))
            nradmax = max(nradmax, rd.int_(b, "nradmax", w, limit=MAX_NRAD))
            nradbase = max(nradbase, rd.int_(b, "nradbasemax", w, limit=MAX_NRAD))
            for key in ("lmax", "nradmax", "nradbasemax"):
                if b[key] < 0:
                    rd.fail(f"{w}.{key}", f"must be ≥ 0, got {b[key]}")
            t = b.get("inner_cutoff_type", "density") if isinstance(b, dict) else None
            if t not in INNER_CUTOFF_TYPES:
                rd.fail(f"{w}.inner_cutoff_type", f"{t!r} not supported (supported: {', '.join(INNER_CUTOFF_TYPES)})")
            if inner is not None and t != inner:
                rd.fail(f"{w}.inner_cutoff_type", f"{t!r} differs from another bond's {inner!r} "
                                                  "(ML-PACE applies one type to all bonds)")
            inner = t
    n_crad = nz * nz * nradmax * (lmax + 1) * nradbase
    check_dimension(rd.path, "bonds (nz² · nradmax · (lmax+1) · nradbasemax)", n_crad, MAX_CRAD_VALUES,
                    ".yace potential")  # before the table is allocated
    return specs, BondSizes(lmax, nradmax, nradbase, inner)


def _read_radial_tables(rd: _Reader, specs: dict, nz: int, sizes: BondSizes):
    """Per bond: the radial parameters [λ, rcut, dcut, rcut_in, dcut_in, prehc, λ_hc] [NZ, NZ, 7], the radial
    coefficients crad [NZ, NZ, nradmax, lmax + 1, nradbase] (zero beyond each bond's own sizes) and the
    radial basis names [NZ][NZ]."""
    bond = np.zeros((nz, nz, 7))
    crad = np.zeros((nz, nz, sizes.nradmax, sizes.lmax + 1, sizes.nradbase))
    radbasename = [[None] * nz for _ in range(nz)]
    for (a, c), b in specs.items():
        w = f"bonds.[{a}, {c}]"
        radbasename[a][c] = b["radbasename"]
        lam = rd.nums(b, "radparameters", w)
        if lam.size < 1:
            rd.fail(f"{w}.radparameters", "expected at least one value (λ)")
        if b["radbasename"] in ("ChebExpCos", "ChebPow"):  # λ = 0: 0/0 in the radial variable (NaN energies)
            rd.bounded(float(lam[0]), "radparameters", w, 0.0, lo_open=True, why=f"λ of {b['radbasename']}")
        rc = rd.num(b, "rcut", w)
        if not rc > 0:
            rd.fail(f"{w}.rcut", f"must be > 0, got {rc}")
        rd.bounded(rd.num(b, "dcut", w), "dcut", w, 0.0, rc, why="the outer smoothing width, within rcut")
        rd.bounded(rd.num(b, "rcut_in", w, 0.0), "rcut_in", w, 0.0, rc, why="the inner cutoff, within rcut")
        rd.bounded(rd.num(b, "dcut_in", w, 0.0), "dcut_in", w, 0.0)
        if "prehc" in b or "core-repulsion" not in b:
            pre, lamhc = rd.num(b, "prehc", w), rd.num(b, "lambdahc", w)
        else:
            pre, lamhc = rd.nums(b, "core-repulsion", w, 2)
        bond[a, c] = [lam[0], rc, rd.num(b, "dcut", w), rd.num(b, "rcut_in", w, 0.0),
                      rd.num(b, "dcut_in", w, 0.0), pre, lamhc]
        nr, lb, kb = b["nradmax"], b["lmax"], b["nradbasemax"]
        cr = rd.get(b, "radcoefficients", w)
        try:
            arr = np.asarray(cr, dtype=float)
        except (TypeError, ValueError):
            rd.fail(f"{w}.radcoefficients", "expected a nested list of numbers")
        if not np.isfinite(arr).all():
            rd.fail(f"{w}.radcoefficients", "expected finite numbers (.nan / .inf give NaN energies)")
        if arr.shape != (nr, lb + 1, kb) and not (nr == 0 and arr.size == 0):
            rd.fail(f"{w}.radcoefficients", f"expected shape [nradmax={nr}][lmax+1={lb + 1}][nradbasemax={kb}], "
                                            f"got {list(arr.shape)}")
        if arr.size:
            crad[a, c, :nr, : lb + 1, :kb] = arr
    return bond, crad, radbasename


def _check_spline_bins(rd: _Reader, doc: dict, bond: np.ndarray) -> None:
    """``deltaSplineBins``: unused here (radials are evaluated analytically), but LAMMPS tabulates with it, so
    a step that would make ML-PACE allocate without bound is refused."""
    if "deltaSplineBins" in doc:
        delta = rd.bounded(rd.num(doc, "deltaSplineBins", ""), "deltaSplineBins", "", 0.0, lo_open=True)
        bins = float(bond[:, :, 1].max()) / delta
        if bins > MAX_SPLINE_BINS:
            rd.fail("deltaSplineBins", f"{delta:g} makes {bins:.3g} spline bins per radial function of rcut "
                                       f"{float(bond[:, :, 1].max()):g} (limit {MAX_SPLINE_BINS:.0e}): ML-PACE would "
                                       "allocate without bound; 0.001 is usual")


def _read_functions(rd: _Reader, doc: dict, ndensity, sizes: BondSizes):
    """Per element: its C-tilde functions {rank, mus, ns, ls, ms [num_ms_combs][rank], ctildes
    [num_ms_combs][P]}, indices checked against the elements and the bonds' sizes."""
    nz = len(ndensity)
    funcs_doc = rd.get(doc, "functions", "")
    if not isinstance(funcs_doc, dict):
        rd.fail("functions", "expected a mapping element index -> list of functions")
    functions = []
    for mu in range(nz):
        lst = funcs_doc.get(mu, [])
        if not isinstance(lst, list):
            rd.fail(f"functions.{mu}", "expected a list of functions")
        out = []
        for q, f in enumerate(lst):
            w = f"functions.{mu}[{q}]"
            rank = rd.int_(f, "rank", w)
            if rank < 1:
                rd.fail(f"{w}.rank", f"must be ≥ 1, got {rank}")
            P = rd.int_(f, "ndensity", w)
            if P != ndensity[mu]:
                rd.fail(f"{w}.ndensity", f"{P} differs from embeddings.{mu}.ndensity = {ndensity[mu]}")
            if rd.int_(f, "mu0", w) != mu:
                rd.fail(f"{w}.mu0", f"expected {mu} (listed under element {mu})")
            nms = rd.int_(f, "num_ms_combs", w)
            mus, ns, ls = rd.ints(f, "mus", w, rank), rd.ints(f, "ns", w, rank), rd.ints(f, "ls", w, rank)
            ms = np.asarray(rd.ints(f, "ms_combs", w, nms * rank)).reshape(nms, rank)
            ct = rd.nums(f, "ctildes", w, nms * P).reshape(nms, P)
            if any(not 0 <= m < nz for m in mus):
                rd.fail(f"{w}.mus", f"element indices must be < {nz}, got {mus}")
            nlim = sizes.nradbase if rank == 1 else sizes.nradmax
            if any(not 1 <= n <= nlim for n in ns):
                rd.fail(f"{w}.ns", f"radial indices must be in 1..{nlim}, got {ns}")
            if any(not 0 <= l <= sizes.lmax for l in ls) or (rank == 1 and ls[0] != 0):
                rd.fail(f"{w}.ls", f"angular indices must be in 0..{sizes.lmax} (0 for rank 1), got {ls}")
            if np.any(np.abs(ms) > np.asarray(ls)[None, :]):
                rd.fail(f"{w}.ms_combs", f"|m| must be ≤ l = {ls}")
            out.append({"rank": rank, "mus": mus, "ns": ns, "ls": ls, "ms": ms.tolist(), "ctildes": ct.tolist()})
        functions.append(out)
    return functions


def read_yace(path, *, dtype=None, device=None, pair_table=None) -> PACEModel:
    """Load a .yace potential as a ``PACEModel`` (float64 by default) usable with ``torchace.evaluate``.

    The whole model the file describes: a torchace export's pair part lives in the LAMMPS pair table its
    ``.yace`` declares, which is read too (``torchace.io.yace.pair``; an error if it is missing).
    ``pair_table``: None (default) that declared table; a file name: overlay this table instead (``pair_style
    hybrid/overlay pace table``); False: the ``.yace`` alone (``pair_style pace``)."""
    import torch

    from .pair import pair_term

    spec = parse_yace(path)
    model = PACEModel(spec, dtype=dtype or torch.float64, pair=pair_term(path, spec.elements, pair_table))
    if device is not None:
        model = model.to(device)
    return model.eval()
