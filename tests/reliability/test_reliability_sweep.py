"""Issue "Reliability" (14), the second round: the inputs of the hostile-input sweep (scripts/tools/hostile_inputs.py,
docs/reliability.md §1c) that were not handled, by class.  Each test asserts the error type and that the message
names the file, frame or field; the data-loss cases check that the input's checksum is unchanged, with a negative
control.  ``test_quick_sweep`` runs ten of the sweep's cases in their forked, time- and memory-limited children."""
import errno
import hashlib
import json
import math
import os
import sys
import time
from pathlib import Path

import numpy as np
import pytest
from ase import Atoms
from ase.calculators.singlepoint import SinglePointCalculator
from ase.io import write

import torchace
from torchace import solvers
from torchace.atomic import OutputPathError, atomic_write
from torchace.calculators import TorchACECalculator
from torchace.fit.config import FitConfig
from torchace.io.model_file import ModelFileError
from torchace.testing import randomize_coefficients, rattled_bulk, run

ROOT = Path(__file__).resolve().parents[2]


def _sha(path):
    return hashlib.sha256(open(path, "rb").read()).hexdigest()


def _model(**kw):
    m = torchace.ace_model(["Si"], 2, 5, **kw)
    randomize_coefficients(m, 0.01, seed=1)
    return m


def _frames(n=3, elements=("Si",)):
    out = []
    for k in range(n):
        a = rattled_bulk(list(elements), seed=k)
        a.calc = SinglePointCalculator(a, energy=-40.0 - k, forces=np.zeros((len(a), 3)))
        out.append(a)
    return out


def _fit(data=None, model=None, **kw):
    kw = dict(dict(E0={"Si": -5.0}, solver=solvers.QR(lam=1e-3), compute_errors=False), **kw)
    return torchace.fit(model or torchace.ace_model(["Si"], 2, 5), _frames() if data is None else data, **kw)


@pytest.fixture
def train(tmp_path):
    p = tmp_path / "train.xyz"
    write(str(p), _frames())
    return str(p)


# ---- class 1: outputs never overwrite inputs (negative controls: the checksum is unchanged) ----

def test_save_refuses_to_overwrite_a_file_that_is_not_a_model(train, tmp_path):
    before = _sha(train)
    with pytest.raises(OutputPathError, match=r"train\.xyz: exists and is not a torchace model file.*overwrite=True"):
        _model().save(train)
    link = tmp_path / "link.json"
    os.symlink(train, link)
    with pytest.raises(OutputPathError, match=r"link\.json: exists \(a link to .*train\.xyz'\)"):
        torchace.io.save(_model(), str(link))
    with pytest.raises(OutputPathError, match="train.xyz: exists and is not a TorchScript archive"):
        torchace.export(_model(), train)
    assert _sha(train) == before and not list(tmp_path.glob(".tmp_*"))
    # negative controls: re-saving a model file, and overwrite=True, replace the file
    m = tmp_path / "m.json"
    _model().save(str(m))
    other = _model(E0={"Si": -2.0})
    other.save(str(m))
    assert torchace.load(str(m)).E0.tolist() == [-2.0]
    _model().save(train, overwrite=True)
    assert _sha(train) != before and torchace.load(train).basis_size > 0


def test_atomic_write_failures_name_the_path_and_keep_the_target(tmp_path):
    target = tmp_path / "m.json"
    _model().save(str(target))
    before = _sha(target)

    def full_disk(tmp):
        with open(tmp, "w") as fh:
            fh.write("{half")
        raise OSError(errno.ENOSPC, "No space left on device")

    with pytest.raises(OSError, match=r"m\.json: cannot be written \(No space left on device\); an existing file"):
        atomic_write(str(target), full_disk)
    with pytest.raises(OutputPathError, match=r"nodir/m\.json: cannot be written: directory .* does not exist"):
        _model().save(str(tmp_path / "nodir" / "m.json"))
    with pytest.raises(OutputPathError, match="is a directory"):
        _model().save(str(tmp_path))
    with pytest.raises(ValueError, match=r"cannot save .*m\.json: 'metadata' must hold JSON values"):
        _model().save(str(target), metadata={"when": {1, 2}})
    assert _sha(target) == before and not list(tmp_path.glob(".tmp_*"))


