"""``torchace.io.read_yace``: ML-PACE .yace potentials evaluated in torch.

Checked against things we did not write: python-ace's C++ evaluator (the ML-PACE core of LAMMPS
``pair_style pace``) through the stored reference values in ``../shared/data/yace`` and, when python-ace
is installed, live on rattled cells, including variants of a pacemaker file with every supported radial
basis, several densities, both Finnis–Sinclair embeddings and the core repulsion; finite differences;
rotation invariance.  ML-PACE tabulates its radial functions (cubic Hermite splines, ``deltaSplineBins``);
torchace evaluates them analytically, so the generated variants use a 1e-4 Å grid to keep the
reference's spline error below the tolerances.
"""
from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch
import yaml
from ase import Atoms
from ase.stress import full_3x3_to_voigt_6_stress

import torchace
from torchace import keys as K
from torchace.io import read_yace
from torchace.io.yace.read import _Loader
from torchace.testing import fd_forces, fd_virial, random_cluster, random_rotation, rattled_bulk

DATA = Path(__file__).resolve().parents[2].parent / "shared" / "data" / "yace"
SIGE = DATA / "sige_linear_sbessel.yace"
SI = DATA / "si_chebexpcos.yace"

needs_data = pytest.mark.skipif(not SIGE.exists(), reason="reference data ../shared/data/yace not available")


def _load_doc(path):
    with open(path) as fh:
        return yaml.load(fh, Loader=_Loader)


def _write_yace(doc, path):
    """Write a .yace in ML-PACE's layout (flow style, ``[i, j]:`` bond keys) that python-ace reads."""
    fl = lambda v: yaml.safe_dump(v, default_flow_style=True, width=10 ** 9).strip()  # noqa: E731
    lines = [f"elements: {fl(doc['elements'])}", f"E0: {fl(doc.get('E0', [0.0] * len(doc['elements'])))}",
             f"deltaSplineBins: {doc['deltaSplineBins']}", "embeddings:"]
    lines += [f"  {k}: {fl(v)}" for k, v in doc["embeddings"].items()]
    lines.append("bonds:")
    lines += [f"  [{k[0]}, {k[1]}]: {fl(v)}" for k, v in doc["bonds"].items()]
    lines.append("functions:")
    for k, lst in doc["functions"].items():
        lines.append(f"  {k}:")
        lines += [f"    - {fl(f)}" for f in lst]
    Path(path).write_text("\n".join(lines) + "\n")


def _stress_voigt(out):
    return full_3x3_to_voigt_6_stress(out[K.STRESS][0].cpu().numpy())


# ------------------------------------------------------------------ stored python-ace references
@needs_data
@pytest.mark.parametrize("k", [0, 1])
def test_sige_sbessel_matches_stored_pace_reference(k, device):
    ref = np.load(DATA / f"sige_linear_sbessel_ref{k}.npz")
    atoms = Atoms(numbers=ref["numbers"], positions=ref["positions"], cell=ref["cell"], pbc=ref["pbc"])
    model = read_yace(SIGE, device=device)
    out = torchace.evaluate(model, atoms)
    assert abs(float(out[K.ENERGY][0]) - float(ref["energy"])) <= 1e-8
    # the reference's radial splines (1e-3 Å grid) put ≈1e-9 eV/Å into its forces
    assert np.abs(out[K.FORCES].cpu().numpy() - ref["forces"]).max() <= 1e-8
    assert np.abs(_stress_voigt(out) - ref["stress_voigt"]).max() <= 1e-9


# ------------------------------------------------------------------ live python-ace comparisons
def _si_cells():
    return [rattled_bulk(["Si"], rattle=0.15, seed=s, reps=(1, 1, 2)) for s in range(2)]


def _compare_with_pace(path, cells, stress=True, ftol=1e-8):
    pyace = pytest.importorskip("pyace")
    model = read_yace(path)
    calc = pyace.PyACECalculator(str(path))
    for at in cells:
        at = at.copy()
        at.calc = calc
        out = torchace.evaluate(model, at)
        assert abs(float(out[K.ENERGY][0]) - at.get_potential_energy()) <= 1e-8
        f = at.get_forces()
        assert np.abs(out[K.FORCES].numpy() - f).max() <= ftol * max(1.0, np.abs(f).max())
        if stress:
            assert np.abs(_stress_voigt(out) - at.get_stress()).max() <= 1e-9
        calc.reset()


@needs_data
def test_si_chebexpcos_matches_pace():
    _compare_with_pace(SI, _si_cells())


def _variant(tmp_path, name, edit):
    doc = _load_doc(SI)
    doc["deltaSplineBins"] = 1e-4
    edit(doc)
    path = tmp_path / f"{name}.yace"
    _write_yace(doc, path)
    return path


