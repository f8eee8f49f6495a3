"""Property-based tests (hypothesis; issue "Reliability at scale" §1): data readers, model invariances, model files.

* Extended-XYZ files that we write ourselves (not with ASE's writer) read back to exactly the numbers written;
  corrupted ones (NaN/inf, booleans, non-numbers, wrong column counts, truncation) raise ``DataError`` naming the
  file and the frame — never a silently wrong value.
* Random structures (Si/Ge, skewed cells, every pbc combination): the energy is invariant under rotation,
  translation, permutation of atoms, the choice of periodic image (wrapping), and extensive under a 2×1×1
  supercell.
* Corrupted model JSON (truncated, a byte changed, format version / shapes changed) → ``ModelFileError``, or a
  model that is exactly what the (still valid) JSON says; nothing is unpickled or executed.

Deterministic: the ``torchace`` profile derandomizes hypothesis (same examples on every run) with a modest
``max_examples`` and no deadline.
"""
import json
import math
import pickle

import numpy as np
import pytest
import torch

hypothesis = pytest.importorskip("hypothesis")
from hypothesis import HealthCheck, assume, given, settings  # noqa: E402
from hypothesis import strategies as st  # noqa: E402
from ase import Atoms  # noqa: E402

import torchace  # noqa: E402
from torchace import keys as K  # noqa: E402
from torchace.fit.data import DataError, read_data  # noqa: E402
from torchace.io.model_file import ModelFileError, model_from_dict  # noqa: E402
from torchace.testing import randomize_coefficients  # noqa: E402

settings.register_profile("torchace", derandomize=True, deadline=None, max_examples=25, print_blob=True,
                          suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow])
settings.load_profile("torchace")


pytestmark = pytest.mark.usefixtures("one_thread")


# ---------------------------------------------------------------- extended XYZ readers

finite = st.floats(min_value=-1e4, max_value=1e4, allow_nan=False, allow_infinity=False)


@st.composite
def frames(draw):
    """A list of frames: species, positions (≥ 0.5 Å apart), energy, forces, optional virial, cell, pbc."""
    out = []
    for _ in range(draw(st.integers(1, 3))):
        n = draw(st.integers(1, 5))
        pos = np.array([[k * 2.0 + draw(st.floats(0, 1)), draw(st.floats(-5, 5)), draw(st.floats(-5, 5))]
                        for k in range(n)])
        out.append(dict(
            species=draw(st.lists(st.sampled_from(["Si", "Ge"]), min_size=n, max_size=n)),
            pos=pos, energy=draw(finite),
            forces=np.array(draw(st.lists(st.lists(finite, min_size=3, max_size=3), min_size=n, max_size=n))),
            virial=np.array(draw(st.lists(finite, min_size=9, max_size=9))) if draw(st.booleans()) else None,
            cell=np.diag([20.0 + 2 * n] * 3) + np.array(draw(st.lists(st.floats(-2, 2), min_size=9, max_size=9))
                                                         ).reshape(3, 3),
            pbc=draw(st.lists(st.booleans(), min_size=3, max_size=3))))
    return out


def _xyz(frames, override=None):
    """Extended XYZ text written by hand; ``override(k, field) -> str|None`` replaces a field of frame k."""
    override = override or (lambda k, field: None)
    lines = []
    for k, f in enumerate(frames):
        n = len(f["species"])
        ov = lambda field, default: override(k, field) or default  # noqa: E731
        lines.append(ov("natoms", str(n)))
        info = [f'Lattice="{" ".join(repr(float(x)) for x in f["cell"].reshape(-1))}"',
                ov("properties", "Properties=species:S:1:pos:R:3:forces:R:3"),
                ov("energy", f"energy={f['energy']!r}"),
                'pbc="' + " ".join("T" if p else "F" for p in f["pbc"]) + '"']
        if f["virial"] is not None:
            info.append(ov("virial", 'virial="' + " ".join(repr(float(x)) for x in f["virial"]) + '"'))
        lines.append(" ".join(info))
        for i in range(n):
            cols = [f["species"][i]] + [repr(float(x)) for x in f["pos"][i]] + [repr(float(x)) for x in f["forces"][i]]
            lines.append(ov(f"atom{i}", " ".join(cols)))
    return "\n".join(lines) + "\n"


def _write(tmp_path, name, text):
    p = tmp_path / name
    p.write_text(text)
    return str(p)


