"""Batch work as users expect it (issue 30, item 5; torchace/jobs.py): the ``threads`` option of fit / train /
evaluate and their configs is honoured inside the work and the previous count restored after it; every
``torchace fit`` / ``torchace train`` writes ``<model stem>.log`` beside its outputs under the output rule; a line
with the sizes goes before every long stage (printed with progress, always in the log).  Tiny problems: Si order
2, total degree 5, four 8-atom frames."""
import json

import pytest
import torch
from ase.calculators.singlepoint import SinglePointCalculator
from ase.io import write

import torchace
from torchace import jobs
from torchace.atomic import OutputPathError
from torchace.cli import main
from torchace.fit.config import FitConfig
from torchace.testing import randomize_coefficients, rattled_bulk

W = {"default": {"E": 30, "F": 1, "V": 1}}
E0 = {"Si": 0.0}


@pytest.fixture(scope="module")
def frames():
    true = torchace.ace_model(["Si"], 2, 5)
    randomize_coefficients(true, 0.05, seed=3)
    out = []
    for k in range(4):
        at = rattled_bulk(["Si"], seed=k)
        o = torchace.evaluate(true, at)
        at.calc = SinglePointCalculator(at, energy=float(o["energy"][0]), forces=o["forces"].numpy())
        at.info["config_type"] = "liq" if k % 2 else "dia"
        out.append(at)
    return out


def _config(tmp_path, frames, name="fit.json", **top):
    write(str(tmp_path / "train.xyz"), frames)
    d = {"model": {"elements": ["Si"], "order": 2, "totaldegree": 5}, "data": {"train": "train.xyz"},
         "weights": W, "E0": E0, "solver": {"name": "QR", "lam": 1e-3}, "output": {"model": "m.json", "errors": None}}
    d.update(top)
    p = tmp_path / name
    p.write_text(json.dumps(d))
    return str(p)


def test_threads_are_honoured_inside_the_work_and_restored(frames, monkeypatch):
    """fit(threads=1) runs its stages with one thread (seen by a monkeypatched solve), evaluate(threads=...) too;
    the count before the call is back after it, also when the work raises."""
    import sys

    import torchace.fit.driver as driver

    ev = sys.modules["torchace.model.evaluate"]  # the package's ``evaluate`` attribute is the function

    seen = []
    solve = driver.solve_system
    monkeypatch.setattr(driver, "solve_system", lambda *a, **k: seen.append(torch.get_num_threads()) or solve(*a, **k))
    before = torch.get_num_threads()
    other = 2 if before == 1 else 1
    m = torchace.ace_model(["Si"], 2, 5)
    torchace.fit(m, frames, weights=W, E0=E0, compute_errors=False, threads=other)
    assert seen == [other] and torch.get_num_threads() == before
    # evaluate: threads for the call (default None: unchanged), restored after it
    b = ev.select
    monkeypatch.setattr(ev, "select", lambda *a, **k: seen.append(torch.get_num_threads()) or b(*a, **k))
    torchace.evaluate(m, frames[0], threads=other)
    assert seen[-1] == other and torch.get_num_threads() == before
    torchace.evaluate(m, frames[0])
    assert seen[-1] == before

    def boom(*a, **k):
        assert torch.get_num_threads() == other
        raise RuntimeError("boom")

    monkeypatch.setattr(driver, "solve_system", boom)
    with pytest.raises(RuntimeError, match="boom"):
        torchace.fit(m, frames, weights=W, E0=E0, compute_errors=False, threads=other)
    assert torch.get_num_threads() == before


def test_auto_threads_rule(monkeypatch):
    """"auto": the usable cores minus the load average, at least one; OMP_NUM_THREADS (the user's) is kept;
    inside a job "auto" keeps the job's count (the warm-start fit inside train)."""
    monkeypatch.delenv("OMP_NUM_THREADS", raising=False)
    monkeypatch.setattr(jobs, "usable_cores", lambda: 8)
    for load, n in ((0.1, 8), (2.6, 5), (7.9, 1), (30.0, 1)):
        monkeypatch.setattr(jobs.os, "getloadavg", lambda load=load: (load, load, load))
        assert jobs.auto_threads(refresh=True)[0] == n
    assert jobs.auto_threads()[0] == 1  # decided once per process: the same count for every job of a script
    monkeypatch.setenv("OMP_NUM_THREADS", "3")
    assert jobs.auto_threads() == (torch.get_num_threads(), "OMP_NUM_THREADS=3")
    before = torch.get_num_threads()
    with jobs.use_threads(1):
        with jobs.use_threads("auto") as inner:
            assert inner == 1 and torch.get_num_threads() == 1
    assert torch.get_num_threads() == before
    monkeypatch.undo()
    jobs.auto_threads(refresh=True)  # this machine's decision again, for the tests after this one


@pytest.mark.parametrize("value", [0, -1, "x", 1.5, True])
def test_config_threads_validated(tmp_path, frames, value):
    with pytest.raises(ValueError, match=r"fit.json: fit config: 'threads' must be a positive integer \(threads\) "
                                         r"or 'auto', got"):
        FitConfig.load(_config(tmp_path, frames, threads=value))
    with pytest.raises(ValueError, match="'threads' must be a positive integer"):
        torchace.fit(torchace.ace_model(["Si"], 2, 5), frames, threads=value)


