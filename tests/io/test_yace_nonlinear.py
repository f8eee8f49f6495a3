"""``.yace`` export of the nonlinear ACE model (``ACEModel``, docs/nonlinear.md, docs/yace.md).

Reference: python-ace's C++ evaluator (``PyACECalculator``, the ML-PACE core of LAMMPS ``pair_style pace``)
reading the exported file, plus the pair table read by ``evaluate_pair_table``; energies, forces and stresses
must equal ``torchace.evaluate(model, atoms, backend="analytic")`` to 1e-8 relative, the tolerance of the
linear export tests (tests/io/test_yace_export.py).  Models: P = 2 (pacemaker's FS [1, 1, 1, 0.5]) and P = 3
(explicit, per-element FS parameters) with random densities scaled to |ρ| ~ 1.5 on the test cells, learned
radials W = identity + small random, a random prior scale, random pair coefficients and E0.  Also: the
export of a P = 1, embedding None, fixed-radials model is the export of its ``linear_model()``; torchace's
own reader (``read_yace``) gives the same numbers back; the MLP embedding is refused.
"""
from __future__ import annotations

import contextlib
import copy

import numpy as np
import pytest
import torch
import yaml

import torchace
from torchace import keys as K
from torchace.config import ACEConfig
from torchace.io import read_yace, write_yace
from torchace.io.yace.pair_table import evaluate_pair_table
from torchace.io.yace.read import YaceLoader, parse_yace
from torchace.model import ACEModel, nonlinear_ace_model
from torchace.structures import collate
from torchace.structures.geometry import edge_vectors
from torchace.testing import max_rel, rattled_sige_cells

TOL = 1e-8
R0 = [[2.4, 2.3], [2.35, 2.5]]   # not symmetric: U_ab combines the (a, b) and (b, a) pair blocks
FS3 = [[1.0, 1.0, 0.7, 0.5, -0.4, 1.5],      # Si: ρ_1 + 0.7 f(ρ_2; ½) − 0.4 f(ρ_3; 3/2)
       [0.9, 1.0, 0.5, 0.75, 0.3, 2.0]]      # Ge


@pytest.fixture(scope="module", autouse=True)
def one_blas_thread():
    """The radial fit's QR and products are small: on a loaded 2-core machine OpenBLAS's threads only wait on
    each other (a 680 × 160 QR: 18 ms on one thread, seconds on two), so the module runs with one when
    threadpoolctl is there."""
    try:
        from threadpoolctl import threadpool_limits
    except ImportError:
        limits = contextlib.nullcontext()
    else:
        limits = threadpool_limits(1, user_api="blas")
    with limits:
        yield


def _pyace():
    return pytest.importorskip("pyace")


def _si_cells():
    cells = rattled_sige_cells()
    for at in cells:
        at.numbers[:] = 14
    return cells


def _densities(model, structures):
    b = collate(structures, model.config.numbers, model.rcut, dtype=torch.float64)
    with torch.no_grad():
        v = edge_vectors(b["positions"], b["edge_index"], b["unit_shifts"], b["cell"], b["batch"])
        return model.site_densities(v, b["species"], b["edge_index"])


def _randomize(model, structures, seed, rho=1.5, radial_noise=0.05, pair=0.1, E0=(-1.25, -2.5)):
    """Random densities with mean |ρ_p| = ``rho`` on ``structures``, W = I + noise, random pair part and E0,
    a random per-(n, l) prior scale (folded into c̃, or inside the learned radials)."""
    g = torch.Generator().manual_seed(seed)
    model.set_basis_scale(nl_scale=0.5 + torch.rand(model.embedding.nl_scale.shape, generator=g, dtype=torch.float64))
    with torch.no_grad():
        model.density_coefficients.copy_(torch.randn(model.density_coefficients.shape, generator=g,
                                                     dtype=torch.float64))
        model.pair_coefficients.copy_(pair * torch.randn(model.pair_coefficients.shape, generator=g,
                                                         dtype=torch.float64))
        model.E0.copy_(torch.tensor(E0[: model.nz], dtype=torch.float64))
        if model.radials is not None:
            model.radials.weights.add_(radial_noise * torch.randn(model.radials.shape, generator=g,
                                                                  dtype=torch.float64))
        scale = rho / _densities(model, structures).abs().mean(0)
        model.density_coefficients.mul_(scale.view(-1, 1, 1))
    return model.eval()


