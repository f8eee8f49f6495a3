"""Nonlinear ACE (torchace.model.nonlinear, docs/nonlinear.md): the linear limit is ACEModel bit for bit;
parameter gradients, forces and virials against central finite differences; invariance; warm start from a
linear fit; the model file; every device."""
import json
import math

import numpy as np
import pytest
import torch

import torchace
from torchace import keys as K
from torchace.atomic import OutputPathError
from torchace import priors
from torchace.model.evaluate import model_inputs
from torchace.model import ACEModel, from_linear, nonlinear_ace_model
from torchace.model.readout import FSEmbedding, fs_shifted_scaled
from torchace.io import load
from torchace.model.state import ModelFileError
from torchace.structures.batch import collate
from torchace.testing import (fd_forces, fd_virial, random_cluster, random_rotation, randomize_coefficients,
                              rattled_bulk)

OUT = (K.ENERGY, K.NODE_ENERGY, K.FORCES, K.VIRIAL)


@pytest.fixture(scope="module", autouse=True)
def _threads(one_thread):
    yield


def linear(elements, order=3, td=8, prior=True, seed=1, **kw):
    m = torchace.ace_model(elements, order, td, E0={e: -1.5 - k for k, e in enumerate(elements)}, **kw)
    randomize_coefficients(m, 0.1, seed=seed)
    if prior:
        pr = priors.gaussian(1.5)
        pr.apply(m)
        m.prior_info = pr.to_dict()  # as torchace.fit records it
    return m


def batch_of(model, atoms, device="cpu"):
    return collate(atoms, model.config.numbers, model.rcut, dtype=torch.float64, device=device)


def run(model, atoms, path="reference_forward", device="cpu", forces=True, virials=True):
    out = getattr(model, path)(*model_inputs(model, batch_of(model, atoms, device)), forces, virials)
    return out if model.training else {k: v.detach() for k, v in out.items()}


def perturb(model, seed=0, scale=0.05):
    """Move every parameter away from its initial value (densities ≠ 0, W ≠ I, MLP output ≠ 0)."""
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for p in model.parameters():
            if p.requires_grad:
                p.add_(torch.randn(p.shape, generator=g, dtype=torch.float64).to(p) * scale)


def energy(model, atoms):
    return float(run(model, atoms, forces=False, virials=False)[K.ENERGY].sum().detach())


def diffs(a, b):
    return {k: float((a[k].detach() - b[k].detach()).abs().max()) for k in OUT if k in a and k in b}


def rel(a, b):
    return {k: float((a[k].detach() - b[k].detach()).abs().max() / b[k].detach().abs().max().clamp_min(1e-300))
            for k in OUT if k in a and k in b}


@pytest.fixture(scope="module")
def si():
    return linear(["Si"])


@pytest.fixture(scope="module")
def sige_pure2b():
    return linear(["Si", "Ge"], 3, 6, pure2b=True, zbl=True)


@pytest.fixture(scope="module")
def cells():
    return {"Si": [rattled_bulk(["Si"], seed=0), random_cluster(["Si"], 5, 2.5, seed=1)],
            "SiGe": [rattled_bulk(["Si", "Ge"], seed=2), random_cluster(["Si", "Ge"], 5, 2.5, seed=3)]}


# ---- (a) the linear limit -------------------------------------------------------------------------------

@pytest.mark.parametrize("which", ["si", "sige_pure2b"])
def test_linear_limit_is_acemodel_bit_for_bit(which, request, cells):
    lin = request.getfixturevalue(which)
    nl = from_linear(lin, densities=1, embedding=None, learnable_radials=False)
    structs = cells["Si" if which == "si" else "SiGe"]
    for path in ("reference_forward", "analytic_forward"):
        d = diffs(run(nl, structs, path), run(lin, structs, path))
        assert all(v == 0.0 for v in d.values()), (path, d)
    # the default constructor path (forward, eval mode) and torchace.evaluate with named backends
    d = diffs(nl(*model_inputs(nl, batch_of(nl, structs))), lin(*model_inputs(lin, batch_of(lin, structs))))
    assert all(v == 0.0 for v in d.values()), d
    for backend in ("reference", "analytic"):
        a = torchace.evaluate(nl, structs, backend=backend)
        b = torchace.evaluate(lin, structs, backend=backend)
        assert all(v == 0.0 for v in diffs(a, b).values())


