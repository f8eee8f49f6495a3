"""Issue 26, class 10 (training lifecycle): continuing a trained model keeps it, a checkpoint is checked before it
is resumed (finite values, fields, epochs), divergence stops at the best epoch, the validation set is checked
(argument, the training data again, empty), resumes and interrupts say so in one line (SIGTERM / Ctrl-C: exit
143 / 130 from the CLI).  Tiny problems: Si order 2, total degree 5, four 8-atom frames, a few epochs."""
import json
import os
import signal
import subprocess
import sys
import time

import numpy as np
import pytest
import torch
from ase.calculators.singlepoint import SinglePointCalculator
from ase.io import write

import torchace
from torchace.fit import solvers
from torchace.fit.checkpoint import CheckpointError, CheckpointMismatch
from torchace.fit.data import DataError
from torchace.train.interrupt import TrainingInterrupted
from torchace.train.validation import ValidationOverlapWarning
from torchace.train.trainer import TrainingDivergedWarning
from torchace.testing import randomize_coefficients, rattled_bulk, spawn

W = {"default": {"E": 30, "F": 1, "V": 1}}
E0 = {"Si": 0.0}
REPO = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))


def _frames(n=4, seed=0):
    true = torchace.ace_model(["Si"], 2, 5)
    randomize_coefficients(true, 0.05, seed=3)
    out = []
    for k in range(n):
        at = rattled_bulk(["Si"], seed=seed + k)
        o = torchace.evaluate(true, at)
        at.calc = SinglePointCalculator(at, energy=float(o["energy"][0]), forces=o["forces"].numpy())
        out.append(at)
    return out


@pytest.fixture(scope="module")
def data():
    return _frames()


@pytest.fixture
def files(tmp_path, data):
    write(str(tmp_path / "train.xyz"), data)
    write(str(tmp_path / "other.xyz"), _frames(2, seed=10))
    return tmp_path


def _copies(frames):
    out = []
    for a in frames:
        b = a.copy()
        b.calc = SinglePointCalculator(b, energy=a.get_potential_energy(), forces=a.get_forces())
        out.append(b)
    return out


def nl():
    return torchace.ace_model(["Si"], 2, 5, densities=2, embedding="fs", learnable_radials=True)


def _kw(**kw):
    out = dict(weights=W, E0=E0, progress=False, compute_errors=False)
    out.update(kw)
    return out


def _cli(*args):
    from torchace.cli import main

    return main([str(a) for a in args])


def _config(tmp_path, name="train.json", **sections):
    d = {"model": {"elements": ["Si"], "order": 2, "totaldegree": 5, "densities": 2},
         "data": {"train": "train.xyz"}, "weights": W, "E0": E0,
         "training": {"epochs": 2}, "output": {"model": "nl.json", "errors": None}}
    for k, v in sections.items():
        d[k] = dict(d.get(k) or {}, **v) if isinstance(v, dict) and k != "model" else v
    p = tmp_path / name
    p.write_text(json.dumps(d))
    return str(p)


# ------------------------------------------------------------------ continuing from a trained model


def test_config_model_from_a_trained_file_keeps_its_parameters(files, capsys):
    """`model: {from: trained.json}` keeps the trained coefficients (was: re-done by the linear warm start);
    `init: linear` explicitly still re-initialises; the progress output says which."""
    lin = torchace.ace_model(["Si"], 2, 5)
    torchace.fit(lin, str(files / "train.xyz"), weights=W, E0=E0, solver=solvers.QR(lam=1e-1), compute_errors=False)
    lin.save(str(files / "trained.json"))
    trained = lin.coefficients.detach().clone()
    cfg = _config(files, model={"from": "trained.json"}, training={"epochs": 0})
    assert _cli("train", cfg) == 0
    err = capsys.readouterr().err
    assert "init: the model's parameters kept" in err
    kept = torchace.load(str(files / "nl.json")).coefficients.detach()
    assert torch.equal(kept, trained)
    cfg = _config(files, model={"from": "trained.json"}, training={"epochs": 0, "init": "linear"},
                  output={"model": "nl2.json"})
    assert _cli("train", cfg) == 0
    assert "init: linear warm start" in capsys.readouterr().err
    redone = torchace.load(str(files / "nl2.json")).coefficients.detach()
    assert not torch.allclose(redone, trained)


