"""Priors (torchace/fit/priors.py, docs/priors.md).

* γ of single basis functions against hand-computed values of the formulas: ACEpotentials.jl v0.10's
  smoothness priors with the species-interleaved n (as ``_nnll_basis`` there), and the product-form
  regularity priors of Darby et al. (2026) with the polynomial degree k = (n − 1) // NZ.
* A basis prior applied to the model (R_nl → R_nl/γ) gives the design matrix of the unscaled model with
  its columns divided by Γ, so ridge on the rescaled model = generalised Tikhonov ||Γc||² on the unscaled
  one (solved independently with numpy), and c' on the rescaled model = c'/Γ on the unscaled one.
* Serialisation round trip and bad parameters.
"""
import copy
import json
import math

import numpy as np
import pytest
import torch

import torchace
from torchace import keys as K
from torchace.fit import priors
from torchace.testing import rattled_bulk


def _model(elements, order, td):
    E0 = {el: -1.5 - i for i, el in enumerate(elements)}
    return torchace.ace_model(elements, order, td, E0=E0)


@pytest.fixture(scope="module")
def si_small():
    return _model(["Si"], 3, 6)


@pytest.fixture(scope="module")
def sige_small():
    return _model(["Si", "Ge"], 2, 6)


def _col(model, nls):
    """Column of the many-body function with (n, l) multiset ``nls`` (centre element 0)."""
    return list(model.nl_of_b).index(tuple(sorted(nls)))


def _pair_col(model, centre, neigh, k):
    return model.n_manybody + (centre * model.nz + neigh) * model.n_pair + k


# ---------------------------------------------------------------- hand-computed values


def test_column_priors_single_element(si_small):
    m = si_small
    q = _col(m, [(1, 1), (2, 1)])
    g = {name: pr.column_scale(m) for name, pr in [("alg", priors.algebraic_smoothness()),
                                                   ("exp", priors.exponential_smoothness()),
                                                   ("gau", priors.gaussian_smoothness())]}
    # Σ_t (l/wl)^4 + (n/wn)^4 with wl = 2/3, wn = 1: 1.5^4 + 1 + 1.5^4 + 2^4
    assert g["alg"][q].item() == pytest.approx(27.125, rel=1e-14)
    # exp(Σ_t l/wl + n/wn) = exp(1.5 + 1 + 1.5 + 2)
    assert g["exp"][q].item() == pytest.approx(math.exp(6.0), rel=1e-14)
    # exp(Σ_t 2 l² + 2 n²) = exp(2 + 2 + 2 + 8)
    assert g["gau"][q].item() == pytest.approx(math.exp(14.0), rel=1e-14)
    # order-3 function ((1,0),(1,1),(1,1)): 1 + 2·(1.5^4 + 1)
    q3 = _col(m, [(1, 0), (1, 1), (1, 1)])
    assert g["alg"][q3].item() == pytest.approx(1 + 2 * (1.5 ** 4 + 1), rel=1e-14)
    # pair column of degree k = 3: n = 4, l = 0
    pc = _pair_col(m, 0, 0, 3)
    assert g["alg"][pc].item() == pytest.approx(4.0 ** 4, rel=1e-14)
    assert g["exp"][pc].item() == pytest.approx(math.exp(4.0), rel=1e-14)
    assert g["gau"][pc].item() == pytest.approx(math.exp(32.0), rel=1e-14)
    # non-default parameters
    g2 = priors.algebraic_smoothness(p=2, wl=1.5, wn=2.0).column_scale(m)
    assert g2[q].item() == pytest.approx((1 / 1.5) ** 2 + 0.25 + (1 / 1.5) ** 2 + 1.0, rel=1e-14)
    # the whole vector against the formula, element by element
    expect = [sum((l / (2 / 3)) ** 4 + n ** 4 for n, l in nls) for nls in m.nl_of_b]
    expect += [(k + 1) ** 4 for k in range(m.n_pair)]
    assert np.allclose(g["alg"].numpy(), expect, rtol=1e-14, atol=0)
    assert g["alg"].dtype == torch.float64 and g["alg"].shape == (m.basis_size,)


