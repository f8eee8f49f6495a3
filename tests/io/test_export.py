"""torchace.export: TorchScript archive with JSON metadata, atomic writes, format dispatch, calculator on an export."""
import copy
import json
import os
import warnings
import zipfile

import numpy as np
import pytest
import torch

import torchace
from torchace import keys as K
from torchace.io.torchscript import METADATA_FILE, export_metadata, load_torchscript, read_metadata
from torchace.io.export import export
from torchace.testing import random_cluster, randomize_coefficients, rattled_bulk, results_close


pytestmark = pytest.mark.usefixtures("one_thread")


@pytest.fixture(scope="module")
def sige_small():
    m = torchace.ace_model(["Si", "Ge"], 2, 6, E0={"Si": -158.5, "Ge": -100.25})
    randomize_coefficients(m, 0.05, seed=12)
    m.metadata = {"fit": {"solver": "test"}}
    return m


@pytest.fixture(scope="module")
def exported(sige_small, tmp_path_factory):
    path = tmp_path_factory.mktemp("export") / "sige.pt"
    assert export(sige_small, str(path)) == str(path)
    return path


def _structures():
    bulk = rattled_bulk(["Si", "Ge"], reps=(1, 1, 2), seed=3)
    mol = random_cluster(["Si", "Ge"], 8, 3.2, seed=4)  # non-periodic
    return [bulk, mol]


def test_torchscript_matches_python_model(sige_small, exported, device):
    module, meta = load_torchscript(str(exported), map_location=device)
    model = sige_small if device == "cpu" else copy.deepcopy(sige_small).to(device)
    structs = _structures()
    for s in ([structs[0]], [structs[1]], structs):  # periodic, molecule, mixed batch
        ref = torchace.evaluate(model, s)
        got = torchace.evaluate(model, s, module=module)
        results_close(got, ref, 1e-12, keys=(K.ENERGY, K.NODE_ENERGY, K.FORCES, K.VIRIAL))
    assert not module.training


def test_metadata_round_trip(sige_small, exported):
    _, meta = load_torchscript(str(exported))
    assert meta == json.loads(json.dumps(export_metadata(sige_small)))
    assert meta["atomic_numbers"] == [14, 32] and meta["elements"] == ["Si", "Ge"]
    assert meta["rcut"] == sige_small.rcut and meta["units"]["energy"] == "eV"
    assert meta["E0"] == {"Si": -158.5, "Ge": -100.25}
    assert meta["units"]["length"] == "Angstrom" and meta["dtype"] == "float64"
    assert meta["torchace_version"] == torchace.__version__ and meta["basis_size"] == sige_small.basis_size
    assert meta["config"] == sige_small.config.to_dict() and meta["model_metadata"] == {"fit": {"solver": "test"}}
    assert [a for a, _ in meta["forward"]["inputs"]][:3] == ["positions", "species", "batch"]
    # readable with zipfile + json alone (no torch, no torchace): the consumer's path
    assert read_metadata(str(exported)) == meta
    with zipfile.ZipFile(exported) as z:
        name = [n for n in z.namelist() if n.endswith("extra/" + METADATA_FILE)]
        assert len(name) == 1 and json.loads(z.read(name[0])) == meta


def test_export_options_and_errors(sige_small, tmp_path):
    p = tmp_path / "m.pt"
    export(sige_small, p, metadata={"author": "me"})  # os.PathLike accepted
    assert read_metadata(p)["user"] == {"author": "me"}
    with pytest.raises(TypeError, match="takes no options"):
        export(sige_small, str(tmp_path / "x"), format="torchscript", authors=["me"])
    with pytest.raises(ValueError, match="unknown dtype"):
        export(sige_small, str(tmp_path / "x"), dtype="float16")
    with pytest.raises(ValueError, match="unknown export format"):
        export(sige_small, str(tmp_path / "x"), format="onnx")
    with pytest.raises(ValueError, match="not plain JSON"):
        export(sige_small, str(tmp_path / "x"), metadata={"bad": object()})
    assert not (tmp_path / "x").exists()
    with pytest.raises(FileNotFoundError):
        load_torchscript(str(tmp_path / "missing.pt"))
    sige_small.save(str(tmp_path / "m.json"))
    with pytest.raises(ValueError, match="not a TorchScript archive"):
        read_metadata(str(tmp_path / "m.json"))
    plain = tmp_path / "plain.pt"
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", DeprecationWarning)  # torch.jit.* are deprecated in recent torch
        torch.jit.save(torch.jit.script(torch.nn.Linear(2, 2)), str(plain))
    with pytest.raises(ValueError, match=METADATA_FILE):
        load_torchscript(str(plain))
    # the model is not modified (a training-mode model stays in training mode; the export is in eval mode)
    m = copy.deepcopy(sige_small).train()
    export(m, str(tmp_path / "t.pt"))
    assert m.training and not load_torchscript(str(tmp_path / "t.pt"))[0].training