def test_cli_threads_flag_validated(capsys):
    for bad in ("0", "-1", "x"):
        with pytest.raises(SystemExit) as exc:
            main(["fit", "--threads", bad])
        assert exc.value.code == 2
        assert "--threads: must be a positive integer or 'auto'" in capsys.readouterr().err


def test_fit_log_beside_the_outputs_with_stages_and_sizes(tmp_path, frames, capsys):
    """`torchace fit` writes m.log beside m.json: the header (versions, threads, config), every printed line with
    a timestamp, the stage lines with rows × columns and bytes, and how it ended; the stage lines are printed too
    (without -q) and are in the log with -q."""
    cfg = _config(tmp_path, frames, threads=1)
    assert main(["fit", cfg]) == 0
    err = capsys.readouterr().err
    assert "fit: assembling the design matrix" in err and "rows ×" in err and "columns (" in err
    assert "fit: solving with QR" in err and "peak memory ≈" in err
    text = (tmp_path / "m.log").read_text()
    assert text.startswith(jobs.LOG_HEADER)
    for words in ("# versions: torchace", "# threads: 1 (given)", '"totaldegree": 5',
                  "reading the training data (1 file: train.xyz",
                  "fit: assembling the design matrix", "rows ×", "peak memory ≈", "wrote ", "torchace fit finished"):
        assert words in text, words
    assert main(["fit", cfg, "-q", "--threads", "2"]) == 0  # a torchace log is replaced without --force
    err = capsys.readouterr().err
    assert "fit: assembling" not in err
    text = (tmp_path / "m.log").read_text()
    assert "# threads: 2 (given)" in text and "fit: assembling the design matrix" in text


def test_log_that_is_not_ours_is_refused_before_the_work_and_replaced_with_force(tmp_path, frames):
    cfg = _config(tmp_path, frames)
    (tmp_path / "m.log").write_text("my notes\n")
    with pytest.raises(SystemExit, match=r"output.log: .*m.log: exists and is not a torchace log file"):
        main(["fit", cfg])
    assert not (tmp_path / "m.json").exists() and (tmp_path / "m.log").read_text() == "my notes\n"
    assert main(["fit", cfg, "--force"]) == 0
    assert (tmp_path / "m.log").read_text().startswith(jobs.LOG_HEADER)
    # output.log: another path, or null for none
    assert main(["fit", _config(tmp_path, frames, output={"model": "m2.json", "errors": None,
                                                          "log": "run.txt"})]) == 0
    assert (tmp_path / "run.txt").read_text().startswith(jobs.LOG_HEADER) and not (tmp_path / "m2.log").exists()
    assert main(["fit", _config(tmp_path, frames, output={"model": "m3.json", "errors": None, "log": None})]) == 0
    assert not (tmp_path / "m3.log").exists()


def test_api_log_records_the_error_and_is_written(tmp_path, frames):
    """fit(log=PATH): the stage lines (without progress) and, when the fit fails, the error that stopped it."""
    log = tmp_path / "fit.log"
    m = torchace.ace_model(["Si"], 2, 5)
    torchace.fit(m, frames, weights=W, E0=E0, compute_errors=False, log=str(log))
    text = log.read_text()
    assert "fit: solving with BLR" in text and "fit finished" in text
    assert "fit: reading the training data (4 structures given)" in text and "fit: read 4 structures" in text
    with pytest.raises(ValueError):
        torchace.fit(m, frames, weights={"default": {"E": 0, "F": 0, "V": 0}}, E0=E0, log=str(log))
    assert "fit stopped by an error: ValueError" in log.read_text()
    (tmp_path / "data.log").write_text("not ours")
    with pytest.raises(OutputPathError, match="not a torchace log file"):
        torchace.fit(m, frames, weights=W, E0=E0, log=str(tmp_path / "data.log"))


def test_train_log_states_warm_start_and_stop_reason(tmp_path, frames, capsys):
    d = {"model": {"elements": ["Si"], "order": 2, "totaldegree": 5, "densities": 2}, "data": {"train": "train.xyz"},
         "weights": W, "E0": E0, "training": {"epochs": 1}, "threads": 1,
         "output": {"model": "nl.json", "errors": None, "checkpoint": "ck.pt"}}
    write(str(tmp_path / "train.xyz"), frames)
    (tmp_path / "train.json").write_text(json.dumps(d))
    assert main(["train", str(tmp_path / "train.json"), "-q"]) == 0
    text = (tmp_path / "nl.log").read_text()
    for words in ("# threads: 1 (given)", "train: linear warm start", "fit: solving with BLR",
                  "train: stopped: all epochs done", "torchace train finished"):
        assert words in text, words
    assert main(["train", str(tmp_path / "train.json"), "-q"]) == 0  # resumed: said in the log
    assert "resuming from" in (tmp_path / "nl.log").read_text()
