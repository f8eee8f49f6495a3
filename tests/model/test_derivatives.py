"""Forces and virials vs central finite differences; design-matrix rows vs the model."""
import numpy as np
import pytest
import torch

import torchace
from torchace import keys as K
from torchace.testing import (fd_forces, fd_virial, max_rel, random_cluster, randomize_coefficients, rattled_bulk,
                              strained)


@pytest.mark.parametrize("kind", ["bulk", "cluster", "slab"])
def test_forces_virial_finite_differences(sige_model, kind):
    if kind == "bulk":
        at = rattled_bulk(["Si", "Ge"], seed=7)
    elif kind == "cluster":
        at = random_cluster(["Si", "Ge"], 8, 3.5, seed=8)
    else:
        at = rattled_bulk(["Si", "Ge"], seed=9)
        at.set_pbc([True, True, False])
    out = torchace.evaluate(sige_model, at)
    F = fd_forces(sige_model, at, h=1e-4)
    assert max_rel(out[K.FORCES], F) < 1e-7
    if kind == "bulk":
        W = fd_virial(sige_model, at, h=1e-5)
        assert max_rel(out[K.VIRIAL][0], W) < 1e-7
        vol = at.get_volume()
        assert max_rel(out[K.STRESS][0], -W / vol) < 1e-7
    else:
        assert torch.isnan(out[K.STRESS]).all()


def _voigt(W):
    return torch.stack([W[..., a, b] for a, b in K.VOIGT], dim=-1)


@pytest.mark.parametrize("elements", [["Si"], ["Si", "Ge"]])
def test_design_rows_match_model(elements, device):
    model = torchace.ace_model(elements, 3, 8, E0={e: -1.5 - k for k, e in enumerate(elements)}).to(device)
    randomize_coefficients(model, 0.2, seed=11)
    structs = [rattled_bulk(elements, seed=12), random_cluster(elements, 7, 3.0, seed=13),
               rattled_bulk(elements, seed=14, reps=(1, 1, 2), cubic=False)]
    rows = torchace.design_matrix_rows(model, structs)
    out = torchace.evaluate(model, structs)
    c = model.coefficients.detach()
    n_tot = sum(len(s) for s in structs)
    K_ = model.basis_size
    assert rows[K.ENERGY].shape == (3, K_)
    assert rows[K.FORCES].shape == (3 * n_tot, K_)
    assert rows[K.VIRIAL].shape == (3, 6, K_)
    e0 = torch.tensor([sum(float(model.E0[model.config.numbers.index(z)]) for z in s.numbers) for s in structs],
                      dtype=torch.float64, device=device)
    assert max_rel(rows[K.ENERGY] @ c + e0, out[K.ENERGY]) < 1e-12
    assert max_rel(rows[K.FORCES] @ c, out[K.FORCES].reshape(-1)) < 1e-11
    assert max_rel(rows[K.VIRIAL] @ c, _voigt(out[K.VIRIAL])) < 1e-11
    # every column is exercised: rows are not zero for the many-body and pair blocks
    assert (rows[K.ENERGY].abs().sum(0) > 0).float().mean() > 0.9


def test_design_rows_chunking_is_exact(si_model):
    at = rattled_bulk(["Si"], seed=15)
    a = torchace.design_matrix_rows(si_model, at)
    b = torchace.design_matrix_rows(si_model, at, memory_budget=2**20)  # ~12 edges per chunk
    for k in (K.ENERGY, K.FORCES, K.VIRIAL):
        assert torch.equal(a[k], b[k]) or max_rel(a[k], b[k]) < 1e-14


def test_force_loss_gradient_in_train_mode(sige_model):
    """In train mode forces are differentiable w.r.t. the coefficients (one code path for fitting and
    gradient training); F is linear in c, so d(w·F)/dc must equal rows_Fᵀ w."""
    from torchace.structures.batch import collate
    from torchace.model.evaluate import model_inputs

    at = rattled_bulk(["Si", "Ge"], seed=31)
    rows = torchace.design_matrix_rows(sige_model, at)
    sige_model.train()
    try:
        batch = collate(at, sige_model.config.numbers, sige_model.rcut)
        out = sige_model(*model_inputs(sige_model, batch))
        w = torch.randn(out[K.FORCES].shape, dtype=torch.float64, generator=torch.Generator().manual_seed(0))
        (g,) = torch.autograd.grad((out[K.FORCES] * w).sum(), [sige_model.coefficients])
    finally:
        sige_model.eval()
    assert max_rel(g, rows[K.FORCES].T @ w.reshape(-1)) < 1e-11


def test_design_rows_finite_differences(sige_model):
    """Force and virial rows are -d/dx and -d/dε of the energy rows (central differences, all columns)."""
    at = rattled_bulk(["Si", "Ge"], seed=33)
    rows = torchace.design_matrix_rows(sige_model, at)
    h = 1e-5
    for a, d in [(0, 0), (3, 2), (5, 1)]:
        ap, am = at.copy(), at.copy()
        ap.positions[a, d] += h
        am.positions[a, d] -= h
        fd = -(torchace.design_matrix_rows(sige_model, ap)[K.ENERGY]
               - torchace.design_matrix_rows(sige_model, am)[K.ENERGY]) / (2 * h)
        assert max_rel(rows[K.FORCES][3 * a + d], fd[0]) < 1e-6
    eps = np.zeros((3, 3))
    eps[1, 2] = eps[2, 1] = 0.5  # Voigt yz
    vals = [torchace.design_matrix_rows(sige_model, strained(at, s * eps))[K.ENERGY][0] for s in (h, -h)]
    assert max_rel(rows[K.VIRIAL][0, 3], -(vals[0] - vals[1]) / (2 * h)) < 1e-6