def _radial(name, lam):
    def edit(doc):
        doc["bonds"][(0, 0)].update(radbasename=name, radparameters=[lam])
    return edit


def _densities(P, kind):
    def edit(doc):
        rng = np.random.default_rng(P)
        doc["embeddings"][0].update(ndensity=P, npoti=kind, FS_parameters=[1.0, 1.0, 0.7, 0.5, -0.4, 1.5][: 2 * P])
        for f in doc["functions"][0]:
            c = np.asarray(f["ctildes"])
            f["ndensity"] = P
            members = [c] + [c * rng.uniform(0.5, 1.5, c.shape) for _ in range(P - 1)]
            f["ctildes"] = np.stack(members, 1).ravel().tolist()
    return edit


def _core(kind):
    def edit(doc):
        b = doc["bonds"][(0, 0)]
        b.update(prehc=5.0, lambdahc=0.5)
        if kind == "density":      # ρ_core crosses the switch region on these cells
            doc["embeddings"][0].update(rho_core_cutoff=0.3, drho_core_cutoff=0.2)
        else:
            b.update(inner_cutoff_type="distance", rcut_in=2.3, dcut_in=0.2)
    return edit


VARIANTS = {
    "ChebPow": (_radial("ChebPow", 2.0), True),
    "ChebLinear": (_radial("ChebLinear", 1.0), True),
    "SBessel": (_radial("SBessel", 1.0), True),
    "FS_2dens": (_densities(2, "FinnisSinclair"), False),
    "FSshifted_3dens": (_densities(3, "FinnisSinclairShiftedScaled"), False),
    "core_density": (_core("density"), True),
    "core_distance": (_core("distance"), True),
}


@needs_data
@pytest.mark.parametrize("name", sorted(VARIANTS))
def test_variants_match_pace(name, tmp_path):
    pytest.importorskip("pyace")
    edit, stress = VARIANTS[name]
    # python-ace 0.4's stress is inconsistent with its own energy for ndensity > 1 (off-diagonal xz/yz
    # off by ~1e-2 eV against finite differences of its energies): compare energies and forces there,
    # and check our virial against finite differences instead (test_forces_virial_finite_differences)
    _compare_with_pace(_variant(tmp_path, name, edit), _si_cells()[:1], stress=stress)


@needs_data
def test_two_elements_mixed_bonds_match_pace(tmp_path):
    """Per-bond radial bases, cutoffs, core repulsion and inner cutoffs, per-element embeddings
    (Ge: 1 density shifted-scaled FS, Si: 2 densities plain FS) and E0."""
    doc = _load_doc(SIGE)
    doc["deltaSplineBins"] = 1e-4
    doc["E0"] = [-1.5, 2.25]
    bonds = doc["bonds"]
    bonds[(0, 1)].update(rcut=4.2, radbasename="ChebExpCos", radparameters=[3.0], dcut=0.3)
    bonds[(1, 0)].update(rcut=4.6, radbasename="ChebPow", radparameters=[2.5], prehc=2.0, lambdahc=0.7)
    bonds[(1, 1)].update(radbasename="ChebLinear", prehc=1.0, lambdahc=0.3, rcut_in=2.2, dcut_in=0.3)
    rng = np.random.default_rng(0)
    for b in bonds.values():
        b["inner_cutoff_type"] = "distance"
        c = np.asarray(b["radcoefficients"])
        b["radcoefficients"] = (c + 0.3 * rng.standard_normal(c.shape)).tolist()
    doc["embeddings"][1].update(ndensity=2, npoti="FinnisSinclair", FS_parameters=[1.0, 1.0, 0.6, 0.5])
    for f in doc["functions"][1]:
        c = np.asarray(f["ctildes"])
        f["ndensity"] = 2
        f["ctildes"] = np.stack([c, 0.8 * c], 1).ravel().tolist()
    path = tmp_path / "sige_mixed.yace"
    _write_yace(doc, path)
    cells = [rattled_bulk(["Si", "Ge"], rattle=0.2, seed=s, reps=(1, 1, 2)) for s in range(2)]
    _compare_with_pace(path, cells, stress=False)


# ------------------------------------------------------------------ derivatives and symmetry
@needs_data
@pytest.mark.parametrize("name", ["si", "FSshifted_3dens"])
def test_forces_virial_finite_differences(name, tmp_path):
    path = SI if name == "si" else _variant(tmp_path, name, VARIANTS[name][0])
    model = read_yace(path)
    at = rattled_bulk(["Si"], rattle=0.15, seed=3)
    out = torchace.evaluate(model, at)
    F = out[K.FORCES].numpy()
    assert np.abs(F - fd_forces(model, at, h=1e-4)).max() <= 1e-6 * max(1.0, np.abs(F).max())
    W = out[K.VIRIAL][0].numpy()
    assert np.abs(W - fd_virial(model, at, h=1e-5)).max() <= 1e-6 * max(1.0, np.abs(W).max())


