"""Issue "Reliability", classes 1, 6 (CLI) and 7: outputs never overwrite inputs or each other and are checked
before any work; CLI errors are one line (traceback with --debug); one calculator shared between threads
returns each thread's own structure; a TorchScript archive is loaded only on request."""
import hashlib
import json
import os
import threading

import numpy as np
import pytest

import torchace
from torchace.atomic import OutputPathError, check_outputs
from torchace.calculators import TorchACECalculator
from torchace.cli import main
from torchace.testing import randomize_coefficients, rattled_bulk


def _sha(path):
    return hashlib.sha256(open(path, "rb").read()).hexdigest()


@pytest.fixture
def model_file(tmp_path):
    m = torchace.ace_model(["Si"], 2, 6)
    randomize_coefficients(m, seed=2)
    p = tmp_path / "m.json"
    m.save(str(p))
    return str(p)


def test_check_outputs_refuses_aliases_and_unwritable_paths(tmp_path):
    inp = tmp_path / "train.xyz"
    inp.write_text("data")
    link = tmp_path / "link.xyz"
    os.symlink(inp, link)
    hard = tmp_path / "hard.xyz"
    os.link(inp, hard)
    for out in (inp, link, hard, tmp_path / "." / "train.xyz"):
        with pytest.raises(OutputPathError, match="is the input"):
            check_outputs([str(inp)], {"model": str(out)}, "test")
    with pytest.raises(OutputPathError, match="outputs model and errors are the same file"):
        check_outputs([], {"model": str(tmp_path / "a.json"), "errors": str(tmp_path / "a.json")}, "test")
    with pytest.raises(OutputPathError, match="does not exist"):
        check_outputs([], {"model": str(tmp_path / "no" / "a.json")}, "test")
    with pytest.raises(OutputPathError, match="is a directory"):
        check_outputs([], {"model": str(tmp_path)}, "test")
    ro = tmp_path / "ro"
    ro.mkdir()
    os.chmod(ro, 0o500)
    try:
        if not os.access(ro, os.W_OK) or os.geteuid() != 0:
            with pytest.raises(OutputPathError, match="cannot be written"):
                check_outputs([], {"model": str(ro / "a.json")}, "test")
    finally:
        os.chmod(ro, 0o700)
    check_outputs([str(inp)], {"model": str(tmp_path / "b.json"), "errors": None}, "test")  # fine
    assert inp.read_text() == "data" and not list(tmp_path.glob(".tmp_*"))


def test_export_refuses_its_own_input(model_file, tmp_path):
    before = _sha(model_file)
    with pytest.raises(SystemExit, match="is the input"):
        main(["export", model_file, model_file, "--format", "torchscript"])
    assert _sha(model_file) == before  # the input is untouched
    # negative control: a different output path works and leaves the input as it was
    assert main(["export", model_file, str(tmp_path / "m.pt"), "--format", "torchscript"]) == 0
    assert _sha(model_file) == before


def test_fit_refuses_outputs_on_inputs_before_fitting(tmp_path):
    data = tmp_path / "train.xyz"
    from torchace.testing import labelled_dataset
    from ase.io import write

    write(str(data), [s.atoms for s in labelled_dataset(3, seed=1)])
    before = _sha(data)
    cfg = {"model": {"elements": ["Si", "Ge"], "order": 2, "totaldegree": 5}, "data": {"train": "train.xyz"},
           "E0": {"Si": -158.5, "Ge": -100.0}, "solver": {"name": "QR", "lam": 1e-3}}
    for out in ({"model": "train.xyz"}, {"model": "fit.yaml"}, {"model": "m.json", "errors": "m.json"}):
        (tmp_path / "fit.yaml").write_text(json.dumps(dict(cfg, output=out)))
        cfg_sha = _sha(tmp_path / "fit.yaml")
        with pytest.raises(SystemExit, match="torchace fit: OutputPathError"):
            main(["fit", str(tmp_path / "fit.yaml"), "-q"])
        assert _sha(data) == before and _sha(tmp_path / "fit.yaml") == cfg_sha
    (tmp_path / "fit.yaml").write_text(json.dumps(dict(cfg, output={"model": "sub/m.json"})))
    with pytest.raises(SystemExit, match="does not exist"):  # found before the fit, not after it
        main(["fit", str(tmp_path / "fit.yaml"), "-q"])
    (tmp_path / "fit.yaml").write_text(json.dumps(dict(cfg, output={"model": "m.json", "errors": "e.json"})))
    assert main(["fit", str(tmp_path / "fit.yaml"), "-q"]) == 0  # negative control
    assert _sha(data) == before and (tmp_path / "m.json").exists()


