"""scripts/tools/device_check.sh (the prepared GPU-machine check) in its CPU dry run, and
scripts/benchmarks/bench_gpu.py's
bookkeeping: an unavailable backend is recorded with its reason, the tiled neighbour list is exact."""
import importlib
import json
import os
import shutil
import sys
from pathlib import Path

import pytest

from torchace.testing import run

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
    r = run(["bash", "scripts/tools/device_check.sh", "--dry-run"], cwd=ROOT, env=env, timeout=300)
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


# bench_gpu.py runs as a script (never imported by a test); this child makes the triton backend unavailable
# first, as on a machine without it
UNAVAILABLE = """
import runpy, sys
from torchace.model.backends import registry
registry.BACKENDS["triton"].reason = lambda model, device, task: "test: no triton here"
sys.argv = sys.argv[1:]
runpy.run_path(sys.argv[0], run_name="__main__")
"""


def test_unavailable_backend_is_recorded_not_fatal(tmp_path):
    path = tmp_path / "b.json"
    r = run([sys.executable, "-c", UNAVAILABLE, str(ROOT / "scripts" / "benchmarks" / "bench_gpu.py"),
             "--device", "cpu", "--dry-run", "--backend", "triton,analytic", "--ef-sizes", "2x1x1",
             "--skip", "assembly,largest", "--json", str(path), "--markdown", str(tmp_path / "b.md")],
            env=dict(os.environ, PYTHONPATH=str(ROOT) + os.pathsep + os.environ.get("PYTHONPATH", "")), timeout=600)
    assert r.returncode == 0, r.stdout[-2000:] + r.stderr[-3000:]
    data = json.loads(path.read_text())
    for name in ("sige2_6", "si3_8"):
        b = data["backends"][name]
        assert b["not_measured"] == {"triton": "test: no triton here"} and b["measured"] == ["analytic"]
        assert b["evaluate"]["triton"] == "test: no triton here"
    assert {r["backend"] for r in data["energy_forces"]} == {"analytic"}
    assert all(r["status"] == "ok" for r in data["energy_forces"]) and len(data["precision"]) == 2
    assert "test: no triton here" in (tmp_path / "b.md").read_text()
