"""scripts/studies/regularity_paper.py on tiny inputs (a few rMD17 frames, a small basis): both forms write the
JSON the docs' "At the paper's size" tables are made from, the chosen and best-on-test rows are those of the scan,
and a second run reads every σ back from the checkpoint directory."""
import json
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
DATA = ROOT.parent / "shared" / "data"
SCRIPT = ROOT / "scripts" / "studies" / "regularity_paper.py"

pytestmark = pytest.mark.skipif(not (DATA / "rmd17").exists() or not (DATA / "botnet").exists(),
                                reason="reference data (../shared/data/rmd17 and botnet) not available")


def _run(tmp_path, form, *extra):
    out = tmp_path / f"{form}.json"
    cmd = [sys.executable, str(SCRIPT), "--order", "2", "--degrees", "5", "3", "--n-train", "6", "--n-test", "4",
           "--sigmas", "0", "0.5", "--lams", "1e-8", "1e-4", "--form", form, "--out", str(out),
           "--checkpoint-dir", str(tmp_path / f"ck_{form}"), "--data", str(DATA), *extra]
    p = subprocess.run(cmd, capture_output=True, text=True, timeout=300)
    assert p.returncode == 0, p.stdout + p.stderr
    return json.loads(out.read_text()), p.stdout


@pytest.mark.parametrize("form", ["gram", "dual"])
def test_script_json(tmp_path, form):
    res, _ = _run(tmp_path, form)
    assert res["form"] == form and res["pure2b"] and res["synthetic_dimers"]
    assert res["n_train"] + res["n_validation"] == 6 and res["n_test"] == 4
    # 5 training frames of 9 atoms (1 + 27 rows) and one dimer per H/C/O pair (6)
    assert res["rows"] == res["n_train"] * 28 + 6 and res["K"] > 0 and res["rcut"] > 0
    assert res["peak_rss_gb"] > 0 and res["times"]["total_s"] > 0
    if form == "gram":
        assert res["times"]["assembly_s"] > 0 and res["plan"]["need"] > 0
    assert set(res["sigma"]) == {"0", "0.5"}
    for e in res["sigma"].values():
        assert len(e["scan"]) == 2 and e["solve_s"] >= 0
        for r in e["scan"]:
            assert {"lam", "lam_rel", "test_E", "test_F", "validation_E", "validation_F"} <= set(r)
        assert e["chosen"]["validation_F"] == min(r["validation_F"] for r in e["scan"])
        assert e["best_test"]["test_F"] == min(r["test_F"] for r in e["scan"])
    again, log = _run(tmp_path, form)
    assert log.count("read from") == (2 if form == "gram" else 1)
    assert again["sigma"] == res["sigma"]