def test_atomic_write(sige_small, tmp_path, monkeypatch):
    p = tmp_path / "m.pt"
    export(sige_small, str(p))
    before = p.read_bytes()

    def broken_save(module, f, _extra_files=None):
        with open(f, "wb") as fh:
            fh.write(b"half")
        raise RuntimeError("disk full")

    monkeypatch.setattr(torch.jit, "save", broken_save)
    with pytest.raises(RuntimeError, match="disk full"):
        export(sige_small, str(p))
    assert p.read_bytes() == before and sorted(os.listdir(tmp_path)) == ["m.pt"]  # old file intact, no temp files
    umask = os.umask(0)
    os.umask(umask)
    assert os.stat(p).st_mode & 0o777 == 0o666 & ~umask  # the usual mode, not mkstemp's private 0600


def test_calculator_on_export(sige_small, exported):
    from torchace.calculators.ase import TorchACECalculator

    for at in _structures():
        a = TorchACECalculator(sige_small)
        b = TorchACECalculator(str(exported), backend="torchscript")
        assert abs(a.get_potential_energy(at) - b.get_potential_energy(at)) < 1e-12 * abs(a.get_potential_energy(at))
        assert np.abs(a.get_forces(at) - b.get_forces(at)).max() < 1e-12
        if at.pbc.all():
            assert np.abs(a.get_stress(at) - b.get_stress(at)).max() < 1e-12
    assert "energy_std" not in b.implemented_properties


def test_float32_export(sige_small, tmp_path):
    p = tmp_path / "m32.pt"
    export(sige_small, p, dtype="float32")
    module, meta = load_torchscript(str(p))
    assert meta["dtype"] == "float32" and sige_small.coefficients.dtype == torch.float64
    m32 = copy.deepcopy(sige_small).to(torch.float32)
    for s in _structures():
        results_close(torchace.evaluate(m32, [s], module=module), torchace.evaluate(m32, [s]), 1e-5)
        ref = torchace.evaluate(sige_small, [s])
        assert abs(float(torchace.evaluate(m32, [s], module=module)[K.ENERGY][0] - ref[K.ENERGY][0])) < \
            1e-5 * abs(float(ref[K.ENERGY][0]))


def test_yace_dispatch(sige_small, tmp_path, monkeypatch):
    """format="yace" hands the model, the path and the options to torchace.io.yace.write.write_yace."""
    import torchace.io.yace.write

    calls = []

    def fake_write_yace(model, path, **kw):
        calls.append((model, path, kw))
        with open(path, "w") as fh:
            fh.write("elements: [Si, Ge]\n")

    monkeypatch.setattr(torchace.io.yace.write, "write_yace", fake_write_yace)
    p = tmp_path / "m.yace"
    assert export(sige_small, p, format="YACE", some_option=3) == str(p)
    assert calls == [(sige_small, str(p), {"some_option": 3})] and p.exists()


def test_yace_real_writer(sige_small, tmp_path):
    """With the real writer (torchace/io/yace_write.py, when present) the dispatch writes a file."""
    pytest.importorskip("torchace.io.yace.write")
    p = tmp_path / "m.yace"
    export(sige_small, p, format="yace")
    assert p.stat().st_size > 0


def test_metatomic_missing_gives_clear_error(sige_small, tmp_path, monkeypatch):
    import sys

    monkeypatch.delitem(sys.modules, "torchace.io.metatomic", raising=False)
    monkeypatch.setitem(sys.modules, "metatomic.torch", None)  # as if metatomic-torch were not installed
    with pytest.raises(ImportError, match=r"metatomic-torch.*torchace\[metatomic\]"):
        export(sige_small, tmp_path / "x.pt", format="metatomic")
    assert not (tmp_path / "x.pt").exists()