def test_cli_fit_refuses_an_existing_non_model_output_before_the_fit(train, tmp_path):
    from torchace.cli import main

    notes = tmp_path / "notes.txt"
    notes.write_text("my notes")
    cfg = {"model": {"elements": ["Si"], "order": 2, "totaldegree": 5}, "data": {"train": "train.xyz"},
           "E0": {"Si": -5.0}, "solver": {"name": "QR", "lam": 1e-3}, "output": {"model": "notes.txt", "errors": None}}
    (tmp_path / "fit.json").write_text(json.dumps(cfg))
    t0 = time.perf_counter()
    with pytest.raises(SystemExit, match=r"torchace fit: OutputPathError: .*fit\.json: fit config: output\.model: "
                                         r".*notes\.txt: exists and is not a torchace model file"):
        main(["fit", str(tmp_path / "fit.json"), "-q"])
    assert time.perf_counter() - t0 < 2.0 and notes.read_text() == "my notes"
    cfg["output"]["model"] = "m.json"  # negative control
    (tmp_path / "fit.json").write_text(json.dumps(cfg))
    assert main(["fit", str(tmp_path / "fit.json"), "-q"]) == 0 and notes.read_text() == "my notes"


def test_checkpoint_path_on_the_training_data_is_refused(train, tmp_path):
    from torchace.fit.checkpoint import CheckpointError, assemble_checkpointed

    before = _sha(train)
    with pytest.raises(OutputPathError, match=r"output checkpoint .*train\.xyz' is the input"):
        assemble_checkpointed(torchace.ace_model(["Si"], 2, 5), train, None, train)
    other = tmp_path / "notes.txt"
    other.write_text("not a checkpoint")
    with pytest.raises(CheckpointError, match=r"notes\.txt: is not an assembly checkpoint .*an input file"):
        assemble_checkpointed(torchace.ace_model(["Si"], 2, 5), train, None, str(other))
    assert _sha(train) == before and other.read_text() == "not a checkpoint"


# ---- class 2: pathological parameters refused at once, with the numbers ----

def _flat(pbc):
    rng = np.random.default_rng(0)
    cell = [[5.43, 0, 0], [0, 1e-6, 0], [0, 0, 5.43]]
    return Atoms("Si8", positions=rng.uniform(0, 5, (8, 3)) * [1, 1, 0] + [0, 0, 2], cell=cell, pbc=pbc)


@pytest.mark.parametrize("pbc, what", [((True, True, False), "lattice area"), ((False, True, False), "lattice length")])
def test_nearly_flat_partly_periodic_cell_refused_before_the_search(pbc, what):
    t0 = time.perf_counter()
    with pytest.raises(ValueError, match=rf"structure 0 \(Si8\): 8 atoms in a cell periodic along axes .* only "
                                         rf"\({what} .*neighbour pairs within rcut"):
        torchace.evaluate(_model(), _flat(pbc))
    a = _flat(pbc)
    a.calc = TorchACECalculator(_model())
    with pytest.raises(ValueError, match=r"neighbour pairs.*rcut 6 Å \+ skin 0.5 Å"):
        a.get_potential_energy()
    assert time.perf_counter() - t0 < 5  # used to run until killed
    slab = rattled_bulk(["Si"], reps=(2, 2, 1))  # negative control: an ordinary slab
    slab.pbc = pbc
    assert np.isfinite(float(torchace.evaluate(_model(), slab)["energy"][0]))


@pytest.mark.parametrize("pbc", [(True, True, True), (True, True, False)])
def test_strongly_skewed_cell_is_reduced_not_searched_for_a_minute(pbc):
    """[[a,0,0],[10^6·a,a,0],[0,0,a]] is the cubic lattice; the neighbour list is the cube's (the same vectors), found
    at once (it took 25 s, 10^7·a never finished)."""
    from torchace.structures.neighbours.pairs import neighbour_list

    cube = rattled_bulk(["Si"], seed=2)
    cube.pbc = pbc
    skew = cube.copy()
    skew.set_cell([[5.43, 0, 0], [1e6 * 5.43, 5.43, 0], [0, 0, 5.43]], scale_atoms=False)

    def vectors(a):
        i, j, S = neighbour_list(a.positions, a.cell.array, a.pbc, 5.0)
        r = a.positions[j] - a.positions[i] + S @ a.cell.array
        return sorted(zip(i.tolist(), j.tolist(), np.round(r, 5).tolist()))

    t0 = time.perf_counter()
    assert vectors(skew) == vectors(cube)
    assert time.perf_counter() - t0 < 2.0
    e = [float(torchace.evaluate(_model(), a)["energy"][0]) for a in (cube, skew)]
    assert abs(e[0] - e[1]) < 1e-6


