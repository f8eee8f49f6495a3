"""torchace.analysis against independent facts: analytic pair potentials (ASE's Lennard-Jones), P = −dE/dV
and dE/dd by finite differences of the curves themselves, force-projected path slopes, and an MD failure
criterion that must fire on a molecule that flies apart and stay silent on a bound one."""
import numpy as np
import pytest
from ase import Atoms
from ase.build import bulk, molecule
from ase.calculators.emt import EMT
from ase.calculators.lj import LennardJones
from ase.calculators.morse import MorsePotential

import torchace
from torchace import analysis
from torchace.testing import randomize_coefficients

EPS, SIG, RC = 0.7, 1.3, 4.0


def lj_pair(r):
    """ASE LennardJones (smooth=False) pair energy: 4ε[(σ/r)^12 − (σ/r)^6] shifted to 0 at rc."""
    def v(x):
        return 4 * EPS * ((SIG / x) ** 12 - (SIG / x) ** 6)
    return np.where(r < RC, v(r) - v(RC), 0.0)


def lj():
    return LennardJones(epsilon=EPS, sigma=SIG, rc=RC, smooth=False)


def test_dimer_curve_lennard_jones():
    r = np.linspace(1.0, 4.5, 36)
    e = analysis.dimer_curve(lj(), "Ar", "Ar", r)
    np.testing.assert_allclose(e, lj_pair(r), rtol=1e-12, atol=1e-12)
    curves = analysis.dimer_curves(lj(), ["Ar", "Kr"], r)
    assert sorted(curves) == ["Ar-Ar", "Ar-Kr", "Kr-Kr"]


def test_trimer_curve_is_sum_of_pairs_for_a_pair_potential():
    r = np.linspace(1.1, 3.0, 12)
    e60 = analysis.trimer_curve(lj(), ["Ar"] * 3, r, angle_deg=60)
    np.testing.assert_allclose(e60, 3 * lj_pair(r), rtol=1e-12, atol=1e-12)
    e90 = analysis.trimer_curve(lj(), ["Ar"] * 3, r, angle_deg=90, r2=1.5)
    np.testing.assert_allclose(e90, lj_pair(r) + lj_pair(1.5) + lj_pair(np.hypot(r, 1.5)), rtol=1e-12, atol=1e-12)
    with pytest.raises(ValueError, match="three elements"):
        analysis.trimer_curve(lj(), ["Ar"] * 2, r)
    with pytest.raises(ValueError, match="positive"):
        analysis.dimer_curve(lj(), "Ar", "Ar", [1.0, -1.0])


def _pressure_vs_fd(calc, atoms, s0=1.0, h=1e-4):
    """P from the calculator's stress at s0 against −dE/dV by central differences of the E–V curve."""
    c = analysis.ev_curve(calc, atoms, [s0 - h, s0, s0 + h])
    dEdV = (c.energy[2] - c.energy[0]) / (c.volume[2] - c.volume[0])
    return c.pressure_GPa[1], -dEdV * analysis.curves.EV_PER_A3_TO_GPA


@pytest.mark.parametrize("s0", [0.95, 1.0, 1.06])
def test_ev_curve_pressure_is_minus_dE_dV_emt(s0):
    p, p_fd = _pressure_vs_fd(EMT(), bulk("Cu", "fcc", a=3.6), s0)
    assert abs(p) > 0.5  # off equilibrium: a real check
    assert abs(p - p_fd) < 1e-5 * max(1.0, abs(p))


def test_ev_curve_pressure_torchace_model():
    model = torchace.ace_model(["Si"], 2, 6, rcut=4.5)
    randomize_coefficients(model, scale=0.5, seed=1)
    phases = analysis.silicon_phases()
    assert sorted(phases) == ["beta-tin", "diamond", "simple hexagonal"]
    calc = analysis.as_calculator(model)
    for name in ("diamond", "beta-tin"):
        p, p_fd = _pressure_vs_fd(calc, phases[name], 1.02)
        assert abs(p - p_fd) < 1e-5 * max(1.0, abs(p)), name


@pytest.mark.parametrize("miller", [(1, 0, 0), (1, 1, 1)])
def test_decohesion_stress_is_the_derivative_of_the_energy(miller):
    slab = analysis.decohesion_slab(bulk("Cu", "fcc", a=3.6, cubic=True), miller, layers=4)
    d = np.array([0.3, 0.8, 1.5])
    h = 1e-4
    c = analysis.decohesion_curve(EMT(), slab, d)
    lo = analysis.decohesion_curve(EMT(), slab, d - h)
    hi = analysis.decohesion_curve(EMT(), slab, d + h)
    fd = (hi.energy - lo.energy) / (2 * h) * analysis.curves.EV_PER_A3_TO_GPA
    assert np.all(c.stress_GPa > 0.1)  # opening a crack costs energy: tensile traction
    np.testing.assert_allclose(c.stress_GPa, fd, rtol=1e-5, atol=1e-6)
    assert 0 < c.n_upper < len(slab)


