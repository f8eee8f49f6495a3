"""TorchSim model interface (torchace.calculators.torchsim): batched energies, forces and stresses equal to the
ASE calculator's, batched NVE against ASE's velocity Verlet, NVT, FIRE relaxations (positions; positions and
cell), torch_sim's own interface validator, bad input."""

import numpy as np
import pytest
import torch
from ase import units
from ase.build import bulk

import torchace
from torchace.calculators.ase import TorchACECalculator
from torchace.testing import random_cluster, randomize_coefficients, rattled_bulk

ts = pytest.importorskip("torch_sim")
from torchace.calculators.torchsim import TorchACEModel  # noqa: E402  (needs torch_sim)
from torch_sim.units import MetalUnits  # noqa: E402

pytestmark = pytest.mark.usefixtures("one_thread")
FS = float(MetalUnits.time) * 1e-3   # 1 fs in torch_sim's internal time unit (= ASE's: units.fs)
KB = float(MetalUnits.temperature)   # eV/K


def _rel(a, b):
    a, b = np.asarray(a, dtype=np.float64), np.asarray(b, dtype=np.float64)
    return float(np.abs(a - b).max() / max(np.abs(b).max(), 1e-300))


def _triclinic(symbols=("Si", "Si"), seed=1):
    tri = bulk("Si", "diamond", a=5.43)  # primitive fcc cell: triclinic, smaller than rcut (many images)
    tri.set_cell(tri.cell.array + np.array([[0.0, 0.1, 0.05], [0.05, 0.0, 0.0], [0.1, 0.0, 0.2]]), scale_atoms=True)
    tri = tri * (2, 1, 1)
    tri.set_chemical_symbols(list(np.random.default_rng(seed).choice(list(symbols), len(tri))))
    tri.rattle(0.05, seed=seed)
    return tri


def _systems(symbols):
    """Four periodic systems of different sizes: cubic 8 and 16 atoms, triclinic 4 atoms, cubic 8 atoms strained."""
    strained = rattled_bulk(symbols, rattle=0.05, seed=4)
    strained.set_cell(strained.cell.array @ (np.eye(3) + np.array([[0.01, 0.004, 0], [0.004, -0.01, 0], [0, 0, 0.02]])),
                      scale_atoms=True)
    return [rattled_bulk(symbols, rattle=0.1, seed=1), rattled_bulk(symbols, reps=(2, 1, 1), rattle=0.1, seed=2),
            _triclinic(symbols, seed=3), strained]


def _ase_reference(model, systems, backend="auto"):
    calc = TorchACECalculator(model, backend=backend)
    e, f, s = [], [], []
    for a in systems:
        a = a.copy()
        a.calc = calc
        e.append(a.get_potential_energy())
        f.append(a.get_forces())
        s.append(a.get_stress(voigt=False))
    return np.array(e), np.concatenate(f), np.array(s)


def _models(name, sige_model, si_fitted):
    if name == "sige":
        return sige_model, _systems(["Si", "Ge"])
    return si_fitted, _systems(["Si"])


@pytest.mark.parametrize("backend", ["auto", "analytic", "reference"])
@pytest.mark.parametrize("name", ["si", "sige"])
def test_batch_equals_ase_calculator(name, backend, device, sige_model, si_fitted):
    model, systems = _models(name, sige_model, si_fitted)
    tm = TorchACEModel(model, device=device, backend=backend, per_atom_energies=True)
    state = ts.io.atoms_to_state(systems, device, torch.float64)
    pos0, cell0 = state.positions.clone(), state.cell.clone()
    out = tm(state)
    assert out["energy"].shape == (4,) and out["forces"].shape == (state.n_atoms, 3)
    assert out["stress"].shape == (4, 3, 3) and out["energies"].shape == (state.n_atoms,)
    assert all(v.device.type == torch.device(device).type and v.dtype == torch.float64 for v in out.values())
    assert torch.equal(state.positions, pos0) and torch.equal(state.cell, cell0)  # input not modified
    e, f, s = _ase_reference(model, systems, backend)
    # measured (float64, CPU, same backend in both): ≤ 1e-16 relative, analytic 1.2e-14 (forces) and 3.2e-14
    # (stress) for the Si_tiny fit (edge order differs, so does the summation order)
    assert _rel(out["energy"].cpu(), e) < 1e-10
    assert _rel(out["forces"].cpu(), f) < 1e-10
    assert _rel(out["stress"].cpu(), s) < 1e-10
    n = [len(a) for a in systems]
    e_sites = torch.zeros(4, dtype=torch.float64).index_add_(
        0, torch.repeat_interleave(torch.arange(4), torch.tensor(n)), out["energies"].cpu())
    assert _rel(e_sites, e) < 1e-12


