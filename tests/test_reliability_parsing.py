"""Issue "Reliability", classes 3 and 4: files are parsed strictly (required fields required, bool is not a
number, duplicate keys are errors, units checked) and the Python API validates like the config files."""
import json
import math

import pytest

import torchace
from torchace import solvers
from torchace.io.model_file import ModelFileError
from torchace.testing import labelled_dataset


@pytest.fixture
def model_doc(tmp_path):
    m = torchace.ace_model(["Si"], 2, 5)
    p = tmp_path / "m.json"
    m.save(str(p))
    return json.loads(p.read_text())


@pytest.mark.parametrize("change, field", [
    (lambda d: d["config"].pop("pair"), "pair"),
    (lambda d: d["config"].pop("rcut"), "rcut"),
    (lambda d: d["coefficients"].__setitem__(0, True), "coefficients"),
    (lambda d: d["nl_scale"][0].__setitem__(0, False), "nl_scale"),
    (lambda d: d.__setitem__("units", {"energy": "kcal/mol", "length": "Angstrom"}), "units"),
    (lambda d: d.__setitem__("basis_size", True), "basis_size"),
])
def test_model_file_is_parsed_strictly(model_doc, tmp_path, change, field):
    p = tmp_path / "bad.json"
    change(model_doc)
    p.write_text(json.dumps(model_doc))
    with pytest.raises(ModelFileError, match=f"bad.json.*{field}"):
        torchace.load(str(p))


def test_model_file_duplicate_key_and_negative_control(model_doc, tmp_path):
    good = tmp_path / "good.json"
    good.write_text(json.dumps(model_doc))
    assert torchace.load(str(good)).basis_size == model_doc["basis_size"]  # the unmodified file loads
    text = good.read_text().replace('"pair": true', '"pair": true, "pair": false', 1)
    assert text != good.read_text()
    (tmp_path / "dup.json").write_text(text)
    with pytest.raises(ModelFileError, match="dup.json.*duplicate key 'pair'"):
        torchace.load(str(tmp_path / "dup.json"))


def test_fit_config_duplicate_keys(tmp_path):
    from torchace.fitting.config import FitConfig

    y = tmp_path / "fit.yaml"
    y.write_text("model: {elements: [Si], order: 2, totaldegree: 6}\ndata: {train: a.xyz}\n"
                 "solver: {name: QR, lam: 0.1, lam: 0.2}\n")
    with pytest.raises(ValueError, match=r"fit.yaml: cannot parse: duplicate key 'lam' \(line 3\)"):
        FitConfig.load(str(y))
    j = tmp_path / "fit.json"
    j.write_text('{"model": {"elements": ["Si"], "order": 2, "totaldegree": 6}, "data": {"train": "a.xyz"}, '
                 '"data": {"train": "b.xyz"}}')
    with pytest.raises(ValueError, match="fit.json: cannot parse: duplicate key 'data'"):
        FitConfig.load(str(j))


def test_yace_duplicate_key(tmp_path):
    from torchace.io import read_yace, write_yace

    m = torchace.ace_model(["Si"], 2, 5, pair=False)
    p = tmp_path / "m.yace"
    write_yace(m, str(p))
    read_yace(str(p))  # negative control
    text = p.read_text()
    first = next(line for line in text.splitlines() if line.startswith("elements:"))
    (tmp_path / "dup.yace").write_text(text.replace(first, first + "\n" + first, 1))
    with pytest.raises(ValueError, match="dup.yace.*duplicate key 'elements'"):
        read_yace(str(tmp_path / "dup.yace"))


@pytest.mark.parametrize("make, match", [
    (lambda: solvers.QR(lam=math.nan), "QR: 'lam' must be a finite number"),
    (lambda: solvers.QR(lam=-1.0), "QR: 'lam' must be a non-negative number"),
    (lambda: solvers.LSQR(damp=True), "LSQR: 'damp' must be a finite number"),
    (lambda: solvers.BLR(committee_size=2.5), "BLR: 'committee_size' must be an integer"),
    (lambda: solvers.ARD(max_iter=-3), "ARD: 'max_iter' must be an integer >= 0"),
    (lambda: torchace.ace_model(["Si"], 2.7, 8), "ace_model: 'order' must be an integer"),
    (lambda: torchace.ace_model(["Si"], 2, 8, pair="no"), "ace_model: 'pair' must be true or false"),
    (lambda: torchace.ace_model(["Si"], 2, 8, E0=[math.nan]), "ace_model: 'E0' must be a finite number"),
    (lambda: torchace.ace_model(["Si"], 2, 8, wL=0), "ace_model: 'wL' must be a positive number"),
])
def test_python_api_validates_like_the_config_files(make, match):
    with pytest.raises(ValueError, match=match):
        make()


@pytest.mark.parametrize("kw, match", [
    (dict(weights={"default": {"E": math.nan}}), "weights: 'default.E' must be a finite number"),
    (dict(weights={"default": {"F": -1}}), "weights: 'default.F' must be a non-negative number"),
    (dict(E0={"Si": math.nan, "Ge": -1.0}), "E0: 'Si' must be a finite number"),
    (dict(E0={"Si": True, "Ge": -1.0}), "E0: 'Si' must be a finite number"),
])
def test_fit_arguments_validated(kw, match):
    data = labelled_dataset(3, seed=1)
    m = torchace.ace_model(["Si", "Ge"], 2, 5)
    kw = dict(dict(E0={"Si": -1.0, "Ge": -2.0}), **kw)
    with pytest.raises(ValueError, match=match):
        torchace.fit(m, data, compute_errors=False, **kw)