def test_basis_priors_single_element(si_small):
    m = si_small
    q = _col(m, [(1, 1), (2, 1)])  # (k, l) = (0, 1), (1, 1)
    ga = priors.algebraic(sigma_n=0.2).column_scale(m)  # σ_l = 0.3, p = 4
    assert ga[q].item() == pytest.approx(1.3 ** 4 * 1.5 ** 4, rel=1e-14)
    ge = priors.exponential(sigma_n=0.3).column_scale(m)  # σ_l = 0.45
    assert ge[q].item() == pytest.approx(math.exp(0.45 + 0.75), rel=1e-14)
    gg = priors.gaussian(sigma=1.2).column_scale(m)  # rcut 6 Å: σ_n² = 5·0.04 = 0.2, σ_l² = 0.04
    assert m.rcut == 6.0
    assert gg[q].item() == pytest.approx(math.exp(0.04 + 0.2 + 0.04), rel=1e-14)
    gx = priors.algebraic(sigma_n=0.2, sigma_l=0.5, p=2).column_scale(m)
    assert gx[q].item() == pytest.approx(1.5 ** 2 * 1.7 ** 2, rel=1e-14)
    # an order-1 function of degree 0 and the degree-0 pair function are not penalised
    q0 = _col(m, [(1, 0)])
    for g in (ga, ge, gg):
        assert g[q0].item() == 1.0 and g[_pair_col(m, 0, 0, 0)].item() == 1.0
    # pair column of degree 3 = the one-particle factor of (k = 3, l = 0)
    pc = _pair_col(m, 0, 0, 3)
    assert ga[pc].item() == pytest.approx(1.6 ** 4, rel=1e-14)
    assert gg[pc].item() == pytest.approx(math.exp(0.2 * 9), rel=1e-14)
    # explicit rcut overrides the model's
    scale = priors.gaussian(sigma=1.2, rcut=3.0).column_scale(m)[pc].item()
    assert scale == pytest.approx(math.exp(0.8 * 9), rel=1e-14)
    # one-particle scale = 1/γ₁, row n − 1
    nl, pair = priors.algebraic(sigma_n=0.2).one_particle_scale(m)
    assert nl.shape == (m.spec.max_n, m.spec.max_l + 1) and pair.shape == (m.n_pair,)
    assert nl[1, 1].item() == pytest.approx(1.5 ** -4, rel=1e-14)  # n = 2 (k = 1), l = 1
    assert pair[3].item() == pytest.approx(1.6 ** -4, rel=1e-14)


def test_interleaved_n_multi_element(sige_small):
    """Si, Ge: n = k·2 + s + 1.  Column priors use n itself (ACEpotentials.jl), basis priors use k."""
    m = sige_small
    assert m.nz == 2
    q = _col(m, [(2, 1), (3, 1)])  # n = 2: Ge, k = 0;  n = 3: Si, k = 1
    assert priors.algebraic_smoothness().column_scale(m)[q].item() == pytest.approx(
        2 * 1.5 ** 4 + 2.0 ** 4 + 3.0 ** 4, rel=1e-14)
    assert priors.exponential_smoothness().column_scale(m)[q].item() == pytest.approx(math.exp(3 + 2 + 3), rel=1e-14)
    assert priors.algebraic(sigma_n=0.2).column_scale(m)[q].item() == pytest.approx(1.3 ** 4 * 1.5 ** 4, rel=1e-14)
    # same multiset for the other centre element (block 1)
    g = priors.algebraic(sigma_n=0.2).column_scale(m)
    assert g[m.n_b + q].item() == g[q].item()
    q1 = _col(m, [(4, 0)])  # Ge neighbour, degree 1
    assert priors.algebraic_smoothness().column_scale(m)[q1].item() == pytest.approx(256.0, rel=1e-14)
    assert g[q1].item() == pytest.approx(1.2 ** 4, rel=1e-14)
    # pair blocks: (centre Ge, neighbour Si, k = 2) → n = 5; (Si, Ge, k = 2) → n = 6
    a = priors.algebraic_smoothness().column_scale(m)
    assert a[_pair_col(m, 1, 0, 2)].item() == pytest.approx(5.0 ** 4, rel=1e-14)
    assert a[_pair_col(m, 0, 1, 2)].item() == pytest.approx(6.0 ** 4, rel=1e-14)
    gs = priors.gaussian_smoothness().column_scale(m)
    assert gs[_pair_col(m, 1, 0, 2)].item() == pytest.approx(math.exp(50.0), rel=1e-14)
    for c in range(2):
        for s in range(2):
            assert g[_pair_col(m, c, s, 2)].item() == pytest.approx(1.4 ** 4, rel=1e-14)
    # one-particle rows n = 3 (Si, k = 1) and n = 4 (Ge, k = 1) are equal; n = 1, 2 are degree 0
    nl, _ = priors.gaussian(sigma=1.0).one_particle_scale(m)
    assert torch.equal(nl[2], nl[3]) and torch.equal(nl[0], nl[1])
    sn2 = 5 * (1.0 / m.rcut) ** 2
    assert nl[0, 0].item() == 1.0 and nl[2, 0].item() == pytest.approx(math.exp(-sn2), rel=1e-14)


# ---------------------------------------------------------------- equivalence