@given(frames())
def test_xyz_reads_exactly_what_was_written(tmp_path_factory, fr):
    path = _write(tmp_path_factory.mktemp("xyz"), "ok.xyz", _xyz(fr))
    ds = read_data(path, elements=["Si", "Ge"])
    assert len(ds) == len(fr)
    for s, f in zip(ds, fr):
        assert s.atoms.get_chemical_symbols() == f["species"]
        assert np.array_equal(s.atoms.positions, f["pos"])
        assert np.array_equal(s.atoms.cell.array, f["cell"]) and list(s.atoms.pbc) == f["pbc"]
        assert s.energy == f["energy"]
        assert np.array_equal(s.forces, f["forces"])
        # extended XYZ stores 3×3 info values column-major (Fortran order), as Lattice is not
        assert (s.virial is None) if f["virial"] is None else np.array_equal(s.virial,
                                                                             f["virial"].reshape(3, 3, order="F"))


BAD_VALUES = ["nan", "inf", "-inf", "NaN", "T", "F", "abc", "1.0.0", "0x1p3"]


@given(frames(), st.data())
def test_xyz_bad_label_names_file_and_frame(tmp_path_factory, fr, data):
    """One label of one frame replaced by NaN/inf, a boolean or a non-number → DataError naming that frame."""
    k = data.draw(st.integers(0, len(fr) - 1))
    fields = ["energy", "force"] + (["virial"] if fr[k]["virial"] is not None else [])
    field = data.draw(st.sampled_from(fields))
    bad = data.draw(st.sampled_from(BAD_VALUES))
    if field == "force":
        i = data.draw(st.integers(0, len(fr[k]["species"]) - 1))
        c = data.draw(st.integers(0, 2))
        f = fr[k]
        cols = [f["species"][i]] + [repr(float(x)) for x in f["pos"][i]] + [repr(float(x)) for x in f["forces"][i]]
        cols[4 + c] = bad

        def override(kk, fld):
            return " ".join(cols) if (kk, fld) == (k, f"atom{i}") else None
    else:
        j = data.draw(st.integers(0, 8))

        def override(kk, fld):
            if (kk, fld) != (k, field):
                return None
            if field == "energy":
                return f"energy={bad}"
            v = [repr(float(x)) for x in fr[k]["virial"]]
            v[j] = bad
            return 'virial="' + " ".join(v) + '"'
    path = _write(tmp_path_factory.mktemp("xyz"), "bad.xyz", _xyz(fr, override))
    with pytest.raises(DataError) as exc:
        read_data(path, elements=["Si", "Ge"])
    assert f"{path}:frame {k}:" in str(exc.value), str(exc.value)


@given(frames(), st.data())
def test_xyz_shape_errors_and_truncation(tmp_path_factory, fr, data):
    """Wrong column counts, a wrong atom count, a wrong virial length, or a file cut short → DataError naming
    the file (and the frame); a file cut exactly between frames reads the complete frames exactly."""
    k = data.draw(st.integers(0, len(fr) - 1))
    kind = data.draw(st.sampled_from(["forces2", "extra_column", "natoms_more", "virial8", "truncate"]))
    tmp = tmp_path_factory.mktemp("xyz")
    if kind == "truncate":
        text = _xyz(fr)
        lines = text.splitlines(keepends=True)
        cut = data.draw(st.integers(1, len(lines) - 1))
        path = _write(tmp, "cut.xyz", "".join(lines[:cut]))
        starts = np.cumsum([0] + [len(f["species"]) + 2 for f in fr])
        if cut in starts:  # cut between frames: the complete frames, exactly
            ds = read_data(path, elements=["Si", "Ge"])
            m = int(np.flatnonzero(starts == cut)[0])
            assert len(ds) == m
            for s, f in zip(ds, fr):
                assert np.array_equal(s.forces, f["forces"]) and s.energy == f["energy"]
            return
        m = int(np.searchsorted(starts, cut, side="right") - 1)  # the frame that is cut
        with pytest.raises(DataError) as exc:
            read_data(path, elements=["Si", "Ge"])
        assert f"{path}:frame {m}:" in str(exc.value), str(exc.value)
        return

    def override(kk, fld):
        if kk != k:
            return None
        if kind == "forces2" and fld == "properties":
            return "Properties=species:S:1:pos:R:3:forces:R:2:extra:R:1"
        if kind == "extra_column" and fld == "atom0":
            f = fr[k]
            return " ".join([f["species"][0]] + [repr(float(x)) for x in f["pos"][0]] + ["1.0"] * 4)
        if kind == "natoms_more" and fld == "natoms":
            return str(len(fr[k]["species"]) + 1)
        if kind == "virial8" and fld == "energy":
            return f"energy={fr[k]['energy']!r} virial=\"" + " ".join(["1.0"] * 8) + '"'
        return None
    if kind == "virial8" and fr[k]["virial"] is not None:
        fr[k]["virial"] = None  # one virial per frame
    path = _write(tmp, "shape.xyz", _xyz(fr, override))
    if kind == "extra_column":
        # ASE ignores surplus trailing columns of an atom line: accepted only if the declared columns are
        # read exactly (forces 1, 1, 1 here; the fourth token is dropped)
        try:
            ds = read_data(path, elements=["Si", "Ge"])
        except DataError as exc:
            assert f"{path}:frame {k}:" in str(exc)
            return
        assert np.array_equal(ds.structures[k].forces[0], [1.0, 1.0, 1.0])
        return
    with pytest.raises(DataError) as exc:
        read_data(path, elements=["Si", "Ge"])
    msg = str(exc.value)
    assert msg.startswith(path + ":frame "), msg
    if kind in ("forces2", "virial8"):
        assert f"{path}:frame {k}:" in msg, msg