def test_clusters_no_stress(sige_model, device):
    """Non-periodic systems: energies and forces as the ASE calculator's, NaN stress (as torchace.evaluate)."""
    systems = [random_cluster(["Si", "Ge"], n, 3.0, seed=n) for n in (5, 9)]
    out = TorchACEModel(sige_model, device=device)(ts.io.atoms_to_state(systems, device, torch.float64))
    calc = TorchACECalculator(sige_model)
    e = [calc.get_potential_energy(a) for a in systems]
    f = np.concatenate([calc.get_forces(a) for a in systems])
    assert _rel(out["energy"].cpu(), e) < 1e-10 and _rel(out["forces"].cpu(), f) < 1e-10
    assert torch.isnan(out["stress"]).all() and out["stress"].shape == (2, 3, 3)


@pytest.mark.parametrize("periodic", [True, False])
def test_neighbour_list_modes_agree(sige_model, device, periodic):
    """The batched all-pairs search, the per-system cell list and numpy lists give the same results: cells
    smaller than rcut, a one-atom cell, unwrapped positions, a 64-atom cell (cell list under "auto"), clusters."""
    if periodic:
        one = bulk("Si", "diamond", a=5.43)[:1]
        unwrapped = rattled_bulk(["Si", "Ge"], rattle=0.1, seed=5)
        unwrapped.positions[3] += 2.3 * unwrapped.cell[0] - 1.7 * unwrapped.cell[2]
        systems = _systems(["Si", "Ge"]) + [one, unwrapped, rattled_bulk(["Si", "Ge"], reps=(2, 2, 2), seed=6)]
    else:
        systems = [random_cluster(["Si", "Ge"], n, 4.0, seed=n) for n in (1, 5, 20)]
    state = ts.io.atoms_to_state(systems, device, torch.float64)
    ref = TorchACEModel(sige_model, device=device, neighbour_list="cell_list")(state)
    for mode in ("auto", "batched", "numpy"):
        out = TorchACEModel(sige_model, device=device, neighbour_list=mode)(state)
        for k in ("energy", "forces") + (("stress",) if periodic else ()):
            assert _rel(out[k].cpu(), ref[k].cpu()) < 1e-12, (mode, k)
    if periodic:
        e, f, s = _ase_reference(sige_model, systems)
        assert _rel(ref["energy"].cpu(), e) < 1e-10 and _rel(ref["forces"].cpu(), f) < 1e-10
        assert _rel(ref["stress"].cpu(), s) < 1e-10


def test_skin_list_reuse_equals_fresh_lists(sige_model, device):
    """skin > 0: the batch's list is kept across small moves and atoms wrapped into the cell (their lattice jumps go
    into the shifts), rebuilt after a move beyond skin/2, and gives the numbers of fresh lists (skin 0)."""
    systems = _systems(["Si", "Ge"])
    state = ts.io.atoms_to_state(systems, device, torch.float64)
    fresh = TorchACEModel(sige_model, device=device)
    kept = TorchACEModel(sige_model, device=device, skin=0.6)
    rng = np.random.default_rng(0)
    x0 = state.positions.clone()
    for step, amp in enumerate((0.0, 0.05, 0.1, 0.25)):
        d = torch.as_tensor(rng.normal(size=tuple(x0.shape)), device=device)
        state.positions = x0 + amp * d / d.norm(dim=1, keepdim=True)
        if step == 2:  # wrap atom 1 (system 0) by a lattice vector, as torch_sim does
            state.positions[1] += state.row_vector_cell[0, 0]
        a, b = kept(state), fresh(state)
        for k in ("energy", "forces", "stress"):
            assert _rel(a[k].cpu(), b[k].cpu()) < 1e-12, (step, k)
    assert kept.n_neighbour_list_builds == 1 and kept._nl.n_wrapped == 2  # wrapped at step 2, back at step 3
    state.positions = x0 + torch.tensor([0.4, 0.0, 0.0], device=device, dtype=x0.dtype)  # every atom > skin/2
    a, b = kept(state), fresh(state)
    assert kept.n_neighbour_list_builds == 2 and _rel(a["forces"].cpu(), b["forces"].cpu()) < 1e-12
    assert fresh.n_neighbour_list_builds == 5  # skin 0: rebuilt whenever an atom moved


