"""scripts/train.py: gradient training decreases the loss, and its gradient vanishes at the linear fit."""
import json

import pytest
import torch
from ase.calculators.singlepoint import SinglePointCalculator

import torchace
from torchace import keys as K
from torchace.fit import solvers
from torchace.fit.data import read_data
from torchace.fit.weights import resolve_weights
from torchace.testing import random_cluster, randomize_coefficients, rattled_bulk

from script_loader import load_script

train_script = load_script("train")

ELS = ["Si", "Ge"]
WEIGHTS = resolve_weights({"default": {"E": 30, "F": 1, "V": 1}})


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


def test_adam_reduces_loss(data, device):
    model = torchace.ace_model(ELS, 2, 5).to(device)
    batches = train_script.make_batches(model, data, WEIGHTS, 3, device, torch.float64)
    hist = train_script.train(model, batches, [], optimizer="adam", lr=1e-3, epochs=8, verbose=False)
    losses = [h["train"]["loss"] for h in hist]
    assert losses[-1] < 0.5 * losses[0], losses
    # the returned model holds the best coefficients
    assert abs(train_script.metrics(model, batches, 0.0)["loss"] - min(losses)) < 1e-9 * losses[0]


def test_gradient_vanishes_at_linear_fit(data, device):
    lam = 1e-3
    model = torchace.ace_model(ELS, 2, 5)
    torchace.fit(model, [s.atoms for s in data], weights=WEIGHTS, E0={"Si": 0.0, "Ge": 0.0},
                 solver=solvers.QR(lam=lam), compute_errors=False)
    model.to(device)
    batches = train_script.make_batches(model, data, WEIGHTS, 4, device, torch.float64)
    train_script.full_loss_and_grad(model, batches, lam)
    g_fit = model.coefficients.grad.norm()
    c_fit = model.coefficients.detach().clone()
    model.coefficients = torch.zeros_like(c_fit)
    train_script.full_loss_and_grad(model, batches, lam)
    g_zero = model.coefficients.grad.norm()
    print("relative gradient at the fit", float(g_fit / g_zero))
    assert float(g_fit / g_zero) < 1e-6, (float(g_fit), float(g_zero))
    model.coefficients = c_fit


def test_main_end_to_end(tmp_path):
    from ase.io import write

    path = tmp_path / "d.xyz"
    write(path, _synthetic(5, seed=10))
    out, log = tmp_path / "m.json", tmp_path / "log.json"
    model, hist = train_script.main([str(path), "--elements", *ELS, "--order", "2", "--totaldegree", "5",
                                     "--E0", '{"Si": 0, "Ge": 0}', "--init-fit", "--lam", "1e-3",
                                     "--optimizer", "lbfgs", "--lr", "1", "--epochs", "1", "--val-fraction", "0.2",
                                     "--device", "cpu", "--dtype", "float32", "--output", str(out), "--log", str(log)])
    assert json.loads(log.read_text())["history"][0]["epoch"] == 0
    loaded = torchace.load(str(out))
    assert loaded.basis_size == model.basis_size
    assert hist[-1]["train"]["F"] < 1e-2  # the linear-fit start is (nearly) exact on noise-free data
