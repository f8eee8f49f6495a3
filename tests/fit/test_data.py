"""Reading labelled data: key detection, units/sign conversion, bad data named by file and frame."""
import numpy as np
import pytest
from ase import Atoms
from ase.calculators.singlepoint import SinglePointCalculator
from ase.io import write

from torchace.fit.data import DataError, DataKeys, isolated_atom_energies, read_data
from torchace.fit.weights import resolve_weights
from torchace.testing import rattled_bulk


def _frame(seed=0, **info):
    at = rattled_bulk(["Si"], seed=seed)
    at.info.update(info)
    return at


def test_key_detection_and_stress_conversion(tmp_path):
    a = _frame(0, dft_energy=-10.0, config_type="dia")
    a.arrays["dft_force"] = np.ones((len(a), 3))
    a.info["dft_virial"] = np.arange(9.0).reshape(3, 3)
    b = _frame(1)
    sigma = np.array([0.01, 0.02, 0.03, 0.004, 0.005, 0.006])
    b.calc = SinglePointCalculator(b, energy=-11.0, forces=np.zeros((len(b), 3)), stress=sigma)
    c = _frame(2, REF_energy=-12.0)
    path = tmp_path / "d.xyz"
    write(path, [a, b, c], format="extxyz")
    ds = read_data(str(path))
    assert [s.energy for s in ds] == [-10.0, -11.0, -12.0]
    assert ds.structures[0].config_type == "dia" and ds.structures[1].config_type == "default"
    assert np.allclose(ds.structures[0].virial, np.arange(9.0).reshape(3, 3))
    W = ds.structures[1].virial
    V = b.get_volume()
    assert np.isclose(W[0, 0], -V * 0.01) and np.isclose(W[1, 2], -V * 0.004) and np.isclose(W[0, 1], -V * 0.006)
    assert ds.structures[2].forces is None and ds.structures[2].virial is None


@pytest.mark.parametrize("case,msg", [
    ("nan_energy", r"frame 1: energy is nan"),
    ("bad_forces", r"frame 1: forces has shape \(8, 2\), expected \(8, 3\)"),
    ("nan_forces", r"frame 1: forces non-finite for atoms \[3\]"),
    ("no_labels", r"frame 1: no energy, forces, virial or stress labels"),
    ("unknown_element", r"frame 1: element\(s\) \['C'\] not in the model's elements"),
])
def test_bad_data_named(tmp_path, case, msg):
    good = _frame(0, energy_x=1.0)
    good.calc = SinglePointCalculator(good, energy=-1.0)
    bad = _frame(1)
    if case == "nan_energy":
        bad.calc = SinglePointCalculator(bad, energy=float("nan"))
    elif case == "bad_forces":
        bad.calc = SinglePointCalculator(bad, energy=-1.0)
        bad.arrays["forces"] = np.zeros((len(bad), 2))
    elif case == "nan_forces":
        f = np.zeros((len(bad), 3))
        f[3, 1] = np.nan
        bad.calc = SinglePointCalculator(bad, energy=-1.0, forces=f)
    elif case == "unknown_element":
        bad.symbols[0] = "C"
        bad.calc = SinglePointCalculator(bad, energy=-1.0)
    structs = [good, bad]
    if case in ("bad_forces",):  # extxyz cannot write a (N, 2) forces array; use Atoms directly
        with pytest.raises(DataError, match=msg.replace("frame 1", "structure 1")):
            read_data(structs, elements=["Si"])
        return
    path = tmp_path / f"{case}.xyz"
    write(path, structs, format="extxyz")
    with pytest.raises(DataError, match=msg):
        read_data(str(path), elements=["Si"])
    with pytest.warns(UserWarning, match="skipping"):
        ds = read_data(str(path), elements=["Si"], skip_bad=True)
    assert len(ds) == 1 and len(ds.skipped) == 1 and "frame 1" in ds.skipped[0][0]


def test_explicit_keys_and_missing_key():
    a = _frame(0, my_e=-3.0)
    ds = read_data([a], keys=DataKeys(energy="my_e"))
    assert ds.structures[0].energy == -3.0
    with pytest.raises(DataError, match=r"structure 0: energy key 'nope' not found"):
        read_data([a], keys=DataKeys(energy="nope"))


def test_isolated_atoms_and_weights():
    iso = Atoms("Si", positions=[[0, 0, 0]], info={"config_type": "isolated_atom", "energy": -158.5})
    ds = read_data([iso, _frame(0, energy=-1.0)])
    assert isolated_atom_energies(ds) == {"Si": -158.5}
    w = resolve_weights({"default": {"E": 10}, "liq": {"F": 0.5}})
    assert w["default"] == {"E": 10.0, "F": 1.0, "V": 1.0}
    assert w["liq"] == {"E": 10.0, "F": 0.5, "V": 1.0}
    with pytest.raises(ValueError, match="unknown keys"):
        resolve_weights({"liq": {"Q": 1}})


def test_missing_file():
    with pytest.raises(DataError, match="no such file"):
        read_data("does/not/exist.xyz")