# ---------------------------------------------------------------- invariances of the model

@pytest.fixture(scope="module")
def model():
    m = torchace.ace_model(["Si", "Ge"], 3, 6, rcut=4.5, E0={"Si": -1.5, "Ge": -2.0})
    randomize_coefficients(m, 0.1, seed=11)
    return m


@st.composite
def structures(draw):
    """1–6 Si/Ge atoms in a skewed cell (lengths 3.5–6 Å, off-diagonals up to ±40 %), any pbc, atoms ≥ 1.2 Å
    apart (also across periodic boundaries)."""
    n = draw(st.integers(1, 6))
    L = np.diag(draw(st.lists(st.floats(3.5, 6.0), min_size=3, max_size=3)))
    off = np.array(draw(st.lists(st.floats(-0.4, 0.4), min_size=9, max_size=9))).reshape(3, 3)
    cell = L + off * np.diag(L)[:, None] * (1 - np.eye(3))
    assume(abs(np.linalg.det(cell)) > 0.3 * np.prod(np.diag(L)))
    frac = np.array(draw(st.lists(st.lists(st.floats(0, 1), min_size=3, max_size=3), min_size=n, max_size=n)))
    pbc = draw(st.lists(st.booleans(), min_size=3, max_size=3))
    at = Atoms(draw(st.lists(st.sampled_from(["Si", "Ge"]), min_size=n, max_size=n)),
               scaled_positions=frac, cell=cell, pbc=pbc)
    from ase.geometry import get_distances
    _, d = get_distances(at.positions, cell=cell, pbc=pbc)
    d[np.diag_indices(n)] = np.inf
    if at.pbc.any():  # an atom and its own image
        d[np.diag_indices(n)] = min(np.linalg.norm(v) for v, p in zip(cell, pbc) if p)
    assume(d.min() > 1.2)
    return at


def _energy(model, at):
    return float(torchace.evaluate(model, at, forces=False, virials=False)[K.ENERGY][0])


def _close(a, b):
    return abs(a - b) <= 1e-10 * max(1.0, abs(a), abs(b))


@given(structures(), st.data())
def test_energy_invariances(model, at, data):
    e = _energy(model, at)
    assert math.isfinite(e)
    # rotation (cell rotated with the atoms; a reflection too: the basis is O(3)-invariant)
    q, r = np.linalg.qr(np.array(data.draw(st.lists(st.floats(-1, 1), min_size=9, max_size=9))).reshape(3, 3)
                        + 3 * np.eye(3))
    rot = at.copy()
    rot.set_cell(at.cell.array @ q.T, scale_atoms=False)
    rot.positions = at.positions @ q.T
    assert _close(_energy(model, rot), e)
    # translation
    t = np.array(data.draw(st.lists(st.floats(-10, 10), min_size=3, max_size=3)))
    tr = at.copy()
    tr.positions += t
    assert _close(_energy(model, tr), e)
    # permutation of the atoms (each keeps its species)
    perm = data.draw(st.permutations(range(len(at))))
    assert _close(_energy(model, at[list(perm)]), e)
    # choice of periodic image: shift atoms by lattice vectors along periodic axes, and wrap
    if at.pbc.any():
        shifts = np.array(data.draw(st.lists(st.lists(st.integers(-2, 2), min_size=3, max_size=3),
                                             min_size=len(at), max_size=len(at)))) * at.pbc
        im = at.copy()
        im.positions += shifts @ at.cell.array
        assert _close(_energy(model, im), e)
        im.wrap()
        assert _close(_energy(model, im), e)


