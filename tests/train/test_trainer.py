"""torchace.train (issue 16 part 2): the loss is the fit's, the prior is the same rescaling, warm start, early
stopping, resumable checkpoints (also after SIGKILL), the ``torchace train`` config and CLI."""
import json
import os
import subprocess
import sys
import textwrap

import numpy as np
import pytest
import torch
from ase.io import write

import torchace
from torchace import keys as K
from torchace.fit import priors
from torchace.fit import solvers
from torchace.fit.checkpoint import CheckpointError, CheckpointMismatch
from torchace.fit.data import read_data
from torchace.train.trainer import Penalty, trainable
from torchace.train.loss import make_batches
from torchace.fit.weights import resolve_weights
from torchace.model import ACEModel, from_linear
from torchace.testing import model_labelled, randomize_coefficients, run, spawn

W = {"default": {"E": 30, "F": 1, "V": 1}}
E0 = {"Si": 0.0}


def _labelled(els, n=6, seed=0, noise=0.01, order=2, td=4):
    true = torchace.ace_model(els, order, td)
    randomize_coefficients(true, 0.05, seed=3)
    return model_labelled(true, els, n, seed, noise)


@pytest.fixture(scope="module")
def si_data():
    return _labelled(["Si"])


@pytest.mark.slow  # 11-15 s per prior
@pytest.mark.parametrize("prior", [None, priors.algebraic_smoothness(p=3), priors.algebraic(sigma_n=2.0)],
                         ids=["none", "column", "basis"])
def test_linear_limit_equals_qr_fit(si_data, prior):
    """densities=1, no embedding, fixed radials: L-BFGS from zero reaches the solvers.QR(lam) fit with the same
    prior (column prior: Γ in the penalty; basis prior: the rescaled basis and plain L2)."""
    lam = 1.0
    lin = torchace.ace_model(["Si"], 2, 4)
    torchace.fit(lin, si_data, weights=W, E0=E0, prior=prior, solver=solvers.QR(lam=lam), compute_errors=False)
    nl = ACEModel(lin.config)
    # 120 epochs: L-BFGS's path is sensitive to rounding (a 1e-16 change in the model's arithmetic moved the loss
    # after 80 epochs from 2e-5 to 2e-3 above the QR minimum; after 120 it is within 2e-5 either way)
    res = torchace.train(nl, si_data, weights=W, E0=E0, prior=prior, lam=lam, init="model", optimizer="lbfgs",
                         epochs=120, progress=False, compute_errors=False)
    trained = nl.linear_model()
    # the same basis (a basis prior rescaled both the same way)
    assert torch.equal(trained.embedding.nl_scale, lin.embedding.nl_scale)
    c, c_ref = trained.coefficients.detach(), lin.coefficients.detach()
    assert float((c - c_ref).norm() / c_ref.norm()) < 2e-2, res.history[-1]
    # the gradient of train's loss vanishes at the QR solution (one problem, not two that happen to agree)
    ds = read_data(si_data, elements=["Si"])
    batches = make_batches(nl, ds.structures, resolve_weights(W), 8, "cpu", torch.float64)
    gamma = None if prior is None or prior.kind == "basis" else prior.column_scale(lin)
    pen = Penalty(nl, lam, gamma)
    from torchace.train.loss import total_loss

    def grad_norm():
        nl.train()
        for p in trainable(nl):
            p.grad = None
        total_loss(nl, batches, pen, backward=True)
        return float(torch.cat([p.grad.reshape(-1) for p in trainable(nl)]).norm())

    with torch.no_grad():
        nl.density_coefficients.zero_()
        nl.pair_coefficients.zero_()
    g0 = grad_norm()
    with torch.no_grad():
        nl.density_coefficients[0] = c_ref[: nl.n_b].view(1, -1)
        nl.pair_coefficients.copy_(c_ref[nl.n_b:].view_as(nl.pair_coefficients))
    assert grad_norm() < 1e-9 * g0
    # and the trained loss is the QR minimum to optimiser tolerance
    from torchace.train.loss import loss_metrics

    l_qr = loss_metrics(nl, batches, pen)["loss"]
    assert l_qr * (1 - 1e-12) <= res.history[res.chosen_epoch]["train"]["loss"] <= l_qr * (1 + 1e-4)