@needs_data
def test_rotation_invariance_and_isolated_atom():
    model = read_yace(SIGE)
    rng = np.random.default_rng(0)
    cl = random_cluster(["Si", "Ge"], 8, 3.0, seed=1)
    Q = random_rotation(rng)
    rot = cl.copy()
    rot.positions = cl.positions @ Q.T
    a, b = torchace.evaluate(model, cl), torchace.evaluate(model, rot)
    assert abs(float(a[K.ENERGY][0] - b[K.ENERGY][0])) <= 1e-10 * max(1.0, abs(float(a[K.ENERGY][0])))
    assert np.abs(a[K.FORCES].numpy() @ Q.T - b[K.FORCES].numpy()).max() <= 1e-10
    # an atom without neighbours has E0 (0 in this file); forces vanish
    iso = torchace.evaluate(model, Atoms("Si", positions=[[0, 0, 0]]))
    assert float(iso[K.ENERGY][0]) == 0.0


# ------------------------------------------------------------------ bad input
@needs_data
@pytest.mark.parametrize("edit, key", [
    (lambda d: d["bonds"][(0, 0)].update(radbasename="Tabulated"), "bonds.[0, 0].radbasename"),
    (lambda d: d["bonds"][(0, 0)].update(inner_cutoff_type="zbl"), "bonds.[0, 0].inner_cutoff_type"),
    (lambda d: d["embeddings"][0].update(npoti="Exotic"), "embeddings.0.npoti"),
    (lambda d: d["embeddings"][0].pop("FS_parameters"), "embeddings.0.FS_parameters"),
    (lambda d: d["bonds"][(0, 0)].update(radcoefficients=[[1.0]]), "bonds.[0, 0].radcoefficients"),
    (lambda d: d["functions"][0][3].update(ctildes=[1.0, 2.0]), "functions.0[3].ctildes"),
    (lambda d: d["functions"][0][9].update(ns=[1, 99]), "functions.0[9].ns"),
    (lambda d: d.pop("bonds"), "bonds"),
])
def test_bad_files_name_file_and_key(edit, key, tmp_path):
    doc = _load_doc(SI)
    edit(doc)
    path = tmp_path / "bad.yace"
    if "bonds" in doc:
        _write_yace(doc, path)
    else:
        path.write_text(yaml.safe_dump({k: v for k, v in doc.items() if k != "functions"}))
    with pytest.raises(ValueError) as e:
        read_yace(path)
    assert str(path) in str(e.value) and key in str(e.value)


def test_missing_and_non_yaml_files(tmp_path):
    with pytest.raises(FileNotFoundError):
        read_yace(tmp_path / "nope.yace")
    p = tmp_path / "x.yace"
    p.write_text("elements: [Si\n  : :")
    with pytest.raises(ValueError, match="x.yace"):
        read_yace(p)
    p.write_text("!!python/object/apply:os.system ['true']\n")   # never executed: safe loader
    with pytest.raises(ValueError, match="x.yace"):
        read_yace(p)


@needs_data
def test_float32_and_module_attributes():
    m = read_yace(SI, dtype=torch.float32)
    assert m.coefficients.dtype == torch.float32 and m.config.elements == ["Si"] and m.rcut == 5.0
    at = rattled_bulk(["Si"], rattle=0.1, seed=0)
    e32 = float(torchace.evaluate(m, at)[K.ENERGY][0])
    e64 = float(torchace.evaluate(read_yace(SI), at)[K.ENERGY][0])
    assert abs(e32 - e64) <= 1e-4 * max(1.0, abs(e64))


@needs_data
def test_ase_calculator_runs_a_yace_model():
    from torchace.calculators.ase import TorchACECalculator

    pyace = pytest.importorskip("pyace")
    at = rattled_bulk(["Si"], rattle=0.1, seed=4)
    ref = at.copy()
    ref.calc = pyace.PyACECalculator(str(SI))
    at.calc = TorchACECalculator(read_yace(SI))
    for _ in range(2):            # second step reuses the neighbour list (skin)
        assert abs(at.get_potential_energy() - ref.get_potential_energy()) <= 1e-8
        assert np.abs(at.get_forces() - ref.get_forces()).max() <= 1e-8
        at.positions += 0.01
        ref.positions += 0.01
