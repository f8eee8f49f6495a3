"""Committees of nonlinear ACE models (torchace.uncertainty.nonlinear, docs/nonlinear.md "Committee
(uncertainty)"): the rows are the linear model's rows in the linear limit and derivatives of E, F, W with
respect to the identity-branch density and the pair coefficients otherwise; the committee is the linear fit's
BLR committee in the linear limit; calculator spreads are the spreads of explicitly evaluated member models;
the model file round trip; refusals."""
import copy
import json

import numpy as np
import pytest
import torch
from ase.calculators.singlepoint import SinglePointCalculator

import torchace
from torchace import keys as K
from torchace import priors
from torchace.calculators.ase import TorchACECalculator
from torchace.fit import solvers
from torchace.fit.assembly import assemble
from torchace.fit.data import read_data
from torchace.model.evaluate import model_inputs
from torchace.model import ACEModel, from_linear, nonlinear_ace_model
from torchace.io import load
from torchace.uncertainty import nonlinear as NC
from torchace.model.state import ModelFileError
from torchace.structures.batch import collate
from torchace.structures.geometry import edge_vectors
from torchace.testing import random_cluster, randomize_coefficients, rattled_bulk

VOIGT_IDX = ([0, 1, 2, 1, 0, 0], [0, 1, 2, 2, 2, 1])  # xx, yy, zz, yz, xz, xy


@pytest.fixture(scope="module", autouse=True)
def _threads(one_thread):
    yield


def labelled(true, n=6, seed=80, noise=0.05):
    """Synthetic labels of a random "true" linear model (forces with noise, so the posterior has a spread)."""
    rng = np.random.default_rng(seed)
    out = []
    for k in range(n):
        at = (rattled_bulk(true.elements, seed=seed + k) if k % 2
              else random_cluster(true.elements, 7, 3.0, seed=seed + k))
        o = torchace.evaluate(true, at)
        kw = dict(energy=float(o[K.ENERGY][0]), forces=o[K.FORCES].numpy() + rng.normal(0, noise, (len(at), 3)))
        if at.pbc.all():
            kw["stress"] = o[K.STRESS][0].numpy()[VOIGT_IDX]
        at.calc = SinglePointCalculator(at, **kw)
        out.append(at)
    return out


def true_model(elements, order, td, **kw):
    m = torchace.ace_model(elements, order, td, E0={e: -1.0 - k for k, e in enumerate(elements)}, **kw)
    randomize_coefficients(m, 0.05, seed=8)
    return m


def perturb(model, seed=0, scale=0.03):
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for p in model.parameters():
            if p.requires_grad:
                p.add_(torch.randn(p.shape, generator=g, dtype=torch.float64).to(p) * scale)


def rel(a, b):
    a, b = torch.as_tensor(a), torch.as_tensor(b)
    return float((a - b).abs().max() / b.abs().max().clamp_min(1e-300))


LINEAR_CASES = {"Si": (["Si"], 3, 6, {}), "SiGe-pure2b-zbl": (["Si", "Ge"], 2, 5, {"pure2b": True, "zbl": True})}


@pytest.mark.parametrize("case", list(LINEAR_CASES))
def test_linear_limit_rows_and_committee(case):
    """P = 1, no embedding, fixed radials: the rows are the linear model's, the weighted system is fit's, and
    the committee is the linear BLR fit's committee (same seed); FS with a zero second density (the general
    path, through the nonlinear evaluation) agrees too."""
    elements, order, td, kw = LINEAR_CASES[case]
    data = labelled(true_model(elements, order, td, **kw))
    lin = torchace.ace_model(elements, order, td, E0={e: -1.0 - k for k, e in enumerate(elements)}, **kw)
    torchace.fit(lin, data, solver=solvers.BLR(committee_size=6, seed=3), prior=priors.gaussian(1.5),
                 compute_errors=False)
    nl = from_linear(lin, densities=1, embedding=None, learnable_radials=False)
    rows, ref = NC.committee_rows(nl, data), torchace.design_matrix_rows(lin, data)
    for k in (K.ENERGY, K.FORCES, K.VIRIAL):
        assert float((rows[k] - ref[k]).abs().max()) <= 1e-12 * float(ref[k].abs().max()), k
    sys_nl, sys_lin = NC.committee_system(nl, data), assemble(lin, read_data(data))
    assert sys_nl.n_obs == sys_lin.n_obs
    assert rel(sys_nl.A, sys_lin.A) <= 1e-12 and rel(sys_nl.y, sys_lin.y) <= 1e-12
    before = copy.deepcopy(nl.state_dict())
    info = NC.fit_committee(nl, data, committee_size=6, seed=3)
    assert info["mean"] == "trained" and info["basis_size"] == lin.basis_size and info["relative_shift"] < 1e-10
    assert rel(nl.committee, lin.committee) <= 1e-10
    after = nl.state_dict()  # the mean model is unchanged; the committee is added
    assert set(after) == set(before) | {"committee"} and all(torch.equal(before[k], after[k]) for k in before)
    # the general path (E_rest from the nonlinear evaluation): a zero second FS density adds f(0) = 0
    fs = from_linear(lin, densities=2, embedding="fs", learnable_radials=False)
    assert not NC.fully_linear(fs)
    NC.fit_committee(fs, data, committee_size=6, seed=3)
    assert rel(fs.committee, lin.committee) <= 1e-9
    # mean="posterior" from a moved start lands on the linear fit's posterior mean and committee
    moved = copy.deepcopy(nl)
    NC.set_linear_coefficients(moved, NC.linear_coefficients(nl) * 0.9)
    NC.fit_committee(moved, data, committee_size=6, seed=3, mean="posterior")
    assert rel(NC.linear_coefficients(moved), lin.coefficients.detach()) <= 1e-10
    assert rel(moved.committee, lin.committee) <= 1e-10


