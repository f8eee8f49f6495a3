"""Every notebook (``notebooks/*.py``, jupytext percent format) runs top to bottom as a plain Python script in
quick mode (``TORCHACE_QUICK=1``), each in its own subprocess and temporary working directory."""
import importlib.util
import os
import sys
from pathlib import Path

import pytest
from torchace.testing import run

NOTEBOOKS = sorted((Path(__file__).resolve().parents[2] / "notebooks").glob("*.py"))
SHARED_DATA = Path(__file__).resolve().parents[3] / "shared" / "data"


def test_notebooks_exist():
    names = [p.name for p in NOTEBOOKS]
    for expected in ("01_fit_potential.py", "03_md_ase.py", "04_export.py", "05_torchsim_md.py"):
        assert expected in names
    assert not list(NOTEBOOKS[0].parent.glob("*.ipynb")), "notebooks are kept as jupytext .py files only"


@pytest.mark.parametrize("notebook", NOTEBOOKS, ids=[p.stem for p in NOTEBOOKS])
def test_notebook_runs(notebook, tmp_path):
    text = notebook.read_text()
    # jupytext percent format: a header naming it and at least one code cell marker
    assert "format_name: percent" in text and "\n# %%\n" in text, f"{notebook.name}: not a jupytext percent file"
    if "# needs-shared-data:" in text and not SHARED_DATA.is_dir():
        pytest.skip(f"{notebook.name} reads the shared reference data, absent here ({SHARED_DATA})")
    if "\nimport torch_sim" in text and importlib.util.find_spec("torch_sim") is None:
        pytest.skip(f"{notebook.name} needs torch-sim-atomistic (pip install 'torchace[torchsim]')")
    env = dict(os.environ, TORCHACE_QUICK="1", OMP_NUM_THREADS="1", MPLBACKEND="Agg")
    proc = run([sys.executable, str(notebook)], cwd=tmp_path, env=env, timeout=600)
    assert proc.returncode == 0, f"{notebook.name} failed:\n{proc.stdout[-3000:]}\n{proc.stderr[-5000:]}"
    if notebook.name == "01_fit_potential.py":
        assert (tmp_path / "Si_model.json").exists()
    if notebook.name == "04_export.py":
        assert (tmp_path / "Si_model.pt").exists()
