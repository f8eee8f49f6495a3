"""notebooks/quickstart.ipynb runs top to bottom (small setting, in a temporary working directory)."""
import json
from pathlib import Path

NOTEBOOK = Path(__file__).resolve().parents[1] / "notebooks" / "quickstart.ipynb"


def test_quickstart_notebook_runs(tmp_path, monkeypatch):
    nb = json.loads(NOTEBOOK.read_text())
    assert nb["nbformat"] == 4
    code = [c for c in nb["cells"] if c["cell_type"] == "code"]
    assert code and all(isinstance(c["source"], list) for c in nb["cells"])
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("TORCHACE_QUICKSTART_SMALL", "1")
    ns = {"__name__": "__main__"}
    for k, cell in enumerate(code):
        src = "".join(cell["source"])
        exec(compile(src, f"{NOTEBOOK.name}[code cell {k}]", "exec"), ns)
    assert (tmp_path / "Si_quickstart.json").exists()