def test_analytic_training_gradient_equals_reference():
    """The training path (hand adjoints recorded by autograd) and the reference path (double backward) give
    the same parameter gradient of a force + virial loss, for FS densities with learned radials."""
    data = _labelled(["Si", "Ge"], n=3, order=2, td=5)
    lin = torchace.ace_model(["Si", "Ge"], 2, 5)
    randomize_coefficients(lin, 0.05, seed=1)
    nl = from_linear(lin, densities=2, embedding="fs", learnable_radials=True, init_scale=0.02)
    with torch.no_grad():
        nl.radials.weights.add_(0.05 * torch.randn(nl.radials.weights.shape, generator=torch.Generator().manual_seed(2),
                                                  dtype=torch.float64))
    ds = read_data(data, elements=["Si", "Ge"])
    batches = make_batches(nl, ds.structures, resolve_weights(W), 8, "cpu", torch.float64)
    from torchace.train.loss import residuals

    grads = {}
    for analytic in (True, False):
        nl.analytic = analytic
        nl.train()
        nl.zero_grad()
        sum(residuals(nl, b)[1] for b in batches).backward()
        grads[analytic] = torch.cat([p.grad.reshape(-1) for p in trainable(nl)])
    assert float((grads[True] - grads[False]).abs().max() / grads[False].abs().max()) < 1e-10


def test_warm_start_is_the_linear_fit_and_training_improves(si_data):
    lin = torchace.ace_model(["Si"], 2, 4)
    torchace.fit(lin, si_data, weights=W, E0=E0, compute_errors=False)  # BLR, as train's default warm start
    nl = from_linear(torchace.ace_model(["Si"], 2, 4), densities=2, embedding="fs", learnable_radials=True)
    res0 = torchace.train(nl, si_data, weights=W, E0=E0, epochs=0, progress=False)
    e_lin = torchace.evaluate(lin, si_data)
    e_nl = torchace.evaluate(nl, si_data)
    assert torch.allclose(e_nl[K.ENERGY], e_lin[K.ENERGY], rtol=0, atol=1e-10)
    assert torch.allclose(e_nl[K.FORCES], e_lin[K.FORCES], rtol=0, atol=1e-10)
    assert res0.chosen_epoch == 0 and res0.init["solver"] == "BLR"
    res = torchace.train(nl, si_data, weights=W, E0=E0, epochs=6, init_scale=0.01, progress=False)
    losses = [h["train"]["loss"] for h in res.history]
    assert min(losses[1:]) < losses[0]
    assert res.errors["all"]["F"]["rmse"] > 0 and res.n_parameters == sum(p.numel() for p in trainable(nl))


def test_validation_chooses_the_best_epoch(si_data):
    nl = from_linear(torchace.ace_model(["Si"], 2, 4), densities=2, embedding="fs", learnable_radials=True)
    res = torchace.train(nl, si_data, weights=W, E0=E0, epochs=5, optimizer="adam", lr=3e-2, init_scale=0.01,
                         validation=0.34, patience=2, progress=False)
    val = [h["val"]["loss"] for h in res.history]
    assert res.chosen_epoch == int(np.argmin(val))
    assert res.validation_errors is not None and res.hyperparameters["n_validation"] == 2
    assert len(res.history) <= 6


def test_validation_loss_is_the_held_out_misfit(si_data):
    """The validation score is the weighted misfit of the held-out rows alone: the same at epoch 0 (the BLR warm
    start, which does not depend on λ) for any λ, while the training loss (the objective) carries λ²‖θ‖²."""
    hist = {}
    for lam in (1e-3, 10.0):
        nl = from_linear(torchace.ace_model(["Si"], 2, 4), densities=2, embedding="fs", learnable_radials=True)
        hist[lam] = torchace.train(nl, si_data, weights=W, E0=E0, epochs=0, lam=lam, validation=0.34,
                                   progress=False, refit_linear=False).history[0]
    assert hist[10.0]["train"]["loss"] > 2 * hist[1e-3]["train"]["loss"]
    assert hist[10.0]["val"]["loss"] == pytest.approx(hist[1e-3]["val"]["loss"], rel=1e-12)
    assert hist[1e-3]["val"]["loss"] > 0


