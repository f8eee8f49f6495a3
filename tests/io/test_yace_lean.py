"""The lean ``.yace`` export, the LAMMPS include file, the pair table's repulsive core and PyYAML readability.

References: python-ace's C++ evaluator (``PyACECalculator``, the ML-PACE core) for energies/forces/stresses and
per-atom energies; torchace's own pair energy for the table; PyYAML for the file syntax.  Tolerances as in
tests/io/test_yace_export.py (1e-8 relative against python-ace).
"""
from __future__ import annotations

import os
import re

import numpy as np
import pytest
import torch
import yaml

import torchace
from torchace import keys as K
from torchace.io import write_yace
from torchace.io.yace.pair_table import pair_energy_functions, read_pair_table, repulsive_core
from torchace.io.yace.read import YaceLoader, parse_yace
from torchace.testing import max_rel, rattled_sige_cells
from torchace.io.yace.ctilde import ctilde_functions, channel_usage
from torchace.model import ace_model

TOL = 1e-8
R0 = [[2.4, 2.3], [2.35, 2.5]]   # not symmetric: U_ab combines the (a, b) and (b, a) pair blocks


def _pyace():
    return pytest.importorskip("pyace")


def _pyace_plus_table(info, model, structures):
    from torchace.io.yace.pair_table import evaluate_pair_table

    calc = _pyace().PyACECalculator(info["yace"])
    out = []
    for at in structures:
        at = at.copy()
        at.calc = calc
        e, f, st, ea = at.get_potential_energy(), at.get_forces(), at.get_stress(), at.get_potential_energies()
        if info["pair_table"] is not None:
            p = evaluate_pair_table(info["pair_table"], at, model.elements)
            e, f, st = e + p["energy"], f + p["forces"], st + p["stress"]
        out.append((e, f, st, ea))
    return out


def _check_against_torchace(model, info, structures):
    ref = torchace.evaluate(model, structures)
    off = 0
    for s, (e, f, st, _) in enumerate(_pyace_plus_table(info, model, structures)):
        n = len(structures[s])
        assert abs(e - float(ref["energy"][s])) <= TOL * abs(float(ref["energy"][s]))
        assert max_rel(f, ref["forces"][off:off + n].numpy()) <= TOL
        assert max_rel(st, K.to_voigt(ref["stress"][s].numpy())) <= TOL
        off += n


@pytest.fixture(scope="module")
def full_model():
    """Si/Ge order 3 with a random per-(n, l) basis scale, random pair coefficients and E0."""
    torch.manual_seed(11)
    model = ace_model(["Si", "Ge"], order=3, totaldegree=7, r0=R0)
    model.set_basis_scale(nl_scale=0.5 + torch.rand_like(model.embedding.nl_scale))
    model.coefficients = torch.randn(model.basis_size, dtype=torch.float64)
    model.E0.copy_(torch.tensor([-158.54, -104.3]))
    return model


# ------------------------------------------------------------------ lean channels and radial base


@pytest.mark.slow  # writes and checks a .yace: 16 s
def test_lean_and_full_grid_match_pyace(full_model, tmp_path):
    _pyace()
    lean = write_yace(full_model, str(tmp_path / "lean.yace"))
    full = write_yace(full_model, str(tmp_path / "full.yace"), lean=False)
    assert full["radbasename"] == "ChebPow" and full["nradbase"] % 10 == 0
    assert full["nradmax"] == full_model.embedding.radials.n_poly and full["lmax"] == full_model.embedding.max_l
    # the model's harmonics already stop at the largest l a basis function uses (issue 26, class 8: products
    # without an invariant are not enumerated), so the full grid has no l beyond the lean one
    assert lean["nradbase"] < full["nradbase"] and lean["lmax"] == full["lmax"]
    assert lean["lmax"] == max(l for t in full_model.nl_of_b for _, l in t)
    assert lean["splines_per_neighbour"] < full["splines_per_neighbour"]
    assert lean["channels_used"] == full["channels_used"]
    assert lean["radial_error"] <= 1e-11 and full["radial_error"] <= 1e-11
    _check_against_torchace(full_model, lean, rattled_sige_cells())
    _check_against_torchace(full_model, full, rattled_sige_cells())


