"""Issue 26, classes 8 and 9: documented bases build, and ``read_yace`` keeps the whole model.

Class 8: the harmonic-degree pre-check bounds l by what a kept product can hold (its l's must couple to an
invariant: the largest ≤ the sum of the others, so l ≤ (totaldegree − order/NZ)/(2·wL)), not by one factor
taking the whole degree; the documented bases (ACEpotentials.jl paper's ACE(sm)/ACE(lge), the order-4 bases
of the seed papers) build with their sizes, harmonics are evaluated only up to the l the basis uses, a basis
that truly needs l > 12 is still refused at once, and model files written with the former (longer) l axis
still load.
Class 9: ``read_yace`` of torchace's own export reads the pair table the ``.yace`` declares, so energies,
forces and stresses are the original model's; a missing table is an error, never half a model.
"""
from __future__ import annotations

import json
import os
import shutil
import time

import numpy as np
import pytest
import torch

import torchace
from torchace.basis.spec import MAX_L, max_coupled_l, product_spec, totaldegree_per_order
from torchace.io import read_yace
from torchace.model.state import ModelFileError
from torchace.testing import randomize_coefficients


def _max_l_used(model) -> int:
    return max(l for t in model.nl_of_b for _, l in t)


# ================================================================ class 8: documented bases build

@pytest.mark.parametrize("elements, order, td, size", [
    (["Si"], 3, [25, 21, 17], 1041),   # ACEpotentials.jl paper ACE(lge), docs/benchmarks.md (1016 + 25 pair)
    (["Si"], 3, [20, 16, 12], 319),    # ACE(sm), docs/benchmarks.md
    (["Si"], 3, 12, 223),              # README / ACEpotentials.jl ace1_model
    (["Mo"], 4, [25, 21, 17, 13], 1247),  # seed paper 004's Mo basis ("approximately 1200 basis functions")
    (["Si"], 4, 21, 7487),             # seed paper 000's Si basis (order 4, degree 21 for all orders)
])
def test_documented_bases_build(elements, order, td, size):
    t0 = time.perf_counter()
    m = torchace.ace_model(elements, order, td)
    assert time.perf_counter() - t0 < 20.0
    assert m.basis_size == size
    # harmonics only up to the l a basis function uses, and that is the bound the pre-check computes
    assert m.embedding.max_l == _max_l_used(m) == max_coupled_l(1, 1.5, totaldegree_per_order(order, td)) <= MAX_L


@pytest.mark.parametrize("nz, order, td, wL", [(1, 2, 6, 1.5), (2, 3, 8, 1.5), (1, 4, 10, 1.0), (3, 3, [9, 9, 7], 2.0),
                                               (1, 2, 38, 1.5)])
def test_bound_is_tight_and_every_product_has_an_invariant(nz, order, td, wL):
    """The spec keeps only products whose l's can couple to 0 (polygon condition); its largest l is the bound."""
    degrees = totaldegree_per_order(order, td)
    sp = product_spec(nz, order, td, wL)
    assert sp.max_l == max_coupled_l(nz, wL, degrees)
    for t in sp.nl_tuples:
        ls = [l for _, l in t]
        assert 2 * max(ls) <= sum(ls) and sum(ls) % 2 == 0, t


@pytest.mark.parametrize("nz, order, td, wL", [(1, 4, 20, 1.5), (2, 5, 12, 1.0), (3, 3, [9, 9, 7], 2.0)])
def test_product_count_estimate_counts_only_kept_products(nz, order, td, wL):
    """The refusal's count (no enumeration) is a lower bound of the kept products, polygon condition included:
    on the 1/(16·NZ) level grid it is exact here; it used to count products without an invariant too."""
    from torchace.basis.spec import estimate_products, one_particle_spec

    degrees = totaldegree_per_order(order, td)
    sp = product_spec(nz, order, td, wL)
    kept = sum(1 for t in sp.nl_tuples if len(t) > 1)
    assert estimate_products(nz, wL, degrees, one_particle_spec(nz, wL, degrees), 0) == kept


