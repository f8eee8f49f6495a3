"""metatomic export: the AtomisticModel file, run through metatomic-ase's calculator and metatomic's own
model API, gives torchace's energies, forces, stresses (and committee energies) to 1e-10 relative."""
import copy
import json
import sys

import numpy as np
import pytest
import torch

pytest.importorskip("metatomic.torch")
metatomic_ase = pytest.importorskip("metatomic_ase")

import torchace  # noqa: E402
from torchace import keys as K  # noqa: E402
from torchace.testing import random_cluster, randomize_coefficients, rattled_bulk, run  # noqa: E402

RTOL = 1e-10
VOIGT = ([0, 1, 2, 1, 0, 0], [0, 1, 2, 2, 2, 1])


pytestmark = pytest.mark.usefixtures("one_thread")


@pytest.fixture(scope="module")
def sige():
    """Two elements, pair basis, ZBL baseline, non-zero E0, and a committee (as a Bayesian fit leaves it)."""
    m = torchace.ace_model(["Si", "Ge"], 2, 6, E0={"Si": -158.5, "Ge": -100.25}, zbl=True)
    randomize_coefficients(m, 0.05, seed=12)
    g = torch.Generator().manual_seed(5)
    m.committee = m.coefficients.detach() + 0.01 * torch.randn(4, m.basis_size, generator=g, dtype=torch.float64)
    return m


@pytest.fixture(scope="module")
def exported(sige, tmp_path_factory):
    path = tmp_path_factory.mktemp("mta") / "sige-metatomic.pt"
    assert torchace.export(sige, path, format="metatomic", metadata={"author": "test"}) == str(path)
    return str(path)


def _structures():
    bulk = rattled_bulk(["Si", "Ge"], reps=(1, 1, 2), seed=3)          # periodic, 16 atoms, two elements
    small = rattled_bulk(["Si", "Ge"], a=5.6, seed=7, cubic=False)       # 2-atom triclinic cell << rcut
    slab = rattled_bulk(["Si", "Ge"], seed=9)
    slab.pbc = [True, True, False]                                      # mixed boundary conditions
    slab.center(vacuum=4.0, axis=2)
    mol = random_cluster(["Si", "Ge"], 8, 3.2, seed=4)                   # non-periodic
    return [bulk, small, slab, mol]


def _rel(a, b):
    a, b = np.asarray(a, dtype=float), np.asarray(b, dtype=float)
    return float(np.abs(a - b).max() / max(np.abs(b).max(), 1e-300))


def test_ase_calculator_matches_torchace(sige, exported):
    calc = metatomic_ase.MetatomicCalculator(exported, check_consistency=True, uncertainty_threshold=None)
    for at in _structures():
        ref = torchace.evaluate(sige, at)
        at = at.copy()
        at.calc = calc
        assert _rel(at.get_potential_energy(), float(ref[K.ENERGY][0])) < RTOL
        assert _rel(at.get_forces(), ref[K.FORCES].numpy()) < RTOL
        assert _rel(calc.get_property("energies", at), ref[K.NODE_ENERGY].numpy()) < RTOL
        if at.pbc.all():
            assert _rel(at.get_stress(), ref[K.STRESS][0].numpy()[VOIGT]) < RTOL


@pytest.mark.filterwarnings("ignore:A conversion to `System`:UserWarning")  # the slab's vacuum cell vector
def test_selected_atoms_batches_and_committee(sige, exported):
    """Several systems in one call, a subset of atoms (how LAMMPS asks for its local atoms), per-atom and
    per-system outputs, and each committee member against torchace with that member's coefficients."""
    from metatensor.torch import Labels
    from metatomic.torch import ModelEvaluationOptions, ModelOutput, load_atomistic_model, systems_to_torch
    from vesin.metatomic import NeighborList

    model = load_atomistic_model(exported)
    structs = _structures()
    systems = systems_to_torch(structs, dtype=torch.float64)
    for opt in model.requested_neighbor_lists():
        NeighborList(opt, "angstrom").add_neighbor_list(systems)
    rng = np.random.default_rng(0)
    sel = [(k, a) for k, s in enumerate(structs) for a in range(len(s)) if rng.random() < 0.6]
    selected = Labels(["system", "atom"], torch.tensor(sel, dtype=torch.int32))
    per_atom, per_sys = (ModelOutput(unit="eV", sample_kind=kind) for kind in ("atom", "system"))
    names = ("energy", "energy_ensemble", "energy_uncertainty")

    ref_nodes = torchace.evaluate(sige, structs)[K.NODE_ENERGY]
    members = []
    for c in sige.committee:
        mk = copy.deepcopy(sige)
        mk.committee = None
        mk.coefficients = c
        members.append(torchace.evaluate(mk, structs)[K.NODE_ENERGY])
    members = torch.stack(members, dim=1)                                      # [ΣN, n_members]
    starts = np.cumsum([0] + [len(s) for s in structs])
    idx = torch.tensor([starts[k] + a for k, a in sel])
    sys_of = torch.tensor([k for k, _ in sel])

    def per_system(x):
        return torch.zeros(len(structs), x.shape[1], dtype=x.dtype).index_add_(0, sys_of, x[idx])

    want_atom = {"energy": ref_nodes[:, None][idx], "energy_ensemble": members[idx],
                 "energy_uncertainty": members[idx].std(dim=1, keepdim=True)}
    want_sys = {"energy": per_system(ref_nodes[:, None]), "energy_ensemble": per_system(members),
                "energy_uncertainty": per_system(members).std(dim=1, keepdim=True)}
    for out_kind, want in ((per_atom, want_atom), (per_sys, want_sys)):
        opts = ModelEvaluationOptions(length_unit="angstrom", outputs={n: out_kind for n in names},
                                      selected_atoms=selected)
        res = model(systems, opts, check_consistency=True)
        for n in names:
            block = res[n].block()
            if out_kind is per_atom:
                assert block.samples.values.tolist() == [list(p) for p in sel]
            assert _rel(block.values.detach(), want[n]) < RTOL, n
    assert members.std(dim=1).min() > 0  # the committee members differ: the uncertainty test can fail