def _compare(model, info, structures):
    """pyace (+ pair table) against torchace's analytic path; returns the max relative differences (E, F, σ)."""
    ref = torchace.evaluate(model, structures, backend="analytic")
    calc = _pyace().PyACECalculator(info["yace"])
    worst = np.zeros(3)
    off = 0
    for s, at in enumerate(structures):
        n = len(at)
        at = at.copy()
        at.calc = calc
        e, f, st = at.get_potential_energy(), at.get_forces(), at.get_stress()
        if info["pair_table"] is not None:
            p = evaluate_pair_table(info["pair_table"], at, model.elements)
            e, f, st = e + p["energy"], f + p["forces"], st + p["stress"]
        e_ref = float(ref["energy"][s])
        errs = (abs(e - e_ref) / abs(e_ref), max_rel(f, ref["forces"][off:off + n].numpy()),
                max_rel(st, K.to_voigt(ref["stress"][s].numpy())))
        off += n
        assert max(errs) <= TOL, (s, errs)
        worst = np.maximum(worst, errs)
    print(f"max relative difference pyace vs torchace: E {worst[0]:.1e}, F {worst[1]:.1e}, stress {worst[2]:.1e}")
    return worst


@pytest.fixture(scope="module")
def si_p2():
    """Si order 3, pacemaker's two-density FS [1, 1, 1, 0.5], learned radials."""
    model = nonlinear_ace_model(["Si"], 3, 7, densities=2, fs_parameters=[1, 1, 1, 0.5], learnable_radials=True)
    return _randomize(model, _si_cells(), seed=1)


@pytest.fixture(scope="module")
def sige_p3():
    """Si/Ge order 3, three densities with per-element FS parameters, learned radials, asymmetric pair r0."""
    model = nonlinear_ace_model(["Si", "Ge"], 3, 5, densities=3, fs_parameters=FS3, learnable_radials=True, r0=R0)
    return _randomize(model, rattled_sige_cells(), seed=2)


def test_si_two_densities_learned_radials_match_pyace(si_p2, tmp_path):
    rho = _densities(si_p2, _si_cells())
    assert 0.5 < float(rho.abs().max()) < 10.0
    info = write_yace(si_p2, str(tmp_path / "si_p2.yace"))
    assert info["ndensity"] == 2 and info["fs_parameters"] == [[1.0, 1.0, 1.0, 0.5]]
    assert info["radial_error"] <= 1e-11 and info["pair_table"] is not None
    _compare(si_p2, info, _si_cells())


@pytest.mark.slow  # writes and checks a .yace: 8 s
def test_sige_three_densities_match_pyace_lean_and_full_grid(sige_p3, tmp_path):
    rho = _densities(sige_p3, rattled_sige_cells())
    assert bool((rho < 0).any()) and bool((rho > 0).any())           # both branches of the odd f
    lean = write_yace(sige_p3, str(tmp_path / "lean.yace"))
    full = write_yace(sige_p3, str(tmp_path / "full.yace"), lean=False)
    assert lean["fs_parameters"] == FS3 and lean["ndensity"] == 3
    assert lean["splines_per_neighbour"] < full["splines_per_neighbour"]
    assert lean["radial_error"] <= 1e-11 and full["radial_error"] <= 1e-11
    with open(lean["yace"]) as fh:
        doc = yaml.load(fh, Loader=YaceLoader)
    for z in range(2):
        emb = doc["embeddings"][z]
        assert emb["ndensity"] == 3 and emb["FS_parameters"] == FS3[z]
        assert emb["npoti"] == "FinnisSinclairShiftedScaled"
        assert all(len(f["ctildes"]) == 3 * f["num_ms_combs"] and f["ndensity"] == 3 for f in doc["functions"][z])
    # learned radials depend on l: some bond has two different l rows for one n
    crad = np.asarray(doc["bonds"][(0, 1)]["radcoefficients"])
    assert np.abs(crad[0, 0] - crad[0, 1]).max() > 1e-3
    _compare(sige_p3, lean, rattled_sige_cells())
    _compare(sige_p3, full, rattled_sige_cells())