def _structures(elements):
    return [rattled_bulk(elements, a=a, rattle=0.12, seed=s) for s, a in enumerate([5.35, 5.43, 5.55])]


def _stack(rows):
    return np.concatenate([rows[K.ENERGY].numpy(), rows[K.FORCES].numpy(),
                           rows[K.VIRIAL].reshape(-1, rows[K.VIRIAL].shape[-1]).numpy()])


BASIS_PRIORS = [priors.algebraic(sigma_n=0.3, p=3), priors.exponential(sigma_n=0.4),
                priors.gaussian(sigma=1.5)]


@pytest.mark.parametrize("prior", BASIS_PRIORS, ids=lambda p: p.NAME)
@pytest.mark.parametrize("elements,order,td", [(["Si"], 3, 6), (["Si", "Ge"], 2, 5)], ids=["Si", "SiGe"])
def test_basis_prior_equals_generalised_tikhonov(prior, elements, order, td):
    plain = _model(elements, order, td)
    scaled = copy.deepcopy(plain)
    prior.apply(scaled)
    gamma = prior.column_scale(plain).numpy()
    assert gamma.max() > 3.0  # a prior that does something
    structures = _structures(elements)
    A = _stack(torchace.design_matrix_rows(plain, structures))
    A2 = _stack(torchace.design_matrix_rows(scaled, structures))
    # rows of the rescaled model = rows of the unscaled model / Γ, column by column
    scale = np.abs(A).max()
    assert np.abs(A2 - A / gamma).max() <= 1e-12 * scale
    # ... and not the unscaled rows (the check can fail)
    assert np.abs(A2 - A).max() > 1e-3 * scale
    # ridge on the rescaled model vs generalised Tikhonov on the unscaled one
    rng = np.random.default_rng(0)
    y = rng.normal(size=A.shape[0])
    K_ = A.shape[1]
    lam = 1e-3 * float(np.mean(np.sum(A2 ** 2, axis=0)))
    c_t = np.linalg.lstsq(np.vstack([A, math.sqrt(lam) * np.diag(gamma)]), np.concatenate([y, np.zeros(K_)]),
                          rcond=None)[0]
    c_s = np.linalg.lstsq(np.vstack([A2, math.sqrt(lam) * np.eye(K_)]), np.concatenate([y, np.zeros(K_)]),
                          rcond=None)[0]
    pred_t, pred_s = A @ c_t, A2 @ c_s
    assert np.linalg.norm(pred_s - pred_t) <= 1e-8 * np.linalg.norm(pred_t)
    assert np.allclose(c_s / gamma, c_t, rtol=1e-7, atol=1e-9 * np.abs(c_t).max())
    # identity Tikhonov on the unscaled model is a different fit
    c_i = np.linalg.lstsq(np.vstack([A, math.sqrt(lam) * np.eye(K_)]), np.concatenate([y, np.zeros(K_)]),
                          rcond=None)[0]
    assert np.linalg.norm(A @ c_i - pred_t) > 1e-6 * np.linalg.norm(pred_t)


@pytest.mark.parametrize("prior", BASIS_PRIORS, ids=lambda p: p.NAME)
def test_rescaled_model_evaluates_as_unscaled(prior, device):
    plain = _model(["Si", "Ge"], 2, 5).to(device)
    scaled = copy.deepcopy(plain)
    prior.apply(scaled)
    gamma = prior.column_scale(plain)
    g = torch.Generator().manual_seed(3)
    c_scaled = torch.randn(plain.basis_size, generator=g, dtype=torch.float64)
    scaled.coefficients = c_scaled.to(device)
    plain.coefficients = (c_scaled / gamma).to(device)
    structures = _structures(["Si", "Ge"])
    a, b = torchace.evaluate(scaled, structures), torchace.evaluate(plain, structures)
    for key in (K.ENERGY, K.FORCES, K.VIRIAL):
        x, z = a[key].cpu(), b[key].cpu()
        assert (x - z).abs().max().item() <= 1e-10 * z.abs().max().item(), key
    # with the same (unrescaled) coefficients the models differ: the scale is really applied
    plain.coefficients = c_scaled.to(device)
    assert (torchace.evaluate(plain, structures)[K.ENERGY] - a[K.ENERGY]).abs().max().item() > 1e-6