def test_continuing_with_E0_fit_keeps_the_fitted_E0(files, capsys):
    """E0: fit with a kept trained model: its E0 (fitted with it) is kept, not refused nor reset."""
    lin = torchace.ace_model(["Si"], 2, 5)
    torchace.fit(lin, str(files / "train.xyz"), weights=W, E0="fit", compute_errors=False)
    lin.save(str(files / "trained.json"))
    cfg = _config(files, model={"from": "trained.json"}, E0="fit", training={"epochs": 0})
    assert _cli("train", cfg) == 0
    assert "its E0 kept for E0=fit" in capsys.readouterr().err
    out = torchace.load(str(files / "nl.json"))
    assert torch.equal(out.E0, lin.E0) and torch.equal(out.coefficients.detach(), lin.coefficients.detach())


def test_api_continues_a_trained_nonlinear_model(tmp_path, data):
    m = nl()
    torchace.train(m, data, **_kw(epochs=2))
    m.save(str(tmp_path / "t.json"))
    loaded = torchace.load(str(tmp_path / "t.json"))
    res = torchace.train(loaded, data, **_kw(epochs=0, refit_linear=False))
    assert res.hyperparameters["init"] == "model" and "trained" in res.hyperparameters["init_from"]
    for (k, a), b in zip(m.state_dict().items(), loaded.state_dict().values()):
        assert torch.allclose(a.to(b), b, rtol=0, atol=1e-14), k
    # a new model (all coefficients zero) still gets the linear warm start
    fresh = nl()
    assert torchace.train(fresh, data, **_kw(epochs=0)).hyperparameters["init"] == "linear"


# ------------------------------------------------------------------ checkpoints


def _checkpoint(tmp_path, data, epochs=2, **kw):
    ck = str(tmp_path / "ck.pt")
    torchace.train(nl(), data, **_kw(epochs=epochs, checkpoint=ck, **kw))
    return ck


@pytest.mark.parametrize("field", ["model", "best"])
def test_checkpoint_with_nan_parameters_is_refused(tmp_path, data, field):
    ck = _checkpoint(tmp_path, data)
    doc = torch.load(ck, weights_only=True)
    target = doc["state"]["model"] if field == "model" else doc["state"]["best"]["state"]
    target["coefficients"][0] = float("nan")
    torch.save(doc, ck)
    m = nl()
    with pytest.raises(CheckpointError, match=rf"ck\.pt.*{field}.*coefficients.*non-finite"):
        torchace.train(m, data, **_kw(epochs=3, checkpoint=ck))
    assert torch.isfinite(m.density_coefficients).all()


def test_checkpoint_missing_field_or_foreign_parameters_refused(tmp_path, data):
    ck = _checkpoint(tmp_path, data)
    doc = torch.load(ck, weights_only=True)
    del doc["state"]["model"]["coefficients"]
    torch.save(doc, ck)
    with pytest.raises(CheckpointError, match=r"ck\.pt.*state\.model.*coefficients"):
        torchace.train(nl(), data, **_kw(epochs=3, checkpoint=ck))
    doc = torch.load(ck, weights_only=True)
    del doc["state"]["best"]
    torch.save(doc, ck)
    with pytest.raises(CheckpointError, match=r"ck\.pt.*state\.best.*missing"):
        torchace.train(nl(), data, **_kw(epochs=3, checkpoint=ck))


def test_checkpoint_of_other_data_is_refused(tmp_path, data):
    ck = _checkpoint(tmp_path, data)
    with pytest.raises(CheckpointMismatch, match=r"ck\.pt.*train_data"):
        torchace.train(nl(), data[:3], **_kw(epochs=3, checkpoint=ck))


def test_checkpoint_past_the_epochs_asked_is_refused(tmp_path, data):
    ck = _checkpoint(tmp_path, data, epochs=3)
    before = open(ck, "rb").read()
    with pytest.raises(CheckpointMismatch, match=r"ck\.pt.*epochs 0-3.*2 epochs asked"):
        torchace.train(nl(), data, **_kw(epochs=2, checkpoint=ck))
    assert open(ck, "rb").read() == before  # the checkpoint is left as it was


def test_checkpoint_of_another_optimiser_split_is_refused(tmp_path, data):
    ck = _checkpoint(tmp_path, data, epochs=[1, 1], optimizer="adam+lbfgs", lr=1e-3)
    with pytest.raises(CheckpointMismatch, match=r"ck\.pt: epoch 2.*'lbfgs'.*'adam'.*epochs"):
        torchace.train(nl(), data, **_kw(epochs=[2, 2], optimizer="adam+lbfgs", lr=1e-3, checkpoint=ck))