@pytest.mark.slow  # writes and checks a .yace: 11 s
def test_fixed_radials_pure2b_zbl_match_pyace(tmp_path):
    """Fixed radials (the prior scale folded into c̃), a purified coupling and a ZBL baseline in the table."""
    cells = rattled_sige_cells()
    for at in cells:                     # a pair inside the ZBL range
        at.positions[1] = at.positions[0] + np.array([1.2, 0.9, 0.8])
    model = nonlinear_ace_model(["Si", "Ge"], 3, 5, densities=2, learnable_radials=False, pure2b=True, zbl=True)
    _randomize(model, cells, seed=3)
    info = write_yace(model, str(tmp_path / "fixed.yace"))
    _compare(model, info, cells)


@pytest.mark.slow  # writes and checks a .yace: 7 s
def test_linear_limit_exports_the_linear_model(tmp_path):
    """P = 1, no embedding, fixed radials: the same files as the export of ``model.linear_model()``."""
    cfg = ACEConfig.build(["Si", "Ge"], 3, 5, r0=R0)
    model = _randomize(ACEModel(cfg), rattled_sige_cells(), seed=4)
    a = write_yace(model, str(tmp_path / "nl.yace"))
    b = write_yace(model.linear_model(), str(tmp_path / "lin.yace"))

    def body(path):
        with open(path) as fh:
            return [line for line in fh if not line.startswith("#")]

    assert body(a["yace"]) == body(b["yace"])
    assert body(a["pair_table"]) == body(b["pair_table"])
    assert a["lammps"][0] == b["lammps"][0] and a["nradbase"] == b["nradbase"]
    assert "ndensity: 1, FS_parameters: [1, 1]," in "".join(body(a["yace"]))


@pytest.mark.slow  # writes and checks a .yace: 10 s
def test_read_back_with_torchace_reader(sige_p3, tmp_path):
    """``read_yace`` (analytic radials, ndensity > 1 and FS parameters as in the file) + the pair table give
    the model back: only the radial fit (1e-11) and the table's interpolation remain."""
    info = write_yace(sige_p3, str(tmp_path / "rt.yace"))
    spec = parse_yace(info["yace"])
    assert spec.ndensity == [3, 3] and spec.fs_parameters == FS3
    assert spec.npoti == ["FinnisSinclairShiftedScaled"] * 2
    back = read_yace(info["yace"], pair_table=False)   # the .yace alone; the table is read independently below
    structures = rattled_sige_cells()
    a = torchace.evaluate(sige_p3, structures, backend="analytic")
    b = torchace.evaluate(back, structures)
    whole = torchace.evaluate(read_yace(info["yace"]), structures)  # the default: with the declared pair table
    for k in ("energy", "forces", "stress"):
        assert max_rel(whole[k].numpy(), a[k].numpy()) <= 1e-10, k
    off = 0
    for s, at in enumerate(structures):
        n = len(at)
        p = evaluate_pair_table(info["pair_table"], at, sige_p3.elements)
        assert abs(float(b["energy"][s]) + p["energy"] - float(a["energy"][s])) <= 1e-10 * abs(float(a["energy"][s]))
        assert max_rel(b["forces"][off:off + n].numpy() + p["forces"], a["forces"][off:off + n].numpy()) <= 1e-10
        assert max_rel(K.to_voigt(b["stress"][s].numpy()) + p["stress"], K.to_voigt(a["stress"][s].numpy())) <= 1e-10
        off += n


