"""Logs and CLI for batch work (issue "Ecosystem", item 4): `torchace evaluate` needs a model file and reports
errors against the files' labels (design rows only with --rows); progress prints plain lines when stderr is not
a terminal; error tables have no columns for a quantity without labels; the parity plot names the set."""
import io
import json
import sys

import numpy as np
import pytest

import torchace
from torchace.cli import main
from torchace.fit.metrics import format_table
from torchace.testing import labelled_dataset, randomize_coefficients


def test_evaluate_needs_a_model(capsys):
    with pytest.raises(SystemExit, match="--model is required"):
        main(["evaluate"])


def test_evaluate_reports_errors_against_labels_and_rows_only_when_asked(tmp_path, capsys):
    from ase.io import write

    m = torchace.ace_model(["Si", "Ge"], 2, 6)
    randomize_coefficients(m, 0.05, seed=2)
    model = tmp_path / "m.json"
    m.save(str(model))
    data = tmp_path / "d.xyz"
    write(str(data), [s.atoms for s in labelled_dataset(3)], format="extxyz")
    assert main(["evaluate", str(data), "--model", str(model), "-o", str(tmp_path / "out.json")]) == 0
    text = capsys.readouterr().out
    assert "errors" in text and "E rmse" in text and "design-matrix rows" not in text
    report = json.loads((tmp_path / "out.json").read_text())
    assert "errors" in report and "consistency" not in report
    assert main(["evaluate", str(data), "--model", str(model), "--rows"]) == 0
    assert "consistency rows·c vs model" in capsys.readouterr().out


def test_progress_is_plain_lines_in_a_log(monkeypatch):
    from torchace.fit.assembly import _Progress

    buf = io.StringIO()
    monkeypatch.setattr(sys, "stderr", buf)
    p = _Progress(1000, True)
    for _ in range(100):
        p.update(10)
    lines = buf.getvalue().splitlines()
    assert "\r" not in buf.getvalue() and 5 <= len(lines) <= 12 and lines[-1].startswith("assembling: 1000/1000")


def test_error_table_without_virials_has_no_virial_columns():
    err = {"all": {"E": {"rmse": 1.0, "mae": 0.5}, "F": {"rmse": 0.1, "mae": 0.05}, "V": None}}
    assert "V rmse" not in format_table(err)
    err["all"]["V"] = {"rmse": 2.0, "mae": 1.0}
    assert "V rmse" in format_table(err)


def test_parity_plot_names_the_set_and_its_errors(tmp_path):
    pytest.importorskip("matplotlib")
    from torchace.fit.metrics import parity_plot

    import matplotlib.pyplot as plt

    titles = []
    orig = plt.Axes.set_title
    m = torchace.ace_model(["Si", "Ge"], 2, 6)
    ds = labelled_dataset(3)
    try:
        plt.Axes.set_title = lambda self, t, **kw: titles.append(t) or orig(self, t, **kw)
        parity_plot(m, ds, str(tmp_path / "p.png"), title="test set (x.xyz)")
    finally:
        plt.Axes.set_title = orig
    assert (tmp_path / "p.png").stat().st_size > 0
    assert any("test set (x.xyz)" in t and "MAE" in t and "RMSE" in t and "meV/atom" in t for t in titles)
    assert np.isfinite(len(titles))