def test_metadata_capabilities_and_float32(sige, exported, tmp_path):
    from metatomic.torch import load_atomistic_model

    model = load_atomistic_model(exported)
    caps = model.capabilities()
    assert caps.atomic_types == [14, 32] and caps.interaction_range == sige.rcut
    assert caps.length_unit == "angstrom" and caps.dtype == "float64" and "cpu" in caps.supported_devices
    assert {"energy", "energy_ensemble", "energy_uncertainty"} <= set(caps.outputs.keys())
    assert caps.outputs["energy"].unit == "eV"
    extra = model.metadata().extra
    assert json.loads(extra["torchace_config"]) == sige.config.to_dict()
    assert json.loads(extra["user"]) == {"author": "test"} and extra["committee_size"] == "4"
    opt = model.requested_neighbor_lists()[0]
    assert opt.full_list and opt.strict and opt.cutoff == sige.rcut
    # float32 export: same numbers to single precision; the source model is left in float64
    p32 = tmp_path / "m32.pt"
    torchace.export(sige, p32, format="metatomic", dtype="float32")
    assert sige.coefficients.dtype == torch.float64
    calc = metatomic_ase.MetatomicCalculator(str(p32), uncertainty_threshold=None)
    assert calc.model().capabilities().dtype == "float32"
    at = _structures()[0]
    at.calc = calc
    ref = torchace.evaluate(sige, at)
    assert _rel(at.get_potential_energy(), float(ref[K.ENERGY][0])) < 1e-5
    assert np.abs(at.get_forces() - ref[K.FORCES].numpy()).max() < 1e-3


def test_no_committee_model(tmp_path):
    m = torchace.ace_model(["Si"], 2, 5)
    randomize_coefficients(m, 0.05, seed=1)
    p = tmp_path / "si.pt"
    torchace.export(m, p, format="metatomic")
    calc = metatomic_ase.MetatomicCalculator(str(p))
    assert "energy_ensemble" not in calc.model().capabilities().outputs
    at = rattled_bulk(["Si"], seed=2)
    at.calc = calc
    ref = torchace.evaluate(m, at)
    assert _rel(at.get_potential_energy(), float(ref[K.ENERGY][0])) < RTOL
    assert _rel(at.get_stress(), ref[K.STRESS][0].numpy()[VOIGT]) < RTOL


def test_runs_without_torchace(sige, exported):
    """The file runs in a process where torchace cannot be imported (TorchScript + metatomic only)."""
    at = _structures()[0]
    ref = float(torchace.evaluate(sige, at)[K.ENERGY][0])
    code = f"""
import sys
sys.modules["torchace"] = None  # any import of torchace now fails
import ase.build, numpy as np
from metatomic_ase import MetatomicCalculator
at = ase.Atoms(numbers={at.numbers.tolist()}, positions={at.positions.tolist()}, cell={at.cell.tolist()}, pbc=True)
at.calc = MetatomicCalculator({exported!r}, uncertainty_threshold=None)
print(repr(float(at.get_potential_energy())))
"""
    out = run([sys.executable, "-c", code], timeout=120)
    assert out.returncode == 0, out.stderr
    assert _rel(float(out.stdout.strip().splitlines()[-1]), ref) < RTOL


def test_errors_and_atomic_write(sige, tmp_path, monkeypatch):
    from metatomic.torch import AtomisticModel

    p = tmp_path / "m.pt"
    with pytest.raises(ValueError, match="not plain JSON"):
        torchace.export(sige, p, format="metatomic", metadata={"bad": object()})
    torchace.export(sige, p, format="metatomic")
    before = p.read_bytes()

    def broken_save(self, file, collect_extensions=None):
        with open(file, "wb") as fh:
            fh.write(b"half")
        raise RuntimeError("disk full")

    monkeypatch.setattr(AtomisticModel, "save", broken_save)
    with pytest.raises(RuntimeError, match="disk full"):
        torchace.export(sige, p, format="metatomic")
    assert p.read_bytes() == before and sorted(x.name for x in tmp_path.iterdir()) == ["m.pt"]
    # the exported copy is frozen (AtomisticModel sets requires_grad=False); the source model is untouched
    assert sige.committee is not None and sige.coefficients.requires_grad
