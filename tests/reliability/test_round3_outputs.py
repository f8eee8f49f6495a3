"""Issue 26, class 4: one output rule for every file torchace writes (torchace.atomic).

An existing file is replaced only if torchace wrote it as an output of the same kind (its marker: a JSON
"format" field, a header line, PNG "Software" text, torchace code in a TorchScript archive), or with
``overwrite=True`` / ``--force`` / ``output: {overwrite: true}``; the refusal comes before the work and names
the file and the field; multi-file exports (.yace + pair table + LAMMPS include) are replaced as a set.
Every refusal has a negative control: the protected file's checksum is unchanged, and a torchace-written file
of the same kind is replaced without asking.
"""
from __future__ import annotations

import errno
import hashlib
import json
import os
import time
import warnings

import numpy as np
import pytest
import torch

import torchace
from torchace.atomic import OutputPathError

pytestmark = pytest.mark.filterwarnings("ignore::DeprecationWarning")


def sha(path) -> str:
    return hashlib.sha256(open(path, "rb").read()).hexdigest()


def no_temporaries(d) -> bool:
    return not [f for f in os.listdir(d) if f.startswith(".tmp_")]


def cli(*args) -> int:
    from torchace.cli import main

    return main([str(a) for a in args])


def small_model(pair: bool = False):
    m = torchace.ace_model(["Si"], 2, 5)
    torch.manual_seed(0)
    c = 1e-3 * torch.randn(m.basis_size, dtype=torch.float64)
    if not pair:
        c[m.n_manybody:] = 0.0
    m.coefficients = c
    with torch.no_grad():
        m.E0.fill_(-5.0)
    return m


@pytest.fixture
def frames():
    from ase.calculators.singlepoint import SinglePointCalculator

    from torchace.testing import rattled_bulk

    rng = np.random.default_rng(0)
    out = []
    for k in range(4):
        a = rattled_bulk(["Si"], seed=k)
        a.calc = SinglePointCalculator(a, energy=-40.0 + rng.normal(), forces=0.1 * rng.normal(size=(len(a), 3)))
        out.append(a)
    return out


@pytest.fixture
def model_file(tmp_path):
    p = tmp_path / "m.json"
    small_model().save(str(p))
    return str(p)


@pytest.fixture
def other_data(tmp_path, frames):
    """A data set that is no input of the command: the file a hostile config points an output at."""
    from ase.io import write

    p = tmp_path / "other.xyz"
    write(str(p), frames)
    return str(p)


# ---- the markers: what is torchace's, what is not ----

def test_check_output_recognises_only_its_own_kind(tmp_path):
    from torchace.atomic import ERRORS_REPORT, EVALUATION_REPORT, check_output, text_output

    rep = tmp_path / "r.json"
    rep.write_text(json.dumps({"format": "torchace-errors", "train": {}}))
    check_output(str(rep), ERRORS_REPORT)  # ours, same kind
    with pytest.raises(OutputPathError, match=r"r\.json: exists and is not a torchace evaluate report.*--force"):
        check_output(str(rep), EVALUATION_REPORT)  # ours, but another kind: not replaced by mistake
    script = tmp_path / "run.py"
    script.write_text("#!/usr/bin/env python\nimport torchace  # a hand-written script that uses torchace\n")
    kind = text_output('"""LAMMPS MD with the torchace model ', "LAMMPS driver script written by torchace lammps")
    with pytest.raises(OutputPathError, match=r"run\.py: exists and is not a LAMMPS driver script"):
        check_output(str(script), kind)
    check_output(str(script), kind, overwrite=True)
    check_output(str(tmp_path / "new.json"), ERRORS_REPORT)  # no file: fine


def test_check_output_refuses_a_fifo_without_blocking(tmp_path):
    from torchace.atomic import ERRORS_REPORT, check_output

    fifo = tmp_path / "fifo.json"
    os.mkfifo(fifo)
    t0 = time.perf_counter()
    with pytest.raises(OutputPathError, match=r"fifo\.json: exists and is not a regular file"):
        check_output(str(fifo), ERRORS_REPORT, overwrite=True)  # not even with overwrite: never a FIFO's writer
    assert time.perf_counter() - t0 < 5