@pytest.mark.parametrize("args, kw, match", [
    ((["Si"], 1, 1e8), {}, r"radial polynomials up to degree 100,000,000 .* limited to degree 1000"),
    ((["Si"], 10 ** 6, 2), {}, r"order 1000000 is more than any product can have.*at most 2 factor"),
    ((["Si", "Ge", "C"], 6, 16), {}, r"more than 300,000 product functions \(at least 602,262, counted\)"),
    ((["Si"], 2, 10 ** 400), {}, r"'totaldegree' must be a finite number, got 1000"),
    ((["Si"], 2, 6), dict(rcut=1.0), r"rcut = 1 Å is not larger than r0 = 2.4 Å of the pair Si-Si"),
])
def test_hopeless_basis_refused_at_once(args, kw, match):
    t0 = time.perf_counter()
    with pytest.raises(ValueError, match=match):
        torchace.ace_model(*args, **kw)
    assert time.perf_counter() - t0 < 2.0  # counted, not enumerated (the 9·10^5-product basis took > 80 s)


def test_product_limit_from_the_environment(monkeypatch):
    monkeypatch.setenv("TORCHACE_MAX_PRODUCTS", "abc")
    with pytest.raises(ValueError, match="TORCHACE_MAX_PRODUCTS must be a positive integer, got 'abc'"):
        torchace.ace_model(["Si"], 2, 6)


def test_yaml_aliases_bounded_not_forbidden(tmp_path):
    lines = ["a0: &a0 [x, x, x, x, x, x, x, x, x]"] + [
        f"a{k}: &a{k} [" + ", ".join([f"*a{k - 1}"] * 9) + "]" for k in range(1, 9)]
    bomb = tmp_path / "bomb.yaml"
    bomb.write_text("x: {" + ", ".join(lines) + "}\nmodel: {elements: *a8, order: 2, totaldegree: 6}\n"
                    "data: {train: a.xyz}\n")
    t0 = time.perf_counter()
    with pytest.raises(ValueError, match=r"bomb\.yaml: cannot parse: YAML anchors/aliases expand to more than "
                                         r"1,000,000 values .*alias bomb"):
        FitConfig.load(str(bomb))
    assert time.perf_counter() - t0 < 2.0
    rec = tmp_path / "rec.yaml"
    rec.write_text("model: &m {elements: [Si], order: 2, totaldegree: 6, x: *m}\ndata: {train: a.xyz}\n")
    with pytest.raises(ValueError, match=r"rec\.yaml: cannot parse: recursive YAML alias \(line 1\)"):
        FitConfig.load(str(rec))
    ok = tmp_path / "ok.yaml"  # negative control: an ordinary anchor is fine
    ok.write_text("model: {elements: [Si], order: 2, totaldegree: 6}\ndata: {train: a.xyz}\n"
                  "weights: {liq: &w {E: 10, F: 1}, dia: *w}\n")
    assert FitConfig.load(str(ok)).weights["dia"] == {"E": 10, "F": 1}


def test_endless_or_huge_inputs_are_not_read(tmp_path):
    from torchace.io import read_yace

    with pytest.raises(ValueError, match="/dev/zero: is not a regular file .*not a fit config"):
        FitConfig.load("/dev/zero")
    with pytest.raises(ModelFileError, match="/dev/zero: is not a regular file"):
        torchace.load("/dev/zero")
    with pytest.raises(ValueError, match="/dev/zero: is not a regular file"):
        read_yace("/dev/zero")
    with pytest.raises(ValueError, match=r"fit\.json: cannot parse: nested too deeply"):
        (tmp_path / "fit.json").write_text('{"model": ' + "[" * 100000 + "]" * 100000 + "}")
        FitConfig.load(str(tmp_path / "fit.json"))