def test_fresh_model_with_defaults_is_acemodel(cells):
    cfg = torchace.ace_model(["Si", "Ge"], 2, 6).config
    lin = torchace.model.ACEModel(cfg).eval()
    randomize_coefficients(lin, 0.2, seed=4)
    nl = ACEModel(cfg).eval()
    assert nl.densities == 1 and nl.embedding_fn is None and nl.radials is None
    with torch.no_grad():
        nl.density_coefficients[0] = lin.coefficients[: lin.n_manybody].view(2, -1)
        nl.pair_coefficients.copy_(lin.coefficients[lin.n_manybody:].view(2, 2, -1))
    for path in ("reference_forward", "analytic_forward"):
        assert all(v == 0.0 for v in diffs(run(nl, cells["SiGe"], path), run(lin, cells["SiGe"], path)).values())
    # linear_model() gives the same ACEModel back
    back = nl.linear_model()
    assert torch.equal(back.coefficients, lin.coefficients)


# ---- (e) warm start from a linear model -----------------------------------------------------------------

@pytest.mark.parametrize("embedding", ["fs", "mlp"])
def test_from_linear_reproduces_the_linear_model(si, sige_pure2b, cells, embedding):
    for lin, structs, learn in ((si, cells["Si"], True), (sige_pure2b, cells["SiGe"], False)):
        nl = from_linear(lin, densities=2, embedding=embedding, learnable_radials=learn)
        assert nl.learnable_radials == learn
        for path in ("reference_forward", "analytic_forward"):
            r = rel(run(nl, structs, path), run(lin, structs, path))
            assert max(r.values()) <= 1e-13, (path, r)
        assert torch.equal(nl.E0, lin.E0) and nl.prior_info == lin.prior_info


def test_fs_zero_density_contributes_zero_with_finite_gradient(si, cells):
    nl = from_linear(si, densities=2, embedding="fs", learnable_radials=False)
    b = batch_of(nl, cells["Si"])
    e = nl.reference_forward(*model_inputs(nl, b), False, False)[K.ENERGY].sum()
    g, = torch.autograd.grad(e, [nl.coefficients])
    g = g[: nl.densities * nl.n_manybody].view(nl.densities, nl.nz, nl.n_b)  # density_coefficients' layout
    assert torch.isfinite(g).all()
    # ∂E/∂c_2 = a_2 f'(0; 1/2) ∂E/∂c_1 = (5/4) ∂E/∂c_1 (ρ_2 = 0, f(ρ; 1) = ρ)
    assert float(g[0].abs().max()) > 0
    torch.testing.assert_close(g[1], 1.25 * g[0], rtol=1e-14, atol=0)