# ---- torchace evaluate -o ----

def test_cli_evaluate_output_never_replaces_another_file(tmp_path, model_file, other_data, frames):
    from ase.io import write

    data = tmp_path / "eval.xyz"
    write(str(data), frames[:1])
    before = sha(other_data)
    with pytest.raises(SystemExit, match=r"torchace evaluate: OutputPathError: .*other\.xyz: exists and is not a "
                                         r"torchace evaluate report.*--force"):
        cli("evaluate", data, "--model", model_file, "--backend", "analytic", "-o", other_data)
    assert sha(other_data) == before and no_temporaries(tmp_path)
    # negative controls: a report of an earlier evaluate is replaced; --force replaces anything
    rep = tmp_path / "report.json"
    assert cli("evaluate", data, "--model", model_file, "--backend", "analytic", "-o", rep) == 0
    assert json.loads(rep.read_text())["format"] == "torchace-evaluation"
    assert cli("evaluate", data, "--model", model_file, "--backend", "analytic", "-o", rep) == 0
    assert cli("evaluate", data, "--model", model_file, "--backend", "analytic", "-o", other_data, "--force") == 0
    assert json.loads(open(other_data).read())["format"] == "torchace-evaluation"


def test_cli_evaluate_output_onto_another_model_file(tmp_path, model_file, frames):
    """A model file (not the one evaluated) is not a report: refused."""
    from ase.io import write

    data = tmp_path / "eval.xyz"
    write(str(data), frames[:1])
    other = tmp_path / "other_model.json"
    small_model().save(str(other))
    before = sha(other)
    with pytest.raises(SystemExit, match=r"other_model\.json: exists and is not a torchace evaluate report"):
        cli("evaluate", data, "--model", model_file, "--backend", "analytic", "-o", other)
    assert sha(other) == before


# ---- fit / train configs: output.errors, output.parity, output.history ----

def _fit_config(tmp_path, frames, output):
    from ase.io import write

    write(str(tmp_path / "train.xyz"), frames)
    write(str(tmp_path / "test.xyz"), frames[:2])
    cfg = {"model": {"elements": ["Si"], "order": 2, "totaldegree": 5},
           "data": {"train": "train.xyz", "test": "test.xyz"}, "E0": {"Si": -5.0},
           "solver": {"name": "QR", "lam": 1e-3}, "output": output}
    p = tmp_path / "fit.json"
    p.write_text(json.dumps(cfg))
    return p


@pytest.mark.parametrize("field", ["errors", "parity"])
def test_fit_config_outputs_refused_before_the_fit(tmp_path, frames, other_data, field):
    out = {"model": "m.json", "errors": None, field: "other.xyz"}
    cfg = _fit_config(tmp_path, frames, out)
    before = sha(other_data)
    t0 = time.perf_counter()
    with pytest.raises(SystemExit, match=rf"torchace fit: OutputPathError: .*fit\.json: fit config: output\.{field}: "
                                         r".*other\.xyz: exists and is not a"):
        cli("fit", cfg, "-q")
    assert time.perf_counter() - t0 < 5 and sha(other_data) == before  # refused before the fit
    assert not (tmp_path / "m.json").exists()
    from torchace.fit.config import FitConfig

    with pytest.raises(OutputPathError, match=rf"output\.{field}"):
        FitConfig.load(str(cfg))