@given(structures())
def test_supercell_extensive(model, at):
    """E(2×1×1 supercell) = 2·E for a structure periodic along the first axis."""
    at.pbc = [True] + list(at.pbc[1:])
    e = _energy(model, at)
    e2 = _energy(model, at.repeat((2, 1, 1)))
    assert _close(e2, 2 * e), (e2, 2 * e)
    # the atoms really interact (the property is not just 2·ΣE0)
    e0 = sum({"Si": -1.5, "Ge": -2.0}[s] for s in at.get_chemical_symbols())
    assume(abs(e - e0) > 1e-8)


# ---------------------------------------------------------------- model files

@pytest.fixture(scope="module")
def model_file(tmp_path_factory):
    m = torchace.ace_model(["Si"], 2, 5, rcut=5.0, E0={"Si": -1.0})
    randomize_coefficients(m, 0.1, seed=5)
    p = tmp_path_factory.mktemp("model") / "m.json"
    m.save(str(p))
    return p.read_bytes()


@pytest.fixture
def no_unpickling(monkeypatch):
    """Loading must not unpickle: any call fails the test."""
    def boom(*a, **k):
        raise AssertionError("a model file was unpickled")
    for mod, name in [(pickle, "load"), (pickle, "loads"), (torch, "load")]:
        monkeypatch.setattr(mod, name, boom)


def _load_or_error(path):
    try:
        return torchace.load(str(path))
    except ModelFileError as exc:
        assert str(path) in str(exc)
        return None


@given(st.data())
def test_truncated_or_flipped_model_file(model_file, tmp_path_factory, no_unpickling, data):
    raw = bytearray(model_file)
    if data.draw(st.booleans()):
        raw = raw[:data.draw(st.integers(0, len(raw) - 1))]
    else:
        # a byte in the structure and config part (its first 600 bytes) or anywhere
        i = data.draw(st.integers(0, min(len(raw), 600) - 1) | st.integers(0, len(raw) - 1))
        raw[i] = data.draw(st.integers(0, 255).filter(lambda b: b != raw[i]))
    p = tmp_path_factory.mktemp("bad") / "m.json"
    p.write_bytes(bytes(raw))
    m = _load_or_error(p)
    if m is not None:  # still a valid model file: the model is exactly what it says
        d = json.loads(bytes(raw).decode())
        ref = model_from_dict(d)
        assert torch.equal(m.coefficients, ref.coefficients) and m.config == ref.config
        assert torch.equal(m.coefficients, torch.tensor(d["coefficients"], dtype=torch.float64))


@given(st.sampled_from(["format_version", "format", "basis_size", "coefficients", "nl_scale", "pair_scale",
                        "committee", "config"]), st.data())
def test_model_file_wrong_version_or_shape(model_file, tmp_path_factory, no_unpickling, key, data):
    d = json.loads(model_file)
    if key == "format_version":
        d[key] = data.draw(st.sampled_from([0, 3, "1", None, 1.5, True]))
    elif key == "format":
        d[key] = data.draw(st.sampled_from(["torchace", "", None, 1]))
    elif key == "basis_size":
        d[key] = d[key] + data.draw(st.sampled_from([-1, 1, 100]))
    elif key == "config":
        d[key] = data.draw(st.sampled_from([None, [], "x", dict(d[key], order="2"), dict(d[key], pair="yes")]))
    else:
        v = d[key] if d[key] is not None else [d["coefficients"]]
        v = np.asarray(v, dtype=float)
        how = data.draw(st.sampled_from(["drop", "extra", "nest", "nan", "string"]))
        if how == "drop":
            v = v.reshape(-1)[:-1].tolist()
        elif how == "extra":
            v = v.reshape(-1).tolist() + [0.0]
        elif how == "nest":
            v = [v.tolist()] if key != "committee" else v.reshape(-1).tolist()
        elif how == "nan":
            v = v.reshape(-1).tolist()
            v[data.draw(st.integers(0, len(v) - 1))] = "@nan@"
            d[key] = v if key != "committee" else [v]
            text = json.dumps(d).replace('"@nan@"', "NaN")  # Python's json writes and reads NaN
            d = None
        else:
            v = "0.1 0.2"
        if d is not None:
            d[key] = v
    p = tmp_path_factory.mktemp("bad") / "m.json"
    p.write_text(json.dumps(d) if d is not None else text)
    with pytest.raises(ModelFileError) as exc:
        torchace.load(str(p))
    assert str(p) in str(exc.value)
