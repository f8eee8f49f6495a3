"""Gauss–Newton training (torchace.train.gauss_newton, issue 16): the rows with per-site embedding weights are
the exact Jacobian of E, F and the virial in every density and pair coefficient (against autograd of the
reference path), one undamped step of the linear model is the solvers.QR(lam) fit, the LM iteration only goes
down, the symmetry-breaking split keeps the energies to first order, and the MLP is refused."""
import pytest
import torch

import torchace
from torchace import keys as K
from torchace.fit import solvers
from torchace.fit.data import read_data
from torchace.fit.driver import set_E0
from torchace.train.gauss_newton import (GaussNewton, add_gram, embedding_derivatives, fused_rows_reason,
                                            get_theta, normal_equations, radial_scale, radial_step_reason)
from torchace.uncertainty.nonlinear import committee_linear_model
from torchace.train.trainer import Penalty, resolve_optimizer
from torchace.train.loss import loss_metrics, make_batches
from torchace.fit.weights import resolve_weights
from torchace.model.backends import fused
from torchace.model.backends.fused_nonlinear import DENSITIES, nonlinear_forward
from torchace.model.backends.torch_rows import torch_rows
from torchace.model.evaluate import model_inputs
from torchace.model import ACEModel, from_linear
from torchace.structures.batch import collate
from torchace.testing import model_labelled, random_cluster, randomize_coefficients, rattled_bulk

W = {"default": {"E": 30, "F": 1, "V": 1}}
E0 = {"Si": 0.0}


def _labelled(els, n=6, seed=0, noise=0.01, nonlinear=False):
    """Labelled structures from a random linear model, or (``nonlinear``) from an FS model whose second density
    is large (ρ_2 = O(1) eV: far from linear), with noisy forces."""
    true = torchace.ace_model(els, 2, 4)
    randomize_coefficients(true, 0.05, seed=3)
    if nonlinear:
        true = from_linear(true, densities=2, embedding="fs", learnable_radials=False).eval()
        with torch.no_grad():
            true.density_coefficients[1] = 3.0 * true.density_coefficients[0]
    return model_labelled(true, els, n, seed, noise)


def _with(model, theta, fn):
    """fn() with the coefficients (densities 1 … P, then pair) replaced by ``theta`` (differentiable)."""
    old = model.coefficients
    del model.coefficients
    model.coefficients = theta
    try:
        return fn()
    finally:
        del model.coefficients
        model.coefficients = old


@pytest.mark.parametrize("variant", ["fs_learned_radials", "fs_fixed", "linear"])
def test_rows_are_the_jacobian(variant):
    els = ["Si", "C"]
    lin = torchace.ace_model(els, 3, 6)
    randomize_coefficients(lin, 0.3, seed=1)
    if variant == "linear":
        nl = ACEModel(lin.config)
        with torch.no_grad():
            nl.density_coefficients[0] = lin.coefficients[: lin.n_manybody].view(2, -1).detach()
    else:
        nl = from_linear(lin, densities=2, embedding="fs", learnable_radials=variant == "fs_learned_radials",
                         init_scale=0.3, seed=1)
    if nl.radials is not None:
        with torch.no_grad():
            nl.radials.weights.add_(0.05 * torch.randn(nl.radials.weights.shape, dtype=torch.float64,
                                                      generator=torch.Generator().manual_seed(2)))
    nl.eval()
    a = rattled_bulk(els, seed=1)
    batch = collate([a, random_cluster(els, 5, 3.0, seed=2)], nl.config.numbers, nl.rcut, dtype=torch.float64)
    basis = committee_linear_model(nl) if nl.radials is not None else nl
    rows = torch_rows(basis, batch, densities=(nl.density_coefficients.detach(), embedding_derivatives(nl)))
    theta = nl.coefficients.detach()

    def outputs(t):
        def run():
            o = nl.reference_forward(*model_inputs(nl, batch), True, True)
            return torch.cat([o[K.ENERGY], o[K.FORCES].reshape(-1), K.to_voigt(o[K.VIRIAL]).reshape(-1)])
        return _with(nl, t, run)

    nl.train()  # create_graph through the forces
    J = torch.autograd.functional.jacobian(outputs, theta)
    nl.eval()
    Jr = torch.cat([rows[K.ENERGY], rows[K.FORCES], rows[K.VIRIAL].reshape(-1, theta.numel())])
    assert Jr.shape == J.shape
    assert float((J - Jr).abs().max()) < 1e-10 * float(J.abs().max())
    if fused.available():  # the fused kernel's rows (what normal_equations uses on CPU): the same Jacobian
        assert fused_rows_reason(nl, "cpu") is None
        out = nonlinear_forward(nl, *model_inputs(nl, batch), True, True, with_densities=True)
        w, t = embedding_derivatives(nl)(out[DENSITIES], batch[K.SPECIES])
        fr = fused.design_rows(basis, batch, densities=(nl.density_coefficients.detach(), w, t))
        Jf = torch.cat([fr[K.ENERGY], fr[K.FORCES], fr[K.VIRIAL].reshape(-1, theta.numel())])
        assert float((J - Jf).abs().max()) < 1e-10 * float(J.abs().max())