def test_fit_outputs_replace_their_own_files_and_overwrite_is_explicit(tmp_path, frames, other_data):
    cfg = _fit_config(tmp_path, frames, {"model": "m.json", "errors": "errors.json", "parity": "parity.png"})
    assert cli("fit", cfg, "-q") == 0
    rep = json.loads((tmp_path / "errors.json").read_text())
    assert rep["format"] == "torchace-errors" and "train" in rep
    assert (tmp_path / "parity.png").read_bytes().startswith(b"\x89PNG")
    assert cli("fit", cfg, "-q") == 0  # torchace's own outputs of the same kind are replaced without asking
    # output.overwrite: true and --force replace another file, as asked
    d = json.loads(cfg.read_text())
    d["output"] = {"model": "m.json", "errors": "other.xyz", "overwrite": True}
    cfg.write_text(json.dumps(d))
    assert cli("fit", cfg, "-q") == 0
    assert json.loads(open(other_data).read())["format"] == "torchace-errors"
    d["output"] = {"model": "m.json", "errors": "hand.txt"}
    (tmp_path / "hand.txt").write_text("notes\n")
    cfg.write_text(json.dumps(d))
    with pytest.raises(SystemExit, match=r"hand\.txt: exists and is not a torchace errors report"):
        cli("fit", cfg, "-q")
    assert (tmp_path / "hand.txt").read_text() == "notes\n"
    assert cli("fit", cfg, "-q", "--force") == 0
    d["output"] = {"model": "m.json", "overwrite": "yes"}
    cfg.write_text(json.dumps(d))
    with pytest.raises(SystemExit, match="output.overwrite"):
        cli("fit", cfg, "-q")


def test_train_config_output_history_refused_before_training(tmp_path, frames, other_data):
    from ase.io import write

    from torchace.train.config import TrainConfig

    write(str(tmp_path / "train.xyz"), frames)
    cfg = {"model": {"elements": ["Si"], "order": 2, "totaldegree": 4, "densities": 2},
           "data": {"train": "train.xyz"}, "E0": {"Si": 0.0}, "training": {"optimizer": "lbfgs", "epochs": 1},
           "output": {"model": "nl.json", "errors": None, "history": "other.xyz"}}
    p = tmp_path / "train.json"
    p.write_text(json.dumps(cfg))
    before = sha(other_data)
    with pytest.raises(SystemExit, match=r"torchace train: OutputPathError: .*output\.history: .*other\.xyz: exists "
                                         r"and is not a torchace training history"):
        cli("train", p, "-q")
    with pytest.raises(OutputPathError, match=r"output\.history"):
        TrainConfig.load(str(p))
    assert sha(other_data) == before and not (tmp_path / "nl.json").exists()
    TrainConfig.load(str(p), overwrite=True)  # --force
    cfg["output"]["overwrite"] = True
    p.write_text(json.dumps(cfg))
    assert TrainConfig.load(str(p)).history.endswith("other.xyz")
    cfg["output"] = {"model": "nl.json", "errors": None, "history": "history.json"}
    p.write_text(json.dumps(cfg))
    assert cli("train", p, "-q") == 0
    hist = json.loads((tmp_path / "history.json").read_text())
    assert hist["format"] == "torchace-train-history" and hist["history"][0]["epoch"] == 0
    TrainConfig.load(str(p))  # its own history is replaced without asking


# ---- torchace lammps -o ----

def test_cli_lammps_output_never_replaces_a_hand_written_script(tmp_path, model_file):
    data = tmp_path / "si.data"
    data.write_text("LAMMPS data\n\n2 atoms\n1 atom types\n")
    mine = tmp_path / "run_md.py"
    mine.write_text("#!/usr/bin/env python\n# my run, uses torchace\nimport torchace\n")
    before = sha(mine)
    with pytest.raises(SystemExit, match=r"torchace lammps: OutputPathError: .*run_md\.py: exists and is not a "
                                         r"LAMMPS driver script written by torchace lammps.*--force"):
        cli("lammps", model_file, data, "--elements", "Si", "-o", mine)
    assert sha(mine) == before and no_temporaries(tmp_path)
    out = tmp_path / "driver.py"
    assert cli("lammps", model_file, data, "--elements", "Si", "-o", out) == 0
    assert cli("lammps", model_file, data, "--elements", "Si", "-o", out, "--steps", "5") == 0  # its own: replaced
    assert "driver.run(5)" in out.read_text()
    assert cli("lammps", model_file, data, "--elements", "Si", "-o", mine, "--force") == 0
    assert sha(mine) != before


# ---- exports: TorchScript, metatomic, .yace set ----

