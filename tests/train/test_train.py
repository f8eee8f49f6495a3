"""torchace.train on the linear model (it replaced scripts/train.py, issue 30): gradient training decreases the
loss, its gradient vanishes at the linear fit, and ``torchace train`` trains a linear model end to end."""
import json
import textwrap

import pytest
import torch
from ase.calculators.singlepoint import SinglePointCalculator
from ase.io import write

import torchace
from torchace import keys as K
from torchace.fit import solvers
from torchace.fit.data import read_data
from torchace.fit.weights import resolve_weights
from torchace.model import from_linear
from torchace.model.readout import LINEAR
from torchace.testing import random_cluster, randomize_coefficients, rattled_bulk
from torchace.train.loss import Penalty, loss_metrics, make_batches, total_loss
from torchace.train.trainer import trainable

ELS = ["Si", "Ge"]
W = {"default": {"E": 30, "F": 1, "V": 1}}
WEIGHTS = resolve_weights(W)
E0 = {"Si": 0.0, "Ge": 0.0}


def _synthetic(n=6, seed=0):
    true = torchace.ace_model(ELS, 2, 5)
    randomize_coefficients(true, 0.05, seed=3)
    structs = []
    for k in range(n):
        at = rattled_bulk(ELS, seed=seed + k) if k % 2 else random_cluster(ELS, 6, 3.0, seed=seed + k)
        out = torchace.evaluate(true, at)
        kw = dict(energy=float(out[K.ENERGY][0]), forces=out[K.FORCES].numpy())
        at.calc = SinglePointCalculator(at, **kw)
        structs.append(at)
    return structs


@pytest.fixture(scope="module")
def data():
    return read_data(_synthetic()).structures


def _one_density(model):
    """The model ``torchace.train`` trains an ``ACEModel`` as."""
    return from_linear(model, densities=LINEAR.densities, embedding=LINEAR.embedding,
                       learnable_radials=LINEAR.learnable_radials)


def test_adam_reduces_loss(data, device):
    model = torchace.ace_model(ELS, 2, 5).to(device)
    res = torchace.train(model, [s.atoms for s in data], weights=W, E0=E0, init="model", optimizer="adam", lr=1e-3,
                         lam=0.0, epochs=8, batch_size=3, refit_linear=False, progress=False, compute_errors=False)
    losses = [h["train"]["loss"] for h in res.history]
    assert losses[-1] < 0.5 * losses[0], losses
    # the returned model holds the best coefficients
    nl = _one_density(model)
    batches = make_batches(nl, data, WEIGHTS, 3, device, torch.float64)
    assert abs(loss_metrics(nl, batches, Penalty(nl, 0.0, None))["loss"] - min(losses)) < 1e-9 * losses[0]


def test_gradient_vanishes_at_linear_fit(data, device):
    lam = 1e-3
    model = torchace.ace_model(ELS, 2, 5)
    torchace.fit(model, [s.atoms for s in data], weights=WEIGHTS, E0=E0, solver=solvers.QR(lam=lam),
                 compute_errors=False)
    nl = _one_density(model.to(device))
    batches = make_batches(nl, data, WEIGHTS, 4, device, torch.float64)
    pen = Penalty(nl, lam, None)

    def grad_norm():
        nl.train().zero_grad(set_to_none=True)
        total_loss(nl, batches, pen, backward=True)
        return torch.cat([p.grad.reshape(-1) for p in trainable(nl)]).norm()

    g_fit = grad_norm()
    with torch.no_grad():
        nl.density_coefficients.zero_()
        nl.pair_coefficients.zero_()
    g_zero = grad_norm()
    print("relative gradient at the fit", float(g_fit / g_zero))
    assert float(g_fit / g_zero) < 1e-6, (float(g_fit), float(g_zero))


def test_cli_trains_a_linear_model(tmp_path):
    from torchace.cli import main

    write(str(tmp_path / "d.xyz"), _synthetic(5, seed=10))
    cfg = tmp_path / "train.yaml"
    cfg.write_text(textwrap.dedent("""
        model: {elements: [Si, Ge], order: 2, totaldegree: 5, densities: 1, embedding: null,
                learnable_radials: false}
        data: {train: d.xyz, validation: 0.2}
        E0: {Si: 0.0, Ge: 0.0}
        solver: {name: QR, lam: 1.0e-3}
        training: {optimizer: lbfgs, lr: 1, epochs: 1, dtype: float32}
        output: {model: m.json, errors: errors.json, history: log.json}
        """))
    assert main(["train", str(cfg), "--quiet"]) == 0
    assert json.loads((tmp_path / "log.json").read_text())["history"][0]["epoch"] == 0
    loaded = torchace.load(str(tmp_path / "m.json"))
    assert loaded.densities == 1 and loaded.embedding_name is None and not loaded.learnable_radials
    assert loaded.linear_model().basis_size == torchace.ace_model(ELS, 2, 5).basis_size
    rep = json.loads((tmp_path / "errors.json").read_text())
    assert rep["train"]["all"]["F"]["rmse"] < 1e-2  # the linear-fit start is (nearly) exact on noise-free data
