"""The analytic fast paths against the autograd / forward-AD reference paths they replace.

- ``sph.RealSphericalHarmonics`` (values and gradients) against e3nn's harmonics and autograd;
- ``ManyBodyRadials.with_grad`` / ``PairBasis.with_grad`` against autograd of ``forward``;
- ``ACEModel`` eval-mode energy/forces/virials (``_predict_analytic``) against the autograd path;
- design-matrix rows with analytic ∂φ/∂r against the forward-AD rows.
"""
import numpy as np
import pytest
import torch
from e3nn import o3

import torchace
from torchace import keys as K
from torchace.structures.batch import collate
from torchace.model.evaluate import model_inputs
from torchace.fit.rows import batch_rows
from torchace.basis.angular import RealSphericalHarmonics, e3nn_signed_permutation, solid_gradient_matrices
from torchace.testing import random_cluster, randomize_coefficients, rattled_bulk, results_close

RTOL = {torch.float64: 1e-12, torch.float32: 1e-4}


@pytest.mark.parametrize("max_l", [0, 1, 3, 6, pytest.param(12, marks=pytest.mark.slow)])  # l = 12: 9 s
def test_harmonics_match_e3nn_and_autograd(max_l):
    g = torch.Generator().manual_seed(max_l)
    v = torch.randn(200, 3, generator=g, dtype=torch.float64) * 2.0
    Y, dY = RealSphericalHarmonics(max_l).to(torch.float64)(v, True)
    src, sign = e3nn_signed_permutation(max_l)
    src, sign = torch.from_numpy(src), torch.from_numpy(sign)
    ref = o3.spherical_harmonics(list(range(max_l + 1)), v, normalize=True, normalization="integral")
    assert torch.allclose((Y[src] * sign[:, None]).t(), ref, rtol=0, atol=1e-12 * max(1.0, float(ref.abs().max())))
    # gradients: analytic vs autograd of e3nn, and via the solid-harmonic matrices
    vv = v.clone().requires_grad_(True)
    ye = o3.spherical_harmonics(list(range(max_l + 1)), vv, normalize=True, normalization="integral")
    ones = torch.ones(v.shape[0], dtype=torch.float64)
    # (Y_00 is a constant: zero gradient, and autograd has no graph for it)
    jac = torch.stack([torch.zeros_like(v)] + [torch.autograd.grad(ye[:, k], vv, ones, retain_graph=True)[0]
                                               for k in range(1, ye.shape[1])])  # [n_y, E, 3]
    mine = (dY[:, src] * sign[None, :, None]).permute(1, 2, 0)
    scale = max(1.0, float(jac.abs().max()))
    assert float((mine - jac).abs().max()) < 1e-12 * scale
    D = torch.from_numpy(solid_gradient_matrices(max_l))
    r = torch.linalg.norm(v, dim=-1)
    u = (v / r[:, None]).t()
    ls = torch.tensor([l for l in range(max_l + 1) for _ in range(2 * l + 1)], dtype=torch.float64)
    via_d = (torch.einsum("cij,je->cie", D, Y) - ls[None, :, None] * Y[None] * u[:, None, :]) / r
    assert float((via_d - dY).abs().max()) < 1e-12 * scale


def test_radials_with_grad_match_autograd():
    m = torchace.ace_model(["Si", "Ge", "C"], 3, 8)
    with torch.no_grad():
        m.pair.scale.uniform_(0.5, 2.0)
    g = torch.Generator().manual_seed(0)
    r = torch.linspace(0.3, m.rcut + 0.5, 300, dtype=torch.float64)
    zi = torch.randint(0, 3, (300,), generator=g)
    zj = torch.randint(0, 3, (300,), generator=g)
    for mod in (m.embedding.radials, m.pair):
        val, der = mod.with_grad(r, zi, zj)
        rr = r.clone().requires_grad_(True)
        ref = mod(rr, zi, zj)
        jac = torch.stack([torch.autograd.grad(ref[:, k].sum(), rr, retain_graph=True)[0] for k in range(ref.shape[1])])
        ref = ref.detach()
        assert torch.allclose(val, ref.t(), rtol=0, atol=1e-13 * float(ref.abs().max()))
        assert torch.allclose(der, jac, rtol=0, atol=1e-12 * float(jac.abs().max()))


def _models():
    out = []
    for elements, order, td, kw in ((["Si"], 3, 10, {}), (["Si", "Ge"], 4, 7, {}),
                                    (["Si", "Ge", "C"], 2, 9, {"zbl": True}), (["Si"], 5, 6, {}),
                                    (["Si", "Ge"], 3, 6, {"pure2b": True}), (["Si"], 3, 6, {"pure": True})):
        m = torchace.ace_model(elements, order, td, **kw)
        randomize_coefficients(m, 0.3, seed=order)
        with torch.no_grad():  # a prior-style rescaling must be honoured by both paths
            m.embedding.nl_scale.uniform_(0.5, 2.0)
            m.pair.scale.uniform_(0.5, 2.0)
        out.append(m)
    return out