def test_linear_and_purified_models_keep_their_basis():
    """The basis is the same as before the fix (products without an invariant gave no basis function), and
    the embedding's l range is what the B's use (also with purification)."""
    assert torchace.ace_model(["Si"], 3, 12).n_b == 211
    assert torchace.ace_model(["Si", "Ge"], 3, 8).basis_size == 648
    m = torchace.ace_model(["Si"], 3, 8, pure2b=True)
    assert m.n_b == 54 and m.embedding.max_l >= _max_l_used(m)


@pytest.mark.parametrize("args, kw, numbers", [
    ((["Si"], 2, 42), {}, ("l = 13", "totaldegree 42 at order 2", "implemented up to l = 12", "wL >= 1.67")),
    ((["Si"], 3, [25, 60, 17]), {}, ("l = 19", "order 2")),
    ((["Si"], 3, 12), dict(wL=0.3), ("l = 16", "wL = 0.3")),
])
def test_truly_high_l_still_refused_at_once(args, kw, numbers):
    t0 = time.perf_counter()
    with pytest.raises(ValueError) as exc:
        torchace.ace_model(*args, **kw)
    assert time.perf_counter() - t0 < 2.0
    msg = str(exc.value)
    for n in numbers:
        assert n in msg, msg


def test_model_file_with_the_former_longer_l_axis_loads(tmp_path):
    """Files written before the fix carry nl_scale columns for l's no basis function uses: they load, the extra
    columns are dropped, the energies are those of the file; other shape errors are still refused."""
    from torchace.testing import rattled_bulk

    m = torchace.ace_model(["Si"], 3, 10)
    randomize_coefficients(m, 0.01, seed=3)
    g = torch.Generator().manual_seed(0)
    m.set_basis_scale(0.5 + torch.rand(m.embedding.nl_scale.shape, generator=g, dtype=torch.float64))
    at = rattled_bulk(["Si"])
    e = float(torchace.evaluate(m, at)["energy"][0])
    d = m.to_dict()
    d["nl_scale"] = [row + [7.0, 9.0] for row in d["nl_scale"]]   # the former l range: max_l 8 for this basis
    p = tmp_path / "old.json"
    p.write_text(json.dumps(d))
    back = torchace.load(str(p))
    assert back.embedding.nl_scale.shape == m.embedding.nl_scale.shape
    assert float(torchace.evaluate(back, at)["energy"][0]) == pytest.approx(e, rel=1e-12)
    d["nl_scale"] = [row[:2] for row in d["nl_scale"]]               # too short: corrupt
    p.write_text(json.dumps(d))
    with pytest.raises(ModelFileError, match=r"old\.json.*'nl_scale' has shape"):
        torchace.load(str(p))


def test_nonlinear_model_file_with_longer_radial_l_axis_loads(tmp_path):
    from torchace.testing import rattled_bulk

    m = torchace.nonlinear_ace_model(["Si"], 2, 6)
    with torch.no_grad():
        m.radials.weights.add_(0.05 * torch.randn(m.radials.weights.shape, dtype=m.radials.weights.dtype,
                                                  generator=torch.Generator().manual_seed(1)))
        m.density_coefficients.normal_(0.0, 0.1, generator=torch.Generator().manual_seed(2))
    at = rattled_bulk(["Si"])
    e = float(torchace.evaluate(m.eval(), at)["energy"][0])
    d = m.to_dict()
    w = np.asarray(d["radial_weights"])
    d["radial_weights"] = np.concatenate([w, np.ones(w.shape[:3] + (2,) + w.shape[4:])], axis=3).tolist()
    d["nl_scale"] = [row + [1.0, 1.0] for row in d["nl_scale"]]
    p = tmp_path / "old_nl.json"
    p.write_text(json.dumps(d))
    back = torchace.load(str(p))
    assert float(torchace.evaluate(back, at)["energy"][0]) == pytest.approx(e, rel=1e-12)