@pytest.mark.slow  # writes and checks a .yace: 10 s
def test_lean_writes_exactly_the_used_channels(full_model, tmp_path):
    info = write_yace(full_model, str(tmp_path / "m.yace"))
    with open(info["yace"]) as fh:
        doc = yaml.load(fh, Loader=YaceLoader)
    usage = channel_usage(ctilde_functions(full_model), full_model.nz)
    lmax = max(l for d in usage.values() for l in d)
    nradmax = max(n for d in usage.values() for n in d.values())
    assert (info["lmax"], info["nradmax"]) == (lmax, nradmax)
    for (a, b), d in usage.items():
        bond = doc["bonds"][(a, b)]
        assert (bond["nradmax"], bond["lmax"], bond["nradbasemax"]) == (nradmax, lmax, info["nradbase"])
        crad = np.asarray(bond["radcoefficients"])
        for n in range(nradmax):
            for l in range(lmax + 1):
                assert bool(np.any(crad[n, l] != 0)) == (n < d.get(l, 0)), (a, b, n, l)
    # every rank >= 2 function refers to a written channel, every rank-1 function to the radial base
    for z, fz in doc["functions"].items():
        for f in fz:
            for mu, n, l in zip(f["mus"], f["ns"], f["ls"]):
                if f["rank"] == 1:
                    assert 1 <= n <= info["nradbase"]
                else:
                    assert np.any(np.asarray(doc["bonds"][(z, mu)]["radcoefficients"])[n - 1, l] != 0)


@pytest.mark.slow  # writes and checks a .yace: 13 s
def test_lean_round_trip_through_read_yace(full_model, tmp_path):
    """read_yace evaluates the ChebExpCos base analytically (torchace/model/pace/radial.py, checked against
    python-ace in tests/integration/test_yace_import.py): only the radial fit remains."""
    info = write_yace(full_model, str(tmp_path / "m.yace"), pair_table=str(tmp_path / "t.table"))
    assert info["radbasename"] == "ChebExpCos"
    pair_only = ace_model(["Si", "Ge"], order=3, totaldegree=7, r0=R0)
    pair_only.set_basis_scale(full_model.embedding.nl_scale.clone())
    c = full_model.coefficients.detach().clone()
    c[full_model.n_manybody:] = 0.0
    pair_only.coefficients = c
    with torch.no_grad():
        pair_only.E0.copy_(full_model.E0)
    structures = rattled_sige_cells()
    a = torchace.evaluate(pair_only, structures)
    b = torchace.evaluate(torchace.io.read_yace(info["yace"], pair_table=False), structures)  # the .yace alone
    for k in ("energy", "forces", "stress"):
        assert max_rel(b[k].numpy(), a[k].numpy()) <= 1e-10, k


# ------------------------------------------------------------------ torchace.export and the include file


def _lammps_commands(path, overrides=None):
    """The include file's commands with LAMMPS's variable semantics (``index`` variables keep a value given
    before, e.g. with ``-var`` on the command line): [(command, args)]."""
    var = dict(overrides or {})
    out = []
    with open(path) as fh:
        for line in fh:
            line = line.split("#")[0].strip()
            if not line:
                continue
            line = re.sub(r"\$\{(\w+)\}", lambda m: var[m.group(1)], line)
            words = line.split()
            if words[0] == "variable" and words[2] == "index":
                var.setdefault(words[1], words[3])
            out.append((words[0], words[1:]))
    return out


def _type_model(cmds):
    """(element per type from the pace line, {(I, J): (table file, keyword)}) of pair_coeff commands."""
    pace, tables = None, {}
    for cmd, args in cmds:
        if cmd != "pair_coeff":
            continue
        if args[:3] == ["*", "*", "pace"]:
            pace = args[4:]
        elif args[:2] == ["*", "*"]:
            pace = args[3:]
        else:
            assert args[2] == "table"
            tables[(int(args[0]), int(args[1]))] = (args[3], args[4])
    return pace, tables