def test_resume_says_so(tmp_path, data, capsys):
    ck = _checkpoint(tmp_path, data, epochs=2)
    res = torchace.train(nl(), data, **_kw(epochs=3, checkpoint=ck, progress=True))
    err = capsys.readouterr().err
    assert f"resuming from {ck} at epoch 3 of 3" in err and "init:" not in err
    assert res.resumed == {"checkpoint": ck, "epochs_done": 2} and len(res.history) == 4
    res = torchace.train(nl(), data, **_kw(epochs=3, checkpoint=ck, progress=True))
    assert "holds all 3 epochs, nothing to train" in capsys.readouterr().err
    assert len(res.history) == 4


def test_early_stopped_run_stays_stopped_on_resume(tmp_path, data):
    """A run that stopped early is returned as it was when its checkpoint is resumed (was: trained on)."""
    ck = str(tmp_path / "ck.pt")
    kw = _kw(epochs=12, optimizer="adam", lr=0.3, validation=0.25, patience=1, checkpoint=ck, refit_linear=False)
    first = torchace.train(nl(), data, **kw)
    assert first.stopped.startswith("early stop"), first.stopped
    again = torchace.train(nl(), data, **kw)
    assert again.stopped == first.stopped and len(again.history) == len(first.history)
    assert again.chosen_epoch == first.chosen_epoch


# ------------------------------------------------------------------ divergence


@pytest.mark.parametrize("optimizer, lr, what", [("adam", 1e200, "the training loss"),
                                                 ("lbfgs", 1e300, "the parameters")])
def test_divergence_keeps_the_best_epoch(tmp_path, data, optimizer, lr, what):
    m = nl()
    ck = str(tmp_path / "ck.pt")
    with pytest.warns(TrainingDivergedWarning, match="diverged"):
        res = torchace.train(m, data, **_kw(epochs=3, optimizer=optimizer, lr=lr, checkpoint=ck))
    assert res.stopped.startswith(f"diverged: {what} became non-finite at epoch 1")
    assert res.chosen_epoch == 0 and len(res.history) == 1
    assert all(bool(torch.isfinite(p).all()) for p in m.parameters())
    assert np.isfinite(float(torchace.evaluate(m, data[0])["energy"][0]))
    state = torch.load(ck, weights_only=True)["state"]  # the checkpoint keeps the last finite epoch
    assert len(state["history"]) == 1 and torch.isfinite(state["model"]["coefficients"]).all()


def test_cli_divergence_saves_the_best_model_without_a_traceback(files, capsys):
    cfg = _config(files, training={"optimizer": "adam", "lr": 1e200, "epochs": 2},
                  output={"history": "history.json"})
    assert _cli("train", cfg, "-q") == 0
    out = capsys.readouterr()
    assert "Traceback" not in out.err and "diverged" in out.out and "diverged" not in out.err
    saved = json.load(open(files / "nl.json"))
    assert np.isfinite(np.array(saved["coefficients"])).all()
    assert len(json.load(open(files / "history.json"))["history"]) == 1  # a strict-JSON history of the finite epochs


def test_poisoned_label_is_named(data):
    bad = _copies(data)
    bad[2].calc.results["energy"] = 1e200
    with pytest.raises(DataError, match=r"structure 2: the energy label is out of range"):
        torchace.train(nl(), bad, **_kw(epochs=1))


# ------------------------------------------------------------------ validation


@pytest.mark.parametrize("value", [1, 0, True, [], 1.5, float("nan"), {"a": 1}])
def test_validation_argument_is_checked_naming_it(data, value):
    with pytest.raises(ValueError, match="'validation'"):
        torchace.train(nl(), data, **_kw(epochs=1, validation=value))


@pytest.mark.parametrize("value", [1, True, [], "", [3]])
def test_config_validation_is_checked_naming_it(files, value):
    from torchace.train.config import TrainConfig

    with pytest.raises(ValueError, match="data.validation"):
        TrainConfig.load(_config(files, data={"validation": value}))


def test_validation_that_is_the_training_file_is_refused(files, capsys):
    with pytest.raises(ValueError, match=r"'validation'.*train\.xyz is the training data"):
        torchace.train(nl(), str(files / "train.xyz"), **_kw(epochs=1, validation=str(files / "train.xyz")))
    # the CLI: one line naming the field
    with pytest.raises(SystemExit, match="validation"):
        _cli("train", _config(files, data={"validation": "train.xyz"}))


