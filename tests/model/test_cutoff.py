"""Smooth cutoff, isolated atoms, radial basis conventions."""
import numpy as np
import torch
from ase import Atoms

import torchace
from torchace import keys as K
from torchace.basis.radial import AgnesiTransform, PairBasis, agnesi_a


def test_isolated_atom_is_E0(sige_model):
    for sym, e0 in (("Si", -158.5), ("Ge", -100.25)):
        out = torchace.evaluate(sige_model, Atoms(sym, positions=[[0, 0, 0]]))
        assert float(out[K.ENERGY][0]) == e0
        assert float(out[K.FORCES].abs().max()) == 0.0
    # two atoms beyond the cutoff: 2·E0 exactly
    d = sige_model.rcut + 1e-9
    out = torchace.evaluate(sige_model, Atoms("SiGe", positions=[[0, 0, 0], [d, 0, 0]]))
    assert float(out[K.ENERGY][0]) == -158.5 - 100.25


def test_continuity_across_cutoff(sige_model):
    rc = sige_model.rcut
    base = Atoms("SiGeSi", positions=[[0, 0, 0], [2.3, 0.4, 0.1], [0.3, 2.2, -0.4]])
    u = np.array([-0.3, -0.3, 1.0]) / np.linalg.norm([-0.3, -0.3, 1.0])

    def run(d):
        at = base + Atoms("Ge", positions=[u * d])  # distance d from atom 0, > rc from the others
        assert np.linalg.norm(at.positions[3] - at.positions[1:3], axis=1).min() > rc
        out = torchace.evaluate(sige_model, at)
        return float(out[K.ENERGY][0]), out[K.FORCES].numpy()

    e_far, _ = run(rc + 3.0)
    e_in, f_in = run(rc - 0.3)
    assert abs(e_in - e_far) > 1e-6  # the neighbour is felt inside the cutoff (test is not vacuous)
    assert np.abs(f_in[3]).max() > 1e-6
    (e1, f1), (e2, f2), (e3, f3) = run(rc - 1e-6), run(rc - 1e-7), run(rc + 1e-7)
    scale = abs(e_far) + 1
    # the many-body envelope vanishes quadratically, the pair envelope linearly: |ΔE| ~ 1e-6 · slope
    assert abs(e1 - e_far) < 1e-5 * scale and abs(e2 - e_far) < 1e-6 * scale
    assert 0 < abs(e1 - e_far) and abs(e2 - e_far) < abs(e1 - e_far)
    assert np.abs(f2 - f3).max() < np.abs(f1 - f3).max() or np.abs(f1 - f3).max() < 1e-12
    assert np.abs(f1 - f3).max() < 1e-3
    assert e3 == e_far  # beyond the cutoff the atom does not contribute at all


def test_agnesi_endpoints_and_parameters():
    assert abs(agnesi_a(2, 4) - 10 / 13) < 1e-15
    assert abs(agnesi_a(1, 3) - 2 / 7) < 1e-15
    r0 = torch.tensor([[2.4, 2.45], [2.45, 2.5]], dtype=torch.float64)
    t = AgnesiTransform(r0, 6.25, 2, 4)
    zi, zj = torch.tensor([0, 0, 1, 1]), torch.tensor([0, 1, 0, 1])
    x0 = t(torch.zeros(4, dtype=torch.float64), zi, zj)
    xc = t(torch.full((4,), 6.25, dtype=torch.float64), zi, zj)
    assert torch.allclose(x0, -torch.ones(4, dtype=torch.float64), atol=1e-15)
    assert torch.allclose(xc, torch.ones(4, dtype=torch.float64), atol=1e-14)
    r = torch.linspace(0.01, 6.2, 200, dtype=torch.float64)
    x = t(r, torch.zeros(200, dtype=torch.long), torch.zeros(200, dtype=torch.long))
    assert (x.diff() > 0).all()


def test_radials_orthonormal_in_x():
    """R_n = P_{n-1}(x)(1-x)²(1+x)² are orthonormal in L²(dx) (P_k Jacobi(4,4) orthonormal)."""
    from torchace.basis.radial import eval_recurrence, orthonormal_recurrence
    x, w = np.polynomial.legendre.leggauss(60)
    coef = torch.from_numpy(orthonormal_recurrence(20, 4, 4))
    P = eval_recurrence(torch.from_numpy(x), coef, 20).numpy()
    R = P * ((1 - x) ** 2 * (1 + x) ** 2)[:, None]
    G = R.T @ (w[:, None] * R)
    assert np.abs(G - np.eye(20)).max() < 1e-12
    # against scipy's Jacobi polynomials (independent): same span, positive leading coefficient
    from scipy.special import eval_jacobi
    J = np.stack([eval_jacobi(k, 4, 4, x) for k in range(20)], 1)
    for k in range(20):
        ratio = P[:, k] / J[:, k]
        assert np.ptp(ratio[np.abs(J[:, k]) > 1e-3]) < 1e-9 * abs(ratio[0])
        assert ratio[0] > 0
    Ll = eval_recurrence(torch.from_numpy(x), torch.from_numpy(orthonormal_recurrence(10, 0, 0)), 10).numpy()
    assert np.abs(Ll.T @ (w[:, None] * Ll) - np.eye(10)).max() < 1e-12


def test_pair_envelope():
    r0 = torch.full((1, 1), 2.4, dtype=torch.float64)
    pb = PairBasis(r0, 6.0, 12)
    z = torch.zeros(3, dtype=torch.long)
    r = torch.tensor([6.0 - 1e-8, 6.0, 7.0], dtype=torch.float64)
    V = pb(r, z, z)
    assert V[1:].abs().max() == 0 and V[0].abs().max() < 1e-6
    # the envelope is s^-2 - sc^-2 + 2 sc^-3 (s - sc): value at s = 1 (r = r0)
    sc = 6.0 / 2.4
    env = 1 - sc ** -2 + 2 * sc ** -3 * (1 - sc)
    V0 = pb(torch.tensor([2.4], dtype=torch.float64), z[:1], z[:1])
    assert abs(float(V0[0, 0]) - env / np.sqrt(2)) < 1e-12  # P_0 = 1/√2 (orthonormal Legendre)


def test_default_r0_rcut():
    m = torchace.ace_model(["Si", "Ge"], 2, 6)
    assert m.config.r0 == [[2.4, 2.45], [2.45, 2.5]]
    assert abs(m.rcut - 6.25) < 1e-12
    assert torchace.ace_model(["Si"], 2, 6).rcut == 6.0