# ================================================================ class 9: read-back keeps the whole model

def _si64():
    from ase.build import bulk

    at = bulk("Si", "diamond", a=5.43, cubic=True).repeat(2)
    at.rattle(0.05, seed=4)
    return at


@pytest.fixture(scope="module")
def si_model():
    m = torchace.ace_model(["Si"], 2, 6, E0={"Si": -158.5})
    randomize_coefficients(m, 0.01, seed=1)
    with torch.no_grad():
        m.coefficients[m.n_manybody:] *= 50.0   # a pair part that matters (eV-scale per atom)
    return m


def _rel(a, b):
    return float((a - b).abs().max() / b.abs().max())


def _assert_same(model, back, structures, tol=1e-9):
    a, b = torchace.evaluate(model, structures), torchace.evaluate(back, structures)
    for k in ("energy", "forces", "stress"):
        assert _rel(b[k], a[k]) <= tol, (k, _rel(b[k], a[k]))


def test_read_yace_of_export_is_the_whole_model(si_model, tmp_path):
    at = _si64()
    info = torchace.export(si_model, str(tmp_path / "x.yace"), "yace")
    assert info.pair_table is not None
    back = read_yace(str(tmp_path / "x.yace"))
    _assert_same(si_model, back, [at])
    assert torchace.evaluate(torchace.load(str(tmp_path / "x.yace")), at)["energy"][0] == \
        pytest.approx(float(torchace.evaluate(si_model, at)["energy"][0]), rel=1e-12)
    # the .yace alone (pair_style pace without the table) is a different model: the test could fail
    half = torchace.evaluate(read_yace(str(tmp_path / "x.yace"), pair_table=False), at)
    full = torchace.evaluate(si_model, at)
    assert abs(float(half["energy"][0]) - float(full["energy"][0])) > 1.0


def test_read_yace_two_elements_zbl_and_a_table_elsewhere(tmp_path):
    """Mixed pairs (both orders), a ZBL baseline, a table in another folder given by name; the export's files
    moved together to another folder still read back (the declaration is relative to the .yace)."""
    from torchace.testing import rattled_sige_cells

    m = torchace.ace_model(["Si", "Ge"], 2, 5, r0=[[2.4, 2.3], [2.35, 2.5]], zbl=True)
    randomize_coefficients(m, 0.01, seed=5)
    (tmp_path / "tables").mkdir()
    write = torchace.io.write_yace(m, str(tmp_path / "sige.yace"), pair_table=str(tmp_path / "tables" / "p.table"))
    assert write["pair_table"] == str(tmp_path / "tables" / "p.table")
    cells = rattled_sige_cells()
    _assert_same(m, read_yace(str(tmp_path / "sige.yace")), cells)
    moved = tmp_path / "moved"
    (moved / "tables").mkdir(parents=True)
    shutil.copy(tmp_path / "sige.yace", moved / "sige.yace")
    shutil.copy(tmp_path / "tables" / "p.table", moved / "tables" / "p.table")
    os.remove(tmp_path / "tables" / "p.table")
    _assert_same(m, read_yace(str(moved / "sige.yace")), cells)


def test_missing_table_is_an_error_not_half_a_model(si_model, tmp_path):
    p = str(tmp_path / "x.yace")
    torchace.export(si_model, p, "yace")
    table = tmp_path / "x_pairpot.table"
    before = table.read_bytes()
    os.remove(table)
    for load in (read_yace, torchace.load):
        with pytest.raises(ModelFileError,
                           match=r"x\.yace: its pair part is in the LAMMPS pair table .*x_pairpot\.table"
                                 r".*pair_table=False"):
            load(p)
    # explicit choices: the table at another path, or the .yace alone
    (tmp_path / "elsewhere.table").write_bytes(before)
    _assert_same(si_model, read_yace(p, pair_table=str(tmp_path / "elsewhere.table")), [_si64()])
    assert read_yace(p, pair_table=False).pair is None