def test_torchscript_export_never_replaces_a_foreign_zip(tmp_path):
    """Any zip used to pass as 'a TorchScript archive': an .npz data set or another program's TorchScript model
    was replaced by an export."""
    npz = tmp_path / "data.npz"
    np.savez(str(npz), x=np.arange(5))
    plain = tmp_path / "plain.pt"
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # torch.jit.* are deprecated in recent torch
        torch.jit.save(torch.jit.script(torch.nn.Linear(2, 2)), str(plain))
    m = small_model()
    for p in (npz, plain):
        before = sha(p)
        with pytest.raises(OutputPathError, match=rf"{p.name}: exists and is not a TorchScript archive written by "
                                                  r"torchace.*overwrite=True"):
            torchace.export(m, str(p))
        assert sha(p) == before
    mine = tmp_path / "m.pt"
    torchace.export(m, str(mine))
    torchace.export(m, str(mine))  # a torchace archive: replaced
    torchace.export(m, str(plain), overwrite=True)
    assert sha(plain) != before and no_temporaries(tmp_path)


def test_cli_export_force(tmp_path, model_file):
    notes = tmp_path / "notes.pt"
    notes.write_text("my notes\n")
    with pytest.raises(SystemExit, match=r"torchace export: OutputPathError: .*notes\.pt: exists and is not a "
                                         r"TorchScript archive.*--force"):
        cli("export", model_file, notes, "--format", "torchscript")
    assert notes.read_text() == "my notes\n"
    assert cli("export", model_file, notes, "--format", "torchscript", "--force") == 0
    assert notes.read_bytes().startswith(b"PK")


@pytest.mark.slow  # two .yace exports: 11 s
def test_yace_export_never_replaces_hand_written_lammps_files(tmp_path):
    """The old marker was the word "torchace" anywhere in the first 4 KiB: a hand-written LAMMPS input that
    mentions torchace was replaced.  Now the first line must be torchace's header of that kind."""
    m = small_model(pair=True)
    inc = tmp_path / "si.lammps"
    inc.write_text("# my LAMMPS input for the torchace potential\nunits metal\n")
    table = tmp_path / "si_pairpot.table"
    table.write_text("# my torchace pair table, tuned by hand\nSI_SI\nN 2\n")
    sums = {p: sha(p) for p in (inc, table)}
    for p in (table, inc):  # checked in the order .yace, table, include
        with pytest.raises(OutputPathError, match=rf"{p.name}: exists and is not a LAMMPS"):
            torchace.export(m, str(tmp_path / "si.yace"), format="yace")
        assert all(sha(q) == h for q, h in sums.items()) and not (tmp_path / "si.yace").exists()
        p.unlink()
        sums.pop(p)
    info = torchace.export(m, str(tmp_path / "si.yace"), format="yace")
    assert info.pair_table and info.lammps_include
    torchace.export(m, str(tmp_path / "si.yace"), format="yace")  # its own set: replaced
    (tmp_path / "si.lammps").write_text("# hand-written\n")
    torchace.export(m, str(tmp_path / "si.yace"), format="yace", overwrite=True)
    assert (tmp_path / "si.lammps").read_text().startswith("# LAMMPS input")


def _yace_set(tmp_path):
    m = small_model(pair=True)
    info = torchace.export(m, str(tmp_path / "si.yace"), format="yace")
    files = [tmp_path / "si.yace", tmp_path / "si_pairpot.table", tmp_path / "si.lammps"]
    assert info.pair_table == str(files[1]) and info.lammps_include == str(files[2])
    return files, {p: sha(p) for p in files}


@pytest.mark.slow  # two .yace exports: 12 s
def test_yace_export_failing_part_way_leaves_the_old_set(tmp_path, monkeypatch):
    """The disk fills while the pair table is written: the old .yace, table and include are all unchanged (the
    new .yace used to be renamed into place before the table was written)."""
    import torchace.atomic as atomic

    files, before = _yace_set(tmp_path)
    m2 = small_model(pair=True)
    m2.coefficients = 2 * m2.coefficients
    real = atomic.write_text

    def full_disk(path, text):
        if path.endswith(".table"):
            with open(path, "w") as fh:
                fh.write(text[:100])
            raise OSError(errno.ENOSPC, "No space left on device")
        real(path, text)

    monkeypatch.setattr(atomic, "write_text", full_disk)
    with pytest.raises(OSError, match=r"si_pairpot\.table: cannot be written \(No space left on device\); no file of "
                                      r"the set .* was changed"):
        torchace.export(m2, str(tmp_path / "si.yace"), format="yace")
    assert {p: sha(p) for p in files} == before and no_temporaries(tmp_path)
    monkeypatch.setattr(atomic, "write_text", real)
    torchace.export(m2, str(tmp_path / "si.yace"), format="yace")
    assert all(sha(p) != before[p] for p in files[:2])  # positive control: the same call replaces the set