def test_fs_formula():
    rho = torch.tensor([-3.0, -0.2, 0.0, 1e-9, 0.3, 2.0, 40.0], dtype=torch.float64, requires_grad=True)
    for m in (0.5, 0.75, 2.0):
        f, df = fs_shifted_scaled(rho, torch.full_like(rho, m))
        fv, dfv = f.detach(), df.detach()
        nu = 1 / m
        for k, x in enumerate(rho.tolist()):  # ML-PACE FexpShiftedScaled, written out
            a = abs(x)
            x0, y0 = nu ** (nu / (1 - nu)) * math.exp(-a), nu ** (1 / (1 - nu)) * math.exp(-a)
            ref = (-1 if x < 0 else 1) * ((x0 + a) ** m - y0)
            assert abs(float(fv[k]) - ref) <= 1e-15 * max(1.0, abs(ref))
            assert abs(float(dfv[k]) - (y0 + m * (1 - x0) * (x0 + a) ** (m - 1))) <= 1e-14
        ad, = torch.autograd.grad(f.sum(), rho)
        torch.testing.assert_close(ad, df, rtol=1e-13, atol=0)  # autograd agrees, also at ρ = 0
        h = 1e-6
        fd = (fs_shifted_scaled(rho + h, torch.full_like(rho, m))[0]
              - fs_shifted_scaled(rho - h, torch.full_like(rho, m))[0]) / (2 * h)
        torch.testing.assert_close(fd.detach(), df.detach(), rtol=0, atol=5e-6)
        assert abs(float(fv[2])) <= 1e-16  # f(0) = 0
    f, df = fs_shifted_scaled(torch.zeros(1, dtype=torch.float64), torch.full((1,), 0.5, dtype=torch.float64))
    assert float(f) == 0.0 and float(df) == 1.25
    x = torch.linspace(-2, 2, 9, dtype=torch.float64)
    f, df = fs_shifted_scaled(x, torch.ones_like(x))  # m = 1: the identity
    assert torch.equal(f, x) and torch.equal(df, torch.ones_like(x))


def test_isolated_atom_has_energy_E0(si):
    from ase import Atoms

    for emb in ("fs", "mlp"):
        nl = from_linear(si, densities=2, embedding=emb, learnable_radials=True)
        perturb(nl)
        out = run(nl, [Atoms("Si", positions=[[0, 0, 0]])])
        assert float(out[K.ENERGY][0].detach()) == float(si.E0[0])


# ---- (b) parameter gradients, (c) forces and virials: central finite differences ------------------------

def model_zoo(si):
    fs = from_linear(si, densities=2, embedding="fs", fs_parameters=[1.0, 1.0, 0.7, 0.5], learnable_fs=True,
                     learnable_radials=True)
    mlp = from_linear(si, densities=3, embedding="mlp", mlp_hidden=4, learnable_radials=True, seed=3)
    sige = nonlinear_ace_model(["Si", "Ge"], 2, 6, densities=2, embedding="fs", zbl=True,
                               fs_parameters=[1.0, 1.0, 1.0, 2.0], learnable_radials=True)
    for k, m in enumerate((fs, mlp, sige)):
        perturb(m, seed=k, scale=0.1)
    return {"fs": fs, "mlp": mlp, "sige": sige}


@pytest.fixture(scope="module")
def zoo(si):
    return model_zoo(si)


def entries(name, p, model, rng, n=3):
    """A few entries of a parameter; for the radial weights only (n, l) pairs some function uses."""
    if name == "radials.weights":
        R = model.radials
        u = rng.integers(0, R.u_n.shape[0], n)
        return [(int(rng.integers(0, p.shape[0])), int(rng.integers(0, p.shape[1])), int(R.u_n[k]), int(R.u_l[k]),
                 int(rng.integers(0, p.shape[4]))) for k in u]
    return [tuple(int(rng.integers(0, s)) for s in p.shape) for _ in range(n)]


@pytest.mark.parametrize("which", ["fs", "mlp", "sige"])
def test_parameter_gradients_match_finite_differences(zoo, cells, which):
    model = zoo[which]
    structs = [cells["SiGe" if which == "sige" else "Si"][0]]
    params = {n: p for n, p in model.named_parameters() if p.requires_grad}
    expected = {"coefficients", "radials.weights"}  # coefficients: densities 1 … P, then the pair part
    expected |= {"embedding_fn.weights"} if which == "fs" else {"embedding_fn.W", "embedding_fn.b", "embedding_fn.w"} \
        if which == "mlp" else set()
    assert set(params) == expected
    b = batch_of(model, structs)
    e = model.reference_forward(*model_inputs(model, b), False, False)[K.ENERGY].sum()
    grads = dict(zip(params, torch.autograd.grad(e, list(params.values()))))
    rng = np.random.default_rng(0)
    h = 1e-5
    for name, p in params.items():
        scale = float(grads[name].abs().max())
        assert scale > 0, name
        for idx in entries(name, p, model, rng):
            with torch.no_grad():
                old = float(p[idx])
                p[idx] = old + h
                ep = energy(model, structs)
                p[idx] = old - h
                em = energy(model, structs)
                p[idx] = old
            fd = (ep - em) / (2 * h)
            assert abs(float(grads[name][idx]) - fd) <= 1e-7 * max(scale, 1.0), (name, idx, float(grads[name][idx]), fd)