def _train_script(tmp_path, data_path, ckpt, out):
    return textwrap.dedent(f"""
        import sys, torch, torchace
        torch.set_num_threads(1)
        from torchace.model import from_linear
        nl = from_linear(torchace.ace_model(["Si"], 2, 4), densities=2, embedding="fs", learnable_radials=True)
        torchace.train(nl, {data_path!r}, weights={W!r}, E0={E0!r}, optimizer="adam+lbfgs", epochs=[3, 4],
                       lr=1e-2, init_scale=0.01, checkpoint={ckpt!r}, progress=True, compute_errors=False)
        nl.save({out!r})
        """)


@pytest.mark.slow  # three training children: 12 s
def test_resume_after_kill_gives_the_same_model(tmp_path, si_data):
    data = str(tmp_path / "si.xyz")
    write(data, si_data)
    ckpt, out_a, out_b = str(tmp_path / "train.pt"), str(tmp_path / "a.json"), str(tmp_path / "b.json")
    script = tmp_path / "run.py"
    script.write_text(_train_script(tmp_path, data, ckpt, out_a))
    env = dict(os.environ, OMP_NUM_THREADS="1")
    # uninterrupted run (no checkpoint)
    script_full = tmp_path / "full.py"
    script_full.write_text(_train_script(tmp_path, data, str(tmp_path / "other.pt"), out_b))
    run([sys.executable, str(script_full)], check=True, env=env, timeout=600)
    # killed after epoch 4 (in the L-BFGS phase), then resumed
    with spawn([sys.executable, str(script)], env=env, stderr=subprocess.PIPE, text=True) as p:
        for line in p.stderr:
            if line.startswith("epoch    4/"):
                p.kill()
                break
        p.wait(timeout=600)
    assert p.returncode != 0 and not os.path.exists(out_a)
    saved = torch.load(ckpt, weights_only=True)
    assert 3 <= len(saved["state"]["history"]) - 1 < 7  # killed while epoch 4 was being saved, or after
    run([sys.executable, str(script)], check=True, env=env, timeout=600)
    a, b = json.load(open(out_a)), json.load(open(out_b))
    for key in ("coefficients", "radial_weights"):
        x, y = np.array(a[key]), np.array(b[key])
        assert np.abs(x - y).max() <= 1e-12 * max(np.abs(y).max(), 1.0), key


def test_checkpoint_refuses_other_runs_and_garbage(tmp_path, si_data):
    ckpt = str(tmp_path / "c.pt")
    nl = from_linear(torchace.ace_model(["Si"], 2, 4), densities=2, embedding="fs", learnable_radials=False)
    torchace.train(nl, si_data, weights=W, E0=E0, epochs=1, checkpoint=ckpt, progress=False)
    nl2 = from_linear(torchace.ace_model(["Si"], 2, 4), densities=2, embedding="fs", learnable_radials=False)
    with pytest.raises(CheckpointMismatch, match="lam"):
        torchace.train(nl2, si_data, weights=W, E0=E0, epochs=1, lam=0.5, checkpoint=ckpt, progress=False)
    bad = tmp_path / "bad.pt"
    bad.write_bytes(b"not a checkpoint")
    with pytest.raises(CheckpointError, match="bad.pt"):
        torchace.train(nl2, si_data, weights=W, E0=E0, epochs=1, checkpoint=str(bad), progress=False)


@pytest.mark.parametrize("kwargs, match", [
    (dict(optimizer="sgd"), "optimizer"),
    (dict(epochs=[1, 2]), "epochs"),
    (dict(epochs=-1), "epochs"),
    (dict(init="model", E0="fit"), "E0='fit'"),
    (dict(validation=1.5), "validation"),
    (dict(lam=float("nan")), "lam"),
    (dict(dtype="float16"), "dtype"),
])
def test_refusals(si_data, kwargs, match):
    nl = from_linear(torchace.ace_model(["Si"], 2, 4), densities=2, embedding="fs")
    kw = dict(weights=W, E0=E0, epochs=1, progress=False)
    kw.update(kwargs)
    with pytest.raises(ValueError, match=match):
        torchace.train(nl, si_data, **kw)


