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
    from torchace.fit.config import FitConfig

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


# ---- class 2: hopeless parameters and inputs are refused before work, with the numbers ----

@pytest.mark.parametrize("args, kw, match", [
    ((["Si"], 3, 60), {}, r"spherical harmonics up to l = 19 .*; they are implemented up to l = 12"),
    ((["Si"], 3, 12), dict(wL=1e-6), r"up to l = 5000000 "),
])
def test_pathological_basis_refused_at_once(args, kw, match):
    import time

    t0 = time.perf_counter()
    with pytest.raises(ValueError, match=match):
        torchace.ace_model(*args, **kw)
    assert time.perf_counter() - t0 < 1.0  # before any enumeration (used to take 95 s and 5 GB, or forever)


def test_product_count_cap(monkeypatch):
    monkeypatch.setenv("TORCHACE_MAX_PRODUCTS", "100")
    with pytest.raises(ValueError, match=r"more than 100 product functions.*TORCHACE_MAX_PRODUCTS"):
        torchace.ace_model(["Si"], 3, 12)
    monkeypatch.delenv("TORCHACE_MAX_PRODUCTS")
    assert torchace.ace_model(["Si"], 3, 12).basis_size == 223  # negative control


def test_nearly_flat_cell_refused_before_the_neighbour_search():
    from ase.build import bulk

    m = torchace.ace_model(["Si"], 2, 6)
    a = bulk("Si", "diamond", 5.43, cubic=True)
    a.set_cell([[5.43, 0, 0], [0, 5.43, 0], [0, 0, 1e-6]], scale_atoms=False)
    with pytest.raises(ValueError, match=r"structure 0 \(Si8\).*neighbour pairs within rcut.*nearly flat"):
        torchace.evaluate(m, a)
    from torchace.calculators import TorchACECalculator

    a.calc = TorchACECalculator(m)
    with pytest.raises(ValueError, match="nearly flat"):
        a.get_potential_energy()


def test_deeply_nested_model_file_and_yace_alias(tmp_path):
    p = tmp_path / "deep.json"
    p.write_text('{"format": "torchace-model", "x": ' + "[" * 100000 + "]" * 100000 + "}")
    with pytest.raises(ModelFileError, match="deep.json: nested too deeply"):
        torchace.load(str(p))
    from torchace.io import read_yace, write_yace

    m = torchace.ace_model(["Si"], 2, 5, pair=False)
    y = tmp_path / "m.yace"
    write_yace(m, str(y))
    text = y.read_text()
    bomb = "a: &a [1, 1, 1, 1, 1, 1, 1, 1, 1]\nb: &b [*a, *a, *a, *a, *a, *a, *a, *a, *a]\n" + text
    (tmp_path / "bomb.yace").write_text(bomb)
    with pytest.raises(ValueError, match=r"bomb.yace: line 1: YAML anchors/aliases"):
        read_yace(str(tmp_path / "bomb.yace"))


def test_error_messages_do_not_embed_unbounded_values():
    with pytest.raises(ValueError) as exc:
        torchace.ace_model(["Si"], 2, 6, wL=list(range(100000)))
    assert len(str(exc.value)) < 300 and "characters" in str(exc.value)


def test_internal_errors_become_user_errors():
    """Inputs that used to end in internal messages (min() of an empty sequence, "'Field' object has no
    attribute 'solve'") are refused with what the user did."""
    from torchace.fit.config import FitConfig

    with pytest.raises(ValueError, match=r"totaldegree \[0.5, 0.5\] leaves no basis functions"):
        torchace.ace_model(["Si"], 2, 0.5)
    base = {"model": {"elements": ["Si"], "order": 2, "totaldegree": 6}, "data": {"train": "a.xyz"}}
    for sec, name in (("solver", "field"), ("solver", "Solver"), ("prior", "dataclass"), ("prior", "from_dict")):
        with pytest.raises(ValueError, match=f"unknown {sec} '{name}'; choose one of"):  # when loaded, not later
            FitConfig.from_dict(dict(base, **{sec: {"name": name}}))
    assert FitConfig.from_dict(dict(base, solver={"name": "BLR"})).build_solver() is not None  # negative control