@pytest.mark.parametrize("which", ["fs", "mlp", "sige"])
def test_forces_and_virial_match_finite_differences(zoo, cells, which):
    model = zoo[which]
    at = cells["SiGe" if which == "sige" else "Si"][0]
    ref = run(model, [at])
    ana = run(model, [at], "analytic_forward")
    r = rel(ana, ref)
    assert max(r.values()) <= 1e-12, r
    F = fd_forces(model, at, h=1e-4)  # the test kit's central differences (torchace.evaluate of the model)
    f = ref[K.FORCES].detach().numpy()
    assert np.abs(f - F).max() <= 1e-6 * max(1.0, np.abs(f).max()), np.abs(f - F).max()
    W = fd_virial(model, at, h=1e-4)
    w = ref[K.VIRIAL][0].detach().numpy()
    assert np.abs(w - W).max() <= 1e-6 * max(1.0, np.abs(w).max()), np.abs(w - W).max()


def test_training_mode_forces_are_differentiable_in_every_parameter(zoo, cells):
    model = zoo["mlp"]
    at = cells["Si"][0]
    params = [p for p in model.parameters() if p.requires_grad]
    g = torch.Generator().manual_seed(5)
    target = torch.randn(len(at), 3, generator=g, dtype=torch.float64)
    model.train()
    try:
        def loss():
            out = run(model, [at])
            return (out[K.FORCES] * target).sum() + out[K.VIRIAL].sum()

        grads = torch.autograd.grad(loss(), params)
        dirs = [torch.randn(p.shape, generator=g, dtype=torch.float64) for p in params]
        ad = sum(float((gr * d).sum()) for gr, d in zip(grads, dirs))
        h = 1e-5
        vals = []
        for s in (h, -h):
            with torch.no_grad():
                for p, d in zip(params, dirs):
                    p.add_(s * d)
            vals.append(float(loss().detach()))
            with torch.no_grad():
                for p, d in zip(params, dirs):
                    p.sub_(s * d)
        fd = (vals[0] - vals[1]) / (2 * h)
        assert abs(ad - fd) <= 1e-6 * max(1.0, abs(ad)), (ad, fd)
        assert all(float(gr.abs().max()) > 0 for gr in grads)
    finally:
        model.eval()


def test_skin_edges_contribute_nothing(zoo, cells):
    for name in ("fs", "sige"):
        model = zoo[name]
        structs = cells["SiGe" if name == "sige" else "Si"]
        b = collate(structs, model.config.numbers, model.rcut + 0.7, dtype=torch.float64)
        for p in ("reference_forward", "analytic_forward"):
            r = rel(getattr(model, p)(*model_inputs(model, b)), run(model, structs, p))
            assert max(r.values()) <= 1e-13, (name, p, r)


# ---- (d) invariance -------------------------------------------------------------------------------------

def test_rotation_and_permutation_invariance(zoo, cells):
    model = zoo["sige"]
    rng = np.random.default_rng(7)
    for at in cells["SiGe"]:
        out = run(model, [at])
        Q = random_rotation(rng)
        rot = at.copy()
        rot.positions = at.positions @ Q.T
        if at.pbc.all():
            rot.set_cell(at.cell.array @ Q.T, scale_atoms=False)
        o_rot = run(model, [rot])
        E = float(out[K.ENERGY][0])
        assert abs(float(o_rot[K.ENERGY][0]) - E) <= 1e-12 * max(1.0, abs(E))
        fq = out[K.FORCES].detach().numpy() @ Q.T
        assert np.abs(o_rot[K.FORCES].detach().numpy() - fq).max() <= 1e-10
        wq = Q @ out[K.VIRIAL][0].detach().numpy() @ Q.T
        assert np.abs(o_rot[K.VIRIAL][0].detach().numpy() - wq).max() <= 1e-10
        perm = rng.permutation(len(at))
        o_p = run(model, [at[perm]])
        assert abs(float(o_p[K.ENERGY][0]) - E) <= 1e-12 * max(1.0, abs(E))
        assert np.abs(o_p[K.FORCES].detach().numpy() - out[K.FORCES].detach().numpy()[perm]).max() <= 1e-10