@pytest.mark.parametrize("dtype", [torch.float64, torch.float32])
def test_analytic_forces_match_autograd(device, dtype):
    structures = None
    for m in _models():
        m = m.to(device=device, dtype=dtype).eval()
        els = m.elements
        structures = [rattled_bulk(els, reps=(2, 1, 1), rattle=0.15, seed=3),
                      random_cluster(els, 9, 3.5, seed=4)]
        structures[0].cell[0, 1] = 0.6  # skewed cell
        b = collate(structures, m.config.numbers, m.rcut, dtype=dtype, device=device)
        inp = model_inputs(m, b)
        m.analytic = True
        fast = m(*inp, True, True)
        m.edge_chunk = 37  # memory-bounded: centre atoms in chunks
        chunked = m(*inp, True, True)
        m.edge_chunk = 1 << 22
        m.analytic = False
        ref = m(*inp, True, True)
        m.analytic = True
        for got in (fast, chunked):
            results_close({k: v.detach() for k, v in got.items()}, {k: v.detach() for k, v in ref.items()},
                          RTOL[dtype], keys=(K.ENERGY, K.NODE_ENERGY, K.FORCES, K.VIRIAL))


def test_training_mode_keeps_autograd_path():
    m = _models()[0]
    m.train()
    b = collate([rattled_bulk(["Si"], seed=1)], m.config.numbers, m.rcut)
    out = m(*model_inputs(m, b), True, True)
    assert out[K.FORCES].requires_grad  # create_graph: force-matching training differentiates forces
    assert out[K.ENERGY].requires_grad
    m.eval()  # inference: the hand adjoint without a graph (the one rule for every readout)
    out = m(*model_inputs(m, b), True, True)
    assert not out[K.FORCES].requires_grad and not out[K.ENERGY].requires_grad


def test_analytic_rows_match_forward_ad(device):
    for m in _models()[:3]:
        m = m.to(device)
        structures = [rattled_bulk(m.elements, reps=(1, 1, 1), rattle=0.12, seed=5),
                      random_cluster(m.elements, 7, 3.0, seed=6)]
        b = collate(structures, m.config.numbers, m.rcut, device=device)
        fast = batch_rows(m, b, backend="analytic")
        ref = batch_rows(m, b, backend="reference")
        for k in (K.ENERGY, K.FORCES, K.VIRIAL):
            scale = float(ref[k].abs().max())
            assert float((fast[k] - ref[k]).abs().max()) <= 1e-12 * scale, k


def test_analytic_path_scripts():
    m = _models()[2]  # with the ZBL baseline (its branch is only compiled when present)
    sm = torch.jit.script(m)
    b = collate([rattled_bulk(m.elements, seed=2)], m.config.numbers, m.rcut)
    inp = model_inputs(m, b)
    results_close({k: v.detach() for k, v in sm(*inp, True, True).items()},
                  {k: v.detach() for k, v in m(*inp, True, True).items()}, 1e-12)
    assert np.isfinite(float(sm(*inp, True, True)[K.ENERGY].sum()))


@pytest.mark.slow
def test_compiled_calculator_matches_eager():
    pytest.importorskip("torch._inductor")
    from torchace.calculators.ase import TorchACECalculator

    m = torchace.ace_model(["Si", "Ge"], 2, 4)
    randomize_coefficients(m, 0.3, seed=3)
    at = rattled_bulk(["Si", "Ge"], reps=(1, 1, 1), rattle=0.1, seed=7)
    ref = TorchACECalculator(m)
    try:
        fast = TorchACECalculator(m, compile=True)
        at.calc = fast
        f_fast, s_fast = at.get_forces(), at.get_stress()
    except Exception as err:  # no C++ toolchain for inductor: nothing to compare
        pytest.skip(f"torch.compile unavailable here: {type(err).__name__}: {err}")
    at.calc = ref
    f_ref, s_ref = at.get_forces(), at.get_stress()
    assert np.abs(f_fast - f_ref).max() <= 1e-10 * np.abs(f_ref).max()
    assert np.abs(s_fast - s_ref).max() <= 1e-10 * np.abs(s_ref).max()
    at2 = rattled_bulk(["Si", "Ge"], reps=(2, 1, 1), rattle=0.1, seed=8)  # new sizes: dynamic shapes
    at2.calc = fast
    e_fast = at2.get_potential_energy()
    at2.calc = ref
    assert abs(e_fast - at2.get_potential_energy()) <= 1e-10 * abs(e_fast)
