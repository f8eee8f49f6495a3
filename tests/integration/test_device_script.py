"""scripts/tools/device_check.sh (the prepared GPU-machine check) in its CPU dry run, and scripts/benchmarks/bench_gpu.py's
bookkeeping: an unavailable backend is recorded with its reason, the tiled neighbour list is exact."""
import importlib
import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch

from script_loader import load_script

ROOT = Path(__file__).resolve().parents[2]
BENCH_KEYS = {"machine", "config", "backends", "models", "energy_forces", "precision", "largest_system", "assembly",
              "errors", "skipped", "budget", "units", "finished"}


def _need_triton():
    try:
        importlib.import_module("triton")
    except Exception as exc:  # noqa: BLE001
        pytest.skip(f"triton is not installed ({type(exc).__name__}: {exc}): the dry run exercises its interpreter")


def test_device_check_dry_run(tmp_path):
    _need_triton()
    if shutil.which("bash") is None or shutil.which("timeout") is None:
        pytest.skip("needs bash and coreutils' timeout")
    out = tmp_path / "out"
    env = dict(os.environ, OUT=str(out), PYTHON=sys.executable,
               # a test file that does not exist: reported "missing", and no test suite run inside a test
               DEVICE_CHECK_TESTS="tests/test_no_such_file_for_device_check.py",
               DEVICE_CHECK_SKIP="bench_neighbours", DEVICE_CHECK_TOTAL_S="240")
    r = subprocess.run(["bash", "scripts/tools/device_check.sh", "--dry-run"], cwd=ROOT, env=env, capture_output=True,
                       text=True, timeout=300)
    assert r.returncode == 0, r.stdout + r.stderr
    summary = (out / "summary.md").read_text()
    rows = {line.split("|")[1].strip(): line.split("|")[2].strip() for line in summary.splitlines()
            if line.startswith("| ") and not line.startswith("| step")}
    assert rows["pytest"] == "missing", summary
    assert rows["bench_neighbours"] == "skipped", summary
    assert rows["versions"] == "ok" and rows["bench_gpu"] == "ok", (summary, (out / "log.txt").read_text()[-3000:])
    assert (out / "log.txt").stat().st_size > 0
    data = json.loads((out / "bench_gpu.json").read_text())
    assert BENCH_KEYS <= set(data), set(data) ^ BENCH_KEYS
    assert data["finished"] and data["config"]["dry_run"]
    assert data["machine"]["TRITON_INTERPRET"] == "1" and data["machine"]["triton"]
    assert data["models"]["si4_20"]["basis_size"] == 5476
    assert data["models"]["sige3_9"]["n_b"] == 469
    ef = [r for r in data["energy_forces"] if r["status"] == "ok"]
    assert ef and all(r["atom_steps_per_s"] > 0 and r["median_s"] > 0 for r in ef)
    assert {r["dtype"] for r in ef} == {"float64", "float32"}
    for r in data["precision"]:
        assert r["energy_rel_error"] < 1e-4
    assert data["largest_system"]["largest_ok"]["atoms"] > 0
    asm = data["assembly"]
    assert asm.get("status") == "ok" and asm["solve_cholesky_s"] > 0, asm
    assert (out / "bench_gpu.md").read_text().startswith("# bench_gpu")
    assert "## bench_gpu" in summary


def test_unavailable_backend_is_recorded_not_fatal(tmp_path, monkeypatch):
    bench = load_script("bench_gpu")
    tri = bench.registry.BACKENDS["triton"]
    monkeypatch.setattr(tri, "reason", lambda model, device, task: "test: no triton here")
    path = tmp_path / "b.json"
    assert bench.main(["--device", "cpu", "--dry-run", "--backend", "triton,analytic", "--ef-sizes", "2x1x1",
                       "--skip", "assembly,largest", "--json", str(path), "--markdown", str(tmp_path / "b.md")]) == 0
    data = json.loads(path.read_text())
    for name in ("sige2_6", "si3_8"):
        b = data["backends"][name]
        assert b["not_measured"] == {"triton": "test: no triton here"} and b["measured"] == ["analytic"]
        assert b["evaluate"]["triton"] == "test: no triton here"
    assert {r["backend"] for r in data["energy_forces"]} == {"analytic"}
    assert all(r["status"] == "ok" for r in data["energy_forces"]) and len(data["precision"]) == 2
    assert "test: no triton here" in (tmp_path / "b.md").read_text()


def test_tiled_neighbour_list_is_exact():
    bench = load_script("bench_gpu")
    from torchace.structures.neighbours.pairs import neighbour_list

    bpos, _, bcell = bench.diamond((1, 2, 1), 5.43, ["Si"], seed=3)
    pos, cell, (i, j, S) = bench.tiled_neighbours(bpos, bcell, [2, 1, 3], 6.0, torch.device("cpu"))
    ref = neighbour_list(pos.numpy(), cell, (True, True, True), 6.0)
    got = set(zip(i.tolist(), j.tolist(), map(tuple, S.tolist())))
    assert got == set(zip(ref[0].tolist(), ref[1].tolist(), map(tuple, ref[2].tolist())))
    assert bool((i[1:] >= i[:-1]).all())
    d = np.linalg.norm(pos.numpy()[j] - pos.numpy()[i] + S.numpy() @ cell, axis=1)
    assert d.max() < 6.0
