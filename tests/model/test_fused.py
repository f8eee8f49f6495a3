"""The fused C++ CPU kernel (torchace.fused) against the autograd reference path of the model.

Skipped where the kernel cannot be built (no C++ compiler or ninja); CI builds it (≈ 30 s, cached).
"""
import numpy as np
import pytest
import torch

import torchace
from torchace.model.backends import fused
from torchace.model.backends.products import product_scheme
from torchace import keys as K
from torchace.structures.batch import collate
from torchace.model.evaluate import model_inputs
from torchace.testing import random_cluster, randomize_coefficients, rattled_bulk, results_close

pytestmark = pytest.mark.skipif(not fused.available(), reason="fused C++ kernel not buildable here")

RTOL = {torch.float64: 1e-12, torch.float32: 1e-4}


def _models():
    out = []
    for elements, order, td, kw in ((["Si"], 3, 10, {}), (["Si", "Ge"], 4, 7, {}), (["Si", "Ge", "C"], 2, 9, {}),
                                    (["Si"], 5, 6, {}), (["Si", "Ge"], 3, 6, {"pure2b": True}),
                                    (["Si"], 3, 6, {"pure": True}), (["Si"], 2, 14, {"pair": False})):
        m = torchace.ace_model(elements, order, td, E0={e: -1.5 - k for k, e in enumerate(elements)}, **kw)
        randomize_coefficients(m, 0.3, seed=order)
        with torch.no_grad():  # prior-style rescalings of A and of the pair basis
            m.embedding.nl_scale.uniform_(0.5, 2.0)
            m.pair.scale.uniform_(0.5, 2.0)
        out.append(m)
    return out


def _structures(elements):
    s = [rattled_bulk(elements, reps=(2, 1, 1), rattle=0.15, seed=3), random_cluster(elements, 9, 3.5, seed=4),
         rattled_bulk(elements, reps=(1, 1, 1), rattle=0.1, seed=5)]
    s[0].cell[0, 1] = 0.6  # skewed cell
    s[2].pbc = (True, False, True)
    return s


@pytest.mark.parametrize("products", ["auto", "dag", "pairs"])
@pytest.mark.parametrize("dtype", [torch.float64, torch.float32])
def test_fused_matches_reference(dtype, products):
    """Both product schemes of the energy kernel (the shared-prefix DAG, the coupled pairs of
    torchace/basis/recoupling.py) against the autograd reference, on every model family the kernel takes."""
    for m in _models():
        if products == "pairs" and m.config.order > 4:
            with pytest.raises(ValueError, match="coupled-pair scheme does not apply"):
                fused.FusedEvaluator(m, products=products)
            continue
        m = m.to(dtype=dtype).eval()
        b = collate(_structures(m.elements), m.config.numbers, m.rcut, dtype=dtype)
        inp = model_inputs(m, b)
        m.analytic = False  # the autograd reference path
        ref = {k: v.detach() for k, v in m(*inp, True, True).items()}
        m.analytic = True
        ev = fused.FusedEvaluator(m, products=products)
        assert ev.scheme == (product_scheme(m) if products == "auto" else products)
        got = ev(*inp, True, True)
        results_close(got, ref, RTOL[dtype], keys=(K.ENERGY, K.NODE_ENERGY, K.FORCES, K.VIRIAL))
        e_only = fused.FusedEvaluator(m, products=products)(*inp, False, False)
        assert K.FORCES not in e_only and K.VIRIAL not in e_only
        results_close(e_only, ref, RTOL[dtype], keys=(K.ENERGY, K.NODE_ENERGY))


def test_fused_skin_edges_and_unsorted_lists():
    """Edges beyond rcut (a skin list) contribute exactly nothing; the edge order does not matter."""
    m = _models()[1]
    atoms = _structures(m.elements)[0]
    b = collate([atoms], m.config.numbers, m.rcut + 1.0)  # a neighbour list with a 1 Å skin
    inp = list(model_inputs(m, b))
    ref = {k: v.detach() for k, v in m(*inp, True, True).items()}
    f = fused.FusedEvaluator(m)
    results_close(f(*inp, True, True), ref, 1e-12, keys=(K.ENERGY, K.NODE_ENERGY, K.FORCES, K.VIRIAL))
    perm = torch.randperm(inp[3].shape[1], generator=torch.Generator().manual_seed(0))
    inp[3], inp[4] = inp[3][:, perm], inp[4][perm]
    results_close(f(*inp, True, True), ref, 1e-12, keys=(K.ENERGY, K.NODE_ENERGY, K.FORCES, K.VIRIAL))


def test_fused_sees_new_coefficients():
    m = _models()[0]
    b = collate(_structures(m.elements)[:1], m.config.numbers, m.rcut)
    inp = model_inputs(m, b)
    f = fused.FusedEvaluator(m)
    e1 = f(*inp, False, False)[K.ENERGY].clone()
    with torch.no_grad():
        m.coefficients.mul_(2.0)
    e2 = f(*inp, False, False)[K.ENERGY]
    assert torch.allclose(e2, m(*inp, False, False)[K.ENERGY].detach(), rtol=1e-12, atol=0)
    assert not torch.allclose(e1, e2)