@pytest.fixture(scope="module")
def fs_model():
    """SiGe, two FS densities with a_1 = 0.8 ([0.8, 1, 1, 0.5]), learned radials away from W = I, a Gaussian
    basis prior (the scale inside the learned radial), every parameter perturbed."""
    m = nonlinear_ace_model(["Si", "Ge"], 3, 6, densities=2, fs_parameters=[0.8, 1, 1, 0.5],
                            learnable_radials=True, rcut=5.0, E0={"Si": -1.0, "Ge": -2.0})
    priors.gaussian(1.5).apply(m)
    perturb(m, seed=4)
    return m.eval()


def test_rows_are_derivatives(fs_model):
    """Learned radials: rows = ∂(E, F, W)/∂θ, checked as ∂E/∂c_1 = a_1·rows (autograd) and F, W against
    central differences in c_1 and the pair coefficients (exact up to rounding: linear); analytic rows =
    forward-mode AD rows; the linear model of θ (LearnedBasis) evaluates the model without density 2."""
    m = fs_model
    structs = [rattled_bulk(["Si", "Ge"], seed=5), random_cluster(["Si", "Ge"], 6, 2.8, seed=6)]
    rows = NC.committee_rows(m, structs)
    ref = NC.committee_rows(m, structs, backend="reference")
    assert max(rel(rows[k], ref[k]) for k in rows) <= 1e-12
    # the W = I basis: different (the test is not vacuous)
    fixed = torchace.design_matrix_rows(m.linear_model(), structs)
    assert rel(rows[K.FORCES], fixed[K.FORCES]) > 1e-2
    nz, nb, npair = m.nz, m.n_b, m.n_pair
    a1 = m.embedding_fn.weights[:, 0].detach()
    assert torch.equal(a1, torch.tensor([0.8, 0.8], dtype=torch.float64))
    batch = collate(structs, m.config.numbers, m.rcut)
    inp = model_inputs(m, batch)
    # energy rows: autograd of each structure's energy in c_1 and the pair coefficients
    vec = edge_vectors(inp[0], inp[3], inp[4], inp[5], inp[2])
    e = torch.zeros(2, dtype=torch.float64).index_add_(0, inp[2], m.node_energies(vec, inp[1], inp[3]))
    for s in range(2):
        g, = torch.autograd.grad(e[s], [m.coefficients], retain_graph=True)
        n_c = m.densities * m.n_manybody  # coefficients: densities 1 … P, then the pair part
        gc, gp = g[:n_c].view_as(m.density_coefficients), g[n_c:].view_as(m.pair_coefficients)
        assert rel(gc[0], a1.view(nz, 1) * rows[K.ENERGY][s, : nz * nb].view(nz, nb)) <= 1e-12
        assert rel(gp, rows[K.ENERGY][s, nz * nb:].view(nz, nz, npair)) <= 1e-12
    # force and virial rows: central differences (h = 0.1; F and W are linear in these coefficients)

    def fw():
        o = m.analytic_forward(*inp)
        return torch.cat([o[K.FORCES].reshape(-1), K.to_voigt(o[K.VIRIAL]).reshape(-1)])

    h, cols = 0.1, []
    mb = list(range(0, nz * nb, 3))  # every third many-body column (each element, every order), every pair one
    targets = [(m.density_coefficients, (0, c // nb, c % nb)) for c in mb] \
        + [(m.pair_coefficients, (z, w, q)) for z in range(nz) for w in range(nz) for q in range(npair)]
    with torch.no_grad():
        for p, idx in targets:
            p[idx] += h
            plus = fw()
            p[idx] -= 2 * h
            minus = fw()
            p[idx] += h
            cols.append((plus - minus) / (2 * h))
    fd = torch.stack(cols, dim=1)  # [3N + 6S, K] per parameter
    scale = torch.cat([a1.repeat_interleave(nb), torch.ones(nz * nz * npair, dtype=torch.float64)])
    want = (torch.cat([rows[K.FORCES], rows[K.VIRIAL].reshape(-1, rows[K.VIRIAL].shape[-1])]) * scale)[
        :, mb + list(range(nz * nb, nz * nb + nz * nz * npair))]
    assert rel(fd, want) <= 1e-9
    # the linear model of θ (LearnedBasis: forward, with_grad, vjp) is the model with density 2 removed
    lin = NC.committee_linear_model(m)
    m1 = copy.deepcopy(m)
    with torch.no_grad():
        m1.density_coefficients[1] = 0.0
    o_nl = m1.analytic_forward(*inp)
    for path in ("analytic_forward", "reference_forward"):
        o = {k: v.detach() for k, v in getattr(lin, path)(*inp).items()}
        assert max(rel(o[k], o_nl[k]) for k in (K.ENERGY, K.FORCES, K.VIRIAL)) <= 1e-12, path
    # the fused kernel reads the learned radials (a mixing of its polynomial radials): the same rows and outputs
    fr = torchace.design_matrix_rows(lin, structs, backend="fused")
    assert max(rel(fr[k], ref[k]) for k in fr) <= 1e-12
    o = torchace.evaluate(lin, structs, backend="fused")
    assert max(rel(o[k], o_nl[k]) for k in (K.ENERGY, K.FORCES, K.VIRIAL)) <= 1e-12


@pytest.fixture(scope="module")
def trained():
    """A "trained" FS model (warm start from a linear BLR fit, learned radials and density 2 moved) with a
    committee from fit_committee, and its data."""
    data = labelled(true_model(["Si"], 3, 6))
    lin = torchace.ace_model(["Si"], 3, 6, E0={"Si": -1.0})
    torchace.fit(lin, data, solver=solvers.BLR(), compute_errors=False)
    m = from_linear(lin, densities=2, embedding="fs", learnable_radials=True)
    g = torch.Generator().manual_seed(1)
    with torch.no_grad():
        m.radials.weights.add_(0.02 * torch.randn(m.radials.shape, generator=g, dtype=torch.float64))
        m.density_coefficients[1].normal_(0, 0.02, generator=g)
    before = copy.deepcopy(m.state_dict())
    info = NC.fit_committee(m, data, committee_size=8, seed=2)
    after = m.state_dict()
    assert set(after) == set(before) | {"committee"}  # the committee is the one thing added
    assert all(torch.equal(before[k], after[k]) for k in before)
    return m, data, info


def test_spread_and_calculator(trained):
    """energy_std / forces_std / stress_std of the calculator = the std of explicitly evaluated member models;
    the members' energies and forces themselves; the calculator's energy is the trained model's."""
    m, data, info = trained
    assert m.committee.shape == (8, m.nz * m.n_b + m.n_pair) and info["committee_size"] == 8
    at = rattled_bulk(["Si"], seed=11)
    members = [torchace.evaluate(NC.member_model(m, k), at) for k in range(8)]
    E = torch.stack([o[K.ENERGY][0] for o in members])
    F = torch.stack([o[K.FORCES] for o in members])
    S = torch.stack([K.to_voigt(o[K.STRESS][0]) for o in members])
    assert float(E.std()) > 1e-4 and float(F.std(0).min()) > 0
    calc = TorchACECalculator(m)
    at.calc = calc
    assert rel(at.get_potential_energy(), float(torchace.evaluate(m, at)[K.ENERGY][0])) <= 1e-12
    assert rel(calc.results["energy_std"], float(E.std())) <= 1e-9 and "forces_std" not in calc.results
    assert rel(calc.get_property("forces_std", at), F.std(0)) <= 1e-9
    assert rel(calc.get_property("stress_std", at), S.std(0)) <= 1e-9
    eager = TorchACECalculator(m, uncertainty=True, backend="reference")
    eager.calculate(at, ["energy", "forces"])
    assert rel(eager.results["forces_std"], F.std(0)) <= 1e-9
    assert rel(eager.results["energy_std"], float(E.std())) <= 1e-9
    c32 = TorchACECalculator(m, dtype=torch.float32)
    c32.calculate(at, ["energy", "forces_std"])
    assert rel(c32.results["energy_std"], float(E.std())) < 1e-3 and rel(c32.results["forces_std"], F.std(0)) < 1e-3
    p = NC.committee_predictions(m, [at])
    assert rel(p[K.ENERGY][:, 0], E) <= 1e-12 and rel(p[K.FORCES], F) <= 1e-10
    u = NC.uncertainty(m, [at])
    assert rel(u[K.FORCES], F.std(0)) <= 1e-9
    with pytest.raises(ValueError, match="nonlinear.committee"):
        torchace.uncertainty.committee.uncertainty(m, [at])


def test_posterior_mean_option(trained):
    """mean="posterior" moves θ to the BLR mean: the weighted residual becomes the solver's; the members are
    the posterior samples (their mean is near the new θ)."""
    m0, data, info = trained
    m = copy.deepcopy(m0)
    out = NC.fit_committee(m, data, committee_size=8, seed=2, mean="posterior")
    theta = NC.linear_coefficients(m)
    system = NC.committee_system(m, data)
    rss = float(((system.A @ theta - system.y) ** 2).sum())
    assert rel(rss, out["rss_posterior_mean"]) <= 1e-8 and out["rss_posterior_mean"] <= info["rss_trained"]
    # same samples, other centre: committee − θ is the same noise in both
    assert rel(m.committee - theta, m0.committee - NC.linear_coefficients(m0)) <= 1e-8
    assert m.density_coefficients[1].equal(m0.density_coefficients[1]) and m.radials.weights.equal(m0.radials.weights)


def test_model_file_round_trip(trained, tmp_path):
    m, data, _ = trained
    path = str(tmp_path / "nl.json")
    m.save(path)
    for m2 in (load(path), torchace.load(path)):
        assert isinstance(m2, ACEModel) and torch.equal(m2.committee, m.committee)
    at = rattled_bulk(["Si"], seed=12)
    a, b = TorchACECalculator(m), TorchACECalculator(path)
    assert a.get_property("energy_std", at) == b.get_property("energy_std", copy.deepcopy(at))
    d = m.to_dict()
    assert len(d["committee"]) == 8
    old = {k: v for k, v in d.items() if k != "committee"}  # a file written before the field existed
    assert ACEModel.from_dict(old).committee is None
    assert ACEModel.from_dict(dict(d, committee=None)).committee is None
    k = len(d["committee"][0])
    for bad in ([], [[0.0] * (k - 1)] * 2, [[True] + [0.0] * (k - 1)], [0.0] * k, "x", [[0.0] * k, [0.0] * (k + 1)],
                [["a"] * k]):
        with pytest.raises(ModelFileError, match="committee"):
            ACEModel.from_dict(dict(d, committee=bad))
    mlp = nonlinear_ace_model(["Si"], 3, 6, densities=2, embedding="mlp", learnable_radials=False).to_dict()
    with pytest.raises(ModelFileError, match="committee' must be null for this embedding"):
        ACEModel.from_dict(dict(mlp, committee=d["committee"]))


def test_refusals(trained):
    m, data, _ = trained
    mlp = nonlinear_ace_model(["Si"], 2, 5, densities=2, embedding="mlp", learnable_radials=False)
    with pytest.raises(ValueError, match="nonlinearly on every density"):
        NC.fit_committee(mlp, data)
    no_identity = nonlinear_ace_model(["Si"], 2, 5, densities=2, fs_parameters=[1, 0.5, 1, 0.75])
    with pytest.raises(ValueError, match="m_p = 1"):
        NC.fit_committee(no_identity, data)
    zero_weight = nonlinear_ace_model(["Si"], 2, 5, densities=2, fs_parameters=[0, 1, 1, 0.5])
    with pytest.raises(ValueError, match="a_p = 0"):
        NC.fit_committee(zero_weight, data)
    with pytest.raises(ValueError, match="draw a committee"):
        NC.fit_committee(copy.deepcopy(m), data, solver=solvers.QR(lam=1e-3))
    ard = copy.deepcopy(m)  # another Bayesian solver brings its own committee size
    assert NC.fit_committee(ard, data, solver=solvers.ARD(committee_size=3))["committee_size"] == 3
    json.dumps(ard.metadata["committee"])  # the info is JSON (model file metadata)
    with pytest.raises(ValueError, match="mean"):
        NC.fit_committee(copy.deepcopy(m), data, mean="average")
    with pytest.raises(TypeError, match="ACEModel"):
        NC.fit_committee(object(), data)
    with pytest.raises(ValueError, match="typo"):
        NC.fit_committee(copy.deepcopy(m), data, weights={"liquid": {"E": 1.0}})
    with pytest.raises(ValueError, match="no committee"):
        NC.member_model(nonlinear_ace_model(["Si"], 2, 5), 0)
