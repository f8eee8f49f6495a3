"""Fit configs and ACEConfig dictionaries: unknown keys, wrong types, out-of-range values → an error naming the
file and the key (issue "Reliability at scale" §4), never a silently different model or fit."""
import json
import os
import re

import pytest
import yaml

import torchace
from torchace.config import ACEConfig
from torchace.fit.config import FitConfig
from torchace.io.model_file import ModelFileError

GOOD = {
    "model": {"elements": ["Si"], "order": 2, "totaldegree": 6, "rcut": 5.5},
    "data": {"train": "train.xyz", "test": "test.xyz", "keys": {"energy": "dft_energy"}, "skip_bad": False},
    "weights": {"default": {"E": 30, "F": 1, "V": 1}, "liq": {"E": 10}},
    "E0": {"Si": -158.5},
    "prior": {"name": "algebraic_smoothness", "p": 4},
    "solver": {"name": "QR", "lam": 0.001},
    "assembly": {"streaming": "qr", "batch_atoms": 512, "device": "cpu"},
    "output": {"model": "m.json", "errors": None, "parity": None},
}


def _with(path, value):
    """GOOD with the dotted ``path`` set to ``value`` (or removed for ``...``)."""
    d = json.loads(json.dumps(GOOD))
    *head, last = path.split(".")
    node = d
    for k in head:
        node = node[k]
    if value is ...:
        del node[last]
    else:
        node[last] = value
    return d


def _write(tmp_path, d, name="fit.yaml"):
    p = tmp_path / name
    p.write_text(yaml.safe_dump(d) if name.endswith(".yaml") else json.dumps(d))
    return p


def test_good_config_loads(tmp_path):
    """The reference config loads (so the failures below come from the one changed field)."""
    cfg = FitConfig.load(str(_write(tmp_path, GOOD)))
    assert cfg.model["totaldegree"] == 6 and cfg.assembly.batch_atoms == 512
    assert cfg.data.train == str(tmp_path / "train.xyz")
    assert cfg.build_solver().lam == 0.001
    assert FitConfig.load(str(_write(tmp_path, GOOD, "fit.json"))).output.model == str(tmp_path / "m.json")


BAD = [
    # (dotted key, bad value, text the message must contain)
    ("model.pair", "no", "'pair' must be true or false"),           # bool("no") is True: was silently accepted
    ("model.zbl", "yes", "'zbl' must be true or false"),
    ("model.order", 2.5, "'order' must be an integer"),             # int(2.5) = 2: was silently accepted
    ("model.order", 0, "'order' must be an integer >= 1"),
    ("model.order", "three", "'order' must be an integer"),
    ("model.totaldegree", -3, "'totaldegree' must be a positive number"),
    ("model.totaldegree", [6, "x"], "'totaldegree' must be a finite number"),
    ("model.totaldegree", [6, 5, 4], "totaldegree has 3 entries but order is 2"),
    ("model.wL", -1.5, "'wL' must be a positive number"),           # was silently accepted
    ("model.rcut", ".inf", "'rcut' must be a finite number"),        # YAML .inf: was silently accepted
    ("model.rcut", -1, "'rcut' must be a positive number"),
    ("model.elements", "Si", "'elements' must be a non-empty list"),  # iterated as 'S', 'i' before
    ("model.elements", ["Xx"], "unknown element symbol 'Xx'"),
    ("model.E0", "x", "'E0' must be a list of numbers or a mapping"),
    ("model.zbl_outer", 3.0, "zbl_inner/zbl_outer are given but zbl is False"),
    ("model.rcutt", 5.0, "unknown key(s) ['rcutt'] in 'model'"),
    ("model.order", ..., "'model' is missing ['order']"),
    ("model", [1, 2], "'model' must be a mapping"),
    ("data.train", 3, "'data.train' must be a file name"),
    ("data.test", [], "'data.test' must be a file name"),
    ("data.keys", "energy", "'data.keys' must be a mapping"),
    ("data.keys.enrgy", "E", "unknown key(s) ['enrgy'] in 'data.keys'"),
    ("data.keys.energy", 5, "'data.keys.energy' must be a string"),
    ("data.skip_bad", "false", "'data.skip_bad' must be true or false"),
    ("data.trian", "x.xyz", "unknown key(s) ['trian'] in 'data'"),
    ("data.train", ..., "data.train is required"),
    ("weights", [30, 1, 1], "'weights' must be a mapping"),
    ("weights.liq", 10, "'weights.liq' must be a mapping"),
    ("weights.liq.Energy", 10, "unknown key(s) ['Energy'] in 'weights.liq'"),
    ("weights.liq.E", -1, "'weights.liq.E' must be a non-negative number"),
    ("weights.liq.F", "high", "'weights.liq.F' must be a finite number"),
    ("E0", "isolatd", "'E0' must be 'isolated', 'fit' or a mapping"),
    ("E0.Si", "x", "'E0.Si' must be a finite number"),
    ("prior", "smooth", "'prior' must be a mapping with a 'name'"),
    ("solver.name", 3, "'solver.name' must be a string"),
    ("assembly.streaming", "QR", "'assembly.streaming' must be one of 'qr', 'normal'"),
    ("assembly.batch_atoms", 0, "'assembly.batch_atoms' must be an integer >= 1"),
    ("assembly.batch_atoms", "2048", "'assembly.batch_atoms' must be an integer"),
    ("assembly.fused", "yes", "'assembly.fused' must be true or false"),
    ("assembly.device", 0, "'assembly.device' must be a string"),
    ("assembly.gpus", 2, "unknown key(s) ['gpus'] in 'assembly'"),
    ("output.model", None, "'output.model' must be a string"),
    ("output.parity", 1, "'output.parity' must be a string"),
    ("outptu", {}, "unknown key(s) ['outptu'] in 'config'"),
]