def test_validation_of_the_same_structures_refused_and_overlap_warned(files, data):
    with pytest.raises(ValueError, match=r"'validation': all 4 validation structures are training structures"):
        torchace.train(nl(), data, **_kw(epochs=0, validation=_copies(data)))
    mixed = _copies(data[:1]) + _frames(2, seed=10)
    with pytest.warns(ValidationOverlapWarning, match=r"'validation': 1 of 3 validation structures"):
        res = torchace.train(nl(), data, **_kw(epochs=0, validation=mixed))
    assert res.hyperparameters["n_validation"] == 3


def test_validation_empty_after_filtering_is_refused(files):
    from ase import Atoms

    a = Atoms("Si", positions=[[0, 0, 0]])
    a.calc = SinglePointCalculator(a, energy=-0.5)
    a.info["config_type"] = "isolated_atom"
    write(str(files / "iso.xyz"), [a])  # only an isolated atom: nothing to validate on
    with pytest.raises(ValueError, match=r"'validation' has no structure to validate on"):
        torchace.train(nl(), str(files / "train.xyz"), **_kw(epochs=0, validation=str(files / "iso.xyz")))


# ------------------------------------------------------------------ interrupts


def test_interrupt_keeps_the_checkpoint_and_the_best_epoch(tmp_path, data, monkeypatch):
    """Ctrl-C during epoch 3: TrainingInterrupted saying what the checkpoint keeps; the model holds the best epoch."""
    import torchace.train.trainer as T

    calls = {"n": 0}
    real = T.loss_metrics

    def interrupting(*a, **k):
        calls["n"] += 1
        if calls["n"] == 4:  # epochs 0, 1, 2 evaluated; interrupted in epoch 3
            raise KeyboardInterrupt
        return real(*a, **k)

    monkeypatch.setattr(T, "loss_metrics", interrupting)
    ck = str(tmp_path / "ck.pt")
    m = nl()
    with pytest.raises(TrainingInterrupted, match=rf"SIGINT during epoch 3: checkpoint {ck} keeps epochs 0-2") as ei:
        torchace.train(m, data, **_kw(epochs=5, optimizer="lbfgs", checkpoint=ck))
    assert ei.value.signum == signal.SIGINT
    state = torch.load(ck, weights_only=True)["state"]
    assert len(state["history"]) == 3
    best = state["best"]["state"]
    for k, v in m.state_dict().items():
        assert torch.equal(v, best[k]), k


def _run_cli_until(tmp_path, cfg, sig, marker="epoch    2/"):
    env = dict(os.environ, OMP_NUM_THREADS="1", PYTHONPATH=REPO)
    code = "import sys; from torchace.cli import main; sys.exit(main())"
    lines = []
    with spawn([sys.executable, "-c", code, "train", cfg], env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
               text=True, cwd=str(tmp_path)) as p:
        deadline = time.time() + 240
        for line in p.stderr:
            lines.append(line)
            if line.startswith(marker):
                p.send_signal(sig)
                break
            assert time.time() < deadline, "".join(lines)
        rest_out, rest_err = p.communicate(timeout=120)
    return p.returncode, "".join(lines) + rest_err


@pytest.mark.slow  # a CLI child per signal: 4-6 s
@pytest.mark.parametrize("sig, code", [(signal.SIGTERM, 143), (signal.SIGINT, 130)])
def test_cli_signal_says_the_checkpoint_is_kept(files, sig, code):
    cfg = _config(files, training={"epochs": 400, "optimizer": "lbfgs"}, output={"checkpoint": "ck.pt"})
    rc, err = _run_cli_until(files, cfg, sig)
    assert rc == code, err
    assert "Traceback" not in err, err
    last = err.strip().splitlines()[-1]
    assert last.startswith(f"torchace train: train: interrupted by {signal.Signals(sig).name}")
    assert "ck.pt keeps epochs 0-" in last and "run the same command again to resume" in last
    kept = int(last.split("keeps epochs 0-")[1].split(";")[0])
    state = torch.load(str(files / "ck.pt"), weights_only=True)["state"]
    assert kept >= 2 and len(state["history"]) == kept + 1  # what the line says is what the file holds
    assert not os.path.exists(files / "nl.json")