def test_model_without_pair_part_ignores_a_stale_table(si_model, tmp_path):
    """An export of a model without a pair part declares 'none': a table left beside it by an earlier export
    of another model is not added."""
    p = str(tmp_path / "x.yace")
    torchace.export(si_model, p, "yace")                    # writes x_pairpot.table
    m = torchace.ace_model(["Si"], 2, 6, pair=False)
    randomize_coefficients(m, 0.01, seed=2)
    info = torchace.export(m, p, "yace")                    # no pair part: the old table stays
    assert info.pair_table is None and os.path.exists(tmp_path / "x_pairpot.table")
    assert "# torchace pair table: none" in open(p).read()
    back = read_yace(p)
    assert back.pair is None
    _assert_same(m, back, [_si64()])


def _strip_declaration(path):
    text = open(path).read()
    lines = [ln for ln in text.splitlines() if not ln.startswith("# torchace pair table:")]
    assert len(lines) == len(text.splitlines()) - 1
    open(path, "w").write("\n".join(lines) + "\n")


def test_exports_of_older_torchace_versions(si_model, tmp_path):
    """Before the declaration: the default table beside the .yace is the export's; without one the include
    file tells whether there was a pair part; otherwise a clear refusal."""
    p = str(tmp_path / "x.yace")
    torchace.export(si_model, p, "yace")
    _strip_declaration(p)
    _assert_same(si_model, read_yace(p), [_si64()])
    os.remove(tmp_path / "x_pairpot.table")
    with pytest.raises(ModelFileError, match=r"x\.yace: written by an older torchace.*x_pairpot\.table.*pair_table="):
        read_yace(p)
    assert read_yace(p, pair_table=False).pair is None
    m = torchace.ace_model(["Si"], 2, 6, pair=False)
    q = str(tmp_path / "y.yace")
    torchace.export(m, q, "yace")                           # include file y.lammps: 'pair_style pace'
    _strip_declaration(q)
    assert read_yace(q).pair is None


@pytest.mark.parametrize("edit, match", [
    (lambda t: t[: len(t) // 3], r"p\.table"),
    (lambda t: t.replace("Si_Si", "Si_Xx", 1), r"p\.table: no section 'Si_Si'"),
    (lambda t: t.replace("\n1 ", "\n1 nan nan nan 0 # ", 1), r"p\.table"),
])
def test_broken_table_named(si_model, tmp_path, edit, match):
    p = str(tmp_path / "x.yace")
    torchace.io.write_yace(si_model, p, pair_table=str(tmp_path / "p.table"))
    t = tmp_path / "p.table"
    t.write_text(edit(t.read_text()))
    with pytest.raises(ModelFileError, match=match):
        read_yace(p)


def test_pair_closer_than_the_table_is_an_error(si_model, tmp_path):
    from ase import Atoms

    p = str(tmp_path / "x.yace")
    torchace.export(si_model, p, "yace", pair_rcore=None)   # the table starts at 0.25·r0
    back = read_yace(p)
    with pytest.raises(ValueError, match=r"x_pairpot\.table: pair distance 0\.3 Å is below the inner end"):
        torchace.evaluate(back, Atoms("Si2", positions=[[0, 0, 0], [0.3, 0, 0]]))


def test_hermite_is_the_file_reading_of_evaluate_pair_table(si_model, tmp_path):
    """The read-back model and the independent reader of the table (evaluate_pair_table) use one formula."""
    from torchace.io.yace.pair_table import evaluate_pair_table

    p = str(tmp_path / "x.yace")
    info = torchace.export(si_model, p, "yace")
    at = _si64()
    whole = torchace.evaluate(read_yace(p), at)
    half = torchace.evaluate(read_yace(p, pair_table=False), at)
    ref = evaluate_pair_table(info.pair_table, at, si_model.elements)
    assert float(whole["energy"][0] - half["energy"][0]) == pytest.approx(ref["energy"], rel=1e-12, abs=1e-10)
    assert np.abs((whole["forces"] - half["forces"]).numpy() - ref["forces"]).max() < 1e-10