@pytest.mark.parametrize("key,value,message", BAD, ids=[f"{k}={v!r}" for k, v, _ in BAD])
def test_bad_fit_config_names_file_and_key(tmp_path, key, value, message):
    d = _with(key, value)
    if value == ".inf":
        d["model"]["rcut"] = float("inf")
    p = _write(tmp_path, d)
    with pytest.raises(ValueError) as exc:
        FitConfig.load(str(p))
    msg = str(exc.value)
    assert msg.startswith(str(p) + ": "), msg
    assert message in msg, msg


def test_unparsable_and_non_mapping_files(tmp_path):
    p = tmp_path / "broken.yaml"
    p.write_text("model: {elements: [Si]\n  order: [")
    with pytest.raises(ValueError, match=re.escape(str(p)) + ": cannot parse"):
        FitConfig.load(str(p))
    p.write_text("- just\n- a list\n")
    with pytest.raises(ValueError, match=re.escape(str(p)) + ": the fit config must be a mapping"):
        FitConfig.load(str(p))


def test_solver_and_prior_arguments_checked_at_load(tmp_path):
    """Solver and prior arguments are checked when the config is loaded (before any data is read), naming the
    file and the argument."""
    with pytest.raises(ValueError, match=r"fit.yaml: .*bad arguments for solver 'QR': unknown argument\(s\) "
                                         r"\['lamda'\]; its arguments are \['lam'"):
        FitConfig.load(str(_write(tmp_path, _with("solver", {"name": "QR", "lamda": 1.0}))))
    with pytest.raises(ValueError, match="fit.yaml: .*unknown prior 'os'"):
        FitConfig.load(str(_write(tmp_path, _with("prior", {"name": "os", "p": 4}))))
    with pytest.raises(ValueError, match="fit.yaml: .*solver 'QR': QR: 'lam' must be a finite number"):
        FitConfig.load(str(_write(tmp_path, _with("solver", {"name": "QR", "lam": "0.1"}))))


ACE_BAD = [
    ("pair", "no", "'pair' must be true or false"),
    ("order", 2.5, "'order' must be an integer"),
    ("order", True, "'order' must be an integer"),
    ("wL", 0.0, "'wL' must be a positive number"),
    ("rcut", float("nan"), "'rcut' must be a finite number"),
    ("r0", [[float("inf")]], "'r0' must be a finite number"),
    ("r0", [[2.4, 2.4]], "r0 must be a number, a dict of pairs or an 1x1 matrix"),
    ("E0", [1.0, 2.0], "E0 has 2 values for 1 elements"),
    ("elements", [1.5], "'elements' must be a non-empty list"),
    ("zbl_inner", "a", "'zbl_inner' must be a finite number"),
    ("colour", "red", "unknown ACEConfig keys ['colour']"),
]


@pytest.mark.parametrize("key,value,message", ACE_BAD, ids=[f"{k}={v!r}" for k, v, _ in ACE_BAD])
def test_ace_config_from_dict_names_key(key, value, message):
    d = {"elements": ["Si"], "order": 2, "totaldegree": 6, key: value}
    with pytest.raises(ValueError) as exc:
        ACEConfig.from_dict(d)
    assert message in str(exc.value)


def test_model_file_with_bad_config_field(tmp_path):
    """A model file whose config has a wrong type is a ModelFileError naming the file and the key."""
    m = torchace.ace_model(["Si"], 2, 6)
    p = tmp_path / "m.json"
    m.save(str(p))
    assert torchace.load(str(p)).basis_size == m.basis_size
    for key, value, message in [("pair", "false", "'pair' must be true or false"),
                                ("order", 2.5, "'order' must be an integer")]:
        d = json.loads(p.read_text())
        d["config"][key] = value
        q = tmp_path / f"bad_{key}.json"
        q.write_text(json.dumps(d))
        with pytest.raises(ModelFileError) as exc:
            torchace.load(str(q))
        assert str(exc.value).startswith(str(q)) and "'config'" in str(exc.value) and message in str(exc.value)


def test_purification_flags_in_fit_config(tmp_path):
    """pure2b / pure are model keys of the fit config (not 'unknown keys'), type-checked like the others."""
    import yaml

    from torchace.fit.config import FitConfig

    d = yaml.safe_load(open(os.path.join(os.path.dirname(torchace.__file__), "data", "default_fit.yaml")))
    d["model"]["pure2b"] = True
    p = tmp_path / "p.yaml"
    p.write_text(yaml.safe_dump(d))
    assert FitConfig.load(str(p)).model["pure2b"] is True
    d["model"]["pure2b"] = "yes"
    p.write_text(yaml.safe_dump(d))
    with pytest.raises(ValueError, match="pure2b"):
        FitConfig.load(str(p))