def test_fused_calculator_matches_default_and_checks_distances():
    from torchace.calculators.ase import TorchACECalculator

    m = _models()[1]
    atoms = _structures(m.elements)[0]
    ref = TorchACECalculator(m)
    fast = TorchACECalculator(m, backend="fused")
    for k in range(3):  # reused neighbour lists (skin) on later steps
        atoms.positions += np.random.default_rng(k).uniform(-0.02, 0.02, atoms.positions.shape)
        atoms.calc = ref
        e_ref, f_ref, s_ref = atoms.get_potential_energy(), atoms.get_forces(), atoms.get_stress()
        atoms.calc = fast
        assert abs(atoms.get_potential_energy() - e_ref) <= 1e-12 * abs(e_ref)
        np.testing.assert_allclose(atoms.get_forces(), f_ref, rtol=0, atol=1e-12 * np.abs(f_ref).max())
        np.testing.assert_allclose(atoms.get_stress(), s_ref, rtol=0, atol=1e-12 * np.abs(s_ref).max())
    assert fast.n_neighbour_list_builds < 3
    atoms.positions[1] = atoms.positions[0] + [0.004, 0.0, 0.0]
    with pytest.raises(ValueError, match="apart"):
        fast.calculate(atoms, ["energy"])


def test_fused_refuses_what_it_cannot_do():
    m = torchace.ace_model(["Si", "Ge"], 2, 6, zbl=True)
    assert "ZBL" in fused.supported(m)
    with pytest.raises(ValueError, match="ZBL"):
        fused.FusedEvaluator(m)
    from torchace.calculators.ase import TorchACECalculator

    with pytest.raises(ValueError, match="analytic"):
        TorchACECalculator(torchace.ace_model(["Si"], 2, 6), backend="fused", compile=True)


def test_fused_backend_adds_the_zbl_baseline():
    """The fused backend routes the ZBL baseline around the kernel (torch pair formula): same numbers as the
    autograd reference, for energies, site energies, forces and virials."""
    m = torchace.ace_model(["Si", "Ge"], 3, 8, zbl=True)
    randomize_coefficients(m, seed=5)
    at = _structures(m.elements)
    ref = torchace.evaluate(m, at, backend="reference")
    got = torchace.evaluate(m, at, backend="fused")
    base = torchace.evaluate(torchace.ace_model(["Si", "Ge"], 3, 8), at, backend="reference")  # no baseline
    assert float((ref[K.ENERGY] - base[K.ENERGY]).abs().max()) > 1e-3  # the baseline matters here
    results_close(got, ref, 1e-12)


@pytest.mark.slow  # 7-10 s per dtype
@pytest.mark.parametrize("dtype", [torch.float64, torch.float32])
def test_fused_rows_match_reference(dtype):
    from torchace.fit.rows import batch_rows

    for m in _models():
        m = m.to(dtype=dtype)
        b = collate(_structures(m.elements), m.config.numbers, m.rcut + 0.7, dtype=dtype)  # with skin edges
        ref = batch_rows(m, b, backend="reference")  # forward-AD ∂φ/∂r, the reference path
        got = batch_rows(m, b, backend="fused")
        for k in (K.ENERGY, K.FORCES, K.VIRIAL):
            assert got[k].shape == ref[k].shape, k
            scale = float(ref[k].abs().max())
            assert float((got[k] - ref[k]).abs().max()) <= RTOL[dtype] * scale, (k, m.extra_repr())


@pytest.mark.slow  # 6 s
def test_fused_fit_equals_reference_fit():
    from torchace.testing import labelled_dataset

    data = labelled_dataset(6, seed=1)
    structures = [s.atoms for s in data]
    preds = []
    for fz in (False, True):
        m = torchace.ace_model(["Si", "Ge"], 3, 8)
        torchace.fit(m, data, solver=torchace.fit.solvers.QR(lam=1e-3), E0={"Si": -158.5, "Ge": -100.0},
                     backend="fused" if fz else "analytic", compute_errors=False)
        preds.append(torchace.evaluate(m, structures))
    # the fitted values are what the data determine (coefficients along near-null directions of this small,
    # rank-deficient system move with rounding)
    results_close(preds[1], preds[0], 1e-8)
    # a ZBL baseline has no columns: the fused rows serve models with one too
    fits = []
    for b in ("fused", "analytic"):
        m = torchace.ace_model(["Si", "Ge"], 2, 6, zbl=True)
        r = torchace.fit(m, data, E0={"Si": -158.5, "Ge": -100.0}, backend=b, compute_errors=False,
                         solver=torchace.fit.solvers.QR(lam=1e-3))
        assert r.info["backend"] == b
        fits.append(torchace.evaluate(m, structures))
    results_close(fits[0], fits[1], 1e-8)


def test_fused_threads_agree():
    """Atoms split over threads (private force/virial/row accumulators) give the one-thread result."""
    m = _models()[1]
    b = collate([rattled_bulk(m.elements, reps=(3, 2, 2), rattle=0.1, seed=7)], m.config.numbers, m.rcut)
    inp = model_inputs(m, b)
    f = fused.FusedEvaluator(m)
    n = torch.get_num_threads()
    try:
        torch.set_num_threads(1)
        one = f(*inp, True, True)
        torch.set_num_threads(2)
        two = f(*inp, True, True)
    finally:
        torch.set_num_threads(n)
    results_close(two, one, 1e-12, keys=(K.ENERGY, K.NODE_ENERGY, K.FORCES, K.VIRIAL))
    assert torch.equal(two[fused.CLOSEST_PAIR], one[fused.CLOSEST_PAIR])
    try:  # design-matrix rows: private row buffers per thread
        torch.set_num_threads(1)
        one = fused.design_rows(m, b)
        torch.set_num_threads(2)
        two = fused.design_rows(m, b)
    finally:
        torch.set_num_threads(n)
    for k in (K.ENERGY, K.FORCES, K.VIRIAL):
        assert float((two[k] - one[k]).abs().max()) <= 1e-12 * float(one[k].abs().max()), k