def test_one_undamped_step_is_the_qr_fit():
    data = _labelled(["Si"])
    lam = 0.5
    lin = torchace.ace_model(["Si"], 2, 4)
    torchace.fit(lin, data, weights=W, E0=E0, solver=solvers.QR(lam=lam), compute_errors=False)
    nl = ACEModel(lin.config)
    set_E0(nl, read_data(data, elements=["Si"]), E0)
    with torch.no_grad():  # start anywhere: the problem is quadratic
        nl.density_coefficients.normal_(0, 0.1, generator=torch.Generator().manual_seed(0))
    ds = read_data(data, elements=["Si"])
    batches = make_batches(nl, ds.structures, resolve_weights(W), 4, "cpu", torch.float64)
    H = normal_equations(nl, batches)[0]
    cond = float(torch.linalg.cond(H + lam ** 2 * torch.eye(H.shape[0], dtype=H.dtype)))
    gn = GaussNewton(nl, batches, Penalty(nl, lam, None), mu=0.0)
    info = gn.step()
    c = nl.coefficients.detach()
    ref = lin.coefficients.detach()
    # the normal equations' rounding bound: cond(JᵀJ + λ²) · ε (QR itself is accurate to cond(J) · ε)
    err = float((c - ref).norm() / ref.norm())
    assert info["tries"] == 1 and err < 10 * cond * torch.finfo(torch.float64).eps, (err, cond)


def test_levenberg_marquardt_descends_below_the_linear_fit_and_lbfgs():
    """On data of an FS model (which the linear fit cannot represent), every Gauss–Newton epoch lowers the loss,
    ends below the linear warm start, and below L-BFGS after as many epochs."""
    data = _labelled(["Si"], n=8, nonlinear=True)
    final = {}
    for opt in ("gn", "lbfgs"):
        nl = from_linear(torchace.ace_model(["Si"], 2, 4), densities=2, embedding="fs", learnable_radials=True)
        res = torchace.train(nl, data, weights=W, E0=E0, epochs=6, lam=1e-2, optimizer=opt, progress=False)
        losses = [h["train"]["loss"] for h in res.history]
        final[opt] = losses[-1]
        if opt == "gn":
            assert res.hyperparameters["optimizer"] == "gn"
            after_split = losses[1:]
            assert all(b < a for a, b in zip(after_split, after_split[1:])), losses  # LM accepts descents only
            assert losses[-1] < 0.97 * losses[0], losses
            assert all(h["gn"]["tries"] >= 1 for h in res.history[1:])
    assert final["gn"] < final["lbfgs"], final