def test_yace_export_rename_failure_rolls_back(tmp_path, monkeypatch):
    """A rename that fails after the .yace was renamed (best-effort rollback): the old set is put back."""
    import torchace.atomic as atomic

    files, before = _yace_set(tmp_path)
    m2 = small_model(pair=True)
    m2.coefficients = 2 * m2.coefficients
    real = os.replace

    def failing_replace(src, dst, *a, **kw):
        if str(dst).endswith(".lammps") and not str(src).endswith(".old"):
            raise OSError(errno.EIO, "I/O error")
        return real(src, dst, *a, **kw)

    monkeypatch.setattr(atomic.os, "replace", failing_replace)
    with pytest.raises(OSError, match="I/O error"):
        torchace.export(m2, str(tmp_path / "si.yace"), format="yace")
    monkeypatch.setattr(atomic.os, "replace", real)
    assert {p: sha(p) for p in files} == before and no_temporaries(tmp_path)


def test_write_outputs_new_set_removed_on_rename_failure(tmp_path, monkeypatch):
    """A set with no predecessor: files already renamed are removed again when a later rename fails."""
    import torchace.atomic as atomic
    from torchace.atomic import ERRORS_REPORT, write_outputs

    real = os.replace

    def failing_replace(src, dst, *a, **kw):
        if str(dst).endswith("b.json"):
            raise OSError(errno.EIO, "I/O error")
        return real(src, dst, *a, **kw)

    monkeypatch.setattr(atomic.os, "replace", failing_replace)
    with pytest.raises(OSError):
        write_outputs([(str(tmp_path / "a.json"), ERRORS_REPORT, '{"format": "torchace-errors"}', ".json"),
                       (str(tmp_path / "b.json"), ERRORS_REPORT, '{"format": "torchace-errors"}', ".json")])
    assert os.listdir(tmp_path) == []


def test_write_pair_table_api(tmp_path):
    from torchace.io.yace.pair_table import write_pair_table

    m = small_model(pair=True)
    p = tmp_path / "pair.table"
    p.write_text("1 2 3\n")
    with pytest.raises(OutputPathError, match=r"pair\.table: exists and is not a LAMMPS pair table written by "
                                              r"torchace"):
        write_pair_table(m, str(p))
    assert p.read_text() == "1 2 3\n"
    write_pair_table(m, str(p), overwrite=True)
    write_pair_table(m, str(p))  # now torchace's: replaced
    assert p.read_text().startswith("# torchace pair part")


# ---- plots ----

def test_plots_replace_only_torchace_plots(tmp_path, frames):
    pytest.importorskip("matplotlib")
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    from torchace.analysis.plots import curve_panels
    from torchace.fit.metrics import parity_plot

    fig, ax = plt.subplots()
    ax.plot([0, 1])
    theirs = tmp_path / "figure.png"
    fig.savefig(str(theirs))  # someone's own matplotlib figure
    plt.close(fig)
    before = sha(theirs)
    m = small_model()
    with pytest.raises(OutputPathError, match=r"figure\.png: exists and is not a PNG plot written by torchace"):
        parity_plot(m, frames, str(theirs))
    with pytest.raises(OutputPathError, match=r"figure\.png: exists and is not a PNG plot written by torchace"):
        curve_panels(str(theirs), {"a": {"x": (np.arange(3.0), np.arange(3.0))}}, xlabel="x", ylabel="y")
    assert sha(theirs) == before
    ours = tmp_path / "parity.png"
    parity_plot(m, frames, str(ours))
    curve_panels(str(ours), {"a": {"x": (np.arange(3.0), np.arange(3.0))}}, xlabel="x", ylabel="y")  # replaced
    parity_plot(m, frames, str(theirs), overwrite=True)
    assert sha(theirs) != before and no_temporaries(tmp_path)