def test_apply_is_absolute_and_column_priors_leave_model_alone(si_small):
    m = copy.deepcopy(si_small)
    ones = torch.ones_like(m.embedding.nl_scale)
    priors.gaussian_smoothness().apply(m)
    priors.algebraic_smoothness().apply(m)
    assert torch.equal(m.embedding.nl_scale, ones) and torch.equal(m.pair.scale, torch.ones_like(m.pair.scale))
    pr = priors.exponential(sigma_n=0.5)
    pr.apply(m)
    first = m.embedding.nl_scale.clone()
    pr.apply(m)
    assert torch.equal(m.embedding.nl_scale, first) and not torch.equal(first, ones)
    assert torch.allclose(m.pair.scale, pr.one_particle_scale(m)[1])
    # column_scale refers to the unscaled basis whatever the model's current scale
    assert torch.equal(pr.column_scale(m), pr.column_scale(si_small))
    priors.reset_basis_scale(m)
    assert torch.equal(m.embedding.nl_scale, ones)


# ---------------------------------------------------------------- serialisation and errors


ALL = [priors.algebraic_smoothness(), priors.algebraic_smoothness(p=2, wl=1.5, wn=2),
       priors.exponential_smoothness(wl=0.5), priors.gaussian_smoothness(wn=0.9),
       priors.algebraic(sigma_n=0.1), priors.algebraic(0.1, sigma_l=0.4, p=2),
       priors.exponential(sigma_n=0.25), priors.gaussian(sigma=2.0), priors.gaussian(sigma=0.5, rcut=5.0)]


@pytest.mark.parametrize("prior", ALL, ids=lambda p: p.NAME)
def test_round_trip(prior, si_small):
    d = prior.to_dict()
    back = priors.from_dict(json.loads(json.dumps(d)))
    assert back == prior and type(back) is type(prior) and back.kind == prior.kind
    assert torch.equal(back.column_scale(si_small), prior.column_scale(si_small))
    assert prior.kind == ("basis" if prior.NAME in ("algebraic", "exponential", "gaussian") else "column")


def test_defaults_match_acepotentials():
    assert priors.algebraic_smoothness().to_dict() == {"name": "algebraic_smoothness", "p": 4.0, "wl": 2 / 3, "wn": 1.0}
    assert priors.exponential_smoothness().to_dict() == {"name": "exponential_smoothness", "wl": 2 / 3, "wn": 1.0}
    assert priors.gaussian_smoothness().to_dict() == {"name": "gaussian_smoothness", "wl": 1 / math.sqrt(2),
                                                      "wn": 1 / math.sqrt(2)}
    assert priors.algebraic(sigma_n=0.2).sigma_l == pytest.approx(0.3)
    assert priors.exponential(sigma_n=0.2).sigma_l == pytest.approx(0.3)


@pytest.mark.parametrize("make,match", [
    (lambda: priors.algebraic(sigma_n=-0.1), "sigma_n must be >= 0"),
    (lambda: priors.algebraic(sigma_n=0.1, sigma_l=-1), "sigma_l must be >= 0"),
    (lambda: priors.algebraic(sigma_n=0.1, p=0), "p must be > 0"),
    (lambda: priors.exponential(sigma_n=-1.0), "sigma_n must be >= 0"),
    (lambda: priors.gaussian(sigma=-0.5), "sigma must be >= 0"),
    (lambda: priors.gaussian(sigma=1.0, rcut=0.0), "rcut must be > 0"),
    (lambda: priors.gaussian(sigma=float("nan")), "must be finite"),
    (lambda: priors.algebraic_smoothness(p=-1), "p must be > 0"),
    (lambda: priors.exponential_smoothness(wl=0), "wl must be > 0"),
    (lambda: priors.gaussian_smoothness(wn=float("inf")), "must be finite"),
    (lambda: priors.from_dict({"name": "gaussian", "sigma": 1.0, "sigma_n": 2.0}), r"unknown key\(s\) \['sigma_n'\]"),
    (lambda: priors.from_dict({"name": "smoothest", "p": 1}), "unknown prior name 'smoothest'"),
    (lambda: priors.from_dict({"sigma": 1.0}), "needs a 'name'"),
    (lambda: priors.from_dict({"name": "gaussian"}), "missing required key"),
    (lambda: priors.from_dict({"name": "gaussian", "sigma": -2.0}), "sigma must be >= 0"),
])
def test_bad_parameters(make, match):
    with pytest.raises(ValueError, match=match):
        make()


def test_bad_types_and_overflow(si_small):
    with pytest.raises(TypeError, match="sigma must be a real number"):
        priors.gaussian(sigma="2")
    with pytest.raises(TypeError, match="p must be a real number"):
        priors.algebraic(0.1, p=True)
    with pytest.raises(TypeError, match="must be a dict"):
        priors.from_dict([("name", "gaussian")])
    with pytest.raises(ValueError, match="overflows float64"):
        priors.gaussian_smoothness(wn=0.05).column_scale(si_small)
    with pytest.raises(ValueError, match="overflows float64"):
        priors.gaussian(sigma=200.0).one_particle_scale(si_small)
