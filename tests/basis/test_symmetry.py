"""Invariance: rotation, reflection, translation, permutation, supercells, far-apart structures."""
import numpy as np
import pytest
import torch

import torchace
from torchace import keys as K
from torchace.testing import RTOL, max_rel, random_cluster, random_envs, random_rotation, rattled_bulk, site_basis_envs


def test_site_basis_rotation_reflection(sige_model):
    rng = np.random.default_rng(0)
    envs = random_envs(rng, [14, 32], 20, 12, 1.5, sige_model.rcut)
    B = site_basis_envs(sige_model, envs)
    for reflect in (False, True):
        Q = random_rotation(rng, reflect)
        B2 = site_basis_envs(sige_model, [(z, zn, R @ Q.T) for z, zn, R in envs])
        assert max_rel(B2, B) < 1e-12
    # permutation of the neighbours
    B3 = site_basis_envs(sige_model, [(z, zn[::-1], R[::-1]) for z, zn, R in envs])
    assert max_rel(B3, B) < 1e-12
    # the basis is not trivially constant: it changes when one neighbour moves
    B4 = site_basis_envs(sige_model, [(z, zn, R * np.r_[[1.05]*1, [1.0]*(len(R)-1)][:, None]) for z, zn, R in envs])
    assert max_rel(B4, B) > 1e-3


@pytest.mark.parametrize("periodic", [True, False])
def test_structure_invariance(sige_model, periodic):
    rng = np.random.default_rng(1)
    at = rattled_bulk(["Si", "Ge"], seed=3) if periodic else random_cluster(["Si", "Ge"], 12, 4.0, seed=3)
    ref = torchace.evaluate(sige_model, at)
    Q = random_rotation(rng, reflect=True)
    at2 = at.copy()
    at2.positions = at.positions @ Q.T + rng.normal(size=3) * 3.0
    if periodic:
        at2.set_cell(at.cell.array @ Q.T, scale_atoms=False)
    perm = rng.permutation(len(at))
    at2 = at2[perm]
    out = torchace.evaluate(sige_model, at2)
    assert max_rel(out[K.ENERGY], ref[K.ENERGY]) < RTOL[torch.float64]
    F = ref[K.FORCES].numpy() @ Q.T
    assert max_rel(out[K.FORCES], F[perm]) < RTOL[torch.float64]
    W = Q @ ref[K.VIRIAL][0].numpy() @ Q.T
    assert max_rel(out[K.VIRIAL][0], W) < RTOL[torch.float64]


def test_supercell_energy_per_atom(sige_model):
    at = rattled_bulk(["Si", "Ge"], seed=4)
    sc = at * (2, 1, 2)
    e1 = torchace.evaluate(sige_model, at)
    e2 = torchace.evaluate(sige_model, sc)
    e_sc, e_at = float(e2[K.ENERGY][0]) / len(sc), float(e1[K.ENERGY][0]) / len(at)
    assert abs(e_sc - e_at) < 1e-10 * abs(float(e1[K.ENERGY][0]))
    assert max_rel(e2[K.VIRIAL][0] / 4, e1[K.VIRIAL][0]) < 1e-10
    assert max_rel(e2[K.STRESS][0], e1[K.STRESS][0]) < 1e-10


def test_far_apart_structures_do_not_interact(sige_model):
    a = random_cluster(["Si", "Ge"], 6, 3.0, seed=5)
    b = random_cluster(["Si", "Ge"], 7, 3.0, seed=6)
    ea = torchace.evaluate(sige_model, a)[K.ENERGY][0]
    eb = torchace.evaluate(sige_model, b)[K.ENERGY][0]
    b.positions += [3.0 + 3.0 + sige_model.rcut + 0.01, 0, 0]
    both = a + b
    e = torchace.evaluate(sige_model, both)[K.ENERGY][0]
    assert abs(float(e - ea - eb)) < 1e-10 * abs(float(ea) + float(eb))
    # and the batched call equals separate calls
    out = torchace.evaluate(sige_model, [a, b, both])
    assert max_rel(out[K.ENERGY], torch.stack([ea, eb, e])) < 1e-12


@pytest.mark.parametrize("order,td", [(5, 10), (6, 12)])
def test_high_order_invariance(order, td):
    m = torchace.ace_model(["Si"], order, td)
    assert m.product.idx.shape[1] == order
    rng = np.random.default_rng(order)
    envs = random_envs(rng, [14], 20, 10, 1.5, m.rcut)
    B = site_basis_envs(m, envs)
    Q = random_rotation(rng, reflect=True)
    B2 = site_basis_envs(m, [(z, zn, R @ Q.T) for z, zn, R in envs])
    assert max_rel(B2, B) < 1e-12
