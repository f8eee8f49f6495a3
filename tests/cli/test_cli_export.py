"""``torchace export MODEL.json OUT --format ...``: the written files reproduce the model; clear errors; and a
TorchScript export runs through plain ``torch.jit.load`` in a process where torchace cannot be imported."""
import json
import sys

import numpy as np
import pytest
import torch

import torchace
from torchace import keys as K
from torchace.cli import main
from torchace.io.torchscript import load_torchscript
from torchace.testing import random_cluster, randomize_coefficients, rattled_bulk, run


@pytest.fixture(scope="module")
def model_file(tmp_path_factory):
    m = torchace.ace_model(["Si", "Ge"], 2, 6, E0={"Si": -158.5, "Ge": -100.25})
    randomize_coefficients(m, 0.05, seed=3)
    path = tmp_path_factory.mktemp("cli") / "sige.json"
    m.save(str(path))
    return str(path), m


def test_export_torchscript(model_file, tmp_path, capsys):
    path, m = model_file
    out = tmp_path / "sige.pt"
    assert main(["export", path, str(out), "--format", "torchscript"]) == 0
    assert "wrote" in capsys.readouterr().out
    module, meta = load_torchscript(str(out))
    assert meta["dtype"] == "float64" and meta["config"] == m.config.to_dict()
    at = rattled_bulk(["Si", "Ge"], seed=1)
    ref = torchace.evaluate(m, at)
    got = torchace.evaluate(m, at, module=module)
    for k in (K.ENERGY, K.FORCES, K.VIRIAL):
        assert torch.allclose(got[k], ref[k], rtol=1e-12, atol=1e-12), k
    out32 = tmp_path / "sige32.pt"
    assert main(["export", path, str(out32), "--format", "torchscript", "--dtype", "float32"]) == 0
    assert load_torchscript(str(out32))[1]["dtype"] == "float32"


def test_torchscript_runs_without_torchace(model_file, tmp_path):
    """The documented forward contract (metadata["forward"]) with hand-built inputs: all ordered pairs of a
    molecule as edges (pairs beyond rcut contribute zero), no shifts; torchace is blocked in that process."""
    path, m = model_file
    out = tmp_path / "sige.pt"
    main(["export", path, str(out), "--format", "torchscript"])
    at = random_cluster(["Si", "Ge"], 6, 3.0, seed=2)
    ref = torchace.evaluate(m, at)
    code = f"""
import json, sys
sys.modules["torchace"] = None  # any import of torchace now fails
import torch
extra = {{"torchace_metadata.json": ""}}
module = torch.jit.load({str(out)!r}, _extra_files=extra)
meta = json.loads(extra["torchace_metadata.json"])
numbers = {at.numbers.tolist()}
species = torch.tensor([meta["atomic_numbers"].index(z) for z in numbers])
pos = torch.tensor({at.positions.tolist()}, dtype=torch.float64)
n = len(numbers)
edges = torch.tensor([[i, j] for i in range(n) for j in range(n) if i != j]).T
res = module(pos, species, torch.zeros(n, dtype=torch.long), edges, torch.zeros(edges.shape[1], 3,
             dtype=torch.float64), torch.zeros(1, 3, 3, dtype=torch.float64), 1, True, True)
print(json.dumps({{"energy": float(res["energy"][0]), "forces": res["forces"].tolist()}}))
"""
    proc = run([sys.executable, "-c", code], timeout=120)
    assert proc.returncode == 0, proc.stderr
    got = json.loads(proc.stdout.strip().splitlines()[-1])
    e_ref = float(ref[K.ENERGY][0])
    assert abs(got["energy"] - e_ref) <= 1e-12 * abs(e_ref)
    assert np.abs(np.array(got["forces"]) - ref[K.FORCES].numpy()).max() < 1e-12


def test_export_metatomic(model_file, tmp_path):
    pytest.importorskip("metatomic.torch")
    metatomic_ase = pytest.importorskip("metatomic_ase")
    path, m = model_file
    out = tmp_path / "sige-mta.pt"
    assert main(["export", path, str(out), "--format", "metatomic"]) == 0
    at = rattled_bulk(["Si", "Ge"], seed=4)
    at.calc = metatomic_ase.MetatomicCalculator(str(out))
    ref = torchace.evaluate(m, at)
    assert abs(at.get_potential_energy() - float(ref[K.ENERGY][0])) <= 1e-10 * abs(float(ref[K.ENERGY][0]))
    assert np.abs(at.get_forces() - ref[K.FORCES].numpy()).max() < 1e-10


@pytest.mark.slow  # a .yace export: 8 s
def test_export_yace_dispatch(model_file, tmp_path):
    pytest.importorskip("torchace.io.yace.write")
    path, _ = model_file
    out = tmp_path / "sige.yace"
    assert main(["export", path, str(out), "--format", "yace"]) == 0
    assert out.stat().st_size > 0


def test_errors(model_file, tmp_path, capsys):
    path, _ = model_file
    with pytest.raises(SystemExit, match="missing.json: no such model file"):
        main(["export", str(tmp_path / "missing.json"), str(tmp_path / "x.pt"), "--format", "torchscript"])
    bad = tmp_path / "bad.json"
    bad.write_text('{"config": ')
    with pytest.raises(SystemExit, match="bad.json: not valid JSON"):
        main(["export", str(bad), str(tmp_path / "x.pt"), "--format", "torchscript"])
    with pytest.raises(SystemExit) as exc:
        main(["export", path, str(tmp_path / "x.onnx"), "--format", "onnx"])
    assert exc.value.code == 2 and "invalid choice: 'onnx'" in capsys.readouterr().err
    with pytest.raises(SystemExit) as exc:
        main(["export", path, str(tmp_path / "x.pt")])  # --format is required
    assert exc.value.code == 2 and "--format" in capsys.readouterr().err
    assert not any(p.name.startswith(("x.", ".tmp_")) for p in tmp_path.iterdir())  # nothing half-written
