"""``.yace`` export checked against python-ace's C++ evaluator (the evaluator core of LAMMPS ML-PACE).

The reference is pyace's ``PyACECalculator`` reading the exported file: energies, forces and stresses
of rattled periodic Si/Ge cells (cubic and triclinic) must agree with ``torchace.evaluate`` to 1e-8
relative.  The pair part (and a ZBL baseline) goes into a LAMMPS pair table, read back by
``evaluate_pair_table`` (cubic Hermite in the file's E and F columns), which must reproduce torchace's
pair energy to the same tolerance.  Without python-ace, the exported file is still read back with
torchace's own ``.yace`` reader (``read_yace``, analytic radials, itself checked against python-ace in
tests/integration/test_yace_import.py), which isolates the radial fit from ML-PACE's spline tabulation.
"""
from __future__ import annotations

import numpy as np
import pytest
import torch

import torchace
from torchace.io import read_yace, write_yace
from torchace.io.yace.ctilde import complex_sph, real_to_complex_matrices
from torchace.io.yace.pair_table import evaluate_pair_table
from torchace.model import ace_model
from torchace.testing import rattled_sige_cells


def _pyace():
    return pytest.importorskip("pyace")

TOL = 1e-8
# r0 per ordered pair, deliberately not symmetric: U_ab must combine the (a, b) and (b, a) pair blocks
R0 = [[2.4, 2.3], [2.35, 2.5]]


def _voigt(s):
    s = np.asarray(s)
    return np.array([s[0, 0], s[1, 1], s[2, 2], s[1, 2], s[0, 2], s[0, 1]])


def _rel(a, b):
    return float(np.abs(np.asarray(a) - np.asarray(b)).max() / np.abs(np.asarray(b)).max())


def _compare(model, info, structures, with_yace=True, with_table=True):
    ref = torchace.evaluate(model, structures)
    calc = _pyace().PyACECalculator(info["yace"]) if with_yace else None
    off = 0
    for s, at in enumerate(structures):
        n = len(at)
        e, f, st = 0.0, np.zeros((n, 3)), np.zeros(6)
        if with_yace:
            at = at.copy()
            at.calc = calc
            e, f, st = at.get_potential_energy(), at.get_forces(), at.get_stress()
        if with_table:
            p = evaluate_pair_table(info["pair_table"], at, model.elements)
            e, f, st = e + p["energy"], f + p["forces"], st + p["stress"]
        e_ref = float(ref["energy"][s])
        f_ref = ref["forces"][off:off + n].numpy()
        s_ref = _voigt(ref["stress"][s].numpy())
        off += n
        assert abs(e - e_ref) <= TOL * abs(e_ref), (s, e, e_ref)
        assert _rel(f, f_ref) <= TOL, (s, _rel(f, f_ref))
        assert _rel(st, s_ref) <= TOL, (s, _rel(st, s_ref))


@pytest.fixture(scope="module")
def sige_model():
    torch.manual_seed(3)
    model = ace_model(["Si", "Ge"], order=3, totaldegree=7)
    # a non-trivial per-(n, l) basis scale, as after a fit with a smoothness prior: it must be folded in
    model.set_basis_scale(nl_scale=0.5 + torch.rand_like(model.embedding.nl_scale))
    c = torch.randn(model.basis_size, dtype=torch.float64)
    c[model.n_manybody:] = 0.0
    model.coefficients = c
    model.E0.copy_(torch.tensor([-158.54, -104.3]))
    return model


@pytest.mark.slow  # writes and checks a .yace: 8 s
def test_manybody_matches_pyace(sige_model, tmp_path):
    info = write_yace(sige_model, str(tmp_path / "sige.yace"))
    assert info["pair_table"] is None               # no pair coefficients, no baseline: no table
    assert info["lammps"][0] == "pair_style pace"
    _compare(sige_model, info, rattled_sige_cells(), with_table=False)


@pytest.mark.slow  # writes and checks a .yace: 11 s
def test_round_trip_through_read_yace(sige_model, tmp_path):
    info = write_yace(sige_model, str(tmp_path / "rt.yace"))
    back = read_yace(info["yace"])
    structures = rattled_sige_cells()
    a = torchace.evaluate(sige_model, structures)
    b = torchace.evaluate(back, structures)
    # no spline tabulation on this path: only the ChebPow fit of the radials (radial_tol = 1e-11) remains
    assert _rel(b["energy"].numpy(), a["energy"].numpy()) <= 1e-10
    assert _rel(b["forces"].numpy(), a["forces"].numpy()) <= 1e-10
    assert _rel(b["stress"].numpy(), a["stress"].numpy()) <= 1e-10


def test_order4_single_element_matches_pyace(tmp_path):
    torch.manual_seed(6)
    model = ace_model(["Si"], order=4, totaldegree=8)
    c = torch.randn(model.basis_size, dtype=torch.float64)
    c[model.n_manybody:] = 0.0
    model.coefficients = c
    info = write_yace(model, str(tmp_path / "si4.yace"))
    cells = rattled_sige_cells()
    for at in cells:
        at.numbers[:] = 14
    _compare(model, info, cells, with_table=False)