@pytest.mark.slow  # writes and checks a .yace: 8 s
def test_export_entry_point_and_float32(si_p2, tmp_path):
    """``torchace.export(format="yace")`` takes the nonlinear model; a float32 model is exported from a float64
    rebuild and left unchanged."""
    m32 = copy.deepcopy(si_p2).to(torch.float32)
    res = torchace.export(m32, str(tmp_path / "m32.yace"), format="yace")
    assert res.info["ndensity"] == 2 and m32.density_coefficients.dtype == torch.float32
    cells = _si_cells()[:1]
    a = torchace.evaluate(si_p2, cells, backend="analytic")
    b = torchace.evaluate(read_yace(res.yace, pair_table=False), cells)
    p = evaluate_pair_table(res.pair_table, cells[0], si_p2.elements)
    assert abs(float(b["energy"][0]) + p["energy"] - float(a["energy"][0])) <= 1e-5 * abs(float(a["energy"][0]))


def test_mlp_embedding_is_refused(tmp_path):
    model = nonlinear_ace_model(["Si"], 2, 4, densities=2, embedding="mlp", learnable_radials=False)
    path = tmp_path / "mlp.yace"
    with pytest.raises(ValueError, match=r"'mlp' embedding.*torch only.*format='torchscript'.*metatomic.*"
                                         r"embedding='fs'"):
        write_yace(model, str(path))
    with pytest.raises(ValueError, match="torch only"):
        torchace.export(model, str(path), format="yace")
    assert not path.exists()


def test_pacemaker_written_nonlinear_file_reads_back(tmp_path):
    """A three-density FinnisSinclairShiftedScaled .yace written by python-ace the way pacemaker's
    ``pace_yaml2yace`` writes it (B-basis → ``to_ACECTildeBasisSet().save_yaml``; random function and radial
    coefficients), read by torchace's ``read_yace``: energies, forces, stresses = python-ace's to 1e-8.  (No
    pacemaker-fitted nonlinear file is in ../shared/data; its .yace files have ndensity 1.)"""
    pyace = _pyace()
    from pyace import create_multispecies_basis_config
    from pyace.basis import ACEBBasisSet

    bc = create_multispecies_basis_config({
        "deltaSplineBins": 1e-4, "elements": ["Si", "Ge"],
        "embeddings": {"ALL": {"npot": "FinnisSinclairShiftedScaled", "fs_parameters": [1, 1, 1, 0.5, 0.6, 1.5],
                               "ndensity": 3}},
        "bonds": {"ALL": {"radbase": "ChebExpCos", "radparameters": [5.25], "rcut": 5.0, "dcut": 0.01}},
        "functions": {"ALL": {"nradmax_by_orders": [6, 3, 2], "lmax_by_orders": [0, 2, 1]}}})
    rng = np.random.default_rng(0)
    bc.set_func_coeffs(list(0.3 * rng.standard_normal(len(bc.get_func_coeffs()))))
    crad = np.asarray(bc.get_radial_coeffs())
    per_bond = crad.size // 4            # the (a, b) and (b, a) bonds must stay equal: the same noise for each
    bc.set_radial_coeffs(list(crad + np.tile(0.2 * rng.standard_normal(per_bond), 4)))
    path = str(tmp_path / "pace3.yace")
    ACEBBasisSet(bc).to_ACECTildeBasisSet().save_yaml(path)
    spec = parse_yace(path)
    assert spec.ndensity == [3, 3] and spec.fs_parameters == [[1.0, 1.0, 1.0, 0.5, 0.6, 1.5]] * 2
    model = read_yace(path)
    structures = rattled_sige_cells()
    out = torchace.evaluate(model, structures)
    calc = pyace.PyACECalculator(path)
    off = 0
    for s, at in enumerate(structures):
        n = len(at)
        at = at.copy()
        at.calc = calc
        e = at.get_potential_energy()
        assert abs(float(out["energy"][s]) - e) <= TOL * abs(e)
        assert max_rel(out["forces"][off:off + n].numpy(), at.get_forces()) <= TOL
        assert max_rel(K.to_voigt(out["stress"][s].numpy()), at.get_stress()) <= TOL
        off += n