def test_linear_model_is_trained_and_written_back(si_data):
    lin = torchace.ace_model(["Si"], 2, 4)
    res = torchace.train(lin, si_data, weights=W, E0=E0, epochs=3, progress=False)
    assert float(lin.coefficients.abs().sum()) > 0 and len(res.history) == 4
    ref = torchace.ace_model(["Si"], 2, 4)
    torchace.fit(ref, si_data, weights=W, E0=E0, compute_errors=False)
    # L-BFGS from the BLR fit: never worse than the start on the training loss
    assert res.history[res.chosen_epoch]["train"]["loss"] <= res.history[0]["train"]["loss"]


def test_cli_train(tmp_path, si_data):
    from torchace.cli import main

    write(str(tmp_path / "train.xyz"), si_data[:4])
    write(str(tmp_path / "test.xyz"), si_data[4:])
    cfg = tmp_path / "train.yaml"
    cfg.write_text(textwrap.dedent("""
        model: {elements: [Si], order: 2, totaldegree: 4, densities: 2, learnable_radials: true}
        data: {train: train.xyz, test: test.xyz}
        weights: {default: {E: 30, F: 1, V: 1}}
        E0: {Si: 0.0}
        training: {optimizer: lbfgs, epochs: 3}
        output: {model: nl.json, errors: errors.json, history: history.json, checkpoint: ckpt.pt}
        """))
    assert main(["train", str(cfg)]) == 0
    model = torchace.load(str(tmp_path / "nl.json"))
    assert model.densities == 2 and model.learnable_radials
    hist = json.load(open(tmp_path / "history.json"))["history"]  # "format" marks it as torchace's
    assert [h["epoch"] for h in hist] == [0, 1, 2, 3]
    rep = json.load(open(tmp_path / "errors.json"))
    assert rep["test"]["all"]["E"]["mae"] > 0
    # run again: resumes from the checkpoint (nothing left to do) and writes the same model
    before = (tmp_path / "nl.json").read_text()
    assert main(["train", str(cfg)]) == 0
    after = json.loads((tmp_path / "nl.json").read_text())
    assert after["coefficients"] == json.loads(before)["coefficients"]


@pytest.mark.parametrize("text, match", [
    ("training: {optimizer: sgd}", "training.optimizer"),
    ("training: {epochs: [1, 2]}", "training.epochs"),
    ("training: {bogus: 1}", "bogus"),
    ("assembly: {batch_atoms: 10}", "assembly"),
])
def test_train_config_refusals(tmp_path, si_data, text, match):
    from torchace.train.config import TrainConfig

    write(str(tmp_path / "train.xyz"), si_data)
    cfg = tmp_path / "c.yaml"
    cfg.write_text("model: {elements: [Si], order: 2, totaldegree: 4}\ndata: {train: train.xyz}\n" + text + "\n")
    with pytest.raises(ValueError, match=match):
        TrainConfig.load(str(cfg))


@pytest.mark.parametrize("dtype", ["float64", "float32"])
def test_train_on_every_device_and_dtype(si_data, device, dtype):
    nl = from_linear(torchace.ace_model(["Si"], 2, 4), densities=2, embedding="fs", learnable_radials=True)
    res = torchace.train(nl, si_data, weights=W, E0=E0, epochs=2, device=device, dtype=dtype, progress=False)
    p = nl.radials.weights
    assert p.device.type == torch.device(device).type and p.dtype == getattr(torch, dtype)
    assert all(np.isfinite(h["train"]["loss"]) for h in res.history)
    assert res.history[res.chosen_epoch]["train"]["loss"] <= res.history[0]["train"]["loss"]


def test_config_defaults_mirror_train():
    """The `training:` section's defaults are torchace.train's (one set of defaults for the API and the CLI)."""
    import dataclasses
    import inspect

    from torchace.train.config import TrainingSection

    sig = inspect.signature(torchace.train).parameters
    for f in dataclasses.fields(TrainingSection):
        want = sig[f.name].default
        if f.name == "device":
            want = "cpu" if want is None else want  # None: the model's device (CPU for a new model)
        if f.name == "dtype":
            want = str(want).replace("torch.", "")
        assert f.default == want, (f.name, f.default, want)