def test_decohesion_energy_saturates_at_twice_the_surface_energy():
    """Beyond the cutoff the two halves no longer interact: E/A is constant (2γ) and the stress vanishes."""
    slab = analysis.decohesion_slab(bulk("Ar", "fcc", a=1.5496 * SIG, cubic=True), (1, 0, 0), layers=6)
    c = analysis.decohesion_curve(lj(), slab, [RC + 0.5, RC + 2.0])
    assert c.energy[0] > 0
    assert abs(c.energy[1] - c.energy[0]) < 1e-12
    np.testing.assert_allclose(c.stress_GPa, 0.0, atol=1e-10)


def test_decohesion_rejects_bad_cells():
    with pytest.raises(ValueError, match="periodic"):
        analysis.decohesion_curve(EMT(), Atoms("Cu2", positions=[[0, 0, 0], [0, 0, 2]]), [0.1])


def test_path_slope_from_forces_matches_finite_differences():
    a = bulk("Cu", "fcc", a=3.6).repeat((2, 2, 2))
    rng = np.random.default_rng(0)
    b = a.copy()
    b.positions += rng.normal(scale=0.15, size=b.positions.shape)
    t = np.linspace(0.0, 1.0, 41)
    images = []
    for x in t:
        im = a.copy()
        im.positions = (1 - x) * a.positions + x * b.positions
        images.append(im)
    p = analysis.path_energies(EMT(), images)
    assert p.energy[0] == 0.0 and np.ptp(p.energy) > 0.01
    fd = np.gradient(p.energy, p.s)
    np.testing.assert_allclose(p.dE_ds[1:-1], fd[1:-1], rtol=2e-2, atol=2e-3)


def test_dimer_curve_of_a_torchace_model_uses_its_isolated_atoms():
    from torchace.fit.repulsion import dimer_curve as model_dimer

    model = torchace.ace_model(["Si"], 2, 6, rcut=4.5, E0={"Si": -3.0})
    randomize_coefficients(model, scale=0.3, seed=2)
    r = np.linspace(1.5, 5.0, 8)
    np.testing.assert_allclose(analysis.dimer_curve(model, "Si", "Si", r), model_dimer(model, "Si", "Si", r),
                               rtol=1e-10, atol=1e-10)


# ---- MD stability ----


def _n2():
    return Atoms("N2", positions=[[0, 0, 0], [0, 0, 1.1]])


def test_bond_criterion_fires_on_breaking_and_forming():
    ref = molecule("CH4")
    crit = analysis.BondCriterion.from_structures(ref, [ref], tol=0.5)
    assert crit.bonds.sum() == 8  # four C-H bonds, both directions
    assert crit.violation(ref.positions) is None
    far = ref.positions.copy()
    far[1] *= 3.0  # C at the origin: H1 moves away
    assert "broke" in crit.violation(far)
    close = ref.positions.copy()
    close[2] = close[1] + [0.1, 0.0, 0.0]  # two H on top of each other
    assert "formed" in crit.violation(close)
    assert "non-finite" in crit.violation(np.full_like(ref.positions, np.nan))


def test_md_failure_criterion_stable_and_unstable():
    ref = _n2()
    crit = analysis.BondCriterion.from_structures(ref, [ref], tol=0.5)
    bound = MorsePotential(epsilon=9.8, r0=1.1, rho0=6.0)
    res = analysis.md_stability(bound, [ref] * 3, crit, temperature_K=300, steps=400, check_every=10, seed=0)
    assert res.survived == 3 and res.time_to_failure_fs == [None] * 3
    assert res.mean_time_fs() == pytest.approx(200.0)
    # a purely repulsive "molecule" (LJ with σ twice the bond length) flies apart
    repulsive = LennardJones(epsilon=0.05, sigma=2.2, rc=6.0, smooth=False)
    bad = analysis.md_stability(repulsive, [ref] * 3, crit, temperature_K=300, steps=400, check_every=5, seed=0)
    assert bad.survived == 0
    assert all(0 < t <= 200.0 for t in bad.time_to_failure_fs)
    assert all("broke" in r for r in bad.reasons)
    # batching replicas in one simulation gives failures too (same physics, independent noise)
    one = analysis.md_stability(repulsive, [ref] * 2, crit, temperature_K=300, steps=400, check_every=5, seed=0,
                                batch=False)
    assert one.survived == 0


def test_md_rejects_other_molecules():
    crit = analysis.BondCriterion.from_structures(_n2())
    with pytest.raises(ValueError, match="same atoms"):
        analysis.md_stability(EMT(), [molecule("CH4")], crit, steps=1)


def test_plots_are_small_pngs(tmp_path):
    pytest.importorskip("matplotlib")
    from torchace.analysis import plots

    r = np.linspace(1.0, 4.0, 50)
    p = plots.curve_panels(str(tmp_path / "d.png"), {"Ar-Ar": {"a": (r, lj_pair(r)), "b": (r, 2 * lj_pair(r))}},
                           xlabel="r (Å)", ylabel="E (eV)", reference={"Ar-Ar": (r, lj_pair(r))})
    q = plots.bar_panels(str(tmp_path / "b.png"), {"300 K": {"0": 1.0, "0.5": 3.0}}, ylabel="t (fs)",
                         hline={"300 K": 4.0})
    for f in (p, q):
        data = open(f, "rb").read()
        assert data[:8] == b"\x89PNG\r\n\x1a\n" and len(data) < 100_000