def test_static_runner_and_interface_validator(device):
    """torch_sim's own contract check (Si and Fe systems) and its many-system ``static`` runner."""
    from torch_sim.models.interface import validate_model_outputs

    m = torchace.ace_model(["Si", "Fe"], 2, 6)
    randomize_coefficients(m, 0.01, seed=5)
    tm = TorchACEModel(m, device=device)
    validate_model_outputs(tm, torch.device(device), torch.float64)
    systems = [rattled_bulk(["Si", "Fe"], rattle=0.1, seed=k, reps=(1, 1, k)) for k in (1, 2, 3)]
    props = ts.static(systems, tm)
    e, _, _ = _ase_reference(m, systems)
    assert _rel([float(p["potential_energy"]) for p in props], e) < 1e-10


def _thermal_momenta(atoms, temperature_K, seed):
    m = atoms.get_masses()[:, None]
    p = np.random.default_rng(seed).normal(size=(len(atoms), 3)) * np.sqrt(m * units.kB * temperature_K)
    return p - m * (p.sum(0) / m.sum())  # no centre-of-mass motion


def test_batched_nve_matches_ase_and_conserves_energy(si_fitted, device):
    from ase.md.verlet import VelocityVerlet

    systems = [rattled_bulk(["Si"], rattle=0.05, seed=21), rattled_bulk(["Si"], reps=(2, 1, 1), rattle=0.05, seed=22),
               _triclinic(seed=23)]
    momenta = [_thermal_momenta(a, 600, 30 + k) for k, a in enumerate(systems)]
    tm = TorchACEModel(si_fitted, device=device)
    init, update = ts.nve(model=tm, dt=torch.tensor(1.0 * FS, dtype=torch.float64, device=device),
                          kT=torch.tensor(600 * KB, dtype=torch.float64, device=device))
    state = init(ts.io.atoms_to_state(systems, device, torch.float64))
    state.momenta = torch.tensor(np.concatenate(momenta), dtype=torch.float64, device=device)
    n_atoms = torch.tensor([len(a) for a in systems], dtype=torch.float64)
    steps = 50

    def total():
        ke = ts.calc_kinetic_energy(masses=state.masses, momenta=state.momenta, system_idx=state.system_idx)
        return ((state.energy + ke).cpu() / n_atoms).numpy()

    etot = [total()]
    for _ in range(steps):
        state = update(state)
        etot.append(total())
    etot = np.array(etot)
    drift = np.abs(etot - etot[0]).max(0)
    # velocity Verlet's bounded O(dt²) fluctuation (ASE calculator, 64 atoms: 1.45e-5 eV/atom over 50 steps)
    assert (drift < 1e-4).all(), drift
    # the same trajectories with ASE's velocity Verlet and the ASE calculator (torch_sim wraps positions)
    pos = state.positions.cpu().numpy()
    start = 0
    for a, p in zip(systems, momenta):
        a = a.copy()
        a.calc = TorchACECalculator(si_fitted)
        a.set_momenta(p)
        VelocityVerlet(a, timestep=1.0 * units.fs).run(steps)
        d = pos[start: start + len(a)] - a.positions
        frac = np.linalg.solve(a.cell.array.T, d.T).T
        assert np.abs((frac - np.round(frac)) @ a.cell.array).max() < 1e-9  # measured ~1e-13 Å
        start += len(a)


def test_batched_nvt_langevin_runs(si_fitted, device):
    systems = [rattled_bulk(["Si"], rattle=0.05, seed=41), rattled_bulk(["Si"], reps=(1, 2, 1), rattle=0.05, seed=42)]
    tm = TorchACEModel(si_fitted, device=device)
    final = ts.integrate(systems, tm, integrator=ts.nvt_langevin, n_steps=30, temperature=300.0, timestep=0.001,
                         seed=1)
    assert final.n_systems == 2 and torch.isfinite(final.positions).all() and torch.isfinite(final.energy).all()
    kT = ts.calc_kT(masses=final.masses, momenta=final.momenta, system_idx=final.system_idx)
    assert ((kT / KB > 20) & (kT / KB < 2000)).all(), kT / KB  # heated from rest towards 300 K