@pytest.mark.slow  # writes and checks a .yace: 10 s
def test_export_returns_lines_paths_and_include(full_model, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    os.mkdir("out")
    res = torchace.export(full_model, os.path.join("out", "SiGe.yace"), format="yace")
    assert res == os.path.join("out", "SiGe.yace")                  # still the path, as before
    for p in (res.yace, res.pair_table, res.lammps_include):
        assert os.path.isabs(p) and os.path.isfile(p)
    assert res.lammps_include == str(tmp_path / "out" / "SiGe.lammps")
    assert res.lammps[0].startswith("pair_style hybrid/overlay pace table spline")
    text = open(res.lammps_include).read()
    assert [ln for ln in text.splitlines() if not ln.startswith("#")] == res.lammps
    assert "type 1 = Si, type 2 = Ge" in text
    assert "'pair_style pace' alone silently drops the pair part" in text
    assert "half of the pair energy" in text                          # per-atom energies
    # the element names appear only in the variable lines: pair_coeff lines cannot disagree with each other
    for line in res.lammps:
        if line.startswith("pair_coeff"):
            assert not re.search(r"\b(Si|Ge)\b", line.split(".table")[-1].split(".yace")[-1]), line
    pace, tables = _type_model(_lammps_commands(res.lammps_include))
    assert pace == ["Si", "Ge"]
    assert {k: v[1] for k, v in tables.items()} == {(1, 1): "Si_Si", (1, 2): "Si_Ge", (2, 2): "Ge_Ge"}
    assert all(f == res.pair_table for f, _ in tables.values())


@pytest.mark.slow  # writes and checks a .yace: 9-10 s
@pytest.mark.parametrize("how", ["lammps_types", "command_line"])
def test_other_type_order_is_consistent(full_model, tmp_path, how):
    """Atom types 1 = Ge, 2 = Si: re-exported with lammps_types, or the default include with the variables
    given on the LAMMPS command line; either way every line follows and the energy is torchace's."""
    if how == "lammps_types":
        info = write_yace(full_model, str(tmp_path / "m.yace"), lammps_types=["Ge", "Si"])
        cmds = _lammps_commands(info["lammps_include"])
    else:
        info = write_yace(full_model, str(tmp_path / "m.yace"))
        cmds = _lammps_commands(info["lammps_include"], {"torchace_type1": "Ge", "torchace_type2": "Si"})
    pace, tables = _type_model(cmds)
    assert pace == ["Ge", "Si"]
    sections = read_pair_table(info["pair_table"])
    for (i, j), (_, kw) in tables.items():
        assert kw == f"{pace[i - 1]}_{pace[j - 1]}" and kw in sections
    np.testing.assert_array_equal(sections["Ge_Si"][1], sections["Si_Ge"][1])
    if how == "lammps_types":
        assert info["lammps_types"] == ["Ge", "Si"]
    with pytest.raises(ValueError, match="lammps_types"):
        write_yace(full_model, str(tmp_path / "x.yace"), lammps_types=["Si", "C"])
    assert not (tmp_path / "x.yace").exists()


def test_include_without_pair_part(tmp_path):
    model = ace_model(["Si"], order=2, totaldegree=5, pair=False)
    model.coefficients = torch.randn(model.basis_size, dtype=torch.float64)
    res = torchace.export(model, str(tmp_path / "si.yace"), format="yace")
    assert res.pair_table is None and res.lammps[0] == "pair_style pace"
    pace, tables = _type_model(_lammps_commands(res.lammps_include))
    assert pace == ["Si"] and not tables
    assert (tmp_path / "si.lammps").exists()
    assert write_yace(model, str(tmp_path / "b.yace"), lammps_include=False)["lammps_include"] is None
    assert not (tmp_path / "b.lammps").exists()


# ------------------------------------------------------------------ the pair table and its core


def _table_vs_torchace(model, info):
    funcs = pair_energy_functions(model)
    tab = read_pair_table(info["pair_table"])
    rmin = info["pair"]["rmin"]
    for (a, b), U in funcs.items():
        r, E, F = tab[f"{model.elements[a]}_{model.elements[b]}"]
        rr = torch.tensor(r, dtype=torch.float64, requires_grad=True)
        u = U(rr)
        (du,) = torch.autograd.grad(u.sum(), rr)
        yield (a, b), r, E, F, u.detach().numpy(), -du.numpy(), rmin


@pytest.mark.slow  # writes and checks a .yace: 10 s
def test_table_is_torchace_in_range_and_a_repulsive_core_below(full_model, tmp_path):
    info = write_yace(full_model, str(tmp_path / "m.yace"))
    assert info["pair"]["core"] == "extension" and info["pair"]["r_inner"] <= 0.1
    for ab, r, E, F, u, f, rmin in _table_vs_torchace(full_model, info):
        fit = r >= rmin - 1e-12
        assert np.isclose(r[fit][0], rmin)
        assert max_rel(E[fit], u[fit]) <= 1e-12 and max_rel(F[fit], f[fit]) <= 1e-12, ab
        # continuous (C²) at rmin: one node below it the core is close to the continued pair energy, and the
        # second difference across rmin is the pair energy's
        k = int(np.argmax(fit))
        h = r[1] - r[0]
        assert abs(E[k - 1] - u[k - 1]) <= 1e-4 * (1.0 + abs(u[k])), ab
        assert abs(F[k - 1] - f[k - 1]) <= 1e-3 * (1.0 + abs(f[k])), ab
        d2, d2_ref = (E[k - 1] - 2 * E[k] + E[k + 1]) / h ** 2, (u[k - 1] - 2 * u[k] + u[k + 1]) / h ** 2
        assert abs(d2 - d2_ref) <= 0.1 * abs(d2_ref), (ab, d2, d2_ref)
        # repulsive: force pushes apart (F = −dE/dr > 0) below 0.9 rmin, energy rising towards r_inner
        deep = r < 0.9 * rmin
        assert np.all(F[deep] > 0) and np.all(np.diff(E[deep]) < 0), ab
        assert E[0] > E[fit][0] + 1000.0


def test_repulsive_core_is_c2_and_repulsive_for_either_slope():
    from torchace.model.zbl import zbl_unswitched

    r_lo = 0.6
    r = np.linspace(0.1, r_lo, 2001)[:-1]
    for U1 in (-50.0, 0.0, 800.0):                      # repulsive, flat and attractive pair energy at r_lo
        for U2 in (-4000.0, 300.0):
            E, dE = repulsive_core(1.5, U1, U2, r_lo, 14, 32, r)
            eps = 1e-5                                   # C² at r_lo: value, slope and curvature just below
            e_p, d_p = repulsive_core(1.5, U1, U2, r_lo, 14, 32, np.array([r_lo - eps, r_lo - 3 * eps]))
            assert abs(e_p[0] - (1.5 - U1 * eps + 0.5 * U2 * eps * eps)) < 1e-8 * (1 + abs(U1))
            assert abs(d_p[0] - (U1 - U2 * eps)) < 1e-3 * (1 + abs(U1))
            assert abs((d_p[0] - d_p[1]) / (2 * eps) - U2) < 0.05 * abs(U2)
            assert np.all(dE[r <= 0.9 * r_lo] < 0)
            assert E[0] > 0.5 * float(zbl_unswitched(0.1, 14, 32))            # a ZBL-sized wall at 0.1 Å
            np.testing.assert_allclose(np.gradient(E, r)[5:-5], dE[5:-5], rtol=1e-3, atol=1e-7 * np.abs(dE).max())


@pytest.mark.slow  # writes and checks a .yace: 10 s
def test_zbl_core_is_torchace(tmp_path):
    torch.manual_seed(5)
    model = ace_model(["Si", "Ge"], order=2, totaldegree=5, zbl=True)
    model.coefficients = 0.1 * torch.randn(model.basis_size, dtype=torch.float64)
    info = write_yace(model, str(tmp_path / "zbl.yace"))
    assert info["pair"]["core"] == "zbl"
    for ab, r, E, F, u, f, rmin in _table_vs_torchace(model, info):
        assert r[0] <= 0.1
        assert max_rel(E, u) <= 1e-12 and max_rel(F, f) <= 1e-12, ab
        assert np.all(F[r < rmin] > 0)


@pytest.mark.slow  # writes and checks a .yace: 22 s
def test_close_pair_is_evaluated(full_model, tmp_path):
    """A pair at 0.45 Å (inside the old table's 0.6 Å inner limit) no longer stops the evaluation."""
    from torchace.io.yace.pair_table import evaluate_pair_table

    info = write_yace(full_model, str(tmp_path / "m.yace"))
    at = rattled_sige_cells()[0]
    at.positions[1] = at.positions[0] + np.array([0.3, 0.2, 0.26])
    p = evaluate_pair_table(info["pair_table"], at, full_model.elements)
    p0 = evaluate_pair_table(info["pair_table"], rattled_sige_cells()[0], full_model.elements)
    assert np.isfinite(p["energy"]) and p["energy"] > p0["energy"] + 100.0
    info_old = write_yace(full_model, str(tmp_path / "old.yace"), pair_rcore=None)
    assert info_old["pair"]["r_inner"] == info_old["pair"]["rmin"]
    with pytest.raises(ValueError, match="below the table's inner end"):
        evaluate_pair_table(info_old["pair_table"], at, full_model.elements)


# ------------------------------------------------------------------ PyYAML and per-atom energies


def _numbers_typed(x):
    if isinstance(x, dict):
        return all(_numbers_typed(v) for v in x.values())
    if isinstance(x, list):
        return all(_numbers_typed(v) for v in x)
    if isinstance(x, str):
        try:
            float(x)
        except ValueError:
            return True
        return False                   # a number PyYAML read as a string
    return True


@pytest.mark.slow  # writes and checks a .yace: 9 s
def test_pyyaml_reads_the_file(full_model, tmp_path):
    model = ace_model(["Si", "Ge"], order=2, totaldegree=5)
    c = torch.randn(model.basis_size, dtype=torch.float64)
    c[: model.n_manybody // 2] *= 1e-6                    # coefficients like 1e-07 (repr without a '.')
    model.coefficients = c
    info = write_yace(model, str(tmp_path / "m.yace"), delta_spline_bins=1e-5 * 4)
    text = open(info["yace"]).read()
    assert re.search(r"\d\.\d*e-\d", text) and not re.search(r"[\s\[,]-?\d+e[-+]\d", text)
    doc = yaml.load(text, Loader=YaceLoader)
    assert _numbers_typed(doc)
    spec = parse_yace(info["yace"])
    assert doc["elements"] == spec.elements and doc["E0"] == spec.E0
    for (a, b), bond in doc["bonds"].items():
        crad = np.asarray(bond["radcoefficients"])
        np.testing.assert_array_equal(spec.crad[a, b, : crad.shape[0], : crad.shape[1], : crad.shape[2]], crad)
    for mu, fz in doc["functions"].items():
        assert [f["ctildes"] for f in fz] == [np.ravel(g["ctildes"]).tolist() for g in spec.functions[mu]]
    # plain yaml.safe_load reads everything except the bond keys (sequences, which ML-PACE requires)
    head, rest = text.split("bonds:\n")
    bonds, funcs = rest.split("functions:\n")
    plain = yaml.safe_load(head + "functions:\n" + funcs)
    assert plain == {k: v for k, v in doc.items() if k != "bonds"}
    for line in bonds.splitlines():
        key, value = line.split("]: ", 1)
        a, b = (int(x) for x in key.strip(" [").split(","))
        assert yaml.safe_load(value) == doc["bonds"][(a, b)]
    with pytest.raises(yaml.YAMLError, match="unhashable"):
        yaml.safe_load(text)


@pytest.mark.slow  # writes and checks a .yace: 12 s
def test_per_atom_energies(tmp_path):
    """ML-PACE's site energies + half of each table pair = torchace's site energies when the pair
    coefficients are symmetric (c_ab = c_ba); otherwise only the totals agree (docs/yace.md)."""
    _pyace()
    from ase.neighborlist import neighbor_list

    torch.manual_seed(2)
    for symmetric in (True, False):
        model = ace_model(["Si", "Ge"], order=2, totaldegree=5)
        c = torch.randn(model.basis_size, dtype=torch.float64)
        pair = c[model.n_manybody:].view(2, 2, model.n_pair)
        if symmetric:
            pair[1, 0] = pair[0, 1]
        model.coefficients = c
        info = write_yace(model, str(tmp_path / f"m{symmetric}.yace"))
        at = rattled_sige_cells()[0]
        (_, _, _, ea), = _pyace_plus_table(info, model, [at])
        tab = read_pair_table(info["pair_table"])
        i, j, d = neighbor_list("ijd", at, model.rcut)
        half = np.zeros(len(at))
        sym = at.get_chemical_symbols()
        for p, q, r in zip(i, j, d):
            rr, E, _ = tab[f"{sym[p]}_{sym[q]}"]
            half[p] += 0.5 * np.interp(r, rr, E)     # ½ U per ordered pair = ½ of each pair to each atom
        ref = torchace.evaluate(model, [at])["node_energy"].numpy()
        site = ea + half
        assert abs(site.sum() - ref.sum()) <= 1e-6 * abs(ref).sum()
        if symmetric:
            assert np.abs(site - ref).max() <= 1e-6 * np.abs(ref).max()
        else:
            assert np.abs(site - ref).max() > 1e-3


@pytest.mark.slow  # writes and checks a .yace: 10 s
def test_export_never_replaces_a_file_torchace_did_not_write(tmp_path):
    """Data-loss control: torchace.export(..., format="yace") onto the training data (or any other file) is
    refused before work and the file is unchanged; a torchace export may be replaced."""
    import hashlib

    import torchace
    from torchace.atomic import OutputPathError

    m = torchace.ace_model(["Si"], 2, 6)
    data = tmp_path / "train.yace"
    data.write_text("Si 0 0 0\n")
    before = hashlib.sha256(data.read_bytes()).hexdigest()
    with pytest.raises(OutputPathError, match="train.yace.*not a ML-PACE .yace written by torchace"):
        torchace.export(m, str(data), format="yace")
    assert hashlib.sha256(data.read_bytes()).hexdigest() == before
    table = tmp_path / "ok_pairpot.table"
    table.write_text("E=-10.0\n")
    with pytest.raises(OutputPathError, match="pair table"):
        torchace.export(m, str(tmp_path / "ok.yace"), format="yace")
    assert table.read_text() == "E=-10.0\n"
    table.unlink()
    torchace.export(m, str(tmp_path / "ok.yace"), format="yace")
    torchace.export(m, str(tmp_path / "ok.yace"), format="yace")  # replacing our own export is fine