# ---- (f) the model file ---------------------------------------------------------------------------------

def test_model_file_round_trip(zoo, si, sige_pure2b, cells, tmp_path):
    models = dict(zoo, pure2b=from_linear(sige_pure2b, densities=2, learnable_radials=False))
    perturb(models["pure2b"], seed=9)
    for name, model in models.items():
        path = tmp_path / f"{name}.json"
        model.save(str(path))
        back = load(str(path))
        assert type(back) is ACEModel and back.embedding_name == model.embedding_name
        structs = cells["Si" if name in ("fs", "mlp") else "SiGe"]
        for p in ("reference_forward", "analytic_forward"):
            assert all(v == 0.0 for v in diffs(run(back, structs, p), run(model, structs, p)).values()), (name, p)
        assert json.loads(json.dumps(model.to_dict())) == back.to_dict()
    assert back.prior_info == sige_pure2b.prior_info and back.prior_info is not None


def test_model_file_is_validated(zoo, tmp_path):
    """The earlier nonlinear file (version 1 of "torchace-nonlinear-model", read into the one model) is checked
    field by field (the current schema: tests/model/test_model_file_versions.py)."""
    import os

    with open(os.path.join(os.path.dirname(__file__), "files", "nonlinear_fs_v1.json")) as fh:
        d = json.load(fh)

    def refused(doc, match):
        with pytest.raises(ModelFileError, match=match):
            ACEModel.from_dict(json.loads(json.dumps(doc)), "f.json")

    refused(dict(d, format="torchace-nonlinear-models"), "not a torchace model file")
    refused(dict(d, format_version=2), "format_version")
    refused(dict(d, extra=1), "unknown field")
    refused(dict(d, coefficients=[]), "unknown field")
    refused({k: v for k, v in d.items() if k != "pair_coefficients"}, "missing field")
    refused(dict(d, densities=True), "densities")
    refused(dict(d, densities=3), "fs_parameters")
    refused(dict(d, density_coefficients=d["density_coefficients"][:1]), "shape")
    refused(dict(d, radial_weights=None), "radial_weights")
    refused(dict(d, pair_coefficients=[[[True] * len(d["pair_coefficients"][0][0])]]), "true/false")
    refused(dict(d, embedding=dict(d["embedding"], name="tanh")), "embedding")
    refused(dict(d, embedding=dict(d["embedding"], extra=0)), "exactly the fields")
    refused(dict(d, embedding=dict(d["embedding"], fs_parameters=[[1, 1, 1, -0.5]] * 2)), "positive")
    refused(dict(d, config=dict(d["config"], order=0)), "config")
    refused(dict(d, learnable_radials="yes"), "learnable_radials")
    refused(dict(d, prior=[1]), "'prior' must be a mapping")
    refused(dict(d, nl_scale=1.0), "list of numbers")
    d = zoo["fs"].to_dict()
    data = tmp_path / "train.xyz"
    data.write_text("2\n\nSi 0 0 0\nSi 0 0 2.3\n")
    with pytest.raises(OutputPathError, match="refusing to overwrite"):
        zoo["fs"].save(str(data))
    assert data.read_text().startswith("2")
    zoo["fs"].save(str(data), overwrite=True)
    zoo["fs"].save(str(data))  # re-saving onto a nonlinear model file is fine
    assert load(str(data)).densities == 2
    bad = tmp_path / "nan.json"
    bad.write_text(json.dumps(d).replace(str(d["coefficients"][-1]), "NaN", 1))
    with pytest.raises(ModelFileError, match="not valid JSON"):
        load(str(bad))
    with pytest.raises(ModelFileError, match="no such file"):
        load(str(tmp_path / "missing.json"))