def test_cli_errors_are_one_line_unless_debug(tmp_path, capsys):
    bad = tmp_path / "fit.yaml"
    bad.write_text("model: {elements: [Si], order: 2.5, totaldegree: 6}\ndata: {train: x.xyz}\n")
    with pytest.raises(SystemExit) as exc:
        main(["fit", str(bad)])
    msg = str(exc.value)
    assert msg.startswith("torchace fit: ValueError: ") and "order" in msg and "\n" not in msg
    with pytest.raises(ValueError, match="order"):
        main(["--debug", "fit", str(bad)])


def test_calculator_shared_between_threads_returns_each_threads_structure():
    m = torchace.ace_model(["Si"], 2, 6)
    randomize_coefficients(m, seed=4)
    calc = TorchACECalculator(m, skin=0.0)
    structs = [rattled_bulk(["Si"], seed=s) for s in (1, 2)]
    ref = [TorchACECalculator(m).get_potential_energy(a) for a in structs]
    assert abs(ref[0] - ref[1]) > 1e-6
    wrong = []

    def run(k):
        at = structs[k].copy()
        for step in range(100):
            at.positions[0, 0] += 1e-7 * (1 if step % 2 else -1)  # a new calculation each call
            try:
                e = calc.get_potential_energy(at)
            except Exception as exc:  # noqa: BLE001 — without the lock: "energy not present", wrong shapes
                wrong.append((k, step, repr(exc)))
                continue
            if abs(e - ref[k]) > 1e-3:
                wrong.append((k, step, e))

    threads = [threading.Thread(target=run, args=(k,)) for k in (0, 1)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert not wrong, wrong[:3]


def test_torchscript_archive_only_on_request(model_file, tmp_path):
    pt = tmp_path / "m.pt"
    torchace.export(torchace.load(model_file), str(pt))
    with pytest.raises(ValueError, match="TorchScript archive.*backend='torchscript'"):
        TorchACECalculator(str(pt))
    calc = TorchACECalculator(str(pt), backend="torchscript")
    at = rattled_bulk(["Si"], seed=3)
    e = calc.get_potential_energy(at)
    assert np.isclose(e, TorchACECalculator(model_file).get_potential_energy(at), rtol=1e-12)
    with pytest.raises(ValueError, match="not a TorchScript archive"):
        TorchACECalculator(model_file, backend="torchscript")


# ---- class 5 (ill-posed fits are reported) and 6 (errors name the file and frame) ----

def _xyz(tmp_path, structs, name="train.xyz"):
    from ase.io import write

    p = tmp_path / name
    write(str(p), structs)
    return str(p)


def test_weights_for_absent_config_type_are_refused():
    from torchace.testing import labelled_dataset

    data = labelled_dataset(4, seed=2)
    m = torchace.ace_model(["Si", "Ge"], 2, 5)
    present = sorted({s.config_type for s in data})
    with pytest.raises(ValueError, match=r"config_type\(s\) \['liquid'\].*a typo"):
        torchace.fit(m, data, weights={"liquid": {"E": 10}}, E0={"Si": -1.0, "Ge": -2.0}, compute_errors=False)
    # negative control: a config_type of the data is accepted
    torchace.fit(m, data, weights={present[0]: {"E": 10}}, E0={"Si": -1.0, "Ge": -2.0}, compute_errors=False,
                 solver=torchace.solvers.QR(lam=1e-3))


def test_all_zero_weights_and_rank_deficient_E0_are_refused():
    from torchace.testing import labelled_dataset

    data = labelled_dataset(4, seed=3)
    m = torchace.ace_model(["Si", "Ge"], 2, 5)
    with pytest.raises(ValueError, match="no rows"):
        torchace.fit(m, data, weights={"default": {"E": 0, "F": 0, "V": 0}}, E0={"Si": -1.0, "Ge": -2.0})
    # every structure with the same composition: Si and Ge energies cannot be told apart
    from ase.calculators.singlepoint import SinglePointCalculator

    same = []
    for s in (1, 2, 3):
        a = rattled_bulk(["Si"], seed=s)
        a.numbers[::2] = 32  # Si4Ge4 every time
        same.append(a)
    assert len({a.get_chemical_formula() for a in same}) == 1 and len(set(same[0].numbers)) == 2
    for k, a in enumerate(same):
        a.calc = SinglePointCalculator(a, energy=-10.0 - k, forces=np.zeros((len(a), 3)))
    with pytest.raises(ValueError, match="E0='fit' is ill-posed"):
        torchace.fit(m, same, E0="fit", compute_errors=False)
    # a single-element model with E0 fitted is well posed (negative control)
    si = torchace.ace_model(["Si"], 2, 5)
    ats = [rattled_bulk(["Si"], seed=s) for s in (1, 2, 3)]
    for k, a in enumerate(ats):
        a.calc = SinglePointCalculator(a, energy=-40.0 - k, forces=np.zeros((len(a), 3)))
    torchace.fit(si, ats, E0="fit", compute_errors=False, solver=torchace.solvers.QR(lam=1e-3))


def test_geometry_errors_during_a_fit_name_file_and_frame(tmp_path):
    from ase.calculators.singlepoint import SinglePointCalculator

    good = [rattled_bulk(["Si"], seed=s) for s in (1, 2, 3)]
    bad = rattled_bulk(["Si"], seed=4)
    bad.positions[1] = bad.positions[0] + [0.001, 0, 0]  # on top of atom 0
    structs = good + [bad]
    for k, a in enumerate(structs):
        a.calc = SinglePointCalculator(a, energy=-40.0 - k, forces=np.zeros((len(a), 3)))
    path = _xyz(tmp_path, structs)
    m = torchace.ace_model(["Si"], 2, 5)
    with pytest.raises(ValueError, match=r"train\.xyz:frame 3 \(Si8\): atoms 0 and 1 are .* apart"):
        torchace.fit(m, path, E0={"Si": -5.0}, compute_errors=False, batch_atoms=64)


def test_fit_min_distance_flags_implausible_training_geometry(tmp_path):
    from ase.calculators.singlepoint import SinglePointCalculator

    structs = [rattled_bulk(["Si"], seed=s) for s in (1, 2)]
    close = rattled_bulk(["Si"], seed=3)
    close.positions[2] = close.positions[1] + [0.5, 0.0, 0.0]  # 0.5 Å: no Si bond is that short
    structs.append(close)
    for k, a in enumerate(structs):
        a.calc = SinglePointCalculator(a, energy=-40.0 - k, forces=np.zeros((len(a), 3)))
    path = _xyz(tmp_path, structs)
    m = torchace.ace_model(["Si"], 2, 5)
    kw = dict(E0={"Si": -5.0}, compute_errors=False, solver=torchace.solvers.QR(lam=1e-3))
    torchace.fit(m, path, **kw)  # the default (0.01 Å, atoms on top of each other) lets it through
    with pytest.raises(ValueError, match=r"train\.xyz:frame 2 \(Si8\): atoms 1 and 2 are 0\.5 Å apart"):
        torchace.fit(m, path, min_distance=1.5, **kw)