def test_split_keeps_energies_to_first_order():
    lin = torchace.ace_model(["Si"], 2, 4)
    randomize_coefficients(lin, 0.05, seed=1)
    at = [rattled_bulk(["Si"], seed=3)]
    e_lin = float(torchace.evaluate(lin, at)[K.ENERGY][0])
    d = []
    for kappa in (1e-3, 2e-3):
        nl = from_linear(lin, densities=2, embedding="fs", learnable_radials=False)
        nl.split_densities(kappa)
        assert torch.allclose(nl.density_coefficients[1], kappa * lin.coefficients[: nl.n_b].detach().view(1, -1))
        d.append(float(torchace.evaluate(nl, at)[K.ENERGY][0]) - e_lin)
    assert d[0] != 0 and abs(d[1] / d[0] - 4.0) < 0.05  # quadratic in κ


def test_gn_refuses_the_mlp_and_auto_falls_back():
    nl = from_linear(torchace.ace_model(["Si"], 2, 4), densities=2, embedding="mlp", learnable_radials=False)
    with pytest.raises(ValueError, match="separable embedding"):
        resolve_optimizer(nl, "gn")
    assert resolve_optimizer(nl, "auto") == "lbfgs"
    fs = from_linear(torchace.ace_model(["Si"], 2, 4), densities=2, embedding="fs")
    assert resolve_optimizer(fs, "auto") == "gn"


def test_gn_loss_matches_the_training_loss():
    """The loss Gauss–Newton compares steps with is loss_metrics' (the penalty on W included)."""
    data = _labelled(["Si"], n=4)
    nl = from_linear(torchace.ace_model(["Si"], 2, 4), densities=2, embedding="fs", learnable_radials=True,
                     init_scale=0.05)
    set_E0(nl, read_data(data, elements=["Si"]), E0)
    with torch.no_grad():
        nl.radials.weights.add_(0.01)
    batches = make_batches(nl, read_data(data, elements=["Si"]).structures, resolve_weights(W), 4, "cpu",
                           torch.float64)
    pen = Penalty(nl, 0.1, None)
    gn = GaussNewton(nl, batches, pen)
    before = loss_metrics(nl, batches, pen)["loss"]
    info = gn.step()
    assert abs(info["before"] - before) < 1e-12 * before
    assert info["after"] == pytest.approx(loss_metrics(nl, batches, pen)["loss"], rel=1e-12)


def test_gn_resume_gives_the_uninterrupted_model(tmp_path):
    data = _labelled(["Si"], n=6, nonlinear=True)
    kw = dict(weights=W, E0=E0, lam=1e-2, optimizer="gn", progress=False, compute_errors=False)

    def fresh():
        return from_linear(torchace.ace_model(["Si"], 2, 4), densities=2, embedding="fs", learnable_radials=True)

    whole = fresh()
    r_whole = torchace.train(whole, data, epochs=4, **kw)
    ck = str(tmp_path / "gn.pt")
    torchace.train(fresh(), data, epochs=2, checkpoint=ck, **kw)
    resumed = fresh()
    r_res = torchace.train(resumed, data, epochs=4, checkpoint=ck, **kw)
    assert [h["epoch"] for h in r_res.history] == list(range(5))
    assert r_res.history[-1]["gn"]["mu"] == r_whole.history[-1]["gn"]["mu"]
    for (k, a), b in zip(whole.state_dict().items(), resumed.state_dict().values()):
        assert torch.allclose(a, b, rtol=1e-12, atol=1e-14), k


def test_a_normal_matrix_too_large_is_refused_before_the_warm_start(monkeypatch):
    import torchace.train.gauss_newton as G

    monkeypatch.setattr(G, "available_bytes", lambda device=None: 1000)
    calls = []
    monkeypatch.setattr(torchace.fit.driver, "fit", lambda *a, **k: calls.append(1))
    nl = from_linear(torchace.ace_model(["Si"], 2, 4), densities=2, embedding="fs")
    with pytest.raises(MemoryError, match="normal matrix.*optimizer='lbfgs'"):
        torchace.train(nl, _labelled(["Si"], n=2), weights=W, E0=E0, epochs=2, progress=False)
    assert not calls