def test_committee_too_large_for_memory_refused_before_assembly():
    with pytest.raises(ValueError, match=r"BLR: committee_size 1,000,000,000 × 17 basis functions needs .* GiB, more "
                                         r"than the .* available"):
        _fit(solver=solvers.BLR(committee_size=10 ** 9))


# ---- class 3: files parsed strictly ----

@pytest.mark.parametrize("change, match", [
    (lambda d: d.__setitem__("colour", "red"), r"unknown field\(s\) \['colour'\]"),
    (lambda d: d.__setitem__("metadata", [1, 2]), "field 'metadata' must be a mapping or null, got a list"),
    (lambda d: d.__setitem__("prior", 5), "field 'prior' must be a mapping or null, got a number"),
    (lambda d: d.__setitem__("basis_size", str(d["basis_size"])),
     "field 'basis_size' must be an integer, got a string"),
    (lambda d: d.__setitem__("coefficients", None), "field 'coefficients' must be a list of numbers, got null"),
    (lambda d: d.__setitem__("coefficients", [[1.0], [1.0, 2.0]]), "field 'coefficients' must be a \\(nested\\) list"),
])
def test_model_file_fields_checked(tmp_path, change, match):
    p = tmp_path / "m.json"
    _model().save(str(p))
    d = json.loads(p.read_text())
    change(d)
    (tmp_path / "bad.json").write_text(json.dumps(d))
    with pytest.raises(ModelFileError, match="bad.json: " + match):
        torchace.load(str(tmp_path / "bad.json"))


def test_model_file_binary_and_huge_integer(tmp_path):
    import pickle

    (tmp_path / "m.pkl").write_bytes(pickle.dumps({"a": 1}))
    with pytest.raises(ModelFileError, match=r"m\.pkl: a binary file \(a pickle.*\), not a JSON model file"):
        torchace.load(str(tmp_path / "m.pkl"))
    p = tmp_path / "m.json"
    _model().save(str(p))
    (tmp_path / "big.json").write_text(p.read_text().replace('"order": 2', '"order": 1' + "0" * 400, 1))
    with pytest.raises(ModelFileError, match=r"big\.json: invalid 'config': ACEConfig: 'order' must be an integer of "
                                             r"a sensible size"):
        torchace.load(str(tmp_path / "big.json"))


BASE = {"model": {"elements": ["Si"], "order": 2, "totaldegree": 6}, "data": {"train": "a.xyz"}}


@pytest.mark.parametrize("extra, match", [
    ({"solver": {"name": "QR", "lam": "0.1"}}, r"solver 'QR': QR: 'lam' must be a finite number, got '0.1' \(text"),
    ({"prior": {"name": "algebraic_smoothness", "q": 4}}, r"bad arguments for prior 'algebraic_smoothness': unknown "
                                                           r"argument\(s\) \['q'\]"),
    ({"assembly": {"device": "gpu"}}, "'assembly.device' must be a torch device"),
    ({"repulsion_restraint": {"wieght": 1.0}}, r"repulsion_restraint: unknown argument\(s\) \['wieght'\]"),
    ({"model": {"elements": ["Si"], "order": 2, "totaldegree": "1e1"}}, r"'totaldegree' must be a finite number, got "
                                                                        r"'1e1' \(text, not a number: YAML 1.1"),
])
def test_fit_config_checked_when_loaded(tmp_path, extra, match):
    p = tmp_path / "fit.json"
    p.write_text(json.dumps(dict(BASE, **extra)))
    with pytest.raises(ValueError, match=r"fit\.json: .*" + match):
        FitConfig.load(str(p))