def test_fire_relaxation_lowers_energy(si_fitted, device):
    systems = [rattled_bulk(["Si"], rattle=0.1, seed=51), rattled_bulk(["Si"], reps=(2, 1, 1), rattle=0.1, seed=52),
               _triclinic(seed=53)]
    tm = TorchACEModel(si_fitted, device=device)
    state = ts.io.atoms_to_state(systems, device, torch.float64)
    out0 = tm(state)
    final = ts.optimize(state, tm, optimizer=ts.optimizers.fire, max_steps=300,
                        convergence_fn=ts.generate_force_convergence_fn(force_tol=0.01, include_cell_forces=False))
    out1 = tm(final)
    assert (out1["energy"] < out0["energy"] - 1e-3).all(), (out0["energy"], out1["energy"])
    fmax = torch.stack([out1["forces"][final.system_idx == s].norm(dim=1).max() for s in range(3)])
    assert (fmax < 0.011).all(), fmax


def test_unit_cell_fire_relaxes_stress(si_fitted, device):
    """Positions and cell: the stress sign is torch_sim's (it forms the virial as −V·σ); a wrong sign would
    drive the cell away from zero stress."""
    systems = _systems(["Si"])
    tm = TorchACEModel(si_fitted, device=device)
    state = ts.io.atoms_to_state(systems, device, torch.float64)
    out0 = tm(state)
    init, update = ts.unit_cell_fire(model=tm)
    st = init(state)
    for _ in range(150):
        st = update(st)
    out1 = tm(st)
    assert (out1["energy"] < out0["energy"]).all()
    s0, s1 = out0["stress"].abs().amax((1, 2)), out1["stress"].abs().amax((1, 2))
    assert (s1 < 0.1 * s0).all(), (s0, s1)


def test_model_file_float32_and_no_side_effects(si_fitted, tmp_path):
    path = tmp_path / "Si.json"
    si_fitted.save(str(path))
    coeffs = si_fitted.coefficients.clone()
    systems = _systems(["Si"])[:2]
    state = ts.io.atoms_to_state(systems, "cpu", torch.float64)
    a = TorchACEModel(str(path), device="cpu")(state)
    b = TorchACEModel(si_fitted, device="cpu")(state)
    assert _rel(a["forces"], b["forces"]) < 1e-12
    tm32 = TorchACEModel(si_fitted, device="cpu", dtype=torch.float32)
    c = tm32(ts.io.atoms_to_state(systems, "cpu", torch.float32))
    assert c["energy"].dtype == torch.float32 and tm32.dtype == torch.float32
    assert _rel(c["forces"], b["forces"]) < 1e-3
    assert si_fitted.coefficients.dtype == torch.float64 and torch.equal(si_fitted.coefficients, coeffs)
    with pytest.raises(FileNotFoundError):
        TorchACEModel(str(tmp_path / "missing.json"))
    with pytest.raises(TypeError, match="torchace model"):
        TorchACEModel(object())


def test_bad_input(sige_model):
    tm = TorchACEModel(sige_model, device="cpu")
    systems = _systems(["Si", "Ge"])[:3]
    systems[2].numbers[1] = 26  # Fe in the third system
    with pytest.raises(ValueError, match=r"system 2: element\(s\) \['Fe'\] not in the model's elements"):
        tm(ts.io.atoms_to_state(systems, "cpu", torch.float64))
    systems = _systems(["Si", "Ge"])[:3]
    state = ts.io.atoms_to_state(systems, "cpu", torch.float64)
    state.positions[10, 1] = float("nan")
    with pytest.raises(ValueError, match="system 1: non-finite positions"):
        tm(state)
    state = ts.io.atoms_to_state(systems, "cpu", torch.float64)
    state.positions[9] = state.positions[8] + 0.001
    with pytest.raises(ValueError, match=r"system 1: atoms 1 and 0 .* apart|system 1: atoms 0 and 1 .* apart"):
        tm(state)
    state = ts.io.atoms_to_state(systems, "cpu", torch.float64)
    state.cell[1, :, 2] = state.cell[1, :, 0]  # two equal lattice vectors
    with pytest.raises(ValueError, match=r"degenerate .* in systems \[1\]"):
        tm(state)
    with pytest.raises(ValueError, match="dtype"):
        TorchACEModel(sige_model, dtype=torch.float16)
    with pytest.raises(ValueError, match="neighbour_list"):
        TorchACEModel(sige_model, neighbour_list="brute")