@pytest.mark.slow  # writes and checks a .yace: 13 s
def test_pair_table_and_total(tmp_path):
    torch.manual_seed(4)
    model = ace_model(["Si", "Ge"], order=2, totaldegree=6, r0=R0)
    model.coefficients = torch.randn(model.basis_size, dtype=torch.float64)
    model.E0.copy_(torch.tensor([-1.0, -2.0]))
    info = write_yace(model, str(tmp_path / "full.yace"))
    assert info["pair_table"] is not None
    assert info["lammps"][0].startswith("pair_style hybrid/overlay pace table")
    structures = rattled_sige_cells()
    _compare(model, info, structures)                          # pyace + table = torchace

    # the table alone against torchace's pair energy (many-body coefficients and E0 zeroed)
    pair_only = ace_model(["Si", "Ge"], order=2, totaldegree=6, r0=R0)
    c = model.coefficients.detach().clone()
    c[: model.n_manybody] = 0.0
    pair_only.coefficients = c
    _compare(pair_only, info, structures, with_yace=False)


@pytest.mark.slow  # writes and checks a .yace: 9 s
def test_zbl_baseline_goes_into_the_table(tmp_path):
    torch.manual_seed(5)
    model = ace_model(["Si", "Ge"], order=2, totaldegree=5, zbl=True)
    model.coefficients = 0.1 * torch.randn(model.basis_size, dtype=torch.float64)
    info = write_yace(model, str(tmp_path / "zbl.yace"))
    cells = rattled_sige_cells()
    for at in cells:                     # bring a pair inside the ZBL range (r < r0)
        at.positions[1] = at.positions[0] + np.array([1.2, 0.9, 0.8])
    _compare(model, info, cells)


def test_spherical_harmonics_convention():
    """ML-PACE's Y: √(4π)·Condon–Shortley orthonormal; e3nn's real Y are a unitary/√(4π) change of basis."""
    from e3nn import o3

    rng = np.random.default_rng(0)
    v = rng.normal(size=(3000, 3))
    u = v / np.linalg.norm(v, axis=1, keepdims=True)
    # closed forms: Y_1^0 = √3 cosθ, Y_1^{±1} = ∓√(3/2) sinθ e^{±iφ} (times √(4π)/√(4π))
    y1 = complex_sph(1, v)
    np.testing.assert_allclose(y1[:, 1], np.sqrt(3) * u[:, 2], atol=1e-13)
    np.testing.assert_allclose(y1[:, 2], -np.sqrt(1.5) * (u[:, 0] + 1j * u[:, 1]), atol=1e-13)
    np.testing.assert_allclose(y1[:, 0], np.sqrt(1.5) * (u[:, 0] - 1j * u[:, 1]), atol=1e-13)
    # Monte-Carlo orthogonality on the sphere: ⟨Y_l^μ conj(Y_l^ν)⟩ = δ_μν for the √(4π)-scaled functions
    y4 = complex_sph(4, u)
    gram = y4.T @ y4.conj() / len(u)
    np.testing.assert_allclose(gram, np.eye(9), atol=0.15)
    sh = o3.SphericalHarmonics(list(range(5)), normalize=True, normalization="integral")
    for l, W in enumerate(real_to_complex_matrices(sh, 4)):
        np.testing.assert_allclose(W.conj().T @ W * 4 * np.pi, np.eye(2 * l + 1), atol=1e-12)


@pytest.mark.slow  # writes and checks a .yace: 10 s
def test_export_entry_point_metadata_and_float32(sige_model, tmp_path):
    """torchace.export(format="yace") passes metadata through; a float32 model is exported from a float64
    copy and left unchanged."""
    import copy

    m32 = copy.deepcopy(sige_model).to(torch.float32)
    path = str(tmp_path / "m32.yace")
    torchace.export(m32, path, format="yace", metadata={"fit": "test", "n": 3})
    assert m32.coefficients.dtype == torch.float32
    with open(path) as fh:
        head = [next(fh) for _ in range(2)]
    assert head[1].startswith("# metadata: ") and '"fit": "test"' in head[1]
    back = read_yace(path)
    structures = rattled_sige_cells()[:1]
    a = torchace.evaluate(sige_model, structures)
    b = torchace.evaluate(back, structures)
    # float32 coefficients: agreement to float32 rounding of c, not better
    assert _rel(b["energy"].numpy(), a["energy"].numpy()) <= 1e-5


def test_bad_input(sige_model, tmp_path):
    with pytest.raises(ValueError, match=r"\.yace"):
        write_yace(sige_model, str(tmp_path / "model.json"))
    with pytest.raises(TypeError, match="ACEModel"):
        write_yace(object(), str(tmp_path / "m.yace"))
    with pytest.raises(ValueError, match="delta_spline_bins"):
        write_yace(sige_model, str(tmp_path / "m.yace"), delta_spline_bins=0.0)
    with pytest.raises(ValueError, match="metadata"):
        write_yace(sige_model, str(tmp_path / "m.yace"), metadata={"x": object()})
    assert not (tmp_path / "m.yace").exists()


@pytest.mark.slow  # writes and checks a .yace: 16-19 s
@pytest.mark.parametrize("purify", ["pure2b", "pure"])
def test_purified_model_exports(tmp_path, purify):
    """Purification only changes the coupling and the AA list: the C-tilde export must follow it."""
    _pyace()
    from torchace.testing import randomize_coefficients

    model = ace_model(["Si", "Ge"], 3, 6, **{purify: True})
    randomize_coefficients(model, 0.3, seed=1)
    info = torchace.io.write_yace(model, str(tmp_path / f"{purify}.yace"))
    _compare(model, info, rattled_sige_cells())