def test_yace_bool_and_duplicate_element(tmp_path):
    import re

    from torchace.io import read_yace, write_yace

    p = tmp_path / "m.yace"
    write_yace(torchace.ace_model(["Si"], 2, 5, pair=False), str(p))
    text = p.read_text()
    read_yace(str(p))  # negative control
    (tmp_path / "a.yace").write_text(re.sub(r"rcut: [0-9.e+-]+", "rcut: true", text, count=1))
    with pytest.raises(ValueError, match=r"a\.yace: key '.*rcut': expected a number, got True"):
        read_yace(str(tmp_path / "a.yace"))
    (tmp_path / "b.yace").write_text(text.replace("elements: [Si]", "elements: [Si, Si]", 1))
    with pytest.raises(ValueError, match=r"b\.yace: key 'elements': an element is listed twice"):
        read_yace(str(tmp_path / "b.yace"))


def test_xyz_key_given_twice_in_a_comment_line(tmp_path):
    import gzip

    from torchace.fit.data import DataError, read_data

    head = 'Lattice="5.43 0 0 0 5.43 0 0 0 5.43" Properties=species:S:1:pos:R:3 pbc="T T T"'
    frame = "2\n{} energy=-40.0{}\nSi 0 0 0\nSi 1.36 1.36 1.36\n"
    (tmp_path / "d.xyz").write_text(frame.format(head, "") + frame.format(head, " energy=-41.0"))
    with pytest.raises(DataError, match=r"d\.xyz:frame 1: key 'energy' is given twice in the comment line"):
        read_data(str(tmp_path / "d.xyz"))  # ASE read -41 silently
    with gzip.open(tmp_path / "d.xyz.gz", "wt") as fh:
        fh.write(frame.format(head, " energy=-41.0"))
    with pytest.raises(DataError, match=r"d\.xyz\.gz:frame 0: key 'energy'"):
        read_data(str(tmp_path / "d.xyz.gz"))
    (tmp_path / "ok.xyz").write_text(frame.format(head, " free text with the the same words"))  # negative control
    assert read_data(str(tmp_path / "ok.xyz")).structures[0].energy == -40.0


def test_empty_data_file_is_named(tmp_path):
    from torchace.fit.data import DataError, read_data

    (tmp_path / "empty.xyz").write_text("\n\n")  # blank lines: no frame (was "no usable structures", no file)
    with pytest.raises(DataError, match=r"empty\.xyz: contains no structures"):
        read_data(str(tmp_path / "empty.xyz"))


# ---- class 4: the Python API validates like the config files ----

@pytest.mark.parametrize("kw, exc, match", [
    (dict(solver="QR"), TypeError, "solver must be a torchace.solvers object"),
    (dict(prior="smoothness"), TypeError, "prior must be a torchace.priors object"),
    (dict(batch_atoms=0), ValueError, "fit: 'batch_atoms' must be an integer >= 1, got 0"),
    (dict(batch_atoms=2.5), ValueError, "fit: 'batch_atoms' must be an integer, got 2.5"),
    (dict(streaming="QR"), ValueError, "fit: 'streaming' must be one of 'qr', 'normal', got 'QR'"),
    (dict(min_distance=math.nan), ValueError, "fit: 'min_distance' must be a finite number, got nan"),
    (dict(device="gpu"), ValueError, "fit: 'device' must be a torch device"),
    (dict(weights=[30, 1, 1]), ValueError, "weights must be a dict config_type"),
    (dict(keys={"energi": "x"}), ValueError, r"keys: unknown field\(s\) \['energi'\]"),
])
def test_fit_arguments_checked_before_the_data(kw, exc, match):
    with pytest.raises(exc, match=match):
        _fit(**kw)


def test_fit_overflowing_weights_and_string_flags():
    with pytest.raises(ValueError, match="the weighted design matrix or targets hold inf/NaN"):
        _fit(weights={"default": {"E": 1e308}})
    with pytest.raises(ValueError, match="read_data: 'skip_bad' must be true or false, got 'no'"):
        _fit(skip_bad="no")
    with pytest.raises(ValueError, match="TorchACECalculator: 'skin' must be a finite number, got True"):
        TorchACECalculator(_model(), skin=True)


def test_torchscript_archive_given_to_load(tmp_path):
    torchace.export(_model(), str(tmp_path / "m.pt"))
    with pytest.raises(ModelFileError, match=r"m\.pt: a zip archive \(a TorchScript export\?"):
        torchace.load(str(tmp_path / "m.pt"))