def test_constructor_errors():
    cfg = torchace.ace_model(["Si"], 2, 4).config
    with pytest.raises(ValueError, match="densities=1"):
        ACEModel(cfg, densities=2)
    with pytest.raises(ValueError, match="2·densities"):
        ACEModel(cfg, densities=2, embedding="fs", fs_parameters=[1, 1])
    with pytest.raises(ValueError, match="fs_parameters must be given"):
        ACEModel(cfg, densities=3, embedding="fs")
    with pytest.raises(ValueError, match="belong to embedding='fs'"):
        ACEModel(cfg, embedding="mlp", fs_parameters=[1, 1])
    with pytest.raises(ValueError, match="purification"):
        nonlinear_ace_model(["Si"], 2, 4, pure2b=True)
    with pytest.raises(TypeError, match="unknown option"):
        nonlinear_ace_model(["Si"], 2, 4, densitys=2)
    with pytest.raises(TypeError, match="needs an ACEModel"):
        from_linear(object())
    assert isinstance(nonlinear_ace_model(["Si"], 2, 4).embedding_fn, FSEmbedding)


def test_ace_model_with_nonlinear_options():
    from torchace.model import ace_model

    assert type(ace_model(["Si"], 2, 4)) is torchace.model.ACEModel
    m = ace_model(["Si"], 2, 4, densities=2, rcut=5.0)
    assert isinstance(m, ACEModel) and m.embedding_name == "fs" and not m.learnable_radials
    assert m.rcut == 5.0 and m.capabilities.nonlinear
    m = ace_model(["Si"], 2, 4, learnable_radials=True)
    assert m.densities == 1 and m.embedding_fn is None and m.learnable_radials


def test_ase_calculator_with_a_named_backend(zoo, cells):
    from torchace.calculators import TorchACECalculator

    at = cells["Si"][0].copy()
    ref = run(zoo["fs"], [at])
    for backend in ("analytic", "reference"):
        at.calc = TorchACECalculator(zoo["fs"], backend=backend)
        assert abs(at.get_potential_energy() - float(ref[K.ENERGY][0])) <= 1e-10
        assert np.abs(at.get_forces() - ref[K.FORCES].numpy()).max() <= 1e-10


def test_prior_apply_and_l2_on_rescaled_coefficients(si, cells):
    """The basis prior rescales the nonlinear model's one-particle basis exactly as the linear one's."""
    nl = from_linear(si, densities=1, embedding="fs", fs_parameters=[1, 1], learnable_radials=True)
    fresh = from_linear(torchace.ace_model(["Si"], 3, 8), densities=1, embedding="fs", fs_parameters=[1, 1],
                        learnable_radials=True)
    priors.gaussian(1.5).apply(fresh)
    assert torch.equal(fresh.embedding.nl_scale, nl.embedding.nl_scale)
    assert torch.equal(fresh.pair.scale, si.pair.scale)
    assert nl.coefficients.shape == (nl.n_b + nl.n_pair,)


# ---- (g) every available device --------------------------------------------------------------------------

def test_every_device(zoo, cells, device):
    import copy

    for name in ("fs", "mlp", "sige"):
        model = zoo[name]
        structs = cells["SiGe" if name == "sige" else "Si"]
        m = copy.deepcopy(model).to(device)
        for p in ("reference_forward", "analytic_forward"):
            out = run(m, structs, p, device=device)
            assert out[K.ENERGY].device.type == torch.device(device).type
            r = rel({k: v.cpu() for k, v in out.items()}, run(model, structs, p))
            assert max(r.values()) <= 1e-12, (name, p, r)
        m.train()
        out = run(m, structs, device=device)
        (out[K.FORCES] ** 2).sum().backward()
        assert m.coefficients.grad is not None and torch.isfinite(m.coefficients.grad).all()