@pytest.mark.skipif(not fused.available(), reason="fused C++ kernel not buildable here")
@pytest.mark.parametrize("els", [["Si"], ["Si", "C"]])
def test_radial_rows_are_the_jacobian_in_W(els):
    """The fused kernel's rows in the used radial weights W[:, :, n, l, :] (Hessian of the site energy in A, the raw
    polynomial A-basis, the prior scale) = the autograd Jacobian of E, F and the virial (reference path)."""
    lin = torchace.ace_model(els, 3, 6)
    randomize_coefficients(lin, 0.3, seed=1)
    with torch.no_grad():  # a prior's rescaling: inside the learned radial sum
        lin.embedding.nl_scale.uniform_(0.5, 2.0, generator=torch.Generator().manual_seed(4))
    nl = from_linear(lin, densities=2, embedding="fs", learnable_radials=True, init_scale=0.3, seed=1).eval()
    with torch.no_grad():
        nl.radials.weights.add_(0.05 * torch.randn(nl.radials.weights.shape, dtype=torch.float64,
                                                  generator=torch.Generator().manual_seed(2)))
    assert radial_step_reason(nl, "cpu") is None
    batch = collate([rattled_bulk(els, seed=1), random_cluster(els, 5, 3.0, seed=2)], nl.config.numbers, nl.rcut,
                    dtype=torch.float64)
    out = nonlinear_forward(nl, *model_inputs(nl, batch), True, True, with_densities=True)
    w, t = embedding_derivatives(nl)(out[DENSITIES], batch[K.SPECIES])
    rows = fused.design_rows(committee_linear_model(nl), batch, densities=(nl.density_coefficients.detach(), w, t),
                             radial_columns=True)
    R = nl.radials
    n_w = R.nz * R.nz * R.u_n.shape[0] * R.n_poly
    theta = get_theta(nl, True)
    assert theta.numel() == nl.coefficients.numel() + n_w
    W0 = R.weights.detach().clone()

    def outputs(tw):
        W = W0.clone()
        W[:, :, R.u_n, R.u_l, :] = tw.view(R.nz, R.nz, -1, R.n_poly)
        del R.weights
        R.weights = W
        try:
            o = nl.reference_forward(*model_inputs(nl, batch), True, True)
            return torch.cat([o[K.ENERGY], o[K.FORCES].reshape(-1), K.to_voigt(o[K.VIRIAL]).reshape(-1)])
        finally:
            del R.weights
            R.weights = torch.nn.Parameter(W0.clone())

    nl.train()  # create_graph through the forces
    J = torch.autograd.functional.jacobian(outputs, theta[-n_w:])
    nl.eval()
    # the kernel's columns are ∂/∂W_eff; radial_scale is the chain rule to W
    Jr = torch.cat([rows[K.ENERGY], rows[K.FORCES], rows[K.VIRIAL].reshape(-1, rows[K.ENERGY].shape[1])])[:, -n_w:]
    Jr = Jr * radial_scale(nl)
    assert float(J.abs().max()) > 0
    assert float((J - Jr).abs().max()) < 1e-10 * float(J.abs().max()), float((J - Jr).abs().max() / J.abs().max())
    # the Gauss–Newton normal equations in [c | pair | W] agree with these rows
    ds = read_data(_labelled(els, n=2), elements=els)
    batches = make_batches(nl, ds.structures, resolve_weights(W), 4, "cpu", torch.float64)
    H = normal_equations(nl, batches, radials=True)[0]
    assert H.shape == (theta.numel(), theta.numel()) and float(H[-n_w:, -n_w:].diagonal().max()) > 0


def test_block_upper_gram_is_jtj():
    """normal_equations accumulates JᵀJ on the upper block triangle (half the flops) and mirrors it."""
    J = torch.randn(50, 23, dtype=torch.float64, generator=torch.Generator().manual_seed(1))
    H = torch.zeros(23, 23, dtype=torch.float64)
    for part in (J[:20], J[20:]):
        add_gram(H, part, block=7)  # blocks 7, 7, 7, 2: diagonal and off-diagonal blocks, a ragged edge
    full = torch.triu(H) + torch.triu(H, 1).t()
    assert torch.allclose(full, J.t() @ J, rtol=1e-13, atol=1e-12)
    assert float(torch.tril(H, -7).abs().max()) == 0.0  # the lower block triangle was not computed