def test_fit_keys_as_a_dict_are_used():
    with pytest.raises(ValueError, match="structure 0: energy key 'nrg' not found"):
        _fit(keys={"energy": "nrg"})
    assert _fit(keys={"energy": "energy"}).n_structures == 3  # negative control


def test_structures_coefficients_device_dtype_checked():
    m = _model()
    with pytest.raises(TypeError, match="structures must be an ase.Atoms or a list of them, got None"):
        torchace.evaluate(m, None)
    with pytest.raises(TypeError, match=r"structures is a file name \('file.xyz'\).*ase.io.read"):
        torchace.evaluate(m, "file.xyz")
    with pytest.raises(ValueError, match="'min_distance' must be a non-negative number, got -1.0"):
        torchace.evaluate(m, rattled_bulk(["Si"]), min_distance=-1.0)
    with pytest.raises(ValueError, match=r"coefficients must be finite; non-finite at index \[0, 1"):
        m.coefficients = [math.nan] * m.basis_size
    with pytest.raises(ValueError, match=f"coefficients must be {m.basis_size} numbers"):
        m.coefficients = "abc"
    assert bool(torch_isfinite(m.coefficients))  # the failed assignments left the model as it was
    with pytest.raises(ValueError, match="TorchACECalculator: 'device' must be a torch device .* got 'gpu'"):
        TorchACECalculator(m, device="gpu")
    import torch

    with pytest.raises(ValueError, match="ace_model: dtype must be torch.float64 or torch.float32"):
        torchace.ace_model(["Si"], 2, 6, dtype=torch.int64)


def torch_isfinite(t):
    import torch

    return torch.isfinite(t).all()


# ---- class 5: ill-posed fits reported ----

def test_ill_posed_fits_reported():
    iso = Atoms("Si", positions=[[0, 0, 0]])
    iso.info["config_type"] = "isolated_atom"
    iso.calc = SinglePointCalculator(iso, energy=-3.0)
    with pytest.raises(ValueError, match="no structures to fit: the 1 structure.* all isolated_atom"):
        _fit([iso], E0=None)
    far = []
    for k in range(3):
        a = Atoms("Si2", positions=[[0, 0, 0], [8.0 + k, 0, 0]])
        a.calc = SinglePointCalculator(a, energy=-10.0 - k, forces=np.zeros((2, 3)))
        far.append(a)
    with pytest.raises(ValueError, match="every design-matrix entry is zero: no training structure has a neighbour"):
        _fit(far, model=torchace.ace_model(["Si"], 2, 5, rcut=5.0))
    sige = torchace.ace_model(["Si", "Ge"], 2, 5)
    with pytest.raises(ValueError, match=r"E0 given for \['Si'\] but not for \['Ge'\]"):
        _fit(_frames(elements=("Si", "Ge")), model=sige, E0={"Si": -5.0})
    _fit(_frames(elements=("Si", "Ge")), model=sige, E0={"Si": -5.0, "Ge": 0.0})  # negative control


# ---- class 6: CLI errors are one line ----

def test_cli_yaml_syntax_error_is_one_line(tmp_path):
    from torchace.cli import main

    p = tmp_path / "fit.yaml"
    p.write_text("model: {elements: [Si], order: 2\n  totaldegree: [6\ndata: x\n")
    with pytest.raises(SystemExit) as exc:
        main(["fit", str(p)])
    msg = str(exc.value)
    assert msg.startswith("torchace fit: ValueError: ") and "fit.yaml: cannot parse" in msg and "\n" not in msg


# ---- the sweep itself, on its quick cases ----

@pytest.mark.slow  # the sweep script in a child: 9 s
def test_quick_sweep(tmp_path):
    out = tmp_path / "sweep.json"
    r = run([sys.executable, str(ROOT / "scripts" / "tools" / "hostile_inputs.py"), "--quick", "--json", str(out),
             "--markdown", str(tmp_path / "sweep.md")], timeout=300)
    results = json.loads(out.read_text())["results"]
    assert len(results) >= 10
    bad = [(x["id"], x["input"], x["outcome"], x["message"]) for x in results
           if x["outcome"] not in ("clear error", "correct")]
    assert not bad and r.returncode == 0, (bad, r.stderr[-2000:])
    assert "| 1.01 |" in (tmp_path / "sweep.md").read_text()
